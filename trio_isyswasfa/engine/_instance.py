"""Stage 2 of our own engine: a component's core instances on wasmtime's core API.

:class:`CoreInstances` makes one instance of a read :class:`~._model.ComponentDef`:
every core instance it and its nested components define, core modules compiled (and
cached on disk, like :func:`trio_isyswasfa._engine.compile_component`, and in the
process: one :class:`wasmtime.Module` per module, shared by every instance), their
imports taken from earlier core instances, inline core instances and aliases of core
exports, as the index spaces say. Composed components and componentize-py's shim
components come out whole.

The walk over the definitions happens once per component (:mod:`._plan`); an instance
replays the plan: for each core module, the imports it needs are fetched from earlier
instances into one pool of ``wasmtime_extern_t`` (once per item, however many modules
import it), cut out of the pool's bytes into the module's import array with one join
(or passed where they lie, when they lie side by side), and the module is instantiated
with ``wasmtime_instance_new`` directly. The pool, and the arguments of every fetch's C
call, are made once per plan and reused by each opening (:class:`_Scratch`): per
instance, only the C calls remain. Index spaces
are resolved when asked for (a componentize-py guest aliases ~1,500 core exports, of
which an instance uses a few dozen).

Stores whose guests run on fibers (:class:`~._fiber.FiberStore`, which yields at epoch
deadlines) admit only the async instantiation; an instance made in such a store falls
back to it (``wasmtime_linker_instantiate_async``, one linker per module), several
times slower. Async host functions among the imports do not force it: make the host
functions and the instance in a plain store, then turn it into a fiber store. Modules
with a start function take the async path (a start function reaching an async host
function on the synchronous path aborts the process), unless the plan has read the
start function's code and found it inert (:mod:`._startcheck`: it reaches no host
function and runs no loop).

What only the canonical ABI can make (the core functions of ``canon lower``,
``resource.*`` and the async built-ins) comes from a ``trampoline`` callback, given
the definition, the core function type the importing module expects and, for a
``canon lower``, the component function it lowers (a :class:`LiftedFunc` of another
component instance, or an :class:`ImportedFunc` the host provides); without one,
instantiating a module that needs such a function is a
:class:`~trio_isyswasfa.LinkError`.

:meth:`CoreInstances.lifted` finds the ``canon lift`` behind an export and the core
function it lifts: lifting and lowering its values is the canonical ABI's work.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from ctypes import c_bool, c_char_p, c_size_t, c_void_p
from itertools import repeat, starmap
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._extern import wrap_extern

from .. import _engine  # for now the stock seam owns the wasmtime engine and the cache folder
from .._errors import GuestTrap, InternalError, LinkError, LoadError
from .._records import record
from . import _fiber
from ._model import (
    CanonBuiltin,
    CanonLift,
    CanonLower,
    CanonResource,
    ComponentDef,
    CoreModule,
    Definition,
    Sort,
    Start,
)
from ._plan import (
    EXTERN_SIZE,
    CanonRef,
    CoreStep,
    ExportRef,
    ImportedFunc,
    InstancePlan,
    LiftRef,
    NestedStep,
    NodePlan,
    RealInstance,
    build_plan,
    imports_of,
)

CoreExtern = wasmtime.Func | wasmtime.Table | wasmtime.Memory | wasmtime.Global
"""A core export: what a core instance index space entry holds by name."""

Trampoline = Callable[
    [CanonLower | CanonResource | CanonBuiltin, wasmtime.FuncType, "ComponentFunc | None"],
    wasmtime.Func,
]
"""Makes the core function of a canon definition, of the core type a module imports it
as; the third argument is the component function a ``canon lower`` lowers."""

_MODULE_SETTINGS = "core-epoch"

# compiled modules by their bytes' digest, while anything holds them
_MODULES: weakref.WeakValueDictionary[str, wasmtime.Module] = weakref.WeakValueDictionary()


def compile_module(
    data: bytes | memoryview, *, use_cache: bool = True, key: str | None = None
) -> wasmtime.Module:
    """Compile a core module with the process-wide engine, reusing a copy compiled
    earlier in this process or on disk, keyed on the bytes' SHA-256 (``key``, if the
    caller knows it; the on-disk copy lives in the same cache folder as whole
    components)."""
    key = key or hashlib.sha256(data).hexdigest()
    found = _MODULES.get(key)
    if found is not None:
        return found
    eng = _engine.engine()
    version = getattr(wasmtime, "__version__", "unknown")
    cached = _engine.cache_dir() / f"{key}-wasmtime-{version}-{_MODULE_SETTINGS}.cwasm"
    module: wasmtime.Module | None = None
    if use_cache and cached.exists():
        try:
            module = wasmtime.Module.deserialize_file(eng, str(cached))
        except wasmtime.WasmtimeError:
            cached.unlink(missing_ok=True)  # stale or corrupt: compile again
    if module is None:
        try:
            module = wasmtime.Module(eng, bytes(data))
        except wasmtime.WasmtimeError as exc:
            raise LoadError(f"cannot compile core module: {_first_line(str(exc))}") from exc
        if use_cache:
            _engine.keep_in_cache(cached, bytes(module.serialize()))
    _MODULES[key] = module
    return module


def compile_modules(
    component: ComponentDef, *, use_cache: bool = True
) -> dict[int, wasmtime.Module]:
    """Every core module of ``component`` and its nested components, compiled, by the
    module's byte offset (unique in one binary): compiles ahead of the first instance
    (:class:`CoreInstances` keeps a component's modules with its plan anyway)."""
    return {
        m.offset: compile_module(m.data, use_cache=use_cache)
        for c in component.walk()
        for m in c.modules
    }


def instance_plan(
    component: ComponentDef,
    *,
    compiled: Mapping[int, wasmtime.Module] | None = None,
    use_cache: bool = True,
) -> InstancePlan:
    """The plan every instance of ``component`` replays (made once, kept with the
    component in its ``engine_cache``), with its core modules: those of ``compiled`` by byte offset,
    the rest compiled (or loaded from the caches).

    Raises:
      LoadError: a core module does not compile.
      LinkError: the component's core instances do not fit together (see
        :func:`~._plan.build_plan`).
    """
    plan = component.engine_cache.get("plan")
    if isinstance(plan, InstancePlan) and (
        not compiled or all(plan.modules.get(k) is m for k, m in compiled.items())
    ):
        return plan
    given = compiled or {}

    def module(d: CoreModule) -> wasmtime.Module:
        found = given.get(d.offset)
        return found if found is not None else compile_module(d.data, use_cache=use_cache)

    made = component.engine_cache["plan"] = build_plan(component, module)
    return made


_imports_of = imports_of


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


class _Exports(Mapping[str, Any]):
    """A core instance's exports, fetched by name when asked for.

    wasmtime-py's ``Instance.exports`` wraps every export up front, one
    ``wasmtime_instance_export_nth`` call each, and that call gets slower with the
    export's position: componentize-py's interpreter module has thousands of exports,
    of which a component uses a few dozen.
    """

    __slots__ = ("_cache", "_instance", "_module", "_store")

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance, module: wasmtime.Module):
        self._store = store
        self._instance = instance
        self._module = module
        self._cache: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        hit = self._cache.get(name)
        if hit is None:
            raw = name.encode()
            item = ffi.wasmtime_extern_t()
            found = ffi.wasmtime_instance_export_get(
                self._store._context(),
                ctypes.byref(self._instance._instance),
                raw,
                len(raw),
                ctypes.byref(item),
            )
            if not found:
                raise KeyError(name)
            hit = self._cache[name] = wrap_extern(item)
        return hit

    def __iter__(self) -> Iterator[str]:
        return iter([e.name for e in self._module.exports])

    def __len__(self) -> int:
        return len(self._module.exports)


