"""pygls plumbing: our protocol class and converter.

- The rows of the route table (server/routes.py) marked ``json`` take the lean path here:
  decoded once, handed to the handler as plain JSON, answered with plain JSON (pygls would turn
  custom methods' params into namedtuples and silently rename keys that are not identifiers).
- A request whose params fail validation, or that lacks params, is answered with a JSON-RPC
  error instead of being left unanswered (pygls drops them).
- Text documents are kept by our own session (server/documents.py), not by pygls' workspace,
  whose didChange handling grows quadratically; the builtin handlers only call ours.
- ``exit`` ends this session, never the process (many sessions share one process).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, Literal

import attrs
import cattrs
import orjson
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.protocol import (
    JsonRPCNotification,
    JsonRPCRequestMessage,
    JsonRPCResponseMessage,
    LanguageServerProtocol,
    default_converter,
    lsp_method,
)

from ..store.access import Forbidden, run_as
from . import auth
from .auth import AUTH_HELD_MESSAGES_MAX
from .errors import rpc_error

if TYPE_CHECKING:
    from .routes import Route
    from .session import Session

log = logging.getLogger(__name__)

ReplyCallback = Callable[[Any, BaseException | None], None]  # (result, None) or (None, error)
_sending: set[asyncio.Future[Any]] = set()


@attrs.define
class BadRequest:
    """A request we could not structure: answered with ``error`` by handle_message."""

    id: Any
    method: str
    error: JsonRpcException
    jsonrpc: str = "2.0"


def _request_hook(obj: dict[str, Any], cls: type) -> Any:
    return cls(id=obj["id"], method=obj["method"], jsonrpc=obj["jsonrpc"], params=obj.get("params"))


def _notification_hook(obj: dict[str, Any], cls: type) -> Any:
    return cls(method=obj["method"], jsonrpc=obj["jsonrpc"], params=obj.get("params"))


def _response_hook(obj: dict[str, Any], cls: type) -> Any:
    return cls(id=obj["id"], jsonrpc=obj["jsonrpc"], result=obj.get("result"))


@functools.cache
def make_converter() -> cattrs.Converter:
    """The one converter of the process, shared by every connection's server object. cattrs
    generates each type's (un)structure function on first use and keeps it in the converter: a
    converter per connection generated them again for every session (~25 ms of CPU per session
    open, most of it for InitializeParams and the initialize result)."""
    converter = default_converter()
    converter.register_structure_hook(JsonRPCRequestMessage, _request_hook)
    converter.register_structure_hook(JsonRPCNotification, _notification_hook)
    converter.register_structure_hook(JsonRPCResponseMessage, _response_hook)
    return converter


def json_bytes(message: Any) -> bytes:
    """``message`` as compact JSON (UTF-8), with orjson: 5-10 times json.dumps' speed on the
    messages that go out by the hundred per changeset. json for what orjson refuses (a lone
    surrogate, a key that is not a string)."""
    try:
        return orjson.dumps(message)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(message, separators=(",", ":"), default=_fragment).encode()


def _fragment(value: Any) -> Any:
    """json's fallback for the pieces serialised once and shared (orjson.Fragment)."""
    if isinstance(value, orjson.Fragment):
        return json.loads(value.contents)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# Nesting of one message's JSON: orjson's own limit, which refuses deeper input as it reads it
# (a message nested 100,000 deep costs microseconds, not a stall); tests hold the two equal.
JSON_DEPTH_MAX = 1024
NOT_JSON = object()


