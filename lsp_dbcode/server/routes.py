"""The one route table: method -> handler, and how it runs.

Every method the server handles is a row of :data:`ROUTES`:

- ``params="json"``: the message takes the lean path (server/protocol.py): decoded once with
  ``json.loads`` and handed to the handler as plain JSON, no cattrs; a request's result is plain
  JSON too. ``params="lsp"``: pygls structures the params into lsprotocol objects, and
  serialises the result.
- ``runs="inline"``: called on the event loop as the message is read, in arrival order, to
  the end (text sync: a change is applied before the next message is read). ``runs="task"``:
  a task of its own (pygls' for "lsp" rows); a request is answered when it ends, our errors as
  JSON-RPC errors with a clear message (:func:`rpc_error`).
- ``options``: what the server advertises for it at ``initialize`` (pygls computes the
  capabilities from the features registered; every row but the ``dbcode/*`` ones is).

:data:`COMMANDS` are the ``workspace/executeCommand`` commands (the Resolve code action's).

:func:`create_server` builds one connection: the pygls server object (pygls serves one client
per object), its protocol, and the Session, with the table's routes registered.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from .. import __version__
from .errors import rpc_error
from .handlers import dbcode, language, lifecycle, review, text_sync
from .protocol import DbcodeProtocol, guarded, make_converter
from .session import Session

if TYPE_CHECKING:
    from .shared import Shared

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    handler: Callable[..., Any]
    runs: Literal["inline", "task"]
    params: Literal["json", "lsp"]
    options: Any = None


_CODE_ACTIONS = types.CodeActionOptions(
    code_action_kinds=[
        types.CodeActionKind.QuickFix,
        "source.fixAll.ruff",
        "source.organizeImports.ruff",
    ]
)
_DIAGNOSTICS = types.DiagnosticOptions(
    identifier="dbcode", inter_file_dependencies=False, workspace_diagnostics=True
)

ROUTES: dict[str, Route] = {
    # lifecycle (pygls answers initialize, with the capabilities of the rows below)
    types.INITIALIZE: Route(lifecycle.initialize, "inline", "lsp"),
    types.INITIALIZED: Route(lifecycle.initialized, "inline", "lsp"),
    types.EXIT: Route(lifecycle.exit_, "inline", "lsp"),
    # text sync
    types.TEXT_DOCUMENT_DID_OPEN: Route(text_sync.did_open, "inline", "json"),
    types.TEXT_DOCUMENT_DID_CHANGE: Route(text_sync.did_change, "inline", "json"),
    types.TEXT_DOCUMENT_DID_CLOSE: Route(text_sync.did_close, "inline", "json"),
    types.TEXT_DOCUMENT_DID_SAVE: Route(
        text_sync.did_save, "task", "json", types.SaveOptions(include_text=False)
    ),
    # dbcode/*
    "dbcode/listFiles": Route(dbcode.list_files, "task", "json"),
    "dbcode/workspaces": Route(dbcode.workspaces, "task", "json"),
    "dbcode/readFile": Route(dbcode.read_file, "task", "json"),
    "dbcode/writeFile": Route(dbcode.write_file, "task", "json"),
    "dbcode/commit": Route(dbcode.commit, "task", "json"),
    "dbcode/log": Route(dbcode.log, "task", "json"),
    "dbcode/check": Route(dbcode.check, "task", "json"),
    "dbcode/subscribe": Route(dbcode.subscribe, "task", "json"),
    "dbcode/unsubscribe": Route(dbcode.unsubscribe, "task", "json"),
    "dbcode/configure": Route(dbcode.configure, "task", "json"),
    "dbcode/blame": Route(dbcode.blame, "task", "json"),
    # dbcode/*: review threads, claims, presence
    "dbcode/comment": Route(review.comment, "task", "json"),
    "dbcode/reply": Route(review.reply, "task", "json"),
    "dbcode/resolve": Route(review.resolve, "task", "json"),
    "dbcode/comments": Route(review.comments, "task", "json"),
    "dbcode/claim": Route(review.claim, "task", "json"),
    "dbcode/release": Route(review.release, "task", "json"),
    "dbcode/claims": Route(review.claims, "task", "json"),
    "dbcode/presence": Route(review.presence, "task", "json"),
    # language features
    types.WORKSPACE_TEXT_DOCUMENT_CONTENT: Route(language.text_document_content, "task", "lsp"),
    types.TEXT_DOCUMENT_HOVER: Route(language.hover, "task", "lsp"),
    types.TEXT_DOCUMENT_CODE_ACTION: Route(language.code_action, "task", "lsp", _CODE_ACTIONS),
    types.TEXT_DOCUMENT_FORMATTING: Route(language.formatting, "task", "lsp"),
    types.TEXT_DOCUMENT_RANGE_FORMATTING: Route(language.range_formatting, "task", "lsp"),
    types.TEXT_DOCUMENT_WILL_SAVE_WAIT_UNTIL: Route(language.will_save_wait_until, "task", "lsp"),
    types.TEXT_DOCUMENT_DOCUMENT_SYMBOL: Route(language.document_symbol, "task", "lsp"),
    types.TEXT_DOCUMENT_FOLDING_RANGE: Route(language.folding_range, "task", "lsp"),
    types.TEXT_DOCUMENT_DIAGNOSTIC: Route(
        language.document_diagnostic, "task", "lsp", _DIAGNOSTICS
    ),
    types.WORKSPACE_DIAGNOSTIC: Route(language.workspace_diagnostic, "task", "lsp"),
}

# workspace/executeCommand: command -> handler of (session, arguments). pygls answers the
# method and advertises the commands (executeCommandProvider).
COMMANDS: dict[str, Callable[..., Any]] = {
    review.RESOLVE_COMMAND: review.resolve_thread,
}


class DbcodeLanguageServer(LanguageServer):
    protocol: DbcodeProtocol
    session: Session


def _pygls_handler(session: Session, method: str, route: Route) -> Callable[..., Any]:
    """The feature pygls calls for a row: the handler with the session, params as the row
    takes them; a request's errors as clear JSON-RPC errors."""
    handler = route.handler
    if route.params == "json":  # pygls' path is taken only by what the lean path refused

        def to_json(params: Any) -> Any:
            return make_converter().unstructure(params)

        if inspect.iscoroutinefunction(handler):

            async def json_task(ls: Any, params: Any) -> Any:
                return await guarded(session, method, handler, to_json(params))

            return json_task

        def json_inline(ls: Any, params: Any) -> Any:
            if handler(session, to_json(params)) is False:
                log.warning("%s with params it cannot read: ignored", method)

        return json_inline
    if inspect.iscoroutinefunction(handler):

        async def task(ls: Any, params: Any) -> Any:
            try:
                return await guarded(session, method, handler, params)
            except Exception as exc:
                raise rpc_error(exc) from None

        return task

    def inline(ls: Any, params: Any = None) -> Any:
        return handler(session, params)

    return inline


def _command_handler(session: Session, handler: Callable[..., Any]) -> Callable[..., Any]:
    async def command(ls: Any, *args: Any) -> Any:
        try:
            return await guarded(session, "workspace/executeCommand", handler, list(args))
        except Exception as exc:
            raise rpc_error(exc) from None

    return command


def create_server(
    shared: Shared, default_agent: str, forced_agent: str | None = None
) -> DbcodeLanguageServer:
    """One connection's server object and session (forced_agent: a stdio session's --agent or
    DBCODE_AGENT, which wins over the client's initializationOptions)."""
    server = DbcodeLanguageServer(
        "dbcode",
        __version__,
        text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
        protocol_cls=DbcodeProtocol,
        converter_factory=make_converter,
    )
    session = Session(shared, server.protocol, default_agent, forced_agent)
    session.server = server
    server.session = session
    server.protocol.attach(session, ROUTES)
    for method, route in ROUTES.items():
        if method.startswith("dbcode/"):
            continue  # ours alone: not advertised, never on pygls' path
        server.feature(method, route.options)(_pygls_handler(session, method, route))
    for name, handler in COMMANDS.items():
        server.command(name)(_command_handler(session, handler))
    return server
