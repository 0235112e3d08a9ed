"""The component reader (engine stage 1): every component the suite builds reads, and
what it reads agrees with wasmtime's own view of the component; bad input of any kind
is a LoadError with an offset."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import wasmtime
import wasmtime.component as wc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_isyswasfa
from trio_isyswasfa import LoadError
from trio_isyswasfa import _engine as stock
from trio_isyswasfa.engine import _types as t
from trio_isyswasfa.engine._model import (
    AliasExport,
    CanonBuiltin,
    CanonLift,
    CanonLower,
    CanonResource,
    ComponentDef,
    ComponentType,
    CoreInstantiate,
    CoreModuleItem,
    Export,
    InstanceType,
    Instantiate,
    Item,
    ResourceDef,
    Sort,
    StringEncoding,
    TypeItem,
    ValueItem,
)
from trio_isyswasfa.engine._reader import read_component
from trio_isyswasfa.tools._paths import tool_command

# -- building inputs (wasm-tools makes them; reading them spawns nothing) --------------


def wasm_tools(*args: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(
        [*tool_command("wasm-tools"), *args], capture_output=True, text=True, cwd=cwd, check=False
    )
    assert proc.returncode == 0, proc.stderr


def parse_wat(tmp: Path, wat: str) -> bytes:
    (tmp / "c.wat").write_text(wat)
    wasm_tools("parse", str(tmp / "c.wat"), "-o", str(tmp / "c.wasm"))
    return (tmp / "c.wasm").read_bytes()


def dummy_component(tmp: Path, wit: str, world: str) -> bytes:
    """A component for ``world`` whose core module is wasm-tools' dummy implementation."""
    (tmp / "world.wit").write_text(wit)
    wasm_tools("component", "embed", "--dummy", str(tmp), "-w", world, "-o", str(tmp / "core.wasm"))
    wasm_tools("component", "new", str(tmp / "core.wasm"), "-o", str(tmp / "comp.wasm"))
    return (tmp / "comp.wasm").read_bytes()


EVERYTHING_WIT = """
package test:reader;

interface types {
  resource blob {
    constructor(init: list<u8>);
    read: func(n: u32) -> list<u8>;
    merge: static func(a: blob, b: borrow<blob>) -> blob;
  }
  record point { x: s32, y: s32 }
  variant shape { circle(f64), square(point), nothing }
  enum color { red, green, blue }
  flags perms { read, write, exec }
  type many = tuple<u8, s8, u16, s16, u32, s32, u64, s64, f32, f64, bool, char, string>;
  all: func(a: many, b: list<point>, c: option<shape>, d: result<color, perms>, e: result,
            f: result<_, string>) -> list<option<blob>>;
}

interface uses {
  use types.{blob, point};
  type maybe-blob = option<blob>;
  take: func(b: blob, p: point) -> maybe-blob;
}

world everything {
  import types;
  import uses;
  export types;
  import log: func(msg: string);
  export run: func(b: list<u8>) -> string;
}
"""


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return dummy_component(tmp_path_factory.mktemp("everything"), EVERYTHING_WIT, "everything")


# -- an independent view: wasmtime's component type reflection ------------------------

_WASMTIME_PRIMS = {
    wc.Bool: "bool",
    wc.S8: "s8",
    wc.U8: "u8",
    wc.S16: "s16",
    wc.U16: "u16",
    wc.S32: "s32",
    wc.U32: "u32",
    wc.S64: "s64",
    wc.U64: "u64",
    wc.F32: "f32",
    wc.F64: "f64",
    wc.Char: "char",
    wc.String: "string",
}


class Resources:
    """Numbers resource types in order of first appearance, so that two descriptions
    agree only if the same resources appear in the same places."""

    def __init__(self, same: Any) -> None:
        self.seen: list[Any] = []
        self.same = same

    def number(self, res: Any) -> int:
        for i, known in enumerate(self.seen):
            if self.same(known, res):
                return i
        self.seen.append(res)
        return len(self.seen) - 1


