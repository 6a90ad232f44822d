"""The answers of the ``dbcode/*`` requests as typed values, for lsp_dbcode.client and
``dbcode mcp`` (standard library only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .rpc import make_uri, uri_path


@dataclass(frozen=True, slots=True)
class FileText:
    """A file's text at a revision. ``at``: the seq it was read at (time travel: the file
    right after changeset ``at``; None: the current or a named revision)."""

    workspace: str
    path: str
    text: str
    revision: int
    at: int | None = None


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


def range_lines(rng: Any) -> tuple[int, int] | None:
    """The lines (1-based, inclusive) an LSP range covers; a range that ends at the start of
    a line does not cover that line (as ``dbcode comments`` counts them)."""
    if not isinstance(rng, dict):
        return None
    first = int(rng["start"]["line"]) + 1
    end_line, end_char = int(rng["end"]["line"]), int(rng["end"]["character"])
    last = end_line + 1 if end_char > 0 else max(first, end_line)
    return first, last


@dataclass(frozen=True, slots=True)
class BlameRun:
    """Lines ``start_line``..``end_line`` (1-based, inclusive) of the blamed text, last
    changed by changeset ``seq`` (file ``path`` at ``revision``: renames are followed)."""

    start_line: int
    end_line: int
    seq: int
    revision: int
    path: str
    agent: str
    time: str
    message: str | None
    meta: dict[str, Any] | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BlameRun:
        """From ``dbcode/blame`` (lines 0-based on the wire)."""
        return cls(
            d["startLine"] + 1,
            d["endLine"] + 1,
            d["seq"],
            d["revision"],
            d["path"],
            d["agent"],
            d["time"],
            d.get("message"),
            d.get("meta"),
        )


@dataclass(frozen=True, slots=True)
class Claim:
    """A live claim: "``agent`` is working here" until ``expires_at`` (ISO 8601). ``lines``:
    the lines it covers now (1-based, inclusive; None: the whole file); ``range``: the same
    as an LSP range (UTF-16), when the server sent it."""

    id: int
    agent: str
    path: str
    note: str
    exclusive: bool
    since: str
    expires_at: str
    lines: tuple[int, int] | None = None
    range: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Claim:
        rng = d.get("range")
        if d.get("startLine") is not None:
            lines: Any = (d["startLine"], d["endLine"])
        elif d.get("lines"):
            lines = tuple(d["lines"])
        else:
            lines = None if "startLine" in d else range_lines(rng)
        return cls(
            d["id"],
            d["agent"],
            uri_path(d["uri"]),
            d.get("note") or "",
            bool(d["exclusive"]),
            d["since"],
            d["expiresAt"],
            lines,
            rng,
        )


@dataclass(frozen=True, slots=True)
class Comment:
    id: int
    agent: str
    text: str
    time: str


@dataclass(frozen=True, slots=True)
class Thread:
    """A review thread where its code is now: ``lines`` (1-based, inclusive; None: the file
    was deleted), ``outdated`` when its text was deleted; ``revision``: the file's revision
    those lines refer to (threads follow every changeset). ``kind``: note | suggestion |
    blocking; ``state``: open | resolved."""

    id: int
    path: str
    lines: tuple[int, int] | None
    revision: int
    kind: str
    state: str
    outdated: bool
    replacement: str | None
    comments: list[Comment]
    range: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Thread:
        rng = d.get("range")
        if "startLine" in d:  # the server's own count
            lines = None if d["startLine"] is None else (d["startLine"], d["endLine"])
        else:
            lines = range_lines(rng)
        return cls(
            d["thread"],
            d["path"],
            lines,
            d["revision"],
            d["kind"],
            d["state"],
            bool(d["outdated"]),
            d.get("replacement"),
            [Comment(c["id"], c["agent"], c["text"], c["time"]) for c in d.get("comments") or []],
            rng,
        )


@dataclass(frozen=True, slots=True)
class Commented:
    """A new review thread (``thread``) and its first comment (``id``)."""

    thread: int
    id: int


@dataclass(frozen=True, slots=True)
class Presence:
    """``agent`` has ``path`` open (``mode``: save | live | None) since ``since`` (ISO 8601)."""

    agent: str
    path: str
    mode: str | None
    since: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Presence:
        return cls(d["agent"], d["path"], d.get("mode"), d["since"])
