"""The component binary reader: bytes in, a :class:`~._model.ComponentDef` out.

Follows the component model's binary format (``design/mvp/Binary.md``, version 0x0d):
every section, nested components recursively, the index spaces as the spec builds
them, and types resolved to the classes of :mod:`._types` as they are defined. Core
modules are not parsed (wasmtime compiles them): the reader checks their preamble and
keeps a view of their bytes, so an 18 MB componentize-py guest reads in milliseconds.
:func:`read_core_shape` reads what instantiating one needs (its import, export and
start sections, skipping the rest by their sizes) when the plan is made: the same
names through wasmtime's C API cost a few ctypes calls each.

Bad input of any kind raises :class:`~trio_isyswasfa.LoadError` naming the byte offset
(``LoadError.offset`` holds it too). Nothing is allocated from a count the input gives
before the count is checked against the bytes left, and type sizes and nesting depths
are bounded, so a hostile binary can neither exhaust memory nor the Python stack.

It is not a validator: it checks what it needs to build a consistent model (indices in
range, items of the right kind, types that are what their use requires), and leaves
the rest (core module validity, subtyping of imports) to wasmtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

from .._errors import LoadError
from ._model import (
    AliasExport,
    AliasOuter,
    CanonBuiltin,
    CanonLift,
    CanonLower,
    CanonOptions,
    CanonResource,
    ComponentDef,
    ComponentType,
    CoreExtern,
    CoreFuncType,
    CoreInlineInstance,
    CoreInstantiate,
    CoreModule,
    CoreModuleItem,
    CoreModuleType,
    CoreType,
    CoreTypeDef,
    CustomSection,
    Definition,
    DefType,
    Export,
    Import,
    InlineInstance,
    InstanceType,
    Instantiate,
    Item,
    ResourceDef,
    Sort,
    Start,
    StringEncoding,
    TypeDef,
    TypeItem,
    Value,
    ValueItem,
)
from ._types import (
    BorrowType,
    EnumType,
    FlagsType,
    FuncType,
    FutureType,
    ListType,
    OptionType,
    OwnType,
    Primitive,
    PrimType,
    RecordType,
    ResourceType,
    ResultType,
    StreamType,
    TupleType,
    ValType,
    VariantType,
)

COMPONENT_VERSION = 0x0D
"""The (pre-standard) component binary version this reader understands."""

MAX_NESTING = 32
"""Deepest nesting of components and component/instance type declarations."""

MAX_TYPE_DEPTH = 100
"""Deepest value type (``list<list<…>>``): lifting code recurses on it."""

MAX_TYPE_SIZE = 100_000
"""Largest value type, counting every node of its tree (a DAG of shared types is
counted as the tree it unfolds to, which is what walking it costs)."""

_NOT_VALUE_TYPES = (FuncType, InstanceType, ComponentType, ResourceType)
_MAGIC = b"\x00asm"
_CORE_PREAMBLE = b"\x00asm\x01\x00\x00\x00"

_PRIMITIVES = {
    0x7F: Primitive.BOOL,
    0x7E: Primitive.S8,
    0x7D: Primitive.U8,
    0x7C: Primitive.S16,
    0x7B: Primitive.U16,
    0x7A: Primitive.S32,
    0x79: Primitive.U32,
    0x78: Primitive.S64,
    0x77: Primitive.U64,
    0x76: Primitive.F32,
    0x75: Primitive.F64,
    0x74: Primitive.CHAR,
    0x73: Primitive.STRING,
    0x64: Primitive.ERROR_CONTEXT,
}
_PRIM_TYPES = {code: PrimType(kind) for code, kind in _PRIMITIVES.items()}

_CORE_SORTS = {
    0x00: Sort.CORE_FUNC,
    0x01: Sort.CORE_TABLE,
    0x02: Sort.CORE_MEMORY,
    0x03: Sort.CORE_GLOBAL,
    0x10: Sort.CORE_TYPE,
    0x11: Sort.CORE_MODULE,
    0x12: Sort.CORE_INSTANCE,
}
_CORE_SORT_SET = frozenset(_CORE_SORTS.values())
_SORTS = {
    0x01: Sort.FUNC,
    0x02: Sort.VALUE,
    0x03: Sort.TYPE,
    0x04: Sort.COMPONENT,
    0x05: Sort.INSTANCE,
}

_CORE_VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128"}
_CORE_REFTYPES = {
    0x70: "funcref",
    0x6F: "externref",
    0x6E: "anyref",
    0x6D: "eqref",
    0x6C: "i31ref",
    0x6B: "structref",
    0x6A: "arrayref",
    0x71: "nullref",
    0x72: "nullexternref",
    0x73: "nullfuncref",
    0x74: "exnref",
    0x69: "nullexnref",
}

# The async (🔀) and threading (🧵) built-ins: opcode -> (name, immediates). Shapes:
# "" nothing; "t" a type index; "t+o" a type index and options; "t+f" a type index and
# an async flag; "o" options; "f" a flag; "f+m" a flag and a core memory; "r+o" a
# result type and options; "ctx" a core value type and a slot; "ct" a core type and
# "ct+tab" a core table too. Names and encodings as wasm-tools 1.262 writes them.
_BUILTINS: dict[int, tuple[str, str]] = {
    0x05: ("task.cancel", ""),
    0x06: ("subtask.cancel", "f"),
    0x08: ("backpressure.set", ""),
    0x09: ("task.return", "r+o"),
    0x0A: ("context.get", "ctx"),
    0x0B: ("context.set", "ctx"),
    0x0C: ("thread.yield", "f"),
    0x0D: ("subtask.drop", ""),
    0x0E: ("stream.new", "t"),
    0x0F: ("stream.read", "t+o"),
    0x10: ("stream.write", "t+o"),
    0x11: ("stream.cancel-read", "t+f"),
    0x12: ("stream.cancel-write", "t+f"),
    0x13: ("stream.drop-readable", "t"),
    0x14: ("stream.drop-writable", "t"),
    0x15: ("future.new", "t"),
    0x16: ("future.read", "t+o"),
    0x17: ("future.write", "t+o"),
    0x18: ("future.cancel-read", "t+f"),
    0x19: ("future.cancel-write", "t+f"),
    0x1A: ("future.drop-readable", "t"),
    0x1B: ("future.drop-writable", "t"),
    0x1C: ("error-context.new", "o"),
    0x1D: ("error-context.debug-message", "o"),
    0x1E: ("error-context.drop", ""),
    0x1F: ("waitable-set.new", ""),
    0x20: ("waitable-set.wait", "f+m"),
    0x21: ("waitable-set.poll", "f+m"),
    0x22: ("waitable-set.drop", ""),
    0x23: ("waitable.join", ""),
    0x24: ("backpressure.inc", ""),
    0x25: ("backpressure.dec", ""),
    0x26: ("thread.index", ""),
    0x27: ("thread.new-indirect", "ct+tab"),
    0x28: ("thread.resume-later", ""),
    0x29: ("thread.suspend", "f"),
    0x2A: ("thread.suspend-then-resume", "f"),
    0x2B: ("thread.yield-then-resume", "f"),
    0x2C: ("thread.suspend-then-promote", "f"),
    0x2D: ("thread.yield-then-promote", "f"),
    0x2E: ("stream.forward", "t"),
    0x2F: ("future.forward", "t"),
    0x40: ("thread.spawn-ref", "ct"),
    0x41: ("thread.spawn-indirect", "ct+tab"),
    0x42: ("thread.available_parallelism", ""),
}

_SECTION_NAMES = {
    0: "custom",
    1: "core module",
    2: "core instance",
    3: "core type",
    4: "component",
    5: "instance",
    6: "alias",
    7: "type",
    8: "canon",
    9: "start",
    10: "import",
    11: "export",
    12: "value",
}


def read_component(data: bytes | bytearray | memoryview) -> ComponentDef:
    """Read a component binary.

    The result keeps views into ``data`` for the core modules and custom sections;
    keep ``data`` unchanged while it is in use.

    Raises:
      LoadError: ``data`` is not a well-formed component (the message and
        ``LoadError.offset`` say where).
    """
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    # small reads (names, bytes) go through ``bytes`` when we have it: slicing it copies
    # only the slice, and decoding a bytes slice is cheaper than a memoryview's
    buf = data if isinstance(data, bytes) else view
    return _Reader(view, buf).component(0, len(view), None, 0)


def _fail(message: str, offset: int) -> NoReturn:
    err = LoadError(f"malformed component: {message} (at byte offset {offset:#x})")
    err.offset = offset
    raise err


class _Scope:
    """The index spaces visible at one level: a component's, or a component or instance
    type declaration's (which starts empty and sees its parents through outer aliases).

    ``typed[sort]`` holds, for each index, what the reader knows of its type (a
    ``FuncType`` for a func, an ``InstanceType`` for an instance, the type itself for a
    type…); core funcs, tables, memories, globals and instances are only counted.
    """

    __slots__ = ("component", "counts", "parent", "typed")

    def __init__(self, parent: _Scope | None, component: ComponentDef | None) -> None:
        self.parent = parent
        self.component = component
        self.typed: dict[Sort, list[Any]] = {
            Sort.FUNC: [],
            Sort.VALUE: [],
            Sort.TYPE: [],
            Sort.COMPONENT: [],
            Sort.INSTANCE: [],
            Sort.CORE_TYPE: [],
            Sort.CORE_MODULE: [],
        }
        self.counts = dict.fromkeys(Sort, 0)

    def define(self, sort: Sort, definition: Definition | None, typed: Any = None) -> None:
        entries = self.typed.get(sort)
        if entries is not None:
            entries.append(typed)
        self.counts[sort] += 1
        if self.component is not None and definition is not None:
            self.component.spaces.setdefault(sort, []).append(definition)


def _item_sort(item: Item) -> Sort:
    if isinstance(item, FuncType):
        return Sort.FUNC
    if isinstance(item, InstanceType):
        return Sort.INSTANCE
    if isinstance(item, ComponentType):
        return Sort.COMPONENT
    if isinstance(item, TypeItem):
        return Sort.TYPE
    if isinstance(item, ValueItem):
        return Sort.VALUE
    return Sort.CORE_MODULE


def _typed_entry(item: Item) -> Any:
    """What the ``typed`` list of an item's sort holds for it."""
    if isinstance(item, TypeItem | ValueItem):
        return item.type
    return item


