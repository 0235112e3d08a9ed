"""Loading components, linking them against our WASI and the isyswasfa host side,
and the embedding API for trio (and asyncio) applications.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from . import _engine, _seam
from ._engine import Err, ImportedItem, ResourceDef, ResourceKind, strip_version
from ._errors import (
    GuestProtocolError,
    HostProtocolError,
    IsyswasfaError,
    LinkError,
    LoadError,
    WasiError,
)
from ._limits import Limits
from ._protocol import TaskState
from ._scheduler import Scheduler, close_unstarted
from .wasi import WasiConfig
from .wasi._context import WasiContext
from .wasi.cli import ComponentExit, WasiCli
from .wasi.clocks import WasiClocks
from .wasi.filesystem import WasiFilesystem
from .wasi.io import Pollable, WasiIo
from .wasi.random import WasiRandom
from .wasi.sockets import WasiSockets, parse_allow_net

if TYPE_CHECKING:
    from .http.types import WasiHttp
    from .http.wasi_http import WasiHttpP2

ABI = "isyswasfa:isyswasfa/isyswasfa"
IO_POLL = "isyswasfa:io/poll"
TRAP = "isyswasfa:isyswasfa/trap"
START = "-isyswasfa-start"
RESULT = "-isyswasfa-result"
POLL_PREFIX = "isyswasfa-poll"
RUN = "wasi:cli/run"
PROXY_HANDLER = "wasi:http/incoming-handler"


def describe_exports(exports: Mapping[str, Any]) -> str:
    """What a component exports, in one line (for errors naming what it is instead)."""
    names = [i for i in exports if i] + sorted(exports.get("", ()))
    return ", ".join(names) if names else "nothing"


# packages whose functions we do not know (a later 0.2.x may add some) answer this code
_DENIED = {"wasi:sockets": "not-supported"}

# the WASI versions we implement: every 0.2.x release, and isyswasfa's wasi:http draft
_WASI_HTTP_DRAFT = "0.3.0-draft"


def is_p2_version(version: str) -> bool:
    """Whether ``version`` is a WASI 0.2.x release (``0.2.0``, ``0.2.9``…)."""
    major, _, rest = version.partition(".")
    minor, _, patch = rest.partition(".")
    # (ASCII digits only: str.isdigit takes '²' and '٨')
    return (major, minor) == ("0", "2") and patch.isascii() and patch.isdigit()


@functools.lru_cache(maxsize=1024)
def interface_key(interface: str) -> str:
    """Which of our implementations an imported interface links to: its name without
    the version, except for ``wasi:http``, whose 0.2.x releases (``…@0.2``) and
    isyswasfa's draft share names but not types. Cached: every instance resolves each
    of its component's imports through it (a tenth of opening a Rust proxy instance)."""
    name, _, version = interface.partition("@")
    if name.startswith("wasi:http/") and is_p2_version(version):
        return f"{name}@0.2"
    return name


def wasi_version_problem(interface: str) -> str | None:
    """Why a ``wasi:`` import of this version cannot be linked, or None if it can.

    Names and types of a 0.1, 0.3 or pre-release interface can match ours by chance;
    linking it would misbehave instead of failing clearly.
    """
    name, _, version = interface.partition("@")
    if not name.startswith("wasi:") or not version:
        return None
    if is_p2_version(version):
        return None
    if name.startswith("wasi:http/"):
        if version == _WASI_HTTP_DRAFT:
            return None
        wanted = f"wasi:http 0.2.x or wasi:http@{_WASI_HTTP_DRAFT} (isyswasfa's draft)"
    else:
        wanted = "WASI 0.2.x"
    return f"imports {interface}, but this host implements {wanted}"


def _is_http_draft(interface: str) -> bool:
    """Whether an import is of isyswasfa's wasi:http draft (not a 0.2.x release)."""
    return interface.startswith("wasi:http/") and not interface_key(interface).endswith("@0.2")


ImportImpl = Callable[..., Any]
"""An import implementation: ``async def`` (runs as a host task) or a plain function."""


def _same(value: Any) -> Any:
    """The awaitable a plain import function returned, as the import's work
    (``Instance._async_import``)."""
    return value


