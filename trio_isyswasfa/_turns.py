"""Taking turns at something only one task may use at a time (an instance's store).

A crowd of tasks waiting for one thing must cost each of them one wake-up, not one per
hand-off: if every hand-off woke every waiter (one shared event), ``n`` waiters would
cost ``n²`` reschedules. :class:`Turns` queues each waiter on its own event and hands
the turn straight to the first in line, so waking is O(1) per hand-off.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import anyio

_SHRINK_AFTER = 64  # an emptied line this long once is made anew


@dataclass(frozen=True, slots=True)
class TurnsStatistics:
    """Counters of a :class:`Turns` (see :meth:`Turns.statistics`).

    Attributes:
      waiting: tasks in line now.
      waits: times a task had to wait for its turn so far.
      wakeups: times a waiting task was woken so far (each waiter once, whether it got
        the turn or was cancelled).
    """

    waiting: int
    waits: int
    wakeups: int


class Turns:
    """One holder at a time; the others wait in line and get the turn first come, first
    served, each woken once, when it is theirs.

    :meth:`take` costs no checkpoint when nobody holds the turn. A waiter cancelled
    while in line leaves it; one cancelled just as the turn reached it passes the turn
    on, so a cancellation never loses a hand-off.
    """

    def __init__(self) -> None:
        self._held = False
        # OrderedDict: O(1) to pop the first and to remove a cancelled waiter anywhere
        self._line: OrderedDict[anyio.Event, None] = OrderedDict()
        self._longest = 0  # the line's longest since it was last made anew
        self._waits = 0
        self._wakeups = 0

    @property
    def held(self) -> bool:
        """Whether some task has the turn."""
        return self._held

    def take_nowait(self) -> bool:
        """Take the turn if it is free (True); False if someone holds it."""
        if self._held:
            return False
        self._held = True
        return True

    async def take(self) -> None:
        """Wait for the turn (at once if it is free)."""
        if not self._held:
            self._held = True
            return
        self._waits += 1
        event = anyio.Event()
        self._line[event] = None
        self._longest = max(self._longest, len(self._line))
        got_it = False
        try:
            await event.wait()
            got_it = True
        finally:
            self._wakeups += 1
            if not got_it:
                if event.is_set():
                    self.give_back()  # the turn reached us as we were cancelled: pass it on
                else:
                    del self._line[event]

    async def wait_free(self) -> None:
        """Wait, in line, until the turn is this task's, then leave it free for the
        task's own next :meth:`take`, which gets it at once: it must follow with no
        checkpoint between (nobody else can take it meanwhile). For a task that must
        not be cancelled between its wait and what it does with the turn (a
        cancellation here leaves it with nothing done, and passes the turn on)."""
        if not self._held:
            return
        await self.take()
        self._held = False

    def give_back(self) -> None:
        """End this turn: hand it to the first task in line, if any."""
        if self._line:
            event, _ = self._line.popitem(last=False)
            event.set()  # the turn is the waiter's now: it stays held
            if not self._line and self._longest > _SHRINK_AFTER:
                # a dict keeps the table of its longest length: 10,000 calls that
                # queued once at start-up would hold ~50 B each for good
                self._line = OrderedDict()
                self._longest = 0
        else:
            self._held = False

    def statistics(self) -> TurnsStatistics:
        """How many wait now, and how many waits and wake-ups there were so far."""
        return TurnsStatistics(waiting=len(self._line), waits=self._waits, wakeups=self._wakeups)