class _Reader:
    __slots__ = ("buf", "data", "end", "export_maps", "pos", "sizes")

    def __init__(self, data: memoryview, buf: bytes | memoryview) -> None:
        self.data = data
        self.buf = buf
        self.pos = 0
        self.end = len(data)
        # id(value type) -> (tree size, depth), for the types this reader built
        self.sizes: dict[int, tuple[int, int]] = {}
        self.export_maps: dict[int, tuple[InstanceType, dict[str, Item]]] = {}

    # -- primitives ---------------------------------------------------------------------

    def byte(self) -> int:
        pos = self.pos
        if pos >= self.end:
            _fail("unexpected end of data", pos)
        self.pos = pos + 1
        return self.data[pos]

    def u32(self) -> int:
        data, pos, end = self.data, self.pos, self.end
        if pos >= end:
            _fail("unexpected end of data", pos)
        b = data[pos]
        if b < 0x80:
            self.pos = pos + 1
            return b
        start = pos
        result = b & 0x7F
        shift = 7
        while True:
            pos += 1
            if pos >= end:
                _fail("unexpected end of data in an integer", pos)
            b = data[pos]
            if shift == 28 and b > 0x0F:
                _fail("integer too large for u32 (LEB128 overflow)", start)
            result |= (b & 0x7F) << shift
            if b < 0x80:
                self.pos = pos + 1
                return result
            shift += 7

    def s33(self) -> int:
        data, pos, end = self.data, self.pos, self.end
        start = pos
        result = 0
        shift = 0
        while True:
            if pos >= end:
                _fail("unexpected end of data in an integer", pos)
            b = data[pos]
            pos += 1
            # the fifth byte: 5 bits of payload, the rest must sign-extend them
            if shift == 28 and (b & 0x80 or (b & 0x70) not in (0x00, 0x70)):
                _fail("integer too large for s33 (LEB128 overflow)", start)
            result |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        self.pos = pos
        if b & 0x40:
            result -= 1 << shift
        return result

    def count(self, what: str, min_item_size: int = 1) -> int:
        """A vector length, checked against the bytes left (each item takes at least
        ``min_item_size`` bytes), so nothing is sized from a count the data cannot hold."""
        at = self.pos
        n = self.u32()
        if n * min_item_size > self.end - self.pos:
            _fail(f"{what} count {n} exceeds the bytes left", at)
        return n

    def take(self, n: int) -> memoryview:
        pos = self.pos
        if n > self.end - pos:
            _fail(f"{n} bytes run past the end", pos)
        self.pos = pos + n
        return self.data[pos : pos + n]

    def name(self) -> str:
        at = self.pos
        if at < self.end and self.data[at] < 0x80:  # the common one-byte length, inline
            n = self.data[at]
            self.pos = at + 1
        else:
            n = self.u32()
        pos = self.pos
        if n > self.end - pos:
            _fail(f"name of {n} bytes runs past the end", at)
        self.pos = pos + n
        try:
            return str(self.buf[pos : pos + n], "utf-8")
        except UnicodeDecodeError:
            _fail("name is not valid UTF-8", at)

    def flag(self, what: str) -> bool:
        at = self.pos
        b = self.byte()
        if b > 1:
            _fail(f"bad {what} flag {b:#04x}", at)
        return b == 1

    def extern_name(self) -> str:
        """``importname'`` / ``exportname'``: a tag, the name, and (tag 2) name options."""
        at = self.pos
        tag = self.byte()
        if tag in (0x00, 0x01):
            return self.name()
        if tag == 0x02:
            name = self.name()
            for _ in range(self.count("name option", 2)):
                kind = self.byte()
                if kind not in (0x00, 0x01):
                    _fail(f"unknown name option {kind:#04x}", self.pos - 1)
                self.name()
            return name
        _fail(f"unknown import/export name tag {tag:#04x}", at)

    # -- components ---------------------------------------------------------------------

    def component(self, start: int, end: int, parent: _Scope | None, depth: int) -> ComponentDef:
        if depth > MAX_NESTING:
            _fail(f"components nested more than {MAX_NESTING} deep", start)
        data = self.data
        if end - start < 8 or bytes(data[start : start + 4]) != _MAGIC:
            _fail("not a WebAssembly binary (bad magic number)", start)
        version = data[start + 4] | data[start + 5] << 8
        layer = data[start + 6] | data[start + 7] << 8
        if layer == 0:
            _fail("a core WebAssembly module, not a component", start + 4)
        if layer != 1:
            _fail(f"unknown layer {layer}", start + 6)
        if version != COMPONENT_VERSION:
            _fail(f"unsupported component binary version {version:#x}", start + 4)
        comp = ComponentDef(offset=start, size=end - start)
        scope = _Scope(parent, comp)
        self.pos = start + 8
        self.end = end
        while self.pos < end:
            section_at = self.pos
            sid = self.byte()
            size = self.u32()
            body = self.pos
            if size > end - body:
                _fail(f"{_SECTION_NAMES.get(sid, 'unknown')} section runs past the end", section_at)
            self.end = body + size
            self.section(sid, section_at, body, scope, depth)
            if self.pos != self.end:
                _fail(
                    f"{_SECTION_NAMES[sid]} section has {self.end - self.pos} bytes left over",
                    self.pos,
                )
            self.end = end
        return comp

    def section(self, sid: int, at: int, body: int, scope: _Scope, depth: int) -> None:
        comp = scope.component
        assert comp is not None
        if sid == 0:
            self.custom(body, comp)
        elif sid == 1:
            if bytes(self.data[body : body + 8]) != _CORE_PREAMBLE:
                _fail("core module section does not hold a core module", body)
            module = CoreModule(body, self.data[body : self.end])
            comp.definitions.append(module)
            scope.define(Sort.CORE_MODULE, module, CoreModuleItem(None))
            self.pos = self.end
        elif sid == 2:
            for _ in range(self.count("core instance")):
                self.core_instance(scope)
        elif sid == 3:
            for _ in range(self.count("core type")):
                off = self.pos
                core_ty = self.core_type(scope, depth)
                self.add(scope, Sort.CORE_TYPE, CoreTypeDef(off, core_ty), core_ty)
        elif sid == 4:
            end = self.end
            nested = self.component(body, end, scope, depth + 1)
            self.pos, self.end = end, end
            self.add(scope, Sort.COMPONENT, nested, nested.type())
        elif sid == 5:
            for _ in range(self.count("instance")):
                self.instance(scope)
        elif sid == 6:
            for _ in range(self.count("alias")):
                self.alias(scope)
        elif sid == 7:
            for _ in range(self.count("type")):
                off = self.pos
                ty = self.deftype(scope, depth, None)
                if isinstance(ty, ResourceType):
                    res = comp.resources[-1]
                    self.add(scope, Sort.TYPE, res, ty)
                else:
                    self.add(scope, Sort.TYPE, TypeDef(off, ty), ty)
        elif sid == 8:
            for _ in range(self.count("canon")):
                self.canon(scope)
        elif sid == 9:
            self.start(scope)
        elif sid == 10:
            for _ in range(self.count("import")):
                self.import_(scope)
        elif sid == 11:
            for _ in range(self.count("export")):
                self.export(scope)
        elif sid == 12:
            for _ in range(self.count("value")):
                off = self.pos
                val_ty = self.valtype(scope)
                n = self.u32()
                self.add(scope, Sort.VALUE, Value(off, val_ty, self.take(n)), val_ty)
        else:
            _fail(f"unknown section id {sid}", at)

    @staticmethod
    def add(scope: _Scope, sort: Sort, definition: Definition, typed: Any) -> None:
        """Define the next index of ``sort``; in a component, keep the definition too."""
        if scope.component is not None:
            scope.component.definitions.append(definition)
        scope.define(sort, definition, typed)

    def custom(self, body: int, comp: ComponentDef) -> None:
        name = self.name()
        data = self.data[self.pos : self.end]
        comp.custom_sections.append(CustomSection(body, name, data))
        if name == "component-name":
            # names are a debugging aid: a bad name section is ignored, as the spec says
            try:
                while self.pos < self.end:
                    kind = self.byte()
                    size = self.u32()
                    sub_end = self.pos + size
                    if kind == 0 and sub_end <= self.end:
                        comp.name = self.name()
                    self.pos = sub_end
            except LoadError:
                pass
        self.pos = self.end

    # -- index helpers ------------------------------------------------------------------

    def index(self, scope: _Scope, sort: Sort) -> int:
        at = self.pos
        if at < self.end and self.data[at] < 0x80:  # the common one-byte case, inline
            idx = self.data[at]
            self.pos = at + 1
        else:
            idx = self.u32()
        if idx >= scope.counts[sort]:
            _fail(f"{sort.value} index {idx} out of range ({scope.counts[sort]} defined)", at)
        return idx

    def typed(self, scope: _Scope, sort: Sort, cls: Any, what: str) -> tuple[int, Any]:
        at = self.pos
        idx = self.index(scope, sort)
        entry = scope.typed[sort][idx]
        if not isinstance(entry, cls):
            _fail(f"{sort.value} {idx} is not {what}", at)
        return idx, entry

    def sort(self) -> Sort:
        at = self.pos
        b = self.byte()
        if b == 0x00:
            c = self.byte()
            core = _CORE_SORTS.get(c)
            if core is None:
                _fail(f"unknown core sort {c:#04x}", at + 1)
            return core
        sort = _SORTS.get(b)
        if sort is None:
            _fail(f"unknown sort {b:#04x}", at)
        return sort

    def item_of(self, scope: _Scope, sort: Sort, idx: int, at: int) -> Item:
        entry: Any = scope.typed[sort][idx] if sort in scope.typed else None
        if sort == Sort.TYPE:
            return TypeItem(entry)
        if sort == Sort.VALUE:
            return ValueItem(entry)
        if sort in (Sort.FUNC, Sort.INSTANCE, Sort.COMPONENT, Sort.CORE_MODULE):
            assert entry is not None
            return entry  # type: ignore[no-any-return]
        _fail(f"a {sort.value} cannot be exported from a component or instance", at)

    # -- core instances and types -------------------------------------------------------

    def core_instance(self, scope: _Scope) -> None:
        off = self.pos
        tag = self.byte()
        if tag == 0x00:
            module = self.index(scope, Sort.CORE_MODULE)
            args = []
            for _ in range(self.count("instantiation argument", 3)):
                name = self.name()
                at = self.pos
                if self.byte() != 0x12:
                    _fail("core instantiation argument is not an instance", at)
                args.append((name, self.index(scope, Sort.CORE_INSTANCE)))
            self.add(scope, Sort.CORE_INSTANCE, CoreInstantiate(off, module, tuple(args)), None)
        elif tag == 0x01:
            exports = []
            for _ in range(self.count("core export", 3)):
                name = self.name()
                at = self.pos
                c = self.byte()
                sort = _CORE_SORTS.get(c)
                if sort is None:
                    _fail(f"unknown core sort {c:#04x}", at)
                exports.append((name, sort, self.index(scope, sort)))
            self.add(scope, Sort.CORE_INSTANCE, CoreInlineInstance(off, tuple(exports)), None)
        else:
            _fail(f"unknown core instance kind {tag:#04x}", off)

    def core_valtype(self) -> str:
        at = self.pos
        b = self.byte()
        name = _CORE_VALTYPES.get(b) or _CORE_REFTYPES.get(b)
        if name is not None:
            return name
        if b in (0x63, 0x64):
            heap = self.s33()
            return f"(ref {'null ' if b == 0x63 else ''}{heap})"
        _fail(f"unknown core value type {b:#04x}", at)

    def core_functype(self) -> CoreFuncType:
        params = tuple(self.core_valtype() for _ in range(self.count("core param")))
        results = tuple(self.core_valtype() for _ in range(self.count("core result")))
        return CoreFuncType(params, results)

    def core_subtype(self) -> CoreFuncType:
        """A core module's type section entry (a ``sub`` wrapper skipped): function
        types only."""
        at = self.pos
        tag = self.byte()
        if tag in (0x50, 0x4F):  # sub / sub final: supertypes, then the type
            for _ in range(self.count("core supertype")):
                self.u32()
            at = self.pos
            tag = self.byte()
        if tag != 0x60:
            _fail(f"unsupported core type {tag:#04x} (only function types)", at)
        return self.core_functype()

    def core_type(self, scope: _Scope, depth: int) -> CoreType:
        at = self.pos
        tag = self.byte()
        if tag == 0x60:
            return self.core_functype()
        if tag == 0x50:
            if depth < 0:
                _fail("core module types cannot nest", at)
            return self.core_moduletype(scope)
        _fail(f"unsupported core type {tag:#04x} (only function and module types)", at)

    def limits(self, what: str) -> str:
        at = self.pos
        flags = self.byte()
        if flags & ~0x0F:
            _fail(f"bad {what} limits flags {flags:#04x}", at)
        wide = flags & 0x04
        read = self.u64 if wide else self.u32
        low = read()
        high = read() if flags & 0x01 else None
        if flags & 0x08:
            self.u32()  # custom page size (log2)
        shared = " shared" if flags & 0x02 else ""
        return f"{low}..{'' if high is None else high}{shared}"

    def u64(self) -> int:
        start = self.pos
        result = 0
        shift = 0
        while True:
            b = self.byte()
            if shift == 63 and b > 0x01:
                _fail("integer too large for u64 (LEB128 overflow)", start)
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7

    def core_extern(self, types: list[CoreType]) -> CoreExtern:
        at = self.pos
        kind = self.byte()
        if kind in (0x00, 0x04):
            if kind == 0x04 and self.byte() != 0x00:
                _fail("bad tag attribute", self.pos - 1)
            idx_at = self.pos
            idx = self.u32()
            if idx >= len(types) or not isinstance(types[idx], CoreFuncType):
                _fail(f"core type {idx} is not a function type", idx_at)
            ft = types[idx]
            assert isinstance(ft, CoreFuncType)
            return CoreExtern("func" if kind == 0 else "tag", ft)
        if kind == 0x01:
            ref = self.core_valtype()
            return CoreExtern("table", f"{ref} {self.limits('table')}")
        if kind == 0x02:
            return CoreExtern("memory", self.limits("memory"))
        if kind == 0x03:
            ty = self.core_valtype()
            mutable = self.flag("global mutability")
            return CoreExtern("global", f"{ty}{' mut' if mutable else ''}")
        _fail(f"unknown core import kind {kind:#04x}", at)

    def core_moduletype(self, scope: _Scope) -> CoreModuleType:
        types: list[CoreType] = []
        imports: list[tuple[str, str, CoreExtern]] = []
        exports: list[tuple[str, CoreExtern]] = []
        for _ in range(self.count("module type declaration")):
            at = self.pos
            tag = self.byte()
            if tag == 0x00:
                module = self.name()
                name = self.name()
                imports.append((module, name, self.core_extern(types)))
            elif tag == 0x01:
                types.append(self.core_type(scope, -1))
            elif tag == 0x02:
                if self.byte() != 0x10 or self.byte() != 0x01:
                    _fail("module type aliases can only be outer core type aliases", at + 1)
                count_at = self.pos
                count = self.u32()
                idx_at = self.pos
                idx = self.u32()
                if count == 0:
                    if idx >= len(types):
                        _fail(f"core type index {idx} out of range", idx_at)
                    types.append(types[idx])
                elif count == 1:
                    outer = scope.typed[Sort.CORE_TYPE]
                    if idx >= len(outer):
                        _fail(f"core type index {idx} out of range", idx_at)
                    types.append(outer[idx])
                else:
                    _fail(f"outer alias count {count} reaches past the enclosing scope", count_at)
            elif tag == 0x03:
                name = self.name()
                exports.append((name, self.core_extern(types)))
            else:
                _fail(f"unknown module type declaration {tag:#04x}", at)
        return CoreModuleType(tuple(imports), tuple(exports))

    # -- component types ----------------------------------------------------------------

    def measure(self, ty: ValType, parts: list[ValType | None], at: int) -> ValType:
        size, depth = 1, 1
        sizes = self.sizes
        for part in parts:
            if part is None:
                continue
            s, d = sizes.get(id(part), (1, 1))
            size += s
            depth = max(depth, d + 1)
        if size > MAX_TYPE_SIZE:
            _fail(f"type too large (over {MAX_TYPE_SIZE} nodes)", at)
        if depth > MAX_TYPE_DEPTH:
            _fail(f"type nested too deep (over {MAX_TYPE_DEPTH} levels)", at)
        if size > 1:
            sizes[id(ty)] = (size, depth)
        return ty

    def valtype(self, scope: _Scope) -> ValType:
        at = self.pos
        if at < self.end:
            b = self.data[at]
            if 0x40 <= b < 0x80:
                prim = _PRIM_TYPES.get(b)
                if prim is None:
                    _fail(f"unknown value type {b:#04x}", at)
                self.pos = at + 1
                return prim
        idx = self.s33()
        if idx < 0:
            _fail("bad value type", at)
        types = scope.typed[Sort.TYPE]
        if idx >= len(types):
            _fail(f"type index {idx} out of range ({len(types)} defined)", at)
        ty = types[idx]
        if isinstance(ty, _NOT_VALUE_TYPES):
            _fail(f"type {idx} is not a value type", at)
        return ty  # type: ignore[no-any-return]

    def opt_valtype(self, scope: _Scope) -> ValType | None:
        return self.valtype(scope) if self.flag("optional type") else None

    def labels(self, what: str) -> tuple[str, ...]:
        at = self.pos
        names = tuple(self.name() for _ in range(self.count(what)))
        if not names:
            _fail(f"empty {what} list", at)
        return names

    def resource_ref(self, scope: _Scope) -> ResourceType:
        _, res = self.typed(scope, Sort.TYPE, ResourceType, "a resource type")
        return res  # type: ignore[no-any-return]

    def defvaltype(self, scope: _Scope, tag: int, at: int) -> ValType:
        prim = _PRIM_TYPES.get(tag)
        if prim is not None:
            return prim
        ty: ValType
        parts: list[ValType | None]
        if tag == 0x72:
            fields = []
            for _ in range(self.count("record field", 2)):
                label = self.name()
                fields.append((label, self.valtype(scope)))
            if not fields:
                _fail("record with no fields", at)
            parts = [t for _, t in fields]
            ty = RecordType(tuple(fields))
        elif tag == 0x71:
            cases = []
            for _ in range(self.count("variant case", 3)):
                label = self.name()
                payload = self.opt_valtype(scope)
                refines_at = self.pos
                refines = self.byte()
                if refines == 0x01:
                    self.u32()  # an old `refines` clause: ignored
                elif refines != 0x00:
                    _fail(f"bad variant case ending {refines:#04x}", refines_at)
                cases.append((label, payload))
            if not cases:
                _fail("variant with no cases", at)
            parts = [t for _, t in cases]
            ty = VariantType(tuple(cases))
        elif tag == 0x70:
            element = self.valtype(scope)
            parts = [element]
            ty = ListType(element)
        elif tag == 0x67:
            element = self.valtype(scope)
            length_at = self.pos
            length = self.u32()
            if length == 0:
                _fail("fixed-length list of length 0", length_at)
            parts = [element]
            ty = ListType(element, length)
        elif tag == 0x6F:
            elements = tuple(self.valtype(scope) for _ in range(self.count("tuple element")))
            if not elements:
                _fail("tuple with no elements", at)
            parts = list(elements)
            ty = TupleType(elements)
        elif tag == 0x6E:
            return FlagsType(self.labels("flag"))
        elif tag == 0x6D:
            return EnumType(self.labels("enum case"))
        elif tag == 0x6B:
            inner = self.valtype(scope)
            parts = [inner]
            ty = OptionType(inner)
        elif tag == 0x6A:
            ok = self.opt_valtype(scope)
            err = self.opt_valtype(scope)
            parts = [ok, err]
            ty = ResultType(ok, err)
        elif tag == 0x69:
            return OwnType(self.resource_ref(scope))
        elif tag == 0x68:
            return BorrowType(self.resource_ref(scope))
        elif tag == 0x66:
            payload = self.opt_valtype(scope)
            parts = [payload]
            ty = StreamType(payload)
        elif tag == 0x65:
            value = self.opt_valtype(scope)
            parts = [value]
            ty = FutureType(value)
        else:
            _fail(f"unknown type constructor {tag:#04x}", at)
        return self.measure(ty, parts, at)

    def functype(self, scope: _Scope, is_async: bool) -> FuncType:
        params = []
        for _ in range(self.count("parameter", 2)):
            label = self.name()
            params.append((label, self.valtype(scope)))
        at = self.pos
        kind = self.byte()
        result: ValType | None
        if kind == 0x00:
            result = self.valtype(scope)
        elif kind == 0x01:
            if self.count("named result", 2) != 0:
                _fail("functions with named results are not supported", at)
            result = None
        else:
            _fail(f"bad function result list {kind:#04x}", at)
        # a function's lifting walks all its parameter and result types: bound their sum
        size = sum(self.sizes.get(id(p), (1, 1))[0] for _, p in params)
        if result is not None:
            size += self.sizes.get(id(result), (1, 1))[0]
        if size > MAX_TYPE_SIZE:
            _fail(f"function type too large (over {MAX_TYPE_SIZE} nodes)", at)
        return FuncType(tuple(params), result, is_async)

    def deftype(self, scope: _Scope, depth: int, in_decl: str | None) -> DefType:
        at = self.pos
        tag = self.byte()
        if tag in (0x40, 0x43):
            return self.functype(scope, tag == 0x43)
        if tag in (0x41, 0x42):
            return self.decl_type(scope, depth + 1, tag == 0x41)
        if tag == 0x3F:
            if in_decl is not None:
                _fail(f"resource type defined inside {in_decl} type", at)
            rep_at = self.pos
            rep = self.byte()
            if rep != 0x7F:
                _fail(f"resource representation {rep:#04x} is not i32", rep_at)
            dtor = self.index(scope, Sort.CORE_FUNC) if self.flag("destructor") else None
            comp = scope.component
            assert comp is not None
            res = ResourceType(f"resource-{len(comp.resources)}")
            comp.resources.append(ResourceDef(at, res, "i32", dtor))
            return res
        return self.defvaltype(scope, tag, at)

    def decl_type(self, parent: _Scope, depth: int, is_component: bool) -> DefType:
        if depth > MAX_NESTING:
            _fail(f"types nested more than {MAX_NESTING} deep", self.pos)
        scope = _Scope(parent, None)
        what = "a component" if is_component else "an instance"
        imports: list[tuple[str, Item]] = []
        exports: list[tuple[str, Item]] = []
        fresh: list[ResourceType] = []
        for _ in range(self.count("declaration")):
            at = self.pos
            tag = self.byte()
            if tag == 0x03 and is_component:
                name = self.extern_name()
                item = self.externdesc(scope, name, fresh)
                imports.append((name, item))
                scope.define(_item_sort(item), None, _typed_entry(item))
            elif tag == 0x00:
                scope.define(Sort.CORE_TYPE, None, self.core_type(scope, depth))
            elif tag == 0x01:
                scope.define(Sort.TYPE, None, self.deftype(scope, depth, what))
            elif tag == 0x02:
                self.alias(scope)
            elif tag == 0x04:
                name = self.extern_name()
                item = self.externdesc(scope, name, fresh)
                exports.append((name, item))
                scope.define(_item_sort(item), None, _typed_entry(item))
            else:
                _fail(f"unknown declaration {tag:#04x} in {what} type", at)
        if is_component:
            return ComponentType(tuple(imports), tuple(exports))
        return InstanceType(tuple(exports), tuple(fresh))

    def externdesc(self, scope: _Scope, name: str, fresh: list[ResourceType] | None) -> Item:
        at = self.pos
        kind = self.byte()
        if kind == 0x00:
            if self.byte() != 0x11:
                _fail("bad core module import", at + 1)
            _, mt = self.typed(scope, Sort.CORE_TYPE, CoreModuleType, "a core module type")
            return CoreModuleItem(mt)
        if kind == 0x01:
            _, ft = self.typed(scope, Sort.TYPE, FuncType, "a function type")
            return ft  # type: ignore[no-any-return]
        if kind == 0x02:
            # 🪙 values: wasm-tools writes the value type itself (no `valuebound` tag)
            return ValueItem(self.valtype(scope))
        if kind == 0x03:
            bound = self.byte()
            if bound == 0x00:
                idx = self.index(scope, Sort.TYPE)
                return TypeItem(scope.typed[Sort.TYPE][idx])
            if bound == 0x01:
                res = ResourceType(name)
                if fresh is not None:
                    fresh.append(res)
                return TypeItem(res)
            _fail(f"bad type bound {bound:#04x}", self.pos - 1)
        if kind == 0x04:
            _, ct = self.typed(scope, Sort.TYPE, ComponentType, "a component type")
            return ct  # type: ignore[no-any-return]
        if kind == 0x05:
            _, it = self.typed(scope, Sort.TYPE, InstanceType, "an instance type")
            return it  # type: ignore[no-any-return]
        _fail(f"unknown extern kind {kind:#04x}", at)

    # -- instances, aliases -------------------------------------------------------------

    def sortidx_args(self, scope: _Scope, what: str, names: bool) -> list[tuple[str, Sort, int]]:
        out = []
        for _ in range(self.count(what, 3)):
            name = self.extern_name() if names else self.name()
            sort = self.sort()
            out.append((name, sort, self.index(scope, sort)))
        return out

    def instance(self, scope: _Scope) -> None:
        off = self.pos
        tag = self.byte()
        if tag == 0x00:
            c_at = self.pos
            idx = self.index(scope, Sort.COMPONENT)
            args = self.sortidx_args(scope, "instantiation argument", names=False)
            items = {name: self.item_of(scope, sort, i, off) for name, sort, i in args}
            ctype: ComponentType = scope.typed[Sort.COMPONENT][idx]
            ty, resources = instantiated(ctype, items, c_at)
            made = Instantiate(off, idx, tuple(args), ty, resources)
            self.add(scope, Sort.INSTANCE, made, ty)
        elif tag == 0x01:
            exports = self.sortidx_args(scope, "instance export", names=True)
            ty = InstanceType(
                tuple((name, self.item_of(scope, sort, i, off)) for name, sort, i in exports)
            )
            self.add(scope, Sort.INSTANCE, InlineInstance(off, tuple(exports), ty), ty)
        else:
            _fail(f"unknown instance kind {tag:#04x}", off)

    def alias(self, scope: _Scope) -> None:
        off = self.pos
        sort = self.sort()
        tag = self.byte()
        if tag == 0x00:
            inst_idx, inst = self.typed(scope, Sort.INSTANCE, InstanceType, "an instance")
            name = self.name()
            # WASI instances export dozens of items, each aliased in turn: look them up
            # in a dict made once per instance type rather than scanning the tuple
            by_name = self.export_maps.get(id(inst))
            if by_name is None or by_name[0] is not inst:
                by_name = (inst, dict(inst.exports))
                self.export_maps[id(inst)] = by_name
            item = by_name[1].get(name)
            if item is None:
                _fail(f"instance {inst_idx} has no export {name!r}", off)
            if _item_sort(item) != sort:
                _fail(f"export {name!r} of instance {inst_idx} is not a {sort.value}", off)
            self.add(scope, sort, AliasExport(off, sort, inst_idx, name, False), _typed_entry(item))
        elif tag == 0x01:
            if sort not in _CORE_SORT_SET:
                _fail(f"core export alias of non-core sort {sort.value}", off)
            inst_idx = self.index(scope, Sort.CORE_INSTANCE)
            name = self.name()
            self.add(scope, sort, AliasExport(off, sort, inst_idx, name, True), None)
        elif tag == 0x02:
            count_at = self.pos
            count = self.u32()
            outer: _Scope | None = scope
            for _ in range(count):
                outer = outer.parent if outer is not None else None
            if outer is None:
                _fail(f"outer alias count {count} reaches past the outermost component", count_at)
            if sort not in (Sort.TYPE, Sort.CORE_TYPE, Sort.CORE_MODULE, Sort.COMPONENT):
                _fail(f"outer alias of a {sort.value}", off)
            idx = self.index(outer, sort)
            typed = outer.typed[sort][idx]
            target: Any = typed
            if outer.component is not None and sort in (Sort.CORE_MODULE, Sort.COMPONENT):
                target = outer.component.spaces[sort][idx]
            self.add(scope, sort, AliasOuter(off, sort, count, idx, target), typed)
        else:
            _fail(f"unknown alias target {tag:#04x}", off + 1)

    # -- canonical definitions ----------------------------------------------------------

    def canon_options(self, scope: _Scope) -> CanonOptions:
        at = self.pos
        encoding: StringEncoding | None = None
        memory = realloc = post_return = callback = None
        is_async = False
        for _ in range(self.count("canonical option")):
            opt_at = self.pos
            opt = self.byte()
            if opt in (0x00, 0x01, 0x02):
                if encoding is not None:
                    _fail("string-encoding given twice", opt_at)
                encoding = (
                    StringEncoding.UTF8,
                    StringEncoding.UTF16,
                    StringEncoding.LATIN1_UTF16,
                )[opt]
            elif opt == 0x03:
                if memory is not None:
                    _fail("memory given twice", opt_at)
                memory = self.index(scope, Sort.CORE_MEMORY)
            elif opt == 0x04:
                if realloc is not None:
                    _fail("realloc given twice", opt_at)
                realloc = self.index(scope, Sort.CORE_FUNC)
            elif opt == 0x05:
                if post_return is not None:
                    _fail("post-return given twice", opt_at)
                post_return = self.index(scope, Sort.CORE_FUNC)
            elif opt == 0x06:
                if is_async:
                    _fail("async given twice", opt_at)
                is_async = True
            elif opt == 0x07:
                if callback is not None:
                    _fail("callback given twice", opt_at)
                callback = self.index(scope, Sort.CORE_FUNC)
            else:
                _fail(f"unknown canonical option {opt:#04x}", opt_at)
        if callback is not None and not is_async:
            _fail("callback without async", at)
        return CanonOptions(
            encoding or StringEncoding.UTF8, memory, realloc, post_return, is_async, callback
        )

    def canon(self, scope: _Scope) -> None:
        off = self.pos
        op = self.byte()
        if op in (0x00, 0x01):
            if self.byte() != 0x00:
                _fail("canon lift/lower of something other than a function", off + 1)
            if op == 0x00:
                core_func = self.index(scope, Sort.CORE_FUNC)
                options = self.canon_options(scope)
                type_index, ft = self.typed(scope, Sort.TYPE, FuncType, "a function type")
                lift = CanonLift(off, core_func, options, type_index, ft)
                self.add(scope, Sort.FUNC, lift, ft)
            else:
                func, ft = self.typed(scope, Sort.FUNC, FuncType, "a function")
                options = self.canon_options(scope)
                self.add(scope, Sort.CORE_FUNC, CanonLower(off, func, options, ft), None)
            return
        if op in (0x02, 0x03, 0x04):
            type_index, res = self.typed(scope, Sort.TYPE, ResourceType, "a resource type")
            op_name = {0x02: "new", 0x03: "drop", 0x04: "rep"}[op]
            self.add(scope, Sort.CORE_FUNC, CanonResource(off, op_name, type_index, res), None)
            return
        builtin = _BUILTINS.get(op)
        if builtin is None:
            _fail(f"unknown canonical definition {op:#04x}", off)
        self.add(scope, Sort.CORE_FUNC, self.builtin(scope, off, *builtin), None)

    def builtin(self, scope: _Scope, off: int, name: str, shape: str) -> CanonBuiltin:
        type_index: int | None = None
        options = CanonOptions()
        flag = False
        result: ValType | None = None
        immediates: tuple[int | str, ...] = ()
        if shape.startswith("t"):
            want: Any = StreamType if name.startswith("stream") else FutureType
            type_index, _ = self.typed(scope, Sort.TYPE, want, f"a {name.split('.')[0]} type")
            if shape == "t+o":
                options = self.canon_options(scope)
            elif shape == "t+f":
                flag = self.flag("async")
        elif shape == "o":
            options = self.canon_options(scope)
        elif shape == "f":
            flag = self.flag("async")
        elif shape == "f+m":
            flag = self.flag("cancellable")
            immediates = (self.index(scope, Sort.CORE_MEMORY),)
        elif shape == "r+o":
            at = self.pos
            kind = self.byte()
            if kind == 0x00:
                result = self.valtype(scope)
            elif kind != 0x01 or self.count("named result", 2) != 0:
                _fail("bad task.return result", at)
            options = self.canon_options(scope)
        elif shape == "ctx":
            ty = self.core_valtype()
            immediates = (ty, self.u32())
        elif shape.startswith("ct"):
            type_index = self.index(scope, Sort.CORE_TYPE)
            if shape.endswith("tab"):
                immediates = (self.index(scope, Sort.CORE_TABLE),)
        return CanonBuiltin(off, name, type_index, options, flag, result, immediates)

    # -- start, imports, exports --------------------------------------------------------

    def start(self, scope: _Scope) -> None:
        off = self.pos
        func, ft = self.typed(scope, Sort.FUNC, FuncType, "a function")
        args = tuple(self.index(scope, Sort.VALUE) for _ in range(self.count("start argument")))
        results_at = self.pos
        results = self.u32()
        if results > (0 if ft.result is None else 1):
            _fail(f"start function gives {results} results", results_at)
        start = Start(off, func, args, results)
        comp = scope.component
        assert comp is not None
        comp.definitions.append(start)
        for _ in range(results):
            scope.define(Sort.VALUE, start, ft.result)

    def import_(self, scope: _Scope) -> None:
        off = self.pos
        name = self.extern_name()
        item = self.externdesc(scope, name, None)
        if isinstance(item, InstanceType) and item.fresh:
            # each import of an instance type has resource types of its own
            item = substitute(item, {r: ResourceType(r.name) for r in item.fresh})
        comp = scope.component
        assert comp is not None
        if name in comp.imports:
            _fail(f"import {name!r} given twice", off)
        comp.imports[name] = item
        sort = _item_sort(item)
        self.add(scope, sort, Import(off, name, sort, item), _typed_entry(item))

    def export(self, scope: _Scope) -> None:
        off = self.pos
        name = self.extern_name()
        sort = self.sort()
        idx = self.index(scope, sort)
        inferred = self.item_of(scope, sort, idx, off)
        item = inferred
        if self.flag("export type"):
            declared = self.externdesc(scope, name, None)
            if _item_sort(declared) != sort:
                _fail(f"export {name!r} is declared as a different sort", off)
            if sort != Sort.TYPE:
                item = declared
        comp = scope.component
        assert comp is not None
        if name in comp.exports:
            _fail(f"export {name!r} given twice", off)
        comp.exports[name] = item
        _name_resources(comp, name, item)
        self.add(scope, sort, Export(off, name, sort, idx, item), _typed_entry(inferred))


