"""PostgreSQL storage of lsp-dbcode. Knows nothing of LSP."""

from .dsn import redact, resolve_dsn
from .errors import Claimed, Conflict, DatabaseUnavailable, InvalidInput, NotFound, StoreError
from .model import (
    Change,
    Changeset,
    Claim,
    Comment,
    CommentResult,
    CommitResult,
    FileChange,
    FileInfo,
    FileText,
    ImportResult,
    Presence,
    ReviewEvent,
    RevisionInfo,
    Thread,
    WorkspaceInfo,
)
from .store import Store

__all__ = [
    "Change",
    "Changeset",
    "Claim",
    "Claimed",
    "Comment",
    "CommentResult",
    "CommitResult",
    "Conflict",
    "DatabaseUnavailable",
    "FileChange",
    "FileInfo",
    "FileText",
    "ImportResult",
    "InvalidInput",
    "NotFound",
    "Presence",
    "ReviewEvent",
    "RevisionInfo",
    "Store",
    "StoreError",
    "Thread",
    "WorkspaceInfo",
    "redact",
    "resolve_dsn",
]
