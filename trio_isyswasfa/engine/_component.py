"""Stage 3a of our own engine: components run end to end, synchronously.

:class:`OwnEngineInstance` instantiates a read :class:`~._model.ComponentDef` on
wasmtime's core API (:class:`~._instance.CoreInstances`) with real trampolines:

* ``canon lower`` of a host import: the core arguments are lifted with the function's
  :class:`~._abi.FuncAbi` (memory, ``realloc`` and string encoding from the canon's
  options), the host function runs, its result is lowered; the call's borrow scope
  ends when it returns;
* ``canon lower`` of another component instance's ``canon lift`` (composed or nested
  components): lifted from the caller's memory, lowered into the callee's;
* ``resource.new`` / ``rep`` / ``drop`` on the lowering instance's own handle table,
  with destructors (the defining guest's, or the host's ``on_drop``) run when the last
  own handle goes;
* ``canon lift`` as callables (:class:`OwnExportFunc`): arguments lowered, one core
  call (:class:`~._core.CoreFunc`, the one place that enters wasm), the result lifted,
  then ``post-return``.

Host functions come in the shapes the stock seam (``trio_isyswasfa._engine``) takes, from
a ``resolve_item(ImportedItem)`` callback: a plain function of the lifted arguments, a
:class:`~trio_isyswasfa._engine.Blocking` one (only when it finishes without waiting:
waiting needs the async path), or a :class:`~trio_isyswasfa._engine.ResourceDef` for
a host resource (its handles are integer reps; ``on_drop`` runs when the guest drops
the last own handle). :class:`~trio_isyswasfa.WasiError` becomes the WIT ``err`` where
the result has one.

A host function that raises anything else traps only the call it ran in: the
:class:`~trio_isyswasfa.GuestTrap` raised by the export call has the exception (with its
traceback) as ``__cause__``, and the instance is dead with that trap as its reason
(later calls raise :class:`~trio_isyswasfa.InstanceDead` naming it).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import weakref
from collections.abc import Callable, Coroutine, Generator, Mapping
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from .. import _engine
from .._errors import (
    GuestProtocolError,
    GuestTrap,
    HostProtocolError,
    InstanceDead,
    IsyswasfaError,
    LinkError,
    WasiError,
)
from .._limits import Limits
from .._turns import Turns
from . import _core, _fiber, _shim
from ._abi import AbiContext, FuncAbi, _touches_memory, func_abi, import_entry_factory, type_abi
from ._core import (
    CoreFunc,
    CoreMemory,
    HostEntry,
    HostTable,
    core_signature,
    host_func,
    raw_entry,
    raw_structs,
    release_host_funcs,
)
from ._handles import CallScope, HandleTable
from ._instance import _OF, CoreInstances, ImportedFunc, LiftedFunc
from ._layout import flatten, record_fields, variant_cases
from ._model import (
    CanonBuiltin,
    CanonLift,
    CanonLower,
    CanonOptions,
    CanonResource,
    ComponentDef,
    Definition,
    InstanceType,
    Start,
    TypeItem,
)
from ._plan import EXTERN_SIZE, CanonRef, CoreStep, InstancePlan, LiftRef, NodePlan
from ._types import (
    FlagsType,
    FuncType,
    ListType,
    OwnType,
    Primitive,
    PrimType,
    RecordType,
    ResourceType,
    ResultType,
    TupleType,
    ValType,
)
from ._values import Err

log = logging.getLogger("trio_isyswasfa.engine")

_MASKS: dict[str, int | None] = {
    "i32": 0xFFFFFFFF,
    "i64": 0xFFFFFFFFFFFFFFFF,
    "f32": None,
    "f64": None,
}

ImportedItem = _engine.ImportedItem
Resolved = _engine.Resolved


def imported_items(component: ComponentDef) -> list[tuple[ImportedItem, ResourceType | None]]:
    """Every function and resource ``component`` imports, in the shape the seam resolves
    (``func_type`` is our :class:`~._types.FuncType`, ``None`` for a resource), with the
    resource type of each resource."""
    out: list[tuple[ImportedItem, ResourceType | None]] = []
    for name, item in component.imports.items():
        if isinstance(item, InstanceType):
            for member, inner in item.exports:
                if isinstance(inner, FuncType):
                    out.append((ImportedItem(name, member, inner), None))
                elif isinstance(inner, TypeItem) and isinstance(inner.type, ResourceType):
                    out.append((ImportedItem(name, member, None), inner.type))
        elif isinstance(item, FuncType):
            out.append((ImportedItem("", name, item), None))
    return out


def exported_funcs(component: ComponentDef) -> dict[str, dict[str, FuncType]]:
    """Exported functions by interface (``""`` for the root), with their types."""
    out: dict[str, dict[str, FuncType]] = {"": {}}
    for name, item in component.exports.items():
        if isinstance(item, FuncType):
            out[""][name] = item
        elif isinstance(item, InstanceType):
            out[name] = {n: t for n, t in item.exports if isinstance(t, FuncType)}
    return out


_LISTED: weakref.WeakKeyDictionary[
    ComponentDef,
    tuple[list[tuple[ImportedItem, ResourceType | None]], dict[str, dict[str, FuncType]]],
] = weakref.WeakKeyDictionary()


def _imports_and_exports(
    component: ComponentDef,
) -> tuple[list[tuple[ImportedItem, ResourceType | None]], dict[str, dict[str, FuncType]]]:
    """:func:`imported_items` and :func:`exported_funcs`, worked out once per component
    (every instance reads them; treat them as read-only)."""
    found = _LISTED.get(component)
    if found is None:
        found = _LISTED[component] = (imported_items(component), exported_funcs(component))
    return found


def _encoding(options: CanonOptions) -> str:
    return str(options.string_encoding.value)


def _abi_of(instance: CoreInstances, d: CanonLower | CanonLift) -> FuncAbi:
    """``d``'s :class:`FuncAbi`, kept with the component's plan (``func_abi`` hashes the
    whole function type on every look-up)."""
    return _plan_abi(instance.plan, d)


def _plan_abi(plan: InstancePlan, d: CanonLower | CanonLift) -> FuncAbi:
    memo = plan.derived
    abi = memo.get(id(d))
    if abi is None:
        abi = memo[id(d)] = func_abi(d.type, _encoding(d.options))
    assert isinstance(abi, FuncAbi)
    return abi


def _needs_memory(abi: FuncAbi) -> bool:
    """Whether calls of ``abi``'s function read or write linear memory (else each call
    skips viewing it)."""
    return bool(abi._params_touch_memory or abi._result_touches_memory)


def _handle_kinds(t: ValType | None) -> frozenset[type]:
    """The kinds of handle values of ``t`` carry: ``OwnType``, ``BorrowType``,
    ``StreamType``, ``FutureType`` (WASI 0.3 stream and future ends)."""
    if t is None or isinstance(t, PrimType | FlagsType):
        return _NO_KINDS
    if isinstance(t, ListType):
        return _handle_kinds(t.element)
    if isinstance(t, RecordType | TupleType):
        fields: tuple[ValType | None, ...] = record_fields(t)
    else:
        cases = variant_cases(t)
        if cases is None:
            return frozenset((type(t),))  # own, borrow, stream, future
        fields = tuple(ty for _, ty in cases)
    return _NO_KINDS.union(*map(_handle_kinds, fields))


_NO_KINDS: frozenset[type] = frozenset()
_OWN_KIND = frozenset((OwnType,))


def _has_handles(t: ValType | None) -> bool:
    """Whether values of ``t`` carry handles: only then does a call need a borrow scope
    and the instance's table."""
    return bool(_handle_kinds(t))


def _owns_only(t: ValType | None) -> bool:
    """Whether every handle a ``t`` carries is an ``own`` (no borrow, which needs the
    call's scope, and no stream or future end), for a staged list's elements."""
    return _handle_kinds(t) <= _OWN_KIND


