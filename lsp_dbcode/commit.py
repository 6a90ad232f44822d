"""The one commit pipeline: format, (anticipate), store, (remember). Used by every way a
changeset is made: an editor's save and live mode, ``dbcode/writeFile``, ``dbcode/commit``, and
the CLI's ``dbcode write``.

1. **format**: each written text as the workspace asks to store it (``[tool.dbcode]
   format-on-commit``: ruff format; see :func:`lsp_dbcode.check.format_for_commit`);
2. **sending** hook: the server prepares, while the database works, the pushes to the clean
   buffers open on the paths (``Shared.anticipate``);
3. **store**: one atomic, compare-and-swap changeset (``Store.commit``: group commit, CAS,
   gap-free seq; raises ``Conflict`` for a stale base, ``Claimed`` for a change inside
   another agent's exclusive claim; other agents' non-exclusive claims it touched come back
   as ``Committed.warnings``), with its ``meta`` if the caller gave one (the conversation,
   task or prompt behind it: ``dbcode log``, blame and hover show it);
4. **stored** hook: the server keeps the stored texts by revision (``Shared.remember``), so
   that no session reads them again.

What the server then does with its open buffers (rebase on a conflict, push back what was
stored beyond the buffer) is the server's: ``server/commits.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .analysis import RuffEngine, is_python_path
from .check import format_for_commit
from .store import Change, Claim, NotFound, Store, validate

# (workspace, path, text) -> the text to store.
Formatter = Callable[[str, str, str], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Write:
    """One file of a changeset: ``text`` (None: delete it), made from revision ``base`` (None:
    no check; 0: the file must not exist)."""

    path: str
    text: str | None
    base: int | None = None


@dataclass(frozen=True, slots=True)
class Committed:
    seq: int
    revisions: dict[str, int]  # path -> its new revision
    texts: dict[str, str]  # path -> the text stored (formatted), for the written paths
    # Other agents' non-exclusive claims the changeset touched (an exclusive one refuses it:
    # Store.commit raises Claimed, nothing is written).
    warnings: tuple[Claim, ...] = ()


class CommitPipeline:
    def __init__(
        self,
        store: Store,
        format_text: Formatter,
        *,
        on_sending: Callable[[str, str, str], None] | None = None,
        on_stored: Callable[[str, str, int, str], None] | None = None,
    ) -> None:
        self.store = store
        self.format_text = format_text
        self.on_sending = on_sending  # (workspace, path, text to store)
        self.on_stored = on_stored  # (workspace, path, revision, text stored)

    async def commit(
        self,
        workspace: str,
        writes: Sequence[Write],
        *,
        agent: str,
        message: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Committed:
        """``meta``: a small JSON object kept with the changeset (the conversation, task or
        prompt that produced it), checked before anything is formatted or sent
        (``validate.check_meta``: InvalidInput)."""
        meta = validate.check_meta(meta)
        changes: list[Change] = []
        texts: dict[str, str] = {}
        for w in writes:
            if w.text is None:
                changes.append(Change.delete(w.path, w.base))
                continue
            text = await self.format_text(workspace, w.path, w.text)
            texts[w.path] = text
            changes.append(Change.write(w.path, text, w.base))
        if self.on_sending is not None:
            for path, text in texts.items():
                self.on_sending(workspace, path, text)
        res = await self.store.commit(workspace, changes, agent=agent, message=message, meta=meta)
        if self.on_stored is not None:
            for path, text in texts.items():
                self.on_stored(workspace, path, res.revisions[path], text)
        return Committed(res.seq, dict(res.revisions), texts, res.warnings)


def standalone_formatter(store: Store, ruff: RuffEngine) -> Formatter:
    """The formatter of a process without a server's Analyzer (the CLI): the workspace's
    config files read once per workspace."""
    configs: dict[str, dict[str, str]] = {}

    async def format_text(workspace: str, path: str, text: str) -> str:
        if not is_python_path(path):
            return text
        if workspace not in configs:
            try:
                configs[workspace] = await store.config_files(workspace)
            except NotFound:
                configs[workspace] = {}
        return await format_for_commit(ruff, configs[workspace], path, text)

    return format_text