@record(frozen=True)
class LiftedFunc:
    """A component function made by a ``canon lift`` in some component instance."""

    lift: CanonLift
    core: wasmtime.Func
    owner: CoreInstances


ComponentFunc = LiftedFunc | ImportedFunc


class _Pending:
    """A canon-defined core function not made yet: it is made when a module imports it,
    once the type the module expects is known."""

    __slots__ = ("callee", "definition", "made")

    def __init__(
        self, definition: CanonLower | CanonResource | CanonBuiltin, callee: ComponentFunc | None
    ) -> None:
        self.definition = definition
        self.callee = callee
        self.made: wasmtime.Func | None = None


# the C functions, prototyped on plain addresses: no ctypes object per call
_EXPORT_GET = ctypes.CFUNCTYPE(c_bool, c_void_p, c_void_p, c_char_p, c_size_t, c_void_p)(
    ("wasmtime_instance_export_get", ffi.dll)
)
_INSTANCE_NEW = ctypes.CFUNCTYPE(
    c_void_p, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p, c_void_p
)(("wasmtime_instance_new", ffi.dll))
# the same, for the fetches of an opening: no argument types, so ctypes converts
# nothing, and every argument is made once per plan (``_Scratch``) in the form ctypes
# passes cheapest: the addresses as ``byref`` objects (passed as they are; a
# ``c_void_p`` makes a parameter object per call), a length as an ``int``, a name as
# ``bytes``. The lookup neither blocks nor calls back, so it keeps the GIL (a
# ``PYFUNCTYPE``): releasing and taking it again cost as much as the call's Python side.
_EXPORT_GET_PREPARED = ctypes.PYFUNCTYPE(c_bool)(("wasmtime_instance_export_get", ffi.dll))
# wasmtime_linker_define, for the async path's imports, prepared as the fetches are
# (``_Scratch.defines``): an error's address, or None
_LINKER_DEFINE = ctypes.PYFUNCTYPE(c_void_p)(("wasmtime_linker_define", ffi.dll))
_EXTERNS = ffi.wasmtime_extern_t
_INSTANCE = ffi.wasmtime_instance_t
_INSTANCE_SIZE = ctypes.sizeof(_INSTANCE)
_OF = _EXTERNS.of.offset  # where the item's union starts in a wasmtime_extern_t
assert ffi.WASMTIME_EXTERN_FUNC.value == 0  # what a zeroed wasmtime_extern_t's kind is
_ASYNC_ONLY = "`*_async` functions"  # what wasmtime says when a store admits only those


