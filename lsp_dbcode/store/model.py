"""Plain data returned and accepted by the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

ChangeKind = Literal["create", "update", "delete", "rename"]


@dataclass(frozen=True, slots=True)
class Change:
    """One file change of a changeset.

    op: "write" (create or update with ``text``), "delete", or "rename" (to ``new_path``).
    base: the revision the change was made from (compare-and-swap); 0 = must not exist;
    None = no check (last writer wins).
    """

    op: Literal["write", "delete", "rename"]
    path: str
    text: str | None = None
    new_path: str | None = None
    base: int | None = None

    @staticmethod
    def write(path: str, text: str, base: int | None = None) -> Change:
        return Change("write", path, text=text, base=base)

    @staticmethod
    def delete(path: str, base: int | None = None) -> Change:
        return Change("delete", path, base=base)

    @staticmethod
    def rename(path: str, new_path: str, base: int | None = None) -> Change:
        return Change("rename", path, new_path=new_path, base=base)


@dataclass(frozen=True, slots=True)
class FileText:
    workspace: str
    path: str
    revision: int
    text: str


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: str
    revision: int
    size: int
    updated_by: str
    updated_at: datetime
    seq: int


@dataclass(frozen=True, slots=True)
class FileChange:
    """A file as touched by a changeset (what subscribers see)."""

    path: str
    revision: int
    kind: ChangeKind
    old_path: str | None = None
    # The revision's text when the feed carried it (small files; None: read it when needed).
    text: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Changeset:
    workspace: str
    seq: int
    agent: str
    message: str | None
    time: datetime
    files: tuple[FileChange, ...] = field(default=())
    meta: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """A claim: "I am working here". ``start``/``end``: code points of ``revision`` (the file's
    current revision: every commit moves claims along); ``whole``: the whole file. ``lines``:
    1-based first and last line, when the store read the text."""

    id: int
    workspace: str
    path: str
    agent: str
    note: str
    exclusive: bool
    whole: bool
    start: int
    end: int
    revision: int
    since: datetime
    expires_at: datetime
    lines: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class LogPage:
    """One page of a workspace's log, newest first; ``more``: older changesets remain."""

    changesets: list[Changeset]
    more: bool


@dataclass(frozen=True, slots=True)
class CommitResult:
    seq: int
    revisions: dict[str, int]
    # Non-exclusive claims of other agents that the changeset touched.
    warnings: tuple[Claim, ...] = ()


@dataclass(frozen=True, slots=True)
class RevisionInfo:
    path: str
    revision: int
    seq: int
    kind: str
    agent: str
    message: str | None
    time: datetime
    size: int
    old_path: str | None = None


@dataclass(frozen=True, slots=True)
class BlameRun:
    """Lines ``start_line``..``end_line`` (0-based, inclusive) of the blamed text, last changed
    by changeset ``seq``, where they were revision ``revision`` of ``path`` (an older name when
    the file was renamed since)."""

    start_line: int
    end_line: int
    seq: int
    path: str
    revision: int
    agent: str
    time: datetime
    message: str | None
    meta: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class CompactResult:
    """What a compaction did: revisions turned into deltas (or packed), the bytes of text they
    held, and the bytes stored for them instead."""

    paths: int
    revisions: int
    text_bytes: int
    stored_bytes: int


@dataclass(frozen=True, slots=True)
class WorkspaceInfo:
    name: str
    head_seq: int
    files: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ImportResult:
    seq: int | None  # None when nothing changed
    created: int
    updated: int
    unchanged: int
    warnings: tuple[Claim, ...] = ()


ThreadKind = Literal["note", "suggestion", "blocking"]
ReviewEventKind = Literal["created", "replied", "resolved", "reopened", "outdated"]


@dataclass(frozen=True, slots=True)
class Comment:
    id: int
    agent: str
    text: str
    time: datetime


@dataclass(frozen=True, slots=True)
class Thread:
    """A review thread, its range moved onto ``revision`` (the file's current revision when
    listed). ``start``/``end``: code points of that revision; ``lines``: 1-based first and last
    line (None when the file is deleted). An outdated thread is a point where its text was."""

    id: int
    workspace: str
    path: str
    kind: ThreadKind
    state: Literal["open", "resolved"]
    outdated: bool
    revision: int
    start: int
    end: int
    agent: str
    created_at: datetime
    replacement: str | None
    comments: tuple[Comment, ...]
    lines: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class CommentResult:
    thread: int
    id: int


@dataclass(frozen=True, slots=True)
class ReviewEvent:
    """One entry of a workspace's review feed. ``seq``: its place in that feed (gap-free, in
    commit order, a counter of its own); ``at_seq``: the changesets committed when it happened
    (its range refers to the file as of then)."""

    workspace: str
    seq: int
    thread: int
    event: ReviewEventKind
    agent: str
    at_seq: int
    time: datetime
    comment: Comment | None = None


@dataclass(frozen=True, slots=True)
class Presence:
    agent: str
    workspace: str
    path: str
    mode: str | None
    since: datetime
    session: int
