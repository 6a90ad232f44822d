"""Push latency of the language server: one session commits, N others get `workspace/applyEdit`.

Run: ``python benchmarks/push_latency.py [--dsn DSN] [--commits 200] [--clients 1,10,100]
[--setups tcp,stdio,stdio-standalone]`` (default: tcp,stdio; a row stops early after
``--row-seconds``, default 25, so that the default run stays under 5 minutes however slow the
server is).

For every set-up and client count N, in one invocation:

* a **writer** session and N **receiver** sessions; every receiver reads a ~100-line file with
  ``dbcode/readFile`` and opens it (``didOpen``), as an editor does;
* the writer commits a small edit (a comment moves to another line) with ``dbcode/writeFile {uri,
  text, baseRevision}``; ``t0`` is taken just before the request is written to the socket / pipe;
* each receiver records when the server's ``workspace/applyEdit`` arrives (``perf_counter`` as
  soon as the header and body are read; the receivers share this process, so each applies its
  edit only after every receiver with bytes waiting has taken its time, as N editors in N
  processes would not wait for each other), applies the edits to its buffer, answers
  ``{applied: true}`` and sends the matching incremental ``didChange`` with its version bumped,
  like a real editor (the server keeps an edit pending until that didChange arrives);
* the next commit is sent when all N receivers have edit k (plus ``--gap-ms``), and every
  receiver's buffer is checked against the writer's text.

Set-ups:

* **tcp**: one ``dbcode serve --tcp 127.0.0.1:0`` process, all N+1 sessions connected to it;
* **stdio**: N+1 ``dbcode serve`` processes on pipes (started concurrently), as editors start
  them: by default each is a relay to one shared server process (server/relay.py), which serves
  all N+1 sessions with one pool and LISTEN connection, like tcp (the shared server has a socket
  directory of its own per row: ``XDG_RUNTIME_DIR``, and is ended after the row);
* **stdio-standalone**: the same with ``dbcode serve --standalone``: N+1 server processes, each
  with its own pool and LISTEN connection. They need about 2(N+1) database connections: when the
  server of ``--dsn`` cannot take them (a default ``max_connections = 100``), the set-up runs on a
  private PostgreSQL cluster started by this script (same binaries and data disk, the settings of
  the ``--dsn`` server that matter here copied, ``max_connections`` raised), and says so.

Anchor, on the same server, one sample just before every commit (so that a burst of foreign load
on this shared machine hits both alike): the raw LISTEN/NOTIFY round trip. One psycopg connection
LISTENs, another sends ``NOTIFY`` in autocommit; the time is taken just before the NOTIFY is sent
and when the listener has it. A second anchor does what our commit does at its core: one
autocommit statement that inserts a row of the file's size and calls ``pg_notify`` (so it also
waits for the WAL flush).

The clients are a minimal asyncio JSON-RPC implementation (Content-Length framing over asyncio
streams), all in this process, so that they are not the bottleneck; the CPU time they use, the
server processes' CPU time and the PostgreSQL backends' CPU time are reported per commit.

``--trace`` (tcp rows) runs the server under a wrapper (this script, ``_traced_serve``) that
timestamps the steps of each commit from outside, by wrapping lsp_dbcode's and psycopg's
functions (nothing in lsp_dbcode is changed): the writeFile decoded, ``Commits.write_file``,
the commit call, its row fetched, the changeset offered to the hub, ``DocumentSync.deliver``, the
applyEdit written. ``perf_counter`` is CLOCK_MONOTONIC, shared by all processes, so the writer's
send and the receiver's arrival join the server's steps; it prints the median of every step.

``--profile DIR`` additionally samples the server process(es) with py-spy (``py-spy`` on PATH or
``--py-spy``) during the measured commits and prints where their time goes.

The script creates the scratch database ``dbcode_pushbench`` and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lsp_rpc  # benchmarks/lsp_rpc.py
import psycopg
import scratch_db  # benchmarks/scratch_db.py
import tracing  # benchmarks/tracing.py
from psycopg import sql

from lsp_dbcode.server import relay
from lsp_dbcode.store import Store
from lsp_dbcode.uris import make_uri

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "dbcode_pushbench"
SERVER_CMD = [sys.executable, "-m", "lsp_dbcode", "serve"]
SELF = Path(__file__).resolve()
FILE_PATH = "pkg/bench_module.py"
FILE_LINES = 100
WARMUP_COMMITS = 5
ROUND_TIMEOUT_S = 30.0
START_TIMEOUT_S = 180.0
CONNECTIONS_MARGIN = 10
PRIVATE_MAX_CONNECTIONS = 400
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- a minimal JSON-RPC client ---------------------------------------------------------------


class Rpc(lsp_rpc.Rpc):
    """The shared client, plus this benchmark's initialize."""

    async def initialize(self, agent: str) -> None:
        await self.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": None,
                "capabilities": {
                    "workspace": {"applyEdit": True, "workspaceEdit": {"documentChanges": True}},
                    "general": {"positionEncodings": ["utf-16"]},
                    "textDocument": {"synchronization": {"didSave": True}},
                },
                "initializationOptions": {"agent": agent, "mode": "save"},
            },
            timeout=START_TIMEOUT_S,
        )
        self.notify("initialized", {})


