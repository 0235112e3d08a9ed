"""The event-loop side of the isyswasfa protocol, on anyio's trio-shaped API.

One :class:`Scheduler` per component instance. It owns the protocol core, the
per-poll-function input queues and a task group in which every host task (an async
import the embedder implements, or a wait on a pollable) runs in a task of its own
that it can be cancelled in alone: an import in a worker task reused from one import
to the next (:class:`_HostWorker`), a wait on a stream in a task per stream. Waits
that end at a known time (a clock pollable) start no task: they share one timer, set
to the earliest of them, so 10,000 guest tasks sleeping cost one trio deadline and a
heap entry each. A driver task delivers events
to the guests' poll exports whenever something happened. All calls into wasm happen
on the event-loop thread, between checkpoints, so they never overlap.
"""

from __future__ import annotations

import heapq
import math
import sys
from collections.abc import Awaitable, Callable, Hashable
from contextvars import copy_context
from typing import Any

import anyio
import anyio.abc

from ._engine import lift_outputs, lower_inputs, own
from ._errors import GuestProtocolError, InstanceDead, InternalError, IsyswasfaError
from ._park import (
    Scope,
    TaskGroup,
    Waiter,
    cancel_scope,
    checkpoint_of,
    clock_of,
    open_task_group,
    running_trio,
    sleep_forever_of,
)
from ._protocol import (
    Action,
    CancelHostWork,
    Deliver,
    InCancel,
    InListening,
    InReady,
    OutCancelComplete,
    OutListen,
    PollInput,
    PollOutput,
    ProtocolCore,
    Task,
    TaskState,
)


class _SharedWait:
    """One host task waiting on a source for every wait on it: guest tasks' waits
    (``reps``) and blocking polls (``listeners``, events set when it ends)."""

    __slots__ = ("listeners", "reps", "scope")

    def __init__(self) -> None:
        self.reps: set[int] = set()
        self.listeners: set[anyio.Event] = set()
        self.scope = anyio.CancelScope()


class _HostWorker(Waiter):
    """A task that runs host imports (:meth:`Scheduler.start_host_task`), one at a
    time, each until it ends, then waits in the idle pool for the next.

    Spawning a trio task and entering and leaving a cancel scope per import cost
    more than the rest of the host's part in trio of a pending round trip: a worker
    is woken instead (a reschedule), and its cancel scope lasts until the guest
    cancels an import it runs. The scope is cancelled only while the work runs
    (``state`` :data:`_WORKING`); a cancellation that comes earlier (in the round the
    worker does first, or before it wakes) waits for the work to begin and cancels it
    then, as the scope entered already cancelled did for a task of its own.
    """

    __slots__ = ("job", "scope", "state", "work")

    def __init__(self, on_trio: bool) -> None:
        super().__init__(on_trio)
        self.job: Task | None = None  # the protocol task of the import it runs
        self.work: Awaitable[Any] | None = None  # handed over, not yet begun
        self.scope: Scope | None = None  # entered while not None
        self.state = 0  # _WORKING or _CANCEL_DUE, with _SCOPE_CANCELLED; or 0

    def renew_scope(self) -> None:
        """Enter a fresh cancel scope."""
        self.scope = scope = cancel_scope(self._trio is True)
        scope.__enter__()
        self.state &= ~_SCOPE_CANCELLED

    def leave_scope(self) -> None:
        """Leave the scope (the worker ends)."""
        scope = self.scope
        if scope is not None:
            self.scope = None
            scope.__exit__(None, None, None)

    def begin(self) -> Awaitable[Any]:
        """The work handed over, which begins now (cancelled at once if the guest
        asked for it already)."""
        work = self.work
        assert work is not None
        self.work = None
        if self.state & _CANCEL_DUE:
            assert self.scope is not None
            self.scope.cancel()
            self.state = _WORKING | _SCOPE_CANCELLED
        else:
            self.state = _WORKING
        return work

    def end_job(self) -> None:
        """The work ended: no cancellation reaches the worker's scope any more, and a
        scope cancelled for work that ended all the same is replaced. (Only the worker
        cancels its scope, which has no deadline: its own flag says whether it did,
        where trio's ``cancel_called`` reads the clock.)"""
        self.job = None
        cancelled = self.state & _SCOPE_CANCELLED
        self.state = 0
        if cancelled and self.scope is not None:
            self.leave_scope()
            self.renew_scope()

    def cancel_job(self, rep: int) -> None:
        """The guest asked to cancel import ``rep``: cancel it if this worker still has
        it (at once if its work runs, else as it begins)."""
        job = self.job
        if job is None or job.rep != rep:
            return  # its work has ended
        if self.state & _WORKING:
            assert self.scope is not None
            self.scope.cancel()
            self.state |= _SCOPE_CANCELLED
        else:
            self.state = _CANCEL_DUE