# primitives whose every core value lifts (a char, an enum, a variant's case can be out
# of range: the spec then traps the call before its post-return runs)
_SURE_PRIMS = frozenset(Primitive) - {Primitive.CHAR, Primitive.STRING, Primitive.ERROR_CONTEXT}


def _lifts_surely(t: ValType | None) -> bool:
    """Whether every core value lifts as a ``t`` (no trap, so the lifting may come
    after the post-return without changing what the caller sees), with no handles."""
    if t is None:
        return True
    if isinstance(t, PrimType):
        return t.kind in _SURE_PRIMS
    if isinstance(t, RecordType | TupleType):
        return all(map(_lifts_surely, record_fields(t)))
    return False


@functools.lru_cache(maxsize=1024)
def _plain(abi: FuncAbi) -> AbiContext | None:
    """For a function whose values touch neither memory nor handles, one context all
    its calls can share (it keeps no per-call state); else ``None``."""
    func = abi.func
    if _needs_memory(abi) or any(_has_handles(t) for _, t in func.params):
        return None
    return None if _has_handles(func.result) else AbiContext()


_FUNC_SIZE = ctypes.sizeof(ffi.wasmtime_func_t)
_UNMADE = bytes(_FUNC_SIZE)  # a pool slot no function was made into yet


def _may_not_leave(label: str) -> GuestTrap:
    """The trap of a call out, or of a built-in the canonical ABI forbids, while the
    instance's ``may_leave`` is clear (its post-return runs)."""
    return GuestTrap(f"cannot leave component instance to call {label}")


class _CanonTemplate:
    """What every instance's core function for one canon definition of a plan has in
    common: its core type (the importing module's, kept alive here with its address),
    and for a ``canon lower`` its ABI, whether it touches memory, its label and what it
    calls (a host import by ``path``, else another component instance's lift)."""

    __slots__ = (
        "abi",
        "callee",
        "definition",
        "func_type",
        "label",
        "needs_memory",
        "path",
        "ty",
        "ty_address",
    )

    def __init__(
        self,
        definition: CanonLower | CanonResource,
        ty: wasmtime.FuncType,
        label: str,
        *,
        abi: FuncAbi | None = None,
        path: tuple[str, ...] | None = None,
        func_type: FuncType | None = None,
        callee: Any = None,
    ) -> None:
        self.definition = definition
        self.ty = ty
        address = ctypes.cast(ty.ptr(), ctypes.c_void_p).value
        assert address, "a core function type without its wasm_functype_t"
        self.ty_address: int = address
        self.label = label
        self.abi = abi
        self.needs_memory = abi is not None and _needs_memory(abi)
        self.path = path
        self.func_type = func_type
        self.callee = callee


class _Opening:
    """What opening an instance of one plan needs of its canon-defined core functions,
    worked out once for every instance: each one's number in the instance's
    :class:`~._core.HostTable` (the nodes' canon definitions one after another), its
    pool slot, and its :class:`_CanonTemplate` (made when a first instance imports
    it)."""

    __slots__ = ("_host_defs", "node_of", "offsets", "plan", "size", "slots", "templates")

    def __init__(self, plan: InstancePlan) -> None:
        self.plan = plan
        self._host_defs: _fiber.HostFuncDefs | None = None
        self.offsets: list[int] = []
        self.node_of: list[int] = []
        for node in plan.nodes:
            self.offsets.append(len(self.node_of))
            self.node_of.extend([node.index] * len(node.canons))
        self.size = len(self.node_of)
        self.templates: list[_CanonTemplate | None] = [None] * self.size
        self.slots = {
            (ref.node, ref.index): slot
            for slot, ref in enumerate(plan.pool)
            if isinstance(ref, CanonRef)
        }

    @property
    def host_defs(self) -> _fiber.HostFuncDefs:
        """The plan's blocking host functions, each defined once for all its instances
        (by canon function number), made when a first instance needs one."""
        found = self._host_defs
        if found is None:
            found = self._host_defs = _fiber.HostFuncDefs()
        return found

    def template(self, number: int, step: CoreStep, i: int) -> _CanonTemplate:
        """The template of canon function ``number``, which ``step`` imports as its
        import ``i`` (checked against the definition: a mismatch is the component's
        error, raised for every instance).

        Raises:
          LinkError: the module imports it as something else or with another core
            type, it is an async built-in, or it lowers nothing this engine can call.
        """
        node = self.plan.nodes[self.node_of[number]]
        definition, callee = node.canons[number - self.offsets[node.index]]
        ty = step.types[i]
        module_name, name = step.names[i]
        where = f"{module_name}.{name}"
        if not isinstance(ty, wasmtime.FuncType):
            raise LinkError(f"{where} is a canon-defined function imported as a non-function")
        made: _CanonTemplate
        if isinstance(definition, CanonBuiltin):
            raise LinkError(
                f"canon {definition.name} needs the component model's async ABI, "
                "which this engine does not run yet"
            )
        if isinstance(definition, CanonResource):
            if definition.op not in ("new", "rep", "drop"):
                raise LinkError(f"canon resource.{definition.op} is not supported")
            label = f"resource.{definition.op} of {definition.resource.name}"
            made = _CanonTemplate(definition, ty, label)
        else:
            abi = _plan_abi(self.plan, definition)
            if core_signature(ty) != (abi.import_core_params, abi.import_core_results):
                raise LinkError(
                    f"a core module imports a lowering of {definition.type} wrongly typed"
                )
            if isinstance(callee, ImportedFunc):
                label = "#".join(callee.path)
                made = _CanonTemplate(
                    definition, ty, label, abi=abi, path=callee.path, func_type=callee.type
                )
            elif isinstance(callee, LiftRef):
                if callee.lift.options.is_async:
                    raise LinkError(
                        f"a composed component's export at byte offset {callee.lift.offset:#x}"
                        " is an async export, which this engine cannot call yet"
                    )
                label = f"a composed component's export at byte offset {callee.lift.offset:#x}"
                made = _CanonTemplate(definition, ty, label, abi=abi, callee=callee)
            else:
                raise LinkError(f"a canon lower of {callee!r}: nothing to call")
        self.templates[number] = made
        return made


class _Destructor:
    """A resource's destructor the guest defines: its core function looked up on the
    first drop (an instance drops few of its resources, if any)."""

    __slots__ = ("index", "instance", "label")

    def __init__(self, instance: _ComponentInstance, index: int, name: str) -> None:
        self.instance = instance
        self.index = index
        self.label = f"the destructor of {name}"

    def __call__(self, rep: int) -> None:
        instance = self.instance
        instance.owner.core(instance.funcs[self.index], self.label)([rep])


