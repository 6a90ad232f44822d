"""Commits per second of the code store, beside pgbench's simple-update TPS on the same server.

Run: ``python benchmarks/store_commits.py [--dsn DSN] [--seconds 5] [--clients 1,8,32]``.

For every client count N, in one invocation:

* **distinct**: N writers, each on its own file of one workspace, each commit a compare-and-swap
  ``Store.commit(ws, [Change.write(path, text, base=<its last revision>)])``;
* **shared**: N writers on one file, a CAS loop (``Store.read``, then ``Store.commit`` with that
  base, retry on ``Conflict``): successful commits/s and the conflict rate;
* **pgbench**: ``pgbench -N`` (built-in simple-update) with ``-c N -j min(N,2)``;
* two diagnostics: **perws** (like distinct, but a workspace per writer: no shared row lock)
  and **sql** (``dbcode_commit`` called by pgbench itself, a file per client in one workspace:
  the store's server side without Python).

The machine is shared, so a point is not measured in one go: its ``--seconds`` are cut into
``--rounds`` slices, and the slices of all runs of one client count are interleaved (round 1 of
every run, then round 2, ...), so a burst of foreign load hits every run alike.

Writers run in one or several OS processes (``--procs``, default ``1,4``: the whole run once
with every writer in one process — as sessions share one server process, where changesets of
one workspace are group-committed — and once spread over 4), started once per client count:
each has its own asyncio loop and a ``Store`` whose pool holds as many connections
as the process has writers. For every slice they start together behind a barrier, warm up
(``--warmup``), then count the commits that complete within the slice. Meanwhile the parent
samples ``pg_stat_activity`` of the benchmark's backends (what they wait on), ``/proc/stat``
(machine CPU) and the WAL written and synced; the workers report their own CPU time. The second
table says where the time goes.

The script creates the scratch databases ``dbcode_bench`` and ``dbcode_pgbench`` on the server
of ``--dsn`` and drops them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing as mp
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from scratch_db import drop, recreate  # benchmarks/scratch_db.py

from lsp_dbcode.store import Change, Conflict, Store

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "dbcode_bench"
PGBENCH_DB = "dbcode_pgbench"
SAMPLE_INTERVAL_S = 0.02
MODES = ("distinct", "shared", "pgbench", "perws", "sql", "distinct-whole", "shared-whole")
LABELS = {
    "distinct-whole": "dbcode, distinct files, history kept whole (no compaction)",
    "shared-whole": "dbcode, shared file (CAS), history kept whole (no compaction)",
    "distinct": "dbcode, distinct files",
    "shared": "dbcode, shared file (CAS)",
    "pgbench": "pgbench -N",
    "perws": "dbcode, a workspace per writer",
    "sql": "dbcode_commit driven by pgbench",
}


# -- the workload ----------------------------------------------------------------------------


def source_text(writer: int, n: int) -> str:
    """A small module (~600 bytes) that differs at every commit."""
    body = [
        f'"""Module of writer {writer}, edit {n}."""',
        "",
        "from __future__ import annotations",
        "",
        "",
        f"def handler_{writer}(request: dict[str, int]) -> int:",
        "    total = 0",
        "    for key, value in sorted(request.items()):",
        "        if key.startswith('x'):",
        "            total += value * 2",
        "        else:",
        "            total -= value",
        f"    return total + {n}",
        "",
        "",
        f"class Widget{writer}:",
        "    def __init__(self, size: int) -> None:",
        "        self.size = size",
        "",
        "    def grow(self, by: int = 1) -> int:",
        "        self.size += by",
        "        return self.size",
        "",
    ]
    return "\n".join(body)


# The store's commit function called by pgbench itself, no Python in the loop: each client
# writes its own file of one workspace (~600 bytes that differ at every commit), no base.
SQL_COMMIT_SCRIPT = """\\set n random(1, 1000000000)
SELECT dbcode_commit('sql-{clients}', 'pgbench', NULL, jsonb_build_array(jsonb_build_object(\
'op', 'write', 'path', 'src/w' || :client_id || '.py', \
'text', repeat('    total += value * 2' || chr(10), 26) || :n)));
"""


@dataclass
class WriterStats:
    commits: int = 0
    conflicts: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, successful commits


async def distinct_writer(
    store: Store, ws: str, writer: int, state: dict[Any, int], start: float, end: float
) -> WriterStats:
    """Its own file; the base is the revision its last commit made (kept across slices)."""
    path = f"src/pkg{writer % 8}/writer_{writer}.py"
    stats = WriterStats()
    while True:
        base = state.get((ws, path), 0)
        n = state[(ws, path, "n")] = state.get((ws, path, "n"), 0) + 1
        t = time.monotonic()
        res = await store.commit(
            ws, [Change.write(path, source_text(writer, n), base)], agent=f"bench-{writer}"
        )
        now = time.monotonic()
        state[(ws, path)] = res.revisions[path]
        if start <= now < end:
            stats.commits += 1
            stats.latencies.append(now - t)
        if now >= end:
            return stats


async def shared_writer(
    store: Store, ws: str, writer: int, state: dict[Any, int], start: float, end: float
) -> WriterStats:
    """One file for all: read, write with the read revision as base; a Conflict is a retry."""
    path = "src/shared.py"
    stats = WriterStats()
    while True:
        n = state[(ws, writer)] = state.get((ws, writer), 0) + 1
        t = time.monotonic()
        cur = await store.read(ws, path)
        try:
            await store.commit(
                ws,
                [Change.write(path, source_text(writer, n), cur.revision)],
                agent=f"bench-{writer}",
            )
            ok = True
        except Conflict:
            ok = False
        now = time.monotonic()
        if start <= now < end:
            if ok:
                stats.commits += 1
                stats.latencies.append(now - t)
            else:
                stats.conflicts += 1
        if now >= end:
            return stats


async def perws_writer(
    store: Store, ws: str, writer: int, state: dict[Any, int], start: float, end: float
) -> WriterStats:
    """Diagnostic: like ``distinct``, but every writer in its own workspace."""
    return await distinct_writer(store, f"{ws}-{writer}", writer, state, start, end)


WRITERS = {
    "distinct": distinct_writer,
    "shared": shared_writer,
    "perws": perws_writer,
    # The same writers on a Store that keeps every revision whole, as before schema v4 (no
    # compaction of what a commit supersedes): the anchor of the history change (issue 16).
    "distinct-whole": distinct_writer,
    "shared-whole": shared_writer,
}


# -- writer processes ------------------------------------------------------------------------


def _worker(dsn: str, writers: list[int], barrier: Any, tasks: Any, out: Any) -> None:
    try:
        asyncio.run(_worker_loop(dsn, writers, barrier, tasks, out))
    except BaseException as exc:
        barrier.abort()
        out.put({"error": f"{type(exc).__name__}: {exc}"})


async def _worker_loop(dsn: str, writers: list[int], barrier: Any, tasks: Any, out: Any) -> None:
    k = len(writers)
    state: dict[Any, int] = {}
    async with (
        Store(dsn, min_size=k, max_size=k) as compacting,
        Store(dsn, min_size=k, max_size=k, compact_history=False) as whole,
    ):
        out.put({"ready": True})
        while True:
            task = await asyncio.to_thread(tasks.get)
            if task is None:
                return
            mode, ws, warmup, seconds = task
            store = whole if mode.endswith("-whole") else compacting
            await asyncio.to_thread(barrier.wait, 120)
            t0 = time.monotonic()
            start, end = t0 + warmup, t0 + warmup + seconds

            async def cpu_meter(start: float = start, end: float = end) -> float:
                await asyncio.sleep(max(0.0, start - time.monotonic()))
                c0 = time.process_time()
                await asyncio.sleep(max(0.0, end - time.monotonic()))
                return time.process_time() - c0

            meter = asyncio.create_task(cpu_meter())
            calls0, batched0 = store.batches, store.batched
            results = await asyncio.gather(
                *(WRITERS[mode](store, ws, w, state, start, end) for w in writers)
            )
            out.put(
                {
                    "calls": store.batches - calls0,
                    "batched": store.batched - batched0,
                    "commits": sum(r.commits for r in results),
                    "conflicts": sum(r.conflicts for r in results),
                    "latencies": [x for r in results for x in r.latencies],
                    "cpu": await meter,
                }
            )


class Writers:
    """N writers spread over min(N, procs) processes, alive for several runs."""

    def __init__(self, dsn: str, clients: int, procs: int) -> None:
        nprocs = max(1, min(clients, procs))
        ctx = mp.get_context("spawn")
        self.barrier = ctx.Barrier(nprocs + 1)
        self.out = ctx.Queue()
        self.tasks = [ctx.Queue() for _ in range(nprocs)]
        self.procs = [
            ctx.Process(
                target=_worker,
                args=(dsn, list(range(p, clients, nprocs)), self.barrier, q, self.out),
                daemon=True,
            )
            for p, q in enumerate(self.tasks)
        ]
        for p in self.procs:
            p.start()
        self._collect(timeout=120)

    def _collect(self, timeout: float) -> list[dict[str, Any]]:
        results = [self.out.get(timeout=timeout) for _ in self.procs]
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            raise SystemExit(f"writer failed: {errors[0]}")
        return results

    def run(self, mode: str, ws: str, warmup: float, seconds: float, sampler: Sampler) -> Any:
        for q in self.tasks:
            q.put((mode, ws, warmup, seconds))
        self.barrier.wait(120)
        time.sleep(warmup)
        sampler.begin()
        time.sleep(seconds)
        sampler.end()
        return self._collect(timeout=60 + seconds)

    def close(self) -> None:
        for q in self.tasks:
            q.put(None)
        for p in self.procs:
            p.join(30)
            if p.is_alive():
                p.terminate()


# -- observation -----------------------------------------------------------------------------


def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


WAL_QUERY = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"


class Sampler:
    """Between begin() and end(): what the backends of one database are doing (sampled from
    pg_stat_activity in a thread), the machine's CPU and the WAL written."""

    def __init__(self, dsn: str, dbname: str, pgbench: bool = False) -> None:
        self.dsn = dsn
        self.dbname = dbname
        self.pgbench = pgbench  # sample pgbench's backends, or the others
        self.window = 0.0
        self.counts: collections.Counter[str] = collections.Counter()
        self.cpu = (0, 0)
        self.wal_bytes = 0
        self._go = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu0 = (0, 0)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def begin(self) -> None:
        self._cpu0 = cpu_busy()
        self.window = time.monotonic()
        self._go.set()

    def end(self) -> None:
        self.window = time.monotonic() - self.window
        busy, total = cpu_busy()
        self.cpu = (busy - self._cpu0[0], total - self._cpu0[1])
        self._stop.set()
        self._thread.join()

    def __exit__(self, *exc: object) -> None:
        self._go.set()
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            self._go.wait()
            if self._stop.is_set():
                return
            wal0 = conn.execute(WAL_QUERY).fetchone() or (0,)
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()"
                    " AND backend_type = 'client backend'"
                    " AND (application_name = 'pgbench') = %s",
                    (self.dbname, self.pgbench),
                ).fetchall()
                for state, wtype, wevent in rows:
                    if state != "active":
                        key = "idle"
                    elif wtype is None:
                        key = "CPU"
                    else:
                        key = f"{wtype}:{wevent}"
                    self.counts[key] += 1
                time.sleep(SAMPLE_INTERVAL_S)
            wal1 = conn.execute(WAL_QUERY).fetchone() or (0,)
            self.wal_bytes = int(wal1[0]) - int(wal0[0])


