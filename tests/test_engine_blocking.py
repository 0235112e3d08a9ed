"""Blocking host functions, epoch yields and ``Limits.max_run_seconds`` on both engines.

A guest calling a :class:`~trio_isyswasfa._engine.Blocking` host function that waits
(``poll``, ``blocking-read``) must suspend only its own call: the event loop runs on,
and the result (here a ``list<u8>`` lowered through the guest's ``realloc``) reaches
the guest when the wait is over. A computing guest yields at every epoch tick, and
``max_run_seconds`` stops it, or a wait that lasts too long. The same WAT component runs
on the stock engine and on ours (one parametrised fixture).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import wasmtime

from trio_isyswasfa import _engine
from trio_isyswasfa._errors import GuestTrap, InstanceDead, LinkError, WasiError
from trio_isyswasfa._limits import Limits
from trio_isyswasfa.engine import _fiber
from trio_isyswasfa.engine._component import OwnEngineInstance
from trio_isyswasfa.engine._reader import read_component
from trio_isyswasfa.http._asgi import _eagerly
from trio_isyswasfa.testing import build_wat_component, bump_realloc_wat

WIT = """\
package test:blk;

interface host {
  wait-bytes: func(n: u32) -> result<list<u8>, string>;
  note: func(n: u32);
}

interface api {
  fetch: func(n: u32) -> result<list<u8>, string>;
  fetch-twice: func(n: u32) -> u32;
  spin: func();
  with-post: func(n: u32) -> string;
  fetch-posted: func(n: u32) -> result<list<u8>, string>;
  posts: func() -> u32;
}

world w {
  import host;
  export api;
}
"""

WAT = f"""\
(module
  (import "test:blk/host" "wait-bytes" (func $wait (param i32 i32)))
  (import "test:blk/host" "note" (func $note (param i32)))
  (memory (export "memory") 1)
{bump_realloc_wat(4096)}  (func (export "test:blk/api#fetch") (param i32) (result i32)
    (call $wait (local.get 0) (i32.const 1024))
    (i32.const 1024))
  (func (export "test:blk/api#fetch-twice") (param i32) (result i32)
    (call $wait (local.get 0) (i32.const 1024))
    (call $wait (local.get 0) (i32.const 1040))
    (i32.add (i32.load (i32.const 1032)) (i32.load (i32.const 1048))))
  (func (export "test:blk/api#spin")
    (loop $forever (br $forever)))
  (func (export "test:blk/api#with-post") (param i32) (result i32)
    (i32.store (i32.const 1024) (i32.const 0))
    (i32.store (i32.const 1028) (i32.const 0))
    (i32.const 1024))
  (func (export "cabi_post_test:blk/api#with-post") (param i32)
    (call $wait (i32.const 1) (i32.const 1100)))
  (global $posts (mut i32) (i32.const 0))
  (func (export "test:blk/api#fetch-posted") (param i32) (result i32)
    (call $wait (local.get 0) (i32.const 1024))
    (i32.const 1024))
  (func (export "cabi_post_test:blk/api#fetch-posted") (param i32)
    (global.set $posts (i32.add (global.get $posts) (i32.const 1))))
  (func (export "test:blk/api#posts") (result i32) (global.get $posts))
)
"""

API = "test:blk/api"


class Host:
    """``wait-bytes`` waits for ``gate`` (a trio event) and then gives ``n`` bytes."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.waiting = 0
        self.after_wait: Callable[[int], bytes] = lambda n: bytes(i % 251 for i in range(n))

    def wait_bytes(self, n: int) -> Generator[Any, Any, bytes]:
        if n == 0:
            return b""  # finishes without waiting
        self.waiting += 1
        try:
            yield self.gate.wait
        finally:
            self.waiting -= 1
        return self.after_wait(n)

    def resolve(self, item: _engine.ImportedItem) -> _engine.Resolved:
        if item.name == "wait-bytes":
            return _engine.Blocking(self.wait_bytes)
        if item.name == "note":
            return lambda n: None
        raise LinkError(f"no host function {item.name}")


class Instance:
    """One instance on either engine: ``await call(name, *args)``."""

    def __init__(self, kind: str, wasm: bytes, host: Host, limits: Limits | None) -> None:
        self.kind = kind
        if kind == "stock":
            raw = _engine.compile_component(wasm, use_cache=False)
            self.engine: Any = _engine.EngineInstance(
                _engine.LinkPlan(raw), _engine.component_exports(raw), host.resolve, limits
            )
        else:
            self.engine = OwnEngineInstance(
                read_component(wasm), host.resolve, limits=limits, use_cache=False
            )

    async def call(self, name: str, *args: Any) -> Any:
        return await self.engine.func(API, name).call(*args)


Open = Callable[..., Instance]