class _ComponentInstance(CoreInstances):
    """One component instance of ours: its core instances, its handle table and its
    ``may_enter`` flag (no reentrance, as the component model says)."""

    def __init__(
        self,
        component: ComponentDef,
        owner: OwnEngineInstance,
        *,
        compiled: Mapping[int, wasmtime.Module] | None,
        use_cache: bool,
        args: Mapping[str, Any] | None = None,
    ) -> None:
        self.owner = owner
        self.max_run_seconds = owner.limits.max_run_seconds  # bounds its start functions
        self.table = HandleTable()
        self.table.destructors = owner.destructors  # shared: a drop anywhere runs the dtor
        self.table.defines.update(r.resource for r in component.resources)
        self.may_enter = True  # no call into it is running (no reentrance)
        # ``may_leave``: it may call imports (not from post-return); a byte of the
        # store's dispatcher memory, so that a runner clears it around a post-return
        # without a host function (``_shim``'s ``leave``)
        self.leave_at, self.leave_flag = owner.fibers.leave_flag()
        self._guest_memories: dict[tuple[int, int | None], CoreMemory] = {}
        super().__init__(component, owner.store, use_cache=use_cache, compiled=compiled, args=args)
        for r in component.resources:
            if r.dtor is not None:
                owner.destructors[r.resource] = _Destructor(self, r.dtor, r.resource.name)

    @property
    def may_leave(self) -> bool:
        """Whether it may call out now (not while its post-return runs): the canonical
        ABI's ``may_leave``, kept in :attr:`leave_flag`."""
        return bool(self.leave_flag[0])

    @may_leave.setter
    def may_leave(self, value: bool) -> None:
        self.leave_flag[0] = value

    def _entered(self, node: NodePlan) -> None:
        if node.index == 0:
            self.owner._opened(self._run)
        self.table.aliases = node.aliases  # a composed guest's drop runs the host's dtor

    def _define(self, d: Definition) -> None:
        if not isinstance(d, Start):
            super()._define(d)
            return
        if d.args or d.results:
            raise LinkError("component start functions with arguments or results (🪙)")
        func = self.component_funcs[d.func]
        if not isinstance(func, LiftedFunc):
            raise LinkError("a component start function must be one a component lifts")
        self.owner.lifted(func, "the component's start function").sync()

    def _nested(self, component: ComponentDef, args: Mapping[str, Any]) -> CoreInstances:
        return _ComponentInstance(
            component, self.owner, compiled=self._compiled, use_cache=self._use_cache, args=args
        )

    def _make_canons(self, step: CoreStep) -> None:
        """The canon-defined functions ``step`` is the first to import, made straight
        into their pool slots: synchronous ones in the instance's host table (one C call
        each; the Python behind each is built when first called), blocking host
        functions on the fiber path."""
        owner = self.owner
        opening, table, impls = owner._opening, owner._table, owner._impls
        assert opening is not None
        assert table is not None
        offsets, templates = opening.offsets, opening.templates
        run = self._run
        pool_addr = run.pool_addr
        for slot, ref, i in step.make:
            number = offsets[ref.node] + ref.index
            template = templates[number]
            if template is None:
                template = opening.template(number, step, i)
            address = pool_addr + slot * EXTERN_SIZE
            if template.path is not None:  # a host import: the instance's host gives it
                impl = impls.get(template.path)
                if isinstance(impl, _engine.Blocking):
                    instance = run.objects[ref.node]
                    assert isinstance(instance, _ComponentInstance)
                    owner._blocking_func(instance, number, template, impl, address)
                    continue
                if impl is None or isinstance(impl, _engine.ResourceDef):
                    raise LinkError(f"the host gives no function for {template.label}")
            table.define(number, template.ty_address, address + _OF)

    def _canon(self, index: int) -> Any:
        opening = self.owner._opening
        slot = None if opening is None else opening.slots.get((self._node.index, index))
        if slot is not None:  # made into its pool slot (if its step has run)
            address = self._run.pool_addr + slot * EXTERN_SIZE + _OF
            raw = ctypes.string_at(address, _FUNC_SIZE)
            if raw != _UNMADE:
                return wasmtime.Func._from_raw(ffi.wasmtime_func_t.from_buffer_copy(raw))
        return super()._canon(index)

    def guest_memory(self, options: CanonOptions) -> CoreMemory | None:
        """The memory and ``realloc`` a canon's options name, or ``None``."""
        if options.memory is None:
            return None
        key = (options.memory, options.realloc)
        found = self._guest_memories.get(key)
        if found is None:  # lowerings share a few (memory, realloc) pairs: one each
            realloc = None
            if options.realloc is not None:
                realloc = self.owner.core(self.funcs[options.realloc], "realloc")
            found = CoreMemory(
                self.store, self.memory(options.memory), realloc, leave=self.leave_flag
            )
            self._guest_memories[key] = found
        return found


