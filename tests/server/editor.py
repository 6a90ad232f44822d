"""A scripted editor for end-to-end tests: a real pytest-lsp client talking to a real
`dbcode serve` process, keeping buffers the way an editor does (applies workspace/applyEdit
to its buffer and reports the result as an incremental didChange, refuses edits for a stale
version like VS Code does)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lsprotocol import types
from pytest_lsp import LanguageClient
from pytest_lsp.client import register_lsp_features

from lsp_dbcode.server.protocol import make_converter
from lsp_dbcode.text.positions import Encoding, LineIndex

SERVER_CMD = [sys.executable, "-m", "lsp_dbcode", "serve"]


@dataclass
class Buffer:
    uri: str
    text: str
    version: int = 1
    applied: list[Any] = field(default_factory=list)


class Editor:
    def __init__(self, name: str) -> None:
        self.name = name
        self.client = LanguageClient(converter_factory=make_converter)
        register_lsp_features(self.client)
        self.buffers: dict[str, Buffer] = {}
        self.encoding = Encoding.UTF16
        self.refuse_edits = False
        self.refused = 0  # applyEdits answered applied=false
        # Called as an applyEdit arrives, before it is looked at: typing that reaches the server
        # just before the answer (Neovim flushes its debounced didChange, then refuses).
        self.before_answer: Callable[[], None] | None = None
        self.notifications: list[tuple[str, Any]] = []
        self.commits: list[dict[str, Any]] = []
        self.client.feature(types.WORKSPACE_APPLY_EDIT)(lambda ls, params: self._apply_edit(params))
        self.client.feature("dbcode/didCommit")(lambda ls, params: self._did_commit(params))

    @classmethod
    async def start(
        cls,
        database_url: str,
        name: str,
        *,
        mode: str = "save",
        encodings: list[str] | None = None,
        env: dict[str, str] | None = None,
        pull: bool = False,
        tcp: tuple[str, int] | None = None,
        ws: tuple[str, int] | None = None,
        token: str | None = None,
    ) -> Editor:
        ed = cls(name)
        if tcp is not None:
            await ed.client.start_tcp(*tcp)
        elif ws is not None:
            await ed.client.start_ws(*ws)
        else:
            server_env = {k: v for k, v in os.environ.items() if k != "DBCODE_AGENT"}
            server_env.update({"DBCODE_DATABASE_URL": database_url, **(env or {})})
            await ed.client.start_io(*SERVER_CMD, env=server_env)
        caps = types.ClientCapabilities(
            workspace=types.WorkspaceClientCapabilities(
                apply_edit=True,
                workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=True),
            ),
            general=types.GeneralClientCapabilities(
                position_encodings=[types.PositionEncodingKind(e) for e in encodings]
            )
            if encodings
            else None,
            text_document=types.TextDocumentClientCapabilities(
                synchronization=types.TextDocumentSyncClientCapabilities(did_save=True),
                publish_diagnostics=types.PublishDiagnosticsClientCapabilities(),
                code_action=types.CodeActionClientCapabilities(),
                diagnostic=types.DiagnosticClientCapabilities() if pull else None,
            ),
        )
        result = await ed.client.initialize_session(
            types.InitializeParams(
                capabilities=caps,
                initialization_options={"agent": name, "mode": mode}
                | ({"token": token} if token is not None else {}),
            )
        )
        enc = result.capabilities.position_encoding or "utf-16"
        ed.encoding = Encoding(str(getattr(enc, "value", enc)))
        return ed

    async def stop(self) -> None:
        if self.client._server is None:  # tcp / ws: no process to wait for
            await asyncio.wait_for(self.client.shutdown_async(None), 15)
            self.client.exit(None)
            await self.client.stop()
            return
        await asyncio.wait_for(self.client.shutdown_session(), 15)

    # -- server -> client -------------------------------------------------------------------

    def _did_commit(self, params: Any) -> None:
        self.commits.append(params)

    def _apply_edit(self, params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        if self.before_answer is not None:
            self.before_answer()
        for change in params.edit.document_changes or []:
            assert isinstance(change, types.TextDocumentEdit)
            buf = self.buffers[change.text_document.uri]
            if self.refuse_edits or change.text_document.version != buf.version:
                self.refused += 1
                return types.ApplyWorkspaceEditResult(applied=False, failure_reason="version")
            edits = sorted(
                change.edits,
                key=lambda e: (e.range.start.line, e.range.start.character),
                reverse=True,
            )
            content_changes = []
            for e in edits:
                self._replace(buf, e.range, e.new_text)
                content_changes.append(
                    types.TextDocumentContentChangePartial(range=e.range, text=e.new_text)
                )
            buf.version += 1
            buf.applied.append(params)
            self.client.text_document_did_change(
                types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(
                        uri=buf.uri, version=buf.version
                    ),
                    content_changes=content_changes,
                )
            )
        return types.ApplyWorkspaceEditResult(applied=True)

    def _replace(self, buf: Buffer, rng: types.Range, text: str) -> None:
        index = LineIndex(buf.text)
        s = index.offset(rng.start.line, rng.start.character, self.encoding)
        e = index.offset(rng.end.line, rng.end.character, self.encoding)
        buf.text = buf.text[:s] + text + buf.text[e:]

    # -- client -> server -------------------------------------------------------------------

    async def request(self, method: str, params: Any) -> Any:
        return await self.client.protocol.send_request_async(method, params)

    async def open(self, uri: str, language_id: str = "python") -> Buffer:
        try:
            text = (await self.request("dbcode/readFile", {"uri": uri}))["text"]
        except Exception as exc:
            if "no such file" not in str(exc):
                raise
            text = ""
        buf = Buffer(uri, text)
        self.buffers[uri] = buf
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, language_id, 1, text))
        )
        return buf

    def close(self, uri: str) -> None:
        self.buffers.pop(uri)
        self.client.text_document_did_close(
            types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri))
        )

    def edit(self, uri: str, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        """Type: replace the range (line, character in the negotiated encoding) by text."""
        buf = self.buffers[uri]
        rng = types.Range(types.Position(*start), types.Position(*end))
        self._replace(buf, rng, text)
        buf.version += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=buf.version),
                content_changes=[types.TextDocumentContentChangePartial(range=rng, text=text)],
            )
        )

    def type_at_offset(self, uri: str, offset: int, text: str, delete: int = 0) -> None:
        index = LineIndex(self.buffers[uri].text)
        start = index.position(offset, self.encoding)
        end = index.position(offset + delete, self.encoding)
        self.edit(uri, start, end, text)

    def save(self, uri: str) -> None:
        self.client.text_document_did_save(
            types.DidSaveTextDocumentParams(types.TextDocumentIdentifier(uri))
        )

    def diagnostics(self, uri: str, source: str | None = None) -> list[types.Diagnostic]:
        return [
            d for d in self.client.diagnostics.get(uri, []) if source is None or d.source == source
        ]


async def wait_until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.02)
