"""Staged export arguments on our engine: strings and byte lists copied into the guest
by the export's runner (``_shim``), without the ``lower`` host function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import wasmtime

from trio_isyswasfa import GuestTrap, HostProtocolError, InstanceDead, _engine
from trio_isyswasfa.engine import _component, _core, _shim
from trio_isyswasfa.engine import _types as types
from trio_isyswasfa.engine._component import OwnEngineInstance, OwnExportFunc
from trio_isyswasfa.engine._fiber import FiberStore, Staged
from trio_isyswasfa.engine._handles import ResourceHandle
from trio_isyswasfa.engine._reader import read_component
from trio_isyswasfa.testing import build_wat_component, bump_realloc_wat

WIT = """\
package test:staged;

interface api {
  echo: func(a: string, n: u32, b: list<u8>) -> tuple<string, u32, list<u8>>;
  count: func(s: string) -> u32;
  set-mode: func(m: u32);
  grown: func() -> string;
}

world w {
  export api;
}
"""

# ``cabi_realloc`` counts its calls and bumps from 4096 (growing the memory as needed),
# or, in mode 1, answers a block far out of bounds
COUNTING_REALLOC = bump_realloc_wat(
    4096,
    first="""(global.set $allocs (i32.add (global.get $allocs) (i32.const 1)))
    (if (i32.eq (global.get $mode) (i32.const 1)) (then (return (i32.const 0x7fff0000))))""",
)
WAT = (
    """\
(module
  (memory (export "memory") 1)
  (global $mode (mut i32) (i32.const 0))
  (global $allocs (mut i32) (i32.const 0))
"""
    + COUNTING_REALLOC
    + """\
  (func (export "test:staged/api#echo") (param i32 i32 i32 i32 i32) (result i32)
    (i32.store (i32.const 1024) (local.get 0))
    (i32.store (i32.const 1028) (local.get 1))
    (i32.store (i32.const 1032) (local.get 2))
    (i32.store (i32.const 1036) (local.get 3))
    (i32.store (i32.const 1040) (local.get 4))
    (i32.const 1024))
  (func (export "test:staged/api#count") (param i32 i32) (result i32)
    (global.get $allocs))
  (func (export "test:staged/api#set-mode") (param i32)
    (global.set $mode (local.get 0)))
  ;; "ok" at the start of a page it grows the memory by
  (func (export "test:staged/api#grown") (result i32) (local $at i32)
    (local.set $at (i32.shl (memory.grow (i32.const 1)) (i32.const 16)))
    (i32.store16 (local.get $at) (i32.const 0x6b6f))
    (i32.store (i32.const 2048) (local.get $at))
    (i32.store (i32.const 2052) (i32.const 2))
    (i32.const 2048))
  (func (export "cabi_post_test:staged/api#grown") (param i32))
)
"""
)

API = "test:staged/api"


@pytest.fixture(scope="module")
def staged_wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    wit = tmp_path_factory.mktemp("staged") / "staged.wit"
    wit.write_text(WIT)
    return build_wat_component(wit, "w", WAT)


def no_imports(item: _engine.ImportedItem) -> Any:  # pragma: no cover - none imported
    raise AssertionError(item)


@pytest.fixture
def inst(staged_wasm: bytes) -> Any:
    made = OwnEngineInstance(read_component(staged_wasm), no_imports, use_cache=False)
    yield made
    made.close()


def runners(func: OwnExportFunc) -> tuple[bool, bool]:
    """Whether the export's staged runner, and its ``lower`` hook runner, were made."""
    lifted = func._lifted
    return lifted._staged_run is not None, lifted._run is not None


@pytest.mark.parametrize(
    ("a", "b"),
    [("x", b"y"), ("", b""), ("héllo, ☃", bytes(range(256))), ("a" * 30_000, bytearray(30_000))],
)
async def test_strings_and_bytes_are_copied_in_by_the_runner(
    inst: OwnEngineInstance, a: str, b: bytes
) -> None:
    echo = inst.func(API, "echo")
    assert await echo.call(a, 7, b) == (a, 7, bytes(b))
    assert await echo.call(a[::-1], 8, b[::-1]) == (a[::-1], 8, bytes(b[::-1]))
    assert runners(echo) == (True, False)  # never the hook
    # one realloc per string or list, as the canonical ABI makes them
    assert await inst.func(API, "count").call("z") == 5


