"""Stage 3b of our own engine: calling core functions on wasmtime's fibers, from trio.

Every call into a :class:`FiberStore` runs on a wasmtime fiber (the C API's
``wasmtime_func_call_async``), polled from the event loop as
:class:`~trio_isyswasfa._fastcall.PolledFuture`, like the component path's calls: the
store's one long-lived fiber, parked between calls and handed each call through a small
dispatcher module (``_shim``), or a fiber of the call's own (:meth:`FiberFunc.call_now`,
functions with many core values). A poll returns when the guest finishes, when its
epoch deadline makes it yield (every ``EPOCH_TICK``, so a computing guest never holds
the loop for long) or when an async host function suspends it:

* :meth:`FiberStore.host_func` makes a core function (an import for a core module) out
  of a Python function. The function returns its results, or a generator: each value
  the generator yields is a coroutine function (no arguments) that the call's driver
  awaits while the guest's fiber stays suspended; what it returns is sent back into
  the generator (what it raises is thrown in), and the generator's return value is the
  host function's result. An exception from the host function (before or after a
  wait) traps the guest; the :class:`~trio_isyswasfa.GuestTrap` the caller gets has
  the exception as its ``__cause__``.
* :meth:`FiberStore.call` runs a core function, checking ``Limits.max_run_seconds``
  at every yield and bounding every wait by it.

A store takes one call at a time (wasmtime's future borrows the whole store); calls
queue. While the store's fiber is parked, nothing else may use the store (wasmtime's
rule for a fiber suspended in a host function): what must, stops it first
(:meth:`FiberStore.stop_server`). A call whose caller is cancelled while the guest waits in a host function, or
that runs past ``max_run_seconds``, drops the guest's fiber where it stands: the store
is then given up (:attr:`FiberStore.fault` is set, every later call raises
:class:`~trio_isyswasfa.InstanceDead`), as the component path gives up its instance.
Any trap is fatal to the store in the same way (the component model's rule).

wasmtime refuses synchronous calls (``Func.__call__``, ``wasmtime.Instance``) into a
store configured to yield at epoch deadlines, and a synchronous call that reaches an
async host function aborts the process: so a fiber store is only ever entered through
this module, and core instances are made with :func:`instantiate`
(``wasmtime_linker_instantiate_async``), which :class:`~._instance.CoreInstances` uses
for every store.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import functools
import math
import struct
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from ctypes import CFUNCTYPE, byref, c_size_t, c_void_p
from types import GeneratorType
from typing import Any

import anyio
import sniffio
import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._extern import wrap_extern

from .. import _engine, _fastcall
from .._errors import GuestTrap, HostProtocolError, InstanceDead, LinkError
from .._limits import Limits
from . import _core, _shim

CoreValue = int | float
"""A core value crossing the boundary: i32/i64 as ``int``, f32/f64 as ``float``."""

Wait = Callable[[], Awaitable[Any]]
"""What a waiting host function yields: a coroutine function its driver awaits."""

HostFunc = Callable[..., Any]
"""A host function: called with the core arguments, returns the result (``None``, one
value, or a sequence for several) or a generator yielding :data:`Wait` s."""

# the union field of wasmtime_val_t and the kind, by the value type's text
_FIELDS = {
    "i32": ("i32", ffi.WASMTIME_I32.value),
    "i64": ("i64", ffi.WASMTIME_I64.value),
    "f32": ("f32", ffi.WASMTIME_F32.value),
    "f64": ("f64", ffi.WASMTIME_F64.value),
}


def _fields(types: Sequence[wasmtime.ValType], what: str) -> list[tuple[str, int]]:
    out = []
    for ty in types:
        found = _FIELDS.get(str(ty))
        if found is None:
            raise HostProtocolError(f"{what}: only i32, i64, f32 and f64 cross, not {ty}")
        out.append(found)
    return out


# -- instantiation ----------------------------------------------------------------------


def instantiate(
    store: wasmtime.Store,
    module: wasmtime.Module,
    imports: Sequence[Any],
    *,
    max_run_seconds: float | None = None,
) -> wasmtime.Instance:
    """Instantiate ``module`` with ``imports`` (in the module's import order) on
    wasmtime's async path, which every store admits (a fiber store admits nothing
    else). The start function may compute across epoch yields (for at most
    ``max_run_seconds``); it must not wait in an async host function.

    Raises:
      GuestTrap: the start function trapped or ran too long.
      LinkError: the imports do not fit, or a host function waited during the start.
    """
    linker = wasmtime.Linker(_engine.engine())
    ffi.wasmtime_linker_allow_shadowing(linker.ptr(), True)
    context = store._context()
    for (module_name, name), item in zip(_import_names(module), imports, strict=True):
        extern = item._as_extern()
        error = ffi.wasmtime_linker_define(
            linker.ptr(), context, module_name, len(module_name), name, len(name), byref(extern)
        )
        if error:
            raise LinkError(_first_line(str(wasmtime.WasmtimeError._from_ptr(error))))
    return instantiate_linked(store, linker, module, max_run_seconds=max_run_seconds)


def instantiate_linked(
    store: wasmtime.Store,
    linker: wasmtime.Linker,
    module: wasmtime.Module,
    *,
    max_run_seconds: float | None = None,
) -> wasmtime.Instance:
    """:func:`instantiate`, with every import of ``module`` defined in ``linker`` by
    the caller.

    Raises:
      GuestTrap: the start function trapped or ran too long.
      LinkError: the imports do not fit, or a host function waited during the start.
    """
    start = _Instantiation(linker, store, module)
    deadline = None if max_run_seconds is None else time.monotonic() + max_run_seconds
    previous = _enter(start)
    try:
        while not start.poll():
            if deadline is not None and time.monotonic() >= deadline:
                start.close()
                raise GuestTrap(f"the start function ran longer than {max_run_seconds} s")
    finally:
        _leave(previous)
    return start.instance()


_IMPORT_NAMES: weakref.WeakKeyDictionary[wasmtime.Module, list[tuple[bytes, bytes]]] = (
    weakref.WeakKeyDictionary()
)


def _import_names(module: wasmtime.Module) -> list[tuple[bytes, bytes]]:
    """A module's import names, encoded once per module."""
    names = _IMPORT_NAMES.get(module)
    if names is None:
        names = [(imp.module.encode(), (imp.name or "").encode()) for imp in module.imports]
        _IMPORT_NAMES[module] = names
    return names


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


class _Polling(_fastcall.PolledFuture):
    """A future being polled: where a host function it reaches records its wait, or the
    exception that trapped the guest."""

    waiting: _HostWait | None = None
    cause: BaseException | None = None
    _trap: Any
    _error: Any

    def _failure(self, where: str, faults: _engine.FaultSink | None = None) -> BaseException | None:
        """What the finished future failed with, if it failed (a trap, or an error); a
        trap carries the reason the guest gave in ``faults``, if it gave one."""
        raised: BaseException
        if self._trap:
            raised = wasmtime.Trap._from_ptr(self._trap)
        elif self._error:
            raised = wasmtime.WasmtimeError._from_ptr(self._error)
        else:
            return None
        # a synchronous host function (``_core``) raised it? Taken even when the cause
        # is known already (a fiber's host function under it), or it would stay behind
        # and name the cause of some later, unrelated trap
        unwound = _core.take_host_exception()
        if self.cause is None:
            self.cause = unwound
        if faults is not None:
            exc = faults.trap(where, str(raised))
        else:
            exc = GuestTrap(f"guest trapped in {where}: {_engine.trap_reason(str(raised))}")
        exc.__cause__ = self.cause if self.cause is not None else raised
        return exc


class _Instantiation(_Polling):
    def __init__(self, linker: wasmtime.Linker, store: wasmtime.Store, module: Any) -> None:
        self._linker = linker  # the future borrows it
        self._instance = ffi.wasmtime_instance_t()
        self._trap = ctypes.POINTER(ffi.wasm_trap_t)()
        self._error = ctypes.POINTER(ffi.wasmtime_error_t)()
        self._future = ffi.wasmtime_linker_instantiate_async(
            linker.ptr(),
            store._context(),
            module.ptr(),
            byref(self._instance),
            byref(self._trap),
            byref(self._error),
        )

    def instance(self) -> wasmtime.Instance:
        self.close()
        if self._trap or self.cause is not None:
            failure = self._failure("the start function")
            assert failure is not None
            raise failure
        if self._error:
            error = wasmtime.WasmtimeError._from_ptr(self._error)
            raise LinkError(f"cannot instantiate: {_first_line(str(error))}") from error
        return wasmtime.Instance._from_raw(self._instance)


# the future being polled on this (the event loop's) thread: host functions it reaches
# record their waits and failures on it
_current: _Polling | None = None


