"""3-way merge of one file: rebasing a buffer's unsaved edits onto another agent's commit.

``merge3(base, ours, theirs)`` implements SPEC.md, Consistency rule 4. Each side's change is
diffed from base by characters (:func:`_side_edits`: :func:`diff_edits` without cleanup, a
shortest edit script where that reads better, and in save mode words rewritten into dissimilar
ones joined into one edit) and the two edit lists are combined:

- **Same point.** Insertions at one point are both kept, ``theirs`` first: ``theirs`` is the
  side committed first (in a buffer's rebase, the revision; the buffer's text comes after it).
  Identical insertions go in once. Two new lines appended at the end of a file that ends with
  a line break get a line break between them, so they stay two lines.
- **Touching.** Edits that only touch (one ends where the other starts) both apply.
- **Overlap.** Edits overlap when they change a common character of base, or when an
  insertion falls strictly inside the range the other side replaced or deleted (its context is
  gone). Overlapping edits that yield the same text apply once; overlapping pure deletions
  delete their union. Anything else is a *conflict*.
- **Placement.** A pure insertion or deletion that can slide along repeated text is placed
  where the result reads as code: whole lines at a line start first (two functions appended,
  two imports added: whole lines in order, never interleaved characters), else at word
  boundaries; the diff's own (rightmost) placement breaks ties. Before an overlap is called a
  conflict, such an edit is slid to an equivalent place where it no longer overlaps, if any.
- A conflict region (below) is merged once more on its own: diffs of the region alone can align
  better than diffs of the whole file, and what stays in conflict there is what is shown.

``blocks=True`` (save mode) writes a conflict git-style, widened to whole lines of base (and the
matching whole lines of ours and theirs; the widening swallows any other edit on those lines)::

    <<<<<<< mine
    ours' lines
    =======
    theirs' lines
    >>>>>>> theirs

The marker lines use the file's first line break. A side that ends the file without a final line
break gets one inside the block, so markers stay on their own lines; :class:`Conflict` keeps the
exact texts, so :func:`resolve` loses nothing.

``blocks=False`` (live mode: concurrent typing converges, and a buffer's own text is never moved
into a block by a neighbour's keystroke) resolves a conflict without markers, the way real-time
editors do: the union of what both sides deleted or replaced is removed, and every text either
side inserted there is kept, in base order, ``theirs`` first at one point.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from difflib import SequenceMatcher
from functools import lru_cache
from itertools import accumulate
from typing import Literal

from lsp_dbcode.text.diff import _coalesce, _keep_crlf_whole, diff_edits
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
    blocks: bool = True,
) -> MergeResult:
    """Merge the changes base->ours and base->theirs (see the module docstring). ``theirs`` is
    the side committed first. ``blocks=False``: resolve conflicts without markers (live mode)."""
    ours_label = " ".join(ours_label.split())  # a marker is one line
    theirs_label = " ".join(theirs_label.split())
    if ours == theirs or theirs == base:
        return MergeResult(ours, ())
    if ours == base:
        return MergeResult(theirs, ())
    return _merge(base, ours, theirs, ours_label, theirs_label, blocks=blocks)


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
    conflict. ``closed_end``: it inserts at ``end`` (so a region holding it must pass ``end``).
    ``rank``: order among insertions at one point (0: theirs, committed first; 1: ours)."""

    start: int
    end: int
    text: str
    kind: Literal["clean", "same", "conflict"]
    closed_end: bool
    rank: int = 0
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
    ours_label: str,
    theirs_label: str,
    *,
    blocks: bool = True,
    ours_edits: Sequence[Edit] | None = None,
    theirs_edits: Sequence[Edit] | None = None,
    eol: str | None = None,
    retry: bool = True,
) -> MergeResult:
    """Merge, given the two edit lists or diffing them (:func:`_side_edits`). ``retry``: merge
    each conflict region again on its own (its diffs, free of the rest of the file, may align
    better); ``eol``: the markers' line break (default: the file's first)."""
    eo = list(ours_edits) if ours_edits is not None else _side_edits(base, ours, blocks)
    et = list(theirs_edits) if theirs_edits is not None else _side_edits(base, theirs, blocks)
    _place(base, eo)
    _place(base, et)
    _slide_apart(base, eo, et)
    eo, et = _split_deletions(base, eo, et), _split_deletions(base, et, eo)
    items = _items(base, eo, et, blocks)
    side_o, side_t = _Side(ours, eo), _Side(theirs, et)
    regions: list[tuple[int, int]] = []
    if any(item.kind == "conflict" for item in items):
        regions = _Regions(base, items, (side_o, side_t)).build()

    events: list[tuple[int, int, _Item | None]] = [
        (item.start, item.end, item) for item in items if not item.absorbed
    ]
    events.extend((ls, le, None) for ls, le in regions)
    events.sort(key=lambda event: (event[0], event[1]))  # stable: items keep their rank order

    if eol is None:
        eol = _eol(base) if _LINE_BREAK.search(base) else _eol(ours + theirs)
    marker_o = "<" * MARKER_SIZE + (f" {ours_label}" if ours_label else "") + eol
    marker_mid = "=" * MARKER_SIZE + eol
    marker_t = ">" * MARKER_SIZE + (f" {theirs_label}" if theirs_label else "") + eol
    # New lines appended by both sides at the end of a file that ends with a line break.
    n = len(base)
    appending = n == 0 or base.endswith(("\n", "\r"))
    appended: str | None = None

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
            text = item.text
            if appending and item.start == n and text:
                if (
                    appended is not None
                    and not appended.endswith(("\n", "\r"))
                    and not text.startswith(("\n", "\r"))
                ):
                    text = eol + text
                appended = text
            parts.append(text)
            length += len(text)
            continue
        ours_r = ours[side_o.start_offset(start) : side_o.end_offset(end, n)]
        theirs_r = theirs[side_t.start_offset(start) : side_t.end_offset(end, n)]
        base_r = base[start:end]
        if ours_r == theirs_r or theirs_r == base_r:
            resolved = ours_r
        elif ours_r == base_r:
            resolved = theirs_r
        elif retry and len(base_r) < n:
            sub = _merge(base_r, ours_r, theirs_r, ours_label, theirs_label, eol=eol, retry=False)
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


