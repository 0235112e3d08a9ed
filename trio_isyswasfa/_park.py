"""A one-task waiter that costs less than an event, for the crowds a host keeps waiting.

Every pending export call parks its caller until the guest answers. With
``anyio.Event`` each of them held an anyio event, the trio event it wraps, that
event's set of waiting tasks and three coroutine frames: about 1.5 KiB per call.
:class:`Waiter` parks the one task directly (``trio.lowlevel``) when the loop is
trio's, and falls back to ``anyio.Event`` on other backends. This module is where
the host's trio-only needs live.
"""

from __future__ import annotations

from typing import Any

import anyio
import sniffio
import trio


def running_trio() -> bool:
    """Whether the running event loop is trio's."""
    return sniffio.current_async_library() == "trio"


class Waiter:
    """Wakes one task, once per :meth:`set`; re-armed by each :meth:`wait`.

    A :meth:`set` with nobody waiting is kept for the next :meth:`wait`, which then
    returns at once. Cancelling a :meth:`wait` leaves the waiter unset.
    """

    __slots__ = ("_event", "_flag", "_task", "_trio")

    def __init__(self, on_trio: bool) -> None:
        self._trio = on_trio
        self._task: Any = None  # the parked trio task
        self._flag = False
        self._event: anyio.Event | None = None  # other backends

    async def wait(self) -> None:
        """Return at the next :meth:`set` (at once if one came since the last wait)."""
        if self._flag:
            self._flag = False
            return
        if not self._trio:
            self._event = anyio.Event()
            try:
                await self._event.wait()
            finally:
                self._event = None
                self._flag = False
            return
        self._task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _raise_cancel: Any) -> Any:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def set(self) -> None:
        """Wake the waiting task, or the next :meth:`wait` if none waits now."""
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)
        elif self._event is not None:
            self._event.set()
        else:
            self._flag = True
