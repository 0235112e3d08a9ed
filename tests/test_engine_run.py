"""Stage 3a: components run end to end on our own engine, synchronously
(``trio_isyswasfa/engine/_component.py``).

The same WAT components run on the stock engine (wasmtime-py's component API, through the
seam in ``_engine.py``) and on ours with the same host functions; the calls must give the
same results (the ``engine`` fixture is parametrised, not copied). What only our engine
does (a host exception trapping one call with its cause, borrow scopes checked, guest
resources handed to the host) is tested on ours alone.
"""

from __future__ import annotations

import gc
import subprocess
import time
import weakref
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

import trio_isyswasfa
from trio_isyswasfa import _engine
from trio_isyswasfa._errors import GuestTrap, HostProtocolError, InstanceDead, LinkError
from trio_isyswasfa.engine._component import OwnEngineInstance, imported_items
from trio_isyswasfa.engine._core import live_host_funcs
from trio_isyswasfa.engine._model import CanonLower, ComponentDef, InstanceType
from trio_isyswasfa.engine._reader import read_component
from trio_isyswasfa.engine._types import FuncType
from trio_isyswasfa.testing import build_wat_component, bump_realloc_wat
from trio_isyswasfa.tools._paths import tool_command
from trio_isyswasfa.wasi import WasiConfig
from trio_isyswasfa.wasi._context import WasiContext
from trio_isyswasfa.wasi.cli import WasiCli
from trio_isyswasfa.wasi.clocks import WasiClocks
from trio_isyswasfa.wasi.filesystem import WasiFilesystem
from trio_isyswasfa.wasi.io import WasiIo
from trio_isyswasfa.wasi.random import WasiRandom
from trio_isyswasfa.wasi.sockets import WasiSockets, parse_allow_net

WIT = """\
package test:run;

interface host {
  resource counter {
    value: func() -> u32;
  }
  make-counter: func(start: u32) -> counter;
  upper: func(s: string) -> string;
  fetch: func(n: u32) -> list<u8>;
  check: func(ok: bool) -> result<u32, string>;
  note: func(n: u32);
  fail: func();
}

interface api {
  use host.{counter};
  record point { x: s32, y: s32 }
  variant shape { circle(f64), square(u32), empty }
  resource thing {
    constructor(v: u32);
    get: func() -> u32;
  }
  add: func(a: u32, b: u32) -> u32;
  shout: func(s: string) -> string;
  noisy: func(s: string) -> string;
  noisy-add: func(a: u32, b: u32) -> u32;
  quiet-add: func(a: u32, b: u32) -> u32;
  posts: func() -> u32;
  bad-char: func() -> char;
  bad-return-pointer: func(at: u32) -> u32;
  bad-string: func() -> string;
  echo-list: func(xs: list<u32>) -> list<u32>;
  swap: func(p: point) -> point;
  mirror: func(s: shape) -> shape;
  try-check: func(ok: bool) -> result<u32, string>;
  read-counter: func(start: u32) -> u32;
  counter-value: func(c: borrow<counter>) -> u32;
  keep-borrow: func(c: borrow<counter>) -> u32;
  counter-plus: func(c: borrow<counter>, n: u32) -> u32;
  call-fail: func();
  boom: func();
  fetch-len: func(n: u32) -> u32;
  thing-cycle: func(v: u32) -> u32;
  new-in-post: func(v: u32) -> u32;
  drop-in-post: func(start: u32) -> u32;
  rep-in-post: func(v: u32) -> u32;
}

world w {
  import host;
  export api;
}
"""

