"""3-way merge: clean where edits do not overlap, a visible conflict keeping both where they do."""

from __future__ import annotations

import os
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsp_dbcode.text.diff import diff_edits
from lsp_dbcode.text.edits import Edit, apply_edits
from lsp_dbcode.text.merge import (
    Choice,
    Conflict,
    MergeResult,
    _merge,
    find_conflicts,
    merge3,
    resolve,
)


def _examples(default: int) -> int:
    """Hypothesis examples per test; DBCODE_TEXT_EXAMPLES=5000 for a thorough run."""
    return int(os.environ.get("DBCODE_TEXT_EXAMPLES", default))


# Base texts: a small alphabet with newlines and non-ASCII, so that diffs are ambiguous often.
PIECES = ["a", "b", " ", "\n", "é", "😀", "中", "x = 1\n"]
small = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)
SENTINELS = "§¶†‡•◊"  # never in `small`, never inserted
OURS_CHARS = "XYZ"  # inserted only by ours in the overlap tests
THEIRS_CHARS = "PQR"  # inserted only by theirs
foreign = st.text("XYZ\n", max_size=6)  # inserted text that never recreates base text
_TO_THEIRS = str.maketrans(OURS_CHARS, THEIRS_CHARS)
_TO_OURS = str.maketrans(THEIRS_CHARS, OURS_CHARS)
SETTINGS = settings(max_examples=_examples(200), deadline=None)


def _resolve_all(result: MergeResult, choice: Choice = "mine") -> str:
    text = result.text
    for conflict in reversed(result.conflicts):
        text = apply_edits(text, [resolve(text, conflict, choice)])
    return text


# --- examples --------------------------------------------------------------------------------


def test_non_overlapping_edits_on_one_line_merge_cleanly() -> None:
    result = merge3("a = 1; b = 2", "a = 10; b = 2", "a = 1; b = 20")
    assert result == MergeResult("a = 10; b = 20", ())
    assert result.clean


def test_trivial_merges() -> None:
    assert merge3("b", "x", "b").text == "x"
    assert merge3("b", "b", "x").text == "x"
    assert merge3("b", "x", "x").text == "x"


def test_edits_on_different_lines_merge_cleanly() -> None:
    base = "one\ntwo\nthree\nfour\n"
    result = merge3(base, "ONE\ntwo\nthree\nfour\n", "one\ntwo\nthree\nFOUR\n")
    assert result.clean and result.text == "ONE\ntwo\nthree\nFOUR\n"


def test_identical_edits_apply_once() -> None:
    base = "def f():\n    return 1\n\nx = 2\n"
    ours = "def f():\n    return 42\n\nx = 2\n"
    theirs = "def f():\n    return 42\n\nx = 3\n"
    assert merge3(base, ours, theirs) == MergeResult("def f():\n    return 42\n\nx = 3\n", ())


def test_overlapping_edits_conflict_on_whole_lines() -> None:
    base = "x\na = 1\ny\n"
    result = merge3(base, "x\na = 2\ny\n", "x\na = 3\ny\n")
    block = "<<<<<<< mine\na = 2\n=======\na = 3\n>>>>>>> theirs\n"
    assert result.text == "x\n" + block + "y\n"
    assert result.conflicts == (Conflict(2, 2 + len(block), "a = 2\n", "a = 3\n", "a = 1\n"),)
    assert not result.clean


def test_conflict_keeps_other_clean_edits() -> None:
    base = "head\nmid = 1\ntail\n"
    ours = "HEAD\nmid = 2\ntail\n"
    theirs = "head\nmid = 3\nTAIL\n"
    result = merge3(base, ours, theirs, ours_label="buffer", theirs_label="rev 7")
    assert result.text == ("HEAD\n<<<<<<< buffer\nmid = 2\n=======\nmid = 3\n>>>>>>> rev 7\nTAIL\n")


def test_two_different_insertions_at_one_point_are_both_kept_theirs_first() -> None:
    assert merge3("ab\n", "aXb\n", "aYb\n") == MergeResult("aYXb\n", ())
    assert merge3("ab\n", "aXb\n", "aXb\n") == MergeResult("aXb\n", ())  # identical: once


def test_touching_edits_both_apply() -> None:
    # Ours inserts right where theirs' replaced range starts.
    assert merge3("abc\n", "aXbc\n", "aYc\n") == MergeResult("aXYc\n", ())
    # One deletes a word, the other inserts at the start of the next one.
    assert merge3("alpha beta gamma\n", "alpha gamma\n", "alpha beta new gamma\n") == (
        MergeResult("alpha new gamma\n", ())
    )
    # Replacements side by side.
    assert merge3("x = a + b\n", "x = A + b\n", "x = a + B\n").text == "x = A + B\n"