def describe_ours(x: Any, res: Resources) -> Any:
    """A plain structure for one of our types or items."""
    d = describe_ours
    if x is None:
        return None
    if isinstance(x, t.PrimType):
        return x.kind.value
    if isinstance(x, t.ListType):
        return ("list", d(x.element, res))
    if isinstance(x, t.RecordType):
        return ("record", tuple((n, d(f, res)) for n, f in x.fields))
    if isinstance(x, t.TupleType):
        return ("tuple", tuple(d(e, res) for e in x.elements))
    if isinstance(x, t.VariantType):
        return ("variant", tuple((n, d(p, res)) for n, p in x.cases))
    if isinstance(x, t.EnumType):
        return ("enum", x.names)
    if isinstance(x, t.FlagsType):
        return ("flags", x.names)
    if isinstance(x, t.OptionType):
        return ("option", d(x.inner, res))
    if isinstance(x, t.ResultType):
        return ("result", d(x.ok, res), d(x.err, res))
    if isinstance(x, t.StreamType):
        return ("stream", d(x.element, res))
    if isinstance(x, t.FutureType):
        return ("future", d(x.value, res))
    if isinstance(x, t.OwnType):
        return ("own", res.number(x.resource))
    if isinstance(x, t.BorrowType):
        return ("borrow", res.number(x.resource))
    if isinstance(x, t.FuncType):
        return ("func", tuple((n, d(p, res)) for n, p in x.params), d(x.result, res))
    if isinstance(x, InstanceType):
        return ("instance", {n: d(i, res) for n, i in x.exports})
    if isinstance(x, ComponentType):
        return (
            "component",
            {n: d(i, res) for n, i in x.imports},
            {n: d(i, res) for n, i in x.exports},
        )
    if isinstance(x, TypeItem):
        if isinstance(x.type, t.ResourceType):
            return ("resource", res.number(x.type))
        return d(x.type, res)
    if isinstance(x, CoreModuleItem):
        return ("core module",)
    raise AssertionError(f"unexpected {x!r}")


def describe_wasmtime(x: Any, res: Resources, engine: wasmtime.Engine) -> Any:
    """The same structure for one of wasmtime-py's component types."""

    def d(y: Any) -> Any:
        return describe_wasmtime(y, res, engine)

    if x is None:
        return None
    prim = _WASMTIME_PRIMS.get(type(x))
    if prim is not None:
        return prim
    if isinstance(x, wc.ListType):
        return ("list", d(x.element))
    if isinstance(x, wc.RecordType):
        return ("record", tuple((n, d(f)) for n, f in x.fields))
    if isinstance(x, wc.TupleType):
        return ("tuple", tuple(d(e) for e in x.elements))
    if isinstance(x, wc.VariantType):
        return ("variant", tuple((n, d(p)) for n, p in x.cases))
    if isinstance(x, wc.EnumType):
        return ("enum", tuple(x.names))
    if isinstance(x, wc.FlagsType):
        return ("flags", tuple(x.names))
    if isinstance(x, wc.OptionType):
        return ("option", d(x.payload))
    if isinstance(x, wc.ResultType):
        return ("result", d(x.ok), d(x.err))
    if isinstance(x, wc.OwnType):
        return ("own", res.number(x.ty))
    if isinstance(x, wc.BorrowType):
        return ("borrow", res.number(x.ty))
    if isinstance(x, wc.FuncType):
        return ("func", tuple((n, d(p)) for n, p in x.params), d(x.result))
    if isinstance(x, wc.ComponentInstanceType):
        return ("instance", {n: d(e.ty) for n, e in x.exports(engine).items()})
    if isinstance(x, wc.ComponentType):
        return (
            "component",
            {n: d(e.ty) for n, e in x.imports(engine).items()},
            {n: d(e.ty) for n, e in x.exports(engine).items()},
        )
    if isinstance(x, wc.ResourceType):
        return ("resource", res.number(x))
    if isinstance(x, wc.ModuleType):
        return ("core module",)
    raise AssertionError(f"unexpected {x!r}")


def cross_check(read: ComponentDef, compiled: wc.Component, engine: wasmtime.Engine) -> int:
    """Assert that our reading of a component's imports and exports (names, kinds,
    function types, and which resource types are the same) matches wasmtime's.
    Returns how many functions were compared."""
    ours = Resources(lambda a, b: a is b)
    theirs = Resources(lambda a, b: a == b)
    ty = compiled.type
    # wasmtime does not list imports of value types (`(type (eq …))`, as componentize-py
    # writes for world-level types): nothing is supplied for them at instantiation
    mine_imports = {
        n: describe_ours(i, ours)
        for n, i in read.imports.items()
        if not (isinstance(i, TypeItem) and not isinstance(i.type, t.ResourceType))
    }
    wasmtime_imports = {
        n: describe_wasmtime(e.ty, theirs, engine) for n, e in ty.imports(engine).items()
    }
    assert mine_imports == wasmtime_imports
    mine_exports = {n: describe_ours(i, ours) for n, i in read.exports.items()}
    wasmtime_exports = {
        n: describe_wasmtime(e.ty, theirs, engine) for n, e in ty.exports(engine).items()
    }
    assert mine_exports == wasmtime_exports
    assert len(ours.seen) == len(theirs.seen)
    return str((mine_imports, mine_exports)).count("'func'")


