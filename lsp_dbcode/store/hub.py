"""The subscription hub: one LISTEN connection per process, fanned out to every subscriber.

NOTIFY (payload "<workspace> <seq>") only wakes; the record is the changeset table. Per
workspace a ``_Feed`` fetches new changesets once (one query per wake-up, whatever the number
of subscribers) into a bounded buffer; a subscriber behind the buffer reads the table itself.
Because ``seq`` is gap-free and visible in commit order (schema.py), "seq > last" never
skips a changeset, and after a lost connection a refresh of every feed catches up.

The review feed (channel ``dbcode_review``, payload "<workspace> <review seq>") works the same
way, with feeds of its own over ``dbcode_review_event`` and its own gap-free counter. Claims and
presence (channel ``dbcode_coord``, payload "<workspace>") only signal a change: their state is
read from the tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

import psycopg

from .model import Changeset, ReviewEvent

log = logging.getLogger(__name__)

CHANNEL = "dbcode"
REVIEW_CHANNEL = "dbcode_review"
COORD_CHANNEL = "dbcode_coord"
ACCESS_CHANNEL = "dbcode_access"  # agents or grants changed (store/access.py)
BUFFER_MAX = 2048
FETCH_BATCH_MAX = 500
SAFETY_POLL_S = 10.0
RECONNECT_DELAY_MAX_S = 2.0
HELD_MAX = 1024
# A NOTIFY that comes while this process's own commit to the workspace is in flight is most
# likely that commit's (PostgreSQL signals listeners before the committer has its answer): the
# fetch waits until the commit's answer is in (then usually nothing is left to fetch), at most
# this long.
DEFER_MAX_S = 0.1
# Feeds fetching at once (a safety poll wakes them all): the rest of the pool stays free for
# commits and reads, and a process with many workspaces does not grow the pool to its maximum.
FEED_FETCHES_MAX = 4


class _Seq(Protocol):
    @property
    def seq(self) -> int: ...


T = TypeVar("T", bound=_Seq)
Fetch = Callable[[str, int, int], Awaitable[list[Changeset]]]
ReviewFetch = Callable[[str, int, int], Awaitable[list[ReviewEvent]]]
Head = Callable[[str], Awaitable[int]]


class _Feed(Generic[T]):
    """Changesets (or review events) of one workspace as seen by this process."""

    def __init__(
        self,
        workspace: str,
        last_seq: int,
        fetch: Callable[[str, int, int], Awaitable[list[T]]],
        fetching: asyncio.Semaphore,
    ) -> None:
        self.workspace = workspace
        self.last_seq = last_seq
        self.subscribers = 0  # the feed lives while it has one (Hub._follow)
        self._fetching = fetching
        self.buffer: deque[T] = deque(maxlen=BUFFER_MAX)
        self._fetch = fetch
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._held: dict[int, T] = {}
        self._deferred = 0  # highest seq notified while an own commit was in flight
        self._defer_timer: asyncio.TimerHandle | None = None

    @property
    def changed(self) -> asyncio.Event:
        """An event set at the next change (take it before checking state)."""
        return self._changed

    def poke(self) -> None:
        """Something may have committed: fetch (single flight; one more round if busy)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(
            self._refresh(), context=contextvars.Context()
        )

    def defer(self, seq: int) -> None:
        """``seq`` was notified while an own commit is in flight: fetch after its answer."""
        self._deferred = max(self._deferred, seq)
        if self._defer_timer is None:
            self._defer_timer = asyncio.get_running_loop().call_later(DEFER_MAX_S, self.undefer)

    def undefer(self) -> None:
        """The own commits' answers are in (or DEFER_MAX_S passed): fetch what they did not
        bring."""
        if self._defer_timer is not None:
            self._defer_timer.cancel()
            self._defer_timer = None
        if self._deferred > self.last_seq:
            self.poke()
        self._deferred = 0

    def offer(self, cs: T) -> None:
        """A changeset this process committed: delivered now if it is the next one, else held
        until the ones before it have been fetched."""
        if cs.seq <= self.last_seq:
            return
        if cs.seq != self.last_seq + 1:
            if len(self._held) < HELD_MAX:
                self._held[cs.seq] = cs
            self.poke()
            return
        self._append(cs)
        self._signal()

    def _append(self, cs: T) -> None:
        assert cs.seq == self.last_seq + 1, "seq must be gap-free"
        self.buffer.append(cs)
        self.last_seq = cs.seq
        while (held := self._held.pop(self.last_seq + 1, None)) is not None:
            self.buffer.append(held)
            self.last_seq = held.seq
        if self._held:
            for seq in [s for s in self._held if s <= self.last_seq]:
                del self._held[seq]

    async def _refresh(self) -> None:
        while True:
            self._again = False
            try:
                while True:
                    async with self._fetching:
                        rows = await self._fetch(self.workspace, self.last_seq, FETCH_BATCH_MAX)
                    before = self.last_seq
                    for cs in rows:
                        if cs.seq > self.last_seq:  # offer() may have delivered some meanwhile
                            self._append(self._held.pop(cs.seq, cs))
                    if self.last_seq != before:
                        self._signal()
                    if len(rows) < FETCH_BATCH_MAX:
                        break
            except Exception as exc:  # a lost connection: the next wake-up retries
                log.warning("feed %s: fetch failed: %s", self.workspace, exc)
                return
            if not self._again:
                return

    def _signal(self) -> None:
        old, self._changed = self._changed, asyncio.Event()
        old.set()

    def stop(self) -> None:
        """No subscriber is left: no more fetches."""
        if self._task is not None:
            self._task.cancel()
        if self._defer_timer is not None:
            self._defer_timer.cancel()
            self._defer_timer = None


