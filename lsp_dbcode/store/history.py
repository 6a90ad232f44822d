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
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from ..text.diff import diff_edits
from ..text.edits import Edit, apply_edits

# A full text every K revisions: reads apply at most K - 1 deltas. Measured (docs/architecture.md,
# History): K = 32 keeps a read of any revision of a 206 KB file within 2x of a plain read and
# 1,000 one-line edits under 4 KB per revision.
SNAPSHOT_EVERY_REVISIONS = 32
# Revisions smaller than this stay whole: they cost less than the storage target already
# (4 KB per revision), and an UPDATE that shaves a few hundred bytes off costs commit
# throughput on a busy server (measured: a 600-byte file's compaction took 10-20% of one
# writer's commits/s on this 2-core machine).
COMPACT_TEXT_BYTES_MIN = 4096
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
    return apply_parsed(newer, json.loads(delta))


def apply_parsed(newer: str, edits: list[list[Any]]) -> str:
    """``apply_delta`` of a delta already parsed (``json.loads``)."""
    return apply_edits(newer, [Edit(s, e, t) for s, e, t in edits])


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


def line_hunks(cur: str, edits: Sequence[Sequence[Any]]) -> list[tuple[int, int, int]]:
    """The changed lines of ``cur`` under ``edits`` ([start, end, text] on ``cur``, sorted,
    disjoint: a delta, or ``diff_edits``), as hunks (first line, end line exclusive, number of
    lines replacing them), sorted. Lines outside the hunks are unchanged, in order.

    Each edit is widened to whole lines; edits whose lines touch are one hunk; lines equal at
    the start and end of a hunk are taken out of it (an inserted line at the start of a line
    changes no line). Costs about the size of the edits (line numbers by ``str.count``, in C).
    """
    hunks: list[tuple[int, int, int]] = []
    n = len(edits)
    i = 0
    line = 0  # line number of ``pos``
    pos = 0
    while i < n:
        s, e, t = edits[i]
        ls = cur.rfind("\n", 0, s) + 1
        line += cur.count("\n", pos, ls)
        first, pos = line, ls
        old_parts = [cur[ls:s], t]
        while True:
            nl = cur.find("\n", e)
            le = nl + 1 if nl >= 0 else len(cur)
            # The next edit touches these lines when its line starts before ``le`` (an edit at
            # the end of a last line without a newline starts on that line).
            if i + 1 < n and cur.rfind("\n", 0, edits[i + 1][0]) + 1 < le:
                i += 1
                s2, e2, t2 = edits[i]
                old_parts += [cur[e:s2], t2]
                e = e2
                continue
            break
        old_parts.append(cur[e:le])
        cur_lines = _LINE.findall(cur, ls, le)
        old_lines = _LINE.findall("".join(old_parts))
        a = 0
        while a < len(cur_lines) and a < len(old_lines) and cur_lines[a] == old_lines[a]:
            a += 1
        b = 0
        while (
            b < len(cur_lines) - a
            and b < len(old_lines) - a
            and cur_lines[-1 - b] == old_lines[-1 - b]
        ):
            b += 1
        if len(cur_lines) - a - b or len(old_lines) - a - b:
            hunks.append((first + a, first + len(cur_lines) - b, len(old_lines) - a - b))
        line = first + cur.count("\n", ls, le)
        pos = le
        i += 1
    return hunks


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

    def step(self, old_text: str, old_key: K, delta: Sequence[Sequence[Any]] | None = None) -> bool:
        """Go back to the predecessor; True when every line is attributed (stop).

        ``delta``: the edits that turn the current text into ``old_text``, when known (a
        stored reverse delta); else they are computed (``diff_edits``).
        """
        if self.pending == 0:
            return True
        cur_text, orig = self.text, self._orig
        if old_text is not cur_text and old_text != cur_text:
            if delta is None:
                delta = [(x.start, x.end, x.text) for x in diff_edits(cur_text, old_text)]
            # Unchanged runs carry over by slices (C speed); only changed lines are looked at.
            new_orig: list[int] = []
            result, key = self._result, self.key
            at = 0
            for first, end, count in line_hunks(cur_text, delta):
                new_orig += orig[at:first]
                new_orig += itertools.repeat(-1, count)
                for o in orig[first:end]:
                    if o >= 0:
                        result[o] = key
                        self.pending -= 1
                at = end
            new_orig += orig[at:]
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
