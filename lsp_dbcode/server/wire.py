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
import struct
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, SupportsIndex

from ..framing import HEADER_LINES_MAX, FrameSplitter, FramingError, header_length
from ..tls import TLS_HANDSHAKE_TIMEOUT_S
from .protocol import DbcodeProtocol

if TYPE_CHECKING:
    from ssl import SSLContext

log = logging.getLogger(__name__)

# A WebSocket upgrade request's headers, all together (the websockets package bounds each line
# to 8 KiB and their number to 128 already): a request over this is answered 431.
WS_HEADER_BYTES_MAX = 16 * 1024


class FramedReader(asyncio.StreamReader):
    """A StreamReader for a transport (socket, pipe) whose bytes are cut into LSP messages as
    they arrive and handed to ``protocol.receive`` from the transport's callback: no task
    wakes up to read each message, one event-loop turn less per message than a read loop.
    Used through :func:`read_stream`, which returns at EOF (or raises FramingError)."""

    def __init__(self, limit: int = 2**26) -> None:
        super().__init__(limit=limit)
        self._frames = FrameSplitter()
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
        self._frames.feed(data)  # type: ignore[arg-type]
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
        protocol, stop = self._protocol, self._stop
        assert protocol is not None and stop is not None
        try:
            while not stop.is_set() and (body := self._frames.next_body()) is not None:
                protocol.receive(body)
        except FramingError as exc:
            self._frames.clear()
            if not self.done.done():
                self.done.set_exception(exc)


async def start_tcp_server(
    handler: Callable[[FramedReader, asyncio.StreamWriter], Awaitable[None]],
    host: str,
    port: int,
    ssl: SSLContext | None = None,
) -> asyncio.Server:
    """``asyncio.start_server`` with a :class:`FramedReader` per connection; over TLS with
    ``ssl`` (a client that does not finish its handshake within TLS_HANDSHAKE_TIMEOUT_S is
    dropped: the handshake never holds the event loop, so everyone else is served meanwhile)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: asyncio.StreamReaderProtocol(FramedReader(), handler),  # type: ignore[arg-type]
        host,
        port,
        ssl=ssl,
        ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S if ssl is not None else None,
    )


def peer_name(address: Any) -> str:
    """A socket peer address as one string: ``HOST:PORT`` (``[V6]:PORT``); ``?`` if unknown."""
    if isinstance(address, (tuple, list)) and len(address) >= 2:
        host, port = str(address[0]), address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address) if address else "?"


def unix_peer(sock: socket.socket) -> str:
    """A unix socket's peer as ``pid N uid U`` (SO_PEERCRED), ``?`` where not known."""
    cred = getattr(socket, "SO_PEERCRED", None)
    if cred is None:
        return "?"
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, cred, struct.calcsize("3i"))
    except OSError:
        return "?"
    pid, uid, _ = struct.unpack("3i", raw)
    return f"pid {pid} uid {uid}"


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
            if line in (b"\r\n", b"\n"):
                if length >= 0:
                    break
                continue  # a stray blank line before the headers
            length = header_length(line, length)
        else:
            raise FramingError("too many header lines")
        body = await reader.readexactly(length)
        protocol.receive(body)


def bearer_token(headers: Any) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header (None: no such header)."""
    value = headers.get("Authorization") if headers is not None else None
    if not isinstance(value, str):
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def ws_headers_too_large(connection: Any, request: Any) -> Any:
    """websockets' ``process_request``: a 431 for an upgrade request whose headers exceed
    WS_HEADER_BYTES_MAX (the answer never repeats them)."""
    from http import HTTPStatus

    size = sum(len(k) + len(v) + 4 for k, v in request.headers.raw_items())
    if size > WS_HEADER_BYTES_MAX:
        return connection.respond(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            f"request headers over {WS_HEADER_BYTES_MAX} bytes\n",
        )
    return None


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
    "WS_HEADER_BYTES_MAX",
    "FramedReader",
    "FramingError",
    "bearer_token",
    "open_read_pipe",
    "open_socket",
    "peer_name",
    "read_stream",
    "read_websocket",
    "start_tcp_server",
    "unix_peer",
    "ws_headers_too_large",
]