@record(frozen=True)
class InstantiationStatistics:
    """What making one component instance took (:meth:`CoreInstances.statistics`)."""

    core_instances: int
    """Core modules instantiated."""
    imports: int
    """Core imports linked, over all of them."""
    fetched: int
    """Distinct items those imports name (each fetched or made once)."""
    wasmtime_seconds: float
    """Spent in wasmtime's own instantiation calls."""
    fetch_seconds: float
    """Spent fetching the imports' items from earlier instances
    (``wasmtime_instance_export_get``, one call each): with the instantiation calls,
    the floor under instantiating through wasmtime's C API."""
    async_path: bool
    """Whether the store made the instance take the async instantiation."""
    async_steps: int = 0
    """Core instances made on the async path (a fiber store's, or a module's whose
    start function may reach a host function or run long)."""


class _Scratch:
    """The buffers one opening of a plan fills, and the arguments of its C calls made
    ahead: kept with the plan, so that opening an instance makes no ctypes object per
    import. The pool of ``wasmtime_extern_t`` and the ``wasmtime_instance_t`` of each
    core instance stay at fixed addresses, so the arguments of every
    ``wasmtime_instance_export_get`` of a step are made ahead (only the store's
    context differs per opening), and so are the views a step's import array is
    joined from.

    One opening uses it at a time (:meth:`take`); an opening started while another
    holds it (another thread, or a start function opening an instance of the same
    component) makes a private one. An opening copies out what outlives it
    (:meth:`_Run.finish`): the pool's made functions, the instances.
    """

    __slots__ = (
        "_arrays",
        "_defines",
        "_fetches",
        "_instance_args",
        "_lock",
        "ctx",
        "ctx_arg",
        "instance_addr",
        "instances",
        "linker",
        "plan",
        "pool",
        "pool_addr",
        "pool_view",
    )

    def __init__(self, plan: InstancePlan) -> None:
        self.plan = plan
        self._lock = threading.Lock()
        self.pool = (_EXTERNS * max(len(plan.pool), 1))()
        self.pool_addr = ctypes.addressof(self.pool)
        self.pool_view = memoryview(self.pool).cast("B")
        self.instances = (_INSTANCE * max(plan.instances, 1))()
        base = ctypes.addressof(self.instances)
        self.instance_addr = [base + i * _INSTANCE_SIZE for i in range(plan.instances)]
        self._fetches: dict[int, tuple[list[Any], ...]] = {}
        self._instance_args = [
            ctypes.byref(self.instances, i * _INSTANCE_SIZE) for i in range(plan.instances)
        ]
        # the store's context: the one argument that differs per opening (set by each,
        # with :meth:`set_context`)
        self.ctx = c_void_p()
        self.ctx_arg: Any = None
        self.linker = c_void_p()  # the async path's linker, while it defines the imports
        self._defines: dict[int, list[tuple[Any, ...]]] = {}
        self._arrays: dict[int, int | list[memoryview] | None] = {}

    @staticmethod
    def take(plan: InstancePlan) -> _Scratch:
        """The plan's scratch, zeroed, held until :meth:`give_back` (a private one if
        another opening holds it)."""
        found = plan.scratch
        if not isinstance(found, _Scratch):
            found = plan.scratch = _Scratch(plan)
        if not found._lock.acquire(blocking=False):
            found = _Scratch(plan)
            found._lock.acquire()
        # a pool slot reads as "not made yet" until this opening fills it
        ctypes.memset(found.pool_addr, 0, ctypes.sizeof(found.pool))
        return found

    def set_context(self, ctx: int | None) -> None:
        """Make the calls of this opening in the store whose context is at ``ctx``: as
        a ``c_void_p`` (:attr:`ctx`) and as a ``byref`` whose address is ``ctx``
        (:attr:`ctx_arg`, which ctypes passes as it is)."""
        self.ctx.value = ctx
        self.ctx_arg = ctypes.byref(ctypes.c_char.from_address(ctx or 0))

    def give_back(self) -> None:
        """Let the next opening use it."""
        self._lock.release()

    @property
    def held(self) -> bool:
        """Whether an opening holds it now."""
        return self._lock.locked()

    def fetches(self, step: CoreStep) -> Iterator[tuple[Any, ...]]:
        """The arguments of ``step``'s fetches: the context (:attr:`ctx_arg`, set by
        each opening), the instance, the name, its length, the pool slot. The columns
        after the context are made on the step's first replay; the tuples are zipped
        from them as the calls go (``zip`` reuses its tuple once a call lets go of it),
        so that the context can be a ``byref`` made once per opening: a ``c_void_p``
        in a prepared tuple makes ctypes build a parameter object on every call (~0.5 M
        instructions of the Python hello proxy's ~19 M per opening)."""
        found = self._fetches.get(step.instance)
        if found is None:
            pool, instances, byref = self.pool, self._instance_args, ctypes.byref
            found = self._fetches[step.instance] = (
                [instances[instance] for _, instance, _, _ in step.fetch],
                [name for _, _, name, _ in step.fetch],
                [size for _, _, _, size in step.fetch],
                [byref(pool, slot * EXTERN_SIZE) for slot, _, _, _ in step.fetch],
            )
        return zip(repeat(self.ctx_arg), *found)

    def import_array(self, step: CoreStep) -> int | list[memoryview] | None:
        """Where ``step``'s import array is: the address of its one run of pool slots
        (passed where it lies), or views of its runs, for one join to make the array
        from, or ``None`` (no imports). Made on the step's first replay in this
        scratch: a componentize-py guest's last module imports ~900 items in ~600 runs
        (the items it shares with earlier modules break them up), and cutting a view of
        each out of the pool on every opening cost ~0.6 M instructions of ~20 M."""
        found = self._arrays.get(step.instance, self)
        if found is self:
            runs = _runs(self.plan, step)
            if not runs:
                found = None
            elif len(runs) == 1:
                found = self.pool_addr + runs[0].start
            else:
                found = [self.pool_view[cut] for cut in runs]
            self._arrays[step.instance] = found
        return found  # type: ignore[return-value]

    def defines(self, step: CoreStep) -> list[tuple[Any, ...]]:
        """The arguments of ``wasmtime_linker_define`` for each import of ``step`` (the
        linker, the context, the import's module and name and their lengths, its pool
        slot), for the async path; made on its first use."""
        found = self._defines.get(step.instance)
        if found is None:
            pool, ctx, linker, byref = self.pool, self.ctx, self.linker, ctypes.byref
            found = self._defines[step.instance] = []
            for (module_name, name), cut in zip(step.names, step.slices, strict=True):
                m, n = module_name.encode(), name.encode()
                found.append((linker, ctx, m, len(m), n, len(n), byref(pool, cut.start)))
        return found


