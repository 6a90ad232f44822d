"""Edit-to-diagnostics latency: ``dbcode serve`` against ``ruff server`` itself (issue 4).

Run: ``python benchmarks/diagnostics_latency.py [--dsn DSN] [--edits 200]``.

For a 300-line and a 3,000-line Python module (realistic code with a few findings: unused
imports, unused local variables), every engine gets the same sequence of keystroke-like edits,
each one ``textDocument/didChange`` with one incremental change of one character:

* type ``x`` into a name (``record`` -> ``recordx``: an undefined-name diagnostic appears),
* change a digit of a default argument two lines up,
* delete the ``x`` (the diagnostic goes away),
* change a digit of a multiplier,

four edits at one place, then the next four elsewhere in the file. No text occurs twice in the
sequence (checked), so no engine can answer an edit from a cache of earlier results (dbcode's
``Analyzer`` keeps results by content hash: typing a character and deleting it right away would be
answered from there).

Latency = from just before the didChange is written to the pipe until the
``textDocument/publishDiagnostics`` for that document version has been read off the server's
stdout (matched by its ``version`` field; a publish without one counts for the newest edit). Edit
k+1 is sent only after edit k's diagnostics arrived (plus ``--gap-ms``). Engines:

* **ruff server** (the anchor): the ``ruff`` binary of the venv (``ruff.__main__.find_ruff_bin``),
  ``ruff server`` on a ``file://`` module in a temporary folder (no config file, no user config:
  ruff's defaults, as dbcode has for a workspace without config);
* **dbcode serve**: ``python -m lsp_dbcode serve`` over stdio on a scratch database
  (``dbcode_diagbench``, created here and dropped at the end), the module stored and opened as
  ``dbcode://bench/mod.py``; default ruff engine (one ``ruff server`` child). The session runs
  in that process (``DBCODE_SERVE_STANDALONE=1``); ``--relay`` measures it as editors start it,
  a stdio relay to a shared server process (one more hop each way; no ``--trace``, and the CPU
  column then counts the relay only);
* **dbcode serve, subprocess**: the same with ``DBCODE_RUFF_ENGINE=subprocess`` (one ``ruff
  check`` process per edit).

No client declares the pull-diagnostics capability (``textDocument.diagnostic``), so every server
pushes. The engines take turns edit by edit (the order rotates), so load drift on this shared
machine hits all alike; figures are meant as ratios against the anchor of the same run. Each
publish's diagnostic count is compared across engines (same text, same rules: they must agree).

The client is a minimal asyncio JSON-RPC implementation (Content-Length framing over the pipes);
server->client requests are answered with ``null``. Also reported: CPU time per edit of each
engine's processes (dbcode: the server plus its ruff children) and of this client.

``--log-dir DIR`` keeps the servers' logs (dbcode at ``--log-level``, default INFO) and the
``--trace`` timestamps there.

``--trace`` runs the dbcode servers under a wrapper (this script, ``_traced_serve``) that
timestamps each step of an edit from outside, by wrapping lsp_dbcode's and pygls' functions
(nothing in lsp_dbcode is changed): the server reads the didChange (pygls, or its fast path),
the change written to the ``ruff server`` child (``DocumentLint.before_change``), the session
applying it, ``DocumentLint.on_change`` and ``Analyzer.check_soon`` (or, for the subprocess
engine, the ruff task and ``Analyzer.check``), the child's publish read and decoded, the
findings as JSON and our publish.
``perf_counter`` is CLOCK_MONOTONIC, shared by all processes, so the client's send and arrival
times join the server's. It prints the median of every step over the measured edits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import tracing  # benchmarks/tracing.py
from lsp_rpc import Rpc  # benchmarks/lsp_rpc.py
from ruff.__main__ import find_ruff_bin
from scratch_db import drop, recreate  # benchmarks/scratch_db.py

from lsp_dbcode.store import Store
from lsp_dbcode.uris import make_uri

SELF = Path(__file__).resolve()
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "dbcode_diagbench"
WORKSPACE, PATH = "bench", "mod.py"
SIZES = (300, 3000)
WARMUP_EDITS = 12
PUBLISH_TIMEOUT_S = 30.0
START_TIMEOUT_S = 60.0
TARGET_RATIO = 1.5
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the module and the edits ----------------------------------------------------------------


@dataclass
class Block:
    limit_line: int  # "def summarize_i(..., limit: int = NN) -> ...": its NN is edited
    name_line: int  # "        key = record.category.lower()": "x" typed after "record"
    factor_line: int  # "        totals[key] += record.amount * N": N is edited


def make_module(lines: int) -> tuple[list[str], list[Block]]:
    """A plausible module of exactly ``lines`` lines: about 40-line blocks of functions and a
    class; findings: two unused imports, an unused local variable in every eighth block."""
    out = [
        '"""Orders and invoices of a small shop: parsing, validation and reports."""',
        "",
        "from __future__ import annotations",
        "",
        "import json",
        "import logging",
        "import os",
        "import re",
        "from collections import defaultdict",
        "from dataclasses import dataclass, field",
        "from pathlib import Path",
        "from typing import Any",
        "",
        "log = logging.getLogger(__name__)",
        "",
        'SKU_PATTERN = re.compile(r"^[A-Z]{3}-\\d{4}$")',
        "",
        "",
        "@dataclass",
        "class Record:",
        "    sku: str",
        "    category: str",
        "    amount: float",
        "    quantity: int = 1",
        "    tags: list[str] = field(default_factory=list)",
        "",
        "",
        "def load_records(text: str) -> list[Record]:",
        "    rows: list[dict[str, Any]] = json.loads(text)",
        "    return [Record(**row) for row in rows]",
        "",
    ]
    blocks: list[Block] = []
    i = 0
    while len(out) + 40 <= lines:
        base = len(out)
        blocks.append(Block(base + 1, base + 6, base + 7))
        out += [
            "",
            f"def summarize_{i}(records: list[Record], limit: int = {10 + i % 90}) -> dict:",
            f'    """Average amount per category over the first ``limit`` records ({i})."""',
            "    totals: dict[str, float] = defaultdict(float)",
            "    count = 0",
            "    for record in records[:limit]:",
            "        key = record.category.lower()",
            f"        totals[key] += record.amount * {1 + i % 7}",
            "        count += 1",
            "    if count == 0:",
            "        return {}",
            "    return {k: v / count for k, v in totals.items()}",
            "",
            "",
            f"def validate_{i}(record: Record) -> list[str]:",
            "    problems = []",
            "    checked = len(problems)" if i % 8 == 3 else "    # sku, amount and quantity",
            "    if not SKU_PATTERN.match(record.sku):",
            '        problems.append(f"bad sku {record.sku!r}")',
            f"    if record.amount < 0 or record.amount > {1000 * (1 + i % 5)}:",
            '        problems.append(f"amount out of range: {record.amount}")',
            "    if record.quantity <= 0:",
            '        problems.append("quantity must be positive")',
            "    return problems",
            "",
            "",
            f"class Report{i}:",
            f'    """Report {i}: quantities per tag."""',
            "",
            "    def __init__(self, records: list[Record]) -> None:",
            "        self.records = records",
            "",
            "    def by_tag(self) -> dict[str, int]:",
            "        counts: dict[str, int] = defaultdict(int)",
            "        for record in self.records:",
            "            for tag in record.tags:",
            "                counts[tag] += record.quantity",
            '        log.debug("%d tags", len(counts))',
            "        return dict(counts)",
            "",
        ]
        i += 1
    out += [f"# end of module, line {n + 1}" for n in range(len(out), lines)]
    assert len(out) == lines
    return out, blocks


@dataclass(frozen=True)
class Edit:
    line: int
    start: int
    end: int
    text: str

    def apply(self, lines: list[str]) -> None:
        s = lines[self.line]
        lines[self.line] = s[: self.start] + self.text + s[self.end :]


def make_edits(lines: list[str], blocks: list[Block], count: int) -> list[Edit]:
    """``count`` one-character edits (see the module docstring), four per place."""
    text = list(lines)
    edits: list[Edit] = []
    seen = {hash("\n".join(text))}
    for k in range(count):
        b = blocks[(k // 4 * 7) % len(blocks)]
        op = k % 4
        if op == 0:  # record -> recordx: F821
            col = text[b.name_line].index("record") + len("record")
            edit = Edit(b.name_line, col, col, "x")
        elif op == 1:  # the limit's last digit
            s = text[b.limit_line]
            m = re.search(r"limit: int = \d+", s)
            assert m is not None
            col = m.end() - 1
            edit = Edit(b.limit_line, col, col + 1, str((int(s[col]) + 1) % 10))
        elif op == 2:  # recordx -> record (a text not seen before: the limit changed)
            col = text[b.name_line].index("recordx") + len("record")
            edit = Edit(b.name_line, col, col + 1, "")
        else:  # the multiplier
            s = text[b.factor_line]
            col = len(s) - 1
            edit = Edit(b.factor_line, col, col + 1, str(int(s[col]) % 9 + 1))
        edit.apply(text)
        edits.append(edit)
        seen.add(hash("\n".join(text)))
        assert len(seen) == k + 2, f"edit {k} gives a text seen before"
    return edits


# -- a minimal JSON-RPC client -----------------------------------------------------------------


# -- the engines -----------------------------------------------------------------------------


CAPABILITIES: dict[str, Any] = {
    # No textDocument.diagnostic: the servers must push.
    "general": {"positionEncodings": ["utf-16"]},
    "textDocument": {
        "synchronization": {"didSave": True},
        "publishDiagnostics": {"versionSupport": True, "relatedInformation": True},
    },
    "workspace": {"applyEdit": True, "workspaceEdit": {"documentChanges": True}},
}


@dataclass
class Engine:
    name: str
    kind: str  # "ruff" | "dbcode"
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    rpc: Rpc | None = None
    uri: str = ""
    lines: list[str] = field(default_factory=list)
    version: int = 0
    expect: tuple[int, asyncio.Future[tuple[float, int]]] | None = None
    samples: list[float] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)  # version -> number of diagnostics
    unmatched: int = 0  # publishes for another version than awaited (stale or extra)
    versioned: int = 0  # publishes that carried a version
    cpu_s: tuple[float, float] = (0.0, 0.0)  # the server process, its ruff children
    start_s: float = 0.0
    sent: dict[int, tuple[float, float]] = field(default_factory=dict)  # version -> send, arrival
    trace: Path | None = None
    python: str = sys.executable  # the interpreter (and so the lsp_dbcode) of a dbcode engine

    async def start(self, tmp: Path, dsn: str, log_dir: Path, log_level: str) -> None:
        log = (log_dir / f"{self.name.replace(' ', '_').replace(',', '')}.log").open("ab")
        if self.kind == "ruff":
            folder = tmp / "ruff-ws"
            xdg = tmp / "xdg"
            folder.mkdir(exist_ok=True)
            xdg.mkdir(exist_ok=True)
            env = {k: v for k, v in os.environ.items() if not k.startswith("RUFF_")}
            env.update(XDG_CONFIG_HOME=str(xdg), NO_COLOR="1")
            cmd = [find_ruff_bin(), "server", "--untrusted-workspace"]
            cwd = folder
            self.uri = (folder / PATH).as_uri()
        else:
            env = {k: v for k, v in os.environ.items() if k != "DBCODE_AGENT"}
            env.update(DBCODE_DATABASE_URL=dsn, **self.env)
            cmd = [self.python, "-m", "lsp_dbcode", "serve", "--log-level", log_level]
            if self.trace is not None:
                cmd[1:3] = [str(SELF), "_traced_serve", str(self.trace)]
            if log_level.upper() == "DEBUG":
                cmd += ["--log-file", str(log_dir / f"{self.name.replace(' ', '_')}.debug")]
            cwd = tmp
            self.uri = make_uri(WORKSPACE, PATH)
        t0 = time.perf_counter()
        self.proc = await asyncio.create_subprocess_exec(
            *cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
            limit=2**24,
        )
        log.close()
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.rpc = Rpc(self.proc.stdout, self.proc.stdin, self.name)
        self.rpc.on_publish = self._on_publish
        params: dict[str, Any] = {
            "processId": os.getpid(),
            "clientInfo": {"name": "diagnostics_latency"},
            "capabilities": CAPABILITIES,
        }
        if self.kind == "ruff":
            root = (tmp / "ruff-ws").as_uri()
            params.update(rootUri=root, workspaceFolders=[{"uri": root, "name": "bench"}])
        else:
            params.update(
                rootUri=None,
                workspaceFolders=[{"uri": make_uri(WORKSPACE), "name": WORKSPACE}],
                initializationOptions={"agent": "diagbench", "mode": "save"},
            )
        await self.rpc.request("initialize", params, timeout=START_TIMEOUT_S)
        self.rpc.notify("initialized", {})
        self.start_s = time.perf_counter() - t0

    def _on_publish(self, params: dict[str, Any], t: float) -> None:
        if params.get("uri") != self.uri:
            return
        version = params.get("version")
        self.versioned += version is not None
        expect = self.expect
        if expect is None or expect[1].done() or (version is not None and version != expect[0]):
            self.unmatched += 1
            return
        self.counts[expect[0]] = len(params.get("diagnostics") or [])
        expect[1].set_result((t, self.counts[expect[0]]))

    def _await_version(self) -> asyncio.Future[tuple[float, int]]:
        fut: asyncio.Future[tuple[float, int]] = asyncio.get_running_loop().create_future()
        self.expect = (self.version, fut)
        return fut

    async def open(self, lines: list[str]) -> None:
        assert self.rpc is not None
        self.lines, self.version = list(lines), 1
        fut = self._await_version()
        item = {"uri": self.uri, "languageId": "python", "version": 1, "text": self.text}
        self.rpc.notify("textDocument/didOpen", {"textDocument": item})
        await asyncio.wait_for(fut, PUBLISH_TIMEOUT_S)

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    async def edit(self, edit: Edit) -> float:
        """Send one edit; the time until its diagnostics arrived, in ms."""
        assert self.rpc is not None
        edit.apply(self.lines)
        self.version += 1
        fut = self._await_version()
        rng = {
            "start": {"line": edit.line, "character": edit.start},
            "end": {"line": edit.line, "character": edit.end},
        }
        change = {
            "textDocument": {"uri": self.uri, "version": self.version},
            "contentChanges": [{"range": rng, "text": edit.text}],
        }
        t0 = time.perf_counter()
        self.rpc.notify("textDocument/didChange", change)
        try:
            t, _ = await asyncio.wait_for(fut, PUBLISH_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError(
                f"{self.name}: no diagnostics for version {self.version} "
                f"within {PUBLISH_TIMEOUT_S:g} s"
            ) from None
        self.sent[self.version] = (t0, t)
        return (t - t0) * 1000

    def cpu(self) -> tuple[float, float]:
        return (0.0, 0.0) if self.proc is None else cpu_seconds(self.proc.pid)

    async def stop(self) -> None:
        if self.rpc is not None:
            await self.rpc.shutdown()
        if self.proc is None:
            return
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


def make_engines(
    subprocess_engine: bool, relay: bool = False, codes: list[str] | None = None
) -> list[Engine]:
    # The session runs in the `dbcode serve` process the client started (--standalone), unless
    # --relay: then that process is the stdio relay to a shared server (the default of `dbcode
    # serve` over stdio), which neither --trace nor the CPU column can see.
    mode = {} if relay else {"DBCODE_SERVE_STANDALONE": "1"}
    engines = [
        Engine("ruff server", "ruff"),
        Engine("dbcode serve", "dbcode", env={"DBCODE_RUFF_ENGINE": "server", **mode}),
    ]
    for item in codes or []:  # other code trees, each with its own venv, in the same turns
        label, _, folder = item.partition("=")
        python = Path(folder) / ".venv" / "bin" / "python"
        if not python.exists():
            raise SystemExit(f"--code {item!r}: no {python}")
        env = {"DBCODE_RUFF_ENGINE": "server", **mode}
        engines.append(Engine(f"dbcode serve {label}", "dbcode", env=env, python=str(python)))
    if subprocess_engine:
        env = {"DBCODE_RUFF_ENGINE": "subprocess", **mode}
        engines.append(Engine("dbcode serve, subprocess", "dbcode", env=env))
    return engines


# -- tracing (--trace) -------------------------------------------------------------------------

# The steps of one edit in a traced dbcode server, in order: (event, what happens up to it).
# The default engine: the change goes to the ruff child before the session applies it, and the
# child's publish is relayed from the read callback of its stdout (no task on the way):
TRACE_CHAIN = [
    ("sent", ""),
    ("rx", "client -> server: pipe, read loop wakes, reads the didChange"),
    ("dispatch", "pygls: json.loads + structure (cattrs) of the didChange (not on a fast path)"),
    ("did_change_in", "didChange handler starts (pygls: handle_message, task; or a fast path)"),
    ("child_sent", "DocumentLint.before_change: the change for the child (offsets), one write"),
    ("on_change_in", "Session: offsets, LineIndex.replace, sync (the child lints meanwhile)"),
    ("soon_in", "DocumentLint.on_change: tree edits queued, change composed"),
    ("soon_out", "Analyzer.check(_soon): hash, result cache; the engine adopts the exchange"),
    ("on_change_out", "rest of DocumentLint.on_change"),
    ("did_change_out", "rest of the didChange handler"),
    ("child_rx", "ruff server child: apply the didChange, lint, publish; our read callback"),
    ("child_parsed", "decode of the child's publishDiagnostics (framing + JSON)"),
    ("engine_out", "the child's items as Findings (LSP JSON, sorted)"),
    ("publish_in", "callbacks: Analyzer result cache, DocumentLint, findings_json"),
    ("publish_out", "Client.publish_diagnostics: JSON (orjson), write"),
    ("arrive", "server -> client: pipe, client reads"),
]
# The subprocess engine: its check runs in a task.
TRACE_CHAIN_TASK = [
    ("sent", ""),
    ("rx", "client -> server: pipe, read loop wakes, reads the didChange"),
    ("dispatch", "pygls: json.loads + structure (cattrs) of the didChange (not on a fast path)"),
    ("did_change_in", "didChange handler starts (pygls: handle_message, task; or a fast path)"),
    ("on_change_in", "Session: offsets, LineIndex.replace, sync"),
    ("on_change_out", "DocumentLint.on_change: tree edits queued, change composed, task created"),
    ("did_change_out", "rest of the didChange handler"),
    ("check_in", "ruff task starts (DocumentLint._run_ruff)"),
    ("check_out", "Analyzer.check: configs + the whole `ruff check` run (subprocess engine)"),
    ("publish_in", "DocumentLint: the findings as JSON in the session's position encoding"),
    ("publish_out", "Client.publish_diagnostics: JSON (orjson), write"),
    ("arrive", "server -> client: pipe, client reads"),
]


def traced_serve(trace_path: str, argv: list[str]) -> int:
    """``dbcode serve`` with timestamps at the steps of :data:`TRACE_CHAIN` (see --trace)."""
    import atexit

    import pygls.io_
    from pygls.protocol.json_rpc import JsonRPCProtocol

    from lsp_dbcode import cli
    from lsp_dbcode.analysis import _lsp_stdio
    from lsp_dbcode.analysis.ruff import server as ruff_server
    from lsp_dbcode.server.client import Client
    from lsp_dbcode.server.handlers import text_sync
    from lsp_dbcode.server.lint import Analyzer, DocumentLint

    now = time.perf_counter
    events: list[tuple[str, float, int | None]] = []

    def mark(name: str, t: float | None = None, version: int | None = None) -> None:
        events.append((name, now() if t is None else t, version))

    def seen(msg: Any, t: float) -> None:
        if isinstance(msg, dict):  # lsp_dbcode's own reading (DbcodeProtocol.receive)
            if msg.get("method") == "textDocument/didChange":
                mark("rx", t, msg["params"]["textDocument"]["version"])
        elif getattr(msg, "method", None) == "textDocument/didChange":
            mark("rx", t, msg.params.text_document.version)

    pygls.io_.json = tracing.JsonProbe(seen)  # type: ignore[assignment]
    from lsp_dbcode.server import protocol as dbcode_protocol

    if hasattr(dbcode_protocol, "json"):  # DbcodeProtocol.receive decodes messages itself
        dbcode_protocol.json = tracing.JsonProbe(seen)  # type: ignore[assignment]

    def around(owner: Any, name: str, before: str, after: str) -> None:
        tracing.wrap(owner, name, mark, before=before, after=after)

    around(JsonRPCProtocol, "handle_message", "dispatch", "dispatch_out")
    around(text_sync, "apply_changes", "did_change_in", "did_change_out")
    around(DocumentLint, "on_change", "on_change_in", "on_change_out")
    if hasattr(Analyzer, "check_soon"):  # before the engine's one primitive: two ways in
        around(Analyzer, "check", "check_in", "check_out")
        around(Analyzer, "check_soon", "soon_in", "soon_out")
    else:  # Analyzer.check is the one way in (a callback, no task)
        around(Analyzer, "check", "soon_in", "soon_out")
    around(Client, "publish_diagnostics", "publish_in", "publish_out")
    around(_lsp_stdio.LspStdioClient, "_feed", "child_rx", "child_feed_out")
    tracing.wrap(
        _lsp_stdio.LspStdioClient,
        "send_now",
        mark,
        after="child_sent",
        when=lambda args: any(m.get("method") == "textDocument/didChange" for m in args[1:]),
    )
    tracing.wrap(_lsp_stdio, "_loads", mark, after="child_parsed")
    tracing.wrap(ruff_server, "_server_findings", mark, after="engine_out")

    def dump() -> None:
        Path(trace_path).write_text(json.dumps(events))

    atexit.register(dump)
    return cli.main(argv)


def trace_steps(engine: Engine, first_version: int) -> tuple[list[tuple[str, float]], float]:
    """Median ms of each step of :data:`TRACE_CHAIN` (:data:`TRACE_CHAIN_TASK` for the
    subprocess engine) over the measured edits, and of the total (a step missing in an engine,
    e.g. pygls' dispatch, is skipped)."""
    assert engine.trace is not None
    events = [tuple(e) for e in json.loads(engine.trace.read_text())]
    subprocess_engine = engine.env.get("DBCODE_RUFF_ENGINE") == "subprocess"
    trace_chain = TRACE_CHAIN_TASK if subprocess_engine else TRACE_CHAIN
    starts = [(i, e[2]) for i, e in enumerate(events) if e[0] == "rx"]
    steps: dict[tuple[str, str], list[float]] = {}
    totals: list[float] = []
    for n, (i, version) in enumerate(starts):
        if version is None or version < first_version or version not in engine.sent:
            continue
        end = starts[n + 1][0] if n + 1 < len(starts) else len(events)
        segment = events[i:end]
        sent, arrived = engine.sent[version]
        chain: list[tuple[str, float]] = [("sent", sent)]
        names = [name for name, _ in trace_chain[1:-1]]
        for k, name in enumerate(names):
            found = [t for e, t, _v in segment if e == name and t >= chain[-1][1]]
            # A step missing from this path (e.g. pygls' dispatch, skipped by the didChange fast
            # path) must not be matched with a later message's: it has to come before the
            # first occurrence of every later step.
            later = [t for e, t, _v in segment if e in names[k + 1 :] and t >= chain[-1][1]]
            if found and (not later or min(found) <= min(later)):
                chain.append((name, min(found)))
        chain.append(("arrive", arrived))
        for (a, ta), (b, tb) in itertools.pairwise(chain):
            steps.setdefault((a, b), []).append((tb - ta) * 1000)
        totals.append((arrived - sent) * 1000)
    labels = dict(trace_chain)  # a step is named after the event that ends it
    named = [(labels[k[1]], pct(v, 0.5)) for k, v in steps.items()]
    return named, pct(totals, 0.5)


# -- processes -------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def descendants(pids: list[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out: list[int] = []
    todo = list(pids)
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of the process itself, and of its descendants: those alive
    now and those it has waited for (ruff subprocesses)."""
    fields = _stat(pid)
    if fields is None:
        return 0.0, 0.0
    own = sum(int(x) for x in fields[11:13])
    children = sum(int(x) for x in fields[13:15])
    for child in descendants([pid]):
        if (f := _stat(child)) is not None:
            children += sum(int(x) for x in f[11:13])
    return own / CLK_TCK, children / CLK_TCK


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def machine_line() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({model}), Python {sys.version.split()[0]}"


# -- the database ------------------------------------------------------------------------------


async def create_scratch(dsn: str) -> str:
    return recreate(dsn, BENCH_DB)


async def drop_scratch(dsn: str) -> None:
    drop(dsn, BENCH_DB)


# -- the run -------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


@dataclass
class Row:
    lines: int
    engine: str
    samples: list[float]
    cpu_ms: tuple[float, float]  # the server process, its ruff children
    counts: tuple[int, int]
    unmatched: int
    versioned: int
    start_s: float


async def run_size(
    size: int, scratch: str, args: argparse.Namespace, tmp: Path, log_dir: Path
) -> tuple[list[Row], dict[str, Any]]:
    lines, blocks = make_module(size)
    text = "\n".join(lines) + "\n"
    async with Store(scratch) as store:
        await store.write(WORKSPACE, PATH, text, agent="diagbench")
    edits = make_edits(lines, blocks, WARMUP_EDITS + args.edits)
    engines = make_engines(not args.no_subprocess, args.relay, args.code)
    if args.trace:
        for e in engines:
            if e.kind == "dbcode":
                e.trace = log_dir / f"trace-{size}-{e.env.get('DBCODE_RUFF_ENGINE')}.json"
    client_cpu = 0.0
    mismatched = 0
    loads: list[float] = [loadavg()]
    try:
        await asyncio.gather(*(e.start(tmp, scratch, log_dir, args.log_level) for e in engines))
        await asyncio.gather(*(e.open(lines) for e in engines))
        for k, edit in enumerate(edits):
            if k == WARMUP_EDITS:
                for e in engines:
                    e.cpu_s = e.cpu()
                client_cpu = time.process_time()
            turn = k % len(engines)
            for e in engines[turn:] + engines[:turn]:
                ms = await e.edit(edit)
                if k >= WARMUP_EDITS:
                    e.samples.append(ms)
                if args.gap_ms:
                    await asyncio.sleep(args.gap_ms / 1000)
            if k % 50 == 0:
                loads.append(loadavg())
        for e in engines:
            own, children = e.cpu()
            e.cpu_s = (own - e.cpu_s[0], children - e.cpu_s[1])
        client_cpu = time.process_time() - client_cpu
        loads.append(loadavg())
        final = {e.text for e in engines}
        assert len(final) == 1, "the engines' buffers differ"
        anchor = engines[0]
        for e in engines[1:]:
            mismatched += sum(
                1 for v, n in e.counts.items() if v > 1 and anchor.counts.get(v, n) != n
            )
    finally:
        await asyncio.gather(*(e.stop() for e in engines), return_exceptions=True)
    rows = []
    for e in engines:
        measured = [n for v, n in e.counts.items() if v > WARMUP_EDITS + 1]
        rows.append(
            Row(
                size,
                e.name,
                e.samples,
                (e.cpu_s[0] * 1000 / len(e.samples), e.cpu_s[1] * 1000 / len(e.samples)),
                (min(measured), max(measured)),
                e.unmatched,
                e.versioned,
                e.start_s,
            )
        )
    extra = {
        "client_cpu_ms": client_cpu * 1000 / (len(engines) * args.edits),
        "loads": loads,
        "count_mismatches": mismatched,
        "server_requests": {e.name: e.rpc.server_requests for e in engines if e.rpc},
        "traces": {
            e.name: trace_steps(e, WARMUP_EDITS + 2)
            for e in engines
            if e.trace is not None and e.trace.exists()
        },
    }
    return rows, extra


def report(rows: list[Row], extras: dict[int, dict[str, Any]]) -> list[str]:
    out = [
        "| file | engine | p50 ms | p99 ms | ratio p50 vs ruff server | ratio p99 vs ruff server "
        "| CPU ms/edit: server + ruff children | diagnostics |",
        "|---|---|---|---|---|---|---|---|",
    ]
    anchors = {r.lines: r for r in rows if r.engine == "ruff server"}
    for r in rows:
        a = anchors[r.lines]
        p50, p99 = pct(r.samples, 0.5), pct(r.samples, 0.99)
        out.append(
            f"| {r.lines:,} lines | {r.engine} | {p50:.2f} | {p99:.2f} "
            f"| {p50 / pct(a.samples, 0.5):.2f} | {p99 / pct(a.samples, 0.99):.2f} "
            f"| {sum(r.cpu_ms):.1f} = {r.cpu_ms[0]:.1f} + {r.cpu_ms[1]:.1f} "
            f"| {r.counts[0]}-{r.counts[1]} |"
        )
    out.append("")
    for size, x in extras.items():
        loads = x["loads"]
        out.append(
            f"{size:,} lines: load average (1 min) {min(loads):.2f}-{max(loads):.2f}; "
            f"client CPU {x['client_cpu_ms']:.2f} ms/edit; diagnostic counts differing from "
            f"ruff server's: {x['count_mismatches']}; publishes with a version / for another "
            "version than awaited: "
            + ", ".join(
                f"{r.engine} {r.versioned} / {r.unmatched}" for r in rows if r.lines == size
            )
        )
    for size, x in extras.items():
        for name, (steps, total) in x["traces"].items():
            out += ["", f"Where the time goes: {name}, {size:,} lines (medians, ms)", ""]
            out += ["| step | ms |", "|---|---|"]
            out += [f"| {label} | {ms:.3f} |" for label, ms in steps]
            out.append(
                f"| sum of the medians / median total | {sum(m for _, m in steps):.3f}"
                f" / {total:.3f} |"
            )
    out.append("")
    for size, a in anchors.items():
        for r in rows:
            if r.lines == size and r.engine == "dbcode serve":
                ratio = pct(r.samples, 0.5) / pct(a.samples, 0.5)
                verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
                out.append(
                    f"target (dbcode serve p50 <= {TARGET_RATIO}x ruff server), {size:,} lines: "
                    f"{ratio:.2f}x -> {verdict}"
                )
    return out


async def amain(args: argparse.Namespace) -> int:
    async with await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT version()")
        row = await cur.fetchone()
    assert row is not None
    pg_version = str(row[0]).split(" on ")[0]
    proc = await asyncio.create_subprocess_exec(
        find_ruff_bin(), "--version", stdout=subprocess.PIPE
    )
    ruff_version = (await proc.communicate())[0].decode().split()[-1]
    print(f"{machine_line()}; {pg_version}; ruff {ruff_version}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="diagbench-"))
    log_dir = Path(args.log_dir) if args.log_dir else tmp / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    t_begin = time.perf_counter()
    rows: list[Row] = []
    extras: dict[int, dict[str, Any]] = {}
    scratch = await create_scratch(args.dsn)
    try:
        for size in SIZES:
            print(f"{size} lines ...", flush=True)
            got, extra = await run_size(size, scratch, args, tmp, log_dir)
            rows += got
            extras[size] = extra
            for r in got:
                print(
                    f"  {r.engine:<26} p50 {pct(r.samples, 0.5):7.2f} ms  "
                    f"p99 {pct(r.samples, 0.99):7.2f} ms  (started in {r.start_s:.2f} s)",
                    flush=True,
                )
    finally:
        await drop_scratch(args.dsn)
        shutil.rmtree(tmp, ignore_errors=True)  # the logs too, unless --log-dir is elsewhere
    print()
    print(
        f"{args.edits} measured edits per file and engine (after {WARMUP_EDITS} warm-up edits), "
        f"gap {args.gap_ms:g} ms; {time.perf_counter() - t_begin:.0f} s"
    )
    print("\n".join(report(rows, extras)))
    return 0


def main() -> int:
    if sys.argv[1:2] == ["_traced_serve"]:
        return traced_serve(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL server (any database)")
    parser.add_argument("--edits", type=int, default=200, help="measured edits per file")
    parser.add_argument(
        "--gap-ms", type=float, default=5.0, help="pause after each edit's diagnostics"
    )
    parser.add_argument(
        "--no-subprocess", action="store_true", help="skip DBCODE_RUFF_ENGINE=subprocess"
    )
    parser.add_argument(
        "--code",
        action="append",
        metavar="LABEL=DIR",
        help="also a dbcode serve of another code tree (DIR/.venv/bin/python), in the same "
        "turns: e.g. the code before a change (git worktree add DIR REV; an editable install "
        "into DIR/.venv)",
    )
    parser.add_argument("--log-dir", help="keep the servers' logs in this folder")
    parser.add_argument("--log-level", default="INFO", help="dbcode serve's --log-level")
    parser.add_argument(
        "--trace", action="store_true", help="timestamp the steps inside dbcode serve"
    )
    parser.add_argument(
        "--relay",
        action="store_true",
        help="run dbcode serve as editors do: a stdio relay to a shared server (no --trace)",
    )
    args = parser.parse_args()
    if args.relay and args.trace:
        parser.error("--trace needs the session in the process it starts: not with --relay")
    if args.edits < 1:
        parser.error("--edits must be at least 1")
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
