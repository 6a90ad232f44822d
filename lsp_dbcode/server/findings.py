"""Findings (lsp_dbcode.analysis: code point spans, severity names) as LSP JSON: the one place
where analysis results become LSP. Review threads and others' claims become diagnostics here
too (:func:`review_diagnostic_json`, :func:`claim_diagnostic_json`), published with the
rest by :func:`set_diagnostics`.

Positions: the analysis layer counts 0-based lines and 0-based code point columns; LSP counts in
the session's position encoding (utf-16 by default). :func:`range_json` converts, through the
document's LineIndex. LSP JSON (dicts) is the one form of diagnostics inside the server: kept
per document and source, published as it is; the lsprotocol objects that pygls' typed handlers
must return are made from it (:func:`as_objects`) only there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..analysis import Diagnostic, Pos, Span
from ..analysis.ruff import SYNTAX_CODE, diagnostic_severity, diagnostic_tags
from ..text.positions import Encoding, LineIndex

if TYPE_CHECKING:
    from lsprotocol import types

    from ..analysis.model import Findings
    from ..store import Claim, Thread
    from .client import Client
    from .documents import OpenDoc

# LSP DiagnosticSeverity and DiagnosticTag, by the analysis layer's names.
SEVERITY = {"error": 1, "warning": 2, "information": 3, "hint": 4}
TAGS = {"unnecessary": 1, "deprecated": 2}

RangeJson = dict[str, dict[str, int]]


def _offset(index: LineIndex, pos: Pos) -> int:
    """A code point position as an offset in ``index.text``, clamped to its line / the end."""
    if pos.line >= index.line_count:
        return len(index.text)
    start = index.line_start(pos.line)
    return min(start + pos.col, index.line_end(pos.line))


def position_json(index: LineIndex, pos: Pos, encoding: Encoding) -> dict[str, int]:
    line, character = index.position(_offset(index, pos), encoding)
    return {"line": line, "character": character}


def range_json(index: LineIndex, span: Span, encoding: Encoding) -> RangeJson:
    return {
        "start": position_json(index, span.start, encoding),
        "end": position_json(index, span.end, encoding),
    }


def offsets_range_json(index: LineIndex, start: int, end: int, encoding: Encoding) -> RangeJson:
    """``[start, end)`` (offsets in ``index.text``) as an LSP range."""
    sl, sc = index.position(start, encoding)
    el, ec = index.position(end, encoding)
    return {"start": {"line": sl, "character": sc}, "end": {"line": el, "character": ec}}


def overlaps(a: RangeJson, b: RangeJson) -> bool:
    """Whether two LSP ranges touch or overlap (a code action's range and a diagnostic's)."""
    a_start, a_end = a["start"], a["end"]
    b_start, b_end = b["start"], b["end"]
    return not (
        (a_end["line"], a_end["character"]) < (b_start["line"], b_start["character"])
        or (a_start["line"], a_start["character"]) > (b_end["line"], b_end["character"])
    )


def diagnostic_json(index: LineIndex, d: Diagnostic, encoding: Encoding) -> dict[str, Any]:
    """One finding as an LSP Diagnostic."""
    out: dict[str, Any] = {
        "range": range_json(index, d.span, encoding),
        "message": d.message,
        "severity": SEVERITY.get(d.severity, 2),
    }
    if d.code is not None:
        out["code"] = d.code
    if d.code_url:
        out["codeDescription"] = {"href": d.code_url}
    out["source"] = d.source
    tags = [TAGS[t] for t in d.tags if t in TAGS]
    if tags:
        out["tags"] = tags
    return out


def _server_item_json(item: dict[str, Any]) -> dict[str, Any]:
    """One item of ``ruff server``'s diagnostics (its message already cut by the engine) as our
    LSP Diagnostic, code point positions: what :func:`diagnostic_json` gives for the same
    finding."""
    code = str(item.get("code") or SYNTAX_CODE)
    out: dict[str, Any] = {
        "range": item["range"],
        "message": item["message"],
        "severity": SEVERITY[diagnostic_severity(code)],
        "code": code,
    }
    href = (item.get("codeDescription") or {}).get("href")
    if href:
        out["codeDescription"] = {"href": href}
    out["source"] = "ruff"
    tags = [TAGS[t] for t in diagnostic_tags(code)]
    if tags:
        out["tags"] = tags
    return out


def findings_json(found: Findings, index: LineIndex, encoding: Encoding) -> list[dict[str, Any]]:
    """``found`` (the findings for ``index.text``) as LSP JSON in ``encoding``, made once per
    findings and encoding (kept in ``found.cache``: 1,000 sessions receiving one revision
    share it). The ``ruff server`` engine's items are taken as they are where code points are
    the encoding's units (utf-32, or an ASCII text); otherwise positions are converted."""
    cached = found.cache.get(encoding)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    items = found.server_items
    if items is None:
        out = [diagnostic_json(index, d, encoding) for d in found.diagnostics]
    else:
        code_points = found.cache.get(Encoding.UTF32)
        if code_points is None:
            code_points = found.cache[Encoding.UTF32] = [_server_item_json(i) for i in items]
        if encoding == Encoding.UTF32 or index.text.isascii():
            out = code_points
        else:

            def position(p: dict[str, int]) -> dict[str, int]:
                return position_json(index, Pos(p["line"], p["character"]), encoding)

            out = [
                {
                    **item,
                    "range": {
                        "start": position(item["range"]["start"]),
                        "end": position(item["range"]["end"]),
                    },
                }
                for item in code_points
            ]
    found.cache[encoding] = out
    return out


