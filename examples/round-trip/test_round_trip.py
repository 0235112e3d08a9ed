"""Testing a component's behaviour and its cancellation (the README's guide)."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from trio_isyswasfa import Component, Instance
from trio_isyswasfa.testing import assert_quiet, check_cancellation

BAZ = "example:round-trip/baz"


async def test_foo_round_trips(isyswasfa_instance: Instance) -> None:
    result = await isyswasfa_instance.call(BAZ, "foo", "hello")
    assert result == "hello - entered guest - entered host - exited host - exited guest"
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


async def test_a_hundred_calls_overlap(isyswasfa_instance: Instance) -> None:
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i in range(100):
            nursery.start_soon(isyswasfa_instance.call, BAZ, "foo", str(i))
    # each call takes at least 20 ms alone (the guest's and the host's 10 ms sleeps): one
    # after another they take 2 s, so less means they overlapped (no tighter bound: a
    # loaded machine must not fail this)
    assert trio.current_time() - start < 100 * 0.02
    assert_quiet(isyswasfa_instance)
