"""Ruff's findings as the analysis layer's values: which rules are errors, which tag code that does
nothing or is deprecated, and the parsers of ``ruff check``'s JSON and ``ruff server``'s items."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from operator import itemgetter
from typing import Any

from ..model import (
    Diagnostic,
    Findings,
    Fix,
    Pos,
    Severity,
    Span,
    Tag,
    TextEditCP,
)

log = logging.getLogger(__name__)

SYNTAX_CODE = "invalid-syntax"
# Rules whose range is code that does nothing (editors grey it out).
UNNECESSARY_CODES = frozenset(
    {"F401", "F841", "F842", "RUF059", "RUF100", "ARG001", "ARG002", "ARG003", "ARG004", "ARG005"}
)
# Rules whose range uses something deprecated (editors strike it through).
DEPRECATED_CODES = frozenset({"UP005", "UP006", "UP019", "UP023", "UP026", "UP035"})
# Rules reported as errors, as ruff's own language server does.
ERROR_CODES = frozenset({SYNTAX_CODE, "F821", "E902"})


def diagnostic_severity(code: str | None) -> Severity:
    """The severity of a ruff finding by its rule code (as ruff's own language server)."""
    return "error" if code is None or code in ERROR_CODES else "warning"


def diagnostic_tags(code: str | None) -> tuple[Tag, ...]:
    """The tags of a ruff finding by its rule code (code that does nothing; deprecated)."""
    if code in UNNECESSARY_CODES:
        return ("unnecessary",)
    if code in DEPRECATED_CODES:
        return ("deprecated",)
    return ()


def _cli_pos(loc: Mapping[str, Any]) -> Pos:
    """ruff JSON location (1-based row, 1-based code point column) -> 0-based Pos."""
    return Pos(int(loc["row"]) - 1, int(loc["column"]) - 1)


def diagnostic_from_cli(entry: Mapping[str, Any]) -> Diagnostic:
    """One entry of ``ruff check --output-format json`` as a Diagnostic."""
    code = entry.get("code") or SYNTAX_CODE
    fix: Fix | None = None
    raw_fix = entry.get("fix")
    if raw_fix and raw_fix.get("edits") and raw_fix.get("applicability") != "display-only":
        edits = tuple(
            TextEditCP(
                Span(_cli_pos(e["location"]), _cli_pos(e["end_location"])), e.get("content") or ""
            )
            for e in raw_fix["edits"]
        )
        title = raw_fix.get("message") or entry.get("name") or code
        fix = Fix(title, edits, str(raw_fix.get("applicability") or "unsafe"))
    noqa_row = entry.get("noqa_row")
    return Diagnostic(
        span=Span(_cli_pos(entry["location"]), _cli_pos(entry["end_location"])),
        severity=diagnostic_severity(code),
        message=entry.get("message") or "",
        source="ruff",
        code=code,
        code_url=entry.get("url") or None,
        tags=diagnostic_tags(code),
        fix=fix,
        noqa_line=None if noqa_row is None else int(noqa_row) - 1,
    )


def _lsp_span(rng: Mapping[str, Any]) -> Span:
    s, e = rng["start"], rng["end"]
    return Span(Pos(int(s["line"]), int(s["character"])), Pos(int(e["line"]), int(e["character"])))


def diagnostic_from_server(item: Mapping[str, Any]) -> Diagnostic:
    """One item of ``ruff server``'s pulled diagnostics (utf-32 positions) as a Diagnostic.

    Made to equal :func:`diagnostic_from_cli` for the same finding: the ``help:`` suffix the
    server appends to messages is dropped; ``is_preferred`` tells a safe fix from an unsafe one.
    """
    code = str(item.get("code") or SYNTAX_CODE)
    data = item.get("data") or {}
    message = str(item.get("message") or "")
    cut = message.find("\n\nhelp: ")
    if cut >= 0:
        message = message[:cut]
    fix: Fix | None = None
    edits = data.get("edits") or []
    if edits:
        fix = Fix(
            str(data.get("title") or code),
            tuple(TextEditCP(_lsp_span(e["range"]), e.get("newText") or "") for e in edits),
            "safe" if data.get("is_preferred") else "unsafe",
        )
    noqa_edit = data.get("noqa_edit")
    description = item.get("codeDescription") or {}
    return Diagnostic(
        span=_lsp_span(item["range"]),
        severity=diagnostic_severity(code),
        message=message,
        source="ruff",
        code=code,
        code_url=description.get("href") or None,
        tags=diagnostic_tags(code),
        fix=fix,
        noqa_line=int(noqa_edit["range"]["start"]["line"]) if noqa_edit else None,
    )


def _server_findings(items: list[dict[str, Any]]) -> Findings:
    """``ruff server``'s pulled diagnostics (code point positions) as Findings: sorted as
    :func:`_sorted`, kept as the server's own items (their messages cut as
    :func:`diagnostic_from_server` cuts them) for the language server to relay, the Diagnostic
    objects built only if someone asks for them."""
    entries: list[tuple[tuple[int, int, int, int, str, str], dict[str, Any]]] = []
    for item in items:
        code = str(item.get("code") or SYNTAX_CODE)
        message = str(item.get("message") or "")
        cut = message.find("\n\nhelp: ")
        if cut >= 0:
            message = message[:cut]
            item = {**item, "message": message}
        start, end = item["range"]["start"], item["range"]["end"]
        key = (start["line"], start["character"], end["line"], end["character"], code, message)
        entries.append((key, item))
    entries.sort(key=itemgetter(0))
    sorted_items = [item for _, item in entries]
    return Findings(
        make=lambda: [diagnostic_from_server(item) for item in sorted_items],
        server_items=sorted_items,
    )


def _sorted(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Both engines return diagnostics in this order: by position, then code."""
    return sorted(diagnostics, key=lambda d: (d.span.start, d.span.end, d.code or "", d.message))