@pytest.fixture(scope="module")
def blk_wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    wit: Path = tmp_path_factory.mktemp("blk") / "blk.wit"
    wit.write_text(WIT)
    return build_wat_component(wit, "w", WAT)


@pytest.fixture(params=["stock", "ours"])
def open_instance(request: pytest.FixtureRequest, blk_wasm: bytes) -> Any:
    opened: list[Instance] = []

    def open_(host: Host, limits: Limits | None = None) -> Instance:
        inst = Instance(request.param, blk_wasm, host, limits)
        opened.append(inst)
        return inst

    yield open_
    for inst in opened:
        inst.engine.close()


async def test_a_wait_suspends_only_its_call(open_instance: Open) -> None:
    host = Host()
    inst = open_instance(host)
    got: list[Any] = []
    async with trio.open_nursery() as nursery:

        async def fetch() -> None:
            got.append(await inst.call("fetch", 70_000))

        nursery.start_soon(fetch)
        await trio.testing.wait_all_tasks_blocked()
        # the guest is suspended in wait-bytes; this task runs
        assert host.waiting == 1
        assert not got
        assert inst.engine.blocked
        host.gate.set()
    assert got == [_engine.Ok(bytes(i % 251 for i in range(70_000)))]
    assert not inst.engine.blocked


async def test_a_blocking_function_that_need_not_wait(open_instance: Open) -> None:
    inst = open_instance(Host())
    assert await inst.call("fetch", 0) == _engine.Ok(b"")


async def test_waits_one_after_another_in_one_call(open_instance: Open) -> None:
    host = Host()
    host.gate.set()
    inst = open_instance(host)
    assert await inst.call("fetch-twice", 5) == 10  # both lists' lengths


async def test_a_wasi_error_after_waiting_is_the_wit_err(open_instance: Open) -> None:
    host = Host()
    host.gate.set()

    def refuse(n: int) -> bytes:
        raise WasiError("no more bytes", "refused")

    host.after_wait = refuse
    inst = open_instance(host)
    assert await inst.call("fetch", 3) == _engine.Err("no more bytes")
    assert await inst.call("fetch", 0) == _engine.Ok(b"")  # the instance lives on


async def test_calls_take_turns_while_one_waits(open_instance: Open) -> None:
    host = Host()
    inst = open_instance(host)
    got: list[Any] = []
    async with trio.open_nursery() as nursery:

        async def fetch(n: int) -> None:
            got.append(await inst.call("fetch", n))

        nursery.start_soon(fetch, 2)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(fetch, 0)  # waits in line: the store is held
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        host.gate.set()
    assert got == [_engine.Ok(b"\0\1"), _engine.Ok(b"")]


async def test_cancelling_a_waiting_call_kills_the_instance(open_instance: Open) -> None:
    host = Host()
    inst = open_instance(host)
    with trio.move_on_after(0.05) as scope:
        await inst.call("fetch", 4)
    assert scope.cancelled_caught
    if inst.kind == "ours":
        assert host.waiting == 0  # the host function's generator was closed
    with pytest.raises(InstanceDead):
        await inst.call("fetch", 0)


