"""Calls through wasmtime-py's component API without per-call type introspection.

wasmtime-py rebuilds a function's type on every call and re-reads composite types
(record fields, variant cases, list elements, whether a variant is "tagged") through
ctypes on every value it converts. Here we take each type tree once, re-class its
nodes into subclasses whose structure is cached, and call functions with those
cached types; host functions are registered through our own callback for the same
reason. Only :mod:`trio_isyswasfa._engine` uses this module.

This leans on wasmtime-py 50's internals (its ``_ffi`` and value converters); the
planned canonical-ABI layer over the core API will replace it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from ctypes import CFUNCTYPE, byref, c_void_p, create_string_buffer, pointer
from functools import cached_property
from time import perf_counter
from typing import Any, NoReturn

import wasmtime
import wasmtime.component as wc
from wasmtime import _ffi as ffi
from wasmtime.component import _types as wt
from wasmtime.component._enter import catch_exceptions, maybe_raise_last_exn

from .engine._values import ReadInto

# -- cached type nodes ----------------------------------------------------------------


class _CachedList(wt.ListType):
    element = cached_property(wt.ListType.element.fget)  # type: ignore[attr-defined]


_VAL_SIZE = ctypes.sizeof(ffi.wasmtime_component_val_t)
_VAL_PAYLOAD = ffi.wasmtime_component_val_t.of.offset
_U8_KIND = ffi.WASMTIME_COMPONENT_U8.value
_READ_INTO_MAX = 64 << 10


class _CachedBytes(wt.ListType):
    """``list<u8>`` converted in bulk.

    wasmtime-py converts a byte list one 32-byte ``wasmtime_component_val_t`` at a time
    in Python (about 1 MB/s). The C API has no byte-list fast path either, so we lay out
    the whole value array with two strided slice assignments instead, and read it back
    with one strided slice: the same C structures, built at memcpy-like speed.
    """

    element = cached_property(wt.ListType.element.fget)  # type: ignore[attr-defined]

    def add_classes(self, s: set[type]) -> None:
        s.add(bytes)
        s.add(ReadInto)

    def convert_to_c(self, store: Any, val: Any, ptr: Any) -> None:
        if type(val) is ReadInto:  # no guest memory to fill here: a host buffer instead
            # of 64 KiB at most: this conversion costs ~4x more per byte at 1 MiB (a
            # 32 MiB value array), so a file read stays as fast as it was here
            val = val.to_bytes(_READ_INTO_MAX)
        elif isinstance(val, (bytearray, memoryview)):
            val = bytes(val)
        if not isinstance(val, bytes):
            raise TypeError("expected bytes value")
        n = len(val)
        raw = ffi.wasmtime_component_vallist_t()
        ffi.wasmtime_component_vallist_new_uninit(raw, n)
        if n:
            layout = bytearray(n * _VAL_SIZE)
            layout[0::_VAL_SIZE] = bytes((_U8_KIND,)) * n
            layout[_VAL_PAYLOAD::_VAL_SIZE] = val
            ctypes.memmove(raw.data, bytes(layout), len(layout))
        ptr.contents.kind = ffi.WASMTIME_COMPONENT_LIST
        ptr.contents.of.list = raw

    def convert_from_c(self, c: Any) -> Any:
        assert c.kind == ffi.WASMTIME_COMPONENT_LIST.value
        try:
            n = c.of.list.size
            if not n:
                return b""
            layout = ctypes.string_at(c.of.list.data, n * _VAL_SIZE)
            kinds = layout[0::_VAL_SIZE]
            if kinds.count(_U8_KIND) != n:  # pragma: no cover - wasmtime's invariant
                raise TypeError("a list<u8> holds values that are not u8")
            return layout[_VAL_PAYLOAD::_VAL_SIZE]
        finally:
            # u8 elements own nothing: freeing the array is all the cleanup there is
            ffi.wasmtime_component_vallist_delete(byref(c.of.list))


class _CachedRecord(wt.RecordType):
    fields = cached_property(wt.RecordType.fields.fget)  # type: ignore[attr-defined]


class _CachedTuple(wt.TupleType):
    elements = cached_property(wt.TupleType.elements.fget)  # type: ignore[attr-defined]


class _VariantLikeCache:
    """Caches for the variant-like types: cases, taggedness, per-case Python classes."""

    __slots__ = ()  # a mixin must not change the layout of the classes it extends

    def _wasmtime_type(self) -> Any:
        return type(self).__mro__[1]  # the class _with_cache extended

    def _cases(self) -> list[tuple[str, Any]]:
        cached: list[tuple[str, Any]] | None = self.__dict__.get("_cached_cases")
        if cached is None:
            cached = [(n, cache_types(t)) for n, t in self._wasmtime_type()._cases(self)]
            self.__dict__["_cached_cases"] = cached
        return cached

    def _tagged(self) -> bool:
        tagged: bool | None = self.__dict__.get("_cached_tagged")
        if tagged is None:
            tagged = bool(self._wasmtime_type()._tagged(self))
            self.__dict__["_cached_tagged"] = tagged
        return tagged

    def _case_classes(self) -> list[tuple[str, Any, tuple[type, ...]]]:
        cached = self.__dict__.get("_cached_classes")
        if cached is None:
            cached = []
            for name, ty in self._cases():
                classes: set[type] = set()
                if ty is not None:
                    ty.add_classes(classes)
                cached.append((name, ty, tuple(classes)))
            self.__dict__["_cached_classes"] = cached
        return cached

    def _lower(self, store: Any, val: Any) -> tuple[str, Any]:
        tagged = self._tagged()
        if tagged and not isinstance(val, wc.Variant):
            raise TypeError("expected Variant type")
        for name, ty, classes in self._case_classes():
            if tagged:
                if name != val.tag:
                    continue
            elif ty is None:
                if val is not None:
                    continue
            elif not isinstance(val, classes):
                continue
            if ty is None:
                return (name, None)
            raw = ffi.wasmtime_component_val_t()
            ty.convert_to_c(store, val.payload if tagged else val, pointer(raw))
            return (name, ffi.wasmtime_component_val_new(byref(raw)))
        raise ValueError("value not valid for this variant")


def _with_cache(base: type) -> type:
    """``base`` with the mixin's methods (the mixin cannot come first: CPython refuses a
    ``__class__`` change when the mixin precedes the wasmtime type in the bases)."""
    ns = {
        "__slots__": (),
        "_cases": _VariantLikeCache._cases,
        "_tagged": _VariantLikeCache._tagged,
        "_case_classes": _VariantLikeCache._case_classes,
        "_lower": _VariantLikeCache._lower,
    }
    return type(f"_Cached{base.__name__}", (base, _VariantLikeCache), ns)


_CachedVariant = _with_cache(wt.VariantType)


_CachedOption = _with_cache(wt.OptionType)


_CachedResult = _with_cache(wt.ResultType)


_RECLASS: dict[type, type] = {
    wt.ListType: _CachedList,
    wt.RecordType: _CachedRecord,
    wt.TupleType: _CachedTuple,
    wt.VariantType: _CachedVariant,
    wt.OptionType: _CachedOption,
    wt.ResultType: _CachedResult,
}


def cache_types(ty: Any) -> Any:
    """Re-class ``ty`` (and everything under it) to cache its structure; returns it."""
    if ty is None:
        return None
    cls = _RECLASS.get(type(ty))
    if cls is None:
        return ty
    if cls is _CachedList and isinstance(ty.element, wt.U8):
        cls = _CachedBytes
    ty.__class__ = cls
    if isinstance(ty, _CachedBytes):
        pass
    elif isinstance(ty, _CachedList):
        cache_types(ty.element)
    elif isinstance(ty, _CachedRecord):
        for _, field in ty.fields:
            cache_types(field)
    elif isinstance(ty, _CachedTuple):
        for element in ty.elements:
            cache_types(element)
    elif isinstance(ty, _VariantLikeCache):
        ty._case_classes()
        ty._tagged()
    return ty


class CachedFuncType:
    """A function type's parameters and result, read once."""

    def __init__(self, fty: Any) -> None:
        self.params = [cache_types(t) for _, t in fty.params]
        self.result = cache_types(fty.result)
        self._owner = fty  # keeps the type objects' memory alive


