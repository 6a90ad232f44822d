"""A minimal asyncio JSON-RPC client with LSP's Content-Length framing, shared by the
benchmarks (small and cheap, so that the clients are never what is measured: orjson, which
lsp-dbcode depends on anyway, decodes and encodes)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from typing import Any

import orjson


class RpcError(Exception):
    pass


class Rpc:
    """JSON-RPC over a pair of asyncio streams (a socket, or a child's stdout/stdin).

    Requests of the server are answered by ``on_request(msg, arrival time)`` if set (it must
    answer itself), else with null (``workspace/configuration``: a null per item) and counted
    in ``server_requests``. ``on_publish(params, arrival time)`` gets publishDiagnostics; other
    notifications are ignored."""

    def __init__(self, reader: asyncio.StreamReader, writer: Any, name: str) -> None:
        self.reader = reader
        self.writer = writer
        self.name = name
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.on_request: Callable[[dict[str, Any], float], None] | None = None
        self.on_publish: Callable[[dict[str, Any], float], None] | None = None
        # Other notifications: (method, params, arrival time).
        self.on_notify: Callable[[str, Any, float], None] | None = None
        self.server_requests: dict[str, int] = {}
        self.closed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    def send(self, msg: dict[str, Any]) -> None:
        body = orjson.dumps(msg)
        self.writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def request_nowait(self, method: str, params: Any) -> asyncio.Future[Any]:
        self._next_id += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = fut
        self.send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        return fut

    async def request(self, method: str, params: Any, timeout: float = 60.0) -> Any:
        return await asyncio.wait_for(self.request_nowait(method, params), timeout)

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def respond(self, id_: Any, result: Any) -> None:
        self.send({"jsonrpc": "2.0", "id": id_, "result": result})

    async def _read_loop(self) -> None:
        reader = self.reader
        try:
            while True:
                header = await reader.readuntil(b"\r\n\r\n")
                m = re.search(rb"content-length:\s*(\d+)", header, re.IGNORECASE)
                if m is None:
                    raise RpcError(f"{self.name}: bad header {header!r}")
                body = await reader.readexactly(int(m.group(1)))
                t = time.perf_counter()
                msg = orjson.loads(body)
                method = msg.get("method")
                if method is None:
                    fut = self._pending.pop(msg.get("id"), None)
                    if fut is not None and not fut.done():
                        if "error" in msg:
                            fut.set_exception(RpcError(f"{self.name}: {msg['error']}"))
                        else:
                            fut.set_result(msg.get("result"))
                elif "id" in msg:
                    if self.on_request is not None:
                        self.on_request(msg, t)
                        continue
                    self.server_requests[method] = self.server_requests.get(method, 0) + 1
                    params = msg.get("params") or {}
                    result = (
                        [None] * len(params.get("items") or [])
                        if method == "workspace/configuration"
                        else None
                    )
                    self.respond(msg["id"], result)
                elif method == "textDocument/publishDiagnostics" and self.on_publish:
                    self.on_publish(msg["params"], t)
                elif self.on_notify is not None:
                    self.on_notify(method, msg.get("params"), t)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(RpcError(f"{self.name}: connection closed"))

    async def shutdown(self) -> None:
        """LSP shutdown + exit, then stop reading."""
        with contextlib.suppress(Exception):
            await self.request("shutdown", None, timeout=10)
            self.notify("exit", None)
            await self.writer.drain()
        with contextlib.suppress(Exception):
            self.writer.close()
        self._task.cancel()
