"""Task table and transitions of the isyswasfa scheduler.

One :class:`Task` stands behind the three handle kinds ``pending``, ``cancel`` and
``ready`` that name one async operation; its ``refs`` counts live handles of any kind,
whether a guest or the scheduler holds them. A task is forgotten when it is finished
and no handle names it any more.

Who is who:

* a *host task* is an async import implemented by the host, or a wait on a pollable;
* a *guest task* is an exported async call of some guest that went pending
  (created by ``make-task``);
* its *caller* is a guest awaiting it (``listen_poll``: poll index, and its
  ``listen_state``), or the host itself (the ``HOST_CALLER`` flag), or nobody yet.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._errors import GuestProtocolError, GuestTrap, HostProtocolError, InternalError
from .._records import record
from ._events import (
    InCancel,
    InCancelComplete,
    InListening,
    InReady,
    OutCancel,
    OutCancelComplete,
    OutListen,
    OutPending,
    OutReady,
    PollInput,
    PollOutput,
)


class TaskKind(enum.Enum):
    """Who runs the operation behind a task."""

    HOST = "host"
    GUEST = "guest"


class TaskState(enum.Enum):
    """Where an operation is in its life."""

    PENDING = "pending"
    READY = "ready"  # finished; the value waits to be fetched through a ready handle
    CANCELLING = "cancelling"
    DONE = "done"  # fetched, or cancelled and confirmed


@record(frozen=True)
class Deliver:
    """Append ``event`` to the input of poll function ``poll``."""

    poll: int
    event: PollInput


@record(frozen=True)
class CancelHostWork:
    """Cancel the host's work for task ``rep``; report back with ``host_work_finished``.

    ``work`` is what the host gave :meth:`ProtocolCore.new_host_task` for it (its cancel
    scope, say): handed back because the task may be forgotten already (every handle
    dropped) while the work still runs."""

    rep: int
    work: Any = None


@record(frozen=True)
class WakeHostCaller:
    """The host's own call on task ``rep`` is ready or cancelled: wake its waiter."""

    rep: int


Action = Deliver | CancelHostWork | WakeHostCaller


# Task.flags: what a task's handles are doing, one bit each (one slot, not six: a
# pending export call holds two tasks, and 10,000 pending calls hold 20,000)
GUEST = 1  # a guest task (make-task); without it, a host task
HOST_CALLER = 2  # the host awaits this guest task
HELD_CANCEL = 4  # the scheduler holds the callee's cancel handle
HELD_READY = 8  # the scheduler holds the callee's ready handle
HELD_PENDING = 16  # the host caller holds the pending handle
CANCEL_REQUESTED = 32
CANCELLED = 64  # finished through cancellation


@record
class Task:
    """One async operation, named by the handles that share its ``rep``.

    Its caller, if a guest, is ``listen_poll`` (poll index, None while it has none)
    with ``listen_state``; a guest task's callee is ``callee_poll`` (None until its
    ``pending`` arrives) with ``callee_state``. Each pair is two slots rather than a
    tuple: a tuple is 56 bytes more per task.
    """

    rep: int
    flags: int
    state: TaskState = TaskState.PENDING
    refs: int = 0
    listen_poll: int | None = None
    listen_state: int = 0
    callee_poll: int | None = None
    callee_state: int = 0
    value: Any = None  # a host task's result, until fetched (before: the host's work)
    label: str = ""  # what the task is, for statistics and errors

    @property
    def kind(self) -> TaskKind:
        """Who runs the operation."""
        return TaskKind.GUEST if self.flags & GUEST else TaskKind.HOST


@dataclass
class CoreStatistics:
    """Counts of live protocol state."""

    tasks: int
    host_tasks: int
    guest_tasks: int
    handles: int
    by_state: dict[str, int] = field(default_factory=dict)


