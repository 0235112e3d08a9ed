"""Task table and transitions of the isyswasfa scheduler.

One :class:`Task` stands behind the three handle kinds ``pending``, ``cancel`` and
``ready`` that name one async operation; its ``refs`` counts live handles of any kind,
whether a guest or the scheduler holds them. A task is forgotten when it is finished
and no handle names it any more.

Who is who:

* a *host task* is an async import implemented by the host, or a wait on a pollable;
* a *guest task* is an exported async call of some guest that went pending
  (created by ``make-task``);
* its *caller* is a guest awaiting it (``listener``: poll index and listen-state), or
  the host itself (``host_caller``), or nobody yet.
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
    """Cancel the host's work for task ``rep``; report back with ``host_work_finished``."""

    rep: int


@record(frozen=True)
class WakeHostCaller:
    """The host's own call on task ``rep`` is ready or cancelled: wake its waiter."""

    rep: int


Action = Deliver | CancelHostWork | WakeHostCaller


@record
class Task:
    """One async operation, named by the handles that share its ``rep``."""

    rep: int
    kind: TaskKind
    state: TaskState = TaskState.PENDING
    refs: int = 0
    listener: tuple[int, int] | None = None  # (poll index, listen-state) of a guest caller
    host_caller: bool = False
    callee: tuple[int, int] | None = None  # (poll index, future-state) of a guest task
    held_cancel: bool = False  # the scheduler holds the callee's cancel handle
    held_ready: bool = False  # the scheduler holds the callee's ready handle
    held_pending: bool = False  # the host caller holds the pending handle
    cancel_requested: bool = False
    cancelled: bool = False  # finished through cancellation
    value: Any = None  # a host task's result, until fetched
    label: str = ""  # what the task is, for statistics and errors


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
    def _new(self, kind: TaskKind, refs: int, label: str) -> Task:
        if self._max_tasks is not None and len(self._tasks) >= self._max_tasks:
            raise GuestTrap(
                f"the guest has {self._max_tasks} isyswasfa tasks (async calls, pollable"
                " waits) at once (Limits.max_handles)"
            )
        rep = self._next_rep
        while rep in self._tasks:
            rep = rep + 1 if rep < 0xFFFF_FFFF else 1
        self._next_rep = rep + 1 if rep < 0xFFFF_FFFF else 1
        task = Task(rep=rep, kind=kind, refs=refs, label=label)
        self._tasks[rep] = task
        return task

    def task(self, rep: int) -> Task:
        """The task behind a handle the guest passed us."""
        task = self._tasks.get(rep)
        if task is None:
            raise GuestProtocolError(f"handle names no live isyswasfa task (rep {rep})")
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
        if task.kind is TaskKind.HOST and task.state is TaskState.PENDING:
            # every handle is gone: nobody can ever fetch the result
            task.state = TaskState.CANCELLING
            return [CancelHostWork(task.rep)]
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
    def new_host_task(self, label: str = "") -> int:
        """Start a host task; its ``pending`` handle (one ref) goes to the calling guest."""
        return self._new(TaskKind.HOST, 1, label).rep

    def host_work_finished(self, rep: int, value: Any, *, cancelled: bool = False) -> list[Action]:
        """The host's work for ``rep`` ended with ``value`` (or by cancellation)."""
        task = self._tasks.get(rep)
        if task is None or task.state is TaskState.DONE:
            return []  # nobody holds a handle any more
        if task.state is TaskState.CANCELLING:
            task.state = TaskState.DONE
            task.cancelled = True
            if task.listener is not None and task.held_cancel:
                task.held_cancel = False
                poll, state = task.listener
                actions = self._release(task)
                return [*actions, Deliver(poll, InCancelComplete(state))]
            return []
        if cancelled:
            raise InternalError(f"host task {rep} was cancelled without a request")
        task.state = TaskState.READY
        task.value = value
        if task.listener is not None:
            poll, state = task.listener
            task.refs += 1
            return [Deliver(poll, InReady(state, rep))]
        return []

    def take_host_value(self, rep: int) -> Any:
        """A guest passed ``ready`` to an import's ``-isyswasfa-result``: the value.

        The handle itself was consumed by that call; the caller of this method has
        already counted it as held and this releases it.
        """
        task = self.task(rep)
        if task.kind is not TaskKind.HOST or task.state is not TaskState.READY:
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
        return self._new(TaskKind.GUEST, 3, "guest").rep

    def host_calls(self, rep: int) -> None:
        """The host's call of an export returned ``pending`` handle ``rep``; the host awaits it."""
        task = self.task(rep)
        if task.kind is not TaskKind.GUEST or task.host_caller or task.listener is not None:
            raise GuestProtocolError("export returned a pending handle it does not own fresh")
        task.host_caller = True
        task.held_pending = True

    def cancel_host_call(self, rep: int) -> list[Action]:
        """The host's caller was cancelled: ask the callee to cancel."""
        task = self.task(rep)
        if not task.host_caller:
            raise HostProtocolError("cancel of a call the host does not await")
        if task.state in (TaskState.CANCELLING, TaskState.DONE):
            return []
        task.cancel_requested = True
        return self._forward_cancel(task)

    def _forward_cancel(self, task: Task) -> list[Action]:
        if task.callee is None or not task.held_cancel:
            return []  # sent when the callee's `pending` arrives
        if task.held_ready:  # finished but not fetched: the callee discards the value
            task.held_ready = False
            self._release(task)
        task.state = TaskState.CANCELLING
        task.held_cancel = False
        poll, state = task.callee
        return [Deliver(poll, InCancel(state, task.rep))]

    def host_call_outcome(self, rep: int) -> TaskState:
        """READY (fetch it with :meth:`take_host_call_ready`), DONE (cancelled) or PENDING."""
        return self.task(rep).state

    def take_host_call_ready(self, rep: int) -> None:
        """The host passes the held ``ready`` handle to the callee's ``-result``.

        The callee drops it (counted through :meth:`handle_dropped`); the host's
        ``pending`` and the callee's ``cancel`` handles are released here.
        """
        task = self.task(rep)
        if task.state is not TaskState.READY or not task.held_ready:
            raise InternalError("host call has no ready handle to fetch")
        task.held_ready = False  # moves to the callee with the -result call
        task.state = TaskState.DONE
        self._release_host_caller_handles(task)

    def finish_host_call(self, rep: int) -> None:
        """Release what the host caller holds after a cancelled call."""
        task = self._tasks.get(rep)
        if task is not None:
            self._release_host_caller_handles(task)

    def _release_host_caller_handles(self, task: Task) -> None:
        n = int(task.held_pending) + int(task.held_cancel)
        task.held_pending = task.held_cancel = False
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

    def _out_pending(self, poll: int, out: OutPending) -> list[Action]:
        task = self.task(out.cancel)
        if task.kind is not TaskKind.GUEST or task.callee is not None:
            raise GuestProtocolError("`pending` for a handle that is not a fresh make-task handle")
        task.callee = (poll, out.state)
        task.held_cancel = True
        if task.cancel_requested:
            return self._forward_cancel(task)
        if task.listener is not None:
            return self._send_listening(task)
        return []

    def _send_listening(self, task: Task) -> list[Action]:
        assert task.listener is not None
        poll, state = task.listener
        if task.kind is TaskKind.GUEST:
            task.held_cancel = False  # the callee's cancel handle moves to the caller
        else:
            task.refs += 1  # a fresh cancel handle
        return [Deliver(poll, InListening(state, task.rep))]

    def _out_ready(self, poll: int, out: OutReady) -> list[Action]:
        task = self.task(out.ready)
        if task.kind is not TaskKind.GUEST or task.callee != (poll, out.state):
            raise GuestProtocolError(
                f"`ready` names state {out.state}, which is no pending call of this guest"
            )
        if task.state is not TaskState.PENDING:
            raise GuestProtocolError(f"`ready` for a call that is {task.state.value}")
        task.state = TaskState.READY
        task.held_ready = True
        if task.listener is not None:
            lpoll, lstate = task.listener
            task.held_ready = False
            return [Deliver(lpoll, InReady(lstate, task.rep))]
        if task.host_caller:
            return [WakeHostCaller(task.rep)]
        return []

    def _out_listen(self, poll: int, out: OutListen) -> list[Action]:
        task = self.task(out.pending)
        if task.listener is not None or task.host_caller:
            raise GuestProtocolError("`listen` on an operation that already has a caller")
        if task.state in (TaskState.CANCELLING, TaskState.DONE):
            raise GuestProtocolError(f"`listen` on an operation that is {task.state.value}")
        task.listener = (poll, out.state)
        actions: list[Action] = []
        if task.state is TaskState.READY:
            if task.kind is TaskKind.HOST:
                task.refs += 1  # a fresh ready handle
            else:
                task.held_ready = False  # the callee's ready handle moves on
            actions.append(Deliver(poll, InReady(out.state, task.rep)))
        elif task.kind is TaskKind.HOST or task.held_cancel:
            actions.extend(self._send_listening(task))
        # else `listening` follows the callee's `pending`
        # the scheduler does not keep the pending handle (released last: it may be the
        # only handle so far)
        return [*actions, *self._release(task)]

    def _out_cancel(self, poll: int, out: OutCancel) -> list[Action]:
        task = self.task(out.cancel)
        if task.listener is None or task.listener[0] != poll:
            raise GuestProtocolError("`cancel` of an operation this guest does not await")
        if task.state is TaskState.CANCELLING:
            raise GuestProtocolError("`cancel` sent twice for one operation")
        lpoll, lstate = task.listener
        if task.kind is TaskKind.HOST:
            if task.state is TaskState.PENDING:
                task.state = TaskState.CANCELLING
                task.held_cancel = True
                return [CancelHostWork(task.rep)]
            # already finished: nothing to stop. A `ready` handle may be in flight to
            # the caller, which will still fetch (and discard) the value through it.
            actions = self._release(task)
            return [*actions, Deliver(lpoll, InCancelComplete(lstate))]
        # a guest task: the callee tears it down and confirms
        if task.callee is None:
            raise InternalError("caller holds a cancel handle of a call with no callee")
        task.held_cancel = True
        return self._forward_cancel(task)

    def _out_cancel_complete(self, poll: int, out: OutCancelComplete) -> list[Action]:
        task = self.task(out.cancel)
        if task.kind is not TaskKind.GUEST or task.callee is None or task.callee[0] != poll:
            raise GuestProtocolError("`cancel-complete` for a call this guest does not run")
        if task.state is not TaskState.CANCELLING:
            raise GuestProtocolError(f"`cancel-complete` for a call that is {task.state.value}")
        task.state = TaskState.DONE
        task.cancelled = True
        actions = self._release(task)  # the cancel handle came back to us
        if task.listener is not None:
            lpoll, lstate = task.listener
            return [*actions, Deliver(lpoll, InCancelComplete(lstate))]
        if task.host_caller:
            return [*actions, WakeHostCaller(task.rep)]
        return actions


# which method applies each kind of poll output (one look-up, not a chain of checks)
_OUTPUT_HANDLERS: dict[type, Callable[[ProtocolCore, int, Any], list[Action]]] = {
    OutPending: ProtocolCore._out_pending,
    OutReady: ProtocolCore._out_ready,
    OutListen: ProtocolCore._out_listen,
    OutCancel: ProtocolCore._out_cancel,
    OutCancelComplete: ProtocolCore._out_cancel_complete,
}
