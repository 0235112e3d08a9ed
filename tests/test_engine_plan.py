"""Engine instantiation from a per-component plan (``engine/_plan.py``): the plan and the
compiled modules are made once per component and shared by its instances, and every
instance still gets its own store, memory, globals, handle tables and host functions."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import wasmtime
from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine_instance import ADDER, new_store, wat_component
from test_engine_run import API, CASES, WAT, WIT, Host

from trio_isyswasfa import InstanceDead, LinkError, LoadError
from trio_isyswasfa.engine._component import OwnEngineInstance
from trio_isyswasfa.engine._fiber import FiberStore
from trio_isyswasfa.engine._instance import CoreInstances, compile_module, instance_plan
from trio_isyswasfa.engine._model import AliasExport
from trio_isyswasfa.engine._plan import ImportTypes, _shape_of, has_start_section
from trio_isyswasfa.engine._reader import read_component, read_core_shape
from trio_isyswasfa.testing import build_wat_component


@pytest.fixture(scope="module")
def run_wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    wit = tmp_path_factory.mktemp("plan") / "run.wit"
    wit.write_text(WIT)
    return build_wat_component(wit, "w", WAT)


def doubling(store: wasmtime.Store) -> Any:
    """A trampoline making every canon function a host function that doubles."""

    def trampoline(d: Any, ty: wasmtime.FuncType, callee: Any) -> wasmtime.Func:
        return wasmtime.Func(store, ty, lambda x: 2 * x)

    return trampoline


def test_instances_share_the_plan_and_the_modules(run_wasm: bytes) -> None:
    component = read_component(run_wasm)
    a = OwnEngineInstance(component, Host().resolve)
    b = OwnEngineInstance(component, Host().resolve)
    try:
        assert a.root.plan is b.root.plan is instance_plan(component)
        assert a.root.modules == b.root.modules
        assert all(x is y for x, y in zip(a.root.modules, b.root.modules, strict=True))
        assert a.store is not b.store
        # another read of the same bytes is another plan, on the same compiled modules
        c = OwnEngineInstance(read_component(run_wasm), Host().resolve)
        assert c.root.plan is not a.root.plan
        assert all(x is y for x, y in zip(a.root.modules, c.root.modules, strict=True))
        c.close()
    finally:
        a.close()
        b.close()


def test_a_closed_instance_refuses_its_exports(run_wasm: bytes) -> None:
    # closing drops what its exports were made of (so that it is freed at once)
    inst = OwnEngineInstance(read_component(run_wasm), Host().resolve)
    shout = inst.func(API, "shout")
    inst.close()
    with pytest.raises(InstanceDead):
        shout.call_sync("x")
    with pytest.raises(InstanceDead):
        inst.func(API, "posts")


@pytest.mark.parametrize(("name", "args", "expected"), CASES)
def test_a_replayed_plan_gives_the_same_results(
    run_wasm: bytes, name: str, args: tuple[Any, ...], expected: Any
) -> None:
    component = read_component(run_wasm)  # a fresh plan, then the same one replayed
    for _ in range(3):
        inst = OwnEngineInstance(component, Host().resolve)
        try:
            assert inst.func(API, name).call_sync(*args) == expected
        finally:
            inst.close()


def test_instances_of_one_component_share_no_state(run_wasm: bytes) -> None:
    component = read_component(run_wasm)
    host_a, host_b = Host(), Host()
    a = OwnEngineInstance(component, host_a.resolve)
    b = OwnEngineInstance(component, host_b.resolve)
    try:
        # globals: shout's post-return counts in its own instance only
        a.func(API, "shout").call_sync("x")
        a.func(API, "shout").call_sync("y")
        assert a.func(API, "posts").call_sync() == 2
        assert b.func(API, "posts").call_sync() == 0
        # memory
        mem_a, mem_b = a.root.memory(0), b.root.memory(0)
        mem_a.write(a.store, b"\x2a", 3000)
        assert mem_a.read(a.store, 3000, 3001) == b"\x2a"
        assert mem_b.read(b.store, 3000, 3001) == b"\x00"
        # handle tables: a handle made in one is unknown to the other
        (thing,) = [r.resource for r in component.resources] or [
            r.resource for c in component.walk() for r in c.resources
        ]
        assert a.root.table is not b.root.table
        index = a.root.table.resource_new(thing, 7)
        assert a.root.table.resource_rep(thing, index) == 7
        with pytest.raises(Exception, match="handle"):
            b.root.table.resource_rep(thing, index)
        # host functions: each instance calls its own host's
        assert a.func(API, "read-counter").call_sync(3) == 6
        assert host_a.dropped == [100]
        assert host_b.dropped == []
        assert b.func(API, "thing-cycle").call_sync(9) == 9
        assert host_b.notes == [1009]
        assert host_a.notes == []
    finally:
        a.close()
        b.close()


def test_a_failed_instance_leaves_the_next_one_whole(run_wasm: bytes) -> None:
    component = read_component(run_wasm)
    a = OwnEngineInstance(component, Host().resolve)
    with pytest.raises(Exception, match="unreachable"):
        a.func(API, "boom").call_sync()
    b = OwnEngineInstance(component, Host().resolve)
    try:
        assert b.func(API, "add").call_sync(2, 3) == 5
    finally:
        a.close()
        b.close()


def test_core_instances_of_one_plan_in_separate_stores(tmp_path: Path) -> None:
    component = wat_component(tmp_path, ADDER)
    stores = [new_store(), new_store()]
    made = [CoreInstances(component, s, trampoline=doubling(s)) for s in stores]
    (s1, s2), (i1, i2) = stores, made
    assert i1.lifted("add").core(s1, 5, 7) == 17
    assert i1.lifted("calls").core(s1) == 1
    assert i2.lifted("calls").core(s2) == 0  # its own global
    i1.memory(0).write(s1, b"\x07", 10)
    assert i1.lifted("peek").core(s1, 10) == 7  # the second module sees the first's memory
    assert i2.lifted("peek").core(s2, 10) == 0
    assert i1.statistics().core_instances == 2
    assert i1.statistics().imports == 2  # host.double and m.memory
    assert not i1.statistics().async_path


async def test_a_fiber_store_takes_the_async_path(tmp_path: Path) -> None:
    component = wat_component(tmp_path, ADDER)
    fibers = FiberStore()  # yields at epoch deadlines: wasmtime refuses the sync path
    instances = CoreInstances(component, fibers.store, trampoline=doubling(fibers.store))
    assert instances.statistics().async_path
    assert await fibers.call(instances.lifted("add").core, 5, 7) == 17
    assert await fibers.call(instances.lifted("calls").core) == 1


async def test_made_on_the_fast_path_then_run_on_fibers(tmp_path: Path) -> None:
    component = wat_component(tmp_path, ADDER)
    store = new_store()
    instances = CoreInstances(component, store, trampoline=doubling(store))
    assert not instances.statistics().async_path
    fibers = FiberStore(store)  # from now on every call runs on a fiber
    add = fibers.func(instances.lifted("add").core)
    assert await add(5, 7) == 17
    with trio.fail_after(5):
        assert await add(1, 1) == 3


START = """
(component
  (import "note" (func $note (param "n" u32)))
  (core func $note-low (canon lower (func $note)))
  (core instance $imp (export "note" (func $note-low)))
  (core module $m
    (import "host" "note" (func $note (param i32)))
    (global $g (mut i32) (i32.const 0))
    (func $init (global.set $g (i32.const 42)) (call $note (i32.const 5)))
    (start $init)
    (func (export "g") (result i32) (global.get $g)))
  (core instance $i (instantiate $m (with "host" (instance $imp))))
  (func $g (result u32) (canon lift (core func $i "g")))
  (export "g" (func $g))
)
"""


def test_core_start_functions_run_when_instantiated(tmp_path: Path) -> None:
    component = wat_component(tmp_path, START)
    (module,) = component.modules
    assert has_start_section(module.data)
    (adder_module, _) = wat_component(tmp_path, ADDER).modules
    assert not has_start_section(adder_module.data)
    store = new_store()
    noted: list[int] = []

    def trampoline(d: Any, ty: wasmtime.FuncType, callee: Any) -> wasmtime.Func:
        return wasmtime.Func(store, ty, noted.append)

    for _ in range(2):
        instances = CoreInstances(component, store, trampoline=trampoline)
        assert instances.lifted("g").core(store) == 42
    assert noted == [5, 5]


def test_a_start_function_that_traps_is_a_guest_trap(tmp_path: Path) -> None:
    component = wat_component(tmp_path, START.replace("(call $note (i32.const 5))", "unreachable"))
    store = new_store()
    with pytest.raises(Exception, match=r"core module 0 trapped starting"):
        CoreInstances(component, store, trampoline=doubling(store))


def test_an_alias_of_a_missing_export_is_a_link_error(tmp_path: Path) -> None:
    component = wat_component(tmp_path, ADDER)
    alias = next(d for d in component.definitions if isinstance(d, AliasExport) and d.core)
    alias.name = "nope"  # as a hostile binary could say
    with pytest.raises(LinkError, match="has no export 'nope'"):
        CoreInstances(component, new_store(), trampoline=doubling(new_store()))


def test_compiled_modules_are_shared_in_the_process(tmp_path: Path) -> None:
    (module, _) = wat_component(tmp_path, ADDER).modules
    first = compile_module(module.data, use_cache=False)
    assert compile_module(bytes(module.data), use_cache=False) is first


# A start function that calls an async host function (as blocking WASI functions are made
# on the fiber path) aborts the whole process on wasmtime's synchronous instantiation:
# modules with a start section take the async one. Run in a child, which a regression kills.
ASYNC_START = """
import sys, types, wasmtime
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from test_engine_instance import new_store, wat_component
from test_engine_plan import START
from pathlib import Path
from trio_isyswasfa.engine._fiber import FiberStore
from trio_isyswasfa.engine._instance import CoreInstances

