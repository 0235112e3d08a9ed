"""Our canonical ABI against wasmtime's: values we lower, wasmtime lifts; values wasmtime
lowers, we lift.

Each example builds a WAT component for a random type ``T`` (no handles; flags of at most
32 names, no fixed-length lists: what wasmtime accepts) in a random string encoding:

* ``get: func(i: u32) -> tuple<T, u8>`` returns a pointer into a data segment that holds
  memory *our* lowering wrote; wasmtime-py's stock component API lifts it;
* ``put: func(x: T, p0: u64, … p15: u64) -> u32`` has more than 16 flat parameters, so
  wasmtime lowers them into the guest's memory (through its ``cabi_realloc``) and the
  core function returns their pointer; ``dump: func() -> list<u8>`` hands us the memory
  and *our* lifting reads the tuple back.
"""

from __future__ import annotations

import ctypes
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import wasmtime
import wasmtime.component as wc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine_abi import types, values
from wasmtime.component import Record, Variant

import trio_isyswasfa._engine
from trio_isyswasfa.engine._abi import (
    AbiContext,
    BytearrayMemory,
    FuncAbi,
    load_value,
    store_value,
    type_abi,
)
from trio_isyswasfa.engine._instance import CoreInstances
from trio_isyswasfa.engine._layout import align_to, variant_cases
from trio_isyswasfa.engine._reader import read_component
from trio_isyswasfa.engine._types import (
    EnumType,
    FlagsType,
    ListType,
    OptionType,
    Primitive,
    PrimType,
    RecordType,
    ResultType,
    TupleType,
    ValType,
    VariantType,
)
from trio_isyswasfa.engine._values import Err
from trio_isyswasfa.testing import bump_realloc_wat
from trio_isyswasfa.tools._paths import tool_command

U8, U64 = PrimType(Primitive.U8), PrimType(Primitive.U64)
pytestmark = pytest.mark.slow

_WASM_ENCODING = {"utf8": "utf8", "utf16": "utf16", "latin1+utf16": "compact-utf16"}
_PADDING = tuple(range(16))


# -- WIT for a type ---------------------------------------------------------------------


class _Wit:
    def __init__(self) -> None:
        self.defs: list[str] = []

    def name(self, body: str) -> str:
        name = f"t{len(self.defs)}"
        self.defs.append(body.replace("NAME", name))
        return name

    def of(self, t: ValType | None) -> str:
        if t is None:
            return "_"
        if isinstance(t, PrimType):
            return t.kind.value
        if isinstance(t, ListType):
            return f"list<{self.of(t.element)}>"
        if isinstance(t, TupleType):
            return f"tuple<{', '.join(self.of(e) for e in t.elements)}>"
        if isinstance(t, OptionType):
            return f"option<{self.of(t.inner)}>"
        if isinstance(t, ResultType):
            if t.ok is None and t.err is None:
                return "result"
            if t.err is None:
                return f"result<{self.of(t.ok)}>"
            return f"result<{self.of(t.ok)}, {self.of(t.err)}>"
        if isinstance(t, RecordType):
            fields = ", ".join(f"{n}: {self.of(ty)}" for n, ty in t.fields)
            return self.name(f"record NAME {{ {fields} }}")
        if isinstance(t, VariantType):
            cases = ", ".join(n if ty is None else f"{n}({self.of(ty)})" for n, ty in t.cases)
            return self.name(f"variant NAME {{ {cases} }}")
        if isinstance(t, EnumType):
            return self.name(f"enum NAME {{ {', '.join(t.names)} }}")
        if isinstance(t, FlagsType):
            return self.name(f"flags NAME {{ {', '.join(t.names)} }}")
        raise AssertionError(t)


def _wit_for(t: ValType) -> str:
    wit = _Wit()
    ty = wit.of(t)
    params = ", ".join(f"p{i}: u64" for i in range(16))
    defs = "\n".join(f"  {d}" for d in wit.defs)
    return f"""package test:abi;
world w {{
{defs}
  export get: func(i: u32) -> tuple<{ty}, u8>;
  export put: func(x: {ty}, {params}) -> u32;
  export dump: func() -> list<u8>;
}}
"""


