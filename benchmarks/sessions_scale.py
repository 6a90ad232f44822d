"""1,000 sessions in one ``dbcode serve --tcp`` process (issue 14's scale targets).

Run: ``python benchmarks/sessions_scale.py [--dsn DSN] [--sessions 1000] [--commits 30]
[--code LABEL=DIR ...]``.

For every code tree given (``--code``; default: this checkout), in one invocation and on the
same PostgreSQL server:

* one ``dbcode serve --tcp 127.0.0.1:0`` process of that tree (``DIR/.venv/bin/python``
  when there is one, else this interpreter; e.g. ``git worktree add /tmp/before REV`` and an
  editable install into ``/tmp/before/.venv`` for the code before a change);
* N receiver sessions open in waves of ``--wave`` (default 50) concurrent connections, each as
  an editor does: connect, ``initialize``, ``initialized``, ``dbcode/readFile`` of a ~100-line
  Python file, ``didOpen``, and the first ``publishDiagnostics`` of that document (the open is
  done when its diagnostics are out). **Opening a session** is the server process's CPU time
  (``/proc/PID/task/*/schedstat``, nanoseconds) over one wave divided by the wave's sessions;
  the median over waves is printed, and the CPU of the server's children (the ruff server)
  apart;
* **every session starts**: how many of the N opened, and the errors of those that did not;
* **RSS** of the server process (and of its children) with all N sessions open;
* a writer session commits ``--commits`` small edits with ``dbcode/writeFile``; every receiver
  gets ``workspace/applyEdit``, applies it, answers and sends the matching didChange (as
  push_latency.py's receivers do); the latency of every (commit, receiver) pair is measured from
  just before the writeFile is written to the arrival of the applyEdit: p50 and p99. The next
  commit goes when the server is done with the previous one (diagnostics published for every
  receiver's didChange), so that what is measured is one commit's way to 1,000 sessions, not
  the queue of 1,000 didChanges ahead of it (``--back-to-back`` measures that instead);
* **CPU per commit**: the server process' CPU over one measured round (from the writeFile to
  the diagnostics of every receiver's didChange: pushes, answers, didChanges, lint, publishes),
  and this process' (the N receivers), median: steadier than the latencies on a shared machine;
* **commits/s**: before the receivers open, ``--writers`` sessions each write a file of their
  own with ``dbcode/writeFile`` for ``--write-seconds``, each as soon as its previous answer
  came;
* **anchor**: the raw LISTEN/NOTIFY round trip on the same PostgreSQL server, one sample just
  before every commit (push_latency.py's Anchor), printed beside the figures with the ratio.

The script creates the scratch database ``dbcode_scalebench`` and drops it at the end. The
targets (issue 14): all N start; open ≤ 5 ms of server CPU (median); commit to all N p99
≤ 100 ms; RSS ≤ 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lsp_rpc  # benchmarks/lsp_rpc.py
import orjson
import push_latency as pl  # benchmarks/push_latency.py
import scratch_db  # benchmarks/scratch_db.py

from lsp_dbcode.framing import FrameSplitter
from lsp_dbcode.store import Store
from lsp_dbcode.uris import make_uri

BENCH_DB = "dbcode_scalebench"
REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120.0
OPEN_TIMEOUT_S = 60.0
ROUND_TIMEOUT_S = 30.0
WARMUP_COMMITS = 3
TARGET_OPEN_CPU_MS = 5.0
TARGET_PUSH_P99_MS = 100.0
TARGET_RSS_MB = 300.0


def task_cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` in nanoseconds (schedstat: exact, unlike the
    10 ms ticks of /proc/PID/stat)."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    return total


@dataclass
class Outcome:
    label: str
    code: Path
    sessions: int = 0
    opened: int = 0
    open_errors: list[str] = field(default_factory=list)
    open_cpu_ms: list[float] = field(default_factory=list)  # per wave, per session
    open_children_ms: list[float] = field(default_factory=list)
    open_wall_s: float = 0.0
    rss_mb: float = 0.0
    rss_children_mb: float = 0.0
    latencies: list[float] = field(default_factory=list)
    last: list[float] = field(default_factory=list)
    commits: int = 0
    mismatches: int = 0
    anchor: list[float] = field(default_factory=list)
    commits_per_s: float = 0.0
    round_cpu_ms: list[float] = field(default_factory=list)  # the server's, per measured commit
    client_cpu_ms: list[float] = field(default_factory=list)  # this process' (the N receivers)
    error: str | None = None


class Session:
    """A receiver with an open document whose first diagnostics mark the end of its open."""

    def __init__(self, rpc: CallbackRpc, receiver: pl.Receiver) -> None:
        self.rpc = rpc
        self.receiver = receiver
        self.published: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.published_version = -1
        rpc.on_publish = self._on_publish

    def _on_publish(self, params: dict[str, Any], t: float) -> None:
        if params.get("uri") == self.receiver.uri:
            self.published_version = max(self.published_version, params.get("version") or 0)
            if not self.published.done():
                self.published.set_result(None)

    @property
    def settled(self) -> bool:
        """The server has published diagnostics for the buffer's newest version: it is done
        with this session's didChange."""
        return self.published_version >= self.receiver.version


