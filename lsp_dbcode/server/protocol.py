"""pygls plumbing: our protocol class and converter.

- Custom methods (``dbcode/*``) get their params as plain dicts (pygls would turn them into
  namedtuples and silently rename keys that are not identifiers).
- A request whose params fail validation, or that lacks params, is answered with a JSON-RPC
  error instead of being left unanswered (pygls drops them).
- Text documents are kept by our own session (server/documents.py), not by pygls' workspace,
  whose didChange handling grows quadratically; the builtin handlers only call ours.
- ``exit`` ends this session, never the process (many sessions share one process).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Generator
from typing import Any

import attrs
import cattrs
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

log = logging.getLogger(__name__)
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


def make_converter() -> cattrs.Converter:
    converter = default_converter()
    converter.register_structure_hook(JsonRPCRequestMessage, _request_hook)
    converter.register_structure_hook(JsonRPCNotification, _notification_hook)
    converter.register_structure_hook(JsonRPCResponseMessage, _response_hook)
    return converter


class DbcodeProtocol(LanguageServerProtocol):
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
        paths (diagnostics, pushed edits) build their payloads as dicts."""
        writer = self.writer
        if writer is None:
            return
        body = json.dumps(data, separators=(",", ":")).encode()
        if self._include_headers:
            body = b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
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
