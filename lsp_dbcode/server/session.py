"""One LSP session: its agent and mode, its open documents, its subscriptions.

Handlers (features.py) call these methods; every SQL statement stays in the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from lsprotocol import types

from ..store import (
    Change,
    Changeset,
    Conflict,
    FileChange,
    InvalidInput,
    NotFound,
    StoreError,
    validate,
)
from ..text.edits import content_hash
from ..text.merge import find_conflicts, merge3
from ..text.positions import Encoding, LineIndex
from ..uris import changeset_json, make_uri, parse_uri
from .analysis import DocAnalysis
from .app import retrying
from .documents import DocumentSync, OpenDoc
from .protocol import DbcodeProtocol

if TYPE_CHECKING:
    from pygls.lsp.server import LanguageServer

    from .app import App

log = logging.getLogger(__name__)

LIVE_COALESCE_S = 0.05
CAS_RETRIES_MAX = 10
CHANGES_PER_NOTIFICATION_MAX = 5000

Mode = Literal["save", "live"]


def _acquire_now(lock: asyncio.Lock) -> None:
    """Take a free asyncio lock without awaiting (acquiring a free lock never suspends)."""
    coro = lock.acquire()
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise AssertionError("the lock was not free")


def _warnings_lsp(warnings: tuple[Any, ...]) -> dict[str, Any]:
    """A commit result's ``warnings``: other agents' non-exclusive claims it touched."""
    if not warnings:
        return {}
    from .review import claim_lsp

    return {"warnings": [claim_lsp(c) for c in warnings]}


class Session:
    def __init__(self, app: App, ls: LanguageServer) -> None:
        self.app = app
        self.ls = ls
        self.agent = "lsp-client"
        self.mode: Mode = "save"
        self.encoding = Encoding.UTF16
        self.supports_document_changes = False
        self.docs: dict[str, OpenDoc] = {}
        self.sync = DocumentSync(self)
        self._subscriptions: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._read_revisions: dict[str, tuple[int, str]] = {}  # uri -> (rev, hash) last served
        self.closed = False
        self.format_on_save = False
        self.folders: list[str] = []
        self.pull_diagnostics = False
        self.analysis = DocAnalysis(self, app.analyzer)
        fast = getattr(ls.protocol, "fast_notifications", None)
        if fast is not None:  # our protocol: the document notifications skip pygls
            fast["textDocument/didOpen"] = self._fast_did_open
            fast["textDocument/didChange"] = self._fast_did_change
            fast["textDocument/didClose"] = self._fast_did_close
        app.analyzer.on_config_change.append(self.analysis.rerun_workspace)

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def protocol(self) -> DbcodeProtocol:
        return self.ls.protocol  # type: ignore[return-value]

    @property
    def store(self) -> Any:
        return self.app.store

    def run_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start a task that is kept, and whose failure is logged (never fire-and-forget)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task failed: %r", exc, exc_info=exc)

    def show(self, kind: types.MessageType, message: str) -> None:
        if not self.closed:
            self.ls.window_show_message(types.ShowMessageParams(kind, message))

    def notify_raw(self, method: str, params: dict[str, Any]) -> None:
        """Send a notification whose params are plain JSON data (bypasses cattrs)."""
        if not self.closed:
            self.protocol.send_raw({"jsonrpc": "2.0", "method": method, "params": params})

    def log_message(self, message: str) -> None:
        self.notify_raw("window/logMessage", {"type": 3, "message": message})  # 3: Info

    def set_diagnostics(
        self,
        doc: OpenDoc,
        source: str,
        diags: list[types.Diagnostic] | None,
        as_json: list[dict[str, Any]] | None = None,
    ) -> None:
        """Keep ``source``'s diagnostics of ``doc`` and publish the document's (push clients).

        ``diags``: lsprotocol objects (kept in ``doc.diagnostics``). ``as_json``: the same as
        LSP JSON, published as it is (no cattrs); given alone, ``doc.diagnostics`` drops
        ``source`` and whoever needs the objects builds them (``DocAnalysis.ready``).
        """
        if diags is not None:
            doc.diagnostics[source] = diags
        else:
            assert as_json is not None, "give diags or as_json"
            doc.diagnostics.pop(source, None)
        published: dict[str, list[dict[str, Any]] | None]
        published = doc.extra.setdefault("diagnostics_json", {})
        published[source] = as_json  # None: made from doc.diagnostics when published
        if self.closed or self.docs.get(doc.uri) is not doc:
            return
        if self.pull_diagnostics and source != "dbcode":
            return  # the client pulls these (textDocument/diagnostic); no duplicates
        # Lint inside a conflict block is noise (markers are not code): the conflict says it all.
        conflicts = [
            (c.range.start.line, c.range.end.line) for c in doc.diagnostics.get("dbcode", ())
        ]
        merged: list[dict[str, Any]] = []
        for src in list(published):
            if self.pull_diagnostics and src != "dbcode":
                continue
            items = published[src]
            if items is None:
                if src not in doc.diagnostics:
                    continue
                from .analysis import diagnostics_json

                items = published[src] = diagnostics_json(doc.diagnostics[src])
            if src == "dbcode" or not conflicts:
                merged += items
            else:
                merged += [
                    d
                    for d in items
                    if not any(a <= d["range"]["start"]["line"] <= b for a, b in conflicts)
                ]
        params = {"uri": doc.uri, "diagnostics": merged, "version": doc.version}
        message = {"jsonrpc": "2.0", "method": "textDocument/publishDiagnostics", "params": params}
        self.protocol.send_raw(message)

    async def close(self) -> None:
        self.closed = True
        if self.analysis.rerun_workspace in self.app.analyzer.on_config_change:
            self.app.analyzer.on_config_change.remove(self.analysis.rerun_workspace)
        for doc in self.docs.values():
            self._forget_doc(doc)
        for task in [*self._subscriptions.values(), *self._tasks]:
            task.cancel()
        self._subscriptions.clear()
        from .review import end_session

        try:
            await end_session(self)
        except Exception as exc:  # the holder's end (process exit) ends its claims anyway
            log.warning("ending the session's claims failed: %s", exc)

    # -- initialize -------------------------------------------------------------------------

    def configure(
        self,
        params: types.InitializeParams,
        default_agent: str,
        forced_agent: str | None = None,
    ) -> list[str]:
        """Read initializationOptions; bad values fall back to defaults with a warning.
        ``forced_agent`` (a stdio session's --agent / DBCODE_AGENT) wins over the options'."""
        warnings: list[str] = []
        opts = params.initialization_options
        if opts is not None and not isinstance(opts, dict):
            warnings.append("initializationOptions must be an object; using defaults")
            opts = {}
        opts = opts or {}
        agent = opts.get("agent")
        if agent is not None and (not isinstance(agent, str) or not 0 < len(agent) <= 200):
            warnings.append(f"invalid agent {agent!r}; using {default_agent!r}")
            agent = None
        self.agent = forced_agent or agent or default_agent
        mode = opts.get("mode", "save")
        if mode not in ("save", "live"):
            warnings.append(f"invalid mode {mode!r}: use 'save' or 'live'; using 'save'")
            mode = "save"
        self.mode = mode
        self.format_on_save = opts.get("formatOnSave") is True
        self.folders = []
        for folder in params.workspace_folders or []:
            try:
                self.folders.append(
                    validate.check_workspace(
                        unquote(folder.uri.removeprefix("dbcode://").strip("/").split("/")[0])
                    )
                )
            except StoreError:
                continue
        caps = params.capabilities
        td = caps.text_document
        self.pull_diagnostics = (
            bool(td and td.diagnostic) and opts.get("pushDiagnostics") is not True
        )
        ws_edit = caps.workspace.workspace_edit if caps.workspace else None
        self.supports_document_changes = bool(ws_edit and ws_edit.document_changes)
        return warnings

    def workspaces(self) -> list[str]:
        """The workspaces this session works in: its folders, then those of open documents."""
        found = list(self.folders)
        for doc in self.docs.values():
            if doc.workspace not in found:
                found.append(doc.workspace)
        return found

    # -- documents ----------------------------------------------------------------------------

    async def did_open(self, item: types.TextDocumentItem) -> None:
        self.open_document(item.uri, item.language_id, item.version, item.text)

    def _fast_did_open(self, params: Any) -> bool:
        try:
            item = params["textDocument"]
            uri, language_id, version, text = (
                item["uri"],
                item["languageId"],
                item["version"],
                item["text"],
            )
        except (TypeError, KeyError):
            return False
        if not (
            isinstance(uri, str)
            and isinstance(language_id, str)
            and type(version) is int
            and isinstance(text, str)
        ):
            return False
        self.open_document(uri, language_id, version, text)
        return True

    def open_document(self, uri: str, language_id: str, version: int, text: str) -> None:
        """didOpen. The document is registered at once (a didChange right behind the didOpen
        finds it); reading the database happens in a task that holds the document's lock."""
        try:
            workspace, path = parse_uri(uri)
        except StoreError as exc:
            self.show(types.MessageType.Warning, f"dbcode: cannot open {uri}: {exc}")
            return
        doc = OpenDoc(
            uri=uri,
            workspace=workspace,
            path=path,
            language_id=language_id,
            index=LineIndex(text),
            version=version,
        )
        old = self.docs.get(uri)
        if old is not None:
            self._forget_doc(old)
        self.docs[uri] = doc
        self.app.track(self, doc)
        _acquire_now(doc.lock)  # released by _load
        self.run_task(self._load(doc, text))
        if old is None:
            from .review import presence_changed

            presence_changed(self, workspace, path, present=True)

    async def _load(self, doc: OpenDoc, opened_text: str) -> None:
        try:
            await self._load_locked(doc, opened_text)
        finally:
            doc.lock.release()
        self._analyse(doc)

    async def _load_locked(self, doc: OpenDoc, opened_text: str) -> None:
        workspace, path = doc.workspace, doc.path
        item_text = opened_text
        await self.app.watching(workspace)
        try:
            current = await self.store.read(workspace, path)
            rev, text = current.revision, current.text
        except NotFound:
            rev, text = 0, ""
        except StoreError as exc:
            doc.broken = f"cannot read {path}: {exc}"
            self.show(types.MessageType.Error, f"dbcode: {doc.broken}")
            return
        doc.seen_rev = doc.target_rev = rev
        doc.target_text = text
        served = self._read_revisions.get(doc.uri)
        if item_text == text:
            doc.base_rev, doc.base_text = rev, text
        elif served is not None and served[1] == content_hash(item_text) and served[0] <= rev:
            # The client opened what dbcode/readFile served earlier: that revision is the
            # base, and the buffer gets the newer one pushed now.
            base_rev = served[0]
            doc.base_rev = base_rev
            if rev > base_rev:  # changed between the client's read and its didOpen
                doc.target_agent = await self._last_author(doc)
                if doc.target_agent and doc.target_agent != self.agent:
                    self.log_message(
                        f"{path}: revision {rev} by {doc.target_agent} (changed while opening)"
                    )
            doc.base_text = (
                item_text
                if base_rev == 0
                else await self.app.revision_text(workspace, path, base_rev)
            )
            await self.sync.reconcile(doc)
        else:
            # Unknown origin: treat the buffer as local edits on the current revision.
            doc.base_rev, doc.base_text = rev, text
        self.sync.refresh_conflicts(doc)

    async def did_change(self, params: types.DidChangeTextDocumentParams) -> None:
        changes: list[tuple[tuple[int, int, int, int] | None, str]] = []
        for ch in params.content_changes:
            if isinstance(ch, types.TextDocumentContentChangePartial):
                r = ch.range
                span = (r.start.line, r.start.character, r.end.line, r.end.character)
                changes.append((span, ch.text))
            else:
                changes.append((None, ch.text))
        self.apply_changes(params.text_document.uri, params.text_document.version, changes)

    def _fast_did_change(self, params: Any) -> bool:
        """didChange straight from the decoded JSON (no cattrs): the hottest message."""
        try:
            td = params["textDocument"]
            uri, version, raw = td["uri"], td["version"], params["contentChanges"]
        except (TypeError, KeyError):
            return False
        if not isinstance(uri, str) or type(version) is not int or not isinstance(raw, list):
            return False
        changes: list[tuple[tuple[int, int, int, int] | None, str]] = []
        for ch in raw:
            if not isinstance(ch, dict) or not isinstance(text := ch.get("text"), str):
                return False
            r = ch.get("range")
            if r is None:
                changes.append((None, text))
                continue
            try:
                start, end = r["start"], r["end"]
                span = (start["line"], start["character"], end["line"], end["character"])
            except (TypeError, KeyError):
                return False
            if not all(type(v) is int for v in span):
                return False
            changes.append((span, text))
        self.apply_changes(uri, version, changes)
        return True

    def apply_changes(
        self,
        uri: str,
        version: int,
        changes: list[tuple[tuple[int, int, int, int] | None, str]],
    ) -> None:
        """Apply one didChange to the buffer, synchronously (changes apply in arrival order)."""
        doc = self.docs.get(uri)
        if doc is None:
            log.warning("didChange for a document that is not open: %s", uri)
            return
        if doc.broken:
            return
        if len(changes) > CHANGES_PER_NOTIFICATION_MAX:
            self._break(
                doc,
                f"one didChange carried {len(changes)} changes (limit "
                f"{CHANGES_PER_NOTIFICATION_MAX})",
            )
            return
        self.analysis.before_change(doc, changes)  # ruff's child gets it first (issue 4)
        index = doc.index
        edits: list[tuple[int, int, str]] = []
        try:
            for span, text in changes:
                if span is not None:
                    start = index.offset(span[0], span[1], self.encoding)
                    end = index.offset(span[2], span[3], self.encoding)
                    if end < start:
                        raise ValueError(f"range end before start: {span}")
                    edits.append((start, end, text))
                    index = index.replace(start, end, text)
                else:
                    edits.append((0, len(index.text), text))
                    index = LineIndex(text)
        except ValueError as exc:  # PositionError included
            self._break(doc, f"a change did not fit the buffer ({exc})")
            return
        doc.index = index
        doc.version = version
        self.sync.after_change(doc)
        if doc.conflicts or "<<<<<<<" in doc.text:  # a marker may be completed by one char
            self.sync.refresh_conflicts(doc)
        if self.mode == "live" and doc.live_task is None:
            doc.live_task = self.run_task(self._live_commit(doc))
        self._analyse(doc, edits)

    def _break(self, doc: OpenDoc, why: str) -> None:
        doc.broken = why
        log.error("%s: %s", doc.uri, why)
        self.show(
            types.MessageType.Error,
            f"dbcode: {doc.path} is out of step with the server: {why}. Close and reopen it; "
            "nothing was written.",
        )

    async def did_close(self, uri: str) -> None:
        self.close_document(uri)

    def _fast_did_close(self, params: Any) -> bool:
        try:
            uri = params["textDocument"]["uri"]
        except (TypeError, KeyError):
            return False
        if not isinstance(uri, str):
            return False
        self.close_document(uri)
        return True

    def close_document(self, uri: str) -> None:
        doc = self.docs.pop(uri, None)
        if doc is None:
            return
        self._forget_doc(doc)
        from .review import presence_changed

        presence_changed(self, doc.workspace, doc.path, present=False)
        self.notify_raw("textDocument/publishDiagnostics", {"uri": uri, "diagnostics": []})

    def _forget_doc(self, doc: OpenDoc) -> None:
        if doc.pending and doc.pending.settle:
            doc.pending.settle.cancel()
        if doc.live_task:
            doc.live_task.cancel()
        self.app.untrack(self, doc)

    async def did_save(self, uri: str, text: str | None) -> None:
        doc = self.docs.get(uri)
        if doc is None:
            return
        async with doc.lock:
            if text is not None and text != doc.text:
                log.warning("didSave text differs from the tracked buffer of %s", uri)
            await self._commit_buffer(doc, reason="save")

    async def _live_commit(self, doc: OpenDoc) -> None:
        try:
            await asyncio.sleep(LIVE_COALESCE_S)
        finally:
            doc.live_task = None
        async with doc.lock:
            if self.docs.get(doc.uri) is not doc:
                return
            await self._commit_buffer(doc, reason="live")
        if doc.dirty and not doc.conflicts and not doc.pending and doc.live_task is None:
            doc.live_task = self.run_task(self._live_commit(doc))

    async def _commit_buffer(self, doc: OpenDoc, reason: str) -> int | None:
        """Commit the buffer (doc.lock held). Returns the new revision, or None."""
        if doc.broken:
            if reason == "save":
                self.show(types.MessageType.Error, f"dbcode: not saved: {doc.broken}")
            return None
        if doc.conflicts:
            if reason == "save":
                self.show(
                    types.MessageType.Warning,
                    f"dbcode: {doc.path} not saved: resolve its {len(doc.conflicts)} "
                    "conflict(s) first (code actions on the red ranges)",
                )
            return None
        if doc.pending is not None:
            if reason == "save":  # let the push land, then save
                self.run_task(self._save_later(doc))
            return None
        if not doc.dirty and doc.base_rev > 0:
            return doc.base_rev
        return await self.commit_text(doc, doc.text)

    async def _save_later(self, doc: OpenDoc) -> None:
        for _ in range(40):
            await asyncio.sleep(0.05)
            if doc.pending is None:
                break
        async with doc.lock:
            if self.docs.get(doc.uri) is doc and doc.pending is None:
                await self._commit_buffer(doc, reason="save")

    async def commit_text(self, doc: OpenDoc, text: str) -> int | None:
        """CAS-commit ``text`` (the buffer's text) for an open document (doc.lock held).

        A stale base is rebased onto the current revision by a 3-way merge; the workspace may
        ask for ruff formatting on commit. Whatever was stored beyond ``text`` (merged changes,
        formatting) is pushed back into the buffer, merged over anything typed meanwhile.
        """
        ours = text
        base_rev, base_text = doc.base_rev, doc.base_text
        for _ in range(CAS_RETRIES_MAX):
            stored = await self.app.analyzer.format_for_commit(doc.workspace, doc.path, ours)
            self.app.anticipate(doc.workspace, doc.path, stored)
            try:
                res = await self.store.write(
                    doc.workspace, doc.path, stored, agent=self.agent, base=base_rev
                )
            except Conflict as exc:
                if exc.current_revision == 0:
                    base_rev, base_text = 0, ""
                    continue
                current = await self.store.read(doc.workspace, doc.path)
                merged = merge3(base_text, ours, current.text, theirs_label="theirs")
                doc.target_agent = (await self._last_author(doc)) or doc.target_agent
                if not merged.clean:
                    # Show the conflict in the buffer; nothing is committed.
                    doc.seen_rev = max(doc.seen_rev, current.revision)
                    doc.target_rev, doc.target_text = current.revision, current.text
                    await self.sync.reconcile(doc)
                    self.show(
                        types.MessageType.Warning,
                        f"dbcode: {doc.path} was changed by {doc.target_agent} meanwhile and "
                        "your edits overlap: resolve the conflict, then save again",
                    )
                    return None
                base_rev, base_text, ours = current.revision, current.text, merged.text
                continue
            except StoreError as exc:
                self.show(types.MessageType.Error, f"dbcode: {doc.path} not saved: {exc}")
                return None
            rev = res.revisions[doc.path]
            self.app.remember(doc.workspace, doc.path, rev, stored)
            doc.seen_rev = max(doc.seen_rev, rev)
            # The buffer held ``text`` when we committed: that is what it is based on now;
            # anything typed since is a local edit on top of it.
            doc.base_rev, doc.base_text = rev, text
            doc.target_rev, doc.target_text, doc.target_agent = rev, stored, self.agent
            if stored != text:
                # We stored more than the buffer had (a merge, formatting): push it in.
                await self.sync.reconcile(doc)
            return rev
        self.show(types.MessageType.Error, f"dbcode: {doc.path} not saved: too much contention")
        return None

    async def _last_author(self, doc: OpenDoc) -> str | None:
        try:
            hist = await self.store.log(doc.workspace, doc.path, limit=1)
        except StoreError:
            return None
        return hist[0].agent if hist else None

    # -- others' changes ----------------------------------------------------------------------

    async def deliver(self, doc: OpenDoc, cs: Changeset, fc: FileChange) -> None:
        """A changeset touched this open document (called by the App's watcher, in seq order).

        Handled at once when the document is free; behind its lock otherwise (a save or an
        open in progress), so that one busy document does not hold up every other session."""
        if fc.path != doc.path:  # renamed away
            work = self._on_gone(doc, cs, renamed_to=fc.path)
        else:
            work = retrying(lambda: self._on_file_change(doc, cs, fc))
        if doc.lock.locked():
            self.run_task(work)
        else:
            await work

    async def _on_file_change(self, doc: OpenDoc, cs: Changeset, fc: Any) -> None:
        async with doc.lock:
            if self.docs.get(doc.uri) is not doc or fc.revision <= doc.seen_rev:
                return
            doc.seen_rev = fc.revision
            if fc.kind == "delete":
                await self._on_gone_locked(doc, cs, renamed_to=None)
                return
            text = fc.text
            if text is None:
                text = await self.app.revision_text(doc.workspace, doc.path, fc.revision)
            doc.target_rev, doc.target_text, doc.target_agent = fc.revision, text, cs.agent
            self.protocol.cork()  # the edit and the log line in one write
            try:
                await self.sync.reconcile(doc)
                if cs.agent != self.agent:  # after the edit: the edit is what the user waits for
                    self.log_message(
                        f"{doc.path}: revision {fc.revision} by {cs.agent} (seq {cs.seq})"
                        + (f": {cs.message}" if cs.message else "")
                    )
            finally:
                self.protocol.uncork()

    async def _on_gone(self, doc: OpenDoc, cs: Changeset, renamed_to: str | None) -> None:
        async with doc.lock:
            await self._on_gone_locked(doc, cs, renamed_to)

    async def _on_gone_locked(self, doc: OpenDoc, cs: Changeset, renamed_to: str | None) -> None:
        doc.base_rev = doc.target_rev = 0
        doc.base_text = doc.target_text = ""
        if renamed_to:
            msg = (
                f"dbcode: {cs.agent} renamed {doc.path} to {renamed_to} (seq {cs.seq}). Your "
                f"buffer is kept; open {make_uri(doc.workspace, renamed_to)} to follow it — "
                "saving this one would create the old path again."
            )
        else:
            msg = (
                f"dbcode: {cs.agent} deleted {doc.path} (seq {cs.seq}). Your buffer is kept; "
                "saving it would create the file again."
            )
        self.show(types.MessageType.Warning, msg)

    # -- custom requests ----------------------------------------------------------------------

    async def read_file(self, uri: str, revision: int | None) -> dict[str, Any]:
        workspace, path = parse_uri(uri)
        f = await self.store.read(workspace, path, revision)
        if revision is None:
            self._read_revisions[uri] = (f.revision, content_hash(f.text))
        self.app.remember(workspace, path, f.revision, f.text)
        return {"text": f.text, "revision": f.revision}

    async def write_file(self, uri: str, text: str, base: int | None) -> dict[str, Any]:
        workspace, path = parse_uri(uri)
        doc = self.docs.get(uri)
        if doc is not None and base is None:
            # An open buffer's save (VS Code's FileSystemProvider): CAS on its base, rebased.
            async with doc.lock:
                if text == doc.base_text == doc.target_text and doc.base_rev > 0:
                    return {"revision": doc.base_rev, "seq": await self.store.head(workspace)}
                if find_conflicts(text):
                    raise InvalidInput(
                        f"{path} has unresolved conflict blocks: resolve them (code actions "
                        "on the red ranges), then save"
                    )
                rev = await self.commit_text(doc, text)
                if rev is None:
                    raise Conflict(workspace, path, doc.base_rev, doc.target_rev)
                head = await self.store.head(workspace)
                return {"revision": rev, "seq": head}
        text = await self.app.analyzer.format_for_commit(workspace, path, text)
        self.app.anticipate(workspace, path, text)
        res = await self.store.write(workspace, path, text, agent=self.agent, base=base)
        rev = res.revisions[path]
        warnings = _warnings_lsp(res.warnings)
        self.app.remember(workspace, path, rev, text)
        if doc is not None:
            async with doc.lock:
                doc.seen_rev = max(doc.seen_rev, rev)
                doc.target_rev, doc.target_text, doc.target_agent = rev, text, self.agent
                await self.sync.reconcile(doc)
        return {"revision": rev, "seq": res.seq, **warnings}

    async def commit(
        self, workspace: str, message: str | None, changes: list[dict[str, Any]]
    ) -> dict[str, Any]:
        items: list[Change] = []
        uris: dict[str, str] = {}
        for ch in changes:
            ws, path = parse_uri(ch["uri"])
            if ws != workspace:
                raise ValueError(f"{ch['uri']} is not in workspace {workspace}")
            uris[path] = ch["uri"]
            base = ch.get("baseRevision")
            if ch.get("text") is None:
                items.append(Change.delete(path, base))
            else:
                text = await self.app.analyzer.format_for_commit(workspace, path, ch["text"])
                items.append(Change.write(path, text, base))
                self.app.anticipate(workspace, path, text)
        res = await self.store.commit(workspace, items, agent=self.agent, message=message)
        return {
            "seq": res.seq,
            "revisions": {uris[p]: r for p, r in res.revisions.items()},
            **_warnings_lsp(res.warnings),
        }

    async def log(self, workspace: str, path: str | None, limit: int) -> list[dict[str, Any]]:
        out = []
        for cs in await self.store.log(workspace, path, limit=limit):
            item = changeset_json(cs)
            for f in item["files"]:
                f.pop("uri", None)
                f.pop("oldUri", None)
            out.append(item)
        return out

    async def list_files(self, workspace: str, prefix: str) -> list[dict[str, Any]]:
        return [
            {
                "path": f.path,
                "uri": make_uri(workspace, f.path),
                "revision": f.revision,
                "size": f.size,
                "updatedBy": f.updated_by,
                "updatedAt": f.updated_at.isoformat(),
            }
            for f in await self.store.list_files(workspace, prefix)
        ]

    async def subscribe(
        self, workspace: str, since: int | None, since_comment: int | None = None
    ) -> dict[str, Any]:
        from .review import notify_comments, notify_presence

        head = await self.store.head(workspace)
        comment_head = await self.store.review_head(workspace)
        start = head if since is None else since
        old = self._subscriptions.pop(workspace, None)
        if old:
            old.cancel()
        for key in ("\0review " + workspace, "\0presence " + workspace):
            old = self._subscriptions.pop(key, None)
            if old:
                old.cancel()
        self._subscriptions["\0presence " + workspace] = self.run_task(
            notify_presence(self, workspace)
        )
        self._subscriptions[workspace] = self.run_task(self._notify_commits(workspace, start))
        # dbcode/didComment: the review feed, from sinceCommentSeq (default: now).
        self._subscriptions["\0review " + workspace] = self.run_task(
            notify_comments(
                self, workspace, comment_head if since_comment is None else since_comment
            )
        )
        return {"seq": head, "commentSeq": comment_head}

    async def _notify_commits(self, workspace: str, since: int) -> None:
        await asyncio.sleep(0)  # the subscribe response goes out first
        async for cs in self.store.subscribe(workspace, since):
            if self.closed:
                return
            self.ls.protocol.notify("dbcode/didCommit", changeset_json(cs))

    def unsubscribe(self, workspace: str) -> None:
        for key in (workspace, "\0review " + workspace, "\0presence " + workspace):
            task = self._subscriptions.pop(key, None)
            if task:
                task.cancel()

    def _analyse(self, doc: OpenDoc, edits: list[tuple[int, int, str]] | None = None) -> None:
        if not doc.broken:
            self.analysis.on_change(doc, edits)
