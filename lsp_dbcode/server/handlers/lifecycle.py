"""initialize, initialized, exit."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from lsprotocol import types

from ...store import StoreError, validate
from ...text.positions import Encoding
from ..client import WARNING

if TYPE_CHECKING:
    from ..session import Session

log = logging.getLogger(__name__)

AGENT_CHARS_MAX = 200


def initialize(session: Session, params: types.InitializeParams) -> None:
    """Read initializationOptions (bad values fall back to defaults, with a warning shown once
    the client is initialized) and what the client can do. The agent: a stdio session's
    forced agent (--agent / DBCODE_AGENT) wins over the options', which win over the
    default (SPEC)."""
    warnings: list[str] = []
    opts = params.initialization_options
    if opts is not None and not isinstance(opts, dict):
        warnings.append("initializationOptions must be an object; using defaults")
        opts = {}
    opts = opts or {}
    agent = opts.get("agent")
    if agent is not None and (not isinstance(agent, str) or not 0 < len(agent) <= AGENT_CHARS_MAX):
        warnings.append(f"invalid agent {agent!r}; using {session.default_agent!r}")
        agent = None
    session.identity.agent = session.forced_agent or agent or session.default_agent
    if session.account is not None:  # an enforced database: the token's agent, always
        session.identity.agent = session.account.name
    mode = opts.get("mode", "save")
    if mode not in ("save", "live"):
        warnings.append(f"invalid mode {mode!r}: use 'save' or 'live'; using 'save'")
        mode = "save"
    session.identity.mode = mode
    session.format_on_save = opts.get("formatOnSave") is True
    session.folders = []
    for folder in params.workspace_folders or []:
        name = unquote(folder.uri.removeprefix("dbcode://").strip("/").split("/")[0])
        try:
            session.folders.append(validate.check_workspace(name))
        except StoreError:
            continue
    caps = params.capabilities
    td = caps.text_document
    client = session.client
    client.pull_diagnostics = bool(td and td.diagnostic) and opts.get("pushDiagnostics") is not True
    ws_edit = caps.workspace.workspace_edit if caps.workspace else None
    client.document_changes = bool(ws_edit and ws_edit.document_changes)
    # pygls has negotiated the position encoding (the client's first supported one).
    enc = session.server.workspace.position_encoding or types.PositionEncodingKind.Utf16
    client.encoding = Encoding(str(enc.value if hasattr(enc, "value") else enc))
    session.init_warnings = warnings
    for w in warnings:
        log.warning("initializationOptions: %s", w)


def initialized(session: Session, params: Any) -> None:
    for w in session.init_warnings:
        session.client.show(WARNING, f"dbcode: {w}")


def exit_(session: Session, params: Any) -> None:
    """Ends this session, never the process (many sessions share it)."""
    if session.on_exit is not None:
        session.on_exit()