class _Run:
    """One replay of a plan in one store: what the plan's references stand for there."""

    __slots__ = (
        "async_only",
        "async_steps",
        "ctx",
        "externs",
        "fetch_seconds",
        "fetched",
        "instance_addr",
        "instances",
        "lifts",
        "objects",
        "plan",
        "pool",
        "pool_addr",
        "raw",
        "scratch",
        "seconds",
        "store",
    )

    def __init__(self, plan: InstancePlan, store: wasmtime.Store) -> None:
        self.plan = plan
        self.store = store
        self.ctx = ctypes.cast(store._context(), c_void_p).value
        self.scratch: _Scratch | None = _Scratch.take(plan)
        self.scratch.set_context(self.ctx)
        self.pool: Any = self.scratch.pool
        self.pool_addr = self.scratch.pool_addr
        self.raw: list[Any] = [None] * plan.instances  # wasmtime_instance_t of each
        self.instance_addr: list[int] = [0] * plan.instances
        self.instances: dict[int, _Exports] = {}
        self.objects: list[CoreInstances | None] = [None] * len(plan.nodes)
        self.externs: dict[ExportRef, Any] = {}
        self.lifts: dict[int, LiftedFunc] = {}
        self.async_only = False
        self.async_steps = 0
        self.seconds = 0.0
        self.fetch_seconds = 0.0
        self.fetched = 0

    def finish(self) -> None:
        """The replay is over (done or failed): keep this instance's own copy of the
        pool (its made functions are read later) and give the scratch back."""
        scratch = self.scratch
        if scratch is None:
            return
        self.scratch = None
        try:
            self.pool = type(scratch.pool).from_buffer_copy(scratch.pool)
            self.pool_addr = ctypes.addressof(self.pool)
        finally:
            scratch.give_back()

    def forget(self) -> None:
        """The instance is closed: drop what the replay made (its instances point back
        here, so without this only the garbage collector frees the store)."""
        self.objects = []
        self.externs.clear()
        self.lifts.clear()
        self.instances.clear()

    def resolve(self, value: Any) -> Any:
        """The run-time value behind a plan's value."""
        kind = type(value)
        if kind is ExportRef:
            return self.export(value)
        if kind is CanonRef:
            owner = self.objects[value.node]
            assert owner is not None
            return owner._canon(value.index)
        if kind is LiftRef:
            return self.lifted(value)
        if kind is RealInstance:
            return self.core_instance(value.index)
        if kind is dict:
            return _Resolved(value, self)
        return value

    def export(self, ref: ExportRef) -> Any:
        found = self.externs.get(ref)
        if found is None:
            item = _EXTERNS()
            raw = ref.name.encode()
            if not _EXPORT_GET(
                self.ctx, self.instance_addr[ref.instance], raw, len(raw), ctypes.addressof(item)
            ):
                raise InternalError(f"core instance {ref.instance} lost its export {ref.name!r}")
            found = self.externs[ref] = _wrap(item)
        return found

    def core_instance(self, index: int) -> _Exports:
        found = self.instances.get(index)
        if found is None:
            module = _instance_module(self.plan, index)
            instance = wasmtime.Instance._from_raw(self.raw[index])
            found = self.instances[index] = _Exports(self.store, instance, module)
        return found

    def lifted(self, ref: LiftRef) -> LiftedFunc:
        found = self.lifts.get(id(ref))
        if found is None:
            core = self.resolve(ref.core)
            if not isinstance(core, wasmtime.Func):
                raise LinkError(
                    f"the lift at byte offset {ref.lift.offset:#x} lifts no core export"
                )
            owner = self.objects[ref.node]
            assert owner is not None
            found = self.lifts[id(ref)] = LiftedFunc(ref.lift, core, owner)
        return found