class OwnEngineInstance(_engine.WaitHook):
    """A component instantiated on our own engine.

    Export calls (:meth:`OwnExportFunc.call`) run on wasmtime fibers (``_fiber``): the
    guest yields to the event loop at every epoch tick, ``Limits.max_run_seconds`` is
    checked there, and a :class:`~trio_isyswasfa._engine.Blocking` host function that
    waits suspends only its call. Host functions that never wait are synchronous core
    functions (``_core``), as are the guest's ``realloc`` calls they make.

    Args:
      component: the component, as read by :func:`~._reader.read_component`.
      resolve_item: gives the host's implementation of each import, as for the stock
        seam's ``EngineInstance`` (raises :class:`~trio_isyswasfa.LinkError` for what
        the host does not provide).
      limits: ``max_memory`` and ``max_run_seconds`` (the other limits are the host's).
      compiled: the component's core modules from :func:`~._instance.compile_modules`.
      use_cache: whether compiled modules are cached on disk.

    Raises:
      LinkError: an import the host does not provide, or a canon built-in that needs
        the async ABI.
    """

    def __init__(
        self,
        component: ComponentDef,
        resolve_item: Callable[[ImportedItem], Resolved],
        *,
        limits: Limits | None = None,
        compiled: Mapping[int, wasmtime.Module] | None = None,
        use_cache: bool = True,
    ) -> None:
        self.component = component
        self.limits = limits or Limits()
        self.faults = _engine.FaultSink()
        self.store = wasmtime.Store(_engine.engine())
        # fiber calls yield at every epoch tick; synchronous ones (realloc) run on
        self.fibers = _fiber.FiberStore(self.store, limits=self.limits, sync_calls=True)
        self.fibers.faults = self.faults  # a trap carries the reason its guest gave
        self.turns = Turns()  # export calls take turns (a suspended one holds the store)
        self.has_async = False  # some host function may wait (an async core function)
        self.blocked_calls = 0  # calls suspended in a blocking host function now
        self.destructors: dict[ResourceType, Callable[[int], None]] = {}
        self._cores: dict[int, CoreFunc] = {}
        self._fiber_funcs: dict[int, _fiber.FiberFunc] = {}  # by id of the CoreFunc
        self._export_funcs: dict[tuple[str, ...], OwnExportFunc] = {}
        self._made: list[int] = []  # our host functions in the store
        self._run: Any = None  # the replay of the component's plan (``_instance``)
        self._opening: _Opening | None = None  # what the plan's canon functions need
        self._table: HostTable | None = None  # the synchronous ones, by number
        self._impls: dict[tuple[str, ...], Resolved] = {}
        self._closed = False
        for item, rt in _imports_and_exports(component)[0]:
            impl = resolve_item(item)
            if rt is not None:
                if isinstance(impl, _engine.ResourceDef):
                    self.destructors[rt] = self._host_drop(impl, f"{item.interface}#{item.name}")
            else:
                path = (item.interface, item.name) if item.interface else (item.name,)
                self._impls[path] = impl
        self._exports = _imports_and_exports(component)[1]
        try:
            self.root = _ComponentInstance(component, self, compiled=compiled, use_cache=use_cache)
        except BaseException:
            self._release()
            raise

    @property
    def guest_seconds(self) -> float:
        """Time spent running guest code in fiber calls so far."""
        return self.fibers.guest_seconds

    @property
    def blocked(self) -> bool:
        """Whether a call is suspended in a blocking host function (``time.sleep``, a
        blocking read): calls into this instance wait until it returns."""
        return self.blocked_calls > 0

    @staticmethod
    def own_handle(rep: int, kind: int) -> int:
        """An owned handle of host resource ``rep`` to give the guest: the rep itself
        (our lowering knows the resource type from the function's; a wasmtime-py
        ``ResourceHost`` costs C calls to make and to read back)."""
        return rep

    @staticmethod
    def handle_rep(handle: Any) -> int:
        """The rep of a host resource handle a guest passed or returned (lifted handles
        of host resources are their reps already; a static method, so that what keeps
        it, the scheduler, does not keep the instance)."""
        if type(handle) is not int:
            raise GuestProtocolError(f"expected a resource handle, got {handle!r}")
        return handle

    def close(self) -> None:
        """Done with this instance: later calls raise
        :class:`~trio_isyswasfa.InstanceDead`, and its store can be freed (the host
        functions in it hold it, through this instance, until then)."""
        self.faults.record(InstanceDead("the component instance was closed"))
        if self.fibers.busy:
            # the call is abandoned (it raises InstanceDead): whoever closed the instance
            # did not wait for it, which its owner may want to know (issue 12)
            log.warning("closing a component instance with a call in flight", stack_info=True)
        self._release()
        self.fibers.close()  # a call suspended in the store is never resumed
        self._cores.clear()
        self._fiber_funcs.clear()
        self._export_funcs.clear()
        # what points back at this instance, dropped so that closing it frees it (and
        # its store, at once) without waiting for the garbage collector
        self._closed = True
        self._impls.clear()
        self.destructors.clear()
        self._table = None
        if self._run is not None:
            self._run.forget()
        self.__dict__.pop("root", None)  # (it points back here)

    # -- what the instances share ---------------------------------------------------------

    def core(self, func: Any, label: str = "") -> CoreFunc:
        """The :class:`CoreFunc` of a core function (made once per function)."""
        if not isinstance(func, wasmtime.Func):
            raise LinkError(f"{label or 'a canon option'} is not a core function")
        key = id(func)
        made = self._cores.get(key)
        if made is None:
            made = self._cores[key] = CoreFunc(
                self.store, func, label, faults=self.faults, guest=self.fibers
            )
        return made

    def _host_drop(self, resource: _engine.ResourceDef, label: str) -> Callable[[int], None]:
        def on_drop(rep: int) -> None:
            try:
                resource.on_drop(rep)
            except Exception as exc:
                raise (fault := self._fault(label, exc)) from fault.__cause__

        return on_drop

    def _fault(self, label: str, exc: Exception) -> IsyswasfaError:
        """Record ``exc`` from a host function as this instance's death; what the call
        into the guest raises: one of our errors as it is (a ``GuestProtocolError``, a
        ``ComponentExit``), anything else (the host's own misuse included) as a trap
        with ``exc`` as its cause."""
        if isinstance(exc, IsyswasfaError) and not isinstance(exc, HostProtocolError | LinkError):
            fault: IsyswasfaError = exc
        else:
            fault = GuestTrap(f"host function {label} failed: {exc!r}")
            fault.__cause__ = exc
        self.faults.record(fault)
        return fault

    # -- canon-defined functions ---------------------------------------------------------

    def _release(self) -> None:
        """Forget the host functions made in this store (their closures hold it)."""
        release_host_funcs(self._made)
        if self._table is not None:
            self._table.release()
        self.fibers.release_host_funcs()

    def _opened(self, run: Any) -> None:
        """The replay of the plan has begun: take the plan's canon templates, and make
        the host table its synchronous functions go in."""
        self._run = run
        plan = run.plan
        opening = self.component.engine_cache.get("opening")
        if not isinstance(opening, _Opening) or opening.plan is not plan:
            opening = self.component.engine_cache["opening"] = _Opening(plan)
        self._opening = opening
        self._table = HostTable(self.store, opening.size, self._build_host)

    def _build_host(self, number: int) -> HostEntry:
        """Host table entry ``number``, built when the guest first calls it: the Python
        function behind a ``canon lower`` or ``resource.*`` of the instance that made
        it, on its core values at their address."""
        opening = self._opening
        assert opening is not None
        template = opening.templates[number]
        assert template is not None
        instance = self._run.objects[opening.node_of[number]]
        assert isinstance(instance, _ComponentInstance)
        d = template.definition
        fn: Callable[[list[Any]], list[Any]]
        if isinstance(d, CanonResource):
            if d.op == "drop" and core_signature(template.ty) == (("i32",), ()):
                return self._drop_entry(instance, d, template.ty)
            fn = self._resource_op(instance, d)
        else:
            assert isinstance(d, CanonLower)
            assert template.abi is not None
            memory = instance.guest_memory(d.options) if template.needs_memory else None
            to_error = False
            if template.path is not None:
                assert template.func_type is not None
                call = self._host_fn(self._impls.get(template.path), template.label)
                result = template.func_type.result
                to_error = isinstance(result, ResultType) and result.err is not None
            else:
                callee = self._run.resolve(template.callee)
                if not isinstance(callee, LiftedFunc):
                    raise LinkError(f"a canon lower of {callee!r}: nothing to call")
                call = self.lifted(callee, template.label).sync
            make = import_entry_factory(template.abi, to_error)
            if make is not None:
                return self._entry(instance, template, make, memory, call)
            if to_error:
                call = _err_of_wasi_error(call)
            fn = self._lowered(instance, template.abi, memory, call, template.label)
        return raw_entry(fn, template.ty)

    def _entry(
        self,
        instance: _ComponentInstance,
        template: _CanonTemplate,
        make: Callable[..., HostEntry],
        memory: CoreMemory | None,
        call: Callable[..., Any],
    ) -> HostEntry:
        """A ``canon lower``'s host entry, generated for its type (``make``, see
        :func:`~._abi.import_entry_factory`): one function from the raw values to the
        raw results, with one context for all its calls."""
        abi = template.abi
        assert abi is not None
        label = template.label
        cx = _plain(abi) or AbiContext(memory, instance.table, CallScope(), view=False)

        def fault(exc: Exception) -> IsyswasfaError:
            return self._fault(label, exc)

        def leave() -> IsyswasfaError:
            return self._fault(label, GuestTrap(f"cannot leave component instance to call {label}"))

        return make(call, cx, self.faults, instance, fault, leave, *raw_structs(template.ty))

    def _blocking_func(
        self,
        instance: _ComponentInstance,
        number: int,
        template: _CanonTemplate,
        impl: _engine.Blocking,
        address: int,
    ) -> None:
        """The async core function of a lowered :class:`Blocking` host function (canon
        function ``number`` of the plan), made into the import pool's
        ``wasmtime_extern_t`` at ``address``: defined once for every instance of the
        plan (:class:`~._fiber.HostFuncDefs`), this instance's Python behind it."""
        opening = self._opening
        assert opening is not None
        assert template.abi is not None
        assert template.func_type is not None
        assert isinstance(template.definition, CanonLower)
        self.has_async = True
        options = template.definition.options if template.needs_memory else None
        run = self._blocking(
            instance, template.abi, options, impl.fn, template.func_type, template.label
        )
        self.fibers.take_host_func(
            opening.host_defs, number, template.ty, run, address, template.label
        )

    def _lowered(
        self,
        instance: _ComponentInstance,
        abi: FuncAbi,
        memory: CoreMemory | None,
        call: Callable[..., Any],
        label: str,
    ) -> Callable[[list[Any]], list[Any]]:
        table = instance.table
        faults = self.faults
        plain = _plain(abi)
        lift_args, lower_result = abi.lift_args, abi.lower_result
        may_leave = instance.leave_flag

        def lowered(args: list[Any]) -> list[Any]:
            if faults.fault is not None:
                raise GuestTrap("instance is dead")
            if not may_leave[0]:
                raise self._fault(
                    label, GuestTrap(f"cannot leave component instance to call {label}")
                )
            try:
                if plain is not None:
                    return lower_result(plain, call(*lift_args(plain, args)), args)
                cx = AbiContext(memory, table, CallScope(), view=False)  # (viewed when read)
                out = lower_result(cx, call(*lift_args(cx, args)), args)
                cx.scope.finish()
            except Exception as exc:
                raise (fault := self._fault(label, exc)) from fault.__cause__
            return out

        return lowered

    def _blocking(
        self,
        instance: _ComponentInstance,
        abi: FuncAbi,
        options: CanonOptions | None,
        fn: Callable[..., Generator[Any, Any, Any]],
        ty: FuncType,
        label: str,
    ) -> Callable[..., Any]:
        """The async core function behind a lowered :class:`Blocking` host function, which
        the fiber path calls (``_fiber``). It runs ``fn`` inside the guest's call up to
        its first wait: one that returns without waiting (most writes and flushes) gives
        its lowered result there and then, with no generator of ours to drive; else it
        gives a generator that the fiber path drives, each wait suspending the guest's
        fiber while the call's driver awaits it, and what follows (lowering the result
        through ``realloc``) running on the fiber again. The memory ``options`` name
        (``None``: the function's values touch none) is looked up at each call: an
        instance calls few of its imports."""
        table = instance.table
        faults = self.faults
        plain = _plain(abi)
        lift_args, lower_result = abi.lift_args, abi.lower_result
        to_error = isinstance(ty.result, ResultType) and ty.result.err is not None
        masks = [_MASKS[k] for k in abi.import_core_params]
        n_results = len(abi.import_core_results)
        may_leave = instance.leave_flag

        def lowered(cx: AbiContext, value: Any, args: list[Any]) -> Any:
            out = lower_result(cx, value, args)
            if plain is None:
                cx.scope.finish()
            if n_results == 1:
                return out[0]
            return out if n_results else None

        def run(*core: Any) -> Any:
            if faults.fault is not None:
                raise GuestTrap("instance is dead")
            if not may_leave[0]:
                raise self._fault(
                    label, GuestTrap(f"cannot leave component instance to call {label}")
                )
            try:
                args = [v if m is None else v & m for v, m in zip(core, masks, strict=True)]
                if plain is not None:
                    cx = plain
                else:
                    memory = None if options is None else instance.guest_memory(options)
                    cx = AbiContext(memory, table, CallScope(), view=False)
                try:
                    gen = fn(*lift_args(cx, args))
                    wait = gen.send(None)
                except StopIteration as stop:  # done without waiting
                    value = stop.value
                except WasiError as exc:
                    if not to_error:
                        raise
                    value = Err(exc.code)
                else:
                    return waits(gen, wait, cx, args)
                return lowered(cx, value, args)
            except Exception as exc:
                raise (fault := self._fault(label, exc)) from fault.__cause__

        def waits(
            gen: Generator[Any, Any, Any], wait: Any, cx: AbiContext, args: list[Any]
        ) -> Generator[Any, Any, Any]:
            try:
                try:
                    value = yield from self._waits_of(gen, wait)
                except WasiError as exc:
                    if not to_error:
                        raise
                    value = Err(exc.code)
                return lowered(cx, value, args)
            except Exception as exc:
                raise (fault := self._fault(label, exc)) from fault.__cause__

        return run

    def _waits_of(self, gen: Generator[Any, Any, Any], wait: Any) -> Generator[Any, Any, Any]:
        """``yield from gen`` from its first wait ``wait`` on, counting the call as
        blocked while it waits."""
        self.blocked_calls += 1
        try:
            while True:
                try:
                    got = yield wait
                except GeneratorExit:
                    gen.close()
                    raise
                except Exception as exc:
                    wait = gen.throw(exc)
                else:
                    wait = gen.send(got)
        except StopIteration as stop:
            return stop.value
        finally:
            self.blocked_calls -= 1

    @staticmethod
    def _host_fn(impl: Resolved, label: str) -> Callable[..., Any]:
        """The host's plain function for an import (a link error for anything else)."""
        if impl is None or isinstance(impl, _engine.ResourceDef | _engine.Blocking):
            raise LinkError(f"the host gives no function for {label}")
        return impl

    def _drop_entry(
        self, instance: _ComponentInstance, d: CanonResource, ty: wasmtime.FuncType
    ) -> HostEntry:
        """``canon resource.drop`` on its raw value (a guest drops every handle it gets:
        one host call each). Not from a post-return (``may_leave`` clear), as the
        canonical ABI says: an export's results may be lifted after its post-return
        only because the post-return cannot change the handle table."""
        table, rt = instance.table, d.resource
        label = f"resource.drop of {rt.name}"
        from_address, unpack_from, _ = raw_structs(ty)
        last = 0
        view: Any = None
        may_leave = instance.leave_flag

        def drop(raw: int) -> None:
            nonlocal last, view
            if not may_leave[0]:
                raise self._fault(label, _may_not_leave(label))
            buf = view
            if raw != last:
                buf = view = from_address(raw)
                last = raw
            try:
                table.resource_drop(rt, unpack_from(buf)[0])
            except Exception as exc:
                raise (fault := self._fault(label, exc)) from fault.__cause__

        return drop

    def _resource_op(
        self, instance: _ComponentInstance, d: CanonResource
    ) -> Callable[[list[Any]], list[Any]]:
        """``canon resource.new`` / ``rep`` / ``drop`` on a list of core values.
        ``new`` and ``drop`` trap while ``may_leave`` is clear (in a post-return), as
        the canonical ABI says; ``rep`` reads the table and may run there."""
        table, rt = instance.table, d.resource
        label = f"resource.{d.op} of {rt.name}"
        may_leave = instance.leave_flag
        checked = d.op != "rep"

        def guarded(op: Callable[[list[Any]], list[Any]]) -> Callable[[list[Any]], list[Any]]:
            def run(args: list[Any]) -> list[Any]:
                if checked and not may_leave[0]:
                    raise self._fault(label, _may_not_leave(label))
                try:
                    return op(args)
                except Exception as exc:
                    raise (fault := self._fault(label, exc)) from fault.__cause__

            return run

        if d.op == "new":
            return guarded(lambda args: [table.resource_new(rt, args[0])])
        if d.op == "rep":
            return guarded(lambda args: [table.resource_rep(rt, args[0])])
        if d.op == "drop":

            def drop(args: list[Any]) -> list[Any]:
                table.resource_drop(rt, args[0])
                return []

            return guarded(drop)
        raise LinkError(f"canon resource.{d.op} is not supported")

    # -- calling exports ----------------------------------------------------------------

    def lifted(self, func: LiftedFunc, label: str) -> _Lifted:
        """A ``canon lift`` the host (or another component) calls: lowers its arguments,
        calls the core function, lifts the result, then calls ``post-return``."""
        return _Lifted(self, func, label)

    def run_now(self, core: CoreFunc, args: list[Any]) -> list[Any]:
        """Call a core function synchronously: inside a call already (a host function
        calling a composed component's export, ``realloc``) directly; from the top (a
        start function, a post-return) on a fiber when a host function may wait there,
        since a synchronous call reaching an async host function aborts the process."""
        if not self.has_async or _core.sync_depth() or _fiber.current() is not None:
            return core(args)
        fiber = self._fiber_funcs.get(id(core))
        if fiber is None:
            fiber = self._fiber_funcs[id(core)] = self.fibers.func(core.func)
            fiber.label = core.label
        return _unsigned(fiber.call_now(*args), core.results)

    def export_names(self) -> dict[str, dict[str, FuncType]]:
        """Exported functions by interface (``""`` for the root)."""
        return self._exports

    def func(self, interface: str, name: str) -> OwnExportFunc:
        """A callable export; raise :class:`~trio_isyswasfa.LinkError` if there is none."""
        if name not in self._exports.get(interface, {}):
            where = f"interface {interface}" if interface else "the component's root"
            raise LinkError(f"no export {name!r} in {where}")
        path = (interface, name) if interface else (name,)
        made = self._export_funcs.get(path)
        if made is None:  # one per export: its shim (``_shim``) is made once
            if self._closed:  # (what it was made of is gone)
                raise InstanceDead("the component instance was closed")
            label = "#".join(path)
            made = OwnExportFunc(self, self.lifted(self.root.lifted(*path), label), label)
            self._export_funcs[path] = made
        return made


