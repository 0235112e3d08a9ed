"""Start functions the plan reads as inert take the synchronous instantiation (issue 12's
≤ 1 ms opening); any other start function keeps the async path, where it may reach an
async host function without aborting the process (``engine/_startcheck.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine_instance import new_store, wat_component

from trio_isyswasfa import LoadError
from trio_isyswasfa.engine._instance import CoreInstances, instance_plan
from trio_isyswasfa.engine._startcheck import ModuleCode, calls_of, start_is_inert

# One module whose start function uses every kind of instruction the check admits,
# calls a function of its own, and sets a global the export reads. It imports a host
# function it never calls.
INERT = """
(component
  (import "note" (func $note (param "n" u32)))
  (core func $note-low (canon lower (func $note)))
  (core instance $imp (export "note" (func $note-low)))
  (core module $m
    (import "host" "note" (func $note (param i32)))
    (memory 1)
    (table $t 2 funcref)
    (global $g (mut i32) (i32.const 0))
    (global $h (mut i64) (i64.const 0))
    (func $seven (result i32) (i32.const 7))
    (elem declare func $seven)
    (func $init (local i32 f64)
      (table.set $t (i32.const 0) (ref.func $seven))
      (table.set $t (i32.const 1) (ref.null func))
      (local.set 0 (call $seven))
      (block $out
        (br_if $out (i32.eqz (local.get 0)))
        (if (i32.gt_u (local.get 0) (i32.const 3))
          (then (local.set 0 (i32.mul (local.get 0) (i32.const 6))))
          (else (local.set 0 (i32.const -1)))))
      (block $a (block $b (br_table $a $b (i32.const 1))))
      (local.set 1 (f64.const 1.5))
      (i64.store offset=8 (i32.const 0) (i64.const 0x123456789))
      (memory.fill (i32.const 64) (i32.const 1) (i32.const 16))
      (drop (memory.grow (i32.const 0)))
      (drop (select (i32.const 1) (i32.const 2) (i32.const 0)))
      (drop (f32.const 2.5))
      (drop (i32.trunc_sat_f64_s (local.get 1)))
      (global.set $h (i64.load offset=8 (i32.const 0)))
      (global.set $g (i32.add (local.get 0) (i32.load8_u (i32.const 70)))))
    (start $init)
    (func (export "g") (result i32) (global.get $g)))
  (core instance $i (instantiate $m (with "host" (instance $imp))))
  (func $g (result u32) (canon lift (core func $i "g")))
  (export "g" (func $g))
)
"""

# wit-component's fixups module in a Rust guest: the start function is an imported
# function, another module's export (the guest's ``_initialize``). ``BODY`` is what that
# export runs.
FOLLOWED = """
(component
  (import "note" (func $note (param "n" u32)))
  (core func $note-low (canon lower (func $note)))
  (core instance $imp (export "note" (func $note-low)))
  (core module $main
    (import "host" "note" (func $note (param i32)))
    (table $t 2 funcref)
    (global $g (mut i32) (i32.const 0))
    (func $ctors BODY)
    (func $noop)
    (elem (table $t) (i32.const 0) func $noop)
    (func $other (global.set $g (i32.add (global.get $g) (i32.const 1))))
    (func (export "_initialize") (call $ctors) (call $other))
    (func (export "g") (result i32) (global.get $g)))
  (core instance $main (instantiate $main (with "host" (instance $imp))))
  (core module $fixups
    (import "main" "_initialize" (func $init))
    (start $init))
  (core instance $fixups (instantiate $fixups (with "main" (instance $main))))
  (func $g (result u32) (canon lift (core func $main "g")))
  (export "g" (func $g))
)
"""


def _open(tmp_path: Path, wat: str) -> tuple[CoreInstances, wasmtime.Store, list[int]]:
    component = wat_component(tmp_path, wat)
    store = new_store()
    noted: list[int] = []

    def trampoline(d: Any, ty: wasmtime.FuncType, callee: Any) -> wasmtime.Func:
        return wasmtime.Func(store, ty, noted.append)

    return CoreInstances(component, store, trampoline=trampoline), store, noted


def test_an_inert_start_function_runs_on_the_synchronous_path(tmp_path: Path) -> None:
    instances, store, noted = _open(tmp_path, INERT)
    (step,) = [s for n in instances.plan.nodes for s in n.steps if hasattr(s, "sync_start")]
    assert step.has_start
    assert step.sync_start
    assert instances.statistics().async_steps == 0
    assert instances.lifted("g").core(store) == 42 + 1  # its effects are there
    assert noted == []


def test_a_start_function_imported_from_another_module_is_followed(tmp_path: Path) -> None:
    instances, store, _ = _open(tmp_path, FOLLOWED.replace("BODY", "(nop)"))
    assert instances.statistics().async_steps == 0
    assert instances.lifted("g").core(store) == 1


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("(call $note (i32.const 5))", "calls a host function"),
        ("(call_indirect (i32.const 0))", "calls through a table"),
        ("(loop $l (br_if $l (i32.const 0)))", "has a loop"),
        ("(if (global.get $g) (then (call $ctors)))", "recurses"),
        ("(drop (v128.const i64x2 0 0))", "uses SIMD"),
    ],
)
def test_any_other_start_function_takes_the_async_path(tmp_path: Path, body: str, why: str) -> None:
    instances, store, noted = _open(tmp_path, FOLLOWED.replace("BODY", body))
    (step,) = [s for s in instances.plan.nodes[0].steps if getattr(s, "has_start", False)]
    assert not step.sync_start, why
    assert instances.statistics().async_steps == 1
    assert instances.lifted("g").core(store) == 1
    assert noted == ([5] if "note" in body else [])


@pytest.mark.parametrize(
    ("body", "inert"),
    [
        ("(memory.fill (i32.const 0) (i32.const 0) (i32.const 16))", True),
        ("(memory.fill (i32.const 0) (i32.const 0) (i32.const 0x40000000))", False),
        ("(memory.copy (i32.const 0) (i32.const 8) (i32.const 0x40000000))", False),
        ("(memory.fill (i32.const 0) (i32.const 0) (i32.const -1))", False),
        ("(memory.fill (i32.const 0) (i32.const 0) (global.get $n))", False),
        ("(table.fill $t (i32.const 0) (ref.null func) (i32.const 0x1000000))", False),
    ],
)
def test_a_bulk_instruction_counts_its_length(tmp_path: Path, body: str, inert: bool) -> None:
    """``memory.fill`` and its kind take time by their length, not their code's bytes:
    a start function filling 1 GiB (or a length the check cannot read) takes the async
    path, where the epoch bounds it; a short fill stays inert."""
    wat = FOLLOWED.replace(
        "(table $t 2 funcref)", "(table $t 2 funcref) (memory 16384) (global $n i32 (i32.const 8))"
    ).replace("BODY", body)
    plan = instance_plan(wat_component(tmp_path, wat))
    steps = [s for n in plan.nodes for s in n.steps if getattr(s, "has_start", False)]
    assert [s.sync_start for s in steps] == [inert]


def test_the_check_gives_up_past_its_budget(tmp_path: Path) -> None:
    """A chain of calls longer than the check reads, each function inert."""
    from trio_isyswasfa.engine import _startcheck

    n = _startcheck.MAX_FUNCTIONS
    chain = "".join(f"(func $f{i} (call $f{i + 1}))" for i in range(n))
    wat = FOLLOWED.replace("(func $ctors BODY)", f"(func $ctors (call $f0)) {chain} (func $f{n})")
    instances, store, _ = _open(tmp_path, wat)
    assert instances.statistics().async_steps == 1
    assert instances.lifted("g").core(store) == 1
    short = FOLLOWED.replace("(func $ctors BODY)", "(func $ctors (call $f0)) (func $f0)")
    assert _open(tmp_path, short)[0].statistics().async_steps == 0


def test_the_code_reader_finds_calls_and_exports() -> None:
    data = wasmtime.wat2wasm(
        """(module
          (import "a" "m" (memory 1))
          (import "a" "f" (func $f))
          (import "a" "g" (global i32))
          (import "a" "t" (table 1 funcref))
          (import "a" "h" (func $h (param i32)))
          (func $x (call $f) (call $h (i32.const 1)) (return_call $y))
          (func $y)
          (export "x" (func $x))
          (export "mem" (memory 0))
          (start $y))"""
    )
    code = ModuleCode(data)
    assert code.imported == [1, 4]  # the functions' positions among the imports
    assert code.exports == {"x": 2}
    assert code.start == 3
    assert calls_of(code, 2) == [0, 1, 3]
    assert calls_of(code, 3) == []


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_check_answers_on_damaged_modules(data: st.DataObject) -> None:
    """Whatever the bytes, the check answers yes or no (wasmtime validates modules
    before the plan reads them; this is the reader's own robustness)."""
    wasm = bytearray(wasmtime.wat2wasm(FOLLOWED_CORE))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(8, len(wasm) - 1))
        wasm[at] = data.draw(st.integers(0, 255))
    try:
        code = ModuleCode(bytes(wasm))
    except LoadError:  # the reader's own error, nothing else
        return
    assert start_is_inert(0, lambda _: code, lambda _i, _p: None) in (True, False)