_FUNC, _MEMORY = ffi.WASMTIME_EXTERN_FUNC.value, ffi.WASMTIME_EXTERN_MEMORY.value


def _runs(plan: InstancePlan, step: CoreStep) -> list[slice]:
    """``step``'s import array as runs of adjacent pool slots (byte slices of the pool,
    in import order; worked out once per step, kept with the plan)."""
    found = plan.derived.get(id(step))
    if found is None:
        runs: list[list[int]] = []
        for cut in step.slices:
            if runs and runs[-1][1] == cut.start:
                runs[-1][1] = cut.stop
            else:
                runs.append([cut.start, cut.stop])
        found = plan.derived[id(step)] = [slice(start, stop) for start, stop in runs]
    return found


def _wrap(item: Any) -> Any:
    """``wrap_extern`` for the common kinds, without its import statement per call."""
    kind = item.kind
    if kind == _FUNC:
        return wasmtime.Func._from_raw(item.of.func)
    if kind == _MEMORY:
        return wasmtime.Memory._from_raw(item.of.memory)
    return wrap_extern(item)


def _instance_module(plan: InstancePlan, index: int) -> wasmtime.Module:
    for node in plan.nodes:
        for step in node.steps:
            if isinstance(step, CoreStep) and step.instance == index:
                return step.module
    raise InternalError(f"the plan has no core instance {index}")


