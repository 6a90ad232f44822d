"""Open documents of one session, and how others' changes reach them.

Each open document knows three texts:

- ``text`` — the client's buffer, as rebuilt from its didChange notifications;
- ``base`` — the revision the buffer is known to contain (besides the user's unsaved edits).
  ``base_text`` is the 3-way merge base. It is the text of revision ``base_rev`` except right
  after a commit that stored more than the buffer held (a merge with another agent's commit,
  formatting): then it is the buffer's text at that commit and ``base_exact`` is False until
  the push of the stored text settles. Such a base is never committed on as if it were the
  revision (that stored the buffer without what the merge brought in: lost text), and never
  shares a diff with buffers based on the real revision;
- ``target`` — the newest revision of the file that this session knows of.

When ``target`` moves past ``base`` (another agent committed), :meth:`DocumentSync.reconcile`
3-way merges (base, buffer, target) and sends the difference to the client as one
``workspace/applyEdit`` of minimal TextEdits on the buffer's version. At most one edit is in
flight per document; it counts as applied only when the client's following didChange produces
exactly the expected text. A refused edit, or a buffer that moved on, is merged again
against the buffer as it is now: nothing the user typed is ever replaced.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
from lsprotocol import types

from ..store import Changeset, DatabaseUnavailable, FileChange
from ..text.diff import diff_edits
from ..text.edits import Edit
from ..text.merge import Conflict, find_conflicts, merge3
from ..text.positions import Encoding, LineIndex
from ..uris import make_uri
from .client import ERROR, WARNING, workspace_edit_json
from .findings import offsets_range_json, set_diagnostics
from .lint import LintState, TreeState
from .shared import DB_RETRY_DELAY_S, retrying

if TYPE_CHECKING:
    from .client import Client
    from .identity import Identity
    from .shared import SettlePlan, Shared
    from .tasks import Deadline, Tasks

log = logging.getLogger(__name__)

APPLY_EDIT_TIMEOUT_S = 10.0
SETTLE_TIMEOUT_S = 1.0
RETRY_DELAY_S = 0.05
PUSH_RETRIES_MAX = 20


@dataclass
class Pending:
    """An applyEdit in flight: what the buffer should become, and which revision it reflects."""

    expected: str
    target_rev: int
    target_text: str
    sent_version: int
    plan: SettlePlan | None = None  # a clean buffer's push, shared (see SettlePlan)
    answered: bool = False
    deadline: Deadline | None = None  # for the answer
    settle: Deadline | None = None  # for the didChange that carries the edit, once answered


@dataclass
class OpenDoc:
    uri: str
    workspace: str
    path: str
    language_id: str
    index: LineIndex
    version: int
    base_rev: int = 0
    base_text: str = ""
    base_exact: bool = True  # base_text is the text of revision base_rev (see the docstring)
    target_rev: int = 0
    target_text: str = ""
    target_agent: str | None = None
    seen_rev: int = 0  # highest revision number of this path handled (incl. deletions)
    pending: Pending | None = None
    push_retries: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    broken: str | None = None  # why the buffer can no longer be trusted
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # LSP Diagnostic JSON by source (ruff, syntax, dbcode), published together (findings.py).
    diagnostics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    live_task: asyncio.Task[None] | None = None
    lint: LintState = field(default_factory=LintState)  # lint.py
    tree: TreeState = field(default_factory=TreeState)  # lint.py
    closed: bool = False  # closed, replaced by a new didOpen, or its session ended

    @property
    def text(self) -> str:
        return self.index.text

    @property
    def dirty(self) -> bool:
        return self.text != self.base_text

    def lsp_range(self, start: int, end: int, encoding: Encoding) -> types.Range:
        s = self.index.position(start, encoding)
        e = self.index.position(end, encoding)
        return types.Range(types.Position(*s), types.Position(*e))

    def text_edits(self, edits: list[Edit], encoding: Encoding) -> list[types.TextEdit]:
        return [types.TextEdit(self.lsp_range(e.start, e.end, encoding), e.text) for e in edits]

    def lsp_edits(self, edits: list[Edit], encoding: Encoding) -> list[dict[str, Any]]:
        """``edits`` on the buffer as LSP TextEdits, plain JSON."""
        out = []
        position = self.index.position
        for e in edits:
            sl, sc = position(e.start, encoding)
            el, ec = position(e.end, encoding)
            rng = {"start": {"line": sl, "character": sc}, "end": {"line": el, "character": ec}}
            out.append({"range": rng, "newText": e.text})
        return out


class DocumentSync:
    """Drives one session's open buffers toward the newest revision. Given what it needs: the
    client port, the session's identity and tasks, and the process' shared push caches."""

    def __init__(self, client: Client, identity: Identity, shared: Shared, tasks: Tasks) -> None:
        self.client = client
        self.identity = identity
        self.shared = shared
        self.tasks = tasks

    # -- others' changes (the Shared watcher calls deliver, in seq order) ---------------------

    async def deliver(self, doc: OpenDoc, cs: Changeset, fc: FileChange) -> None:
        """A changeset touched this open document.

        Handled at once when the document is free; behind its lock otherwise (a save or an
        open in progress), so that one busy document does not hold up every other session."""
        if fc.path != doc.path:  # renamed away
            work = self._on_gone(doc, cs, renamed_to=fc.path)
        elif doc.lock.locked():
            work = retrying(lambda: self._on_file_change(doc, cs, fc))
        else:
            # The common case, 1,000 times per changeset: no wrapper coroutine, no closure; the
            # retries (the database went away while reading the revision) only when needed.
            try:
                await self._on_file_change(doc, cs, fc)
            except DatabaseUnavailable as exc:
                log.warning("database unavailable (%s); retrying", exc)
                await asyncio.sleep(DB_RETRY_DELAY_S)
                await retrying(lambda: self._on_file_change(doc, cs, fc))
            return
        if doc.lock.locked():
            self.tasks.run(work)
        else:
            await work

    async def _on_file_change(self, doc: OpenDoc, cs: Changeset, fc: FileChange) -> None:
        async with doc.lock:
            if doc.closed or fc.revision <= doc.seen_rev:
                return
            doc.seen_rev = fc.revision
            if fc.kind == "delete":
                self.gone(doc, cs, renamed_to=None)
                return
            text = fc.text
            if text is None:
                text = await self.shared.revision_text(doc.workspace, doc.path, fc.revision)
            doc.target_rev, doc.target_text, doc.target_agent = fc.revision, text, cs.agent
            client = self.client
            client.cork()  # the edit and the log line in one write
            try:
                await self.reconcile(doc)
                if cs.agent != self.identity.agent:  # after the edit: what the user waits for
                    client.send_encoded(self.shared.author_line(doc.workspace, cs, fc))
            finally:
                client.uncork()

    async def _on_gone(self, doc: OpenDoc, cs: Changeset, renamed_to: str | None) -> None:
        async with doc.lock:
            self.gone(doc, cs, renamed_to)

    def gone(self, doc: OpenDoc, cs: Changeset, renamed_to: str | None) -> None:
        """The file was deleted or renamed away (doc.lock held): the buffer is kept."""
        doc.base_rev = doc.target_rev = 0
        doc.base_text = doc.target_text = ""
        doc.base_exact = True
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
        self.client.show(WARNING, msg)

    # -- called with doc.lock held ----------------------------------------------------------

    async def reconcile(self, doc: OpenDoc) -> None:
        """Bring the buffer up to ``target``, keeping the user's unsaved edits."""
        if doc.pending is not None or doc.broken:
            return
        if doc.target_rev == doc.base_rev and doc.target_text == doc.base_text:
            return
        if doc.text == doc.base_text and doc.base_exact:  # clean: no merge; the diff is shared
            key = PushKey(doc.workspace, doc.path, doc.base_rev, doc.target_rev)
            edits = self.shared.diff(key, doc.base_text, doc.target_text)
            if not edits:
                self._settled(doc, doc.target_rev, doc.target_text)
                return
            self._push(doc, edits, doc.target_text, key)
            return
        # Live mode (SPEC rule 4): concurrent typing converges without conflict blocks.
        merged = merge3(
            doc.base_text,
            doc.text,
            doc.target_text,
            theirs_label=self._label(doc),
            blocks=self.identity.mode != "live",
        )
        if merged.text == doc.text:
            self._settled(doc, doc.target_rev, doc.target_text)
            return
        edits = diff_edits(doc.text, merged.text)
        self._push(doc, edits, merged.text)

    def _label(self, doc: OpenDoc) -> str:
        who = doc.target_agent or "theirs"
        return f"{who} (revision {doc.target_rev})"

    def _push(
        self, doc: OpenDoc, edits: list[Edit], expected: str, shared: PushKey | None = None
    ) -> None:
        """Send ``edits`` (on the buffer as it is) as one workspace/applyEdit. ``shared``: the
        key under which clean buffers of one revision share the edits' JSON."""
        client = self.client
        enc = client.encoding
        plan = None
        if shared is not None:
            make = partial(doc.lsp_edits, edits, enc)
            edits_json = self.shared.edits_json(shared, enc, expected, make)
            plan = self.shared.settle_plan(shared, enc, expected, edits, make)
        else:
            edits_json = json.dumps(doc.lsp_edits(edits, enc), separators=(",", ":"))
        pending = Pending(expected, doc.target_rev, doc.target_text, doc.version, plan)
        doc.pending = pending
        edit = workspace_edit_json(client, doc.uri, doc.version, orjson.Fragment(edits_json))
        label = f"dbcode: {doc.target_agent or 'another agent'} changed {doc.path}"
        # Written now (not from a task that runs later): with 1,000 sessions on one loop the
        # first editor gets its edit before the last one's is even computed. Its answer is a
        # callback and its deadline an entry of the process' Deadlines: no future, no timer.
        request_id = client.apply_edit(label, edit, partial(self._on_reply, doc, pending))
        pending.deadline = self.shared.deadlines.add(
            APPLY_EDIT_TIMEOUT_S, partial(self._no_answer, doc, pending, request_id)
        )

    def _no_answer(self, doc: OpenDoc, pending: Pending, request_id: str) -> None:
        self.client.forget_reply(request_id)
        self._replied(doc, pending, False, "no answer in time")

    def _on_reply(
        self, doc: OpenDoc, pending: Pending, result: Any, error: BaseException | None
    ) -> None:
        if pending.deadline is not None:
            pending.deadline.cancel()
        if error is not None:
            self._replied(doc, pending, False, str(error) or type(error).__name__)
            return
        applied = isinstance(result, dict) and result.get("applied") is True
        reason = str(result.get("failureReason")) if isinstance(result, dict) else "?"
        self._replied(doc, pending, applied, reason)

    def _replied(self, doc: OpenDoc, pending: Pending, applied: bool, reason: str) -> None:
        if doc.pending is not pending or self.client.closed:
            return  # settled by a didChange already
        pending.answered = True
        if applied:
            # Wait for the didChange that carries the edit (Neovim sends it later).
            pending.settle = self.shared.deadlines.add(
                SETTLE_TIMEOUT_S, partial(self._settle_due, doc, pending)
            )
            return
        doc.pending = None
        if doc.version != pending.sent_version:
            # The buffer moved on before the edit reached it (Neovim flushes the typing that
            # waited in its didChange debounce, then refuses the stale edit): not a failure,
            # merge again at once against the buffer as it is now.
            log.debug("edit to %s refused: the buffer moved on; merging again", doc.uri)
            self.tasks.run(self._reconcile_locked(doc))
            return
        log.info("client refused the edit to %s (%s); merging again", doc.uri, reason)
        self.tasks.run(self._retry(doc))

    def _settle_due(self, doc: OpenDoc, pending: Pending) -> None:
        if doc.pending is pending and not doc.closed:
            self.tasks.run(self._settle_timeout(doc, pending))

    async def _retry(self, doc: OpenDoc) -> None:
        doc.push_retries += 1
        if doc.push_retries > PUSH_RETRIES_MAX:
            doc.broken = "the editor kept refusing the server's edits"
            self.client.show(
                ERROR,
                f"dbcode: {doc.path} could not be updated with another agent's change; "
                "close and reopen it (your text is unchanged)",
            )
            return
        await asyncio.sleep(RETRY_DELAY_S * doc.push_retries)
        async with doc.lock:
            await self.reconcile(doc)

    async def _settle_timeout(self, doc: OpenDoc, pending: Pending) -> None:
        async with doc.lock:
            if doc.pending is not pending:
                return
            # The buffer never became exactly what we sent: the user typed meanwhile, or the
            # client skipped the edit. Merge again against the buffer as it is.
            doc.pending = None
            await self.reconcile(doc)

    def after_change(self, doc: OpenDoc) -> None:
        """A didChange was applied to the buffer: does it complete the edit in flight?"""
        pending = doc.pending
        if pending is None:
            return
        if doc.text == pending.expected:
            if pending.settle is not None:
                pending.settle.cancel()
            doc.pending = None
            self._settled(doc, pending.target_rev, pending.target_text)

    def _settled(self, doc: OpenDoc, rev: int, text: str) -> None:
        doc.base_rev, doc.base_text, doc.base_exact = rev, text, True
        doc.push_retries = 0
        self.refresh_conflicts(doc)
        if doc.target_rev != rev:  # a newer revision arrived meanwhile
            self.tasks.run(self._reconcile_locked(doc))

    async def _reconcile_locked(self, doc: OpenDoc) -> None:
        async with doc.lock:
            await self.reconcile(doc)

    def refresh_conflicts(self, doc: OpenDoc) -> None:
        """Re-detect conflict blocks in the buffer and publish them as diagnostics."""
        had = bool(doc.conflicts)
        doc.conflicts = find_conflicts(doc.text)
        if not doc.conflicts and not had:
            return
        enc = self.client.encoding
        who = doc.target_agent or "another agent"
        items = [
            {
                "range": offsets_range_json(doc.index, c.start, c.end, enc),
                "message": (
                    f"Conflict: your unsaved edit and {who}'s change overlap. Choose: keep "
                    "mine, take theirs, or keep both."
                ),
                "severity": 1,
                "code": "conflict",
                "source": "dbcode",
                "data": {"conflict": i},
            }
            for i, c in enumerate(doc.conflicts)
        ]
        set_diagnostics(self.client, doc, "dbcode", items)


@dataclass(frozen=True, slots=True)
class PushKey:
    """Clean buffers of ``path`` at ``base_rev`` moving to ``target_rev``: they share one diff
    and, per position encoding, one edits' JSON."""

    workspace: str
    path: str
    base_rev: int
    target_rev: int
