"""Commits of a file with 1,000 open review threads, beside the same commit of a file with none.

Run: ``python benchmarks/review_anchors.py [--dsn DSN] [--rounds 40] [--per-round 10]``.

Issue 15's target: with 1,000 open threads in a file, a commit of that file stays within 1.2x
of the same commit with none, measured in the same run. Variants, interleaved round by round
(each round does ``--per-round`` commits of every variant, in turn), all ``Store.write`` with a
compare-and-swap base, one line in the middle of a 1,000-line file changed each time:

* **threads**: the file carries 1,000 open threads (one per line) — schema v4 (this code);
* **none**: an identical file without threads, same database — the anchor;
* **claimed**: an identical file with one live non-exclusive claim of another agent on its
  first line (the trigger's prefix/suffix path runs);
* **v3**: the same commit on a database left at schema v3 (the code before claims and threads:
  no trigger) — what the claims trigger costs every commit.

Then what moving the anchors costs, paid after the commit by whoever reads (or by the
committing CLI): ``Store.move_threads`` of the 1,000 threads one revision behind, and
``Store.threads`` of the file when they are current.

Creates the scratch databases ``dbcode_bench_review`` and ``dbcode_bench_review_v3`` on the
server of ``--dsn`` and drops them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import psycopg
from scratch_db import drop, recreate  # benchmarks/scratch_db.py

from lsp_dbcode.store import Store
from lsp_dbcode.store.schema import MIGRATION_LOCK_KEY, MIGRATIONS

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "dbcode_bench_review"
DB_V3 = "dbcode_bench_review_v3"
LINES = 1000
THREADS = 1000


def text(version: int) -> str:
    middle = LINES // 2
    return "".join(
        f"value_{i} = compute({i}, {version if i == middle else 0})  # line {i}\n"
        for i in range(1, LINES + 1)
    )


class StoreV3(Store):
    """A Store on a database kept at schema v3 (open() would migrate it)."""

    async def open(self) -> None:
        await self._pool.open(wait=True, timeout=10)


def migrate_to_v3(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE dbcode_schema_version (version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, ddl in MIGRATIONS[:3]:
            conn.execute(ddl.encode())
            conn.execute("INSERT INTO dbcode_schema_version (version) VALUES (%s)", (version,))


async def run(args: argparse.Namespace) -> None:
    dsn = recreate(args.dsn, DB)
    dsn3 = recreate(args.dsn, DB_V3)
    migrate_to_v3(dsn3)
    try:
        async with Store(dsn) as store, StoreV3(dsn3) as store3:
            ws = "bench"
            files = {"threads": "threads.py", "none": "none.py", "claimed": "claimed.py"}
            for path in files.values():
                await store.write(ws, path, text(0), agent="setup")
            await store3.write(ws, "v3.py", text(0), agent="setup")
            for line in range(1, THREADS + 1):
                await store.comment(
                    ws, "threads.py", f"thread {line}", agent="reviewer", lines=(line, line)
                )
            await store.claim(ws, "claimed.py", agent="other", lines=(1, 1), ttl_s=3600)
            stores = {"threads": store, "none": store, "claimed": store, "v3": store3}
            paths = {**files, "v3": "v3.py"}
            revs = dict.fromkeys(paths, 1)
            times: dict[str, list[float]] = {k: [] for k in paths}
            version = 0
            for round_ in range(args.rounds + 1):  # round 0 warms up
                for name in paths:
                    for _ in range(args.per_round):
                        version += 1
                        t0 = time.perf_counter()
                        res = await stores[name].write(
                            ws, paths[name], text(version), agent="writer", base=revs[name]
                        )
                        took = time.perf_counter() - t0
                        revs[name] = res.revisions[paths[name]]
                        if round_:
                            times[name].append(took)
            # Moving the anchors: what a reader pays after a commit.
            moves, lists = [], []
            for _ in range(args.move_samples):
                version += 1
                res = await store.write(
                    ws, "threads.py", text(version), agent="writer", base=revs["threads"]
                )
                revs["threads"] = res.revisions["threads.py"]
                t0 = time.perf_counter()
                await store.move_threads(ws, ["threads.py"])
                moves.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                listed = await store.threads(ws, "threads.py")
                lists.append(time.perf_counter() - t0)
                assert len(listed) == THREADS and all(t.revision == revs["threads"] for t in listed)
    finally:
        drop(args.dsn, DB)
        drop(args.dsn, DB_V3)

    def ms(xs: list[float], q: float = 0.5) -> float:
        xs = sorted(xs)
        return 1000 * xs[min(len(xs) - 1, int(q * len(xs)))]

    base = statistics.median(times["none"])
    print(
        f"commit of a {LINES}-line file, one line changed; {args.rounds} rounds x"
        f" {args.per_round} commits per variant, interleaved"
    )
    print(f"{'variant':<10} {'median ms':>10} {'p90 ms':>8} {'vs none':>8}")
    for name, xs in times.items():
        print(
            f"{name:<10} {ms(xs):>10.3f} {ms(xs, 0.9):>8.3f} {statistics.median(xs) / base:>7.2f}x"
        )
    print(
        f"target: threads/none <= 1.20x -> {statistics.median(times['threads']) / base:.2f}x;"
        f" the claims trigger: none/v3 = {base / statistics.median(times['v3']):.2f}x"
    )
    print(
        f"after a commit: move_threads of {THREADS} threads one revision behind:"
        f" median {ms(moves):.1f} ms (p90 {ms(moves, 0.9):.1f});"
        f" threads() of the file when current: median {ms(lists):.1f} ms"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dsn", default=DEFAULT_DSN, help="an admin DSN of the server to use")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--per-round", type=int, default=10)
    p.add_argument("--move-samples", type=int, default=15)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
