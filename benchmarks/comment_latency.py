"""A comment reaching another session's editor, beside a changeset's push, in the same run.

Run: ``python benchmarks/comment_latency.py [--dsn DSN] [--rounds 40]``.

Issue 15: "A comment reaches another session's editor as fast as a changeset's push does."
Two ``dbcode serve --tcp`` processes (so everything crosses PostgreSQL's NOTIFY, as between two
machines); session A on the first, session B on the second, subscribed to the workspace and
with the file open. Each round, interleaved:

* **push** (the anchor): A ``dbcode/writeFile`` of one changed line → B receives the
  ``workspace/applyEdit`` that carries it into its buffer (B applies it, as an editor does);
* **didComment**: A ``dbcode/comment`` → B receives ``dbcode/didComment``;
* **diagnostic**: the same comment → B receives the ``publishDiagnostics`` whose ``review``
  diagnostics include it (what a person sees).

Times from the request sent to the arrival at B. Creates the scratch database
``dbcode_bench_comment`` on the server of ``--dsn`` and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from lsp_rpc import Rpc  # benchmarks/lsp_rpc.py
from scratch_db import drop, recreate  # benchmarks/scratch_db.py

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "dbcode_bench_comment"
WS = "bench"
LINES = 100


def text(version: int) -> str:
    return "".join(f"v{i} = {version if i == 50 else i}\n" for i in range(LINES))


class Session(Rpc):
    """B's side: records when pushes, didComment and review diagnostics arrive."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.version = 1
        self.pushes: list[float] = []
        self.comments: dict[int, float] = {}  # thread -> didComment arrival
        self.diags: dict[int, float] = {}  # thread -> first review diagnostic arrival
        self.on_request = self._server_request
        self.on_publish = self._publish
        self.on_notify = self._notify

    def _server_request(self, msg: dict[str, Any], t: float) -> None:
        if msg["method"] != "workspace/applyEdit":
            self.respond(msg["id"], None)
            return
        self.pushes.append(t)
        self.respond(msg["id"], {"applied": True})
        (change,) = msg["params"]["edit"]["documentChanges"]
        doc = change["textDocument"]
        self.version = doc["version"] + 1
        self.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": doc["uri"], "version": self.version},
                "contentChanges": [
                    {"range": e["range"], "text": e["newText"]} for e in change["edits"]
                ],
            },
        )

    def _notify(self, method: str, params: Any, t: float) -> None:
        if method == "dbcode/didComment" and params.get("event") == "created":
            self.comments.setdefault(params["thread"], t)

    def _publish(self, params: dict[str, Any], t: float) -> None:
        for d in params.get("diagnostics", ()):
            if d.get("source") == "review":
                self.diags.setdefault(d["data"]["thread"], t)

    async def initialize(self, agent: str) -> None:
        await self.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": None,
                "capabilities": {
                    "workspace": {"applyEdit": True, "workspaceEdit": {"documentChanges": True}},
                    "general": {"positionEncodings": ["utf-16"]},
                    "textDocument": {
                        "synchronization": {"didSave": True},
                        "publishDiagnostics": {},
                    },
                },
                "initializationOptions": {"agent": agent, "mode": "save"},
            },
        )
        self.notify("initialized", {})


async def start_server(dsn: str) -> tuple[asyncio.subprocess.Process, int]:
    env = {k: v for k, v in os.environ.items() if k != "DBCODE_AGENT"}
    env["DBCODE_DATABASE_URL"] = dsn
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lsp_dbcode", "serve", "--tcp", "127.0.0.1:0",
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert proc.stderr is not None
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), 60)
        if not line:
            raise RuntimeError("dbcode serve --tcp exited")
        m = re.search(rb"serving LSP over TCP on \('127\.0\.0\.1', (\d+)\)", line)
        if m:
            return proc, int(m.group(1))


async def connect(port: int, name: str) -> Session:
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
    w.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s = Session(r, w, name)
    await s.initialize(name)
    return s


async def run(args: argparse.Namespace) -> None:
    dsn = recreate(args.dsn, DB)
    procs = []
    try:
        (p1, port1), (p2, port2) = await asyncio.gather(start_server(dsn), start_server(dsn))
        procs = [p1, p2]
        a = await connect(port1, "ann")
        b = await connect(port2, "bob")
        uri = f"dbcode://{WS}/m.py"
        await a.request("dbcode/writeFile", {"uri": uri, "text": text(0)})
        await b.request("dbcode/subscribe", {"workspace": WS})
        opened = (await b.request("dbcode/readFile", {"uri": uri}))["text"]
        b.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": opened}},
        )
        await asyncio.sleep(1.0)
        rev = (await a.request("dbcode/readFile", {"uri": uri}))["revision"]
        times: dict[str, list[float]] = {"push": [], "didComment": [], "diagnostic": []}

        async def arrival(seen: dict[int, float], key: int) -> float:
            for _ in range(1000):
                if key in seen:
                    return seen[key]
                await asyncio.sleep(0.005)
            raise RuntimeError(f"nothing arrived for {key}")

        for round_ in range(args.rounds + 1):  # round 0 warms up
            pushes = len(b.pushes)
            t0 = time.perf_counter()
            res = await a.request(
                "dbcode/writeFile", {"uri": uri, "text": text(round_ + 1), "baseRevision": rev}
            )
            rev = res["revision"]
            for _ in range(1000):
                if len(b.pushes) > pushes:
                    break
                await asyncio.sleep(0.005)
            push = b.pushes[pushes] - t0
            await asyncio.sleep(0.3)  # B's buffer settles, its diagnostics go out
            line = round_ % (LINES - 1)
            t0 = time.perf_counter()
            made = await a.request(
                "dbcode/comment",
                {
                    "uri": uri,
                    "range": {
                        "start": {"line": line, "character": 0},
                        "end": {"line": line + 1, "character": 0},
                    },
                    "text": f"round {round_}",
                },
            )
            thread = made["thread"]
            comment = await arrival(b.comments, thread) - t0
            diag = await arrival(b.diags, thread) - t0
            if round_:
                times["push"].append(push)
                times["didComment"].append(comment)
                times["diagnostic"].append(diag)
            # One open thread at a time.
            await a.request("dbcode/resolve", {"workspace": WS, "thread": thread})
            await asyncio.sleep(0.2)
        await a.shutdown()
        await b.shutdown()
        base = statistics.median(times["push"])
        print(f"two server processes, {args.rounds} rounds; from A's request to arrival at B")
        print(f"{'what':<12} {'median ms':>10} {'p90 ms':>8} {'vs push':>8}")
        for name, xs in times.items():
            xs.sort()
            p90 = xs[min(len(xs) - 1, int(0.9 * len(xs)))]
            print(
                f"{name:<12} {1000 * statistics.median(xs):>10.2f} {1000 * p90:>8.2f}"
                f" {statistics.median(xs) / base:>7.2f}x"
            )
    finally:
        for p in procs:
            if p.returncode is None:
                os.killpg(p.pid, 15)
                await p.wait()
        drop(args.dsn, DB)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dsn", default=DEFAULT_DSN, help="an admin DSN of the server to use")
    p.add_argument("--rounds", type=int, default=40)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