# -- the workload ----------------------------------------------------------------------------


def file_lines() -> list[str]:
    """A 100-line Python module (ruff-formatted, no syntax error)."""
    lines = ['"""A module edited by another agent, one line per commit."""']
    for i in range(24):
        lines += ["", "", f"def handler_{i}(request, limit={i}):"]
        lines.append(f"    return request.value + {i}")
    lines += ["", "", "LIMIT = 24"]
    assert len(lines) == FILE_LINES
    return lines


def version_text(k: int) -> str:
    """Revision k of the file: line (7k mod 100) carries a comment with the commit number."""
    lines = file_lines()
    if k > 0:
        n = (7 * k) % FILE_LINES
        lines[n] = f"{lines[n]}  # commit {k}" if lines[n] else f"# commit {k}"
    return "\n".join(lines) + "\n"


@dataclass
class Round:
    k: int
    expected: str
    times: list[float | None]
    remaining: int
    done: asyncio.Future[None]
    mismatches: int = 0


class Receiver:
    """An editor's buffer: applies pushed edits and reports them as an incremental didChange."""

    def __init__(self, index: int, rpc: Rpc, bench: Bench) -> None:
        self.index = index
        self.rpc = rpc
        self.bench = bench
        self.uri = ""
        self.text = ""
        self.version = 1
        rpc.on_request = self._on_request

    async def open(self, uri: str) -> None:
        res = await self.rpc.request("dbcode/readFile", {"uri": uri}, timeout=START_TIMEOUT_S)
        self.uri, self.text, self.version = uri, res["text"], 1
        self.rpc.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": self.text}},
        )

    def _on_request(self, msg: dict[str, Any], t: float) -> None:
        if msg["method"] != "workspace/applyEdit":
            self.rpc.respond(msg["id"], None)
            return
        # Applied after every receiver that has bytes waiting has taken its arrival time: the
        # N receivers share this process, 100 real editors would not wait for each other.
        asyncio.get_running_loop().call_soon(self._apply, msg, t)

    def _apply(self, msg: dict[str, Any], t: float) -> None:
        changes = []
        for dc in msg["params"]["edit"].get("documentChanges") or []:
            if dc["textDocument"]["uri"] != self.uri or dc["textDocument"]["version"] != (
                self.version
            ):
                self.rpc.respond(msg["id"], {"applied": False, "failureReason": "version"})
                self.bench.refused += 1
                return
            # Apply from the end: the ranges (on the text before the edit) stay valid.
            text = self.text
            starts = [0]
            starts += [m.end() for m in re.finditer("\n", text)]
            for e in sorted(
                dc["edits"],
                key=lambda e: (e["range"]["start"]["line"], e["range"]["start"]["character"]),
                reverse=True,
            ):
                r = e["range"]
                s = starts[r["start"]["line"]] + r["start"]["character"]
                end = starts[r["end"]["line"]] + r["end"]["character"]
                text = text[:s] + e["newText"] + text[end:]
                changes.append({"range": r, "text": e["newText"]})
            self.text = text
        self.version += 1
        self.rpc.respond(msg["id"], {"applied": True})
        self.rpc.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": self.uri, "version": self.version},
                "contentChanges": changes,
            },
        )
        self.bench.arrived(self, t)


@dataclass
class Bench:
    rnd: Round | None = None
    extra: int = 0
    refused: int = 0

    def arrived(self, rcv: Receiver, t: float) -> None:
        rnd = self.rnd
        if rnd is None or rnd.times[rcv.index] is not None:
            self.extra += 1
            return
        rnd.times[rcv.index] = t
        if rcv.text != rnd.expected:
            rnd.mismatches += 1
        rnd.remaining -= 1
        if rnd.remaining == 0 and not rnd.done.done():
            rnd.done.set_result(None)


# -- processes -------------------------------------------------------------------------------