async def test_what_does_not_fit_the_stage_is_lowered_by_the_hook(
    inst: OwnEngineInstance,
) -> None:
    echo = inst.func(API, "echo")
    big = "ü" * _shim.STAGE_SIZE  # twice the bytes the stage takes
    assert await echo.call(big, 1, b"ok") == (big, 1, b"ok")
    assert runners(echo) == (False, True)
    assert await echo.call("small", 2, b"") == ("small", 2, b"")
    assert runners(echo) == (True, True)


async def test_bad_arguments_are_refused_by_the_hook_and_run_nothing(
    inst: OwnEngineInstance,
) -> None:
    echo = inst.func(API, "echo")
    count = inst.func(API, "count")
    with pytest.raises(HostProtocolError):
        await echo.call(b"not a str", 1, b"")
    assert await count.call("a") == 1  # the first bad value: nothing was allocated
    with pytest.raises(HostProtocolError):
        await echo.call("s", 1, "not bytes")
    with pytest.raises(HostProtocolError):
        await echo.call("s", -1, b"")
    with pytest.raises(HostProtocolError):
        await echo.call("s", 1)
    with pytest.raises(HostProtocolError):
        await echo.call("\ud800", 1, b"")  # a lone surrogate
    # nothing ran (the hook may have allocated before it found the bad value), and the
    # instance lives on
    assert await echo.call("s", 1, b"") == ("s", 1, b"")
    assert await count.call("a") >= 1


async def test_a_block_out_of_bounds_traps_the_call(inst: OwnEngineInstance) -> None:
    await inst.func(API, "set-mode").call(1)
    with pytest.raises(GuestTrap, match="out of bounds"):
        await inst.func(API, "echo").call("x", 1, b"")
    with pytest.raises(InstanceDead):
        await inst.func(API, "count").call("x")


# a core module whose ``realloc`` answers ``misalign`` more than the bump pointer
CORE = """
(module
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 1024))
  (func (export "realloc") (param i32 i32 i32 i32) (result i32) (local $p i32)
    (local.set $p (i32.add (global.get $bump) (global.get $misalign)))
    (global.set $bump (i32.add (global.get $bump) (i32.const 64)))
    (local.get $p))
  (global $misalign (export "misalign") (mut i32) (i32.const 0))
  (func (export "first") (param i32 i32) (result i32)
    (i32.load (local.get 0))))
"""


async def test_a_misaligned_block_traps_the_call(tmp_path: Path) -> None:
    fs = FiberStore()
    module = wasmtime.Module(_engine.engine(), wasmtime.wat2wasm(CORE))
    exports = fs.instantiate(module, []).exports(fs.store)
    memory, realloc, first = exports["memory"], exports["realloc"], exports["first"]
    assert isinstance(memory, wasmtime.Memory)
    assert isinstance(realloc, wasmtime.Func)
    assert isinstance(first, wasmtime.Func)
    # a list<u32>: its block is aligned to 4
    leave, flag = fs.leave_flag()
    assert leave is not None
    run = fs.func(first, staged=Staged(((0, 4),), memory, realloc, leave))
    data = (1234).to_bytes(4, "little")
    assert await run.call_staged([4 | _shim.STAGE << 32, 1], [data]) == 1234
    assert flag[0] == 1  # cleared while the runner allocated, set again
    misalign = exports["misalign"]
    assert isinstance(misalign, wasmtime.Global)
    fs.stop_server()
    misalign.set_value(fs.store, wasmtime.Val.i32(2))
    with pytest.raises(GuestTrap, match="unreachable"):
        await run.call_staged([4 | _shim.STAGE << 32, 1], [data])


