"""What the reader makes of a component binary: definitions, index spaces, item types.

A :class:`ComponentDef` keeps every definition in the order the binary gives it (what
instantiation follows) and, for each :class:`Sort`, the index space the spec defines
(what indices in later definitions refer to). Core modules stay bytes of the input
(``memoryview`` slices, never copied); everything else is small and read in full.

Value and function types are the classes of :mod:`._types`; this module adds what the
binary format needs around them: instance, component and core types, the items imports
and exports carry, and one class per kind of definition.
"""

from __future__ import annotations

import enum
from dataclasses import field

from .._records import record
from ._types import FuncType, ResourceType, ValType


class Sort(enum.Enum):
    """The index spaces of a component (core ones first), by their text-format names."""

    CORE_FUNC = "core func"
    CORE_TABLE = "core table"
    CORE_MEMORY = "core memory"
    CORE_GLOBAL = "core global"
    CORE_TYPE = "core type"
    CORE_MODULE = "core module"
    CORE_INSTANCE = "core instance"
    FUNC = "func"
    VALUE = "value"
    TYPE = "type"
    COMPONENT = "component"
    INSTANCE = "instance"

    # members are singletons: hash them by identity (enum's own hash is Python code,
    # and the reader looks index spaces up by sort thousands of times per component)
    __hash__ = object.__hash__


# -- core types -------------------------------------------------------------------------


@record(frozen=True)
class CoreFuncType:
    """A core function type; value types by their text names (``i32``, ``funcref``…)."""

    params: tuple[str, ...]
    results: tuple[str, ...]


@record(frozen=True)
class CoreExtern:
    """What a core import or export declares: ``kind`` is ``func``, ``table``,
    ``memory``, ``global`` or ``tag``; ``type`` is the function type of a func or tag,
    otherwise a short description (``memory 1..``, ``global i32 mut``…)."""

    kind: str
    type: CoreFuncType | str


@record(frozen=True)
class CoreModuleType:
    """A core module type declared in a component: imports ``(module, name, extern)``
    and exports ``(name, extern)``."""

    imports: tuple[tuple[str, str, CoreExtern], ...]
    exports: tuple[tuple[str, CoreExtern], ...]


CoreType = CoreFuncType | CoreModuleType


# -- component-level types and items ----------------------------------------------------


@record(frozen=True)
class InstanceType:
    """A component instance's type: its exports by name, in order.

    ``fresh`` lists the resource types its ``(sub resource)`` exports declare: each
    import of the type gets new ones.
    """

    exports: tuple[tuple[str, Item], ...]
    fresh: tuple[ResourceType, ...] = ()

    def export(self, name: str) -> Item | None:
        """The item exported as ``name``, or ``None``."""
        for key, item in self.exports:
            if key == name:
                return item
        return None


@record(frozen=True)
class ComponentType:
    """A component's type: imports and exports by name, in order.

    ``fresh`` lists the resource types the component itself defines: each
    instantiation makes new ones (resource types are generative).
    """

    imports: tuple[tuple[str, Item], ...]
    exports: tuple[tuple[str, Item], ...]
    fresh: tuple[ResourceType, ...] = ()


DefType = ValType | FuncType | ResourceType | InstanceType | ComponentType
"""What an entry of a component's type index space is."""


@record(frozen=True)
class TypeItem:
    """An imported or exported type (``(type (eq i))`` or a fresh ``(sub resource)``)."""

    type: DefType


@record(frozen=True)
class ValueItem:
    """An imported or exported value (🪙 value definitions)."""

    type: ValType


@record(frozen=True)
class CoreModuleItem:
    """A core module as an item; ``type`` is ``None`` for a module the binary defines
    (its imports and exports are in its own bytes, which the reader does not parse)."""

    type: CoreModuleType | None


Item = FuncType | InstanceType | ComponentType | TypeItem | ValueItem | CoreModuleItem
"""What an import, an export or an alias gives: a function, instance, component, type,
value or core module, with its type."""


