"""The ``ruff server`` engine: one long-lived child driven over LSP stdio (didOpen/didChange;
the child publishes the diagnostics of each version), sent only what changed since the text it
has. Its one primitive, ``lint``, starts a check without waiting when it can (a callback, no
task; else in a task of the engine's), and a hint can send an
editor's change before the language server has applied it (``send_ahead``)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...text.diff import common_span
from ...text.positions import Encoding, LineIndex, PositionError
from .._configtree import (
    ConfigTree,
    ruff_env,
)
from .._lsp_stdio import ChildProcess, LspStdioClient
from ..model import (
    AnalysisError,
    Findings,
    TextChange,
)
from .cli import (
    STDERR_LINES_KEPT,
    TREES_OF_CONFIGS_MAX,
    LintCallback,
    RuffEngine,
    settle,
)
from .rules import (
    _server_findings,
)

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Document:
    uri: str
    version: int = 0  # 0: not open in the child
    generation: int = 0  # which child it was opened in
    found: int = 0  # diagnostics found by its last check
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The text the child has (the object last sent), None when unknown: then the next change
    # sends the whole text. ``sent_index``: its LineIndex, when the caller gave one.
    sent: str | None = None
    sent_index: LineIndex | None = None
    # Whether the child publishes diagnostics for this document after each change (None: not
    # known yet; False: it does not, e.g. a file the config excludes: then it is pulled).
    pushes: bool | None = None
    exchange: _Exchange | None = None  # the check in flight, if any


class _Exchange:
    """One check in flight with the child: the change that gives the child ``text`` has been
    sent as ``version``; it ends with the child's ``publishDiagnostics`` for that version (or
    the answer to a pull), the timeout, or the child's death: then ``done`` and the
    ``waiters`` are called with the findings or the error.

    One sent by :meth:`RuffServerEngine.send_ahead` has no ``text`` (nor ``done``) until the
    check of the new text adopts it; ``ahead`` is then the change that was sent (the old text,
    start, end, new text)."""

    __slots__ = (
        "ahead",
        "client",
        "doc",
        "done",
        "encoding",
        "finished",
        "index",
        "probe",
        "request",
        "text",
        "timer",
        "tree",
        "version",
        "waiters",
    )

    def __init__(
        self,
        client: LspStdioClient,
        tree: ConfigTree,
        doc: _Document,
        text: str | None,
        index: LineIndex | None,
        encoding: Encoding,
        done: LintCallback | None,
    ) -> None:
        self.ahead: tuple[str, int, int, str] | None = None
        self.client = client
        self.tree = tree
        self.doc = doc
        self.text = text
        self.index = index
        self.encoding = encoding
        self.done = done
        self.version = doc.version
        self.finished = False
        self.probe = False  # a pull after a change: does the child push for this document?
        self.request: int | None = None  # the pull's request id
        self.timer: asyncio.TimerHandle | None = None
        self.waiters: list[LintCallback] = []


_LONE_SURROGATE = "a lone surrogate (U+D800..U+DFFF), which ruff cannot read"


def _check_encodable(text: str) -> None:
    """Refuse text that cannot go to ``ruff server`` as UTF-8 JSON (it would exit)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise AnalysisError(f"the text contains {_LONE_SURROGATE}") from None


def _change_holds(old: str, new: str, start: int, end: int, new_text: str) -> bool:
    """``new == old[:start] + new_text + old[end:]``, with one copy of ``old`` at most."""
    return (
        0 <= start <= end <= len(old)
        and len(new) == len(old) - (end - start) + len(new_text)
        and new.startswith(new_text, start)
        and new.startswith(old[:start])
        and new.endswith(old[end:])
    )


