"""The ``ruff server`` engine sends only what changed: after any sequence of edits, with or
without (right, stale or wrong) hints, through child restarts, in every position encoding the
child may choose, its diagnostics equal those of a fresh ``ruff check`` of the same text."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsp_dbcode.analysis.model import AnalysisError, TextChange
from lsp_dbcode.analysis.ruff import RuffEngine, RuffServerEngine
from lsp_dbcode.text.diff import common_span
from lsp_dbcode.text.positions import LineIndex

ONLY_F = {"pyproject.toml": '[tool.ruff.lint]\nselect = ["F", "E", "W", "UP"]\n'}

SEED = (
    "import os\r\n"
    "import sys\n"
    '"""Dœc 😀 中文 e\u0301."""\n'
    "\n"
    "\n"
    "def f(a, b=3):\r\n"
    "    x = '😀😀'  # ✓\n"
    "    y = undefined_name\r"
    "    return a + b\n"
    "\n"
    "\n"
    "class Café:\n"
    "    def m(self):\n"
    "        return sys.argv, '\U0001d54f'\n"
)

SNIPPETS = [
    "",
    "x",
    " ",
    "\n",
    "\r\n",
    "\r",
    "\t",
    "(",
    ")",
    ":",
    "'",
    "import re\n",
    "import json, os\r\n",
    "def g():\n    z = 1\n",
    "    unused = 2\n",
    "😀",
    "\U0001d54f",
    "中文",
    "e\u0301",
    "\u200b",
    "# 💥 comment\n",
    "'s😀'",
    "undefined_name",
    "return",
    "    ",
    "\r\n\r\n",
]

# One edit: where (a fraction of the text), how many code points to replace, by what, and the
# hint to give: "right" (the change from the text the engine checked last), "none" (the engine
# works the change out), "stale" (a hint from an older text), "wrong" (a hint that lies), or
# "restart" (the child is killed first; a right hint).
edit = st.tuples(
    st.floats(min_value=0, max_value=1),
    st.integers(min_value=0, max_value=8),
    st.one_of(
        st.sampled_from(SNIPPETS),
        st.text(st.characters(exclude_categories=["Cs"]), max_size=4),
    ),
    st.sampled_from(["right", "right", "right", "none", "stale", "wrong", "restart"]),
)


def _edited(index: LineIndex, step: tuple[float, int, str, str]) -> tuple[LineIndex, TextChange]:
    where, length, new_text, _ = step
    text = index.text
    start = min(int(where * len(text)), len(text))
    end = min(len(text), start + length)
    # A change may not split "\r\n" in the EDITOR either (no LSP position is between them);
    # the engine has to cope with texts where the result joins or splits line breaks anyway.
    return index.replace(start, end, new_text), TextChange(index, start, end, new_text)


async def _check_sequence(encoding: str, steps: list[tuple[float, int, str, str]]) -> None:
    async with (
        RuffServerEngine(position_encodings=(encoding,)) as server,
        RuffEngine() as cli,
    ):
        index = LineIndex(SEED)
        oldest = index
        await server.findings(index.text, "pkg/m.py", ONLY_F, index=index)  # validated by the CLI
        first = await server.findings(index.text, "pkg/m.py", ONLY_F, index=index)
        assert first.diagnostics == await cli.check(index.text, "pkg/m.py", ONLY_F)
        assert server.child_encoding == encoding
        for step in steps:
            new, change = _edited(index, step)
            hint: TextChange | None = change
            if step[3] == "none":
                hint = None
            elif step[3] == "stale":
                hint = TextChange(oldest, 0, len(oldest.text), new.text)
            elif step[3] == "wrong":  # claims one code point more was replaced
                hint = TextChange(index, change.start, min(change.end + 1, len(index)), "")
            elif step[3] == "restart":
                assert server._proc is not None
                server._proc.kill()
                await server._proc.wait()
            found = await server.findings(new.text, "pkg/m.py", ONLY_F, index=new, change=hint)
            expected = await cli.check(new.text, "pkg/m.py", ONLY_F)
            assert found.diagnostics == expected, (step, new.text)
            assert len(found) == len(expected)
            index = new


@pytest.mark.parametrize("encoding", ["utf-32", "utf-16", "utf-8"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(edit, min_size=1, max_size=10))
def test_incremental_changes_give_the_diagnostics_of_a_fresh_check(
    encoding: str, steps: list[tuple[float, int, str, str]]
) -> None:
    asyncio.run(_check_sequence(encoding, steps))


async def test_a_long_session_sends_ranged_changes_only() -> None:
    """Typing in a module: after the didOpen, every check sends one small ranged change."""
    text = "".join(f"def f{n}(a):\n    return a + {n}\n\n\n" for n in range(200))
    index = LineIndex("import os\n" + text)
    async with RuffServerEngine() as server, RuffEngine() as cli:
        await server.findings(index.text, "m.py", ONLY_F, index=index)  # validated by the CLI
        await server.findings(index.text, "m.py", ONLY_F, index=index)
        assert (server.sent_full, server.sent_ranged) == (1, 0)
        for n in range(30):
            at = index.text.index(f"a + {n}\n") + len(f"a + {n}")
            typed = "  # é" if n % 3 else "q"
            new = index.replace(at, at, typed)
            found = await server.findings(
                new.text, "m.py", ONLY_F, index=new, change=TextChange(index, at, at, typed)
            )
            assert found.diagnostics == await cli.check(new.text, "m.py", ONLY_F)
            index = new
        assert (server.sent_full, server.sent_ranged) == (1, 30)


async def test_text_ruff_cannot_read_is_refused_without_killing_the_child() -> None:
    async with RuffServerEngine() as server:
        index = LineIndex("import os\n")
        await server.findings(index.text, "m.py", ONLY_F, index=index)
        await server.findings(index.text, "m.py", ONLY_F, index=index)
        typed = 'x = "\ud800"\n'
        bad = index.replace(0, 0, typed)
        with pytest.raises(AnalysisError, match="lone surrogate"):
            change = TextChange(index, 0, 0, typed)
            await server.findings(bad.text, "m.py", ONLY_F, index=bad, change=change)
        good = bad.replace(0, len(typed), "import re\n")
        found = await server.findings(good.text, "m.py", ONLY_F, index=good)  # no hint: a diff
        assert [d.code for d in found.diagnostics] == ["F401", "F401"]
        assert server.restarts == 0


async def test_the_child_may_choose_utf16_positions() -> None:
    text = 's = "😀\U0001d54f"; import os\n'
    async with RuffServerEngine(position_encodings=("utf-16",)) as server:
        index = LineIndex(text)
        await server.findings(index.text, "m.py", ONLY_F, index=index)
        found = await server.findings(index.text, "m.py", ONLY_F, index=index)
        assert server.child_encoding == "utf-16"
        (unused,) = [d for d in found.diagnostics if d.code == "F401"]
        assert text[unused.span.start.col : unused.span.end.col] == "os"  # code points
        assert found.server_items is not None
        (item,) = [d for d in found.server_items if d["code"] == "F401"]
        assert item["range"]["start"] == {"line": 0, "character": 17}


def _pairs(text: str) -> Iterator[tuple[str, str]]:
    for cut in range(len(text) + 1):
        yield text, text[:cut] + "Zé😀" + text[cut:]
        yield text, text[:cut] + text[cut + 2 :]


@given(old=st.text(max_size=30), new=st.text(max_size=30))
def test_text_diff_gives_one_change_that_makes_the_new_text(old: str, new: str) -> None:
    start, end, new_text = common_span(old, new)
    assert old[:start] + new_text + old[end:] == new
    assert 0 <= start <= end <= len(old)
    for a, b in _pairs(old):
        s, e, t = common_span(a, b)
        assert a[:s] + t + a[e:] == b