def describe_wit(ty: Any, types: list[dict[str, Any]]) -> Any:
    """The same structure for a type of ``wasm-tools component wit --json``, resources
    as number 0 (WIT has one type where the component imports and exports it)."""

    def d(x: Any) -> Any:
        return describe_wit(x, types)

    if ty is None or isinstance(ty, str):
        return ty
    kind = types[ty]["kind"]
    if kind == "resource":
        raise AssertionError("a resource used as a value type")
    (key, body), *_ = kind.items()
    if key == "type":
        return d(body)
    if key == "record":
        return ("record", tuple((f["name"], d(f["type"])) for f in body["fields"]))
    if key == "variant":
        return ("variant", tuple((c["name"], d(c.get("type"))) for c in body["cases"]))
    if key == "enum":
        return ("enum", tuple(c["name"] for c in body["cases"]))
    if key == "flags":
        return ("flags", tuple(f["name"] for f in body["flags"]))
    if key == "tuple":
        return ("tuple", tuple(d(e) for e in body["types"]))
    if key in ("list", "option", "stream", "future"):
        return (key, d(body))
    if key == "result":
        return ("result", d(body.get("ok")), d(body.get("err")))
    if key == "handle":
        ((handle, _),) = body.items()
        return (handle, 0)
    raise AssertionError(f"unexpected WIT type {kind!r}")


def wit_functions(data: bytes, tmp: Path) -> dict[tuple[str, str, str], Any]:
    """``(import|export, interface or "", function) -> (description, is_async)`` for
    every function of a component's world, from ``wasm-tools component wit --json``."""
    (tmp / "w.wasm").write_bytes(data)
    proc = subprocess.run(
        [*tool_command("wasm-tools"), "component", "wit", "--json", str(tmp / "w.wasm")],
        capture_output=True,
        text=True,
        check=True,
    )
    resolve = json.loads(proc.stdout)
    types = resolve["types"]

    def describe(f: dict[str, Any]) -> Any:
        params = tuple((p["name"], describe_wit(p["type"], types)) for p in f["params"])
        kind = f["kind"] if isinstance(f["kind"], str) else next(iter(f["kind"]))
        return (("func", params, describe_wit(f.get("result"), types)), kind.startswith("async"))

    (world,) = [w for w in resolve["worlds"] if w["name"] == "root"]
    out = {}
    for direction in ("imports", "exports"):
        for key, item in world[direction].items():
            if "function" in item:
                out[(direction, "", key)] = describe(item["function"])
            elif "interface" in item:
                iface = resolve["interfaces"][item["interface"]["id"]]
                package = resolve["packages"][iface["package"]]["name"]
                for name, f in iface["functions"].items():
                    out[(direction, f"{package}/{iface['name']}", name)] = describe(f)
    return out


def our_functions(read: ComponentDef) -> dict[tuple[str, str, str], Any]:
    """The same from our reading: resources as number 0, and each ``async`` flag."""
    flat = Resources(lambda a, b: True)
    out = {}
    for direction, items in (("imports", read.imports), ("exports", read.exports)):
        for name, item in items.items():
            funcs = [("", name, item)] if isinstance(item, t.FuncType) else []
            if isinstance(item, InstanceType):
                funcs = [(name, n, f) for n, f in item.exports if isinstance(f, t.FuncType)]
            for iface, fname, f in funcs:
                out[(direction, iface, fname)] = (describe_ours(f, flat), f.is_async)
    return out


# -- componentize-py guests and a composition -----------------------------------------

GUEST_FIXTURES = [
    "cases_component",
    "round_trip_component",
    "wasi_component",
    "service_component",
    "echo_component",
    "hash_all_component",
    "middleware_component",
    "router_component",
]


