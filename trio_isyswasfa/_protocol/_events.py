"""Poll events as frozen records, with handles as reps (see ``docs/abi.md``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class InListening:
    """To the caller: your await ``state`` is pending; ``cancel`` (a new handle) cancels it."""

    state: int
    cancel: int


@dataclass(frozen=True, slots=True)
class InReady:
    """To the caller: your await ``state`` finished; ``ready`` (a new handle) fetches it."""

    state: int
    ready: int


@dataclass(frozen=True, slots=True)
class InCancel:
    """To the callee: cancel your call ``state``; confirm with ``cancel-complete(cancel)``."""

    state: int
    cancel: int


@dataclass(frozen=True, slots=True)
class InCancelComplete:
    """To the caller: the cancellation of your await ``state`` is complete."""

    state: int


PollInput = InListening | InReady | InCancel | InCancelComplete


@dataclass(frozen=True, slots=True)
class OutReady:
    """From the callee: its call ``state`` finished; ``ready`` is the make-task handle."""

    state: int
    ready: int


@dataclass(frozen=True, slots=True)
class OutListen:
    """From the caller: it awaits ``pending`` under its own cookie ``state``."""

    state: int
    pending: int


@dataclass(frozen=True, slots=True)
class OutPending:
    """From the callee: its call ``state`` went pending; ``cancel`` is the make-task handle."""

    state: int
    cancel: int


@dataclass(frozen=True, slots=True)
class OutCancel:
    """From the caller: cancel the operation behind ``cancel`` (from ``listening``)."""

    cancel: int


@dataclass(frozen=True, slots=True)
class OutCancelComplete:
    """From the callee: the call cancelled through ``cancel`` has finished tearing down."""

    cancel: int


PollOutput = OutReady | OutListen | OutPending | OutCancel | OutCancelComplete
