"""3-way merge of one file: rebasing a user's unsaved edits onto another agent's commit.

``merge3(base, ours, theirs)`` diffs base->ours and base->theirs by characters
(:func:`diff_edits` without cleanup) and combines the two edit lists:

- edits of the two sides that neither overlap nor touch are both applied, even on one line;
- an edit made identically by both sides is applied once;
- everything else is a *conflict*: overlapping edits, two different insertions at one point,
  and — conservatively — edits that merely touch (one ends where the other starts, e.g. an
  insertion at the boundary of the other side's replaced range), because their order in the
  result would be a guess;
- before declaring a conflict, a pure insertion or deletion that can slide along repeated text
  (deleting one "a" of "aaa", inserting "\\nfoo" vs "foo\\n" after a line) is moved to an
  equivalent place where it no longer touches the other side, when one exists;
- a conflicting spot whose two sides yield the same text is clean;
- a conflict region (below) is merged once more on its own: diffs of the region alone can align
  better than diffs of the whole file, and what stays in conflict there is what is shown.

A conflict is widened to whole lines of base (and the matching whole lines of ours and theirs;
the widening swallows any other edit on those lines) and written git-style::

    <<<<<<< mine
    ours' lines
    =======
    theirs' lines
    >>>>>>> theirs

The marker lines use the file's first line break. A side that ends the file without a final line
break gets one inside the block, so markers stay on their own lines; :class:`Conflict` keeps the
exact texts, so :func:`resolve` loses nothing.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import accumulate
from typing import Literal

from lsp_dbcode.text.diff import diff_edits
from lsp_dbcode.text.edits import Edit, apply_edits

__all__ = ["Choice", "Conflict", "MergeResult", "find_conflicts", "merge3", "resolve"]

Choice = Literal["mine", "theirs", "both"]

MARKER_SIZE = 7
# At most this many conflict-avoiding slides per merge, each trying this many positions per side.
SLIDES_MAX = 64
SLIDE_STEPS_MAX = 256

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_MARKER_LINE = re.compile(
    r"(?:\A|(?<=[\r\n]))(<{7}|\|{7}|={7}|>{7})(?:[ \t][^\r\n]*)?(?:\r\n|\r|\n|\Z)"
)


@dataclass(frozen=True)
class Conflict:
    """One conflict block. ``start``/``end``: code-point offsets of the whole block, markers
    included, in the merged text. ``ours``/``theirs``/``base``: the full-line texts of the
    conflicting region on each side, without markers."""

    start: int
    end: int
    ours: str
    theirs: str
    base: str


@dataclass(frozen=True)
class MergeResult:
    text: str
    conflicts: tuple[Conflict, ...]

    @property
    def clean(self) -> bool:
        return not self.conflicts


def merge3(
    base: str,
    ours: str,
    theirs: str,
    *,
    ours_label: str = "mine",
    theirs_label: str = "theirs",
) -> MergeResult:
    """Merge the changes base->ours and base->theirs (see the module docstring)."""
    ours_label = " ".join(ours_label.split())  # a marker is one line
    theirs_label = " ".join(theirs_label.split())
    if ours == theirs or theirs == base:
        return MergeResult(ours, ())
    if ours == base:
        return MergeResult(theirs, ())
    return _merge(
        base,
        ours,
        theirs,
        diff_edits(base, ours, cleanup=False),
        diff_edits(base, theirs, cleanup=False),
        ours_label,
        theirs_label,
    )


def resolve(result_text: str, conflict: Conflict, choice: Choice) -> Edit:
    """The edit that replaces ``conflict``'s block in ``result_text`` by one side, or by ours
    followed by theirs ("both"; a line break is put between them if ours lacks a final one).

    Raises ValueError when the block is no longer at ``conflict.start``..``conflict.end``.
    """
    block = result_text[conflict.start : conflict.end]
    last_line = _LINE_BREAK.split(block.rstrip("\r\n"))[-1]
    if not block.startswith("<" * MARKER_SIZE) or not last_line.startswith(">" * MARKER_SIZE):
        raise ValueError(
            f"no conflict block at {conflict.start}..{conflict.end} any more; "
            "find the conflicts again (find_conflicts)"
        )
    if choice == "mine":
        text = conflict.ours
    elif choice == "theirs":
        text = conflict.theirs
    elif choice == "both":
        separator = ""
        if conflict.ours and conflict.theirs and not conflict.ours.endswith(("\n", "\r")):
            separator = _eol(result_text)
        text = conflict.ours + separator + conflict.theirs
    else:
        raise ValueError(f"unknown choice {choice!r}: expected 'mine', 'theirs' or 'both'")
    return Edit(conflict.start, conflict.end, text)


def find_conflicts(text: str) -> list[Conflict]:
    """Conflict blocks found by their marker lines (git style, with or without a diff3
    "|||||||" base section; ``base`` is "" without one). Incomplete blocks are ignored."""
    if "<" * MARKER_SIZE not in text:
        return []
    conflicts: list[Conflict] = []
    state = "outside"
    start = ours_start = ours_end = base_start = base_end = theirs_start = 0
    for match in _MARKER_LINE.finditer(text):
        kind = match.group(1)[0]
        if kind == "<":
            state = "ours"
            start, ours_start = match.start(), match.end()
        elif kind == "|" and state == "ours":
            state = "base"
            ours_end, base_start = match.start(), match.end()
        elif kind == "=" and state in ("ours", "base"):
            if state == "ours":
                ours_end = match.start()
                base_start = base_end = ours_end
            else:
                base_end = match.start()
            state = "theirs"
            theirs_start = match.end()
        elif kind == ">" and state == "theirs":
            state = "outside"
            conflicts.append(
                Conflict(
                    start=start,
                    end=match.end(),
                    ours=text[ours_start:ours_end],
                    theirs=text[theirs_start : match.start()],
                    base=text[base_start:base_end],
                )
            )
    return conflicts


# --- the merge -------------------------------------------------------------------------------


@dataclass
class _Item:
    """A unit of change on base: a clean edit, a spot both sides changed alike ("same"), or a
    conflict. ``closed_end``: it inserts at ``end`` (so a region holding it must pass ``end``)."""

    start: int
    end: int
    text: str
    kind: Literal["clean", "same", "conflict"]
    closed_end: bool
    absorbed: bool = field(default=False)


class _Side:
    """One side's text and edits, for mapping base offsets at edit boundaries to its offsets."""

    def __init__(self, text: str, edits: list[Edit]) -> None:
        self.text = text
        self.starts = [e.start for e in edits]
        self.shift = list(accumulate((len(e.text) - (e.end - e.start) for e in edits), initial=0))

    def start_offset(self, base_offset: int) -> int:
        """Where a region of base starting at ``base_offset`` (which no edit straddles) starts
        in this side; insertions at ``base_offset`` belong to the region."""
        return base_offset + self.shift[bisect_left(self.starts, base_offset)]

    def end_offset(self, base_offset: int, base_len: int) -> int:
        """Where a region of base ending at ``base_offset`` (which no edit straddles) ends in
        this side; insertions at ``base_offset`` come after the region, except at the end of
        base."""
        if base_offset == base_len:
            return len(self.text)
        return base_offset + self.shift[bisect_left(self.starts, base_offset)]


