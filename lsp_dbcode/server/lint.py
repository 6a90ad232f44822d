"""Diagnostics, fixes, formatting and structure for open documents: glue between the
session's buffers and lsp_dbcode.analysis (ruff + tree-sitter).

- Tree-sitter: one tree per open document, edited incrementally from each didChange.
- Ruff: at most one run per document at a time; an edit during a run marks the document
  "again", the finished run's result is dropped if the buffer moved on (never publish a stale
  result over a fresh one), and one more run starts on the newest text. Each run tells the engine
  how the text changed since the previous run (one composed change, see :class:`_Since`), so
  that the ``ruff server`` child gets only that; its diagnostics are published as the LSP JSON
  the engine keeps (no lsprotocol objects on that path: those are built when a request needs them).
- The path of a keystroke (issue 4): a didChange that is one ranged change goes to the ``ruff
  server`` child before the session applies it (:meth:`DocAnalysis.before_change`), so ruff
  lints on another core meanwhile; the run of the new text then takes that exchange without a
  task (:meth:`Analyzer.check` → the engine's one primitive, ``lint``), and the child's publish
  is relayed from the callback that reads it (no loop turn between the child's answer and our
  publish).
- Workspace config (pyproject.toml / ruff.toml / .ruff.toml anywhere in the workspace) comes
  from the database, cached per workspace and dropped when a changeset touches a config file.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from ..analysis import (
    AnalysisError,
    Span,
    SyntaxTree,
    is_config_path,
    is_python_path,
    language_for_path,
    make_ruff_engine,
)
from ..analysis.model import SYMBOL_KINDS, Findings, TextChange
from ..analysis.ruff import LintCallback
from ..check import format_for_commit
from ..store import Store, StoreError
from ..store.access import as_owner
from ..text.diff import diff_edits
from ..text.edits import Edit
from ..text.positions import Encoding, LineIndex
from .cache import BoundedCache
from .client import WARNING, workspace_edit
from .findings import (
    as_objects,
    diagnostic_json,
    findings_json,
    overlaps,
    range_json,
    set_diagnostics,
)

if TYPE_CHECKING:
    from .client import Client
    from .documents import OpenDoc
    from .tasks import Tasks

log = logging.getLogger(__name__)

PULL_WAIT_S = 5.0
TREE_EDITS_MAX = 200
RESULTS_MAX = 256


_Key = tuple[str, str, int, int, int]  # workspace, path, len(text), hash(text), id(configs)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a shared result's exception as seen (no one may have waited for it)."""
    if not future.cancelled():
        future.exception()


@dataclass(slots=True)
class LintResult:
    """The ruff findings of one version of a document's text."""

    version: int
    index: LineIndex
    found: Findings


@dataclass(slots=True)
class LintState:
    """A document's ruff runs: at most one in flight; an edit meanwhile asks for one more."""

    result: LintResult | None = None  # the newest published
    running: asyncio.Future[None] | None = None  # done when the run in flight has ended
    again: bool = False  # an edit came during the run: run once more on the newest text
    since: _Since | None = None  # how the text changed since the last run started

    @property
    def busy(self) -> bool:
        return self.running is not None and not self.running.done()


@dataclass(slots=True)
class TreeState:
    """A document's tree-sitter tree and the edits not applied to it yet."""

    tree: SyntaxTree | None = None
    edits: list[tuple[int, int, str]] = field(default_factory=list)