@dataclass
class Point:
    """One run (mode, client count), summed over its slices."""

    seconds: float = 0.0
    commits: float = 0.0
    conflicts: int = 0
    latencies: list[float] = field(default_factory=list)  # ms; pgbench: per-slice means
    client_cpu: float = 0.0
    cpu_busy: int = 0
    cpu_total: int = 0
    wal_bytes: int = 0
    waits: collections.Counter[str] = field(default_factory=collections.Counter)
    calls: int = 0  # commit calls sent to the database (group commit: several per call)
    batched: int = 0  # changesets they carried (warm-up included)

    def observe(self, sampler: Sampler) -> None:
        self.cpu_busy += sampler.cpu[0]
        self.cpu_total += sampler.cpu[1]
        self.wal_bytes += sampler.wal_bytes
        self.waits.update(sampler.counts)

    @property
    def rate(self) -> float:
        return self.commits / self.seconds if self.seconds else float("nan")

    @property
    def conflict_rate(self) -> float:
        return self.conflicts / max(1.0, self.commits + self.conflicts)

    def breakdown(self, top: int = 4) -> str:
        total = sum(self.waits.values()) or 1
        return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in self.waits.most_common(top))


# -- runners ---------------------------------------------------------------------------------


def run_writers(
    writers: Writers, admin_dsn: str, mode: str, ws: str, warmup: float, secs: int, point: Point
) -> None:
    with Sampler(admin_dsn, BENCH_DB) as sampler:
        results = writers.run(mode, ws, warmup, secs, sampler)
    point.seconds += secs
    point.commits += sum(r["commits"] for r in results)
    point.conflicts += sum(r["conflicts"] for r in results)
    point.latencies += [1000 * x for r in results for x in r["latencies"]]
    point.client_cpu += sum(r["cpu"] for r in results)
    point.calls += sum(r["calls"] for r in results)
    point.batched += sum(r["batched"] for r in results)
    point.observe(sampler)


