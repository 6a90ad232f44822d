"""The floor under issue 3's target 1: what the least a Python relay can do costs, measured
beside ``dbcode serve`` and the raw LISTEN/NOTIFY round trip, interleaved commit by commit.

Target 1 asks for a commit-to-push p50 within 3x of the raw NOTIFY round trip. Separate runs
of push_latency.py on this shared machine differ by more than the effects being tuned (the raw
round trip itself moves between 0.3 and 0.9 ms from one minute to the next), so this script
runs every variant in the same rounds, in rotated order, 2 ms apart, and reports each as a
ratio to the raw round trip of those rounds:

- ``raw NOTIFY`` / ``insert+NOTIFY``: push_latency's anchors (one autocommit ``NOTIFY``; one
  autocommit statement inserting a row of the file's size and calling ``pg_notify``).
- ``relay <db> (<loop>)``: a minimal server in Python (this file, ``_relay``): two TCP
  connections, newline-framed JSON. On a line from the writer it runs ``<db>`` through a
  psycopg pool, then writes a line to the receiver and one to the writer. ``<db>`` is
  ``none`` (no database), ``SELECT 1``, ``INSERT`` (one autocommit INSERT of the text: a WAL
  flush) or ``dbcode_write`` (our commit of a file, CAS on the revision: what the server
  runs). No LSP, no documents, no diff, no checks: the floor of a relay in Python, on
  asyncio's loop and, where uvloop is installed (``pip install uvloop``; lsp-dbcode does not
  use it), on uvloop's.
- ``dbcode serve``: the real server over TCP, one writer session sending
  ``dbcode/writeFile``, one receiver session with the file open getting
  ``workspace/applyEdit`` (push_latency.py's client).

    python benchmarks/push_floor.py [--dsn DSN] [--commits 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import push_latency as pl  # benchmarks/push_latency.py

from lsp_dbcode.store import Store
from lsp_dbcode.uris import make_uri

RELAY_DB = ["none", "select1", "insert", "write"]
RELAY_LABEL = {"none": "none", "select1": "SELECT 1", "insert": "INSERT", "write": "dbcode_write"}
# How much of the floor is the event loop: uvloop where installed (not a dependency).
LOOPS = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])
GAP_S = 0.002
SELF = Path(__file__).resolve()


# -- the minimal relay (a subprocess) ---------------------------------------------------------


async def _relay_main(dsn: str, db: str) -> None:
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(dsn, min_size=2, max_size=2, kwargs={"autocommit": True}, open=False)
    await pool.open()
    receivers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        role = (await reader.readline()).strip()
        if role == b"R":
            receivers.append(writer)
            await reader.read()  # until the benchmark closes it
            return
        while line := await reader.readline():
            msg = json.loads(line)
            result: Any = None
            if db != "none":
                async with pool.connection() as conn:
                    if db == "write":
                        cur = await conn.execute(
                            "SELECT dbcode_write(%s, %s, NULL, %s, %s, %s)",
                            (
                                msg["ws"],
                                "relay",
                                msg["path"],
                                msg["base"],
                                msg["text"],
                            ),
                        )
                    elif db == "insert":
                        cur = await conn.execute(
                            "INSERT INTO pushbench_anchor VALUES (%s, %s) RETURNING k",
                            (msg["k"], msg["text"]),
                        )
                    else:
                        cur = await conn.execute("SELECT 1")
                    row = await cur.fetchone()
                    result = row[0] if row else None
            out = json.dumps({"k": msg["k"], "result": result, "text": msg["text"]}).encode()
            for r in receivers:
                r.write(out + b"\n")
            writer.write(json.dumps({"k": msg["k"], "result": result}).encode() + b"\n")

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"port {port}\n")
    sys.stdout.flush()
    await server.serve_forever()


def relay_main(dsn: str, db: str, loop: str) -> int:
    if loop == "uvloop":
        import uvloop

        uvloop.run(_relay_main(dsn, db))
    else:
        asyncio.run(_relay_main(dsn, db))
    return 0


class Relay:
    """One minimal relay process (``_relay``) and the benchmark's two connections to it."""

    def __init__(self, db: str, loop: str) -> None:
        self.db, self.loop = db, loop
        self.label = f"relay {RELAY_LABEL[db]} ({loop})"
        self.workspace = f"floor-relay-{loop}"
        self.samples: list[float] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.rev = 0

    async def start(self, dsn: str, logdir: Path) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SELF),
            "_relay",
            dsn,
            self.db,
            self.loop,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), pl.START_TIMEOUT_S)
        port = int(line.split()[1])
        self.rr, rw = await asyncio.open_connection("127.0.0.1", port)
        rw.write(b"R\n")
        self.wr, self.ww = await asyncio.open_connection("127.0.0.1", port)
        self.ww.write(b"W\n")
        self.writers = [rw, self.ww]  # kept: a StreamWriter closes its socket when collected
        if self.db == "write":
            async with Store(dsn, min_size=1, max_size=1) as store:
                res = await store.write(
                    self.workspace, pl.FILE_PATH, pl.version_text(0), agent="seed"
                )
                self.rev = res.revisions[pl.FILE_PATH]

    async def sample(self, k: int, keep: bool) -> None:
        text = pl.version_text(k)
        msg = {"k": k, "ws": self.workspace, "path": pl.FILE_PATH, "base": self.rev, "text": text}
        t0 = time.perf_counter()
        self.ww.write(json.dumps(msg).encode() + b"\n")
        pushed = await asyncio.wait_for(self.rr.readline(), pl.ROUND_TIMEOUT_S)
        t1 = time.perf_counter()
        reply = json.loads(await asyncio.wait_for(self.wr.readline(), pl.ROUND_TIMEOUT_S))
        if json.loads(pushed)["text"] != text:
            raise RuntimeError(f"{self.label}: wrong push")
        if self.db == "write":
            self.rev = int(reply["result"]["revisions"][pl.FILE_PATH])
        if keep:
            self.samples.append(t1 - t0)

    async def stop(self) -> None:
        for w in self.writers:
            w.close()
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


