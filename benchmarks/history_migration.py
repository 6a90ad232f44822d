"""Migration of a real history to schema v4 (issue 16), with agents committing meanwhile.

Run: ``python benchmarks/history_migration.py [--dsn DSN] [--repo PATH] [--rev REV]``.

1. A scratch database gets the schema as the previous release left it (v1 to v3), and a real
   history is written into it by the v3 functions: every commit of ``--repo`` (default: this
   repository) up to ``--rev``, oldest first, one changeset per commit (its changed text files
   written, deleted files deleted; binary and non-UTF-8 files skipped).
2. ``Store.open`` migrates it to v4 (timed: the locked schema step), then ``Store.compact``
   converts the whole history (progress printed) while 4 writers keep committing to files of
   the same workspace: their commit latency during the conversion is printed beside their
   latency before it (the anchor, same run).
3. Every revision written in step 1 is read back and compared byte for byte with git's blob;
   seqs are checked gap-free; sizes of the history before and after (VACUUM FULL both times).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from scratch_db import drop, recreate  # benchmarks/scratch_db.py

from lsp_dbcode.store import Store
from lsp_dbcode.store.schema import MIGRATION_LOCK_KEY, MIGRATIONS

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "dbcode_migrationbench"
WS = "repo"
WRITERS = 4


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def blob(repo: Path, commit: str, path: str) -> str | None:
    data = subprocess.run(
        ["git", "-C", str(repo), "show", f"{commit}:{path}"], check=True, capture_output=True
    ).stdout
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


async def write_v3_history(url: str, repo: Path, rev: str) -> dict[tuple[str, int], str]:
    """The history as the v3 functions store it; returns every (path, revision) -> text."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            await conn.execute(
                "CREATE TABLE dbcode_schema_version (version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for version, ddl in MIGRATIONS[:3]:
                await conn.execute(ddl.encode())
                await conn.execute(
                    "INSERT INTO dbcode_schema_version (version) VALUES (%s)", (version,)
                )
    want: dict[tuple[str, int], str] = {}
    revs: dict[str, int] = {}
    commits = git(repo, "rev-list", "--reverse", rev).split()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for i, c in enumerate(commits):
            out = git(repo, "diff-tree", "-r", "--no-renames", "--root", "--name-status", c)
            changes = []
            for line in out.splitlines()[1:]:  # the first line names the commit
                status, _, path = line.partition("\t")
                if status.startswith("D"):
                    if path in revs and want.get((path, revs[path])) is not None:
                        changes.append({"op": "delete", "path": path})
                    continue
                text = blob(repo, c, path)
                if text is None:
                    continue
                changes.append({"op": "write", "path": path, "text": text})
            if not changes:
                continue
            cur = await conn.execute(
                "SELECT dbcode_commit(%s, 'git', %s, %s)",
                (WS, f"commit {c[:10]}", psycopg.types.json.Jsonb(changes)),
            )
            row = await cur.fetchone()
            assert row is not None
            for ch in changes:
                r = int(row[0]["revisions"][ch["path"]])
                revs[ch["path"]] = r
                want[(ch["path"], r)] = ch.get("text")  # type: ignore[assignment]
            print(f"\rwriting v3 history: commit {i + 1}/{len(commits)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return want


async def size(url: str) -> int:
    """Bytes the repository's revisions store for their texts (compressed as stored; the
    writers' files under live/ left out)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT sum(coalesce(pg_column_size(content), 0) + coalesce(pg_column_size(delta), 0)"
            " + coalesce(pg_column_size(packed), 0)) FROM dbcode_revision"
            " WHERE path NOT LIKE 'live/%%'"
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def amain(args: argparse.Namespace) -> None:
    url = recreate(args.dsn, DB)
    try:
        repo = Path(args.repo)
        want = await write_v3_history(url, repo, args.rev)
        t = time.perf_counter()
        async with Store(url, max_size=WRITERS + 2) as store:
            migrate_s = time.perf_counter() - t
            before = await size(url)
            head0 = await store.head(WS)
            lat: dict[str, list[float]] = {"before": [], "during": []}
            phase = "before"
            stop = asyncio.Event()

            async def writer(w: int) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    t0 = time.perf_counter()
                    await store.write(WS, f"live/w{w}.txt", f"edit {n}\n" * 200, agent=f"w{w}")
                    lat[phase].append(time.perf_counter() - t0)

            tasks = [asyncio.create_task(writer(w)) for w in range(WRITERS)]
            await asyncio.sleep(3)
            phase = "during"
            t = time.perf_counter()

            def progress(done: int, total: int) -> None:
                print(f"\rcompacting: {done}/{total} files", end="", file=sys.stderr)

            res = await store.compact(WS, progress=progress)
            compact_s = time.perf_counter() - t
            print(file=sys.stderr)
            stop.set()
            await asyncio.gather(*tasks)
            t = time.perf_counter()
            for (path, rev), text in want.items():
                if text is None:
                    continue
                got = await store.read(WS, path, rev)
                assert got.text.encode() == text.encode(), (path, rev)
            verify_s = time.perf_counter() - t
            head = await store.head(WS)
            log = await store.log(WS, limit=10_000)
            assert [c.seq for c in log] == list(range(head, 0, -1)), "seqs not gap-free"
        after = await size(url)
        texts = sum(1 for v in want.values() if v is not None)
        print(f"\nhistory: {len(want)} revisions ({texts} with text) of {args.repo} at {args.rev}")
        print(f"schema step v3 -> v4: {1000 * migrate_s:.0f} ms (with connecting)")
        print(
            f"conversion: {res.revisions} revisions of {res.paths} files in {compact_s:.1f} s; "
            f"{res.text_bytes:,} bytes of text now {res.stored_bytes:,}"
        )
        print(f"the repository's texts as stored: {before:,} -> {after:,} bytes")
        print(
            f"every revision byte for byte: ok ({verify_s:.1f} s); seqs gap-free: ok "
            f"({head - head0} commits during the run)"
        )
        b, d = lat["before"], lat["during"]
        print("\n| writers' commit latency | n | p50 ms | p99 ms |")
        print("|---|---:|---:|---:|")
        for name, xs in (("before the conversion (anchor)", b), ("during the conversion", d)):
            xs = sorted(xs)
            p99 = xs[min(len(xs) - 1, int(0.99 * len(xs)))]
            print(f"| {name} | {len(xs)} | {1000 * statistics.median(xs):.1f} | {1000 * p99:.1f} |")
    finally:
        drop(args.dsn, DB)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", default=DEFAULT_DSN)
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent))
    ap.add_argument("--rev", default="HEAD")
    asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    main()
