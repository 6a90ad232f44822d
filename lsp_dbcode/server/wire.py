"""Reading JSON-RPC messages off a stream or a WebSocket and handing them to the protocol.

Replaces pygls' ``run_async`` / ``run_websocket`` loops: those decode every message with the
protocol's ``structure_message`` as ``json.loads``' object hook (called on every nested object)
and dispatch through pygls; ours decode with plain ``json.loads`` and let
:meth:`DbcodeProtocol.receive` take the lean path for the messages that allow it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .protocol import DbcodeProtocol

log = logging.getLogger(__name__)

HEADER_LINES_MAX = 32
MESSAGE_BYTES_MAX = 256 * 2**20


class FramingError(Exception):
    """The byte stream is not LSP's Content-Length framing: the connection is closed."""


async def read_stream(reader: Any, protocol: DbcodeProtocol, stop: threading.Event) -> None:
    """Until EOF or ``stop``: read Content-Length framed messages from ``reader`` (an asyncio
    StreamReader or pygls' thread-backed reader) and pass each to ``protocol.receive``."""
    while not stop.is_set():
        length = -1
        for _ in range(HEADER_LINES_MAX):
            line = await reader.readline()
            if not line:
                return  # EOF
            if line in (b"\r\n", b"\n"):
                if length >= 0:
                    break
                continue  # stray blank line before the headers
            name, sep, value = line.partition(b":")
            if not sep:
                raise FramingError(f"not an LSP header line: {line[:80]!r}")
            if name.strip().lower() == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    raise FramingError(f"bad Content-Length: {value[:40]!r}") from None
        else:
            raise FramingError("too many header lines")
        if not 0 <= length <= MESSAGE_BYTES_MAX:
            raise FramingError(f"message of {length} bytes (limit {MESSAGE_BYTES_MAX})")
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


__all__ = ["FramingError", "read_stream", "read_websocket"]
