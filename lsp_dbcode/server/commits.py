"""A session's commits: saves and live mode of its open buffers, ``dbcode/writeFile`` and
``dbcode/commit``, all through the one pipeline (lsp_dbcode/commit.py: format, anticipate,
store, remember). What is the server's own: an open buffer is committed compare-and-swap on its
base, a stale base is rebased by a 3-way merge (overlapping edits become a conflict block in
the buffer, and nothing is committed), and what was stored beyond the buffer (a merge,
formatting) is pushed back into it (DocumentSync.reconcile)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Literal

from ..commit import CommitPipeline, Write
from ..store import Conflict, InvalidInput, StoreError
from ..text.merge import find_conflicts, merge3
from ..uris import parse_uri
from .client import ERROR, WARNING
from .coordination import warnings_json

if TYPE_CHECKING:
    from .client import Client
    from .documents import DocumentSync, OpenDoc
    from .identity import Identity
    from .shared import Shared
    from .tasks import Tasks

log = logging.getLogger(__name__)

LIVE_COALESCE_S = 0.05
CAS_RETRIES_MAX = 10
SAVE_WAIT_STEP_S = 0.05
SAVE_WAIT_STEPS_MAX = 40  # a save waits at most 2 s for a push in flight to land

Reason = Literal["save", "live"]


def may_write(identity: Identity, workspace: str, paths: list[str]) -> None:
    """Forbidden (403, naming the first path refused) unless the session's agent may write
    every path: a changeset across the boundary commits nothing (PostgreSQL's row-level
    security refuses it too)."""
    agent = identity.account
    if agent is not None:
        for path in sorted(paths):
            agent.require(2, workspace, path)


def pipeline_of(shared: Shared) -> CommitPipeline:
    """The server's pipeline: formatting with the Analyzer's cached configs, pushes prepared
    while the database works, stored texts remembered for every session."""
    return CommitPipeline(
        shared.store,
        shared.analyzer.format_for_commit,
        on_sending=shared.anticipate,
        on_stored=shared.remember,
    )


class Commits:
    def __init__(
        self,
        client: Client,
        identity: Identity,
        shared: Shared,
        sync: DocumentSync,
        tasks: Tasks,
        docs: dict[str, OpenDoc],
    ) -> None:
        self.client = client
        self.identity = identity
        self.shared = shared
        self.sync = sync
        self.tasks = tasks
        self.docs = docs  # the session's open documents (read only)
        self.pipeline = pipeline_of(shared)

    # -- open buffers ------------------------------------------------------------------------

    async def save(self, doc: OpenDoc) -> None:
        """didSave."""
        async with doc.lock:
            await self._commit_buffer(doc, "save")

    def buffer_changed(self, doc: OpenDoc) -> None:
        """Live mode: commit the buffer once edits have paused for LIVE_COALESCE_S."""
        if self.identity.mode == "live" and doc.live_task is None:
            doc.live_task = self.tasks.run(self._live_commit(doc))

    async def _live_commit(self, doc: OpenDoc) -> None:
        try:
            await asyncio.sleep(LIVE_COALESCE_S)
        finally:
            doc.live_task = None
        async with doc.lock:
            if doc.closed:
                return
            await self._commit_buffer(doc, "live")
        if doc.dirty and not doc.conflicts and not doc.pending and doc.live_task is None:
            doc.live_task = self.tasks.run(self._live_commit(doc))

    async def _commit_buffer(self, doc: OpenDoc, reason: Reason) -> int | None:
        """Commit the buffer (doc.lock held). Returns the new revision, or None."""
        if doc.broken:
            if reason == "save":
                self.client.show(ERROR, f"dbcode: not saved: {doc.broken}")
            return None
        if doc.conflicts:
            if reason == "save":
                self.client.show(
                    WARNING,
                    f"dbcode: {doc.path} not saved: resolve its {len(doc.conflicts)} "
                    "conflict(s) first (code actions on the red ranges)",
                )
            return None
        if doc.pending is not None:
            if reason == "save":  # let the push land, then save
                self.tasks.run(self._save_later(doc))
            return None
        if not doc.dirty and doc.base_rev > 0:
            return doc.base_rev
        return await self.commit_text(doc, doc.text)

    async def _save_later(self, doc: OpenDoc) -> None:
        for _ in range(SAVE_WAIT_STEPS_MAX):
            await asyncio.sleep(SAVE_WAIT_STEP_S)
            if doc.pending is None:
                break
        async with doc.lock:
            if not doc.closed and doc.pending is None:
                await self._commit_buffer(doc, "save")

    async def commit_text(
        self, doc: OpenDoc, text: str, meta: dict[str, Any] | None = None
    ) -> int | None:
        """CAS-commit ``text`` (the buffer's text) for an open document (doc.lock held), with
        the changeset's ``meta`` if any.

        A stale base is rebased onto the current revision by a 3-way merge; the workspace may
        ask for ruff formatting on commit. Whatever was stored beyond ``text`` (merged changes,
        formatting) is pushed back into the buffer, merged over anything typed meanwhile.
        """
        ours = text
        base_rev, base_text = doc.base_rev, doc.base_text
        store = self.shared.store
        blocks = self.identity.mode != "live"  # live mode: no conflict blocks (SPEC rule 4)
        # A base that is not its revision's text (our last commit stored a merge or formatting
        # that has not reached the buffer yet) cannot be committed on directly: the buffer
        # lacks what that commit stored beyond it. Merge as for a stale base.
        rebase = not doc.base_exact
        for _ in range(CAS_RETRIES_MAX):
            if rebase:
                rebase = False
                current = await store.read(doc.workspace, doc.path)
                merged = merge3(base_text, ours, current.text, theirs_label="theirs", blocks=blocks)
                if not merged.clean:
                    await self._show_overlap(doc, current.revision, current.text)
                    return None
                base_rev, base_text, ours = current.revision, current.text, merged.text
            may_write(self.identity, doc.workspace, [doc.path])
            try:
                done = await self.pipeline.commit(
                    doc.workspace,
                    [Write(doc.path, ours, base_rev)],
                    agent=self.identity.agent,
                    meta=meta,
                )
            except Conflict as exc:
                if exc.current_revision == 0:
                    base_rev, base_text = 0, ""
                else:
                    rebase = True  # merged with the current revision at the loop's top
                continue
            except StoreError as exc:
                self.client.show(ERROR, f"dbcode: {doc.path} not saved: {exc}")
                return None
            rev = done.revisions[doc.path]
            stored = done.texts[doc.path]
            doc.seen_rev = max(doc.seen_rev, rev)
            # The buffer held ``text`` when we committed: that is what it is based on now;
            # anything typed since is a local edit on top of it.
            doc.base_rev, doc.base_text, doc.base_exact = rev, text, stored == text
            doc.target_rev, doc.target_text, doc.target_agent = rev, stored, self.identity.agent
            if stored != text:
                # We stored more than the buffer had (a merge, formatting): push it in.
                await self.sync.reconcile(doc)
            return rev
        self.client.show(ERROR, f"dbcode: {doc.path} not saved: too much contention")
        return None

    async def _show_overlap(self, doc: OpenDoc, revision: int, text: str) -> None:
        """Our edits overlap the current revision's: show the conflict in the buffer (save
        mode; live mode merges without blocks and never gets here); nothing is committed."""
        doc.target_agent = (await self.last_author(doc)) or doc.target_agent
        doc.seen_rev = max(doc.seen_rev, revision)
        doc.target_rev, doc.target_text = revision, text
        await self.sync.reconcile(doc)
        self.client.show(
            WARNING,
            f"dbcode: {doc.path} was changed by {doc.target_agent} meanwhile and "
            "your edits overlap: resolve the conflict, then save again",
        )

    async def last_author(self, doc: OpenDoc) -> str | None:
        try:
            hist = await self.shared.store.log(doc.workspace, doc.path, limit=1)
        except StoreError:
            return None
        return hist[0].agent if hist else None

    # -- requests ----------------------------------------------------------------------------

    async def write_file(
        self, uri: str, text: str, base: int | None, meta: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """dbcode/writeFile. Without a base, for a document open in this session: its buffer's
        save (VS Code's FileSystemProvider), CAS on its base and rebased. A time-travel URI
        (``dbcode://WS@SEQ/PATH``) is refused by ``parse_uri``: read-only."""
        workspace, path = parse_uri(uri)
        may_write(self.identity, workspace, [path])
        store = self.shared.store
        doc = self.docs.get(uri)
        if doc is not None and base is None:
            async with doc.lock:
                if text == doc.base_text == doc.target_text and doc.base_rev > 0:
                    return {"revision": doc.base_rev, "seq": await store.head(workspace)}
                if find_conflicts(text):
                    raise InvalidInput(
                        f"{path} has unresolved conflict blocks: resolve them (code actions "
                        "on the red ranges), then save"
                    )
                rev = await self.commit_text(doc, text, meta)
                if rev is None:
                    raise Conflict(workspace, path, doc.base_rev, doc.target_rev)
                return {"revision": rev, "seq": await store.head(workspace)}
        done = await self.pipeline.commit(
            workspace, [Write(path, text, base)], agent=self.identity.agent, meta=meta
        )
        rev = done.revisions[path]
        if doc is not None:
            async with doc.lock:
                doc.seen_rev = max(doc.seen_rev, rev)
                doc.target_rev, doc.target_text = rev, done.texts[path]
                doc.target_agent = self.identity.agent
                await self.sync.reconcile(doc)
        return {"revision": rev, "seq": done.seq, **warnings_json(done.warnings)}

    async def commit(
        self,
        workspace: str,
        message: str | None,
        changes: list[dict[str, Any]],
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """dbcode/commit: ``changes`` checked by the handler ({uri, text | None, baseRevision});
        a time-travel URI among them is refused by ``parse_uri`` (read-only)."""
        writes: list[Write] = []
        uris: dict[str, str] = {}
        for ch in changes:
            ws, path = parse_uri(ch["uri"])
            if ws != workspace:
                raise ValueError(f"{ch['uri']} is not in workspace {workspace}")
            uris[path] = ch["uri"]
            writes.append(Write(path, ch.get("text"), ch.get("baseRevision")))
        may_write(self.identity, workspace, [w.path for w in writes])
        done = await self.pipeline.commit(
            workspace, writes, agent=self.identity.agent, message=message, meta=meta
        )
        return {
            "seq": done.seq,
            "revisions": {uris[p]: r for p, r in done.revisions.items()},
            **warnings_json(done.warnings),
        }