# -- canonical definitions --------------------------------------------------------------


class StringEncoding(enum.Enum):
    """The ``string-encoding`` canonical option."""

    UTF8 = "utf8"
    UTF16 = "utf16"
    LATIN1_UTF16 = "latin1+utf16"


@record(frozen=True)
class CanonOptions:
    """Canonical ABI options; indices are core funcs (``realloc``, ``post_return``,
    ``callback``) and a core memory."""

    string_encoding: StringEncoding = StringEncoding.UTF8
    memory: int | None = None
    realloc: int | None = None
    post_return: int | None = None
    is_async: bool = False
    callback: int | None = None


# -- definitions ------------------------------------------------------------------------
# Plain (not frozen) dataclasses: a componentize-py guest has thousands of definitions
# and a frozen dataclass takes four times as long to make. Treat them as read-only.


@record
class CoreModule:
    """A core module (section 1): ``data`` is a view into the input, not a copy."""

    offset: int
    data: memoryview


@record
class CoreInstantiate:
    """``(core instance (instantiate module (with name (instance i))…))``."""

    offset: int
    module: int
    args: tuple[tuple[str, int], ...]


@record
class CoreInlineInstance:
    """A core instance made of exports ``(name, sort, index)``."""

    offset: int
    exports: tuple[tuple[str, Sort, int], ...]


@record
class Instantiate:
    """``(instance (instantiate component (with name (sort i))…))``; ``type`` is the
    instance's type (the component's exports with the arguments' types put in).

    ``resources`` maps the component's resource types to the ones the instantiating
    component sees: each it imports to the argument's, each it defines to the fresh
    one in ``type``.
    """

    offset: int
    component: int
    args: tuple[tuple[str, Sort, int], ...]
    type: InstanceType
    resources: dict[ResourceType, ResourceType] = field(default_factory=dict)


@record
class InlineInstance:
    """An instance made of exports ``(name, sort, index)``."""

    offset: int
    exports: tuple[tuple[str, Sort, int], ...]
    type: InstanceType


@record
class AliasExport:
    """``(alias export instance name (sort))``, of a component or (``core``) a core instance."""

    offset: int
    sort: Sort
    instance: int
    name: str
    core: bool


@record
class AliasOuter:
    """``(alias outer count index (sort))``; ``target`` is the enclosing definition."""

    offset: int
    sort: Sort
    count: int
    index: int
    target: Definition | DefType | CoreType


@record
class TypeDef:
    """An entry of the type section (resolved)."""

    offset: int
    type: DefType


@record
class CoreTypeDef:
    """An entry of the core type section."""

    offset: int
    type: CoreType


@record
class ResourceDef:
    """A resource type this component defines: ``(resource (rep i32) (dtor f)?)``."""

    offset: int
    resource: ResourceType
    rep: str
    dtor: int | None


@record
class CanonLift:
    """``(canon lift (core func f) opts (type t))``: a component function."""

    offset: int
    core_func: int
    options: CanonOptions
    type_index: int
    type: FuncType


@record
class CanonLower:
    """``(canon lower (func f) opts)``: a core function calling component function ``f``."""

    offset: int
    func: int
    options: CanonOptions
    type: FuncType


@record
class CanonResource:
    """``(canon resource.new|drop|rep t)``; ``op`` is ``new``, ``drop`` or ``rep``."""

    offset: int
    op: str
    type_index: int
    resource: ResourceType


@record
class CanonBuiltin:
    """One of the component model's async (and threading) built-ins, by its canonical
    name (``task.return``, ``waitable-set.wait``, ``stream.read``…).

    ``type_index`` is the stream, future or core function type it is specialised on;
    ``flag`` is its ``async`` / ``cancellable`` immediate; ``result`` the
    ``task.return`` result type; ``immediates`` any other index or number it carries
    (a memory, a table, a context slot).
    """

    offset: int
    name: str
    type_index: int | None = None
    options: CanonOptions = field(default_factory=CanonOptions)
    flag: bool = False
    result: ValType | None = None
    immediates: tuple[int | str, ...] = ()