# -- calling exports --------------------------------------------------------------------


class _Clock:
    """Seconds spent in guest code, and in host functions called from it (the process's
    totals; callers take differences)."""

    __slots__ = ("guest", "host")

    def __init__(self) -> None:
        self.guest = 0.0
        self.host = 0.0


clock = _Clock()


class PolledFuture:
    """A ``wasmtime_call_future_t`` (of a component call, a core call or an async
    instantiation): :meth:`poll` runs the guest on its fiber until it finishes or is
    suspended (an async host function waits, or an epoch deadline made it yield).

    Once the future has finished it is never polled again (wasmtime aborts the process
    when a finished future is resumed): :meth:`poll` then keeps answering True.
    """

    _future: Any = None
    _done = False

    def poll(self) -> bool:
        """Run the guest until it finishes (True) or is suspended (False)."""
        if self._done:
            return True
        if self._future is None:
            raise wasmtime.WasmtimeError("the call was dropped")
        host_before = clock.host
        start = perf_counter()
        try:
            done = self._done = bool(ffi.wasmtime_call_future_poll(self._future))
        finally:
            clock.guest += perf_counter() - start - (clock.host - host_before)
        return done

    def close(self) -> None:
        """Drop the call (a suspended guest is abandoned: its instance must not be used)."""
        if self._future is not None:
            ffi.wasmtime_call_future_delete(self._future)
            self._future = None
            self._release()

    def _release(self) -> None:
        """Free what the call held besides the future (subclasses)."""