component = wat_component(Path(sys.argv[3]), START)
store = new_store()  # not a fiber store: the sync path is open to it
noted = []

def trampoline(d, ty, callee):
    # an async host function, made as FiberStore.host_func makes them
    fake = types.SimpleNamespace(store=store, _host_keys=[], stop_server=lambda: None)
    return FiberStore.host_func(fake, ty, noted.append)

instances = CoreInstances(component, store, trampoline=trampoline)
print(noted, instances.statistics().async_path)
"""


def test_a_start_function_may_call_async_host_functions(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent
    proc = subprocess.run(
        [sys.executable, "-c", ASYNC_START, str(root.parent), str(root), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["[5]", "False"]


def test_a_component_and_its_plan_go_together(run_wasm: bytes) -> None:
    import gc
    import weakref

    component = read_component(run_wasm)
    inst = OwnEngineInstance(component, Host().resolve)
    assert inst.func(API, "add").call_sync(1, 2) == 3
    inst.close()
    gone = weakref.ref(component)
    del component, inst
    gc.collect()
    assert gone() is None  # the plan refers to its component, and does not keep it


async def test_async_host_functions_on_the_fast_path_then_fibers(tmp_path: Path) -> None:
    """The cheap order for a fiber instance: host functions (async ones too) and the
    core instances made in a plain store, on the synchronous path, then the store
    turned into a fiber store; a guest then waits in an async host function."""
    import types

    component = wat_component(tmp_path, ADDER)
    store = new_store()

    async def later() -> int:
        await trio.lowlevel.checkpoint()
        return 2

    def doubled_later(x: int) -> Any:
        factor = yield later  # the guest's fiber waits here
        return factor * x

    def trampoline(d: Any, ty: wasmtime.FuncType, callee: Any) -> wasmtime.Func:
        fake = types.SimpleNamespace(store=store, _host_keys=[], stop_server=lambda: None)
        return FiberStore.host_func(fake, ty, doubled_later)  # type: ignore[arg-type]

    instances = CoreInstances(component, store, trampoline=trampoline)
    assert not instances.statistics().async_path
    fibers = FiberStore(store)
    with trio.fail_after(5):
        assert await fibers.call(instances.lifted("add").core, 5, 7) == 17


# -- the plan reads core modules' imports and exports from their bytes ------------------

SHAPED = """(module
  (rec (type $pair (func (param i32 i64) (result f32 f64))) (type $unit (func)))
  (type $sub (sub (func (param i32) (result i32))))
  (import "env" "pair" (func (type $pair)))
  (import "env" "sub" (func (type $sub)))
  (import "env" "memory" (memory 1 2))
  (import "env" "table" (table 3 funcref))
  (import "globals" "g" (global (mut i32)))
  (import "" "" (func))
  (func $start)
  (start $start)
  (func (export "f") (type $sub) local.get 0)
  (export "memory" (memory 0))
  (export "table" (table 0))
  (export "g" (global 0))
  (export "ünïcode" (func $start)))"""


def test_the_core_shape_read_from_the_bytes_is_what_wasmtime_says() -> None:
    data = wasmtime.wat2wasm(SHAPED)
    module = compile_module(data)
    shape = read_core_shape(data)
    assert [(m, n) for m, n, _ in shape.imports] == [
        (i.module, i.name or "") for i in module.imports
    ]
    assert shape.exports == {e.name for e in module.exports}
    assert shape.has_start
    assert not read_core_shape(wasmtime.wat2wasm('(module (func (export "x")))')).has_start
    types = ImportTypes(tuple(e for _, _, e in shape.imports))
    assert len(types) == len(module.imports)
    for i, imp in enumerate(module.imports):
        theirs = imp.type
        if isinstance(theirs, wasmtime.FuncType):
            ours = types[i]
            assert isinstance(ours, wasmtime.FuncType)
            assert list(map(str, ours.params)) == list(map(str, theirs.params))
            assert list(map(str, ours.results)) == list(map(str, theirs.results))
            assert types[i] is ours  # made once
        else:
            assert not isinstance(types[i], wasmtime.FuncType)


def test_one_signature_is_one_function_type_in_every_module() -> None:
    """Import types of one core signature are one ``wasmtime.FuncType`` across modules
    (and so across components): what the engine works out per type object, the value
    packers of its host functions, is worked out once per signature."""
    one = read_core_shape(
        wasmtime.wat2wasm(
            '(module (import "a" "f" (func (param i32) (result i64)))'
            ' (import "a" "g" (func (param i32))))'
        )
    )
    other = read_core_shape(
        wasmtime.wat2wasm('(module (import "b" "h" (func (param i32) (result i64))))')
    )
    first = ImportTypes(tuple(e for _, _, e in one.imports))
    second = ImportTypes(tuple(e for _, _, e in other.imports))
    assert first[0] is second[0]
    assert first[1] is not first[0]
    assert list(map(str, first[1].params)) == ["i32"]
    assert not first[1].results


GC_MODULE = """(module
  (type $s (struct (field i32)))
  (import "env" "f" (func (param (ref null $s))))
  (func (export "g")))"""


def test_a_module_the_reader_does_not_read_is_planned_through_wasmtime() -> None:
    """A type of the GC proposal: the plan asks wasmtime's C API for the names."""
    data = wasmtime.wat2wasm(GC_MODULE)
    with pytest.raises(LoadError, match="only function types"):
        read_core_shape(data)
    shape = _shape_of(compile_module(data), memoryview(data))
    assert shape.names == (("env", "f"),)
    assert shape.exports == {"g"}
    assert not shape.has_start


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_damaged_core_modules_raise_load_errors(data: st.DataObject) -> None:
    """Cut or changed bytes give a shape or a LoadError, never another exception."""
    good = bytearray(wasmtime.wat2wasm(SHAPED))
    if data.draw(st.booleans()):
        good = good[: data.draw(st.integers(0, len(good)))]
    for _ in range(data.draw(st.integers(0, 4))):
        if good:
            good[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(LoadError):
        read_core_shape(bytes(good))