def _wat_for(data: bytes, table: int, heap: int) -> str:
    pages = 4
    assert heap < pages * 65536 // 2
    text = "".join(f"\\{b:02x}" for b in data)
    return f"""(module
  (memory (export "memory") {pages})
  (global $bump (mut i32) (i32.const {heap}))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (local $p i32)
    (if (i32.and (i32.ne (local.get 0) (i32.const 0)) (i32.le_u (local.get 3) (local.get 1)))
      (then (return (local.get 0))))
    (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (global.set $bump (i32.add (local.get $p) (local.get 3)))
    (if (local.get 1) (then (memory.copy (local.get $p) (local.get 0) (local.get 1))))
    (local.get $p))
  (func (export "get") (param i32) (result i32)
    (i32.load (i32.add (i32.const {table}) (i32.shl (local.get 0) (i32.const 2)))))
  (func (export "put") (param i32) (result i32) (local.get 0))
  (func (export "dump") (result i32)
    (i32.store (i32.const 0) (i32.const 0))
    (i32.store (i32.const 4) (global.get $bump))
    (i32.const 0))
  (data (i32.const 0) "{text}"))
"""


def _component(wit: str, wat: str, encoding: str) -> bytes:
    wasm_tools = tool_command("wasm-tools")
    with tempfile.TemporaryDirectory(prefix="isyswasfa-abi-") as tmp:
        work = Path(tmp)
        (work / "w.wit").write_text(wit)
        (work / "m.wat").write_text(wat)
        steps = [
            ["parse", "m.wat", "-o", "core.wasm"],
            ["component", "embed", "w.wit", "-w", "w", "core.wasm", "-o", "emb.wasm"],
            ["component", "new", "emb.wasm", "-o", "c.wasm"],
        ]
        steps[1] += ["--encoding", _WASM_ENCODING[encoding]]
        for step in steps:
            proc = subprocess.run(
                [*wasm_tools, *step], capture_output=True, text=True, check=False, cwd=work
            )
            assert proc.returncode == 0, f"{step[0]}: {proc.stderr}\n{wit}"
        return (work / "c.wasm").read_bytes()


# -- wasmtime-py's value shapes ---------------------------------------------------------


class _Anything:
    """wasmtime-py's ``object``: the class of a case without payload."""


def _wt_classes(t: ValType | None) -> set[type]:
    if t is None:
        return {_Anything}
    if isinstance(t, PrimType):
        k = t.kind
        if k is Primitive.BOOL:
            return {bool}
        if k in (Primitive.F32, Primitive.F64):
            return {float}
        if k in (Primitive.CHAR, Primitive.STRING):
            return {str}
        return {int}
    if isinstance(t, ListType):
        return {bytes} if t.element == U8 else {list}
    if isinstance(t, RecordType):
        return {Record}
    if isinstance(t, TupleType):
        return {tuple}
    if isinstance(t, FlagsType):
        return {set}
    if isinstance(t, EnumType):
        return {str}
    if _wt_tagged(t):
        return {Variant}
    out: set[type] = set()
    for _, ty in _wt_cases(t):
        out |= _wt_classes(ty)
    return out


def _wt_cases(t: ValType) -> tuple[tuple[str, ValType | None], ...]:
    if isinstance(t, ResultType):
        return (("ok", t.ok), ("err", t.err))
    cases = variant_cases(t)
    assert cases is not None
    return cases


def _wt_tagged(t: ValType) -> bool:
    seen: set[type] = set()
    for _, ty in _wt_cases(t):
        classes = _wt_classes(ty)
        if classes & seen:
            return True
        seen |= classes
    if isinstance(t, ResultType) and t.ok is not None and t.err is not None:
        return _Anything in _wt_classes(t.ok) | _wt_classes(t.err)
    return False


def _our_case(t: ValType, v: Any) -> tuple[int, Any]:
    if isinstance(t, ResultType):
        return (1, v.value) if type(v) is Err else (0, v.value)
    cases = _wt_cases(t)
    if type_abi(t).tagged:
        return next(i for i, (n, _) in enumerate(cases) if n == v.tag), v.payload
    for i, (_, ty) in enumerate(cases):
        classes = type_abi(ty).classes if ty is not None else {type(None)}
        if type(v) in classes:
            return i, v
    raise AssertionError((t, v))