async def settle(sessions: list[Session]) -> None:
    """Until the server is done with every receiver's didChange (bounded)."""
    deadline = time.perf_counter() + ROUND_TIMEOUT_S
    while not all(s.settled for s in sessions) and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)


async def start_server(code: Path, dsn: str, log: Path) -> tuple[asyncio.subprocess.Process, int]:
    env = pl.server_env(dsn)
    python = code / ".venv" / "bin" / "python"
    cmd = [str(python) if python.exists() else sys.executable, *pl.SERVER_CMD[1:]]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        "--tcp",
        "127.0.0.1:0",
        env=env,
        cwd=str(code),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        start_new_session=True,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        logged = await asyncio.to_thread(log.read_text)
        m = re.search(r"serving LSP over TCP on \('127\.0\.0\.1', (\d+)\)", logged)
        if m:
            return proc, int(m.group(1))
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.05)
    raise RuntimeError(f"dbcode serve --tcp did not start: see {log}")


class CallbackRpc(asyncio.Protocol):
    """push_latency's JSON-RPC client (same interface), with messages cut and handled in the
    transport's callback (lsp_dbcode.framing, as the server does): 1,000 receivers in this one
    process must not cost a task wake-up per message each, or the client is what is measured.
    The arrival time is taken as soon as a message's bytes are read."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.frames = FrameSplitter()
        self.transport: asyncio.Transport | None = None
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.on_request: Any = None
        self.on_publish: Any = None
        self.writer = self  # push_latency's users call rpc.writer.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        t = time.perf_counter()
        self.frames.feed(data)
        while (body := self.frames.next_body()) is not None:
            msg = orjson.loads(body)
            method = msg.get("method")
            if method is None:
                fut = self._pending.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    if "error" in msg:
                        fut.set_exception(lsp_rpc.RpcError(f"{self.name}: {msg['error']}"))
                    else:
                        fut.set_result(msg.get("result"))
            elif "id" in msg:
                if self.on_request is not None:
                    self.on_request(msg, t)
                else:
                    self.respond(msg["id"], None)
            elif method == "textDocument/publishDiagnostics" and self.on_publish:
                self.on_publish(msg["params"], t)

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(lsp_rpc.RpcError(f"{self.name}: connection closed"))

    def send(self, msg: dict[str, Any]) -> None:
        body = orjson.dumps(msg)
        assert self.transport is not None
        self.transport.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    async def request(self, method: str, params: Any, timeout: float = 60.0) -> Any:
        self._next_id += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = fut
        self.send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        return await asyncio.wait_for(fut, timeout)

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def respond(self, id_: Any, result: Any) -> None:
        self.send({"jsonrpc": "2.0", "id": id_, "result": result})

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    initialize = pl.Rpc.initialize


async def connect(port: int, name: str) -> CallbackRpc:
    loop = asyncio.get_running_loop()
    transport, rpc = await loop.create_connection(lambda: CallbackRpc(name), "127.0.0.1", port)
    transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await rpc.initialize(name)  # type: ignore[arg-type]
    return rpc


async def open_one(port: int, i: int, uri: str, bench: pl.Bench) -> Session:
    rpc = await connect(port, f"reader{i}")
    receiver = pl.Receiver(i, rpc, bench)  # type: ignore[arg-type]
    session = Session(rpc, receiver)
    await receiver.open(uri)
    await asyncio.wait_for(session.published, OPEN_TIMEOUT_S)
    return session


async def commit_rate(port: int, workspace: str, args: argparse.Namespace) -> float:
    """``--writers`` sessions, each writing its own file with dbcode/writeFile (CAS on the
    revision it got) as fast as the answers come, for ``--write-seconds``: commits per second
    through the server (before any receiver is open)."""
    writers = [await connect(port, f"w{i}") for i in range(args.writers)]
    done = 0
    stop = time.perf_counter() + args.write_seconds

    async def write_loop(i: int, rpc: CallbackRpc) -> None:
        nonlocal done
        uri = make_uri(workspace, f"writers/w{i}.py")
        rev = 0
        k = 0
        while time.perf_counter() < stop:
            k += 1
            params = {"uri": uri, "text": f"X = {k}\n", "baseRevision": rev}
            rev = (await rpc.request("dbcode/writeFile", params))["revision"]
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(write_loop(i, w) for i, w in enumerate(writers)))
    rate = done / (time.perf_counter() - t0)
    for w in writers:
        w.close()
    return rate


async def run_code(label: str, code: Path, dsn: str, args: argparse.Namespace) -> Outcome:
    out = Outcome(label, code, sessions=args.sessions)
    workspace = f"scale-{label}"
    uri = make_uri(workspace, pl.FILE_PATH)
    async with Store(dsn, min_size=1, max_size=1) as store:
        await store.write(workspace, pl.FILE_PATH, pl.version_text(0), agent="seed", base=0)
    logdir = Path(tempfile.mkdtemp(prefix="scalebench-"))
    proc, port = await start_server(code, dsn, logdir / "server.log")
    sessions: list[Session] = []
    anchor = pl.Anchor()
    bench = pl.Bench()
    spy: subprocess.Popen[bytes] | None = None
    try:
        out.commits_per_s = await commit_rate(port, workspace, args)
        writer = await connect(port, "writer")
        t_open = time.perf_counter()
        for first in range(0, args.sessions, args.wave):
            count = min(args.wave, args.sessions - first)
            cpu0 = task_cpu_ns(proc.pid)
            kids = pl.descendants([proc.pid])
            kids0 = pl.cpu_seconds(kids)
            got = await asyncio.gather(
                *(open_one(port, first + j, uri, bench) for j in range(count)),
                return_exceptions=True,
            )
            ok = [s for s in got if isinstance(s, Session)]
            failed = [e for e in got if isinstance(e, BaseException)]
            out.open_errors += [f"{type(e).__name__}: {e}" for e in failed]
            sessions += ok
            if ok:
                out.open_cpu_ms.append((task_cpu_ns(proc.pid) - cpu0) / 1e6 / len(ok))
                kids = pl.descendants([proc.pid])
                out.open_children_ms.append((pl.cpu_seconds(kids) - kids0) * 1000 / len(ok))
            if time.perf_counter() - t_open > args.open_seconds:
                out.open_errors.append(f"stopped opening after {args.open_seconds:.0f} s")
                break
        out.open_wall_s = time.perf_counter() - t_open
        out.opened = len(sessions)
        # Every receiver's index must match its place in the list the rounds use.
        receivers = [s.receiver for s in sessions]
        for i, r in enumerate(receivers):
            r.index = i
        await asyncio.sleep(1.0)
        out.rss_mb = pl.rss_mb([proc.pid])
        out.rss_children_mb = pl.rss_mb(pl.descendants([proc.pid]))
        await anchor.open(dsn)
        res = await writer.request("dbcode/readFile", {"uri": uri})
        rev = res["revision"]
        loop = asyncio.get_running_loop()
        t_commits = time.perf_counter()
        for k in range(1, WARMUP_COMMITS + args.commits + 1):
            measured = k > WARMUP_COMMITS
            if k == WARMUP_COMMITS + 1 and args.profile:
                spy = subprocess.Popen(  # noqa: ASYNC220 (py-spy starts at once)
                    [args.py_spy, "record", "--pid", str(proc.pid), "--format", "raw", "--rate",
                     "250", "--nonblocking", "-o", f"{args.profile}.{label}.txt"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            if time.perf_counter() - t_commits > args.commit_seconds:
                break
            await anchor.sample(k, keep=measured)
            text = pl.version_text(k)
            rnd = pl.Round(k, text, [None] * len(receivers), len(receivers), loop.create_future())
            bench.rnd = rnd
            cpu0, client0 = task_cpu_ns(proc.pid), time.process_time()
            t0 = time.perf_counter()
            reply = await writer.request(
                "dbcode/writeFile", {"uri": uri, "text": text, "baseRevision": rev}
            )
            rev = reply["revision"]
            await asyncio.wait_for(rnd.done, ROUND_TIMEOUT_S)
            if measured:
                times = [t - t0 for t in rnd.times if t is not None]
                out.latencies += times
                out.last.append(max(times))
                out.commits += 1
                out.mismatches += rnd.mismatches
            if not args.back_to_back:
                await settle(sessions)
                if measured:  # the whole round: pushes, answers, didChanges, diagnostics
                    out.round_cpu_ms.append((task_cpu_ns(proc.pid) - cpu0) / 1e6)
                    out.client_cpu_ms.append((time.process_time() - client0) * 1000)
            await asyncio.sleep(args.gap_ms / 1000)
        out.anchor = anchor.notify
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            await asyncio.to_thread(spy.wait)
    except Exception as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    finally:
        await anchor.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        for s in sessions:
            with contextlib.suppress(Exception):
                s.rpc.writer.close()
    return out


def ms(x: float) -> str:
    return f"{x * 1000:.1f}"


def cpu_col(o: Outcome) -> str:
    """Median CPU of one measured commit's round (until the server has published diagnostics
    for every receiver's didChange): the server process, and this process (the receivers)."""
    if not o.round_cpu_ms:
        return "-"
    return f"{statistics.median(o.round_cpu_ms):.0f} / {statistics.median(o.client_cpu_ms):.0f}"


