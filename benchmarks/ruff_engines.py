"""Latency of one ruff check: subprocess per check vs one long-lived ``ruff server`` child.

Run: ``python benchmarks/ruff_engines.py [--runs N]``. Each check sends a slightly different text
(so the server cannot answer from a cache) through the public engine API, including the mapping
to :class:`~lsp_dbcode.analysis.model.Diagnostic`. Prints median / p99 / max per check.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from lsp_dbcode.analysis.ruff import RuffEngine, RuffServerEngine

CONFIGS = {
    "pyproject.toml": '[tool.ruff]\nline-length = 100\n[tool.ruff.lint]\nextend-select = ["B"]\n'
}


def make_source(lines: int, findings: int) -> str:
    """A plausible module of ``lines`` lines with about ``findings`` lint findings per 100 lines."""
    out = ["import os", "", ""]
    dense = findings > 20
    i = 0
    while len(out) + 20 <= (lines // 2 if dense else lines):
        out += [
            f"class Shape{i}:",
            f'    """Shape number {i}."""',
            "",
            "    def __init__(self, sides: list[int]) -> None:",
            "        self.sides = sides",
            "",
            "    def perimeter(self) -> int:",
            "        total = 0",
            "        for side in self.sides:",
            "            total += side",
            "        return total + len(os.sep)",
            "",
            "",
            "",
            f"def area_{i}(width, height=[]):" if findings else f"def area_{i}(width, height=()):",
            "    if width == None:" if findings else "    if width is None:",
            "        return 0",
            f"    return width * len(height) + {i} + undefined" if findings else "    return 0",
            "",
            "",
        ]
        i += 1
    if dense:
        out += [f"value_{n} = undefined_{n}" for n in range(lines - len(out))]
    out += [f"# filler {n}" for n in range(lines - len(out))]
    return "\n".join(out) + "\n"


def summary(samples_ms: list[float]) -> str:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered):5.1f} p99 {p99:5.1f} max {ordered[-1]:5.1f}"


async def measure(engines: list[RuffEngine], source: str, runs: int) -> list[list[float]]:
    """Per engine, the latency of ``runs`` checks; engines take turns, so load drift hits all."""
    for engine in engines:  # warm up (the server engine: a config set's first check is the CLI)
        await engine.check(source, "pkg/mod.py", CONFIGS)
        await engine.check(source + "#\n", "pkg/mod.py", CONFIGS)
    samples: list[list[float]] = [[] for _ in engines]
    counts: set[int] = set()
    for n in range(runs):
        text = f"{source}# edit {n}\n"
        for engine, times in zip(engines, samples, strict=True):
            start = time.perf_counter()
            diagnostics = await engine.check(text, "pkg/mod.py", CONFIGS)
            times.append((time.perf_counter() - start) * 1000)
            counts.add(len(diagnostics))
    assert len(counts) == 1, counts  # every engine found the same diagnostics
    return samples


async def main(runs: int) -> None:
    print(f"ms per check, {runs} checks each, ruff {await ruff_version()}, {os.cpu_count()} cores")
    print(
        f"{'file':<22} {'A: ruff check subprocess':<34} {'B: ruff server (LSP stdio)':<34} "
        "C: RuffServerEngine (B, A from 250 diagnostics)"
    )
    for lines in (300, 3000):
        for findings in (0, 20, 60):
            source = make_source(lines, findings)
            engines = [
                RuffEngine(),
                RuffServerEngine(cli_from_diagnostics=None),
                RuffServerEngine(),
            ]
            try:
                samples = await measure(engines, source, runs)
                count = len(await engines[0].check(source, "pkg/mod.py", CONFIGS))
            finally:
                for engine in engines:
                    await engine.close()
            label = f"{lines} lines, {count} diags"
            print(f"{label:<22} " + " ".join(f"{summary(s):<34}" for s in samples))


async def ruff_version() -> str:
    engine = RuffEngine()
    proc = await asyncio.create_subprocess_exec(
        engine.ruff_bin, "--version", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return out.decode().split()[-1]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    asyncio.run(main(parser.parse_args().runs))
