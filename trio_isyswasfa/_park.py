"""Waiting and running crowds of tasks cheaply: the host's trio-only needs live here.

Every pending export call parks its caller until the guest answers, and every async
import the guest awaits is a host task. Through anyio's wrappers each costs more
than the work it stands for: an ``anyio.Event`` per wait held the event, the trio
event it wraps, that event's set of waiting tasks and three coroutine frames (about
1.5 KiB); a task in an anyio task group with an anyio cancel scope holds ~4.2 KiB
where a task in a trio nursery with a trio cancel scope holds ~2.7 KiB. When the loop
is trio's, :class:`Waiter`, :func:`open_task_group` and :func:`cancel_scope` use trio
directly; on other backends they are anyio's.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import anyio
import sniffio
import trio


def running_trio() -> bool:
    """Whether the running event loop is trio's."""
    return sniffio.current_async_library() == "trio"


class Scope(Protocol):
    """What the host uses of a cancel scope (anyio's or trio's)."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> bool | None: ...

    def cancel(self) -> None: ...

    @property
    def cancelled_caught(self) -> bool: ...

    @property
    def cancel_called(self) -> bool: ...

    @property
    def deadline(self) -> float: ...

    @deadline.setter
    def deadline(self, value: float) -> None: ...


class TaskGroup(Protocol):
    """What the host uses of a task group (an anyio task group or a trio nursery)."""

    def start_soon(self, func: Callable[..., Any], *args: Any, name: object = None) -> None: ...

    @property
    def cancel_scope(self) -> Scope: ...


def open_task_group(on_trio: bool) -> AbstractAsyncContextManager[TaskGroup]:
    """A trio nursery on trio, else an anyio task group (the same semantics)."""
    if on_trio:
        return trio.open_nursery()  # type: ignore[return-value]
    return anyio.create_task_group()  # type: ignore[return-value]


def checkpoint_of(on_trio: bool) -> Callable[[], Awaitable[None]]:
    """The checkpoint to await: trio's own on trio (anyio's looks the backend up at
    every call), else anyio's."""
    return trio.lowlevel.checkpoint if on_trio else anyio.lowlevel.checkpoint


def clock_of(on_trio: bool) -> Callable[[], float]:
    """The event loop's clock: trio's own on trio (anyio's looks the backend up at
    every call), else anyio's."""
    return trio.current_time if on_trio else anyio.current_time


def sleep_forever_of(on_trio: bool) -> Callable[[], Awaitable[None]]:
    """The sleep until cancelled to await: trio's own on trio (anyio's looks the
    backend up at every call), else anyio's."""
    return trio.sleep_forever if on_trio else anyio.sleep_forever


def _first_yield(coro: Any) -> object:
    """What ``coro`` gives the event loop as it first suspends (it is closed after)."""
    try:
        return coro.send(None)
    finally:
        coro.close()


TRIO_CHECKPOINT = _first_yield(trio.lowlevel.cancel_shielded_checkpoint())  # noqa: ASYNC105
"""What trio's checkpoint gives the event loop as it suspends (asked of trio's own
function: no private name): a coroutine that yields it (or asyncio's bare ``yield``,
``None``) asks only to run again in the loop's next round, not to wait for anything
(I/O, an event, a timer, a lock)."""


def cancel_scope(on_trio: bool) -> Scope:
    """A cancel scope without a deadline: trio's on trio, else anyio's."""
    return trio.CancelScope() if on_trio else anyio.CancelScope()  # type: ignore[return-value]


class _Ready:
    """An awaitable that is done at once (no checkpoint): a kept :meth:`Waiter.set`."""

    __slots__ = ()

    def __await__(self) -> Any:
        return iter(())


_READY = _Ready()
_KEPT = object()  # a Waiter's set() that came with nobody waiting


class Waiter:
    """Wakes one task, once per :meth:`set`; re-armed by each :meth:`wait`.

    A :meth:`set` with nobody waiting is kept for the next :meth:`wait`, which then
    returns at once. Cancelling a :meth:`wait` leaves the waiter unset.

    On trio a parked wait holds trio's own trap and nothing of ours: :meth:`wait` is no
    coroutine (it returns trio's), and the waiter is its own abort callback (no bound
    method per wait). Every pending export call parks on one, so each frame or object
    here is paid once per call.
    """

    __slots__ = ("_parked", "_trio")

    def __init__(self, on_trio: bool | None) -> None:
        self._trio = on_trio  # None: known at the first wait (made outside the loop)
        # None, _KEPT (a set came with nobody waiting), the parked trio task, or on
        # other backends the anyio.Event of the wait (one slot: one per pending call)
        self._parked: Any = None

    def wait(self) -> Awaitable[None]:
        """Return at the next :meth:`set` (at once if one came since the last wait).

        The task that calls it must await what it returns at once (``await
        waiter.wait()``): on trio it parks the calling task, known at the call.
        """
        if self._parked is _KEPT:
            self._parked = None
            return _READY
        if self._trio is None:
            self._trio = running_trio()
        if not self._trio:
            return self._wait_anyio()
        self._parked = trio.lowlevel.current_task()
        return trio.lowlevel.wait_task_rescheduled(self)  # noqa: ASYNC105 (awaited by the caller)

    async def _wait_anyio(self) -> None:
        self._parked = event = anyio.Event()
        try:
            await event.wait()
        except BaseException:
            if self._parked is event:
                self._parked = None  # cancelled before any set(): left unset
            elif event.is_set():
                # set, then cancelled before it resumed: trio would have returned (its
                # cancel comes at the next checkpoint), so the set is kept, not lost
                self._parked = _KEPT
            raise

    def __call__(self, _raise_cancel: Any) -> Any:
        """trio's abort callback: the parked wait was cancelled."""
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    @property
    def parked(self) -> bool:
        """Whether a task waits on it now (a cancelled wait leaves it unparked)."""
        return self._parked is not None and self._parked is not _KEPT

    def wake_in(self, context: contextvars.Context) -> bool:
        """If a task waits (:attr:`parked`), wake it (:meth:`set`) and return True;
        else return False, leaving the waiter as it was. On trio the woken task runs
        on in ``context``: a task reused for another caller's work (a host worker
        taken from the idle pool) takes on that caller's context, as a task spawned
        for it would. (One call where the check and the wake took three.)"""
        parked = self._parked
        if parked is None or parked is _KEPT:
            return False
        self._parked = None
        if self._trio:
            parked.context = context
            trio.lowlevel.reschedule(parked)
        else:
            parked.set()
        return True

    def set(self) -> None:
        """Wake the waiting task, or the next :meth:`wait` if none waits now."""
        parked = self._parked
        if parked is None:
            self._parked = _KEPT
        elif parked is _KEPT:
            pass
        elif self._trio:
            self._parked = None
            trio.lowlevel.reschedule(parked)
        else:
            # the wait is woken: a second set() before it resumes is kept for the next
            # wait, as on trio
            self._parked = None
            parked.set()
