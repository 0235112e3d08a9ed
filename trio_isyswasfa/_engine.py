"""The one seam between trio_isyswasfa and wasmtime-py's component API.

Everything that touches ``wasmtime.component`` lives here, so that the engine can be
replaced (a canonical-ABI layer over wasmtime's core API is planned) without touching
the scheduler or WASI code. What this module guarantees to the rest:

* host functions never let a Python exception escape into wasmtime unannounced: a
  :class:`~trio_isyswasfa.WasiError` becomes ``result::err`` when the WIT result allows
  it; anything else is recorded as the instance's fault and traps the guest, and the
  call into wasm that was running raises that fault;
* handles cross as integers (reps) with a resource kind;
* results cross as :class:`Ok` / :class:`Err` whatever wasmtime-py's tagging rules are;
* a call into a guest (:meth:`ExportFunc.call`) runs on wasmtime's fiber and never
  holds the event loop for long: the guest yields at every epoch tick, and a
  :class:`Blocking` host function suspends it while the event loop awaits its wait.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import wasmtime
import wasmtime.component as wc

from . import _fastcall
from ._errors import (
    GuestProtocolError,
    GuestTrap,
    HostProtocolError,
    InstanceDead,
    InternalError,
    IsyswasfaError,
    LinkError,
    LoadError,
    WasiError,
)
from ._limits import Limits
from ._protocol import (
    InCancel,
    InCancelComplete,
    InListening,
    InReady,
    OutCancel,
    OutCancelComplete,
    OutListen,
    OutPending,
    OutReady,
    PollInput,
    PollOutput,
)
from ._turns import Turns
from .engine._values import Err as Err
from .engine._values import Ok as Ok
from .engine._values import ReadInto as ReadInto

ResourceHost = wc.ResourceHost
ResourceAny = wc.ResourceAny
Store = wasmtime.Store

_untagged_unless_clashing = wc.ResultType._tagged


def _payload_classes(ty: Any) -> set[type] | None:
    if ty is None:
        return None
    classes: set[type] = set()
    ty.add_classes(classes)
    return classes


def _result_tagged(self: Any) -> bool:
    """wasmtime-py tells the two cases of a ``result`` apart by the Python classes of
    their values unless they share one; but an option's ``none`` counts as ``object``,
    which shares nothing by that test, and every ``err`` of a ``result<option<T>, E>``
    then lowers as ``ok`` ("value not valid for this variant"). Such results are
    tagged (``Variant("ok" | "err", …)``) instead."""
    if _untagged_unless_clashing(self):
        return True
    ok, err = _payload_classes(self.ok), _payload_classes(self.err)
    return ok is not None and err is not None and (object in ok or object in err)


wc.ResultType._tagged = _result_tagged  # type: ignore[method-assign]


class ResourceKind:
    """Host resource type ids (``ResourceType.host``); one per WIT resource we define."""

    PENDING = 1
    CANCEL = 2
    READY = 3
    POLLABLE = 10
    ERROR = 11
    INPUT_STREAM = 12
    OUTPUT_STREAM = 13
    TERMINAL_INPUT = 20
    TERMINAL_OUTPUT = 21
    DESCRIPTOR = 30
    DIRECTORY_ENTRY_STREAM = 31
    NETWORK = 40
    TCP_SOCKET = 41
    UDP_SOCKET = 42
    INCOMING_DATAGRAM_STREAM = 43
    OUTGOING_DATAGRAM_STREAM = 44
    RESOLVE_ADDRESS_STREAM = 45
    FIELDS = 50
    BODY = 51
    REQUEST = 52
    RESPONSE = 53
    REQUEST_OPTIONS = 54
    TRAILERS_SENDER = 55
    TRAILERS_RECEIVER = 56
    # wasi:http@0.2.x
    P2_FIELDS = 60
    INCOMING_REQUEST = 61
    OUTGOING_REQUEST = 62
    P2_REQUEST_OPTIONS = 63
    RESPONSE_OUTPARAM = 64
    INCOMING_RESPONSE = 65
    INCOMING_BODY = 66
    FUTURE_TRAILERS = 67
    OUTGOING_RESPONSE = 68
    OUTGOING_BODY = 69
    FUTURE_INCOMING_RESPONSE = 70


class HostOwn(ResourceHost):
    """An owned handle to a host resource, to pass to a guest.

    Our own engine reads ``rep`` and never needs wasmtime's object; the stock engine's
    lowering asks for the pointer (``ptr()``), and only then is wasmtime's handle made.
    Making it for every handle cost the own engine three C calls per handle (a third of
    a pending guest task's host cost in resource bookkeeping).
    """

    __slots__ = ("_kind", "_made", "_rep")

    def __init__(self, rep: int, kind: int) -> None:  # not ResourceHost's (it refuses)
        self._rep = rep
        self._kind = kind
        self._made = False

    @property
    def rep(self) -> int:
        """The host's rep for the resource."""
        return self._rep

    @property
    def type(self) -> int:
        """The resource kind (:class:`ResourceKind`)."""
        return self._kind

    @property
    def owned(self) -> bool:
        """Always: an ``own`` handle."""
        return True

    def ptr(self) -> Any:
        """wasmtime's handle, made on first use."""
        if not self._made:
            self._made = True
            self._set_ptr(ResourceHost.own(self._rep, self._kind)._consume())
        return super().ptr()

    def __del__(self) -> None:
        # wasmtime's own finaliser looks its pointer up through a caught AttributeError:
        # ~2% of a guest's fan-out on our engine, which never makes the pointer
        if self._made:
            self.close()


def own(rep: int, kind: int) -> Any:
    """An owned handle to pass to a guest."""
    return HostOwn(rep, kind)


# -- engine and compile cache -----------------------------------------------------------

_engine: wasmtime.Engine | None = None


# Settings of the engine that change what a compiled component is; part of the
# compile-cache key. Concurrency support (the component model's own async, WASI 0.3)
# is off: isyswasfa polyfills it, and with it on wasmtime 50 traps ("deferred host
# scope has no call context") lifting any host call with two or more borrowed handles,
# such as ``poll`` on several pollables, ``splice``, ``rename-at`` or sockets'
# ``start-bind``. wasmtime-py has no property for it, so the C API is called directly.
# Epoch interruption is on: a computing guest yields at every tick (and is stopped
# after ``Limits.max_run_seconds``).
_ENGINE_SETTINGS = "cm-sync-only-epoch"

# epoch ticks: one every EPOCH_TICK seconds, from a daemon thread the first instance starts
EPOCH_TICK = 0.01
_NO_DEADLINE = 1 << 62
_ticker: threading.Thread | None = None
ticks = 0
"""Epoch ticks so far (counted after each increment): a store whose deadline was set at
the same count has it at the next tick already, and need not set it again."""


def engine() -> wasmtime.Engine:
    """The process-wide engine (component model on, its native concurrency off)."""
    global _engine
    if _engine is None:
        config = wasmtime.Config()
        config.wasm_component_model = True
        config.epoch_interruption = True
        wasmtime._bindings.wasmtime_config_concurrency_support_set(config.ptr(), False)
        _engine = wasmtime.Engine(config)
    return _engine


def _yield_at_epoch_deadlines(store: wasmtime.Store) -> None:
    """Make ``store``'s guest yield to its caller at each epoch deadline (then move the
    deadline one tick on) instead of trapping.

    wasmtime-py 50 declares the C function as returning an error pointer, but it
    returns nothing: it is called through our own prototype.
    """
    global _yield_and_update
    if _yield_and_update is None:
        native = wasmtime._bindings._wasmtime_context_epoch_deadline_async_yield_and_update
        address = ctypes.cast(native, ctypes.c_void_p).value or 0
        prototype = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64)
        _yield_and_update = prototype(address)
    _yield_and_update(ctypes.cast(store._context(), ctypes.c_void_p), 1)