def run_pgbench(
    args: argparse.Namespace,
    env: dict[str, str],
    dbname: str,
    clients: int,
    secs: int,
    point: Point,
    script: str = "",
) -> None:
    """pgbench -N (built-in simple-update), or ``script`` (a custom pgbench script).

    pgbench's -T includes making its connections: on a machine stalled by other jobs, a short
    slice can end with no transaction at all. Such a slice is run once more, then left out."""
    for attempt in range(2):
        if _pgbench_slice(args, env, dbname, clients, secs, point, script):
            return
        print(
            f"  pgbench ({clients} clients) processed no transaction in {secs} s"
            + ("; running the slice again" if attempt == 0 else "; slice left out"),
            file=sys.stderr,
        )


def _pgbench_slice(
    args: argparse.Namespace,
    env: dict[str, str],
    dbname: str,
    clients: int,
    secs: int,
    point: Point,
    script: str,
) -> bool:
    cmd = [args.pgbench, "-n", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(secs)]
    with tempfile.TemporaryDirectory() as tmp:
        if script:
            path = Path(tmp, "bench.sql")
            path.write_text(script)
            cmd += ["-f", str(path)]
        else:
            cmd += ["-N"]
        cmd.append(dbname)
        with Sampler(args.dsn, dbname, pgbench=True) as sampler:
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            # Sample the middle of the run (its connections made, before its end).
            time.sleep(min(0.3, secs / 4))
            sampler.begin()
            time.sleep(max(0.2, secs - 2 * min(0.3, secs / 4)))
            sampler.end()
            stdout, stderr = proc.communicate(timeout=secs + 60)
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"pgbench failed: {stderr.decode(errors='replace')}")
    text = stdout.decode()
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", text)
    lat = re.search(r"latency average = ([\d.]+) ms", text)
    if tps is None:
        if re.search(r"transactions actually processed: 0\b", text):
            return False
        raise SystemExit(f"cannot read pgbench's output:\n{text}")
    # The sampler saw the middle of the run: scale its WAL bytes to the whole run.
    sampler.wal_bytes = round(sampler.wal_bytes * secs / max(0.1, sampler.window))
    point.seconds += secs
    point.commits += float(tps.group(1)) * secs
    if lat:
        point.latencies.append(float(lat.group(1)))
    point.client_cpu += (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    point.observe(sampler)
    return True


async def _seed(dsn: str, ws: str) -> None:
    async with Store(dsn, min_size=1, max_size=1) as store:
        await store.write(ws, "src/shared.py", source_text(0, 0), agent="bench-seed", base=0)


async def _migrate(dsn: str) -> None:
    async with Store(dsn, min_size=1, max_size=1) as store:
        await store.head("warmup")


def pgbench_env(dsn: str) -> dict[str, str]:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    env = dict(os.environ)
    for key, var in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER")):
        if params.get(key):
            env[var] = str(params[key])
    if params.get("password"):
        env["PGPASSWORD"] = str(params["password"])
    return env


def server_version(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def slices(total: int, rounds: int) -> list[int]:
    """``total`` whole seconds cut into ``rounds`` slices of whole seconds (pgbench -T)."""
    rounds = max(1, min(rounds, total))
    return [total // rounds + (1 if i < total % rounds else 0) for i in range(rounds)]


def measure(
    args: argparse.Namespace, modes: list[str], n: int, bench_dsn: str, env: dict[str, str]
) -> dict[str, Point]:
    pts = {m: Point() for m in modes}
    for mode in ("shared", "shared-whole"):
        if mode in modes:
            asyncio.run(_seed(bench_dsn, f"{mode}-{n}-p{args.procs}"))
    writers = Writers(bench_dsn, n, args.procs) if set(modes) & set(WRITERS) else None
    try:
        for r, secs in enumerate(slices(args.seconds, args.rounds)):
            warmup = args.warmup if r == 0 else min(args.warmup, 0.3)
            for mode in modes:
                if mode == "pgbench":
                    run_pgbench(args, env, PGBENCH_DB, n, secs, pts[mode])
                elif mode == "sql":
                    script = SQL_COMMIT_SCRIPT.replace("{clients}", str(n))
                    run_pgbench(args, env, BENCH_DB, n, secs, pts[mode], script)
                else:
                    assert writers is not None
                    ws = f"{mode}-{n}-p{args.procs}"
                    run_writers(writers, args.dsn, mode, ws, warmup, secs, pts[mode])
    finally:
        if writers is not None:
            writers.close()
    return pts


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", default=DEFAULT_DSN, help="a database on the server to use")
    ap.add_argument("--seconds", type=int, default=5, help="measured seconds per point")
    ap.add_argument("--rounds", type=int, default=5, help="slices per point, interleaved")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds (first slice)")
    ap.add_argument("--clients", default="1,8,32", help="comma-separated writer counts")
    ap.add_argument(
        "--procs",
        default="1,4",
        help="comma-separated writer process counts (each at most N): the tables are printed "
        "for each; 1 = every writer in one process, as sessions share one server process",
    )
    ap.add_argument("--pgbench", default=shutil.which("pgbench") or "/usr/bin/pgbench")
    ap.add_argument("--pgbench-scale", type=int, default=10)
    ap.add_argument(
        "--modes",
        default=",".join(MODES),
        help="runs per client count: distinct, shared, pgbench (the table); perws (distinct "
        "files, a workspace per writer) and sql (dbcode_commit driven by pgbench, no Python)",
    )
    args = ap.parse_args()
    clients = [int(x) for x in args.clients.split(",") if x.strip()]
    procs_list = [int(x) for x in str(args.procs).split(",") if x.strip()]
    modes = [m for m in MODES if m in args.modes.split(",")]
    args.seconds = max(1, args.seconds)

    bench_dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname=BENCH_DB)
    env = pgbench_env(args.dsn)
    t_start = time.monotonic()
    tables: list[tuple[int, list[tuple[int, dict[str, Point]]]]] = []
    try:
        recreate(args.dsn, BENCH_DB)
        asyncio.run(_migrate(bench_dsn))
        if "pgbench" in modes:
            recreate(args.dsn, PGBENCH_DB)
            init = [args.pgbench, "-i", "-q", "-s", str(args.pgbench_scale), PGBENCH_DB]
            subprocess.run(init, env=env, check=True, capture_output=True)
        print(
            f"PostgreSQL {server_version(args.dsn)}; {os.cpu_count()} CPUs; {args.seconds} s "
            f"per point in {len(slices(args.seconds, args.rounds))} interleaved slices; "
            f"writers in {', '.join(map(str, procs_list))} process(es); pgbench -N at scale "
            f"{args.pgbench_scale}",
            flush=True,
        )
        for procs in procs_list:
            args.procs = procs
            rows: list[tuple[int, dict[str, Point]]] = []
            for n in clients:
                rows.append((n, measure(args, modes, n, bench_dsn, env)))
                print(f"  done: {n} clients, {procs} process(es)", file=sys.stderr, flush=True)
            tables.append((procs, rows))
    finally:
        drop(args.dsn, BENCH_DB)
        drop(args.dsn, PGBENCH_DB)
    for procs, rows in tables:
        print(f"\n### Writers in up to {procs} process(es)")
        report(rows)
    print(f"\ntotal {time.monotonic() - t_start:.0f} s", file=sys.stderr)


def report(rows: list[tuple[int, dict[str, Point]]]) -> None:
    def rate(p: Point | None, conflicts: bool = False) -> str:
        if p is None:
            return "-"
        return f"{p.rate:,.0f}" + (f" ({100 * p.conflict_rate:.0f}%)" if conflicts else "")

    print()
    print(
        "| clients | dbcode distinct commits/s | dbcode shared commits/s (conflict %) "
        "| pgbench TPS | ratio distinct/pgbench | distinct: changesets per commit call |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for n, pts in rows:
        d, s, g = pts.get("distinct"), pts.get("shared"), pts.get("pgbench")
        ratio = f"{d.rate / g.rate:.2f}" if d and g else "-"
        per_call = f"{d.batched / d.calls:.1f}" if d and d.calls else "-"
        print(f"| {n} | {rate(d)} | {rate(s, True)} | {rate(g)} | {ratio} | {per_call} |")
    print()
    print(
        "Where the time goes. latency: median of the Store calls (shared: read + commit of the "
        "successful attempts), mean for pgbench runs; client CPU: writer processes or pgbench, "
        "in cores; backends: share of pg_stat_activity samples of the run's backends "
        "(idle = waiting for the client)."
    )
    print()
    print(
        "| clients | run | commits/s | latency ms | client CPU | machine CPU "
        "| WAL B/commit | backends |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for n, pts in rows:
        for mode, p in pts.items():
            lat = statistics.median(p.latencies) if p.latencies else float("nan")
            if mode in ("pgbench", "sql"):
                lat = statistics.fmean(p.latencies) if p.latencies else float("nan")
            commits = max(1.0, p.commits)
            print(
                f"| {n} | {LABELS[mode]} | {rate(p)} | {lat:.2f} "
                f"| {p.client_cpu / max(1e-9, p.seconds):.2f} "
                f"| {100 * p.cpu_busy / max(1, p.cpu_total):.0f}% "
                f"| {p.wal_bytes / commits:,.0f} | {p.breakdown()} |"
            )


if __name__ == "__main__":
    main()