_WORKING = 1
_CANCEL_DUE = 2
_SCOPE_CANCELLED = 4  # (a bit beside either: the worker has cancelled its scope)
# Idle workers kept on trio (elsewhere a worker ends with its work). A fan-out's imports
# all run at once, so fewer kept than a fan-out's width cost a task spawn (as each import
# begins) and a task exit (as it ends) for every import over it, each time: with 16, a
# 100-URL hash-all spawned and ended ~84 tasks a request, ~6% of its instructions. 128
# covers HttpClient's default of 100 connections per origin; a parked worker (a trio
# task, its frame, a cancel scope) holds 2.5-4 KB (tracemalloc), so an instance keeps at
# most ~0.5 MB of them after a wider fan-out, whose imports over 128 still spawn.
_MAX_IDLE_WORKERS = 128


_CANCELLED: Any = object()  # a host task's work that its own scope cancelled

LISTENING_DELAY = 0.002
"""Seconds a ``listening`` input may wait to ride along with a guest's next poll
before it is delivered on its own (see :meth:`Scheduler.apply`)."""


def close_unstarted(work: object) -> None:
    """Close a host import's work that will never run, if it can be closed (a coroutine,
    or one in a class such as http's request outcome): no "never awaited" warning, and
    nothing it began at its call (a request written) is kept."""
    close = getattr(work, "close", None)
    if close is not None:
        close()


