"""Where a store commit's time goes: server-side variants and the Python client, measured.

Run: ``python benchmarks/store_commit_profile.py [--dsn DSN] [--clients 8] [--seconds 5]``.

Part 1, the server (pgbench drives SQL, no Python; ``--clients`` connections, each writing its
own ~600-byte file; slices of all variants interleaved, beside ``pgbench -N``):

* ``dbcode_commit`` as shipped, all clients in one workspace (the ``distinct`` case), and with
  ``synchronous_commit=off`` (the commit no longer waits for the WAL flush, nor holds the
  workspace row lock through it);
* a workspace per client (no shared row lock), with ``dbcode_commit`` and with a copy of it
  without its ``pg_notify`` (NOTIFY takes a cluster-wide lock from pre-commit to the end of
  the commit, WAL flush included);
* the copy without ``pg_notify``, one workspace;
* a copy that takes a per-workspace advisory lock first (one FIFO queue per workspace instead
  of every waiter queueing on the workspace row's tuple and transaction locks), one workspace;
* 8 changesets per transaction (``SELECT count(dbcode_commit(...)) FROM generate_series(1, 8)``)
  over ``--clients``/8 connections: the same number of writers served by a group committer that
  takes the lock and flushes the WAL once for 8 changesets.

Part 2, the Python client (one process, one connection, one commit at a time): latency and CPU
per call of an empty query, a plain ``SELECT dbcode_commit(...)``, ``Store.commit`` as shipped
and with the pool's per-checkout check switched off, ``Store.read`` and a plain read query.

Uses the scratch database ``dbcode_profile`` (created and dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from store_commits import (
    DEFAULT_DSN,
    Point,
    pgbench_env,
    recreate,
    run_pgbench,
    server_version,
    slices,
    source_text,
)
from store_commits import drop as drop_db

from lsp_dbcode.store import Change, Store
from lsp_dbcode.store.schema import _V1

PROFILE_DB = "dbcode_profile"
TEXT = "repeat('    total += value * 2' || chr(10), 26) || :n"
CHANGE = f"jsonb_build_array(jsonb_build_object('op', 'write', 'path', {{path}}, 'text', {TEXT}))"


def script(function: str, workspace: str, batch: int = 1) -> str:
    """A pgbench script: one commit of the client's own file (or ``batch`` in one statement)."""
    if batch == 1:
        change = CHANGE.format(path="'src/w' || :client_id || '.py'")
        call = f"SELECT {function}({workspace}, 'pgbench', NULL, {change});"
    else:
        change = CHANGE.format(path="'src/w' || :client_id || '-' || g || '.py'")
        call = (
            f"SELECT count({function}({workspace}, 'pgbench', NULL, {change}))"  # noqa: S608
            f" FROM generate_series(1, {batch}) g;"
        )
    return f"\\set n random(1, 1000000000)\n{call}\n"


ONE_WS = "'one'"
WS_PER_CLIENT = "'ws' || :client_id"

# (label, pgbench script or "" for pgbench -N, changesets per transaction, PGOPTIONS)
SERVER_VARIANTS: list[tuple[str, str, int, str]] = [
    ("pgbench -N (anchor)", "", 1, ""),
    ("dbcode_commit, one workspace (as shipped)", script("dbcode_commit", ONE_WS), 1, ""),
    (
        "dbcode_commit, one workspace, synchronous_commit=off",
        script("dbcode_commit", ONE_WS),
        1,
        "-c synchronous_commit=off",
    ),
    ("dbcode_commit, a workspace per client", script("dbcode_commit", WS_PER_CLIENT), 1, ""),
    (
        "without pg_notify, a workspace per client",
        script("dbcode_commit_nonotify", WS_PER_CLIENT),
        1,
        "",
    ),
    ("without pg_notify, one workspace", script("dbcode_commit_nonotify", ONE_WS), 1, ""),
    (
        "advisory workspace lock taken first, one workspace",
        script("dbcode_commit_advisory", ONE_WS),
        1,
        "",
    ),
    (
        "8 changesets per transaction, one workspace, N/8 connections",
        script("dbcode_commit", ONE_WS, 8),
        8,
        "",
    ),
]


def function_variant(name: str, old: str, new: str) -> str:
    """The shipped commit function, renamed ``name``, with ``old`` replaced by ``new``."""
    fn = _V1[_V1.index("CREATE FUNCTION dbcode_commit") :]
    assert old in fn, "the commit function changed: update this benchmark"
    return fn.replace("FUNCTION dbcode_commit(", f"FUNCTION {name}(").replace(old, new, 1)


VARIANT_FUNCTIONS = [
    # No NOTIFY.
    function_variant(
        "dbcode_commit_nonotify", "    PERFORM pg_notify('dbcode', p_workspace || ' ' || s);\n", ""
    ),
    # The workspace lock taken first, as an advisory lock (one FIFO queue), before the row locks.
    function_variant(
        "dbcode_commit_advisory",
        "    SELECT array_agg(x ORDER BY x) INTO all_paths FROM (",
        "    PERFORM pg_advisory_xact_lock(1684169572, ws::integer);  -- 'dbcd', workspace\n"
        "    SELECT array_agg(x ORDER BY x) INTO all_paths FROM (",
    ),
]


