"""Our own engine's async call path: core functions on wasmtime fibers, driven by trio."""

from __future__ import annotations

import ctypes
import gc
import platform
import sys
import weakref
from collections.abc import Callable, Generator
from functools import partial
from typing import Any

import anyio
import pytest
import trio
import trio.testing
import wasmtime
from conftest import LoopTicks

from trio_isyswasfa import GuestTrap, HostProtocolError, InstanceDead, Limits, LinkError, _engine
from trio_isyswasfa.engine import _core, _fiber
from trio_isyswasfa.engine._fiber import FiberStore

# a guest importing one host function "h.wait" (i32 -> i32), exporting:
#   add(a, b) = wait(a) + b;  spin(n): counts n down;  twice(a) = wait(wait(a))
GUEST = """
(module
  (import "h" "wait" (func $wait (param i32) (result i32)))
  (func (export "add") (param i32 i32) (result i32)
    (i32.add (call $wait (local.get 0)) (local.get 1)))
  (func (export "twice") (param i32) (result i32)
    (call $wait (call $wait (local.get 0))))
  (func (export "spin") (param i32) (result i32)
    (loop $l
      (local.set 0 (i32.sub (local.get 0) (i32.const 1)))
      (br_if $l (i32.ne (local.get 0) (i32.const 0))))
    (i32.const 7))
  (func (export "mixed") (param i64 f32 f64) (result f64 i64)
    (f64.add (f64.promote_f32 (local.get 1)) (local.get 2)) (local.get 0)))
"""

WAIT_TYPE = wasmtime.FuncType([wasmtime.ValType.i32()], [wasmtime.ValType.i32()])


@pytest.fixture(scope="module")
def module() -> wasmtime.Module:
    return wasmtime.Module(_engine.engine(), wasmtime.wat2wasm(GUEST))


def open_guest(
    module: wasmtime.Module, wait: Callable[..., Any], limits: Limits | None = None
) -> tuple[FiberStore, Any]:
    fs = FiberStore(limits=limits)
    host = fs.host_func(WAIT_TYPE, wait, label="h.wait")
    instance = fs.instantiate(module, [host])
    return fs, instance.exports(fs.store)


def plus_one(x: int) -> int:
    return x + 1


class TestCalls:
    async def test_plain_host_function(self, module: wasmtime.Module) -> None:
        fs, exports = open_guest(module, plus_one)
        assert await fs.call(exports["add"], 1, 2) == 4
        add = fs.func(exports["add"])
        assert [await add(i, 10) for i in range(3)] == [11, 12, 13]

    async def test_values_of_every_core_type(self, module: wasmtime.Module) -> None:
        fs, exports = open_guest(module, plus_one)
        assert await fs.call(exports["mixed"], 1 << 40, 0.5, 2.25) == [2.75, 1 << 40]
        assert await fs.call(exports["spin"], 3) == 7

    async def test_bad_arguments(self, module: wasmtime.Module) -> None:
        fs, exports = open_guest(module, plus_one)
        with pytest.raises(HostProtocolError, match="wrong number"):
            await fs.call(exports["add"], 1)
        with pytest.raises(HostProtocolError, match="bad arguments"):
            await fs.call(exports["add"], "x", 1)  # type: ignore[arg-type]
        assert fs.fault is None  # nothing ran
        assert await fs.call(exports["add"], 1, 1) == 3

    async def test_host_functions_with_no_and_several_results(self) -> None:
        module = wasmtime.Module(
            _engine.engine(),
            wasmtime.wat2wasm(
                """(module
                  (import "h" "pair" (func $pair (result i32 i64)))
                  (import "h" "note" (func $note (param f64)))
                  (func (export "f") (result i64) (local $a i32) (local $b i64)
                    (call $note (f64.const 1.5))
                    (call $pair) (local.set $b) (local.set $a)
                    (i64.add (i64.extend_i32_s (local.get $a)) (local.get $b))))"""
            ),
        )
        notes: list[float] = []

        def pair() -> Generator[Any, Any, tuple[int, int]]:
            yield trio.lowlevel.checkpoint
            return (3, 1 << 40)

        fs = FiberStore()
        i32, i64, f64 = wasmtime.ValType.i32(), wasmtime.ValType.i64(), wasmtime.ValType.f64()
        imports = [
            fs.host_func(wasmtime.FuncType([], [i32, i64]), pair),
            fs.host_func(wasmtime.FuncType([f64], []), notes.append),
        ]
        exports = fs.instantiate(module, imports).exports(fs.store)
        assert await fs.call(exports["f"]) == (1 << 40) + 3
        assert notes == [1.5]

    def test_unsupported_value_types(self) -> None:
        fs = FiberStore()
        ty = wasmtime.FuncType([wasmtime.ValType.externref()], [])
        with pytest.raises(HostProtocolError, match="only i32"):
            fs.host_func(ty, plus_one)

    async def test_synchronous_calls_are_refused(self, module: wasmtime.Module) -> None:
        # wasmtime itself refuses: a synchronous call reaching an async host function
        # would abort the process
        fs, exports = open_guest(module, plus_one)
        with pytest.raises(wasmtime.WasmtimeError, match="async"):
            exports["spin"](fs.store, 1)
        with pytest.raises(wasmtime.WasmtimeError, match="async"):
            wasmtime.Instance(fs.store, wasmtime.Module(_engine.engine(), "(module)"), [])

    async def test_a_finished_future_is_never_polled_again(self, module: wasmtime.Module) -> None:
        fs, exports = open_guest(module, plus_one)
        call = _fiber.CoreCall(fs.func(exports["add"]), (1, 2))
        try:
            while not call.poll():  # an epoch tick may make it yield first
                pass
            assert call.poll()  # wasmtime would abort the process on a second resume
            assert call.results() == 4
        finally:
            call.close()


