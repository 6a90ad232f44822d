"""Edits, LSP content changes and content hashes."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsp_dbcode.text.edits import (
    Edit,
    apply_change,
    apply_content_change,
    apply_edits,
    content_hash,
    to_lsp_range,
)
from lsp_dbcode.text.positions import Encoding, LineIndex, PositionError

texts = st.lists(
    st.sampled_from(["a", "b", " ", "\n", "\r\n", "\r", "é", "😀", "中"]), max_size=30
).map("".join)


def _examples(default: int) -> int:
    """Hypothesis examples per test; DBCODE_TEXT_EXAMPLES=5000 for a thorough run."""
    return int(os.environ.get("DBCODE_TEXT_EXAMPLES", default))


def test_apply_edits_in_any_order() -> None:
    text = "hello world"
    edits = [Edit(6, 11, "there"), Edit(0, 5, "HELLO"), Edit(5, 5, ",")]
    assert apply_edits(text, edits) == "HELLO, there"
    assert apply_edits(text, []) == text


def test_insertions_at_one_point_keep_their_order() -> None:
    assert apply_edits("ab", [Edit(1, 1, "x"), Edit(1, 1, "y")]) == "axyb"
    assert apply_edits("ab", [Edit(1, 2, "B"), Edit(1, 1, "x")]) == "axB"


def test_overlapping_or_out_of_range_edits_raise() -> None:
    with pytest.raises(ValueError, match="overlap"):
        apply_edits("abcdef", [Edit(0, 3, ""), Edit(2, 4, "")])
    with pytest.raises(ValueError, match="past the end"):
        apply_edits("abc", [Edit(2, 4, "")])
    with pytest.raises(ValueError):
        Edit(3, 2, "")


def test_to_lsp_range_in_each_encoding() -> None:
    index = LineIndex("x😀\r\nyé😀z")
    edit = Edit(1, 7, "")  # from before the emoji on line 0 to before "z" on line 1
    assert to_lsp_range(index, edit, Encoding.UTF16) == ((0, 1), (1, 4))
    assert to_lsp_range(index, edit, Encoding.UTF8) == ((0, 1), (1, 7))
    assert to_lsp_range(index, edit, Encoding.UTF32) == ((0, 1), (1, 3))
    with pytest.raises(PositionError):
        to_lsp_range(index, Edit(3, 3, "!"), Encoding.UTF16)  # between \r and \n


def test_apply_change() -> None:
    text = "a😀b\ncd"
    assert apply_change(text, None, (0, 3), (1, 1), "X", Encoding.UTF16) == "a😀Xd"
    assert apply_change(text, None, (0, 5), (0, 5), "!", Encoding.UTF8) == "a😀!b\ncd"
    assert apply_change(text, None, None, None, "new", Encoding.UTF16) == "new"
    index = LineIndex(text)
    assert apply_change(text, index, (1, 2), (1, 2), "e", Encoding.UTF32) == "a😀b\ncde"
    with pytest.raises(PositionError):
        apply_change(text, index, (0, 2), (0, 3), "", Encoding.UTF16)  # inside the emoji
    with pytest.raises(PositionError):
        apply_change(text, index, (2, 0), (2, 0), "", Encoding.UTF16)
    with pytest.raises(PositionError):
        apply_change(text, index, (1, 1), (0, 0), "", Encoding.UTF16)  # end before start
    with pytest.raises(ValueError):
        apply_change("other", index, (0, 0), (0, 0), "", Encoding.UTF16)
    with pytest.raises(ValueError):
        apply_change(text, index, (0, 0), None, "", Encoding.UTF16)


def test_content_hash_is_short_and_stable() -> None:
    assert content_hash("abc") == content_hash("abc")
    assert content_hash("abc") != content_hash("abd")
    assert len(content_hash("😀")) == 16
    assert content_hash("") == "e4a6a0577479b2b4"  # pinned: hashes may be stored


@settings(max_examples=_examples(150), deadline=None)
@given(texts, st.data())
def test_content_changes_incremental_equals_full(text: str, data: st.DataObject) -> None:
    encoding = data.draw(st.sampled_from(list(Encoding)))
    index = LineIndex(text)
    for _ in range(4):
        current = index.text
        a = data.draw(st.integers(0, len(current)))
        b = data.draw(st.integers(a, len(current)))
        if index.is_inside_line_break(a) or index.is_inside_line_break(b):
            continue
        start = index.position(a, encoding)
        end = index.position(b, encoding)
        inserted = data.draw(texts)
        expected = current[:a] + inserted + current[b:]
        assert apply_change(current, index, start, end, inserted, encoding) == expected
        index = apply_content_change(index, start, end, inserted, encoding)
        assert index.text == expected
        assert index.line_starts == LineIndex(expected).line_starts


@settings(max_examples=_examples(150), deadline=None)
@given(texts, st.data())
def test_apply_edits_matches_sequential_application(text: str, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    edits = [Edit(cuts[k], cuts[k + 1], data.draw(texts)) for k in range(0, len(cuts) - 1, 2)]
    # Edits starting at one offset apply in their given order: keep one per offset to shuffle.
    edits = [e for k, e in enumerate(edits) if k == 0 or e.start != edits[k - 1].start]
    expected = text
    for edit in reversed(edits):  # from the end, offsets stay valid
        expected = expected[: edit.start] + edit.text + expected[edit.end :]
    shuffled = data.draw(st.permutations(edits))
    assert apply_edits(text, shuffled) == expected