def _name_resources(comp: ComponentDef, name: str, item: Item) -> None:
    """Give the resource types ``comp`` defines the names they are exported under
    (for messages; the binary's definitions carry none)."""
    named = [(name, item)] if not isinstance(item, InstanceType) else list(item.exports)
    for export_name, export_item in named:
        if isinstance(export_item, TypeItem) and isinstance(export_item.type, ResourceType):
            res = export_item.type
            if res.name.startswith("resource-") and any(r.resource is res for r in comp.resources):
                res.name = export_name


# -- instantiating component types ------------------------------------------------------


def instantiated(
    ctype: ComponentType, args: dict[str, Item], at: int
) -> tuple[InstanceType, dict[ResourceType, ResourceType]]:
    """The type of an instance of ``ctype`` made with ``args``: its exports, with each
    imported resource type replaced by the argument's and each resource type it
    defines by a fresh one; and that replacement (``ctype``'s resource types to the
    ones the instantiating component sees)."""
    mapping: dict[ResourceType, ResourceType] = {r: ResourceType(r.name) for r in ctype.fresh}
    for name, imported in ctype.imports:
        arg = args.get(name)
        if arg is None:
            _fail(f"instantiation lacks an argument for import {name!r}", at)
        _bind(imported, arg, mapping, name, at)
    exports = tuple((n, substitute(i, mapping)) for n, i in ctype.exports)
    return InstanceType(exports), mapping


