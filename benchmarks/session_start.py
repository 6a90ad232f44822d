"""What a new session costs the server: ``create_server`` (the pygls server object, its
features and converter, our Session) with a converter built per session (before) and with the
process's shared converter (now), interleaved in one run.

Run: ``python benchmarks/session_start.py [--dsn DSN] [--runs 200]``. The database is only
opened (a pool of one), never written. Every CLI call on the fast path (issue 17) and every
editor or agent attaching to a shared server is one new session.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from lsp_dbcode.server import features, protocol
from lsp_dbcode.server.app import App
from lsp_dbcode.store import Store

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def main(dsn: str, runs: int) -> None:
    async with Store(dsn, min_size=1, max_size=1) as store:
        app = App(store)
        times: dict[str, list[float]] = {"fresh converter (before)": [], "shared (now)": []}
        factories = {
            "fresh converter (before)": protocol.make_converter,
            "shared (now)": protocol.shared_converter,
        }
        for i in range(runs + 5):
            for name in list(times) if i % 2 else list(times)[::-1]:  # alternating order
                features.shared_converter = factories[name]  # type: ignore[assignment]
                t = time.perf_counter()
                server = features.create_server(app, "bench")
                took = time.perf_counter() - t
                await server.session.close()
                if i >= 5:
                    times[name].append(took)
        base = statistics.median(times["fresh converter (before)"])
        for name, ts in times.items():
            q = statistics.quantiles(ts, n=10)
            med = statistics.median(ts)
            print(
                f"{name:<26} p50 {med * 1e3:6.2f} ms  p10 {q[0] * 1e3:6.2f}  "
                f"p90 {q[-1] * 1e3:6.2f}  x before {med / base:5.2f}"
            )
        await app.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsn", default=DEFAULT_DSN)
    p.add_argument("--runs", type=int, default=200)
    a = p.parse_args()
    asyncio.run(main(a.dsn, a.runs))
