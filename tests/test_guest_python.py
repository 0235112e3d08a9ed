"""End to end: the trio host and real Python guest components, for what only a Python
guest shows (asyncio inside the guest, results, pipes, ignored cancellation...).

The behaviours both guest libraries promise run for both languages in
test_guest_cases.py.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
from conftest import CasesHost

import trio_isyswasfa
from trio_isyswasfa import Err, Ok
from trio_isyswasfa.testing import settle

pytestmark = [pytest.mark.guest, pytest.mark.slow]

CASES = "test:cases/cases"


@pytest.fixture
def host() -> CasesHost:
    return CasesHost()


@pytest.fixture
async def cases(
    cases_component: trio_isyswasfa.Component, host: CasesHost
) -> AsyncIterator[trio_isyswasfa.Instance]:
    async with trio_isyswasfa.open_instance(cases_component, imports=host.imports()) as inst:
        yield inst
        await settle(inst)
        assert_quiet(inst)


def assert_quiet(inst: trio_isyswasfa.Instance) -> None:
    """Nothing is left behind: no tasks, isyswasfa handles, host work or calls."""
    stats = inst.statistics()
    assert stats.tasks == 0, stats
    assert stats.isyswasfa_handles == 0, stats
    assert stats.host_tasks_running == 0, stats
    assert stats.calls_in_flight == 0, stats


async def test_round_trip(round_trip_component: trio_isyswasfa.Component) -> None:
    async def foo(s: str) -> str:
        await trio.sleep(0.01)
        return f"{s} - entered host - exited host"

    async with trio_isyswasfa.open_instance(
        round_trip_component, imports={"example:round-trip/baz": {"foo": foo}}
    ) as inst:
        result = await inst.call("example:round-trip/baz", "foo", "hello, world!")
        assert result == "hello, world! - entered guest - entered host - exited host - exited guest"
        await settle(inst)
        assert_quiet(inst)


async def test_concurrent_calls_are_concurrent(
    cases: trio_isyswasfa.Instance, autojump_clock: trio.testing.MockClock
) -> None:
    results: list[int] = []

    async def one() -> None:
        results.append(await cases.call(CASES, "sleep-ms", 100))

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(one)
        # before any guest time passes (the clock jumps only when all wait), every
        # call is in the guest at once, each its own pending guest task
        await trio.testing.wait_all_tasks_blocked()
        stats = cases.statistics()
        assert (stats.calls_in_flight, stats.guest_tasks) == (100, 100), stats
    assert results == [100] * 100
    # the guest's clock is trio's, here virtual: the sleeps overlapped (one after
    # another: 10 s), whatever the machine's load
    assert trio.current_time() - start < 0.2


async def test_import_result_ok_and_err(cases: trio_isyswasfa.Instance) -> None:
    assert await cases.call(CASES, "call-fallible", True) == "ok: fine"
    assert await cases.call(CASES, "call-fallible", False) == "err: broken"


async def test_export_result_ok_and_err(cases: trio_isyswasfa.Instance) -> None:
    assert await cases.call(CASES, "try-result", True) == Ok("yes")
    assert await cases.call(CASES, "try-result", False) == Err("no")


async def test_asyncio_gather_and_sleep_in_guest(
    cases: trio_isyswasfa.Instance, autojump_clock: trio.testing.MockClock
) -> None:
    # 100 sleeps of 50 ms: 5 s one after another; on the (virtual) clock the guest
    # reads, together they take one sleep's length
    start = trio.current_time()
    assert await cases.call(CASES, "gather-sleeps", 100, 50) == 100
    assert trio.current_time() - start < 0.1  # they overlapped


async def test_guest_tasks_each_awaiting_a_pollable_wait_together(
    cases: trio_isyswasfa.Instance, autojump_clock: trio.testing.MockClock
) -> None:
    # 200 guest tasks, each with a monotonic-clock pollable of its own due 200 ms after
    # the call: 40 s one after another, one timer's length together (virtual time)
    start = trio.current_time()
    assert await cases.call(CASES, "gather-pollable-sleeps", 200, 200) == 200
    assert trio.current_time() - start < 0.4
    # the 200 timers fire together, so their ready events reach the guest in one poll
    # call, not one call each (the rest start the call and take the listens)
    assert cases.statistics().poll_calls < 10


async def test_asyncio_as_completed_in_guest(
    cases: trio_isyswasfa.Instance, autojump_clock: trio.testing.MockClock
) -> None:
    # on the virtual clock the three sleeps start at one instant and end 20 ms apart
    # (on the real one a loaded machine spread their starts wider than that)
    assert await cases.call(CASES, "as-completed", [60, 10, 30]) == [10, 30, 60]


async def test_cancelling_the_caller_cancels_the_guest_task(
    cases: trio_isyswasfa.Instance, host: CasesHost
) -> None:
    with trio.move_on_after(0.05) as scope:
        await cases.call(CASES, "cancel-aware-sleep", 60_000)
    assert scope.cancelled_caught
    # the call returned only after the guest confirmed: it saw CancelledError already
    assert host.notes == ["guest saw CancelledError"]
    # and the instance still works
    assert await cases.call(CASES, "sleep-ms", 1) == 1


async def test_cancelled_call_raises_trio_cancelled(cases: trio_isyswasfa.Instance) -> None:
    raised: list[BaseException] = []

    async def call() -> None:
        try:
            await cases.call(CASES, "cancel-aware-sleep", 60_000)
        except BaseException as exc:
            raised.append(exc)
            raise

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    assert len(raised) == 1
    assert isinstance(raised[0], trio.Cancelled)


async def test_unknown_export_is_a_link_error(cases: trio_isyswasfa.Instance) -> None:
    with pytest.raises(trio_isyswasfa.LinkError, match="nope"):
        await cases.call(CASES, "nope")


async def test_pipe_streams_wait_for_data_and_space(cases: trio_isyswasfa.Instance) -> None:
    # 200 kB through a 64 KiB pipe: the writer waits for space, the reader for data
    assert await cases.call(CASES, "pipe-through", 200_000) == 200_000
    assert cases.statistics().wasi_handles == {}


async def test_pipe_writer_sees_closed_when_reader_is_gone(cases: trio_isyswasfa.Instance) -> None:
    assert await cases.call(CASES, "write-after-reader-gone") == "StreamError_Closed"


async def test_guest_seconds_count_guest_code_not_host_functions(
    cases_component: trio_isyswasfa.Component, host: CasesHost
) -> None:
    imports = host.imports()

    def slow_note(s: str) -> None:
        # a host function the guest waits for: not guest time. Long beside the guest's
        # own step, which took 0.13 s of wall time at a load of 12 on 2 cores
        time.sleep(1.0)
        host.note(s)

    imports["test:cases/host"]["note"] = slow_note
    async with trio_isyswasfa.open_instance(cases_component, imports=imports) as inst:
        assert await inst.call(CASES, "add", 1, 2) == 3
        after_add = inst.statistics().guest_seconds
        assert after_add > 0
        await inst.call(CASES, "spawn-then-note", 0)
        await host.noted.wait()
        spent = inst.statistics().guest_seconds - after_add
    assert host.notes == ["spawned task done"]
    assert 0 < spent < 0.5  # counted, the host function alone would be 1 s


# -- what counts as an async import ----------------------------------------------------


async def _echo_later_for(s: str, ms: int) -> str:
    await trio.sleep(ms / 1000)
    return f"host saw {s}"


@functools.wraps(_echo_later_for)
def _wrapped_echo(*args: Any) -> Any:
    return _echo_later_for(*args)


def _echo_imports(echo: Any, note: Any = None) -> dict[str, dict[str, object]]:
    return {
        "test:cases/host": {
            "note": note or (lambda s: None),
            "forever": trio.sleep_forever,
            "echo-later": echo,
            "fallible": _echo_later_for,
        }
    }


@pytest.mark.parametrize(
    "echo",
    [_wrapped_echo, functools.partial(_echo_later_for)],
    ids=["functools-wraps", "partial"],
)
async def test_an_async_import_behind_a_wrapper_runs_as_a_host_task(
    cases_component: trio_isyswasfa.Component,
    autojump_clock: trio.testing.MockClock,
    echo: Any,
) -> None:
    async with trio_isyswasfa.open_instance(cases_component, imports=_echo_imports(echo)) as inst:
        assert await inst.call("test:cases/cases", "echo-via-host", "x", 1) == "host saw x"
        assert inst.statistics().host_tasks_started >= 1


class _AsyncNote:
    async def __call__(self, s: str) -> None:  # pragma: no cover - never called
        pass


async def _async_note(s: str) -> None:  # pragma: no cover - never called
    pass


@functools.wraps(_async_note)
def _wrapped_note(s: str) -> Any:  # pragma: no cover - never called
    return _async_note(s)


@pytest.mark.parametrize(
    "note",
    [_async_note, _AsyncNote(), _wrapped_note, functools.partial(_async_note)],
    ids=["async-def", "callable", "functools-wraps", "partial"],
)
async def test_an_async_implementation_of_a_sync_import_is_a_link_error(
    cases_component: trio_isyswasfa.Component, note: Any
) -> None:
    with pytest.raises(trio_isyswasfa.LinkError, match="note is given an async"):
        async with trio_isyswasfa.open_instance(
            cases_component, imports=_echo_imports(_echo_later_for, note)
        ):
            pass  # pragma: no cover