@pytest.mark.guest
@pytest.mark.slow
@pytest.mark.parametrize("fixture", GUEST_FIXTURES)
def test_reads_every_python_guest_as_wasmtime_sees_it(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    component: trio_isyswasfa.Component = request.getfixturevalue(fixture)
    data = Path(component.name).read_bytes()
    read = read_component(data)
    assert cross_check(read, stock.compile_component(data), stock.engine()) > 0
    # componentize-py's shape: core modules kept as views of the input, not copies
    assert len(read.modules) >= 2
    for module in read.modules:
        assert module.data.obj is data
        assert bytes(module.data[:4]) == b"\0asm"
    assert read.uses_async is False  # WASI 0.2 guests use no async built-ins


@pytest.mark.guest
@pytest.mark.slow
def test_reads_a_composed_component(
    tmp_path: Path,
    middleware_component: trio_isyswasfa.Component,
    service_component: trio_isyswasfa.Component,
) -> None:
    from trio_isyswasfa.tools.compose import compose

    out = tmp_path / "composed.wasm"
    compose(middleware_component.name, [service_component.name], out)
    data = out.read_bytes()
    read = read_component(data)
    cross_check(read, stock.compile_component(data), stock.engine())
    # the composition nests both guests: their components are read recursively
    assert len(read.walk()) > 3
    assert any(isinstance(d, Instantiate) for d in read.definitions)


# -- components made from WIT and WAT --------------------------------------------------


def test_reads_every_kind_of_value_type_and_resources(everything: bytes) -> None:
    read = read_component(everything)
    n = cross_check(read, stock.compile_component(everything, use_cache=False), stock.engine())
    assert n == 11  # 4 + 4 in `types` both ways, `take`, `log`, `run`
    imported = read.imports["test:reader/types"]
    exported = read.exports["test:reader/types"]
    assert isinstance(imported, InstanceType)
    assert isinstance(exported, InstanceType)
    blob_in, blob_out = imported.export("blob"), exported.export("blob")
    assert isinstance(blob_in, TypeItem)
    assert isinstance(blob_out, TypeItem)
    # the imported resource and the one the component defines are different types
    assert blob_in.type is not blob_out.type
    assert isinstance(blob_out.type, t.ResourceType)
    assert blob_out.type.name == "blob"
    # `uses` names the very resource `types` exports (through an outer alias)
    uses = read.imports["test:reader/uses"]
    assert isinstance(uses, InstanceType)
    take = uses.export("take")
    assert isinstance(take, t.FuncType)
    assert take.params[0][1] == t.OwnType(blob_in.type)  # type: ignore[arg-type]
    # the component defines `blob` itself: a resource definition with a destructor
    (res,) = read.resources
    assert res.resource is blob_out.type
    assert res.dtor is not None
    ops = {d.op for d in read.definitions if isinstance(d, CanonResource)}
    assert ops == {"new", "rep", "drop"}


def test_canon_lift_and_lower_options(everything: bytes) -> None:
    read = read_component(everything)
    lifts = [d for d in read.definitions if isinstance(d, CanonLift)]
    lowers = [d for d in read.definitions if isinstance(d, CanonLower)]
    assert len(lifts) == 5  # the 4 functions of `types` and `run`
    run = next(
        d for d in lifts if d.type.params == (("b", t.ListType(t.PrimType(t.Primitive.U8))),)
    )
    assert run.options.memory is not None
    assert run.options.realloc is not None
    assert run.options.post_return is not None
    assert run.options.string_encoding is StringEncoding.UTF8
    assert not run.options.is_async
    log = next(d for d in lowers if d.type.params == (("msg", t.PrimType(t.Primitive.STRING)),))
    assert log.options.memory is not None
    # every index the options name is in range of its index space
    for d in [*lifts, *lowers]:
        assert d.options.memory is None or d.options.memory < len(read.space(Sort.CORE_MEMORY))
        for f in (d.options.realloc, d.options.post_return):
            assert f is None or f < len(read.space(Sort.CORE_FUNC))


def test_index_spaces_follow_the_spec(tmp_path: Path) -> None:
    wat = """
    (component
      (import "f" (func $f (param "x" u32) (result u32)))
      (core module $m
        (import "host" "f" (func (param i32) (result i32)))
        (memory (export "mem") 1)
        (func (export "g") (param i32) (result i32) local.get 0))
      (core func $lf (canon lower (func $f)))
      (core instance $host (export "f" (func $lf)))
      (core instance $i (instantiate $m (with "host" (instance $host))))
      (alias core export $i "g" (core func $g))
      (alias core export $i "mem" (core memory $mem))
      (func $lifted (param "x" u32) (result u32)
        (canon lift (core func $g) string-encoding=utf16 (memory $mem)))
      (export $e "g" (func $lifted))
      (component $inner
        (import "h" (func $h (param "x" u32) (result u32)))
        (export "h2" (func $h)))
      (instance $ii (instantiate $inner (with "h" (func $e))))
      (alias export $ii "h2" (func $h2))
      (export "h3" (func $h2))
    )
    """
    data = parse_wat(tmp_path, wat)
    read = read_component(data)
    cross_check(read, stock.compile_component(data, use_cache=False), stock.engine())
    # funcs: import, lift, export "g", alias of the instance's "h2", export "h3"
    funcs = read.space(Sort.FUNC)
    assert [type(d).__name__ for d in funcs] == [
        "Import",
        "CanonLift",
        "Export",
        "AliasExport",
        "Export",
    ]
    lift = funcs[1]
    assert isinstance(lift, CanonLift)
    assert lift.options.string_encoding is StringEncoding.UTF16
    assert lift.options.memory == 0
    assert lift.core_func == 1  # after the lowered import
    core_funcs = read.space(Sort.CORE_FUNC)
    assert isinstance(core_funcs[0], CanonLower)
    assert isinstance(core_funcs[1], AliasExport)
    assert core_funcs[1].core
    inst = read.space(Sort.CORE_INSTANCE)[1]
    assert isinstance(inst, CoreInstantiate)
    assert inst.args == (("host", 0),)
    (inner,) = read.components
    assert isinstance(inner, ComponentDef)
    assert list(inner.exports) == ["h2"]
    export_h3 = funcs[4]
    assert isinstance(export_h3, Export)
    assert export_h3.index == 3


def test_recognises_the_async_builtins(tmp_path: Path) -> None:
    wat = """
    (component
      (type $s (stream u8))
      (type $fu (future string))
      (type $fixed (list u32 4))
      (type $af (func async (param "x" u32) (result string)))
      (core module $libc
        (memory (export "memory") 1)
        (func (export "realloc") (param i32 i32 i32 i32) (result i32) unreachable)
        (func (export "cb") (param i32 i32 i32) (result i32) unreachable)
        (func (export "run") (param i32) (result i32) unreachable))
      (core instance $libc (instantiate $libc))
      (alias core export $libc "memory" (core memory $mem))
      (alias core export $libc "realloc" (core func $realloc))
      (core func (canon task.return (result u32)))
      (core func (canon context.get i32 0))
      (core func (canon subtask.cancel async))
      (core func (canon stream.new $s))
      (core func (canon stream.read $s async (memory $mem)))
      (core func (canon stream.cancel-read $s async))
      (core func (canon future.read $fu (memory $mem) (realloc $realloc)))
      (core func (canon error-context.new (memory $mem)))
      (core func (canon waitable-set.new))
      (core func (canon waitable-set.wait (memory $mem)))
      (core func (canon waitable.join))
      (core func (canon backpressure.inc))
      (core func (canon stream.forward $s))
      (core type $start (func (param i32)))
      (core func (canon thread.spawn-ref $start))
      (core func (canon thread.available_parallelism))
      (import "f" (func $f async (param "x" u32) (result string)))
      (core func (canon lower (func $f) async (memory $mem) (realloc $realloc)))
      (func (export "run") async (param "x" u32) (result string)
        (canon lift (core func $libc "run") async (callback (core func $libc "cb"))
          (memory $mem) (realloc $realloc)))
    )
    """
    read = read_component(parse_wat(tmp_path, wat))
    assert read.uses_async
    assert read.builtins == {
        "task.return",
        "context.get",
        "subtask.cancel",
        "stream.new",
        "stream.read",
        "stream.cancel-read",
        "future.read",
        "error-context.new",
        "waitable-set.new",
        "waitable-set.wait",
        "waitable.join",
        "backpressure.inc",
        "stream.forward",
        "thread.spawn-ref",
        "thread.available_parallelism",
    }
    by_name = {d.name: d for d in read.definitions if isinstance(d, CanonBuiltin)}
    assert by_name["task.return"].result == t.PrimType(t.Primitive.U32)
    assert by_name["context.get"].immediates == ("i32", 0)
    assert by_name["subtask.cancel"].flag is True
    assert by_name["stream.read"].options.is_async
    assert by_name["stream.read"].type_index == 0
    assert by_name["future.read"].options.realloc is not None
    assert by_name["waitable-set.wait"].immediates == (0,)
    assert by_name["thread.spawn-ref"].type_index == 0  # the core function type
    types = [d.type for d in read.definitions if hasattr(d, "type") and not isinstance(d, Export)]
    assert t.StreamType(t.PrimType(t.Primitive.U8)) in types
    assert t.FutureType(t.PrimType(t.Primitive.STRING)) in types
    assert t.ListType(t.PrimType(t.Primitive.U32), 4) in types
    f = read.imports["f"]
    assert isinstance(f, t.FuncType)
    assert f.is_async
    lift = next(d for d in read.definitions if isinstance(d, CanonLift))
    assert lift.options.is_async
    assert lift.options.callback is not None
    assert read.exports["run"] == f


ASYNC_WIT = """
package test:asyncy;

interface api {
  resource conn {
    constructor();
    send: async func(data: stream<u8>) -> future<result<u64, string>>;
  }
  fetch: async func(url: string) -> result<list<u8>, string>;
}

world service {
  import api;
  export api;
  export run: async func(x: u32) -> u32;
}
"""


def test_reads_a_wasi_03_style_component_as_wit_sees_it(tmp_path: Path) -> None:
    # wit-component's own async output (async lowering and callback lifting), which
    # wasmtime 50 cannot load (`stream.forward`): `component wit --json` is the check
    (tmp_path / "world.wit").write_text(ASYNC_WIT)
    core, comp = tmp_path / "core.wasm", tmp_path / "comp.wasm"
    wasm_tools(
        "component", "embed", "--dummy-names", "legacy", "--async-callback",
        str(tmp_path), "-w", "service", "-o", str(core),
    )  # fmt: skip
    wasm_tools("component", "new", str(core), "-o", str(comp))
    data = comp.read_bytes()
    read = read_component(data)
    ours = our_functions(read)
    assert ours == wit_functions(data, tmp_path)
    assert len(ours) == 7
    assert read.uses_async
    assert {"task.return", "stream.forward", "future.forward", "waitable-set.wait"} <= read.builtins
    lifts = [d for d in read.definitions if isinstance(d, CanonLift)]
    async_lifts = [d for d in lifts if d.type.is_async]
    assert len(async_lifts) == 3  # send, fetch and run; the constructor is sync
    assert all(d.options.is_async and d.options.callback is not None for d in async_lifts)


def test_values_types_and_custom_sections(tmp_path: Path) -> None:
    wat = """
    (component $named
      (import "v" (value $v string))
      (import "r" (type $r (sub resource)))
      (type $own (own $r))
      (export "v2" (value $v))
      (export "r2" (type $r))
    )
    """
    read = read_component(parse_wat(tmp_path, wat))
    assert read.name == "named"
    assert read.imports["v"] == ValueItem(t.PrimType(t.Primitive.STRING))
    r = read.imports["r"]
    assert isinstance(r, TypeItem)
    assert read.exports["r2"] == r
    assert any(c.name == "component-name" for c in read.custom_sections)


def test_accepts_bytes_bytearray_and_memoryview(everything: bytes) -> None:
    for data in (everything, bytearray(everything), memoryview(everything)):
        read = read_component(data)
        assert set(read.exports) == {"test:reader/types", "run"}


# -- bad input ------------------------------------------------------------------------


def preamble(version: int = 0x0D, layer: int = 1) -> bytes:
    return b"\0asm" + bytes([version, 0, layer, 0])


@pytest.mark.parametrize(
    ("data", "message", "offset"),
    [
        (b"", "bad magic", 0),
        (b"\0asn" + bytes(4), "bad magic", 0),
        (b"\0asm\x01\0\0\0", "a core WebAssembly module, not a component", 4),
        (preamble(version=0x0C), "unsupported component binary version 0xc", 4),
        (preamble() + b"\x0d\x00", "unknown section id 13", 8),
        (preamble() + b"\x07\x05\x01", "runs past the end", 8),
        # a u32 LEB128 with a fifth byte over 0x0f
        (preamble() + b"\x07\x06\x80\x80\x80\x80\x10\x00", "LEB128 overflow", 10),
        (preamble() + b"\x07\x06\xff\xff\xff\xff\x0f\x00", "exceeds the bytes left", 10),
        # a type section holding one record type that refers to type 7 (none defined)
        (preamble() + b"\x07\x06\x01\x72\x01\x01a\x07", "type index 7 out of range", 15),
        (preamble() + b"\x07\x02\x01\x50", "unknown type constructor 0x50", 11),
        (preamble() + b"\x07\x03\x01\x7f\x00", "1 bytes left over", 12),
        # canon lower of func 0 with option 0x09
        (preamble() + b"\x08\x06\x01\x01\x00\x00\x01\x09", "func index 0 out of range", 13),
        (preamble() + b"\x01\x04abcd", "does not hold a core module", 10),
        (preamble() + b"\x08\x02\x01\x60", "unknown canonical definition 0x60", 11),
        (preamble() + b"\x0a\x06\x01\x00\x02\xff\xfe\x01", "not valid UTF-8", 12),
    ],
)
def test_bad_input_is_a_load_error_with_its_offset(data: bytes, message: str, offset: int) -> None:
    with pytest.raises(LoadError, match=message) as info:
        read_component(data)
    assert info.value.offset == offset
    assert f"{offset:#x}" in str(info.value)


def test_unknown_canonical_option(tmp_path: Path) -> None:
    data = bytearray(
        parse_wat(
            tmp_path,
            """(component
                 (import "f" (func $f))
                 (core func (canon lower (func $f) string-encoding=utf8)))""",
        )
    )
    at = data.index(b"\x08\x06\x01\x01\x00\x00\x01\x00") + 7
    data[at] = 0x09
    with pytest.raises(LoadError, match="unknown canonical option 0x09") as info:
        read_component(bytes(data))
    assert info.value.offset == at
    data[at] = 0x06  # `async` is known: the same component then reads
    read_component(bytes(data))


def test_limits_on_nesting_and_type_size() -> None:
    # a chain of 200 `list<previous>` types: too deep for code that recurses on it
    types = bytes([0x70, 0x7D]) + b"".join(bytes([0x70]) + _sleb(i) for i in range(199))
    body = bytes([0xC8, 0x01]) + types
    data = preamble() + bytes([0x07]) + _leb(len(body)) + body
    with pytest.raises(LoadError, match="nested too deep"):
        read_component(data)
    # tuples of the previous type twice, 20 levels: 2^20 nodes once unfolded
    types = bytes([0x6F, 0x02, 0x7D, 0x7D]) + b"".join(bytes([0x6F, 0x02, i, i]) for i in range(19))
    body = bytes([20]) + types
    data = preamble() + bytes([0x07]) + _leb(len(body)) + body
    with pytest.raises(LoadError, match="type too large"):
        read_component(data)
    # a function of 60 parameters of a 2^11-node type each: each type is fine, the
    # function's sum is not
    types = bytes([0x6F, 0x02, 0x7D, 0x7D]) + b"".join(bytes([0x6F, 0x02, i, i]) for i in range(10))
    params = b"".join(bytes([0x01, 0x61 + i % 26]) + bytes([10]) for i in range(60))
    func = bytes([0x40, 60]) + params + bytes([0x01, 0x00])
    body = bytes([12]) + types + func
    data = preamble() + bytes([0x07]) + _leb(len(body)) + body
    with pytest.raises(LoadError, match="function type too large"):
        read_component(data)
    # components nested 40 deep
    inner = preamble()
    for _ in range(40):
        inner = preamble() + bytes([0x04]) + _leb(len(inner)) + inner
    with pytest.raises(LoadError, match="nested more than"):
        read_component(inner)


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _sleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if (n == 0 and not b & 0x40) or (n == -1 and b & 0x40):
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def _only_load_errors(data: bytes) -> None:
    offset: int | None = 0
    try:
        read_component(data)
    except LoadError as exc:
        offset = exc.offset
    assert offset is not None
    assert 0 <= offset <= len(data)


_FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_FUZZ
@given(data=st.data())
def test_fuzz_truncations_and_mutations(everything: bytes, data: st.DataObject) -> None:
    blob = bytearray(everything)
    cut = data.draw(st.integers(0, len(blob)))
    edits = data.draw(
        st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(0, 255)), max_size=4)
    )
    for at, value in edits:
        blob[at] = value
    _only_load_errors(bytes(blob[:cut]) if data.draw(st.booleans()) else bytes(blob))