def report(outcomes: list[Outcome]) -> str:
    lines = [
        "| code | sessions started | open: server CPU ms/session (median) | ruff child CPU ms/"
        "session | open wall s | RSS MB (children) | commits | push p50 ms | push p99 ms "
        "| slowest receiver p50 ms | NOTIFY p50 ms | p99 / NOTIFY p50 | commits/s "
        "| CPU ms/commit: server / receivers |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        if not o.latencies:
            lines.append(f"| {o.label} | {o.opened}/{o.sessions} | "
                         f"{statistics.median(o.open_cpu_ms) if o.open_cpu_ms else 0:.1f} | "
                         f"| {o.open_wall_s:.0f} | {o.rss_mb:.0f} ({o.rss_children_mb:.0f}) | "
                         f"{o.error or 'no commit measured'} | | | | | | | |")  # fmt: skip
            continue
        lat = o.latencies
        notify = pl.pct(o.anchor, 0.5) if o.anchor else float("nan")
        lines.append(
            f"| {o.label} | {o.opened}/{o.sessions} | {statistics.median(o.open_cpu_ms):.2f} | "
            f"{statistics.median(o.open_children_ms):.2f} | {o.open_wall_s:.1f} | "
            f"{o.rss_mb:.0f} ({o.rss_children_mb:.0f}) | {o.commits} | {ms(pl.pct(lat, 0.5))} | "
            f"{ms(pl.pct(lat, 0.99))} | {ms(pl.pct(o.last, 0.5))} | {ms(notify)} | "
            f"{pl.pct(lat, 0.99) / notify:.0f}x | {o.commits_per_s:.0f} | {cpu_col(o)} |"
        )
    for o in outcomes:
        if o.open_errors or o.mismatches or o.error:
            errs = sorted(set(o.open_errors))[:5]
            lines.append(f"\n{o.label}: {len(o.open_errors)} open error(s) {errs}; "
                         f"{o.mismatches} buffer mismatch(es); {o.error or ''}")  # fmt: skip
    lines.append(
        f"\ntargets: every session starts; open ≤ {TARGET_OPEN_CPU_MS:g} ms server CPU (median);"
        f" push p99 ≤ {TARGET_PUSH_P99_MS:g} ms; RSS ≤ {TARGET_RSS_MB:g} MB"
    )
    return "\n".join(lines)


def code_trees(items: list[str]) -> list[tuple[str, Path]]:
    codes: list[tuple[str, Path]] = []
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not (Path(path) / "lsp_dbcode").is_dir():
            raise SystemExit(f"--code {item!r}: use LABEL=DIR, DIR holding lsp_dbcode/")
        codes.append((label, Path(path).resolve()))
    return codes


async def amain(args: argparse.Namespace) -> int:
    codes = code_trees(args.code or [f"this={REPO}"])
    print(pl.machine_line(), flush=True)
    dsn = scratch_db.recreate(args.dsn, BENCH_DB)
    async with Store(dsn):  # migrate once
        pass
    async with await pl.psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("CREATE TABLE pushbench_anchor (k bigint, payload text)")
    outcomes = []
    try:
        for label, code in codes:
            print(f"{label} ({code}): {args.sessions} sessions ...", flush=True)
            outcomes.append(await run_code(label, code, dsn, args))
            print(report(outcomes[-1:]).split("\n\n")[0], flush=True)
    finally:
        scratch_db.drop(args.dsn, BENCH_DB)
    print()
    print(report(outcomes))
    return 0 if all(o.error is None and not o.open_errors for o in outcomes) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=pl.DEFAULT_DSN, help="PostgreSQL server (any database)")
    parser.add_argument("--sessions", type=int, default=1000, help="receiver sessions N")
    parser.add_argument("--wave", type=int, default=50, help="sessions opened concurrently")
    parser.add_argument("--commits", type=int, default=30, help="measured commits")
    parser.add_argument("--writers", type=int, default=8, help="sessions measuring commits/s")
    parser.add_argument("--write-seconds", type=float, default=5.0, help="commits/s: how long")
    parser.add_argument("--gap-ms", type=float, default=5.0, help="pause between commits")
    parser.add_argument(
        "--back-to-back",
        action="store_true",
        help="send the next commit as soon as every receiver has its edit (plus --gap-ms), "
        "while the server still handles their didChanges (push_latency's pacing); by default "
        "it waits until the server has published diagnostics for every receiver's didChange",
    )
    parser.add_argument(
        "--code", action="append", metavar="LABEL=DIR", help="a code tree to run (repeatable)"
    )
    parser.add_argument(
        "--profile", metavar="PREFIX", help="py-spy the server during the commits (raw stacks)"
    )
    parser.add_argument("--py-spy", default="py-spy", help="the py-spy executable")
    parser.add_argument("--open-seconds", type=float, default=300.0, help="bound on opening")
    parser.add_argument("--commit-seconds", type=float, default=60.0, help="bound on commits")
    return asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