WAT = f"""\
(module
  (import "test:run/host" "make-counter" (func $make (param i32) (result i32)))
  (import "test:run/host" "[method]counter.value" (func $value (param i32) (result i32)))
  (import "test:run/host" "[resource-drop]counter" (func $drop_counter (param i32)))
  (import "test:run/host" "upper" (func $upper (param i32 i32 i32)))
  (import "test:run/host" "fetch" (func $fetch (param i32 i32)))
  (import "test:run/host" "check" (func $check (param i32 i32)))
  (import "test:run/host" "note" (func $note (param i32)))
  (import "test:run/host" "fail" (func $fail))
  (import "[export]test:run/api" "[resource-new]thing" (func $thing_new (param i32) (result i32)))
  (import "[export]test:run/api" "[resource-rep]thing" (func $thing_rep (param i32) (result i32)))
  (import "[export]test:run/api" "[resource-drop]thing" (func $thing_drop (param i32)))
  (memory (export "memory") 1)
{bump_realloc_wat(4096)}  (func (export "test:run/api#add") (param i32 i32) (result i32)
    (i32.add (local.get 0) (local.get 1)))
  (func (export "test:run/api#shout") (param i32 i32) (result i32)
    (call $upper (local.get 0) (local.get 1) (i32.const 1024))
    (i32.const 1024))
  (global $posts (mut i32) (i32.const 0))
  (func (export "cabi_post_test:run/api#shout") (param i32)
    (global.set $posts (i32.add (global.get $posts) (i32.const 1))))
  (func (export "test:run/api#posts") (result i32) (global.get $posts))
  (func (export "test:run/api#bad-return-pointer") (param i32) (result i32)
    (call $upper (i32.const 0) (i32.const 0) (local.get 0))
    (i32.const 0))
  (func (export "test:run/api#bad-string") (result i32)
    (i32.store (i32.const 1024) (i32.const 65000))
    (i32.store (i32.const 1028) (i32.const 1000))
    (i32.const 1024))
  (func (export "cabi_post_test:run/api#bad-string") (param i32)
    (call $note (i32.const 77)))
  (func (export "test:run/api#noisy") (param i32 i32) (result i32)
    (call $upper (local.get 0) (local.get 1) (i32.const 1024))
    (i32.const 1024))
  (func (export "cabi_post_test:run/api#noisy") (param i32)
    (call $note (i32.const 99)))
  (func (export "test:run/api#bad-char") (result i32)
    (i32.const 0xD800))
  (func (export "test:run/api#noisy-add") (param i32 i32) (result i32)
    (i32.add (local.get 0) (local.get 1)))
  (func (export "cabi_post_test:run/api#noisy-add") (param i32)
    (call $note (local.get 0)))
  (func (export "test:run/api#quiet-add") (param i32 i32) (result i32)
    (i32.add (local.get 0) (local.get 1)))
  (func (export "cabi_post_test:run/api#quiet-add") (param i32)
    (global.set $posts (i32.add (global.get $posts) (local.get 0))))
  (func (export "test:run/api#echo-list") (param i32 i32) (result i32)
    (i32.store (i32.const 1024) (local.get 0))
    (i32.store (i32.const 1028) (local.get 1))
    (i32.const 1024))
  (func (export "test:run/api#swap") (param i32 i32) (result i32)
    (i32.store (i32.const 1024) (local.get 1))
    (i32.store (i32.const 1028) (local.get 0))
    (i32.const 1024))
  (func (export "test:run/api#mirror") (param i32 i64) (result i32)
    (i32.store8 (i32.const 1024) (local.get 0))
    (i64.store (i32.const 1032) (local.get 1))
    (i32.const 1024))
  (func (export "test:run/api#try-check") (param i32) (result i32)
    (call $check (local.get 0) (i32.const 1024))
    (i32.const 1024))
  (func (export "test:run/api#read-counter") (param i32) (result i32) (local $h i32) (local $v i32)
    (local.set $h (call $make (local.get 0)))
    (local.set $v (call $value (local.get $h)))
    (call $drop_counter (local.get $h))
    (local.get $v))
  (func (export "test:run/api#counter-value") (param i32) (result i32) (local $v i32)
    (local.set $v (call $value (local.get 0)))
    (call $drop_counter (local.get 0))
    (local.get $v))
  (func (export "test:run/api#counter-plus") (param i32 i32) (result i32) (local $v i32)
    (local.set $v (call $value (local.get 0)))
    (call $drop_counter (local.get 0))
    (i32.add (local.get $v) (local.get 1)))
  (func (export "test:run/api#keep-borrow") (param i32) (result i32)
    (call $value (local.get 0)))
  (func (export "test:run/api#boom")
    unreachable)
  (func (export "test:run/api#call-fail")
    (call $fail))
  (func (export "test:run/api#fetch-len") (param i32) (result i32)
    (call $fetch (local.get 0) (i32.const 1024))
    (i32.load (i32.const 1028)))
  (func (export "test:run/api#thing-cycle") (param i32) (result i32) (local $h i32) (local $r i32)
    (local.set $h (call $thing_new (local.get 0)))
    (local.set $r (call $thing_rep (local.get $h)))
    (call $thing_drop (local.get $h))
    (local.get $r))
  (global $held (mut i32) (i32.const 0))
  (func (export "test:run/api#new-in-post") (param i32) (result i32)
    (local.get 0))
  (func (export "cabi_post_test:run/api#new-in-post") (param i32)
    (global.set $held (call $thing_new (local.get 0))))
  (func (export "test:run/api#drop-in-post") (param i32) (result i32)
    (global.set $held (call $make (local.get 0)))
    (local.get 0))
  (func (export "cabi_post_test:run/api#drop-in-post") (param i32)
    (call $drop_counter (global.get $held)))
  (func (export "test:run/api#rep-in-post") (param i32) (result i32)
    (global.set $held (call $thing_new (local.get 0)))
    (local.get 0))
  (func (export "cabi_post_test:run/api#rep-in-post") (param i32)
    (global.set $posts (i32.add (global.get $posts) (call $thing_rep (global.get $held)))))
  (func (export "test:run/api#[constructor]thing") (param i32) (result i32)
    (call $thing_new (local.get 0)))
  (func (export "test:run/api#[method]thing.get") (param i32) (result i32)
    (local.get 0))
  (func (export "test:run/api#[dtor]thing") (param i32)
    (call $note (i32.add (local.get 0) (i32.const 1000))))
)
"""

API = "test:run/api"
COUNTER = 7  # the host resource kind of `counter`


class Host:
    """The host functions, in the shape the seam's ``resolve_item`` gives them."""

    def __init__(self) -> None:
        self.notes: list[int] = []
        self.dropped: list[int] = []
        self.counters: dict[int, int] = {}
        self.failure: Exception = ZeroDivisionError("the host failed on purpose")

    def make_counter(self, start: int) -> Any:
        rep = 100 + len(self.counters)
        self.counters[rep] = start
        return _engine.own(rep, COUNTER)

    def fail(self) -> None:
        raise self.failure

    def resolve(self, item: _engine.ImportedItem) -> _engine.Resolved:
        if item.func_type is None:
            assert item.name == "counter"
            return _engine.ResourceDef(COUNTER, self.dropped.append)
        funcs: dict[str, Callable[..., Any]] = {
            "make-counter": self.make_counter,
            "[method]counter.value": lambda rep: self.counters[rep] * 2,
            "upper": str.upper,
            "fetch": lambda n: bytes(i % 251 for i in range(n)),
            "check": lambda ok: 5 if ok else _engine.Err("not ok"),
            "note": self.notes.append,
            "fail": self.fail,
        }
        if item.name not in funcs:
            raise LinkError(f"no host function {item.name}")
        return funcs[item.name]


