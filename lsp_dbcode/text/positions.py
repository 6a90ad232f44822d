"""LSP positions <-> Python string offsets.

Units, everywhere in this package:

- An *offset* is a Python ``str`` index: it counts code points, 0-based.
- An LSP *position* is ``(line, character)``, both 0-based. ``character`` counts code units of
  the negotiated encoding: UTF-16 (the LSP default; an astral-plane character such as "😀" is 2
  units), UTF-8 (1 to 4 units per code point) or UTF-32 (one unit per code point, same as an
  offset).
- Lines end at "\\n", "\\r\\n" or "\\r" (LSP's line breaks, not the longer list that
  ``str.splitlines`` uses). A document has ``number of line breaks + 1`` lines; "a\\n" has two,
  the second one empty.

Lone surrogates (which a JSON string can carry) count as one code unit in UTF-16 and three in
UTF-8, the way the client measured them.
"""

from __future__ import annotations

import enum
import re
from bisect import bisect_left, bisect_right
from itertools import accumulate, count, repeat
from operator import add

__all__ = [
    "Encoding",
    "LineIndex",
    "PositionError",
    "char_units",
    "codepoint_col_to_units",
    "offset_at",
    "position_at",
    "units_to_codepoint_col",
]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _line_starts(text: str) -> list[int]:
    if "\r" in text:
        return [0, *(m.end() for m in _LINE_BREAK.finditer(text))]
    # The usual case, without a Python-level loop: line i starts at len(lines before) + i.
    lines = text.split("\n")
    return list(map(add, accumulate(map(len, lines[:-1]), initial=0), count()))


class Encoding(enum.StrEnum):
    """LSP position encodings (``PositionEncodingKind``)."""

    UTF8 = "utf-8"
    UTF16 = "utf-16"
    UTF32 = "utf-32"


class PositionError(ValueError):
    """A position or offset outside the document, or inside a multi-unit character."""


def char_units(s: str, encoding: Encoding) -> int:
    """Length of ``s`` in code units of ``encoding``."""
    if encoding == Encoding.UTF32 or s.isascii():
        return len(s)
    if encoding == Encoding.UTF16:
        return len(s.encode("utf-16-le", "surrogatepass")) // 2
    return len(s.encode("utf-8", "surrogatepass"))


def codepoint_col_to_units(line_text: str, col: int, encoding: Encoding) -> int:
    """Code-point column ``col`` of ``line_text`` as a column in code units of ``encoding``."""
    if not 0 <= col <= len(line_text):
        raise PositionError(f"column {col} is outside the line (0..{len(line_text)} code points)")
    return char_units(line_text[:col], encoding)


def units_to_codepoint_col(
    line_text: str, units: int, encoding: Encoding, *, strict: bool = True
) -> int:
    """Column ``units`` (code units of ``encoding``) of ``line_text`` as a code-point column.

    ``strict`` raises PositionError past the end of the line or inside a multi-unit character;
    otherwise the column is clamped to the end of the line, or moved back to the start of the
    character it falls in.
    """
    if units < 0:
        raise PositionError(f"negative column {units}")
    if encoding == Encoding.UTF32 or line_text.isascii():
        if units <= len(line_text):
            return units
        if strict:
            raise PositionError(
                f"column {units} is past the end of the line ({len(line_text)} {encoding} units)"
            )
        return len(line_text)
    if encoding == Encoding.UTF16:
        return _utf16_units_to_col(line_text, units, strict)
    return _utf8_units_to_col(line_text, units, strict)


def _utf16_units_to_col(line_text: str, units: int, strict: bool) -> int:
    # Every code point is one UTF-16 unit except astral ones (two): walk the astral ones only.
    astral_before = 0
    for match in _ASTRAL.finditer(line_text):
        unit_start = match.start() + astral_before
        if units <= unit_start:
            break
        if units == unit_start + 1:
            if strict:
                raise PositionError(
                    f"column {units} falls inside a UTF-16 surrogate pair "
                    f"(character {match.group()!r} at units {unit_start}..{unit_start + 2})"
                )
            return match.start()
        astral_before += 1
    col = units - astral_before
    if col > len(line_text):
        if strict:
            raise PositionError(
                f"column {units} is past the end of the line "
                f"({len(line_text) + astral_before} utf-16 units)"
            )
        return len(line_text)
    return col


