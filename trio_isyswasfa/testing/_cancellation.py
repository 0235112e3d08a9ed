"""Cancel a guest call at each of its suspension points and check what happens."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from .._errors import IsyswasfaError
from .._host import Component, ImportImpl, Instance, InstanceStatistics, open_instance
from ..wasi import WasiConfig

Imports = Mapping[str, Mapping[str, ImportImpl]]


SETTLE_TIMEOUT = 10.0
"""How long (real seconds) :func:`settle` waits for every task to block, by default."""


def leaks(stats: InstanceStatistics, baseline: Mapping[str, int] | None = None) -> list[str]:
    """What ``stats`` shows is still alive that should not be (empty when clean).

    ``baseline`` is the WASI handle count a guest legitimately keeps between calls
    (for example a cached stdout stream); only handles beyond it count as leaks.
    """
    found = []
    if stats.calls_in_flight:
        found.append(f"{stats.calls_in_flight} call(s) still in flight")
    if stats.tasks:
        found.append(f"{stats.tasks} isyswasfa task(s) alive ({stats.isyswasfa_handles} handles)")
    if stats.host_tasks_running:
        found.append(
            f"{stats.host_tasks_running} host task(s) still running "
            f"({stats.pollables_waiting} pollable wait(s))"
        )
    base = baseline or {}
    extra = {k: v - base.get(k, 0) for k, v in stats.wasi_handles.items() if v > base.get(k, 0)}
    if extra:
        found.append(
            "WASI handles left: " + ", ".join(f"{v} {k}" for k, v in sorted(extra.items()))
        )
    return found


async def settle(instance: Instance, *, give_up_after: float = SETTLE_TIMEOUT) -> None:
    """Return once ``instance`` has finished what it has in motion, letting no time pass.

    A call may return while the guest still winds down work of its own: the Python
    guest library's loop gives up its timer's wait in the step that returns once no
    timer is left, so the call's ``ready`` and the guest's ``cancel`` leave in one
    poll; the caller wakes at once and the host confirms the cancel in a later round.
    Await this before :func:`assert_quiet` or :func:`leaks`: it waits until every task
    of the event loop is blocked, and sends at once the events that would otherwise
    wait to ride along with the guest's next poll. A real leak is still there after it
    (nothing here waits for guest time, such as a sleep that has not ended).

    Raises:
        AssertionError: the event loop was never idle within ``give_up_after`` seconds of
            real time (not the event loop's clock, which a mock clock holds still
            while a task keeps running): a host import or a guest that never blocks.
            The message names what the instance still has in motion.
    """
    done = threading.Event()  # (set: the watcher's thread returns at once)
    settling = anyio.CancelScope()

    async def watch() -> None:
        if not await anyio.to_thread.run_sync(done.wait, give_up_after, abandon_on_cancel=True):
            settling.cancel()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            with settling:
                await _settle(instance)
            # (not waiting for the thread: while it wakes the loop would be idle, and
            # an autojump clock would let guest time pass)
            tg.cancel_scope.cancel()
    finally:
        done.set()
    if settling.cancelled_caught:
        running = ", ".join(sorted(instance._sched._host_labels)) or "none"
        raise AssertionError(
            f"settle: the event loop was never idle within {give_up_after} s: "
            + "; ".join([*leaks(instance.statistics()), f"host imports running: {running}"])
        )


async def _settle(instance: Instance) -> None:
    await anyio.wait_all_tasks_blocked()
    for _ in range(SETTLE_ROUNDS):
        if not instance._sched.deliver_held():
            return
        await anyio.wait_all_tasks_blocked()


SETTLE_ROUNDS = 100
"""At most this many deliveries :func:`settle` makes (a guest that answers every
event with another one that waits to ride along must not keep it forever)."""


def assert_quiet(instance: Instance, baseline: Mapping[str, int] | None = None) -> None:
    """Fail if the instance still has tasks, handles, host work or calls in flight.

    Right after a call, :func:`settle` the instance first (the guest may still be
    confirming a cancel of its own, which is not a leak).
    """
    problems = leaks(instance.statistics(), baseline)
    if problems:
        raise AssertionError("the component left things behind: " + "; ".join(problems))


@dataclass(frozen=True)
class CheckpointResult:
    """The outcome of cancelling the call at suspension point ``point`` (1-based)."""

    point: int
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the guest handled this cancellation cleanly."""
        return not self.problems


