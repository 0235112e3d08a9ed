"""A base for objects whose work outlives the calls that start it."""

from __future__ import annotations

from types import TracebackType

import anyio
import anyio.abc


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
