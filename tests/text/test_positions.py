"""Positions: LSP (line, character) in utf-8/16/32 <-> code-point offsets."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsp_dbcode.text.positions import (
    Encoding,
    LineIndex,
    PositionError,
    char_units,
    codepoint_col_to_units,
    offset_at,
    position_at,
    units_to_codepoint_col,
)


def _examples(default: int) -> int:
    """Hypothesis examples per test; DBCODE_TEXT_EXAMPLES=5000 for a thorough run."""
    return int(os.environ.get("DBCODE_TEXT_EXAMPLES", default))


ALL = list(Encoding)
# Pieces that stress every encoding: astral emoji, a ZWJ family, a combining accent, CJK, and
# every LSP line break.
PIECES = [
    "a",
    "b",
    " ",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "é",
    "e\u0301",
    "中",
    "文",
    "😀",
    "👨\u200d👩\u200d👧",
    "\U0010ffff",
    "ß",
]
texts = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)
any_texts = st.one_of(texts, st.text(max_size=60))
FAST = settings(max_examples=_examples(150), deadline=None)


def _reference_position(text: str, offset: int, encoding: Encoding) -> tuple[int, int]:
    """Slow, obvious reference: split on LSP breaks, measure the prefix by encoding."""
    line = 0
    line_start = 0
    for match in re.finditer(r"\r\n|\r|\n", text):
        if match.end() <= offset:
            line += 1
            line_start = match.end()
    prefix = text[line_start:offset]
    size = {
        Encoding.UTF8: len(prefix.encode("utf-8", "surrogatepass")),
        Encoding.UTF16: len(prefix.encode("utf-16-le", "surrogatepass")) // 2,
        Encoding.UTF32: len(prefix),
    }[encoding]
    return line, size


# --- examples --------------------------------------------------------------------------------


def test_emoji_is_two_utf16_units_and_four_utf8_units() -> None:
    index = LineIndex("a😀b")
    assert index.position(2, Encoding.UTF16) == (0, 3)
    assert index.position(2, Encoding.UTF8) == (0, 5)
    assert index.position(2, Encoding.UTF32) == (0, 2)
    assert index.offset(0, 3, Encoding.UTF16) == 2
    assert index.offset(0, 5, Encoding.UTF8) == 2
    assert index.offset(0, 2, Encoding.UTF32) == 2
    assert char_units("😀", Encoding.UTF16) == 2
    assert char_units("😀", Encoding.UTF8) == 4
    assert char_units("😀", Encoding.UTF32) == 1


def test_inside_a_multi_unit_character_is_strictly_an_error() -> None:
    index = LineIndex("a😀b")
    with pytest.raises(PositionError, match="surrogate"):
        index.offset(0, 2, Encoding.UTF16)
    for units in (2, 3, 4):
        with pytest.raises(PositionError, match="UTF-8"):
            index.offset(0, units, Encoding.UTF8)
    # Lenient: back to the start of the character.
    assert index.offset(0, 2, Encoding.UTF16, strict=False) == 1
    assert index.offset(0, 4, Encoding.UTF8, strict=False) == 1


def test_zwj_family_combining_and_cjk() -> None:
    family = "👨\u200d👩\u200d👧"  # 5 code points: 3 astral + 2 ZWJ
    assert char_units(family, Encoding.UTF16) == 8
    assert char_units(family, Encoding.UTF8) == 18
    assert char_units(family, Encoding.UTF32) == 5
    text = f"x{family}e\u0301中"
    index = LineIndex(text)
    assert index.position(len(text), Encoding.UTF16) == (0, 1 + 8 + 2 + 1)
    assert index.position(len(text), Encoding.UTF8) == (0, 1 + 18 + 3 + 3)
    assert index.offset(0, 1 + 8 + 1, Encoding.UTF16) == 1 + 5 + 1  # between e and U+0301


def test_crlf_cr_and_lf_all_break_lines() -> None:
    text = "ab\r\ncd\ref\ngh"
    index = LineIndex(text)
    assert index.line_count == 4
    assert [index.line_text(n) for n in range(4)] == ["ab", "cd", "ef", "gh"]
    assert index.line_text(0, include_break=True) == "ab\r\n"
    assert index.line_starts == (0, 4, 7, 10)
    assert index.offset(1, 0, Encoding.UTF16) == 4
    assert index.offset(0, 2, Encoding.UTF16) == 2  # end of line 0, before "\r\n"
    with pytest.raises(PositionError):
        index.offset(0, 3, Encoding.UTF16)  # would point between "\r" and "\n"
    assert index.position(3, Encoding.UTF16) == (0, 2)  # between \r and \n: end of line
    with pytest.raises(PositionError, match="between"):
        index.position(3, Encoding.UTF16, strict=True)
    assert index.line_of(3) == 0
    assert index.is_inside_line_break(3)
    assert not index.is_inside_line_break(4)


def test_trailing_newline_makes_an_empty_last_line() -> None:
    index = LineIndex("a\n")
    assert index.line_count == 2
    assert index.offset(1, 0, Encoding.UTF16) == 2
    assert index.position(2, Encoding.UTF16) == (1, 0)
    assert LineIndex("").line_count == 1
    assert LineIndex("").offset(0, 0, Encoding.UTF8) == 0


def test_out_of_range_raises_with_line_and_extent() -> None:
    index = LineIndex("abc\nde")
    with pytest.raises(PositionError, match=r"2:0.*2 lines"):
        index.offset(2, 0, Encoding.UTF16)
    with pytest.raises(PositionError, match=r"1:3.*line 1 has 2"):
        index.offset(1, 3, Encoding.UTF16)
    with pytest.raises(PositionError, match="negative"):
        index.offset(-1, 0, Encoding.UTF16, strict=False)
    with pytest.raises(PositionError, match=r"offset 7.*6 code points"):
        index.position(7, Encoding.UTF16)
    with pytest.raises(PositionError):
        index.position(-1, Encoding.UTF16)
    with pytest.raises(PositionError, match="line 1"):
        LineIndex("é\n😀").offset(1, 3, Encoding.UTF16)


def test_lenient_positions_clamp_like_lsp() -> None:
    index = LineIndex("abc\nde")
    assert index.offset(0, 99, Encoding.UTF16, strict=False) == 3
    assert index.offset(9, 0, Encoding.UTF16, strict=False) == 6
    assert index.offset(1, 99, Encoding.UTF8, strict=False) == 6
    assert LineIndex("é😀\nx").offset(0, 99, Encoding.UTF16, strict=False) == 2


def test_helpers() -> None:
    assert offset_at("a\n😀x", 1, 2, Encoding.UTF16) == 3
    assert position_at("a\n😀x", 3, Encoding.UTF8) == (1, 4)
    assert codepoint_col_to_units("é😀x", 2, Encoding.UTF8) == 6
    assert units_to_codepoint_col("é😀x", 6, Encoding.UTF8) == 2
    assert units_to_codepoint_col("é😀x", 99, Encoding.UTF16, strict=False) == 3
    with pytest.raises(PositionError):
        codepoint_col_to_units("abc", 4, Encoding.UTF16)
    assert Encoding("utf-16") is Encoding.UTF16
    assert Encoding.UTF8 == "utf-8"


def test_lone_surrogates_are_measured_like_the_client() -> None:
    text = "a\ud800b"  # JSON "\ud800" decodes to a lone surrogate
    assert char_units(text, Encoding.UTF16) == 3
    assert char_units(text, Encoding.UTF8) == 5
    index = LineIndex(text)
    assert index.position(2, Encoding.UTF16) == (0, 2)
    assert index.offset(0, 4, Encoding.UTF8) == 2


# --- properties ------------------------------------------------------------------------------


@FAST
@given(any_texts)
def test_round_trip_every_offset_in_every_encoding(text: str) -> None:
    index = LineIndex(text)
    for offset in range(len(text) + 1):
        if index.is_inside_line_break(offset):
            continue
        for encoding in ALL:
            position = index.position(offset, encoding)
            assert position == _reference_position(text, offset, encoding)
            assert index.offset(*position, encoding) == offset


@FAST
@given(any_texts, st.integers(0, 50), st.integers(0, 50), st.sampled_from(ALL))
def test_lenient_offset_is_always_a_valid_offset(
    text: str, line: int, character: int, encoding: Encoding
) -> None:
    index = LineIndex(text)
    offset = index.offset(line, character, encoding, strict=False)
    assert 0 <= offset <= len(text)
    try:
        strict = index.offset(line, character, encoding)
    except PositionError:
        return
    assert strict == offset


@FAST
@given(texts, st.data())
def test_replace_matches_a_fresh_index(text: str, data: st.DataObject) -> None:
    index = LineIndex(text)
    for _ in range(3):
        start = data.draw(st.integers(0, len(index)))
        end = data.draw(st.integers(start, len(index)))
        inserted = data.draw(texts)
        index = index.replace(start, end, inserted)
        fresh = LineIndex(index.text)
        assert index.line_starts == fresh.line_starts
        assert index.line_count == fresh.line_count


@FAST
@given(st.lists(st.sampled_from([*PIECES, "�", "�"]), max_size=20).map("".join))
def test_columns_convert_both_ways(line: str) -> None:
    line = re.sub(r"[\r\n]", "", line)
    for encoding in ALL:
        for col in range(len(line) + 1):
            units = codepoint_col_to_units(line, col, encoding)
            assert units == char_units(line[:col], encoding)
            assert units_to_codepoint_col(line, units, encoding) == col
