"""The Rust guest library (guest/rust/isyswasfa-guest) on our host: tests/guests/rust-cases.

The round trip, its concurrency and its cancellation at every point run for both
languages in examples/round-trip; these check what only the cases guest shows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

import trio_isyswasfa
from trio_isyswasfa.testing import assert_quiet

pytestmark = [pytest.mark.guest]

HERE = Path(__file__).resolve().parent / "guests" / "rust-cases"
CASES = "test:rust-cases/cases"


class FakeHost:
    """The guest's `test:rust-cases/host` import, recording what the guest did."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.noted = trio.Event()
        self.forever_cancelled = trio.Event()

    def note(self, s: str) -> None:
        self.notes.append(s)
        self.noted.set()

    async def echo_later(self, s: str, ms: int) -> str:
        await trio.sleep(ms / 1000)
        return s

    async def forever(self) -> str:
        try:
            await trio.sleep_forever()
        finally:
            self.forever_cancelled.set()

    def imports(self) -> dict[str, dict[str, object]]:
        return {
            "test:rust-cases/host": {
                "note": self.note,
                "echo-later": self.echo_later,
                "forever": self.forever,
            }
        }


@pytest.fixture(scope="session")
def rust_cases_component(
    isyswasfa_build_rust: Callable[..., trio_isyswasfa.Component],
) -> trio_isyswasfa.Component:
    return isyswasfa_build_rust(HERE / "wit", "rust-cases", HERE)


@pytest.fixture
def host() -> FakeHost:
    return FakeHost()


@pytest.fixture
async def cases(
    rust_cases_component: trio_isyswasfa.Component, host: FakeHost
) -> AsyncIterator[trio_isyswasfa.Instance]:
    async with trio_isyswasfa.open_instance(rust_cases_component, imports=host.imports()) as inst:
        yield inst


async def test_sync_export_passes_through(cases: trio_isyswasfa.Instance) -> None:
    assert await cases.call(CASES, "add", 2, 3) == 5


async def test_export_that_finishes_at_once_needs_no_poll(cases: trio_isyswasfa.Instance) -> None:
    assert await cases.call(CASES, "immediate", "abc") == "ABC"
    assert cases.statistics().poll_calls == 0


async def test_pending_round_trip_through_the_host(cases: trio_isyswasfa.Instance) -> None:
    assert await cases.call(CASES, "echo-via-host", "hi", 5) == "hi"
    assert_quiet(cases)


async def test_spawned_task_outlives_the_call(
    cases: trio_isyswasfa.Instance, host: FakeHost
) -> None:
    assert await cases.call(CASES, "spawn-then-note", 20) == "returned"
    assert host.notes == []  # the call returned before the spawned task finished
    with trio.fail_after(5):
        await host.noted.wait()
    assert host.notes == ["spawned task done"]


async def test_many_calls_overlap_and_cancel_cleanly(
    cases: trio_isyswasfa.Instance, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        for ms in range(1, 51):
            nursery.start_soon(cases.call, CASES, "sleep-ms", ms)
    assert trio.current_time() < 1  # 50 calls of at most 50 ms each, all at once
    with trio.move_on_after(0.05) as scope:
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(cases.call, CASES, "sleep-ms", 60_000)
    assert scope.cancelled_caught
    stats = cases.statistics()
    assert stats.cancels_sent == stats.cancels_confirmed == 50
    assert_quiet(cases)


async def test_guest_timeout_cancels_the_host_call(
    cases: trio_isyswasfa.Instance, host: FakeHost
) -> None:
    assert await cases.call(CASES, "import-with-timeout", 30) == "timed out"
    # a dropped future's cancellation is confirmed in the background (drop cannot
    # wait), so the call may return before the host's task has ended
    with trio.fail_after(5):
        await host.forever_cancelled.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert_quiet(cases)


async def test_panic_is_a_trap_carrying_its_message(
    rust_cases_component: trio_isyswasfa.Component,
) -> None:
    """The panic's message reaches the caller's GuestTrap (isyswasfa:isyswasfa/trap),
    and stderr too; the instance is dead afterwards."""
    written: list[bytes] = []
    wasi = trio_isyswasfa.WasiConfig(stderr=written.append)
    async with trio_isyswasfa.open_instance(
        rust_cases_component, imports=FakeHost().imports(), wasi=wasi
    ) as inst:
        with pytest.raises(trio_isyswasfa.GuestTrap) as trapped:
            await inst.call(CASES, "fail", "boom at the guest")
        with pytest.raises(trio_isyswasfa.InstanceDead, match="boom at the guest"):
            await inst.call(CASES, "add", 1, 2)
    message = str(trapped.value)
    assert "boom at the guest" in message
    assert "panicked at tests/guests/rust-cases/src/lib.rs:" in message
    assert "unreachable" in message  # and the wasm trap it became
    assert b"boom at the guest" in b"".join(written)