FOLLOWED_CORE = """(module
  (import "host" "note" (func $note (param i32)))
  (memory 1)
  (global $g (mut i32) (i32.const 0))
  (func $a (param i32) (result i32)
    (block (result i32) (if (result i32) (local.get 0) (then (i32.const 1)) (else (i32.const 2)))))
  (func $init (global.set $g (call $a (i32.const 3))) (i32.store (i32.const 0) (i32.const 9)))
  (start $init)
  (export "g" (global $g)))"""


def test_the_start_check_reads_the_fuzz_module() -> None:
    code = ModuleCode(wasmtime.wat2wasm(FOLLOWED_CORE))
    assert start_is_inert(0, lambda _: code, lambda _i, _p: None)


# What the check keeps safe: a start function that reaches an async host function, here
# through another module's export, aborts the process on the synchronous path. And an
# inert one met by an epoch deadline inside a fiber call (a host function opening an
# instance) must not be asked to yield there. Run in a child, which a regression kills.
_CHILD = """
import sys, types, wasmtime
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from pathlib import Path
from test_engine_instance import new_store, wat_component
from test_engine_startcheck import FOLLOWED, INERT
from trio_isyswasfa import _engine
from trio_isyswasfa.engine import _fiber
from trio_isyswasfa.engine._fiber import FiberStore
from trio_isyswasfa import LoadError
from trio_isyswasfa.engine._instance import CoreInstances, instance_plan

store = new_store()
noted = []

def trampoline(d, ty, callee):
    fake = types.SimpleNamespace(store=store, _host_keys=[], stop_server=lambda: None)
    return FiberStore.host_func(fake, ty, noted.append)  # an async host function

if sys.argv[4] == "async-host":
    wat = FOLLOWED.replace("BODY", "(call $note (i32.const 5))")
    instances = CoreInstances(wat_component(Path(sys.argv[3]), wat), store, trampoline=trampoline)
else:  # an epoch deadline passed, inside a fiber call
    component = wat_component(Path(sys.argv[3]), INERT)
    _fiber.yield_in_fiber_calls(store)
    for _ in range(3):
        _engine.tick()
    _fiber.set_current(types.SimpleNamespace())  # as if polled inside a fiber call
    instances = CoreInstances(component, store, trampoline=trampoline)
    _fiber.set_current(None)
print(noted, instances.statistics().async_steps)
"""


