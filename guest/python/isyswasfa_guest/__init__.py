"""isyswasfa_guest: async/await for Python components on the isyswasfa ABI.

Bundled into every Python guest built by ``python -m trio_isyswasfa componentize``. It
imports nothing from the host package. An asyncio event loop runs inside the
component; the host drives it through the exported ``isyswasfa-poll-<suffix>``
function (see ``docs/abi.md``):

* an exported ``async def`` runs as an asyncio task; if it cannot finish during its
  ``-isyswasfa-start`` call, we call ``make-task`` and report ``pending``;
* awaiting an imported async function, or a ``wasi:io/poll.pollable``, emits ``listen``
  and suspends until the host delivers ``ready``;
* :func:`spawn` starts a task that may outlive the call that created it;
* ``asyncio.sleep``, ``wait_for`` and ``timeout`` use a monotonic-clock pollable;
* cancellation works both ways: a host ``cancel`` cancels the task (it sees
  ``CancelledError``), and a cancelled task cancels what it awaits and waits for the
  confirmation before it finishes.
"""

from __future__ import annotations

import asyncio
import heapq
import sys
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "bind",
    "block",
    "first_poll",
    "get_ready",
    "poll",
    "spawn",
    "statistics",
    "wait_pollable",
]

T = TypeVar("T")


class _Bindings:
    """The generated import functions and types this library calls (set by :func:`bind`)."""

    abi: Any  # the bindings module of isyswasfa:isyswasfa/isyswasfa
    io_poll: Any  # the bindings module of isyswasfa:io/poll
    clock: Any  # the bindings module of wasi:clocks/monotonic-clock
    ok: type  # componentize_py_types.Ok
    err: type[BaseException]  # componentize_py_types.Err


_b = _Bindings()


def bind(abi: Any, io_poll: Any, clock: Any, ok: type, err: type[BaseException]) -> None:
    """Connect the library to a world's generated bindings (done by the generated glue)."""
    _b.abi, _b.io_poll, _b.clock, _b.ok, _b.err = abi, io_poll, clock, ok, err


# -- the event loop -----------------------------------------------------------------


