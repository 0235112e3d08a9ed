"""Stage 2 of our own engine: a component's core instances on wasmtime's core API.

:class:`CoreInstances` walks a :class:`~._model.ComponentDef`'s definitions in binary
order and makes every core instance the component defines: core modules compiled
(and cached on disk, like :func:`trio_isyswasfa._engine.compile_component`), their
imports taken from earlier core instances, inline core instances and aliases of core
exports, as the index spaces say. What only the canonical ABI can make (the core
functions of ``canon lower``, ``resource.*`` and the async built-ins) comes from a
``trampoline`` callback, given the definition and the core function type the importing
module expects; without one, instantiating a module that needs such a function is a
:class:`~trio_isyswasfa.LinkError`.

:meth:`CoreInstances.lifted` finds the ``canon lift`` behind a component export and the
core function it lifts: lifting and lowering its values is the canonical ABI's work.
Nested component instances (``instantiate`` of a component) are not made yet.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._extern import wrap_extern

from .. import _engine  # for now the stock seam owns the wasmtime engine and the cache folder
from .._errors import GuestTrap, LinkError, LoadError
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
    Definition,
    Export,
    Sort,
)

CoreExtern = wasmtime.Func | wasmtime.Table | wasmtime.Memory | wasmtime.Global
"""A core export: what a core instance index space entry holds by name."""

Trampoline = Callable[[CanonLower | CanonResource | CanonBuiltin, wasmtime.FuncType], wasmtime.Func]
"""Makes the core function of a canon definition, of the core type a module imports it as."""

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


class _Pending:
    """A canon-defined core function not made yet: it is made when a module imports it,
    once the type the module expects is known."""

    __slots__ = ("definition", "made")

    def __init__(self, definition: CanonLower | CanonResource | CanonBuiltin) -> None:
        self.definition = definition
        self.made: wasmtime.Func | None = None


class CoreInstances:
    """Every core instance of one component, made in a wasmtime store.

    Args:
      component: the component, as read.
      store: the store to instantiate in (its epoch deadline is the caller's business).
      trampoline: makes the core functions of canon definitions when a module imports
        one; ``None`` refuses any such import.
      use_cache: whether compiled modules are cached on disk.

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
    ) -> None:
        self.component = component
        self.store = store
        self._trampoline = trampoline
        self._use_cache = use_cache
        self.modules: list[wasmtime.Module | None] = []
        self.instances: list[Mapping[str, Any]] = []
        self.funcs: list[wasmtime.Func | _Pending | None] = []
        self.memories: list[wasmtime.Memory | None] = []
        self.tables: list[wasmtime.Table | None] = []
        self.globals: list[wasmtime.Global | None] = []
        self._spaces: dict[Sort, list[Any]] = {
            Sort.CORE_MODULE: self.modules,
            Sort.CORE_INSTANCE: self.instances,
            Sort.CORE_FUNC: self.funcs,
            Sort.CORE_MEMORY: self.memories,
            Sort.CORE_TABLE: self.tables,
            Sort.CORE_GLOBAL: self.globals,
        }
        for definition in component.definitions:
            self._define(definition)

    # -- the walk -------------------------------------------------------------------------

    def _define(self, d: Definition) -> None:
        if isinstance(d, CoreModule):
            self.modules.append(compile_module(d.data, use_cache=self._use_cache))
        elif isinstance(d, CoreInstantiate):
            self.instances.append(self._instantiate(d))
        elif isinstance(d, CoreInlineInstance):
            self.instances.append({name: self._spaces[sort][idx] for name, sort, idx in d.exports})
        elif isinstance(d, AliasExport) and d.core:
            exports = self.instances[d.instance]
            if d.name not in exports:
                raise LinkError(f"core instance {d.instance} has no export {d.name!r}")
            self._spaces[d.sort].append(exports[d.name])
        elif isinstance(d, CanonLower | CanonResource | CanonBuiltin):
            self.funcs.append(_Pending(d))
        elif isinstance(d, AliasOuter | AliasExport) and d.sort in self._spaces:
            # an outer alias of a core module, or a core export of a component instance:
            # the space gets a placeholder so later indices stay right
            self._spaces[d.sort].append(None)

    def _instantiate(self, d: CoreInstantiate) -> Mapping[str, Any]:
        module = self.modules[d.module]
        if module is None:
            raise LinkError(f"core module {d.module} is not defined by this component")
        args = {name: self.instances[idx] for name, idx in d.args}
        imports: list[Any] = []
        for imp in module.imports:
            given = args.get(imp.module)
            name = imp.name or ""
            if given is None or name not in given:
                raise LinkError(
                    f"core module {d.module} imports {imp.module}.{name}, which its "
                    f"instantiation (at byte offset {d.offset:#x}) does not provide"
                )
            value = given[name]
            if isinstance(value, _Pending):
                value = value.made or self._make(value, imp.type, f"{imp.module}.{name}")
            if value is None:
                raise LinkError(f"{imp.module}.{name} comes from a nested component instance")
            imports.append(value)
        try:
            instance = wasmtime.Instance(self.store, module, imports)
        except wasmtime.Trap as exc:
            raise GuestTrap(f"core module {d.module} trapped starting: {exc.message}") from exc
        except wasmtime.WasmtimeError as exc:
            raise LinkError(
                f"cannot instantiate core module {d.module}: {_first_line(str(exc))}"
            ) from exc
        return _Exports(self.store, instance, module)

    def _make(self, pending: _Pending, ty: Any, where: str) -> wasmtime.Func:
        if not isinstance(ty, wasmtime.FuncType):
            raise LinkError(f"{where} is a canon-defined function imported as a non-function")
        if self._trampoline is None:
            d = pending.definition
            what = d.name if isinstance(d, CanonBuiltin) else type(d).__name__
            raise LinkError(f"{where} needs {what}, and no trampoline was given")
        func = self._trampoline(pending.definition, ty)
        pending.made = func  # the same canon function imported twice is one function
        return func

    # -- what the canonical ABI needs next ------------------------------------------------

    def lifted(self, name: str) -> tuple[CanonLift, wasmtime.Func]:
        """The ``canon lift`` behind the component's export ``name`` (a function) and
        the core function it lifts.

        Raises:
          LinkError: there is no such exported function, or it is not a lift of this
            component's own core function (nested instances are not made yet).
        """
        export = next(
            (
                d
                for d in self.component.space(Sort.FUNC)
                if isinstance(d, Export) and d.name == name
            ),
            None,
        )
        if export is None:
            raise LinkError(f"the component exports no function {name!r}")
        d: Definition = export
        funcs = self.component.space(Sort.FUNC)
        while isinstance(d, Export):
            d = funcs[d.index]
        if not isinstance(d, CanonLift):
            raise LinkError(f"export {name!r} is not a canon lift of this component's own")
        core = self.funcs[d.core_func]
        if not isinstance(core, wasmtime.Func):
            raise LinkError(f"export {name!r} lifts a function that is no core export")
        return d, core

    def memory(self, index: int) -> wasmtime.Memory:
        """Core memory ``index`` (a canonical option's ``memory``)."""
        memory = self.memories[index]
        if memory is None:
            raise LinkError(f"core memory {index} comes from a nested component instance")
        return memory
