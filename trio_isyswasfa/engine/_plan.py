"""A component's instantiation, worked out once: the plan every instance replays.

Walking a componentize-py guest's ~2,000 definitions, resolving its ~1,500 aliases and
matching ~2,300 core imports to what provides them is the same work for every instance
of one component; only the store differs. :func:`instance_plan` does it once per
:class:`~._model.ComponentDef` (and keeps the compiled core modules with it, so a
component's modules are deserialised once per process), and
:class:`~._instance.CoreInstances` replays the plan per store.

In a plan, what would hold a wasmtime object at run time holds a symbolic reference
instead: :class:`ExportRef` (an export of the plan's n-th real core instance, numbered
across nested components), :class:`CanonRef` (a canon-defined core function, made per
instance by the trampoline), :class:`RealInstance`, :class:`LiftRef`; component-level
instances are dicts of such references. Each core instantiation is a
:class:`CoreStep` whose imports, in the module's import order, are slots of one pool of
``wasmtime_extern_t`` per instance: an item imported by several modules (the memory,
the function table, libc's globals) is fetched from its instance once.

A plan reads each core module's import, export and start sections from the module's
bytes (:func:`~._reader.read_core_shape`): asking wasmtime's C API for the same ~6,000
names of a componentize-py guest costs ~0.15 s of ctypes calls; a module using types the
reader does not read (the GC proposal's) is asked about through the C API instead.

Plans assume the definitions are not changed after reading (the model's rule).
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from typing import Any

import wasmtime

from .._errors import LinkError, LoadError
from .._records import record
from ._model import (
    AliasExport,
    AliasOuter,
    CanonBuiltin,
    CanonLift,
    CanonLower,
    CanonResource,
    ComponentDef,
    CoreExtern,
    CoreFuncType,
    CoreInlineInstance,
    CoreInstantiate,
    CoreModule,
    CoreTypeDef,
    Export,
    Import,
    InlineInstance,
    InstanceType,
    Instantiate,
    Item,
    ResourceDef,
    Sort,
    Start,
    TypeDef,
    Value,
)
from ._reader import read_core_shape
from ._startcheck import ModuleCode, start_is_inert
from ._types import FuncType, ResourceType

EXTERN_SIZE = 32
"""``sizeof(wasmtime_extern_t)``: the stride of a pool and of an import array."""


@record(frozen=True)
class ExportRef:
    """Export ``name`` of the plan's real core instance number ``instance``."""

    instance: int
    name: str


@record(frozen=True)
class CanonRef:
    """Canon-defined core function ``index`` of component instance ``node`` (a
    ``canon lower``, ``resource.*`` or async built-in: made per instance)."""

    node: int
    index: int


CoreRef = ExportRef | CanonRef
"""Where a core function, memory, table or global comes from."""


@record(frozen=True)
class RealInstance:
    """The plan's real core instance number ``index`` (a module instantiated)."""

    index: int


@record(frozen=True)
class LiftRef:
    """A ``canon lift`` of component instance ``node``, lifting core function ``core``."""

    lift: CanonLift
    core: CoreRef
    node: int


@record(frozen=True)
class ImportedFunc:
    """A function the outermost component imports: ``path`` is the import name and,
    for a function of an imported instance, the export name in it."""

    path: tuple[str, ...]
    type: FuncType


class ImportedInstance(Mapping[str, Any]):
    """An instance the outermost component imports: each function in it is an
    :class:`ImportedFunc` (types and resources are the host's, and carry no value)."""

    __slots__ = ("_path", "_type")

    def __init__(self, path: tuple[str, ...], ty: InstanceType) -> None:
        self._path = path
        self._type = ty

    def __getitem__(self, name: str) -> Any:
        return imported((*self._path, name), self._type.export(name), name)

    def __iter__(self) -> Any:
        return iter([n for n, _ in self._type.exports])

    def __len__(self) -> int:
        return len(self._type.exports)


def imported(path: tuple[str, ...], item: Item | None, name: str) -> Any:
    """What an import of the outermost component (or a name in one) is at run time."""
    if item is None:
        raise KeyError(name)
    if isinstance(item, FuncType):
        return ImportedFunc(path, item)
    if isinstance(item, InstanceType):
        return ImportedInstance(path, item)
    return item  # a type, a value, a component or core module type: nothing to run