def _enter(polling: _Polling) -> _Polling | None:
    global _current
    previous, _current = _current, polling
    return previous


def current() -> _Polling | None:
    """The fiber call being polled now, if any (host functions run inside it)."""
    return _current


def set_current(polling: _Polling | None) -> _Polling | None:
    """Make ``polling`` the fiber call being polled now; gives the one that was. A
    synchronous entry into wasm that must not yield at an epoch deadline and makes no
    host call (an inert start function, ``_instance``) runs with ``None``."""
    global _current
    previous, _current = _current, polling
    return previous


def _leave(previous: _Polling | None) -> None:
    global _current
    _current = previous


# -- continuations answered in C ---------------------------------------------------------
#
# wasmtime asks an async host function's continuation "done yet?" by calling it with its
# ``env``. A continuation that only has to read a byte need not cross into Python: libc's
# ``strlen`` of a byte followed by a NUL answers 0 or 1, which the C ABIs we run on return
# in the register a ``bool`` is read from. Checked once here against a Python answer.


def _flag_reader() -> Any:
    """``strlen`` as a ``wasmtime_func_async_continuation_callback_t``, if it answers as
    a flag reader here; else a Python function that reads the flag."""
    prototype = ffi.wasmtime_func_async_continuation_callback_t
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else ctypes.CDLL(None)
        address = ctypes.cast(libc.strlen, c_void_p).value
    except (OSError, AttributeError):  # pragma: no cover - no libc to borrow from
        address = None
    if address:
        reader = ctypes.cast(address, prototype)
        probe = (ctypes.c_ubyte * 2)(1, 0)
        if reader(ctypes.addressof(probe)) is True:
            probe[0] = 0
            if reader(ctypes.addressof(probe)) is False:
                return reader
    return _python_flag_reader  # pragma: no cover - strlen does not answer as a bool


@CFUNCTYPE(ctypes.c_bool, c_void_p)
def _python_flag_reader(env):  # type: ignore[no-untyped-def]
    return ctypes.c_ubyte.from_address(env).value != 0


_FLAG_SET = _flag_reader()
"""A continuation: done once the byte at ``env`` is not 0 (the byte after it is 0)."""
_FLAG_SET_ADDRESS = ctypes.cast(_FLAG_SET, c_void_p).value or 0
_ONE_BYTES = (ctypes.c_ubyte * 2)(1, 0)
_ONE = ctypes.addressof(_ONE_BYTES)
"""``env`` of a continuation that is done at once."""

_CONTINUATION_HEAD = struct.Struct("PP")  # callback, env of wasmtime_async_continuation_t
_HEAD_SIZE = _CONTINUATION_HEAD.size
_pack_head = _CONTINUATION_HEAD.pack
_memmove = ctypes.memmove


_PARK_PROTOTYPE = CFUNCTYPE(
    None, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t, c_void_p, c_void_p
)


@_PARK_PROTOTYPE
def _park(env, _caller, _args, _nargs, _results, _nresults, _trap_ret, cont):  # type: ignore[no-untyped-def]
    """The dispatcher's ``next`` (``_shim``): the store's fiber is parked until its
    driver sets the flag at ``env`` (the next call's), which a C function checks."""
    _memmove(cont, _pack_head(_FLAG_SET_ADDRESS, env), _HEAD_SIZE)


# ``next`` runs once per call, inside the call's poll: through ctypes it is a C→Python
# crossing (libffi's closure, eight arguments converted, a frame, and ``memmove``, itself
# a C call), about half of a small call's time in the guest's window. All it does is write
# two words, so on x86-64 System V (Linux) it is five machine instructions instead,
# in a page of its own mapped read+execute once written, and checked at import against
# a fake continuation like ``strlen`` above; anywhere else, or if the page cannot be
# made executable, the Python function above.
_SYSV_X86_64_PARK = (
    b"\x48\x8b\x44\x24\x10"  # mov rax, [rsp+16]   the 8th argument: the continuation
    b"\x48\xb9%b"  # movabs rcx, CALLBACK  the flag reader (the 8 bytes of its address)
    b"\x48\x89\x08"  # mov [rax], rcx        continuation.callback = CALLBACK
    b"\x48\x89\x78\x08"  # mov [rax+8], rdi     continuation.env = env (the 1st)
    b"\xc3"  # ret
)


