"""One LSP session (one connection): its state, and the helpers that act on it.

A Session holds what belongs to one connection: who it is (``identity``: agent, mode), the
``client`` port (what was negotiated with the editor, and everything sent to it), its open
documents, its subscriptions and tasks, the revisions ``dbcode/readFile`` served it. Its
helpers are built here and given what they need, never the session:

- ``sync`` (documents.py): others' changes into the open buffers;
- ``lint`` (lint.py): diagnostics, fixes, formatting, structure;
- ``commits`` (commits.py): saves, live mode, writeFile and commit, through the one pipeline;
- ``coordination`` (coordination.py): the session's row in dbcode_session (its claims hang on
  it) and its presence; ended by :meth:`Session.close`;
- ``review`` (coordination.py): the review and claim diagnostics of its open documents.

The handlers (server/handlers/, one file per family) are flat functions of (session, params);
server/routes.py is the table that says which handles what, and how it runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .client import Client
from .commits import Commits
from .coordination import Coordination, ReviewWatch
from .documents import DocumentSync, OpenDoc
from .identity import Identity
from .lint import DocumentLint
from .tasks import Tasks

if TYPE_CHECKING:
    from ..store.access import Agent
    from .protocol import DbcodeProtocol
    from .shared import Shared

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Subscription:
    """``dbcode/subscribe`` of one workspace: the tasks feeding ``dbcode/didCommit``,
    ``dbcode/didComment`` and ``dbcode/didChangePresence``."""

    commits: asyncio.Task[None]
    comments: asyncio.Task[None]
    presence: asyncio.Task[None]

    def cancel(self) -> None:
        for task in (self.commits, self.comments, self.presence):
            task.cancel()


@dataclass(frozen=True, slots=True)
class Served:
    """The current revision of a file as ``dbcode/readFile`` served it to this session: a
    didOpen of that text is known to be based on that revision."""

    revision: int
    text_hash: str


class Session:
    def __init__(
        self,
        shared: Shared,
        protocol: DbcodeProtocol,
        default_agent: str,
        forced_agent: str | None = None,
    ) -> None:
        self.shared = shared
        self.default_agent = default_agent  # when the client names none
        self.forced_agent = forced_agent  # a stdio session's --agent / DBCODE_AGENT: wins
        self.client = Client(protocol)
        self.identity = Identity()
        self.tasks = Tasks()
        self.docs: dict[str, OpenDoc] = {}
        self.folders: list[str] = []  # workspaces of the initialize's workspaceFolders
        self.format_on_save = False
        self.init_warnings: list[str] = []  # shown once the client is initialized
        self.read_revisions: dict[str, Served] = {}  # uri -> what dbcode/readFile served
        self.subscriptions: dict[str, Subscription] = {}
        self.on_exit: Callable[[], None] | None = None  # set by the transport
        self.server: Any = None  # the connection's pygls server object (initialize reads it)
        # Set by the transport: "stdio" | "unix" | "tcp" | "ws" | "tls-tcp" | "wss" ("?" until
        # then); the peer's address ("HOST:PORT", "pid N uid U"); the token it brought outside
        # LSP (a ws Authorization: Bearer header, a relay's preamble, a --standalone
        # DBCODE_TOKEN). initializationOptions.token wins over it.
        self.transport: str = "?"
        self.peer = "?"
        self.transport_token: str | None = None
        # Access control (server/auth.py): the token checked at initialize and its agent
        # (None: the database is open).
        self.token: str | None = None
        self.account: Agent | None = None
        self.sync = DocumentSync(self.client, self.identity, shared, self.tasks)
        self.lint = DocumentLint(self.client, shared.analyzer, self.tasks)
        self.commits = Commits(self.client, self.identity, shared, self.sync, self.tasks, self.docs)
        self.coordination = Coordination(shared.store, self.identity, self.tasks)
        self.review = ReviewWatch(shared.reviews, self.client, self.identity, self.docs)
        shared.analyzer.on_config_change.append(self._config_changed)

    @property
    def closed(self) -> bool:
        return self.client.closed

    def workspaces(self) -> list[str]:
        """The workspaces this session works in: its folders, then those of open documents."""
        found = list(self.folders)
        for doc in self.docs.values():
            if doc.workspace not in found:
                found.append(doc.workspace)
        return found

    def forget(self, doc: OpenDoc) -> None:
        """``doc`` is closed (or replaced, or the session ends): no more work for it."""
        doc.closed = True
        if doc.pending:
            for deadline in (doc.pending.deadline, doc.pending.settle):
                if deadline is not None:
                    deadline.cancel()
        if doc.live_task:
            doc.live_task.cancel()
        self.shared.untrack(doc)

    def _config_changed(self, workspace: str) -> None:
        self.lint.rerun([d for d in self.docs.values() if d.workspace == workspace])

    async def close(self) -> None:
        self.client.closed = True
        if self._config_changed in self.shared.analyzer.on_config_change:
            self.shared.analyzer.on_config_change.remove(self._config_changed)
        for doc in self.docs.values():
            self.forget(doc)
        self.review.close()
        for sub in self.subscriptions.values():
            sub.cancel()
        self.subscriptions.clear()
        self.tasks.cancel_all()
        try:  # its claims and presence end (others are told)
            await self.coordination.close()
        except Exception as exc:  # the holder's end (process exit) ends its claims anyway
            log.warning("ending the session's claims failed: %s", exc)
