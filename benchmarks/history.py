"""History (issue 16): storage per revision, reads of old revisions, blame, each beside its anchor.

Run: ``python benchmarks/history.py [--dsn DSN] [--edits 1000] [--k 8,16,32,64,128]``.

In one invocation, on scratch databases of the ``--dsn`` server:

* **Storage.** ``--edits`` one-line edits (a line replaced by an edited copy, at a random place)
  of a ~200 KB Python file (lsp_dbcode's own sources, concatenated), each one changeset committed
  through ``Store.write`` with its base revision, as an agent in live mode commits. Growth of
  ``dbcode_revision`` + ``dbcode_changeset`` (heap, TOAST and indexes, ``pg_total_relation_size``)
  per revision:
  - **whole** (the anchor from the same run: every revision stored whole, as before schema v4;
    the Store with ``compact_history=False``);
  - **deltas** for each K of ``--k`` (``snapshot_every_revisions``): the background compaction
    after commits, as in a server; a plain ``VACUUM`` (what autovacuum does: the full texts the
    compaction replaced become free space that later revisions reuse) every 100 commits and at
    the end;
  - **git**: the same texts committed one by one into a git repository, ``git gc``, then
    ``size-pack`` of ``git count-objects -v`` (commits and trees included, as our figure includes
    the changeset rows).
  The issue's first figure (100 edits of a 206 KB file) is the first 100 edits of the same run.
* **Read.** ``Store.read`` of the newest revision, of a revision from the middle of a delta
  chain (K/2 deltas) and of the worst one (K - 1 deltas), beside the anchor: ``SELECT content``
  of the same text from a plain table (one row, one text column) through the same pool;
  interleaved, medians.
* **Blame.** 500 revisions of a 2,000-line file (edits, inserts and deletes of a few lines by 5
  agents, each one changeset), ``Store.blame`` of the newest revision beside
  ``git blame --porcelain`` of the same history replayed into git; interleaved, medians.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scratch_db import drop, recreate  # benchmarks/scratch_db.py

from lsp_dbcode.store import Store

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "dbcode_historybench"
FILE_BYTES = 200 * 1024
READS = 40
BLAME_RUNS = 7


def big_file() -> str:
    """~200 KB of real Python: lsp_dbcode's sources, concatenated (repeated if short)."""
    root = Path(__file__).resolve().parent.parent / "lsp_dbcode"
    parts = [p.read_text() for p in sorted(root.rglob("*.py"))]
    text = "".join(parts)
    while len(text.encode()) < FILE_BYTES:
        text += text
    cut = text.encode()[:FILE_BYTES].decode("utf-8", errors="ignore")
    return cut[: cut.rfind("\n") + 1]


def one_line_edits(text: str, n: int, seed: int = 16) -> list[str]:
    rnd = random.Random(seed)
    lines = text.splitlines(keepends=True)
    out = []
    for i in range(n):
        j = rnd.randrange(len(lines))
        lines[j] = lines[j].rstrip("\n") + f"  # edit {i}\n"
        out.append("".join(lines))
    return out


async def sizes(store: Store) -> int:
    rows = await store._fetchall(
        "SELECT pg_total_relation_size('dbcode_revision')"
        " + pg_total_relation_size('dbcode_changeset')"
    )
    return int(rows[0][0])


async def vacuum(dsn: str, full: bool = False) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for table in ("dbcode_revision", "dbcode_changeset"):
            await conn.execute(f"VACUUM {'FULL ' if full else ''}{table}")


async def storage_run(
    dsn: str, texts: list[str], k: int | None, vacuum_every: int
) -> tuple[float, float, float]:
    """Bytes per revision: physical after 100 and after all edits (a VACUUM every
    ``vacuum_every`` commits, as autovacuum does at the TOAST threshold of schema v4), and the
    history's live size (after VACUUM FULL). ``k`` None: whole texts."""
    ws = "whole" if k is None else f"k{k}"
    compact = k is not None
    async with Store(dsn, compact_history=compact, snapshot_every_revisions=k or 1) as store:
        await store.write(ws, "big.py", texts[0], agent="seed", base=0)
    await vacuum(dsn, full=True)
    async with Store(dsn, compact_history=compact, snapshot_every_revisions=k or 1) as store:
        before = await sizes(store)
        at100 = 0.0
        for i, text in enumerate(texts[1:], start=1):
            await store.write(ws, "big.py", text, agent="agent", base=i)
            if i % vacuum_every == 0 and compact:
                await store._compact_dirty()
                await vacuum(dsn)
            if i == 100:
                at100 = (await sizes(store) - before) / 100
        await store._compact_dirty()
        await vacuum(dsn)
        physical = (await sizes(store) - before) / (len(texts) - 1)
        await vacuum(dsn, full=True)
        live = (await sizes(store) - before) / (len(texts) - 1)
        return at100, physical, live