def _native_park() -> Any:
    """``next``'s callback as machine code, if it can be made and answers as ``_park``
    does here; else ``None``."""
    import platform
    import sys

    if sys.platform != "linux" or platform.machine() not in ("x86_64", "amd64"):
        return None
    if ctypes.sizeof(c_void_p) != 8:  # pragma: no cover - a 32-bit Python on x86-64
        return None
    if _FLAG_SET is _python_flag_reader:  # pragma: no cover - no C flag reader to call
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        mmap, mprotect = libc.mmap, libc.mprotect
    except (OSError, AttributeError):  # pragma: no cover - no libc to map a page with
        return None
    mmap.restype = c_void_p
    mmap.argtypes = [c_void_p, c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    mprotect.argtypes = [c_void_p, c_size_t, ctypes.c_int]
    prot_read, prot_write, prot_exec, map_private, map_anonymous = 1, 2, 4, 0x02, 0x20
    page = mmap(None, 4096, prot_read | prot_write, map_private | map_anonymous, -1, 0)
    if not page or page == ctypes.c_void_p(-1).value:  # pragma: no cover - no memory
        return None
    code = _SYSV_X86_64_PARK % struct.pack("<Q", _FLAG_SET_ADDRESS)
    ctypes.memmove(page, code, len(code))
    if mprotect(page, 4096, prot_read | prot_exec) != 0:  # pragma: no cover - W^X policy
        return None  # (the page stays mapped, unused: 4 KiB once)
    native = _PARK_PROTOTYPE(page)
    # the probe: a continuation's callback and env written, its finalizer left alone
    cont = (c_void_p * 3)(None, None, 12345)
    flag = (ctypes.c_ubyte * 2)(1, 0)
    native(ctypes.addressof(flag), None, None, 0, None, 0, None, ctypes.addressof(cont))
    if (cont[0], cont[1], cont[2]) != (_FLAG_SET_ADDRESS, ctypes.addressof(flag), 12345):
        return None  # pragma: no cover - it did not answer as _park
    return native


_PARK_NATIVE = _native_park()
_PARK = ctypes.cast(
    _PARK_NATIVE if _PARK_NATIVE is not None else _park, ffi.wasmtime_func_async_callback_t
)


# -- async host functions ---------------------------------------------------------------


class _HostWait:
    """A host function's generator, suspended with the guest's fiber until its driver has
    awaited what it waits for; then the continuation hands its result to the guest."""

    __slots__ = (
        "error",
        "gen",
        "label",
        "result_fields",
        "results",
        "sent",
        "trap_ret",
        "value",
        "wait",
    )

    def __init__(
        self,
        gen: Generator[Any, Any, Any],
        wait: Any,
        func: _HostEntry,
        results: Any,
        trap_ret: Any,
    ) -> None:
        self.gen = gen
        self.wait = wait
        self.label = func.label
        self.result_fields = func.result_fields
        self.results = results
        self.trap_ret = trap_ret
        self.value: Any = _PENDING
        self.error: BaseException | None = None
        # what the driver's wait gave: (False, value) or (True, exception), until the
        # continuation (on the guest's fiber) hands it to the generator
        self.sent: tuple[bool, Any] | None = None

    def step(self, send: Any = None, throw: BaseException | None = None) -> bool:
        """Resume the generator; True once it has its result (or failed)."""
        try:
            self.wait = self.gen.throw(throw) if throw is not None else self.gen.send(send)
        except StopIteration as stop:
            self.value = stop.value
            return True
        except Exception as exc:
            self.error = exc
            return True
        return False


_PENDING = object()


class _HostEntry:
    __slots__ = ("fn", "label", "param_fields", "result_fields")

    def __init__(self, fn: HostFunc, ty: wasmtime.FuncType, label: str) -> None:
        self.fn = fn
        self.label = label
        # read through ctypes once per type object (each instance of a component makes
        # its host functions of the same few types), shared read-only
        found: tuple[list[str], list[tuple[str, int]]] | None = ty.__dict__.get(_ENTRY_FIELDS)
        if found is None:
            found = ([f for f, _ in _fields(ty.params, label)], _fields(ty.results, label))
            setattr(ty, _ENTRY_FIELDS, found)
        self.param_fields, self.result_fields = found


_ENTRY_FIELDS = "_isyswasfa_fiber_fields"  # where a type object keeps them


_HOST_FUNCS: dict[int, _HostEntry] = {}
_SUSPENDED: dict[int, _HostWait] = {}
_next_key = 1


def _store_results(fields: list[tuple[str, int]], value: Any, results: Any) -> None:
    """Write a host function's Python result into wasmtime's result slots."""
    if len(fields) == 1:  # the common case, without the tuple
        field, kind = fields[0]
        slot = results[0]
        slot.kind = kind
        setattr(slot.of, field, value)
        return
    if not fields:
        if value is not None:
            raise TypeError(f"a host function without results returned {value!r}")
        return
    values = tuple(value)
    if len(values) != len(fields):
        raise TypeError(f"expected {len(fields)} results, got {len(values)}")
    for i, ((field, kind), v) in enumerate(zip(fields, values, strict=True)):
        slot = results[i]
        slot.kind = kind
        setattr(slot.of, field, v)


def _trap(trap_ret: Any, polling: _Polling | None, label: str, exc: BaseException) -> None:
    """Make the guest trap because host function ``label`` failed with ``exc``."""
    if polling is not None:
        polling.cause = exc
    message = f"host function {label} failed: {exc!r}".encode()
    trap_ret[0] = ffi.wasmtime_trap_new(ctypes.create_string_buffer(message), len(message))


@ffi.wasmtime_func_async_callback_t
def _host_callback(env, _caller, args, _nargs, results, _nresults, trap_ret, cont):  # type: ignore[no-untyped-def]
    global _next_key
    start = time.perf_counter()
    entry = _HOST_FUNCS.get(env or 0) or _shared_entry(env, _caller)
    continuation = cont.contents
    continuation.callback = _FLAG_SET  # done: a C function answers, not a Python one
    continuation.env = _ONE
    polling = _current
    if entry is None:  # its store's host functions were released (the instance closed)
        _trap(trap_ret, polling, "?", InstanceDead("the component instance was closed"))
        _fastcall.clock.host += time.perf_counter() - start
        return
    try:
        value = entry.fn(*[getattr(args[i].of, f) for i, f in enumerate(entry.param_fields)])
        if type(value) is GeneratorType:
            if polling is None or isinstance(polling, _Instantiation):
                value.close()
                raise LinkError(f"host function {entry.label} waited outside a fiber call")
            try:
                wait = value.send(None)
            except StopIteration as stop:
                value = stop.value
            else:
                if _core.sync_depth():
                    # suspending the fiber under a synchronous call crashes the process
                    value.close()
                    raise GuestTrap(
                        f"host function {entry.label} cannot wait inside a synchronous "
                        "call a host function made (a composed component's call)"
                    )
                key = _next_key
                _next_key += 1
                results_ptr = ctypes.cast(results, ctypes.POINTER(ffi.wasmtime_val_t))
                trap_ptr = ctypes.cast(trap_ret, ctypes.POINTER(ctypes.POINTER(ffi.wasm_trap_t)))
                waiting = _HostWait(value, wait, entry, results_ptr, trap_ptr)
                polling.waiting = _SUSPENDED[key] = waiting
                continuation.callback = _resume
                continuation.env = key
                continuation.finalizer = _forget_suspended
                return
        _store_results(entry.result_fields, value, results)
    except Exception as exc:
        _trap(trap_ret, polling, entry.label, exc)
    finally:
        _fastcall.clock.host += time.perf_counter() - start


@CFUNCTYPE(ctypes.c_bool, c_void_p)
def _resume(env):  # type: ignore[no-untyped-def]
    """The continuation of a waiting host function, run on the guest's fiber: once the
    driver has awaited a wait, the generator takes its outcome here (so what it does
    next, such as lowering its result through the guest's ``realloc``, runs inside the
    guest's call); done when the generator returns (the guest then gets the result, or
    traps), else suspended again on its next wait."""
    waiting = _SUSPENDED[env or 0]
    sent = waiting.sent
    if sent is None:
        return False
    waiting.sent = None
    start = time.perf_counter()
    polling = _current
    try:
        thrown, value = sent
        if not (waiting.step(throw=value) if thrown else waiting.step(send=value)):
            return False  # waits again: the driver awaits the new wait
        if polling is not None:
            polling.waiting = None
        try:
            if waiting.error is not None:
                raise waiting.error
            _store_results(waiting.result_fields, waiting.value, waiting.results)
        except Exception as exc:
            _trap(waiting.trap_ret, polling, waiting.label, exc)
        return True
    finally:
        _fastcall.clock.host += time.perf_counter() - start


@CFUNCTYPE(None, c_void_p)
def _forget_suspended(env):  # type: ignore[no-untyped-def]
    waiting = _SUSPENDED.pop(env or 0, None)
    if waiting is not None and waiting.value is _PENDING and waiting.error is None:
        waiting.gen.close()  # the call was dropped while it waited


@CFUNCTYPE(None, c_void_p)
def _forget_func(env):  # type: ignore[no-untyped-def]
    _HOST_FUNCS.pop(env or 0, None)


def _define_host_func(
    store: wasmtime.Store,
    keys: list[int],
    ty: wasmtime.FuncType,
    fn: HostFunc,
    label: str,
    out: Any,
) -> None:
    """An async host function in ``store``, written into the ``wasmtime_extern_t``
    ``out``; its key is appended to ``keys``. The C API has no ``wasmtime_func_new_async``:
    the function is defined in a linker and taken into the store from there. The
    linker is thrown away at once (a function taken into a store keeps its own
    reference); :class:`HostFuncDefs` keeps one, for functions defined once for many
    stores."""
    global _next_key
    key = _next_key
    _next_key += 1
    _HOST_FUNCS[key] = _HostEntry(fn, ty, label or getattr(fn, "__name__", "?"))
    keys.append(key)
    linker = wasmtime.Linker(_engine.engine())
    error = ffi.wasmtime_linker_define_async_func(
        linker.ptr(), b"", 0, b"f", 1, ty.ptr(), _host_callback, key, _forget_func
    )
    if error:  # pragma: no cover - wasmtime accepts any function type here
        raise wasmtime.WasmtimeError._from_ptr(error)
    found = ffi.wasmtime_linker_get(linker.ptr(), store._context(), b"", 0, b"f", 1, byref(out))
    assert found


# the entries of shared definitions (:class:`HostFuncDefs`), by the address of the
# store's context (``wasmtime_context_t``) and then by the definition's key
_BY_CONTEXT: dict[int, dict[int, _HostEntry]] = {}
_CALLER_CONTEXT = ctypes.PYFUNCTYPE(c_size_t, c_void_p)(("wasmtime_caller_context", ffi.dll))
_LINKER_GET = ctypes.PYFUNCTYPE(
    ctypes.c_bool,
    c_void_p,
    c_void_p,
    ctypes.c_char_p,
    c_size_t,
    ctypes.c_char_p,
    c_size_t,
    c_void_p,
)(("wasmtime_linker_get", ffi.dll))


def _shared_entry(env: int | None, caller: Any) -> _HostEntry | None:
    """The entry of shared definition ``env`` in the calling store, if it has one."""
    found = _BY_CONTEXT.get(_CALLER_CONTEXT(caller))
    return None if found is None else found.get(env or 0)


# no finalizer (a NULL function pointer, as the C API admits)
_NULL = wasmtime._bindings._wasmtime_linker_define_async_func.argtypes[-1]()


class HostFuncDefs:
    """Async host functions defined once for many stores (a component's blocking imports,
    the same for each of its instances): each is defined once in a linker kept here, with
    a key of its own as its ``env``, and :meth:`FiberStore.take_host_func` takes it into
    a store with the store's own Python function, which the host callback finds by the
    calling store. An instance thus pays one ``wasmtime_linker_get`` for each, not a
    definition (~40 % of the cost, the function's type registered with the engine).

    The definitions have no finalizer: the linker may live until the interpreter's
    exit (a component kept to the end), when a finalizer calling into Python would run
    with ``ctypes`` half torn down (a process-wide linker with one was seen to crash
    at exit).
    """

    __slots__ = ("_keys", "address", "linker")

    def __init__(self) -> None:
        self.linker = wasmtime.Linker(_engine.engine())
        self.address: int = ctypes.cast(self.linker.ptr(), c_void_p).value or 0
        self._keys: dict[Any, tuple[int, bytes]] = {}

    def define(self, ident: Any, ty: wasmtime.FuncType) -> tuple[int, bytes]:
        """The key and the name (in the linker) of the definition for ``ident`` (of
        type ``ty``), defined on first use."""
        found = self._keys.get(ident)
        if found is None:
            global _next_key
            key = _next_key
            _next_key += 1
            name = b"%d" % key
            error = ffi.wasmtime_linker_define_async_func(
                self.linker.ptr(), b"", 0, name, len(name), ty.ptr(), _host_callback, key, _NULL
            )
            if error:  # pragma: no cover - wasmtime accepts any function type here
                raise wasmtime.WasmtimeError._from_ptr(error)
            found = self._keys[ident] = (key, name)
        return found


def live_host_funcs() -> int:
    """How many async host functions are registered (for leak checks)."""
    return len(_HOST_FUNCS) + sum(len(found) for found in _BY_CONTEXT.values())


# -- epoch deadlines for stores that take synchronous calls too -------------------------

_EPOCH_CALLBACK = CFUNCTYPE(
    ctypes.c_size_t,
    c_void_p,
    c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ctypes.c_uint8),
)
_CONTINUE, _YIELD = 0, 1  # wasmtime_update_deadline_kind_t


