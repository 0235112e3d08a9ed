"""Engine stage 2: a component's core instances made on wasmtime's core API, following
its core instance and alias definitions, and the core function behind a lift called."""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path
from typing import Any

import pytest
import wasmtime

import trio_isyswasfa
from trio_isyswasfa import LinkError
from trio_isyswasfa import _engine as stock
from trio_isyswasfa.engine import _types as t
from trio_isyswasfa.engine._instance import (
    CoreInstances,
    ImportedFunc,
    LiftedFunc,
    _Scratch,
    compile_modules,
)
from trio_isyswasfa.engine._model import (
    CanonBuiltin,
    CanonLower,
    CanonResource,
    ComponentDef,
    CoreInstantiate,
    Sort,
)
from trio_isyswasfa.engine._reader import read_component
from trio_isyswasfa.tools._paths import tool_command

ADDER = """
(component
  (import "double" (func $double (param "x" u32) (result u32)))
  (core module $m
    (import "host" "double" (func $double (param i32) (result i32)))
    (memory (export "memory") 1)
    (global $calls (mut i32) (i32.const 0))
    (func (export "add") (param i32 i32) (result i32)
      (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
      (i32.add (call $double (local.get 0)) (local.get 1)))
    (func (export "calls") (result i32) (global.get $calls)))
  (core func $double (canon lower (func $double)))
  (core instance $host (export "double" (func $double)))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (alias core export $i "memory" (core memory $mem))

  ;; a second module reads the first one's memory: an inline instance passes it on
  (core module $n
    (import "m" "memory" (memory 1))
    (func (export "peek") (param i32) (result i32) (i32.load8_u (local.get 0))))
  (core instance $mi (export "memory" (memory $mem)))
  (core instance $ni (instantiate $n (with "m" (instance $mi))))

  (func $add (param "a" u32) (param "b" u32) (result u32)
    (canon lift (core func $i "add")))
  (func $peek (param "at" u32) (result u32)
    (canon lift (core func $ni "peek") (memory $mem)))
  (func $calls (result u32) (canon lift (core func $i "calls")))
  (export "add" (func $add))
  (export $p "peek" (func $peek))
  (export "peek-again" (func $p))
  (export "calls" (func $calls))
)
"""