def parse_message(body: bytes | str) -> Any:
    """One message body as JSON data; NOT_JSON when it is not JSON or nested deeper than
    JSON_DEPTH_MAX. Its size is bounded before it gets here (framing.MESSAGE_BYTES_MAX)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            return NOT_JSON
    # What orjson refuses but JSON allows (a lone surrogate escape, as JavaScript strings hold):
    # the standard parser, whose C scanner stops at Python's recursion limit as fast.
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return NOT_JSON


async def guarded(
    session: Session, method: str, handler: Callable[..., Awaitable[Any]], params: Any
) -> Any:
    """A request (or a task notification) of an authenticated session: the token is checked
    again (rotation, revocation, removal take effect here), the handler runs as the token's
    agent (its PostgreSQL role), and a refusal is recorded in the audit."""
    agent = await auth.recheck(session)
    with run_as(agent):
        try:
            return await handler(session, params)
        except Forbidden as exc:
            await auth.refused(session, method, exc)
            raise


class DbcodeProtocol(LanguageServerProtocol):
    """pygls' protocol, plus a lean path for the messages that come by the hundred per
    changeset when many editors share one server: didOpen / didChange / didClose, the
    ``dbcode/*`` requests and the answers to our own requests (``workspace/applyEdit``) are
    decoded once (orjson, :func:`parse_message`) and handed to the session directly — no
    cattrs, no uuid, no task per notification. Everything else takes pygls' path, in arrival
    order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session: Session | None = None
        self.routes: dict[str, Route] = {}
        self._fast_tasks: set[asyncio.Task[Any]] = set()
        # Our requests waiting for an answer: a future, or a callback (result, error).
        self._raw_requests: dict[str, asyncio.Future[Any] | ReplyCallback] = {}
        self._raw_ids = itertools.count(1)
        self._corked: list[bytes] | None = None
        # Authentication of the session: "new" until its first message, "pending" while the
        # token is checked (messages held), then "ok" or "refused" (requests answered 401).
        self._auth: Literal["new", "pending", "ok", "refused"] = "new"
        self._held: list[dict[str, Any]] = []
        self._refusal: JsonRpcException | None = None

    def attach(self, session: Session, routes: dict[str, Route]) -> None:
        self.session, self.routes = session, routes

    def receive(self, body: bytes | str) -> None:
        """One message off the wire."""
        data = parse_message(body)
        if not isinstance(data, dict):
            self._answer_unreadable(data is NOT_JSON, len(body))
            return
        if self._auth != "ok":
            self._gate(data)
            return
        self._dispatch(data)

    # -- authentication (server/auth.py): the first message waits for the token's check ----

    def _gate(self, data: dict[str, Any]) -> None:
        if self._auth == "new":
            self._auth = "pending"
            token = None
            params = data.get("params") if data.get("method") == types.INITIALIZE else None
            opts = params.get("initializationOptions") if isinstance(params, dict) else None
            if isinstance(opts, dict):
                token = opts.pop("token", None)  # never passed on (nor logged) from here
            if token is None and self.session is not None:
                token = self.session.transport_token
            self._held = [data]
            task = asyncio.ensure_future(self._authenticate(token))
            self._fast_tasks.add(task)
            task.add_done_callback(self._fast_tasks.discard)
        elif self._auth == "pending":
            if len(self._held) < AUTH_HELD_MESSAGES_MAX:
                self._held.append(data)
            else:
                self._refuse(
                    data,
                    JsonRpcException(
                        code=429, message="too many messages before the session's token was checked"
                    ),
                )
        else:
            assert self._refusal is not None
            self._refuse(data, self._refusal)

    async def _authenticate(self, token: Any) -> None:
        session = self.session
        assert session is not None
        try:
            await auth.authenticate(session, token)
        except Exception as exc:
            error = exc if isinstance(exc, JsonRpcException) else rpc_error(exc)
            self._auth, self._refusal = "refused", error
            held, self._held = self._held, []
            for data in held:
                self._refuse(data, error)
            return
        self._auth = "ok"
        held, self._held = self._held, []
        for data in held:
            self._dispatch(data)

    def _refuse(self, data: dict[str, Any], error: JsonRpcException) -> None:
        """A message of a session that is not authenticated: a request is answered with the
        error, ``exit`` ends the session, anything else is dropped."""
        method = data.get("method")
        if method == types.EXIT:
            self._dispatch(data)
        elif method is not None and "id" in data:
            self.send_raw(
                {
                    "jsonrpc": "2.0",
                    "id": data["id"],
                    "error": {"code": error.code, "message": error.message},
                }
            )

    def _dispatch(self, data: dict[str, Any]) -> None:
        try:
            method = data.get("method")
            if method is None:
                msg_id = data.get("id")
                waiter = self._raw_requests.pop(msg_id, None) if type(msg_id) is str else None
                if waiter is not None:
                    exc: JsonRpcException | None = None
                    if "error" in data:
                        error = data["error"] if isinstance(data["error"], dict) else {}
                        exc = JsonRpcException(
                            code=error.get("code", -32603),
                            message=str(error.get("message", "error")),
                        )
                    if not isinstance(waiter, asyncio.Future):
                        waiter(None if exc else data.get("result"), exc)  # at once, no loop turn
                    elif not waiter.done():
                        if exc is not None:
                            waiter.set_exception(exc)
                        else:
                            waiter.set_result(data.get("result"))
                    return
            elif (route := self.routes.get(method)) is not None and route.params == "json":
                if "id" not in data:
                    self._notification(method, route, data.get("params"))
                    return
                if not getattr(self, "_shutdown", False):
                    self._run_request(data["id"], method, route.handler, data.get("params"))
                    return
            # pygls decodes with structure_message as json's object_hook; only the top-level
            # object carries "jsonrpc", so calling it once on that object is the same.
            self.handle_message(self.structure_message(data))
        except Exception:
            log.exception("unable to handle a message")

    def _notification(self, method: str, route: Route, params: Any) -> None:
        """A lean notification: inline (to the end, before the next message is read), or a
        task of the session's. An inline handler returns False for params it cannot read."""
        session = self.session
        assert session is not None
        if route.runs == "task":
            session.tasks.run(guarded(session, method, route.handler, params))
        elif route.handler(session, params) is False:
            log.warning("%s with params it cannot read: ignored", method)

    def _answer_unreadable(self, not_json: bool, size: int) -> None:
        """JSON-RPC 2.0: a body that is not JSON is answered -32700, JSON that is not a message
        object (LSP has no batches) -32600; both with id null. The session goes on."""
        if not_json:
            code = -32700
            message = f"Parse error: the message is not JSON (or nested over {JSON_DEPTH_MAX} deep)"
        else:
            code, message = -32600, "Invalid Request: the message is not a JSON object"
        log.warning("a message of %d bytes answered %d: %s", size, code, message)
        self.send_raw({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}})

    def _run_request(
        self, msg_id: Any, method: str, handler: Callable[..., Awaitable[Any]], params: Any
    ) -> None:
        assert self.session is not None
        task = asyncio.ensure_future(guarded(self.session, method, handler, params))
        self._fast_tasks.add(task)
        task.add_done_callback(lambda t: self._answer(msg_id, t))

    def _answer(self, msg_id: Any, task: asyncio.Task[Any]) -> None:
        self._fast_tasks.discard(task)
        if task.cancelled():
            error: dict[str, Any] = {"code": -32800, "message": "request cancelled"}
        elif (exc := task.exception()) is not None:
            if not isinstance(exc, JsonRpcException):
                if isinstance(exc, Exception):
                    exc = rpc_error(exc)
                else:
                    exc = JsonRpcException(message=f"internal error: {type(exc).__name__}")
            error = {"code": exc.code, "message": exc.message}
            if exc.data is not None:
                error["data"] = exc.data
        else:  # the lean requests answer plain JSON
            self.send_raw({"jsonrpc": "2.0", "id": msg_id, "result": task.result()})
            return
        self.send_raw({"jsonrpc": "2.0", "id": msg_id, "error": error})

    def request_json(self, method: str, params: Any) -> asyncio.Future[Any]:
        """Send a request whose params are plain JSON (pieces may be orjson.Fragments); returns
        a future of the result (an exception for an error answer; cancel it to stop
        waiting)."""
        msg_id = f"dbcode-{next(self._raw_ids)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._raw_requests[msg_id] = future
        future.add_done_callback(lambda _: self._raw_requests.pop(msg_id, None))
        self.send_raw({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return future

    def request_then(self, method: str, params: Any, on_reply: ReplyCallback) -> str:
        """As :meth:`request_json`, the answer given to ``on_reply(result, None)`` or
        ``on_reply(None, error)`` as soon as it is read (no future, no loop turn: 1,000 answers
        to one commit's pushes). Returns the request's id, for :meth:`forget_request`."""
        msg_id = f"dbcode-{next(self._raw_ids)}"
        self._raw_requests[msg_id] = on_reply
        self.send_raw({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return msg_id

    def forget_request(self, msg_id: str) -> None:
        """Stop waiting for the answer to a request of :meth:`request_then`."""
        self._raw_requests.pop(msg_id, None)

    def close_requests(self) -> None:
        """The connection is gone: fail what is still waiting for an answer."""
        waiting = list(self._raw_requests.values())
        self._raw_requests.clear()
        for waiter in waiting:
            gone = ConnectionError("the client went away")
            if not isinstance(waiter, asyncio.Future):
                try:
                    waiter(None, gone)
                except Exception:
                    log.exception("a reply callback failed")
            elif not waiter.done():
                waiter.set_exception(gone)

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if "jsonrpc" in data and "id" in data and "method" in data:
                method = str(data.get("method"))
                if isinstance(exc, JsonRpcInvalidParams):
                    message = f"invalid params for {method}: they do not match the LSP schema"
                    exc = JsonRpcInvalidParams(message=message)
                return BadRequest(data["id"], method, exc)
            raise

    def send_raw(self, data: dict[str, Any]) -> None:
        """Write one JSON-RPC message given as plain JSON data (no cattrs on the way): the hot
        paths (diagnostics, pushed edits, log lines, answers) build their payloads as dicts."""
        self._send_body(json_bytes(data))

    def cork(self) -> None:
        """Until :meth:`uncork`, messages are kept and then written together: one write, one
        wake-up of the client (a push and the log line that names its author). A WebSocket
        sends each message as a frame of its own: not corked."""
        if self._include_headers:
            self._corked = []

    def uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked:
            self._write(b"".join(corked))

    def send_body(self, body: bytes) -> None:
        """Write one JSON-RPC message already encoded (JSON bytes)."""
        self._send_body(body)

    def _send_body(self, body: bytes) -> None:
        if self._include_headers:
            body = b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        if self._corked is not None:
            self._corked.append(body)
            return
        self._write(body)

    def _write(self, body: bytes) -> None:
        writer = self.writer
        if writer is None:
            return
        res = writer.write(body)
        if inspect.isawaitable(res):  # a WebSocket: the send is a coroutine
            task = asyncio.ensure_future(res)
            _sending.add(task)
            task.add_done_callback(_sending.discard)

    def handle_message(self, message: Any) -> None:
        if isinstance(message, BadRequest):
            log.warning("answering malformed %s with an error", message.method)
            self._send_response(message.id, None, message.error.to_response_error())
            return
        super().handle_message(message)

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams) -> Generator[Any, Any, Any]:
        """pygls' answer, plus workspace/textDocumentContent for dbcode:// (pygls never
        advertises it)."""
        result = yield from super().lsp_initialize(params)
        ws = result.capabilities.workspace or types.WorkspaceOptions()
        ws.text_document_content = types.TextDocumentContentOptions(schemes=["dbcode"])
        result.capabilities.workspace = ws
        return result

    # Text documents: our session keeps them; skip pygls' workspace.
    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> Generator:
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_OPEN)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> Generator:
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> Generator:
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CLOSE)) is not None:
            yield handler, (params,), None

    @lsp_method(types.EXIT)
    def lsp_exit(self, *args: Any) -> Generator:
        if (handler := self.fm.features.get(types.EXIT)) is not None:
            yield handler, args, None