@_EPOCH_CALLBACK
def _at_epoch_deadline(_context, _env, delta, kind):  # type: ignore[no-untyped-def]
    """At each epoch tick: a fiber call yields to its driver; a synchronous call (a
    ``realloc`` a host function makes inside a fiber call, a post-return, a destructor)
    cannot, and runs on."""
    delta[0] = 1
    kind[0] = _YIELD if _current is not None and _core.sync_depth() == 0 else _CONTINUE
    return 0


@CFUNCTYPE(None, c_void_p)
def _no_finalizer(_env):  # type: ignore[no-untyped-def]
    pass


_set_epoch_callback: Any = None


def yield_in_fiber_calls(store: wasmtime.Store) -> None:
    """Make ``store``'s fiber calls yield at every epoch tick while its synchronous calls
    run on (``_engine._yield_at_epoch_deadlines`` makes wasmtime refuse synchronous calls
    altogether, and a ``realloc`` a host function calls inside a fiber call is one)."""
    global _set_epoch_callback
    if _set_epoch_callback is None:
        native = wasmtime._bindings._wasmtime_store_epoch_deadline_callback
        address = ctypes.cast(native, c_void_p).value or 0
        prototype = CFUNCTYPE(None, c_void_p, _EPOCH_CALLBACK, c_void_p, type(_no_finalizer))
        _set_epoch_callback = prototype(address)
    _set_epoch_callback(ctypes.cast(store.ptr(), c_void_p), _at_epoch_deadline, None, _no_finalizer)
    store.set_epoch_deadline(1)
    _engine._start_ticker()


# -- stores and calls -------------------------------------------------------------------


class FiberStore:
    """A wasmtime store whose guests run on fibers driven by the event loop.

    Args:
      store: the store to use (a new one on the process-wide engine by default); it is
        configured to yield at every epoch tick, after which wasmtime refuses any
        synchronous call into it.
      limits: ``max_memory`` and ``max_run_seconds`` apply (``max_handles`` is the
        canonical ABI's business).
      sync_calls: admit synchronous core calls too (:func:`yield_in_fiber_calls`): fiber
        calls still yield at every tick, synchronous ones run on. A synchronous call
        must never reach an async host function (wasmtime aborts the process).
    """

    def __init__(
        self,
        store: wasmtime.Store | None = None,
        *,
        limits: Limits | None = None,
        sync_calls: bool = False,
    ):
        self.store = store if store is not None else wasmtime.Store(_engine.engine())
        self.limits = limits or Limits()
        self.fault: BaseException | None = None
        self.faults: _engine.FaultSink | None = None  # its instance's (the guest's reason)
        self.guest_seconds = 0.0  # in calls, less the host functions they called
        if sync_calls:  # synchronous calls run on at epoch ticks: see yield_in_fiber_calls
            yield_in_fiber_calls(self.store)
        else:
            _engine._start_ticker()
            _engine._yield_at_epoch_deadlines(self.store)
            self.store.set_epoch_deadline(1)
        self._context_address = ctypes.cast(self.store._context(), c_void_p).value or 0
        self._deadline_tick = -1  # the tick count when a call last set the deadline
        self._busy = False
        self._idle: anyio.Event | None = None
        self._host_keys: list[int] = []  # of the host functions made in this store
        self._shared: dict[int, _HostEntry] | None = None  # see :meth:`take_host_func`
        self._dispatch: _Dispatch | None = None  # made at the first call through it
        # the dispatcher's memory (made at the first call or the first may_leave flag;
        # under a memory limit, at once, below), its address and a view of it: one
        # page that never grows or moves
        self._page: tuple[wasmtime.Memory, int, memoryview] | None = None
        self._next_leave = _shim.LEAVE  # the next free may_leave flag
        self._server: _Server | None = None  # the long-lived fiber, parked between calls
        self._wait_scope: anyio.CancelScope | None = None  # of a call's driver, waiting
        if self.limits.max_memory is not None:
            # the limit is the guest's: the dispatcher's page is the host's, made
            # before it (a limit under one page would refuse the page, not the guest)
            self._dispatch_page()
            self.store.set_limits(memory_size=self.limits.max_memory)

    @property
    def busy(self) -> bool:
        """Whether a call is in the store now (running, or suspended in it)."""
        return self._busy

    def close(self) -> None:
        """The instance is closed: its host functions are released (calling one
        afterwards would fail), so a call still in the store (suspended in a host
        function, or at an epoch yield) is never resumed: its next poll drops its
        fiber and it raises :class:`~trio_isyswasfa.InstanceDead`, as do later calls.
        The store's parked fiber, if no call is in it, is dropped now."""
        self._record(InstanceDead("the component instance was closed"))
        if self._wait_scope is not None:
            self._wait_scope.cancel()  # a call's driver waits under the guest: end it
        self.release_host_funcs()
        if self._server is not None and self._server.parked:
            self._server.close(now=False)  # (maybe called from guest code: see _DEFERRED)
            _drop_deferred_soon()  # and so its store, which it keeps

    def stop_server(self) -> None:
        """End the store's parked fiber, if it has one, so that the store may be used
        from outside a call (a synchronous call, an instantiation, a new function): a
        fiber suspended in a host function keeps the store to itself in wasmtime's
        terms. The next call starts a new one."""
        server = self._server
        if server is None:
            return
        if not server.parked or _current is not None:
            # a call is in it: the store is that call's (a nested call runs on its fiber;
            # one suspended in a host function is resumed by its driver or dropped)
            return
        dispatch = self._dispatch
        assert dispatch is not None
        _STOP(dispatch.view, _shim.CMD, 0, 1)
        try:
            for _ in range(1000):  # it returns at once; an epoch deadline may yield first
                if _future_poll(server._future):
                    break
        finally:
            server.close()

    def _dispatch_page(self) -> tuple[wasmtime.Memory, int, memoryview]:
        """The dispatcher's memory, its address and a view of it, made once."""
        page = self._page
        if page is None:
            self.stop_server()  # (none yet: the first call makes the page)
            store = self.store
            memory = wasmtime.Memory(store, wasmtime.MemoryType(wasmtime.Limits(1, 1)))
            base = ctypes.cast(memory.data_ptr(store), c_void_p).value or 0
            view = memoryview((ctypes.c_ubyte * 65536).from_address(base)).cast("B")
            page = self._page = (memory, base, view)
        return page

    def leave_flag(self) -> tuple[int | None, memoryview]:
        """A new ``may_leave`` flag (a component instance's, set: it may call out): its
        offset in the dispatcher's memory, where runners clear it around a post-return
        (``_shim``'s ``leave``), and a one-byte view of it, which the host reads and
        writes. Past ``_shim.LEAVE_SIZE`` flags in one store, a byte of host memory
        (offset ``None``: only the host writes it)."""
        at = self._next_leave
        if at >= _shim.LEAVE + _shim.LEAVE_SIZE:
            return None, memoryview(bytearray(b"\x01"))
        view = self._dispatch_page()[2]  # (made before any memory limit: see __init__)
        self._next_leave = at + 1
        view[at] = 1
        return at, view[at : at + 1]

    def _dispatcher(self) -> _Dispatch:
        """The store's dispatcher instance (``_shim``), made once."""
        dispatch = self._dispatch
        if dispatch is None:
            store = self.store
            memory, base, view = self._dispatch_page()
            linker = wasmtime.Linker(_engine.engine())
            error = ffi.wasmtime_linker_define_async_func(
                linker.ptr(), b"", 0, b"next", 4, _NO_VALUES_TYPE.ptr(), _PARK,
                base + _shim.FLAG, _no_finalizer,
            )  # fmt: skip
            if error:  # pragma: no cover - wasmtime accepts any function type here
                raise wasmtime.WasmtimeError._from_ptr(error)
            item = ffi.wasmtime_extern_t()
            found = ffi.wasmtime_linker_get(
                linker.ptr(), store._context(), b"", 0, b"next", 4, byref(item)
            )
            assert found
            instance = self.instantiate(_shim.dispatcher(), [memory, wrap_extern(item)])
            exports = instance.exports(store)
            serve, table = exports["serve"], exports["table"]
            assert isinstance(serve, wasmtime.Func)
            assert isinstance(table, wasmtime.Table)
            dispatch = self._dispatch = _Dispatch(memory, table, serve, view)
        return dispatch

    def _start_server(self) -> _Server:
        """Start the store's long-lived fiber; its first poll runs the call written in
        the dispatcher's memory."""
        dispatch = self._dispatch
        assert dispatch is not None
        assert self._server is None
        server = self._server = _Server(self, dispatch)
        return server

    def release_host_funcs(self) -> None:
        """Forget the host functions made in this store: their closures usually hold
        the store (through the instance they serve), and wasmtime drops them only with
        the store, so without this the table here keeps every closed instance alive.
        Calling one afterwards traps."""
        for key in self._host_keys:
            _HOST_FUNCS.pop(key, None)
        self._host_keys.clear()
        if self._shared is not None:
            if _BY_CONTEXT.get(self._context_address) is self._shared:
                del _BY_CONTEXT[self._context_address]
            self._shared = None

    def instantiate(self, module: wasmtime.Module, imports: Sequence[Any]) -> wasmtime.Instance:
        """A core instance of ``module`` in this store (see :func:`instantiate`)."""
        self._check()
        self.stop_server()
        return instantiate(self.store, module, imports, max_run_seconds=self.limits.max_run_seconds)

    def host_func(self, ty: wasmtime.FuncType, fn: HostFunc, *, label: str = "") -> wasmtime.Func:
        """A core function of type ``ty`` in this store that runs ``fn`` (see the module's
        docstring for how ``fn`` waits and fails); ``label`` names it in traps."""
        self.stop_server()
        item = ffi.wasmtime_extern_t()
        _define_host_func(self.store, self._host_keys, ty, fn, label, item)
        func = wrap_extern(item)
        assert isinstance(func, wasmtime.Func)
        return func

    def take_host_func(
        self,
        defs: HostFuncDefs,
        ident: Any,
        ty: wasmtime.FuncType,
        fn: HostFunc,
        address: int,
        label: str,
    ) -> None:
        """:meth:`host_func` for the definition ``ident`` of ``defs`` (defined there
        on first use, for every store), written as a ``wasmtime_extern_t`` at
        ``address`` (a slot of an import array): in this store, a call of it runs
        ``fn``."""
        key, name = defs.define(ident, ty)
        self.stop_server()
        shared = self._shared
        if shared is None:
            # (a dead store's entries at this address, if it was never released, go)
            shared = self._shared = _BY_CONTEXT[self._context_address] = {}
        shared[key] = _HostEntry(fn, ty, label)
        found = _LINKER_GET(defs.address, self._context_address, b"", 0, name, len(name), address)
        assert found

    def func(
        self,
        func: wasmtime.Func,
        *,
        lower: wasmtime.Func | None = None,
        lift: wasmtime.Func | None = None,
        post: wasmtime.Func | None = None,
        unsigned: bool = False,
        staged: Staged | None = None,
        sized: wasmtime.Memory | None = None,
        leave: int | None = None,
    ) -> FiberFunc:
        """``func`` of this store, ready to be called on the store's fiber (its type read
        once). With ``lower`` (a host function ``() -> i32``), a call takes no arguments:
        ``lower`` runs first on the fiber and puts them in place
        (:meth:`FiberFunc.put_args`), or answers 0 and nothing else runs. With ``lift``
        and ``post`` (host function and post-return, both of the function's result
        types), the results go to ``lift``, then to ``post``, and the call gives
        ``None``. ``unsigned``: a call gives the list of its results, i32 and i64 read
        unsigned (as the canonical ABI lifts them). With ``staged``, some pointer
        arguments are bytes copied into the guest's memory on the fiber (see
        :class:`Staged` and :meth:`FiberFunc.call_staged`). With ``sized`` (a memory;
        with ``lift``), ``lift`` takes one more argument after the results: that
        memory's size in pages when the function returned (``_shim``'s ``sized``).
        With ``post`` and ``leave`` (a flag of :meth:`leave_flag`) but no ``lift``, the
        call gives its results as without ``post``, and the runner clears the flag
        while ``post`` runs (``_shim``'s ``leave``)."""
        return FiberFunc(
            self,
            func,
            lower=lower,
            lift=lift,
            post=post,
            unsigned=unsigned,
            staged=staged,
            sized=sized,
            leave=leave,
        )

    async def call(self, func: wasmtime.Func, *args: CoreValue) -> Any:
        """Call ``func`` once (:meth:`func` keeps the type for repeated calls)."""
        return await FiberFunc(self, func)(*args)

    def fresh_slice(self) -> None:
        """Give the next call a fresh time slice: the deadline at the next epoch tick. The
        deadline left from the last call has passed if the store sat idle a tick or more
        (the guest would yield at once); if no tick came since it was last set, it is
        the next tick's already, and the C call (~1 µs) is saved. (A tick racing with
        this can only make the deadline come sooner: a spurious yield, never a runaway
        guest.)"""
        tick = _engine.ticks
        if tick != self._deadline_tick:
            self._deadline_tick = tick
            _set_epoch_deadline(self._context_address, 1)

    def _check(self) -> None:
        if self.fault is not None:
            raise InstanceDead(f"the instance has failed: {self.fault}") from self.fault

    async def _enter(self) -> None:
        self._check()
        while self._busy:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()
            self._check()
        self._busy = True

    def _leave(self) -> None:
        self._busy = False
        server = self._server
        if self.fault is not None and server is not None and server.parked and _current is None:
            server.close()  # closed (or failed) during the call
        if self._idle is not None:
            self._idle.set()
            self._idle = None

    def _record(self, fault: BaseException) -> BaseException:
        if self.fault is None:
            self.fault = fault
        return fault