async def test_a_result_lifted_before_the_post_return_sees_the_grown_memory(
    inst: OwnEngineInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the runner tells the lift hook the memory's size (``_shim``'s ``sized``): the view
    # is remade when the export grew the memory, and wasmtime is not asked for the size
    grown = inst.func(API, "grown")
    assert await grown.call() == "ok"
    asked: list[object] = []
    size = _core._MEMORY_DATA_SIZE
    monkeypatch.setattr(_core, "_MEMORY_DATA_SIZE", lambda *a: asked.append(a) or size(*a))
    assert [await grown.call() for _ in range(3)] == ["ok"] * 3
    assert asked == []
    assert grown._lifted._sized


# -- staged lists of values stored without pointers (the poll's ``list<poll-input>``) --

LIST_WIT = """\
package test:staged-list;

interface host {
  resource counter;
}

interface api {
  use host.{counter};
  record entry { n: u32, c: counter }
  keep: func(xs: list<entry>) -> list<u32>;
  lend: func(xs: list<borrow<counter>>) -> u32;
  allocs: func() -> u32;
}

world w {
  import host;
  export api;
}
"""

# ``keep`` answers the words of the list it was given (each entry: n, handle index);
# ``lend`` keeps the borrows it was given (a trap when the call returns)
LIST_WAT = (
    """\
(module
  (memory (export "memory") 1)
  (global $allocs (mut i32) (i32.const 0))
"""
    + bump_realloc_wat(
        4096, first="(global.set $allocs (i32.add (global.get $allocs) (i32.const 1)))"
    )
    + """\
  (func (export "test:staged-list/api#keep") (param i32 i32) (result i32)
    (i32.store (i32.const 1024) (local.get 0))
    (i32.store (i32.const 1028) (i32.shl (local.get 1) (i32.const 1)))
    (i32.const 1024))
  (func (export "test:staged-list/api#lend") (param i32 i32) (result i32)
    (local.get 1))
  (func (export "test:staged-list/api#allocs") (result i32)
    (global.get $allocs))
)
"""
)

LIST_API = "test:staged-list/api"
COUNTER = 7  # the host resource kind of ``counter``


class Entry:
    """An ``entry`` record."""

    def __init__(self, n: int, c: object) -> None:
        self.n = n
        self.c = c


@pytest.fixture(scope="module")
def list_wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    wit = tmp_path_factory.mktemp("staged-list") / "staged.wit"
    wit.write_text(LIST_WIT)
    return build_wat_component(wit, "w", LIST_WAT)


@pytest.fixture
def list_inst(list_wasm: bytes) -> Any:
    def resolve(item: _engine.ImportedItem) -> Any:
        assert item.func_type is None
        assert item.name == "counter"
        return _engine.ResourceDef(COUNTER, lambda rep: None)

    made = OwnEngineInstance(read_component(list_wasm), resolve, use_cache=False)
    yield made
    made.close()


def reps_in(func: OwnExportFunc) -> list[int]:
    """The reps of the own handles in the export's instance's table."""
    table = func._lifted.instance.table
    return [h.rep for h in table._array if isinstance(h, ResourceHandle) and h.own]


async def test_a_list_with_own_handles_is_copied_in_by_the_runner(
    list_inst: OwnEngineInstance,
) -> None:
    keep = list_inst.func(LIST_API, "keep")
    words = await keep.call([Entry(5, _engine.own(100, COUNTER)), Entry(6, 101)])
    assert runners(keep) == (True, False)  # never the hook
    assert words[0::2] == [5, 6]
    table = keep._lifted.instance.table
    got = [table.get(i) for i in words[1::2]]
    assert [(h.rep, h.own) for h in got if isinstance(h, ResourceHandle)] == [
        (100, True),
        (101, True),
    ]
    assert await keep.call([]) == []
    # one realloc per list, an empty one too, as the canonical ABI makes them
    assert await list_inst.func(LIST_API, "allocs").call() == 2


