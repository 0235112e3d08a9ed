"""Calls into and out of wasmtime core functions, through its C API directly.

The one module of our engine that makes core calls (:meth:`CoreFunc.__call__`) and
makes host functions the guest calls (:func:`host_func`). wasmtime-py's own
``Func.__call__`` converts every argument through ``wasmtime_val_t`` objects and
rebuilds the function's type per call (~31 µs for an ``(i32, i32) -> i32``); here a
function's core types are read once, its arguments and results travel in one
preallocated ``wasmtime_val_raw_t`` array, and ``wasmtime_func_call_unchecked`` is
called directly (~1 µs). Host functions are ``wasmtime_func_new_unchecked`` functions
sharing one ctypes callback.

The synchronous path: a core call runs to its end on the calling thread. WASI 0.3's
async path (guest calls on wasmtime fibers that host functions can suspend) replaces
:meth:`CoreFunc.__call__`'s body, and nothing else here.

A Python exception raised by a host function cannot cross the C API: the callback keeps
it and returns a trap; the core call that the trap unwinds to raises it again (wrapped
in a :class:`~trio_isyswasfa.GuestTrap` unless it is one already), so the exception
and its traceback survive as the trap's cause.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import struct
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any, Protocol

import wasmtime
from wasmtime import _bindings
from wasmtime import _ffi as ffi

from .._engine import FaultSink, trap_reason
from .._errors import GuestTrap, InstanceDead
from .._fastcall import clock as _clock

CoreValues = list[Any]
HostCallback = Callable[[CoreValues], Sequence[Any]]
"""A host function on core values: gets the arguments, returns the results."""

_RAW = ffi.wasmtime_val_raw_t
# The C functions of every call, on plain addresses: wasmtime-py's bindings convert
# each argument through its pointer type (a C call through them costs about twice as
# much here).
_FUNC_CALL = ctypes.CFUNCTYPE(
    ctypes.c_void_p,  # wasmtime_error_t *
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_void_p,
)(("wasmtime_func_call_unchecked", ffi.dll))
_MEMORY_DATA_SIZE = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p)(
    ("wasmtime_memory_data_size", ffi.dll)
)
_MEMORY_DATA = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
    ("wasmtime_memory_data", ffi.dll)
)
_ERROR_PTR = ctypes.POINTER(ffi.wasmtime_error_t)
_TRAP_PTR = ctypes.POINTER(ffi.wasm_trap_t)
_addressof = ctypes.addressof
_cast = ctypes.cast


def _address(pointer: Any) -> int:
    """The address a ctypes pointer holds."""
    address = ctypes.cast(pointer, ctypes.c_void_p).value
    assert address, "a null pointer"
    return address


_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF


def _kinds(types: Sequence[Any]) -> tuple[str, ...]:
    kinds = tuple(str(t) for t in types)
    for kind in kinds:
        if kind not in ("i32", "i64", "f32", "f64"):
            raise GuestTrap(f"core values of type {kind} do not cross the canonical ABI")
    return kinds


_SHAPE = "_isyswasfa_shape"  # where a type object keeps its shape: it goes with the type


def _shape(ty: wasmtime.FuncType) -> tuple[Any, ...]:
    """``(params, results, unpack_from, pack_into, from_address)`` of a core function
    type (see :func:`raw_slots` for the last three), worked out
    once per type object and kept on it: a component's modules import the same type
    objects for every instance, and a host function of that type needs all of them
    (a table keyed on the types would keep them, and through them their modules)."""
    found: tuple[Any, ...] | None = ty.__dict__.get(_SHAPE)
    if found is None:
        params, results = _kinds(ty.params), _kinds(ty.results)
        array = _raw_array(max(len(params), len(results), 1))
        pack_into = _packer(results) if results else None
        found = (params, results, _slots(params).unpack_from, pack_into, array.from_address)
        setattr(ty, _SHAPE, found)
    return found


def core_signature(ty: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A core function type's parameter and result kinds (``i32``…), read through
    ctypes once per type object."""
    shape = _shape(ty)
    return shape[0], shape[1]


# The host exception behind the trap being unwound now. Traps cannot be caught by wasm,
# so the next core call to return with a trap is the one this exception unwinds.
_unwinding: list[BaseException] = []


