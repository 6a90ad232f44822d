"""diff_edits: always exact, small where the change is small, bounded on huge texts."""

from __future__ import annotations

import itertools
import os
import random
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from lsp_dbcode.text.diff import diff_edits
from lsp_dbcode.text.edits import Edit, apply_edits
from lsp_dbcode.text.positions import LineIndex

small = st.lists(
    st.sampled_from(["a", "b", " ", "\n", "\r\n", "\r", "é", "😀", "x = 1\n"]), max_size=60
).map("".join)
no_cr = st.lists(
    st.sampled_from(["a", "b", "c", " ", "\n", "é", "😀", "def f():\n"]), max_size=60
).map("".join)


def _examples(default: int) -> int:
    """Hypothesis examples per test; DBCODE_TEXT_EXAMPLES=5000 for a thorough run."""
    return int(os.environ.get("DBCODE_TEXT_EXAMPLES", default))


SETTINGS = settings(max_examples=_examples(200), deadline=None)


def _check(old: str, new: str, *, cleanup: bool = True) -> list[Edit]:
    edits = diff_edits(old, new, cleanup=cleanup)
    assert apply_edits(old, edits) == new
    index = LineIndex(old)
    for first, second in itertools.pairwise(edits):
        assert first.end < second.start, "sorted and not touching"
    for edit in edits:
        assert not index.is_inside_line_break(edit.start)
        assert not index.is_inside_line_break(edit.end)
        assert edit.text or edit.start < edit.end
    return edits


def _code(lines: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    words = ["value", "result", "item", "count", "index", "total", "name", "data"]
    out = []
    for n in range(lines):
        indent = "    " * rng.randint(0, 3)
        a, b = rng.choice(words), rng.choice(words)
        out.append(f"{indent}{a}_{n} = compute({b}, {n})  # step {n}\n")
        if n % 7 == 0:
            out.append("\n")
        if n % 11 == 0:
            out.append(f"{indent}}}\n")
    return "".join(out)


# --- examples --------------------------------------------------------------------------------


def test_equal_texts_need_no_edits() -> None:
    assert diff_edits("same", "same") == []
    assert diff_edits("", "") == []


def test_whole_replacement_of_tiny_texts() -> None:
    assert _check("", "abc") == [Edit(0, 0, "abc")]
    assert _check("abc", "") == [Edit(0, 3, "")]


def test_one_word_changed_in_a_line_is_about_that_word() -> None:
    old = "x = 1\nresult = compute(value)\ny = 2\n"
    new = "x = 1\nresult = compute(other)\ny = 2\n"
    (edit,) = _check(old, new)
    assert edit.end - edit.start <= len("value")
    assert old[edit.start : edit.end] in "value"


def test_two_changes_on_one_line_stay_two_edits() -> None:
    edits = _check("a = 1; b = 2", "a = 10; b = 20")
    assert edits == [Edit(5, 5, "0"), Edit(12, 12, "0")]


def test_cleanup_joins_noise_but_not_lines() -> None:
    fine = _check("return compute(x)", "yield process(y)", cleanup=False)
    coarse = _check("return compute(x)", "yield process(y)")
    assert len(coarse) < len(fine)
    assert len(_check("a\nb\nc\n", "A\nb\nC\n")) == 2


def test_inserted_and_deleted_lines() -> None:
    assert _check("a\nb\n", "a\nx\nb\n") == [Edit(2, 2, "x\n")]
    assert _check("a\nx\nb\n", "a\nb\n") == [Edit(2, 4, "")]


def test_never_splits_crlf() -> None:
    assert _check("a\r\nb", "a\r\r\nb") == [Edit(1, 3, "\r\r\n")]
    _check("a\r\nb", "a\rb")
    _check("a\r\nb", "a\nb")
    _check("\r\n\r\n", "\r\n")
    _check("x\r\ny\r\n", "x\r\n\r\ny\r\n")


def test_one_word_change_in_3000_lines_is_fast_and_small() -> None:
    old = _code(3000)
    lines = old.splitlines(keepends=True)
    lines[1500] = lines[1500].replace("compute", "evaluate")
    new = "".join(lines)
    started = time.perf_counter()
    edits = diff_edits(old, new)
    elapsed = time.perf_counter() - started
    assert apply_edits(old, edits) == new
    assert len(edits) == 1 and edits[0].end - edits[0].start <= len("compute")
    assert elapsed < 0.2  # measured ~0.1 ms; loose for loaded CI machines


def test_scattered_changes_in_3000_lines_are_fast_and_local() -> None:
    old = _code(3000)
    lines = old.splitlines(keepends=True)
    for n in (10, 900, 1800, 2990):
        n = next(k for k in range(n, len(lines)) if "compute" in lines[k])
        lines[n] = lines[n].replace("compute", "evaluate")
    del lines[1200]
    lines.insert(2500, "inserted = True\n")
    new = "".join(lines)
    started = time.perf_counter()
    edits = diff_edits(old, new)
    elapsed = time.perf_counter() - started
    assert apply_edits(old, edits) == new
    assert len(edits) == 6
    assert sum(e.end - e.start + len(e.text) for e in edits) < 150
    assert elapsed < 0.5  # measured ~4 ms


def test_ten_mebibytes_do_not_blow_up() -> None:
    old = _code(190_000, seed=3)  # 10 MiB, many repeated lines ("}", blank)
    assert len(old) > 10 * 2**20
    lines = old.splitlines(keepends=True)
    rng = random.Random(5)
    for n in rng.sample(range(len(lines)), 20):
        lines[n] = lines[n].replace("compute", "evaluate")
    for n in sorted(rng.sample(range(len(lines)), 5), reverse=True):
        del lines[n]
    new = "".join(lines)
    started = time.perf_counter()
    edits = diff_edits(old, new)
    elapsed = time.perf_counter() - started
    assert apply_edits(old, edits) == new
    assert len(edits) <= 25
    assert elapsed < 30  # measured ~1 s: the point is "not quadratic"


def test_huge_unrelated_texts_fall_back_to_coarse_hunks() -> None:
    rng = random.Random(1)
    old = "".join(rng.choices("ab\n", k=300_000))
    new = "".join(rng.choices("ab\n", k=300_000))
    started = time.perf_counter()
    _check(old, new)
    assert time.perf_counter() - started < 30  # measured ~0.6 s


# --- properties ------------------------------------------------------------------------------


@SETTINGS
@given(small, small, st.booleans())
def test_always_exact(old: str, new: str, cleanup: bool) -> None:
    _check(old, new, cleanup=cleanup)


@SETTINGS
@given(small, st.data())
def test_exact_after_a_few_random_edits(old: str, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(old)), max_size=6)))  # repeats: insertions
    edits = [Edit(cuts[k], cuts[k + 1], data.draw(small)) for k in range(0, len(cuts) - 1, 2)]
    _check(old, apply_edits(old, edits), cleanup=data.draw(st.booleans()))


@SETTINGS
@given(no_cr, st.data())
def test_one_edit_is_never_made_bigger(old: str, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(old)))
    end = data.draw(st.integers(start, len(old)))
    inserted = data.draw(no_cr)
    new = old[:start] + inserted + old[end:]
    edits = _check(old, new, cleanup=False)
    assert sum(e.end - e.start for e in edits) <= end - start
    assert sum(len(e.text) for e in edits) <= len(inserted)