def _split_deletions(base: str, edits: list[Edit], other: list[Edit]) -> list[Edit]:
    """``edits`` with each pure deletion inside one line cut where the other side inserts text
    without a line break strictly inside it (a word typed between two words the author deleted):
    the pieces only touch the insertion, so both apply, as SPEC rule 4 asks (no base character
    is changed by both sides). A deletion that spans lines (a function deleted while the other
    side adds to it) stays whole, and an insertion strictly inside it conflicts."""
    points = sorted(
        y.start for y in other if y.is_insertion and "\n" not in y.text and "\r" not in y.text
    )
    if not points:
        return edits
    out: list[Edit] = []
    for x in edits:
        lo = bisect_right(points, x.start)
        if x.text or lo == len(points) or points[lo] >= x.end:
            out.append(x)
            continue
        removed = base[x.start : x.end]
        if "\n" in removed or "\r" in removed:
            out.append(x)
            continue
        prev = x.start
        for p in points[lo : bisect_left(points, x.end)]:
            if p > prev:
                out.append(Edit(prev, p, ""))
                prev = p
        out.append(Edit(prev, x.end, ""))
    return out


def _overlap(x: Edit, y: Edit) -> bool:
    """Whether edits of the two sides overlap: a common character of base changed by both, or
    an insertion strictly inside the range the other replaced or deleted. Touching edits and
    insertions at one point do not overlap."""
    if x.is_insertion:
        return not y.is_insertion and y.start < x.start < y.end
    if y.is_insertion:
        return x.start < y.start < x.end
    return x.start < y.end and y.start < x.end


def _conflict_pairs(eo: list[Edit], et: list[Edit]) -> list[tuple[int, int]]:
    """Index pairs (ours, theirs) of edits that overlap and are not identical."""
    pairs: list[tuple[int, int]] = []
    first = 0
    for i, x in enumerate(eo):
        while first < len(et) and et[first].end < x.start:
            first += 1
        j = first
        while j < len(et) and et[j].start <= x.end:
            if et[j] != x and _overlap(x, et[j]):
                pairs.append((i, j))
            j += 1
    return pairs