def _raise_trap(message: str, label: str, faults: FaultSink | None) -> None:
    if _unwinding:
        exc = _unwinding.pop()
        _unwinding.clear()
        if isinstance(exc, GuestTrap) or not isinstance(exc, Exception):
            raise exc
        raise GuestTrap(f"guest trapped in {label}: host function raised {exc!r}") from exc
    if faults is not None:
        raise faults.trap(label, message)
    raise GuestTrap(f"guest trapped in {label}: {trap_reason(message)}")


_SLOT = 16  # sizeof(wasmtime_val_raw_t)
_FORMATS = {"i32": "I12x", "i64": "Q8x", "f32": "f12x", "f64": "d8x"}
_MASKS = {"i32": " & 0xFFFFFFFF", "i64": " & 0xFFFFFFFFFFFFFFFF", "f32": "", "f64": ""}


@functools.lru_cache(maxsize=256)
def _slots(kinds: tuple[str, ...]) -> struct.Struct:
    """The layout of core values in a ``wasmtime_val_raw_t`` array: one ``struct``
    call reads or writes them all (i32 and i64 read back unsigned)."""
    return struct.Struct("<" + "".join(_FORMATS[k] for k in kinds))


@functools.lru_cache(maxsize=512)
def _packer(kinds: tuple[str, ...]) -> Callable[..., Any]:
    """``pack(buffer, values)`` for values of ``kinds``, signed or unsigned."""
    layout = _slots(kinds)
    values = ", ".join(f"v[{i}]{_MASKS[k]}" for i, k in enumerate(kinds))
    namespace: dict[str, Any] = {"pack_into": layout.pack_into}
    exec(f"def packer(buf, v):\n    pack_into(buf, 0, {values})\n", namespace)
    packer: Callable[..., Any] = namespace["packer"]
    return packer


class CoreFunc:
    """A core function, called with a list of core values; returns a list of them.

    i32 and i64 results are unsigned (as the canonical ABI lifts them); arguments may be
    signed or unsigned.
    """

    __slots__ = (
        "_ctx",
        "_fp",
        "_n",
        "_pack",
        "_raw",
        "_trap",
        "_unpack",
        "faults",
        "func",
        "guest",
        "label",
        "params",
        "results",
    )

    def __init__(
        self,
        store: wasmtime.Store,
        func: wasmtime.Func,
        label: str = "",
        faults: FaultSink | None = None,
        guest: GuestClock | None = None,
    ) -> None:
        ty = func.type(store)
        self.func = func
        self.label = label or "a core function"
        self.faults = faults  # the instance's: a trap carries the reason its guest gave
        self.guest = guest
        self.params = _kinds(ty.params)
        self.results = _kinds(ty.results)
        self._n = max(len(self.params), len(self.results), 1)
        self._pack = _packer(self.params)
        self._unpack = _slots(self.results).unpack_from
        self._raw: Any = (_RAW * self._n)()
        self._trap = ctypes.c_void_p()  # where a trap is written (a wasm_trap_t *)
        self._ctx = _address(store._context())
        self._fp = ctypes.addressof(func._func)  # (``func`` keeps it alive)

    def __call__(self, args: Sequence[Any]) -> CoreValues:
        """Call the function (the one place our engine enters wasm)."""
        global _depth
        if not _depth and not polls and self.guest is not None:
            # from outside any call: the store's parked fiber keeps the store to itself
            self.guest.stop_server()
        raw, trap = self._raw, self._trap
        self._raw = None  # a reentrant call (through a host function) gets its own array
        if raw is None:
            raw, trap = (_RAW * self._n)(), ctypes.c_void_p()
        _depth += 1
        host_before = _clock.host
        start = perf_counter()
        try:
            self._pack(raw, args)
            error = _FUNC_CALL(self._ctx, self._fp, _addressof(raw), self._n, _addressof(trap))
            if error:  # what a host function's trap comes back as
                err = wasmtime.WasmtimeError._from_ptr(_cast(error, _ERROR_PTR))
                _raise_trap(str(err), self.label, self.faults)
            if trap.value:
                taken, trap.value = trap.value, None
                _raise_trap(
                    wasmtime.Trap._from_ptr(_cast(taken, _TRAP_PTR)).message,
                    self.label,
                    self.faults,
                )
            return list(self._unpack(raw))
        finally:
            _depth -= 1
            self._raw, self._trap = raw, trap
            # guest code (a realloc, a post-return), also when a host function that is
            # timing itself called it: not the host's time
            elapsed = perf_counter() - start
            inside = _clock.host - host_before  # in host functions it called
            _clock.host -= elapsed
            if not _depth and not polls and self.guest is not None:
                # outside any fiber call (whose poll counts it): the instance's guest time
                self.guest.guest_seconds += elapsed - inside
                _clock.guest += elapsed - inside