def _err_of_wasi_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, with a :class:`~trio_isyswasfa.WasiError` it raises as the result's
    ``err``."""

    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except WasiError as exc:
            return Err(exc.code)

    return call


def _unsigned(value: Any, kinds: tuple[str, ...]) -> list[Any]:
    """A fiber call's results (``None``, one value or a list; integers signed) as the
    list of unsigned core values the canonical ABI lifts."""
    if not kinds:
        return []
    values = [value] if len(kinds) == 1 else list(value)
    return [v if _MASKS[k] is None else v & _MASKS[k] for v, k in zip(values, kinds, strict=True)]


class _Lifted:
    """A ``canon lift`` ready to be called: synchronously (:meth:`sync`) or on the
    store's fiber (:meth:`call`)."""

    def __init__(self, owner: OwnEngineInstance, func: LiftedFunc, label: str) -> None:
        instance = func.owner
        assert isinstance(instance, _ComponentInstance)
        options = func.lift.options
        if options.is_async:
            raise LinkError(f"{label} is an async export, which this engine cannot call yet")
        self.owner = owner
        self.instance = instance
        self.label = label
        self.options = options
        self.abi = abi = _abi_of(instance, func.lift)
        self.memory = instance.guest_memory(options) if _needs_memory(abi) else None
        self.core = owner.core(func.core, label)
        self.post: CoreFunc | None = None
        if options.post_return is not None:
            self.post = owner.core(instance.funcs[options.post_return], f"post-return of {label}")
        self.plain = _plain(abi)
        # one context for all calls when the arguments carry no handles (no borrow scope
        # to keep per call: lifting the result's own handles does not use it)
        self._shared = self.plain
        if self._shared is None and not any(_has_handles(t) for _, t in abi.func.params):
            self._shared = AbiContext(self.memory, instance.table, CallScope(), view=False)
        # otherwise (arguments with handles: a borrow scope per call) one context too,
        # made at the first call, whose scope and view each call starts afresh (one
        # call of the export at a time: ``may_enter``)
        self._scoped: AbiContext | None = None
        # lowering that calls the guest's ``realloc`` runs on the store's fiber, by a host
        # function the runner calls first (``_shim``): the store is the fiber's between
        # calls
        self._lowers = bool(abi._params_touch_memory)
        # or, when its only such arguments are strings and byte lists, the runner copies
        # them in from bytes staged in the dispatcher's memory (``_shim``): no host
        # function, no ``realloc`` from Python
        # (planned at the first call from the host: a composition links ~1,000 lifted
        # functions that are only ever called synchronously, see ``sync``)
        self._stage_plan: Any = _UNPLANNED  # a _StagePlan, or None
        self._staged_run: _fiber.FiberFunc | None = None
        # the export on the store's fiber, through its runner (``_shim``): with a
        # post-return, the runner lifts the results (:meth:`_lift_entry`) before it; made at
        # the first call
        self._run: _fiber.FiberFunc | None = None
        self._cx: AbiContext | None = None  # the call's, while ``_run`` runs
        self._args: tuple[Any, ...] = ()  # the call's, for :meth:`_lower`
        self._value: Any = None  # what the call's lifting gave
        self._lift_error: BaseException | None = None
        self._lower_error: HostProtocolError | None = None
        self._sized = False  # the lift hook is told the memory's size (``_make_run``)
        # with a post-return, and results that it cannot change (no memory, no handles)
        # nor borrows to end before it: the runner keeps ``may_leave`` clear around the
        # post-return itself, and the results are lifted after the call; no ``lift``
        # hook, no C→Python crossing
        # the context of a call whose values touch neither memory nor handles, and that
        # has no hooks (no staged arguments, no lower hook, no lift hook): it takes the
        # straight path in :meth:`call` (set at the first call, once the runner is made)
        self._direct: AbiContext | None = None
        self._leaves = (
            self.post is not None
            and instance.leave_at is not None
            and not abi._result_touches_memory
            and _lifts_surely(abi.func.result)
            and not any(_has_handles(t) for _, t in abi.func.params)
        )

    def _note_abandoned(self) -> None:
        """A call ended by something other than the guest (a cancel, the store's close):
        a fiber abandoned where it stood is the instance's fault from now on."""
        owner = self.owner
        if owner.fibers.fault is not None:
            owner.faults.record(owner.fibers.fault)

    def _make_run(self, *, staged: bool = False) -> _fiber.FiberFunc:
        """The export's runner on the store's fiber (see ``_shim``), with its hooks: the
        one that lowers through the ``lower`` hook, or (``staged``) the one that takes
        staged strings and byte lists."""
        owner = self.owner
        owner.fibers.stop_server()  # making host functions uses the store directly
        core = self.core
        store = owner.store
        lower = lift = post = None
        if self._lowers and not staged:
            lower = host_func(store, _LOWER_TYPE, None, owner._made, entry=self._lower_entry())
        sized = None
        if self._leaves:
            assert self.post is not None
            post = self.post.func
        elif self.post is not None:
            results = [getattr(wasmtime.ValType, kind)() for kind in core.results]
            memory = self.memory
            if memory is not None and self.abi._result_touches_memory:
                mem_type = memory.memory.type(store)
                if not (mem_type.is_64 or mem_type.is_shared):
                    # the runner tells the lift hook the memory's size: no C call to
                    # learn whether the view taken before still holds
                    sized = memory.memory
                    results.append(wasmtime.ValType.i32())
            self._sized = sized is not None
            ty = wasmtime.FuncType(results, [])
            lift = host_func(store, ty, None, owner._made, entry=self._lift_entry(ty))
            post = self.post.func
        self._sized = sized is not None
        plan = self._stage_plan
        run = owner.fibers.func(
            core.func,
            lower=lower,
            lift=lift,
            post=post,
            unsigned=True,
            staged=plan.staged if staged and isinstance(plan, _StagePlan) else None,
            sized=sized,
            leave=self.instance.leave_at if self._leaves else None,
        )
        run.label = self.label
        if staged:
            self._staged_run = run
        else:
            self._run = run
        return run

    def _lower_entry(self) -> HostEntry:
        """The runner's first host function, on its raw values: lower the call's
        arguments, on the fiber (the guest's ``realloc`` is a call into the store); 0 if
        they do not fit, and nothing else runs."""
        from_address, _, pack_into = raw_structs(_LOWER_TYPE)
        assert pack_into is not None
        last = 0
        view: Any = None
        abi = self.abi
        # a lowering that fails half way takes out the handles it added (no call ran)
        marks = any(_has_handles(ty) for _, ty in abi.func.params)

        def entry(raw: int) -> None:
            nonlocal last, view
            buf = view
            if raw != last:
                buf = view = from_address(raw)
                last = raw
            run = self._run
            cx = self._cx
            assert run is not None
            assert cx is not None
            mark = cx.table.mark() if marks else None
            try:
                run.put_args(abi.lower_args(cx, self._args))
            except HostProtocolError as exc:
                if mark is not None:
                    cx.table.roll_back(mark)
                self._lower_error = exc
                pack_into(buf, 0, 0)
                return
            pack_into(buf, 0, 1)

        return entry

    def _lift_entry(self, ty: wasmtime.FuncType) -> HostEntry:
        """The runner's host function before the post-return, on its raw values (the
        export's core results, and the memory's size if :attr:`_sized`): lift the
        results (before the post-return frees them), end the call's borrow scope, and
        keep the post-return in. One function per export, no list of values between
        (a frame and a list fewer per call than a :func:`~._core.raw_entry`)."""
        from_address, unpack_from, _ = raw_structs(ty)
        last = 0
        view: Any = None
        abi, memory, sized = self.abi, self.memory, self._sized
        scoped = self.plain is None

        def entry(raw: int) -> None:
            nonlocal last, view
            buf = view
            if raw != last:
                buf = view = from_address(raw)
                last = raw
            results = unpack_from(buf)
            cx = self._cx
            assert cx is not None
            try:
                if sized:
                    assert memory is not None
                    memory.known_size = results[-1] << 16  # (the runner's memory.size)
                    results = results[:-1]
                self._value = abi.lift_result(cx, results)
                if scoped:
                    scope = cx.scope
                    if scope.borrows or scope.lenders:  # (else finishing does nothing)
                        scope.finish()
            except BaseException as exc:
                self._lift_error = exc  # what the call raises (the trap unwinds to it)
                raise
            finally:
                if memory is not None:
                    memory.known_size = -1
            self.instance.leave_flag[0] = 0  # post-return may not call out

        return entry

    def _enter(self) -> AbiContext:
        """Check that the call may start; its context."""
        faults = self.owner.faults
        if faults.fault is not None:
            raise InstanceDead(f"the component instance has failed: {faults.fault}")
        instance = self.instance
        if not instance.may_enter:
            raise GuestTrap(f"cannot enter the component instance again to call {self.label}")
        shared = self._shared
        if shared is not None:
            return shared
        cx = self._scoped
        if cx is None:
            cx = self._scoped = AbiContext(self.memory, instance.table, CallScope(), view=False)
            return cx
        scope = cx.scope
        if scope.borrows or scope.lenders:  # left by a call whose lowering failed
            cx.scope = CallScope()
        cx.buf = _NO_VIEW  # (viewed anew before each access, as a fresh context's)
        return cx

    def _begin(self, args: tuple[Any, ...]) -> tuple[AbiContext, list[Any]]:
        cx = self._enter()
        core_args = self.abi.lower_args(cx, args)  # a HostProtocolError here ran nothing
        self.instance.may_enter = False
        return cx, core_args

    def _end(self, cx: AbiContext, results: list[Any]) -> Any:
        value = self.abi.lift_result(cx, results)
        if self.plain is None:
            scope = cx.scope
            if scope.borrows or scope.lenders:  # (else finishing does nothing)
                scope.finish()
        if self.post is not None:
            flag = self.instance.leave_flag
            flag[0] = 0  # post-return may not call out
            try:
                self.owner.run_now(self.post, results)
            finally:
                flag[0] = 1
        return value

    def _failed(self, exc: IsyswasfaError) -> BaseException:
        """What a failed call raises; the instance is dead with it."""
        faults = self.owner.faults
        cause = exc.__cause__
        if cause is not None and cause is faults.fault:
            return cause  # a host function's failure, recorded (with its cause)
        if isinstance(exc, GuestTrap):
            faults.record(exc)
            return exc
        if isinstance(exc, InstanceDead):
            faults.record(exc)
            return exc
        trap = GuestTrap(f"{self.label} failed: {exc}")  # a host value that does not fit
        trap.__cause__ = exc
        faults.record(trap)
        return trap

    def sync(self, *args: Any) -> Any:
        """Run it to its end on this thread (it cannot wait)."""
        cx, core_args = self._begin(args)
        try:
            return self._end(cx, self.owner.run_now(self.core, core_args))
        except IsyswasfaError as exc:
            failure = self._failed(exc)
            if failure is exc:
                raise
            raise failure from failure.__cause__
        finally:
            self.instance.may_enter = True

    async def call(self, *args: Any) -> Any:
        """Run it on the store's fiber, in turn with the instance's other calls: the
        event loop runs on while the guest waits or computes (one coroutine frame from
        :meth:`OwnExportFunc.call` down to the fiber's poll)."""
        owner = self.owner
        turns = owner.turns
        if turns._held:  # (``Turns.take_nowait``, inline: it runs once a call)
            if owner.before_wait is not None:
                owner.waits_now()
            await turns.take()
        else:
            turns._held = True
        try:
            direct = self._direct
            if direct is not None:
                # plain values and no hooks (see ``_direct``): :meth:`_begin`, the first
                # poll and :meth:`_end` in straight code, with the same checks
                # (the poll and the failure handling repeat the general path's below, on
                # purpose: a shared helper would be one more coroutine frame, or one
                # more call, per call; a change to either path goes to both)
                if self.owner.faults.fault is not None:
                    raise InstanceDead(
                        f"the component instance has failed: {self.owner.faults.fault}"
                    )
                instance = self.instance
                if not instance.may_enter:
                    raise GuestTrap(
                        f"cannot enter the component instance again to call {self.label}"
                    )
                abi = self.abi
                flat = abi.lower_args(direct, args)  # a HostProtocolError here ran nothing
                run = self._run
                assert run is not None
                instance.may_enter = False
                try:
                    results = run.start_now(flat, _NO_BLOBS)
                    if results is _RUNNING:
                        if owner.before_wait is not None:
                            owner.waits_now()
                        results = await run.run_on()
                    elif results is _NOT_NOW:
                        if owner.before_wait is not None:
                            owner.waits_now()
                        results = await run.call_staged(flat, _NO_BLOBS)
                    # (a post-return, if any, ran in the runner, may_leave cleared)
                    return abi.lift_result(direct, results)
                except IsyswasfaError as exc:
                    failure = self._failed(exc)
                    if failure is exc:
                        raise
                    raise failure from failure.__cause__
                except BaseException:
                    self._note_abandoned()
                    raise
                finally:
                    instance.may_enter = True
            instance = self.instance
            blobs: list[Any] = _NO_BLOBS
            plan = self._stage_plan
            if plan is _UNPLANNED:
                plan = self._stage_plan = _stage_plan(self)
            staged = None
            if plan is not None:
                cx = self._enter()  # (before a staged list's handles enter the table)
                # handles enter the table here only for a call that starts at once: one
                # waiting for the store (another instance's call runs on it) could be
                # cancelled there and leave them; the hook lowers it on the fiber instead
                if not (plan.handles and self.owner.fibers._busy):
                    blobs = []
                    staged = plan.stage(args, blobs)
            if staged is not None:  # copied in by the runner, on the fiber
                run = self._staged_run
                if run is None:
                    run = self._make_run(staged=True)
                core_args: list[Any] | tuple[()] = staged
                instance.may_enter = False
            else:
                run = self._run if self._run is not None else self._make_run()
                if plan is None and not self._lowers and (self.post is None or self._leaves):
                    self._direct = self.plain  # (the next calls take the straight path)
                if self._lowers:  # by :meth:`_lower`, on the fiber
                    cx = self._enter()
                    self._args = args
                    core_args = ()
                    instance.may_enter = False
                else:
                    cx, core_args = self._begin(args)
            lower_error: HostProtocolError | None = None
            try:
                self._cx = cx
                self._lift_error = None
                try:
                    # the first poll here when the store is free (no coroutine of its
                    # own); a guest that waits or yields is driven on by ``run_on`` (the
                    # direct path above repeats this and the failure handling)
                    results = run.start_now(core_args, blobs)
                    if results is _RUNNING:
                        if owner.before_wait is not None:
                            owner.waits_now()
                        results = await run.run_on()
                    elif results is _NOT_NOW:
                        if owner.before_wait is not None:
                            owner.waits_now()
                        results = await run.call_staged(core_args, blobs)
                finally:
                    self._cx = None
                    self._args = ()
                    if not self._leaves:  # (else the runner set it again)
                        instance.leave_flag[0] = 1
                lower_error, self._lower_error = self._lower_error, None
                if lower_error is not None:  # nothing ran: the instance lives on
                    raise lower_error
                if self.post is None:
                    return self._end(cx, results)
                if self._leaves:  # the post-return ran: nothing it did changes them
                    return self.abi.lift_result(cx, results)
                value, self._value = self._value, None
                return value
            except IsyswasfaError as exc:
                if exc is lower_error:
                    raise
                error, self._lift_error = self._lift_error, None
                if not isinstance(error, IsyswasfaError):
                    error = exc  # (else the lifting failed: that is what the call raises)
                failure = self._failed(error)
                if failure is exc:
                    raise
                raise failure from failure.__cause__
            except BaseException:
                self._note_abandoned()
                raise
            finally:
                instance.may_enter = True
        finally:
            if turns._line:  # (``Turns.give_back``, inline when nobody waits)
                turns.give_back()
            else:
                turns._held = False


