"""dbcode:// URIs: ``dbcode://<workspace>/<path>``, each segment percent-encoded (RFC 3986).

``dbcode://<workspace>@<seq>/<path>``: the file as it was right after changeset ``seq``
(read-only). ``parse_uri`` refuses it (every caller of it may write); readers that serve old
revisions use ``parse_doc_uri``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from .store import validate
from .store.errors import InvalidInput
from .store.model import BlameRun, Changeset

SCHEME = "dbcode"


# The largest seq a time-travel URI may name (PostgreSQL bigint).
SEQ_MAX = 2**63 - 1
_AT_SEQ = re.compile(r"(.*)@([0-9]{1,19})")


@dataclass(frozen=True, slots=True)
class DocUri:
    """A parsed dbcode:// document URI; ``seq`` set for a read-only time-travel document."""

    workspace: str
    path: str
    seq: int | None = None


def make_uri(workspace: str, path: str = "", seq: int | None = None) -> str:
    segments = "/".join(quote(seg, safe="") for seg in path.split("/")) if path else ""
    at = f"@{seq:d}" if seq is not None else ""
    return f"{SCHEME}://{quote(workspace, safe='')}{at}/{segments}"


def parse_uri(uri: str) -> tuple[str, str]:
    """(workspace, path) of a writable dbcode:// document URI; InvalidInput for anything else,
    including a time-travel URI (``dbcode://ws@seq/path`` is read-only)."""
    doc = parse_doc_uri(uri)
    if doc.seq is not None:
        raise InvalidInput(
            f"{str(uri)[:200]} is the file as it was at seq {doc.seq}: read-only, "
            f"write to {make_uri(doc.workspace, doc.path)} instead"
        )
    return doc.workspace, doc.path


def parse_doc_uri(uri: str) -> DocUri:
    """Any dbcode:// document URI, current or ``@seq``; InvalidInput for anything else."""
    if not isinstance(uri, str) or not uri.startswith(f"{SCHEME}://"):
        raise InvalidInput(f"not a dbcode:// URI: {str(uri)[:200]!r}")
    rest = uri[len(SCHEME) + 3 :]
    if "?" in rest or "#" in rest:
        raise InvalidInput(f"dbcode URIs take no query or fragment: {uri[:200]!r}")
    authority, sep, raw_path = rest.partition("/")
    seq: int | None = None
    if "@" in authority:
        m = _AT_SEQ.fullmatch(authority)
        if m is None or int(m.group(2)) > SEQ_MAX:
            raise InvalidInput(
                f"invalid seq in dbcode URI {uri[:200]!r}: use dbcode://WORKSPACE@SEQ/PATH "
                "with SEQ a number >= 0"
            )
        authority, seq = m.group(1), int(m.group(2))
    workspace = validate.check_workspace(unquote(authority))
    if not sep or not raw_path:
        raise InvalidInput(f"dbcode URI without a file path: {uri[:200]!r}")
    try:
        segments = [unquote(s, errors="strict") for s in raw_path.split("/")]
    except UnicodeDecodeError:
        raise InvalidInput(f"dbcode URI path is not valid UTF-8: {uri[:200]!r}") from None
    if any("/" in s for s in segments):
        raise InvalidInput(f"dbcode URI path segment contains an encoded '/': {uri[:200]!r}")
    path = validate.check_path("/".join(segments))
    return DocUri(workspace, path, seq)


def changeset_json(cs: Changeset) -> dict[str, Any]:
    """The SPEC's ``dbcode/didCommit`` shape (also ``dbcode watch --json``)."""
    files: list[dict[str, Any]] = []
    for f in cs.files:
        item: dict[str, Any] = {
            "path": f.path,
            "uri": make_uri(cs.workspace, f.path),
            "revision": f.revision,
            "kind": f.kind,
        }
        if f.old_path is not None:
            item["oldPath"] = f.old_path
            item["oldUri"] = make_uri(cs.workspace, f.old_path)
        files.append(item)
    return {
        "workspace": cs.workspace,
        "seq": cs.seq,
        "agent": cs.agent,
        "message": cs.message,
        "time": cs.time.isoformat(),
        "files": files,
        "meta": cs.meta,
    }


def blame_json(run: BlameRun, *, line_base: int) -> dict[str, Any]:
    """SPEC's blame run: lines 1-based for the CLI (``line_base=1``), 0-based for LSP."""
    return {
        "startLine": run.start_line + line_base,
        "endLine": run.end_line + line_base,
        "seq": run.seq,
        "revision": run.revision,
        "path": run.path,
        "agent": run.agent,
        "time": run.time.isoformat(),
        "message": run.message,
        "meta": run.meta,
    }