def _merge(
    base: str,
    ours: str,
    theirs: str,
    ours_edits: Sequence[Edit],
    theirs_edits: Sequence[Edit],
    ours_label: str,
    theirs_label: str,
    *,
    eol: str | None = None,
    retry: bool = True,
) -> MergeResult:
    """Merge given the two edit lists. ``retry``: merge each conflict region again on its own
    (its diffs, free of the rest of the file, may align better); ``eol``: the markers' line
    break (default: the file's first)."""
    eo = list(ours_edits)
    et = list(theirs_edits)
    _slide_apart(base, eo, et)
    items = _items(base, eo, et)
    side_o, side_t = _Side(ours, eo), _Side(theirs, et)
    regions: list[tuple[int, int]] = []
    if any(item.kind == "conflict" for item in items):
        regions = _Regions(base, items, (side_o, side_t)).build()

    events: list[tuple[int, int, _Item | None]] = [
        (item.start, item.end, item) for item in items if not item.absorbed
    ]
    events.extend((ls, le, None) for ls, le in regions)
    events.sort(key=lambda event: (event[0], event[1]))

    if eol is None:
        eol = _eol(base) if _LINE_BREAK.search(base) else _eol(ours + theirs)
    marker_o = "<" * MARKER_SIZE + (f" {ours_label}" if ours_label else "") + eol
    marker_mid = "=" * MARKER_SIZE + eol
    marker_t = ">" * MARKER_SIZE + (f" {theirs_label}" if theirs_label else "") + eol

    parts: list[str] = []
    length = 0
    pos = 0
    conflicts: list[Conflict] = []
    for start, end, item in events:
        piece = base[pos:start]
        parts.append(piece)
        length += len(piece)
        pos = end
        if item is not None:
            parts.append(item.text)
            length += len(item.text)
            continue
        ours_r = ours[side_o.start_offset(start) : side_o.end_offset(end, len(base))]
        theirs_r = theirs[side_t.start_offset(start) : side_t.end_offset(end, len(base))]
        base_r = base[start:end]
        if ours_r == theirs_r or theirs_r == base_r:
            resolved = ours_r
        elif ours_r == base_r:
            resolved = theirs_r
        elif retry and len(base_r) < len(base):
            sub = _merge(
                base_r,
                ours_r,
                theirs_r,
                diff_edits(base_r, ours_r, cleanup=False),
                diff_edits(base_r, theirs_r, cleanup=False),
                ours_label,
                theirs_label,
                eol=eol,
                retry=False,
            )
            conflicts.extend(
                replace(c, start=c.start + length, end=c.end + length) for c in sub.conflicts
            )
            resolved = sub.text
        else:
            block = "".join(
                (
                    marker_o,
                    _line_ended(ours_r, eol),
                    marker_mid,
                    _line_ended(theirs_r, eol),
                    marker_t,
                )
            )
            conflicts.append(Conflict(length, length + len(block), ours_r, theirs_r, base_r))
            parts.append(block)
            length += len(block)
            continue
        parts.append(resolved)
        length += len(resolved)
    parts.append(base[pos:])
    return MergeResult("".join(parts), tuple(conflicts))


