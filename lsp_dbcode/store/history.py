"""History as deltas, and blame: pure functions (no SQL; the store feeds them rows).

Storage. A file's current revision is always a full text. An older revision ``r`` is stored
either full or as a *reverse delta*: the edits that turn the text of revision ``r + 1`` of the
same path into the text of ``r`` (``encode_delta`` / ``apply_delta``). Reading ``r`` starts at
the first full text at or after ``r`` and applies the deltas back down to ``r``. Every
``SNAPSHOT_EVERY_REVISIONS``-th revision (``r % K == 0``) stays full, so a read applies at most
K - 1 deltas, whatever the length of the history. The choice of K is measured in
docs/architecture.md (History).

Blame walks a file's lineage from a revision back to its creation, newest first, following
renames: each older text is one reverse delta away from the newer one, so the walk costs about
the size of the changes, not the size of the file times the number of revisions. Between two
neighbouring texts the lines are matched by ``_line_matches``: common prefix and suffix found
at C speed (slice compares), a line diff only on what is between. The walk stops as soon as
every line is attributed.
"""

from __future__ import annotations

import itertools
import json
import re
import zlib
from collections.abc import Hashable, Iterable
from difflib import SequenceMatcher
from typing import Any, Generic, TypeVar

from ..text.diff import diff_edits
from ..text.edits import Edit, apply_edits

# A full text every K revisions: reads apply at most K - 1 deltas. Measured (docs/architecture.md,
# History): K = 32 keeps a read of any revision of a 206 KB file within 2x of a plain read and
# 1,000 one-line edits under 4 KB per revision.
SNAPSHOT_EVERY_REVISIONS = 32
# zlib level of packed full texts (6: zlib's default; 9 measured barely smaller, slower).
PACK_LEVEL = 6
# Rows converted to deltas per transaction by the compaction: short transactions, progress.
COMPACT_BATCH_ROWS_MAX = 64

_LINE = re.compile(r"[^\n]*\n|[^\n]+")

K = TypeVar("K", bound=Hashable)


def encode_delta(newer: str, older: str) -> str:
    """The reverse delta that turns ``newer`` (revision r + 1) into ``older`` (revision r).

    JSON: ``[[start, end, text], ...]``, code-point offsets into ``newer``, sorted, disjoint.
    """
    edits = diff_edits(newer, older, cleanup=True)
    return json.dumps([[e.start, e.end, e.text] for e in edits], ensure_ascii=False)


def apply_delta(newer: str, delta: str) -> str:
    """The older text: ``delta`` (from ``encode_delta``) applied to ``newer``."""
    return apply_edits(newer, [Edit(s, e, t) for s, e, t in json.loads(delta)])


def rebuild(full: str, deltas: Iterable[str]) -> str:
    """The text ``deltas`` lead to from ``full``, newest delta first (``full`` is revision
    r + n, the deltas those of r + n - 1 down to r).

    The deltas are applied to a piece table (slices of ``full`` and inserted strings), not to
    the text: each costs about its own size, and the text is joined once at the end. A read of
    K deltas back then costs one join of the text, not K.
    """
    pieces: list[tuple[str, int, int]] = [(full, 0, len(full))]
    length = len(full)
    for delta in deltas:
        pieces, length = _splice(pieces, length, json.loads(delta))
    if len(pieces) == 1:
        src, a, b = pieces[0]
        return src if (a, b) == (0, len(src)) else src[a:b]
    return "".join([src[a:b] for src, a, b in pieces])


def _splice(
    pieces: list[tuple[str, int, int]], length: int, edits: list[list[Any]]
) -> tuple[list[tuple[str, int, int]], int]:
    """The piece table with ``edits`` ([start, end, text], sorted, on the text it holds)."""
    out: list[tuple[str, int, int]] = []
    i = off = pos = 0  # piece i, offset inside it; pos: offset in the text

    def move(n: int, keep: bool) -> None:
        nonlocal i, off
        while n > 0:
            src, a, b = pieces[i]
            take = min(b - a - off, n)
            if keep:
                out.append((src, a + off, a + off + take))
            n -= take
            off += take
            if a + off == b:
                i, off = i + 1, 0

    new_length = length
    for start, end, text in edits:
        if not pos <= start <= end <= length:
            raise ValueError(f"delta edit [{start}, {end}) out of order or past {length}")
        move(start - pos, True)
        move(end - start, False)
        if text:
            out.append((text, 0, len(text)))
        new_length += len(text) - (end - start)
        pos = end
    move(length - pos, True)
    return out, new_length


def pack(text: str) -> bytes:
    """An old full text as stored in ``packed``: zlib of its UTF-8."""
    return zlib.compress(text.encode("utf-8"), PACK_LEVEL)


def unpack(stored: str | bytes) -> str:
    """A full text as read: ``content`` (str) or ``packed`` (bytes)."""
    if isinstance(stored, str):
        return stored
    return zlib.decompress(stored).decode("utf-8")