class GuestClock(Protocol):
    """Where a core function's guest time goes: its instance's total; and its store's
    parked fiber, stopped before a call from outside any call (``_fiber``)."""

    guest_seconds: float

    def stop_server(self) -> None:
        """End the store's parked fiber, if it has one."""


# Fiber calls being polled now (``_fiber`` counts them): the guest time of a synchronous
# call made inside one is the poll's.
polls = 0


# Synchronous core calls running now. Inside a fiber call (``_fiber``), such a call is
# one a host function makes (a ``realloc``): it cannot yield at an epoch deadline.
_depth = 0


def sync_depth() -> int:
    """How many synchronous core calls are running (nested in each other)."""
    return _depth


def take_host_exception() -> BaseException | None:
    """The host exception behind the trap being unwound, if a host function raised one
    (for a caller other than :class:`CoreFunc`: a fiber call the trap ended)."""
    exc = _unwinding.pop() if _unwinding else None
    _unwinding.clear()
    return exc


# -- host functions ---------------------------------------------------------------------

HostEntry = Callable[[int], None]
"""A host function on the address of its ``wasmtime_val_raw_t`` array: reads its core
arguments there and writes its results over them (as the unchecked C API wants)."""

_HOSTS: dict[int, HostEntry] = {}
_NEXT_HOST = itertools.count(1)


@functools.lru_cache(maxsize=64)
def _raw_array(slots: int) -> Any:
    """The ctypes array type of ``slots`` raw values, viewed as bytes."""
    return ctypes.c_char * (slots * _SLOT)


def raw_slots(ty: wasmtime.FuncType) -> tuple[Callable[..., tuple[Any, ...]], Any, Any]:
    """``(unpack_from, pack_into, from_address)`` of a host function of core type ``ty``:
    its arguments read from, and its results written into, a ctypes array over the raw
    values at an address (made by ``from_address``); ``pack_into(buf, values)`` is
    ``None`` for a function without results. Worked out once per type object."""
    shape = _shape(ty)
    return shape[2], shape[3], shape[4]


def raw_structs(ty: wasmtime.FuncType) -> tuple[Any, Callable[..., tuple[Any, ...]], Any]:
    """``(from_address, unpack_from, pack_into)`` for a host function of core type ``ty``
    that reads and writes its raw values itself: a ctypes array over them at an
    address, and the ``struct`` methods of its arguments and of its results (values
    unsigned and in range; ``None`` without results)."""
    _, results, unpack_from, _, from_address = _shape(ty)
    return from_address, unpack_from, _slots(results).pack_into if results else None


def raw_entry(fn: HostCallback, ty: wasmtime.FuncType) -> HostEntry:
    """The :data:`HostEntry` of ``fn`` (a function on a list of core values) for a core
    function of type ``ty``.

    The raw array's address is usually the same from one call to the next (the
    guest's stack at the call site), so the ctypes array over it is kept and reused
    while it is: reading and writing it is then a ``struct`` call each, where
    ``string_at`` and ``memmove`` are C calls through ctypes (1 to 3 µs each here).
    """
    unpack_from, pack_into, from_address = raw_slots(ty)
    n_results = len(_shape(ty)[1])
    last = 0
    view: Any = None

    def entry(raw: int) -> None:
        nonlocal last, view
        buf = view
        if raw != last:
            buf = view = from_address(raw)
            last = raw
        out = fn(list(unpack_from(buf)))
        if len(out) != n_results:
            raise GuestTrap(f"a host function of {n_results} core results gave {len(out)}")
        if pack_into is not None:
            pack_into(buf, out)

    return entry


def _trap_of(exc: BaseException) -> int:
    """A wasmtime trap for a host function that raised ``exc`` (kept for CoreFunc to
    raise again: a Python exception cannot cross C)."""
    _unwinding.append(exc)
    message = f"host function failed: {exc!r}".encode()
    trap = ffi.wasmtime_trap_new(message, len(message))
    return ctypes.cast(trap, ctypes.c_void_p).value or 0


