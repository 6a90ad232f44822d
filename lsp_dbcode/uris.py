"""dbcode:// URIs: ``dbcode://<workspace>/<path>``, each segment percent-encoded (RFC 3986)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from .store import validate
from .store.errors import InvalidInput
from .store.model import Changeset

SCHEME = "dbcode"


def make_uri(workspace: str, path: str = "") -> str:
    segments = "/".join(quote(seg, safe="") for seg in path.split("/")) if path else ""
    return f"{SCHEME}://{quote(workspace, safe='')}/{segments}"


def parse_uri(uri: str) -> tuple[str, str]:
    """(workspace, path) of a dbcode:// document URI; InvalidInput for anything else."""
    if not isinstance(uri, str) or not uri.startswith(f"{SCHEME}://"):
        raise InvalidInput(f"not a dbcode:// URI: {str(uri)[:200]!r}")
    rest = uri[len(SCHEME) + 3 :]
    if "?" in rest or "#" in rest:
        raise InvalidInput(f"dbcode URIs take no query or fragment: {uri[:200]!r}")
    authority, sep, raw_path = rest.partition("/")
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
    return workspace, path


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
    }
