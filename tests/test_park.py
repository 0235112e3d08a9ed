"""Waiter: the one-task wake-up every pending export call parks on."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
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

    @pytest.mark.parametrize("backend", ["trio", "asyncio"])
    def test_a_second_set_before_the_woken_task_resumes_is_kept(self, backend: str) -> None:
        # once per set(), on both backends: the first wakes the parked wait, the
        # second (before that task resumed) is kept for its next wait
        async def main() -> list[int]:
            waiter = Waiter(None)
            woken: list[int] = []

            async def wait_twice() -> None:
                await waiter.wait()
                woken.append(1)
                with anyio.move_on_after(1):  # (a hang guard: the second set is kept)
                    await waiter.wait()
                    woken.append(2)

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_twice)
                await anyio.lowlevel.checkpoint()
                await anyio.lowlevel.checkpoint()  # (it waits now)
                waiter.set()
                waiter.set()
            return woken

        assert anyio.run(main, backend=backend) == [1, 2]

    def test_a_set_then_a_cancel_before_it_resumes_keeps_the_set_on_asyncio(self) -> None:
        # trio returns from a wait woken before its cancel (which comes at the next
        # checkpoint); asyncio may throw the cancel into the woken wait instead: then
        # the set is kept for the next wait, not lost
        import asyncio

        async def main() -> bool:
            waiter = Waiter(False)

            async def park() -> None:
                await waiter.wait()

            task = asyncio.ensure_future(park())
            await asyncio.sleep(0)  # (it waits now)
            waiter.set()
            task.cancel()  # before it resumed
            with pytest.raises(asyncio.CancelledError):
                await task
            try:
                await asyncio.wait_for(asyncio.ensure_future(_wait(waiter)), 1)
            except TimeoutError:
                return False
            return True

        async def _wait(waiter: Waiter) -> None:
            await waiter.wait()

        assert asyncio.run(main())