def _line_ended(text: str, eol: str) -> str:
    return text if not text or text.endswith(("\n", "\r")) else text + eol


def _eol(text: str) -> str:
    match = _LINE_BREAK.search(text)
    return match.group() if match else "\n"


def _conflict_pairs(eo: list[Edit], et: list[Edit]) -> list[tuple[int, int]]:
    """Index pairs (ours, theirs) of edits that overlap or touch and are not identical."""
    pairs: list[tuple[int, int]] = []
    first = 0
    for i, x in enumerate(eo):
        while first < len(et) and et[first].end < x.start:
            first += 1
        j = first
        while j < len(et) and et[j].start <= x.end:
            if et[j] != x:
                pairs.append((i, j))
            j += 1
    return pairs


def _items(base: str, eo: list[Edit], et: list[Edit]) -> list[_Item]:
    """Clean edits (identical pairs once), and conflicting groups as "same" or "conflict"."""
    pairs = _conflict_pairs(eo, et)
    parent = list(range(len(eo) + len(et)))

    def root(n: int) -> int:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for i, j in pairs:
        parent[root(len(eo) + j)] = root(i)
    in_conflict = {i for i, _ in pairs} | {len(eo) + j for _, j in pairs}

    items: list[_Item] = []
    seen: set[Edit] = set()
    groups: dict[int, tuple[list[Edit], list[Edit]]] = {}
    for n, edit in enumerate([*eo, *et]):
        if n in in_conflict:
            group = groups.setdefault(root(n), ([], []))
            group[0 if n < len(eo) else 1].append(edit)
        elif edit not in seen:
            seen.add(edit)
            items.append(_Item(edit.start, edit.end, edit.text, "clean", edit.is_insertion))
    for ours_group, theirs_group in groups.values():
        start = min(e.start for e in [*ours_group, *theirs_group])
        end = max(e.end for e in [*ours_group, *theirs_group])
        closed_end = any(e.is_insertion and e.end == end for e in [*ours_group, *theirs_group])
        span = base[start:end]
        ours_text = apply_edits(span, [e.shifted(-start) for e in ours_group])
        theirs_text = apply_edits(span, [e.shifted(-start) for e in theirs_group])
        if ours_text == theirs_text:
            items.append(_Item(start, end, ours_text, "same", closed_end))
        else:
            items.append(_Item(start, end, "", "conflict", closed_end))
    items.sort(key=lambda item: (item.start, item.end))
    return items


