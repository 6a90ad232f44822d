"""Plain values returned by the analysis layer.

Units, everywhere in this layer: ``line`` is 0-based; ``col`` is 0-based and counts Unicode
CODE POINTS (not UTF-16 units, not bytes). Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r``, as in
LSP and ruff. Spans are half-open: ``end`` is the position just after the last character. The
language server converts to the client's position encoding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..text.positions import LineIndex

Severity = Literal["error", "warning", "information", "hint"]
Tag = Literal["unnecessary", "deprecated"]
FoldKind = Literal["comment", "imports", "region"]

# Symbol kinds used by this layer, with the LSP ``SymbolKind`` number each one maps to. Kept here
# as plain data so the server needs no table of its own ("type" and "macro" have no LSP kind of
# their own; they map to the closest one).
SYMBOL_KINDS: Mapping[str, int] = {
    "file": 1,
    "module": 2,
    "namespace": 3,
    "package": 4,
    "class": 5,
    "method": 6,
    "property": 7,
    "field": 8,
    "constructor": 9,
    "enum": 10,
    "interface": 11,
    "function": 12,
    "variable": 13,
    "constant": 14,
    "string": 15,
    "number": 16,
    "boolean": 17,
    "array": 18,
    "object": 19,
    "key": 20,
    "null": 21,
    "enum_member": 22,
    "struct": 23,
    "event": 24,
    "operator": 25,
    "type_parameter": 26,
    "type": 26,
    "macro": 12,
}


class AnalysisError(Exception):
    """An analysis could not run: ruff failed or timed out, input too big, bad path or config.

    The message is one line meant for a person (it names what failed and why).
    """


@dataclass(frozen=True, slots=True, order=True)
class Pos:
    """0-based line, 0-based column in code points."""

    line: int
    col: int


@dataclass(frozen=True, slots=True)
class Span:
    """Half-open range ``[start, end)``."""

    start: Pos
    end: Pos


@dataclass(frozen=True, slots=True)
class TextEditCP:
    """Replace the text in ``span`` (code point positions in the ORIGINAL text) by ``new_text``."""

    span: Span
    new_text: str


@dataclass(frozen=True, slots=True)
class Fix:
    """A quick fix for one diagnostic.

    ``applicability`` is ruff's: ``"safe"``, ``"unsafe"`` or ``"display-only"``.
    Edits never overlap and are sorted by position.
    """

    title: str
    edits: tuple[TextEditCP, ...]
    applicability: str


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in a file.

    ``source`` is ``"ruff"`` (lint and ruff's own syntax errors, code ``"invalid-syntax"``) or
    ``"syntax"`` (tree-sitter). ``noqa_line`` is the 0-based line where a ``# noqa`` comment for
    this diagnostic belongs (``None`` when it cannot be suppressed).
    """

    span: Span
    severity: Severity
    message: str
    source: str
    code: str | None = None
    code_url: str | None = None
    tags: tuple[Tag, ...] = ()
    fix: Fix | None = None
    noqa_line: int | None = None
    data: Mapping[str, object] | None = None


@dataclass(frozen=True, slots=True)
class TextChange:
    """How a text was made from an earlier one, ``old.text``: ``old.text[start:end]`` (code
    point offsets) replaced by ``new_text``. A hint for the ``ruff server`` engine, which then
    sends ruff this change instead of the whole text (it checks that the hint holds)."""

    old: LineIndex
    start: int
    end: int
    new_text: str

    def apply(self) -> str:
        """The new text."""
        text = self.old.text
        return text[: self.start] + self.new_text + text[self.end :]


class Findings:
    """One file's diagnostics from a ruff engine, in the forms its consumers need.

    - :attr:`diagnostics`: the :class:`Diagnostic` objects, sorted by position (built on first
      use when the engine got them in another form).
    - :attr:`server_items`: the same diagnostics as ``ruff server`` gave them (its own items:
      ``range`` in CODE POINTS, ``message`` without its ``help:`` suffix, ``code``,
      ``codeDescription``, ``data``), in the same order; ``None`` from the CLI engine. The
      language server relays them without building Diagnostic objects. Shared: never mutate.
    - :attr:`cache`: for consumers to keep what they derive from these findings (e.g. the JSON in
      another position encoding); it lives as long as the findings.
    """

    __slots__ = ("_diagnostics", "_make", "cache", "count", "server_items")

    def __init__(
        self,
        diagnostics: list[Diagnostic] | None = None,
        *,
        make: Callable[[], list[Diagnostic]] | None = None,
        server_items: list[dict[str, Any]] | None = None,
    ) -> None:
        assert (diagnostics is None) != (make is None), "give diagnostics or make"
        assert diagnostics is not None or server_items is not None, "make needs server_items"
        self._diagnostics = diagnostics
        self._make = make
        self.server_items = server_items
        self.count = len(diagnostics) if diagnostics is not None else len(server_items or ())
        self.cache: dict[Any, Any] = {}

    @property
    def diagnostics(self) -> list[Diagnostic]:
        if self._diagnostics is None:
            assert self._make is not None
            self._diagnostics, self._make = self._make(), None
        return self._diagnostics

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"Findings({self.count} diagnostics)"


@dataclass(frozen=True, slots=True)
class Symbol:
    """A definition: ``span`` covers it all, ``selection_span`` its name. Children are nested."""

    name: str
    kind: str
    span: Span
    selection_span: Span
    children: tuple[Symbol, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Fold:
    """A foldable region, lines inclusive (0-based). ``kind``: comment, imports, region or None."""

    start_line: int
    end_line: int
    kind: FoldKind | None = None
