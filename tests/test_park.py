"""Waiter: the one-task wake-up every pending export call parks on."""

from __future__ import annotations

import trio
import trio.testing

from trio_isyswasfa._park import Waiter


class TestWaiter:
    async def test_a_set_wakes_the_parked_task(self) -> None:
        waiter = Waiter(True)
        woke: list[bool] = []

        async def park() -> None:
            await waiter.wait()
            woke.append(True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(park)
            await trio.testing.wait_all_tasks_blocked()
            assert woke == []
            waiter.set()
        assert woke == [True]

    async def test_a_set_with_nobody_waiting_is_kept_for_the_next_wait(self) -> None:
        waiter = Waiter(True)
        waiter.set()
        with trio.CancelScope() as scope:
            scope.cancel()
            await waiter.wait()  # returns at once: no checkpoint, so no Cancelled
        # consumed: the next wait parks
        with trio.move_on_after(1) as late:
            await waiter.wait()
        assert late.cancelled_caught

    async def test_a_cancelled_wait_leaves_it_unset_and_a_later_set_kept(self) -> None:
        waiter = Waiter(True)
        with trio.CancelScope() as scope:
            scope.cancel()
            await waiter.wait()
        assert scope.cancelled_caught
        # the task is no longer parked: a set must not reschedule it, only be kept
        waiter.set()
        await waiter.wait()

    async def test_parked_says_whether_a_task_waits_now(self) -> None:
        # the scheduler reuses an idle host worker only while it is parked: one whose
        # wait the instance's end cancelled must not be handed work
        waiter = Waiter(on_trio=True)
        assert not waiter.parked
        waiter.set()  # kept for the next wait: nobody waits
        assert not waiter.parked
        await waiter.wait()
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter.wait)
                await trio.testing.wait_all_tasks_blocked()
                assert waiter.parked
                scope.cancel()
                assert not waiter.parked  # (trio's abort ran before the task does)

    async def test_the_backend_is_learnt_at_the_first_wait(self) -> None:
        waiter = Waiter(None)  # made outside the loop, as the scheduler's wake-up is
        woke: list[bool] = []

        async def park() -> None:
            await waiter.wait()  # (awaited at once by the task that calls it)
            woke.append(True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(park)
            await trio.testing.wait_all_tasks_blocked()
            waiter.set()
        assert woke == [True]