def test_words_inserted_at_one_column_stay_words() -> None:
    # The diff alone would put "bat " inside "beta" ("at b" after its "b").
    base = "alpha beta gamma\n"
    result = merge3(base, "alpha bat beta gamma\n", "alpha bee beta gamma\n")
    assert result == MergeResult("alpha bee bat beta gamma\n", ())


def test_whole_lines_at_one_line_boundary_stay_whole_lines() -> None:
    base = "import os\nimport sys\n\n\ndef main():\n    pass\n"
    ours = "import re\n" + base
    theirs = "import json\n" + base
    assert merge3(base, ours, theirs).text == "import json\nimport re\n" + base
    f = "\n\ndef f():\n    return 1\n"
    g = "\n\ndef g():\n    return 2\n"
    assert merge3(base, base + f, base + g) == MergeResult(base + g + f, ())


def test_deletions_that_overlap_delete_their_union() -> None:
    assert merge3("one two three\n", "one three\n", "one tw three\n").text == "one three\n"
    assert merge3("abcdef\n", "aef\n", "abf\n") == MergeResult("af\n", ())


def test_an_insertion_inside_a_range_the_other_side_replaced_conflicts() -> None:
    base = "def f():\n    a = 1\n    return a\n\nx = 2\n"
    deleted = "x = 2\n"
    edited = "def f():\n    a = 1\n    log(a)\n    return a\n\nx = 2\n"
    result = merge3(base, edited, deleted)
    assert len(result.conflicts) == 1 and "log(a)" in result.text
    assert result.text.endswith("x = 2\n")


def test_live_mode_resolves_a_conflict_without_markers_keeping_both() -> None:
    result = merge3("x\na = 1\ny\n", "x\na = 2\ny\n", "x\na = 3\ny\n", blocks=False)
    assert result == MergeResult("x\na = 32\ny\n", ())


def test_a_line_inserted_above_a_changed_line_merges_by_sliding() -> None:
    base = "l10\nl11\nl12\n"
    assert merge3(base, "l10\nnew\nl11\nl12\n", "l10\nL11\nl12\n").text == ("l10\nnew\nL11\nl12\n")


def test_repeated_text_is_disambiguated_by_sliding() -> None:
    # Ours deleted one "a" (the diff says the last), theirs replaced the last one.
    assert merge3("aaa", "aa", "aab") == MergeResult("ab", ())


def test_conflict_at_end_of_file_without_final_newline() -> None:
    result = merge3("x\na = 1", "x\na = 2", "x\na = 3")
    assert result.text == "x\n<<<<<<< mine\na = 2\n=======\na = 3\n>>>>>>> theirs\n"
    (conflict,) = result.conflicts
    assert (conflict.ours, conflict.theirs, conflict.base) == ("a = 2", "a = 3", "a = 1")
    assert _resolve_all(result, "mine") == "x\na = 2"
    assert _resolve_all(result, "theirs") == "x\na = 3"
    assert _resolve_all(result, "both") == "x\na = 2\na = 3"


def test_conflict_where_one_side_removes_the_final_newline() -> None:
    result = merge3("a\nb\n", "a\nB", "a\nC\n")
    assert _resolve_all(result, "mine") == "a\nB"
    assert _resolve_all(result, "theirs") == "a\nC\n"
    assert all(
        line in {"a", "B", "C"} or line.startswith(("<", "=", ">"))
        for line in result.text.splitlines()
    )


def test_conflict_markers_use_the_files_line_break() -> None:
    result = merge3("x\r\na = 1\r\ny\r\n", "x\r\na = 2\r\ny\r\n", "x\r\na = 3\r\ny\r\n")
    assert result.text == (
        "x\r\n<<<<<<< mine\r\na = 2\r\n=======\r\na = 3\r\n>>>>>>> theirs\r\ny\r\n"
    )


def test_a_join_of_two_lines_next_to_an_edit_merges() -> None:
    base = "one\ntwo\nthree\n"
    ours = "one two\nthree\n"  # joined lines 0 and 1: touches theirs' edit
    theirs = "one\nTWO\nthree\n"
    assert merge3(base, ours, theirs) == MergeResult("one TWO\nthree\n", ())