def _codepoint_ranges(
    items: list[dict[str, Any]], index: LineIndex, encoding: Encoding
) -> list[dict[str, Any]]:
    """The child's diagnostics with their positions (``encoding`` units) in code points."""

    def pos(p: dict[str, Any]) -> dict[str, int]:
        line = int(p["line"])
        if line >= index.line_count:
            return p
        offset = index.offset(line, int(p["character"]), encoding, strict=False)
        return {"line": line, "character": offset - index.line_start(line)}

    def rng(r: dict[str, Any]) -> dict[str, Any]:
        return {"start": pos(r["start"]), "end": pos(r["end"])}

    out = []
    for item in items:
        item = {**item, "range": rng(item["range"])}
        data = item.get("data")
        if isinstance(data, dict):
            data = dict(data)
            if data.get("edits"):
                data["edits"] = [{**e, "range": rng(e["range"])} for e in data["edits"]]
            if data.get("noqa_edit"):
                data["noqa_edit"] = {**data["noqa_edit"], "range": rng(data["noqa_edit"]["range"])}
            item["data"] = data
        out.append(item)
    return out


class RuffServerEngine(RuffEngine):
    """:meth:`check` through one long-lived ``ruff server`` child; the rest as :class:`RuffEngine`.

    Each config tree is a workspace folder of the child, so ruff resolves settings per file just as
    on disk. Documents are opened once; each check sends one didChange with one ranged change
    from the text the child has (from the caller's ``change`` hint, checked, or else the span
    between the common prefix and suffix), in one write. The child is started on first use and
    again after it dies or times out.

    The child pushes: it is started as for a client without pull diagnostics, so that it lints
    each change at once on its main thread and publishes the result with the change's version
    (one message less each way than a pull, and no hop to a worker thread in ruff). An exchange
    ends with that publish, matched by document and version: a publish for another version is
    never taken. The first exchange of a document (its didOpen) also pulls, and the answer
    tells whether the child pushes for it at all: ruff publishes nothing for a file the config
    excludes, and such a document is pulled from then on, as is every document of a ruff that
    would stop pushing. Every exchange is bounded by ``timeout_s``: then the child is killed
    (and restarted by the next check), with a warning in the log.

    :meth:`lint` starts an exchange without waiting when it can and calls back when it ends (from
    the event loop's read callback of the child's stdout): no task, no loop turn between a
    caller's edit and the write to the child, nor between the child's answer and the caller's
    callback.

    Positions to and from the child are in the encoding it chooses among ``position_encodings``
    (``ruff server`` takes the first: utf-32, i.e. code points, needs no conversion).

    Some checks go to the CLI instead:

    - the first check for a set of configs: ruff's CLI reports a broken config as an error, the
      server only logs it and falls back to defaults;
    - a document whose last check found ``cli_from_diagnostics`` or more diagnostics: the server
      costs about 55 us per diagnostic (the CLI about 10 us), so from roughly 250 diagnostics
      on, a fresh ``ruff check`` process is faster (see ``benchmarks/ruff_engines.py``). ``None``
      always uses the server.
    """

    def __init__(
        self,
        *,
        open_documents_max: int = 256,
        cli_from_diagnostics: int | None = 250,
        position_encodings: tuple[str, ...] = ("utf-32", "utf-16"),
        **options: Any,
    ) -> None:
        super().__init__(**options)
        assert open_documents_max >= 1
        assert position_encodings and all(e in set(Encoding) for e in position_encodings)
        self.open_documents_max = open_documents_max
        self.cli_from_diagnostics = cli_from_diagnostics
        self.position_encodings = position_encodings
        self.child_encoding = Encoding.UTF32  # what the current child chose
        self._proc: ChildProcess | None = None
        self._client: LspStdioClient | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._start_lock = asyncio.Lock()
        self._folders: set[str] = set()  # tree keys registered in the current child
        self._docs: collections.OrderedDict[tuple[str, str], _Document] = collections.OrderedDict()
        self._validated: set[str] = set()
        # Notifications for the current child that go with the next exchange (see _document).
        self._queued: list[tuple[str, Any]] = []
        self._generation = 0  # counts children started
        self.restarts = 0  # children found dead and replaced
        # id(configs) -> (configs, its live tree): configs objects seen lately (see lint)
        self._tree_of: dict[int, tuple[Mapping[str, str], ConfigTree]] = {}
        # uri -> the exchange waiting for the child's publishDiagnostics of that document
        self._awaiting: dict[str, _Exchange] = {}
        self.sent_full = 0  # didOpen / whole-text didChange sent (for tests and benchmarks)
        self.sent_ranged = 0  # ranged didChange sent
        self.pushed = 0  # exchanges ended by the child's publish (the rest: by a pull)

    def lint(
        self,
        text: str,
        path: str,
        configs: Mapping[str, str],
        done: LintCallback,
        *,
        layout: Iterable[str] | None = None,
        index: LineIndex | None = None,
        change: TextChange | None = None,
    ) -> asyncio.Task[None] | None:
        """As :meth:`RuffEngine.lint`, answered by the ``ruff server`` child: at once, without
        a task (None), when it can start at once: the child runs, the tree of ``configs`` is
        live and was validated (a lint with these configs ran before), the document has no
        exchange in flight and is not one for the CLI. The messages to the child are then
        written before this returns, and ``done`` is called from the callback that reads the
        child's answer. Otherwise in a task of the engine's, which waits for what is missing
        (the child's start, the CLI's validation of the configs, the exchange in flight)."""
        assert index is None or index.text is text, "index must be the LineIndex of text"
        if layout is None and self._start_now(text, path, configs, done, index, change):
            return None
        return self._in_task(self._lint_waiting(text, path, configs, layout, index, change), done)

    async def _lint_waiting(
        self,
        text: str,
        path: str,
        configs: Mapping[str, str],
        layout: Iterable[str] | None,
        index: LineIndex | None,
        change: TextChange | None,
    ) -> Findings:
        """:meth:`lint` when it could not start at once."""
        self._check_size(text, path)
        known = self._tree_of.get(id(configs))
        if known is not None and known[0] is configs and layout is None:
            # The tree of these very configs is live (eviction forgets it): skip ConfigTrees.use
            # (which hashes the configs), but hold the tree the same way while in use.
            tree = known[1]
            tree.users += 1
            try:
                return await self._lint_in(tree, text, path, configs, index, change)
            finally:
                tree.users -= 1
        async with self._trees.use(configs, layout) as tree:
            if len(self._tree_of) >= TREES_OF_CONFIGS_MAX:
                self._tree_of.clear()
            self._tree_of[id(configs)] = (configs, tree)
            return await self._lint_in(tree, text, path, configs, index, change)

    def _start_now(
        self,
        text: str,
        path: str,
        configs: Mapping[str, str],
        done: LintCallback,
        index: LineIndex | None,
        change: TextChange | None,
    ) -> bool:
        """:meth:`lint` at once, if it can (see there): True, the messages to the child
        written. False: nothing done. Raises AnalysisError, sending nothing, for text ruff must
        not get (too big, lone surrogate)."""
        client = self._client
        known = self._tree_of.get(id(configs))
        if client is None or not client.alive or known is None or known[0] is not configs:
            return False
        tree = known[1]
        if tree.key not in self._validated:
            return False
        self._check_size(text, path)
        doc = self._document(tree, path)
        if self._adopt(doc, text, index, done):
            return True
        limit = self.cli_from_diagnostics
        if (
            doc.exchange is not None
            or doc.lock.locked()
            or (limit is not None and doc.found >= limit)
        ):
            return False
        self._start(client, tree, doc, text, index, change, done)
        return True

    def send_ahead(
        self,
        path: str,
        configs: Mapping[str, str],
        old: LineIndex,
        span: tuple[int, int, int, int],
        new_text: str,
        encoding: Encoding,
    ) -> bool:
        """Send the child an editor's change now, before the caller has applied it: the text
        ``old`` of ``path`` with the LSP range ``span`` (in ``encoding``) replaced by
        ``new_text``. The child lints while the caller applies the change; the
        :meth:`lint` of the resulting text then takes that result (having
        checked that the text is what was sent). True if sent; False, having sent nothing,
        unless it can go at once: as for a :meth:`lint` at once, and the child has exactly
        ``old.text`` and pushes for the document. Never raises."""
        client = self._client
        known = self._tree_of.get(id(configs))
        if client is None or not client.alive or known is None or known[0] is not configs:
            return False
        tree = known[1]
        doc = self._docs.get((tree.key, path))
        limit = self.cli_from_diagnostics
        if (
            doc is None
            or doc.sent is not old.text
            or not doc.pushes
            or doc.exchange is not None
            or doc.lock.locked()
            or doc.generation != self._generation
            or tree.key not in self._validated
            or (limit is not None and doc.found >= limit)
            or self._queued
        ):
            return False
        text = old.text
        try:
            start = old.offset(span[0], span[1], encoding)
            end = old.offset(span[2], span[3], encoding)
            _check_encodable(new_text)
        except (PositionError, AnalysisError):
            return False  # the caller finds out for itself
        if end < start or (start == end and not new_text):
            return False
        if (0 < start < len(text) and text[start - 1] == "\r" and text[start] == "\n") or (
            0 < end < len(text) and text[end - 1] == "\r" and text[end] == "\n"
        ):
            return False  # it splits a line break (_content_change widens such a change)
        child = self.child_encoding
        if child == encoding or text.isascii():  # the same positions (isascii: O(1))
            s_line, s_char, e_line, e_char = span
        else:
            s_line, s_char = old.position(start, child)
            e_line, e_char = old.position(end, child)
        change = {
            "range": {
                "start": {"line": s_line, "character": s_char},
                "end": {"line": e_line, "character": e_char},
            },
            "text": new_text,
        }
        params = {
            "textDocument": {"uri": doc.uri, "version": doc.version + 1},
            "contentChanges": [change],
        }
        client.send_now({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": params})
        doc.version += 1
        doc.sent = doc.sent_index = None  # unknown until the new text adopts the exchange
        self.sent_ranged += 1
        ex = _Exchange(client, tree, doc, None, None, child, None)
        ex.ahead = (text, start, end, new_text)
        doc.exchange = ex
        tree.users += 1
        self._awaiting[doc.uri] = ex
        ex.timer = asyncio.get_running_loop().call_later(self.timeout_s, self._timed_out, ex)
        return True

    def adopt(self, text: str, path: str, configs: Mapping[str, str], index: LineIndex) -> None:
        """``text`` is the text of ``path`` now, and its findings are known to the caller: if
        :meth:`send_ahead` sent the change that makes it, the child's copy of the document is
        known again (the child's answer is not needed)."""
        known = self._tree_of.get(id(configs))
        if known is not None and known[0] is configs:
            doc = self._docs.get((known[1].key, path))
            if doc is not None:
                self._adopt(doc, text, index, None)

    def _adopt(
        self, doc: _Document, text: str, index: LineIndex | None, done: LintCallback | None
    ) -> bool:
        """Give the exchange sent ahead for ``doc`` its text, if the change made ``text``."""
        ex = doc.exchange
        if ex is None or ex.ahead is None or ex.text is not None or ex.finished:
            return False
        old, start, end, new_text = ex.ahead
        ex.ahead = None
        if not _change_holds(old, text, start, end, new_text):
            log.info("the change sent ahead did not make the text of %s", doc.uri)
            return False  # its answer is for another text: dropped
        ex.text, ex.index, ex.done = text, index, done
        doc.sent, doc.sent_index = text, index
        return True

    async def _lint_in(
        self,
        tree: ConfigTree,
        text: str,
        path: str,
        configs: Mapping[str, str],
        index: LineIndex | None,
        change: TextChange | None,
    ) -> Findings:
        doc = self._document(tree, path)
        limit = self.cli_from_diagnostics
        if tree.key not in self._validated or (limit is not None and doc.found >= limit):
            result = await self._lint_cli(self._input(text, path), path, configs)
            self._validated.add(tree.key)
            doc.found = len(result)
            return result
        async with self._slots, doc.lock:
            return await self._check_with_server(tree, doc, text, index, change)

    async def _check_with_server(
        self,
        tree: ConfigTree,
        doc: _Document,
        text: str,
        index: LineIndex | None,
        change: TextChange | None,
    ) -> Findings:
        loop = asyncio.get_running_loop()
        if self._adopt(doc, text, index, None):  # sent ahead: its answer is this check's
            assert doc.exchange is not None
            adopted: asyncio.Future[Findings] = loop.create_future()
            doc.exchange.waiters.append(functools.partial(settle, adopted))
            return await adopted
        while (running := doc.exchange) is not None:  # one started at once: let it end
            ended: asyncio.Future[None] = loop.create_future()
            running.waiters.append(functools.partial(_wake, ended))
            await ended
        client = self._client
        if client is None or not client.alive:
            client = await self._ensure_child()
        future: asyncio.Future[Findings] = loop.create_future()

        self._start(client, tree, doc, text, index, change, functools.partial(settle, future))
        await client.drain()
        # Cancelled: the exchange goes on (bounded by its timer); the child's copy of the
        # document stays known, and the next check of the document waits for it to end.
        return await future

    def _start(
        self,
        client: LspStdioClient,
        tree: ConfigTree,
        doc: _Document,
        text: str,
        index: LineIndex | None,
        change: TextChange | None,
        done: LintCallback,
    ) -> None:
        """Send what gives the child ``text`` and ask for its diagnostics; ``done`` is called
        when they are in (never from here). Raises AnalysisError, having sent nothing, for a
        text the child cannot read or a dead child."""
        assert doc.exchange is None
        if doc.generation != self._generation:  # not open in this child (yet)
            doc.generation, doc.version, doc.sent, doc.sent_index = self._generation, 0, None, None
            doc.pushes = None
        sync = self._sync(doc, text, change)  # refuses a text the child cannot read
        if sync is None and doc.pushes:  # the child has it: an empty change still gets a push
            params = {"textDocument": {"uri": doc.uri, "version": doc.version + 1}}
            sync = "textDocument/didChange", {**params, "contentChanges": []}
        # Closes and folder removals go first, in order with what follows (a document or folder
        # closed, then opened again, must end up open).
        notes, self._queued = self._queued, []
        if tree.key not in self._folders:
            notes.append(
                (
                    "workspace/didChangeWorkspaceFolders",
                    {"event": {"added": [_folder(tree)], "removed": []}},
                )
            )
            self._folders.add(tree.key)
        if sync is not None:
            notes.append(sync)
            doc.version += 1
        ex = _Exchange(client, tree, doc, text, index, self.child_encoding, done)
        try:
            if doc.pushes:
                client.send_now(*({"jsonrpc": "2.0", "method": m, "params": p} for m, p in notes))
            else:  # pull; after a change with pushes unknown, a push may come first (probe)
                ex.probe = doc.pushes is None and sync is not None
                ex.request = client.send_request(
                    "textDocument/diagnostic",
                    {"textDocument": {"uri": doc.uri}},
                    lambda result, error: self._pulled(ex, result, error),
                    notifications=notes,
                )
        except AnalysisError:
            doc.sent = doc.sent_index = None
            raise
        # From here the child is taken to have ``text``; if the exchange fails, it is unknown.
        doc.sent, doc.sent_index = text, index
        doc.exchange = ex
        tree.users += 1
        if doc.pushes or ex.probe:
            self._awaiting[doc.uri] = ex
        ex.timer = asyncio.get_running_loop().call_later(self.timeout_s, self._timed_out, ex)

    def _on_publish(self, params: Any) -> None:
        """The child's diagnostics of one document: the end of the exchange waiting for
        exactly that version of it, if any (others are stale or unasked for: dropped)."""
        if not isinstance(params, dict):
            return
        ex = self._awaiting.get(params.get("uri"))  # type: ignore[arg-type]
        if ex is None or params.get("version") != ex.version:
            return
        ex.doc.pushes = True
        if ex.request is not None:  # the probe's pull is not needed any more (nor cancelled)
            ex.client.forget(ex.request, cancel=False)
        self.pushed += 1
        self._finish(ex, params.get("diagnostics") or [], None)

    def _pulled(self, ex: _Exchange, result: Any, error: AnalysisError | None) -> None:
        if ex.finished:
            return
        if error is not None:
            self._finish(ex, None, error)
            self._kill_child(ex.client)  # an error answer: do not trust the child any more
            return
        if ex.probe and ex.doc.pushes is None:
            ex.doc.pushes = False  # no publish came before the answer: it pulls from now on
            log.info("ruff server does not publish diagnostics for %s: pulling them", ex.doc.uri)
        self._finish(ex, (result or {}).get("items") or [], None)

    def _timed_out(self, ex: _Exchange) -> None:
        if ex.finished:
            return
        reason = f"ruff server did not answer within {self.timeout_s:g} s"
        log.warning("%s (checking %s); restarting it", reason, ex.doc.uri)
        self._finish(ex, None, AnalysisError(reason))
        self._kill_child(ex.client)

    def _on_dead(self, client: LspStdioClient, reason: str) -> None:
        """The child of ``client`` is gone: its pending exchanges fail."""
        for ex in [e for e in self._awaiting.values() if e.client is client]:
            self._finish(ex, None, AnalysisError(reason))

    def _kill_child(self, client: LspStdioClient) -> None:
        """Stop trusting ``client``'s child and kill it; the next check starts another."""
        client.fail(f"{client.name} was stopped")
        if client is self._client and self._proc is not None:
            self._proc.kill()

    def _finish(
        self, ex: _Exchange, items: list[dict[str, Any]] | None, error: AnalysisError | None
    ) -> None:
        if ex.finished:
            return
        ex.finished = True
        doc = ex.doc
        if doc.exchange is ex:
            doc.exchange = None
        if self._awaiting.get(doc.uri) is ex:
            del self._awaiting[doc.uri]
        callbacks = [c for c in (ex.done, *ex.waiters) if c is not None]
        if ex.text is None and error is None:  # sent ahead, never adopted: nobody asks
            error = AnalysisError("a change sent ahead was not adopted")
        found: Findings | None = None
        if error is None and callbacks:
            assert items is not None and ex.text is not None
            try:
                if items and ex.encoding != Encoding.UTF32 and not ex.text.isascii():
                    index = ex.index or LineIndex(ex.text)
                    items = _codepoint_ranges(items, index, ex.encoding)
                found = _server_findings(items)
            except (KeyError, TypeError, ValueError, PositionError) as exc:
                error = AnalysisError(f"ruff server sent unreadable diagnostics: {exc}")
            else:
                doc.found = len(found)
        if error is not None and ex.text is not None and doc.sent is ex.text:
            doc.sent = doc.sent_index = None
        for callback in callbacks:  # first: the caller publishes from here
            try:
                callback(found, error)
            except Exception:
                log.exception("a ruff result callback failed")
        if ex.timer is not None:
            ex.timer.cancel()
        ex.tree.users -= 1

    def _sync(
        self, doc: _Document, text: str, change: TextChange | None
    ) -> tuple[str, dict[str, Any]] | None:
        """The notification that gives the child ``text`` (None: it has it already)."""
        if doc.version == 0:
            _check_encodable(text)
            self.sent_full += 1
            item = {"uri": doc.uri, "languageId": "python", "version": 1, "text": text}
            return "textDocument/didOpen", {"textDocument": item}
        content = self._content_change(doc, text, change)
        if content is None:
            return None
        params = {
            "textDocument": {"uri": doc.uri, "version": doc.version + 1},
            "contentChanges": [content],
        }
        return "textDocument/didChange", params

    def _content_change(
        self, doc: _Document, text: str, change: TextChange | None
    ) -> dict[str, Any] | None:
        """One ``contentChanges`` entry turning the child's copy of the document into ``text``
        (None: no change)."""
        old = doc.sent
        if old is text:
            return None
        if old is None:
            _check_encodable(text)
            self.sent_full += 1
            return {"text": text}
        if change is not None and change.old.text is old:
            start, end, new_text = change.start, change.end, change.new_text
            old_index = change.old
            if not _change_holds(old, text, start, end, new_text):
                log.warning("ignoring a change hint that does not hold for %s", doc.uri)
                start, end, new_text = common_span(old, text)
        else:
            start, end, new_text = common_span(old, text)
            old_index = doc.sent_index if doc.sent_index is not None else LineIndex(old)
        # No position names the point between "\r" and "\n": take the break into the change.
        if 0 < start < len(old) and old[start - 1] == "\r" and old[start] == "\n":
            start -= 1
            new_text = "\r" + new_text
        if 0 < end < len(old) and old[end - 1] == "\r" and old[end] == "\n":
            end += 1
            new_text += "\n"
        if start == end and not new_text:
            return None
        _check_encodable(new_text)
        if start == 0 and end == len(old):
            self.sent_full += 1
            return {"text": text}
        encoding = self.child_encoding
        try:
            s_line, s_char = old_index.position(start, encoding, strict=True)
            e_line, e_char = old_index.position(end, encoding, strict=True)
        except PositionError as exc:  # cannot happen; the whole text is always right
            log.warning("sending the whole text of %s: %s", doc.uri, exc)
            self.sent_full += 1
            return {"text": text}
        self.sent_ranged += 1
        return {
            "range": {
                "start": {"line": s_line, "character": s_char},
                "end": {"line": e_line, "character": e_char},
            },
            "text": new_text,
        }

    def _document(self, tree: ConfigTree, path: str) -> _Document:
        """The document record for ``path`` in ``tree`` (LRU; the oldest idle ones are closed)."""
        key = (tree.key, path)
        doc = self._docs.pop(key, None)
        if doc is None:
            doc = _Document(uri=tree.file(path).as_uri())
        self._docs[key] = doc
        excess = len(self._docs) - self.open_documents_max
        if excess <= 0:
            return doc
        for old_key, old in list(self._docs.items())[:excess]:
            if old.lock.locked():
                continue
            del self._docs[old_key]
            if old.version and old.generation == self._generation:
                self._queued.append(("textDocument/didClose", {"textDocument": {"uri": old.uri}}))
        return doc

    def _tree_evicted(self, tree: ConfigTree) -> None:
        self._validated.discard(tree.key)
        for configs_id in [k for k, (_, t) in self._tree_of.items() if t is tree]:
            del self._tree_of[configs_id]
        if tree.key in self._folders:
            self._folders.discard(tree.key)
            for key in [k for k in self._docs if k[0] == tree.key]:
                del self._docs[key]
            self._queued.append(
                (
                    "workspace/didChangeWorkspaceFolders",
                    {"event": {"added": [], "removed": [_folder(tree)]}},
                )
            )

    async def _ensure_child(self) -> LspStdioClient:
        """The live child (started, or restarted if it died)."""
        async with self._start_lock:
            if self._client is not None and self._client.alive:
                return self._client
            if self._client is not None:
                log.warning(
                    "ruff server died; restarting it (last output: %s)",
                    " | ".join(self._stderr_tail),
                )
                await self._stop_child(graceful=False)
                self.restarts += 1
            self._check_open()
            return await self._start_child()

    async def _start_child(self) -> LspStdioClient:
        cwd = self._trees.root / "server"
        cwd.mkdir(exist_ok=True)
        client: LspStdioClient | None = None

        def on_dead(reason: str) -> None:
            if client is not None:
                self._on_dead(client, reason)

        try:
            client = await LspStdioClient.spawn(
                self.ruff_bin,
                "server",
                "--untrusted-workspace",
                cwd=cwd,
                env=ruff_env(self._trees.xdg_dir),
                name="ruff server",
                on_notification=self._on_notification,
                on_stderr=self._on_stderr,
                on_dead=on_dead,
            )
        except OSError as exc:
            raise AnalysisError(f"cannot start ruff server ({self.ruff_bin}): {exc}") from exc
        self._proc = client.process
        self._client = client
        self._generation += 1
        self._folders.clear()
        self._queued.clear()  # about the old child's documents and folders
        try:
            result = await client.request(
                "initialize",
                {
                    "processId": os.getpid(),
                    "clientInfo": {"name": "lsp-dbcode"},
                    "rootUri": None,
                    "workspaceFolders": None,
                    "capabilities": {
                        "general": {"positionEncodings": list(self.position_encodings)},
                        "workspace": {"workspaceFolders": True, "configuration": False},
                        # No "diagnostic" (pull) capability: the child publishes after each
                        # change (see the class docstring); it still answers pulls.
                        "textDocument": {
                            "publishDiagnostics": {"versionSupport": True},
                            "synchronization": {"dynamicRegistration": False},
                        },
                    },
                    "initializationOptions": {
                        "settings": {"configurationPreference": "filesystemFirst"}
                    },
                },
                self.timeout_s,
            )
            # No answer means LSP's default, utf-16.
            chosen = ((result or {}).get("capabilities") or {}).get("positionEncoding", "utf-16")
            if chosen not in set(Encoding):
                raise AnalysisError(f"ruff server chose an unknown position encoding {chosen!r}")
            self.child_encoding = Encoding(chosen)
            if self.child_encoding not in self.position_encodings:
                log.info("ruff server chose position encoding %s", chosen)
            await client.notify("initialized", {})
        except BaseException:
            await self._stop_child(graceful=False)
            raise
        return client

    def _on_stderr(self, line: str) -> None:
        """A line of the child's log (it is read as it comes: a full pipe would block it)."""
        self._stderr_tail.append(line)
        log.debug("ruff server: %s", line)

    def _on_notification(self, method: str, params: Any) -> None:
        if method == "textDocument/publishDiagnostics":
            self._on_publish(params)
        elif method in ("window/showMessage", "window/logMessage") and isinstance(params, dict):
            level = logging.WARNING if params.get("type") == 1 else logging.DEBUG
            log.log(level, "ruff server: %s", params.get("message"))

    async def _stop_child(self, *, graceful: bool = True) -> None:
        """End the child: LSP shutdown/exit if ``graceful`` (bounded), else kill it at once."""
        client, proc = self._client, self._proc
        self._client = self._proc = None
        self._folders.clear()
        if client is not None:
            if graceful and client.alive:
                with contextlib.suppress(AnalysisError):
                    await client.request("shutdown", None, min(self.timeout_s, 2.0))
                    await client.notify("exit", None)
            await client.close()  # fails what is still pending
        if proc is not None:
            if graceful and proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            proc.close()

    async def close(self) -> None:
        """Stop the child, then as :meth:`RuffEngine.close`."""
        self._closed = True
        async with self._start_lock:
            await self._stop_child()
        await super().close()


def _wake(future: asyncio.Future[None], *_result: object) -> None:
    if not future.done():
        future.set_result(None)


def _folder(tree: ConfigTree) -> dict[str, str]:
    return {"uri": tree.dir.as_uri(), "name": tree.key}


def make_ruff_engine(*, engine: str | None = None, **options: Any) -> RuffEngine:
    """The ruff engine to use: ``"server"`` (default: fastest per check) or ``"subprocess"``.

    ``engine`` defaults to the ``DBCODE_RUFF_ENGINE`` environment variable, then ``"server"``.
    ``options`` go to the engine (``timeout_s``, ``file_bytes_max``, ``max_concurrent``, ...).
    """
    choice = engine or os.environ.get("DBCODE_RUFF_ENGINE") or "server"
    if choice == "server":
        return RuffServerEngine(**options)
    if choice == "subprocess":
        return RuffEngine(**options)
    raise ValueError(f"unknown ruff engine {choice!r} (expected 'server' or 'subprocess')")
