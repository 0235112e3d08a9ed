"""The behaviours both guest libraries promise, run once per guest language.

The Python test guest (tests/guests/cases, ``test:cases``) and the Rust one
(tests/guests/rust-cases, ``test:rust-cases``, a subset with the same names) meet the
same host here; what only one language shows stays in test_guest_python.py and
test_guest_rust.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from conftest import GUESTS, LANGUAGES, CasesHost

import trio_isyswasfa
from trio_isyswasfa.testing import assert_quiet, settle

pytestmark = [pytest.mark.guest, pytest.mark.slow]


@dataclass(frozen=True)
class CasesGuest:
    """One language's test guest: its component and interface names."""

    component: trio_isyswasfa.Component
    package: str

    @property
    def cases(self) -> str:
        return f"{self.package}/cases"

    @property
    def host(self) -> str:
        return f"{self.package}/host"

    def open(self, host: CasesHost, **kw: Any) -> Any:
        return trio_isyswasfa.open_instance(self.component, imports=host.imports(self.host), **kw)


@pytest.fixture(scope="module", params=LANGUAGES)
def guest(
    request: pytest.FixtureRequest,
    isyswasfa_build_python: Callable[..., trio_isyswasfa.Component],
    isyswasfa_build_rust: Callable[..., trio_isyswasfa.Component],
) -> CasesGuest:
    """The test guest in each language, built once per session (cached on its sources)."""
    if request.param == "rust":
        crate = GUESTS / "rust-cases"
        return CasesGuest(
            isyswasfa_build_rust(crate / "wit", "rust-cases", crate), "test:rust-cases"
        )
    cases: Path = GUESTS / "cases"
    component = isyswasfa_build_python(cases / "wit", "cases-guest", "app", [cases / "src"])
    return CasesGuest(component, "test:cases")


@pytest.fixture
def host() -> CasesHost:
    return CasesHost()


@dataclass
class Cases:
    """An open instance of the test guest; ``call(name, *args)`` calls its ``cases``."""

    instance: trio_isyswasfa.Instance
    iface: str

    async def call(self, name: str, *args: Any) -> Any:
        return await self.instance.call(self.iface, name, *args)


@pytest.fixture
async def cases(guest: CasesGuest, host: CasesHost) -> AsyncIterator[Cases]:
    async with guest.open(host) as inst:
        yield Cases(inst, guest.cases)
        await settle(inst)
        assert_quiet(inst)


async def test_sync_export(cases: Cases) -> None:
    assert await cases.call("add", 2, 3) == 5


async def test_export_that_finishes_at_once_needs_no_poll(cases: Cases) -> None:
    assert await cases.call("immediate", "abc") == "ABC"
    assert cases.instance.statistics().poll_calls == 0


async def test_pending_export_returns_value(cases: Cases) -> None:
    assert await cases.call("sleep-ms", 5) == 5


async def test_import_awaited_by_guest(cases: Cases) -> None:
    assert await cases.call("echo-via-host", "hi", 5) == "host saw hi"


