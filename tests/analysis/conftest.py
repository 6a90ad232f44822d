"""Shared fixtures for the analysis tests: real ruff binary, real grammars, no mocks."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest

from lsp_dbcode.analysis.model import Diagnostic, Pos, TextEditCP
from lsp_dbcode.analysis.ruff import RuffEngine, RuffServerEngine


@pytest.fixture
async def ruff_engine() -> AsyncIterator[RuffEngine]:
    async with RuffEngine() as engine:
        yield engine


@pytest.fixture(params=["subprocess", "server"])
async def any_engine(request: pytest.FixtureRequest) -> AsyncIterator[RuffEngine]:
    """Each test using it runs once per engine: both must give the same answers."""
    engine = RuffEngine() if request.param == "subprocess" else RuffServerEngine()
    async with engine:
        yield engine


async def check_twice(
    engine: RuffEngine, text: str, path: str, configs: Mapping[str, str]
) -> list[Diagnostic]:
    """The server engine answers a config set's first check with the CLI: ask twice."""
    first = await engine.check(text, path, configs)
    second = await engine.check(text, path, configs)
    assert first == second
    return second


def run_ruff_cli(
    args: Sequence[str], text: str, path: str, configs: Mapping[str, str], tmp_path: Path
) -> str:
    """What the ruff CLI prints for ``text`` as ``path`` in a folder holding ``configs``."""
    root = tmp_path / "cli-workspace"
    for rel, content in configs.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    root.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUFF_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "no-user-config")
    result = subprocess.run(
        [RuffEngine().ruff_bin, *args, "--no-cache", "--stdin-filename", str(root / path), "-"],
        input=text.encode(),
        capture_output=True,
        cwd=root,
        env=env,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr.decode()
    return result.stdout.decode()


def offset_of(text: str, pos: Pos) -> int:
    """Code point offset of a (line, code point column) position; lines end at \\n here."""
    lines = text.split("\n")
    return sum(len(line) + 1 for line in lines[: pos.line]) + pos.col


def apply_edits(text: str, edits: Sequence[TextEditCP]) -> str:
    """Apply non-overlapping edits given in positions of the original text."""
    for edit in sorted(edits, key=lambda e: (e.span.start, e.span.end), reverse=True):
        start, end = offset_of(text, edit.span.start), offset_of(text, edit.span.end)
        text = text[:start] + edit.new_text + text[end:]
    return text
