"""trio_isyswasfa.testing: cancellation at every checkpoint, leak checks, guest time."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trio_isyswasfa
from trio_isyswasfa.testing import assert_quiet, check_cancellation, settle

pytestmark = [pytest.mark.guest, pytest.mark.slow]

CASES = "test:cases/cases"


def fresh_imports() -> dict[str, dict[str, object]]:
    async def echo_later(s: str, ms: int) -> str:
        await trio.sleep(ms / 1000)
        return s

    return {
        "test:cases/host": {
            "note": lambda s: None,
            "forever": trio.sleep_forever,
            "echo-later": echo_later,
            "fallible": echo_later,
        }
    }


async def test_correct_guest_passes_at_every_point(
    cases_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    report = await check_cancellation(
        cases_component, CASES, "two-steps", 50, imports=fresh_imports
    )
    assert report.checkpoints == 2  # a timer, then an import
    assert [r.ok for r in report.results] == [True, True]
    report.assert_ok()


async def test_round_trip_passes(
    round_trip_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    async def foo(s: str) -> str:
        await trio.sleep(0.01)
        return s

    report = await check_cancellation(
        round_trip_component,
        "example:round-trip/baz",
        "foo",
        "x",
        imports={"example:round-trip/baz": {"foo": foo}},
    )
    assert report.checkpoints == 2
    report.assert_ok()


async def test_finds_a_guest_that_ignores_cancellation(
    cases_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    report = await check_cancellation(
        cases_component, CASES, "ignores-cancel", 10, imports=fresh_imports
    )
    assert report.checkpoints == 1
    (failure,) = report.failures
    assert failure.point == 1
    assert any("did not confirm a cancellation within 1.0 s" in p for p in failure.problems)
    with pytest.raises(AssertionError, match=r"point 1: .*did not confirm"):
        report.assert_ok()


async def test_finds_a_guest_that_leaks_a_handle_when_cancelled(
    cases_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    report = await check_cancellation(
        cases_component, CASES, "leaks-on-cancel", 10, imports=fresh_imports
    )
    (failure,) = report.failures
    assert failure.problems == ("WASI handles left: 1 DeadlinePollable",)


@pytest.mark.parametrize(
    ("name", "args"), [("gather-sleeps", (3, 50)), ("import-with-timeout", (30,))]
)
async def test_a_guest_winding_down_its_own_timer_is_no_leak(
    cases_component: trio_isyswasfa.Component,
    autojump_clock: trio.testing.MockClock,
    name: str,
    args: tuple[object, ...],
) -> None:
    # cancelled, these calls' asyncio timers go, and the Python guest's loop gives up
    # its timer's wait as the call confirms: the host confirms that cancel a round
    # after the caller woke. Checked at once, that was a leak in 3 runs of 4 (a task,
    # or the timer's DeadlinePollable): five runs pass only if the check settles first
    for _ in range(5):
        report = await check_cancellation(
            cases_component, CASES, name, *args, imports=fresh_imports
        )
        report.assert_ok()


async def test_settling_waits_for_no_guest_time(
    cases_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    # asyncio.as_completed does not cancel the tasks it wraps: the cancelled call leaves
    # its three sleeps running in the guest, and the check still finds them
    report = await check_cancellation(
        cases_component, CASES, "as-completed", [60, 10, 30], imports=fresh_imports
    )
    assert report.checkpoints == 3  # the three sleeps' waits
    assert [r.point for r in report.failures] == [1, 2, 3]
    for failure in report.failures:
        assert failure.problems[0].startswith("3 isyswasfa task(s) alive"), failure


async def test_settle_sends_what_waits_to_ride_along(
    cases_component: trio_isyswasfa.Component, mock_clock: trio.testing.MockClock
) -> None:
    # mock_clock has rate 0: the 2 ms a `listening` may wait to ride along with the
    # guest's next poll never pass, so only settle() sends it
    async with (
        trio_isyswasfa.open_instance(cases_component, imports=fresh_imports()) as inst,
        trio.open_nursery() as nursery,
    ):
        result: list[str] = []

        async def call() -> None:
            result.append(await inst.call(CASES, "two-steps", 50))

        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(0.05)  # the timer: in that poll the guest calls the import
        await trio.testing.wait_all_tasks_blocked()
        polls = inst.statistics().poll_calls
        await settle(inst)
        assert inst.statistics().poll_calls == polls + 1  # the import's `listening`
        assert result == []  # and no guest time passed
        mock_clock.jump(0.05)
    assert result == ["two"]


async def test_a_call_that_never_suspends_has_nothing_to_cancel(
    cases_component: trio_isyswasfa.Component,
) -> None:
    report = await check_cancellation(
        cases_component, CASES, "immediate", "x", imports=fresh_imports
    )
    assert report.checkpoints == 0
    with pytest.raises(AssertionError, match="never suspended"):
        report.assert_ok()


async def test_an_hour_of_guest_sleep_takes_no_real_time(
    cases_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    # a sleep on a clock other than trio's would run into the test's time limit
    async with trio_isyswasfa.open_instance(cases_component, imports=fresh_imports()) as inst:
        start = trio.current_time()
        assert await inst.call(CASES, "sleep-ms", 3_600_000) == 3_600_000
        assert trio.current_time() - start >= 3600  # the hour passed, on the virtual clock
        await settle(inst)
        assert_quiet(inst)


async def test_mock_clock_jump_moves_guest_time(cases_component: trio_isyswasfa.Component) -> None:
    clock = trio.testing.MockClock()  # rate 0: time only moves when we say so
    result: list[int] = []

    async def main() -> None:
        async with (
            trio_isyswasfa.open_instance(cases_component, imports=fresh_imports()) as inst,
            trio.open_nursery() as nursery,
        ):

            async def call() -> None:
                result.append(await inst.call(CASES, "sleep-ms", 10_000))

            nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            assert result == []
            clock.jump(9.9)
            await trio.testing.wait_all_tasks_blocked()
            assert result == []
            clock.jump(0.2)
        assert result == [10_000]

    await trio.to_thread.run_sync(lambda: trio.run(main, clock=clock))


async def test_wall_clock_can_be_frozen(cases_component: trio_isyswasfa.Component) -> None:
    frozen = trio_isyswasfa.WasiConfig(wall_clock=lambda: 1_000_000_000 * 10**9)
    async with trio_isyswasfa.open_instance(
        cases_component, imports=fresh_imports(), wasi=frozen
    ) as inst:
        assert await inst.call(CASES, "wall-seconds") == 1_000_000_000


async def test_statistics_count_suspensions_and_cancels(
    cases_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio_isyswasfa.open_instance(cases_component, imports=fresh_imports()) as inst:
        # on the virtual clock no time passes between the guest's subscribing to its
        # 50 ms timer and its wait (under load the real 50 ms had passed: ready at once,
        # no listen), so the timer and the import are a listen each
        await inst.call(CASES, "two-steps", 50)
        assert inst.statistics().listens == 2
        with trio.move_on_after(0.05):
            await inst.call(CASES, "sleep-ms", 60_000)
        stats = inst.statistics()
        assert (stats.cancels_sent, stats.cancels_confirmed) == (1, 1)
        await settle(inst)
        assert_quiet(inst)