def _is_async(impl: object) -> bool:
    """Whether an import implementation is an ``async def``: itself, what it wraps
    (``functools.wraps``, ``functools.partial``) or, for an object, its ``__call__``."""
    if inspect.iscoroutinefunction(impl):
        return True
    unwrapped = inspect.unwrap(impl) if callable(impl) else impl
    while isinstance(unwrapped, functools.partial):
        unwrapped = inspect.unwrap(unwrapped.func)
    if inspect.iscoroutinefunction(unwrapped):
        return True
    if inspect.isfunction(unwrapped) or inspect.ismethod(unwrapped):
        return False
    call = inspect.getattr_static(type(unwrapped), "__call__", None)
    return inspect.iscoroutinefunction(call)


class Component:
    """A compiled component, ready to be instantiated any number of times.

    Use :func:`load_component` to make one.
    """

    def __init__(self, loaded: _seam.EngineComponent, name: str) -> None:
        self._loaded = loaded
        self.name = name
        # worked out once: every instance would refuse to link for the same reason
        self._version_problem = next(
            filter(None, map(wasi_version_problem, loaded.interfaces)), None
        )
        self._exports = loaded.exports
        self.poll_exports = sorted(n for n in self._exports[""] if n.startswith(POLL_PREFIX))
        if not self.poll_exports and not self.is_command and self.proxy_handler is None:
            raise LinkError(
                f"{name} has no {POLL_PREFIX}-* export: it was not built for isyswasfa "
                f"(and is neither a wasi:cli command nor a wasi:http proxy); "
                f"it exports {describe_exports(self._exports)}"
            )

    @property
    def is_command(self) -> bool:
        """Whether it exports ``wasi:cli/run`` (so :func:`run_command` can run it)."""
        return any(strip_version(i) == RUN for i, funcs in self._exports.items() if "run" in funcs)

    @property
    def proxy_handler(self) -> str | None:
        """The ``wasi:http/incoming-handler@0.2.x`` interface it exports (a standard
        ``wasi:http/proxy`` component, served without isyswasfa), or None."""
        for iface, funcs in self._exports.items():
            name, _, version = iface.partition("@")
            if name == PROXY_HANDLER and is_p2_version(version) and "handle" in funcs:
                return iface
        return None

    @property
    def engine(self) -> str:
        """The engine it runs on: ``"wasmtime"`` or ``"own"``."""
        return self._loaded.engine

    @property
    def imports(self) -> list[str]:
        """The interfaces (and root functions) the component imports."""
        return self._loaded.interfaces

    def exports(self) -> dict[str, list[str]]:
        """Exported functions by interface (``""`` for the root); async ones unsplit."""
        out: dict[str, list[str]] = {}
        for iface, funcs in self._exports.items():
            names = []
            for name in funcs:
                if name.endswith(RESULT):
                    continue
                names.append(name.removesuffix(START))
            out[iface] = sorted(names)
        return out


def load_component(
    source: str | Path | bytes, *, use_cache: bool = True, engine: str | None = None
) -> Component:
    """Compile (or fetch from the on-disk cache) a component file or its bytes.

    Args:
      source: a path, or the component's bytes.
      use_cache: keep compiled code on disk (``$TRIO_ISYSWASFA_CACHE``).
      engine: what runs it: ``"wasmtime"`` (wasmtime-py's component API) or ``"own"``
        (our canonical ABI over wasmtime's core API); by default
        ``$TRIO_ISYSWASFA_ENGINE``, else ``"own"``.

    Raises:
      LoadError: the file is missing or is not a component.
      LinkError: it has no ``isyswasfa-poll-*`` export (and is no ``wasi:cli`` command).
      HostProtocolError: ``engine`` names no engine.
    """
    if isinstance(source, bytes):
        return Component(_seam.load(source, engine=engine, use_cache=use_cache), "<bytes>")
    path = Path(source)
    try:
        loaded = _seam.load_file(path, engine=engine, use_cache=use_cache)
    except OSError as exc:
        raise LoadError(f"cannot read {path}: {exc.strerror}") from exc
    return Component(loaded, str(path))