NOT_NOW = object()
"""What :meth:`FiberFunc.start_now` gives when the call cannot start at once."""
RUNNING = _RUNNING = object()
"""What :meth:`FiberFunc.start_now` gives when the guest waits or yields: await
:meth:`FiberFunc.run_on`."""


class Staged:
    """Which pointer arguments of a function a call may pass as bytes, and where they go:
    ``params`` lists ``(index, align)`` of each (an i32 core parameter, followed by its
    length), ``memory`` is the guest's memory and ``realloc`` its allocator, ``leave``
    the offset of the instance's ``may_leave`` flag (:meth:`FiberStore.leave_flag`). The
    function's runner allocates each block, the flag cleared, and copies the bytes in
    (``_shim``)."""

    __slots__ = ("leave", "memory", "params", "realloc")

    def __init__(
        self,
        params: tuple[tuple[int, int], ...],
        memory: wasmtime.Memory,
        realloc: wasmtime.Func,
        leave: int,
    ) -> None:
        self.params = params
        self.memory = memory
        self.realloc = realloc
        self.leave = leave


class FiberFunc:
    """A core function of a :class:`FiberStore`; awaiting a call runs it on the store's
    fiber.

    The store keeps one fiber, parked between calls (``_shim``): a call writes its
    arguments into the dispatcher's memory with one ``struct`` call and polls the fiber
    once, which runs the function's *runner* and parks again: one C call, where a fiber
    of its own per call cost three (start, poll, delete) and wasmtime's setting up and
    tearing down of the fiber. A function with more than ``_shim.MAX_VALUES``
    arguments or results runs on a fiber of its own per call, as does :meth:`call_now`.
    """

    def __init__(
        self,
        owner: FiberStore,
        func: wasmtime.Func,
        *,
        lower: wasmtime.Func | None = None,
        lift: wasmtime.Func | None = None,
        post: wasmtime.Func | None = None,
        unsigned: bool = False,
        staged: Staged | None = None,
        sized: wasmtime.Memory | None = None,
        leave: int | None = None,
    ) -> None:
        self.owner = owner
        self.func = func
        ty = func.type(owner.store)
        self.label = "a core function"
        params = _fields(ty.params, "core function parameters")
        results = _fields(ty.results, "core function results")
        self._n_params = len(params)
        self._n_results = len(results)
        self._params = (ffi.wasmtime_val_t * len(params))()
        self._results = (ffi.wasmtime_val_t * len(results))()
        self._pack = _val_packer(tuple(f for f, _ in params))
        self._unpack = _val_layout(tuple(f for f, _ in results)).unpack_from
        self._context = owner.store._context()
        self._func_ref = byref(func._func)
        self._spare: CoreCall | None = None  # the last call's, reused by the next
        self._running: _Server | None = None  # a call's, between its first poll and the next
        self._deadline: float | None = None  # a running call's (``max_run_seconds``)
        # through the store's fiber: the runner's index in the dispatcher's table (made
        # at the first call; 0: too many values, a fiber per call)
        kinds = tuple(f for f, _ in params), tuple(f for f, _ in results)
        servable = max(len(params), len(results)) <= _shim.MAX_VALUES
        if (lower or lift or post) and not servable:
            raise HostProtocolError("too many core values for a function with hooks")
        if lift is not None and post is None:
            raise HostProtocolError("a lift needs a post-return")
        if post is not None and (lift is None) == (leave is None):
            raise HostProtocolError("a post-return needs a lift hook or a may_leave flag")
        if staged is not None and (lower is not None or not servable):
            raise HostProtocolError("staged arguments go through a runner, without a lower hook")
        if sized is not None and (lift is None or (staged and staged.memory is not sized)):
            raise HostProtocolError("a sized memory is a lift hook's, and the staged one")
        self._sized = sized
        self._leave = leave
        self._slot: int | None = None if servable else 0
        self._kinds = kinds
        self._hooks = (lower, lift, post)
        self._staged = staged
        self._unsigned = unsigned
        self._arity = 0 if lower is not None else len(params)
        # a staged pointer's slot holds its length and where its bytes are: 64 bits
        packed = list(kinds[0])
        for index, _ in staged.params if staged is not None else ():
            packed[index] = "i64"
        self._pack_call = _call_packer(tuple(packed), lower is not None)
        self._pack_args = _args_packer(kinds[0])
        self._read_results: Callable[[Any, int], tuple[Any, ...]] | None = (
            None if lift is not None else _results_layout(kinds[1], unsigned).unpack_from
        )

    def __call__(self, *args: CoreValue) -> Coroutine[Any, Any, Any]:
        """Run the function (awaiting what this returns): ``None``, its one result, or a
        list of its results (with ``unsigned``: the list of its results; with ``lift``
        and ``post``: ``None``).

        Raises:
          HostProtocolError: ``args`` do not fit the function (nothing ran).
          GuestTrap: the guest trapped (a host function's exception is the cause), or
            ran past ``max_run_seconds``; the store is dead from then on.
          InstanceDead: the store had failed before.
        """
        return self.call_staged(args, ())  # (no coroutine of its own: one frame a call)

    async def call_staged(self, args: Sequence[CoreValue], blobs: Sequence[Any]) -> Any:
        """Run the function with staged arguments (a function made with ``staged``):
        ``blobs`` are their bytes, in order, and each staged pointer's argument is
        ``length | offset << 32``, the offsets counted from ``_shim.STAGE`` with the
        blobs back to back, at most ``_shim.STAGE_SIZE`` bytes in all (unchecked here).
        Returns and raises as a call does."""
        owner = self.owner
        if _DEFERRED:
            _drop_deferred()  # here no guest code runs
        if owner._busy or owner.fault is not None:
            await owner._enter()
        else:
            owner._busy = True
        try:
            slot = self._slot
            if slot is None:
                slot = self._make_runner()
            if not slot:
                return await self._own_fiber(args)
            got = self._first_poll(slot, args, blobs)
            if got is _RUNNING:
                got = await self._run_on()
            return got
        finally:
            owner._leave()

    def start_now(self, args: Sequence[CoreValue], blobs: Sequence[Any]) -> Any:
        """:meth:`call_staged` without a coroutine, when the store is free and the
        function's runner made: the call's first poll, here. Gives its result if the
        guest returned in it; :data:`RUNNING` if the guest waits or yields, and then
        the caller must at once await :meth:`run_on`, which drives it to its end;
        :data:`NOT_NOW` if the call cannot start here (nothing ran: await
        :meth:`call_staged`). Raises as a call does."""
        owner = self.owner
        slot = self._slot
        if _DEFERRED or owner._busy or owner.fault is not None or not slot:
            return NOT_NOW
        owner._busy = True
        try:
            got = self._first_poll(slot, args, blobs)
        except BaseException:
            owner._leave()
            raise
        if got is not _RUNNING:
            if owner.fault is None and owner._idle is None:
                owner._busy = False  # (:meth:`FiberStore._leave` with nothing else to do)
            else:
                owner._leave()
        return got

    async def run_on(self) -> Any:
        """Drive the call :meth:`start_now` left running to its end."""
        try:
            return await self._run_on()
        finally:
            self.owner._leave()

    def _first_poll(self, slot: int, args: Sequence[CoreValue], blobs: Sequence[Any]) -> Any:
        """Write the call into the dispatcher's memory and poll the store's fiber once:
        the call's result, or :data:`RUNNING` (see :meth:`_run_on`)."""
        owner = self.owner
        view = owner._dispatch.view  # type: ignore[union-attr]
        if len(args) != self._arity:
            raise HostProtocolError(
                f"wrong number of arguments: given {len(args)}, expected {self._arity}"
            )
        try:
            self._pack_call(view, slot, args)  # the call, its flag, its arguments
        except (TypeError, struct.error) as exc:
            raise HostProtocolError(f"bad arguments for {self.label}: {exc}") from exc
        if blobs:  # (written once the store is this call's: a queued call waits first)
            at = _STAGE
            for blob in blobs:
                end = at + len(blob)
                view[at:end] = blob
                at = end
        server = owner._server
        if server is None:
            server = owner._start_server()
        else:
            server.waiting = None
            server.cause = None
        server.parked = False
        # a fresh time slice (:meth:`FiberStore.fresh_slice`, inline)
        tick = _engine.ticks
        if tick != owner._deadline_tick:
            owner._deadline_tick = tick
            _set_epoch_deadline(owner._context_address, 1)
        # the first poll, as :meth:`_poll` (inline: every call's path; the store was
        # sound and its fiber parked a moment ago, so none of its checks apply)
        global _current
        clock = _fastcall.clock
        previous, _current = _current, server
        _core.polls += 1
        host_before = clock.host
        start = _perf_counter()
        try:
            done = server._done = _poll_at(server.future_at)
        finally:
            _core.polls -= 1
            _current = previous
            spent = _perf_counter() - start - (clock.host - host_before)
            clock.guest += spent
            owner.guest_seconds += spent
        if done:
            raise self._ended(server)  # only a trap (or an error) ends it in a call
        if not view[_FLAG]:  # parked again: the call returned
            server.parked = True
            if self._unsigned:  # (:meth:`_given`, inline for the component path's calls)
                read = self._read_results
                return None if read is None else list(read(view, _RESULTS))
            return self._given(view)
        self._running = server
        limit = owner.limits.max_run_seconds
        if limit is not None:  # counted from the poll's start
            self._deadline = time.monotonic() + limit - (_perf_counter() - start)
        else:
            self._deadline = None
        return _RUNNING

    async def _run_on(self) -> Any:
        """Drive a call whose first poll left the guest waiting or yielding."""
        server = self._running
        assert server is not None
        self._running = None
        view = self.owner._dispatch.view  # type: ignore[union-attr]
        deadline = self._deadline
        while True:
            await self._wait(server, deadline)
            if self._poll(server):
                raise self._ended(server)  # only a trap (or an error) ends it in a call
            if not view[_FLAG]:  # parked again: the call returned
                server.parked = True
                return self._given(view)

    def _given(self, view: memoryview) -> Any:
        read = self._read_results
        if read is None:
            return None
        values = read(view, _RESULTS)
        if self._unsigned:
            return list(values)
        if self._n_results == 1:
            return values[0]
        return list(values) if values else None

    def put_args(self, args: Sequence[CoreValue]) -> None:
        """Write the function's arguments for the call running now (what a ``lower``
        hook does, on the fiber, before the function runs).

        Raises:
          HostProtocolError: they do not fit its parameters.
        """
        if len(args) != self._n_params:
            raise HostProtocolError(
                f"wrong number of arguments: given {len(args)}, expected {self._n_params}"
            )
        try:
            self._pack_args(self.owner._dispatch.view, args)  # type: ignore[union-attr]
        except (TypeError, struct.error) as exc:
            raise HostProtocolError(f"bad arguments for {self.label}: {exc}") from exc

    def _make_runner(self) -> int:
        """The function's runner (``_shim``) in the store's dispatcher table."""
        owner = self.owner
        owner.stop_server()  # instantiating uses the store directly
        dispatch = owner._dispatcher()
        lower, lift, post = self._hooks
        staged = self._staged
        module = _shim.runner(
            *self._kinds,
            lower=lower is not None,
            post=post is not None,
            staged=staged.params if staged is not None else (),
            sized=self._sized is not None,
            leave=self._leave,
            staged_leave=staged.leave if staged is not None else None,
        )
        if staged is not None:
            imports: list[Any] = [dispatch.memory, staged.memory, self.func, staged.realloc]
        elif self._sized is not None:
            imports = [dispatch.memory, self._sized, self.func]
        else:
            imports = [dispatch.memory, self.func]
        imports.extend(h for h in (lower, lift, post) if h is not None)
        run = owner.instantiate(module, imports).exports(owner.store)["run"]
        slot = self._slot = dispatch.table.grow(owner.store, 1, run)
        return slot

    def _ended(self, server: _Server) -> BaseException:
        """What a call raises when the store's fiber ended in it (the store is dead)."""
        try:
            failure = server._failure(self.label, self.owner.faults)
        finally:
            server.close()
        if failure is None:  # pragma: no cover - ``serve`` returns only when told to
            failure = GuestTrap(f"guest trapped in {self.label}: the store's fiber ended")
        return self.owner._record(failure)

    async def _own_fiber(self, args: Sequence[CoreValue]) -> Any:
        """Run the function on a fiber of its own (too many values for a runner)."""
        owner = self.owner
        owner.stop_server()
        call = self._start(args)
        limit = owner.limits.max_run_seconds
        deadline = None if limit is None else time.monotonic() + limit
        while not self._poll(call):
            await self._wait(call, deadline)
        return self._finish(call)

    def call_now(self, *args: CoreValue) -> Any:
        """Run the function to its end without the event loop (a start function, a
        post-return, a destructor): it may compute across epoch yields (bounded by
        ``max_run_seconds``) but must not wait; a host function that waits traps it.

        Raises:
          GuestTrap: as for a call (and the store is dead), or it tried to wait.
          InstanceDead: the store had failed before.
        """
        owner = self.owner
        owner._check()
        if owner._busy:
            raise GuestTrap(f"{self.label} was called while another call is in the store")
        owner.stop_server()
        call = self._start(args)
        limit = owner.limits.max_run_seconds
        deadline = None if limit is None else time.monotonic() + limit
        while not self._poll(call):
            if call.waiting is not None:
                call.close()
                raise owner._record(
                    GuestTrap(f"guest trapped in {self.label}: a host function waited there")
                )
            if deadline is not None and time.monotonic() >= deadline:
                raise self._over_time(call, "without returning to the host")
        return self._finish(call)

    def _start(self, args: Sequence[CoreValue]) -> CoreCall:
        self.owner.fresh_slice()
        call = self._spare
        if call is None:
            return CoreCall(self, args)
        self._spare = None
        call._start(self, args)
        return call

    def _poll(self, call: _Polling) -> bool:
        """Run the guest until it finishes (True) or is suspended (False); its time
        (less the host functions it called) is the guest's."""
        global _current
        if call._done:
            return True  # never resume a finished future: wasmtime would abort
        future = call._future
        if future is None:
            raise wasmtime.WasmtimeError("the call was dropped")
        fault = self.owner.fault
        if fault is not None:
            # the store was closed (or failed) while this call was suspended in it: its
            # host functions may be released, so the guest must not run on (it would
            # trap on a missing host function, or run host code of a closed instance)
            call.close()
            raise InstanceDead(f"{self.label} was abandoned: {fault}") from fault
        clock = _fastcall.clock
        previous, _current = _current, call
        _core.polls += 1
        host_before = clock.host
        start = time.perf_counter()
        try:
            done: bool = _future_poll(future)
            call._done = done
        finally:
            _core.polls -= 1
            _current = previous
            spent = time.perf_counter() - start - (clock.host - host_before)
            clock.guest += spent
            self.owner.guest_seconds += spent
        return done

    def _finish(self, call: CoreCall) -> Any:
        if call._trap or call._error:
            try:
                failure = call._failure(self.label, self.owner.faults)
                assert failure is not None
                raise self.owner._record(failure)
            finally:
                call.close()
        call.close()
        self._spare = call
        n = self._n_results
        if n == 1:
            return self._unpack(self._results)[0]
        return list(self._unpack(self._results)) if n else None

    async def _wait(self, call: _Polling, deadline: float | None) -> None:
        """The guest is suspended: a host function waits (await that), or its time slice
        ended (let other tasks run, check ``max_run_seconds``)."""
        waiting = call.waiting
        if waiting is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise self._over_time(call, "without returning to the host")
            # a computing guest is not interrupted by a cancellation: it runs on to its
            # next wait or return, as it would had it held the loop
            await anyio.lowlevel.cancel_shielded_checkpoint()
            return
        owner = self.owner
        # one scope for both ends of the wait: ``max_run_seconds`` (its deadline) and the
        # instance's close (``FiberStore.close`` cancels it: the host call under the
        # guest, a sleep or a read, must not hold its caller up past the close)
        scope = anyio.CancelScope(
            deadline=math.inf
            if deadline is None
            else anyio.current_time() + deadline - time.monotonic()
        )
        owner._wait_scope = scope
        try:
            with scope:
                try:
                    value = await waiting.wait()
                except Exception as exc:
                    waiting.sent = (True, exc)
                else:
                    waiting.sent = (False, value)
            # the next poll resumes the guest's fiber, where the generator goes on
        except BaseException as exc:
            # cancelled in the middle of the guest: its fiber is dropped where it stands
            owner._record(
                InstanceDead(f"{self.label} was abandoned in the middle of guest code: {exc!r}")
            )
            call.close()
            raise
        finally:
            if owner._wait_scope is scope:
                owner._wait_scope = None
        if scope.cancelled_caught:
            fault = owner.fault
            if fault is not None:  # closed under it
                call.close()
                raise InstanceDead(f"{self.label} was abandoned: {fault}") from fault
            raise self._over_time(call, "blocked in a host call")

    def _over_time(self, call: _Polling, how: str) -> BaseException:
        limit = self.owner.limits.max_run_seconds
        call.close()
        return self.owner._record(
            GuestTrap(
                f"guest trapped in {self.label}: it ran longer than "
                f"max_run_seconds ({limit} s), {how}"
            )
        )