def server_env(dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DBCODE_AGENT"}
    env["DBCODE_DATABASE_URL"] = dsn
    return env


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def descendants(pids: list[int]) -> list[int]:
    """Live descendants of the processes (ruff servers and the like)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children[int(fields[1])].append(int(entry))
    out: list[int] = []
    todo = list(pids)
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes, with their waited-for children's (those gone count 0)."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            total += sum(int(x) for x in fields[11:15])
    return total / CLK_TCK


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
    return total / 1024


def mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return math.inf


@dataclass
class Servers:
    """The dbcode server processes of one (set-up, N) and the sessions connected to them."""

    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    sessions: list[Rpc] = field(default_factory=list)  # every one connected, in start order
    writer: Rpc | None = None
    receivers: list[Rpc] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    network: bool = False  # a tcp server does not exit when its sessions end
    shared_dir: Path | None = None  # stdio: the socket directory of the shared server
    shared: list[int] = field(default_factory=list)  # stdio: the shared server's pid

    @property
    def pids(self) -> list[int]:
        """The processes that carry the sessions: for stdio the relays, then the shared server."""
        return [p.pid for p in self.procs] + self.shared

    async def stop(self) -> None:
        await asyncio.gather(*(r.shutdown() for r in self.sessions))
        for r in self.sessions:
            with contextlib.suppress(Exception):
                r.writer.close()
        for p in self.procs:
            try:
                if self.network:
                    raise TimeoutError
                await asyncio.wait_for(p.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                await p.wait()
        for t in self.tasks:
            t.cancel()
        if self.shared_dir is not None:
            await asyncio.to_thread(relay.kill_servers, self.shared_dir)
            shutil.rmtree(self.shared_dir.parent, ignore_errors=True)


async def _drain_to(stream: asyncio.StreamReader, path: Path) -> None:
    with path.open("ab") as f:
        while line := await stream.readline():
            f.write(line)
            f.flush()


async def _gather_all(coros: list[Any]) -> list[Any]:
    """Like gather, but lets every one finish before raising the first error."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


async def start_tcp(
    srv: Servers,
    dsn: str,
    n: int,
    logdir: Path,
    trace: Path | None = None,
    python: str = sys.executable,
) -> None:
    log = logdir / f"tcp-{n}-{abs(hash(python))}.log"
    cmd = [python, *SERVER_CMD[1:]]
    if trace is not None:
        cmd = [sys.executable, str(SELF), "_traced_serve", str(trace), "serve"]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        "--tcp",
        "127.0.0.1:0",
        env=server_env(dsn),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    srv.procs.append(proc)
    srv.network = True
    assert proc.stderr is not None
    port = None
    deadline = time.monotonic() + START_TIMEOUT_S
    while port is None:
        line = await asyncio.wait_for(proc.stderr.readline(), deadline - time.monotonic())
        if not line:
            raise RuntimeError(f"dbcode serve --tcp exited: see {log}")
        with log.open("ab") as f:
            f.write(line)
        m = re.search(rb"serving LSP over TCP on \('127\.0\.0\.1', (\d+)\)", line)
        if m:
            port = int(m.group(1))
    srv.tasks.append(asyncio.get_running_loop().create_task(_drain_to(proc.stderr, log)))

    async def connect(name: str) -> Rpc:
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
        w.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rpc = Rpc(r, w, name)
        srv.sessions.append(rpc)
        await rpc.initialize(name)
        return rpc

    srv.writer = await connect("writer")
    srv.receivers = await _gather_all([connect(f"reader{i}") for i in range(n)])


async def start_stdio(
    srv: Servers, dsn: str, n: int, logdir: Path, standalone: bool = False
) -> None:
    env = server_env(dsn)
    cmd = [*SERVER_CMD, "--standalone"] if standalone else SERVER_CMD
    if not standalone:  # a shared server of this row's own, ended in Servers.stop
        runtime = Path(tempfile.mkdtemp(prefix="pb-", dir="/tmp"))
        env["XDG_RUNTIME_DIR"] = str(runtime)
        srv.shared_dir = runtime / "dbcode"
    tag = "stdio-standalone" if standalone else "stdio"

    async def spawn(name: str) -> Rpc:
        with (logdir / f"{tag}-{n}-{name}.log").open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                limit=2**24,
            )
        srv.procs.append(proc)
        assert proc.stdout is not None and proc.stdin is not None
        rpc = Rpc(proc.stdout, proc.stdin, name)
        srv.sessions.append(rpc)
        await rpc.initialize(name)
        return rpc

    names = ["writer", *(f"reader{i}" for i in range(n))]
    rpcs = await _gather_all([spawn(x) for x in names])
    srv.writer, srv.receivers = rpcs[0], rpcs[1:]
    if srv.shared_dir is not None:
        srv.shared = relay.live_servers(srv.shared_dir)
        if len(srv.shared) != 1:
            raise RuntimeError(f"expected one shared server, found {len(srv.shared)}")


async def start_stdio_standalone(srv: Servers, dsn: str, n: int, logdir: Path) -> None:
    await start_stdio(srv, dsn, n, logdir, standalone=True)


# -- the database ----------------------------------------------------------------------------


async def create_scratch(dsn: str) -> str:
    dsn2 = scratch_db.recreate(dsn, BENCH_DB)
    async with Store(dsn2):  # migrate once, before many servers start at the same time
        pass
    async with await psycopg.AsyncConnection.connect(dsn2, autocommit=True) as conn:
        await conn.execute("CREATE TABLE pushbench_anchor (k bigint, payload text)")
    return dsn2


async def drop_scratch(dsn: str) -> None:
    scratch_db.drop(dsn, BENCH_DB)


async def free_connections(dsn: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT current_setting('max_connections')::int"
            " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def backend_pids(dsn: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (BENCH_DB,),
        )
        return [int(r[0]) for r in await cur.fetchall()]


