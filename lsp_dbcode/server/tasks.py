"""Tasks of one session: every one kept until it ends, and its failure logged (never
fire-and-forget); cancelled together when the session ends."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from ..store.access import current_role

log = logging.getLogger(__name__)


class Tasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.role: str | None = None  # the session's agent role: its tasks' SQL runs as it

    def run(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start ``coro`` as a task that is kept, and whose failure is logged."""
        ctx = contextvars.copy_context()
        ctx.run(current_role.set, self.role)
        task = asyncio.get_running_loop().create_task(coro, context=ctx)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task failed: %r", exc, exc_info=exc)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()


DEADLINE_TICK_S = 0.25


class Deadline:
    """One deadline of :class:`Deadlines`; :meth:`cancel` it when what it guards is done."""

    __slots__ = ("_owner", "callback", "when")

    def __init__(self, owner: Deadlines, when: float, callback: Callable[[], None]) -> None:
        self._owner = owner
        self.when = when
        self.callback = callback

    def cancel(self) -> None:
        self._owner.due.pop(self, None)
        self.callback = _nothing  # what it guards often holds it: no cycle left for the GC


def _nothing() -> None:
    pass


class Deadlines:
    """The deadlines of a process (an answer to a pushed edit, the didChange that settles it),
    checked by one timer every ``tick_s`` instead of a timer each: 1,000 pushes in flight are
    1,000 dict entries, not 1,000 TimerHandles made, cancelled and swept out of the loop's heap
    in the turn that writes the pushes. A deadline fires up to ``tick_s`` late."""

    def __init__(self, tick_s: float = DEADLINE_TICK_S) -> None:
        self.tick_s = tick_s
        self.due: dict[Deadline, None] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, delay_s: float, callback: Callable[[], None]) -> Deadline:
        """Call ``callback`` (on the loop) once ``delay_s`` has passed, unless cancelled."""
        loop = asyncio.get_running_loop()
        deadline = Deadline(self, loop.time() + delay_s, callback)
        self.due[deadline] = None
        if self._timer is None:
            self._timer = loop.call_later(self.tick_s, self._sweep)
        return deadline

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for deadline in [d for d in self.due if d.when <= now]:
            if self.due.pop(deadline, 0) is None:  # not cancelled by an earlier callback
                callback, deadline.callback = deadline.callback, _nothing
                try:
                    callback()
                except Exception:
                    log.exception("a deadline's callback failed")
        self._timer = loop.call_later(self.tick_s, self._sweep) if self.due else None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.due.clear()