class CoreCall(_Polling):
    """One call of a core function on its fiber (driven by :class:`FiberFunc`). Its
    arguments and results live in the function's buffers: the store admits one call at
    a time, so no two calls of one function are ever in flight."""

    def __init__(self, func: FiberFunc, args: Sequence[CoreValue]) -> None:
        self._trap = ctypes.POINTER(ffi.wasm_trap_t)()
        self._error = ctypes.POINTER(ffi.wasmtime_error_t)()
        self._out = (byref(self._trap), byref(self._error))
        self._start(func, args)

    def _start(self, func: FiberFunc, args: Sequence[CoreValue]) -> None:
        """Start the call (a finished call that did not fail starts again here)."""
        if len(args) != func._n_params:
            raise HostProtocolError(
                f"wrong number of arguments: given {len(args)}, expected {func._n_params}"
            )
        try:
            func._pack(func._params, args)
        except (TypeError, struct.error) as exc:
            raise HostProtocolError(f"bad arguments for {func.label}: {exc}") from exc
        self._func = func
        self._done = False
        self.waiting = None
        self.cause = None
        self._future = _call_async(
            func._context,
            func._func_ref,
            func._params,
            func._n_params,
            func._results,
            func._n_results,
            *self._out,
        )

    def close(self) -> None:
        """Drop the call (a suspended guest is abandoned: its store must not be used)."""
        future = self._future
        if future is not None:
            self._future = None
            _future_delete(future)

    def results(self) -> Any:
        """The finished call's results, as wasmtime-py's ``Func.__call__`` gives them."""
        func = self._func
        values = func._unpack(func._results)
        if func._n_results == 1:
            return values[0]
        return list(values) if values else None