_yield_and_update: Any = None


def tick(eng: wasmtime.Engine | None = None) -> None:
    """Advance the engine's epoch one tick (what the ticker thread does, and the one way
    to do it: the stores' deadlines go by :data:`ticks`)."""
    global ticks
    (eng or engine()).increment_epoch()
    ticks += 1  # (after the increment: a reader may see the epoch one ahead)


def _start_ticker() -> None:
    """Advance the engine's epoch every EPOCH_TICK seconds: a computing guest yields then.

    The increment is called through a prototype that keeps the GIL (it takes
    nanoseconds): through wasmtime-py's, which lets the GIL go for the C call, each tick
    took the GIL from the event-loop thread twice, and under load each hand-over may
    wait for a descheduled thread.
    """
    global _ticker
    if _ticker is not None:
        return
    eng = engine()
    native = wasmtime._bindings._wasmtime_engine_increment_epoch
    address = ctypes.cast(native, ctypes.c_void_p).value or 0
    increment = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)(address)
    pointer = ctypes.cast(eng.ptr(), ctypes.c_void_p).value

    def ticker() -> None:
        global ticks
        while True:
            time.sleep(EPOCH_TICK)
            increment(pointer)  # (``eng`` lives as long as the process)
            ticks += 1  # (after the increment, as in tick())

    _ticker = threading.Thread(target=ticker, name="trio_isyswasfa epoch", daemon=True)
    _ticker.start()


