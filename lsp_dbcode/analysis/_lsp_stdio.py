"""A minimal JSON-RPC (LSP base protocol) client over a child process's stdin/stdout.

Only what driving ``ruff server`` needs: requests with a timeout, notifications, answering the
server's own requests with ``null``, and failing every pending request when the child dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from .model import AnalysisError

log = logging.getLogger(__name__)

HEADER_BYTES_MAX = 8 * 1024
BODY_BYTES_MAX = 256 * 1024 * 1024


class LspResponseError(AnalysisError):
    """The server answered a request with a JSON-RPC error."""

    def __init__(self, method: str, error: Any) -> None:
        message = error.get("message") if isinstance(error, dict) else str(error)
        code = error.get("code") if isinstance(error, dict) else None
        super().__init__(f"ruff server failed on {method} ({code}): {message}")
        self.code = code


class LspStdioClient:
    """Talks to one child process. Create, then :meth:`start`; :meth:`close` ends the reader."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        *,
        name: str,
        on_notification: Callable[[str, Any], None] | None = None,
    ) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self._proc = proc
        self._stdin = proc.stdin
        self._stdout = proc.stdout
        self._name = name
        self._on_notification = on_notification
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._methods: dict[int, str] = {}
        self._reader: asyncio.Task[None] | None = None
        self._dead: str | None = None

    @property
    def alive(self) -> bool:
        """False once the child closed its output or the reader failed."""
        return self._dead is None and self._proc.returncode is None

    def start(self) -> None:
        """Start reading the child's messages."""
        assert self._reader is None
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    async def request(
        self,
        method: str,
        params: Any,
        timeout_s: float,
        *,
        notifications: Iterable[tuple[str, Any]] = (),
    ) -> Any:
        """Send a request and wait at most ``timeout_s`` for its result. ``notifications``
        (method, params) go first, in the same write."""
        if self._dead is not None:
            raise AnalysisError(self._dead)
        self._next_id += 1
        msg_id = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        self._methods[msg_id] = method
        try:
            await self._send(
                *({"jsonrpc": "2.0", "method": m, "params": p} for m, p in notifications),
                {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params},
            )
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise AnalysisError(
                f"{self._name} did not answer {method} within {timeout_s:g} s"
            ) from None
        finally:
            self._methods.pop(msg_id, None)
            if self._pending.pop(msg_id, None) is not None and not future.done():
                future.cancel()
                with contextlib.suppress(Exception):
                    await self.notify("$/cancelRequest", {"id": msg_id})

    async def notify(self, method: str, params: Any) -> None:
        """Send a notification."""
        if self._dead is not None:
            raise AnalysisError(self._dead)
        await self._send({"jsonrpc": "2.0", "method": method, "params": params})

    async def _send(self, *messages: dict[str, Any]) -> None:
        """Write ``messages`` at once, before any await (a caller that gets here has sent them,
        even if cancelled later; nothing can come between them), then wait for the pipe."""
        data: list[bytes] = []
        for message in messages:
            body = json.dumps(message, ensure_ascii=False).encode("utf-8", "surrogatepass")
            data += (b"Content-Length: %d\r\n\r\n" % len(body), body)
        try:
            self._stdin.writelines(data)
            await self._stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            self._fail(f"{self._name} stopped reading its input: {exc}")
            raise AnalysisError(self._dead or str(exc)) from exc

    async def _read_loop(self) -> None:
        reason = f"{self._name} exited"
        try:
            while True:
                message = await self._read_message()
                if message is None:
                    break
                self._dispatch(message)
        except asyncio.CancelledError:
            reason = f"{self._name} client closed"
            raise
        except Exception as exc:  # a protocol error from the child: it is unusable now
            reason = f"{self._name} sent something unreadable: {exc}"
            log.warning("%s", reason)
        finally:
            self._fail(reason)

    async def _read_message(self) -> dict[str, Any] | None:
        try:
            header = await self._stdout.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial.strip():
                return None  # the child closed its output between messages
            raise ValueError("output ended inside a header") from None
        except asyncio.LimitOverrunError:
            raise ValueError("header too long") from None
        if len(header) > HEADER_BYTES_MAX:
            raise ValueError("header too long")
        length: int | None = None
        for line in header.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length is None or not 0 <= length <= BODY_BYTES_MAX:
            raise ValueError(f"bad Content-Length {length}")
        body = await self._stdout.readexactly(length)
        message = json.loads(body)
        if not isinstance(message, dict):
            raise ValueError("message is not an object")
        return message

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "method" not in message:  # a response
            msg_id = message.get("id", -1)
            future = self._pending.pop(msg_id, None)
            if future is None or future.done():
                return
            if "error" in message:
                method = self._methods.get(msg_id, "a request")
                future.set_exception(LspResponseError(method, message["error"]))
            else:
                future.set_result(message.get("result"))
            return
        method = message["method"]
        if "id" in message:  # the server asks us something: nothing we offer, answer null
            result: Any = None
            if method == "workspace/configuration":
                items = (message.get("params") or {}).get("items") or []
                result = [None for _ in items]
            reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
            task = asyncio.get_running_loop().create_task(self._send(reply))
            task.add_done_callback(_log_task_error)
            return
        if self._on_notification is not None:
            self._on_notification(method, message.get("params"))

    def _fail(self, reason: str) -> None:
        if self._dead is None:
            self._dead = reason
        for future in self._pending.values():
            if not future.done():
                future.set_exception(AnalysisError(reason))
        self._pending.clear()

    async def close(self) -> None:
        """Stop the reader (the caller ends the process)."""
        self._fail(f"{self._name} client closed")
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


def _log_task_error(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("reply to ruff server failed: %s", task.exception())
