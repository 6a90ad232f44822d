"""Minimal-ish edits that turn one text into another.

Pipeline (each stage bounded, so a 10 MiB text degrades to coarser hunks, never to quadratic
time):

1. strip the common prefix and suffix (galloping slice compares, in C);
2. diff the rest by lines: patience anchors (non-blank lines unique on both sides), then
   ``difflib.SequenceMatcher`` on the gaps between anchors when a gap is small; a range small
   in characters (``CHAR_PAIRS_MAX``) is left whole for step 3, since lines split or joined by
   the change mislead a line diff;
3. refine each replaced hunk by characters when it is small (line by line when both sides have
   the same number of lines), so that changing a word yields an edit of about that word;
4. never split a "\\r\\n": an edit boundary between "\\r" and "\\n" has no LSP position.

``cleanup`` (the default) then joins edits separated by short unchanged runs, which reads better
in an editor; the 3-way merge turns it off to keep the finest granularity.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import Counter
from difflib import SequenceMatcher
from itertools import accumulate, pairwise

from lsp_dbcode.text.edits import Edit

__all__ = ["diff_edits"]

# SequenceMatcher on a gap of a x b lines only when a * b is at most this.
LINE_PAIRS_MAX = 250_000
# Character-level SequenceMatcher on a hunk of a x b characters only when a * b is at most this.
CHAR_PAIRS_MAX = 5000
# Hunks with more lines than this are never refined line by line.
REFINE_LINES_MAX = 200
# First slice length of the galloping prefix/suffix compare.
_GALLOP_START = 64

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def diff_edits(old: str, new: str, *, cleanup: bool = True) -> list[Edit]:
    """Sorted, non-touching edits on ``old`` such that ``apply_edits(old, result) == new``."""
    if old == new:
        return []
    prefix = _common_prefix_len(old, new)
    suffix = _common_suffix_len(old, new, min(len(old), len(new)) - prefix)
    a = old[prefix : len(old) - suffix]
    b = new[prefix : len(new) - suffix]
    if not a or not b:
        edits = [Edit(prefix, prefix + len(a), b)]
    else:
        edits = _diff_lines(a, b, prefix)
    # Coalesce first: then widening around a CRLF can make edits touch, never overlap.
    edits = _coalesce(_keep_crlf_whole(old, _coalesce(edits)))
    if cleanup:
        edits = _cleanup(old, edits)
    return edits


def common_span(old: str, new: str) -> tuple[int, int, str]:
    """One change ``(start, end, new_text)`` on ``old`` that gives ``new``: the span between
    their common prefix and suffix (``(n, n, "")`` when they are equal)."""
    prefix = _common_prefix_len(old, new)
    suffix = _common_suffix_len(old, new, min(len(old), len(new)) - prefix)
    return prefix, len(old) - suffix, new[prefix : len(new) - suffix]


def _common_prefix_len(a: str, b: str) -> int:
    limit = min(len(a), len(b))
    lo = 0
    step = _GALLOP_START
    while lo < limit:
        hi = min(limit, lo + step)
        if a[lo:hi] == b[lo:hi]:
            lo = hi
            step *= 2
            continue
        # a[lo:hi] != b[lo:hi]: the first difference is in there.
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if a[lo:mid] == b[lo:mid]:
                lo = mid
            else:
                hi = mid
        return lo
    return limit


def _common_suffix_len(a: str, b: str, limit: int) -> int:
    la, lb = len(a), len(b)
    lo = 0
    step = _GALLOP_START
    while lo < limit:
        hi = min(limit, lo + step)
        if a[la - hi : la - lo] == b[lb - hi : lb - lo]:
            lo = hi
            step *= 2
            continue
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if a[la - mid : la - lo] == b[lb - mid : lb - lo]:
                lo = mid
            else:
                hi = mid
        return lo
    return limit


def _diff_lines(a: str, b: str, offset: int) -> list[Edit]:
    lines_a = _LINE.findall(a)
    lines_b = _LINE.findall(b)
    starts_a = list(accumulate(map(len, lines_a), initial=0))
    starts_b = list(accumulate(map(len, lines_b), initial=0))
    edits: list[Edit] = []
    i0 = j0 = 0
    matched = _matched_lines(lines_a, lines_b, starts_a, starts_b)
    for i, j in [*matched, (len(lines_a), len(lines_b))]:
        if i > i0 or j > j0:
            old_chunk = a[starts_a[i0] : starts_a[i]]
            new_chunk = b[starts_b[j0] : starts_b[j]]
            edits.extend(
                _refine(old_chunk, new_chunk, offset + starts_a[i0], by_lines=i - i0 == j - j0)
            )
        i0, j0 = i + 1, j + 1
    return edits


def _matched_lines(
    la: list[str], lb: list[str], starts_a: list[int], starts_b: list[int]
) -> list[tuple[int, int]]:
    """Pairs (i, j) of equal lines la[i] == lb[j], increasing in both i and j.

    ``starts_a``/``starts_b``: character offset of each line (and of the end).
    """
    pairs: list[tuple[int, int]] = []
    stack = [(0, len(la), 0, len(lb))]
    while stack:
        alo, ahi, blo, bhi = stack.pop()
        while alo < ahi and blo < bhi and la[alo] == lb[blo]:
            pairs.append((alo, blo))
            alo += 1
            blo += 1
        while alo < ahi and blo < bhi and la[ahi - 1] == lb[bhi - 1]:
            ahi -= 1
            bhi -= 1
            pairs.append((ahi, bhi))
        if alo == ahi or blo == bhi:
            continue
        if (starts_a[ahi] - starts_a[alo]) * (starts_b[bhi] - starts_b[blo]) <= CHAR_PAIRS_MAX:
            # Small enough to align by characters (in _refine), which sees more than lines do:
            # a line split or joined by the change cannot mislead it.
            continue
        anchors = _patience_anchors(la, alo, ahi, lb, blo, bhi)
        if anchors:
            prev_a, prev_b = alo, blo
            for i, j in anchors:
                pairs.append((i, j))
                if i > prev_a or j > prev_b:
                    stack.append((prev_a, i, prev_b, j))
                prev_a, prev_b = i + 1, j + 1
            stack.append((prev_a, ahi, prev_b, bhi))
        elif (ahi - alo) * (bhi - blo) <= LINE_PAIRS_MAX:
            matcher = SequenceMatcher(None, la[alo:ahi], lb[blo:bhi], autojunk=False)
            for i, j, size in matcher.get_matching_blocks():
                pairs.extend((alo + i + k, blo + j + k) for k in range(size))
        # else: too big and nothing unique in common: one coarse hunk.
    pairs.sort()
    return pairs


def _patience_anchors(
    la: list[str], alo: int, ahi: int, lb: list[str], blo: int, bhi: int
) -> list[tuple[int, int]]:
    """Longest increasing run of lines that occur exactly once in each range.

    Blank lines are no anchors: they say little about where a hunk belongs.
    """
    slice_a = la[alo:ahi]
    slice_b = lb[blo:bhi]
    count_a = Counter(slice_a)
    count_b = Counter(slice_b)
    where_b = {line: j for j, line in enumerate(slice_b, blo) if count_b[line] == 1}
    candidates = [
        (i, where_b[line])
        for i, line in enumerate(slice_a, alo)
        if count_a[line] == 1 and line in where_b and not line.isspace()
    ]
    if not candidates:
        return []
    if all(p[1] < q[1] for p, q in pairwise(candidates)):
        return candidates  # the usual case: no line moved
    # Longest increasing subsequence on j (patience sorting), O(k log k).
    tails: list[int] = []  # tails[k]: smallest j ending an increasing run of length k + 1
    tail_at: list[int] = []  # index into candidates of that run's last element
    back: list[int] = [-1] * len(candidates)
    for n, (_, j) in enumerate(candidates):
        k = bisect_left(tails, j)
        if k == len(tails):
            tails.append(j)
            tail_at.append(n)
        else:
            tails[k] = j
            tail_at[k] = n
        back[n] = tail_at[k - 1] if k else -1
    run: list[tuple[int, int]] = []
    n = tail_at[-1]
    while n >= 0:
        run.append(candidates[n])
        n = back[n]
    run.reverse()
    return run


def _refine(a: str, b: str, offset: int, *, by_lines: bool) -> list[Edit]:
    """Edits turning hunk ``a`` (at ``offset`` in old) into ``b``, as fine as affordable."""
    if not a or not b:
        return [Edit(offset, offset + len(a), b)]
    prefix = _common_prefix_len(a, b)
    suffix = _common_suffix_len(a, b, min(len(a), len(b)) - prefix)
    a2 = a[prefix : len(a) - suffix]
    b2 = b[prefix : len(b) - suffix]
    offset += prefix
    if not a2 or not b2:
        return [Edit(offset, offset + len(a2), b2)]
    if len(a2) * len(b2) <= CHAR_PAIRS_MAX:
        matcher = SequenceMatcher(None, a2, b2, autojunk=False)
        return [
            Edit(offset + i1, offset + i2, b2[j1:j2])
            for tag, i1, i2, j1, j2 in matcher.get_opcodes()
            if tag != "equal"
        ]
    if by_lines:
        lines_a = _LINE.findall(a)
        lines_b = _LINE.findall(b)
        if 1 < len(lines_a) == len(lines_b) <= REFINE_LINES_MAX:
            edits: list[Edit] = []
            pos = offset - prefix
            for line_a, line_b in zip(lines_a, lines_b, strict=True):
                if line_a != line_b:
                    edits.extend(_refine(line_a, line_b, pos, by_lines=False))
                pos += len(line_a)
            return edits
    return [Edit(offset, offset + len(a2), b2)]


def _coalesce(edits: list[Edit]) -> list[Edit]:
    """Merge touching neighbours of a sorted, non-overlapping edit list."""
    out: list[Edit] = []
    for edit in edits:
        if out and edit.start <= out[-1].end:
            last = out[-1]
            assert edit.start == last.end, f"overlapping diff edits {last} and {edit}"
            out[-1] = Edit(last.start, edit.end, last.text + edit.text)
        else:
            out.append(edit)
    return out


def _keep_crlf_whole(old: str, edits: list[Edit]) -> list[Edit]:
    """Widen edit ends that fall between "\\r" and "\\n" of ``old`` to take the whole pair."""
    out: list[Edit] = []
    for edit in edits:
        start, end, text = edit.start, edit.end, edit.text
        if 0 < start < len(old) and old[start - 1] == "\r" and old[start] == "\n":
            start -= 1
            text = "\r" + text
        if 0 < end < len(old) and old[end - 1] == "\r" and old[end] == "\n":
            end += 1
            text = text + "\n"
        out.append(Edit(start, end, text))
    return out


def _cleanup(old: str, edits: list[Edit]) -> list[Edit]:
    """Join two edits when the unchanged run between them is no longer than either edit and
    holds no line break (like diff-match-patch's semantic cleanup, within a line)."""
    out: list[Edit] = []
    for edit in edits:
        out.append(edit)
        while len(out) >= 2:
            first, second = out[-2], out[-1]
            gap = old[first.end : second.start]
            if (
                len(gap) > max(first.end - first.start, len(first.text))
                or len(gap) > max(second.end - second.start, len(second.text))
                or "\n" in gap
                or "\r" in gap
            ):
                break
            out[-2:] = [Edit(first.start, second.end, first.text + gap + second.text)]
    return out