def _items(base: str, eo: list[Edit], et: list[Edit], blocks: bool) -> list[_Item]:
    """Clean edits (identical pairs once), and overlapping groups as "same", "conflict" or,
    without blocks, their union (a clean item)."""
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
            rank = 1 if n < len(eo) else 0
            items.append(_Item(edit.start, edit.end, edit.text, "clean", edit.is_insertion, rank))
    for ours_group, theirs_group in groups.values():
        edits = [*ours_group, *theirs_group]
        start = min(e.start for e in edits)
        end = max(e.end for e in edits)
        closed_end = any(e.is_insertion and e.end == end for e in edits)
        span = base[start:end]
        ours_text = apply_edits(span, [e.shifted(-start) for e in ours_group])
        theirs_text = apply_edits(span, [e.shifted(-start) for e in theirs_group])
        if ours_text == theirs_text:
            items.append(_Item(start, end, ours_text, "same", closed_end))
        elif all(not e.text for e in edits):  # deletions only: both delete their union
            items.append(_Item(start, end, "", "same", closed_end))
        elif blocks:
            items.append(_Item(start, end, "", "conflict", closed_end))
        else:  # the union: what either side removed goes, what either inserted stays
            ranked = sorted(
                [(e.start, 0, e.text) for e in theirs_group]
                + [(e.start, 1, e.text) for e in ours_group]
            )
            union = "".join(text for _, _, text in ranked)
            items.append(_Item(start, end, union, "clean", closed_end))
    items.sort(key=lambda item: (item.start, item.end, item.rank))
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


# --- each side's edits, and where they are placed -----------------------------------------

# A run of changed lines is diffed by tokens when a x b tokens is at most this.
TOKEN_PAIRS_MAX = 250_000
# Tokens replaced by text at least this similar (difflib ratio) are diffed by characters.
SIMILAR_RATIO_MIN = 0.6
# Replacements longer than this (both sides, in characters) are never "similar".
SIMILAR_CHARS_MAX = 400
# Similarity verdicts remembered (pure; a token diff asks again about the same pairs).
SIMILAR_CACHE_MAX = 4096
_TOKEN = re.compile(r"\w+|[ \t]+|\r\n|[^\w \t]", re.UNICODE)


def _side_edits(base: str, text: str, words: bool = True) -> list[Edit]:
    """Fine edits turning base into text: the character diff (:func:`diff_edits` without
    cleanup; each run of changed lines diffed again by a shortest edit script when small, as
    the line diff's character step is greedy and reads "aaa" -> "KaaaK" as a replacement),
    where ``words`` with each replacement of words by different words made one edit.

    A character diff reads "(a + b)" -> "f()" as "f" inserted, "(" kept, "a + b" deleted, and
    "count" -> "total" as letters swapped around a kept "t": two sides rewriting one expression
    differently would then interleave instead of overlapping. So each run of changed lines is
    also diffed by tokens (words, runs of blanks, single other characters); where tokens are
    replaced by dissimilar ones, the character edits inside are joined into one. Nothing is
    widened beyond what the character diff changed: edits that do not overlap by characters
    still do not. Runs too big for a token diff keep the character edits.

    Live mode (``words=False``) keeps the character diff alone: where edits overlap it keeps
    whatever either side inserted, and a joined edit would insert the kept characters again.
    """
    edits = diff_edits(base, text, cleanup=False)
    if len(edits) > 1 or any(e.start < e.end and e.text for e in edits):  # maybe misread
        # The whole changed middle first (a misreading can span lines: "x\nx\n" ->
        # "xY\nx\n" read as a line inserted and one replaced; repeated lines read as moved),
        # then each run of lines.
        lo, hi = edits[0].start, edits[-1].end
        middle = apply_edits(base[lo:hi], [e.shifted(-lo) for e in edits])
        shortest = _shortest_edits(base[lo:hi], middle, lo)
        if shortest is not None and _cost(shortest) < _cost(edits):
            edits = shortest
    out: list[Edit] = []
    n = len(base)
    i = 0
    while i < len(edits):
        start = _line_start(base, edits[i].start)
        end = _line_end(base, edits[i].end, n)
        j = i + 1
        while j < len(edits) and edits[j].start <= end:
            end = max(end, _line_end(base, edits[j].end, n))
            j += 1
        group = edits[i:j]
        old = base[start:end]
        new = apply_edits(old, [e.shifted(-start) for e in group])
        if any(e.start < e.end and e.text for e in group):  # a replacement: maybe misread
            shortest = _shortest_edits(old, new, start)
            if shortest is not None and _cost(shortest) < _cost(group):
                group = shortest  # else the character diff's edits: as short, and contiguous
        if not words or len(group) < 2:  # one edit: nothing to join
            out.extend(group)
            i = j
            continue
        for s, e, rewritten in _rewritten_spans(old, new, start):
            inside = [x for x in group if s <= x.start and x.end <= e]
            # Joined only when the character edits there delete something (text only typed
            # around kept characters keeps them: rule 4 counts characters), and make exactly
            # the tokens' new text (the two diffs agree); a single edit stays as it is.
            if (
                len(inside) > 1
                and any(x.end > x.start for x in inside)
                and apply_edits(base[s:e], [x.shifted(-s) for x in inside]) == rewritten
            ):
                group = [x for x in group if x not in inside] + [Edit(s, e, rewritten)]
                group.sort(key=lambda x: x.start)
        out.extend(group)
        i = j
    return _coalesce(_keep_crlf_whole(base, _coalesce(out)))


