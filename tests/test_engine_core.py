"""Host functions of ``engine/_core``: raw values read and written in place.

A host function reads its arguments from, and writes its results into, a ctypes array
kept over the raw values while their address stays the same (the guest's stack at the
call site); these tests make the address change between calls and check what the host
function sees and what it may give back.
"""

from __future__ import annotations

import pytest
import wasmtime

from trio_isyswasfa import _engine
from trio_isyswasfa._errors import GuestTrap
from trio_isyswasfa.engine._core import CoreFunc, host_func, release_host_funcs
from trio_isyswasfa.engine._fiber import FiberStore

# `shallow` calls the host function straight away; `deep` from a few frames down, each
# holding locals, so its raw values sit at another address of the stack
WAT = """
(module
  (import "h" "f" (func $f (param i32 i64) (result i64)))
  (func (export "shallow") (param i32 i64) (result i64)
    (call $f (local.get 0) (local.get 1)))
  (func $down (param i32 i32 i64) (result i64)
    (local i64 i64 i64 i64)
    (if (result i64) (i32.eqz (local.get 0))
      (then (call $f (local.get 1) (local.get 2)))
      (else (call $down (i32.sub (local.get 0) (i32.const 1)) (local.get 1) (local.get 2)))))
  (func (export "deep") (param i32 i64) (result i64)
    (call $down (i32.const 3) (local.get 0) (local.get 1))))
"""

TYPE = wasmtime.FuncType([wasmtime.ValType.i32(), wasmtime.ValType.i64()], [wasmtime.ValType.i64()])


def _open(fn: object) -> tuple[CoreFunc, CoreFunc, list[int], FiberStore]:
    fs = FiberStore(sync_calls=True)  # synchronous calls run on at epoch ticks
    store = fs.store
    made: list[int] = []
    host = host_func(store, TYPE, fn, made)  # type: ignore[arg-type]
    module = wasmtime.Module(_engine.engine(), wasmtime.wat2wasm(WAT))
    exports = fs.instantiate(module, [host]).exports(store)
    shallow, deep = exports["shallow"], exports["deep"]
    assert isinstance(shallow, wasmtime.Func)
    assert isinstance(deep, wasmtime.Func)
    return (
        CoreFunc(store, shallow),
        CoreFunc(store, deep),
        made,
        fs,
    )  # (fs keeps the store's epoch callback)


def test_arguments_and_results_cross_whatever_the_address_of_the_raw_values() -> None:
    seen: list[list[int]] = []

    def f(args: list[int]) -> list[int]:
        seen.append(args)
        return [args[0] * 1000 + args[1]]

    shallow, deep, made, _fs = _open(f)
    try:
        got = [
            shallow([1, 2]),
            shallow([3, 4]),
            deep([5, 6]),  # another address: the array kept for the last one is stale
            deep([7, -1]),
            shallow([9, 10]),
        ]
    finally:
        release_host_funcs(made)
    assert seen == [[1, 2], [3, 4], [5, 6], [7, 0xFFFFFFFFFFFFFFFF], [9, 10]]
    assert got == [[1002], [3004], [5006], [6999], [9010]]  # i64 results wrap


def test_a_host_function_giving_the_wrong_number_of_results_traps() -> None:
    shallow, _, made, _fs = _open(lambda args: [1, 2])
    try:
        with pytest.raises(GuestTrap) as caught:
            shallow([1, 2])
    finally:
        release_host_funcs(made)
    assert "gave 2" in str(caught.value)
