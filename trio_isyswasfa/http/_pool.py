"""Instances kept warm between requests, or opened ahead of them.

A fresh instance of a Python guest costs about 2.5 ms to open and its first call
several more (CPython finishes initialising inside it), while a call into a warm one
costs well under a millisecond: see ``bench/bench_serve.py``. A pool keeps instances
open in its own task group and lends each to up to ``per_instance`` requests at a time
(one by default; an isyswasfa guest that waits on I/O serves many at once, as
``wasmtime serve`` does with WASI 0.3). An instance that failed (a trap, a protocol
error, an unconfirmed cancellation) is never lent again, and is closed once the
requests it had in flight are over (they fail: the server answers 500).

:class:`FreshInstances` serves the ``per-request`` policy: every request still gets an
instance no request has used, but a few are opened ahead in the background, so a
request does not wait for one to open unless requests come faster than they do.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import anyio.lowlevel

from .._errors import IsyswasfaError
from .._host import Component, Instance, open_instance
from .._limits import Limits
from ..wasi import WasiConfig
from ._background import BackgroundTasks

log = logging.getLogger("trio_isyswasfa.http")


class _Slot:
    def __init__(self, instance: Instance, closed: anyio.Event) -> None:
        self.instance = instance
        self.close = closed  # set to close the instance
        self.in_flight = 0  # requests it serves now


class _Opener(BackgroundTasks):
    """Opens instances of one component in its own task group: each stays open until
    its slot's ``close`` event is set (or the group is left)."""

    def __init__(
        self,
        component: Component,
        *,
        wasi: WasiConfig,
        cancel_grace: float,
        limits: Limits | None,
        on_open: Callable[[], object],
        on_close: Callable[[], object],
    ) -> None:
        self.component = component
        self.wasi = wasi
        self.cancel_grace = cancel_grace
        self.limits = limits
        self._on_open = on_open
        self._on_close = on_close

    async def _keep_open(
        self, *, task_status: anyio.abc.TaskStatus[_Slot] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        opened = False
        try:
            async with open_instance(
                self.component, wasi=self.wasi, cancel_grace=self.cancel_grace, limits=self.limits
            ) as instance:
                opened = True
                closed = anyio.Event()
                task_status.started(_Slot(instance, closed))
                await closed.wait()
        finally:
            if opened:
                self._on_close()

    async def _open_one(self) -> _Slot:
        slot: _Slot = await self._tasks.start(self._keep_open)
        self._on_open()  # counted where the caller takes it, without a checkpoint between
        return slot


class FreshInstances(_Opener):
    """A never-used instance for each request, with ``spares`` of them opened ahead.

    Lending takes a spare if one is ready (else opens one for the request), and a task
    of the group opens another in its place; the instance is closed when its request
    is over, whatever happened, so no two requests ever share one. Spares left when
    the group ends are closed unused.

    Args:
      component, wasi, cancel_grace, limits: as for :func:`~trio_isyswasfa.open_instance`.
      spares: instances kept open ahead of requests (0: each request opens its own).
      on_open, on_close: called each time an instance is opened or closed.
    """

    def __init__(
        self,
        component: Component,
        *,
        wasi: WasiConfig,
        cancel_grace: float,
        limits: Limits | None = None,
        spares: int = 2,
        on_open: Callable[[], object] = lambda: None,
        on_close: Callable[[], object] = lambda: None,
    ) -> None:
        if spares < 0:
            raise ValueError(f"spares must not be negative, not {spares}")
        super().__init__(
            component,
            wasi=wasi,
            cancel_grace=cancel_grace,
            limits=limits,
            on_open=on_open,
            on_close=on_close,
        )
        self.spares = spares
        self._ready: list[_Slot] = []  # opened ahead, never lent
        self._wanted = anyio.Event()  # set when a spare was taken

    @property
    def ready(self) -> int:
        """Spare instances open now, waiting for a request."""
        return len(self._ready)

    async def __aenter__(self) -> FreshInstances:
        await super().__aenter__()
        if self.spares:
            self._tasks.start_soon(self._refill)
        return self

    async def _closed(self) -> None:
        self._ready.clear()  # their tasks were cancelled with the group: they are closed

    async def _refill(self) -> None:
        while True:
            while len(self._ready) < self.spares:
                # one at a time, after the requests that wait on the event loop: opening
                # is synchronous work that a request needing one now must not queue behind
                await anyio.lowlevel.checkpoint()
                try:
                    self._ready.append(await self._open_one())
                except IsyswasfaError as exc:
                    # requests open their own, and fail as they would have (500); once
                    # one opens, opening works again and spares are opened anew
                    log.error("cannot open a spare instance, opening none ahead: %s", exc)
                    break
            self._wanted = anyio.Event()
            await self._wanted.wait()

    @asynccontextmanager
    async def lend(
        self, before_wait: Callable[[], object] | None = None
    ) -> AsyncIterator[Instance]:
        """A fresh instance for one request, closed when the request is over;
        ``before_wait`` is called before it waits for one to open."""
        if self._ready:
            slot = self._ready.pop(0)
            self._wanted.set()
        else:
            if before_wait is not None:
                before_wait()
            slot = await self._open_one()
            self._wanted.set()  # (spares were taken, or could not open: try again)
        try:
            yield slot.instance
        finally:
            slot.close.set()


class InstancePool(_Opener):
    """Open instances of one component, each lent to up to ``per_instance`` requests at once.

    Args:
      component, wasi, cancel_grace, limits: as for :func:`~trio_isyswasfa.open_instance`.
      max_idle: instances kept open while no request uses them.
      per_instance: requests one instance serves at once; a request goes to the first
        open instance with room whose guest is not blocked in a host call, so
        instances fill up before another opens.
      on_open, on_close: called each time the pool opens or closes an instance.
    """

    def __init__(
        self,
        component: Component,
        *,
        wasi: WasiConfig,
        cancel_grace: float,
        limits: Limits | None = None,
        max_idle: int = 32,
        per_instance: int = 1,
        on_open: Callable[[], object] = lambda: None,
        on_close: Callable[[], object] = lambda: None,
    ) -> None:
        if per_instance < 1:
            raise ValueError(f"per_instance must be at least 1, not {per_instance}")
        super().__init__(
            component,
            wasi=wasi,
            cancel_grace=cancel_grace,
            limits=limits,
            on_open=on_open,
            on_close=on_close,
        )
        self.max_idle = max_idle
        self.per_instance = per_instance
        self._open: list[_Slot] = []  # sound instances, in the order they opened
        self._opening = anyio.Lock()  # made in the event loop: the pool is entered there

    async def __aenter__(self) -> InstancePool:
        await super().__aenter__()
        return self

    async def _closed(self) -> None:
        self._open.clear()

    async def _open_one(self) -> _Slot:
        slot = await super()._open_one()
        self._open.append(slot)
        return slot

    def _with_room(self) -> _Slot | None:
        found = None
        failed: list[_Slot] = []
        for slot in self._open:
            if slot.instance._sched.failure is not None:
                failed.append(slot)  # it failed between requests (a spawned guest task)
            elif slot.in_flight < self.per_instance and not slot.instance._engine.blocked:
                # (an instance whose guest is blocked in a host call, as in time.sleep,
                # would hold the request up until it returns: another one serves it)
                found = slot
                break
        for slot in failed:
            self._settle(slot)
        return found

    def lend(self, before_wait: Callable[[], object] | None = None) -> _Loan:
        """An instance for one request (``async with``); it stays in the pool while it
        is sound. ``before_wait`` is called before it waits for one (to open, or for
        another request opening one): where that waits, cancel scopes of its own are
        entered in the caller's task."""
        return _Loan(self, before_wait)

    async def _borrow(self, before_wait: Callable[[], object] | None) -> _Slot:
        slot = self._with_room()
        if slot is None and before_wait is not None:
            before_wait()
        if slot is None and self.per_instance > 1:
            # requests arriving together wait for the instance one of them opens
            async with self._opening:
                slot = self._with_room()
                if slot is None:
                    slot = await self._open_one()
        elif slot is None:
            slot = await self._open_one()
        slot.in_flight += 1
        return slot

    def _give_back(self, slot: _Slot, *, clean: bool) -> None:
        slot.in_flight -= 1
        self._settle(slot, clean=clean)

    def _settle(self, slot: _Slot, *, clean: bool = True) -> None:
        """After a request: drop a failed instance, or one whose request did not end
        cleanly (cancelled, or failed with an exception: its guest may be left in any
        state), closed once its requests are over; close an idle one beyond ``max_idle``."""
        instance = slot.instance
        if instance._sched.failure is not None or not clean:
            if slot in self._open:
                self._open.remove(slot)  # new requests go elsewhere
            if slot.in_flight == 0:
                slot.close.set()
            return
        if slot.in_flight > 0:
            return
        if not instance._reusable() or (
            len(self._open) > self.max_idle  # (else the idle ones are not too many)
            and sum(1 for s in self._open if s.in_flight == 0) > self.max_idle
        ):
            self._open.remove(slot)
            slot.close.set()


class _Loan:
    """An instance of an :class:`InstancePool` lent for the ``async with`` block: given
    back when it ends, and kept only if it ended cleanly (a class, not an async
    generator: one of these per request)."""

    __slots__ = ("_before_wait", "_pool", "_slot")

    def __init__(self, pool: InstancePool, before_wait: Callable[[], object] | None) -> None:
        self._pool = pool
        self._before_wait = before_wait
        self._slot: _Slot | None = None

    async def __aenter__(self) -> Instance:
        self._slot = await self._pool._borrow(self._before_wait)
        return self._slot.instance

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            self._pool._give_back(slot, clean=exc_type is None)