def cache_dir() -> Path:
    """Where compiled components are kept (``$TRIO_ISYSWASFA_CACHE`` overrides)."""
    env = os.environ.get("TRIO_ISYSWASFA_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trio_isyswasfa" / "compiled"


def keep_in_cache(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` in the cache, whole or not at all (a file of its own,
    renamed over ``path``: another process reads the old copy or the new one, never
    half of one). A cache that cannot be written only costs time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:
        pass


def _compiled_path(digest: str) -> Path:
    version = getattr(wasmtime, "__version__", "unknown")
    return cache_dir() / f"{digest}-wasmtime-{version}-{_ENGINE_SETTINGS}.cwasm"


def load_compiled(digest: str) -> wc.Component | None:
    """The compiled copy of the component whose bytes have SHA-256 ``digest`` (hex),
    if the on-disk cache holds a sound one."""
    cached = _compiled_path(digest)
    if not cached.exists():
        return None
    try:
        return wc.Component.deserialize_file(engine(), str(cached))
    except wasmtime.WasmtimeError:
        cached.unlink(missing_ok=True)  # stale or corrupt: compile again
        return None


def compile_component(
    wasm: bytes, *, use_cache: bool = True, digest: str | None = None
) -> wc.Component:
    """Compile a component, reusing an on-disk compiled copy keyed on the bytes
    (``digest``: their SHA-256 in hex, if the caller has it already)."""
    eng = engine()
    key = digest or hashlib.sha256(wasm).hexdigest()
    cached = _compiled_path(key)
    if use_cache:
        component = load_compiled(key)
        if component is not None:
            return component
    if not wasm.startswith(b"\0asm"):
        raise LoadError("not a WebAssembly binary")
    if wasm[4:8] == b"\x01\x00\x00\x00":
        raise LoadError("a core WebAssembly module, not a component")
    try:
        component = wc.Component(eng, wasm)
    except wasmtime.WasmtimeError as exc:
        raise LoadError(compile_problem(str(exc))) from exc
    if use_cache:
        keep_in_cache(cached, bytes(component.serialize()))
    return component


def trap_reason(text: str) -> str:
    """The informative line of a wasmtime trap message (not the backtrace)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if "Caused by:" in lines:
        rest = lines[lines.index("Caused by:") + 1 :]
        if rest:
            return rest[-1].lstrip("0123456789: ")
    for line in reversed(lines):
        if (
            not line.startswith(("0:", "1:", "2:"))
            and "wasm backtrace" not in line
            and "!" not in line
        ):
            return line
    return lines[-1] if lines else "unknown trap"


# wasmtime's words for a feature its validator was not given, e.g. "`context.get`
# requires the component model async feature", "the custom page sizes proposal must be
# enabled to ..." or "threads support is not enabled"
_MISSING_FEATURE = re.compile(
    r"(?P<what>`[^`]+`)?\s*requires the (?P<a>[\w -]+?) (?:feature|proposal)"
    r"|the (?P<b>[\w -]+?) proposal must be enabled"
    r"|(?P<c>[\w -]+?) (?:support|proposal) is not enabled"
)


def compile_problem(text: str) -> str:
    """One line saying why wasmtime refused to compile a component, from its error.

    A component using the component model's async built-ins (WASI 0.3, or
    componentize-py's ``async def`` exports) and one using a WebAssembly proposal
    this host does not enable are named as such, not as a file that fails to parse.
    """
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    causes = [ln for ln in lines if ln != "Caused by:"]
    cause = causes[-1].lstrip("0123456789: ") if causes else "unknown error"
    match = _MISSING_FEATURE.search(cause)
    if match is not None:
        feature = (match["a"] or match["b"] or match["c"]).strip()
        if "async" in feature:
            return async_problem(match["what"])
        return (
            f"cannot run this component: it uses the WebAssembly {feature} proposal, "
            f"which this host does not enable"
        )
    head = causes[0] if causes else "unknown error"
    detail = f": {cause}" if cause != head else ""
    return f"cannot compile component: {head}{detail}"


def async_problem(what: str | None) -> str:
    """Why a component using the component model's async (``what``: the first built-in
    it uses, in backquotes) cannot run here."""
    used = f" ({what})" if what else ""
    return (
        f"cannot run this component: it uses the component model's async "
        f"built-ins{used}, as WASI 0.3 components do; this host runs WASI 0.2 "
        f"components (isyswasfa's async included), not native component-model "
        f"async yet"
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


# -- component types --------------------------------------------------------------------


@dataclass(frozen=True)
class ImportedItem:
    """One function or resource a component imports from interface ``interface``."""

    interface: str  # as imported, e.g. ``wasi:io/poll@0.2.9``
    name: str  # e.g. ``[method]pollable.ready``
    func_type: Any  # wc.FuncType, or None for a resource


def component_imports(component: wc.Component) -> dict[str, list[ImportedItem]]:
    """Imported interfaces and, for each, the functions and resources it uses."""
    out: dict[str, list[ImportedItem]] = {}
    eng = engine()
    for name, ext in component.type.imports(eng).items():
        ty = ext.ty
        items: list[ImportedItem] = []
        if isinstance(ty, wc.ComponentInstanceType):
            for item_name, item in ty.exports(eng).items():
                ity = item.ty
                if isinstance(ity, wc.FuncType):
                    items.append(ImportedItem(name, item_name, ity))
                elif isinstance(ity, wc.ResourceType):
                    items.append(ImportedItem(name, item_name, None))
                # other items are type definitions: nothing to provide
        elif isinstance(ty, wc.FuncType):
            items.append(ImportedItem("", name, ty))
        out[name] = items
    return out


def component_exports(component: wc.Component) -> dict[str, dict[str, Any]]:
    """Exports: ``{"": {root funcs}, "iface": {funcs}}`` with their FuncTypes."""
    eng = engine()
    out: dict[str, dict[str, Any]] = {"": {}}
    for name, ext in component.type.exports(eng).items():
        ty = ext.ty
        if isinstance(ty, wc.FuncType):
            out[""][name] = ty
        elif isinstance(ty, wc.ComponentInstanceType):
            out[name] = {
                n: i.ty for n, i in ty.exports(eng).items() if isinstance(i.ty, wc.FuncType)
            }
    return out


def returns_result(item: ImportedItem) -> bool:
    """Whether an imported function's WIT result is a ``result<…>`` (its type is either
    engine's)."""
    result = item.func_type.result
    if isinstance(item.func_type, wc.FuncType):
        return isinstance(result, wc.ResultType)
    # the own engine's types: loaded with it, never for a component wasmtime-py runs
    from .engine._types import ResultType

    return isinstance(result, ResultType)


def strip_version(interface: str) -> str:
    """``wasi:io/poll@0.2.9`` -> ``wasi:io/poll``."""
    return interface.split("@", 1)[0]


# -- values -----------------------------------------------------------------------------


def _result_lowerer(ty: Any) -> Callable[[Any], Any]:
    """How to hand ``Ok``/``Err`` (possibly nested, in results or options) to
    wasmtime-py for type ``ty``."""
    if isinstance(ty, wc.OptionType):
        return _option_lowerer(ty)
    if not isinstance(ty, wc.ResultType):
        return lambda v: v
    tagged = ty._tagged()
    ok_low = _result_lowerer(ty.ok) if ty.ok is not None else (lambda v: v)
    err_low = _result_lowerer(ty.err) if ty.err is not None else (lambda v: v)

    def lower(value: Any) -> Any:
        if isinstance(value, Err):
            payload = err_low(value.value)
            return wc.Variant("err", payload) if tagged else payload
        if isinstance(value, Ok):
            value = value.value
        payload = ok_low(value)
        return wc.Variant("ok", payload) if tagged else payload

    return lower


def _option_lowerer(ty: Any) -> Callable[[Any], Any]:
    """An ``option`` whose payload holds a ``result`` (``future-trailers.get``):
    ``None`` is ``none``, anything else ``some`` of its lowered payload."""
    payload = ty.payload
    if not isinstance(payload, wc.ResultType | wc.OptionType):
        return lambda v: v
    inner = _result_lowerer(payload)
    tagged = ty._tagged()

    def lower(value: Any) -> Any:
        if value is None:
            return wc.Variant("none") if tagged else None
        lowered = inner(value)
        return wc.Variant("some", lowered) if tagged else lowered

    return lower


def _result_lifter(ty: Any) -> Callable[[Any], Any]:
    """Turn wasmtime-py's value of type ``ty`` into ``Ok``/``Err`` for results."""
    if not isinstance(ty, wc.ResultType):
        return lambda v: v
    # read the type once: each ``ty.ok`` / ``ty.err`` builds new type objects via ctypes
    ok_ty, err_ty = ty.ok, ty.err
    tagged = ty._tagged()
    ok_lift = _result_lifter(ok_ty) if ok_ty is not None else (lambda v: v)
    err_lift = _result_lifter(err_ty) if err_ty is not None else (lambda v: v)
    classes: set[type] = set()
    if err_ty is not None:
        err_ty.add_classes(classes)
    err_classes = tuple(classes)

    def lift(value: Any) -> Any:
        if tagged:
            assert isinstance(value, wc.Variant)
            if value.tag == "ok":
                return Ok(ok_lift(value.payload))
            return Err(err_lift(value.payload))
        if err_ty is None:
            return Ok(ok_lift(value))
        if isinstance(value, err_classes):
            # untagged: the classes of the two cases are disjoint
            return Err(err_lift(value))
        return Ok(ok_lift(value))

    return lift


def _error_code_of(ty: Any) -> Callable[[WasiError], Any] | None:
    """For a function whose result is ``result<_, error-code>``: WasiError -> value."""
    if isinstance(ty, wc.ResultType) and ty.err is not None:
        lower = _result_lowerer(ty)
        return lambda exc: lower(Err(exc.code))
    return None


# -- linking ----------------------------------------------------------------------------


HostFunc = Callable[..., Any]


class FaultSink:
    """Where host functions report a fault that must kill the instance, and where the
    guest says why it is about to trap (``isyswasfa:isyswasfa/trap``)."""

    def __init__(self) -> None:
        self.fault: BaseException | None = None
        self.reason: str | None = None

    def record(self, exc: BaseException) -> None:
        if self.fault is None:
            self.fault = exc

    def trap(self, label: str, message: str) -> GuestTrap:
        """The :class:`GuestTrap` for a wasm trap in ``label`` (wasmtime's ``message``),
        led by the reason the guest gave, if it gave one (both engines build it here)."""
        reason = trap_reason(message)
        if self.reason is not None:
            reason = f"{self.reason} ({reason})"
        return GuestTrap(f"guest trapped in {label}: {reason}")


def _convert_arg(store: Any, value: Any) -> Any:
    if isinstance(value, ResourceAny):
        return value.to_host(store).rep
    if isinstance(value, list) and value and isinstance(value[0], ResourceAny):
        return [v.to_host(store).rep for v in value]
    return value


class _Signature:
    """What one imported function's types say about calling it, worked out once."""

    def __init__(self, item: ImportedItem) -> None:
        ty = item.func_type
        self.label = f"{item.interface}#{item.name}" if item.interface else item.name
        self.lower = _result_lowerer(ty.result)
        self.to_error = _error_code_of(ty.result)
        self.lifts = [_result_lifter(t) for _, t in ty.params]


def _call_host(fn: HostFunc, sig: _Signature, faults: FaultSink, store: Any, args: Any) -> Any:
    """Run our host function ``fn`` for a guest; never let an error escape unannounced."""
    if faults.fault is not None:
        raise GuestTrap("instance is dead")
    lifts = sig.lifts
    return _host_outcome(
        sig,
        faults,
        lambda: fn(*[lift(_convert_arg(store, a)) for lift, a in zip(lifts, args, strict=True)]),
    )


def _host_outcome(sig: _Signature, faults: FaultSink, run: Callable[[], Any]) -> Any:
    """``run()``'s result lowered for the guest (a blocking function's :class:`_Waiting`
    as it is); a :class:`WasiError` becomes the WIT error where the result has one;
    anything else is recorded as the instance's fault and raised."""
    try:
        result = run()
        return result if type(result) is _Waiting else sig.lower(result)
    except WasiError as exc:
        if sig.to_error is not None:
            return sig.to_error(exc)
        faults.record(InternalError(f"{sig.label}: {exc} has no WIT error to carry it"))
        raise
    except IsyswasfaError as exc:
        faults.record(exc)
        raise
    except Exception as exc:
        fault = InternalError(f"host function {sig.label} failed: {exc!r}")
        fault.__cause__ = exc
        faults.record(fault)
        raise


class Blocking:
    """A host function that may wait (``blocking-read``, ``poll``…): ``fn`` is a generator
    function that yields ``wait`` coroutine functions and returns its result.

    While it waits, the guest's call is suspended on wasmtime's fiber and the event loop
    runs on; the call's driver (:meth:`ExportFunc.call`) awaits each wait, then resumes
    the generator.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn


class _HostWait(_fastcall.Suspended):
    """A blocking host function's generator, suspended while its driver awaits ``wait``."""

    def __init__(self, waiting: _Waiting, sig: _Signature, bound: _Bound) -> None:
        self.gen = waiting.gen
        self.sig = sig
        self.bound = bound
        self.wait = waiting.wait
        self.waited = False
        bound.suspended = self

    def poll(self) -> bool:
        if not self.waited:
            return False
        self.waited = False
        try:
            value = _host_outcome(self.sig, self.bound.faults, lambda: _step(self.gen))
        except Exception:
            return False  # the instance's fault now: its driver drops the call
        if type(value) is _Waiting:
            self.wait = value.wait
            return False
        self.value = value
        self.bound.suspended = None
        return True

    def fail(self, exc: BaseException) -> None:
        self.bound.faults.record(exc)


@dataclass
class ResourceDef:
    """A host resource: its type id and what to do when the guest drops a handle."""

    kind: int
    on_drop: Callable[[int], object]


Resolved = HostFunc | Blocking | ResourceDef | None


class _Bound:
    """One instance's implementations of its component's imports, by item index."""

    def __init__(self, impls: list[Resolved], faults: FaultSink) -> None:
        self.impls = impls
        self.faults = faults
        self.suspended: _HostWait | None = None  # the blocking host call the guest is in


# the instance behind each live store, keyed by the address of its wasmtime context
_BOUND: dict[int, _Bound] = {}


def _store_key(store: Any) -> int:
    return int(ctypes.cast(store._context(), ctypes.c_void_p).value or 0)


@dataclass(frozen=True)
class ExportSignature:
    """An export's cached parameter/result types and how to lift its result."""

    fty: Any
    lift: Callable[[Any], Any]


class LinkPlan:
    """A component's imports and one linker for all its instances.

    Building a linker converts every imported function's type through ctypes (tens
    of milliseconds for a Python guest), so it is done once per component: its host
    functions dispatch on the calling store to the implementations of the instance
    that owns it.
    """

    def __init__(self, component: wc.Component) -> None:
        self.component = component
        imports = component_imports(component)
        self.interfaces = sorted(imports)  # every imported name, for listing
        self.items = [i for items in imports.values() for i in items]
        self._linker: wc.Linker | None = None
        self._shape: list[int | None] = []  # per item: a resource kind, -1 a function, or None
        self._exports: dict[str, ExportSignature] = {}

    def export_signature(self, label: str, ty: Any) -> ExportSignature:
        """How to call export ``label`` of type ``ty`` (worked out once per component)."""
        sig = self._exports.get(label)
        if sig is None:
            sig = self._exports[label] = ExportSignature(
                _fastcall.CachedFuncType(ty), _result_lifter(ty.result)
            )
        return sig

    @staticmethod
    def _shape_of(impls: list[Resolved]) -> list[int | None]:
        # per item: None (defined elsewhere), a resource kind, -1 a function, -2 a blocking one
        def shape(impl: Resolved) -> int | None:
            if impl is None:
                return None
            if isinstance(impl, ResourceDef):
                return impl.kind
            return -2 if isinstance(impl, Blocking) else -1

        return [shape(i) for i in impls]

    def linker(self, impls: list[Resolved]) -> wc.Linker:
        """The linker, for an instance whose implementations are ``impls`` (by item)."""
        shape = self._shape_of(impls)
        if self._linker is None:
            self._linker = self._build(shape)
            self._shape = shape
        elif shape != self._shape:
            raise InternalError("an instance resolved its imports differently from the first")
        return self._linker

    def _build(self, shape: list[int | None]) -> wc.Linker:
        linker = wc.Linker(engine())
        by_interface: dict[str, list[int]] = {}
        for idx, item in enumerate(self.items):
            by_interface.setdefault(item.interface, []).append(idx)
        with linker.root() as root:
            for iface, indexes in by_interface.items():
                if iface:
                    with root.add_instance(iface) as inst:
                        self._define(inst, indexes, shape)
                else:
                    self._define(root, indexes, shape)
        return linker

    def _define(self, inst: Any, indexes: list[int], shape: list[int | None]) -> None:
        for idx in indexes:
            item, kind = self.items[idx], shape[idx]
            if kind is None:
                continue
            if kind >= 0:
                inst.add_resource(item.name, wc.ResourceType.host(kind), _dispatch_drop(idx))
            elif kind == -2:
                sig = _Signature(item)
                host = _dispatch_blocking(idx, sig)
                _fastcall.add_host_func_async(inst, item.name, host, item.func_type)
            else:
                sig = _Signature(item)
                _fastcall.add_host_func(inst, item.name, _dispatch(idx, sig), item.func_type)


def _dispatch(idx: int, sig: _Signature) -> HostFunc:
    def host_func(store: Any, *args: Any) -> Any:
        bound = _BOUND[_store_key(store)]
        return _call_host(bound.impls[idx], sig, bound.faults, store, args)  # type: ignore[arg-type]

    return host_func


def _dispatch_blocking(idx: int, sig: _Signature) -> HostFunc:
    def host_func(store: Any, *args: Any) -> Any:
        bound = _BOUND[_store_key(store)]
        impl = bound.impls[idx]
        assert isinstance(impl, Blocking)
        value = _call_host(lambda *lifted: _step(impl.fn(*lifted)), sig, bound.faults, store, args)
        return _HostWait(value, sig, bound) if type(value) is _Waiting else value

    return host_func


@dataclass
class _Waiting:
    """A blocking host function's generator and what it waits for now."""

    wait: Any
    gen: Any


def _step(gen: Any) -> Any:
    """Run a blocking host function's generator to its next wait, or its result."""
    try:
        return _Waiting(gen.send(None), gen)
    except StopIteration as stop:
        return stop.value


def _dispatch_drop(idx: int) -> Callable[[Any, int], None]:
    def dtor(store: Any, rep: int) -> None:
        bound = _BOUND.get(_store_key(store))
        if bound is None or bound.faults.fault is not None:
            return  # the instance is gone or dead: nothing to tidy
        resource = bound.impls[idx]
        assert isinstance(resource, ResourceDef)
        try:
            resource.on_drop(rep)
        except IsyswasfaError as exc:
            bound.faults.record(exc)
            raise
        except Exception as exc:
            bound.faults.record(InternalError(f"dropping a handle failed: {exc!r}"))
            raise

    return dtor


# -- instances and calls ----------------------------------------------------------------


class WaitHook:
    """The ``before_wait`` hook of an instance of either engine (the seam's
    ``EngineInstance.before_wait`` says what it is for)."""

    before_wait: Callable[[], object] | None = None

    def waits_now(self) -> None:
        """An export call is about to wait for the first time (for the store, or on
        the guest): call :attr:`before_wait` once, then clear it (the seam's
        ``EngineInstance.before_wait`` says why)."""
        hook, self.before_wait = self.before_wait, None
        if hook is not None:
            hook()


class EngineInstance(WaitHook):
    """A store and an instantiated component, with calls that map failures."""

    def __init__(
        self,
        plan: LinkPlan,
        exports: dict[str, dict[str, Any]],
        resolve_item: Callable[[ImportedItem], Resolved],
        limits: Limits | None = None,
    ) -> None:
        """Resolve every import of ``plan``'s component and instantiate it.

        ``resolve_item`` raises :class:`LinkError` for what the host does not provide.
        """
        self.faults = FaultSink()
        self.plan = plan
        self.guest_seconds = 0.0  # in export calls, less the host functions they called
        self.limits = limits or Limits()
        impls = [resolve_item(item) for item in plan.items]
        linker = plan.linker(impls)
        self.store = wasmtime.Store(engine())
        self.store.set_epoch_deadline(_NO_DEADLINE)  # instantiation runs uninterrupted
        if self.limits.max_memory is not None:
            self.store.set_limits(memory_size=self.limits.max_memory)
        self._key = _store_key(self.store)
        self.bound = _BOUND[self._key] = _Bound(impls, self.faults)
        # a call is running or suspended: the store admits no other until it returns
        self.turns = Turns()
        try:
            self.instance = _fastcall.instantiate(linker, self.store, plan.component)
        except wasmtime.WasmtimeError as exc:
            self.close()
            raise LinkError(_first_line(str(exc))) from exc
        # from now on a guest computing yields to the event loop every epoch tick
        _start_ticker()
        _yield_at_epoch_deadlines(self.store)
        self.store.set_epoch_deadline(1)
        self._exports = exports

    async def enter(self) -> None:
        """Take the store for one call; wait in line while another call has it
        (suspended). Costs no checkpoint when the store is free, as most of the time."""
        await self.turns.take()

    def leave(self) -> None:
        """Hand the store to the next call in line (waking it alone)."""
        self.turns.give_back()

    @property
    def blocked(self) -> bool:
        """Whether a guest call is suspended in a blocking host call (``time.sleep``, a
        blocking read): calls into this instance wait until it returns."""
        return self.bound.suspended is not None

    def close(self) -> None:
        """Forget this instance's implementations (its store is done)."""
        _BOUND.pop(self._key, None)

    @staticmethod
    def own_handle(rep: int, kind: int) -> Any:
        """An owned handle of host resource ``rep`` (of ``kind``) to give the guest."""
        return own(rep, kind)

    def handle_rep(self, handle: Any) -> int:
        """The rep of a host resource handle the guest passed or returned (consumes an
        owned one)."""
        if not isinstance(handle, ResourceAny):
            raise GuestProtocolError(f"expected a resource handle, got {handle!r}")
        return handle_rep(self.store, handle)

    def export_names(self) -> dict[str, dict[str, Any]]:
        """Exported functions by interface (``""`` for the root)."""
        return self._exports

    def func(self, interface: str, name: str) -> ExportFunc:
        """A callable export; raise :class:`LinkError` if there is none."""
        funcs = self._exports.get(interface, {})
        ty = funcs.get(name)
        if ty is None:
            where = f"interface {interface}" if interface else "the component's root"
            raise LinkError(f"no export {name!r} in {where}")
        if interface:
            idx = self.instance.get_export_index(self.store, interface)
            assert idx is not None
            fidx = self.instance.get_export_index(self.store, name, idx)
        else:
            fidx = self.instance.get_export_index(self.store, name)
        func = self.instance.get_func(self.store, fidx) if fidx is not None else None
        if func is None:
            raise LinkError(f"export {name!r} is not a function")
        label = f"{interface}#{name}" if interface else name
        return ExportFunc(self, func, self.plan.export_signature(label, ty), label)


class ExportFunc:
    """An exported function; :meth:`call` runs it."""

    def __init__(self, owner: EngineInstance, func: Any, sig: ExportSignature, label: str) -> None:
        self.owner = owner
        self.func = func
        self.label = label
        self.lift = sig.lift
        self.fty = sig.fty

    def _start(self, args: tuple[Any, ...]) -> _fastcall.CallFuture:
        owner = self.owner
        if owner.faults.fault is not None:
            raise InstanceDead(f"the component instance has failed: {owner.faults.fault}")
        # a fresh time slice: the deadline the last call left has passed if the store
        # sat idle a tick or more, and the guest would yield at its first check
        owner.store.set_epoch_deadline(1)
        try:
            return _fastcall.CallFuture(self.func, owner.store, self.fty, args)
        except (TypeError, ValueError) as exc:
            # wasmtime-py could not convert our arguments: nothing ran
            raise HostProtocolError(f"bad arguments for {self.label}: {exc}") from exc

    def _poll(self, call: _fastcall.CallFuture) -> bool:
        """Run the guest until it returns, waits, or its time slice ends."""
        owner = self.owner
        before = _fastcall.clock.guest
        try:
            return call.poll()
        finally:
            owner.guest_seconds += _fastcall.clock.guest - before

    def _deadline(self) -> float | None:
        limit = self.owner.limits.max_run_seconds
        return None if limit is None else time.monotonic() + limit

    def _failed(self, exc: BaseException) -> BaseException:
        """What a failed call raises: the instance's recorded fault, or the trap."""
        owner = self.owner
        fault = owner.faults.fault
        if fault is not None:
            return fault
        owner.faults.record(owner.faults.trap(self.label, str(exc)))
        return owner.faults.fault  # type: ignore[return-value]

    def _finish(self, call: _fastcall.CallFuture) -> Any:
        try:
            value = call.result()
        except Exception as exc:
            fault = self._failed(exc)
            raise fault from exc if fault.__cause__ is None else fault.__cause__
        return self.lift(value)

    async def call(self, *args: Any) -> Any:
        """Run the export; while the guest waits in a blocking host function, the event
        loop runs other tasks. Calls into one instance take turns."""
        owner = self.owner
        if owner.before_wait is not None and owner.turns._held:
            owner.waits_now()
        await owner.enter()
        try:
            call = self._start(args)
            deadline = self._deadline()
            while not self._poll(call):
                if owner.before_wait is not None:
                    owner.waits_now()
                await self._wait(call, deadline)
            return self._finish(call)
        finally:
            owner.leave()

    async def _wait(self, call: _fastcall.CallFuture, deadline: float | None) -> None:
        """The guest is suspended: it waits in a blocking host function (await what it
        waits for), or its time slice ended (let other tasks run)."""
        owner = self.owner
        waiting = owner.bound.suspended
        if owner.faults.fault is not None:
            call.close()
            raise owner.faults.fault
        if waiting is None:  # its time slice ended
            if deadline is not None and time.monotonic() >= deadline:
                raise self._over_time(call, "without returning to the host")
            # other tasks run; a cancellation waits for the guest to return, as it
            # would have had the guest held the loop
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()
            return
        try:
            with anyio.fail_after(None if deadline is None else deadline - time.monotonic()):
                await waiting.wait()
        except TimeoutError:
            raise self._over_time(call, "blocked in a host call, without returning") from None
        except BaseException as exc:
            self._abandon(call, exc)
            raise
        waiting.waited = True

    def _over_time(self, call: _fastcall.CallFuture, how: str) -> BaseException:
        """Stop a call that ran past ``max_run_seconds``; the fault to raise."""
        limit = self.owner.limits.max_run_seconds
        trap = GuestTrap(
            f"guest trapped in {self.label}: it ran longer than max_run_seconds ({limit} s), {how}"
        )
        self.owner.faults.record(trap)
        call.close()
        return self.owner.faults.fault or trap

    def _abandon(self, call: _fastcall.CallFuture, exc: BaseException) -> None:
        # cancelled (or the wait failed) in the middle of a call: synchronous guest code
        # cannot be interrupted where it stands, so the instance is given up
        owner = self.owner
        if owner.faults.fault is None:
            owner.faults.record(
                InstanceDead(f"{self.label} was abandoned in the middle of guest code: {exc!r}")
            )
        call.close()


# -- poll events ------------------------------------------------------------------------


def lower_inputs(events: list[PollInput], own_handle: Callable[[int, int], Any] = own) -> list[Any]:
    """Our poll inputs as wasmtime-py values, with fresh owned handles (``own_handle``,
    the engine's, makes them)."""
    out = []
    for ev in events:
        if isinstance(ev, InReady):
            out.append(
                wc.Variant(
                    "ready", record(state=ev.state, ready=own_handle(ev.ready, ResourceKind.READY))
                )
            )
        elif isinstance(ev, InListening):
            out.append(
                wc.Variant(
                    "listening",
                    record(state=ev.state, cancel=own_handle(ev.cancel, ResourceKind.CANCEL)),
                )
            )
        elif isinstance(ev, InCancel):
            out.append(
                wc.Variant(
                    "cancel",
                    record(state=ev.state, cancel=own_handle(ev.cancel, ResourceKind.CANCEL)),
                )
            )
        elif isinstance(ev, InCancelComplete):
            out.append(wc.Variant("cancel-complete", ev.state))
        else:
            raise InternalError(f"unknown poll input {ev!r}")
    return out


def variant(tag: str, payload: Any = None) -> Any:
    """A tagged WIT variant value (for variants whose cases wasmtime-py cannot tell apart
    by Python class, such as two cases without payload)."""
    return wc.Variant(tag, payload)


def variant_case(value: Any) -> tuple[str, Any]:
    """``(tag, payload)`` of a tagged variant value a guest passed."""
    if not isinstance(value, wc.Variant):
        raise GuestProtocolError(f"expected a variant value, got {value!r}")
    return value.tag, value.payload


def record(**fields: Any) -> Any:
    """A WIT record value (fields by their kebab-case names)."""
    rec = wc.Record()
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


def lift_outputs(values: list[Any], handle_rep: Callable[[Any], int]) -> list[PollOutput]:
    """Poll outputs as our events (``handle_rep``, the engine's, turns handles into
    reps, now host-held)."""
    out: list[PollOutput] = []
    append = out.append
    for value in values:
        if value.__class__ is not wc.Variant and not isinstance(value, wc.Variant):
            raise GuestProtocolError(f"poll output is not a variant: {value!r}")
        tag, payload = value.tag, value.payload
        if payload is None:
            raise GuestProtocolError(f"poll output {tag!r} without a payload")
        if tag == "ready":
            append(OutReady(payload.state, handle_rep(payload.ready)))
        elif tag == "listen":
            append(OutListen(payload.state, handle_rep(payload.pending)))
        elif tag == "pending":
            append(OutPending(payload.state, handle_rep(payload.cancel)))
        elif tag == "cancel":
            append(OutCancel(handle_rep(payload)))
        elif tag == "cancel-complete":
            append(OutCancelComplete(handle_rep(payload)))
        else:
            raise GuestProtocolError(f"unknown poll output {tag!r}")
    return out


def handle_rep(store: Any, handle: Any) -> int:
    """The rep of a host resource handle a guest passed or returned (consumes an owned one)."""
    return int(handle.to_host(store).rep)