class Analyzer:
    """Process-wide: the ruff engine and the workspaces' config files."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ruff = make_ruff_engine()
        self._configs: dict[str, dict[str, str]] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._results: BoundedCache[_Key, Findings] = BoundedCache(RESULTS_MAX)
        self._running: dict[_Key, list[LintCallback]] = {}  # runs: who waits for them
        self._reading: set[asyncio.Task[dict[str, str]]] = set()  # configs read for a check
        self.on_config_change: list[Callable[[str], None]] = []

    async def configs(self, workspace: str) -> dict[str, str]:
        found = self._configs.get(workspace)
        if found is not None:
            return found
        try:
            with as_owner():  # shared by every session of the workspace
                head = await self.store.head(workspace)
                found = await self.store.config_files(workspace)
        except StoreError:
            return {}
        self._configs[workspace] = found
        if workspace not in self._watchers:
            self._watchers[workspace] = asyncio.get_running_loop().create_task(
                self._watch(workspace, head), context=contextvars.Context()
            )
        return found

    def check(
        self,
        workspace: str,
        path: str,
        index: LineIndex,
        change: TextChange | None,
        done: LintCallback,
    ) -> Findings | None:
        """Ruff's findings for ``index.text``: the known result (returned; ``done`` is not
        called), or None: ``done(findings, None)`` or ``done(None, error)`` is called later,
        never before this returns. One run per distinct (path, text, configs) however many
        sessions have the same buffer (1,000 editors receiving one commit): the sessions asking
        while it runs are called back when it ends, in the order they asked (no task each).
        ``change``: how the text came from the one of the previous check (see
        :meth:`RuffEngine.lint`). Raises AnalysisError for a text ruff must not get."""
        configs = self._configs.get(workspace)
        if configs is None:  # the workspace's first check: its configs come from the database
            task = asyncio.get_running_loop().create_task(self.configs(workspace))
            self._reading.add(task)  # kept until it ends (the loop keeps tasks weakly)
            task.add_done_callback(self._reading.discard)
            task.add_done_callback(lambda t: self._after_configs(t, workspace, path, index, done))
            return None
        return self._check(workspace, path, index, change, done, configs)

    def _check(
        self,
        workspace: str,
        path: str,
        index: LineIndex,
        change: TextChange | None,
        done: LintCallback,
        configs: dict[str, str],
    ) -> Findings | None:
        text = index.text
        # Python's str hash (64 bits, computed once per str object) stands for the text, as the
        # 64-bit blake2b did before at 4-5 times the cost; the length makes collisions rarer.
        key = (workspace, path, len(text), hash(text), id(configs))
        engine = self.ruff
        found = self._results.get(key)
        if found is not None:
            engine.adopt(text, path, configs, index)
            return found
        waiters = self._running.get(key)
        if waiters is not None:  # another session runs it
            waiters.append(done)
            return None
        waiters = [done]

        def finished(found: Findings | None, error: AnalysisError | None) -> None:
            if self._running.get(key) is waiters:
                del self._running[key]
            if found is not None:
                self._results.put(key, found)
            for waiter in waiters:  # first the one that asked first
                try:
                    waiter(found, error)
                except Exception:  # one session's failure must not stop the others'
                    log.exception("ruff result of %s not taken", path)

        self._running[key] = waiters
        try:
            engine.lint(text, path, configs, finished, index=index, change=change)
        except BaseException:
            del self._running[key]
            raise
        return None

    def _after_configs(
        self,
        task: asyncio.Task[dict[str, str]],
        workspace: str,
        path: str,
        index: LineIndex,
        done: LintCallback,
    ) -> None:
        """:meth:`check` once the workspace's configs are read."""
        try:
            found = self._check(workspace, path, index, None, done, task.result())
        except AnalysisError as exc:
            done(None, exc)
        except (Exception, asyncio.CancelledError) as exc:
            done(None, AnalysisError(f"the workspace's ruff configs: {exc!r}"))
        else:
            if found is not None:
                done(found, None)

    def send_ahead(
        self,
        workspace: str,
        path: str,
        old: LineIndex,
        span: tuple[int, int, int, int],
        new_text: str,
        encoding: Encoding,
    ) -> bool:
        """Hand an editor's change of ``old`` to the engine before it is applied (see
        :meth:`RuffServerEngine.send_ahead`); the :meth:`check` of the new text takes the
        result. False: nothing was sent."""
        configs = self._configs.get(workspace)
        if configs is None:
            return False
        return self.ruff.send_ahead(path, configs, old, span, new_text, encoding)

    async def _watch(self, workspace: str, since: int) -> None:
        """Drop the cached configs when a changeset touches one, and tell the sessions."""
        try:
            async for cs in self.store.subscribe(workspace, since):
                paths = [f.path for f in cs.files] + [f.old_path for f in cs.files if f.old_path]
                if any(is_config_path(p) for p in paths):
                    self._configs.pop(workspace, None)
                    self._results.clear()
                    for callback in list(self.on_config_change):
                        callback(workspace)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("config watcher of %s failed: %r", workspace, exc)
            self._configs.pop(workspace, None)
            self._watchers.pop(workspace, None)

    async def format_for_commit(self, workspace: str, path: str, text: str) -> str:
        """The text to store for ``path`` (formatted if the workspace asks for it)."""
        if not is_python_path(path):
            return text
        return await format_for_commit(self.ruff, await self.configs(workspace), path, text)

    async def close(self) -> None:
        for task in [*self._watchers.values(), *self._reading]:
            task.cancel()
        await self.ruff.close()


