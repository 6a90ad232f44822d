"""The port to one editor: everything the server sends a client goes through a :class:`Client`.

A Client knows what was negotiated with its editor at ``initialize`` (the position encoding,
whether it takes versioned ``documentChanges``, whether it pulls diagnostics) and sends plain
JSON (orjson; pieces shared by many clients go in as ``orjson.Fragment``, serialised once). The
helpers of a session (document sync, lint, commits) are given the Client, never the session.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from ..text.positions import Encoding

if TYPE_CHECKING:
    from .protocol import DbcodeProtocol, ReplyCallback

# LSP MessageType
ERROR, WARNING, INFO = 1, 2, 3


class Client:
    def __init__(self, protocol: DbcodeProtocol) -> None:
        self._protocol = protocol
        self.encoding = Encoding.UTF16
        self.document_changes = False  # takes versioned documentChanges in a WorkspaceEdit
        self.pull_diagnostics = False  # asks with textDocument/diagnostic; not pushed to
        self.closed = False

    def publish_diagnostics(self, uri: str, version: int | None, items: list[Any]) -> None:
        """``items``: LSP Diagnostic JSON (dicts, or Fragments of serialised ones)."""
        params = {"uri": uri, "diagnostics": items, "version": version}
        self.notify("textDocument/publishDiagnostics", params)

    def clear_diagnostics(self, uri: str) -> None:
        self.notify("textDocument/publishDiagnostics", {"uri": uri, "diagnostics": []})

    def apply_edit(self, label: str, edit: dict[str, Any], on_reply: ReplyCallback) -> str:
        """Send ``workspace/applyEdit``; ``on_reply(result, None)`` gets the client's result, or
        ``on_reply(None, error)`` an error answer or a lost connection, as soon as it is read.
        Returns the request's id (:meth:`forget_reply` stops waiting)."""
        params = {"label": label, "edit": edit}
        return self._protocol.request_then("workspace/applyEdit", params, on_reply)

    def forget_reply(self, request_id: str) -> None:
        self._protocol.forget_request(request_id)

    def request(self, method: str, params: Any) -> asyncio.Future[Any]:
        return self._protocol.request_json(method, params)

    def show(self, kind: int, message: str) -> None:
        """``window/showMessage`` (kind: ERROR, WARNING, INFO)."""
        self.notify("window/showMessage", {"type": int(kind), "message": message})

    def log(self, message: str) -> None:
        self.notify("window/logMessage", {"type": INFO, "message": message})

    def notify(self, method: str, params: Any) -> None:
        if not self.closed:
            self._protocol.send_raw({"jsonrpc": "2.0", "method": method, "params": params})

    def send_encoded(self, body: bytes) -> None:
        """A message already encoded as JSON (one shared by many clients, encoded once)."""
        if not self.closed:
            self._protocol.send_body(body)

    def cork(self) -> None:
        """Until :meth:`uncork`, what is sent goes out in one write (a push and the log line
        naming its author: one wake-up of the editor)."""
        self._protocol.cork()

    def uncork(self) -> None:
        self._protocol.uncork()


def workspace_edit(
    client: Client, uri: str, version: int, edits: list[types.TextEdit]
) -> types.WorkspaceEdit:
    """``edits`` of one document as the WorkspaceEdit this client takes (versioned
    documentChanges, or plain changes)."""
    if client.document_changes:
        return types.WorkspaceEdit(
            document_changes=[
                types.TextDocumentEdit(
                    text_document=types.OptionalVersionedTextDocumentIdentifier(
                        uri=uri, version=version
                    ),
                    edits=edits,  # type: ignore[arg-type]
                )
            ]
        )
    return types.WorkspaceEdit(changes={uri: edits})


def workspace_edit_json(client: Client, uri: str, version: int, edits: Any) -> dict[str, Any]:
    """As :func:`workspace_edit`, LSP JSON; ``edits``: TextEdit JSON (or a Fragment of it)."""
    if client.document_changes:
        doc = {"uri": uri, "version": version}
        return {"documentChanges": [{"textDocument": doc, "edits": edits}]}
    return {"changes": {uri: edits}}