# wasmtime_val_t: the kind (one byte), then the value's union at _VAL_OF
_VAL_SIZE = ctypes.sizeof(ffi.wasmtime_val_t)
_VAL_OF = ffi.wasmtime_val_t.of.offset
_CODES = {"i32": "i", "i64": "q", "f32": "f", "f64": "d"}
_UNSIGNED = {"i32": ("I", " & 0xFFFFFFFF"), "i64": ("Q", " & 0xFFFFFFFFFFFFFFFF")}
_KINDS = dict(_FIELDS.values())


def _slot(code: str, kind: bool) -> str:
    pad = _VAL_SIZE - _VAL_OF - struct.calcsize("<" + code)
    return ("B" if kind else "x") + f"{_VAL_OF - 1}x{code}{pad}x"


@functools.lru_cache(maxsize=256)
def _val_layout(fields: tuple[str, ...]) -> struct.Struct:
    """Values of ``fields`` in a ``wasmtime_val_t`` array (read signed, as wasmtime-py
    gives them)."""
    return struct.Struct("<" + "".join(_slot(_CODES[f], False) for f in fields))


@functools.lru_cache(maxsize=256)
def _val_packer(fields: tuple[str, ...]) -> Callable[[Any, Sequence[CoreValue]], None]:
    """``pack(array, values)``: kinds and values of ``fields`` into a ``wasmtime_val_t``
    array in one ``struct`` call (integers signed or unsigned)."""
    codes = [_UNSIGNED.get(f, (_CODES[f], "")) for f in fields]
    layout = struct.Struct("<" + "".join(_slot(code, True) for code, _ in codes))
    items = ", ".join(
        f"{_KINDS[f]}, v[{i}]{mask}"
        for i, (f, (_, mask)) in enumerate(zip(fields, codes, strict=True))
    )
    namespace: dict[str, Any] = {"pack_into": layout.pack_into}
    exec(f"def pack(buf, v):\n    pack_into(buf, 0{', ' if items else ''}{items})\n", namespace)
    pack: Callable[[Any, Sequence[CoreValue]], None] = namespace["pack"]
    return pack