# -- review threads and claims (server/coordination.py places them on the buffer) -----------

# A review thread's diagnostic severity by its kind: Information, Hint, Warning.
REVIEW_SEVERITY = {"note": 3, "suggestion": 4, "blocking": 2}


def review_diagnostic_json(t: Thread, where: RangeJson) -> dict[str, Any]:
    """An open review thread as a diagnostic (source ``review``) at ``where`` in the buffer:
    its first comment, the number of replies; ``data`` carries what the code actions need
    (the thread, and a suggestion's replacement)."""
    first = t.comments[0] if t.comments else None
    head = f"{first.agent}: {first.text}" if first else t.kind
    more = f" (+{len(t.comments) - 1} replies)" if len(t.comments) > 1 else ""
    stale = " [outdated]" if t.outdated else ""
    data: dict[str, Any] = {"thread": t.id, "kind": t.kind}
    if t.replacement is not None:
        data["replacement"] = t.replacement
    return {
        "range": where,
        "severity": REVIEW_SEVERITY.get(t.kind, 3),
        "source": "review",
        "message": f"{head}{more}{stale}",
        "data": data,
    }


def claim_diagnostic_json(c: Claim, where: RangeJson) -> dict[str, Any]:
    """Another agent's live claim as a diagnostic (source ``claim``, Information) at
    ``where`` (the start of the file for a whole-file claim)."""
    kind = "exclusively " if c.exclusive else ""
    note = f": {c.note}" if c.note else ""
    return {
        "range": where,
        "severity": 3,
        "source": "claim",
        "message": f"claimed {kind}by {c.agent}{note} (until {c.expires_at:%H:%M:%S %Z})",
        "data": {"claim": c.id},
    }


def as_objects(items: list[dict[str, Any]]) -> list[types.Diagnostic]:
    """LSP Diagnostic JSON as lsprotocol objects, for the handlers pygls serialises."""
    from lsprotocol import types

    from .protocol import make_converter

    return make_converter().structure(items, list[types.Diagnostic])  # type: ignore[no-any-return]


def diagnostic_object(index: LineIndex, d: Diagnostic, encoding: Encoding) -> types.Diagnostic:
    return as_objects([diagnostic_json(index, d, encoding)])[0]


# What a pull client (textDocument/diagnostic) gets by pulling; the other sources (dbcode's
# conflicts, review threads, claims) change without an edit of the document, and are pushed.
PULLED_SOURCES = ("ruff", "syntax")


def set_diagnostics(client: Client, doc: OpenDoc, source: str, items: list[dict[str, Any]]) -> None:
    """Keep ``source``'s diagnostics of ``doc`` (LSP JSON) and publish the document's, every
    source's together (to clients that take pushes; a pull client gets pushed only what it
    does not pull: conflicts, review threads, claims). Lint inside a conflict block is left
    out: markers are not code, and the conflict says it all."""
    doc.diagnostics[source] = items
    if client.closed or doc.closed:
        return
    pull = client.pull_diagnostics
    if pull and source in PULLED_SOURCES:
        return  # the client pulls these (textDocument/diagnostic); no duplicates
    conflicts = [
        (c["range"]["start"]["line"], c["range"]["end"]["line"])
        for c in doc.diagnostics.get("dbcode", ())
    ]
    merged: list[dict[str, Any]] = []
    for src, found in doc.diagnostics.items():
        if pull and src in PULLED_SOURCES:
            continue
        if src == "dbcode" or not conflicts:
            merged += found
        else:
            merged += [
                d
                for d in found
                if not any(a <= d["range"]["start"]["line"] <= b for a, b in conflicts)
            ]
    client.publish_diagnostics(doc.uri, doc.version, merged)
