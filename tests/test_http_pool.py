"""The instance pool behind ``serve``: what it lends again, and what it keeps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trio
import trio.testing
from conftest import lowered_wit
from test_hostile import WORLD, build

import trio_isyswasfa
from trio_isyswasfa.http._asgi import _Slots
from trio_isyswasfa.http._pool import FreshInstances, InstancePool, _Slot
from trio_isyswasfa.wasi import WasiConfig


@pytest.fixture(scope="module")
def hostile_wit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lowered_wit(tmp_path_factory, "hostile", WORLD)


def pool(wasm: bytes, *, max_idle: int = 32) -> InstancePool:
    component = trio_isyswasfa.load_component(wasm)
    return InstancePool(component, wasi=WasiConfig(), cancel_grace=0.5, max_idle=max_idle)


async def test_an_instance_that_failed_is_not_lent_again(hostile_wit: Path) -> None:
    # the borrower caught the trap, so the loan itself ends cleanly: the instance is
    # still broken, and the next borrower gets a fresh one
    async with pool(build(hostile_wit, poll="unreachable")) as instances:
        async with instances.lend() as first:
            with trio.fail_after(5), pytest.raises(trio_isyswasfa.GuestTrap):
                await first.call("", "go")
        async with instances.lend() as second:
            assert second is not first


async def test_a_sound_instance_is_lent_again(hostile_wit: Path) -> None:
    async with pool(build(hostile_wit)) as instances:
        async with instances.lend() as first:
            pass
        async with instances.lend() as second:
            assert second is first


async def test_at_most_max_idle_instances_are_kept(hostile_wit: Path) -> None:
    opened: list[trio_isyswasfa.Instance] = []
    async with pool(build(hostile_wit), max_idle=1) as instances:
        async with instances.lend() as a, instances.lend() as b:
            opened += [a, b]
        # both came back; one was kept, the other closed
        async with instances.lend() as c, instances.lend() as d:
            assert c in opened
            assert d not in opened


async def test_spares_open_again_once_an_instance_opens_after_a_failed_open(
    hostile_wit: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class FailsOnce(FreshInstances):
        failures = 1

        async def _open_one(self) -> _Slot:
            if self.failures:
                self.failures -= 1
                raise trio_isyswasfa.InstanceDead("cannot open (once)")
            return await super()._open_one()

    component = trio_isyswasfa.load_component(build(hostile_wit))
    async with FailsOnce(component, wasi=WasiConfig(), cancel_grace=0.5, spares=1) as fresh:
        await trio.testing.wait_all_tasks_blocked()
        assert (fresh.failures, fresh.ready) == (0, 0)  # its spare could not open
        async with fresh.lend():  # a request opens its own: opening works again
            pass
        await trio.testing.wait_all_tasks_blocked()
        assert fresh.ready == 1
    assert "cannot open a spare instance" in caplog.text


class TestRequestSlots:
    """The slots a server's requests take (``max_instances * per_instance``)."""

    async def test_a_request_cancelled_in_line_leaves_it(self) -> None:
        slots = _Slots(1)
        slots.available_tokens -= 1  # taken
        with trio.CancelScope() as gone:
            gone.cancel()
            await slots.wait_handed()
        slots.release()  # to the line's next, had the cancelled one stayed in it
        assert slots.available_tokens == 1

    def test_a_slot_handed_to_a_request_cancelled_meanwhile_is_passed_on(self) -> None:
        # on asyncio a task can be cancelled (hypercorn's asyncio worker cancels the app's
        # task when its client leaves) after the event it waits on was set: the slot it
        # was handed must not be lost with it
        async def main() -> None:
            slots = _Slots(1)
            slots.available_tokens -= 1  # taken
            waiter = asyncio.create_task(slots.wait_handed())
            await asyncio.sleep(0)  # in line
            slots.release()  # handed to the waiter...
            waiter.cancel()  # ...which is cancelled before it runs
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert slots.available_tokens == 1

        asyncio.run(main())

    async def test_slots_are_handed_over_in_turn(self) -> None:
        slots = _Slots(1)
        slots.available_tokens -= 1  # taken
        order: list[int] = []

        async def wait(i: int) -> None:
            await slots.wait_handed()
            order.append(i)
            slots.release()

        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(wait, i)
                await trio.testing.wait_all_tasks_blocked()
            slots.release()
        assert (order, slots.available_tokens) == ([0, 1, 2, 3, 4], 1)
