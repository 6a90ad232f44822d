"""LSP framing, cut from bytes however they arrive (pure: no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lsp_dbcode.framing import MESSAGE_BYTES_MAX, FrameSplitter, FramingError


def frame(body: bytes, eol: bytes = b"\r\n") -> bytes:
    return b"Content-Length: %d%s%s%s" % (len(body), eol, eol, body)


@given(
    st.lists(st.tuples(st.binary(max_size=60), st.sampled_from([b"\r\n", b"\n"])), max_size=8),
    st.lists(st.integers(min_value=1, max_value=17), min_size=1),
)
def test_bodies_come_out_whole_and_in_order_whatever_the_chunks(
    messages: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(frame(body, eol) for body, eol in messages)
    frames = FrameSplitter()
    got: list[bytes] = []
    pos, k = 0, 0
    while pos < len(stream):
        size = cuts[k % len(cuts)]
        frames.feed(stream[pos : pos + size])
        pos, k = pos + size, k + 1
        while (body := frames.next_body()) is not None:
            got.append(body)
    assert got == [body for body, _ in messages]
    assert frames.next_body() is None


def test_extra_headers_and_stray_blank_lines_are_accepted() -> None:
    frames = FrameSplitter()
    frames.feed(b"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    assert frames.next_body() == b"{}"


@pytest.mark.parametrize(
    "data",
    [
        b"not a header\r\n",
        b"Content-Length: twelve\r\n\r\n",
        b"Content-Length: %d\r\n\r\n" % (MESSAGE_BYTES_MAX + 1),
        b"X-Long: " + b"x" * 9000,
        b"".join(b"X-%d: y\r\n" % i for i in range(40)),
    ],
)
def test_broken_framing_is_an_error(data: bytes) -> None:
    frames = FrameSplitter()
    frames.feed(data)
    with pytest.raises(FramingError):
        frames.next_body()