def test_a_join_of_two_lines_widens_the_conflict() -> None:
    base = "one\ntwo\nthree\n"
    result = merge3(base, "one two\nthree\n", "one;two\nthree\n")  # both join, differently
    (conflict,) = result.conflicts
    assert conflict.base == "one\ntwo\n"
    assert conflict.ours == "one two\n"
    assert conflict.theirs == "one;two\n"
    assert result.text.endswith(">>>>>>> theirs\nthree\n")


def test_resolve_each_choice() -> None:
    result = merge3("x\na = 1\ny\n", "x\na = 2\ny\n", "x\na = 3\ny\n")
    assert _resolve_all(result, "mine") == "x\na = 2\ny\n"
    assert _resolve_all(result, "theirs") == "x\na = 3\ny\n"
    assert _resolve_all(result, "both") == "x\na = 2\na = 3\ny\n"
    with pytest.raises(ValueError, match="no conflict block"):
        resolve("something else entirely, long enough", result.conflicts[0], "mine")
    with pytest.raises(ValueError, match="unknown choice"):
        resolve(result.text, result.conflicts[0], "neither")  # type: ignore[arg-type]


def test_both_sides_create_the_same_new_file_differently() -> None:
    assert merge3("", "abc\n", "xyz\n") == MergeResult("xyz\nabc\n", ())


def test_both_sides_append_a_line_at_the_end_of_the_file() -> None:
    # Two new last lines without a final line break stay two lines.
    assert merge3("a\n", "a\nabc", "a\nxyz") == MergeResult("a\nxyz\nabc", ())


def test_labels_stay_on_the_marker_line() -> None:
    result = merge3("a = 1\n", "a = 2\n", "a = 3\n", ours_label="my\nbuffer", theirs_label="")
    assert result.text == "<<<<<<< my buffer\na = 2\n=======\na = 3\n>>>>>>>\n"
    assert [(c.start, c.end) for c in find_conflicts(result.text)] == [
        (c.start, c.end) for c in result.conflicts
    ]


def test_old_mac_line_breaks() -> None:
    result = merge3("x\ra = 1\ry\r", "x\ra = 2\ry\r", "x\ra = 3\ry\r")
    assert result.text == "x\r<<<<<<< mine\ra = 2\r=======\ra = 3\r>>>>>>> theirs\ry\r"
    (found,) = find_conflicts(result.text)
    assert (found.start, found.end, found.ours) == (2, len(result.text) - 2, "a = 2\r")


def test_find_conflicts_after_the_user_edits_around_them() -> None:
    result = merge3("x\na = 1\ny\nb = 1\n", "x\na = 2\ny\nb = 2\n", "x\na = 3\ny\nb = 3\n")
    assert len(result.conflicts) == 2
    edited = "# a new first line\n" + result.text
    found = find_conflicts(edited)
    assert [(c.ours, c.theirs, c.base) for c in found] == [
        ("a = 2\n", "a = 3\n", ""),
        ("b = 2\n", "b = 3\n", ""),
    ]
    shift = len("# a new first line\n")
    assert [(c.start - shift, c.end - shift) for c in found] == [
        (c.start, c.end) for c in result.conflicts
    ]
    fixed = apply_edits(edited, [resolve(edited, found[1], "theirs")])
    assert fixed.endswith("y\nb = 3\n")
    assert len(find_conflicts(fixed)) == 1


def test_find_conflicts_reads_diff3_style_and_ignores_broken_blocks() -> None:
    text = "<<<<<<< a\nmine\n||||||| base\nold\n=======\ntheirs\n>>>>>>> b\n<<<<<<< half\nx\n"
    end = text.index("<<<<<<< half")
    assert find_conflicts(text) == [Conflict(0, end, "mine\n", "theirs\n", "old\n")]
    assert find_conflicts("no markers here\n=======\n") == []


def test_merge_of_3000_lines_is_fast() -> None:
    rng = random.Random(2)
    base = "".join(f"line_{n} = value({rng.randint(0, 99)})\n" for n in range(3000))
    ours = base.replace("line_100 =", "line_100_renamed =")
    theirs = base.replace("line_2900 =", "line_2900_renamed =")
    started = time.perf_counter()
    result = merge3(base, ours, theirs)
    assert time.perf_counter() - started < 0.25  # measured ~2 ms
    assert result.clean and "line_100_renamed" in result.text and "line_2900_renamed" in result.text


# --- properties ------------------------------------------------------------------------------


