"""Validation of names, paths and contents (SPEC.md, Concepts). Pure functions."""

from __future__ import annotations

import json
import os
import re

from .errors import InvalidInput

WORKSPACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PATH_BYTES_MAX = 1024
CONTENT_BYTES_MAX_DEFAULT = 10 * 1024 * 1024


def content_bytes_max() -> int:
    """The file size limit: $DBCODE_MAX_FILE_BYTES, else 10 MiB."""
    raw = os.environ.get("DBCODE_MAX_FILE_BYTES", "")
    try:
        return int(raw) if raw else CONTENT_BYTES_MAX_DEFAULT
    except ValueError:
        return CONTENT_BYTES_MAX_DEFAULT


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# A path made only of plain segments (no empty, "." or ".." one): valid, nothing more to check.
_PLAIN_SEGMENT = r"(?!\.\.?(?:/|$))[A-Za-z0-9_.+@=,-]+"
_PLAIN_PATH_RE = re.compile(rf"{_PLAIN_SEGMENT}(?:/{_PLAIN_SEGMENT})*")


def check_workspace(name: str) -> str:
    """Return ``name`` if it is a valid workspace name, else raise InvalidInput."""
    if not isinstance(name, str) or not WORKSPACE_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid workspace name {name!r}: use 1-64 characters of letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return name


def check_path(path: str) -> str:
    """Return ``path`` if it is a valid relative POSIX file path, else raise InvalidInput."""
    if not isinstance(path, str) or path == "":
        raise InvalidInput("invalid path: empty")
    if _PLAIN_PATH_RE.fullmatch(path) and len(path) <= PATH_BYTES_MAX:
        return path  # the common case, in one regex: [A-Za-z0-9._-] segments, no . or ..
    shown = path.encode("unicode_escape").decode("ascii")
    if _CONTROL_RE.search(path):
        raise InvalidInput(f"invalid path {shown!r}: contains a NUL or control character")
    if path.startswith("/"):
        raise InvalidInput(f"invalid path {shown!r}: must be relative (no leading '/')")
    if "\\" in path:
        raise InvalidInput(f"invalid path {shown!r}: use '/' as separator, not '\\'")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidInput(
                f"invalid path {shown!r}: empty, '.' or '..' segments are not allowed"
            )
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"invalid path {shown!r}: not valid UTF-8") from None
    if len(encoded) > PATH_BYTES_MAX:
        raise InvalidInput(f"invalid path: {len(encoded)} bytes, at most {PATH_BYTES_MAX}")
    return path


def check_prefix(prefix: str) -> str:
    """A listing prefix: like a path, but may end with '/'; '' means everything."""
    if prefix in ("", "/"):
        return ""
    check_path(prefix.rstrip("/"))
    return prefix


def looks_binary(data: bytes) -> bool:
    """Heuristic used by git: a NUL byte in the first 8000 bytes means binary."""
    return b"\x00" in data[:8000]


def decode_content(data: bytes, what: str, limit: int = CONTENT_BYTES_MAX_DEFAULT) -> str:
    """Turn raw bytes into file text, refusing binary, invalid UTF-8 and oversize content."""
    if len(data) > limit:
        raise InvalidInput(f"{what}: {len(data)} bytes is over the limit of {limit} bytes")
    if looks_binary(data):
        raise InvalidInput(f"{what}: binary content (NUL bytes) is not stored")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what}: not valid UTF-8 (byte offset {exc.start})") from None
    return text


def check_text(text: str, what: str, limit: int = CONTENT_BYTES_MAX_DEFAULT) -> str:
    """Validate text that is already a str (LSP input)."""
    text_bytes(text, what, limit)
    return text


def text_bytes(
    text: str, what: str, limit: int = CONTENT_BYTES_MAX_DEFAULT, data: bytes | None = None
) -> bytes:
    """Validate ``text`` (as :func:`check_text`) and return its UTF-8 bytes. ``data``: those
    bytes when the caller has them already (it decoded ``text`` from them)."""
    if not isinstance(text, str):
        raise InvalidInput(f"{what}: content must be a string")
    if "\x00" in text:
        raise InvalidInput(f"{what}: binary content (NUL characters) is not stored")
    if data is None:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"{what}: not valid UTF-8 (lone surrogate)") from None
    if len(data) > limit:
        raise InvalidInput(f"{what}: {len(data)} bytes is over the limit of {limit} bytes")
    return data


# A changeset's metadata: a JSON object of at most this many bytes (compact UTF-8 JSON).
META_BYTES_MAX = 4096


def check_meta(meta: object) -> dict[str, object] | None:
    """A changeset's ``meta``: None, or a JSON object of at most META_BYTES_MAX bytes."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise InvalidInput(f"invalid meta: a JSON object is needed, not {type(meta).__name__}")
    try:
        data = json.dumps(meta, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"invalid meta: not JSON ({exc})") from None
    size = len(data.encode("utf-8"))
    if size > META_BYTES_MAX:
        raise InvalidInput(
            f"meta too large: {size} bytes, at most {META_BYTES_MAX} (keep ids and links in it, "
            "not whole conversations)"
        )
    if "\x00" in data or "\\u0000" in data:
        raise InvalidInput("invalid meta: NUL characters cannot be stored")
    return meta