def line_count(text: str) -> int:
    """Lines as git counts them: a last line without a newline is a line."""
    return text.count("\n") + (1 if text and not text.endswith("\n") else 0)


def _common_prefix_len(a: str, b: str) -> int:
    limit = min(len(a), len(b))
    lo, step = 0, 64
    while lo < limit:
        hi = min(limit, lo + step)
        if a[lo:hi] == b[lo:hi]:
            lo, step = hi, step * 2
            continue
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
    lo, step = 0, 64
    while lo < limit:
        hi = min(limit, lo + step)
        if a[la - hi : la - lo] == b[lb - hi : lb - lo]:
            lo, step = hi, step * 2
            continue
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if a[la - mid : la - lo] == b[lb - mid : lb - lo]:
                lo = mid
            else:
                hi = mid
        return lo
    return limit


def _line_matches(new: str, old: str) -> tuple[int, int, list[tuple[int, int, int]], int]:
    """How the lines of ``new`` map onto the lines of ``old``.

    Returns (prefix lines, suffix lines, matching blocks of the middle as (i, j, n) relative to
    the middle's first line on each side, middle start line). Lines outside prefix, suffix and
    blocks are changed.
    """
    p = _common_prefix_len(new, old)
    pl = new.rfind("\n", 0, p) + 1  # start of the first line that differs (same in both)
    s = _common_suffix_len(new, old, min(len(new), len(old)) - p)
    qn = len(new) - s
    # First line start strictly inside the common suffix: a line start in both texts.
    nl = new.find("\n", qn) if s else -1
    kn = nl + 1 if nl >= 0 else len(new)
    ko = kn - len(new) + len(old)
    prefix_lines = new.count("\n", 0, pl)
    suffix_lines = line_count(new[kn:])
    mid_new = _LINE.findall(new, pl, kn)
    mid_old = _LINE.findall(old, pl, ko)
    if not mid_new or not mid_old:
        return prefix_lines, suffix_lines, [], prefix_lines
    blocks = SequenceMatcher(None, mid_new, mid_old, autojunk=True).get_matching_blocks()
    return prefix_lines, suffix_lines, [(b.a, b.b, b.size) for b in blocks if b.size], prefix_lines


class Blame(Generic[K]):
    """Blame one text by stepping back through its predecessors (see ``blame_lines``)."""

    def __init__(self, text: str, key: K) -> None:
        self.text = text
        self.key = key
        n = line_count(text)
        self._result: list[K | None] = [None] * n
        # _orig[i]: which line of the blamed text line i of self.text is (-1: none).
        self._orig = list(range(n))
        self.pending = n

    def step(self, old_text: str, old_key: K) -> bool:
        """Go back to the predecessor; True when every line is attributed (stop)."""
        if self.pending == 0:
            return True
        cur_text, orig = self.text, self._orig
        if old_text is not cur_text and old_text != cur_text:
            n_old = line_count(old_text)
            pre, suf, blocks, mid0 = _line_matches(cur_text, old_text)
            n_cur = len(orig)
            # Prefix and suffix lines carry over by slices (C speed); only the middle, usually
            # a few lines, is looked at one by one.
            new_orig = orig[:pre]
            new_orig.extend(itertools.repeat(-1, n_old - pre - suf))
            if suf:
                new_orig.extend(orig[n_cur - suf :])
            mid_end = n_cur - suf
            kept = [False] * (mid_end - pre)
            for i, j, size in blocks:
                new_orig[mid0 + j : mid0 + j + size] = orig[mid0 + i : mid0 + i + size]
                kept[i : i + size] = [True] * size
            result, key = self._result, self.key
            for i, was_kept in enumerate(kept):
                o = orig[pre + i]
                if not was_kept and o >= 0:
                    result[o] = key
                    self.pending -= 1
            self._orig = new_orig
        self.text, self.key = old_text, old_key
        return self.pending == 0

    def finish(self) -> list[K]:
        """The attribution of every line: what is left belongs to the oldest text reached."""
        if self.pending:
            for o in self._orig:
                if o >= 0:
                    self._result[o] = self.key
            self.pending = 0
        assert all(r is not None for r in self._result)
        return self._result  # type: ignore[return-value]


def blame_lines(versions: Iterable[tuple[str, K]]) -> list[K]:
    """For each line of the first text, the key of the version that introduced it.

    ``versions``: (text, key) from the blamed version back to the oldest, each the direct
    predecessor of the one before (a rename passes the same text under another key: its lines
    are not its own). Stops reading ``versions`` once every line is attributed.
    """
    it = iter(versions)
    try:
        text, key = next(it)
    except StopIteration:
        return []
    blame = Blame(text, key)
    for old_text, old_key in it:
        if blame.step(old_text, old_key):
            break
    return blame.finish()