@record
class Import:
    """``(import name desc)``."""

    offset: int
    name: str
    sort: Sort
    item: Item


@record
class Export:
    """``(export name (sort index) desc?)``; ``item`` is the ascribed type if given,
    else the exported definition's own."""

    offset: int
    name: str
    sort: Sort
    index: int
    item: Item


@record
class Start:
    """``(start f (value arg)* (result (value))*)`` (🪙)."""

    offset: int
    func: int
    args: tuple[int, ...]
    results: int


@record
class Value:
    """A value definition (🪙): its type and encoded bytes (a view into the input)."""

    offset: int
    type: ValType
    data: memoryview


@record
class CustomSection:
    """A custom section: its name and payload (a view into the input)."""

    offset: int
    name: str
    data: memoryview


@record(eq=False, weakref_slot=True)
class ComponentDef:
    """A component as read: definitions in binary order, index spaces, imports, exports.

    ``spaces[sort][i]`` is the definition behind index ``i`` of ``sort`` (an import,
    an alias, an export, a canon definition…); nested components are
    :class:`ComponentDef` themselves, found in ``spaces[Sort.COMPONENT]``.
    """

    offset: int
    size: int
    definitions: list[Definition] = field(default_factory=list)
    spaces: dict[Sort, list[Definition]] = field(default_factory=dict)
    imports: dict[str, Item] = field(default_factory=dict)
    exports: dict[str, Item] = field(default_factory=dict)
    resources: list[ResourceDef] = field(default_factory=list)
    custom_sections: list[CustomSection] = field(default_factory=list)
    name: str | None = None
    engine_cache: dict[str, object] = field(default_factory=dict, repr=False)
    """What the engine works out once per component and keeps with it (the plan its
    instances replay): kept here, not in a table keyed on the component, so that it
    goes when the component goes, though it refers to it."""

    def space(self, sort: Sort) -> list[Definition]:
        """The index space of ``sort`` (empty if nothing defines one)."""
        return self.spaces.get(sort, [])

    @property
    def modules(self) -> list[CoreModule]:
        """The core modules this component itself contains, in order."""
        return [d for d in self.definitions if isinstance(d, CoreModule)]

    @property
    def components(self) -> list[ComponentDef]:
        """The components nested directly in this one, in order."""
        return [d for d in self.definitions if isinstance(d, ComponentDef)]

    def walk(self) -> list[ComponentDef]:
        """This component and every component nested in it, depth first."""
        out = [self]
        for nested in self.components:
            out.extend(nested.walk())
        return out

    @property
    def builtins(self) -> set[str]:
        """The names of the async and threading built-ins used here or in any nested
        component (empty for a plain WASI 0.2 component)."""
        return {d.name for c in self.walk() for d in c.definitions if isinstance(d, CanonBuiltin)}

    @property
    def uses_async(self) -> bool:
        """Whether it uses the component model's async (WASI 0.3): async built-ins, an
        ``async`` lift or lower, or an ``async func`` type in its imports or exports."""
        if self.builtins:
            return True
        for c in self.walk():
            for d in c.definitions:
                if isinstance(d, CanonLift | CanonLower) and (
                    d.options.is_async or d.type.is_async
                ):
                    return True
        return False

    def type(self) -> ComponentType:
        """This component's type (imports and exports), as seen from outside."""
        return ComponentType(
            tuple(self.imports.items()),
            tuple(self.exports.items()),
            tuple(r.resource for r in self.resources),
        )


Definition = (
    CoreModule
    | CoreInstantiate
    | CoreInlineInstance
    | Instantiate
    | InlineInstance
    | AliasExport
    | AliasOuter
    | TypeDef
    | CoreTypeDef
    | ResourceDef
    | CanonLift
    | CanonLower
    | CanonResource
    | CanonBuiltin
    | Import
    | Export
    | Start
    | Value
    | ComponentDef
)
"""Anything a component's sections define, one per index it adds."""