_LOWER_TYPE = wasmtime.FuncType([], [wasmtime.ValType.i32()])
_RUNNING, _NOT_NOW = _fiber.RUNNING, _fiber.NOT_NOW
_NO_BLOBS: list[Any] = []
_NO_VIEW = memoryview(b"")  # (never written: a call with a stage plan makes its own)

_STRING, _BYTES, _VALUE, _LIST = 0, 1, 2, 3  # how a staged export lowers each argument
_BYTES_CLASSES = (bytes, bytearray)


class _StagePlan:
    """How an export's arguments are lowered when its runner copies its strings and
    lists in (``_shim``'s staged arguments): each string (UTF-8) or ``list<u8>``
    argument becomes two core values, ``length | offset << 32`` (where its bytes are
    staged in the dispatcher's memory) and its length; so does a list of values stored
    without pointers (its elements stored into a staging buffer as they would be into
    the guest's block, their ``own`` handles added to the instance's table: the
    poll's ``list<poll-input>``); every other argument touches neither memory nor
    handles and is lowered as usual.

    :meth:`stage` is generated once per plan (straight-line code for its arguments)."""

    __slots__ = ("handles", "stage", "staged")

    stage: Callable[[tuple[Any, ...], list[Any]], list[Any] | None]
    """``stage(args, blobs)``: the core arguments for ``args``, with the bytes to stage
    appended to ``blobs``; ``None`` when they cannot be staged (a value of another
    class, too many bytes): then the ``lower`` hook lowers them, and raises what is
    wrong."""

    def __init__(
        self, params: list[tuple[int, Any]], staged: _fiber.Staged, table: HandleTable
    ) -> None:
        self.staged = staged
        names = [f"v{i}" for i in range(len(params))]
        code = [
            "def stage(args, blobs):",
            f"    if len(args) != {len(params)}:",
            "        return None",
            f"    {', '.join(names)}{',' if len(names) == 1 else ''} = args",
            "    out = []",
            "    at = STAGE",
        ]
        namespace: dict[str, Any] = {
            "STAGE": _STAGE,
            "END": _STAGE_END,
            "BYTES": _BYTES_CLASSES,
            "CX": _NO_CONTEXT,
            "TABLE": table,
            "LISTS": (list, tuple),
        }
        # a failure after a list's handles entered the table takes them out again: the
        # ``lower`` hook then lowers the arguments afresh (and raises what is wrong)
        marked = any(how == _LIST and _has_handles(abi.ty) for how, abi in params)
        self.handles = marked
        """Whether staging adds handles to the instance's table."""
        fail = "return TABLE.roll_back(mark)" if marked else "return None"
        if marked:
            code.append("    mark = TABLE.mark()")
        blobs = []
        for i, (how, abi) in enumerate(params):
            v = names[i]
            if how == _LIST:
                # (as ``write_list``: the same classes, and each element's ``store``
                # into a block of the list's size, here the staging buffer)
                size = abi.layout.size
                namespace[f"store{i}"] = abi.store
                namespace[f"cx{i}"] = AbiContext(None, table, CallScope(), view=False)
                code += [
                    f"    if {v}.__class__ is not list and not isinstance({v}, LISTS):",
                    f"        {fail}",
                    f"    n = len({v})",
                    f"    if at + n * {size} > END:",
                    f"        {fail}",
                    f"    d{i} = cx{i}.buf = bytearray(n * {size})",
                    "    try:",
                    "        q = 0",
                    f"        for x in {v}:",
                    f"            store{i}(cx{i}, q, x)",
                    f"            q += {size}",
                    "    except Exception:  # (the hook's lowering raises it, worded)",
                    f"        {fail}",
                    f"    out.append(n * {size} | at << 32)",
                    "    out.append(n)",
                    f"    at += n * {size}",
                ]
                blobs.append(f"d{i}")
                continue
            if how == _VALUE:
                namespace[f"lower{i}"] = abi.lower_flat
                code += [
                    "    try:",
                    f"        lower{i}(CX, {v}, out)",
                    "    except Exception:  # (the hook's lowering raises it, worded)",
                    f"        {fail}",
                ]
                continue
            if how == _STRING:
                code += [
                    f"    if {v}.__class__ is not str:",
                    f"        {fail}",
                    "    try:",
                    f"        d{i} = {v}.encode()",
                    "    except UnicodeEncodeError:",
                    f"        {fail}",
                ]
            else:
                code += [
                    f"    if {v}.__class__ not in BYTES:",
                    f"        {fail}",
                    f"    d{i} = {v}",
                ]
            code += [
                f"    n = len(d{i})",
                "    out.append(n | at << 32)",
                "    out.append(n)",
                "    at += n",
            ]
            blobs.append(f"d{i}")
        code += [
            "    if at > END:",
            f"        {fail}",
            *(f"    blobs.append({b})" for b in blobs),
            "    return out",
        ]
        exec("\n".join(code) + "\n", namespace)
        self.stage = namespace["stage"]