def git_bytes(texts: list[str], n100: bool = False) -> float:
    with tempfile.TemporaryDirectory() as d:
        repo = Path(d)
        run = functools.partial(git, repo)
        run("init", "-q")
        run("config", "user.name", "a")
        run("config", "user.email", "a@x")
        (repo / "big.py").write_text(texts[0])
        run("add", "big.py")
        run("commit", "-q", "-m", "seed")
        run("gc", "-q")
        base = _pack(run("count-objects", "-v"))
        for i, text in enumerate(texts[1:], start=1):
            (repo / "big.py").write_text(text)
            run("commit", "-q", "-a", "-m", f"edit {i}")
        run("gc", "-q")
        return (_pack(run("count-objects", "-v")) - base) / (len(texts) - 1)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def _pack(out: str) -> int:
    kib = {ln.split(": ")[0]: int(ln.split(": ")[1]) for ln in out.splitlines() if ": " in ln}
    return (kib["size-pack"] + kib["size"]) * 1024


async def read_run(dsn: str, texts: list[str], k: int) -> dict[str, float]:
    """Median read times (ms): newest, middle of a chain, worst, and the plain-table anchor."""
    ws = f"k{k}"
    async with Store(dsn, snapshot_every_revisions=k) as store:
        async with store._pool.connection() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS plain (id int PRIMARY KEY, t text)")
            await conn.execute(
                "INSERT INTO plain VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET t = excluded.t",
                (texts[-1],),
            )
        head = len(texts)
        # Revisions r with r % k == 0 are full; r = m*k + 1 is k - 1 deltas away from m*k + k.
        m = (head // k) // 2
        worst = m * k + 1
        middle = m * k + k // 2
        want = {"newest": head, "middle": middle, "worst": worst}
        times: dict[str, list[float]] = {name: [] for name in [*want, "plain"]}
        for _ in range(READS):
            for name, rev in want.items():
                t = time.perf_counter()
                got = await store.read(ws, "big.py", None if name == "newest" else rev)
                times[name].append(time.perf_counter() - t)
                assert got.text == texts[rev - 1]
            t = time.perf_counter()
            rows = await store._fetchall("SELECT t FROM plain WHERE id = 1")
            times["plain"].append(time.perf_counter() - t)
            assert rows[0][0] == texts[-1]
        return {name: 1000 * statistics.median(v) for name, v in times.items()}


async def big_commit_run(dsn: str, texts: list[str], rounds: int = 6) -> tuple[float, float]:
    """Commits/s of one writer committing the 200 KB file's edits with the background
    compaction on (as a server runs) and off (the anchor, as before schema v4), interleaved in
    rounds of equal size in two workspaces (a burst of foreign load hits both alike)."""
    per_round = max(1, (len(texts) - 1) // rounds)
    secs = {True: 0.0, False: 0.0}
    done = {True: 0, False: 0}
    async with (
        Store(dsn, compact_history=True) as on,
        Store(dsn, compact_history=False) as off,
    ):
        for store, ws in ((on, "c-on"), (off, "c-off")):
            await store.write(ws, "big.py", texts[0], agent="seed", base=0)
        for r in range(rounds):
            for compact, store, ws in ((True, on, "c-on"), (False, off, "c-off")):
                t = time.perf_counter()
                for i in range(r * per_round + 1, (r + 1) * per_round + 1):
                    await store.write(ws, "big.py", texts[i], agent="a", base=i)
                secs[compact] += time.perf_counter() - t
                done[compact] += per_round
    return done[True] / secs[True], done[False] / secs[False]


def blame_history(revisions: int = 500, lines: int = 2000, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    cur = [f"value_{i} = compute({i}, {i * 7 % 13})\n" for i in range(lines)]
    out = ["".join(cur)]
    for r in range(1, revisions):
        for _ in range(rnd.randint(1, 3)):
            j = rnd.randrange(len(cur))
            op = rnd.random()
            if op < 0.5:
                cur[j] = f"value_{j} = changed({r})\n"
            elif op < 0.8:
                cur.insert(j, f"inserted_{r} = {j}\n")
            elif len(cur) > 10:
                del cur[j : j + rnd.randint(1, 3)]
        out.append("".join(cur))
    return out


async def blame_run(dsn: str, texts: list[str]) -> tuple[float, float, int]:
    ws = "blame"
    with tempfile.TemporaryDirectory() as d:
        repo = Path(d)
        run = functools.partial(git, repo)
        run("init", "-q")
        run("config", "user.name", "a")
        run("config", "user.email", "a@x")
        async with Store(dsn) as store:
            for i, text in enumerate(texts):
                await store.write(ws, "f.py", text, agent=f"agent{i % 5}", base=i)
                (repo / "f.py").write_text(text)
                run("add", "f.py")
                run("commit", "-q", "-m", f"r{i + 1}")
            await store._compact_dirty()
            run("gc", "-q")
            ours, theirs = [], []
            for _ in range(BLAME_RUNS):
                t = time.perf_counter()
                runs = await store.blame(ws, "f.py")
                ours.append(time.perf_counter() - t)
                t = time.perf_counter()
                run("blame", "--porcelain", "f.py")
                theirs.append(time.perf_counter() - t)
        return 1000 * statistics.median(ours), 1000 * statistics.median(theirs), len(runs)


async def amain(args: argparse.Namespace) -> None:
    """Each run on a database of its own: no run reuses the free space another left."""
    try:
        text = big_file()
        texts = [text, *one_line_edits(text, args.edits)]
        ks = [int(x) for x in args.k.split(",") if x.strip()]
        print(
            f"file: {len(text.encode()):,} bytes, {text.count(chr(10)):,} lines; "
            f"{args.edits} one-line edits",
            file=sys.stderr,
        )
        g100 = git_bytes(texts[:101])
        gall = git_bytes(texts)
        dsn = recreate(args.dsn, DB)
        whole100, whole, _ = await storage_run(dsn, texts, None, args.vacuum_every)
        drop(args.dsn, DB)
        print("\n## Storage: bytes per revision (growth of dbcode_revision + dbcode_changeset)\n")
        print(
            f"physical: a plain VACUUM every {args.vacuum_every} commits and at the end; "
            "live: after VACUUM FULL (what the history itself holds)\n"
        )
        print(
            "| stored as | physical after 100 edits | physical after all | live after all "
            "| live / whole | live / git |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        print(
            f"| whole texts (before v4: anchor) | {whole100:,.0f} | {whole:,.0f} "
            f"| {whole:,.0f} | 1.00 | {whole / gall:.1f} |"
        )
        print(
            f"| git (git gc; count-objects) | {g100:,.0f} | {gall:,.0f} | {gall:,.0f} "
            f"| {gall / whole:.4f} | 1.0 |"
        )
        reads: dict[int, dict[str, float]] = {}
        for k in ks:
            dsn = recreate(args.dsn, DB)
            d100, dall, dlive = await storage_run(dsn, texts, k, args.vacuum_every)
            print(
                f"| deltas, K = {k} | {d100:,.0f} | {dall:,.0f} | {dlive:,.0f} "
                f"| {dlive / whole:.4f} | {dlive / gall:.1f} |",
                flush=True,
            )
            reads[k] = await read_run(dsn, texts, k)
            drop(args.dsn, DB)
        print(
            "\n## Read: median ms (Store.read) beside SELECT of the whole text from a plain table\n"
        )
        print(
            "| K | plain table (anchor) | newest | middle of a chain | worst (K-1 deltas) "
            "| middle / plain | worst / plain |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for k, r in reads.items():
            print(
                f"| {k} | {r['plain']:.2f} | {r['newest']:.2f} | {r['middle']:.2f} "
                f"| {r['worst']:.2f} | {r['middle'] / r['plain']:.2f} "
                f"| {r['worst'] / r['plain']:.2f} |"
            )
        dsn = recreate(args.dsn, DB)
        c_on, c_off = await big_commit_run(dsn, texts)
        drop(args.dsn, DB)
        print("\n## Commits/s of one writer on the 200 KB file\n")
        print("| history kept whole (anchor) | background compaction (K = 32) | ratio |")
        print("|---:|---:|---:|")
        print(f"| {c_off:.1f} | {c_on:.1f} | {c_on / c_off:.2f} |")
        if args.blame:
            dsn = recreate(args.dsn, DB)
            ours, theirs, nruns = await blame_run(dsn, blame_history())
            print("\n## Blame: 500 revisions of a 2,000-line file, median ms\n")
            print("| git blame --porcelain (anchor) | dbcode Store.blame | ratio | runs of lines |")
            print("|---:|---:|---:|---:|")
            print(f"| {theirs:.1f} | {ours:.1f} | {ours / theirs:.2f} | {nruns} |")
    finally:
        drop(args.dsn, DB)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", default=DEFAULT_DSN, help="a database on the server to use")
    ap.add_argument("--edits", type=int, default=1000)
    ap.add_argument("--k", default="8,16,32,64,128", help="snapshot intervals to measure")
    ap.add_argument("--no-blame", dest="blame", action="store_false")
    ap.add_argument("--vacuum-every", type=int, default=25, help="commits between VACUUMs")
    asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    main()
