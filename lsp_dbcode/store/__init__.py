"""PostgreSQL storage of lsp-dbcode. Knows nothing of LSP."""

from .dsn import redact, resolve_dsn
from .errors import Conflict, DatabaseUnavailable, InvalidInput, NotFound, StoreError
from .model import (
    BlameRun,
    Change,
    Changeset,
    CommitResult,
    CompactResult,
    FileChange,
    FileInfo,
    FileText,
    ImportResult,
    RevisionInfo,
    WorkspaceInfo,
)
from .store import Store

__all__ = [
    "BlameRun",
    "Change",
    "Changeset",
    "CommitResult",
    "CompactResult",
    "Conflict",
    "DatabaseUnavailable",
    "FileChange",
    "FileInfo",
    "FileText",
    "ImportResult",
    "InvalidInput",
    "NotFound",
    "RevisionInfo",
    "Store",
    "StoreError",
    "WorkspaceInfo",
    "redact",
    "resolve_dsn",
]