_STAGE = _shim.STAGE
_STAGE_END = _shim.STAGE + _shim.STAGE_SIZE
_NO_CONTEXT = AbiContext()  # (the other arguments touch neither memory nor handles)


_UNPLANNED = object()


def _stage_plan(lifted: _Lifted) -> _StagePlan | None:
    """The export's :class:`_StagePlan`, if its arguments that touch memory are all
    UTF-8 strings, byte lists and lists of values stored without pointers whose
    handles are all ``own``, passed flat, and it has a ``realloc`` and a ``may_leave``
    flag the runner can clear around it; else ``None``."""
    abi, memory, instance = lifted.abi, lifted.memory, lifted.instance
    options = lifted.options
    if not abi._params_touch_memory or abi.params_in_memory or memory is None:
        return None
    if options.realloc is None or instance.leave_at is None:
        return None  # (without a flag in the dispatcher's memory, the ``lower`` hook)
    mem_type = memory.memory.type(instance.store)
    if mem_type.is_64 or mem_type.is_shared:
        return None
    realloc = instance.funcs[options.realloc]
    if not isinstance(realloc, wasmtime.Func):
        return None
    params: list[tuple[int, Any]] = []
    staged: list[tuple[int, int]] = []
    index = 0
    for _, ty in abi.func.params:
        if isinstance(ty, PrimType) and ty.kind is Primitive.STRING:
            if _encoding(options) != "utf8":
                return None
            params.append((_STRING, None))
        elif _is_bytes(ty):
            params.append((_BYTES, None))
        elif (
            isinstance(ty, ListType)
            and ty.length is None
            and not _touches_memory(ty.element)
            and _owns_only(ty.element)
        ):
            element = type_abi(ty.element, _encoding(options))
            params.append((_LIST, element))
            staged.append((index, element.layout.align))
            index += 2
            continue
        elif _touches_memory(ty) or _has_handles(ty):
            return None
        else:
            params.append((_VALUE, type_abi(ty)))
            index += len(flatten((ty,)))
            continue
        staged.append((index, 1))
        index += 2
    if index > _shim.MAX_VALUES:  # pragma: no cover - more travel in memory
        return None
    staging = _fiber.Staged(tuple(staged), memory.memory, realloc, instance.leave_at)
    return _StagePlan(params, staging, instance.table)