class _DriverSteps(trio.abc.Instrument):
    """Counts the trio task steps of the scheduler's driver (``Scheduler.run``)."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("Scheduler.run"):
            self.steps += 1


async def test_the_import_task_polls_the_guest_itself(cases: Cases) -> None:
    # a pending round trip through a host import polls the guest twice: the empty poll
    # that collects its `listen`, then the one delivering the import's result. The
    # import's task does both while the driver sleeps: the first in its first step,
    # before its work (the caller's poke leaves the driver asleep for it), the second
    # in its last. Waking the driver for either cost a task step and a pass of trio's
    # loop more (1 driver step per round trip with the first left to the driver, 2 with
    # both; a guest that yields its time slice on a loaded machine may add a few)
    for _ in range(3):  # (the guest's first calls finish initialising it)
        await cases.call("echo-via-host", "hi", 0)
    driver = _DriverSteps()
    trio.lowlevel.add_instrument(driver)
    try:
        for _ in range(20):
            assert await cases.call("echo-via-host", "hi", 0) == "host saw hi"
    finally:
        trio.lowlevel.remove_instrument(driver)
    assert driver.steps <= 10


async def test_an_import_that_raises_ends_the_instance_with_its_error(
    guest: CasesGuest, host: CasesHost
) -> None:
    # the host task leaves its cancel scope by hand: an error of the import's own is no
    # cancellation, and propagates as it did through a `with`
    async def failing(s: str, ms: int) -> str:
        await trio.lowlevel.checkpoint()
        raise ValueError(f"the import failed on {s}")

    imports = host.imports(guest.host)
    imports[guest.host]["echo-later"] = failing
    with pytest.raises(BaseExceptionGroup) as info:
        async with trio_isyswasfa.open_instance(guest.component, imports=imports) as inst:
            await inst.call(guest.cases, "echo-via-host", "x", 0)
    assert info.group_contains(ValueError, match="the import failed on x")


async def test_spawned_task_outlives_the_call(
    cases: Cases, host: CasesHost, mock_clock: trio.testing.MockClock
) -> None:
    # trio's clock stands still until the test moves it, so the spawned task's 20 ms
    # cannot pass while the call returns, however loaded the machine (it raced on the
    # real clock at load 17)
    assert await cases.call("spawn-then-note", 20) == "returned"
    assert host.notes == []  # the call returned before the spawned task finished
    mock_clock.autojump_threshold = 0
    with trio.fail_after(5):
        await host.noted.wait()
    assert host.notes == ["spawned task done"]


async def test_many_calls_overlap_and_cancel_cleanly(
    cases: Cases, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        for ms in range(1, 51):
            nursery.start_soon(cases.call, "sleep-ms", ms)
    assert trio.current_time() < 1  # 50 calls of at most 50 ms each, all at once
    with trio.move_on_after(0.05) as scope:
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(cases.call, "sleep-ms", 60_000)
    assert scope.cancelled_caught
    stats = cases.instance.statistics()
    assert stats.cancels_sent == stats.cancels_confirmed == 50
    assert await cases.call("sleep-ms", 1) == 1  # and the instance still works


@pytest.mark.timeout(30, func_only=True)
@pytest.mark.parametrize("ms", [30, 0], ids=["after-30-ms", "in-the-starting-step"])
async def test_guest_cancelling_an_import_cancels_the_trio_task(
    guest: CasesGuest, host: CasesHost, ms: int
) -> None:
    # if the host never cancels the import, the guest waits for it forever: our own
    # deadline turns that into a failure (a generous one: a first call into a Python
    # guest took over 5 s at a load of 21), and the short grace lets the call give up.
    # With 0 the guest abandons the await in the step that started it, before the host
    # has answered its `listen` with the cancel handle, and no other event for it is
    # due: the host must still send it that handle, or both would wait forever.
    async with guest.open(host, cancel_grace=0.5) as inst:
        with trio.fail_after(30):
            assert await inst.call(guest.cases, "import-with-timeout", ms) == "timed out"
            # a dropped Rust future's cancellation is confirmed in the background (drop
            # cannot wait), so the call may return before the host's task has ended
            await host.forever_cancelled.wait()
        await settle(inst)
        assert_quiet(inst)


async def test_guest_failure_is_a_trap_and_kills_the_instance(guest: CasesGuest) -> None:
    # a Python exception, a Rust panic
    async with guest.open(CasesHost()) as inst:
        with pytest.raises(trio_isyswasfa.GuestTrap):
            await inst.call(guest.cases, "fail", "boom")
        with pytest.raises(trio_isyswasfa.InstanceDead):
            await inst.call(guest.cases, "add", 1, 2)


async def test_autojump_clock_drives_guest_time(
    guest: CasesGuest, autojump_clock: trio.testing.MockClock
) -> None:
    # a sleep on a clock other than trio's would run into the test's time limit
    async with guest.open(CasesHost()) as inst:
        start = trio.current_time()
        assert await inst.call(guest.cases, "sleep-ms", 3_600_000) == 3_600_000
        assert trio.current_time() - start >= 3600  # the hour passed, on the virtual clock
