"""Tree-sitter syntax trees kept in step with a buffer: syntax errors, symbols, folding ranges.

A :class:`SyntaxTree` owns a text and its parse tree. :meth:`SyntaxTree.apply_edit` takes an edit
in code point offsets, tells tree-sitter about it (bytes and ``(row, byte column)`` points) and
re-parses incrementally from the old tree. Results are in code point positions, with LSP line
breaks (``\\n``, ``\\r\\n``, lone ``\\r``); see :mod:`lsp_dbcode.analysis.model`.

Exact results: after edits that leave syntax errors, tree-sitter's incremental re-parse may
recover from them differently than a parse from scratch would (a known property of its error
recovery: tree-sitter/tree-sitter#1444, #1645, tree-sitter-haskell#129). So that results never
depend on the edit history, a tree with errors is parsed once more from scratch when it is READ
(:attr:`SyntaxTree.tree`, :meth:`~SyntaxTree.errors`, ...), not on every edit: a burst of edits
costs incremental re-parses only, and at most one full parse per read while the text is broken.

Queries come from ``grammars/<language>/tags.scm`` and ``folds.scm`` (conventions in
``grammars/README.md``). Not thread-safe: one owner at a time.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

import tree_sitter

from .languages import query, ts_language
from .model import AnalysisError, Diagnostic, Fold, FoldKind, Pos, Span, Symbol

TEXT_BYTES_MAX = 16 * 1024 * 1024
ERRORS_MAX = 100
SYMBOLS_MAX = 10_000
SNIPPET_CHARS_MAX = 40
NAME_CHARS_MAX = 120

_BREAK = re.compile(r"\r\n|\r|\n")
_BREAK_BYTES = re.compile(rb"\r\n|\r|\n")
_CONTAINERS = frozenset({"class", "struct", "interface", "enum", "object"})
# Named nodes that close a construct like `}` does (a fold keeps their line visible).
_NAMED_CLOSERS = frozenset({"string_end", "end_tag", "jsx_closing_element", "heredoc_end"})
_FOLD_KINDS: dict[str, FoldKind | None] = {
    "fold": None,
    "fold.comment": "comment",
    "fold.imports": "imports",
    "fold.region": "region",
}


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def _count_code_points(data: bytes) -> int:
    """Code points in UTF-8 ``data`` (also for a cut-off last character: it counts as one)."""
    try:
        return len(_decode(data))
    except UnicodeDecodeError:
        return sum(1 for b in data if not 0x80 <= b < 0xC0)


class _LineIndex:
    """Byte offset -> (line, code point column) for one version of a text. Lazy per line."""

    def __init__(self, text: str, data: bytes) -> None:
        self.text = text
        self.data = data
        self.ascii = len(text) == len(data)
        self.cp_starts = [0, *(m.end() for m in _BREAK.finditer(text))]
        if self.ascii:
            self.byte_starts = self.cp_starts
        else:
            self.byte_starts = [0, *(m.end() for m in _BREAK_BYTES.finditer(data))]
        assert len(self.byte_starts) == len(self.cp_starts)

    def line_of(self, byte_offset: int) -> int:
        return bisect.bisect_right(self.byte_starts, byte_offset) - 1

    def pos(self, byte_offset: int) -> Pos:
        line = self.line_of(byte_offset)
        start = self.byte_starts[line]
        if self.ascii:
            return Pos(line, byte_offset - start)
        segment = self.data[start:byte_offset]
        return Pos(line, len(segment) if segment.isascii() else _count_code_points(segment))

    def line_end(self, line: int) -> Pos:
        """The position just before the line break ending ``line`` (or the end of the text)."""
        start = self.cp_starts[line]
        if line + 1 >= len(self.cp_starts):
            return Pos(line, len(self.text) - start)
        end = self.cp_starts[line + 1]
        if self.text[end - 1] == "\n":
            end -= 1
        if end > start and self.text[end - 1] == "\r":
            end -= 1
        return Pos(line, end - start)

    def only_space_before(self, byte_offset: int) -> bool:
        """True if nothing but blanks precedes ``byte_offset`` on its line."""
        start = self.byte_starts[self.line_of(byte_offset)]
        return not self.data[start:byte_offset].strip()

    def is_blank(self, line: int) -> bool:
        start = self.byte_starts[line]
        end = self.byte_starts[line + 1] if line + 1 < len(self.byte_starts) else len(self.data)
        return not self.data[start:end].strip()


def _human(kind: str) -> str:
    return kind.replace("_", " ").strip()


def _snippet(text: str) -> str:
    first = text.strip().split("\n", 1)[0].split("\r", 1)[0].strip()
    if len(first) > SNIPPET_CHARS_MAX:
        first = first[: SNIPPET_CHARS_MAX - 1] + "…"
    return first


def _context(node: tree_sitter.Node) -> str:
    parent = node.parent
    if parent is None or parent.parent is None or parent.is_error:
        return ""
    return f" in {_human(parent.type)}"


@dataclass
class _Def:
    name: str
    kind: str
    start: int
    end: int
    name_start: int
    name_end: int
    pattern: int
    children: list[_Def] = field(default_factory=list)


class SyntaxTree:
    """A text in one language and its tree-sitter tree, updated incrementally.

    ``language`` is a name of :func:`lsp_dbcode.analysis.languages.language_names`. Texts above
    ``text_bytes_max`` bytes raise AnalysisError (so does an unknown language).
    """

    def __init__(self, language: str, text: str, *, text_bytes_max: int = TEXT_BYTES_MAX) -> None:
        self._language = language
        self._parser = tree_sitter.Parser(ts_language(language))
        self._text_bytes_max = text_bytes_max
        data = _encode(text)
        self._check_size(len(data))
        self._text = text
        self._data = data
        self._tree = self._parser.parse(data)
        self._exact = True  # False: an incremental tree with errors, re-parse before reading
        self._index: _LineIndex | None = None

    @property
    def language(self) -> str:
        """The language name."""
        return self._language

    @property
    def text(self) -> str:
        """The current text."""
        return self._text

    @property
    def tree(self) -> tree_sitter.Tree:
        """The current tree-sitter tree, as a fresh parse of :attr:`text` gives it (do not edit).

        See the module docstring: an incremental tree with errors is re-parsed from scratch here.
        """
        if not self._exact:
            self._tree = self._parser.parse(self._data)
            self._exact = True
        return self._tree

    def _check_size(self, size: int) -> None:
        if size > self._text_bytes_max:
            raise AnalysisError(
                f"text too big to parse: {size} bytes, limit {self._text_bytes_max}"
            )

    def apply_edit(self, start: int, end: int, new_text: str) -> None:
        """Replace code points ``[start, end)`` of the current text with ``new_text``; re-parse.

        Raises ValueError for offsets outside the text and AnalysisError if the result would be
        too big; in both cases nothing changes.
        """
        text, data = self._text, self._data
        if not 0 <= start <= end <= len(text):
            raise ValueError(f"edit [{start}, {end}) outside a text of {len(text)} code points")
        ascii_text = len(text) == len(data)
        start_byte = start if ascii_text else len(_encode(text[:start]))
        old_end_byte = end if ascii_text else start_byte + len(_encode(text[start:end]))
        inserted = _encode(new_text)
        new_end_byte = start_byte + len(inserted)
        new_data = b"".join((data[:start_byte], inserted, data[old_end_byte:]))
        self._check_size(len(new_data))
        old_tree = self._tree.copy()  # trees handed out by `tree` keep their positions
        old_tree.edit(
            start_byte=start_byte,
            old_end_byte=old_end_byte,
            new_end_byte=new_end_byte,
            start_point=_point(data, start_byte),
            old_end_point=_point(data, old_end_byte),
            new_end_point=_point(new_data, new_end_byte),
        )
        self._text = "".join((text[:start], new_text, text[end:]))
        self._data = new_data
        self._index = None
        self._tree = self._parser.parse(new_data, old_tree)
        self._exact = not self._tree.root_node.has_error

    # -- results ---------------------------------------------------------------------------

    def _lines(self) -> _LineIndex:
        if self._index is None:
            self._index = _LineIndex(self._text, self._data)
        return self._index

    def _span(self, start_byte: int, end_byte: int) -> Span:
        lines = self._lines()
        return Span(lines.pos(start_byte), lines.pos(end_byte))

    def _node_text(self, node: tree_sitter.Node) -> str:
        return _decode(self._data[node.start_byte : node.end_byte])

    def errors(self, limit: int = ERRORS_MAX) -> list[Diagnostic]:
        """Syntax errors (source ``"syntax"``), in text order, at most ``limit``.

        An ``ERROR`` node gives "Syntax error: unexpected `<its first line>` [in <construct>]"
        over its first line; a ``MISSING`` node "Syntax error: missing <token> [in <construct>]"
        as an empty span where the token should be.
        """
        root = self.tree.root_node
        if not root.has_error:
            return []
        out: list[Diagnostic] = []
        stack = [root]
        while stack and len(out) < limit:
            node = stack.pop()
            if node.is_missing:
                what = _human(node.type) if node.is_named else f"`{node.type}`"
                span = self._span(node.start_byte, node.start_byte)
                out.append(_syntax_error(span, f"Syntax error: missing {what}{_context(node)}"))
            elif node.is_error:
                lines = self._lines()
                start = lines.pos(node.start_byte)
                end = lines.pos(node.end_byte)
                if end.line > start.line:
                    end = lines.line_end(start.line)
                snippet = _snippet(self._node_text(node))
                message = f"Syntax error: unexpected `{snippet}`" if snippet else "Syntax error"
                out.append(_syntax_error(Span(start, end), message + _context(node)))
            elif node.has_error:
                stack.extend(reversed(node.children))
        return out

    def symbols(self) -> list[Symbol]:
        """Definitions from ``tags.scm``, nested by range (methods inside their classes)."""
        tags = query(self._language, "tags")
        if tags is None:
            return []
        found: dict[tuple[int, int], _Def] = {}
        for pattern, captures in tree_sitter.QueryCursor(tags).matches(self.tree.root_node):
            definition = next((k for k in captures if k.startswith("definition.")), None)
            names = captures.get("name")
            if definition is None or not names:
                continue
            node, name_node = captures[definition][0], names[0]
            kind = definition.removeprefix("definition.")
            name = " ".join(self._node_text(name_node).split())
            if kind == "impl":
                trait = captures.get("trait")
                prefix = (
                    f"impl {' '.join(self._node_text(trait[0]).split())} for " if trait else "impl "
                )
                name, kind = prefix + name, "object"
            if len(name) > NAME_CHARS_MAX:
                name = name[: NAME_CHARS_MAX - 1] + "…"
            start = min(node.start_byte, name_node.start_byte)
            end = max(node.end_byte, name_node.end_byte)
            entry = _Def(name, kind, start, end, name_node.start_byte, name_node.end_byte, pattern)
            key = (name_node.start_byte, name_node.end_byte)
            old = found.get(key)
            if old is None or (end - start, pattern) >= (old.end - old.start, old.pattern):
                found[key] = entry
        ordered = sorted(found.values(), key=lambda d: (d.start, -d.end, d.name_start))
        roots: list[_Def] = []
        stack: list[_Def] = []
        for entry in ordered[:SYMBOLS_MAX]:
            while stack and not (stack[-1].start <= entry.start and entry.end <= stack[-1].end):
                stack.pop()
            if stack:
                parent = stack[-1]
                if entry.kind == "function" and parent.kind in _CONTAINERS:
                    entry.kind = "method"
                parent.children.append(entry)
            else:
                roots.append(entry)
            stack.append(entry)
        return [self._symbol(entry) for entry in roots]

    def _symbol(self, entry: _Def) -> Symbol:
        span = self._span(entry.start, entry.end)
        if span.end.col == 0 and span.end.line > span.start.line:  # ends with its line break
            span = Span(span.start, self._lines().line_end(span.end.line - 1))
        return Symbol(
            name=entry.name,
            kind=entry.kind,
            span=span,
            selection_span=self._span(entry.name_start, entry.name_end),
            children=tuple(self._symbol(child) for child in entry.children),
        )

    def folds(self) -> list[Fold]:
        """Folding ranges from ``folds.scm``, sorted, one per start line (the widest)."""
        folds_query = query(self._language, "folds")
        if folds_query is None:
            return []
        lines = self._lines()
        plain: list[Fold] = []
        runs: dict[FoldKind, list[tuple[int, int]]] = {"comment": [], "imports": []}
        root = self.tree.root_node
        for _, captures in tree_sitter.QueryCursor(folds_query).matches(root):
            end_nodes = captures.get("end")
            for capture, nodes in captures.items():
                if capture not in _FOLD_KINDS:
                    continue
                kind = _FOLD_KINDS[capture]
                for node in nodes:
                    first = lines.line_of(node.start_byte)
                    if kind == "comment" or kind == "imports":
                        if lines.only_space_before(node.start_byte):  # not after code
                            runs[kind].append((first, _last_line(lines, node.end_byte, first)))
                        continue
                    if end_nodes:
                        last = _last_line(lines, max(end_nodes[0].end_byte, node.start_byte), first)
                    else:
                        last = self._fold_end_line(node, lines)
                    if last > first:
                        plain.append(Fold(first, last, kind))
        for kind, spans in runs.items():
            plain.extend(_merge_runs(kind, spans, lines))
        best: dict[int, Fold] = {}
        for fold in plain:
            if fold.end_line > fold.start_line:
                old = best.get(fold.start_line)
                if old is None or fold.end_line > old.end_line:
                    best[fold.start_line] = fold
        return [best[line] for line in sorted(best)]

    @staticmethod
    def _fold_end_line(node: tree_sitter.Node, lines: _LineIndex) -> int:
        first = lines.line_of(node.start_byte)
        last = _last_line(lines, node.end_byte, first)
        if node.child_count:
            closer = node.child(node.child_count - 1)
            assert closer is not None
            closer_line = lines.line_of(closer.start_byte)
            is_closer = not closer.is_named or closer.type in _NAMED_CLOSERS
            if (
                is_closer
                and closer_line == last > first
                and lines.only_space_before(closer.start_byte)
            ):
                last -= 1  # keep the closing `}` / `"""` line visible
        return last


def _point(data: bytes, byte_offset: int) -> tuple[int, int]:
    """Tree-sitter's point for a byte offset: (row counted by b"\\n", byte column)."""
    row = data.count(b"\n", 0, byte_offset)
    return row, byte_offset - (data.rfind(b"\n", 0, byte_offset) + 1)


def _last_line(lines: _LineIndex, end_byte: int, first: int) -> int:
    """The last line a node ending at ``end_byte`` covers (not the next one if it ends a line)."""
    line = lines.line_of(end_byte)
    return line - 1 if end_byte == lines.byte_starts[line] and line > first else line


def _syntax_error(span: Span, message: str) -> Diagnostic:
    return Diagnostic(span=span, severity="error", message=message, source="syntax")


def _merge_runs(kind: FoldKind, spans: list[tuple[int, int]], lines: _LineIndex) -> list[Fold]:
    """Merge consecutive comments (adjacent lines) or imports (blank lines between allowed)."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(spans):
        if merged:
            prev_first, prev_last = merged[-1]
            gap = range(prev_last + 1, first)
            if first <= prev_last + 1 or (
                kind == "imports" and all(lines.is_blank(line) for line in gap)
            ):
                merged[-1] = (prev_first, max(prev_last, last))
                continue
        merged.append((first, last))
    return [Fold(first, last, kind) for first, last in merged if last > first]