# -- the store's long-lived fiber (``_shim``) ---------------------------------------------


class _Dispatch:
    """A store's dispatcher instance: its memory (and a view of it: one page that never
    grows, so never moves), its table of runners, its ``serve``."""

    __slots__ = ("memory", "serve_ref", "table", "view")

    def __init__(
        self, memory: wasmtime.Memory, table: wasmtime.Table, serve: wasmtime.Func, view: Any
    ) -> None:
        self.memory = memory
        self.table = table
        self.serve_ref = byref(serve._func)
        self.view = view


class _Server(_Polling):
    """The store's long-lived fiber, running the dispatcher's ``serve``: parked in
    ``next`` between calls (:attr:`parked`), or in a call.

    Its future is deleted when it is closed (the store failed or closed, or it was
    stopped to let the store be used directly), or else when its :class:`FiberStore` is
    collected: the finalizer holds the wasmtime store, so the future always goes before
    its store."""

    def __init__(self, owner: FiberStore, dispatch: _Dispatch) -> None:
        self.owner = owner
        self.parked = True  # (not yet started: stopping it is as safe as a parked one)
        self._trap = ctypes.POINTER(ffi.wasm_trap_t)()
        self._error = ctypes.POINTER(ffi.wasmtime_error_t)()
        future = _call_async(
            owner.store._context(), dispatch.serve_ref, _NO_VALUES, 0, _NO_VALUES, 0,
            byref(self._trap), byref(self._error),
        )  # fmt: skip
        self._future = future
        # its address, for the first poll of each call: a ``void *`` argument costs
        # ctypes far less to convert than a typed pointer (whose ``from_param`` checks
        # classes: ~1,500 instructions of a ~37,000-instruction call)
        self.future_at: int = ctypes.cast(future, c_void_p).value or 0
        # the future reads the function (``serve_ref``) and writes the trap and the
        # error in place, to its end: they stay with it
        self._drop = weakref.finalize(
            owner, _drop_future, future, owner.store, dispatch.serve_ref, self._trap, self._error
        )

    def close(self, *, now: bool = True) -> None:
        """Drop the fiber where it stands (a call in it is abandoned): ``now`` when the
        caller is a driver of ours, outside any guest code; else at the next call's
        start (see :func:`_drop_future`)."""
        if self._future is not None:
            self._future = None
            self._drop()
            if now and _DEFERRED and _current is None and not _core.sync_depth():
                _drop_deferred()
        if self.owner._server is self:
            self.owner._server = None


# Futures to delete, with their stores (kept alive until then). Deleting a suspended
# fiber resumes it to unwind it, and its trap records a backtrace of every wasm frame on
# the thread: from inside another store's guest code (a finalizer run by the garbage
# collector in a host function, of our engine or of the stock one, whose fibers we cannot
# see) that backtrace meets frames its store does not know, and wasmtime aborts the
# process. So a future is only ever deleted where no guest code runs: by a driver of
# ours, after its poll, or at the start of a call.
_DEFERRED: list[tuple[Any, ...]] = []


def _drop_future(future: Any, *keep: Any) -> None:
    """A fiber's future is done with (``keep``: its store, and what it reads and
    writes)."""
    _DEFERRED.append((future, *keep))


def _drop_deferred() -> None:
    """Delete the futures done with (called where no guest code runs)."""
    while _DEFERRED:
        future, *keep = _DEFERRED.pop()  # (what it uses lives until it is gone)
        _future_delete(future)
        del keep


atexit.register(_drop_deferred)  # after the finalizers of the stores still alive


def _drop_deferred_soon() -> None:
    """Delete the futures done with as soon as no guest code can be running: from the
    event loop, between two task steps (a callback of its own; a call's guest code runs
    inside one task's step), or at once outside any event loop if no call of ours is
    running (the stock engine's calls all run from an event loop). Otherwise the next
    call's start deletes them, as before."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        if _current is None and not _core.sync_depth():
            _drop_deferred()
        return
    if library == "trio":
        import trio

        trio.lowlevel.current_trio_token().run_sync_soon(_drop_deferred)
    elif library == "asyncio":
        import asyncio

        asyncio.get_running_loop().call_soon(_drop_deferred)


_NO_VALUES = (ffi.wasmtime_val_t * 1)()
_NO_VALUES_TYPE = wasmtime.FuncType([], [])
_FLAG = _shim.FLAG
_RESULTS = _shim.RESULTS
_STAGE = _shim.STAGE
_STOP = struct.Struct("<I4xB").pack_into  # CMD = 0, FLAG = 1
_SLOT_CODES = {"i32": ("I4x", " & 0xFFFFFFFF"), "i64": ("Q", " & 0xFFFFFFFFFFFFFFFF"),
               "f32": ("f4x", ""), "f64": ("d", "")}  # fmt: skip


@functools.lru_cache(maxsize=256)
def _call_packer(params: tuple[str, ...], lowered: bool) -> Callable[[Any, int, Any], None]:
    """``pack(view, slot, args)``: a call of the runner at ``slot`` (its index, the
    flag, and its arguments unless a ``lower`` hook writes them) in one ``struct``
    call."""
    kinds = () if lowered else params
    head = "<I4xB7x"  # CMD, FLAG (the byte after it 0), ARGS at 16
    assert struct.calcsize(head) == _shim.ARGS
    layout = struct.Struct(head + "".join(_SLOT_CODES[k][0] for k in kinds))
    values = "".join(f", v[{i}]{_SLOT_CODES[k][1]}" for i, k in enumerate(kinds))
    namespace: dict[str, Any] = {"pack_into": layout.pack_into}
    exec(f"def pack(buf, slot, v):\n    pack_into(buf, 0, slot, 1{values})\n", namespace)
    pack: Callable[[Any, int, Any], None] = namespace["pack"]
    return pack


@functools.lru_cache(maxsize=256)
def _args_packer(params: tuple[str, ...]) -> Callable[[Any, Sequence[CoreValue]], None]:
    """``pack(view, args)``: the arguments alone (what a ``lower`` hook writes)."""
    layout = struct.Struct("<" + "".join(_SLOT_CODES[k][0] for k in params))
    values = "".join(f", v[{i}]{_SLOT_CODES[k][1]}" for i, k in enumerate(params))
    namespace: dict[str, Any] = {"pack_into": layout.pack_into}
    exec(f"def pack(buf, v):\n    pack_into(buf, {_shim.ARGS}{values})\n", namespace)
    pack: Callable[[Any, Sequence[CoreValue]], None] = namespace["pack"]
    return pack


@functools.lru_cache(maxsize=256)
def _results_layout(results: tuple[str, ...], unsigned: bool) -> struct.Struct:
    """The results a runner stores, read signed (as wasmtime-py gives them) or not."""
    codes = {"i32": "i4x", "i64": "q", "f32": "f4x", "f64": "d"}
    if unsigned:
        codes.update(i32="I4x", i64="Q")
    return struct.Struct("<" + "".join(codes[k] for k in results))


# the C functions themselves, without wasmtime-py's Python wrappers around them
_perf_counter = time.perf_counter
_call_async = wasmtime._bindings._wasmtime_func_call_async
_future_poll = wasmtime._bindings._wasmtime_call_future_poll
_poll_at = ctypes.CFUNCTYPE(ctypes.c_bool, c_void_p)(("wasmtime_call_future_poll", ffi.dll))
"""``wasmtime_call_future_poll`` on a plain address (the GIL released, as any ctypes
call: the ticker thread must run while the guest computes)."""
_future_delete = wasmtime._bindings._wasmtime_call_future_delete
_set_epoch_deadline = ctypes.CFUNCTYPE(None, c_void_p, ctypes.c_uint64)(
    ("wasmtime_context_set_epoch_deadline", ffi.dll)
)  # on a plain address: the context's, which lives as long as its store


__all__ = [
    "CoreCall",
    "CoreValue",
    "FiberFunc",
    "FiberStore",
    "HostFunc",
    "Staged",
    "Wait",
    "instantiate",
    "live_host_funcs",
]