@record
class CoreStep:
    """Instantiate ``module`` as real core instance ``instance``.

    ``imports`` are the module's imports in its order (``names`` and ``types`` as the
    module declares them: ``types`` an :class:`ImportTypes`, which makes the
    ``wasmtime.FuncType`` of an import when asked for); ``slices`` cut each one out of the pool's first
    ``pool_size`` slots. The slots this step is the first to need are filled before
    it runs: ``fetch`` lists ``(slot, instance, name, len(name))`` for exports of
    earlier instances, ``make`` lists ``(slot, ref, i)`` for canon-defined functions
    (``i``: the import's position, for its type). ``has_start``: the module has a start
    function (instantiated on the async path, which may suspend it), unless
    ``sync_start``: the start function surely reaches no host function and ends soon
    (:func:`~._startcheck.start_is_inert`), so the synchronous path takes it.
    ``module_address``: the compiled module's ``wasmtime_module_t`` (the plan keeps
    the module alive).
    """

    instance: int
    module: wasmtime.Module
    module_index: int
    offset: int
    imports: tuple[CoreRef, ...]
    names: tuple[tuple[str, str], ...]
    types: Sequence[Any]
    fetch: tuple[tuple[int, int, bytes, int], ...]
    make: tuple[tuple[int, CanonRef, int], ...]
    slices: tuple[slice, ...]
    pool_size: int
    has_start: bool
    module_address: int
    sync_start: bool = False


@record
class NestedStep:
    """Instantiate nested component instance ``node``."""

    node: int


@record
class StartStep:
    """Run a component start function (the definition, as read)."""

    definition: Start


Step = CoreStep | NestedStep | StartStep


@record
class NodePlan:
    """One component instance of the plan (the outermost is node 0): its index spaces
    and exports with symbolic references, its canon-defined core functions, and the
    steps that make it, in binary order."""

    index: int
    component: ComponentDef
    spaces: dict[Sort, list[Any]]
    exports: dict[str, Any] = field(default_factory=dict)
    canons: list[tuple[CanonLower | CanonResource | CanonBuiltin, Any]] = field(
        default_factory=list
    )
    steps: list[Step] = field(default_factory=list)
    nested: list[int] = field(default_factory=list)
    aliases: dict[ResourceType, ResourceType] = field(default_factory=dict)
    """This instance's resource types that stand for others, to the one each stands
    for (under which destructors are kept): a type it imports, to the host's or the
    defining instance's; a nested instance's fresh export, to the type that instance
    defines."""


@record
class InstancePlan:
    """Everything an instance of ``component`` is made of, resolved once."""

    component: ComponentDef
    modules: Mapping[int, wasmtime.Module]
    nodes: list[NodePlan] = field(default_factory=list)
    pool: list[CoreRef] = field(default_factory=list)
    instances: int = 0  # real core instances
    imports: int = 0  # core imports linked, over all steps
    derived: dict[int, Any] = field(default_factory=dict)
    """What the engine works out per definition once for all instances (a lowering's
    ABI, say), by the ``id`` of the definition (the plan keeps its component alive)."""
    scratch: Any = None
    """What every opening of the plan reuses (the engine's: its buffers and the
    arguments of its C calls, made on the first opening)."""


def has_start_section(data: bytes | memoryview) -> bool:
    """Whether a core module binary has a start section (only section headers read)."""
    view = memoryview(data)
    at, end = 8, len(view)
    while at < end:
        section = view[at]
        at += 1
        size = shift = 0
        while True:
            if at >= end:
                return False
            byte = view[at]
            at += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if section == 8:
            return True
        at += size
    return False