class CallFuture(PolledFuture):
    """One call of a component function, run on wasmtime's fiber: :meth:`poll` runs the
    guest until it returns or an async host function suspends it.

    A guest that never calls an async host function finishes in its first poll.
    """

    def __init__(self, func: Any, store: Any, fty: CachedFuncType, params: tuple[Any, ...]) -> None:
        if len(params) != len(fty.params):
            raise TypeError(
                f"wrong number of parameters: given {len(params)}, expected {len(fty.params)}"
            )
        self._fty = fty
        self._params = (ffi.wasmtime_component_val_t * len(params))()
        self._n = 0
        try:
            for ty, val in zip(fty.params, params, strict=True):
                ty.convert_to_c(store, val, pointer(self._params[self._n]))
                self._n += 1
        except BaseException:
            self._release()
            raise
        self._result = ffi.wasmtime_component_val_t() if fty.result is not None else None
        self._error = ctypes.POINTER(ffi.wasmtime_error_t)()
        self._future = ffi.wasmtime_component_func_call_async(
            byref(func._func),
            store._context(),
            self._params,
            self._n,
            byref(self._result) if self._result is not None else None,
            1 if self._result is not None else 0,
            byref(self._error),
        )

    def result(self) -> Any:
        """The finished call's result; raises what made it fail."""
        try:
            if self._error:
                _raise(self._error)
            if self._result is None:
                return None
            return self._fty.result.convert_from_c(self._result)
        finally:
            self.close()

    def _release(self) -> None:
        for i in range(self._n):
            ffi.wasmtime_component_val_delete(byref(self._params[i]))
        self._n = 0


def instantiate(linker: Any, store: Any, component: Any) -> Any:
    """Instantiate on wasmtime's async path (every call into a store with async host
    functions must be); instantiation itself never suspends."""
    instance = ffi.wasmtime_component_instance_t()
    error = ctypes.POINTER(ffi.wasmtime_error_t)()
    future = ffi.wasmtime_component_linker_instantiate_async(
        linker.ptr(), store._context(), component.ptr(), byref(instance), byref(error)
    )
    try:
        if not ffi.wasmtime_call_future_poll(future):
            raise wasmtime.WasmtimeError("instantiation was suspended")
    finally:
        ffi.wasmtime_call_future_delete(future)
    if error:
        _raise(error)
    return wc.Instance._from_raw(instance)


def _raise(error: Any) -> NoReturn:
    """Raise what a wasmtime error stands for: the Python exception a host function
    raised, if one did (wasmtime-py keeps it aside), else the error itself."""
    exc = wasmtime.WasmtimeError._from_ptr(error)
    maybe_raise_last_exn()
    raise exc


# -- host functions ---------------------------------------------------------------------

_HOST_FUNCS: dict[int, tuple[Callable[..., Any], CachedFuncType]] = {}
_next_id = 1


def _run_host(context: Any, run: Callable[[Any], None]) -> Any:
    """Run a host function's body for wasmtime (exceptions become its error pointer),
    timed as host time."""
    start = perf_counter()
    try:
        return catch_exceptions(context, run)
    finally:
        clock.host += perf_counter() - start


@ffi.wasmtime_component_func_callback_t
def _host_callback(idx, context, _ty_raw, args, nargs, results, nresults):  # type: ignore[no-untyped-def]
    def run(store: Any) -> None:
        fn, fty = _HOST_FUNCS[idx or 0]
        pyargs = [ty.convert_from_c(args[i]) for i, ty in enumerate(fty.params)]
        result = fn(store, *pyargs)
        if fty.result is not None:
            fty.result.convert_to_c(store, result, results)

    return _run_host(context, run)


