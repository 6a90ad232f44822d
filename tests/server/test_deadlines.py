"""Deadlines (server/tasks.py): the one sweep that times out pushed edits and their settling
didChanges, instead of a loop timer per push. On a real event loop."""

from __future__ import annotations

import asyncio
import gc

from lsp_dbcode.server.tasks import Deadlines


async def test_a_deadline_fires_once_and_a_cancelled_one_never() -> None:
    deadlines = Deadlines(tick_s=0.01)
    fired: list[str] = []
    done = asyncio.get_running_loop().create_future()
    deadlines.add(0.02, lambda: fired.append("late"))
    cancelled = deadlines.add(0.02, lambda: fired.append("cancelled"))
    deadlines.add(0.05, lambda: done.set_result(None))
    cancelled.cancel()
    await asyncio.wait_for(done, 10)
    assert fired == ["late"]
    assert not deadlines.due  # the sweep stops when nothing is left
    deadlines.close()


async def test_one_deadline_cancelling_another_in_the_same_sweep() -> None:
    deadlines = Deadlines(tick_s=0.01)
    fired: list[str] = []
    done = asyncio.get_running_loop().create_future()
    later: list[object] = []
    deadlines.add(0.0, lambda: (fired.append("first"), later[0].cancel()))  # type: ignore[attr-defined]
    later.append(deadlines.add(0.0, lambda: fired.append("second")))
    deadlines.add(0.03, lambda: done.set_result(None))
    await asyncio.wait_for(done, 10)
    assert fired == ["first"]
    deadlines.close()


async def test_what_a_deadline_guards_is_freed_without_the_cycle_collector() -> None:
    """A push's Pending holds its deadlines and they hold it (their callbacks): once fired or
    cancelled, a deadline lets go, so 1,000 pushes leave no cyclic garbage per commit."""

    class Pending:
        deadline: object = None

    deadlines = Deadlines(tick_s=0.01)
    gc.collect()
    gc.disable()
    try:
        pending = Pending()
        pending.deadline = deadlines.add(60, lambda p=pending: p)
        pending.deadline.cancel()  # type: ignore[attr-defined]
        del pending
        assert gc.collect() == 0
    finally:
        gc.enable()
        deadlines.close()
