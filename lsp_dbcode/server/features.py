"""The language server's handlers: thin glue from LSP messages to the session.

``create_server(app)`` builds one pygls server object per connection (pygls serves one client
per object); they share ``app`` — one pool, one LISTEN connection, caches.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInternalError, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import lsp_method

from .. import __version__
from ..check import check_workspace
from ..store import (
    Claimed,
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    NotFound,
    StoreError,
    validate,
)
from ..text.merge import resolve
from ..text.positions import Encoding
from ..uris import make_uri
from .analysis import to_lsp
from .app import App
from .protocol import DbcodeProtocol, make_converter
from .session import Session

log = logging.getLogger(__name__)

CODE_CONFLICT = 409
CODE_NOT_FOUND = 404
CODE_UNAVAILABLE = 503
LOG_LIMIT_MAX = 10_000


class DbcodeLanguageServer(LanguageServer):
    protocol: DbcodeProtocol
    session: Session
    on_exit: Callable[[], None] | None = None


class _Protocol(DbcodeProtocol):
    """Advertises workspace/textDocumentContent for dbcode:// (pygls never does)."""

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams) -> Generator[Any, Any, Any]:
        result = yield from super().lsp_initialize(params)
        ws = result.capabilities.workspace or types.WorkspaceOptions()
        ws.text_document_content = types.TextDocumentContentOptions(schemes=["dbcode"])
        result.capabilities.workspace = ws
        return result


def rpc_error(exc: Exception) -> JsonRpcException:
    """Our errors as JSON-RPC errors with a clear message (and data for conflicts)."""
    if isinstance(exc, JsonRpcException):
        return exc
    if isinstance(exc, Conflict):
        return JsonRpcException(
            code=CODE_CONFLICT,
            message=str(exc),
            data={
                "uri": make_uri(exc.workspace, exc.path),
                "currentRevision": exc.current_revision,
            },
        )
    if isinstance(exc, Claimed):
        from .review import CODE_CLAIMED, claim_lsp

        return JsonRpcException(
            code=CODE_CLAIMED,
            message=str(exc),
            data={"uri": make_uri(exc.workspace, exc.path), "claim": claim_lsp(exc.claim)},
        )
    if isinstance(exc, NotFound):
        return JsonRpcException(code=CODE_NOT_FOUND, message=str(exc))
    if isinstance(exc, DatabaseUnavailable):
        return JsonRpcException(code=CODE_UNAVAILABLE, message=str(exc))
    if isinstance(exc, (InvalidInput, ValueError, TypeError, KeyError)):
        return JsonRpcInvalidParams(
            message=str(exc) if not isinstance(exc, KeyError) else f"missing parameter {exc}"
        )
    if isinstance(exc, StoreError):
        return JsonRpcInternalError(message=str(exc))
    log.exception("unexpected error", exc_info=exc)
    return JsonRpcInternalError(message=f"internal error: {type(exc).__name__}; see the server log")


def _request(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any) -> Any:
        try:
            return await fn(*args)
        except Exception as exc:
            raise rpc_error(exc) from None

    return wrapper


# -- parameter checking for the dbcode/* requests (they arrive as plain JSON) ---------------


def _obj(params: Any, method: str) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise InvalidInput(f"{method} takes an object of params")
    return params


def _str(p: dict[str, Any], key: str, *, optional: bool = False) -> Any:
    value = p.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"parameter {key!r} must be a string")
    return value


def _int(p: dict[str, Any], key: str, *, optional: bool = False) -> Any:
    value = p.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"parameter {key!r} must be a non-negative integer")
    return value