def _parse(tmp: Path, wat: str) -> bytes:
    (tmp / "c.wat").write_text(wat)
    out = tmp / "c.wasm"
    proc = subprocess.run(
        [*tool_command("wasm-tools"), "parse", str(tmp / "c.wat"), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return out.read_bytes()


@pytest.fixture(scope="module")
def run_wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    wit = tmp_path_factory.mktemp("run") / "run.wit"
    wit.write_text(WIT)
    return build_wat_component(wit, "w", WAT)


class Instance:
    """One instance on either engine: ``await call(interface, name, *args)``."""

    def __init__(self, kind: str, wasm: bytes, resolve: Callable[[Any], Any]) -> None:
        self.kind = kind
        if kind == "stock":
            raw = _engine.compile_component(wasm, use_cache=False)
            self.stock = _engine.EngineInstance(
                _engine.LinkPlan(raw), _engine.component_exports(raw), resolve
            )
        else:
            self.ours = OwnEngineInstance(read_component(wasm), resolve, use_cache=False)

    async def call(self, interface: str, name: str, *args: Any) -> Any:
        if self.kind == "stock":
            return await self.stock.func(interface, name).call(*args)
        return await self.ours.func(interface, name).call(*args)

    def close(self) -> None:
        if self.kind == "stock":
            self.stock.close()
        else:
            self.ours.close()


Open = Callable[[bytes, Host], Instance]


@pytest.fixture(params=["stock", "ours"])
def open_instance(request: pytest.FixtureRequest) -> Any:
    opened: list[Instance] = []

    def open_(wasm: bytes, host: Host) -> Instance:
        inst = Instance(request.param, wasm, host.resolve)
        opened.append(inst)
        return inst

    yield open_
    for inst in opened:
        inst.close()


def _record(**fields: Any) -> Any:
    return _engine.record(**fields)


CASES: list[tuple[str, tuple[Any, ...], Any]] = [
    ("add", (2, 3), 5),
    ("add", (2**32 - 1, 2), 1),
    ("shout", ("héllo wörld, ☃",), "HÉLLO WÖRLD, ☃"),
    ("echo-list", ([1, 2, 2**32 - 1],), [1, 2, 2**32 - 1]),
    ("echo-list", ([],), []),
    ("swap", (_record(x=-1, y=5),), _record(x=5, y=-1)),
    ("mirror", (1.5,), 1.5),
    ("mirror", (7,), 7),
    ("mirror", (None,), None),
    ("try-check", (True,), _engine.Ok(5)),
    ("try-check", (False,), _engine.Err("not ok")),
    ("read-counter", (3,), 6),
    ("fetch-len", (1 << 20,), 1 << 20),
    ("thing-cycle", (42,), 42),
]


@pytest.mark.parametrize(("name", "args", "expected"), CASES)
async def test_both_engines_give_the_same_results(
    run_wasm: bytes, open_instance: Open, name: str, args: tuple[Any, ...], expected: Any
) -> None:
    inst = open_instance(run_wasm, Host())
    assert await inst.call(API, name, *args) == expected


async def test_host_effects_are_the_same(run_wasm: bytes, open_instance: Open) -> None:
    host = Host()
    inst = open_instance(run_wasm, host)
    await inst.call(API, "shout", "a")
    assert await inst.call(API, "posts") == 1  # shout's post-return ran
    assert await inst.call(API, "read-counter", 4) == 8
    assert host.dropped == [100]  # the guest dropped its own handle: the host's on_drop
    assert await inst.call(API, "thing-cycle", 5) == 5
    assert host.notes == [1005]  # the guest resource's destructor ran
    # a host resource lent to the guest for one call (the guest drops its borrow)
    counter = host.make_counter(21)
    assert await inst.call(API, "counter-value", counter) == 42
    assert host.dropped == [100]  # a borrow's end drops nothing


async def test_a_guest_trap_kills_the_instance(run_wasm: bytes, open_instance: Open) -> None:
    inst = open_instance(run_wasm, Host())
    with pytest.raises(GuestTrap, match="unreachable"):
        await inst.call(API, "boom")
    with pytest.raises(InstanceDead):
        await inst.call(API, "add", 1, 2)


async def test_post_return_cannot_call_the_host(run_wasm: bytes, open_instance: Open) -> None:
    host = Host()
    inst = open_instance(run_wasm, host)
    with pytest.raises(GuestTrap, match="cannot leave"):
        await inst.call(API, "noisy", "a")
    assert host.notes == []


async def test_a_post_return_after_plain_results_cannot_call_the_host(
    run_wasm: bytes, open_instance: Open
) -> None:
    # a u32 result needs no lifting before the post-return: on ours the runner clears
    # may_leave itself around it (no host function between the export and it)
    host = Host()
    inst = open_instance(run_wasm, host)
    with pytest.raises(GuestTrap, match="cannot leave"):
        await inst.call(API, "noisy-add", 1, 2)
    assert host.notes == []


async def test_a_post_return_cannot_make_a_handle(run_wasm: bytes, open_instance: Open) -> None:
    # resource.new traps while may_leave is clear (the canonical ABI's check): the
    # results of an export may be lifted after its post-return only because the
    # post-return cannot change the handle table
    inst = open_instance(run_wasm, Host())
    with pytest.raises(GuestTrap, match="cannot leave component instance") as info:
        await inst.call(API, "new-in-post", 5)
    if inst.kind == "ours":
        assert "resource.new of thing" in str(info.value)
    with pytest.raises(InstanceDead):
        await inst.call(API, "add", 1, 2)


async def test_a_post_return_cannot_drop_a_handle(run_wasm: bytes, open_instance: Open) -> None:
    # resource.drop traps while may_leave is clear: the host's destructor never runs
    host = Host()
    inst = open_instance(run_wasm, host)
    with pytest.raises(GuestTrap, match="cannot leave component instance") as info:
        await inst.call(API, "drop-in-post", 5)
    if inst.kind == "ours":
        assert "resource.drop of counter" in str(info.value)
    assert host.dropped == []
    with pytest.raises(InstanceDead):
        await inst.call(API, "add", 1, 2)


async def test_a_post_return_may_read_a_handle_s_rep(run_wasm: bytes, open_instance: Open) -> None:
    # resource.rep has no may_leave check in the canonical ABI: it changes nothing
    inst = open_instance(run_wasm, Host())
    assert await inst.call(API, "rep-in-post", 9) == 9
    assert await inst.call(API, "posts") == 9


async def test_the_instance_may_call_out_again_after_a_post_return(
    run_wasm: bytes, open_instance: Open
) -> None:
    inst = open_instance(run_wasm, Host())
    assert await inst.call(API, "quiet-add", 1, 2) == 3
    assert await inst.call(API, "read-counter", 4) == 8  # calls the host: may_leave again
    assert await inst.call(API, "quiet-add", 5, 6) == 11
    assert await inst.call(API, "posts") == 14  # the post-returns ran, with the results


async def test_a_lifting_failure_is_what_the_call_raises(run_wasm: bytes) -> None:
    # the export's results are lifted inside its core call (with the post-return, on one
    # fiber): a string out of bounds traps that call with the lifting's own error, and
    # the post-return (which would call the host) never runs
    host = Host()
    inst = Instance("ours", run_wasm, host.resolve)
    try:
        with pytest.raises(GuestTrap, match=r"^canonical ABI: string of 1000 bytes") as info:
            await inst.call(API, "bad-string")
        assert host.notes == []
        with pytest.raises(InstanceDead, match="string of 1000 bytes"):
            await inst.call(API, "add", 1, 2)
    finally:
        inst.close()
    assert info.value.__cause__ is None


def test_synchronous_calls_count_as_guest_time(run_wasm: bytes) -> None:
    # a call without a fiber (here the whole export: the instance has no blocking
    # imports; elsewhere a realloc while lowering arguments) is guest code too
    inst = OwnEngineInstance(read_component(run_wasm), Host().resolve, use_cache=False)
    try:
        assert inst.guest_seconds == 0
        assert inst.func(API, "shout").call_sync("a") == "A"
        assert inst.guest_seconds > 0
    finally:
        inst.close()


async def test_a_host_exception_traps_that_call_with_its_cause(run_wasm: bytes) -> None:
    host = Host()
    inst = OwnEngineInstance(read_component(run_wasm), host.resolve, use_cache=False)
    fail = inst.func(API, "call-fail")
    with pytest.raises(GuestTrap, match="host function test:run/host#fail failed") as info:
        fail.call_sync()
    assert info.value.__cause__ is host.failure
    assert info.value.__cause__.__traceback__ is not None  # where the host raised
    with pytest.raises(InstanceDead, match="the host failed on purpose"):
        inst.func(API, "add").call_sync(1, 2)


async def test_a_borrow_kept_past_its_call_traps(run_wasm: bytes) -> None:
    host = Host()
    inst = OwnEngineInstance(read_component(run_wasm), host.resolve, use_cache=False)
    counter = host.make_counter(1)
    assert inst.func(API, "counter-value").call_sync(counter) == 2
    with pytest.raises(GuestTrap, match="borrowed handle"):
        inst.func(API, "keep-borrow").call_sync(counter)


async def test_bad_host_arguments_run_nothing(run_wasm: bytes) -> None:
    inst = OwnEngineInstance(read_component(run_wasm), Host().resolve, use_cache=False)
    add = inst.func(API, "add")
    with pytest.raises(HostProtocolError):
        add.call_sync(1, -1)
    with pytest.raises(HostProtocolError):
        add.call_sync(1)
    assert add.call_sync(1, 2) == 3  # the instance lives on
    with pytest.raises(LinkError, match="no export 'nope'"):
        inst.func(API, "nope")


async def test_the_straight_path_of_plain_calls_keeps_the_checks(run_wasm: bytes) -> None:
    # an export whose values touch neither memory nor handles takes a straight path
    # from its second call on (``_Lifted.call``): bad arguments still run nothing, and
    # an instance that died of a result it could not lift (its store sound) refuses it
    inst = OwnEngineInstance(read_component(run_wasm), Host().resolve, use_cache=False)
    try:
        add = inst.func(API, "add")
        assert await add.call(1, 2) == 3
        with pytest.raises(HostProtocolError):
            await add.call(1, -1)
        with pytest.raises(HostProtocolError):
            await add.call(1)
        assert await add.call(1, 2) == 3  # the instance lives on
        with pytest.raises(GuestTrap, match="char"):
            await inst.func(API, "bad-char").call()
        with pytest.raises(InstanceDead):
            await add.call(1, 2)
    finally:
        inst.close()


async def test_the_straight_path_cannot_reenter_the_instance(run_wasm: bytes) -> None:
    # a host function that starts a call of a plain export while a synchronous call is
    # in the instance: the turns are free (a synchronous call takes none), may_enter not
    host = Host()
    resolve = host.resolve
    made: list[OwnEngineInstance] = []
    raised: list[BaseException] = []

    def upper(s: str) -> str:
        call = made[0].func(API, "add").call(1, 2)
        try:
            call.send(None)
        except StopIteration:  # pragma: no cover - what the check prevents
            pass
        except GuestTrap as exc:
            raised.append(exc)
        return s.upper()

    def reenter(item: _engine.ImportedItem) -> _engine.Resolved:
        return upper if item.name == "upper" else resolve(item)

    inst = OwnEngineInstance(read_component(run_wasm), reenter, use_cache=False)
    made.append(inst)
    try:
        assert await inst.func(API, "add").call(1, 2) == 3  # the straight path from now on
        assert await inst.func(API, "add").call(1, 2) == 3
        assert inst.func(API, "shout").call_sync("x") == "X"
        assert [str(e) for e in raised] == [
            f"cannot enter the component instance again to call {API}#add"
        ]
    finally:
        inst.close()


@pytest.mark.parametrize(
    ("at", "why"), [(65532, "out of bounds"), (1022, "not aligned"), (1024, None)]
)
async def test_an_import_s_return_pointer_is_checked(
    run_wasm: bytes, open_instance: Open, at: int, why: str | None
) -> None:
    inst = open_instance(run_wasm, Host())
    if why is None:
        assert await inst.call(API, "bad-return-pointer", at) == 0
        return
    with pytest.raises(GuestTrap, match=why if inst.kind == "ours" else None):
        await inst.call(API, "bad-return-pointer", at)


async def test_a_call_after_bad_arguments_with_a_borrow_starts_a_clean_scope(
    run_wasm: bytes,
) -> None:
    # the borrow is lowered into the guest's table before the bad `n` fails the
    # lowering: nothing runs, the instance lives on, and the export's next call (its
    # context is kept from call to call) starts with no borrow left to drop
    host = Host()
    inst = OwnEngineInstance(read_component(run_wasm), host.resolve, use_cache=False)
    try:
        plus = inst.func(API, "counter-plus")
        counter = host.make_counter(1)
        with pytest.raises(HostProtocolError):
            await plus.call(counter, -1)
        assert await plus.call(counter, 1) == 3
        assert await plus.call(counter, 2) == 4
    finally:
        inst.close()


async def test_bad_arguments_lowered_on_the_fiber_run_nothing(run_wasm: bytes) -> None:
    # lowering a string calls the guest's realloc, so it runs on the store's fiber (a
    # host function the export's runner calls first): a value that does not fit still
    # runs nothing, and the instance lives on
    inst = OwnEngineInstance(read_component(run_wasm), Host().resolve, use_cache=False)
    try:
        shout = inst.func(API, "shout")
        with pytest.raises(HostProtocolError):
            await shout.call(42)
        with pytest.raises(HostProtocolError):
            await shout.call()
        assert await shout.call("a") == "A"
    finally:
        inst.close()


async def test_using_the_store_from_outside_a_call_stops_its_parked_fiber(
    run_wasm: bytes,
) -> None:
    # between calls the store's fiber is parked in a host function, which keeps the
    # store to itself in wasmtime's terms: a synchronous call from outside any call
    # (call_sync, a destructor, a post-return) stops it first; closing drops it
    inst = OwnEngineInstance(read_component(run_wasm), Host().resolve, use_cache=False)
    fibers = inst.fibers
    try:
        assert await inst.func(API, "add").call(1, 2) == 3
        assert fibers._server is not None
        assert fibers._server.parked
        assert inst.func(API, "add").call_sync(2, 2) == 4
        assert fibers._server is None
        assert await inst.func(API, "shout").call("a") == "A"  # on a new one
        assert fibers._server is not None
    finally:
        inst.close()
    assert fibers._server is None


async def test_guest_resources_cross_as_reps(run_wasm: bytes) -> None:
    host = Host()
    inst = OwnEngineInstance(read_component(run_wasm), host.resolve, use_cache=False)
    rep = inst.func(API, "[constructor]thing").call_sync(9)
    # the guest's own resource, lent back to it: the defining instance gets the rep
    assert inst.func(API, "[method]thing.get").call_sync(rep) == 9


async def test_host_functions_must_give_values_of_their_type(run_wasm: bytes) -> None:
    host = Host()
    resolve = host.resolve

    def bad(item: _engine.ImportedItem) -> _engine.Resolved:
        if item.name == "upper":
            return lambda s: 42  # not a string
        return resolve(item)

    inst = OwnEngineInstance(read_component(run_wasm), bad, use_cache=False)
    with pytest.raises(GuestTrap) as info:
        inst.func(API, "shout").call_sync("x")
    assert isinstance(info.value.__cause__, HostProtocolError)


def test_imports_are_listed_for_the_resolver(run_wasm: bytes) -> None:
    items = imported_items(read_component(run_wasm))
    names = {(i.interface, i.name): rt for i, rt in items}
    assert ("test:run/host", "upper") in names
    rt = names[("test:run/host", "counter")]
    assert rt is not None
    assert rt.name == "counter"
    with pytest.raises(LinkError, match="gives no function for test:run/host#upper"):
        OwnEngineInstance(
            read_component(run_wasm),
            lambda item: None if item.name == "upper" else Host().resolve(item),
            use_cache=False,
        )


NESTED = """
(component
  (component $inner
    (core module $m
      (memory (export "memory") 1)
      (global $bump (mut i32) (i32.const 4096))
      (func (export "realloc") (param i32 i32 i32 i32) (result i32) (local $p i32)
        (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                               (i32.sub (i32.const 0) (local.get 2))))
        (global.set $bump (i32.add (local.get $p) (local.get 3)))
        (local.get $p))
      (func (export "dup") (param i32 i32) (result i32)
        (i32.store (i32.const 1024) (local.get 0))
        (i32.store (i32.const 1028) (local.get 1))
        (i32.const 1024))
      (func (export "len") (param i32 i32) (result i32) (local.get 1)))
    (core instance $i (instantiate $m))
    (func $dup (param "s" string) (result string)
      (canon lift (core func $i "dup") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
    (func $len (param "s" string) (result u32)
      (canon lift (core func $i "len") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
    (export "dup" (func $dup))
    (export "len" (func $len)))
  (instance $in (instantiate $inner))
  (alias export $in "dup" (func $dup))
  (alias export $in "len" (func $len))
  (core module $libc
    (memory (export "memory") 1)
    (global $bump (mut i32) (i32.const 8192))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                             (i32.sub (i32.const 0) (local.get 2))))
      (global.set $bump (i32.add (local.get $p) (local.get 3)))
      (local.get $p)))
  (core instance $libc (instantiate $libc))
  (core func $dup-low (canon lower (func $dup) (memory (core memory $libc "memory"))
    (realloc (core func $libc "realloc"))))
  (core func $len-low (canon lower (func $len) (memory (core memory $libc "memory"))))
  (core module $outer
    (import "" "dup" (func $dup (param i32 i32 i32)))
    (import "" "len" (func $len (param i32 i32) (result i32)))
    (func (export "relay") (param i32 i32) (result i32)
      (call $dup (local.get 0) (local.get 1) (i32.const 2048))
      (i32.const 2048))
    (func (export "measure") (param i32 i32) (result i32)
      (call $len (local.get 0) (local.get 1))))
  (core instance $imports (export "dup" (func $dup-low)) (export "len" (func $len-low)))
  (core instance $o (instantiate $outer (with "" (instance $imports))))
  (func (export "relay") (param "s" string) (result string)
    (canon lift (core func $o "relay") (memory (core memory $libc "memory")) (realloc (core func $libc "realloc"))))
  (func (export "measure") (param "s" string) (result u32)
    (canon lift (core func $o "measure") (memory (core memory $libc "memory"))
      (realloc (core func $libc "realloc"))))
)
"""


@pytest.mark.parametrize(
    ("name", "arg", "expected"),
    [
        ("relay", "über ☃", "über ☃"),
        ("measure", "über ☃", len("über ☃".encode())),
        ("relay", "", ""),
    ],
)
async def test_calls_between_nested_components(
    tmp_path: Path, open_instance: Open, name: str, arg: str, expected: Any
) -> None:
    # the outer component's string is lifted from its memory and lowered into the inner
    # component's through the inner realloc, and back
    inst = open_instance(_parse(tmp_path, NESTED), Host())
    assert await inst.call("", name, arg) == expected


# Composed components drop resources another instance defines: the host's (a counter)
# and a sibling guest's (a thing). Each component sees its own resource types for them;
# the drop must still run the defining side's destructor.
COMPOSED_DROPS = """
(component
  (import "test:run/host" (instance $host
    (export "counter" (type $c (sub resource)))
    (export "make-counter" (func (param "start" u32) (result (own $c))))))
  (component $a
    (core module $d
      (global $n (mut i32) (i32.const 0))
      (func (export "dtor") (param i32) (global.set $n (i32.add (global.get $n) (i32.const 1))))
      (func (export "drops") (result i32) (global.get $n)))
    (core instance $d (instantiate $d))
    (type $thing (resource (rep i32) (dtor (core func $d "dtor"))))
    (core func $new (canon resource.new $thing))
    (core module $m
      (import "" "new" (func $new (param i32) (result i32)))
      (func (export "make") (result i32) (call $new (i32.const 42))))
    (core instance $m (instantiate $m (with "" (instance (export "new" (func $new))))))
    (func $make (result (own $thing)) (canon lift (core func $m "make")))
    (func $drops (result u32) (canon lift (core func $d "drops")))
    (export $thing-e "thing" (type $thing))
    (export "make-thing" (func $make) (func (result (own $thing-e))))
    (export "drops" (func $drops)))
  (component $b
    (import "a" (instance $a
      (export "thing" (type $t (sub resource)))
      (export "make-thing" (func (result (own $t))))))
    (alias export $a "thing" (type $thing))
    (alias export $a "make-thing" (func $make))
    (core func $make-low (canon lower (func $make)))
    (core func $drop (canon resource.drop $thing))
    (core module $m
      (import "" "make" (func $make (result i32)))
      (import "" "drop" (func $drop (param i32)))
      (func (export "cycle") (call $drop (call $make))))
    (core instance $m (instantiate $m
      (with "" (instance (export "make" (func $make-low)) (export "drop" (func $drop))))))
    (func (export "cycle") (canon lift (core func $m "cycle"))))
  (component $c
    (import "test:run/host" (instance $h
      (export "counter" (type $c (sub resource)))
      (export "make-counter" (func (param "start" u32) (result (own $c))))))
    (alias export $h "counter" (type $counter))
    (alias export $h "make-counter" (func $mk))
    (core func $mk-low (canon lower (func $mk)))
    (core func $drop (canon resource.drop $counter))
    (core module $m
      (import "" "make" (func $make (param i32) (result i32)))
      (import "" "drop" (func $drop (param i32)))
      (func (export "cycle") (call $drop (call $make (i32.const 3)))))
    (core instance $m (instantiate $m
      (with "" (instance (export "make" (func $mk-low)) (export "drop" (func $drop))))))
    (func (export "cycle") (canon lift (core func $m "cycle"))))
  (instance $ia (instantiate $a))
  (instance $ib (instantiate $b (with "a" (instance $ia))))
  (instance $ic (instantiate $c (with "test:run/host" (instance $host))))
  (alias export $ia "drops" (func $drops))
  (alias export $ib "cycle" (func $cycle-guest))
  (alias export $ic "cycle" (func $cycle-host))
  (export "drops" (func $drops))
  (export "cycle-guest" (func $cycle-guest))
  (export "cycle-host" (func $cycle-host))
)
"""


async def test_a_composed_component_dropping_anothers_resource_runs_its_destructor(
    tmp_path: Path, open_instance: Open
) -> None:
    # (on our engine the destructors were looked up under the dropping component's own
    # resource types, so none ran: an HTTP body's stream dropped by a composed guest
    # never ended)
    host = Host()
    inst = open_instance(_parse(tmp_path, COMPOSED_DROPS), host)
    await inst.call("", "cycle-host")
    assert host.dropped == [100]
    await inst.call("", "cycle-guest")
    await inst.call("", "cycle-guest")
    assert await inst.call("", "drops") == 2


TRAP_WIT = """\
package test:trap;

interface trap {
  set-reason: func(message: string);
}

world w {
  import trap;
  export die: func();
}
"""

TRAP_WAT = f"""\
(module
  (import "test:trap/trap" "set-reason" (func $say (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "out of sorts")
{bump_realloc_wat(4096)}  (func (export "die")
    (call $say (i32.const 16) (i32.const 12))
    unreachable)
)
"""


@pytest.fixture(scope="module")
def trap_wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    wit = tmp_path_factory.mktemp("trap") / "trap.wit"
    wit.write_text(TRAP_WIT)
    return build_wat_component(wit, "w", TRAP_WAT)


class Sayer(Host):
    """Serves ``set-reason`` as the host does (into the instance's fault sink)."""

    faults: _engine.FaultSink | None = None

    def resolve(self, item: _engine.ImportedItem) -> _engine.Resolved:
        assert item.name == "set-reason"
        return lambda message: setattr(self.faults, "reason", message)


async def test_a_trap_carries_the_reason_the_guest_gave(
    trap_wasm: bytes, open_instance: Open
) -> None:
    host = Sayer()
    inst = open_instance(trap_wasm, host)
    host.faults = inst.stock.faults if inst.kind == "stock" else inst.ours.faults
    with pytest.raises(GuestTrap, match=r"in die: out of sorts \(.*unreachable"):
        await inst.call("", "die")


def test_a_synchronous_call_s_trap_carries_the_reason_too(trap_wasm: bytes) -> None:
    host = Sayer()
    inst = OwnEngineInstance(read_component(trap_wasm), host.resolve, use_cache=False)
    host.faults = inst.faults
    with pytest.raises(GuestTrap, match=r"in die: out of sorts \(.*unreachable"):
        inst.func("", "die").call_sync()
    inst.close()


async def test_a_host_function_cannot_reenter_the_instance(run_wasm: bytes) -> None:
    host = Host()
    resolve = host.resolve
    made: list[OwnEngineInstance] = []

    def reenter(item: _engine.ImportedItem) -> _engine.Resolved:
        if item.name == "upper":
            return lambda s: made[0].func(API, "shout").call_sync(s)
        return resolve(item)

    inst = OwnEngineInstance(read_component(run_wasm), reenter, use_cache=False)
    made.append(inst)
    with pytest.raises(GuestTrap, match="cannot enter the component instance again"):
        inst.func(API, "shout").call_sync("x")


def test_a_lowering_imported_with_the_wrong_core_type_is_refused(run_wasm: bytes) -> None:
    component = read_component(run_wasm)
    lowers = [d for c in component.walk() for d in c.definitions if isinstance(d, CanonLower)]
    upper = next(d for d in lowers if [n for n, _ in d.type.params] == ["s"])
    api = component.exports[API]
    assert isinstance(api, InstanceType)
    add = api.export("add")
    assert isinstance(add, FuncType)
    upper.type = (
        add  # as a hostile binary could say: (u32, u32) -> u32 where (i32 i32 i32) is imported
    )
    with pytest.raises(LinkError, match="wrongly typed"):
        OwnEngineInstance(component, Host().resolve, use_cache=False)


# -- a componentize-py guest ------------------------------------------------------------


ABI_RESOURCES = {
    ("isyswasfa:isyswasfa/isyswasfa", "pending"): _engine.ResourceKind.PENDING,
    ("isyswasfa:isyswasfa/isyswasfa", "cancel"): _engine.ResourceKind.CANCEL,
    ("isyswasfa:isyswasfa/isyswasfa", "ready"): _engine.ResourceKind.READY,
}


class WasiOnly:
    """Our WASI host functions, registered as the host registers them, and nothing else:
    the guest's own imports (isyswasfa, test:cases/host) fail if called."""

    def __init__(self) -> None:
        self.wasi = WasiContext(WasiConfig())
        io = WasiIo(self.wasi)
        WasiClocks(self.wasi, io)
        WasiRandom(self.wasi)
        WasiCli(self.wasi)
        WasiFilesystem(self.wasi, io)
        WasiSockets(self.wasi, parse_allow_net(()))
        self.called: list[tuple[str, str]] = []

    def resolve(self, item: _engine.ImportedItem) -> _engine.Resolved:
        key = (_engine.strip_version(item.interface), item.name)
        if item.func_type is None:
            kind = ABI_RESOURCES.get(key)
            if kind is not None:
                return _engine.ResourceDef(kind, lambda rep: None)
            return self.wasi.resources.get(key)  # None: defined by another interface
        fn = self.wasi.functions.get(key)
        if isinstance(fn, _engine.Blocking):
            return fn
        if fn is None:

            def missing(*_args: Any) -> Any:
                raise HostProtocolError(f"{key} is not served in this test")

            return missing

        def served(*args: Any) -> Any:
            self.called.append(key)
            return fn(*args)

        return served


def _read_component(path: Path) -> ComponentDef:
    return read_component(path.read_bytes())


def _compile_stock(path: Path) -> Any:
    return _engine.compile_component(path.read_bytes())


@pytest.mark.guest
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["stock", "ours"])
async def test_a_python_guest_runs_sync_exports_on_both_engines(
    cases_component: trio_isyswasfa.Component, kind: str
) -> None:
    host = WasiOnly()
    if kind == "stock":
        raw = _compile_stock(Path(cases_component.name))
        stock = _engine.EngineInstance(
            _engine.LinkPlan(raw), _engine.component_exports(raw), host.resolve
        )
        add: Any = stock.func("test:cases/cases", "add")
        wall: Any = stock.func("test:cases/cases", "wall-seconds")
    else:
        ours = OwnEngineInstance(_read_component(Path(cases_component.name)), host.resolve)
        add = ours.func("test:cases/cases", "add")
        wall = ours.func("test:cases/cases", "wall-seconds")
    try:
        assert await add.call(2, 40) == 42
        # the guest's first call asks WASI for its environment, arguments and randomness
        assert ("wasi:cli/environment", "get-environment") in host.called
        assert ("wasi:random/random", "get-random-bytes") in host.called
        seconds = await wall.call()
        assert ("wasi:clocks/wall-clock", "now") in host.called
        assert abs(seconds - time.time()) < 300
        assert await add.call(2**31, 2**31 - 1) == 2**32 - 1
    finally:
        if kind == "stock":
            stock.close()
        else:
            ours.close()


def test_closing_an_instance_releases_its_host_functions(run_wasm: bytes) -> None:
    before = live_host_funcs()
    inst = OwnEngineInstance(read_component(run_wasm), Host().resolve, use_cache=False)
    assert live_host_funcs() > before
    add = inst.func(API, "add")
    assert add.call_sync(1, 2) == 3
    inst.close()
    assert live_host_funcs() == before
    with pytest.raises(InstanceDead, match="closed"):
        add.call_sync(1, 2)


def test_each_instance_reaches_its_own_host_functions(run_wasm: bytes) -> None:
    # the instances of one component share its host-function templates and number their
    # functions alike: a guest's call must still reach its own instance's host
    component = read_component(run_wasm)
    hosts = [Host() for _ in range(3)]
    insts = [OwnEngineInstance(component, host.resolve, use_cache=False) for host in hosts]
    try:
        for i, inst in enumerate(insts):
            assert inst.func(API, "read-counter").call_sync(i + 1) == 2 * (i + 1)
            assert inst.func(API, "thing-cycle").call_sync(i) == i
        for i, host in enumerate(hosts):
            assert host.counters == {100: i + 1}
            assert host.dropped == [100]
            assert host.notes == [1000 + i]  # its own guest's destructor
        insts[0].close()
        assert insts[1].func(API, "read-counter").call_sync(5) == 10
        assert hosts[1].counters == {100: 2, 101: 5}
        assert hosts[0].counters == {100: 1}
    finally:
        for inst in insts:
            inst.close()


def test_a_host_function_of_a_closed_instance_reports_it(run_wasm: bytes) -> None:
    # the instance is closed while its guest runs (by the host function it called): the
    # next host function the guest calls finds the instance gone, not another's state
    class Closing(Host):
        def make_counter(self, start: int) -> Any:
            inst.close()
            return super().make_counter(start)

    host = Closing()
    inst = OwnEngineInstance(read_component(run_wasm), host.resolve, use_cache=False)
    with pytest.raises(GuestTrap) as caught:
        inst.func(API, "read-counter").call_sync(1)
    assert isinstance(caught.value.__cause__, InstanceDead)
    assert "closed" in str(caught.value.__cause__)


async def test_a_closed_instance_with_blocking_imports_is_freed(run_wasm: bytes) -> None:
    # (a blocking import is an async host function in a table of the fiber module; its
    # closure holds the instance, so every instance stayed in memory, ~10 MB each)
    def upper(s: str) -> Generator[Any, Any, str]:
        return s.upper()
        yield  # a generator function that returns without waiting

    def resolve(item: _engine.ImportedItem) -> _engine.Resolved:
        return _engine.Blocking(upper) if item.name == "upper" else Host().resolve(item)

    inst = OwnEngineInstance(read_component(run_wasm), resolve, use_cache=False)
    assert inst.has_async
    assert await inst.func(API, "shout").call("a") == "A"
    gone = weakref.ref(inst)
    inst.close()
    del inst
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_a_closed_instance_frees_its_store_without_another_call(
    run_wasm: bytes, backend: str
) -> None:
    """A closed instance's store goes with it, not at the next call of some other
    instance: its parked fiber (which holds the store) is deleted from the event loop,
    between task steps, where no guest code runs (``serve --instances per-request``
    closes one instance per request)."""
    import anyio

    component = read_component(run_wasm)
    stores: list[weakref.ref[Any]] = []

    async def main() -> None:
        for _ in range(3):
            inst = OwnEngineInstance(component, Host().resolve, use_cache=False)
            assert await inst.func(API, "add").call(1, 2) == 3  # parks the store's fiber
            assert inst.fibers._server is not None
            stores.append(weakref.ref(inst.store))
            inst.close()
            del inst
            await anyio.wait_all_tasks_blocked()  # the event loop's callbacks have run
            gc.collect()
            assert stores[-1]() is None

    anyio.run(main, backend=backend)
    assert [store() for store in stores] == [None] * 3


def test_an_instance_closed_outside_an_event_loop_frees_its_store(run_wasm: bytes) -> None:
    import anyio

    inst = OwnEngineInstance(read_component(run_wasm), Host().resolve, use_cache=False)

    async def call(inst: OwnEngineInstance) -> None:
        assert await inst.func(API, "add").call(1, 2) == 3  # parks the store's fiber

    anyio.run(call, inst)
    assert inst.fibers._server is not None
    store = weakref.ref(inst.store)
    inst.close()  # no event loop, no call running: at once
    del inst
    gc.collect()
    assert store() is None


START = """
(component
  (import "note" (func $note (param "n" u32)))
  (core func $note-low (canon lower (func $note)))
  (core instance $imp (export "note" (func $note-low)))
  (core module $m
    (import "" "note" (func $note (param i32)))
    (func (export "init") (call $note (i32.const 7))))
  (core instance $i (instantiate $m (with "" (instance $imp))))
  (func $init (canon lift (core func $i "init")))
  (start $init)
)
"""


def test_a_component_start_function_runs_when_instantiated(tmp_path: Path) -> None:
    host = Host()
    inst = OwnEngineInstance(read_component(_parse(tmp_path, START)), host.resolve)
    assert host.notes == [7]
    inst.close()