def _range(index: LineIndex, span: Span, encoding: Encoding) -> types.Range:
    r = range_json(index, span, encoding)
    return types.Range(types.Position(**r["start"]), types.Position(**r["end"]))


class DocumentLint:
    """Diagnostics, fixes, formatting and structure of one session's open documents.

    Given what it needs (the client port, the process-wide Analyzer, the session's tasks); it
    keeps each document's state in the document (``doc.lint``, ``doc.tree``)."""

    def __init__(self, client: Client, analyzer: Analyzer, tasks: Tasks) -> None:
        self.client = client
        self.analyzer = analyzer
        self.tasks = tasks

    # -- on every edit ---------------------------------------------------------------------

    def before_change(
        self, doc: OpenDoc, changes: list[tuple[tuple[int, int, int, int] | None, str]]
    ) -> None:
        """A didChange is about to be applied: when it is one ranged change of a Python buffer
        and no ruff run of it is in flight, the ruff child gets it now, so that it lints on
        another core while the session applies the change (the child checks nothing: a change
        that does not fit is caught here or by the session, and its result is then dropped)."""
        if len(changes) != 1 or (span := changes[0][0]) is None:
            return
        if doc.lint.busy or not is_python_path(doc.path):
            return
        self.analyzer.send_ahead(
            doc.workspace, doc.path, doc.index, span, changes[0][1], self.client.encoding
        )

    def on_change(self, doc: OpenDoc, edits: list[tuple[int, int, str]] | None) -> None:
        """The buffer changed (``edits``, applied in order; None: replaced or just opened)."""
        if doc.broken:
            return
        self._update_tree(doc, edits)
        if is_python_path(doc.path):
            lint = doc.lint
            if lint.since is None or edits is None or not lint.since.add(edits, doc.index):
                lint.since = _Since(doc.index)
            self.schedule_ruff(doc)

    def _update_tree(self, doc: OpenDoc, edits: list[tuple[int, int, str]] | None) -> None:
        """Queue the edits for the document's tree. Non-Python trees are updated now (their
        syntax errors are published on every edit); Python's when a request needs the tree —
        ruff reports Python's syntax errors itself, with better messages."""
        python = is_python_path(doc.path)  # .py and .pyi are tree-sitter's Python too
        if not python and language_for_path(doc.path) is None:
            return
        state = doc.tree
        if edits is None:
            state.tree = None
            state.edits = []
        else:
            state.edits.extend(edits)
            if len(state.edits) > TREE_EDITS_MAX:  # cheaper to parse afresh
                state.tree = None
                state.edits.clear()
        if python:
            return
        tree = self._tree(doc)
        enc = self.client.encoding
        items = [] if tree is None else [diagnostic_json(doc.index, d, enc) for d in tree.errors()]
        set_diagnostics(self.client, doc, "syntax", items)

    def schedule_ruff(self, doc: OpenDoc) -> None:
        """Lint the document's current text. One run at a time per document: an edit
        meanwhile marks it "again". The run's end is :meth:`_ruff_done`, a callback: when the
        engine can start at once (the ``ruff server`` child gets the change before this
        returns), the answer is published from the callback that reads it (no task, no loop
        turn); a known result is published now."""
        lint = doc.lint
        if lint.busy:
            lint.again = True
            return
        lint.again = False
        version, index = doc.version, doc.index
        change = self._ruff_change(doc)
        lint.since = _Since(index)  # the next run's changes start here
        running: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done(found: Findings | None, error: AnalysisError | None) -> None:
            running.set_result(None)
            self._ruff_done(doc, version, index, found, error)

        try:
            found = self.analyzer.check(doc.workspace, doc.path, index, change, done)
        except AnalysisError as exc:
            self._ruff_done(doc, version, index, None, exc)
            return
        if found is None:
            lint.running = running
        else:
            self._ruff_done(doc, version, index, found, None)

    def _ruff_change(self, doc: OpenDoc) -> TextChange | None:
        since = doc.lint.since
        if since is not None and since.index is doc.index:
            return since.change()
        return None

    def _ruff_done(
        self,
        doc: OpenDoc,
        version: int,
        index: LineIndex,
        found: Findings | None,
        error: AnalysisError | None,
    ) -> None:
        """The end of a run of :meth:`schedule_ruff`: publish, or run again."""
        if error is not None or found is None:
            found = Findings([])
            self.client.log(f"ruff: {doc.path}: {error}")
        if doc.closed:
            return
        if doc.lint.again:
            self.schedule_ruff(doc)
        elif doc.version == version:
            self._publish_ruff(doc, version, index, found)

    def _publish_ruff(self, doc: OpenDoc, version: int, index: LineIndex, found: Findings) -> None:
        doc.lint.result = LintResult(version, index, found)
        set_diagnostics(self.client, doc, "ruff", findings_json(found, index, self.client.encoding))

    async def wait_idle(self, doc: OpenDoc) -> None:
        """Until the newest edit of ``doc`` has been analysed (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PULL_WAIT_S
        while loop.time() < deadline:
            running = doc.lint.running
            if running is None or running.done():
                return
            await asyncio.wait({running}, timeout=deadline - loop.time())

    async def ready(self, doc: OpenDoc) -> None:
        """Until the document's diagnostics reflect its current text (for pulls: a pull can
        arrive right after didOpen, before the open has finished reading the database)."""
        async with doc.lock:
            pass  # didOpen holds the lock until it has read the file
        if not is_python_path(doc.path):
            if "syntax" not in doc.diagnostics:
                self._update_tree(doc, None)
            return
        result = doc.lint.result
        if result is None or result.version != doc.version:
            self.schedule_ruff(doc)
        await self.wait_idle(doc)

    def rerun(self, docs: list[OpenDoc]) -> None:
        """The ruff config of these documents changed: lint the Python ones again."""
        for doc in docs:
            if is_python_path(doc.path):
                self.schedule_ruff(doc)
        if self.client.pull_diagnostics and docs:
            self.tasks.run(self._refresh_after(docs))

    async def _refresh_after(self, docs: list[OpenDoc]) -> None:
        """Pull clients learn of new results only when asked to pull again."""
        for doc in docs:
            await self.wait_idle(doc)
        if not self.client.closed:
            reply = self.client.request("workspace/diagnostic/refresh", None)
            reply.add_done_callback(_retrieved)

    # -- requests ----------------------------------------------------------------------------

    def _edits(self, doc: OpenDoc, old: str, new: str) -> list[types.TextEdit]:
        return doc.text_edits(diff_edits(old, new), self.client.encoding)

    async def format(self, doc: OpenDoc, rng: types.Range | None) -> list[types.TextEdit] | None:
        if not is_python_path(doc.path):
            return None
        text = doc.text
        configs = await self.analyzer.configs(doc.workspace)
        line_range = None
        if rng is not None:
            end_line = rng.end.line + (1 if rng.end.character > 0 or rng.end == rng.start else 0)
            line_range = (rng.start.line, max(end_line, rng.start.line + 1))
        try:
            formatted = await self.analyzer.ruff.format(text, doc.path, configs, line_range)
        except AnalysisError as exc:
            self.client.show(WARNING, f"dbcode: cannot format: {exc}")
            return None
        if doc.text != text:
            return None  # the buffer moved on: an edit for an old text would be wrong
        return self._edits(doc, text, formatted)

    async def code_actions(
        self, doc: OpenDoc, params: types.CodeActionParams
    ) -> list[types.CodeAction]:
        if not is_python_path(doc.path):
            return []
        client = self.client
        enc = client.encoding
        only = params.context.only
        actions: list[types.CodeAction] = []
        want_quickfix = only is None or any(k.startswith("quickfix") for k in only)
        result = doc.lint.result
        if want_quickfix and (result is None or result.version != doc.version):
            await self.wait_idle(doc)  # the newest edit's diagnostics are on their way
            result = doc.lint.result
        if want_quickfix and result is not None and result.version == doc.version:
            index = result.index
            r = params.range
            want = {
                "start": {"line": r.start.line, "character": r.start.character},
                "end": {"line": r.end.line, "character": r.end.character},
            }
            for d in result.found.diagnostics:
                if not overlaps(range_json(index, d.span, enc), want):
                    continue
                (diag,) = _diagnostic_objects(index, [d], enc)
                if d.fix is not None and d.fix.applicability != "display-only":
                    edits = [
                        types.TextEdit(_range(index, e.span, enc), e.new_text) for e in d.fix.edits
                    ]
                    actions.append(
                        types.CodeAction(
                            title=f"Ruff ({d.code}): {d.fix.title}",
                            kind=types.CodeActionKind.QuickFix,
                            diagnostics=[diag],
                            edit=workspace_edit(client, doc.uri, doc.version, edits),
                            is_preferred=d.fix.applicability == "safe",
                        )
                    )
                if d.code and d.noqa_line is not None:
                    edit = _noqa_edit(index, d.noqa_line, d.code)
                    actions.append(
                        types.CodeAction(
                            title=f"Ruff ({d.code}): Disable for this line",
                            kind=types.CodeActionKind.QuickFix,
                            diagnostics=[diag],
                            edit=workspace_edit(
                                client, doc.uri, doc.version, doc.text_edits([edit], enc)
                            ),
                        )
                    )
        for kind, run in (
            ("source.fixAll.ruff", self.analyzer.ruff.fix_all),
            ("source.organizeImports.ruff", self.analyzer.ruff.organize_imports),
        ):
            if only is None or not any(kind.startswith(k) for k in only):
                continue
            text = doc.text
            try:
                new = await run(text, doc.path, await self.analyzer.configs(doc.workspace))
            except AnalysisError as exc:
                client.log(f"ruff: {exc}")
                continue
            if doc.text != text:
                continue
            actions.append(
                types.CodeAction(
                    title="Ruff: Fix all auto-fixable problems"
                    if "fixAll" in kind
                    else "Ruff: Organize imports",
                    kind=kind,
                    edit=workspace_edit(client, doc.uri, doc.version, self._edits(doc, text, new)),
                )
            )
        return actions

    def _tree(self, doc: OpenDoc) -> SyntaxTree | None:
        """The document's tree for its current text: queued edits applied incrementally
        (tree.edit + reparse), or parsed now if there is no tree yet."""
        state = doc.tree
        tree = state.tree
        if tree is not None and state.edits:
            try:
                for start, end, text in state.edits:
                    tree.apply_edit(start, end, text)
            except (AnalysisError, ValueError) as exc:
                log.info("dropping the syntax tree of %s: %s", doc.path, exc)
                tree = None
        state.edits.clear()
        if tree is not None and tree.text != doc.text:
            log.warning("syntax tree of %s drifted; parsing afresh", doc.uri)
            tree = None
        if tree is None:
            language = language_for_path(doc.path)
            if language is None:
                state.tree = None
                return None
            try:
                tree = SyntaxTree(language, doc.text)
            except AnalysisError:
                state.tree = None
                return None
        state.tree = tree
        return tree

    def symbols(self, doc: OpenDoc) -> list[types.DocumentSymbol] | None:
        tree = self._tree(doc)
        if tree is None:
            return None
        enc = self.client.encoding

        def convert(sym: Any) -> types.DocumentSymbol:
            return types.DocumentSymbol(
                name=sym.name or "<anonymous>",
                kind=types.SymbolKind(SYMBOL_KINDS.get(sym.kind, 13)),
                range=_range(doc.index, sym.span, enc),
                selection_range=_range(doc.index, sym.selection_span, enc),
                children=[convert(c) for c in sym.children] or None,
            )

        return [convert(s) for s in tree.symbols()]

    def folds(self, doc: OpenDoc) -> list[types.FoldingRange] | None:
        tree = self._tree(doc)
        if tree is None:
            return None
        kinds = {
            "comment": types.FoldingRangeKind.Comment,
            "imports": types.FoldingRangeKind.Imports,
            "region": types.FoldingRangeKind.Region,
        }
        return [
            types.FoldingRange(
                start_line=f.start_line,
                end_line=f.end_line,
                kind=kinds.get(f.kind) if f.kind else None,
            )
            for f in tree.folds()
        ]


def _diagnostic_objects(
    index: LineIndex, found: list[Any], enc: Encoding
) -> list[types.Diagnostic]:

    return as_objects([diagnostic_json(index, d, enc) for d in found])


class _Since:
    """How a document's text changed since ``base`` (the text of its last ruff run), composed
    into one change: ``[lo, hi)`` in the current text replaced ``[lo, hi - delta)`` of ``base``,
    where ``delta = len(current) - len(base)``; outside it both texts are equal. O(1) per edit."""

    __slots__ = ("base", "delta", "hi", "index", "lo")

    def __init__(self, base: LineIndex) -> None:
        self.base = base
        self.index = base  # the current text's index
        self.lo = self.hi = -1  # nothing changed yet
        self.delta = 0

    def add(self, edits: list[tuple[int, int, str]], index: LineIndex) -> bool:
        """Take ``edits`` (applied one after the other to the current text) that gave
        ``index``; False when they do not fit (the caller starts afresh)."""
        lo, hi, delta = self.lo, self.hi, self.delta
        length = len(self.index)
        for start, end, text in edits:
            if not 0 <= start <= end <= length:
                return False
            grown = len(text) - (end - start)
            if lo < 0:
                lo, hi = start, end
            else:
                lo, hi = min(lo, start), max(hi, end)
            hi += grown
            delta += grown
            length += grown
        if length != len(index):
            return False
        self.lo, self.hi, self.delta, self.index = lo, hi, delta, index
        return True

    def change(self) -> TextChange:
        """The change from ``base`` to the current text."""
        if self.lo < 0:
            return TextChange(self.base, 0, 0, "")
        text = self.index.text
        return TextChange(self.base, self.lo, self.hi - self.delta, text[self.lo : self.hi])


def _noqa_edit(index: LineIndex, line: int, code: str) -> Edit:
    """Insert ``# noqa: CODE`` at the end of ``line`` (or add CODE to an existing one)."""
    text = index.line_text(line)
    end = index.line_start(line) + len(text)
    marker = text.find("# noqa:")
    if marker >= 0:
        return Edit(end, end, f", {code}")
    return Edit(end, end, f"  # noqa: {code}")