# Shortest edit scripts (Myers) for runs of changed lines of at most this many characters
# (both sides), with at most this many inserted plus deleted characters.
SHORTEST_CHARS_MAX = 4000
SHORTEST_D_MAX = 128


def _cost(edits: list[Edit]) -> int:
    return sum(e.end - e.start + len(e.text) for e in edits)


def _shortest_edits(a: str, b: str, offset: int) -> list[Edit] | None:
    """A shortest edit script turning a into b (Myers' greedy algorithm, O((N+M)D)), as
    edits shifted by ``offset``; None when a and b are too long or too different."""
    n, m = len(a), len(b)
    if n + m > SHORTEST_CHARS_MAX:
        return None
    d_max = min(n + m, SHORTEST_D_MAX)
    v = [0] * (2 * d_max + 3)
    trace: list[list[int]] = []
    for d in range(d_max + 1):
        trace.append(v[:])
        for k in range(-d, d + 1, 2):
            if k == -d or (k != d and v[k - 1] < v[k + 1]):
                x = v[k + 1]
            else:
                x = v[k - 1] + 1
            y = x - k
            while x < n and y < m and a[x] == b[y]:
                x += 1
                y += 1
            v[k] = x
            if x >= n and y >= m:
                return _script_edits(a, b, trace, offset)
    return None


def _script_edits(a: str, b: str, trace: list[list[int]], offset: int) -> list[Edit]:
    """The edits of the path found by :func:`_shortest_edits` (moves joined into edits)."""
    x, y = len(a), len(b)
    moves: list[tuple[int, int, int, int]] = []  # (x0, y0, x1, y1) off the diagonal
    for d in range(len(trace) - 1, 0, -1):
        v = trace[d]
        k = x - y
        prev_k = k + 1 if k == -d or (k != d and v[k - 1] < v[k + 1]) else k - 1
        prev_x = v[prev_k]
        prev_y = prev_x - prev_k
        while x > prev_x and y > prev_y:
            x -= 1
            y -= 1
        moves.append((prev_x, prev_y, x, y))
        x, y = prev_x, prev_y
    edits: list[Edit] = []
    for x0, y0, x1, y1 in reversed(moves):
        last = edits[-1] if edits else None
        if last is not None and last.end == offset + x0:  # no diagonal between: one edit
            edits[-1] = Edit(last.start, offset + x1, last.text + b[y0:y1])
        else:
            edits.append(Edit(offset + x0, offset + x1, b[y0:y1]))
    return edits


def _line_start(text: str, p: int) -> int:
    return text.rfind("\n", 0, p) + 1 if p else 0


def _line_end(text: str, p: int, n: int) -> int:
    """The end (after its line break) of the line holding position p."""
    k = text.find("\n", p)
    return n if k < 0 else k + 1


def _rewritten_spans(a: str, b: str, offset: int) -> list[tuple[int, int, str]]:
    """Spans of ``a`` (shifted by ``offset``) whose tokens ``b`` replaces by dissimilar ones,
    with the new text."""
    ta = _TOKEN.findall(a)
    tb = _TOKEN.findall(b)
    if len(ta) * len(tb) > TOKEN_PAIRS_MAX:
        return []
    sa = list(accumulate(map(len, ta), initial=0))
    sb = list(accumulate(map(len, tb), initial=0))
    ops = _joined(SequenceMatcher(None, ta, tb, autojunk=False).get_opcodes(), ta, tb, sa, sb)
    return [
        (offset + sa[i1], offset + sa[i2], b[sb[j1] : sb[j2]])
        for tag, i1, i2, j1, j2 in ops
        if tag == "replace" and not _similar(a[sa[i1] : sa[i2]], b[sb[j1] : sb[j2]])
    ]


Opcode = tuple[str, int, int, int, int]
_OPENERS = ("(", "[", "{")