@st.composite
def random_edit_set(draw: st.DrawFn, base: str, inserted: st.SearchStrategy[str]) -> list[Edit]:
    cuts = sorted(draw(st.lists(st.integers(0, len(base)), max_size=6)))  # repeats: insertions
    return [Edit(cuts[k], cuts[k + 1], draw(inserted)) for k in range(0, len(cuts) - 1, 2)]


@SETTINGS
@given(small, small)
def test_a_one_sided_change_is_taken_as_is(base: str, changed: str) -> None:
    assert merge3(base, changed, base) == MergeResult(changed, ())
    assert merge3(base, base, changed) == MergeResult(changed, ())
    # And without the shortcut for equal texts:
    edits = diff_edits(base, changed, cleanup=False)
    mine = _merge(base, changed, base, "mine", "theirs", ours_edits=edits, theirs_edits=[])
    assert mine == MergeResult(changed, ())
    theirs = _merge(base, base, changed, "mine", "theirs", ours_edits=[], theirs_edits=edits)
    assert theirs == MergeResult(changed, ())


@SETTINGS
@given(small, small)
def test_the_same_change_on_both_sides_is_taken_once(base: str, changed: str) -> None:
    assert merge3(base, changed, changed) == MergeResult(changed, ())
    edits = diff_edits(base, changed, cleanup=False)
    result = _merge(
        base, changed, changed, "mine", "theirs", ours_edits=edits, theirs_edits=list(edits)
    )
    assert result == MergeResult(changed, ())


@st.composite
def disjoint_edits(draw: st.DrawFn) -> tuple[str, list[Edit], list[Edit]]:
    """A base of random segments joined by unique sentinel characters, and at most one edit per
    segment (to ours or theirs): edits on disjoint, non-adjacent regions.

    Sentinels and foreign inserted text matter: without them the generator's edits are not the
    only reading of the change, and a merge cannot be expected to guess the generator's choice.
    Base "aaaa", ours deletes the first "a", theirs inserts "b" at 2: "abaa" and "aaba" are both
    right. Base "§x = 1", theirs inserts "x = 1" at 0 and deletes the old one: that is also
    "moved §".
    """
    count = draw(st.integers(1, len(SENTINELS) + 1))
    segments = [draw(small) for _ in range(count)]
    base = ""
    ours: list[Edit] = []
    theirs: list[Edit] = []
    for n, segment in enumerate(segments):
        side = draw(st.sampled_from([ours, theirs, None]))
        if side is not None:
            start = draw(st.integers(0, len(segment)))
            end = draw(st.integers(start, len(segment)))
            side.append(Edit(len(base) + start, len(base) + end, draw(foreign)))
        base += segment + (SENTINELS[n] if n < count - 1 else "")
    return base, ours, theirs


@settings(max_examples=_examples(200), deadline=None)
@given(disjoint_edits())
def test_non_overlapping_edits_merge_cleanly_to_both_applied(
    case: tuple[str, list[Edit], list[Edit]],
) -> None:
    base, ours_edits, theirs_edits = case
    ours = apply_edits(base, ours_edits)
    theirs = apply_edits(base, theirs_edits)
    result = merge3(base, ours, theirs)
    assert result.conflicts == ()
    assert result.text == apply_edits(base, ours_edits + theirs_edits)


@st.composite
def overlapping_edits(draw: st.DrawFn) -> tuple[str, Edit, Edit]:
    """One edit per side on overlapping ranges of base (or an insertion strictly inside the
    other side's range), each inserting text made of its own characters, absent from base: a
    certain conflict."""
    # Distinct characters: no other reading of either change (no repeated text to slide along).
    base = draw(
        st.lists(st.sampled_from(list("abcdefgé中 \n")), min_size=2, unique=True).map("".join)
    )
    ours_text = draw(st.text(OURS_CHARS, min_size=1, max_size=8))
    theirs_text = draw(st.text(THEIRS_CHARS, min_size=1, max_size=8))
    if draw(st.booleans()):
        s1 = draw(st.integers(0, len(base) - 2))
        e1 = draw(st.integers(s1 + 2, len(base)))
        at = draw(st.integers(s1 + 1, e1 - 1))
        inside = Edit(at, at, ours_text if draw(st.booleans()) else theirs_text)
        # A replacement (a deletion could slide away from the insertion along repeated text).
        outer = Edit(s1, e1, draw(st.text(OURS_CHARS, min_size=1, max_size=3)))
        if inside.text[0] in OURS_CHARS:
            return base, inside, Edit(s1, e1, outer.text.translate(_TO_THEIRS))
        return base, Edit(s1, e1, outer.text.translate(_TO_OURS)), inside
    s1 = draw(st.integers(0, len(base) - 1))
    e1 = draw(st.integers(s1 + 1, len(base)))
    s2 = draw(st.integers(0, e1 - 1))
    e2 = draw(st.integers(max(s1, s2) + 1, len(base)))
    return base, Edit(s1, e1, ours_text), Edit(s2, e2, theirs_text)