@_FUZZ
@given(body=st.binary(max_size=200))
def test_fuzz_random_sections(body: bytes) -> None:
    _only_load_errors(preamble() + body)
    _only_load_errors(body)


@_FUZZ
@given(
    sections=st.lists(st.tuples(st.integers(0, 13), st.binary(max_size=40)), min_size=1, max_size=6)
)
def test_fuzz_well_framed_sections(sections: list[tuple[int, bytes]]) -> None:
    # sections with correct lengths: the reader gets past framing into their contents
    data = preamble() + b"".join(bytes([sid]) + _leb(len(b)) + b for sid, b in sections)
    _only_load_errors(data)


def test_items_are_typed_consistently(everything: bytes) -> None:
    """Every import and export item is one of the item classes, and each alias of an
    instance export gets exactly the item the instance type declares."""
    read = read_component(everything)
    item_classes = (t.FuncType, InstanceType, ComponentType, TypeItem, ValueItem, CoreModuleItem)
    items: list[Item] = [*read.imports.values(), *read.exports.values()]
    assert all(isinstance(i, item_classes) for i in items)
    assert any(isinstance(d, ResourceDef) for d in read.definitions)


@pytest.mark.guest
@pytest.mark.slow
def test_fuzz_mutations_of_a_python_guest(cases_component: trio_isyswasfa.Component) -> None:
    """Byte mutations and truncations of a real 20 MB guest, outside its core modules
    (whose bytes the reader does not parse), are read or refused with a LoadError."""
    data = Path(cases_component.name).read_bytes()
    modules = sorted(
        (m.offset, m.offset + len(m.data)) for c in read_component(data).walk() for m in c.modules
    )
    spans, start = [], 0
    for begin, end in modules:
        if begin > start:
            spans.append((start, begin))
        start = end
    spans.append((start, len(data)))

    @settings(max_examples=40, deadline=None)
    @given(st.data())
    def mutate(draw: st.DataObject) -> None:
        blob = bytearray(data)
        for _ in range(draw.draw(st.integers(1, 3))):
            begin, end = draw.draw(st.sampled_from(spans))
            blob[draw.draw(st.integers(begin, end - 1))] = draw.draw(st.integers(0, 255))
        cut = draw.draw(st.one_of(st.just(len(blob)), st.integers(0, len(blob))))
        _only_load_errors(bytes(blob[:cut]))

    mutate()


