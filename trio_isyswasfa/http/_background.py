"""A base for objects whose work outlives the calls that start it."""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from inspect import CORO_CREATED, getcoroutinestate
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.abc

T = TypeVar("T")


class BackgroundTasks:
    """Owns a task group while used in ``async with``; leaving it cancels the tasks.

    Subclasses start their background work with ``self._tasks.start_soon`` /
    ``start``, and release what else they hold in :meth:`_closed`.
    """

    _tg: anyio.abc.TaskGroup | None = None

    @property
    def _tasks(self) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise RuntimeError(f"use {type(self).__name__} in an `async with` block")
        return self._tg

    async def __aenter__(self) -> BackgroundTasks:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg = self._tasks
        tg.cancel_scope.cancel()
        try:
            return await tg.__aexit__(exc_type, exc, tb)
        finally:
            self._tg = None
            await self._closed()

    async def _closed(self) -> None:
        """Release what the object holds besides its tasks."""


class StartedAtCall(Coroutine[Any, Any, T]):
    """A coroutine object around ``self._coro`` whose work began at the call that made
    it (a request written, say): closed before its first step, it gives that work up
    in :meth:`_give_up`, as a coroutine that never ran cannot run a ``finally`` of its own."""

    __slots__ = ("_coro",)

    _coro: Coroutine[Any, Any, T]

    def send(self, value: Any) -> Any:
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if val is None and tb is None:
            # the one-argument form: the (type, value, traceback) one is deprecated
            # (a DeprecationWarning on 3.12+, on every Cancelled thrown in)
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        if getcoroutinestate(self._coro) == CORO_CREATED:
            self._give_up()
        self._coro.close()

    def __await__(self) -> Generator[Any, None, T]:
        return self._coro.__await__()

    def _give_up(self) -> None:
        """Undo what the call began (the coroutine never ran)."""