def _bind(
    imported: Item, arg: Item, mapping: dict[ResourceType, ResourceType], name: str, at: int
) -> None:
    if _item_sort(imported) != _item_sort(arg):
        _fail(f"instantiation argument {name!r} is not a {_item_sort(imported).value}", at)
    if isinstance(imported, TypeItem) and isinstance(imported.type, ResourceType):
        assert isinstance(arg, TypeItem)
        if not isinstance(arg.type, ResourceType):
            _fail(f"instantiation argument {name!r} is not a resource type", at)
        mapping.setdefault(imported.type, arg.type)
    elif isinstance(imported, InstanceType):
        assert isinstance(arg, InstanceType)
        for export_name, export_item in imported.exports:
            given = arg.export(export_name)
            if given is not None:
                _bind(export_item, given, mapping, f"{name}.{export_name}", at)


def substitute(obj: Any, mapping: dict[ResourceType, ResourceType]) -> Any:
    """``obj`` (a type or an item) with resource types replaced as ``mapping`` says.

    Shared parts are rebuilt once (a memo keyed on identity), so a type that is a DAG
    costs its number of distinct nodes, not the size of the tree it unfolds to.
    """
    if not mapping:
        return obj
    memo: dict[int, tuple[Any, Any]] = {}

    def sub(t: Any) -> Any:
        if t is None or isinstance(t, PrimType | EnumType | FlagsType | CoreModuleItem):
            return t
        key = id(t)
        hit = memo.get(key)
        if hit is not None:
            return hit[1]
        out: Any
        if isinstance(t, ResourceType):
            out = mapping.get(t, t)
        elif isinstance(t, OwnType):
            out = OwnType(sub(t.resource))
        elif isinstance(t, BorrowType):
            out = BorrowType(sub(t.resource))
        elif isinstance(t, ListType):
            out = ListType(sub(t.element), t.length)
        elif isinstance(t, RecordType):
            out = RecordType(tuple((n, sub(f)) for n, f in t.fields))
        elif isinstance(t, TupleType):
            out = TupleType(tuple(sub(e) for e in t.elements))
        elif isinstance(t, VariantType):
            out = VariantType(tuple((n, sub(p)) for n, p in t.cases))
        elif isinstance(t, OptionType):
            out = OptionType(sub(t.inner))
        elif isinstance(t, ResultType):
            out = ResultType(sub(t.ok), sub(t.err))
        elif isinstance(t, StreamType):
            out = StreamType(sub(t.element))
        elif isinstance(t, FutureType):
            out = FutureType(sub(t.value))
        elif isinstance(t, FuncType):
            out = FuncType(tuple((n, sub(p)) for n, p in t.params), sub(t.result), t.is_async)
        elif isinstance(t, InstanceType):
            out = InstanceType(
                tuple((n, sub(i)) for n, i in t.exports), tuple(sub(r) for r in t.fresh)
            )
        elif isinstance(t, ComponentType):
            out = ComponentType(
                tuple((n, sub(i)) for n, i in t.imports),
                tuple((n, sub(i)) for n, i in t.exports),
                tuple(sub(r) for r in t.fresh),
            )
        elif isinstance(t, TypeItem):
            out = TypeItem(sub(t.type))
        elif isinstance(t, ValueItem):
            out = ValueItem(sub(t.type))
        else:
            out = t
        memo[key] = (t, out)
        return out

    return sub(obj)