@dataclass(frozen=True)
class InstanceStatistics:
    """What is alive inside one instance (see :meth:`Instance.statistics`).

    Attributes:
      tasks: live isyswasfa tasks (async operations with handles still naming them).
      host_tasks_running: host imports and pollable waits still running.
      pollables_waiting: of those, waits on pollables.
      guest_tasks: pending export calls of guests (callee side).
      isyswasfa_handles: live ``pending``/``cancel``/``ready`` handles.
      wasi_handles: live WASI resources by kind (pollables, streams, …).
      calls_in_flight: :meth:`Instance.call` calls not yet returned.
      poll_calls: calls of poll exports so far.
      listens: awaits of pending operations guests announced so far (suspension points).
      cancels_sent: cancellation requests delivered to guests so far.
      cancels_confirmed: cancellations guests confirmed so far.
      guest_seconds: time spent running guest code so far (in export and poll calls,
        less the host functions the guest called): the part of a workload no host can
        make faster.
      store_waits: export and poll calls so far that had to wait in line for the
        instance's store (another call held it, suspended in a blocking host call or
        at the end of its time slice).
      store_wakeups: times such a waiting call was woken so far: one per wait (the
        store goes to the first in line), however long the line.
      host_tasks_started: host tasks started so far (async imports, and waits on
        pollables other than clocks: a clock pollable's wait shares one timer).
      timer_wakeups: times the timer shared by clock pollable waits woke so far (once
        for any number of waits due together).
    """

    tasks: int
    host_tasks_running: int
    pollables_waiting: int
    guest_tasks: int
    isyswasfa_handles: int
    wasi_handles: dict[str, int]
    calls_in_flight: int
    poll_calls: int
    listens: int
    cancels_sent: int
    cancels_confirmed: int
    guest_seconds: float
    store_waits: int
    store_wakeups: int
    host_tasks_started: int
    timer_wakeups: int