def to_wasmtime(t: ValType | None, v: Any) -> Any:
    """Our value of type ``t`` in wasmtime-py's shape."""
    if t is None or isinstance(t, (PrimType, FlagsType, EnumType)):
        return v
    if isinstance(t, ListType):
        return v if t.element == U8 else [to_wasmtime(t.element, x) for x in v]
    if isinstance(t, RecordType):
        rec = Record()
        for name, ty in t.fields:
            setattr(rec, name, to_wasmtime(ty, getattr(v, name)))
        return rec
    if isinstance(t, TupleType):
        return tuple(to_wasmtime(ty, x) for ty, x in zip(t.elements, v, strict=True))
    i, payload = _our_case(t, v)
    name, ty = _wt_cases(t)[i]
    converted = to_wasmtime(ty, payload) if ty is not None else None
    return Variant(name, converted) if _wt_tagged(t) else converted


# -- the check --------------------------------------------------------------------------


def _engine() -> wasmtime.Engine:
    config = wasmtime.Config()
    config.wasm_component_model = True
    return wasmtime.Engine(config)


_ENGINE = _engine()


_FIXED_TYPES = [
    RecordType(
        (
            ("name", PrimType(Primitive.STRING)),
            ("body", ListType(U8)),
            ("when", VariantType((("at", PrimType(Primitive.F32)), ("n", U64), ("never", None)))),
        )
    ),
    ResultType(PrimType(Primitive.STRING), EnumType(("denied", "missing", "busy"))),
    ListType(OptionType(PrimType(Primitive.STRING))),
    TupleType((PrimType(Primitive.CHAR), PrimType(Primitive.S16), PrimType(Primitive.F64))),
    FlagsType(tuple(f"f{i}" for i in range(20))),
    VariantType((("a", ListType(PrimType(Primitive.U32))), ("b", TupleType((U8, U64))))),
    # lists whose elements hold strings and lists (generated loops: fields.from-list,
    # environments, directory entries)
    ListType(TupleType((PrimType(Primitive.STRING), ListType(U8)))),
    ListType(TupleType((PrimType(Primitive.STRING), PrimType(Primitive.STRING)))),
    ListType(
        RecordType(
            (
                ("kind", EnumType(("file", "directory"))),
                ("name", PrimType(Primitive.STRING)),
                ("tags", ListType(PrimType(Primitive.STRING))),
                ("size", U64),
            )
        )
    ),
]


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@pytest.mark.parametrize("t", _FIXED_TYPES, ids=lambda t: type(t).__name__)
@given(data=st.data(), encoding=st.sampled_from(["utf8", "utf16", "latin1+utf16"]))
def test_wasmtime_agrees_on_common_shapes(t: ValType, data: st.DataObject, encoding: str) -> None:
    samples = data.draw(st.lists(values(t), min_size=1, max_size=3), label="values")
    _check(t, samples, encoding)


@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data(), st.sampled_from(["utf8", "utf16", "latin1+utf16"]))
def test_wasmtime_agrees_on_random_types(data: st.DataObject, encoding: str) -> None:
    t = data.draw(types(handles=False, wide=False), label="type")
    samples = data.draw(st.lists(values(t), min_size=1, max_size=3), label="values")
    _check(t, samples, encoding)


def _check(t: ValType, samples: list[Any], encoding: str) -> None:
    """wasmtime lifts what we lower (``get``), we lift what it lowers (``put``)."""
    wrapped = TupleType((t, U8))
    memory = BytearrayMemory(1 << 16, base=16)
    cx = AbiContext(memory)
    pointers = [store_value(cx, wrapped, (v, i), encoding) for i, v in enumerate(samples)]
    table = cx.alloc(4, 4 * len(pointers))
    for i, p in enumerate(pointers):
        cx.buf[table + 4 * i : table + 4 * i + 4] = p.to_bytes(4, "little")
    heap = align_to(memory.next, 8)
    wasm = _component(_wit_for(t), _wat_for(bytes(memory.data[:heap]), table, heap), encoding)

    store = wasmtime.Store(_ENGINE)
    instance = wc.Linker(_ENGINE).instantiate(store, wc.Component(_ENGINE, wasm))
    get, put, dump = (instance.get_func(store, n) for n in ("get", "put", "dump"))
    assert get is not None
    assert put is not None
    assert dump is not None

    for i, v in enumerate(samples):
        lifted = get(store, i)
        get.post_return(store)
        assert lifted == (to_wasmtime(t, v), i)

    _check_on_our_engine(wasm, samples, encoding)

    spilled = TupleType((t, *([U64] * 16)))
    for v in samples:
        ptr = put(store, to_wasmtime(t, v), *_PADDING)
        put.post_return(store)
        image = dump(store)
        dump.post_return(store)
        assert load_value(AbiContext(_Frozen(image)), spilled, ptr, encoding) == (v, *_PADDING)