def wat_component(tmp: Path, wat: str) -> ComponentDef:
    (tmp / "c.wat").write_text(wat)
    proc = subprocess.run(
        [*tool_command("wasm-tools"), "parse", str(tmp / "c.wat"), "-o", str(tmp / "c.wasm")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return read_component((tmp / "c.wasm").read_bytes())


def new_store() -> wasmtime.Store:
    store = wasmtime.Store(stock.engine())
    store.set_epoch_deadline(1 << 40)  # the engine interrupts at epochs; nothing ticks here
    return store


def test_calls_the_core_functions_behind_lifts(tmp_path: Path) -> None:
    component = wat_component(tmp_path, ADDER)
    store = new_store()
    asked: list[tuple[Any, list[str], list[str]]] = []

    def trampoline(d: Any, ty: wasmtime.FuncType, callee: Any) -> wasmtime.Func:
        asked.append((d, [str(p) for p in ty.params], [str(r) for r in ty.results]))
        assert callee == ImportedFunc(("double",), d.type)
        return wasmtime.Func(store, ty, lambda x: 2 * x)

    instances = CoreInstances(component, store, trampoline=trampoline, use_cache=False)
    # the lowered import was made once, with the core type the module imports it as
    ((lowered, params, results),) = asked
    assert isinstance(lowered, CanonLower)
    assert lowered.type.params == (("x", t.PrimType(t.Primitive.U32)),)
    assert (params, results) == (["i32"], ["i32"])

    add_func = instances.lifted("add")
    lift, add = add_func.lift, add_func.core
    assert lift.type.params == (
        ("a", t.PrimType(t.Primitive.U32)),
        ("b", t.PrimType(t.Primitive.U32)),
    )
    assert add(store, 5, 7) == 17  # the core add calls the host's double through the lowering
    assert add(store, 1, 1) == 3
    calls = instances.lifted("calls").core
    assert calls(store) == 2  # state lives in the one core instance both exports reach

    # the second module sees the first one's memory
    instances.memory(0).write(store, b"\x2a", 100)
    peek = instances.lifted("peek")
    assert peek.core(store, 100) == 42
    assert peek.lift.options.memory == 0
    assert instances.lifted("peek-again") == peek  # an export of an export


def test_each_instantiation_is_its_own(tmp_path: Path) -> None:
    component = wat_component(tmp_path, ADDER)
    store = new_store()

    def trampoline(d: Any, ty: wasmtime.FuncType, callee: Any) -> wasmtime.Func:
        return wasmtime.Func(store, ty, lambda x: x)

    first = CoreInstances(component, store, trampoline=trampoline)
    second = CoreInstances(component, store, trampoline=trampoline)
    first.lifted("add").core(store, 1, 2)
    assert first.lifted("calls").core(store) == 1
    assert second.lifted("calls").core(store) == 0


def _identity_trampoline(store: wasmtime.Store) -> Any:
    return lambda d, ty, callee: wasmtime.Func(store, ty, lambda x: x)


def _pool_bytes(instances: CoreInstances) -> bytes:
    run = instances._run
    return ctypes.string_at(run.pool_addr, ctypes.sizeof(run.pool))


def test_an_instance_keeps_its_own_imports_after_the_next_opening(tmp_path: Path) -> None:
    # openings reuse one scratch pool per component: what an instance made into it (its
    # canon functions) is copied out when its opening ends, so the next opening, in
    # another store, overwrites none of it
    component = wat_component(tmp_path, ADDER)
    first_store, second_store = new_store(), new_store()
    first = CoreInstances(component, first_store, trampoline=_identity_trampoline(first_store))
    kept = _pool_bytes(first)
    assert kept.strip(b"\0")  # the lowered import and the memory are in it
    second = CoreInstances(component, second_store, trampoline=_identity_trampoline(second_store))
    assert _pool_bytes(second) != kept  # the same slots, another store's items
    assert _pool_bytes(first) == kept
    assert first.lifted("add").core(first_store, 1, 2) == 3
    assert second.lifted("add").core(second_store, 3, 4) == 7


def test_an_opening_while_another_holds_the_scratch_uses_its_own(tmp_path: Path) -> None:
    # a second opening during the first (a start function opening an instance of the
    # same component, another thread) must not write into the pool the first is filling
    component = wat_component(tmp_path, ADDER)
    store = new_store()
    CoreInstances(component, store, trampoline=_identity_trampoline(store))
    plan = component.engine_cache["plan"]
    held = _Scratch.take(plan)
    try:
        size = ctypes.sizeof(held.pool)
        ctypes.memset(held.pool_addr, 0xAB, size)
        other = new_store()
        inner = CoreInstances(component, other, trampoline=_identity_trampoline(other))
        assert ctypes.string_at(held.pool_addr, size) == b"\xab" * size
        assert inner.lifted("add").core(other, 2, 2) == 4
    finally:
        held.give_back()


def test_a_failed_opening_gives_the_scratch_back(tmp_path: Path) -> None:
    component = wat_component(tmp_path, ADDER)
    with pytest.raises(LinkError, match="no trampoline"):
        CoreInstances(component, new_store())  # fails halfway through its replay
    scratch = component.engine_cache["plan"].scratch
    assert isinstance(scratch, _Scratch)
    assert not scratch.held


def test_a_lowered_import_needs_a_trampoline(tmp_path: Path) -> None:
    component = wat_component(tmp_path, ADDER)
    with pytest.raises(LinkError, match=r"host\.double needs CanonLower, and no trampoline"):
        CoreInstances(component, new_store())


def test_missing_imports_and_exports_are_link_errors(tmp_path: Path) -> None:
    wat = """
    (component
      (core module $m (func (export "f")))
      (core module $n (import "x" "f" (func)))
      (core instance $i (instantiate $m))
      (core instance $j (instantiate $n (with "x" (instance $i))))
    )
    """
    component = wat_component(tmp_path, wat)
    CoreInstances(component, new_store())  # as written, it instantiates
    # an argument under another name than the module imports from: wasm-tools refuses
    # to write that, so the model is edited as a hostile binary could make it (before
    # its first instance: the plan made then is kept with the component)
    component = wat_component(tmp_path, wat)
    instantiate = component.definitions[3]
    assert isinstance(instantiate, CoreInstantiate)
    instantiate.args = (("y", 0),)
    with pytest.raises(LinkError, match=r"imports x\.f, which its instantiation"):
        CoreInstances(component, new_store())

    store = new_store()
    adder = CoreInstances(
        wat_component(tmp_path, ADDER),
        store,
        trampoline=lambda d, ty, callee: wasmtime.Func(store, ty, lambda x: x),
    )
    with pytest.raises(LinkError, match="exports no function 'nope'"):
        adder.lifted("nope")


NESTED = """
(component
  (import "log" (func $log (param "n" u32)))
  (component $inner
    (import "log" (func $log (param "n" u32)))
    (core module $m
      (import "" "log" (func $log (param i32)))
      (func (export "square") (param i32) (result i32)
        (call $log (local.get 0))
        (i32.mul (local.get 0) (local.get 0))))
    (core func $log (canon lower (func $log)))
    (core instance $host (export "log" (func $log)))
    (core instance $i (instantiate $m (with "" (instance $host))))
    (func $square (param "x" u32) (result u32) (canon lift (core func $i "square")))
    (instance $api (export "square" (func $square)))
    (export "api" (instance $api)))
  (instance $a (instantiate $inner (with "log" (func $log))))
  (instance $b (instantiate $inner (with "log" (func $log))))
  (alias export $a "api" (instance $a-api))
  (alias export $a-api "square" (func $square))

  ;; the outer component calls the inner one's function through a lowering
  (core func $square-lowered (canon lower (func $square)))
  (core instance $imports (export "square" (func $square-lowered)))
  (core module $outer
    (import "inner" "square" (func $square (param i32) (result i32)))
    (func (export "fourth") (param i32) (result i32)
      (call $square (call $square (local.get 0)))))
  (core instance $o (instantiate $outer (with "inner" (instance $imports))))
  (func $fourth (param "x" u32) (result u32) (canon lift (core func $o "fourth")))
  (export "fourth" (func $fourth))
  (export "a" (instance $a))
  (export "b" (instance $b))
)
"""


def test_nested_components_and_calls_between_them(tmp_path: Path) -> None:
    component = wat_component(tmp_path, NESTED)
    store = new_store()
    logged: list[int] = []
    callees: list[Any] = []

    def trampoline(d: Any, ty: wasmtime.FuncType, callee: Any) -> wasmtime.Func:
        callees.append(callee)
        if isinstance(callee, LiftedFunc):
            # u32 to u32: the canonical ABI passes it through; a real adapter would
            # lower and lift here
            return wasmtime.Func(store, ty, lambda x: callee.core(store, x))
        assert callee == ImportedFunc(
            ("log",), t.FuncType((("n", t.PrimType(t.Primitive.U32)),), None)
        )
        return wasmtime.Func(store, ty, logged.append)

    instances = CoreInstances(component, store, trampoline=trampoline, use_cache=False)
    # two instances of the inner component, each with its own core instance
    a, b = instances.nested
    assert a.component is b.component
    assert a.lifted("api", "square").core is not b.lifted("api", "square").core
    assert instances.lifted("a", "api", "square").owner is a
    assert instances.lifted("b", "api", "square").core(store, 5) == 25
    assert logged == [5]
    # the outer core module calls a's lifted square twice through the lowering
    assert instances.lifted("fourth").core(store, 3) == 81
    assert logged == [5, 3, 9]
    # the inner log is lowered once per inner instance, the square once
    assert sorted(type(c).__name__ for c in callees) == [
        "ImportedFunc",
        "ImportedFunc",
        "LiftedFunc",
    ]


def test_async_builtins_are_made_by_the_trampoline(tmp_path: Path) -> None:
    from test_engine_reader import ASYNC_WIT

    (tmp_path / "world.wit").write_text(ASYNC_WIT)
    core, comp = tmp_path / "core.wasm", tmp_path / "comp.wasm"
    embed = ["component", "embed", "--dummy-names", "legacy", "--async-callback"]
    for args in (
        [*embed, str(tmp_path), "-w", "service", "-o", str(core)],
        ["component", "new", str(core), "-o", str(comp)],
    ):
        subprocess.run([*tool_command("wasm-tools"), *args], check=True, capture_output=True)
    component = read_component(comp.read_bytes())
    store = new_store()
    made: dict[str, int] = {}

    def trampoline(d: Any, ty: wasmtime.FuncType, callee: Any) -> wasmtime.Func:
        name = d.name if isinstance(d, CanonBuiltin) else type(d).__name__
        made[name] = made.get(name, 0) + 1

        def trap(*args: Any) -> Any:
            raise RuntimeError("not wired yet")

        return wasmtime.Func(store, ty, trap)

    instances = CoreInstances(component, store, trampoline=trampoline, use_cache=False)
    assert {"task.return", "waitable-set.wait", "stream.read", "future.write"} <= set(made)
    run = instances.lifted("run")
    assert run.lift.type.is_async
    assert run.lift.options.callback is not None
    # async lifting with a callback: the core function takes the flat parameter and
    # returns a status code
    ty = run.core.type(store)
    assert [str(p) for p in ty.params] == ["i32"]
    assert [str(r) for r in ty.results] == ["i32"]


@pytest.mark.guest
@pytest.mark.slow
def test_instantiates_a_composed_component(
    tmp_path: Path,
    middleware_component: trio_isyswasfa.Component,
    service_component: trio_isyswasfa.Component,
) -> None:
    from trio_isyswasfa.tools.compose import compose

    out = tmp_path / "composed.wasm"
    compose(middleware_component.name, [service_component.name], out)
    component = read_component(out.read_bytes())
    store = new_store()
    callees: list[Any] = []

    def trampoline(d: Any, ty: wasmtime.FuncType, callee: Any) -> wasmtime.Func:
        callees.append(callee)

        def trap(*args: Any) -> Any:
            raise RuntimeError("not wired yet")

        return wasmtime.Func(store, ty, trap)

    instances = CoreInstances(component, store, trampoline=trampoline)
    modules = [m for c in instances.walk() for m in c.modules]
    assert len(modules) == sum(len(c.modules) for c in component.walk()) >= 20
    # the middleware calls the service's handler: a lowering of a function another
    # component instance lifted
    assert any(isinstance(c, LiftedFunc) for c in callees)
    assert any(isinstance(c, ImportedFunc) for c in callees)


@pytest.mark.guest
@pytest.mark.slow
def test_instantiates_every_core_module_of_a_python_guest(
    cases_component: trio_isyswasfa.Component,
) -> None:
    component = read_component(Path(cases_component.name).read_bytes())
    store = new_store()
    made: list[Any] = []

    def trampoline(d: Any, ty: wasmtime.FuncType, callee: Any) -> wasmtime.Func:
        made.append(d)

        def trap(*args: Any) -> Any:
            raise RuntimeError("not wired yet")

        return wasmtime.Func(store, ty, trap)

    compiled = compile_modules(component)
    instances = CoreInstances(component, store, trampoline=trampoline, compiled=compiled)
    assert all(any(m is c for c in compiled.values()) for m in instances.modules)
    # componentize-py: 14 core modules (the interpreter, libc, shims and adapters)
    assert len(instances.modules) == len(component.modules) >= 10
    assert all(isinstance(m, wasmtime.Module) for m in instances.modules)
    assert len(instances.instances) == len(component.space(Sort.CORE_INSTANCE))
    assert any(isinstance(d, CanonLower) for d in made)
    assert any(isinstance(d, CanonResource) for d in made)
    poll = instances.lifted("isyswasfa-poll-cases-guest")
    assert poll.lift.options.memory is not None
    assert poll.lift.options.realloc is not None
    assert isinstance(poll.core.type(store), wasmtime.FuncType)
    # the interface's functions come out of a nested shim component, lifted by the
    # outer one: the same core instances
    run = instances.lifted("test:cases/cases", "sleep-ms-isyswasfa-start")
    assert run.owner is instances
    assert len(instances.walk()) == 3