@pytest.mark.parametrize(("case", "out"), [("async-host", "[5] 1"), ("deadline", "[] 0")])
def test_start_functions_never_abort_the_process(tmp_path: Path, case: str, out: str) -> None:
    here = Path(__file__).resolve().parent
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(here.parent), str(here), str(tmp_path), case],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == out


@pytest.mark.guest
@pytest.mark.slow
def test_the_rust_proxy_opens_on_the_synchronous_path() -> None:
    """wit-component's fixups module, in every Rust guest made with the preview-1
    adapter, starts with the guest's ``_initialize``: read as inert, it takes the
    synchronous path like the guest's other modules."""
    from trio_isyswasfa import _host
    from trio_isyswasfa.testing import RustToolchainMissing, build_rust_component
    from trio_isyswasfa.wasi import WasiConfig

    try:
        path = build_rust_component(
            Path(__file__).parent / "guests" / "proxy-rust", adapter="proxy"
        )
    except RustToolchainMissing as exc:
        pytest.skip(str(exc))
    component = _host.load_component(path, engine="own")
    instance = _host.Instance(component, {}, WasiConfig(stdout=None, stderr=None))
    try:
        root = instance._engine.root  # type: ignore[attr-defined]
        starts = [s for n in root.plan.nodes for s in n.steps if getattr(s, "has_start", False)]
        assert [s.sync_start for s in starts] == [True]
        assert root.statistics().async_steps == 0
    finally:
        instance._engine.close()