class Dbcode:
    """``dbcode serve --tcp`` with one writer and one receiver (push_latency's client)."""

    def __init__(self) -> None:
        self.label = "dbcode serve"
        self.samples: list[float] = []
        self.srv = pl.Servers()
        self.rev = 1
        self.uri = make_uri("floor-dbcode", pl.FILE_PATH)

    async def start(self, dsn: str, logdir: Path) -> None:
        async with Store(dsn, min_size=1, max_size=1) as store:
            await store.write(
                "floor-dbcode", pl.FILE_PATH, pl.version_text(0), agent="seed", base=0
            )
        await pl.start_tcp(self.srv, dsn, 1, logdir)
        self.bench = pl.Bench()
        self.receiver = pl.Receiver(0, self.srv.receivers[0], self.bench)
        await self.receiver.open(self.uri)

    async def sample(self, k: int, keep: bool) -> None:
        text = pl.version_text(k)
        rnd = pl.Round(k, text, [None], 1, asyncio.get_running_loop().create_future())
        self.bench.rnd = rnd
        assert self.srv.writer is not None
        t0 = time.perf_counter()
        fut = self.srv.writer.request_nowait(
            "dbcode/writeFile", {"uri": self.uri, "text": text, "baseRevision": self.rev}
        )
        reply = await asyncio.wait_for(fut, pl.ROUND_TIMEOUT_S)
        await asyncio.wait_for(asyncio.shield(rnd.done), pl.ROUND_TIMEOUT_S)
        self.bench.rnd = None
        self.rev = int(reply["revision"])
        t1 = rnd.times[0]
        assert t1 is not None
        if rnd.mismatches:
            raise RuntimeError(f"{self.label}: the receiver's buffer differs from commit {k}")
        if keep:
            self.samples.append(t1 - t0)

    async def stop(self) -> None:
        await self.srv.stop()