@dataclass(frozen=True, slots=True)
class CoreModuleShape:
    """What instantiating a core module needs to know of it, read from its bytes: its
    imports ``(module, name, extern)`` in its order, its export names, and whether it
    has a start function."""

    imports: tuple[tuple[str, str, CoreExtern], ...]
    exports: frozenset[str]
    has_start: bool


def read_core_shape(data: bytes | memoryview) -> CoreModuleShape:
    """The :class:`CoreModuleShape` of a core module binary (one wasmtime compiled, so
    valid): the type, import, export and start sections are read, every other section
    skipped by its size. (Offsets in errors count from the start of the section.)

    Raises:
      LoadError: the bytes are not a core module, or use what this reader does not
        read (types of the GC proposal other than function types): ask wasmtime.
    """
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    if bytes(view[:8]) != b"\0asm\x01\x00\x00\x00":
        _fail("not a core module", 0)
    r = _Reader(view, view)
    r.pos = 8
    types: list[CoreType] = []
    imports: list[tuple[str, str, CoreExtern]] = []
    exports: list[str] = []
    has_start = False
    while r.pos < r.end:
        sid = r.byte()
        size = r.u32()
        body = r.pos
        end = body + size
        if end > r.end:
            _fail(f"section {sid} runs past the end", body)
        r.pos = end
        if sid == 8:
            has_start = True
        if sid not in (1, 2, 7):
            continue
        # names decode faster from ``bytes`` than from views: one copy of the section
        section = bytes(view[body:end])
        s = _Reader(memoryview(section), section)
        if sid == 1:
            _core_types(s, types)
        elif sid == 2:
            _core_imports(s, types, imports)
        else:
            _core_exports(s, exports)
        if s.pos != s.end:
            _fail(f"section {sid} has {s.end - s.pos} bytes left over", s.pos)
    return CoreModuleShape(tuple(imports), frozenset(exports), has_start)


