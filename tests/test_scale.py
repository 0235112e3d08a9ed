"""The host's work per concurrent call, task and pollable stays flat as their number grows.

Counted, not timed: wake-ups of calls waiting for the store, poll calls and host tasks
for N and 4N things at once must grow (at most) linearly. The speed itself is measured
by ``bench/bench_scale.py``.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trio_isyswasfa

pytestmark = pytest.mark.guest

PROBE = "test:wasi/probe"
CASES = "test:cases/cases"
# a synchronous export that holds the store while it blocks 1 s in a host call
BLOCK = "with monotonic_clock.subscribe_duration(10**9) as p:\n    p.block()\nresult = 1"


async def _blocking_calls(
    component: trio_isyswasfa.Component, n: int
) -> trio_isyswasfa.InstanceStatistics:
    async with trio_isyswasfa.open_instance(component) as inst:
        await inst.call(PROBE, "exec", "result = 1")  # the guest's first call initialises it
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(inst.call, PROBE, "exec", BLOCK)
        return inst.statistics()


async def test_calls_waiting_for_the_store_are_woken_once_each(
    wasi_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    # every call blocks while holding the store, so all but one wait in line each time
    n = 20
    small = await _blocking_calls(wasi_component, n)
    large = await _blocking_calls(wasi_component, 4 * n)
    assert small.store_waits >= n - 1
    assert large.store_waits >= 4 * n - 1
    # one wake-up per wait: 4x the calls, 4x the wake-ups (a shared event woke the
    # whole line at every hand-off: 16x)
    assert small.store_wakeups == small.store_waits
    assert large.store_wakeups == large.store_waits
    assert large.store_wakeups <= 4.5 * small.store_wakeups