async def test_closing_the_instance_while_a_call_waits_never_resumes_the_guest(
    blk_wasm: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # the guest resumed after close (its host functions released) and trapped on the
    # next one it reached with a KeyError of that function's key (issue 12's flake)
    host = Host()
    inst = Instance("ours", blk_wasm, host, None)
    got: list[BaseException] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def fetch() -> None:
                with pytest.raises(InstanceDead) as caught:
                    await inst.call("fetch-posted", 3)  # waits, then lifts on a host function
                got.append(caught.value)

            nursery.start_soon(fetch)
            await trio.testing.wait_all_tasks_blocked()
            assert host.waiting == 1
            inst.engine.close()
            host.gate.set()
    assert "closed" in str(got[0])
    assert "closing a component instance with a call in flight" in caplog.text  # who did
    assert host.waiting == 0  # the waiting host function's generator was closed
    with pytest.raises(InstanceDead):
        await inst.call("posts")


async def test_max_run_seconds_bounds_a_wait(open_instance: Open) -> None:
    inst = open_instance(Host(), Limits(max_run_seconds=0.05))
    with pytest.raises(GuestTrap, match="max_run_seconds"):
        await inst.call("fetch", 4)
    with pytest.raises(InstanceDead):
        await inst.call("fetch", 0)


async def test_a_computing_guest_yields_and_is_stopped(open_instance: Open) -> None:
    # the limit is a bound, not a measure: the guest must get to yield at least once
    # before it runs out, and its first slice lasts until the ticker thread's first tick,
    # which a loaded machine may hold up well past 0.1 s (the guest was stopped at its
    # first yield, before any other task had a turn: 7 failures in 9 runs pinned to one
    # busy core)
    inst = open_instance(Host(), Limits(max_run_seconds=1.0))
    ticks = 0

    async def count() -> None:
        # a turn of the loop, however short, counts (a timed sleep here also needed the
        # clock to move past it between two yields); the call may take one turn before
        # the guest starts, so a guest holding the loop until its limit stopped it
        # leaves it at 1 at most
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(count)
        with pytest.raises(GuestTrap, match="max_run_seconds"):
            await inst.call("spin")
        nursery.cancel_scope.cancel()
    assert ticks >= 2  # the loop ran while the guest computed


async def test_a_call_into_an_idle_store_starts_a_fresh_time_slice(open_instance: Open) -> None:
    # the deadline a call left behind had passed by the next call whenever the store sat
    # idle a tick or more (a pooled instance between requests): the guest yielded at its
    # first check, and a request that never waits paid for suspending (issue 14)
    inst = open_instance(Host())
    assert await inst.call("fetch", 0) == _engine.Ok(b"")
    suspended: list[bool] = []
    for _ in range(3):
        for _ in range(3):  # the store sits idle three ticks
            _engine.tick()
        got = await _eagerly(inst.call("fetch", 0), lambda: suspended.append(True))
        assert got == _engine.Ok(b"")
    # (a real tick of the ticker thread may land inside one of these calls)
    assert len(suspended) < 3


async def test_an_export_waits_then_its_post_return_runs(open_instance: Open) -> None:
    host = Host()
    inst = open_instance(host)
    got: list[Any] = []
    async with trio.open_nursery() as nursery:

        async def fetch() -> None:
            got.append(await inst.call("fetch-posted", 3))

        nursery.start_soon(fetch)
        await trio.testing.wait_all_tasks_blocked()
        assert host.waiting == 1  # suspended in the export, before its post-return
        host.gate.set()
    assert got == [_engine.Ok(b"\x00\x01\x02")]
    assert await inst.call("fetch-posted", 0) == _engine.Ok(b"")
    assert await inst.call("posts") == 2


async def test_calls_share_the_store_s_one_fiber(
    blk_wasm: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # on an instance with blocking imports the post-return may not run synchronously
    # (reaching an async host function would abort the process); a fiber costs wasmtime
    # more than the rest of a small call, so the store keeps one, parked between calls,
    # which runs each export, the lifting of its results and its post-return
    # (``engine/_shim.py``)
    started: list[object] = []
    call_async = _fiber._call_async

    def counting(*args: Any) -> Any:
        started.append(args[1])
        return call_async(*args)

    monkeypatch.setattr(_fiber, "_call_async", counting)
    inst = Instance("ours", blk_wasm, Host(), None)
    try:
        assert await inst.call("posts") == 0
        assert await inst.call("fetch-posted", 0) == _engine.Ok(b"")
        first = len(started)  # an export's first call sets its runner up
        for _ in range(3):
            assert await inst.call("fetch-posted", 0) == _engine.Ok(b"")
        assert await inst.call("posts") == 4
        assert len(started) == first  # no new fiber
    finally:
        inst.engine.close()


async def test_a_post_return_cannot_wait(open_instance: Open) -> None:
    inst = open_instance(Host())
    with pytest.raises(GuestTrap):
        await inst.call("with-post", 1)
    with pytest.raises(InstanceDead):
        await inst.call("fetch", 0)


async def test_a_host_exception_after_waiting_traps_with_its_cause(blk_wasm: bytes) -> None:
    host = Host()
    host.gate.set()
    failure = ZeroDivisionError("after the wait")

    def fail(n: int) -> bytes:
        raise failure

    host.after_wait = fail
    inst = Instance("ours", blk_wasm, host, None)
    try:
        with pytest.raises(GuestTrap) as caught:
            await inst.call("fetch", 3)
        assert caught.value.__cause__ is failure
        with pytest.raises(InstanceDead, match="after the wait"):
            await inst.call("fetch", 0)
    finally:
        inst.engine.close()


def test_a_start_like_synchronous_call_cannot_wait(blk_wasm: bytes) -> None:
    # call_sync runs outside the event loop: a wait there traps (on a fiber, so that
    # wasmtime never sees a synchronous call reach an async host function)
    host = Host()
    inst = Instance("ours", blk_wasm, host, None)
    try:
        assert inst.engine.func(API, "fetch").call_sync(0) == _engine.Ok(b"")
        with pytest.raises(GuestTrap, match="waited"):
            inst.engine.func(API, "fetch").call_sync(2)
        assert host.waiting == 0
    finally:
        inst.engine.close()


def _starting(n: int) -> bytes:
    """A component whose core module's start function calls the blocking host function
    ``pause(n)`` during instantiation and keeps its result (the export ``got``)."""
    return bytes(
        wasmtime.wat2wasm(f"""
(component
  (import "pause" (func $pause (param "n" u32) (result u32)))
  (core func $pause-low (canon lower (func $pause)))
  (core instance $imp (export "pause" (func $pause-low)))
  (core module $m
    (import "" "pause" (func $pause (param i32) (result i32)))
    (global $got (mut i32) (i32.const 0))
    (func $start (global.set $got (call $pause (i32.const {n}))))
    (start $start)
    (func (export "got") (result i32) (global.get $got)))
  (core instance $i (instantiate $m (with "" (instance $imp))))
  (func (export "got") (result u32) (canon lift (core func $i "got")))
)""")
    )


class TestBlockingInAStartFunction:
    """(ours) A start function runs while the instance is made, outside any export call
    and so off the fiber path: a blocking host function may finish there without
    waiting (its result reaches the guest), but not wait."""

    @staticmethod
    def _resolve(log: list[str]) -> Callable[[_engine.ImportedItem], _engine.Resolved]:
        def pause(n: int) -> Generator[Any, Any, int]:
            log.append(f"pause {n}")
            if n == 0:
                return 41  # finishes without waiting
            try:
                yield trio.lowlevel.checkpoint
            finally:
                log.append("closed")
            return n  # pragma: no cover - never resumed

        def resolve(item: _engine.ImportedItem) -> _engine.Resolved:
            assert item.name == "pause"
            return _engine.Blocking(pause)

        return resolve

    async def test_one_that_does_not_wait_returns_its_result(self) -> None:
        log: list[str] = []
        inst = OwnEngineInstance(read_component(_starting(0)), self._resolve(log), use_cache=False)
        try:
            assert log == ["pause 0"]
            assert await inst.func("", "got").call() == 41
        finally:
            inst.close()

    def test_one_that_waits_is_refused_by_name(self) -> None:
        log: list[str] = []
        with pytest.raises(GuestTrap, match="pause waited outside a fiber call") as info:
            OwnEngineInstance(read_component(_starting(1)), self._resolve(log), use_cache=False)
        assert isinstance(info.value.__cause__, LinkError)
        assert log == ["pause 1", "closed"]  # its wait was never awaited, and it is closed


# -- blocking host functions defined once per component (issue 12's opening) ----------


async def test_instances_share_the_definitions_and_reach_each_their_own_host(
    blk_wasm: bytes,
) -> None:
    """Each blocking import is defined once for all the component's instances: each
    instance's call still reaches its own host (found by the calling store), and a
    closed instance's is released."""
    component = read_component(blk_wasm)
    before = _fiber.live_host_funcs()
    hosts = [Host(), Host()]
    for i, host in enumerate(hosts):
        host.gate.set()
        host.after_wait = lambda n, i=i: bytes([i + 1]) * n  # type: ignore[misc]
    first, second = (OwnEngineInstance(component, h.resolve, use_cache=False) for h in hosts)
    try:
        opening = component.engine_cache["opening"]
        assert len(opening.host_defs._keys) == 1  # wait-bytes, for both instances
        assert _fiber.live_host_funcs() == before + 2
        assert await second.func(API, "fetch").call(2) == _engine.Ok(b"\x02\x02")
        assert await first.func(API, "fetch").call(3) == _engine.Ok(b"\x01\x01\x01")
        first.close()
        assert _fiber.live_host_funcs() == before + 1
        with pytest.raises(InstanceDead):
            await first.func(API, "fetch").call(1)
        assert await second.func(API, "fetch").call(1) == _engine.Ok(b"\x02")
    finally:
        first.close()
        second.close()
    assert _fiber.live_host_funcs() == before


# The definitions outlive their instances with the component, kept to the interpreter's
# exit here: they have no finalizer to call into Python then (one that did crashed the
# process at exit). Run in a child, which a regression kills.
_KEPT_TO_EXIT = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import trio
from test_engine_blocking import API, Host
from trio_isyswasfa.engine._component import OwnEngineInstance
from trio_isyswasfa.engine._reader import read_component

KEPT = read_component(open(sys.argv[3], "rb").read())
host = Host()
instances = [OwnEngineInstance(KEPT, host.resolve, use_cache=False) for _ in range(3)]
print(trio.run(instances[0].func(API, "fetch").call, 0))
instances[1].close()
"""


def test_definitions_kept_to_the_exit_end_cleanly(blk_wasm: bytes, tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "blk.wasm").write_bytes(blk_wasm)
    here = Path(__file__).resolve().parent
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _KEPT_TO_EXIT,
            str(here.parent),
            str(here),
            str(tmp_path / "blk.wasm"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "Ok(value=b'')"