class TestTheStoresFiber:
    """One long-lived fiber per store, parked between calls (``_shim``)."""

    async def test_calls_share_one_fiber(
        self, module: wasmtime.Module, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        fs, exports = open_guest(module, plus_one)
        add, spin = fs.func(exports["add"]), fs.func(exports["spin"])
        assert await add(1, 2) == 4
        assert await spin(3) == 7  # its runner is made: the fiber starts again
        started: list[object] = []
        monkeypatch.setattr(_fiber, "_call_async", lambda *a: started.append(a))
        assert [await add(i, 1) for i in range(3)] == [2, 3, 4]
        assert await spin(2) == 7
        assert started == []

    async def test_a_call_from_outside_stops_it(self, module: wasmtime.Module) -> None:
        fs, exports = open_guest(module, plus_one)
        assert await fs.func(exports["add"])(1, 2) == 4
        assert fs._server is not None
        assert fs.func(exports["spin"]).call_now(2) == 7  # not while it is parked
        assert fs._server is None
        assert await fs.func(exports["add"])(1, 2) == 4

    async def test_a_collected_store_goes_after_its_fiber(self, module: wasmtime.Module) -> None:
        # deleting a fiber's future unwinds it, in its store: the store is kept until
        # then, and that happens where no guest code runs (the next call's start)
        fs, exports = open_guest(module, plus_one)
        assert await fs.func(exports["add"])(1, 2) == 4
        store = weakref.ref(fs.store)
        del fs, exports
        gc.collect()
        assert store() is not None
        other, exports = open_guest(module, plus_one)
        assert await other.call(exports["add"], 1, 1) == 3
        gc.collect()
        assert store() is None

    def test_continuations_that_read_a_flag_are_answered_in_c(self) -> None:
        probe = (ctypes.c_ubyte * 2)(1, 0)
        assert _fiber._FLAG_SET(ctypes.addressof(probe)) is True
        probe[0] = 0
        assert _fiber._FLAG_SET(ctypes.addressof(probe)) is False
        assert _fiber._FLAG_SET is not _fiber._python_flag_reader  # libc's strlen

    @pytest.mark.skipif(
        sys.platform != "linux" or platform.machine() not in ("x86_64", "amd64"),
        reason="the machine-code park is for x86-64 System V only",
    )
    def test_parking_is_machine_code_on_x86_64(self) -> None:
        native = _fiber._PARK_NATIVE
        assert native is not None
        assert (
            ctypes.cast(_fiber._PARK, ctypes.c_void_p).value
            == ctypes.cast(native, ctypes.c_void_p).value
        )
        cont = (ctypes.c_void_p * 3)(None, None, 7)
        native(99, None, None, 0, None, 0, None, ctypes.addressof(cont))
        assert (cont[0], cont[1], cont[2]) == (_fiber._FLAG_SET_ADDRESS, 99, 7)

    async def test_calls_park_through_python_where_no_machine_code_is(
        self, module: wasmtime.Module, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        python_park = ctypes.cast(_fiber._park, wasmtime._ffi.wasmtime_func_async_callback_t)
        monkeypatch.setattr(_fiber, "_PARK", python_park)

        def waits(x: int) -> Generator[Any, Any, int]:
            yield trio.lowlevel.checkpoint
            return x * 10

        fs, exports = open_guest(module, waits)
        add, spin = fs.func(exports["add"]), fs.func(exports["spin"])
        assert [await add(i, 1) for i in range(3)] == [1, 11, 21]
        assert await spin(1000) == 7
        assert await add(2, 2) == 22


class TestWaiting:
    async def test_host_function_waits_and_only_the_guest_is_suspended(
        self, module: wasmtime.Module
    ) -> None:
        event = trio.Event()
        waits: list[int] = []

        def wait(x: int) -> Generator[Any, Any, int]:
            waits.append(x)
            got = yield event.wait
            assert got is None
            yield partial(trio.sleep, 0.01)
            return x * 10

        fs, exports = open_guest(module, wait)
        result: list[int] = []
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                result.append(await fs.call(exports["add"], 4, 2))

            nursery.start_soon(run)
            await trio.testing.wait_all_tasks_blocked()
            assert waits == [4]
            assert not result  # the guest is suspended, the loop runs
            event.set()
        assert result == [42]

    async def test_a_generator_that_never_waits(self, module: wasmtime.Module) -> None:
        def wait(x: int) -> Generator[Any, Any, int]:
            if x < 0:
                yield trio.lowlevel.checkpoint  # pragma: no cover - never reached
            return x * 3

        fs, exports = open_guest(module, wait)
        assert await fs.call(exports["add"], 2, 1) == 7

    async def test_wait_results_are_sent_and_errors_thrown_in(
        self, module: wasmtime.Module
    ) -> None:
        async def fails() -> None:
            raise ValueError("no luck")

        async def seven() -> int:
            return 7

        def wait(x: int) -> Generator[Any, Any, int]:
            try:
                yield fails
            except ValueError as exc:
                x += len(str(exc))  # "no luck": 7
            return (yield seven) + x

        fs, exports = open_guest(module, wait)
        assert await fs.call(exports["twice"], 1) == 29  # 1 + 7 + 7, twice

    async def test_many_fibers_on_many_stores(self, module: wasmtime.Module) -> None:
        gate = trio.Event()

        def wait(x: int) -> Generator[Any, Any, int]:
            yield gate.wait
            yield trio.lowlevel.checkpoint
            return x

        stores = [open_guest(module, wait) for _ in range(20)]
        results: dict[int, int] = {}
        async with trio.open_nursery() as nursery:
            for i, (fs, exports) in enumerate(stores):

                async def run(i: int = i, fs: FiberStore = fs, exports: Any = exports) -> None:
                    results[i] = await fs.call(exports["twice"], i)

                nursery.start_soon(run)
            await trio.testing.wait_all_tasks_blocked()
            assert not results
            gate.set()
        assert results == {i: i for i in range(20)}

    async def test_calls_into_one_store_take_turns(self, module: wasmtime.Module) -> None:
        order: list[int] = []

        def wait(x: int) -> Generator[Any, Any, int]:
            order.append(x)
            yield partial(trio.sleep, 0.01)
            order.append(-x)
            return x

        fs, exports = open_guest(module, wait)
        async with trio.open_nursery() as nursery:
            for i in (1, 2, 3):
                nursery.start_soon(fs.call, exports["add"], i, 0)
        # each call ran to its end before the next one entered the store
        assert len(order) == 6
        assert order[1::2] == [-x for x in order[0::2]]

    async def test_cancelling_the_caller_gives_the_store_up(self, module: wasmtime.Module) -> None:
        closed: list[bool] = []

        def wait(x: int) -> Generator[Any, Any, int]:
            try:
                yield trio.sleep_forever
            finally:
                closed.append(True)
            return x  # pragma: no cover - never resumed

        fs, exports = open_guest(module, wait)
        with trio.move_on_after(0.01) as scope:
            await fs.call(exports["add"], 1, 2)
        assert scope.cancelled_caught
        assert closed == [True]  # the fiber was dropped, the generator closed
        assert isinstance(fs.fault, InstanceDead)
        with pytest.raises(InstanceDead, match="abandoned"):
            await fs.call(exports["add"], 1, 2)

    async def test_host_exception_after_waiting_traps_with_cause(
        self, module: wasmtime.Module
    ) -> None:
        def wait(x: int) -> Generator[Any, Any, int]:
            yield trio.lowlevel.checkpoint
            raise KeyError("gone")

        fs, exports = open_guest(module, wait)
        with pytest.raises(GuestTrap, match=r"h\.wait failed") as info:
            await fs.call(exports["add"], 1, 2)
        assert isinstance(info.value.__cause__, KeyError)
        with pytest.raises(InstanceDead):
            await fs.call(exports["add"], 1, 2)

    async def test_host_exception_without_waiting_traps_with_cause(
        self, module: wasmtime.Module
    ) -> None:
        def wait(x: int) -> int:
            raise RuntimeError("broken")

        fs, exports = open_guest(module, wait)
        with pytest.raises(GuestTrap, match=r"h\.wait failed") as info:
            await fs.call(exports["add"], 1, 2)
        assert isinstance(info.value.__cause__, RuntimeError)

    async def test_a_bad_result_after_waiting_traps(self, module: wasmtime.Module) -> None:
        def wait(x: int) -> Generator[Any, Any, str]:
            yield trio.lowlevel.checkpoint
            return "not an i32"

        fs, exports = open_guest(module, wait)
        with pytest.raises(GuestTrap) as info:
            await fs.call(exports["add"], 1, 2)
        assert isinstance(info.value.__cause__, TypeError)

    def test_waiting_while_starting_is_refused(self) -> None:
        start = wasmtime.Module(
            _engine.engine(),
            wasmtime.wat2wasm(
                '(module (import "h" "wait" (func $w (param i32) (result i32)))'
                " (func $s (drop (call $w (i32.const 1)))) (start $s))"
            ),
        )

        def wait(x: int) -> Generator[Any, Any, int]:
            yield trio.lowlevel.checkpoint  # pragma: no cover - never resumed
            return x  # pragma: no cover

        fs = FiberStore()
        with pytest.raises(GuestTrap, match="outside a fiber call") as info:
            fs.instantiate(start, [fs.host_func(WAIT_TYPE, wait)])
        assert isinstance(info.value.__cause__, LinkError)


class TestTime:
    async def test_a_computing_guest_leaves_the_loop_free(self, module: wasmtime.Module) -> None:
        fs, exports = open_guest(module, plus_one)
        ticks = LoopTicks(0.001)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticks.run)
            # ~0.3 s of guest computing, in epoch slices of 10 ms
            assert await fs.call(exports["spin"], 600_000_000) == 7
            nursery.cancel_scope.cancel()
        assert ticks.count >= 5

    async def test_max_run_seconds_stops_a_computing_guest(self, module: wasmtime.Module) -> None:
        fs, exports = open_guest(module, plus_one, Limits(max_run_seconds=0.05))
        with pytest.raises(GuestTrap, match="max_run_seconds"):
            # seconds of computing (so the test ends, red, if the check goes)
            await fs.call(exports["spin"], 2_000_000_000)
        with pytest.raises(InstanceDead):
            await fs.call(exports["spin"], 1)

    async def test_max_run_seconds_bounds_a_wait(self, module: wasmtime.Module) -> None:
        def wait(x: int) -> Generator[Any, Any, int]:
            yield trio.sleep_forever
            return x  # pragma: no cover - never resumed

        fs, exports = open_guest(module, wait, Limits(max_run_seconds=0.05))
        with pytest.raises(GuestTrap, match="blocked in a host call"):
            await fs.call(exports["add"], 1, 2)
        assert isinstance(fs.fault, GuestTrap)

    def test_a_long_start_function_is_stopped(self) -> None:
        forever = wasmtime.Module(
            _engine.engine(),
            wasmtime.wat2wasm(
                "(module (func $s (local i32) (local.set 0 (i32.const 2000000000))"
                " (loop $l (local.set 0 (i32.sub (local.get 0) (i32.const 1)))"
                " (br_if $l (local.get 0)))) (start $s))"
            ),
        )
        fs = FiberStore(limits=Limits(max_run_seconds=0.05))
        with pytest.raises(GuestTrap, match="start function ran longer"):
            fs.instantiate(forever, [])


def test_under_asyncio(module: wasmtime.Module) -> None:
    async def main() -> tuple[int, int]:
        event = anyio.Event()

        def wait(x: int) -> Generator[Any, Any, int]:
            yield event.wait
            return x

        fs, exports = open_guest(module, wait)
        ticks = 0
        result: list[int] = []

        async def run() -> None:
            result.append(await fs.call(exports["add"], 40, 2))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            while not result:
                await anyio.sleep(0.001)
                ticks += 1
                if ticks == 3:
                    event.set()
            spin = await fs.call(exports["spin"], 1000)
        return result[0] + spin, ticks

    total, ticks = anyio.run(main, backend="asyncio")
    assert total == 49
    assert ticks >= 3


NESTED = """
(module
  (import "h" "sync" (func $sync (param i32) (result i32)))
  (import "h" "wait" (func $wait (param i32) (result i32)))
  (func (export "inner") (param i32) (result i32) (call $wait (local.get 0)))
  (func (export "outer") (param i32) (result i32) (call $sync (local.get 0))))
"""


class TestSynchronousCallsInsideFibers:
    """A store with ``sync_calls``: the host's own synchronous calls (``realloc``, a
    composed component's export) run inside a fiber call."""

    def open(self, wait: Callable[..., Any]) -> tuple[FiberStore, Any]:
        from trio_isyswasfa.engine._core import CoreFunc, host_func

        fs = FiberStore(sync_calls=True)
        inner: list[CoreFunc] = []

        def sync(args: list[int]) -> list[int]:
            return [inner[0]([args[0]])[0] + 1]

        made: list[int] = []
        hosts = [host_func(fs.store, WAIT_TYPE, sync, made), fs.host_func(WAIT_TYPE, wait)]
        module = wasmtime.Module(_engine.engine(), wasmtime.wat2wasm(NESTED))
        exports = fs.instantiate(module, hosts).exports(fs.store)
        inner.append(CoreFunc(fs.store, exports["inner"]))
        return fs, exports

    async def test_a_nested_call_reaching_a_host_function_that_need_not_wait(self) -> None:
        def wait(x: int) -> Generator[Any, Any, int]:
            if x < 0:
                yield trio.lowlevel.checkpoint  # pragma: no cover - never reached
            return x * 10

        fs, exports = self.open(wait)
        assert await fs.call(exports["outer"], 4) == 41

    async def test_waiting_inside_a_nested_call_traps_instead_of_crashing(self) -> None:
        # suspending the fiber under a synchronous call kills the process (a segfault)
        def wait(x: int) -> Generator[Any, Any, int]:
            yield trio.lowlevel.checkpoint
            return x  # pragma: no cover - never reached

        fs, exports = self.open(wait)
        with pytest.raises(GuestTrap) as caught:
            await fs.call(exports["outer"], 4)
        assert "cannot wait inside a synchronous call" in str(caught.value.__cause__)
        # nothing stays behind to be named the cause of a later, unrelated trap
        assert _core.take_host_exception() is None
        with pytest.raises(InstanceDead):
            await fs.call(exports["outer"], 4)


async def test_a_released_synchronous_host_function_traps_as_a_closed_instance() -> None:
    # a closed instance's host functions are released; a guest that still called one
    # trapped with a bare KeyError of the function's process-wide key (issue 12's flake)
    from trio_isyswasfa.engine._core import host_func, release_host_funcs

    fs = FiberStore(sync_calls=True)
    made: list[int] = []
    hosts = [host_func(fs.store, WAIT_TYPE, lambda args: [args[0]], made)]
    hosts.append(fs.host_func(WAIT_TYPE, plus_one))
    module = wasmtime.Module(_engine.engine(), wasmtime.wat2wasm(NESTED))
    exports = fs.instantiate(module, hosts).exports(fs.store)
    assert await fs.call(exports["outer"], 4) == 4
    release_host_funcs(made)
    with pytest.raises(GuestTrap) as caught:
        await fs.call(exports["outer"], 4)
    assert isinstance(caught.value.__cause__, InstanceDead)
    assert "closed" in str(caught.value)
