"""Anchors that follow the code: a range of one revision mapped onto the next one.

A review thread is anchored to ``[start, end)``, code-point offsets into one revision of a file.
When the file changes, ``map_range`` moves the range through the edits that turn that revision
into the next (``diff_edits(old, new, cleanup=False)``), so that it keeps covering the same text:

- an edit wholly before the range (also an insertion exactly at its start: lines inserted above
  a line-based range) shifts it;
- an edit wholly after it (also an insertion exactly at its end) leaves it alone;
- an edit inside it, or overlapping one of its ends, stretches or shrinks it: the range takes
  the edit's replacement text in;
- an edit that removes every character of the range makes it *outdated*: it becomes the empty
  range at the start of the edit's replacement, the place where the text was. An empty range
  (a point) is outdated when an edit removes text on both sides of it.

Given the old text, "every character" is judged as a reader would: a character diff of a
replaced block often keeps stray letters or the indentation that the new text happens to share
("def b():" replaced by "class C:" keeps ":" and the indentation). Such leftovers do not keep
a thread alive. It lives on while an unchanged run with at least ``SURVIVOR_RUN_CHARS_MIN``
non-blank characters survives, or while at least half of its non-blank characters do (a short
line such as "x = 1" edited into "y = 1").

Pure functions on ``str`` offsets; property-tested in tests/text/test_anchors.py.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from lsp_dbcode.text.edits import Edit
from lsp_dbcode.text.positions import _line_starts

__all__ = [
    "SURVIVOR_RUN_CHARS_MIN",
    "Mapped",
    "line_span",
    "line_starts",
    "map_range",
    "span_lines",
]

# An unchanged run with this many non-blank characters keeps a range alive.
SURVIVOR_RUN_CHARS_MIN = 3


@dataclass(frozen=True, slots=True)
class Mapped:
    """A range after an edit list: ``[start, end)`` in the new text; ``outdated`` when the
    edits removed all the text it covered."""

    start: int
    end: int
    outdated: bool


def map_range(edits: Sequence[Edit], start: int, end: int, old: str | None = None) -> Mapped:
    """Move ``[start, end)`` of the old text through ``edits`` (sorted, non-overlapping, on the
    old text) onto the new text. See the module docstring for the rules; without ``old`` any
    surviving character keeps the range alive."""
    if not 0 <= start <= end:
        raise ValueError(f"invalid range [{start}, {end})")
    delta = 0  # length change of the edits handled so far
    new_start: int | None = None
    new_end: int | None = None
    alive = False  # a meaningful run of the range's characters survives
    kept = 0  # non-blank characters of the range that survive
    pos = start  # start of the range's next run of unchanged characters
    point_removed = False
    delta_at_start: int | None = None  # length change of the edits wholly before the range
    for edit in edits:
        a, b, n = edit.start, edit.end, len(edit.text)
        if start == end:
            if b <= start:  # before the point (an insertion at it too: the point moves right)
                delta += n - (b - a)
                continue
            if a < start < b:
                point_removed = True
                new_start = a + delta
            break
        if a >= end:  # after the range (an insertion at its end too)
            break
        if b <= start:  # before the range (an insertion at its start too)
            delta += n - (b - a)
            continue
        # Overlapping the range, or an insertion strictly inside it.
        if delta_at_start is None:
            delta_at_start = delta
        if not alive and a > pos:
            alive, kept = _survives(old, pos, a, kept)
        pos = max(pos, b)
        if new_start is None and a <= start:
            new_start = a + delta
        if b >= end:
            new_end = a + delta + n
        delta += n - (b - a)
    if start == end:
        point = new_start if new_start is not None else start + delta
        return Mapped(point, point, point_removed)
    if new_start is None:
        new_start = start + (delta if delta_at_start is None else delta_at_start)
    if not alive and pos < end:
        alive, kept = _survives(old, pos, end, kept)
    if not alive and old is not None and kept:
        alive = 2 * kept >= _non_blank(old[start:end])
    if not alive:
        return Mapped(new_start, new_start, True)
    if new_end is None:
        new_end = end + delta
    return Mapped(new_start, max(new_start, new_end), False)


def _non_blank(text: str) -> int:
    return len(text) - sum(text.count(c) for c in " \t\r\n")


def _survives(old: str | None, start: int, end: int, kept: int) -> tuple[bool, int]:
    """Does the unchanged run ``old[start:end]`` keep its range alive? Also the count of
    surviving non-blank characters so far."""
    if old is None:
        return True, kept
    n = _non_blank(old[start:end])
    return n >= SURVIVOR_RUN_CHARS_MIN, kept + n


def line_span(text: str, first: int, last: int) -> tuple[int, int]:
    """Offsets ``[start, end)`` of lines ``first..last`` (1-based, inclusive) of ``text``,
    the last line's line break included. Raises ValueError for lines the text does not have."""
    starts = _line_starts(text)
    lines = len(starts)
    if text.endswith(("\n", "\r")) and lines > 1:
        lines -= 1  # "a\n" has one line as people count them
    if not 1 <= first <= last:
        raise ValueError(f"invalid line range {first}-{last}: lines are 1-based, first <= last")
    if last > lines:
        raise ValueError(f"line {last} is beyond the end of the file ({lines} lines)")
    end = starts[last] if last < len(starts) else len(text)
    return starts[first - 1], end


def span_lines(text: str, start: int, end: int, starts: list[int] | None = None) -> tuple[int, int]:
    """Lines (1-based, inclusive) that ``[start, end)`` of ``text`` covers; a range that ends
    at the start of a line does not cover that line. ``starts``: ``line_starts(text)``, when
    the caller has it (many ranges of one text)."""
    if starts is None:
        starts = _line_starts(text)
    first = bisect_right(starts, min(start, len(text)))
    last_offset = max(start, end - 1) if end > start else start
    last = bisect_right(starts, min(last_offset, len(text)))
    return first, max(first, last)


def line_starts(text: str) -> list[int]:
    """Offsets where the lines of ``text`` start (for ``span_lines``)."""
    return _line_starts(text)
