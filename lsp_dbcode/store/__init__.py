"""PostgreSQL storage of lsp-dbcode. Knows nothing of LSP.

The names below load on first use (PEP 562): ``lsp_dbcode.store.validate`` and
``lsp_dbcode.store.errors`` are standard library only, and the CLI's fast path (fastcli.py)
uses them without paying for psycopg, which ``store.py`` and ``dsn.py`` import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .dsn import redact, resolve_dsn
    from .errors import (
        Claimed,
        Conflict,
        DatabaseUnavailable,
        InvalidInput,
        NotFound,
        StoreError,
    )
    from .model import (
        BlameRun,
        Change,
        Changeset,
        Claim,
        Comment,
        CommentResult,
        CommitResult,
        CompactResult,
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

_WHERE = {
    "redact": "dsn",
    "resolve_dsn": "dsn",
    "Claimed": "errors",
    "Conflict": "errors",
    "DatabaseUnavailable": "errors",
    "InvalidInput": "errors",
    "NotFound": "errors",
    "StoreError": "errors",
    "BlameRun": "model",
    "Change": "model",
    "CompactResult": "model",
    "Claim": "model",
    "Comment": "model",
    "CommentResult": "model",
    "Presence": "model",
    "ReviewEvent": "model",
    "Thread": "model",
    "Changeset": "model",
    "CommitResult": "model",
    "FileChange": "model",
    "FileInfo": "model",
    "FileText": "model",
    "ImportResult": "model",
    "RevisionInfo": "model",
    "WorkspaceInfo": "model",
    "Store": "store",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "BlameRun",
    "Change",
    "Changeset",
    "Claim",
    "Claimed",
    "Comment",
    "CommentResult",
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