def _host_callback(env: int, _caller: Any, raw: int, _n: int) -> int:
    start = perf_counter()
    try:
        entry = _HOSTS.get(env)
        if entry is None:  # released: its instance was closed (not a KeyError of ours)
            raise InstanceDead("the component instance was closed")
        entry(raw)
        return 0
    except BaseException as exc:  # it cannot cross C: CoreFunc raises it again
        return _trap_of(exc)
    finally:  # the host's time, not the guest's (``guest_seconds``)
        _clock.host += perf_counter() - start


def _host_finalize(env: int) -> None:
    _HOSTS.pop(env, None)


def release_host_funcs(made: list[int]) -> None:
    """Forget the host functions ``made``: their closures usually hold the store that
    holds them, a cycle through this module that only this breaks. Calling one
    afterwards traps."""
    for env in made:
        _HOSTS.pop(env, None)
    made.clear()


def live_host_funcs() -> int:
    """How many host functions and host tables are registered (for leak checks)."""
    return len(_HOSTS) + len(_TABLES)


# the raw values arrive as an address: read and written with one copy each
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t
)(_host_callback)
_FINALIZE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_host_finalize)


_CALLBACK_PTR = ctypes.cast(_CALLBACK, ffi.wasmtime_func_unchecked_callback_t)


def host_func(
    store: wasmtime.Store,
    ty: wasmtime.FuncType,
    fn: HostCallback | None,
    made: list[int],
    *,
    entry: HostEntry | None = None,
) -> wasmtime.Func:
    """A core function of type ``ty`` that runs ``fn`` on its core arguments (or
    ``entry``, a :data:`HostEntry` that reads and writes its raw values itself, e.g. an
    export's lifting hook: no list of values in between); its key is appended to
    ``made`` (for :func:`release_host_funcs`).

    i32 and i64 arguments arrive unsigned. An exception ``fn`` raises traps the guest
    and is raised again by the :class:`CoreFunc` call the trap unwinds to.
    """
    env = next(_NEXT_HOST)
    made.append(env)
    if entry is None:
        assert fn is not None
        entry = raw_entry(fn, ty)
    _HOSTS[env] = entry
    out = ffi.wasmtime_func_t()
    _func_new_unchecked(store._context(), ty.ptr(), _CALLBACK_PTR, env, _FINALIZE, byref(out))
    return wasmtime.Func._from_raw(out)


# -- host function tables: one per instance, its functions built when first called ----


class HostTable:
    """The synchronous host functions of one instance, by index (each instance of a
    component numbers them alike): :meth:`define` makes the core function of index
    ``i`` in the store with one C call, and the Python function behind it is built by
    ``build(i)`` (a :data:`HostEntry`, e.g. :func:`raw_entry`) the first time the guest
    calls it. A componentize-py guest
    imports ~200 canon functions, of which an instance calls a few; what they have in
    common (types, ABIs, labels) the caller works out once per component.

    Every function of the table reaches it through one process-wide registry keyed on
    the table, never on the function: :meth:`release` forgets the table (the built
    functions' closures usually hold the store that holds them), and a call afterwards
    traps with :class:`~trio_isyswasfa.InstanceDead`.
    """

    __slots__ = ("_build", "_ctx", "entries", "key")

    def __init__(
        self,
        store: wasmtime.Store,
        size: int,
        build: Callable[[int], HostEntry],
    ) -> None:
        if size >= 1 << _INDEX_BITS:
            raise GuestTrap(f"a component instance of {size} host functions is too large")
        self.key = next(_NEXT_TABLE)
        self.entries: list[HostEntry | None]
        self.entries = [None] * size
        self._build = build
        self._ctx = ctypes.cast(store._context(), ctypes.c_void_p).value
        _TABLES[self.key] = self

    def define(self, index: int, ty_address: int, address: int) -> None:
        """Make host function ``index`` into the ``wasmtime_func_t`` at ``address``, of
        the core function type at ``ty_address`` (a ``wasm_functype_t`` its owner keeps
        alive)."""
        _FUNC_NEW(
            self._ctx,
            ty_address,
            _TABLE_CALLBACK_ADDRESS,
            self.key << _INDEX_BITS | index,
            None,
            address,
        )

    def release(self) -> None:
        """Forget the table: its functions trap when called, and the closures built so
        far are dropped."""
        _TABLES.pop(self.key, None)
        self.entries = []