def server_side(args: argparse.Namespace, dsn: str) -> list[tuple[str, float, Point]]:
    env = pgbench_env(args.dsn)
    points = [Point() for _ in SERVER_VARIANTS]
    for secs in slices(args.seconds, args.rounds):
        for (_, text, batch, options), point in zip(SERVER_VARIANTS, points, strict=True):
            clients = max(1, args.clients // batch)
            env_v = dict(env, PGOPTIONS=options)
            run_pgbench(args, env_v, PROFILE_DB, clients, secs, point, text)
    return [
        (label, batch * p.rate, p)
        for (label, _, batch, _), p in zip(SERVER_VARIANTS, points, strict=True)
    ]


async def client_side(dsn: str, calls: int, rounds: int) -> list[tuple[str, float, float]]:
    """(label, median ms per call, CPU ms per call) of sequential calls, rounds interleaved."""
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    store = Store(dsn, min_size=1, max_size=1)
    await store.open()
    await store.write("client", "src/read.py", source_text(0, 0), agent="profile")
    state = {"n": 0, "base": 0}

    async def empty() -> Any:
        await conn.execute("")

    async def raw_commit() -> Any:
        state["n"] += 1
        items = [{"op": "write", "path": "src/raw.py", "text": source_text(1, state["n"])}]
        cur = await conn.execute(
            "SELECT dbcode_commit(%s, %s, %s, %s)", ("client", "profile", None, Jsonb(items))
        )
        await cur.fetchone()

    async def store_commit() -> Any:
        state["n"] += 1
        change = Change.write("src/store.py", source_text(2, state["n"]), state["base"])
        res = await store.commit("client", [change], agent="profile")
        state["base"] = res.revisions["src/store.py"]

    async def store_commit_nocheck() -> Any:
        check = store._pool._check
        store._pool._check = None  # experiment only: the pool's per-checkout round trip
        try:
            await store_commit()
        finally:
            store._pool._check = check

    async def store_read() -> Any:
        await store.read("client", "src/read.py")

    async def raw_read() -> Any:
        cur = await conn.execute(
            "SELECT f.revision, r.content FROM dbcode_file f"
            " JOIN dbcode_workspace w ON w.id = f.workspace_id"
            " JOIN dbcode_revision r ON r.workspace_id = f.workspace_id"
            "  AND r.path = f.path AND r.revision = f.revision"
            " WHERE w.name = %s AND f.path = %s AND NOT f.deleted",
            ("client", "src/read.py"),
        )
        await cur.fetchone()

    ops: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("empty query (one round trip)", empty),
        ("SELECT dbcode_commit(...) on a plain connection", raw_commit),
        ("Store.commit (as shipped)", store_commit),
        ("Store.commit, pool check off", store_commit_nocheck),
        ("plain read query (one statement)", raw_read),
        ("Store.read (as shipped)", store_read),
    ]
    lat: dict[str, list[float]] = {label: [] for label, _ in ops}
    cpu: dict[str, float] = dict.fromkeys(lat, 0.0)
    for _ in range(rounds):
        for label, op in ops:
            c0 = time.process_time()
            for _ in range(calls // rounds):
                t = time.perf_counter()
                await op()
                lat[label].append(1000 * (time.perf_counter() - t))
            cpu[label] += time.process_time() - c0
    await store.close()
    await conn.close()
    return [
        (label, statistics.median(lat[label]), 1000 * cpu[label] / len(lat[label]))
        for label, _ in ops
    ]


async def _setup(dsn: str) -> None:
    async with Store(dsn, min_size=1, max_size=1) as store:
        await store.head("x")
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for fn in VARIANT_FUNCTIONS:
            await conn.execute(fn.encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", default=DEFAULT_DSN, help="a database on the server to use")
    ap.add_argument("--clients", type=int, default=8, help="pgbench connections (part 1)")
    ap.add_argument("--seconds", type=int, default=5, help="measured seconds per variant")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved slices per variant")
    ap.add_argument("--calls", type=int, default=1000, help="calls per client-side operation")
    ap.add_argument("--pgbench", default="/usr/bin/pgbench")
    ap.add_argument("--pgbench-scale", type=int, default=10)
    args = ap.parse_args()
    args.seconds = max(1, args.seconds)
    dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname=PROFILE_DB)
    try:
        recreate(args.dsn, PROFILE_DB)
        asyncio.run(_setup(dsn))
        init = [args.pgbench, "-i", "-q", "-s", str(args.pgbench_scale), PROFILE_DB]
        subprocess.run(init, env=pgbench_env(args.dsn), check=True, capture_output=True)
        print(f"PostgreSQL {server_version(args.dsn)}; {args.clients} pgbench clients", flush=True)
        server = server_side(args, dsn)
        client = asyncio.run(client_side(dsn, args.calls, args.rounds))
    finally:
        drop_db(args.dsn, PROFILE_DB)

    anchor = server[0][1]
    print()
    print(f"Server side, {args.clients} clients, no Python in the loop:")
    print()
    print("| variant | commits/s | ratio to pgbench -N | backends |")
    print("|---|---:|---:|---|")
    for label, rate, p in server:
        print(f"| {label} | {rate:,.0f} | {rate / anchor:.2f} | {p.breakdown(3)} |")
    print()
    print("Client side, one connection, one call at a time:")
    print()
    print("| call | median ms | client CPU ms/call |")
    print("|---|---:|---:|")
    for label, ms, cpu_ms in client:
        print(f"| {label} | {ms:.3f} | {cpu_ms:.3f} |")


if __name__ == "__main__":
    main()