class Instance:
    """A running component instance. Make one with :func:`open_instance`."""

    def __init__(
        self,
        component: Component,
        imports: Mapping[str, Mapping[str, ImportImpl]],
        wasi: WasiConfig,
        cancel_grace: float = 10.0,
        limits: Limits | None = None,
    ) -> None:
        if component._version_problem is not None:
            raise LinkError(component._version_problem)
        self.component = component
        self._user_imports = {strip_version(k): dict(v) for k, v in imports.items()}
        self._wasi = WasiContext(wasi, max_handles=limits.max_handles if limits else None)
        self._wasi.own = component._loaded.own_handle
        self._io = WasiIo(self._wasi)
        WasiClocks(self._wasi, self._io)
        WasiRandom(self._wasi)
        WasiCli(self._wasi)
        WasiFilesystem(self._wasi, self._io)
        WasiSockets(self._wasi, parse_allow_net(wasi.allow_net))
        # wasi:http only for components that import it: the http package costs ~10 ms
        # to import (a command's start-up) and defining 0.2 ~0.4 ms per instance
        self._http_outgoing = wasi.http_outgoing
        self._http_draft: WasiHttp | None = None
        if any(_is_http_draft(i) for i in component.imports):
            self._http_draft = self._http
        self._http_p2: WasiHttpP2 | None = None
        if any(interface_key(i).endswith("@0.2") for i in component.imports):
            from .http.wasi_http import WasiHttpP2  # the http package builds on this module

            self._http_p2 = WasiHttpP2(
                self._wasi,
                wasi.http_outgoing,
                lambda work: self._sched.spawn(work),
                component._loaded.own_handle,
            )
        self._engine = component._loaded.instantiate(self._resolve, limits)
        self._sched = Scheduler(
            self._engine.handle_rep,
            cancel_grace=cancel_grace,
            max_tasks=limits.max_handles if limits else None,
            own_handle=self._engine.own_handle,
            events_as_values=component._loaded.engine == "own",
        )
        self._own = self._engine.own_handle  # isyswasfa's handles, in the engine's shape
        # our own engine's handles of host resources are their reps: none is converted
        self._handles_are_reps = component._loaded.engine == "own"
        self._sched.set_polls([self._engine.func("", name) for name in component.poll_exports])
        self._wasi.scheduler = self._sched  # blocking polls share its waits
        self._funcs: dict[tuple[str, str], Any] = {}

    @property
    def _http(self) -> WasiHttp:
        """wasi:http@0.3.0-draft for this instance: defined before instantiation when the
        component imports it, else made on first use (by a server handing it a request)."""
        if self._http_draft is None:
            from .http.types import WasiHttp  # the http package builds on this module

            self._http_draft = WasiHttp(self._wasi, self._http_outgoing)
        return self._http_draft

    # -- linking ------------------------------------------------------------------------
    def _resolve(self, item: ImportedItem) -> _engine.Resolved:
        iface = interface_key(item.interface)
        key = (iface, item.name)
        if iface == ABI:
            return self._abi_item(item)
        if iface == IO_POLL:
            return self._io_poll_item(item)
        if iface == TRAP and item.name == "set-reason":
            return self._set_trap_reason
        if item.func_type is None:
            # None: a resource `use`d from another interface, defined there
            return self._wasi.resources.get(key)
        fn = self._wasi.functions.get(key)
        if fn is not None:
            return fn
        for suffix in (START, RESULT):
            if item.name.endswith(suffix):
                builtin = self._wasi.async_functions.get((iface, item.name.removesuffix(suffix)))
                if builtin is not None:
                    work, finish = builtin
                    if suffix == START:
                        label = f"{item.interface}#{item.name}"
                        return self._async_import(label, work, builtin=True)
                    return lambda rep: finish(self._sched.core.take_host_value(rep))
        user = self._user_imports.get(iface, {}) if iface else self._user_imports.get("", {})
        if item.name.endswith(START):
            base = item.name.removesuffix(START)
            impl = user.get(base)
            if impl is not None:
                return self._async_import(f"{item.interface}#{base}", impl)
        elif item.name.endswith(RESULT):
            base = item.name.removesuffix(RESULT)
            if user.get(base) is not None:
                return self._sched_take_value
        elif item.name in user:
            impl = user[item.name]
            if _is_async(impl):
                raise LinkError(
                    f"{item.interface or 'the root'}#{item.name} is given an async "
                    "implementation, but the WIT function is not async: give a plain "
                    "function, or declare the WIT function async (lower the WIT)"
                )
            return impl
        package = iface.split("/")[0]
        if package in _DENIED:
            return _denied(_DENIED[package], item)
        where = item.interface or "the root"
        raise LinkError(f"imports {item.name} from {where}, which this host does not provide")

    def _abi_item(self, item: ImportedItem) -> _engine.HostFunc | ResourceDef | None:
        kinds = {
            "pending": ResourceKind.PENDING,
            "cancel": ResourceKind.CANCEL,
            "ready": ResourceKind.READY,
        }
        if item.func_type is None:
            return (
                ResourceDef(kinds[item.name], self._handle_dropped) if item.name in kinds else None
            )
        if item.name == "make-task":
            return self._make_task
        if item.name == "[method]ready.state":
            return self._ready_state
        raise LinkError(f"unknown isyswasfa ABI item {item.name}")

    def _io_poll_item(self, item: ImportedItem) -> _engine.HostFunc | None:
        if item.func_type is None:
            return None
        if item.name == "block" + START:
            return self._block_start
        if item.name == "block" + RESULT:
            return self._sched_take_value
        raise LinkError(f"unknown item {item.name} of {IO_POLL}")

    # -- isyswasfa host functions ---------------------------------------------------------
    def _handle_dropped(self, rep: int) -> None:
        actions = self._sched.core.handle_dropped(rep)
        if actions:
            self._sched.apply(actions)

    def _set_trap_reason(self, message: str) -> None:
        # the guest's words for the trap it is about to raise: the GuestTrap carries them
        self._engine.faults.reason = message

    def _make_task(self) -> Any:
        rep = self._sched.core.make_task()
        if self._handles_are_reps:
            return (rep, rep, rep)
        handle = self._own
        return (
            handle(rep, ResourceKind.PENDING),
            handle(rep, ResourceKind.CANCEL),
            handle(rep, ResourceKind.READY),
        )

    def _ready_state(self, rep: int) -> int:
        task = self._sched.core.task(rep)
        if task.callee_poll is None:
            raise GuestProtocolError("ready.state on a handle that names no guest call")
        return task.callee_state

    def _async_import(
        self, label: str, impl: ImportImpl, *, builtin: bool = False
    ) -> _engine.HostFunc:
        """``-isyswasfa-start`` for ``impl``: an ``async def`` of the embedder's, or a
        built-in (``builtin``: a plain function returning an awaitable)."""

        def start(*args: Any) -> Any:
            # calling it now runs a built-in's synchronous part (taking the handles the
            # guest passed) during the guest's call; a coroutine function only makes
            # its coroutine here; the guest gets the host task's ``pending`` handle
            # (``work`` is closed unstarted if the task cannot start)
            work = impl(*args)
            try:
                rep = self._sched.start_host_task(label, work)
            except BaseException:
                close_unstarted(work)
                raise
            return Err(rep if self._handles_are_reps else self._own(rep, ResourceKind.PENDING))

        if builtin or _is_async(impl):
            return start
        # a plain function finishes at once (`ok(value)`), unless it hands back an
        # awaitable (an async function behind a decorator that hides it): that runs as a
        # host task, as if it were an `async def` (started by the same code, given the
        # awaitable: one more Python call on this rare path, none on the usual one)
        start_work = self._async_import(label, _same, builtin=True)

        def start_or_finish(*args: Any) -> Any:
            value = impl(*args)
            return start_work(value) if inspect.isawaitable(value) else value

        return start_or_finish

    def _sched_take_value(self, rep: int) -> Any:
        return self._sched.core.take_host_value(rep)

    def _block_start(self, rep: int) -> Any:
        pollable = self._wasi.table.get(rep, Pollable)
        if pollable.ready():
            return None
        deadline = pollable.deadline()
        if deadline is not None:  # only time makes it ready: it shares the one timer
            return Err(self._own(self._sched.start_timed_wait(deadline), ResourceKind.PENDING))

        async def wait() -> None:
            while not pollable.ready():
                await pollable.wait()

        # guest tasks waiting on one stream share a host task
        task = self._sched.start_shared_wait(pollable.source(), wait)
        return Err(self._own(task, ResourceKind.PENDING))

    # -- calling exports ------------------------------------------------------------------
    async def call(self, interface: str, name: str, *args: Any) -> Any:
        """Call export ``name`` of ``interface`` (``""`` for a root function) and return its value.

        An async export is called through its start/result pair, awaiting the guest's
        task concurrently with everything else. If the caller's scope is cancelled,
        the guest task is cancelled; we wait for the guest to confirm, then the
        cancellation propagates. A WIT ``result`` comes back as :class:`Ok` or
        :class:`Err` (exported from the package).

        Raises:
          GuestTrap: the guest trapped; the instance is dead afterwards.
          GuestProtocolError: the guest broke the protocol; likewise.
          InstanceDead: the instance had already failed.
          LinkError: no such export.
        """
        sched = self._sched
        if sched.failure is not None:
            sched.check_alive()
        entry = self._funcs.get((interface, name))  # (bound once per name)
        start, result = entry if entry is not None else self._lookup(interface, name)
        sched.calls_in_flight += 1
        # (one coroutine frame for the whole call: a pending call holds its frames, and
        # 100,000 of them held ~20 MiB more through a helper coroutine)
        try:
            if result is None:
                value = await start.call(*args)
                self._after_guest_ran()
                return value
            outcome = await start.call(*args)
            if outcome.__class__ is not _engine.Err:
                self._after_guest_ran()
                return outcome.value
            rep = outcome.value
            if rep.__class__ is not int:  # (a rep already on our own engine)
                rep = self._pending_rep(rep)
            del outcome  # (a pending call holds what its frame holds)
            waiter = sched.host_awaits(rep)
            try:
                # the wait is here, not in a coroutine of the scheduler's: each pending
                # call holds one frame of ours and trio's trap, nothing more
                while (state := sched.guest_call_state(rep)) is TaskState.PENDING:
                    if self._engine.before_wait is not None:  # (the seam's says why)
                        self._engine.waits_now()
                    await waiter.wait()
                ready = state is TaskState.READY
                if ready and self._engine.turns._held:
                    if self._engine.before_wait is not None:
                        self._engine.waits_now()
                    # another call has the store (at an epoch tick, say): `-result`
                    # waits for it here, where a cancellation still cancels the guest
                    # task (it discards the value and confirms), rather than after the
                    # `ready` handle is taken, which would then never reach the guest
                    # (the turn is left free for `-result` alone: nothing between may
                    # raise, or the calls in line would wait for ever)
                    await self._engine.turns.wait_free()
                    ready = sched.guest_call_ready(rep)
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    await sched.cancel_guest_call(rep)
                raise
            finally:
                sched.forget_waiter(rep)
            if not ready:
                raise HostProtocolError("guest call ended without a result")  # pragma: no cover
            # (no checkpoint from here until the guest has the `ready` handle: the
            # store is free, and `-result` takes it at once)
            sched.core.take_host_call_ready(rep)
            value = await result.call(
                rep if self._handles_are_reps else self._own(rep, ResourceKind.READY)
            )
            self._after_guest_ran()
            return value
        except (HostProtocolError, LinkError):
            raise  # the embedder's mistake: the instance is fine
        except IsyswasfaError as exc:
            self._sched.fail(exc)
            raise
        finally:
            sched.calls_in_flight -= 1
            fault = self._engine.faults.fault
            if fault is not None and sched.failure is None:
                sched.fail(fault)  # e.g. abandoned while blocked, then cancelled

    def _pending_rep(self, handle: Any) -> int:
        """The rep of the ``pending`` handle a start export returned."""
        try:
            return self._engine.handle_rep(handle)
        except GuestProtocolError:
            raise GuestProtocolError("start function's err is not a pending handle") from None

    def _after_guest_ran(self) -> None:
        # guest code ran: poll the guests, unless no task is alive (then none has
        # anything to report, and a call into a Python guest costs ~0.1 ms)
        if self._sched.core.has_tasks():
            self._sched.poke()

    def _lookup(self, interface: str, name: str) -> tuple[Any, Any]:
        key = (interface, name)
        if key not in self._funcs:
            iface = self._find_interface(interface)
            exports = self._engine.export_names().get(iface, {})
            if name + START in exports:
                self._funcs[key] = (
                    self._engine.func(iface, name + START),
                    self._engine.func(iface, name + RESULT),
                )
            else:
                self._funcs[key] = (self._engine.func(iface, name), None)
        return self._funcs[key]  # type: ignore[no-any-return]

    def _find_interface(self, interface: str) -> str:
        names = self._engine.export_names()
        if interface in names:
            return interface
        matches = [n for n in names if n and strip_version(n) == strip_version(interface)]
        if len(matches) == 1:
            return matches[0]
        raise LinkError(f"the component exports no interface {interface!r}")

    def _reusable(self) -> bool:
        """Sound, and no call in flight: it may serve another request."""
        return self._sched.failure is None and self._sched.calls_in_flight == 0

    def _handle_rep(self, handle: Any) -> int:
        """The rep behind a host resource handle the guest returned (it is ours now)."""
        return self._engine.handle_rep(handle)

    def statistics(self) -> InstanceStatistics:
        """Live tasks, handles and host work, for tests that check nothing leaked."""
        core = self._sched.core.statistics()
        turns = self._engine.turns.statistics()
        return InstanceStatistics(
            tasks=core.tasks,
            host_tasks_running=self._sched.host_scope_count(),
            pollables_waiting=self._sched.host_scope_count("pollable"),
            guest_tasks=core.guest_tasks,
            isyswasfa_handles=core.handles,
            wasi_handles=self._wasi.table.counts(),
            calls_in_flight=self._sched.calls_in_flight,
            poll_calls=self._sched.poll_calls,
            listens=self._sched.counts["listen"],
            cancels_sent=self._sched.counts["cancel-sent"],
            cancels_confirmed=self._sched.counts["cancel-complete"],
            guest_seconds=self._engine.guest_seconds,
            store_waits=turns.waits,
            store_wakeups=turns.wakeups,
            host_tasks_started=self._sched.host_tasks_started,
            timer_wakeups=self._sched.timer_wakeups,
        )


