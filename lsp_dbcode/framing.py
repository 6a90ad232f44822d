"""LSP's base protocol framing: ``Content-Length`` headers, a blank line, the body.

:class:`FrameSplitter` cuts message bodies out of a byte stream as its bytes arrive, whatever
their chunks (one byte at a time, several messages at once). Pure: no I/O. Used by the
server's readers (server/wire.py) and by the client of the ``ruff server`` child
(analysis/_lsp_stdio.py), each from its transport's read callback.
"""

from __future__ import annotations

HEADER_LINES_MAX = 32
HEADER_LINE_BYTES_MAX = 8 * 1024
# One message body: room for a file at the default size limit (10 MiB) JSON-escaped at worst
# (\uXXXX pairs: 6 bytes a character, in practice far less), and a bound on what one message may
# cost a shared server to read and parse (a bigger Content-Length closes the connection).
MESSAGE_BYTES_MAX = 64 * 2**20


class FramingError(Exception):
    """The byte stream is not LSP's Content-Length framing."""


class FrameSplitter:
    """Feed bytes with :meth:`feed`, take complete bodies with :meth:`next_body`.

    Accepts bare LF line ends and stray blank lines before the headers, as the old readers
    did. After a :class:`FramingError` the stream is unusable (call :meth:`clear` to drop it).
    """

    __slots__ = ("_data", "_in_body", "_length", "_lines", "_pos")

    def __init__(self) -> None:
        self._data = bytearray()
        self._pos = 0  # start of the unparsed bytes in _data
        self._length = -1  # the message's Content-Length once its header says it
        self._lines = 0  # header lines of the message so far
        self._in_body = False

    def feed(self, data: bytes) -> None:
        self._data += data

    def clear(self) -> None:
        self._data.clear()
        self._pos, self._length, self._lines, self._in_body = 0, -1, 0, False

    def next_body(self) -> bytes | None:
        """The next complete message's body, or None until more bytes come."""
        data = self._data
        while True:
            if self._in_body:
                end = self._pos + self._length
                if len(data) < end:
                    break
                body = bytes(data[self._pos : end])
                self._pos, self._length, self._lines, self._in_body = end, -1, 0, False
                return body
            eol = data.find(b"\n", self._pos)
            if eol < 0:
                if len(data) - self._pos > HEADER_LINE_BYTES_MAX:
                    raise FramingError("an LSP header line of more than 8 KiB")
                break
            line = bytes(data[self._pos : eol + 1])
            self._pos = eol + 1
            if line in (b"\r\n", b"\n"):
                if self._length >= 0:
                    self._in_body = True
                continue  # a stray blank line before the headers
            self._lines += 1
            if self._lines > HEADER_LINES_MAX:
                raise FramingError("too many header lines")
            self._length = header_length(line, self._length)
        if self._pos:
            del data[: self._pos]
            self._pos = 0
        return None


def header_length(line: bytes, length: int) -> int:
    """The message's Content-Length after the header ``line`` (``length``: so far)."""
    name, sep, value = line.partition(b":")
    if not sep:
        raise FramingError(f"not an LSP header line: {line[:80]!r}")
    if name.strip().lower() == b"content-length":
        try:
            length = int(value.strip())
        except ValueError:
            raise FramingError(f"bad Content-Length: {value[:40]!r}") from None
        if not 0 <= length <= MESSAGE_BYTES_MAX:
            raise FramingError(f"message of {length} bytes (limit {MESSAGE_BYTES_MAX})")
    return length