class Scheduler:
    """Routes isyswasfa events between host tasks and the guests' poll functions."""

    def __init__(
        self,
        handle_rep: Callable[[Any], int],
        *,
        cancel_grace: float = 10.0,
        max_tasks: int | None = None,
        own_handle: Callable[[int, int], Any] = own,
        events_as_values: bool = False,
    ) -> None:
        """``handle_rep`` and ``own_handle`` are the engine's (its handles to reps and
        back); ``events_as_values``: the engine lowers poll events as they are (our own
        engine: their ``tag`` and ``payload`` make them ``poll-input`` values, and its
        handles are reps), so none is converted."""
        self.core = ProtocolCore(max_tasks=max_tasks)
        self.cancel_grace = cancel_grace
        self._handle_rep = handle_rep  # the engine's: a guest's handle to its rep
        self._own_handle = own_handle  # the engine's: a rep to an owned handle
        self._events_as_values = events_as_values
        self._polls: list[Any] = []
        self._inputs: dict[int, list[PollInput]] = {}
        self._urgent: set[int] = set()  # poll indexes with inputs that must go out now
        self._dirty: set[int] = set()  # poll indexes whose guest ran since its last poll
        self._all: frozenset[int] = frozenset()  # every poll index
        self._wake = Waiter(None)  # the driver's: set when something happened
        self._driver_idle = False  # the driver waits on `_wake`, in no round
        self._rounding = False  # a host task does the driver's round (see _finish_host_work)
        self._quiet = False  # `apply` leaves the driver asleep: its caller does the round
        # when the inputs that wait to ride along must go out on their own (the timer
        # task sees to it; math.inf: none waits)
        self._flush_due = math.inf
        self._waiters: dict[int, Waiter] = {}  # host callers of guest tasks, by rep
        self._on_trio = True  # (known once running)
        self._now = anyio.current_time  # the event loop's clock (trio's, once known)
        self._host_running = 0  # host tasks (each with its cancel scope) running
        self._fresh = 0  # of them, those that have not taken their first step
        self._host_labels: dict[str, int] = {}  # how many of them run, by label
        self._idle_workers: list[_HostWorker] = []  # host workers waiting for work
        self._max_idle = 0  # (known once running: only on trio)
        self._tg: TaskGroup | None = None
        self.failure: BaseException | None = None
        self._failed: anyio.Event | None = None  # made when someone waits for a failure
        self.calls_in_flight = 0
        self.poll_calls = 0
        self.host_tasks_started = 0
        self.timer_wakeups = 0
        # waits that end at a known time: a heap of (deadline, rep) entries; `_timed`
        # maps the live ones to their entry (a cancelled one stays in the heap until it
        # is due, and is told apart by identity: no sequence number per wait)
        self._timers: list[tuple[float, int]] = []
        self._timed: dict[int, tuple[float, int]] = {}
        self._timer_scope: Scope | None = None
        # waits on one source (a stream, a pipe's side) share one host task
        self._shared: dict[Hashable, _SharedWait] = {}
        self._shared_of: dict[int, _SharedWait] = {}
        # waits a blocking poll left behind, kept for the next poll (most poll the same
        # streams again): cancelled by the next poll that does not want them
        self._idle: dict[Hashable, _SharedWait] = {}
        self.counts: dict[str, int] = {"listen": 0, "cancel-sent": 0, "cancel-complete": 0}
        self.observer: Callable[[str], object] | None = None

    def set_polls(self, polls: list[Any]) -> None:
        """The poll export of every (sub)component, in a fixed order."""
        self._polls = polls
        self._dirty = set()  # nothing has run in a guest yet
        self._all = frozenset(range(len(polls)))

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Drive the guests until cancelled. Guest failures end the loop, not the group."""
        self._on_trio = running_trio()
        self._now = clock_of(self._on_trio)
        self._max_idle = _MAX_IDLE_WORKERS if self._on_trio else 0
        try:
            async with open_task_group(self._on_trio) as tg:
                self._tg = tg
                tg.start_soon(self._run_timers)
                task_status.started()
                checkpoint = checkpoint_of(self._on_trio)
                try:
                    while self.failure is None:
                        if self._rounding or not self._has_work():
                            # (with `_rounding`, a host task is doing a round: it wakes
                            # the driver if it leaves work)
                            self._driver_idle = True
                            try:
                                await self._wake.wait()
                            finally:
                                self._driver_idle = False
                            continue
                        await self._round()
                        if self._has_work():
                            # let the others run between rounds; with nothing to do, the
                            # wait above is the driver's yield (no step of its own for a
                            # checkpoint when the round found nothing more)
                            await checkpoint()
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self.close()
            # the timer and the shared waits' tasks are gone: so are the waits they served
            self._timers.clear()
            self._timed.clear()
            self._shared_of.clear()
            self._idle.clear()
            self._idle_workers.clear()
            self._polls = []  # (they hold the engine's instance)

    def _has_work(self) -> bool:
        return bool(self._urgent or self._dirty)

    def deliver_held(self) -> bool:
        """Send now the inputs that wait to ride along with a guest's next poll (see
        :meth:`apply`); whether there were any. For a test that lets an instance settle
        without letting time pass (:func:`trio_isyswasfa.testing.settle`)."""
        if not self._inputs:
            return False
        self._urgent.update(self._inputs)
        self._wake.set()
        return True

    def poke(self) -> None:
        """Something happened inside a guest (an export ran): poll every guest soon.

        If a host task is about to take its first step (an import the guest just
        called), the driver is left asleep: that task does the round first (see
        :meth:`_first_round`), in the same pass of trio's loop as the driver would,
        one task step fewer."""
        self._dirty.update(self._all)
        if not self._fresh:
            self._wake.set()

    async def _round(self) -> None:
        """Call each poll function that has input or may have buffered output, once."""
        for idx, func in enumerate(self._polls):
            if idx not in self._urgent and idx not in self._dirty:
                continue
            inputs = self._inputs.pop(idx, None)
            self._urgent.discard(idx)
            self._dirty.discard(idx)
            try:
                self.poll_calls += 1
                if inputs is None:
                    values: list[Any] = []
                elif self._events_as_values:
                    values = inputs
                else:
                    values = lower_inputs(inputs, self._own_handle)
                outputs = await func.call(values)
                if not outputs:
                    actions: list[Action] = []
                elif self._events_as_values:
                    actions = self._take_outputs(idx, outputs)
                else:
                    actions = self._take_events(idx, lift_outputs(outputs, self._handle_rep))
            except IsyswasfaError as exc:
                self.fail(exc)
                return
            self.apply(actions)
            if not self._inputs and self._flush_due != math.inf:
                self._flush_due = math.inf  # nothing waits to ride along any more
                scope = self._timer_scope
                if scope is not None:  # (no step of the timer's for nothing)
                    scope.deadline = self._timers[0][0] if self._timers else math.inf
            if (inputs or outputs) and len(self._polls) > 1:
                # guest code ran: in a composition it may have called another guest
                self._dirty.update(self._all)
                self._dirty.discard(idx)

    def _take_outputs(self, idx: int, outputs: list[Any]) -> list[Action]:
        """What the core makes of the poll outputs of guest ``idx``, as our own engine
        lifts them: ``poll-output`` variants whose records have the fields of our
        events and whose handles are reps, so they go to the core as they are (no
        event record, no handle conversion per output)."""
        core = self.core
        actions: list[Action] = []
        for value in outputs:
            tag = value.tag
            payload = value.payload
            if tag == "listen":
                actions += core.output_listen(idx, payload.state, payload.pending)
                self.counts["listen"] += 1  # (`_observe`, inline: once a round trip)
                if self.observer is not None:
                    self.observer("listen")
            elif tag == "ready":
                actions += core.output_ready(idx, payload.state, payload.ready)
            elif tag == "pending":
                actions += core.output_pending(idx, payload.state, payload.cancel)
            elif tag == "cancel":
                actions += core.output_cancel(idx, payload)
            elif tag == "cancel-complete":
                actions += core.output_cancel_complete(idx, payload)
                self._observe("cancel-complete")
            else:  # pragma: no cover (the engine lifts only the WIT type's cases)
                raise InternalError(f"unknown poll output {tag!r}")
        return actions

    def _take_events(self, idx: int, events: list[PollOutput]) -> list[Action]:
        """What the core makes of the poll outputs of guest ``idx`` as events (the
        wasmtime-py engine's values, converted)."""
        handle_output = self.core.handle_output
        actions: list[Action] = []
        for event in events:
            actions += handle_output(idx, event)
            kind = event.__class__
            if kind is OutListen:
                self._observe("listen")
            elif kind is OutCancelComplete:
                self._observe("cancel-complete")
        return actions

    def _observe(self, kind: str) -> None:
        self.counts[kind] += 1
        if self.observer is not None:
            self.observer(kind)

    def apply(self, actions: list[Action]) -> None:
        """Carry out what the core decided."""
        for action in actions:
            if isinstance(action, Deliver):
                event = action.event
                queued = self._inputs.get(action.poll)
                if queued is None:
                    self._inputs[action.poll] = [event]
                else:
                    if event.__class__ is InReady:
                        self._withdraw_listening(queued, event)
                    queued.append(event)
                # `listening` only hands over a cancel handle: it rides along with the
                # guest's next poll (the host work's `ready`, mostly), saving the guest
                # an entry. But the guest may have given up the await already, in the
                # very run that emitted its `listen` (a timeout that fired in the
                # same step), and waits for that handle to cancel it: so it goes out
                # on its own if nothing else polls the guest within LISTENING_DELAY.
                if event.__class__ is not InListening:
                    self._urgent.add(action.poll)
                    if not self._quiet:
                        self._wake.set()
                    if event.__class__ is InCancel:
                        self._observe("cancel-sent")
                elif self._flush_due == math.inf:
                    self._flush_after(LISTENING_DELAY)
            elif isinstance(action, CancelHostWork):
                worker = action.work  # a host task's worker (see start_host_task)
                if worker is not None:
                    worker.cancel_job(action.rep)
                elif action.rep in self._shared_of:
                    self._leave_shared_wait(action.rep)
                elif self._timed.pop(action.rep, None) is not None:
                    self._forget_cancelled_timers()
                    self.apply(self.core.host_work_finished(action.rep, None, cancelled=True))
            else:  # WakeHostCaller
                waiter = self._waiters.get(action.rep)
                if waiter is not None:
                    waiter.set()

    def _withdraw_listening(self, queued: list[PollInput], ready: InReady) -> None:
        """Leave out of ``queued`` the ``listening`` that ``ready`` answers, if it is
        there and may be (host work that ended before its ``listening`` went out,
        :meth:`ProtocolCore.withdraw_listening`): the guest gets no cancel handle it
        would only drop, one call into the host and one input fewer per import that
        ends within the ride-along delay."""
        rep = ready.ready
        for i, event in enumerate(queued):
            if (
                event.__class__ is InListening
                and event.cancel == rep
                and event.state == ready.state
            ):
                if self.core.withdraw_listening(rep):
                    del queued[i]
                return

    def fail(self, exc: BaseException) -> None:
        """The instance is dead: wake every host caller so it can raise."""
        if self.failure is None:
            self.failure = exc
        for waiter in self._waiters.values():
            waiter.set()
        self._wake.set()
        if self._failed is not None:
            self._failed.set()

    def close(self) -> None:
        """The instance is closing: every caller parked on a guest task (one outside
        its ``async with`` is never woken by the guest again) and every call made from
        now on raises :class:`InstanceDead`."""
        if self.failure is None:
            self.fail(InstanceDead("the instance was closed"))

    async def wait_failed(self) -> None:
        """Return once the instance has failed (for work that outlives a call, such as
        a response body the guest is still writing)."""
        if self.failure is not None:
            return
        if self._failed is None:
            self._failed = anyio.Event()
        await self._failed.wait()

    def check_alive(self) -> None:
        """Raise if the instance has failed."""
        if self.failure is not None:
            raise InstanceDead(
                f"the component instance has failed: {self.failure}"
            ) from self.failure

    # -- host tasks ---------------------------------------------------------------------
    def spawn(self, fn: Callable[[], Awaitable[Any]]) -> None:
        """Run ``fn`` in the instance's task group, outside the isyswasfa protocol
        (work a WASI 0.2 host function starts, such as sending an HTTP request); it is
        cancelled when the instance ends."""
        if self._tg is None:
            raise InstanceDead("the instance is not running")

        async def run() -> None:
            await fn()

        self._tg.start_soon(run, name="isyswasfa host work")

    def start_host_task(self, label: str, work: Awaitable[Any]) -> int:
        """Await ``work`` as a host task; return the rep of its ``pending`` handle.

        It runs in a worker task of the instance's task group (see
        :class:`_HostWorker`): an idle one if there is one, else a new one. Either
        way it runs in a copy of the caller's context, as a task spawned here would."""
        if self._tg is None:
            raise InstanceDead("the instance is not running")
        # the worker is the protocol task's value until the work ends (no table of
        # workers or scopes: an entry per pending import)
        task = self.core.new_host_task_record(label)
        idle = self._idle_workers
        reused = False
        if idle:
            context = copy_context()
            while idle:
                worker = idle.pop()
                # (an idle worker whose wait the instance's end cancelled stays in the
                # pool until it runs its clean-up: it takes no more work)
                if worker.wake_in(context):
                    reused = True
                    break
        if not reused:
            worker = _HostWorker(self._on_trio)
        task.value = worker
        worker.job = task
        worker.work = work
        self.host_tasks_started += 1
        self._host_running += 1
        self._fresh += 1
        self._host_labels[label] = self._host_labels.get(label, 0) + 1
        if not reused:
            # (one name for all: a name of its own per task is memory each of them holds)
            self._tg.start_soon(self._run_worker, worker, name="isyswasfa host task")
        return task.rep

    async def _run_worker(self, worker: _HostWorker) -> None:
        # Every pending host import holds this coroutine and the frame object trio
        # makes of it, each as large as the frame's locals and stack: so few locals
        # (the result goes into ``work``), the scope entered and left by hand (a
        # ``with`` holds a bound ``__exit__`` and needs more stack slots for its
        # clean-up), and the rest in plain methods.
        worker.renew_scope()
        try:
            task = worker.job
            while task is not None:
                self._fresh -= 1  # (its first step)
                if self._driver_idle and (self._urgent or self._dirty):
                    await self._first_round(task, worker)
                work = worker.begin()
                try:
                    work = await work
                except BaseException:
                    work = self._host_task_raised(worker, task)
                await self._host_task_ended(worker, task, work)
                task = None
                if self._park_worker(worker):
                    await worker.wait()
                    task = worker.job
        except BaseException:
            self._worker_failed(worker)
            raise
        worker.leave_scope()

    def _park_worker(self, worker: _HostWorker) -> bool:
        """Whether ``worker``, its job done, waits for another (in the idle pool) rather
        than ending. Only on trio, where a woken worker takes on its job's context."""
        if len(self._idle_workers) >= self._max_idle or self.failure is not None:
            return False
        self._idle_workers.append(worker)
        return True

    def _worker_failed(self, worker: _HostWorker) -> None:
        """A worker ends with an exception (the instance's end, mostly; or its work's
        own): leave its scope with it, and give up a job it was handed and never
        started."""
        if worker in self._idle_workers:
            self._idle_workers.remove(worker)
        if worker.work is not None and worker.job is not None:  # (handed over, not begun)
            self._fresh -= 1
            self._host_task_gone(worker.job)
            close_unstarted(worker.work)
            worker.work = worker.job = None
        scope = worker.scope
        if scope is not None:
            worker.scope = None
            exc = sys.exception()
            assert exc is not None
            if scope.__exit__(type(exc), exc, exc.__traceback__):
                raise InternalError("a host worker's scope caught what it was not cancelled for")

    async def _first_round(self, task: Task, worker: _HostWorker) -> None:
        """The round a host task does in its first step, before its work, if the
        driver sleeps and :meth:`poke` left it work (see there), as the driver would:
        the guest may cancel the import in this very round, which must not abandon the
        poll, so the worker's scope is cancelled only once the work begins
        (:meth:`_HostWorker.cancel_job`); only the instance's end cancels the round."""
        if self._rounding or self.failure is not None:
            return
        self._rounding = True
        try:
            await self._round()
        except BaseException:  # (the instance's end, or a bug of ours)
            self._host_task_gone(task)
            close_unstarted(worker.work)
            worker.work = worker.job = None
            raise
        finally:
            self._rounding = False
            if self._urgent or self._dirty:
                self._wake.set()  # the driver does what follows

    def _host_task_raised(self, worker: _HostWorker, task: Task) -> Any:
        """The host task's work raised (the exception being handled): if the worker's
        scope caught it (a cancellation the guest asked for), :data:`_CANCELLED` (the
        worker goes on in a fresh scope); otherwise it propagates (and ends the
        instance's task group)."""
        exc = sys.exception()
        assert exc is not None
        worker.job = None
        scope = worker.scope
        assert scope is not None
        worker.scope = None
        try:
            swallowed = scope.__exit__(type(exc), exc, exc.__traceback__)
        except BaseException:  # (trio's scope exit raised: the task is gone all the same)
            self._host_task_gone(task)
            raise
        if swallowed:
            worker.renew_scope()
            return _CANCELLED
        self._host_task_gone(task)
        raise  # (the exception being handled, as a `with` would)

    def _host_task_ended(self, worker: _HostWorker, task: Task, value: Any) -> Awaitable[None]:
        """The host task is done (with ``value``, or :data:`_CANCELLED`), and what to
        await to report it. A scope cancelled for work that ended all the same is
        replaced (it would cancel what the worker does next)."""
        worker.end_job()
        # (`self._host_task_gone(task)`, inline: once an import)
        self._host_running -= 1
        label = task.label
        left = self._host_labels[label] - 1
        if left:
            self._host_labels[label] = left
        else:
            del self._host_labels[label]
        task.value = None  # (the worker)
        if value is _CANCELLED:
            actions = self.core.host_work_finished(task.rep, None, cancelled=True)
        else:
            actions = self.core.host_work_finished(task.rep, value)
        return self._finish_host_work(actions)

    def _host_task_gone(self, task: Task) -> None:
        self._host_running -= 1
        left = self._host_labels[task.label] - 1
        if left:
            self._host_labels[task.label] = left
        else:
            del self._host_labels[task.label]

    async def _finish_host_work(self, actions: list[Action]) -> None:
        """Carry out ``actions``, which a host-side task decided as its work ended; if
        they leave the driver work while it sleeps, do its round here.

        The task is running already, so its round costs no more of trio than the
        actions themselves: waking the driver for it would cost a task step and a pass
        of trio's run loop more, a tenth of a pending round trip's host time. Only
        the instance's end cancels the task now that its work is done (its own cancel
        scope is behind it), so no cancellation abandons a poll in the middle of the
        guest that the driver would not abandon too. It does one round, as the driver
        does between checkpoints, and leaves what follows to the driver.

        Not while other host tasks still run: many may end in one batch of trio's
        (a crowd of imports due together), and each would poll the guest on its own;
        woken once, the driver delivers them all in one round.
        """
        if (
            not self._driver_idle
            or self._rounding
            or self._host_running
            or self.failure is not None
        ):
            self.apply(actions)
            return
        self._quiet = True
        try:
            self.apply(actions)
        finally:
            self._quiet = False
        if not (self._urgent or self._dirty):
            return
        self._rounding = True
        try:
            await self._round()
        finally:
            self._rounding = False
            if self._urgent or self._dirty:
                self._wake.set()  # the driver does what follows

    def host_scope_count(self, label: str | None = None) -> int:
        """Host work still running: tasks, and the guest waits that timed and shared
        waits stand for, which count as ``"pollable"`` (only work labelled ``label``,
        if given)."""
        if label is None:
            return self._host_running + len(self._timed) + len(self._shared_of)
        timed = len(self._timed) + len(self._shared_of) if label == "pollable" else 0
        return timed + self._host_labels.get(label, 0)

    # -- shared waits -----------------------------------------------------------------
    def start_shared_wait(self, key: Hashable, wait: Callable[[], Awaitable[None]]) -> int:
        """A pollable wait; the rep of its ``pending`` handle. Waits with the same ``key``
        (the same stream, say) share one host task running ``wait`` of the first of
        them, and all end when it does (the guests re-check their pollables)."""
        if self._tg is None:
            raise InstanceDead("the instance is not running")
        rep = self.core.new_host_task("pollable")
        shared = self._join(key, wait)
        shared.reps.add(rep)
        self._shared_of[rep] = shared
        return rep

    def _join(self, key: Hashable, wait: Callable[[], Awaitable[None]]) -> _SharedWait:
        """The shared wait on ``key``, started (running ``wait``) if there is none."""
        assert self._tg is not None
        self._idle.pop(key, None)
        shared = self._shared.get(key)
        if shared is None or shared.scope.cancel_called:  # (a cancelled one is ending)
            shared = self._shared[key] = _SharedWait()
            self.host_tasks_started += 1
            self._tg.start_soon(self._run_shared_wait, key, shared, wait, name="isyswasfa wait")
        return shared

    async def wait_sources(
        self, waits: dict[Hashable, Callable[[], Awaitable[None]]], deadline: float = math.inf
    ) -> None:
        """Return once one of ``waits`` (by source key) has ended, or at ``deadline``: a
        blocking ``poll`` on many pollables. It starts no task of its own: each source
        has one shared wait, joined by guest tasks' waits on it too. The waits it leaves
        behind keep running until the next blocking poll that does not want them, so a
        guest polling the same streams again and again starts each wait once."""
        if self._tg is None:
            raise InstanceDead("the instance is not running")
        done = anyio.Event()
        joined = [self._join(key, wait) for key, wait in waits.items()]
        for key, shared in self._idle.items():  # nobody polls them any more
            shared.scope.cancel()
            if self._shared.get(key) is shared:
                del self._shared[key]
        self._idle.clear()
        for shared in joined:
            shared.listeners.add(done)
        try:
            with anyio.CancelScope(deadline=deadline):
                await done.wait()
        finally:
            for key, shared in zip(waits, joined, strict=True):
                shared.listeners.discard(done)
                if not shared.reps and not shared.listeners and self._shared.get(key) is shared:
                    self._idle[key] = shared

    async def _run_shared_wait(
        self, key: Hashable, shared: _SharedWait, wait: Callable[[], Awaitable[None]]
    ) -> None:
        try:
            with shared.scope:
                await wait()
        finally:
            if self._shared.get(key) is shared:
                del self._shared[key]
            if self._idle.get(key) is shared:
                del self._idle[key]
        for done in shared.listeners:
            done.set()
        for rep in shared.reps:  # none if every waiter was cancelled
            del self._shared_of[rep]
            self.apply(self.core.host_work_finished(rep, None))

    def _leave_shared_wait(self, rep: int) -> None:
        shared = self._shared_of.pop(rep)
        shared.reps.discard(rep)
        if not shared.reps and not shared.listeners:
            shared.scope.cancel()  # nobody waits for it any more
        self.apply(self.core.host_work_finished(rep, None, cancelled=True))

    # -- timed waits ------------------------------------------------------------------
    def start_timed_wait(self, deadline: float) -> int:
        """A pollable wait that ends when the event loop's clock reaches ``deadline``;
        the rep of its ``pending`` handle. It shares the one timer (no task of its own)."""
        if self._tg is None:
            raise InstanceDead("the instance is not running")
        rep = self.core.new_host_task("pollable")
        self._timed[rep] = entry = (deadline, rep)
        heapq.heappush(self._timers, entry)
        scope = self._timer_scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline  # the sleeper wakes earlier
        return rep

    async def _run_timers(self) -> None:
        """Sleep until the earliest timed wait is due; finish every wait that is. It
        also sends the inputs that wait to ride along when their time is up."""
        # (trio's own clock and sleep on trio: anyio's look the backend up at every
        # call, and the timer wakes once per due wait and per flush)
        clock = self._now
        sleep_forever = sleep_forever_of(self._on_trio)
        while True:
            now = clock()
            if self._flush_due <= now:
                self._flush_due = math.inf
                if self._inputs:  # nothing polled their guests in time
                    self._urgent.update(self._inputs)
                    self._wake.set()
            timers = self._timers
            due: list[int] = []
            while timers and timers[0][0] <= now:
                entry = heapq.heappop(timers)
                rep = entry[1]
                if self._timed.get(rep) is entry:
                    del self._timed[rep]
                    due.append(rep)
            if due:
                self.timer_wakeups += 1
                actions: list[Action] = []
                for rep in due:
                    actions.extend(self.core.host_work_finished(rep, None))
                await self._finish_host_work(actions)
                continue  # (time went on during a round)
            # (trio's own scope on trio: its deadline moves twice per pending round
            # trip, for the ride-along flush, and anyio's wrapper costs on each move)
            scope = cancel_scope(self._on_trio)
            scope.deadline = min(timers[0][0] if timers else math.inf, self._flush_due)
            with scope:
                self._timer_scope = scope
                try:
                    await sleep_forever()
                finally:
                    self._timer_scope = None

    def _flush_after(self, delay: float) -> None:
        """Have the timer send the inputs waiting to ride along in ``delay`` seconds."""
        self._flush_due = due = self._now() + delay
        scope = self._timer_scope
        if scope is not None and due < scope.deadline:
            scope.deadline = due  # the sleeper wakes earlier

    def _forget_cancelled_timers(self) -> None:
        """Drop cancelled waits from the heap once they are most of it (bounded memory
        for a guest that starts and cancels long sleeps)."""
        if len(self._timers) > 64 and len(self._timers) > 2 * len(self._timed):
            live = self._timed
            self._timers = [t for t in self._timers if live.get(t[1]) is t]
            heapq.heapify(self._timers)

    # -- the host as caller -----------------------------------------------------------------
    # (The wait itself is the caller's loop, in ``Instance.call``: a coroutine of our
    # own here would be one more frame held by every pending call.)
    def host_awaits(self, rep: int) -> Waiter:
        """The host's call of an export returned the ``pending`` handle ``rep``: the
        waiter its caller parks on (``while guest_call_state(rep) is PENDING: await
        waiter.wait()``), woken when the guest task is ready or cancelled, or the
        instance fails. If the caller is cancelled it must :meth:`cancel_guest_call`
        (shielded) before ``Cancelled`` propagates; in any case it must
        :meth:`forget_waiter` at the end."""
        self.core.host_calls(rep)
        self._waiters[rep] = waiter = Waiter(self._on_trio)
        self._dirty.update(self._all)  # (`poke`, inline: once a call)
        if not self._fresh:
            self._wake.set()
        return waiter

    def guest_call_pending(self, rep: int) -> bool:
        """Whether the guest task ``rep`` the host awaits is still pending; raises
        the instance's failure (the call in flight reports what killed it)."""
        return self.guest_call_state(rep) is TaskState.PENDING

    def guest_call_state(self, rep: int) -> TaskState:
        """Where the guest task ``rep`` the host awaits is (PENDING, READY, or DONE
        when cancelled); raises the instance's failure (the call in flight reports
        what killed it). One read where the caller's wait loop and its check of the
        result took two."""
        if self.failure is not None:
            raise self.failure
        return self.core.host_call_outcome(rep)

    def guest_call_ready(self, rep: int) -> bool:
        """Whether the guest task ``rep`` ended with a result (not cancelled)."""
        return self.core.host_call_outcome(rep) is TaskState.READY

    def forget_waiter(self, rep: int) -> None:
        """The host's caller of ``rep`` is done waiting."""
        self._waiters.pop(rep, None)

    async def cancel_guest_call(self, rep: int) -> None:
        """The host's caller of ``rep`` was cancelled: ask the guest to cancel and wait
        (call it shielded) for its confirmation, at most ``cancel_grace`` seconds."""
        self.apply(self.core.cancel_host_call(rep))
        with anyio.move_on_after(self.cancel_grace) as grace:
            while self.failure is None:
                task = self.core.get(rep)
                if task is None or task.state is TaskState.DONE:
                    break
                await self._waiters[rep].wait()
        if grace.cancelled_caught:
            # an untrusted guest must not hang its host: give up on it
            self.fail(
                GuestProtocolError(
                    f"the guest did not confirm a cancellation within {self.cancel_grace} s"
                )
            )
            return
        self.core.finish_host_call(rep)
