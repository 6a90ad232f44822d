"""The agents' side of the wire: what the async client (client.py), the MCP server (mcp.py)
and the CLI's fast path (fastcli.py) share to talk to ``dbcode serve``.

Sans-IO and standard library only (the CLI's fast path must start fast): JSON-RPC messages in
LSP framing (lsp_dbcode/framing.py cuts them), the server's errors as typed exceptions, and the
answers of the ``dbcode/*`` requests as dataclasses. The transports live with their users: an
asyncio one in client.py, a blocking one in fastcli.py; both attach to the shared server exactly
as the stdio relay does (server/relay.py).

Error codes (the server's, server/features.py): 409 conflict (``data.currentRevision``), 404 not
found, 503 database unavailable, -32602 invalid params; 401/403 denied and 423 claimed are
mapped too, for servers that answer them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
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


class Denied(ServerError):
    """Authentication required (401) or not permitted (403)."""


class Claimed(ServerError):
    """Another agent's exclusive claim covers what was written (423; ``data.claim``)."""


_ERRORS: dict[int, type[ServerError]] = {
    CODE_CONFLICT: Conflict,
    CODE_NOT_FOUND: NotFound,
    CODE_UNAVAILABLE: Unavailable,
    CODE_UNAUTHENTICATED: Denied,
    CODE_FORBIDDEN: Denied,
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


def initialize_params(agent: str | None, mode: str = "save") -> dict[str, Any]:
    options: dict[str, Any] = {"mode": mode}
    if agent:
        options["agent"] = agent
    return {
        "processId": os.getpid(),
        "clientInfo": {"name": CLIENT_NAME},
        "rootUri": None,
        "capabilities": {},
        "initializationOptions": options,
    }


# -- URIs (as lsp_dbcode/uris.py, without importing the store) -----------------------------


def make_uri(workspace: str, path: str = "") -> str:
    segments = "/".join(quote(seg, safe="") for seg in path.split("/")) if path else ""
    return f"dbcode://{quote(workspace, safe='')}/{segments}"


def uri_path(uri: str) -> str:
    """The path of a dbcode:// URI (no checks: the server checked it)."""
    rest = uri.removeprefix("dbcode://")
    return "/".join(unquote(seg) for seg in rest.partition("/")[2].split("/"))


# -- answers ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileText:
    """A file's text at a revision."""

    workspace: str
    path: str
    text: str
    revision: int


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One line of a listing. ``updated_at``: ISO 8601, as the server sends it."""

    path: str
    uri: str
    revision: int
    size: int
    updated_by: str
    updated_at: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FileEntry:
        return cls(d["path"], d["uri"], d["revision"], d["size"], d["updatedBy"], d["updatedAt"])


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (ruff, or a tree-sitter syntax error). Lines and columns are 1-based,
    columns in code points, as `dbcode check --json` prints them."""

    path: str
    line: int
    column: int
    end_line: int
    end_column: int
    severity: str  # error | warning | information | hint
    source: str  # ruff | syntax
    code: str | None
    message: str
    url: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Finding:
        return cls(
            d["path"],
            d["line"],
            d["column"],
            d["endLine"],
            d["endColumn"],
            d["severity"],
            d["source"],
            d.get("code"),
            d["message"],
            d.get("url"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "endLine": self.end_line,
            "endColumn": self.end_column,
            "severity": self.severity,
            "source": self.source,
            "code": self.code,
            "message": self.message,
            "url": self.url,
        }

    def __str__(self) -> str:
        code = f"{self.code} " if self.code else ""
        return f"{self.path}:{self.line}:{self.column}: {code}{self.message}"


@dataclass(frozen=True, slots=True)
class Check:
    """Findings of one text. ``revision``: the revision checked (None for a text not yet
    written); ``not_checked``: why the file could not be analysed, if it could not."""

    path: str
    revision: int | None
    findings: list[Finding]
    not_checked: str | None = None

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == "error")

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Check:
        return cls(
            uri_path(d["uri"]),
            d.get("revision"),
            [Finding.from_json(x) for x in d.get("diagnostics") or []],
            d.get("notChecked"),
        )


@dataclass(frozen=True, slots=True)
class WorkspaceCheck:
    """Findings of every file of a workspace at ``seq``."""

    workspace: str
    seq: int
    files: int
    findings: list[Finding]
    skipped: dict[str, str]

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == "error")

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WorkspaceCheck:
        return cls(
            d["workspace"],
            d["seq"],
            d["files"],
            [Finding.from_json(x) for x in d.get("diagnostics") or []],
            dict(d.get("skipped") or {}),
        )


@dataclass(frozen=True, slots=True)
class Written:
    """A committed write: the file's new ``revision``, the changeset's ``seq``, and the
    findings of the new revision (None when not asked for)."""

    path: str
    revision: int
    seq: int
    check: Check | None = None


@dataclass(frozen=True, slots=True)
class Committed:
    """A committed changeset: ``seq`` and each file's new revision, by path (a delete makes
    one too); ``checks``: the findings of each written file, when asked."""

    seq: int
    revisions: dict[str, int]
    checks: dict[str, Check] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FileChange:
    path: str
    uri: str
    revision: int
    kind: str  # create | update | delete | rename
    old_path: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any], workspace: str) -> FileChange:
        uri = d.get("uri") or make_uri(workspace, d["path"])
        return cls(d["path"], uri, d["revision"], d["kind"], d.get("oldPath"))


@dataclass(frozen=True, slots=True)
class Changeset:
    """One changeset as `dbcode/log` and `dbcode/didCommit` give it (``time``: ISO 8601).
    ``raw``: the JSON object as the server sent it."""

    workspace: str
    seq: int
    agent: str
    message: str | None
    time: str
    files: list[FileChange]
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, d: dict[str, Any], workspace: str = "") -> Changeset:
        workspace = d.get("workspace") or workspace
        return cls(
            workspace,
            d["seq"],
            d["agent"],
            d.get("message"),
            d["time"],
            [FileChange.from_json(f, workspace) for f in d.get("files") or []],
            d,
        )


@dataclass(frozen=True, slots=True)
class Change:
    """One file of a multi-file commit: ``text`` None deletes the file; ``base`` is the
    revision the text was made from (0: the file must not exist; None: no check)."""

    path: str
    text: str | None
    base: int | None = None