class _Regions:
    """Builds the whole-line conflict regions [ls, le) of base (see :meth:`build`)."""

    def __init__(self, base: str, items: list[_Item], sides: tuple[_Side, _Side]) -> None:
        self.n = len(base)
        self.line_starts = [0, *(m.end() for m in _LINE_BREAK.finditer(base))]
        self.items = items
        self.item_starts = [item.start for item in items]
        self.sides = sides

    def build(self) -> list[tuple[int, int]]:
        """One region around each conflict item, merged where they overlap, each absorbing
        every item it holds or touches from inside, and whole lines in ours and theirs too
        (or ending at the end of the file)."""
        regions: list[tuple[int, int]] = []
        for item in self.items:
            if item.kind != "conflict" or item.absorbed:
                continue
            ls = self._line_start_at(item.start)
            le = self._region_end(item.end, ls, item.closed_end)
            while True:
                while regions and ls < regions[-1][1]:
                    prev_ls, prev_le = regions.pop()
                    ls, le = min(ls, prev_ls), max(le, prev_le)
                ls, le = self._expand(ls, le)
                if not regions or ls >= regions[-1][1]:
                    break
            regions.append((ls, le))
        return regions

    def _line_start_at(self, p: int) -> int:
        return self.line_starts[bisect_right(self.line_starts, p) - 1]

    def _next_line_start(self, p: int) -> int:
        k = bisect_right(self.line_starts, p)
        return self.line_starts[k] if k < len(self.line_starts) else self.n

    def _region_end(self, p: int, ls: int, beyond: bool) -> int:
        """The region end for content ending at ``p`` (``beyond``: something inserts at p)."""
        k = bisect_left(self.line_starts, p)
        at_line_start = p == self.n or (k < len(self.line_starts) and self.line_starts[k] == p)
        if at_line_start and p > ls and not (beyond and p < self.n):
            return p
        return self._next_line_start(p)

    def _expand(self, ls: int, le: int) -> tuple[int, int]:
        n = self.n
        while True:
            ls, le = self._absorb(ls, le)
            # Now no edit straddles ls or le: map them to each side, where the region must be
            # whole lines too.
            new_ls, new_le = ls, le
            for side in self.sides:
                if not _is_line_start(side.text, side.start_offset(ls)):
                    new_ls = min(new_ls, self._line_start_at(ls - 1))
                o_end = side.end_offset(le, n)
                if o_end < len(side.text) and not _is_line_start(side.text, o_end):
                    new_le = max(new_le, self._next_line_start(le))
            if (new_ls, new_le) == (ls, le):
                return ls, le
            ls, le = new_ls, new_le

    def _absorb(self, ls: int, le: int) -> tuple[int, int]:
        """Grow [ls, le) over every item it holds or touches from inside, line-aligned."""
        n = self.n
        while True:
            new_ls, new_le = ls, le
            # Items do not overlap one another: sorted by start, their ends are sorted too.
            k = bisect_right(self.item_starts, le) - 1
            while k >= 0 and self.items[k].end >= ls:
                item = self.items[k]
                k -= 1
                before = item.end == ls and not item.closed_end
                after = item.start == le and le < n
                if before or after:
                    continue
                item.absorbed = True
                new_ls = min(new_ls, item.start)
                if item.end > new_le or (item.closed_end and item.end == new_le):
                    new_le = self._region_end(item.end, new_ls, item.closed_end)
            if new_ls < ls:
                new_ls = self._line_start_at(new_ls)
            if (new_ls, new_le) == (ls, le):
                return ls, le
            ls, le = new_ls, new_le


