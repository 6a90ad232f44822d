"""Anchors following the code (text/anchors.py): examples and hypothesis properties."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsp_dbcode.text.anchors import Mapped, line_span, map_range, span_lines
from lsp_dbcode.text.diff import diff_edits
from lsp_dbcode.text.edits import Edit, apply_edits


def _examples(default: int) -> int:
    return int(os.environ.get("DBCODE_TEXT_EXAMPLES", default))


def move(old: str, new: str, start: int, end: int) -> Mapped:
    return map_range(diff_edits(old, new, cleanup=False), start, end, old)


OLD = "def a():\n    return 1\n\ndef b():\n    return 2\n"


def test_lines_inserted_above_shift_the_range() -> None:
    s, e = line_span(OLD, 4, 5)
    new = "import os\nimport sys\n" + OLD
    m = move(OLD, new, s, e)
    assert not m.outdated
    assert new[m.start : m.end] == OLD[s:e]
    assert span_lines(new, m.start, m.end) == (6, 7)


def test_lines_inserted_below_and_at_the_end_leave_it() -> None:
    s, e = line_span(OLD, 1, 2)
    new = OLD.replace("\ndef b", "\n# note\ndef b")
    m = move(OLD, new, s, e)
    assert (m.start, m.end, m.outdated) == (s, e, False)


def test_edit_inside_stretches() -> None:
    s, e = line_span(OLD, 4, 5)
    new = OLD.replace("    return 2\n", "    x = 2\n    y = 3\n    return x + y\n")
    m = move(OLD, new, s, e)
    assert new[m.start : m.end] == "def b():\n    x = 2\n    y = 3\n    return x + y\n"
    assert not m.outdated


def test_deleting_all_its_text_marks_outdated_at_the_place() -> None:
    s, e = line_span(OLD, 4, 5)
    new = OLD[:s] + "# gone\n"
    m = move(OLD, new, s, e)
    assert m.outdated and m.start == m.end == s
    m2 = move(OLD, OLD[:s], s, e)
    assert m2.outdated and m2.start == m2.end == s


def test_partial_deletion_shrinks() -> None:
    s, e = line_span(OLD, 4, 5)
    new = OLD.replace("    return 2\n", "")
    m = move(OLD, new, s, e)
    assert new[m.start : m.end] == "def b():\n" and not m.outdated


def test_replaced_text_sharing_stray_letters_is_outdated() -> None:
    s, e = line_span(OLD, 4, 5)
    new = OLD[:s] + "class C:\n    pass\n"
    m = move(OLD, new, s, e)
    assert m.outdated and m.start == m.end


def test_a_changed_word_keeps_it() -> None:
    s, e = line_span(OLD, 5, 5)
    m = move(OLD, OLD.replace("return 2", "return 42"), s, e)
    assert not m.outdated


def test_a_short_line_edited_keeps_it() -> None:
    text = "x = 1\n"
    m = move(text, "y = 1\n", 0, len(text))
    assert not m.outdated


def test_point_moves_and_is_outdated_inside_a_deletion() -> None:
    assert map_range([Edit(0, 0, "xx")], 0, 0) == Mapped(2, 2, False)
    assert map_range([Edit(5, 5, "xx")], 3, 3) == Mapped(3, 3, False)
    assert map_range([Edit(1, 4, "")], 2, 2) == Mapped(1, 1, True)


def test_line_span_and_bad_lines() -> None:
    assert line_span("a\nb\nc", 2, 3) == (2, 5)
    assert line_span("a\nb\n", 2, 2) == (2, 4)
    with pytest.raises(ValueError, match="beyond the end"):
        line_span("a\nb\n", 3, 3)
    with pytest.raises(ValueError, match="1-based"):
        line_span("a\n", 0, 1)
    assert span_lines("a\nb\nc", 2, 5) == (2, 3)
    assert span_lines("a\nb\nc", 0, 2) == (1, 1)


texts = st.lists(st.sampled_from(["a", "b", "\n", "é", "😀", "xy\n", "  "]), max_size=25).map(
    "".join
)


@st.composite
def text_and_edits(draw: st.DrawFn) -> tuple[str, list[Edit]]:
    old = draw(texts)
    cuts = sorted(draw(st.lists(st.integers(0, len(old)), max_size=8)))
    edits: list[Edit] = []
    for a, b in zip(cuts[::2], cuts[1::2], strict=False):
        if edits and a <= edits[-1].end:
            continue
        edits.append(Edit(a, b, draw(texts)))
    return old, edits


def _new_index(edits: list[Edit], i: int) -> int | None:
    """Where character ``i`` of the old text is in the new one (None: removed)."""
    delta = 0
    for ed in edits:
        if ed.start <= i < ed.end:
            return None
        if ed.end <= i:
            delta += len(ed.text) - (ed.end - ed.start)
    return i + delta


def check_properties(old: str, edits: list[Edit], start: int, end: int) -> None:
    new = apply_edits(old, edits)
    m = map_range(edits, start, end)
    # Always a valid range of the new text.
    assert 0 <= m.start <= m.end <= len(new)
    surviving = [i for i in range(start, end) if _new_index(edits, i) is not None]
    if start < end:
        # Outdated exactly when no character of the range survives.
        assert m.outdated == (not surviving)
    if m.outdated:
        assert m.start == m.end
    # Every surviving character is still inside the range, at its new place.
    for i in surviving:
        j = _new_index(edits, i)
        assert j is not None and m.start <= j < m.end and new[j] == old[i]
    # Untouched by every edit: the same text, shifted.
    touched = any(
        (ed.start < end and ed.end > start) or (start < ed.start == ed.end < end) for ed in edits
    )
    if start < end and not touched:
        assert new[m.start : m.end] == old[start:end]


@settings(max_examples=_examples(400), deadline=None)
@given(text_and_edits(), st.data())
def test_properties_of_map_range(case: tuple[str, list[Edit]], data: st.DataObject) -> None:
    old, edits = case
    start = data.draw(st.integers(0, len(old)))
    end = data.draw(st.integers(start, len(old)))
    check_properties(old, edits, start, end)
    # Judged with the old text, a range is outdated at least as often, and then a point.
    judged = map_range(edits, start, end, old)
    plain = map_range(edits, start, end)
    assert judged.outdated or not plain.outdated
    if judged.outdated:
        assert judged.start == judged.end == plain.start
    else:
        assert (judged.start, judged.end) == (plain.start, plain.end)


@settings(max_examples=_examples(300), deadline=None)
@given(texts, texts, st.data())
def test_properties_through_real_diffs(old: str, new: str, data: st.DataObject) -> None:
    """The same properties for the edits the store uses: diff_edits(old, new, cleanup=False)."""
    edits = diff_edits(old, new, cleanup=False)
    assert apply_edits(old, edits) == new
    start = data.draw(st.integers(0, len(old)))
    end = data.draw(st.integers(start, len(old)))
    check_properties(old, edits, start, end)
