"""The ``ruff server`` engine's push path (issue 4): the child publishes after each change and
the engine takes exactly the publish of the version it sent; a file the child does not publish
for is pulled; a check starts without waiting when it can (``lint``, the one primitive) and a
change can go to the child before the caller has applied it (``send_ahead``); a child that hangs
or dies fails the check and is replaced. Real ruff, real processes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from functools import partial

import pytest

from lsp_dbcode.analysis.model import AnalysisError, Findings, TextChange
from lsp_dbcode.analysis.ruff import RuffEngine, RuffServerEngine, settle
from lsp_dbcode.text.positions import Encoding, LineIndex

CONFIGS = {"pyproject.toml": '[tool.ruff]\nextend-exclude = ["skip.py"]\n'}
TEXT = 'import os\ns = "😀 中文"\n\n\ndef f(a):\n    return a + 1\n'


async def _ready(engine: RuffServerEngine, index: LineIndex, path: str = "m.py") -> None:
    """Validated by the CLI, then opened in the child."""
    await engine.findings(index.text, path, CONFIGS, index=index)
    await engine.findings(index.text, path, CONFIGS, index=index)


def _soon(
    engine: RuffServerEngine, index: LineIndex, change: TextChange | None = None
) -> asyncio.Future[Findings]:
    """``lint`` as a future; asserts that it started at once (no task) and did not call back
    before it returned."""
    future: asyncio.Future[Findings] = asyncio.get_running_loop().create_future()

    def done(found: Findings | None, error: AnalysisError | None) -> None:
        if error is not None:
            future.set_exception(error)
        else:
            assert found is not None
            future.set_result(found)

    assert engine.lint(index.text, "m.py", CONFIGS, done, index=index, change=change) is None
    assert not future.done()
    return future


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


async def _stopped(pid: int) -> None:
    """Until the process is stopped (a signal takes effect asynchronously)."""
    for _ in range(1000):
        if _state(pid) == "T":
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"process {pid} did not stop")


async def test_the_child_pushes_each_version_and_an_excluded_file_is_pulled() -> None:
    async with RuffServerEngine() as engine, RuffEngine() as cli:
        index = LineIndex(TEXT)
        await _ready(engine, index)
        pushed = engine.pushed
        for n in range(5):
            at = index.text.index("a + 1")
            new = index.replace(at, at, f"b{n} + ")  # an undefined name, then another
            change = TextChange(index, at, at, f"b{n} + ")
            found = await engine.findings(new.text, "m.py", CONFIGS, index=new, change=change)
            assert found.diagnostics == await cli.check(new.text, "m.py", CONFIGS)
            index = new
        assert engine.pushed == pushed + 5
        (doc,) = [d for d in engine._docs.values() if d.uri.endswith("/m.py")]
        assert doc.pushes is True

        # ruff publishes nothing for a file the config excludes: it is pulled instead.
        await _ready(engine, LineIndex("import os\n"), "skip.py")
        for text in ("import re\n", "import sys\n"):
            assert await engine.check(text, "skip.py", CONFIGS) == []
        (skip,) = [d for d in engine._docs.values() if d.uri.endswith("/skip.py")]
        assert skip.pushes is False
        assert engine.restarts == 0


async def test_lint_at_once_calls_back_with_what_the_cli_says() -> None:
    async with RuffServerEngine(position_encodings=("utf-16",)) as engine, RuffEngine() as cli:
        index = LineIndex(TEXT)
        await _ready(engine, index)
        for typed in ("undefined_name\n", "x = '😀'\n", "import re\n"):
            new = index.replace(len(index.text), len(index.text), typed)
            change = TextChange(index, len(index.text), len(index.text), typed)
            running = _soon(engine, new, change)
            # One check at a time per document: another one cannot start at once; the same
            # primitive runs it in a task of the engine's, which waits for the first to end.
            later: asyncio.Future[Findings] = asyncio.get_running_loop().create_future()
            task = engine.lint(new.text, "m.py", CONFIGS, partial(settle, later), index=new)
            assert task is not None and not later.done()
            found = await running
            assert found.diagnostics == await cli.check(new.text, "m.py", CONFIGS)
            assert (await later).diagnostics == found.diagnostics
            index = new
        assert engine.sent_full == 1  # the didOpen; every check after it sent a ranged change


async def test_a_change_sent_ahead_is_taken_by_the_check_of_its_text() -> None:
    async with RuffServerEngine() as engine, RuffEngine() as cli:
        index = LineIndex(TEXT)
        await _ready(engine, index)
        sent = (engine.sent_full, engine.sent_ranged)
        # Typing after the emoji: utf-16 positions from the editor, code points for ruff.
        line, col16 = 1, len('s = "😀'.encode("utf-16-le")) // 2
        assert engine.send_ahead("m.py", CONFIGS, index, (line, col16, line, col16), "x", "utf-16")
        at = index.offset(line, col16, Encoding.UTF16)
        new = index.replace(at, at, "x")
        found = await _soon(engine, new)
        assert found.diagnostics == await cli.check(new.text, "m.py", CONFIGS)
        assert (engine.sent_full, engine.sent_ranged) == (sent[0], sent[1] + 1)

        # A change that does not make the checked text: its result is dropped, and the check
        # of the real text still says what the CLI says.
        assert engine.send_ahead("m.py", CONFIGS, new, (0, 0, 0, 0), "import re\n", "utf-32")
        other = new.replace(0, 0, "import json\n")
        found = await engine.findings(other.text, "m.py", CONFIGS, index=other)
        assert found.diagnostics == await cli.check(other.text, "m.py", CONFIGS)

        # Nothing is sent ahead of a text the child does not have.
        assert not engine.send_ahead("m.py", CONFIGS, new, (0, 0, 0, 0), "x", "utf-32")
        assert engine.restarts == 0


async def test_a_hung_child_fails_the_check_and_is_replaced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with RuffServerEngine() as engine, RuffEngine() as cli:
        index = LineIndex(TEXT)
        await _ready(engine, index)
        assert engine._proc is not None
        os.kill(engine._proc.pid, signal.SIGSTOP)  # it hangs: no answer, no exit
        await _stopped(engine._proc.pid)
        engine.timeout_s = 0.2
        new = index.replace(0, 0, "import re\n")
        with caplog.at_level(logging.WARNING), pytest.raises(AnalysisError, match="did not answer"):
            await _soon(engine, new, TextChange(index, 0, 0, "import re\n"))
        assert "did not answer" in caplog.text and "restarting it" in caplog.text
        engine.timeout_s = 10.0
        found = await engine.findings(new.text, "m.py", CONFIGS, index=new)
        assert found.diagnostics == await cli.check(new.text, "m.py", CONFIGS)
        assert engine.restarts == 1


async def test_a_child_that_dies_mid_check_fails_it_and_is_replaced() -> None:
    async with RuffServerEngine() as engine, RuffEngine() as cli:
        index = LineIndex(TEXT)
        await _ready(engine, index)
        assert engine._proc is not None
        new = index.replace(0, 0, "import re\n")
        # Stopped first: the child cannot answer the check before it dies (on a loaded machine
        # it sometimes did, and the check then rightly succeeded).
        os.kill(engine._proc.pid, signal.SIGSTOP)
        assert engine.send_ahead("m.py", CONFIGS, index, (0, 0, 0, 0), "import re\n", "utf-32")
        os.kill(engine._proc.pid, signal.SIGKILL)
        with pytest.raises(AnalysisError, match=r"exited|stopped"):
            await _soon(engine, new)
        found = await engine.findings(new.text, "m.py", CONFIGS, index=new)
        assert found.diagnostics == await cli.check(new.text, "m.py", CONFIGS)
        assert engine.restarts == 1
