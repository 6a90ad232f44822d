"""The change a document's ruff run hands to the engine: the didChange edits since the previous
run, composed into one change that makes the current text from the previous one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lsp_dbcode.server.lint import _Since
from lsp_dbcode.text.positions import LineIndex

one_edit = st.tuples(
    st.floats(min_value=0, max_value=1),
    st.integers(min_value=0, max_value=5),
    st.sampled_from(["", "x", "yz", "\n", "\r\n", "😀", "中文\n"]),
)


@given(
    text=st.text(max_size=40),
    notifications=st.lists(st.lists(one_edit, min_size=1, max_size=4), max_size=8),
)
def test_composed_change_makes_the_current_text(
    text: str, notifications: list[list[tuple[float, int, str]]]
) -> None:
    base = LineIndex(text)
    since = _Since(base)
    index = base
    for notification in notifications:
        edits = []
        for where, length, new_text in notification:  # one after the other, as in a didChange
            start = min(int(where * len(index)), len(index))
            end = min(len(index), start + length)
            edits.append((start, end, new_text))
            index = index.replace(start, end, new_text)
        assert since.add(edits, index)
        change = since.change()
        assert change.old is base
        assert change.apply() == index.text
        assert 0 <= change.start <= change.end <= len(base)


def test_edits_that_do_not_fit_are_refused() -> None:
    base = LineIndex("abc")
    since = _Since(base)
    assert not since.add([(2, 5, "")], LineIndex("ab"))  # past the end
    assert not since.add([(0, 1, "")], LineIndex("abc"))  # the lengths disagree
    assert since.add([(1, 2, "Z")], LineIndex("aZc"))
    assert since.change().apply() == "aZc"