def _joined(
    ops: Sequence[Opcode], ta: list[str], tb: list[str], sa: list[int], sb: list[int]
) -> list[Opcode]:
    """Join two changes kept apart only by an opening bracket, when they make one rewrite of
    a call or an expression: an insertion and a deletion ("(a + b)" -> "f()" is not "f"
    inserted, "(" kept, "a + b" deleted), or tokens replaced by dissimilar ones next to a
    deletion or another such replacement ("min(m)" -> "f()"). Nothing else is joined: typing
    stays fine-grained, and edits the other side made next to these still touch them."""

    def rewrite(op: Opcode) -> bool:
        old = "".join(ta[op[1] : op[2]])
        new = "".join(tb[op[3] : op[4]])
        return op[0] == "replace" and not _similar(old, new)

    out: list[Opcode] = []
    for op in ops:
        out.append(op)
        while len(out) >= 3 and out[-2][0] == "equal" and out[-1][0] != "equal":
            left, mid, right = out[-3], out[-2], out[-1]
            if left[0] == "equal":
                break
            rewrites = rewrite(left) or rewrite(right)
            removes = all(op[0] == "delete" or rewrite(op) for op in (left, right))
            if {left[0], right[0]} != {"insert", "delete"} and not (rewrites and removes):
                break
            if mid[2] - mid[1] != 1 or ta[mid[1]] not in _OPENERS:
                break
            out[-3:] = [("replace", left[1], right[2], left[3], right[4])]
    return out


@lru_cache(maxsize=SIMILAR_CACHE_MAX)
def _similar(old: str, new: str) -> bool:
    """Texts one of which is the other with a few characters typed, deleted or changed (a typo
    fixed, words joined, a letter typed inside a word): diffed by characters. By the shortest
    edit script: kept characters, over both lengths, at least SIMILAR_RATIO_MIN."""
    if len(old) + len(new) > SIMILAR_CHARS_MAX:
        return False  # a long replacement is a rewrite (and the script would cost)
    script = _shortest_edits(old, new, 0)
    if script is None:
        return False
    total = len(old) + len(new)
    return total - _cost(script) >= SIMILAR_RATIO_MIN * total


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _badness(base: str, edit: Edit) -> int:
    """How badly a pure insertion or deletion is placed (0 best): 0 whole lines at a line start;
    else 1, plus one for each end that cuts through a word; 9 inside a "\r\n"."""
    start, end = edit.start, edit.end
    moved = edit.text if edit.is_insertion else base[start:end]
    n = len(base)
    for p in (start, end):
        if 0 < p < n and base[p - 1] == "\r" and base[p] == "\n":
            return 9
    if _is_line_start(base, start) and moved.endswith(("\n", "\r")):
        return 0
    left = start > 0 and _is_word(base[start - 1]) and _is_word(moved[0])
    right = end < n and _is_word(moved[-1]) and _is_word(base[end])
    return 1 + left + right


def _place(base: str, edits: list[Edit]) -> None:
    """Place each pure insertion or deletion where it reads best (:func:`_badness`), the diff's
    own, rightmost placement breaking ties; in place, each edit staying clear of its side's
    neighbours."""
    for i, edit in enumerate(edits):
        if edit.is_insertion != bool(edit.text):
            continue  # a replacement: it cannot slide
        lo = edits[i - 1].end + 1 if i else 0
        hi = edits[i + 1].start - 1 if i + 1 < len(edits) else len(base)
        candidates = _slides(base, edit, lo, hi)
        if candidates:
            edits[i] = min([edit, *candidates], key=lambda e: (_badness(base, e), -e.start))


# --- sliding edits apart ---------------------------------------------------------------------


def _slide_apart(base: str, eo: list[Edit], et: list[Edit]) -> None:
    """Move pure insertions/deletions along repeated text, to an equivalent place where they no
    longer overlap the other side's edits (in place; bounded)."""
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
    free = [c for c in _slides(base, edit, lo, hi) if not _overlaps(c, other, other_starts)]
    if not free:
        return False
    own[i] = min(free, key=lambda e: _badness(base, e))  # nearest first among equals
    return True


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


def _overlaps(edit: Edit, other: list[Edit], other_starts: list[int]) -> bool:
    k = bisect_right(other_starts, edit.end) - 1
    while k >= 0 and other[k].end >= edit.start:
        if other[k] != edit and _overlap(edit, other[k]):
            return True
        k -= 1
    return False