def _check_on_our_engine(wasm: bytes, samples: list[Any], encoding: str) -> None:
    """The same component on our own engine: our reader, core instances on wasmtime's
    core API, and our canonical ABI calling its lifted exports (no component API)."""
    store = wasmtime.Store(trio_isyswasfa._engine.engine())  # the engine stage 2 compiles with
    store.set_epoch_deadline(1 << 40)  # it interrupts at epochs; nothing ticks here
    instances = CoreInstances(read_component(wasm), store, use_cache=False)
    get, put = instances.lifted("get"), instances.lifted("put")
    options = put.lift.options  # get needs no realloc (wit-component gives it none)
    assert get.lift.options.realloc is None
    encoding = options.string_encoding.value  # (utf8 when no string is involved)
    assert options.memory is not None
    assert options.realloc is not None
    realloc = get.owner.funcs[options.realloc]
    cx = AbiContext(_CoreMemory(store, get.owner.memory(options.memory), realloc))
    get_abi = FuncAbi(get.lift.type, encoding)
    put_abi = FuncAbi(put.lift.type, encoding)
    assert put_abi.params_in_memory
    for i, v in enumerate(samples):
        core = get_abi.lower_args(cx, (i,))
        assert get_abi.lift_result(cx, [get.core(store, *core)]) == (v, i)
        core = put_abi.lower_args(cx, (v, *_PADDING))  # through the guest's realloc
        ptr = put_abi.lift_result(cx, [put.core(store, *core)])
        assert ptr == core[0]
        spilled = TupleType(tuple(ty for _, ty in put.lift.type.params))
        assert load_value(AbiContext(cx.memory), spilled, ptr, encoding) == (v, *_PADDING)


class _Frozen:
    """A guest memory image to lift from (never allocated into)."""

    def __init__(self, image: bytes) -> None:
        self.data = bytearray(image)

    def view(self) -> memoryview:
        return memoryview(self.data)

    def realloc(self, old_ptr: int, old_size: int, align: int, new_size: int) -> int:
        raise AssertionError("lifting never allocates")


class _CoreMemory:
    """A :class:`GuestMemory` over a wasmtime core instance: a ctypes view of its
    memory (taken anew each time, as it may have grown) and its ``cabi_realloc``."""

    def __init__(self, store: wasmtime.Store, memory: Any, realloc: Any) -> None:
        assert isinstance(memory, wasmtime.Memory)
        assert isinstance(realloc, wasmtime.Func)
        self.store = store
        self.memory = memory
        self.func = realloc

    def view(self) -> memoryview:
        base = ctypes.addressof(self.memory.data_ptr(self.store).contents)
        raw = (ctypes.c_ubyte * self.memory.data_len(self.store)).from_address(base)
        return memoryview(raw).cast("B")

    def realloc(self, old_ptr: int, old_size: int, align: int, new_size: int) -> int:
        ptr: int = self.func(self.store, old_ptr, old_size, align, new_size)
        return ptr


_GROWING_REALLOC = f"""(module
  (memory (export "memory") 1)
{bump_realloc_wat(16)})
"""


def test_lowering_into_a_wasmtime_memory_that_grows() -> None:
    """Lowering through a guest ``realloc`` that grows its memory: every allocation takes
    a new view, so nothing is written through a stale one."""
    store = wasmtime.Store(_ENGINE)
    module = wasmtime.Module(_ENGINE, _GROWING_REALLOC)
    exports = wasmtime.Instance(store, module, []).exports(store)
    memory = _CoreMemory(store, exports["memory"], exports["cabi_realloc"])
    cx = AbiContext(memory)
    t = ListType(PrimType(Primitive.STRING))
    value = [f"{i:04}" * 512 for i in range(64)]  # 128 KiB of text: two more pages
    ptr = store_value(cx, t, value)
    assert memory.memory.data_len(store) >= 3 * 65536  # it grew while we lowered
    assert load_value(AbiContext(memory), t, ptr) == value
    data = bytes(range(256)) * 1024
    ptr = store_value(cx, ListType(U8), data)
    assert load_value(AbiContext(memory), ListType(U8), ptr) == data