def create_server(
    app: App, default_agent: str, forced_agent: str | None = None
) -> DbcodeLanguageServer:
    server = DbcodeLanguageServer(
        "dbcode",
        __version__,
        text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
        protocol_cls=_Protocol,
        converter_factory=make_converter,
    )
    session = Session(app, server)
    server.session = session

    def lean(method: str) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
        """A dbcode/* request: params and result are plain JSON, so it takes the protocol's
        lean path (no cattrs, answered as soon as the handler returns); our errors become
        JSON-RPC errors with a clear message."""

        def register(fn: Callable[..., Awaitable[Any]]) -> Any:
            wrapped = _request(fn)
            server.protocol.fast_requests[method] = lambda params: wrapped(server, params)
            return wrapped

        return register

    from .review import register as register_review

    register_review(server, session, lean)

    @server.feature(types.INITIALIZE)
    def initialize(ls: DbcodeLanguageServer, params: types.InitializeParams) -> None:
        warnings = session.configure(params, default_agent, forced_agent)
        enc = ls.workspace.position_encoding or types.PositionEncodingKind.Utf16
        session.encoding = Encoding(str(enc.value if hasattr(enc, "value") else enc))
        for w in warnings:
            log.warning("initializationOptions: %s", w)
        session.init_warnings = warnings  # type: ignore[attr-defined]

    @server.feature(types.INITIALIZED)
    def initialized(ls: DbcodeLanguageServer, params: types.InitializedParams) -> None:
        for w in getattr(session, "init_warnings", []):
            session.show(types.MessageType.Warning, f"dbcode: {w}")

    @server.feature(types.EXIT)
    def exit_(ls: DbcodeLanguageServer, *args: Any) -> None:
        if ls.on_exit is not None:
            ls.on_exit()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    async def did_open(ls: DbcodeLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
        await session.did_open(params.text_document)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    async def did_change(
        ls: DbcodeLanguageServer, params: types.DidChangeTextDocumentParams
    ) -> None:
        # Applied synchronously (no await before the buffer is updated), so changes apply in
        # arrival order whatever else is running.
        await session.did_change(params)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    async def did_close(ls: DbcodeLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
        await session.did_close(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE, types.SaveOptions(include_text=False))
    async def did_save(ls: DbcodeLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
        await session.did_save(params.text_document.uri, params.text)

    @lean("dbcode/listFiles")
    async def list_files(ls: DbcodeLanguageServer, params: Any) -> Any:
        p = _obj(params, "dbcode/listFiles")
        return await session.list_files(
            validate.check_workspace(_str(p, "workspace")), _str(p, "prefix", optional=True) or ""
        )

    @lean("dbcode/workspaces")
    async def workspaces(ls: DbcodeLanguageServer, params: Any) -> Any:
        return [
            {"name": w.name, "uri": make_uri(w.name), "files": w.files, "seq": w.head_seq}
            for w in await app.store.workspaces()
        ]

    @lean("dbcode/readFile")
    async def read_file(ls: DbcodeLanguageServer, params: Any) -> Any:
        p = _obj(params, "dbcode/readFile")
        rev = _int(p, "revision", optional=True)
        if rev == 0:
            raise InvalidInput("revision must be >= 1")
        return await session.read_file(_str(p, "uri"), rev)

    @lean("dbcode/writeFile")
    async def write_file(ls: DbcodeLanguageServer, params: Any) -> Any:
        p = _obj(params, "dbcode/writeFile")
        return await session.write_file(
            _str(p, "uri"), _str(p, "text"), _int(p, "baseRevision", optional=True)
        )

    @lean("dbcode/commit")
    async def commit(ls: DbcodeLanguageServer, params: Any) -> Any:
        p = _obj(params, "dbcode/commit")
        workspace = validate.check_workspace(_str(p, "workspace"))
        changes = p.get("changes")
        if not isinstance(changes, list) or not changes:
            raise InvalidInput("parameter 'changes' must be a non-empty list")
        checked = []
        for ch in changes:
            c = _obj(ch, "a change")
            if "text" in c and c["text"] is not None:
                _str(c, "text")
            checked.append(
                {
                    "uri": _str(c, "uri"),
                    "text": c.get("text"),
                    "baseRevision": _int(c, "baseRevision", optional=True),
                }
            )
        return await session.commit(workspace, _str(p, "message", optional=True), checked)

    @lean("dbcode/log")
    async def log_(ls: DbcodeLanguageServer, params: Any) -> Any:
        p = _obj(params, "dbcode/log")
        limit = _int(p, "limit", optional=True) or 50
        if limit > LOG_LIMIT_MAX:
            raise InvalidInput(f"limit must be at most {LOG_LIMIT_MAX}")
        return await session.log(
            validate.check_workspace(_str(p, "workspace")), _str(p, "path", optional=True), limit
        )

    @lean("dbcode/subscribe")
    async def subscribe(ls: DbcodeLanguageServer, params: Any) -> Any:
        p = _obj(params, "dbcode/subscribe")
        return await session.subscribe(
            validate.check_workspace(_str(p, "workspace")),
            _int(p, "sinceSeq", optional=True),
            _int(p, "sinceCommentSeq", optional=True),
        )

    @lean("dbcode/unsubscribe")
    async def unsubscribe(ls: DbcodeLanguageServer, params: Any) -> Any:
        p = _obj(params, "dbcode/unsubscribe")
        session.unsubscribe(validate.check_workspace(_str(p, "workspace")))
        return None

    @lean("dbcode/configure")
    async def configure(ls: DbcodeLanguageServer, params: Any) -> Any:
        """Change agent and/or mode of this session: {agent?, mode?}."""
        p = _obj(params, "dbcode/configure")
        agent = _str(p, "agent", optional=True)
        mode = _str(p, "mode", optional=True)
        if agent is not None:
            if not 0 < len(agent) <= 200:
                raise InvalidInput("agent must be 1-200 characters")
            session.agent = agent
        if mode is not None:
            if mode not in ("save", "live"):
                raise InvalidInput("mode must be 'save' or 'live'")
            session.mode = mode  # type: ignore[assignment]
        return {"agent": session.agent, "mode": session.mode}

    @server.feature(types.WORKSPACE_TEXT_DOCUMENT_CONTENT)
    @_request
    async def text_document_content(
        ls: DbcodeLanguageServer, params: types.TextDocumentContentParams
    ) -> types.TextDocumentContentResult:
        res = await session.read_file(params.uri, None)
        return types.TextDocumentContentResult(text=res["text"])

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(
            code_action_kinds=[
                types.CodeActionKind.QuickFix,
                "source.fixAll.ruff",
                "source.organizeImports.ruff",
            ]
        ),
    )
    @_request
    async def code_action(
        ls: DbcodeLanguageServer, params: types.CodeActionParams
    ) -> list[types.CodeAction] | None:
        doc = session.docs.get(params.text_document.uri)
        if doc is None:
            return None
        actions: list[types.CodeAction] = []
        enc = session.encoding
        want = params.range
        for conflict in doc.conflicts:
            rng = doc.lsp_range(conflict.start, conflict.end, enc)
            if (want.end.line, want.end.character) < (rng.start.line, rng.start.character) or (
                want.start.line,
                want.start.character,
            ) > (rng.end.line, rng.end.character):
                continue
            for choice, title in (
                ("mine", "Keep mine"),
                ("theirs", "Take theirs"),
                ("both", "Keep both"),
            ):
                edit = resolve(doc.text, conflict, choice)  # type: ignore[arg-type]
                text_edits = doc.text_edits([edit], enc)
                actions.append(
                    types.CodeAction(
                        title=f"dbcode: {title}",
                        kind=types.CodeActionKind.QuickFix,
                        edit=_workspace_edit(session, doc.uri, doc.version, text_edits),
                        is_preferred=choice == "mine",
                    )
                )
        actions.extend(await session.analysis.code_actions(doc, params))
        from .review import code_actions as review_actions

        actions.extend(review_actions(session, doc, params))
        return actions or None

    @server.feature(types.TEXT_DOCUMENT_FORMATTING)
    @_request
    async def formatting(
        ls: DbcodeLanguageServer, params: types.DocumentFormattingParams
    ) -> list[types.TextEdit] | None:
        doc = _open_doc(session, params.text_document.uri)
        return await session.analysis.format(doc, None)

    @server.feature(types.TEXT_DOCUMENT_RANGE_FORMATTING)
    @_request
    async def range_formatting(
        ls: DbcodeLanguageServer, params: types.DocumentRangeFormattingParams
    ) -> list[types.TextEdit] | None:
        doc = _open_doc(session, params.text_document.uri)
        _check_range(doc, params.range, session)
        return await session.analysis.format(doc, params.range)

    @server.feature(types.TEXT_DOCUMENT_WILL_SAVE_WAIT_UNTIL)
    @_request
    async def will_save_wait_until(
        ls: DbcodeLanguageServer, params: types.WillSaveTextDocumentParams
    ) -> list[types.TextEdit] | None:
        doc = session.docs.get(params.text_document.uri)
        if doc is None or not session.format_on_save:
            return None
        return await session.analysis.format(doc, None)

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    @_request
    async def document_symbol(
        ls: DbcodeLanguageServer, params: types.DocumentSymbolParams
    ) -> list[types.DocumentSymbol] | None:
        return session.analysis.symbols(_open_doc(session, params.text_document.uri))

    @server.feature(types.TEXT_DOCUMENT_FOLDING_RANGE)
    @_request
    async def folding_range(
        ls: DbcodeLanguageServer, params: types.FoldingRangeParams
    ) -> list[types.FoldingRange] | None:
        return session.analysis.folds(_open_doc(session, params.text_document.uri))

    @server.feature(
        types.TEXT_DOCUMENT_DIAGNOSTIC,
        types.DiagnosticOptions(
            identifier="dbcode", inter_file_dependencies=False, workspace_diagnostics=True
        ),
    )
    @_request
    async def document_diagnostic(
        ls: DbcodeLanguageServer, params: types.DocumentDiagnosticParams
    ) -> types.RelatedFullDocumentDiagnosticReport:
        doc = _open_doc(session, params.text_document.uri)
        await session.analysis.ready(doc)
        items = [d for src, ds in doc.diagnostics.items() if src in ("ruff", "syntax") for d in ds]
        return types.RelatedFullDocumentDiagnosticReport(items=items)

    @server.feature(types.WORKSPACE_DIAGNOSTIC)
    @_request
    async def workspace_diagnostic(
        ls: DbcodeLanguageServer, params: types.WorkspaceDiagnosticParams
    ) -> types.WorkspaceDiagnosticReport:
        workspaces = session.workspaces()
        items: list[types.WorkspaceFullDocumentDiagnosticReport] = []
        for workspace in workspaces:
            report = await check_workspace(app.store, app.analyzer.ruff, workspace)
            for path, found in sorted(report.items()):
                uri = make_uri(workspace, path)
                doc = session.docs.get(uri)
                index = doc.index if doc else None
                if index is None or index.text != report.texts.get(path):
                    index = report.index(path)
                items.append(
                    types.WorkspaceFullDocumentDiagnosticReport(
                        uri=uri,
                        version=None,
                        items=[to_lsp(index, d, session.encoding) for d in found],
                    )
                )
        return types.WorkspaceDiagnosticReport(items=items)  # type: ignore[arg-type]

    return server


def _open_doc(session: Session, uri: str) -> Any:
    doc = session.docs.get(uri)
    if doc is None:
        raise InvalidInput(f"{uri} is not open in this session (send didOpen first)")
    return doc


def _check_range(doc: Any, rng: types.Range, session: Session) -> None:
    for pos in (rng.start, rng.end):
        doc.index.offset(pos.line, pos.character, session.encoding)


def _workspace_edit(
    session: Session, uri: str, version: int, edits: list[types.TextEdit]
) -> types.WorkspaceEdit:
    if session.supports_document_changes:
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