@SETTINGS
@given(overlapping_edits(), disjoint_edits(), st.booleans())
def test_overlapping_edits_conflict_and_lose_nothing(
    case: tuple[str, Edit, Edit],
    elsewhere: tuple[str, list[Edit], list[Edit]],
    overlap_last: bool,
) -> None:
    base, ours_edit, theirs_edit = case
    # Clean edits elsewhere, beyond a separator line that no edit can slide across; the
    # overlap first, or last (at the end of the file).
    tail_base, tail_ours, tail_theirs = elsewhere
    separator = "\n~\n"
    if overlap_last:
        shift_overlap, shift_tail = len(tail_base) + len(separator), 0
        full_base = tail_base + separator + base
    else:
        shift_overlap, shift_tail = 0, len(base) + len(separator)
        full_base = base + separator + tail_base
    ours_edit = ours_edit.shifted(shift_overlap)
    theirs_edit = theirs_edit.shifted(shift_overlap)
    ours = apply_edits(full_base, [ours_edit, *(e.shifted(shift_tail) for e in tail_ours)])
    theirs = apply_edits(full_base, [theirs_edit, *(e.shifted(shift_tail) for e in tail_theirs)])
    result = merge3(full_base, ours, theirs)
    assert len(result.conflicts) >= 1
    assert ours_edit.text in result.text and theirs_edit.text in result.text
    for conflict in result.conflicts:
        assert result.text[conflict.start : conflict.end].startswith("<<<<<<< mine")
    mine = _resolve_all(result, "mine")
    assert ours_edit.text in mine
    assert _resolve_all(result, "theirs").count(theirs_edit.text) >= 1
    # The markers can be found again exactly where they were put.
    assert [(c.start, c.end) for c in find_conflicts(result.text)] == [
        (c.start, c.end) for c in result.conflicts
    ]


@SETTINGS
@given(small, st.data())
def test_random_concurrent_edits_never_lose_typed_text(base: str, data: st.DataObject) -> None:
    ours_edits = data.draw(random_edit_set(base, st.text(OURS_CHARS + "\n", max_size=5)))
    theirs_edits = data.draw(random_edit_set(base, st.text(THEIRS_CHARS + "\n", max_size=5)))
    ours = apply_edits(base, ours_edits)
    theirs = apply_edits(base, theirs_edits)
    result = merge3(base, ours, theirs)
    for char in OURS_CHARS:
        assert result.text.count(char) == ours.count(char)
        assert _resolve_all(result, "mine").count(char) == ours.count(char)
    for char in THEIRS_CHARS:
        assert result.text.count(char) == theirs.count(char)
        assert _resolve_all(result, "theirs").count(char) == theirs.count(char)
    if result.clean:
        # A clean merge holds both sides' changes: it is one of them where the other is base.
        if ours == base:
            assert result.text == theirs
        if theirs == base:
            assert result.text == ours


def test_a_word_typed_between_two_words_the_other_side_deleted_is_kept_without_conflict() -> None:
    """Found by the 10-session storm (issue 19): a save session deleted two adjacent words of its
    own while a live session typed a word between them. No base character was changed by both
    sides (rule 4): the deletion applies around the insertion. Within one line only: a
    deletion that spans lines still conflicts with an insertion inside it."""
    base = "a1 s8n6 s8n19 w9x2\n"
    ours = "a1 w9x2\n"  # deleted "s8n6 s8n19 "
    theirs = "a1 s8n6 l5n25 s8n19 w9x2\n"  # typed "l5n25 " between them
    for blocks in (True, False):
        merged = merge3(base, ours, theirs, blocks=blocks)
        assert merged.clean and merged.text == "a1 l5n25 w9x2\n"
    base = "def f():\n    a = 1\n    b = 2\n\nrest\n"
    ours = "rest\n"  # the function deleted
    theirs = "def f():\n    a = 1\n    c = 3\n    b = 2\n\nrest\n"  # a line added inside it
    assert not merge3(base, ours, theirs).clean