def _core_types(r: _Reader, types: list[CoreType]) -> None:
    """A core type section's function types, appended to ``types``. A module repeats a
    few signatures many times: each encoding of one that takes one byte per value type
    is read once."""
    seen: dict[bytes, CoreFuncType] = {}
    buf, end = r.buf, r.end
    for _ in range(r.count("core type")):
        at = r.pos
        if at + 2 < end and buf[at] == 0x60 and buf[at + 1] < 0x80:
            results = at + 2 + buf[at + 1]  # the result count's position
            if results < end and buf[results] < 0x80:
                key = bytes(buf[at : results + 1 + buf[results]])
                found = seen.get(key)
                if found is None:
                    r.pos = at + 1
                    found = r.core_functype()
                    if r.pos == at + len(key):
                        seen[key] = found
                else:
                    r.pos = at + len(key)
                types.append(found)
                continue
        if r.byte() == 0x4E:  # a recursion group
            types.extend(r.core_subtype() for _ in range(r.count("core subtype")))
        else:
            r.pos -= 1
            types.append(r.core_subtype())


def _core_imports(
    r: _Reader, types: list[CoreType], out: list[tuple[str, str, CoreExtern]]
) -> None:
    """A core import section's imports, appended to ``out`` (the common shape, short
    names and a function of a type index under 128, read inline)."""
    buf, end = r.buf, r.end
    funcs: dict[int, CoreExtern] = {}  # one extern per function type
    for _ in range(r.count("core import", 3)):
        pos = r.pos
        n = buf[pos] if pos < end else 0x80
        after = pos + 1 + n
        if n < 0x80 and after < end and buf[after] < 0x80:
            m = buf[after]
            desc = after + 1 + m
            if desc + 1 < end and buf[desc] == 0x00 and buf[desc + 1] < 0x80:
                try:
                    module = str(buf[pos + 1 : after], "utf-8")
                    name = str(buf[after + 1 : desc], "utf-8")
                except UnicodeDecodeError:
                    _fail("name is not valid UTF-8", pos)
                idx = buf[desc + 1]
                extern = funcs.get(idx)
                if extern is None:
                    r.pos = desc
                    extern = funcs[idx] = r.core_extern(types)
                r.pos = desc + 2
                out.append((module, name, extern))
                continue
        module = r.name()
        name = r.name()
        out.append((module, name, r.core_extern(types)))


def _core_exports(r: _Reader, out: list[str]) -> None:
    """A core export section's names, appended to ``out`` (short names read inline)."""
    buf, end = r.buf, r.end
    for _ in range(r.count("core export", 3)):
        pos = r.pos
        n = buf[pos] if pos < end else 0x80
        after = pos + 1 + n
        if n < 0x80 and after + 1 < end:
            try:
                out.append(str(buf[pos + 1 : after], "utf-8"))
            except UnicodeDecodeError:
                _fail("name is not valid UTF-8", pos)
            r.pos = after + 1  # the kind
            r.u32()  # the index
            continue
        out.append(r.name())
        r.byte()
        r.u32()
