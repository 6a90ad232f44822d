"""Reading JSON-RPC messages off a stream or a WebSocket and handing them to the protocol.

Replaces pygls' ``run_async`` / ``run_websocket`` loops: those decode every message with the
protocol's ``structure_message`` as ``json.loads``' object hook (called on every nested object)
and dispatch through pygls; ours decode with plain ``json.loads`` and let
:meth:`DbcodeProtocol.receive` take the lean path for the messages that allow it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, SupportsIndex

from .protocol import DbcodeProtocol

log = logging.getLogger(__name__)

HEADER_LINES_MAX = 32
MESSAGE_BYTES_MAX = 256 * 2**20


class FramingError(Exception):
    """The byte stream is not LSP's Content-Length framing: the connection is closed."""


class FramedReader(asyncio.StreamReader):
    """A StreamReader for a transport (socket, pipe) whose bytes are cut into LSP messages as
    they arrive and handed to ``protocol.receive`` from the transport's callback: no task
    wakes up to read each message, one event-loop turn less per message than a read loop.
    Used through :func:`read_stream`, which returns at EOF (or raises FramingError)."""

    def __init__(self, limit: int = 2**26) -> None:
        super().__init__(limit=limit)
        self._data = bytearray()
        self._pos = 0  # start of the unparsed bytes in _data
        self._length = -1  # the message's Content-Length once its headers are read
        self._header_lines = 0
        self._in_body = False
        self._protocol: DbcodeProtocol | None = None
        self._stop: threading.Event | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done.add_done_callback(lambda f: f.cancelled() or f.exception())

    def attach(self, protocol: DbcodeProtocol, stop: threading.Event) -> None:
        self._protocol, self._stop = protocol, stop
        self._parse()  # bytes that came before

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        if self.done.done():  # after EOF or a framing error: nothing more is read
            return
        self._data += data  # type: ignore[arg-type]
        if self._protocol is not None:
            self._parse()

    def feed_eof(self) -> None:
        super().feed_eof()
        if not self.done.done():
            self.done.set_result(None)

    def set_exception(self, exc: Exception) -> None:
        super().set_exception(exc)
        if not self.done.done():
            self.done.set_exception(exc)

    def _parse(self) -> None:
        try:
            self._parse_messages()
        except FramingError as exc:
            self._data.clear()
            self._pos = 0
            if not self.done.done():
                self.done.set_exception(exc)

    def _parse_messages(self) -> None:
        data = self._data
        protocol = self._protocol
        assert protocol is not None
        while not (self._stop is not None and self._stop.is_set()):
            if self._in_body:
                end = self._pos + self._length
                if len(data) < end:
                    break
                body = bytes(data[self._pos : end])
                self._pos = end
                self._in_body, self._length, self._header_lines = False, -1, 0
                protocol.receive(body)
                continue
            eol = data.find(b"\n", self._pos)
            if eol < 0:
                if len(data) - self._pos > 8192:
                    raise FramingError("an LSP header line of more than 8 KiB")
                break
            line = bytes(data[self._pos : eol + 1])
            self._pos = eol + 1
            self._length = _header(line, self._length)
            if line in (b"\r\n", b"\n"):
                if self._length >= 0:
                    self._in_body = True
                continue
            self._header_lines += 1
            if self._header_lines > HEADER_LINES_MAX:
                raise FramingError("too many header lines")
        if self._pos:
            del data[: self._pos]
            self._pos = 0


async def start_tcp_server(
    handler: Callable[[FramedReader, asyncio.StreamWriter], Awaitable[None]], host: str, port: int
) -> asyncio.Server:
    """``asyncio.start_server`` with a :class:`FramedReader` per connection."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: asyncio.StreamReaderProtocol(FramedReader(), handler),  # type: ignore[arg-type]
        host,
        port,
    )


async def open_socket(sock: socket.socket) -> tuple[FramedReader, asyncio.StreamWriter]:
    """``asyncio.open_connection(sock=...)`` with a :class:`FramedReader`."""
    loop = asyncio.get_running_loop()
    reader = FramedReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    transport, _ = await loop.create_connection(lambda: protocol, sock=sock)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def open_read_pipe(pipe: Any) -> tuple[FramedReader, asyncio.ReadTransport]:
    """A :class:`FramedReader` on a pipe (a file object), and its transport."""
    reader = FramedReader()
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), pipe
    )
    return reader, transport


def _header(line: bytes, length: int) -> int:
    """The Content-Length so far, after one header line (a blank line changes nothing)."""
    if line in (b"\r\n", b"\n"):
        return length
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


async def read_stream(reader: Any, protocol: DbcodeProtocol, stop: threading.Event) -> None:
    """Until EOF or ``stop``: read Content-Length framed messages from ``reader`` (a
    :class:`FramedReader`, an asyncio StreamReader or pygls' thread-backed reader) and pass
    each to ``protocol.receive``."""
    if isinstance(reader, FramedReader):
        reader.attach(protocol, stop)
        await reader.done
        return
    while not stop.is_set():
        length = -1
        for _ in range(HEADER_LINES_MAX):
            line = await reader.readline()
            if not line:
                return  # EOF
            if line in (b"\r\n", b"\n") and length >= 0:
                break
            length = _header(line, length)  # a stray blank line before the headers: no change
        else:
            raise FramingError("too many header lines")
        body = await reader.readexactly(length)
        protocol.receive(body)


async def read_websocket(websocket: Any, protocol: DbcodeProtocol, stop: threading.Event) -> None:
    """Until the WebSocket closes or ``stop``: one message per frame."""
    from pygls.io_ import WebSocketWriter
    from websockets.exceptions import ConnectionClosed

    protocol.set_writer(WebSocketWriter(websocket), include_headers=False)
    try:
        while not stop.is_set():
            try:
                data = await websocket.recv(decode=False)
            except ConnectionClosed:
                return
            protocol.receive(data)
    finally:
        await websocket.close()


__all__ = [
    "FramedReader",
    "FramingError",
    "open_read_pipe",
    "open_socket",
    "read_stream",
    "read_websocket",
    "start_tcp_server",
]
