"""Testing a component's behaviour and its cancellation (the README's guide)."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from trio_isyswasfa import Component, Instance, open_instance
from trio_isyswasfa.testing import assert_quiet, check_cancellation, settle

BAZ = "example:round-trip/baz"


async def test_foo_round_trips(isyswasfa_instance: Instance) -> None:
    result = await isyswasfa_instance.call(BAZ, "foo", "hello")
    assert result == "hello - entered guest - entered host - exited host - exited guest"
    await settle(isyswasfa_instance)
    assert_quiet(isyswasfa_instance)


async def test_foo_is_cancellable_at_every_point(
    isyswasfa_component: Component,
    isyswasfa_imports: dict[str, Any],
    autojump_clock: trio.testing.MockClock,
) -> None:
    report = await check_cancellation(
        isyswasfa_component, BAZ, "foo", "hello", imports=isyswasfa_imports
    )
    assert report.checkpoints == 2  # the guest's 10 ms timer, then the host's foo
    report.assert_ok()


async def test_a_hundred_calls_overlap(isyswasfa_component: Component) -> None:
    # the host's foo counts how many of its calls are in flight at once: one after
    # another that is never more than one, whatever the machine's load
    in_flight = most = 0

    async def foo(s: str) -> str:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await trio.sleep(0.01)
        in_flight -= 1
        return f"{s} - entered host - exited host"

    async with open_instance(isyswasfa_component, imports={BAZ: {"foo": foo}}) as instance:
        results: list[str] = []

        async def call(i: int) -> None:
            results.append(await instance.call(BAZ, "foo", str(i)))

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(call, i)
        assert sorted(results) == sorted(
            f"{i} - entered guest - entered host - exited host - exited guest" for i in range(100)
        )
        assert most > 1
        await settle(instance)
        assert_quiet(instance)