def _denied(code: str, item: ImportedItem) -> _engine.HostFunc:
    if _engine.returns_result(item):

        def deny(*_args: Any) -> Any:
            raise WasiError(code, f"{item.interface}#{item.name} is not allowed")

        return deny

    def unreachable(*_args: Any) -> Any:
        raise HostProtocolError(f"{item.interface}#{item.name} is not supported by this host")

    return unreachable


def check_links(
    component: Component, imports: Mapping[str, Mapping[str, ImportImpl]] | None = None
) -> None:
    """Instantiate ``component`` once (outside any event loop) to check its imports.

    Raises:
      LinkError: naming the first import neither WASI, isyswasfa nor ``imports`` provides.
    """
    instance = Instance(component, imports or {}, WasiConfig(stdout=None, stderr=None))
    instance._engine.close()


@asynccontextmanager
async def open_instance(
    component: Component | str | Path | bytes,
    *,
    imports: Mapping[str, Mapping[str, ImportImpl]] | None = None,
    wasi: WasiConfig | None = None,
    cancel_grace: float = 10.0,
    limits: Limits | None = None,
) -> AsyncIterator[Instance]:
    """Instantiate a component and drive it for the duration of the ``async with``.

    Args:
      component: a :class:`Component`, or a path or bytes to load.
      imports: implementations of the component's non-WASI imports, by interface name
        (version optional) and WIT function name, e.g.
        ``{"example:round-trip/baz": {"foo": async_foo}}``. ``""`` names root imports.
        An ``async def`` runs as a host task in this instance's task group, so it can
        outlive the export call; its exceptions propagate out of the ``async with``.
        An import is taken for async if it is a coroutine function, wraps one
        (``functools.wraps``, ``functools.partial``) or is an object whose
        ``__call__`` is one; a plain function for an async WIT import that returns an
        awaitable has it run as a host task too. An async implementation of a sync
        WIT import is a :class:`LinkError`.
      wasi: what the component sees of the world (default: nothing but stdout/stderr).
      cancel_grace: seconds a guest gets to confirm the cancellation of a call; a guest
        that takes longer is declared broken (:class:`GuestProtocolError`), so an
        untrusted guest cannot hang its caller.
      limits: memory and run-time bounds for the guest (:class:`Limits`); none by
        default.

    On exit the instance's remaining work (guest tasks spawned by exports, host
    tasks) is cancelled. An exception from the body comes out as itself, not
    wrapped in an exception group.
    """
    if not isinstance(component, Component):
        component = load_component(component)
    instance = Instance(component, imports or {}, wasi or WasiConfig(), cancel_grace, limits)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(instance._sched.run)
            try:
                yield instance
            finally:
                # failed first: a call made while the group winds down (a task outside
                # the `async with`) raises InstanceDead, not a trap from a host task
                # that cannot start, nor a wait that never ends
                instance._sched.close()
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Our task group is an implementation detail: what the body (or one host task)
        # raised comes out as itself, as from any context manager.
        if len(group.exceptions) != 1:
            raise
        only = group.exceptions[0]
        only.__context__ = None  # the group that held it is no part of its story
        raise only from only.__cause__
    finally:
        try:
            await instance._wasi.aclose()  # output the guest did not flush
        finally:
            instance._wasi.close()  # files and streams the guest left open
            instance._engine.close()
            instance._http_p2 = None  # (its ``spawn`` holds the instance)
            # a cancellation's traceback may keep this frame (so its locals) until the
            # garbage collector runs: the instance is not one of them
            del instance


