"""What TLS costs on ``dbcode serve --tcp`` and ``--ws``: the same requests over plain and TLS
servers of the same database, interleaved round by round, each TLS figure as a ratio to its
plain anchor of the same run.

Per round, on each of the four transports (tcp, tls-tcp, ws, wss), with lsp_dbcode.client:

- ``readFile``: one ``dbcode/readFile`` round trip of a 100-line file on an open session;
- ``writeFile``: one ``dbcode/writeFile`` (a commit: CAS, lint report) on an open session;
- ``connect``: a new connection, ``initialize`` and ``dbcode/configure`` (the TLS handshake is
  in it), then ``shutdown``/``exit``.

The certificate is made with the ``openssl`` binary (RSA 2048, self-signed).

    python benchmarks/tls_transport.py [--dsn DSN] [--rounds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import push_latency as pl  # benchmarks/push_latency.py
import scratch_db

from lsp_dbcode.client import Client, connect
from lsp_dbcode.store import Store

BENCH_DB = "dbcode_tlsbench"
TRANSPORTS = ["tcp", "tls-tcp", "ws", "wss"]
ANCHOR = {"tls-tcp": "tcp", "wss": "ws"}
SERVE = [sys.executable, "-m", "lsp_dbcode", "serve"]
CONNECT_EVERY = 4  # rounds per connect sample (a connect costs ~10 requests)
TEXT = "".join(f"value_{i} = {i}  # line {i}\n" for i in range(100))


def make_cert(directory: Path) -> tuple[str, str]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def start(dsn: str, flag: str, log: Path, tls: tuple[str, str] | None) -> tuple[Any, int]:
    extra = ["--tls-cert", tls[0], "--tls-key", tls[1]] if tls else []
    env = {**os.environ, "DBCODE_DATABASE_URL": dsn}
    env.pop("DBCODE_TOKEN", None)
    proc = subprocess.Popen(
        [*SERVE, flag, "127.0.0.1:0", "--log-file", str(log), "--log-level", "WARNING", *extra],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stderr is not None
    for _ in range(100):
        line = proc.stderr.readline().decode()
        m = re.search(r"on \('127\.0\.0\.1', (\d+)\)", line)
        if m:
            return proc, int(m.group(1))
    raise SystemExit(f"tls_transport.py: the {flag} server did not start: see {log}")


def where(transport: str, port: int) -> dict[str, str]:
    scheme = {"tcp": "tcp", "tls-tcp": "tls", "ws": "ws", "wss": "wss"}[transport]
    key = "ws" if transport in ("ws", "wss") else "tcp"
    return {key: f"{scheme}://127.0.0.1:{port}"}


async def amain(args: argparse.Namespace) -> int:
    dsn = scratch_db.recreate(args.dsn, BENCH_DB)
    tmp = Path(tempfile.mkdtemp(prefix="tlsbench-"))
    cert = make_cert(tmp)
    procs = []
    clients: dict[str, Client] = {}
    samples: dict[tuple[str, str], list[float]] = {
        (t, op): [] for t in TRANSPORTS for op in ("readFile", "writeFile", "connect")
    }
    print(pl.machine_line(), flush=True)
    try:
        async with Store(dsn) as store:
            await store.write("bench", "m.py", TEXT, agent="seed")
        ports = {}
        for t in TRANSPORTS:
            flag = "--ws" if t in ("ws", "wss") else "--tcp"
            proc, ports[t] = start(dsn, flag, tmp / f"{t}.log", cert if t in ANCHOR else None)
            procs.append(proc)
        for t in TRANSPORTS:
            clients[t] = await connect("bench", agent=t, tls_ca=cert[0], **where(t, ports[t]))
        revision = {t: 0 for t in TRANSPORTS}
        for k in range(args.rounds + 5):
            keep = k >= 5
            shift = k % len(TRANSPORTS)
            for t in TRANSPORTS[shift:] + TRANSPORTS[:shift]:
                db = clients[t]
                t0 = time.perf_counter()
                f = await db.read("m.py")
                t1 = time.perf_counter()
                path = f"w/{t}.py"
                done = await db.write(path, f"x = {k}\n", base=revision[t])
                t2 = time.perf_counter()
                revision[t] = done.revision
                if keep:
                    samples[(t, "readFile")].append(t1 - t0)
                    samples[(t, "writeFile")].append(t2 - t1)
                assert f.text == TEXT
                if k % CONNECT_EVERY == 0:
                    t3 = time.perf_counter()
                    c = await connect("bench", agent=t, tls_ca=cert[0], **where(t, ports[t]))
                    t4 = time.perf_counter()
                    await c.close()
                    if keep:
                        samples[(t, "connect")].append(t4 - t3)
            if k % 50 == 0:
                print(f"  {k}/{args.rounds + 5} rounds", file=sys.stderr, flush=True)
    finally:
        for c in clients.values():
            with contextlib.suppress(Exception):
                await c.close()
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            p.wait(10)
        scratch_db.drop(args.dsn, BENCH_DB)
    print(
        f"\n{args.rounds} rounds, the four transports in rotated order each round "
        f"(connect every {CONNECT_EVERY} rounds)\n"
    )
    print("| request | transport | p50 ms | p10 ms | p90 ms | p50 / plain p50 |")
    print("|---|---|---|---|---|---|")
    for op in ("readFile", "writeFile", "connect"):
        for t in TRANSPORTS:
            xs = samples[(t, op)]
            p50 = pl.pct(xs, 0.5)
            base = pl.pct(samples[(ANCHOR.get(t, t), op)], 0.5)
            ratio = f"**{p50 / base:.2f}**" if t in ANCHOR else "1.00 (anchor)"
            print(
                f"| {op} | {t} | {pl.fmt_ms(p50)} | {pl.fmt_ms(pl.pct(xs, 0.1))} | "
                f"{pl.fmt_ms(pl.pct(xs, 0.9))} | {ratio} |"
            )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", default=os.environ.get("DBCODE_BENCH_DSN", pl.DEFAULT_DSN))
    ap.add_argument("--rounds", type=int, default=200, help="measured rounds")
    return asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