def _row(label: str, samples: list[float], raw: float, insert: float) -> str:
    p50 = pl.pct(samples, 0.5)
    return (
        f"| {label} | {pl.fmt_ms(p50)} | {pl.fmt_ms(pl.pct(samples, 0.1))} | "
        f"{pl.fmt_ms(pl.pct(samples, 0.9))} | {pl.fmt_ms(pl.pct(samples, 0.99))} | "
        f"**{p50 / raw:.2f}** | {p50 / insert:.2f} |"
    )


async def amain(args: argparse.Namespace) -> int:
    dsn = await pl.create_scratch(args.dsn)
    logdir = Path(tempfile.mkdtemp(prefix="pushfloor-logs-"))
    relay_db = [d for d in args.relays.split(",") if d]
    if bad := [d for d in relay_db if d not in RELAY_DB]:
        raise SystemExit(f"push_floor.py: unknown relay {bad[0]!r}: use {','.join(RELAY_DB)}")
    server = Dbcode()
    variants: list[Relay | Dbcode] = [Relay(db, loop) for db in relay_db for loop in LOOPS]
    variants.append(server)
    anchor = pl.Anchor()
    print(pl.machine_line() + f"; server logs in {logdir}", flush=True)
    try:
        for v in variants:
            await v.start(dsn, logdir)
        await anchor.open(dsn)
        total = pl.WARMUP_COMMITS + args.commits
        for k in range(1, total + 1):
            keep = k > pl.WARMUP_COMMITS
            await asyncio.sleep(GAP_S)
            await anchor.sample(k, keep)
            shift = k % len(variants)
            for v in variants[shift:] + variants[:shift]:
                await asyncio.sleep(GAP_S)
                await v.sample(k, keep)
            if k % 50 == 0:
                print(f"  {k}/{total} rounds", file=sys.stderr, flush=True)
    finally:
        await anchor.close()
        for v in variants:
            with contextlib.suppress(Exception):
                await v.stop()
        await pl.drop_scratch(args.dsn)
    raw, insert = pl.pct(anchor.notify, 0.5), pl.pct(anchor.insert_notify, 0.5)
    print(
        f"\n{args.commits} rounds, every variant once per round in rotated order, "
        f"{GAP_S * 1000:.0f} ms apart\n"
    )
    print("| variant | p50 ms | p10 ms | p90 ms | p99 ms | p50 / raw p50 | p50 / insert p50 |")
    print("|---|---|---|---|---|---|---|")
    print(_row("raw NOTIFY (anchor)", anchor.notify, raw, insert))
    print(_row("insert+NOTIFY (anchor)", anchor.insert_notify, raw, insert))
    for v in variants:
        print(_row(v.label, v.samples, raw, insert))
    best = pl.pct(server.samples, 0.5)
    line = f"\ntarget 1 (p50 within 3x of raw): dbcode serve {best / raw:.2f}x"
    # Against the relay on the server's own loop (asyncio): the same commit, nothing else.
    floor = next((v for v in variants if isinstance(v, Relay) and v.db == "write"), None)
    if floor is not None:
        f50 = pl.pct(floor.samples, 0.5)
        line += (
            f"; {floor.label} {f50 / raw:.2f}x; dbcode serve's excess over it "
            f"{(best - f50) * 1e6:+.0f} us"
        )
    print(line)
    return 0


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "_relay":
        return relay_main(sys.argv[2], sys.argv[3], sys.argv[4])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", default=os.environ.get("DBCODE_BENCH_DSN", pl.DEFAULT_DSN))
    ap.add_argument("--commits", type=int, default=300, help="measured rounds")
    ap.add_argument(
        "--relays", default=",".join(RELAY_DB), help="the minimal relays to run (none: ',')"
    )
    return asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