_INDEX_BITS = 32  # a function's env: its table's key, then its index in the table
_INDEX_MASK = (1 << _INDEX_BITS) - 1
_TABLES: dict[int, HostTable] = {}
_NEXT_TABLE = itertools.count(1)


def _table_callback(env: int, _caller: Any, raw: int, _n: int) -> int:
    # (:func:`_host_callback`'s shape, written again: a shared helper would be one more
    # Python call per host call; a change to either goes to both)
    start = perf_counter()
    try:
        table = _TABLES.get(env >> _INDEX_BITS)
        if table is None:  # released: its instance was closed
            raise InstanceDead("the component instance was closed")
        index = env & _INDEX_MASK
        entry = table.entries[index]
        if entry is None:
            entry = table.entries[index] = table._build(index)
        entry(raw)
        return 0
    except BaseException as exc:  # it cannot cross C: CoreFunc raises it again
        return _trap_of(exc)
    finally:  # the host's time, not the guest's (``guest_seconds``)
        _clock.host += perf_counter() - start


_TABLE_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t
)(_table_callback)
_TABLE_CALLBACK_ADDRESS = ctypes.cast(_TABLE_CALLBACK, ctypes.c_void_p).value
# wasmtime_func_new_unchecked on plain addresses (the result written where it is asked),
# without a finalizer: the table is released with its instance, not per function
_FUNC_NEW = ctypes.CFUNCTYPE(
    None,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
)(("wasmtime_func_new_unchecked", ffi.dll))


_func_new_unchecked = _bindings._wasmtime_func_new_unchecked
byref = ctypes.byref


class CoreMemory:
    """A core memory as the canonical ABI's :class:`~._abi.GuestMemory`: a writable view
    of its bytes (remade only when the memory moved or grew) and the guest's
    ``realloc``.

    ``leave`` is the instance's ``may_leave`` flag (one byte, see ``_shim``'s ``LEAVE``):
    cleared while its ``realloc`` runs, as the canonical ABI clears it while values are
    lowered into the instance (``lower_flat_values``), so that the guest's allocator
    can neither call an import nor make or drop a handle in the middle of a lowering
    (whose failure then takes its handles back out, sure that none was removed). The
    allocator is the only guest code a lowering runs.
    """

    __slots__ = ("_ctx", "_leave", "_mp", "_realloc", "_size", "_view", "known_size", "memory")

    def __init__(
        self,
        store: wasmtime.Store,
        memory: wasmtime.Memory,
        realloc: CoreFunc | None,
        *,
        leave: memoryview | None = None,
    ) -> None:
        self.memory = memory
        self._ctx = _address(store._context())
        self._mp = ctypes.addressof(memory._memory)  # (``memory`` keeps it alive)
        self._realloc = realloc
        self._leave = leave if leave is not None else memoryview(bytearray(b"\x01"))
        self._size = -1
        self._view = memoryview(bytearray()).cast("B")
        self.known_size = -1
        """The memory's size in bytes if the caller knows it now (a runner told it,
        ``_shim``'s ``sized``), else -1: :meth:`view` then makes no C call. Whoever
        sets it puts -1 back before guest code runs again."""

    def view(self) -> memoryview:
        """The memory's bytes now: one C call while its size stays (a memory moves only
        when it grows, and it never shrinks), none if :attr:`known_size` says it."""
        size = self.known_size
        if size < 0:
            size = _MEMORY_DATA_SIZE(self._ctx, self._mp)
        if size != self._size:
            base = _MEMORY_DATA(self._ctx, self._mp)
            raw = (ctypes.c_ubyte * size).from_address(base or 0) if size else bytearray()
            self._view = memoryview(raw).cast("B")
            self._size = size
        return self._view

    def realloc(self, old_ptr: int, old_size: int, align: int, new_size: int) -> int:
        """The guest's ``realloc`` (a trap if the canon gave none)."""
        realloc = self._realloc
        if realloc is None:
            raise GuestTrap("canonical ABI: this value needs a realloc the canon does not give")
        leave = self._leave
        leave[0] = 0
        try:
            ptr: int = realloc([old_ptr, old_size, align, new_size])[0]
        finally:
            leave[0] = 1
        return ptr