@dataclass
class CancellationReport:
    """What :func:`check_cancellation` found, point by point."""

    call: str
    checkpoints: int
    results: list[CheckpointResult] = field(default_factory=list)

    @property
    def failures(self) -> list[CheckpointResult]:
        """The suspension points where cancellation went wrong."""
        return [r for r in self.results if not r.ok]

    def assert_ok(self) -> None:
        """Raise AssertionError naming every point that failed and how."""
        if self.checkpoints == 0:
            raise AssertionError(f"{self.call} never suspended: there is nothing to cancel")
        if self.failures:
            lines = [
                f"cancelling {self.call} went wrong at {len(self.failures)} of "
                f"{self.checkpoints} suspension point(s):"
            ]
            lines += [f"  point {r.point}: {'; '.join(r.problems)}" for r in self.failures]
            raise AssertionError("\n".join(lines))


async def check_cancellation(
    component: Component,
    interface: str,
    name: str,
    *args: Any,
    imports: Imports | Callable[[], Imports] | None = None,
    wasi: Callable[[], WasiConfig] | None = None,
    cancel_grace: float = 1.0,
) -> CancellationReport:
    """Cancel ``interface#name(*args)`` at each point where it suspends, one run each.

    A first run counts the suspension points (each pending operation the guest
    awaits, its ``listen`` events). Then, for the 1st, 2nd, … point, a fresh instance
    runs the call and the caller's scope is cancelled right after that point was
    reached. Each run checks that the caller saw the cancellation, that the guest
    received a cancel and confirmed it within ``cancel_grace`` seconds, and that no
    task, isyswasfa handle, host task or WASI handle was left behind (beyond what a
    completed call leaves).

    ``imports`` may be a callable returning fresh implementations for each run. Run
    it under ``autojump_clock`` to make guest sleeps instant and the runs deterministic.
    """
    make_imports: Callable[[], Imports] = imports if callable(imports) else (lambda: imports or {})
    make_wasi = wasi or (lambda: WasiConfig(stdout=None, stderr=None))
    label = f"{interface}#{name}" if interface else name
    async with open_instance(
        component, imports=make_imports(), wasi=make_wasi(), cancel_grace=cancel_grace
    ) as inst:
        before = inst.statistics().listens
        await inst.call(interface, name, *args)
        points = inst.statistics().listens - before
        baseline = dict(inst.statistics().wasi_handles)
    report = CancellationReport(label, points)
    for point in range(1, points + 1):
        problems = await _cancel_at(
            component,
            interface,
            name,
            args,
            point,
            make_imports(),
            make_wasi(),
            cancel_grace,
            baseline,
        )
        report.results.append(CheckpointResult(point, tuple(problems)))
    return report


async def _cancel_at(
    component: Component,
    interface: str,
    name: str,
    args: tuple[Any, ...],
    point: int,
    imports: Imports,
    wasi: WasiConfig,
    cancel_grace: float,
    baseline: Mapping[str, int],
) -> list[str]:
    problems: list[str] = []
    async with open_instance(
        component, imports=imports, wasi=wasi, cancel_grace=cancel_grace
    ) as inst:
        sched = inst._sched
        seen = 0
        with anyio.CancelScope() as scope:

            def observe(kind: str) -> None:
                nonlocal seen
                if kind == "listen":
                    seen += 1
                    if seen == point:
                        scope.cancel()

            sched.observer = observe
            try:
                await inst.call(interface, name, *args)
            except IsyswasfaError as exc:
                problems.append(f"the call failed instead: {type(exc).__name__}: {exc}")
        sched.observer = None
        # (the guest may wind down work of its own as it confirms: not a leak)
        await settle(inst)
        if not scope.cancelled_caught and not problems:
            problems.append("the call finished instead of being cancelled")
        if sched.failure is not None:
            problems.append(f"{type(sched.failure).__name__}: {sched.failure}")
        stats = inst.statistics()
        if sched.failure is None and scope.cancelled_caught:
            if stats.cancels_sent == 0:
                problems.append("no cancel ever reached the guest")
            elif stats.cancels_confirmed < stats.cancels_sent:
                problems.append("the guest did not confirm every cancel it received")
        if sched.failure is None:
            problems.extend(leaks(stats, baseline))
    return problems