def _is_bytes(ty: ValType) -> bool:
    return (
        isinstance(ty, ListType)
        and ty.length is None
        and isinstance(ty.element, PrimType)
        and ty.element.kind is Primitive.U8
    )


class OwnExportFunc:
    """An exported function of an :class:`OwnEngineInstance`."""

    __slots__ = ("_lifted", "call", "label", "owner")

    call: Callable[..., Coroutine[Any, Any, Any]]
    """Run the export on a fiber (awaiting what this returns): while the guest waits
    in a blocking host function or computes past an epoch tick, the event loop runs
    other tasks. Calls into one instance take turns. Raises as :meth:`call_sync`
    does; a cancellation while the guest waits abandons the call and the instance is
    dead. (The lifted function's own coroutine: no frame of ours per call.)"""

    def __init__(self, owner: OwnEngineInstance, lifted: _Lifted, label: str) -> None:
        self.owner = owner
        self._lifted = lifted
        self.label = label
        self.call = lifted.call

    def call_sync(self, *args: Any) -> Any:
        """Run the export to its end without the event loop (the guest cannot wait).

        Raises:
          HostProtocolError: ``args`` do not fit the export's parameters (nothing ran).
          GuestTrap: the guest trapped, or a host function it called raised (the
            exception is the ``__cause__``); the instance is dead from then on.
          InstanceDead: the instance died in an earlier call.
        """
        return self._lifted.sync(*args)


__all__ = [
    "OwnEngineInstance",
    "OwnExportFunc",
    "exported_funcs",
    "imported_items",
]