class PrivatePostgres:
    """A throw-away cluster (the binaries of the --dsn server's major version) on 127.0.0.1."""

    COPIED = ("shared_buffers", "fsync", "synchronous_commit", "wal_sync_method", "autovacuum")

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.bindir: Path | None = None
        self.dsn = ""
        self.runas: list[str] = []

    async def start(self, template_dsn: str) -> str:
        async with await psycopg.AsyncConnection.connect(template_dsn, autocommit=True) as conn:
            cur = await conn.execute("SELECT current_setting('server_version_num')::int / 10000")
            row = await cur.fetchone()
            assert row is not None
            major = int(row[0])
            settings = {}
            for name in self.COPIED:
                cur = await conn.execute("SELECT current_setting(%s)", (name,))
                r = await cur.fetchone()
                assert r is not None
                settings[name] = str(r[0])
        self.bindir = Path(f"/usr/lib/postgresql/{major}/bin")
        if not (self.bindir / "initdb").exists():
            raise RuntimeError(f"no PostgreSQL {major} binaries in {self.bindir}")
        self.dir = Path(tempfile.mkdtemp(prefix="pushbench-pg-"))
        if os.geteuid() == 0:  # PostgreSQL refuses root
            shutil.chown(self.dir, "postgres", "postgres")
            self.runas = ["runuser", "-u", "postgres", "--"]
        data = self.dir / "data"
        await _run([*self.runas, str(self.bindir / "initdb"), "-D", str(data), "-A", "trust",
                    "-U", "postgres", "-E", "UTF8", "--no-sync"])  # fmt: skip
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        opts = [f"-p {port}", f"-k {self.dir}", "-c listen_addresses=127.0.0.1",
                f"-c max_connections={PRIVATE_MAX_CONNECTIONS}"]  # fmt: skip
        opts += [f"-c {k}={v}" for k, v in settings.items()]
        await _run([*self.runas, str(self.bindir / "pg_ctl"), "-D", str(data), "-l",
                    str(self.dir / "log"), "-w", "-o", " ".join(opts), "start"])  # fmt: skip
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        return self.dsn

    async def stop(self) -> None:
        if self.dir is None or self.bindir is None:
            return
        with contextlib.suppress(Exception):
            await _run([*self.runas, str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"),
                        "-m", "fast", "-w", "stop"])  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