class _Resolved(Mapping[str, Any]):
    """A plan's instance (a dict of references), resolved name by name when asked."""

    __slots__ = ("_items", "_run")

    def __init__(self, items: dict[str, Any], run: _Run) -> None:
        self._items = items
        self._run = run

    def __getitem__(self, name: str) -> Any:
        return self._run.resolve(self._items[name])

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class _Space(Sequence[Any]):
    """An index space of a plan's node, resolved entry by entry when asked."""

    __slots__ = ("_items", "_run")

    def __init__(self, items: list[Any], run: _Run) -> None:
        self._items = items
        self._run = run

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._run.resolve(v) for v in self._items[index]]
        return self._run.resolve(self._items[index])

    def __len__(self) -> int:
        return len(self._items)


class _NodeSlot:
    """What a nested component instance is made with: the replay it is part of."""

    __slots__ = ("node", "run")

    def __init__(self, run: _Run, node: int) -> None:
        self.run = run
        self.node = node


class CoreInstances:
    """One instance of a component: every core instance it and its nested components
    define, made in a wasmtime store.

    Args:
      component: the component, as read (its plan is made on the first instance and
        kept with it: do not change its definitions afterwards).
      store: the store to instantiate in (its epoch deadline is the caller's business).
      trampoline: makes the core functions of canon definitions when a module imports
        one; ``None`` refuses any such import.
      use_cache: whether compiled modules are cached on disk.
      compiled: the component's modules compiled by :func:`compile_modules` (else the
        first instance compiles them, or loads them from the caches).
      args: only for nested component instances, made by :meth:`_nested`.

    Raises:
      LoadError: a core module does not compile.
      LinkError: a module imports something its instantiation arguments lack, or of the
        wrong kind, or a canon-defined function without a ``trampoline``.
      GuestTrap: a module's start function trapped, or one on the async path ran
        longer than :attr:`max_run_seconds`.
    """

    max_run_seconds: float | None = None
    """How long a start function on the async path may run (a subclass sets it before
    the instances are made); one on the synchronous path is short (``_startcheck``)."""

    def __init__(
        self,
        component: ComponentDef,
        store: wasmtime.Store,
        *,
        trampoline: Trampoline | None = None,
        use_cache: bool = True,
        compiled: Mapping[int, wasmtime.Module] | None = None,
        args: Any = None,
    ) -> None:
        self.component = component
        self.store = store
        self._trampoline = trampoline
        self._use_cache = use_cache
        self._compiled = compiled or {}
        if isinstance(args, _NodeSlot):
            run, node = args.run, args.run.plan.nodes[args.node]
        elif args is None:
            plan = instance_plan(component, compiled=compiled, use_cache=use_cache)
            run, node = _Run(plan, store), plan.nodes[0]
        else:
            raise TypeError("a component instance is made from its component alone")
        self._run = run
        self._node = node
        self._pending: dict[int, _Pending] = {}
        run.objects[node.index] = self
        spaces = node.spaces
        self.modules: list[wasmtime.Module] = list(spaces[Sort.CORE_MODULE])
        self.instances = _Space(spaces[Sort.CORE_INSTANCE], run)
        self.funcs = _Space(spaces[Sort.CORE_FUNC], run)
        self.memories = _Space(spaces[Sort.CORE_MEMORY], run)
        self.tables = _Space(spaces[Sort.CORE_TABLE], run)
        self.globals = _Space(spaces[Sort.CORE_GLOBAL], run)
        # the component-level index spaces that carry something at run time
        self.component_funcs = _Space(spaces[Sort.FUNC], run)
        self.component_instances = _Space(spaces[Sort.INSTANCE], run)
        self.components: list[ComponentDef] = list(spaces[Sort.COMPONENT])
        self.exports: Mapping[str, Any] = _Resolved(node.exports, run)
        self.nested: list[CoreInstances] = []
        if node.index:  # a nested instance: part of its outermost one's replay
            self._entered(node)
            self._replay(node)
            return
        try:
            self._entered(node)
            self._replay(node)
        finally:
            run.finish()  # this instance's copies kept, the plan's scratch given back

    # -- the replay -----------------------------------------------------------------------

    def _replay(self, node: NodePlan) -> None:
        """Make ``node``'s core instances and nested component instances, in order."""
        run = self._run
        for step in node.steps:
            if isinstance(step, CoreStep):
                self._core_step(step)
            elif isinstance(step, NestedStep):
                child = run.plan.nodes[step.node]
                self.nested.append(self._nested(child.component, _NodeSlot(run, step.node)))
            else:
                self._define(step.definition)

    def _entered(self, node: NodePlan) -> None:
        """Called with the instance's plan before anything of it is made (a subclass
        takes what it needs from it)."""

    def _define(self, d: Definition) -> None:
        """A definition the plan leaves to the instance: a component start function."""
        if isinstance(d, Start):
            raise LinkError("component start functions (🪙) are not supported")

    def _nested(self, component: ComponentDef, args: Any) -> CoreInstances:
        """An instance of a nested component (a subclass makes its own kind)."""
        return CoreInstances(
            component,
            self.store,
            trampoline=self._trampoline,
            use_cache=self._use_cache,
            compiled=self._compiled,
            args=args,
        )

    def _canon(self, index: int) -> Any:
        """Canon-defined core function ``index`` of this instance: made, or pending."""
        pending = self._pending.get(index)
        if pending is None:
            definition, callee = self._node.canons[index]
            callee = None if callee is None else self._run.resolve(callee)
            pending = self._pending[index] = _Pending(definition, callee)
        return pending.made or pending

    def _core_step(self, step: CoreStep) -> None:
        run = self._run
        scratch = run.scratch
        assert scratch is not None
        start = time.perf_counter()
        if step.fetch and not all(starmap(_EXPORT_GET_PREPARED, scratch.fetches(step))):
            raise InternalError(
                f"core module {step.module_index}: an earlier core instance lost an export"
            )
        run.fetch_seconds += time.perf_counter() - start
        if step.make:
            self._make_canons(step)
        run.fetched += len(step.fetch) + len(step.make)
        out = scratch.instance_addr[step.instance]
        if (step.has_start and not step.sync_start) or run.async_only:
            start = time.perf_counter()
            run.async_steps += 1
            try:
                self._instantiate_async(step, out)
            finally:
                run.seconds += time.perf_counter() - start
        else:
            # the import array: the pool's runs of slots (most of a module's imports are
            # items it is the first to need, which lie side by side in the pool): one run
            # is passed where it lies, more are joined from views made once per scratch
            array = scratch.import_array(step)
            imports = b"".join(array) if isinstance(array, list) else array
            start = time.perf_counter()
            # an inert start function (``_startcheck``) runs here: an epoch deadline it
            # meets must not make it yield (what only the async path can), so it runs
            # as outside any fiber call (where ``_fiber``'s deadline callback lets a
            # synchronous call run on), even when a host function opens this instance
            outer = _fiber.set_current(None) if step.has_start else None
            try:
                self._instantiate(step, imports, out)
            finally:
                if outer is not None:
                    _fiber.set_current(outer)
                run.seconds += time.perf_counter() - start
        raw = run.raw[step.instance] = _INSTANCE.from_buffer_copy(
            scratch.instances, step.instance * _INSTANCE_SIZE
        )
        run.instance_addr[step.instance] = ctypes.addressof(raw)

    def _make_canons(self, step: CoreStep) -> None:
        """Make the canon-defined functions ``step`` is the first to import, each into
        its pool slot (a subclass may make them its own way)."""
        run = self._run
        pool_addr = run.pool_addr
        for slot, ref, i in step.make:
            owner = run.objects[ref.node]  # the node whose steps these are
            assert owner is not None
            made = owner._canon(ref.index)
            if isinstance(made, _Pending):
                module_name, name = step.names[i]
                made = owner._make(made, step.types[i], f"{module_name}.{name}")
            # a zeroed slot's kind is already "func": only the function goes in
            ctypes.memmove(pool_addr + slot * EXTERN_SIZE + _OF, ctypes.addressof(made._func), 16)

    def _instantiate(self, step: CoreStep, imports: bytes | int | None, out: int) -> None:
        """``wasmtime_instance_new``: the synchronous path, from the import array (its
        bytes, or its address), the instance written at ``out``."""
        run = self._run
        trap = c_void_p()
        error = _INSTANCE_NEW(
            run.ctx,
            step.module_address,
            imports,  # read only: wasmtime copies what it keeps
            len(step.slices),
            out,
            ctypes.addressof(trap),
        )
        if error:
            exc = wasmtime.WasmtimeError._from_ptr(
                ctypes.cast(error, ctypes.POINTER(ffi.wasmtime_error_t))
            )
            if _ASYNC_ONLY in str(exc):  # a fiber store: the async path from now on
                run.async_only = True
                run.async_steps += 1
                self._instantiate_async(step, out)
                return
            raise LinkError(
                f"cannot instantiate core module {step.module_index}: {_first_line(str(exc))}"
            ) from exc
        if trap.value:
            reason = wasmtime.Trap._from_ptr(ctypes.cast(trap, ctypes.POINTER(ffi.wasm_trap_t)))
            raise GuestTrap(
                f"core module {step.module_index} trapped starting: "
                f"{_engine.trap_reason(reason.message)}"
            ) from reason

    def _instantiate_async(self, step: CoreStep, out: int) -> None:
        """The async path (a fiber store, or a start function that may suspend): each
        import defined in a linker straight from its pool slot (the scratch's prepared
        calls, :meth:`_Scratch.defines`)."""
        scratch = self._run.scratch
        assert scratch is not None
        linker = wasmtime.Linker(_engine.engine())
        ffi.wasmtime_linker_allow_shadowing(linker.ptr(), True)
        scratch.linker.value = ctypes.cast(linker.ptr(), c_void_p).value
        try:
            errors = list(filter(None, starmap(_LINKER_DEFINE, scratch.defines(step))))
        finally:
            scratch.linker.value = None
        try:
            if errors:
                error = ctypes.cast(errors[0], ctypes.POINTER(ffi.wasmtime_error_t))
                raise LinkError(_first_line(str(wasmtime.WasmtimeError._from_ptr(error))))
            instance = _fiber.instantiate_linked(
                self.store, linker, step.module, max_run_seconds=self.max_run_seconds
            )
        except GuestTrap as exc:
            raise GuestTrap(
                f"core module {step.module_index} trapped starting: {exc}"
            ) from exc.__cause__
        except LinkError as exc:
            raise LinkError(f"cannot instantiate core module {step.module_index}: {exc}") from exc
        ctypes.memmove(out, ctypes.addressof(instance._instance), _INSTANCE_SIZE)

    def _make(self, pending: _Pending, ty: Any, where: str) -> wasmtime.Func:
        if not isinstance(ty, wasmtime.FuncType):
            raise LinkError(f"{where} is a canon-defined function imported as a non-function")
        if self._trampoline is None:
            d = pending.definition
            what = d.name if isinstance(d, CanonBuiltin) else type(d).__name__
            raise LinkError(f"{where} needs {what}, and no trampoline was given")
        func = self._trampoline(pending.definition, ty, pending.callee)
        pending.made = func  # the same canon function imported twice is one function
        return func

    # -- what the canonical ABI needs next ------------------------------------------------

    def lifted(self, *path: str) -> LiftedFunc:
        """The lifted function exported as ``path`` (a name, or an instance export's
        name and the function's name in it).

        Raises:
          LinkError: there is no such export, or it is not a function this component
            or a component nested in it lifts (an import passed through, say).
        """
        value: Any = self.exports
        for name in path:
            if not isinstance(value, Mapping) or name not in value:
                raise LinkError(f"the component exports no function {'/'.join(path)!r}")
            value = value[name]
        if not isinstance(value, LiftedFunc):
            raise LinkError(f"export {'/'.join(path)!r} is not a lifted function")
        return value

    def memory(self, index: int) -> wasmtime.Memory:
        """Core memory ``index`` (a canonical option's ``memory``)."""
        memory = self.memories[index]
        if not isinstance(memory, wasmtime.Memory):
            raise LinkError(f"core memory {index} has no value")
        return memory

    def walk(self) -> list[CoreInstances]:
        """This instance and every nested component instance, depth first."""
        out = [self]
        for nested in self.nested:
            out.extend(nested.walk())
        return out

    @property
    def plan(self) -> InstancePlan:
        """The component's plan, shared by all its instances."""
        return self._run.plan

    def statistics(self) -> InstantiationStatistics:
        """What making this instance (with its nested ones) took."""
        run = self._run
        return InstantiationStatistics(
            core_instances=run.plan.instances,
            imports=run.plan.imports,
            fetched=run.fetched,
            wasmtime_seconds=run.seconds,
            fetch_seconds=run.fetch_seconds,
            async_path=run.async_only,
            async_steps=run.async_steps,
        )


__all__ = [
    "CoreInstances",
    "ImportedFunc",
    "InstantiationStatistics",
    "LiftedFunc",
    "compile_module",
    "compile_modules",
    "instance_plan",
]