async def test_a_staged_list_that_fails_half_way_leaves_no_handle(
    list_inst: OwnEngineInstance,
) -> None:
    # the staged lowering takes the handles it added out again, and the hook lowers the
    # list afresh and raises what is wrong: the first entry's handle is not there twice
    keep = list_inst.func(LIST_API, "keep")
    with pytest.raises(HostProtocolError):
        await keep.call([Entry(1, 200), Entry(-1, 201)])
    assert 200 not in reps_in(keep)  # (nor does the hook's lowering leave it there)
    assert 201 not in reps_in(keep)
    words = await keep.call([Entry(2, 202)])  # the instance lives on
    assert [h.rep for h in map(keep._lifted.instance.table.get, words[1::2])] == [202]  # type: ignore[attr-defined]


async def test_a_list_too_long_for_the_stage_is_lowered_by_the_hook(
    list_inst: OwnEngineInstance,
) -> None:
    keep = list_inst.func(LIST_API, "keep")
    many = [Entry(i, 1000 + i) for i in range(_shim.STAGE_SIZE // 8 + 1)]
    words = await keep.call(many)
    assert runners(keep) == (False, True)
    assert words[0::2] == list(range(len(many)))


async def test_a_list_the_hook_fails_to_lower_half_way_leaves_no_handle(
    list_inst: OwnEngineInstance,
) -> None:
    keep = list_inst.func(LIST_API, "keep")
    many = [Entry(1, 400)] + [Entry(2, 401)] * (_shim.STAGE_SIZE // 8) + [Entry(-1, 402)]
    with pytest.raises(HostProtocolError):
        await keep.call(many)
    assert runners(keep) == (False, True)
    assert reps_in(keep) == []
    assert await keep.call([Entry(3, 403)]) != []  # the instance lives on


async def test_a_list_waiting_for_the_store_adds_no_handle_before_it_starts(
    list_inst: OwnEngineInstance,
) -> None:
    # a call that waits for the store (another instance's call runs on it) and is
    # cancelled there has run nothing: its list's handles must not be in the table
    keep = list_inst.func(LIST_API, "keep")
    assert await keep.call([Entry(0, 499)]) != []
    store = keep._lifted.owner.fibers
    store._busy = True  # as another instance's call on the same store
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep.call, [Entry(1, 500)])
        await trio.testing.wait_all_tasks_blocked()
        assert 500 not in reps_in(keep)
        nursery.cancel_scope.cancel()
    store._leave()  # (that call ends)
    assert 500 not in reps_in(keep)
    assert await keep.call([Entry(2, 501)]) != []  # the instance lives on
    assert 501 in reps_in(keep)


async def test_a_list_of_borrows_is_not_staged(list_inst: OwnEngineInstance) -> None:
    # a borrow belongs to the call's scope, which the stage does not have: the guest
    # keeping one past the call must still trap
    lend = list_inst.func(LIST_API, "lend")
    with pytest.raises(GuestTrap, match="borrow"):
        await lend.call([300])
    assert runners(lend) == (False, True)


_R = types.ResourceType("r")
_U8 = types.PrimType(types.Primitive.U8)


@pytest.mark.parametrize(
    ("ty", "handles", "owns_only"),
    [
        (_U8, False, True),
        (types.FlagsType(("a", "b")), False, True),  # (bits: a call with them shares a context)
        (types.EnumType(("a", "b")), False, True),
        (types.ListType(types.OwnType(_R)), True, True),
        (types.RecordType((("a", _U8), ("b", types.OptionType(types.OwnType(_R))))), True, True),
        (types.TupleType((types.OwnType(_R), types.BorrowType(_R))), True, False),
        (types.ResultType(_U8, types.StreamType(_U8)), True, False),
        (types.VariantType((("a", None), ("b", types.FutureType(None)))), True, False),
    ],
)
def test_which_types_carry_handles_and_which_only_own(
    ty: types.ValType, handles: bool, owns_only: bool
) -> None:
    # a value with handles needs the call's borrow scope and the table; a list staged
    # by the runner may hold ``own`` handles only (a borrow needs the call's scope)
    assert (_component._has_handles(ty), _component._owns_only(ty)) == (handles, owns_only)