@CFUNCTYPE(None, c_void_p)
def _host_finalize(idx):  # type: ignore[no-untyped-def]
    _HOST_FUNCS.pop(idx or 0, None)


class Suspended:
    """Returned by an async host function that must wait: the guest's call is suspended,
    and wasmtime asks :meth:`poll` again each time the call is polled. Once ``poll``
    returns True, ``value`` is the function's result. ``poll`` must not raise."""

    value: Any = None

    def poll(self) -> bool:
        raise NotImplementedError

    def fail(self, exc: BaseException) -> None:
        """The result could not be handed to the guest."""
        raise NotImplementedError


# suspended host calls by id: what they wait for, their result slot and store context
_SUSPENDED: dict[int, tuple[Suspended, CachedFuncType, Any, Any]] = {}
_next_suspended = 1


@CFUNCTYPE(ctypes.c_bool, c_void_p)
def finished(_env):  # type: ignore[no-untyped-def]
    """An async host function's continuation that has its result already."""
    return True


@CFUNCTYPE(ctypes.c_bool, c_void_p)
def _resume(env):  # type: ignore[no-untyped-def]
    suspended, fty, results, context = _SUSPENDED[env or 0]
    start = perf_counter()
    try:
        if not suspended.poll():
            return False
        if fty.result is not None:
            store = wasmtime.StoreContext(context)
            try:
                fty.result.convert_to_c(store, suspended.value, results)
            except Exception as exc:
                suspended.fail(exc)
                return False
            finally:
                store._invalidate()
        return True
    finally:
        clock.host += perf_counter() - start


@CFUNCTYPE(None, c_void_p)
def _forget_suspended(env):  # type: ignore[no-untyped-def]
    _SUSPENDED.pop(env or 0, None)


@ffi.wasmtime_component_func_async_callback_t
def _async_host_callback(idx, context, _ty, args, nargs, results, nresults, error_ret, cont):  # type: ignore[no-untyped-def]
    global _next_suspended
    fn, fty = _HOST_FUNCS[idx or 0]
    outcome: list[Any] = []

    def run(store: Any) -> None:
        value = fn(store, *[ty.convert_from_c(args[i]) for i, ty in enumerate(fty.params)])
        if isinstance(value, Suspended):
            outcome.append(value)
        elif fty.result is not None:
            fty.result.convert_to_c(store, value, results)

    error = _run_host(context, run)
    cont.contents.callback = finished
    if error:
        error_ret[0] = ctypes.cast(error, ctypes.POINTER(ffi.wasmtime_error_t))
    elif outcome:
        key = _next_suspended
        _next_suspended += 1
        saved_results = ctypes.cast(results, ctypes.POINTER(ffi.wasmtime_component_val_t))
        _SUSPENDED[key] = (outcome[0], fty, saved_results, context)
        cont.contents.callback = _resume
        cont.contents.env = key
        cont.contents.finalizer = _forget_suspended


def add_host_func(inst: Any, name: str, fn: Callable[..., Any], func_type: Any) -> None:
    """Define ``name`` in a linker instance, converting values with cached types."""
    _register(inst, name, fn, func_type, blocking=False)


def add_host_func_async(inst: Any, name: str, fn: Callable[..., Any], func_type: Any) -> None:
    """Define ``name`` as a host function that may suspend its caller: ``fn`` returns
    its result, or a :class:`Suspended` to be polled until it has one."""
    _register(inst, name, fn, func_type, blocking=True)


def _register(
    inst: Any, name: str, fn: Callable[..., Any], func_type: Any, *, blocking: bool
) -> None:
    global _next_id
    idx = _next_id
    _next_id += 1
    _HOST_FUNCS[idx] = (fn, CachedFuncType(func_type))
    name_bytes = name.encode("utf-8")
    define = (
        ffi.wasmtime_component_linker_instance_add_func_async
        if blocking
        else ffi.wasmtime_component_linker_instance_add_func
    )
    err = define(
        inst.ptr(),
        create_string_buffer(name_bytes),
        len(name_bytes),
        _async_host_callback if blocking else _host_callback,
        idx,
        _host_finalize,
    )
    if err:
        raise wasmtime.WasmtimeError._from_ptr(err)


__all__ = [
    "CachedFuncType",
    "CallFuture",
    "PolledFuture",
    "Suspended",
    "add_host_func",
    "add_host_func_async",
    "cache_types",
    "clock",
    "finished",
    "instantiate",
]