def test_reading_spawns_no_process(everything: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the reader spawned a process")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(os, "posix_spawn", refuse)
    monkeypatch.setattr(os, "fork", refuse)
    read_component(everything)


def test_each_instantiation_defines_its_own_resources(tmp_path: Path) -> None:
    wat = """
    (component
      (component $maker
        (core module $m (func (export "dtor") (param i32)))
        (core instance $i (instantiate $m))
        (type $r (resource (rep i32) (dtor (core func $i "dtor"))))
        (core func $new (canon resource.new $r))
        (core module $n (import "" "new" (func (param i32) (result i32)))
          (func (export "make") (param i32) (result i32) (call 0 (local.get 0))))
        (core instance $j (instantiate $n (with "" (instance (export "new" (func $new))))))
        (export $rt "thing" (type $r))
        (func (export "make") (param "rep" u32) (result (own $rt))
          (canon lift (core func $j "make"))))
      (instance $a (instantiate $maker))
      (instance $b (instantiate $maker))
      (export "a" (instance $a))
      (export "b" (instance $b))
    )
    """
    data = parse_wat(tmp_path, wat)
    read = read_component(data)
    cross_check(read, stock.compile_component(data, use_cache=False), stock.engine())
    a, b = read.exports["a"], read.exports["b"]
    assert isinstance(a, InstanceType)
    assert isinstance(b, InstanceType)
    thing_a, thing_b = a.export("thing"), b.export("thing")
    assert isinstance(thing_a, TypeItem)
    assert isinstance(thing_b, TypeItem)
    assert thing_a.type is not thing_b.type
    assert a.export("make") == t.FuncType(
        (("rep", t.PrimType(t.Primitive.U32)),),
        t.OwnType(thing_a.type),  # type: ignore[arg-type]
    )
    (maker,) = read.components
    (res,) = maker.resources
    assert res.resource.name == "thing"
    assert res.dtor == 0