class ProtocolCore:
    """The isyswasfa task table; every method returns the actions to carry out."""

    def __init__(self, *, max_tasks: int | None = None) -> None:
        """``max_tasks``: live tasks a guest may make at once (``Limits.max_handles``);
        one more stops it with :class:`GuestTrap` instead of growing host memory."""
        self._tasks: dict[int, Task] = {}
        self._next_rep = 1
        self._max_tasks = max_tasks

    # -- bookkeeping ---------------------------------------------------------------
    def _new(self, flags: int, refs: int, label: str) -> Task:
        if self._max_tasks is not None and len(self._tasks) >= self._max_tasks:
            raise GuestTrap(
                f"the guest has {self._max_tasks} isyswasfa tasks (async calls, pollable"
                " waits) at once (Limits.max_handles)"
            )
        rep = self._next_rep
        while rep in self._tasks:
            rep = rep + 1 if rep < 0xFFFF_FFFF else 1
        self._next_rep = rep + 1 if rep < 0xFFFF_FFFF else 1
        task = Task(rep, flags, refs=refs, label=label)
        self._tasks[rep] = task
        return task

    def task(self, rep: int) -> Task:
        """The task behind a handle the guest passed us."""
        task = self._tasks.get(rep)
        if task is None:
            raise _no_task(rep)
        return task

    def get(self, rep: int) -> Task | None:
        """The task ``rep``, or None when it is gone."""
        return self._tasks.get(rep)

    def _release(self, task: Task, n: int = 1) -> list[Action]:
        task.refs -= n
        if task.refs < 0:
            raise InternalError(f"negative handle count for task {task.rep}")
        if task.refs > 0:
            return []
        del self._tasks[task.rep]
        if not task.flags & GUEST and task.state is TaskState.PENDING:
            # every handle is gone: nobody can ever fetch the result
            task.state = TaskState.CANCELLING
            return [CancelHostWork(task.rep, task.value)]
        return []

    def has_tasks(self) -> bool:
        """Whether any task is alive. Every poll output carries a handle of a live task,
        so with none alive, no guest has anything to report."""
        return bool(self._tasks)

    def handle_dropped(self, rep: int) -> list[Action]:
        """A guest dropped a ``pending``, ``cancel`` or ``ready`` handle of task ``rep``."""
        task = self._tasks.get(rep)
        if task is None:
            raise InternalError(f"drop of a handle of unknown task {rep}")
        if task.refs > 1:  # (`_release`, inline: most drops leave other handles)
            task.refs -= 1
            return []
        return self._release(task)

    def statistics(self) -> CoreStatistics:
        """Live tasks and handles."""
        by_state: dict[str, int] = {}
        for task in self._tasks.values():
            by_state[task.state.value] = by_state.get(task.state.value, 0) + 1
        return CoreStatistics(
            tasks=len(self._tasks),
            host_tasks=sum(t.kind is TaskKind.HOST for t in self._tasks.values()),
            guest_tasks=sum(t.kind is TaskKind.GUEST for t in self._tasks.values()),
            handles=sum(t.refs for t in self._tasks.values()),
            by_state=by_state,
        )

    # -- host tasks (async imports, pollable waits) -----------------------------------
    def new_host_task(self, label: str = "", work: Any = None) -> int:
        """Start a host task; its ``pending`` handle (one ref) goes to the calling guest.

        ``work`` is the host's own handle on the work, opaque to the core: the task's
        ``value`` until a result replaces it, and handed back in :class:`CancelHostWork`
        (a slot the task has anyway, where a table of the host's would cost an entry
        per task)."""
        task = self._new(0, 1, label)
        task.value = work
        return task.rep

    def new_host_task_record(self, label: str = "") -> Task:
        """:meth:`new_host_task`, returning the task itself (its ``value`` is the
        host's to set: what :class:`CancelHostWork` hands back)."""
        return self._new(0, 1, label)

    def host_work_finished(self, rep: int, value: Any, *, cancelled: bool = False) -> list[Action]:
        """The host's work for ``rep`` ended with ``value`` (or by cancellation)."""
        task = self._tasks.get(rep)
        if task is None or task.state is TaskState.DONE:
            return []  # nobody holds a handle any more
        if task.state is TaskState.CANCELLING:
            task.state = TaskState.DONE
            task.flags |= CANCELLED
            if task.listen_poll is not None and task.flags & HELD_CANCEL:
                task.flags &= ~HELD_CANCEL
                actions = self._release(task)
                return [*actions, Deliver(task.listen_poll, InCancelComplete(task.listen_state))]
            return []
        if cancelled:
            raise InternalError(f"host task {rep} was cancelled without a request")
        task.state = TaskState.READY
        task.value = value
        if task.listen_poll is not None:
            task.refs += 1
            return [Deliver(task.listen_poll, InReady(task.listen_state, rep))]
        return []

    def withdraw_listening(self, rep: int) -> bool:
        """The ``listening`` of host task ``rep`` has not reached its guest yet, and its
        ``ready`` (from :meth:`host_work_finished`) goes out in the same poll: whether
        the ``listening`` may be left out. It may for host work: the guest then sees
        its ``listen`` answered by ``ready`` alone, as when the work finished before
        the ``listen`` (docs/abi.md §4.2), and the fresh cancel handle it would have
        dropped at once is released here. Not for a guest callee (composition), whose
        cancel handle moved to the caller with the ``listening``."""
        task = self._tasks.get(rep)
        if task is None or task.flags & GUEST or task.state is not TaskState.READY:
            return False
        if task.refs < 2:  # (the `ready` going out holds one)
            raise InternalError(f"a listening of task {rep} holds the task's last handle")
        task.refs -= 1
        return True

    def take_host_value(self, rep: int) -> Any:
        """A guest passed ``ready`` to an import's ``-isyswasfa-result``: the value.

        The handle itself was consumed by that call; the caller of this method has
        already counted it as held and this releases it.
        """
        task = self._tasks.get(rep)
        if task is None:
            raise _no_task(rep)
        if task.flags & GUEST or task.state is not TaskState.READY:
            raise GuestProtocolError(
                f"ready handle for a task that has no result ({task.state.value})"
            )
        value, task.value = task.value, None
        task.state = TaskState.DONE
        self._release(task)
        return value

    # -- guest tasks -----------------------------------------------------------------
    def make_task(self) -> int:
        """``make-task``: a guest task with three handles (pending, cancel, ready)."""
        return self._new(GUEST, 3, "guest").rep

    def host_calls(self, rep: int) -> None:
        """The host's call of an export returned ``pending`` handle ``rep``; the host awaits it."""
        task = self._tasks.get(rep)
        if task is None:
            raise _no_task(rep)
        if task.flags & (GUEST | HOST_CALLER) != GUEST or task.listen_poll is not None:
            raise GuestProtocolError("export returned a pending handle it does not own fresh")
        task.flags |= HOST_CALLER | HELD_PENDING

    def cancel_host_call(self, rep: int) -> list[Action]:
        """The host's caller was cancelled: ask the callee to cancel."""
        task = self.task(rep)
        if not task.flags & HOST_CALLER:
            raise HostProtocolError("cancel of a call the host does not await")
        if task.state in (TaskState.CANCELLING, TaskState.DONE):
            return []
        task.flags |= CANCEL_REQUESTED
        return self._forward_cancel(task)

    def _forward_cancel(self, task: Task) -> list[Action]:
        if task.callee_poll is None or not task.flags & HELD_CANCEL:
            return []  # sent when the callee's `pending` arrives
        if task.flags & HELD_READY:  # finished but not fetched: the callee discards the value
            task.flags &= ~HELD_READY
            self._release(task)
        task.state = TaskState.CANCELLING
        task.flags &= ~HELD_CANCEL
        return [Deliver(task.callee_poll, InCancel(task.callee_state, task.rep))]

    def host_call_outcome(self, rep: int) -> TaskState:
        """READY (fetch it with :meth:`take_host_call_ready`), DONE (cancelled) or PENDING."""
        task = self._tasks.get(rep)
        if task is None:
            raise _no_task(rep)
        return task.state

    def take_host_call_ready(self, rep: int) -> None:
        """The host passes the held ``ready`` handle to the callee's ``-result``.

        The callee drops it (counted through :meth:`handle_dropped`); the host's
        ``pending`` and the callee's ``cancel`` handles are released here.
        """
        task = self._tasks.get(rep)
        if task is None:
            raise _no_task(rep)
        if task.state is not TaskState.READY or not task.flags & HELD_READY:
            raise InternalError("host call has no ready handle to fetch")
        task.flags &= ~HELD_READY  # moves to the callee with the -result call
        task.state = TaskState.DONE
        # (`_release_host_caller_handles`, inline: the ready handle keeps the task)
        n = bool(task.flags & HELD_PENDING) + bool(task.flags & HELD_CANCEL)
        task.flags &= ~(HELD_PENDING | HELD_CANCEL)
        if task.refs > n:
            task.refs -= n
        elif n:
            self._release(task, n)

    def finish_host_call(self, rep: int) -> None:
        """Release what the host caller holds after a cancelled call."""
        task = self._tasks.get(rep)
        if task is not None:
            self._release_host_caller_handles(task)

    def _release_host_caller_handles(self, task: Task) -> None:
        n = bool(task.flags & HELD_PENDING) + bool(task.flags & HELD_CANCEL)
        task.flags &= ~(HELD_PENDING | HELD_CANCEL)
        if n:
            self._release(task, n)

    # -- poll outputs -----------------------------------------------------------------
    def handle_output(self, poll: int, out: PollOutput) -> list[Action]:
        """Apply one event from guest poll function ``poll``.

        Handles inside ``out`` were handed to the scheduler; they are counted as held.
        Raises :class:`GuestProtocolError` when the event makes no sense.
        """
        handler = _OUTPUT_HANDLERS.get(out.__class__)
        if handler is None:
            raise InternalError(f"unknown poll output {out!r}")
        return handler(self, poll, out)

    # One method per kind of poll output, taking its fields (the scheduler calls them
    # with the fields of the engine's value, making no event record on the hot path).
    def output_pending(self, poll: int, state: int, cancel: int) -> list[Action]:
        """``pending``: the guest's call ``state`` went pending; ``cancel`` is the
        make-task handle (see :class:`OutPending`)."""
        task = self._tasks.get(cancel)
        if task is None:
            raise _no_task(cancel)
        if not task.flags & GUEST or task.callee_poll is not None:
            raise GuestProtocolError("`pending` for a handle that is not a fresh make-task handle")
        task.callee_poll = poll
        task.callee_state = state
        task.flags |= HELD_CANCEL
        if task.flags & CANCEL_REQUESTED:
            return self._forward_cancel(task)
        if task.listen_poll is not None:
            return self._send_listening(task)
        return []

    def _send_listening(self, task: Task) -> list[Action]:
        assert task.listen_poll is not None
        if task.flags & GUEST:
            task.flags &= ~HELD_CANCEL  # the callee's cancel handle moves to the caller
        else:
            task.refs += 1  # a fresh cancel handle
        return [Deliver(task.listen_poll, InListening(task.listen_state, task.rep))]

    def output_ready(self, poll: int, state: int, ready: int) -> list[Action]:
        """``ready``: the guest's call ``state`` finished; ``ready`` is the make-task
        handle (see :class:`OutReady`)."""
        task = self._tasks.get(ready)
        if task is None:
            raise _no_task(ready)
        if not task.flags & GUEST or task.callee_poll != poll or task.callee_state != state:
            raise GuestProtocolError(
                f"`ready` names state {state}, which is no pending call of this guest"
            )
        if task.state is TaskState.CANCELLING:
            # the race (docs/abi.md 4.4): the call ended before the guest saw our
            # `cancel`, which it answers with `cancel-complete`, discarding the value
            # (so its `-result` must not be called). Its `ready` handle is freed here,
            # not passed on; the cancel ends at `cancel-complete`, as always.
            return self._release(task)
        if task.state is not TaskState.PENDING:
            raise GuestProtocolError(f"`ready` for a call that is {task.state.value}")
        task.state = TaskState.READY
        if task.listen_poll is not None:  # the ready handle moves on to the caller
            return [Deliver(task.listen_poll, InReady(task.listen_state, task.rep))]
        task.flags |= HELD_READY
        if task.flags & HOST_CALLER:
            return [WakeHostCaller(task.rep)]
        return []

    def output_listen(self, poll: int, state: int, pending: int) -> list[Action]:
        """``listen``: the guest awaits ``pending`` under its own cookie ``state`` (see
        :class:`OutListen`)."""
        task = self._tasks.get(pending)
        if task is None:
            raise _no_task(pending)
        if task.listen_poll is not None or task.flags & HOST_CALLER:
            raise GuestProtocolError("`listen` on an operation that already has a caller")
        if task.state in (TaskState.CANCELLING, TaskState.DONE):
            raise GuestProtocolError(f"`listen` on an operation that is {task.state.value}")
        task.listen_poll = poll
        task.listen_state = state
        actions: list[Action] = []
        if task.state is TaskState.READY:
            if task.flags & GUEST:
                task.flags &= ~HELD_READY  # the callee's ready handle moves on
            else:
                task.refs += 1  # a fresh ready handle
            actions.append(Deliver(poll, InReady(state, task.rep)))
        elif not task.flags & GUEST or task.flags & HELD_CANCEL:
            actions.extend(self._send_listening(task))
        # else `listening` follows the callee's `pending`
        # the scheduler does not keep the pending handle (released last: it may be the
        # only handle so far)
        if task.refs > 1:  # (`_release`, inline: the fresh cancel or ready handle stays)
            task.refs -= 1
            return actions
        return [*actions, *self._release(task)]

    def output_cancel(self, poll: int, cancel: int) -> list[Action]:
        """``cancel``: the guest cancels the operation behind ``cancel`` (see
        :class:`OutCancel`)."""
        task = self.task(cancel)
        if task.listen_poll != poll:
            raise GuestProtocolError("`cancel` of an operation this guest does not await")
        if task.state is TaskState.CANCELLING:
            raise GuestProtocolError("`cancel` sent twice for one operation")
        if not task.flags & GUEST:
            if task.state is TaskState.PENDING:
                task.state = TaskState.CANCELLING
                task.flags |= HELD_CANCEL
                return [CancelHostWork(task.rep, task.value)]
            # already finished: nothing to stop. A `ready` handle may be in flight to
            # the caller, which will still fetch (and discard) the value through it.
            actions = self._release(task)
            return [*actions, Deliver(poll, InCancelComplete(task.listen_state))]
        # a guest task: the callee tears it down and confirms
        if task.callee_poll is None:
            raise InternalError("caller holds a cancel handle of a call with no callee")
        task.flags |= HELD_CANCEL
        return self._forward_cancel(task)

    def output_cancel_complete(self, poll: int, cancel: int) -> list[Action]:
        """``cancel-complete``: the guest's call cancelled through ``cancel`` has torn
        down (see :class:`OutCancelComplete`)."""
        task = self.task(cancel)
        if not task.flags & GUEST or task.callee_poll != poll:
            raise GuestProtocolError("`cancel-complete` for a call this guest does not run")
        if task.state is not TaskState.CANCELLING:
            raise GuestProtocolError(f"`cancel-complete` for a call that is {task.state.value}")
        task.state = TaskState.DONE
        task.flags |= CANCELLED
        actions = self._release(task)  # the cancel handle came back to us
        if task.listen_poll is not None:
            return [*actions, Deliver(task.listen_poll, InCancelComplete(task.listen_state))]
        if task.flags & HOST_CALLER:
            return [*actions, WakeHostCaller(task.rep)]
        return actions


def _no_task(rep: int) -> GuestProtocolError:
    return GuestProtocolError(f"handle names no live isyswasfa task (rep {rep})")


# which method applies each kind of poll output (one look-up, not a chain of checks)
_OUTPUT_HANDLERS: dict[type, Callable[[ProtocolCore, int, Any], list[Action]]] = {
    OutPending: lambda core, poll, out: core.output_pending(poll, out.state, out.cancel),
    OutReady: lambda core, poll, out: core.output_ready(poll, out.state, out.ready),
    OutListen: lambda core, poll, out: core.output_listen(poll, out.state, out.pending),
    OutCancel: lambda core, poll, out: core.output_cancel(poll, out.cancel),
    OutCancelComplete: lambda core, poll, out: core.output_cancel_complete(poll, out.cancel),
}