_EXPORTS: weakref.WeakKeyDictionary[wasmtime.Module, frozenset[str]] = weakref.WeakKeyDictionary()
_IMPORTS: weakref.WeakKeyDictionary[wasmtime.Module, list[tuple[str, str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def imports_of(module: wasmtime.Module) -> list[tuple[str, str, Any]]:
    """A module's imports as ``(module, name, type)`` through wasmtime's C API, worked
    out once per module (wasmtime-py rebuilds them through ctypes on every
    ``Module.imports``). Plans read them from the module's bytes instead
    (:func:`~._reader.read_core_shape`); this is the reference, and the fallback."""
    found = _IMPORTS.get(module)
    if found is None:
        found = [(imp.module, imp.name or "", imp.type) for imp in module.imports]
        _IMPORTS[module] = found
    return found


def _exports_of(module: wasmtime.Module) -> frozenset[str]:
    found = _EXPORTS.get(module)
    if found is None:
        found = _EXPORTS[module] = frozenset(e.name for e in module.exports)
    return found


_VALTYPES: dict[str, Callable[[], wasmtime.ValType]] = {
    "i32": wasmtime.ValType.i32,
    "i64": wasmtime.ValType.i64,
    "f32": wasmtime.ValType.f32,
    "f64": wasmtime.ValType.f64,
    "funcref": wasmtime.ValType.funcref,
    "externref": wasmtime.ValType.externref,
}


class ImportTypes(Sequence[Any]):
    """A module's import types as its bytes declare them (:class:`~._model.CoreExtern`),
    each made a ``wasmtime.FuncType`` when asked for (a plan needs the types only of the
    imports canon definitions provide: a handful of ~2,000); other kinds stay
    :class:`~._model.CoreExtern`."""

    __slots__ = ("_declared", "_made")

    def __init__(self, declared: tuple[CoreExtern, ...]) -> None:
        self._declared = declared
        self._made: dict[int, Any] = {}

    def __getitem__(self, index: Any) -> Any:
        if not isinstance(index, int):
            raise TypeError("import types are looked up one at a time")
        made = self._made.get(index)
        if made is None:
            made = self._made[index] = _wasmtime_type(self._declared[index])
        return made

    def __len__(self) -> int:
        return len(self._declared)


# one ``wasmtime.FuncType`` per core signature for the whole process: canon-defined
# functions have a few dozen signatures, shared by every component, and a type object
# carries what the engine works out for it (``_core``'s value packers); made by us, it
# holds no module alive
_FUNC_TYPES: dict[tuple[tuple[str, ...], tuple[str, ...]], wasmtime.FuncType] = {}


def _wasmtime_type(extern: CoreExtern) -> Any:
    """``extern`` as the ``wasmtime.FuncType`` of a function import (one of value types
    wasmtime-py can name), else ``extern`` itself. The same signature gives the same
    type object, in every component."""
    ty = extern.type
    if extern.kind != "func" or not isinstance(ty, CoreFuncType):
        return extern
    key = (ty.params, ty.results)
    found = _FUNC_TYPES.get(key)
    if found is not None:
        return found
    makers = [_VALTYPES.get(v) for v in (*ty.params, *ty.results)]
    if None in makers:
        return extern  # not a type a canon-defined function can have
    made = [m() for m in makers if m is not None]
    found = _FUNC_TYPES[key] = wasmtime.FuncType(made[: len(ty.params)], made[len(ty.params) :])
    return found


@record(frozen=True)
class _Shape:
    """What the plan uses of a compiled module: its import names and types, its export
    names, whether it has a start function."""

    names: tuple[tuple[str, str], ...]
    types: Sequence[Any]
    exports: frozenset[str]
    has_start: bool


def _shape_of(module: wasmtime.Module, data: memoryview | None) -> _Shape:
    """The module's :class:`_Shape`, from its bytes (``data``) by our reader; through
    wasmtime's C API when there are no bytes or the reader does not read them (types of
    the GC proposal)."""
    if data is not None:
        try:
            shape = read_core_shape(data)
        except LoadError:
            pass
        else:
            return _Shape(
                tuple((m, n) for m, n, _ in shape.imports),
                ImportTypes(tuple(e for _, _, e in shape.imports)),
                shape.exports,
                shape.has_start,
            )
    found = imports_of(module)
    return _Shape(
        tuple((m, n) for m, n, _ in found),
        tuple(t for _, _, t in found),
        _exports_of(module),
        True if data is None else has_start_section(data),
    )


class _Builder:
    """Walks a component once, as an instance would, with symbolic references."""

    def __init__(
        self,
        plan: InstancePlan,
        module: Callable[[CoreModule], wasmtime.Module],
        module_bytes: Mapping[int, memoryview],
    ) -> None:
        self.plan = plan
        self.module = module
        self.module_bytes = module_bytes
        self.slots: dict[CoreRef, int] = {}
        self.shapes: dict[int, _Shape] = {}  # by id of the module
        self.instance_shapes: list[_Shape] = []
        # each real core instance's module and imports, for the start functions' check
        self.instance_modules: list[wasmtime.Module] = []
        self.instance_refs: list[list[CoreRef]] = []
        self.codes: dict[int, ModuleCode | None] = {}  # by id of the module
        # the fresh type an instantiation exports for each resource type the instantiated
        # component defines, to that type (unique objects: one map for every node)
        self.defined: dict[ResourceType, ResourceType] = {}

    def node(
        self,
        component: ComponentDef,
        args: Mapping[str, Any] | None,
        aliases: dict[ResourceType, ResourceType] | None = None,
    ) -> int:
        index = len(self.plan.nodes)
        spaces: dict[Sort, list[Any]] = {sort: [] for sort in Sort}
        node = NodePlan(index, component, spaces, aliases=aliases or {})
        self.plan.nodes.append(node)
        for d in component.definitions:
            self.define(node, d, args)
        return index

    def define(self, node: NodePlan, d: Any, args: Mapping[str, Any] | None) -> None:
        spaces = node.spaces
        if isinstance(d, AliasExport):
            if d.core:
                source = spaces[Sort.CORE_INSTANCE][d.instance]
                spaces[d.sort].append(self.core_export(source, d.instance, d.name))
            else:
                comp = spaces[Sort.INSTANCE][d.instance]
                if d.name not in comp:
                    raise LinkError(f"instance {d.instance} has no export {d.name!r}")
                spaces[d.sort].append(comp[d.name])
        elif isinstance(d, CoreInlineInstance):
            spaces[Sort.CORE_INSTANCE].append(
                {name: spaces[sort][idx] for name, sort, idx in d.exports}
            )
        elif isinstance(d, CoreInstantiate):
            spaces[Sort.CORE_INSTANCE].append(self.core_step(node, d))
        elif isinstance(d, CoreModule):
            spaces[Sort.CORE_MODULE].append(self.module(d))
        elif isinstance(d, CanonLower):
            spaces[Sort.CORE_FUNC].append(self.canon(node, d, spaces[Sort.FUNC][d.func]))
        elif isinstance(d, CanonResource | CanonBuiltin):
            spaces[Sort.CORE_FUNC].append(self.canon(node, d, None))
        elif isinstance(d, CanonLift):
            core = spaces[Sort.CORE_FUNC][d.core_func]
            spaces[Sort.FUNC].append(LiftRef(d, core, node.index))
        elif isinstance(d, Import):
            if args is None:
                value: Any = imported((d.name,), d.item, d.name)
            elif d.name in args:
                value = args[d.name]
            else:
                raise LinkError(f"nested component instantiated without its import {d.name!r}")
            spaces[d.sort].append(value)
        elif isinstance(d, Export):
            value = spaces[d.sort][d.index]
            node.exports[d.name] = value
            spaces[d.sort].append(value)
        elif isinstance(d, Instantiate):
            given = {name: spaces[sort][idx] for name, sort, idx in d.args}
            component = spaces[Sort.COMPONENT][d.component]
            child = self.node(component, given, self.resource_aliases(node, d, component))
            node.nested.append(child)
            node.steps.append(NestedStep(child))
            spaces[Sort.INSTANCE].append(self.plan.nodes[child].exports)
        elif isinstance(d, InlineInstance):
            spaces[Sort.INSTANCE].append({name: spaces[sort][idx] for name, sort, idx in d.exports})
        elif isinstance(d, ComponentDef):
            spaces[Sort.COMPONENT].append(d)
        elif isinstance(d, AliasOuter):
            target = d.target
            spaces[d.sort].append(self.module(target) if isinstance(target, CoreModule) else target)
        elif isinstance(d, TypeDef | ResourceDef):
            spaces[Sort.TYPE].append(d)
        elif isinstance(d, CoreTypeDef):
            spaces[Sort.CORE_TYPE].append(d)
        elif isinstance(d, Value):
            spaces[Sort.VALUE].append(d)
        elif isinstance(d, Start):
            node.steps.append(StartStep(d))

    def resource_aliases(
        self, node: NodePlan, d: Instantiate, component: ComponentDef
    ) -> dict[ResourceType, ResourceType]:
        """The aliases of the instance ``d`` makes in ``node``: what each resource type
        it imports stands for. The fresh types seen outside for the ones it defines
        stand for those (a drop outside runs the defining instance's destructor)."""
        defined = {r.resource for r in component.resources}
        out: dict[ResourceType, ResourceType] = {}
        for inner, outer in d.resources.items():
            if inner in defined:
                self.defined[outer] = inner
            else:
                found = node.aliases.get(outer) or self.defined.get(outer)
                out[inner] = outer if found is None else found
        return out

    def finish(self) -> None:
        """Give every node the aliases of the fresh types it may see."""
        if self.defined:
            for node in self.plan.nodes:
                node.aliases = {**self.defined, **node.aliases}

    def core_export(self, source: Any, index: int, name: str) -> Any:
        if isinstance(source, RealInstance):
            if name not in self.instance_shapes[source.index].exports:
                raise LinkError(f"instance {index} has no export {name!r}")
            return ExportRef(source.index, name)
        if name not in source:
            raise LinkError(f"instance {index} has no export {name!r}")
        return source[name]

    def canon(
        self, node: NodePlan, d: CanonLower | CanonResource | CanonBuiltin, callee: Any
    ) -> CanonRef:
        node.canons.append((d, callee))
        return CanonRef(node.index, len(node.canons) - 1)

    def core_step(self, node: NodePlan, d: CoreInstantiate) -> RealInstance:
        module = node.spaces[Sort.CORE_MODULE][d.module]
        if not isinstance(module, wasmtime.Module):
            raise LinkError(f"core module {d.module} is not defined by this component")
        given = {name: node.spaces[Sort.CORE_INSTANCE][idx] for name, idx in d.args}
        shape = self.shapes.get(id(module))
        if shape is None:
            shape = self.shapes[id(module)] = _shape_of(module, self.module_bytes.get(id(module)))
        refs: list[CoreRef] = []
        shapes = self.instance_shapes
        for module_name, name in shape.names:
            source = given.get(module_name)
            value: Any = None
            if isinstance(source, RealInstance):
                if name in shapes[source.index].exports:
                    value = ExportRef(source.index, name)
            elif source is not None:
                value = source.get(name)
            if not isinstance(value, ExportRef | CanonRef):
                raise LinkError(
                    f"core module {d.module} imports {module_name}.{name}, which its "
                    f"instantiation (at byte offset {d.offset:#x}) does not provide"
                )
            refs.append(value)
        slots: list[int] = []
        fetch: list[tuple[int, int, bytes, int]] = []
        make: list[tuple[int, CanonRef, int]] = []
        for i, ref in enumerate(refs):
            slot = self.slots.get(ref)
            if slot is None:
                slot = self.slots[ref] = len(self.plan.pool)
                self.plan.pool.append(ref)
                if isinstance(ref, ExportRef):
                    raw = ref.name.encode()
                    fetch.append((slot, ref.instance, raw, len(raw)))
                else:
                    make.append((slot, ref, i))
            slots.append(slot)
        index = self.plan.instances
        self.plan.instances += 1
        self.plan.imports += len(refs)
        shapes.append(shape)
        self.instance_modules.append(module)
        self.instance_refs.append(refs)
        sync_start = shape.has_start and start_is_inert(index, self.code, self.follow)
        node.steps.append(
            CoreStep(
                index,
                module,
                d.module,
                d.offset,
                tuple(refs),
                shape.names,
                shape.types,
                tuple(fetch),
                tuple(make),
                tuple(slice(s * EXTERN_SIZE, (s + 1) * EXTERN_SIZE) for s in slots),
                len(self.plan.pool),
                shape.has_start,
                ctypes.cast(module.ptr(), ctypes.c_void_p).value or 0,
                sync_start,
            )
        )
        return RealInstance(index)

    def code(self, instance: int) -> ModuleCode | None:
        """Real core instance ``instance``'s module, read for the start check (``None``:
        no bytes, or bytes the check does not read)."""
        module = self.instance_modules[instance]
        key = id(module)
        if key not in self.codes:
            data = self.module_bytes.get(key)
            try:
                self.codes[key] = None if data is None else ModuleCode(data)
            except LoadError:
                self.codes[key] = None
        return self.codes[key]

    def follow(self, instance: int, position: int) -> tuple[int, str] | None:
        """Where import ``position`` of real core instance ``instance`` comes from: an
        earlier instance's export, or ``None`` (a canon-defined function)."""
        ref = self.instance_refs[instance][position]
        return (ref.instance, ref.name) if isinstance(ref, ExportRef) else None


def build_plan(
    component: ComponentDef, module: Callable[[CoreModule], wasmtime.Module]
) -> InstancePlan:
    """The plan of ``component``, its core modules compiled (or found) by ``module``.

    Raises:
      LinkError: an alias names an export that does not exist, a core module imports
        something its instantiation does not provide, a nested component lacks an
        import, or a core module index names no module.
    """
    modules: dict[int, wasmtime.Module] = {}
    data: dict[int, memoryview] = {}

    def compiled(d: CoreModule) -> wasmtime.Module:
        found = modules.get(d.offset)
        if found is None:
            found = modules[d.offset] = module(d)
            data[id(found)] = d.data
        return found

    plan = InstancePlan(component, modules)
    builder = _Builder(plan, compiled, data)
    builder.node(component, None)
    builder.finish()
    return plan


__all__ = [
    "EXTERN_SIZE",
    "CanonRef",
    "CoreRef",
    "CoreStep",
    "ExportRef",
    "ImportTypes",
    "ImportedFunc",
    "ImportedInstance",
    "InstancePlan",
    "LiftRef",
    "NestedStep",
    "NodePlan",
    "RealInstance",
    "StartStep",
    "build_plan",
    "has_start_section",
    "imports_of",
]
