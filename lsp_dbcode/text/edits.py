"""Text edits on code-point offsets, and LSP content changes.

An :class:`Edit` replaces ``text[start:end]`` of the ORIGINAL text; a list of edits is applied
all at once, like the ``TextEdit[]`` of one LSP ``WorkspaceEdit``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from lsp_dbcode.text.positions import Encoding, LineIndex, PositionError

__all__ = [
    "Edit",
    "apply_change",
    "apply_content_change",
    "apply_edits",
    "content_hash",
    "to_lsp_range",
]

Position = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace ``text[start:end]`` (code-point offsets into the original text) with ``text``."""

    start: int
    end: int
    text: str

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"invalid edit range [{self.start}, {self.end})")

    @property
    def is_insertion(self) -> bool:
        return self.start == self.end

    def shifted(self, delta: int) -> Edit:
        return Edit(self.start + delta, self.end + delta, self.text)


def apply_edits(text: str, edits: Sequence[Edit]) -> str:
    """Apply non-overlapping ``edits`` (relative to ``text``, in any order) in linear time.

    Insertions at the same offset keep their given order. Raises ValueError when two edits
    overlap or one reaches past the end of ``text``.
    """
    if not edits:
        return text
    ordered = sorted(edits, key=lambda e: (e.start, e.end))
    if ordered[-1].end > len(text):
        raise ValueError(f"edit {ordered[-1]} reaches past the end of the text ({len(text)})")
    parts: list[str] = []
    pos = 0
    for edit in ordered:
        if edit.start < pos:
            raise ValueError(f"overlapping edits: {edit} starts before offset {pos}")
        if edit.end > len(text):
            raise ValueError(f"edit {edit} reaches past the end of the text ({len(text)})")
        parts.append(text[pos : edit.start])
        parts.append(edit.text)
        pos = edit.end
    parts.append(text[pos:])
    return "".join(parts)


def to_lsp_range(index: LineIndex, edit: Edit, encoding: Encoding) -> tuple[Position, Position]:
    """LSP range ``((start line, char), (end line, char))`` of ``edit`` in ``index.text``.

    Raises PositionError when an end of the edit falls between "\\r" and "\\n" (no LSP position
    names that point; :func:`lsp_dbcode.text.diff.diff_edits` never produces such edits).
    """
    return (
        index.position(edit.start, encoding, strict=True),
        index.position(edit.end, encoding, strict=True),
    )


def _change_offsets(
    index: LineIndex, start: Position, end: Position, encoding: Encoding
) -> tuple[int, int]:
    start_offset = index.offset(start[0], start[1], encoding)
    end_offset = index.offset(end[0], end[1], encoding)
    if end_offset < start_offset:
        raise PositionError(f"range end {end} is before its start {start}")
    return start_offset, end_offset


def _check_range(start: Position | None, end: Position | None) -> None:
    if (start is None) != (end is None):
        raise ValueError("a content change needs both ends of its range, or neither")


def apply_change(
    text: str,
    index: LineIndex | None,
    start: Position | None,
    end: Position | None,
    new_text: str,
    encoding: Encoding,
) -> str:
    """Apply one LSP ``TextDocumentContentChangeEvent`` to ``text``.

    ``start``/``end`` None means "replace the whole document". Positions are strict (an
    out-of-range position raises PositionError). ``index``, when given, must index ``text``.
    """
    _check_range(start, end)
    if start is None or end is None:
        return new_text
    if index is None:
        index = LineIndex(text)
    elif index.text is not text and index.text != text:
        raise ValueError("the LineIndex does not index this text")
    start_offset, end_offset = _change_offsets(index, start, end, encoding)
    return text[:start_offset] + new_text + text[end_offset:]


def apply_content_change(
    index: LineIndex,
    start: Position | None,
    end: Position | None,
    new_text: str,
    encoding: Encoding,
) -> LineIndex:
    """Like :func:`apply_change`, but returns the new text's LineIndex (``.text``), updated
    incrementally instead of rescanning the document: the per-keystroke path."""
    _check_range(start, end)
    if start is None or end is None:
        return LineIndex(new_text)
    start_offset, end_offset = _change_offsets(index, start, end, encoding)
    return index.replace(start_offset, end_offset, new_text)


def content_hash(text: str) -> str:
    """Short stable hash of ``text``: blake2b-64 of its UTF-8 bytes, 16 hex digits."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