async def run_command(
    component: Component | str | Path | bytes,
    args: Sequence[str] = (),
    *,
    wasi: WasiConfig | None = None,
    imports: Mapping[str, Mapping[str, ImportImpl]] | None = None,
    limits: Limits | None = None,
) -> int:
    """Run a ``wasi:cli/command`` component to completion, as ``wasmtime run`` does.

    Args:
      component: a component exporting ``wasi:cli/run`` (with or without isyswasfa).
      args: its arguments after the program name, which is the component's file name.
      wasi: everything else it sees; ``args`` replaces ``wasi.args``.
      imports: implementations of its non-WASI imports, as for :func:`open_instance`.
      limits: memory and run-time bounds (:class:`Limits`).

    Returns:
      The exit status: 0 if ``run`` returned ``ok``, 1 for ``err``, or the status it
      passed to ``wasi:cli/exit``.

    Raises:
      LinkError: the component is not a command.
      GuestTrap: it trapped.
    """
    if not isinstance(component, Component):
        component = load_component(component)
    if not component.is_command:
        raise LinkError(f"{component.name} does not export {RUN}: it is not a command")
    program = Path(component.name).name if component.name != "<bytes>" else "component"
    config = dataclasses.replace(wasi or WasiConfig(), args=[program, *args])
    iface = next(i for i in component.exports() if strip_version(i) == RUN)
    async with open_instance(component, imports=imports, wasi=config, limits=limits) as instance:
        try:
            outcome = await instance.call(iface, "run")
        except ComponentExit as exc:
            return exc.code
    return 0 if isinstance(outcome, _engine.Ok) else 1