def _is_line_start(text: str, offset: int) -> bool:
    if offset == 0:
        return True
    before = text[offset - 1]
    return before == "\n" or (before == "\r" and (offset == len(text) or text[offset] != "\n"))


# --- sliding edits apart ---------------------------------------------------------------------


def _slide_apart(base: str, eo: list[Edit], et: list[Edit]) -> None:
    """Move pure insertions/deletions along repeated text, to an equivalent place where they no
    longer overlap or touch the other side's edits (in place; bounded)."""
    for _ in range(SLIDES_MAX):
        pairs = _conflict_pairs(eo, et)
        if not pairs:
            return
        for i, j in pairs:
            if _slide(base, eo, i, et) or _slide(base, et, j, eo):
                break
        else:
            return


def _slide(base: str, own: list[Edit], i: int, other: list[Edit]) -> bool:
    edit = own[i]
    lo = own[i - 1].end + 1 if i else 0
    hi = own[i + 1].start - 1 if i + 1 < len(own) else len(base)
    other_starts = [e.start for e in other]
    for candidate in _slides(base, edit, lo, hi):
        if not _touches(candidate, other, other_starts):
            own[i] = candidate
            return True
    return False


def _slides(base: str, edit: Edit, lo: int, hi: int) -> list[Edit]:
    """Equivalent placements of a pure insertion or deletion within [lo, hi], nearest first."""
    left: list[Edit] = []
    right: list[Edit] = []
    if edit.is_insertion and edit.text:
        p, t = edit.start, edit.text
        while len(left) < SLIDE_STEPS_MAX and p - 1 >= lo and base[p - 1] == t[-1]:
            p, t = p - 1, base[p - 1] + t[:-1]
            left.append(Edit(p, p, t))
        p, t = edit.start, edit.text
        while len(right) < SLIDE_STEPS_MAX and p + 1 <= hi and base[p] == t[0]:
            p, t = p + 1, t[1:] + base[p]
            right.append(Edit(p, p, t))
    elif not edit.text:
        s, e = edit.start, edit.end
        while len(left) < SLIDE_STEPS_MAX and s - 1 >= lo and base[s - 1] == base[e - 1]:
            s, e = s - 1, e - 1
            left.append(Edit(s, e, ""))
        s, e = edit.start, edit.end
        while len(right) < SLIDE_STEPS_MAX and e + 1 <= hi and base[s] == base[e]:
            s, e = s + 1, e + 1
            right.append(Edit(s, e, ""))
    nearest: list[Edit] = []
    for k in range(max(len(left), len(right))):
        nearest.extend(side[k] for side in (left, right) if k < len(side))
    return nearest


def _touches(edit: Edit, other: list[Edit], other_starts: list[int]) -> bool:
    k = bisect_right(other_starts, edit.end) - 1
    while k >= 0 and other[k].end >= edit.start:
        if other[k] != edit:
            return True
        k -= 1
    return False
