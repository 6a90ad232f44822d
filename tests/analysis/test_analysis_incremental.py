"""Incremental re-parsing after random edits gives what a fresh parse of the final text gives."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsp_dbcode.analysis.syntax import SyntaxTree, _LineIndex

SEEDS = {
    "python": (
        'import os\n\n\nclass Café:\n    """Dœc 😀."""\n\n    def m(self, x):\n'
        "        if x:\n            return {'k': [1, 2]}\n        return None\n\n\n"
        "def f(a, b=3):\n    # comment ✓\n    return a + b\n"
    ),
    "javascript": (
        "import x from 'x';\n\nconst K = '😀';\nclass C {\n  m(a) {\n    return a + 1;\n  }\n}\n"
        "function f(a, b) {\n  // ünïcode\n  return { a, b: [1, 2] };\n}\n"
        "const g = () => f(1, 2);\n"
    ),
    "rust": "struct S { a: i32 }\nimpl S {\n    fn new() -> Self { S { a: 1 } } // 😀\n}\n",
    "json": '{"a": [1, 2, {"b": "😀"}], "c": null, "d": {"e": true}}\n',
}

SNIPPETS = [
    "",
    "x",
    " ",
    "\n",
    "\r\n",
    "\t",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    ";",
    "'",
    '"',
    "def g():\n    pass\n",
    "class K:\n",
    "function h() { return 1; }\n",
    "if (a) {",
    "é",
    "😀",
    "中文",
    "a\u0301",
    "\u200b",
    "# 💥 comment\n",
    "// 💥\n",
    "/* ü */",
    '"s😀"',
    "return",
    "    ",
]

edit = st.tuples(
    st.floats(min_value=0, max_value=1),
    st.integers(min_value=0, max_value=12),
    st.one_of(st.sampled_from(SNIPPETS), st.text(max_size=6)),
)


def _expected_edit(text: str, step: tuple[float, int, str]) -> tuple[int, int, str]:
    where, length, new_text = step
    start = min(int(where * len(text)), len(text))
    return start, min(len(text), start + length), new_text


@pytest.mark.parametrize("language", sorted(SEEDS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(edit, min_size=1, max_size=12))
def test_incremental_tree_equals_fresh_parse(
    language: str, steps: list[tuple[float, int, str]]
) -> None:
    tree = SyntaxTree(language, SEEDS[language])
    expected = SEEDS[language]
    for step in steps:
        start, end, new_text = _expected_edit(expected, step)
        tree.apply_edit(start, end, new_text)
        expected = expected[:start] + new_text + expected[end:]
        assert tree.text == expected
    fresh = SyntaxTree(language, expected)
    assert str(tree.tree.root_node) == str(fresh.tree.root_node)
    assert tree.tree.root_node.end_byte == len(expected.encode("utf-8", "surrogatepass"))
    assert tree.errors() == fresh.errors()
    assert tree.symbols() == fresh.symbols()
    assert tree.folds() == fresh.folds()


def _naive_pos(text: str, offset: int) -> tuple[int, int]:
    """LSP line/column of a code point offset: lines end at \\r\\n, \\r or \\n."""
    line, start, i = 0, 0, 0
    while i < offset:
        if text[i] == "\r" and i + 1 < len(text) and text[i + 1] == "\n":
            if i + 1 >= offset:
                break
            i += 2
        elif text[i] in "\r\n":
            i += 1
        else:
            i += 1
            continue
        line, start = line + 1, i
    return line, offset - start


PIECES = ["a", " ", "é", "😀", "中", "\r", "\n", "\r\n"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30).map("".join))
def test_byte_offsets_map_to_lsp_lines_and_code_point_columns(text: str) -> None:
    index = _LineIndex(text, text.encode())
    for offset in range(len(text) + 1):
        byte_offset = len(text[:offset].encode())
        pos = index.pos(byte_offset)
        assert (pos.line, pos.col) == _naive_pos(text, offset), (text, offset)