def _utf8_units_to_col(line_text: str, units: int, strict: bool) -> int:
    data = line_text.encode("utf-8", "surrogatepass")
    if units > len(data):
        if strict:
            raise PositionError(
                f"column {units} is past the end of the line ({len(data)} utf-8 units)"
            )
        return len(line_text)
    if units < len(data) and data[units] & 0xC0 == 0x80:
        if strict:
            raise PositionError(f"column {units} falls inside a multi-byte UTF-8 sequence")
        while data[units] & 0xC0 == 0x80:
            units -= 1
    return len(data[:units].decode("utf-8", "surrogatepass"))


class LineIndex:
    """The line starts of one immutable text, for fast position <-> offset conversion.

    Build it once per document version (O(n), in C); ``replace`` derives the index of an edited
    text without rescanning it. Queries cost O(log lines) plus the length of one line (nothing
    per line when the text is ASCII or the encoding is UTF-32).
    """

    __slots__ = ("_ascii", "_starts", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._starts = _line_starts(text)
        self._ascii = text.isascii()  # O(1) in CPython

    @classmethod
    def _from_parts(cls, text: str, starts: list[int]) -> LineIndex:
        index = cls.__new__(cls)
        index._text = text
        index._starts = starts
        index._ascii = text.isascii()
        return index

    @property
    def text(self) -> str:
        return self._text

    @property
    def line_count(self) -> int:
        """Number of lines: line breaks + 1."""
        return len(self._starts)

    @property
    def line_starts(self) -> tuple[int, ...]:
        """Offset of the first character of each line."""
        return tuple(self._starts)

    def __len__(self) -> int:
        return len(self._text)

    def __repr__(self) -> str:
        return f"LineIndex({len(self._text)} code points, {len(self._starts)} lines)"

    def _check_line(self, line: int) -> None:
        if not 0 <= line < len(self._starts):
            raise PositionError(
                f"line {line} is out of range: the document has {len(self._starts)} lines "
                f"(0..{len(self._starts) - 1})"
            )

    def line_start(self, line: int) -> int:
        """Offset where ``line`` starts."""
        self._check_line(line)
        return self._starts[line]

    def line_end(self, line: int, *, include_break: bool = False) -> int:
        """Offset where ``line`` ends: before its line break, or after it."""
        self._check_line(line)
        if line + 1 == len(self._starts):
            return len(self._text)
        following = self._starts[line + 1]
        if include_break:
            return following
        if following >= 2 and self._text[following - 2 : following] == "\r\n":
            return following - 2
        return following - 1

    def line_text(self, line: int, *, include_break: bool = False) -> str:
        """Text of ``line``, without its line break unless ``include_break``."""
        return self._text[self.line_start(line) : self.line_end(line, include_break=include_break)]

    def line_of(self, offset: int) -> int:
        """The line that contains ``offset`` (an offset at a line's end belongs to that line)."""
        self._check_offset(offset)
        return bisect_right(self._starts, offset) - 1

    def is_inside_line_break(self, offset: int) -> bool:
        """True for the offset between "\\r" and "\\n", which no LSP position can name."""
        text = self._text
        return 0 < offset < len(text) and text[offset - 1] == "\r" and text[offset] == "\n"

    def _check_offset(self, offset: int) -> None:
        if not 0 <= offset <= len(self._text):
            raise PositionError(
                f"offset {offset} is out of range: the document has {len(self._text)} "
                f"code points (offsets 0..{len(self._text)})"
            )

    def offset(self, line: int, character: int, encoding: Encoding, *, strict: bool = True) -> int:
        """Offset of the LSP position ``(line, character)``.

        ``strict`` raises PositionError for a line past the last one, a character past the end
        of the line (its end before the line break), or a character inside a multi-unit
        character. Otherwise positions are clamped as LSP says: a character past the end of the
        line means the end of the line, a line past the last one means the end of the document,
        and a character inside a multi-unit character means the start of that character.
        Negative numbers always raise.
        """
        if line < 0 or character < 0:
            raise PositionError(f"position {line}:{character} has a negative part")
        if line >= len(self._starts):
            if strict:
                raise PositionError(
                    f"position {line}:{character} is out of range: the document has "
                    f"{len(self._starts)} lines (0..{len(self._starts) - 1})"
                )
            return len(self._text)
        start = self._starts[line]
        end = self.line_end(line)
        if self._ascii or encoding == Encoding.UTF32:
            if character <= end - start:
                return start + character
            if strict:
                raise PositionError(
                    f"position {line}:{character} is out of range: line {line} has "
                    f"{end - start} {encoding} code units"
                )
            return end
        line_text = self._text[start:end]
        try:
            return start + units_to_codepoint_col(line_text, character, encoding, strict=strict)
        except PositionError as exc:
            raise PositionError(
                f"position {line}:{character} ({encoding}) is invalid on line {line} "
                f"({char_units(line_text, encoding)} code units): {exc}"
            ) from None

    def position(self, offset: int, encoding: Encoding, *, strict: bool = False) -> tuple[int, int]:
        """LSP ``(line, character)`` of ``offset``.

        An offset between "\\r" and "\\n" has no position of its own: ``strict`` raises
        PositionError for it, otherwise it maps to the end of its line. Offsets outside
        ``0..len(text)`` always raise.
        """
        self._check_offset(offset)
        line = bisect_right(self._starts, offset) - 1
        start = self._starts[line]
        if self.is_inside_line_break(offset):
            if strict:
                raise PositionError(
                    f"offset {offset} falls between the \\r and \\n ending line {line}"
                )
            offset -= 1
        if self._ascii or encoding == Encoding.UTF32:
            return line, offset - start
        return line, char_units(self._text[start:offset], encoding)

    def replace(self, start: int, end: int, new_text: str) -> LineIndex:
        """Index of the text with ``[start, end)`` replaced by ``new_text``.

        Rescans only ``new_text`` and its two neighbouring characters; the other line starts are
        copied (and shifted), so a keystroke costs O(lines) list work, not a rescan of the text.
        """
        text = self._text
        if not 0 <= start <= end <= len(text):
            raise PositionError(
                f"range [{start}, {end}) is not inside the document (0..{len(text)})"
            )
        new = text[:start] + new_text + text[end:]
        starts = self._starts
        inserted_end = start + len(new_text)
        delta = len(new_text) - (end - start)
        # A line start p depends on new[p-1] and new[p]: only p in [start, inserted_end] can
        # change; those below keep their value, those after shift by delta.
        kept = starts[: max(bisect_left(starts, start), 1)]
        window = (
            m.end()
            for m in _LINE_BREAK.finditer(new, max(start - 1, 0), min(inserted_end + 1, len(new)))
        )
        kept.extend(p for p in window if start <= p <= inserted_end)
        kept.extend(map(add, starts[bisect_left(starts, end + 1) :], repeat(delta)))
        return LineIndex._from_parts(new, kept)


def offset_at(text: str, line: int, character: int, encoding: Encoding, strict: bool = True) -> int:
    """One-off ``LineIndex(text).offset(...)``; build a LineIndex for repeated queries."""
    return LineIndex(text).offset(line, character, encoding, strict=strict)


def position_at(text: str, offset: int, encoding: Encoding) -> tuple[int, int]:
    """One-off ``LineIndex(text).position(...)``; build a LineIndex for repeated queries."""
    return LineIndex(text).position(offset, encoding)
