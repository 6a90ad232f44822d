"""The agents' side of the wire: what the async client (client.py), the MCP server (mcp.py)
and the CLI's fast path (fastcli.py) share to talk to ``dbcode serve``.

Sans-IO and standard library only (the CLI's fast path must start fast): JSON-RPC messages in
LSP framing (lsp_dbcode/framing.py cuts them), the server's errors as typed exceptions, and the
answers of the ``dbcode/*`` requests as dataclasses. The transports live with their users: an
asyncio one in client.py, a blocking one in fastcli.py; both attach to the shared server exactly
as the stdio relay does (server/relay.py).

Error codes (the server's, server/errors.py): 409 conflict (``data.currentRevision``), 404 not
found, 503 database unavailable, -32602 invalid params; 401/403 denied and 423 claimed are
mapped too, for servers that answer them.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote, unquote

CODE_CONFLICT = 409
CODE_NOT_FOUND = 404
CODE_UNAVAILABLE = 503
CODE_UNAUTHENTICATED = 401
CODE_FORBIDDEN = 403
CODE_CLAIMED = 423
CODE_INVALID_PARAMS = -32602
CODE_METHOD_NOT_FOUND = -32601

REQUEST_TIMEOUT_S = 120.0  # one request's answer (a whole-workspace check included)
CONNECT_TIMEOUT_S = 60.0  # start (embedded PostgreSQL's first start included) and initialize
CLIENT_NAME = "lsp-dbcode-client"


class ClientError(Exception):
    """Base of every error the client raises."""


class ConnectionLost(ClientError):
    """The server closed the connection, or did not answer in time."""


class ServerError(ClientError):
    """A JSON-RPC error answered by the server: ``code``, ``message`` (the same text the CLI
    prints), ``data``."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class Conflict(ServerError):
    """A stale base revision: the file is at ``current_revision`` (None: it does not exist)."""

    @property
    def uri(self) -> str | None:
        return self.data.get("uri") if isinstance(self.data, dict) else None

    @property
    def current_revision(self) -> int | None:
        rev = self.data.get("currentRevision") if isinstance(self.data, dict) else None
        return rev if isinstance(rev, int) else None


class NotFound(ServerError):
    """An unknown workspace, file or revision."""


class InvalidInput(ServerError):
    """Bad parameters (a path with ``..``, a bad workspace name, a text over the limit, ...)."""


class Unavailable(ServerError):
    """The server cannot reach its database."""


class AccessDenied(ServerError):
    """Authentication required (401) or not permitted (403): ``message`` says why."""


Denied = AccessDenied  # the earlier name


class Claimed(ServerError):
    """Another agent's exclusive claim covers what was written or claimed (423): ``holder``
    and ``note`` of that claim (``data.claim``), and the ``claim`` itself as JSON."""

    @property
    def claim(self) -> dict[str, Any]:
        got = self.data.get("claim") if isinstance(self.data, dict) else None
        return got if isinstance(got, dict) else {}

    @property
    def holder(self) -> str | None:
        agent = self.claim.get("agent")
        return agent if isinstance(agent, str) else None

    @property
    def note(self) -> str:
        return str(self.claim.get("note") or "")

    @property
    def claim_id(self) -> int | None:
        cid = self.claim.get("id")
        return cid if isinstance(cid, int) else None


_ERRORS: dict[int, type[ServerError]] = {
    CODE_CONFLICT: Conflict,
    CODE_NOT_FOUND: NotFound,
    CODE_UNAVAILABLE: Unavailable,
    CODE_UNAUTHENTICATED: AccessDenied,
    CODE_FORBIDDEN: AccessDenied,
    CODE_CLAIMED: Claimed,
    CODE_INVALID_PARAMS: InvalidInput,
}


def error_from(err: Any) -> ServerError:
    """The typed exception for a JSON-RPC ``error`` member."""
    if not isinstance(err, dict):
        return ServerError(0, f"malformed error from the server: {str(err)[:200]}")
    raw = err.get("code")
    code = raw if isinstance(raw, int) else 0
    message = str(err.get("message") or f"error {code}")
    return _ERRORS.get(code, ServerError)(code, message, err.get("data"))


# -- messages -------------------------------------------------------------------------------


def frame(message: dict[str, Any]) -> bytes:
    """One message in LSP's base protocol framing."""
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def request(msg_id: int, method: str, params: Any) -> bytes:
    return frame({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})


def notification(method: str, params: Any) -> bytes:
    return frame({"jsonrpc": "2.0", "method": method, "params": params})


def response(msg_id: Any, result: Any) -> bytes:
    return frame({"jsonrpc": "2.0", "id": msg_id, "result": result})


def initialize_params(
    agent: str | None, mode: str = "save", token: str | None = None
) -> dict[str, Any]:
    options: dict[str, Any] = {"mode": mode}
    if agent:
        options["agent"] = agent
    if token:
        options["token"] = token
    return {
        "processId": os.getpid(),
        "clientInfo": {"name": CLIENT_NAME},
        "rootUri": None,
        "capabilities": {},
        "initializationOptions": options,
    }


# -- URIs (as lsp_dbcode/uris.py, without importing the store) -----------------------------


def make_uri(workspace: str, path: str = "", seq: int | None = None) -> str:
    """``dbcode://WS/PATH``; with ``seq``: ``dbcode://WS@SEQ/PATH``, the file as it was right
    after changeset SEQ (read-only)."""
    segments = "/".join(quote(seg, safe="") for seg in path.split("/")) if path else ""
    at = f"@{seq:d}" if seq is not None else ""
    return f"dbcode://{quote(workspace, safe='')}{at}/{segments}"


def uri_path(uri: str) -> str:
    """The path of a dbcode:// URI (no checks: the server checked it)."""
    rest = uri.removeprefix("dbcode://")
    return "/".join(unquote(seg) for seg in rest.partition("/")[2].split("/"))
