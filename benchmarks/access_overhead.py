"""Access control's cost: commits/s and push latency with access control on, beside open mode,
same run (target: within 1.15x).

Run: ``python benchmarks/access_overhead.py [--dsn DSN] [--writers 8] [--seconds 4]
[--rounds 3] [--pushes 200]``.

Two scratch databases on the server of ``--dsn``: ``dbcode_bench_open`` (no agents) and
``dbcode_bench_acl`` (an admin and one agent per writer, each granted ``bench/wN/=write``: its
SQL runs under its own role with row-level security, every request re-checks its token). One
``dbcode serve --tcp`` per database. Over raw JSON-RPC on TCP:

* **commits/s**: ``--writers`` sessions, each writing its own file (``dbcode/writeFile`` with
  its base) as fast as answers come, for ``--seconds``; the rounds alternate open / enforced so
  that foreign load on the shared machine hits both alike;
* **push latency**: one session writes a file, another (subscribed to the workspace) is told
  (``dbcode/didCommit``); the time from the write's send to the notification, median and p95.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from scratch_db import drop, recreate  # benchmarks/scratch_db.py

from lsp_dbcode.store import Store
from lsp_dbcode.store.access import parse_grant

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
WS = "bench"


class Client:
    """A raw LSP client over TCP (no library in the measured path)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.commits: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, port: int, token: str | None, name: str) -> Client:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        c = cls(r, w)
        opts: dict[str, Any] = {"agent": name}
        if token:
            opts["token"] = token
        await c.call("initialize", {"capabilities": {}, "initializationOptions": opts})
        c.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        return c

    def send(self, msg: dict[str, Any]) -> None:
        body = json.dumps(msg).encode()
        self.w.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    async def call(self, method: str, params: Any) -> Any:
        i = next(self.ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[i] = fut
        self.send({"jsonrpc": "2.0", "id": i, "method": method, "params": params})
        return await fut

    async def _read(self) -> None:
        while True:
            head = await self.r.readuntil(b"\r\n\r\n")
            n = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            msg = json.loads(await self.r.readexactly(n))
            if msg.get("method") == "dbcode/didCommit":
                self.commits.put_nowait((time.perf_counter(), msg["params"]))
            elif "id" in msg and "method" not in msg:
                fut = self.waiting.pop(msg["id"])
                if "error" in msg:
                    fut.set_exception(RuntimeError(msg["error"]["message"]))
                else:
                    fut.set_result(msg.get("result"))
            elif "id" in msg:  # a request of the server's: answer it
                self.send({"jsonrpc": "2.0", "id": msg["id"], "result": None})

    async def close(self) -> None:
        self.task.cancel()
        self.w.close()


def start_server(dsn: str) -> tuple[subprocess.Popen[bytes], int]:
    env = {**os.environ, "DBCODE_DATABASE_URL": dsn}
    env.pop("DBCODE_AGENT", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lsp_dbcode", "serve", "--tcp", "127.0.0.1:0"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stderr is not None
    for _ in range(200):
        m = re.search(
            r"serving LSP over \w+ on \('127\.0\.0\.1', (\d+)\)", proc.stderr.readline().decode()
        )
        if m:
            return proc, int(m.group(1))
    raise SystemExit("the server did not start")


async def writers_round(port: int, tokens: list[str | None], seconds: float) -> float:
    clients = [await Client.connect(port, t, f"w{i}") for i, t in enumerate(tokens)]
    done = 0
    stop_at = 0.0

    async def loop(i: int, c: Client) -> None:
        nonlocal done
        uri = f"dbcode://{WS}/w{i}/f.py"
        n = 0
        while time.perf_counter() < stop_at:
            n += 1
            await c.call("dbcode/writeFile", {"uri": uri, "text": f"x = {n}\n"})
            done += 1

    stop_at = time.perf_counter() + 0.5  # warm up
    await asyncio.gather(*(loop(i, c) for i, c in enumerate(clients)))
    done = 0
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(*(loop(i, c) for i, c in enumerate(clients)))
    rate = done / (time.perf_counter() - start)
    for c in clients:
        await c.close()
    return rate


async def push_round(
    port: int, writer_token: str | None, reader_token: str | None, n: int
) -> list[float]:
    a = await Client.connect(port, writer_token, "w0")
    b = await Client.connect(port, reader_token, "w1")
    await b.call("dbcode/subscribe", {"workspace": WS})
    uri = f"dbcode://{WS}/w0/push.py"
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await a.call("dbcode/writeFile", {"uri": uri, "text": f"p = {i}\n"})
        while True:
            t1, cs = await b.commits.get()
            if any(f["path"] == "w0/push.py" for f in cs["files"]):
                break
        out.append((t1 - t0) * 1000)
    await a.close()
    await b.close()
    return out


async def setup(dsn: str, writers: int, enforce: bool) -> list[str | None]:
    async with Store(dsn) as store:
        await store.write(WS, "seed.py", "s = 1\n", agent="seed")
        if not enforce:
            return [None] * writers
        root, _ = await store.access.add_agent("root", [], admin=True)
        tokens: list[str | None] = []
        for i in range(writers):
            # w0 may also read everything (the push reader is w1: it reads w0/ too).
            grants = [parse_grant(f"{WS}/w{i}=write"), parse_grant(f"{WS}=read")]
            _, t = await store.access.add_agent(f"w{i}", grants, by=root)
            tokens.append(t)
        return tokens


async def main_async(args: argparse.Namespace) -> None:
    dsns = {
        "open": recreate(args.dsn, "dbcode_bench_open"),
        "acl": recreate(args.dsn, "dbcode_bench_acl"),
    }
    tokens = {k: await setup(d, max(args.writers, 2), k == "acl") for k, d in dsns.items()}
    servers = {k: start_server(d) for k, d in dsns.items()}
    try:
        rates: dict[str, list[float]] = {"open": [], "acl": []}
        pushes: dict[str, list[float]] = {"open": [], "acl": []}
        for _ in range(args.rounds):
            for k in ("open", "acl"):
                port = servers[k][1]
                rates[k].append(await writers_round(port, tokens[k][: args.writers], args.seconds))
                t = tokens[k]
                pushes[k] += await push_round(port, t[0], t[1], args.pushes // args.rounds)
        print(f"access_overhead: {args.writers} writers, {args.rounds} rounds of {args.seconds} s")
        print(f"{'':10}{'commits/s':>12}{'push p50 ms':>14}{'push p95 ms':>14}")
        for k in ("open", "acl"):
            p = sorted(pushes[k])
            print(
                f"{k:10}{statistics.median(rates[k]):12.0f}{statistics.median(p):14.2f}"
                f"{p[int(len(p) * 0.95) - 1]:14.2f}"
            )
        r = statistics.median(rates["open"]) / statistics.median(rates["acl"])
        lat = statistics.median(pushes["acl"]) / statistics.median(pushes["open"])
        print(f"ratio (acl cost, 1.0 = none): commits/s {r:.2f}x, push latency p50 {lat:.2f}x")
    finally:
        for proc, _ in servers.values():
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        drop_roles(dsns["acl"])
        for name in ("dbcode_bench_open", "dbcode_bench_acl"):
            drop(args.dsn, name)


def drop_roles(dsn: str) -> None:
    """The agents' roles the enforced database made (roles are cluster-wide)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT role_prefix FROM dbcode_access").fetchone()
        assert row is not None
        roles = [
            r[0]
            for r in conn.execute(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s) ORDER BY rolname = %s",
                (row[0], row[0] + "agents"),
            )
        ]
        conn.execute("DROP OWNED BY " + ", ".join(f'"{r}"' for r in roles))
    drop_db = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(drop_db, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = 'dbcode_bench_acl' AND pid <> pg_backend_pid()"
        )
    for r in roles:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{r}"')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsn", default=DEFAULT_DSN)
    p.add_argument("--writers", type=int, default=8)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pushes", type=int, default=150)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