class GuestLoop(asyncio.AbstractEventLoop):
    """An asyncio loop with no I/O of its own: ``poll`` and ``first_poll`` run it."""

    def __init__(self) -> None:
        self._ready: deque[asyncio.Handle] = deque()
        self._timers: list[asyncio.TimerHandle] = []
        self._exception: BaseException | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self._timer_deadline: int | None = None

    # scheduling
    def call_soon(
        self, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.Handle:  # type: ignore[override]
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    call_soon_threadsafe = call_soon  # type: ignore[assignment]

    def call_at(
        self, when: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:  # type: ignore[override]
        handle = asyncio.TimerHandle(when, callback, args, self, context)
        heapq.heappush(self._timers, handle)
        handle._scheduled = True  # type: ignore[attr-defined]
        return handle

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:  # type: ignore[override]
        return self.call_at(self.time() + delay, callback, *args, context=context)

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        pass  # cancelled timers are skipped when they reach the top of the heap

    def time(self) -> float:
        return float(_b.clock.now()) / 1e9

    # futures and tasks
    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(self, coro: Any, *, name: Any = None, context: Any = None) -> asyncio.Task[Any]:  # type: ignore[override]
        return asyncio.Task(coro, loop=self, name=name, context=context)

    # state
    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return True

    def is_closed(self) -> bool:
        return False

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = context.get("message", "unhandled exception in guest task")
        print(f"isyswasfa_guest: {message}", file=sys.stderr)
        if exc is not None:
            traceback.print_exception(exc, file=sys.stderr)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.call_exception_handler(context)

    # running
    def run_ready(self) -> None:
        """Run callbacks until nothing is runnable, then arrange to wake for timers."""
        while True:
            if self._timers:
                self._move_due_timers()
            if not self._ready:
                break
            for _ in range(len(self._ready)):
                handle = self._ready.popleft()
                if not handle._cancelled:  # type: ignore[attr-defined]
                    handle._run()  # type: ignore[attr-defined]
        self._arm_timer()

    def _move_due_timers(self) -> None:
        now = self.time()
        while self._timers and (self._timers[0].cancelled() or self._timers[0].when() <= now):
            handle = heapq.heappop(self._timers)
            if not handle.cancelled():
                self._ready.append(handle)

    def _arm_timer(self) -> None:
        while self._timers and self._timers[0].cancelled():
            heapq.heappop(self._timers)
        if not self._timers:
            if self._timer_task is not None and not self._timer_task.done():
                self._timer_task.cancel()
                self._timer_task = None
                self._timer_deadline = None
                self.run_ready()
            return
        deadline = int(self._timers[0].when() * 1e9) + 1
        if self._timer_deadline is not None and self._timer_deadline <= deadline:
            return
        if self._timer_task is not None:
            self._timer_task.cancel()
        self._timer_deadline = deadline
        self._timer_task = self.create_task(self._sleep_until(deadline))
        self.run_ready()

    async def _sleep_until(self, deadline: int) -> None:
        try:
            with _b.clock.subscribe_instant(deadline) as pollable:
                await wait_pollable(pollable)
        finally:
            if self._timer_deadline == deadline:
                self._timer_deadline = None
                self._timer_task = None

    # unsupported
    def run_forever(self) -> None:
        raise RuntimeError("the host drives this loop; use spawn() or an async export")

    def run_until_complete(self, future: Any) -> Any:
        raise RuntimeError("the host drives this loop; await the coroutine instead")


_loop = GuestLoop()


def _enter() -> None:
    asyncio.events._set_running_loop(_loop)


# -- protocol state ----------------------------------------------------------------


_MASK = 0xFFFF_FFFF


class _Ids:
    """u32 cookies that wrap around and skip those still in use."""

    def __init__(self) -> None:
        self._next = 1

    def take(self, in_use: dict[int, Any]) -> int:
        while True:
            value = self._next
            self._next = (self._next + 1) & _MASK or 1
            if value not in in_use:
                return value


@dataclass
class _Listen:
    """One await of a pending handle (caller side); keyed by its listen-state."""

    future: asyncio.Future[Any]
    cancel: Any = None  # the cancel handle, once `listening` arrived
    mode: str = "waiting"  # waiting | abandoned | cancelling
    settled: asyncio.Future[None] | None = None
    on_abandon: Callable[[Any], object] | None = None


@dataclass
class _Export:
    """One exported call that went pending (callee side); keyed by its future-state."""

    task: asyncio.Task[Any]
    ready: Any  # the ready handle from make-task, until we report completion
    cancel: Any = None  # set when the host asked us to cancel
    reported: bool = False


@dataclass
class _State:
    listens: dict[int, _Listen] = field(default_factory=dict)
    exports: dict[int, _Export] = field(default_factory=dict)
    spawned: set[asyncio.Task[Any]] = field(default_factory=set)
    outputs: list[Any] = field(default_factory=list)
    listen_ids: _Ids = field(default_factory=_Ids)
    export_ids: _Ids = field(default_factory=_Ids)


_s = _State()


def statistics() -> dict[str, int]:
    """Counts of live protocol state, for tests and leak checks."""
    return {
        "listens": len(_s.listens),
        "exports": len(_s.exports),
        "spawned": len(_s.spawned),
        "buffered_outputs": len(_s.outputs),
        "timers": sum(1 for t in _loop._timers if not t.cancelled()),
    }


# -- callee side: exports ------------------------------------------------------------


def first_poll(coro: Coroutine[Any, Any, Any], *, wraps_result: bool = False) -> Any:
    """Run an exported coroutine until it blocks; used by ``*-isyswasfa-start`` glue.

    Returns the value if it finished; otherwise calls ``make-task``, buffers ``pending``
    and raises ``Err(pending)``. With ``wraps_result`` (the WIT result is a
    ``result<T, E>``) an ``Err`` raised by the coroutine is returned as the value and a
    plain value is wrapped in ``Ok``.
    """
    _enter()
    task = _start_task(coro)
    _loop.run_ready()
    if task.done():
        return _wrapped_result(task) if wraps_result else task.result()
    pending, cancel, ready = _b.abi.make_task()
    fid = _s.export_ids.take(_s.exports)
    _s.exports[fid] = _Export(task=task, ready=ready)
    task.add_done_callback(lambda _t: _export_done(fid))
    _s.outputs.append(_b.abi.PollOutput_Pending(_b.abi.PollOutputPending(fid, cancel)))
    raise _b.err(pending)


if sys.version_info >= (3, 12):

    def _start_task(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task whose first step runs now (an export that completes at once then
        costs no trip through the loop)."""
        return asyncio.Task(coro, loop=_loop, eager_start=True)

else:  # pragma: no cover - guests run CPython 3.12+; the library's own tests may not

    def _start_task(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return _loop.create_task(coro)


def _wrapped_result(task: asyncio.Task[Any]) -> Any:
    try:
        return _b.ok(task.result())
    except _b.err as exc:
        return exc


def _export_done(fid: int) -> None:
    record = _s.exports[fid]
    if record.cancel is not None:
        # cancelled on the host's request: confirm, and forget the outcome
        _drop(record.ready)
        del _s.exports[fid]
        if not record.task.cancelled() and record.task.exception() is not None:
            _loop.call_exception_handler(
                {"message": "exception in cancelled export", "exception": record.task.exception()}
            )
        _s.outputs.append(_b.abi.PollOutput_CancelComplete(record.cancel))
        return
    record.reported = True
    ready, record.ready = record.ready, None
    _s.outputs.append(_b.abi.PollOutput_Ready(_b.abi.PollOutputReady(fid, ready)))


def get_ready(ready: Any) -> Any:
    """Return the value of a finished export (or raise its ``Err``); for ``-result`` glue."""
    _enter()
    with ready:
        fid = ready.state()
    record = _s.exports.pop(fid, None)
    if record is None or not record.reported:
        raise RuntimeError(f"isyswasfa: no finished call with state {fid}")
    return record.task.result()


# -- caller side: awaiting pending handles --------------------------------------------


async def await_ready(pending: Any, on_abandon: Callable[[Any], object] | None = None) -> Any:
    """Wait until the host reports ``pending`` ready; return the ``ready`` handle.

    If the awaiting task is cancelled, ask the host to cancel the operation and wait
    for its confirmation before re-raising ``CancelledError``. ``on_abandon`` receives
    a ``ready`` handle that arrived too late to be used (to free the callee's value).
    """
    lid = _s.listen_ids.take(_s.listens)
    listen = _Listen(future=_loop.create_future(), on_abandon=on_abandon)
    _s.listens[lid] = listen
    _s.outputs.append(_b.abi.PollOutput_Listen(_b.abi.PollOutputListen(lid, pending)))
    try:
        return await listen.future
    except asyncio.CancelledError:
        await _abandon(lid, listen)
        raise


async def _abandon(lid: int, listen: _Listen) -> None:
    if listen.future.done() and not listen.future.cancelled():
        _discard_ready(listen, listen.future.result())
        return
    if _s.listens.get(lid) is not listen:
        # settled already: its `ready` came in the poll that cancelled this task, after
        # the cancel (so the future was cancelled) but before the task ran; it was
        # discarded then, and nothing more will come for it
        return
    listen.settled = _loop.create_future()
    if listen.cancel is not None:
        cancel, listen.cancel = listen.cancel, None
        listen.mode = "cancelling"
        _s.outputs.append(_b.abi.PollOutput_Cancel(cancel))
    else:
        listen.mode = "abandoned"
    while not listen.settled.done():
        try:
            await asyncio.shield(listen.settled)
        except asyncio.CancelledError:
            continue


def _discard_ready(listen: _Listen, ready: Any) -> None:
    if listen.on_abandon is not None:
        listen.on_abandon(ready)
    else:
        _drop(ready)


def _settle(lid: int, listen: _Listen) -> None:
    _s.listens.pop(lid, None)
    if listen.settled is not None and not listen.settled.done():
        listen.settled.set_result(None)


def _drop(handle: Any) -> None:
    if handle is not None:
        handle.__exit__(None, None, None)


# -- the poll export -----------------------------------------------------------------


def poll(inputs: list[Any]) -> list[Any]:
    """Apply the host's events, run everything runnable, return buffered outputs."""
    _enter()
    abi = _b.abi
    for event in inputs:
        if isinstance(event, abi.PollInput_Ready):
            lid, ready = event.value.state, event.value.ready
            listen = _listen(lid)
            _drop(listen.cancel)
            listen.cancel = None
            if listen.mode == "waiting" and not listen.future.done():
                del _s.listens[lid]
                listen.future.set_result(ready)
            elif listen.mode == "cancelling":
                _discard_ready(listen, ready)  # cancel-complete still follows
            else:
                _discard_ready(listen, ready)
                _settle(lid, listen)
        elif isinstance(event, abi.PollInput_Listening):
            lid, cancel = event.value.state, event.value.cancel
            listen = _listen(lid)
            if listen.mode == "abandoned":
                listen.mode = "cancelling"
                _s.outputs.append(abi.PollOutput_Cancel(cancel))
            else:
                listen.cancel = cancel
        elif isinstance(event, abi.PollInput_Cancel):
            fid, cancel = event.value.state, event.value.cancel
            record = _s.exports.get(fid)
            if record is None or record.cancel is not None:
                raise RuntimeError(f"isyswasfa: cancel for unknown call {fid}")
            if record.reported:
                # finished, but the caller gave up before fetching: discard the value
                del _s.exports[fid]
                _s.outputs.append(abi.PollOutput_CancelComplete(cancel))
            else:
                record.cancel = cancel
                record.task.cancel()
        elif isinstance(event, abi.PollInput_CancelComplete):
            lid = event.value
            _settle(lid, _listen(lid))
        else:
            raise RuntimeError(f"isyswasfa: unknown poll input {event!r}")
    _loop.run_ready()
    outputs = _s.outputs[:]
    _s.outputs.clear()
    return outputs


def _listen(lid: int) -> _Listen:
    listen = _s.listens.get(lid)
    if listen is None:
        raise RuntimeError(f"isyswasfa: event for unknown listen state {lid}")
    return listen


# -- public helpers ------------------------------------------------------------------


def spawn(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Start ``coro`` as a task that may outlive the call that spawned it.

    It runs at once until it first blocks, then whenever the host delivers its events.
    An exception escaping it is printed to stderr; nothing else is affected.
    """
    _enter()
    task = _loop.create_task(coro)
    _s.spawned.add(task)
    task.add_done_callback(_spawned_done)
    return task


def _spawned_done(task: asyncio.Task[Any]) -> None:
    _s.spawned.discard(task)
    if not task.cancelled() and task.exception() is not None:
        _loop.call_exception_handler(
            {"message": "exception in spawned task", "exception": task.exception(), "task": task}
        )


async def wait_pollable(pollable: Any) -> None:
    """Wait until a ``wasi:io/poll.pollable`` is ready, letting other tasks run."""
    try:
        _b.io_poll.block_isyswasfa_start(pollable)
    except _b.err as exc:
        ready = await await_ready(exc.value, _drop)  # type: ignore[attr-defined]
        _b.io_poll.block_isyswasfa_result(ready)


block = wait_pollable


async def call_import(
    start: Callable[..., Any],
    result: Callable[[Any], Any],
    args: tuple[Any, ...],
    pending_type: type,
    unwrap_result: bool = False,
) -> Any:
    """Call a lowered import: ``start(*args)``; if it went pending, await and ``result``.

    ``pending_type`` tells a pending handle apart from an error value. With
    ``unwrap_result`` (the import's own result is ``result<T, E>``) a finished start
    returns ``Ok``/``Err`` values: we return ``T`` or raise the ``Err``, as ``-result`` does.
    """
    try:
        value = start(*args)
    except _b.err as exc:
        payload = exc.value  # type: ignore[attr-defined]
        if not isinstance(payload, pending_type):
            raise
        return result(await await_ready(payload, result))
    if unwrap_result:
        if isinstance(value, _b.err):
            raise value
        return value.value
    return value


def sleep_ns(duration_ns: int) -> Awaitable[None]:
    """Sleep on a monotonic-clock pollable for ``duration_ns`` nanoseconds."""

    async def _sleep() -> None:
        with _b.clock.subscribe_duration(duration_ns) as pollable:
            await wait_pollable(pollable)

    return _sleep()