async def _run(cmd: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {out.decode()[-2000:]}")


# -- measurements ----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


class Anchor:
    """LISTEN/NOTIFY round trips on the same server, taken between the commits: a plain
    ``NOTIFY`` in autocommit, and one autocommit statement inserting a row of the file's size
    and calling ``pg_notify`` (the core of our commit)."""

    def __init__(self) -> None:
        self.notify: list[float] = []
        self.insert_notify: list[float] = []
        self.backend_pids: list[int] = []
        self._payload = version_text(1)
        self._arrivals: dict[str, asyncio.Future[float]] = {}
        self._conns: list[psycopg.AsyncConnection[Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def open(self, dsn: str) -> None:
        for _ in range(2):
            self._conns.append(await psycopg.AsyncConnection.connect(dsn, autocommit=True))
        self.backend_pids = [c.info.backend_pid for c in self._conns]
        listener = self._conns[0]
        await listener.execute("LISTEN pushbench")

        async def listen() -> None:
            async for note in listener.notifies():
                t = time.perf_counter()
                fut = self._arrivals.pop(note.payload, None)
                if fut is not None and not fut.done():
                    fut.set_result(t)

        self._task = asyncio.get_running_loop().create_task(listen())

    async def sample(self, k: int, keep: bool) -> None:
        sender = self._conns[1]
        loop = asyncio.get_running_loop()
        for kind, samples in (("notify", self.notify), ("insert", self.insert_notify)):
            key = f"{kind}{k}"
            self._arrivals[key] = fut = loop.create_future()
            t0 = time.perf_counter()
            if kind == "notify":
                await sender.execute(sql.SQL("NOTIFY pushbench, {}").format(sql.Literal(key)))
            else:
                await sender.execute(
                    "WITH i AS (INSERT INTO pushbench_anchor VALUES (%s, %s) RETURNING k)"
                    " SELECT pg_notify('pushbench', %s) FROM i",
                    (k, self._payload, key),
                )
            t1 = await asyncio.wait_for(fut, ROUND_TIMEOUT_S)
            if keep:
                samples.append(t1 - t0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for conn in self._conns:
            await conn.close()


@dataclass
class Result:
    setup: str
    n: int
    server: str
    commits: int = 0
    latencies: list[float] = field(default_factory=list)  # every (commit, receiver)
    last: list[float] = field(default_factory=list)  # per commit, the slowest receiver
    write_rtt: list[float] = field(default_factory=list)
    anchor: Anchor | None = None
    mismatches: int = 0
    extra: int = 0
    refused: int = 0
    cpu_server_ms: float = 0.0
    cpu_writer_ms: float = 0.0
    cpu_pg_ms: float = 0.0
    cpu_client_ms: float = 0.0
    cpu_children_ms: float = 0.0
    rss_mb: float = 0.0
    start_s: float = 0.0
    error: str | None = None
    profile: str = ""
    rounds: list[tuple[float, float]] = field(default_factory=list)  # --trace: (t0, arrival)
    trace: str = ""


async def run_config(
    setup: str, n: int, dsn: str, server_label: str, args: argparse.Namespace, logdir: Path
) -> Result:
    res = Result(setup, n, server_label)
    workspace = f"push-{setup.replace('@', '-')}-{n}"
    uri = make_uri(workspace, FILE_PATH)
    async with Store(dsn, min_size=1, max_size=1) as store:
        await store.write(workspace, FILE_PATH, version_text(0), agent="seed", base=0)
    t_start = time.perf_counter()
    srv = Servers()
    profiler: asyncio.subprocess.Process | None = None
    anchor = res.anchor = Anchor()
    try:
        trace = logdir / f"trace-{setup}-{n}.txt" if args.trace and setup == "tcp" else None
        if trace is not None:
            await start_tcp(srv, dsn, n, logdir, trace)
        elif setup.startswith("tcp@"):  # another code tree's server (--code)
            await start_tcp(srv, dsn, n, logdir, python=args.pythons[setup.partition("@")[2]])
        else:
            start = {"tcp": start_tcp, "stdio": start_stdio}.get(setup, start_stdio_standalone)
            await start(srv, dsn, n, logdir)
        res.start_s = time.perf_counter() - t_start
        bench = Bench()
        receivers = [Receiver(i, rpc, bench) for i, rpc in enumerate(srv.receivers)]
        await asyncio.gather(*(r.open(uri) for r in receivers))
        await anchor.open(dsn)
        await asyncio.sleep(0.5)
        res.rss_mb = rss_mb(srv.pids + descendants(srv.pids))
        assert srv.writer is not None
        writer = srv.writer
        loop = asyncio.get_running_loop()
        rev = 1
        pg_pids = [p for p in await backend_pids(dsn) if p not in anchor.backend_pids]
        # stdio: the writer's process (its relay, or its own server when standalone) apart; the
        # shared server, serving the writer's session too, counts among "servers" as tcp's does.
        writer_pids = srv.pids[:1] if not setup.startswith("tcp") else []
        recv_pids = srv.pids[1:] if not setup.startswith("tcp") else srv.pids
        cpu0 = (0.0, 0.0, 0.0, 0.0, 0.0)
        anchor_cpu = 0.0
        t_measure = math.inf
        for k in range(1, WARMUP_COMMITS + args.commits + 1):
            measured = k > WARMUP_COMMITS
            if time.perf_counter() - t_measure > args.row_seconds:
                break
            if k == WARMUP_COMMITS + 1:
                t_measure = time.perf_counter()
                if args.profile:
                    profiler = await start_profiler(args, setup, n, srv.pids)
                cpu0 = (
                    cpu_seconds(recv_pids),
                    cpu_seconds(writer_pids + descendants(writer_pids)),
                    cpu_seconds(pg_pids),
                    time.process_time(),
                    cpu_seconds(descendants(recv_pids)),
                )
            if args.gap_ms:
                await asyncio.sleep(args.gap_ms / 1000)
            c0 = time.process_time()
            await anchor.sample(k, measured)
            anchor_cpu += (time.process_time() - c0) if measured else 0.0
            text = version_text(k)
            rnd = Round(k, text, [None] * n, n, loop.create_future())
            bench.rnd = rnd
            t0 = time.perf_counter()
            fut = writer.request_nowait(
                "dbcode/writeFile", {"uri": uri, "text": text, "baseRevision": rev}
            )
            reply = await asyncio.wait_for(fut, ROUND_TIMEOUT_S)
            t_reply = time.perf_counter()
            try:
                await asyncio.wait_for(asyncio.shield(rnd.done), ROUND_TIMEOUT_S)
            except TimeoutError:
                missing = [i for i, t in enumerate(rnd.times) if t is None]
                raise RuntimeError(
                    f"commit {k}: {len(missing)} of {n} receivers got no applyEdit within "
                    f"{ROUND_TIMEOUT_S:.0f} s (e.g. reader{missing[0]})"
                ) from None
            rev = int(reply["revision"])
            bench.rnd = None
            if measured:
                lat = [t - t0 for t in rnd.times if t is not None]
                if trace is not None:
                    res.rounds.append((t0, min(t for t in rnd.times if t is not None)))
                res.latencies += lat
                res.last.append(max(lat))
                res.write_rtt.append(t_reply - t0)
                res.mismatches += rnd.mismatches
                res.commits += 1
        cpu1 = (
            cpu_seconds(recv_pids),
            cpu_seconds(writer_pids + descendants(writer_pids)),
            cpu_seconds(pg_pids),
            time.process_time() - anchor_cpu,
            cpu_seconds(descendants(recv_pids)),
        )
        if not res.commits:
            raise RuntimeError("no commit measured (see --row-seconds)")
        per = 1000 / res.commits
        res.cpu_server_ms = (cpu1[0] - cpu0[0]) * per
        res.cpu_writer_ms = (cpu1[1] - cpu0[1]) * per
        res.cpu_pg_ms = (cpu1[2] - cpu0[2]) * per
        res.cpu_client_ms = (cpu1[3] - cpu0[3]) * per
        res.cpu_children_ms = (cpu1[4] - cpu0[4]) * per
        res.extra, res.refused = bench.extra, bench.refused
        if profiler is not None:
            res.profile = await stop_profiler(profiler, args, setup, n)
            profiler = None
        if trace is not None:
            res.trace = trace_steps(trace, res.rounds)
    finally:
        if profiler is not None:
            with contextlib.suppress(ProcessLookupError):
                profiler.send_signal(signal.SIGINT)
            await profiler.wait()
        await anchor.close()
        await srv.stop()
    return res


# -- tracing (optional) ----------------------------------------------------------------------

# The steps of one commit, in order: (event, what the step that ends with it covers).
TRACE_CHAIN = [
    ("t0", "writer sends dbcode/writeFile"),
    ("rx", "to the server, read, decoded"),
    ("write_file", "dispatched: Commits.write_file starts"),
    ("commit_call", "checks, format-on-commit setting: the commit call starts"),
    ("fetched", "pool, SELECT dbcode_write (the database), row fetched"),
    ("offered", "result parsed, changeset offered to the hub"),
    ("deliver", "the workspace watcher wakes: DocumentSync.deliver"),
    ("pushed", "merge/diff, applyEdit JSON, written to the socket"),
    ("arrive", "to the receiving client, read"),
]


def traced_serve(trace_path: str, argv: list[str]) -> int:
    """``dbcode serve`` with timestamps at the steps of :data:`TRACE_CHAIN` (see --trace),
    appended to ``trace_path`` as they happen (a tcp server is ended by a signal)."""
    import psycopg

    from lsp_dbcode import cli
    from lsp_dbcode.server import protocol as dbcode_protocol
    from lsp_dbcode.server.commits import Commits
    from lsp_dbcode.server.documents import DocumentSync
    from lsp_dbcode.store.hub import Hub
    from lsp_dbcode.store.store import Store

    out = open(trace_path, "a", buffering=1)  # for the process's life
    now = time.perf_counter

    def mark(name: str, t: float | None = None) -> None:
        out.write(f"{name} {now() if t is None else t:.7f}\n")

    def seen(msg: Any, t: float) -> None:
        if isinstance(msg, dict) and msg.get("method") == "dbcode/writeFile":
            mark("rx", t)

    dbcode_protocol.json = tracing.JsonProbe(seen)  # type: ignore[assignment]
    tracing.wrap(Commits, "write_file", mark, before="write_file")
    tracing.wrap(Store, "_commit_batch", mark, before="commit_call")
    tracing.wrap(Hub, "offer", mark, before="offered")
    tracing.wrap(DocumentSync, "deliver", mark, before="deliver")
    tracing.wrap(psycopg.AsyncCursor, "fetchone", mark, after="fetched")
    tracing.wrap(
        dbcode_protocol.DbcodeProtocol,
        "request_json",
        mark,
        after="pushed",
        when=lambda args: args[1] == "workspace/applyEdit",
    )
    return cli.main(argv)


def trace_steps(path: Path, rounds: list[tuple[float, float]]) -> str:
    """The median of every step of :data:`TRACE_CHAIN` over the measured commits: for each
    round, the first occurrence of each event after the previous step's."""
    events: list[tuple[str, float]] = []
    for line in path.read_text().splitlines():
        name, _, t = line.partition(" ")
        with contextlib.suppress(ValueError):
            events.append((name, float(t)))
    events.sort(key=lambda e: e[1])
    names = [name for name, _ in TRACE_CHAIN[1:-1]]
    steps: dict[str, list[float]] = {}
    totals: list[float] = []
    for t0, arrived in rounds:
        chain = [("t0", t0)]
        for name in names:
            found = [t for e, t in events if e == name and chain[-1][1] <= t <= arrived]
            if not found:
                break
            chain.append((name, found[0]))
        else:
            chain.append(("arrive", arrived))
            for (_, ta), (b, tb) in itertools.pairwise(chain):
                steps.setdefault(b, []).append((tb - ta) * 1000)
            totals.append((arrived - t0) * 1000)
    if not totals:
        return "no complete trace"
    lines = ["| step | median ms |", "|---|---|"]
    labels = dict(TRACE_CHAIN)
    for name, _ in TRACE_CHAIN[1:]:
        if name in steps:
            lines.append(f"| {labels[name]} | {pct(steps[name], 0.5):.3f} |")
    total = pct(totals, 0.5)
    lines.append(
        f"| sum of the medians / median total ({len(totals)} of {len(rounds)} commits traced) "
        f"| {sum(pct(v, 0.5) for v in steps.values()):.3f} / {total:.3f} |"
    )
    return "\n".join(lines)


# -- profiling (optional) --------------------------------------------------------------------


async def start_profiler(
    args: argparse.Namespace, setup: str, n: int, pids: list[int]
) -> asyncio.subprocess.Process:
    """py-spy record of the tcp server, or the shared stdio server, or of one receiving
    standalone stdio server (the last one)."""
    pid = pids[0] if setup.startswith("tcp") else pids[-1]
    out = Path(args.profile) / f"{setup}-{n}.txt"
    proc = await asyncio.create_subprocess_exec(
        args.py_spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
        "--nonblocking", "-o", str(out),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.sleep(0.3)
    return proc


async def stop_profiler(
    proc: asyncio.subprocess.Process, args: argparse.Namespace, setup: str, n: int
) -> str:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 30)
    return summarize_profile(Path(args.profile) / f"{setup}-{n}.txt")


def _frame_name(frame: str) -> str:
    # py-spy raw frames: "function (path/to/file.py:line)"
    m = re.match(r"(.*?) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    for marker in ("lsp_dbcode/", "pygls/", "psycopg_pool/", "psycopg/", "lsprotocol/", "asyncio/"):
        i = path.find(marker)
        if i >= 0:
            return f"{path[i:]}:{func}"
    return f"{Path(path).name}:{func}"


def summarize_profile(path: Path, top: int = 25) -> str:
    """Share of the samples per function (inclusive: each counted once per stack; self: leaf),
    leaving out the frames nearly every stack has (the event loop's, the entry point's)."""
    if not path.exists():
        return f"(no profile written to {path})"
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        frames = [_frame_name(f) for f in stack.split(";")]
        total += c
        for name in set(frames):
            inclusive[name] += c
        leaf[frames[-1]] += c
    if not total:
        return "(empty profile)"
    idle = sum(c for name, c in leaf.items() if name.endswith(".select"))
    lines = [
        f"{total} samples, {100 * idle / total:.0f}% in the event loop's select (idle)",
        "incl % | self % | function",
    ]
    for name, c in inclusive.most_common():
        if len(lines) >= top + 2:
            break
        if c > 0.8 * total or name.endswith(".select"):
            continue
        lines.append(f"{100 * c / total:6.1f} | {100 * leaf[name] / total:6.1f} | {name}")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------


def fmt_ms(x: float) -> str:
    return f"{1000 * x:.2f}" if x < 0.1 else f"{1000 * x:.1f}"


def report(results: list[Result], machine: str) -> str:
    head = (
        "| set-up | N | commits | p50 ms | p99 ms | raw NOTIFY p50/p99 ms | ratio p50/raw | "
        "last of N p50/p99 ms | insert+NOTIFY p50/p99 ms | ratio p50/insert | "
        "writeFile reply p50 ms | "
        "CPU ms/commit: servers / their children / writer / PG / clients | RSS MB | server |"
    )
    rows = [head, "|" + "---|" * 14]
    notes = []
    for r in results:
        if r.error:
            rows.append(f"| {r.setup} | {r.n} | | failed: {r.error} |" + " |" * 10)
            continue
        a = r.anchor
        assert a is not None
        raw50, raw99 = pct(a.notify, 0.5), pct(a.notify, 0.99)
        p50, p99 = pct(r.latencies, 0.5), pct(r.latencies, 0.99)
        rows.append(
            f"| {r.setup} | {r.n} | {r.commits} | {fmt_ms(p50)} | {fmt_ms(p99)} | "
            f"{fmt_ms(raw50)} / {fmt_ms(raw99)} | {p50 / raw50:.1f} | "
            f"{fmt_ms(pct(r.last, 0.5))} / {fmt_ms(pct(r.last, 0.99))} | "
            f"{fmt_ms(pct(a.insert_notify, 0.5))} / {fmt_ms(pct(a.insert_notify, 0.99))} | "
            f"{p50 / pct(a.insert_notify, 0.5):.1f} | "
            f"{fmt_ms(pct(r.write_rtt, 0.5))} | "
            f"{r.cpu_server_ms:.1f} / {r.cpu_children_ms:.1f} / {r.cpu_writer_ms:.1f} / "
            f"{r.cpu_pg_ms:.1f} / "
            f"{r.cpu_client_ms:.1f} | {r.rss_mb:.0f} | {r.server} |"
        )
        if r.mismatches or r.extra or r.refused:
            notes.append(
                f"{r.setup} N={r.n}: {r.mismatches} buffers differed from the commit, "
                f"{r.extra} unexpected applyEdits, {r.refused} refused"
            )
        notes.append(f"{r.setup} N={r.n}: sessions up in {r.start_s:.1f} s")
    out = [machine, "", *rows, "", *notes]
    by = {(r.setup, r.n): r for r in results if not r.error}
    verdict = []
    for setup in ("tcp", "stdio", "stdio-standalone"):
        one = by.get((setup, 1))
        if one is not None and one.anchor is not None:
            ratio = pct(one.latencies, 0.5) / pct(one.anchor.notify, 0.5)
            verdict.append(
                f"target 1 ({setup}): p50 with 1 client within 3x of the raw NOTIFY round trip: "
                f"{ratio:.1f}x -> {'met' if ratio <= 3 else 'MISSED'}"
            )
        hundred = by.get((setup, 100))
        if hundred is not None:
            p99 = pct(hundred.latencies, 0.99)
            verdict.append(
                f"target 2 ({setup}): p99 under 50 ms with 100 clients: {fmt_ms(p99)} ms -> "
                f"{'met' if p99 < 0.05 else 'MISSED'}"
            )
    out += ["", *verdict]
    for r in results:
        if r.profile:
            what = "one receiving server" if r.setup == "stdio-standalone" else "the server"
            out += ["", f"py-spy, {r.setup} N={r.n} ({what}):", r.profile]
    return "\n".join(out)


def machine_line() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({model}), Python {sys.version.split()[0]}"


async def amain(args: argparse.Namespace) -> int:
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    for s in setups:
        if s not in ("tcp", "stdio", "stdio-standalone"):
            raise SystemExit(f"unknown set-up {s!r}: use tcp, stdio, stdio-standalone")
    args.pythons = {}
    for item in args.code or []:  # tcp rows of other code trees, right after this tree's
        label, _, folder = item.partition("=")
        python = Path(folder) / ".venv" / "bin" / "python"
        if not python.exists():
            raise SystemExit(f"--code {item!r}: no {python}")
        args.pythons[label] = str(python)
    if args.pythons:
        setups = [
            x
            for s in setups
            for x in ([s, *(f"tcp@{k}" for k in args.pythons)] if s == "tcp" else [s])
        ]
    logdir = Path(tempfile.mkdtemp(prefix="pushbench-logs-"))
    async with await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT version()")
        row = await cur.fetchone()
    assert row is not None
    pg_version = str(row[0]).split(" on ")[0]
    print(f"{machine_line()}; {pg_version}; server logs in {logdir}", flush=True)
    results: list[Result] = []
    private: PrivatePostgres | None = None
    scratch = await create_scratch(args.dsn)
    private_scratch = ""
    t_begin = time.perf_counter()
    try:
        for n in clients:  # the set-ups of one N one after the other: load drift hits them alike
            for setup in setups:
                dsn, label = scratch, "--dsn"
                if setup == "stdio-standalone":
                    need = 2 * (n + 1) + CONNECTIONS_MARGIN
                    free = await free_connections(args.dsn)
                    if need > free:
                        label = f"private (needs ~{need} connections, --dsn has {free} free)"
                        if private is None:
                            cluster = PrivatePostgres()
                            try:
                                await cluster.start(args.dsn)
                                private_scratch = await create_scratch(cluster.dsn)
                            except Exception as exc:
                                await cluster.stop()
                                err = f"private cluster: {exc}"
                                results.append(Result(setup, n, label, error=err))
                                continue
                            private = cluster
                        dsn = private_scratch
                    need_mb = (n + 1) * 90
                    if mem_available_mb() < need_mb * 1.5:
                        results.append(Result(setup, n, label, error="not enough memory"))
                        continue
                print(f"{setup} N={n} ...", flush=True)
                try:
                    res = await run_config(setup, n, dsn, label, args, logdir)
                except Exception as exc:
                    res = Result(setup, n, label, error=f"{type(exc).__name__}: {exc}")
                results.append(res)
                if not res.error:
                    print(
                        f"  p50 {fmt_ms(pct(res.latencies, 0.5))} ms, "
                        f"p99 {fmt_ms(pct(res.latencies, 0.99))} ms",
                        flush=True,
                    )
                else:
                    print(f"  {res.error}", flush=True)
    finally:
        await drop_scratch(args.dsn)
        if private is not None:
            await private.stop()
    print()
    took = time.perf_counter() - t_begin
    print(
        report(
            results,
            f"up to {args.commits} commits or {args.row_seconds:.0f} s per row; {took:.0f} s",
        )
    )
    for r in results:
        if r.trace:
            print(f"\nWhere the time goes, {r.setup} N={r.n} (--trace, medians):\n\n{r.trace}")
    return 0 if all(not r.error for r in results) else 1


def main() -> int:
    if sys.argv[1:2] == ["_traced_serve"]:
        return traced_serve(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL server (any database)")
    parser.add_argument("--commits", type=int, default=200, help="measured commits per row")
    parser.add_argument(
        "--row-seconds",
        type=float,
        default=25.0,
        help="stop measuring a row after this long, even before --commits (keeps the default "
        "run under 5 minutes when 100 receivers make every commit slow)",
    )
    parser.add_argument("--clients", default="1,10,100", help="receiver counts N")
    parser.add_argument(
        "--setups",
        default="tcp,stdio",
        help="any of tcp, stdio (relays to one shared server), stdio-standalone",
    )
    parser.add_argument(
        "--gap-ms", type=float, default=5.0, help="pause after all receivers have commit k"
    )
    parser.add_argument(
        "--trace", action="store_true", help="timestamp the steps inside the tcp server"
    )
    parser.add_argument(
        "--code",
        action="append",
        metavar="LABEL=DIR",
        help="tcp rows also for another code tree (DIR/.venv/bin/python), set-up tcp@LABEL: "
        "e.g. the code before a change (git worktree add DIR REV; editable install in DIR/.venv)",
    )
    parser.add_argument("--profile", metavar="DIR", help="py-spy the server(s) into DIR")
    parser.add_argument("--py-spy", default="py-spy", help="the py-spy executable")
    args = parser.parse_args()
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        if shutil.which(args.py_spy) is None:
            raise SystemExit(f"--profile needs py-spy ({args.py_spy!r} not found)")
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
