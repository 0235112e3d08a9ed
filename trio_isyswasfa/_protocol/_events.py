"""Poll events as frozen records, with handles as reps (see ``docs/abi.md``).

Each poll input is also the WIT ``poll-input`` value it stands for, in the shape our
own engine lowers (a variant: ``tag`` names the case, ``payload`` is its record, whose
fields are the event's attributes, or the ``cancel-complete`` state), so on that engine
the scheduler passes the events themselves to the poll export, building no values
for them.
"""

from __future__ import annotations

from typing import ClassVar

from .._records import record


@record(frozen=True)
class InListening:
    """To the caller: your await ``state`` is pending; ``cancel`` (a new handle) cancels it."""

    state: int
    cancel: int

    tag: ClassVar[str] = "listening"

    @property
    def payload(self) -> InListening:
        """The case's record: the event itself."""
        return self


@record(frozen=True)
class InReady:
    """To the caller: your await ``state`` finished; ``ready`` (a new handle) fetches it."""

    state: int
    ready: int

    tag: ClassVar[str] = "ready"

    @property
    def payload(self) -> InReady:
        """The case's record: the event itself."""
        return self


@record(frozen=True)
class InCancel:
    """To the callee: cancel your call ``state``; confirm with ``cancel-complete(cancel)``."""

    state: int
    cancel: int

    tag: ClassVar[str] = "cancel"

    @property
    def payload(self) -> InCancel:
        """The case's record: the event itself."""
        return self


@record(frozen=True)
class InCancelComplete:
    """To the caller: the cancellation of your await ``state`` is complete."""

    state: int

    tag: ClassVar[str] = "cancel-complete"

    @property
    def payload(self) -> int:
        """The case's payload: the caller's listen-state."""
        return self.state


PollInput = InListening | InReady | InCancel | InCancelComplete


@record(frozen=True)
class OutReady:
    """From the callee: its call ``state`` finished; ``ready`` is the make-task handle."""

    state: int
    ready: int


@record(frozen=True)
class OutListen:
    """From the caller: it awaits ``pending`` under its own cookie ``state``."""

    state: int
    pending: int


@record(frozen=True)
class OutPending:
    """From the callee: its call ``state`` went pending; ``cancel`` is the make-task handle."""

    state: int
    cancel: int


@record(frozen=True)
class OutCancel:
    """From the caller: cancel the operation behind ``cancel`` (from ``listening``)."""

    cancel: int


@record(frozen=True)
class OutCancelComplete:
    """From the callee: the call cancelled through ``cancel`` has finished tearing down."""

    cancel: int


PollOutput = OutReady | OutListen | OutPending | OutCancel | OutCancelComplete