class Hub:
    """Per-process LISTEN connection and feeds."""

    def __init__(
        self,
        dsn: str,
        fetch: Fetch,
        head: Head,
        application_name: str,
        review_fetch: ReviewFetch | None = None,
        review_head: Head | None = None,
    ) -> None:
        self._dsn = dsn
        self._application_name = application_name
        self._fetch = fetch
        self._head = head
        self._review_fetch = review_fetch
        self._review_head = review_head
        self._feeds: dict[str, _Feed[Changeset]] = {}
        self._review_feeds: dict[str, _Feed[ReviewEvent]] = {}
        self._coord: dict[str, asyncio.Event] = {}  # set (and replaced) at each change
        self._coord_gen: dict[str, int] = {}  # changes seen per workspace
        self._coord_followers: dict[str, int] = {}  # coordination_changes() running
        self._feed_lock = asyncio.Lock()
        self._fetching = asyncio.Semaphore(FEED_FETCHES_MAX)
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._closed = False
        self.reconnects = 0
        self._committing: dict[str, int] = {}  # workspace -> own commit calls in flight
        # Grows at every change of agents or grants (NOTIFY dbcode_access) and at every
        # (re)connection: access.py knows a database is still open without asking while it
        # has not grown.
        self.access_changes = 0

    @property
    def connected(self) -> bool:
        return self._listening.is_set()

    async def start(self) -> None:
        """Start listening (idempotent); returns once LISTEN is active."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), context=contextvars.Context()
            )
        await self._listening.wait()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        feeds: list[_Feed[Any]] = [*self._feeds.values(), *self._review_feeds.values()]
        for feed in feeds:
            feed.stop()

    async def _run(self) -> None:
        delay = 0.05
        while not self._closed:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn,
                    autocommit=True,
                    connect_timeout=5,
                    application_name=self._application_name,
                )
                async with conn:
                    # The changesets' channel last: pg_stat_activity shows the connection as
                    # "LISTEN dbcode" (tests and operators look for it).
                    await conn.execute(f"LISTEN {REVIEW_CHANNEL}")
                    await conn.execute(f"LISTEN {COORD_CHANNEL}")
                    await conn.execute(f"LISTEN {ACCESS_CHANNEL}")
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.access_changes += 1  # what changed while not listening is unknown
                    self._listening.set()
                    delay = 0.05
                    # Catch up on anything committed while we were not listening.
                    self._poke_all()
                    while not self._closed:
                        async for note in conn.notifies(timeout=SAFETY_POLL_S):
                            if note.channel != CHANNEL:
                                self._other(note.channel, note.payload)
                                continue
                            workspace, _, seq = note.payload.rpartition(" ")
                            woken = self._feeds.get(workspace)
                            if woken is None:
                                continue
                            if not seq.isdigit():
                                woken.poke()
                            elif int(seq) <= woken.last_seq:
                                pass  # our own commit, in the feed already (offer): no fetch
                            elif self._committing.get(workspace):
                                woken.defer(int(seq))  # probably the commit in flight
                            else:
                                woken.poke()
                        if conn.closed:
                            raise psycopg.OperationalError("LISTEN connection closed")
                        self._poke_all()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed:
                    return
                if self._listening.is_set():
                    log.warning("LISTEN connection lost (%s); reconnecting", exc)
                    self.reconnects += 1
                self._listening.clear()
                self.access_changes += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_DELAY_MAX_S)

    def _poke_all(self) -> None:
        feeds: list[_Feed[Any]] = [*self._feeds.values(), *self._review_feeds.values()]
        for feed in feeds:
            feed.poke()
        for workspace in list(self._coord_gen):
            self._coord_changed(workspace)

    def _other(self, channel: str, payload: str) -> None:
        if channel == ACCESS_CHANNEL:
            self.access_changes += 1
        elif channel == REVIEW_CHANNEL:
            workspace = payload.rpartition(" ")[0]
            feed = self._review_feeds.get(workspace)
            if feed is not None:
                feed.poke()
        elif channel == COORD_CHANNEL:
            self._coord_changed(payload)

    def _coord_changed(self, workspace: str) -> None:
        if workspace not in self._coord_gen:
            return  # nobody follows it
        self._coord_gen[workspace] += 1
        event = self._coord.pop(workspace, None)
        if event is not None:
            event.set()

    async def coordination_changes(self, workspace: str) -> AsyncIterator[int]:
        """Yield at every change of the workspace's claims or presence (and after a reconnect,
        when something may have been missed); changes that come while the caller is busy are
        coalesced into one, never lost."""
        await self.start()
        self._coord_gen.setdefault(workspace, 0)
        self._coord_followers[workspace] = self._coord_followers.get(workspace, 0) + 1
        seen = self._coord_gen[workspace]
        try:
            while True:
                while self._coord_gen[workspace] == seen:
                    event = self._coord.get(workspace)
                    if event is None:
                        event = self._coord[workspace] = asyncio.Event()
                    await event.wait()
                seen = self._coord_gen[workspace]
                yield seen
        finally:
            # The last follower gone: the workspace is forgotten (a process that followed
            # many workspaces over its life keeps only those followed now).
            left = self._coord_followers.get(workspace, 1) - 1
            if left > 0:
                self._coord_followers[workspace] = left
            else:
                self._coord_followers.pop(workspace, None)
                self._coord_gen.pop(workspace, None)
                self._coord.pop(workspace, None)

    def committing(self, workspace: str) -> None:
        """This process sends a commit call for ``workspace`` (see DEFER_MAX_S)."""
        self._committing[workspace] = self._committing.get(workspace, 0) + 1

    def committed(self, workspace: str) -> None:
        """The commit call's answer is in and its changesets were offered (or it failed)."""
        left = self._committing.get(workspace, 0) - 1
        if left > 0:
            self._committing[workspace] = left
        else:
            self._committing.pop(workspace, None)
        feed = self._feeds.get(workspace)
        if feed is not None:
            feed.undefer()

    def offer(self, cs: Changeset) -> None:
        """A changeset committed by this process (see ``_Feed.offer``)."""
        feed = self._feeds.get(cs.workspace)
        if feed is not None:
            feed.offer(cs)

    async def _feed(self, workspace: str) -> _Feed[Changeset]:
        found = self._feeds.get(workspace)
        if found is not None:
            return found
        async with self._feed_lock:
            found = self._feeds.get(workspace)
            if found is not None:
                return found
            await self.start()
            feed = _Feed[Changeset](
                workspace, await self._head(workspace), self._fetch, self._fetching
            )
            self._feeds[workspace] = feed
            feed.poke()  # anything committed between LISTEN and the head query
            return feed

    async def _review_feed(self, workspace: str) -> _Feed[ReviewEvent]:
        assert self._review_fetch is not None and self._review_head is not None
        found = self._review_feeds.get(workspace)
        if found is not None:
            return found
        async with self._feed_lock:
            found = self._review_feeds.get(workspace)
            if found is not None:
                return found
            await self.start()
            feed = _Feed[ReviewEvent](
                workspace, await self._review_head(workspace), self._review_fetch, self._fetching
            )
            self._review_feeds[workspace] = feed
            feed.poke()
            return feed

    def subscribe(self, workspace: str, since_seq: int) -> AsyncIterator[Changeset]:
        """Every changeset of ``workspace`` after ``since_seq``, in seq order, forever. A
        workspace's feed lives while it has subscribers: a process that served 1,000
        workspaces once does not keep fetching for them (nor hold pool connections for it)."""
        return self._subscribed(workspace, self._feeds, self._feed, self._fetch, since_seq)

    def subscribe_review(self, workspace: str, since: int) -> AsyncIterator[ReviewEvent]:
        """Every review event after ``since``, in order, exactly once; then live ones."""
        assert self._review_fetch is not None
        return self._subscribed(
            workspace, self._review_feeds, self._review_feed, self._review_fetch, since
        )

    async def _subscribed(
        self,
        workspace: str,
        feeds: dict[str, _Feed[T]],
        get_feed: Callable[[str], Awaitable[_Feed[T]]],
        fetch: Callable[[str, int, int], Awaitable[list[T]]],
        since_seq: int,
    ) -> AsyncIterator[T]:
        feed = await get_feed(workspace)
        feed.subscribers += 1
        try:
            async for item in self._follow(feed, fetch, since_seq):
                yield item
        finally:
            feed.subscribers -= 1
            if feed.subscribers == 0 and feeds.get(workspace) is feed:
                del feeds[workspace]
                feed.stop()

    async def _follow(
        self,
        feed: _Feed[T],
        fetch: Callable[[str, int, int], Awaitable[list[T]]],
        since_seq: int,
    ) -> AsyncIterator[T]:
        workspace = feed.workspace
        nxt = since_seq + 1
        while True:
            changed = feed.changed
            buf = feed.buffer
            if buf and buf[0].seq <= nxt <= feed.last_seq:
                yield buf[nxt - buf[0].seq]
                nxt += 1
                continue
            if nxt <= feed.last_seq:  # behind the buffer: read the table
                try:
                    rows = await fetch(workspace, nxt - 1, FETCH_BATCH_MAX)
                except Exception as exc:  # lost connection: retry after a pause
                    log.warning("subscriber %s: catch-up failed: %s", workspace, exc)
                    await asyncio.sleep(0.2)
                    continue
                for cs in rows:
                    if cs.seq != nxt:
                        break
                    yield cs
                    nxt += 1
                continue
            await changed.wait()
