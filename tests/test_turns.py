"""Turns: the store goes to one waiter at a time, first come first served, each woken once."""

from __future__ import annotations

import asyncio
import sys
from collections import OrderedDict

import pytest
import trio
import trio.testing

from trio_isyswasfa._turns import Turns


async def _held() -> Turns:
    """Turns whose turn is taken: whoever comes next waits in line."""
    turns = Turns()
    await turns.take()
    return turns


async def _take_and_note(turns: Turns, got: list[object], name: object) -> None:
    """Wait for the turn, note ``name`` in ``got`` and give the turn back."""
    await turns.take()
    got.append(name)
    turns.give_back()


class TestTurns:
    async def test_a_free_turn_is_taken_without_a_checkpoint(self) -> None:
        turns = Turns()
        with trio.CancelScope() as scope:
            scope.cancel()
            await turns.take()  # a checkpoint would raise Cancelled here
        assert turns.held
        turns.give_back()
        assert not turns.held

    def test_take_nowait_takes_only_a_free_turn(self) -> None:
        turns = Turns()
        assert turns.take_nowait()
        assert turns.held
        assert not turns.take_nowait()  # held: nobody else gets it
        turns.give_back()
        assert not turns.held

    async def test_waiters_get_the_turn_in_the_order_they_came(self) -> None:
        turns = await _held()
        order: list[object] = []
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(_take_and_note, turns, order, i)
                await trio.testing.wait_all_tasks_blocked()
            turns.give_back()
        assert order == [0, 1, 2, 3, 4]
        assert not turns.held

    @pytest.mark.parametrize("n", [10, 40])
    async def test_each_waiter_is_woken_once_however_long_the_line(self, n: int) -> None:
        turns = await _held()

        async def waiter() -> None:
            await turns.take()
            await trio.lowlevel.checkpoint()  # held across a checkpoint, as by a suspended call
            turns.give_back()

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert turns.statistics().waiting == n
            turns.give_back()
        stats = turns.statistics()
        # a shared event would wake the whole line at every hand-off: n * (n + 1) / 2
        assert (stats.waits, stats.wakeups, stats.waiting) == (n, n, 0)

    async def test_a_long_line_once_drained_does_not_keep_its_table(self) -> None:
        # a dict keeps the table of its longest length: the calls that queued for the
        # store once (at start-up, say) must not cost memory for as long as it lives
        turns = await _held()
        empty = sys.getsizeof(OrderedDict())
        got: list[object] = []
        async with trio.open_nursery() as nursery:
            for i in range(500):
                nursery.start_soon(_take_and_note, turns, got, i)
            await trio.testing.wait_all_tasks_blocked()
            assert sys.getsizeof(turns._line) > 4 * empty
            turns.give_back()
        assert len(got) == 500
        assert sys.getsizeof(turns._line) == empty

    async def test_wait_free_keeps_its_place_for_the_take_that_follows(self) -> None:
        turns = await _held()
        got: list[object] = []

        async def wait_free_then_take() -> None:
            await turns.wait_free()
            got.append("free" if not turns.held else "held")
            await turns.take()  # at once: no checkpoint, no wait
            got.append("took")
            turns.give_back()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_free_then_take)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(_take_and_note, turns, got, "behind")
            await trio.testing.wait_all_tasks_blocked()
            turns.give_back()
        assert got == ["free", "took", "behind"]
        assert not turns.held

    async def test_wait_free_on_a_free_turn_returns_at_once(self) -> None:
        turns = Turns()
        with trio.CancelScope() as scope:
            scope.cancel()
            await turns.wait_free()  # a checkpoint would raise Cancelled here
        assert not turns.held

    async def test_a_waiter_cancelled_in_line_leaves_it(self) -> None:
        turns = await _held()
        got: list[object] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_take_and_note, turns, got, "first")
            await trio.testing.wait_all_tasks_blocked()
            scope = trio.CancelScope()
            nursery.start_soon(_cancelled_waiter, turns, scope)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(_take_and_note, turns, got, "last")
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert turns.statistics().waiting == 2
            turns.give_back()
        assert got == ["first", "last"]
        assert not turns.held


async def _cancelled_waiter(turns: Turns, scope: trio.CancelScope) -> None:
    with scope:
        await turns.take()
        raise AssertionError("a cancelled waiter got the turn")


def test_a_waiter_cancelled_as_the_turn_reaches_it_passes_it_on() -> None:
    # under asyncio a task can be cancelled after its event was set and before it ran:
    # the turn it was handed must go on to the next in line, not be lost
    async def main() -> list[object]:
        turns = await _held()
        got: list[object] = []
        doomed = asyncio.ensure_future(_take_and_note(turns, got, "cancelled one"))
        await asyncio.sleep(0)
        following = asyncio.ensure_future(_take_and_note(turns, got, "next"))
        await asyncio.sleep(0)
        turns.give_back()  # the turn goes to `doomed`…
        doomed.cancel()  # …which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await asyncio.wait([following], timeout=5)  # only a guard: it runs at once
        assert following.done(), "the turn was lost with the cancelled waiter"
        assert not turns.held
        assert turns.statistics().wakeups == 2
        return got

    assert asyncio.run(main()) == ["next"]
