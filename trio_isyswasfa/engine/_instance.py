"""Stage 2 of our own engine: a component's core instances on wasmtime's core API.

:class:`CoreInstances` walks a :class:`~._model.ComponentDef`'s definitions in binary
order and makes every core instance the component defines: core modules compiled
(and cached on disk, like :func:`trio_isyswasfa._engine.compile_component`), their
imports taken from earlier core instances, inline core instances and aliases of core
exports, as the index spaces say. Nested components are instantiated the same way,
recursively, with their arguments (functions, instances, core modules, components)
taken from the enclosing component's index spaces, so composed components and
componentize-py's shim components come out whole.

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
import os
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._extern import wrap_extern

from .. import _engine  # for now the stock seam owns the wasmtime engine and the cache folder
from .._errors import GuestTrap, LinkError, LoadError
from . import _fiber
from ._model import (
    AliasExport,
    AliasOuter,
    CanonBuiltin,
    CanonLift,
    CanonLower,
    CanonResource,
    ComponentDef,
    CoreInlineInstance,
    CoreInstantiate,
    CoreModule,
    CoreTypeDef,
    Definition,
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
from ._types import FuncType

CoreExtern = wasmtime.Func | wasmtime.Table | wasmtime.Memory | wasmtime.Global
"""A core export: what a core instance index space entry holds by name."""

Trampoline = Callable[
    [CanonLower | CanonResource | CanonBuiltin, wasmtime.FuncType, "ComponentFunc | None"],
    wasmtime.Func,
]
"""Makes the core function of a canon definition, of the core type a module imports it
as; the third argument is the component function a ``canon lower`` lowers."""

_MODULE_SETTINGS = "core-epoch"


def compile_module(data: bytes | memoryview, *, use_cache: bool = True) -> wasmtime.Module:
    """Compile a core module with the process-wide engine, reusing an on-disk compiled
    copy keyed on the bytes (the same cache folder as whole components)."""
    eng = _engine.engine()
    key = hashlib.sha256(data).hexdigest()
    version = getattr(wasmtime, "__version__", "unknown")
    cached = _engine.cache_dir() / f"{key}-wasmtime-{version}-{_MODULE_SETTINGS}.cwasm"
    if use_cache and cached.exists():
        try:
            return wasmtime.Module.deserialize_file(eng, str(cached))
        except wasmtime.WasmtimeError:
            cached.unlink(missing_ok=True)  # stale or corrupt: compile again
    try:
        module = wasmtime.Module(eng, bytes(data))
    except wasmtime.WasmtimeError as exc:
        raise LoadError(f"cannot compile core module: {_first_line(str(exc))}") from exc
    if use_cache:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(bytes(module.serialize()))
            tmp.replace(cached)
        except OSError:
            pass  # a read-only cache only costs time
    return module


def compile_modules(
    component: ComponentDef, *, use_cache: bool = True
) -> dict[int, wasmtime.Module]:
    """Every core module of ``component`` and its nested components, compiled, by the
    module's byte offset (unique in one binary): give it to :class:`CoreInstances` to
    instantiate many times without compiling or deserialising again."""
    return {
        m.offset: compile_module(m.data, use_cache=use_cache)
        for c in component.walk()
        for m in c.modules
    }


_IMPORTS: weakref.WeakKeyDictionary[wasmtime.Module, list[tuple[str, str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def _imports_of(module: wasmtime.Module) -> list[tuple[str, str, Any]]:
    """A module's imports as ``(module, name, type)``, worked out once per module
    (wasmtime-py rebuilds them through ctypes on every ``Module.imports``)."""
    found = _IMPORTS.get(module)
    if found is None:
        found = [(imp.module, imp.name or "", imp.type) for imp in module.imports]
        _IMPORTS[module] = found
    return found


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


@dataclass(frozen=True, slots=True)
class LiftedFunc:
    """A component function made by a ``canon lift`` in some component instance."""

    lift: CanonLift
    core: wasmtime.Func
    owner: CoreInstances


@dataclass(frozen=True, slots=True)
class ImportedFunc:
    """A function the outermost component imports: ``path`` is the import name and,
    for a function of an imported instance, the export name in it."""

    path: tuple[str, ...]
    type: FuncType


ComponentFunc = LiftedFunc | ImportedFunc


class _ImportedInstance(Mapping[str, Any]):
    """An instance the outermost component imports: each function in it is an
    :class:`ImportedFunc` (types and resources are the host's, and carry no value)."""

    __slots__ = ("_path", "_type")

    def __init__(self, path: tuple[str, ...], ty: InstanceType) -> None:
        self._path = path
        self._type = ty

    def __getitem__(self, name: str) -> Any:
        return _imported((*self._path, name), self._type.export(name), name)

    def __iter__(self) -> Iterator[str]:
        return iter([n for n, _ in self._type.exports])

    def __len__(self) -> int:
        return len(self._type.exports)


def _imported(path: tuple[str, ...], item: Item | None, name: str) -> Any:
    if item is None:
        raise KeyError(name)
    if isinstance(item, FuncType):
        return ImportedFunc(path, item)
    if isinstance(item, InstanceType):
        return _ImportedInstance(path, item)
    return item  # a type, a value, a component or core module type: nothing to run


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


class CoreInstances:
    """One instance of a component: every core instance it and its nested components
    define, made in a wasmtime store.

    Args:
      component: the component, as read.
      store: the store to instantiate in (its epoch deadline is the caller's business).
      trampoline: makes the core functions of canon definitions when a module imports
        one; ``None`` refuses any such import.
      use_cache: whether compiled modules are cached on disk.
      compiled: the component's modules compiled by :func:`compile_modules` (else each
        instantiation compiles them, or loads them from the disk cache).
      args: for a nested component, its instantiation arguments by import name (the
        outermost component's imports become :class:`ImportedFunc` and the like).

    Raises:
      LoadError: a core module does not compile.
      LinkError: a module imports something its instantiation arguments lack, or of the
        wrong kind, or a canon-defined function without a ``trampoline``.
      GuestTrap: a module's start function trapped.
    """

    def __init__(
        self,
        component: ComponentDef,
        store: wasmtime.Store,
        *,
        trampoline: Trampoline | None = None,
        use_cache: bool = True,
        compiled: Mapping[int, wasmtime.Module] | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> None:
        self.component = component
        self.store = store
        self._trampoline = trampoline
        self._use_cache = use_cache
        self._compiled = compiled or {}
        self._args = args
        self.modules: list[wasmtime.Module | None] = []
        self.instances: list[Mapping[str, Any]] = []
        self.funcs: list[wasmtime.Func | _Pending | None] = []
        self.memories: list[wasmtime.Memory | None] = []
        self.tables: list[wasmtime.Table | None] = []
        self.globals: list[wasmtime.Global | None] = []
        # the component-level index spaces that carry something at run time
        self.component_funcs: list[ComponentFunc] = []
        self.component_instances: list[Mapping[str, Any]] = []
        self.components: list[ComponentDef] = []
        self.exports: dict[str, Any] = {}
        self.nested: list[CoreInstances] = []
        self._spaces: dict[Sort, list[Any]] = {
            Sort.CORE_MODULE: self.modules,
            Sort.CORE_INSTANCE: self.instances,
            Sort.CORE_FUNC: self.funcs,
            Sort.CORE_MEMORY: self.memories,
            Sort.CORE_TABLE: self.tables,
            Sort.CORE_GLOBAL: self.globals,
            Sort.FUNC: self.component_funcs,
            Sort.INSTANCE: self.component_instances,
            Sort.COMPONENT: self.components,
            Sort.TYPE: [],
            Sort.VALUE: [],
            Sort.CORE_TYPE: [],
        }
        for definition in component.definitions:
            self._define(definition)

    # -- the walk -------------------------------------------------------------------------

    def _define(self, d: Definition) -> None:
        spaces = self._spaces
        if isinstance(d, CoreModule):
            self.modules.append(self._module(d))
        elif isinstance(d, CoreInstantiate):
            self.instances.append(self._instantiate(d))
        elif isinstance(d, CoreInlineInstance):
            self.instances.append({name: spaces[sort][idx] for name, sort, idx in d.exports})
        elif isinstance(d, AliasExport):
            source = (self.instances if d.core else self.component_instances)[d.instance]
            if d.name not in source:
                raise LinkError(f"instance {d.instance} has no export {d.name!r}")
            spaces[d.sort].append(source[d.name])
        elif isinstance(d, CanonLower):
            self.funcs.append(_Pending(d, self.component_funcs[d.func]))
        elif isinstance(d, CanonResource | CanonBuiltin):
            self.funcs.append(_Pending(d, None))
        elif isinstance(d, CanonLift):
            core = self.funcs[d.core_func]
            if not isinstance(core, wasmtime.Func):
                raise LinkError(f"the lift at byte offset {d.offset:#x} lifts no core export")
            self.component_funcs.append(LiftedFunc(d, core, self))
        elif isinstance(d, Import):
            spaces[d.sort].append(self._import(d))
        elif isinstance(d, Export):
            value = spaces[d.sort][d.index]
            self.exports[d.name] = value
            spaces[d.sort].append(value)
        elif isinstance(d, Instantiate):
            self.component_instances.append(self._instantiate_component(d))
        elif isinstance(d, InlineInstance):
            self.component_instances.append(
                {name: spaces[sort][idx] for name, sort, idx in d.exports}
            )
        elif isinstance(d, ComponentDef):
            self.components.append(d)
        elif isinstance(d, AliasOuter):
            spaces[d.sort].append(self._outer(d))
        elif isinstance(d, TypeDef | ResourceDef):
            spaces[Sort.TYPE].append(d)
        elif isinstance(d, CoreTypeDef):
            spaces[Sort.CORE_TYPE].append(d)
        elif isinstance(d, Value):
            spaces[Sort.VALUE].append(d)
        elif isinstance(d, Start):
            raise LinkError("component start functions (🪙) are not supported")

    def _import(self, d: Import) -> Any:
        if self._args is None:
            return _imported((d.name,), d.item, d.name)
        if d.name not in self._args:
            raise LinkError(f"nested component instantiated without its import {d.name!r}")
        return self._args[d.name]

    def _outer(self, d: AliasOuter) -> Any:
        target = d.target
        if isinstance(target, CoreModule):
            return self._module(target)
        return target  # a component definition or a type

    def _module(self, d: CoreModule) -> wasmtime.Module:
        module = self._compiled.get(d.offset)
        if module is None:
            module = compile_module(d.data, use_cache=self._use_cache)
        return module

    def _instantiate_component(self, d: Instantiate) -> Mapping[str, Any]:
        spaces = self._spaces
        args = {name: spaces[sort][idx] for name, sort, idx in d.args}
        nested = self._nested(self.components[d.component], args)
        self.nested.append(nested)
        return nested.exports

    def _nested(self, component: ComponentDef, args: Mapping[str, Any]) -> CoreInstances:
        """An instance of a nested component (a subclass makes its own kind)."""
        return CoreInstances(
            component,
            self.store,
            trampoline=self._trampoline,
            use_cache=self._use_cache,
            compiled=self._compiled,
            args=args,
        )

    def _instantiate(self, d: CoreInstantiate) -> Mapping[str, Any]:
        module = self.modules[d.module]
        if module is None:
            raise LinkError(f"core module {d.module} is not defined by this component")
        args = {name: self.instances[idx] for name, idx in d.args}
        imports: list[Any] = []
        for module_name, name, ty in _imports_of(module):
            given = args.get(module_name)
            value = None if given is None else given.get(name)
            if value is None:
                raise LinkError(
                    f"core module {d.module} imports {module_name}.{name}, which its "
                    f"instantiation (at byte offset {d.offset:#x}) does not provide"
                )
            if isinstance(value, _Pending):
                value = value.made or self._make(value, ty, f"{module_name}.{name}")
            imports.append(value)
        try:
            # the async path: the one a store whose guests run on fibers admits
            instance = _fiber.instantiate(self.store, module, imports)
        except GuestTrap as exc:
            raise GuestTrap(f"core module {d.module} trapped starting: {exc}") from exc.__cause__
        except LinkError as exc:
            raise LinkError(f"cannot instantiate core module {d.module}: {exc}") from exc
        return _Exports(self.store, instance, module)

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
        if memory is None:
            raise LinkError(f"core memory {index} has no value")
        return memory

    def walk(self) -> list[CoreInstances]:
        """This instance and every nested component instance, depth first."""
        out = [self]
        for nested in self.nested:
            out.extend(nested.walk())
        return out
