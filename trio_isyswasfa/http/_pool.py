"""Instances kept warm between requests.

A fresh instance of a Python guest costs about 2.5 ms to open and its first call
several more (CPython finishes initialising inside it), while a call into a warm one
costs well under a millisecond: see ``bench/bench_serve.py``. A pool keeps instances
open in its own task group and lends each to one request at a time; an instance that
failed (a trap, a protocol error, an unconfirmed cancellation) is closed, never lent
again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc

from .._host import Component, Instance, open_instance
from .._limits import Limits
from ..wasi import WasiConfig
from ._background import BackgroundTasks


class _Slot:
    def __init__(self, instance: Instance, closed: anyio.Event) -> None:
        self.instance = instance
        self.close = closed  # set to close the instance


class InstancePool(BackgroundTasks):
    """Open instances of one component, each lent to one request at a time.

    Args:
      component, wasi, cancel_grace, limits: as for :func:`~trio_isyswasfa.open_instance`.
      max_idle: instances kept open while no request uses them.
      on_open: called each time the pool opens an instance.
    """

    def __init__(
        self,
        component: Component,
        *,
        wasi: WasiConfig,
        cancel_grace: float,
        limits: Limits | None = None,
        max_idle: int = 32,
        on_open: Callable[[], object] = lambda: None,
    ) -> None:
        self.component = component
        self.wasi = wasi
        self.cancel_grace = cancel_grace
        self.limits = limits
        self.max_idle = max_idle
        self._idle: list[_Slot] = []
        self._on_open = on_open

    async def __aenter__(self) -> InstancePool:
        await super().__aenter__()
        return self

    async def _closed(self) -> None:
        self._idle.clear()

    async def _keep_open(
        self, *, task_status: anyio.abc.TaskStatus[_Slot] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with open_instance(
            self.component, wasi=self.wasi, cancel_grace=self.cancel_grace, limits=self.limits
        ) as instance:
            closed = anyio.Event()
            task_status.started(_Slot(instance, closed))
            await closed.wait()

    @asynccontextmanager
    async def lend(self) -> AsyncIterator[Instance]:
        """An instance for one request; it goes back to the pool if it is still sound."""
        if self._idle:
            slot = self._idle.pop()
        else:
            slot = await self._tasks.start(self._keep_open)
            self._on_open()
        sound = False
        try:
            yield slot.instance
            sound = True
        finally:
            if sound and slot.instance._reusable() and len(self._idle) < self.max_idle:
                self._idle.append(slot)
            else:
                slot.close.set()
