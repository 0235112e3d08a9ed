"""Limits on a guest: its memory, and how long one call into it may run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from conftest import CASES_IMPORTS, LoopTicks, lowered_wit

import trio_isyswasfa
from trio_isyswasfa import Limits
from trio_isyswasfa._limits import parse_size
from trio_isyswasfa._seam import ENGINE_VARIABLE
from trio_isyswasfa.testing import build_wat_component

# a limit that stops nothing leaves a guest running forever: each test's own time bound
# (the spinning guests run in a child process with a bound of its own: see `spun`)
pytestmark = pytest.mark.timeout(30, func_only=True)

WORLD = """
package test:limits;
world limits {
  export spin: func();
  export grow: func(pages: u32) -> s32;
  export nothing: async func() -> u32;
}
"""

# one 64 KiB page of memory; spin never returns; grow returns memory.grow's answer
MODULE = """
(module
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
  (func (export "spin") (loop $again br $again))
  (func (export "grow") (param i32) (result i32) local.get 0 memory.grow)
  (func (export "nothing-isyswasfa-start") (result i32)
    i32.const 16 i32.const 0 i32.store8
    i32.const 20 i32.const 7 i32.store
    i32.const 16)
  (func (export "nothing-isyswasfa-result") (param i32) (result i32) i32.const 7)
  (func (export "isyswasfa-poll-limits") (param i32 i32) (result i32)
    i32.const 32 i32.const 0 i32.store
    i32.const 36 i32.const 0 i32.store
    i32.const 32))
"""

PAGE = 64 * 1024


@pytest.fixture(scope="module")
def wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build_wat_component(lowered_wit(tmp_path_factory, "limits", WORLD), "limits", MODULE)


async def spin_outcomes(wasm: bytes) -> dict[str, Any]:
    """What three calls of ``spin`` came to, each stopped only by its run limit (run in a
    child process: see :func:`spun`)."""

    async def outcome(call: Awaitable[object]) -> list[str]:
        try:
            return ["returned", repr(await call)]
        except Exception as exc:
            return [type(exc).__name__, str(exc)]

    outcomes: dict[str, Any] = {}
    # alone, then the instance it killed
    async with trio_isyswasfa.open_instance(wasm, limits=Limits(max_run_seconds=0.2)) as inst:
        outcomes["alone"] = await outcome(inst.call("", "spin"))
        outcomes["after"] = await outcome(inst.call("", "grow", 0))
    # beside another task, which counts its turns (any turn: a timed sleep between them
    # also needs the clock to pass it between two of the guest's yields)
    ticks = LoopTicks(interval=0)
    limits = Limits(max_run_seconds=0.5)
    async with trio_isyswasfa.open_instance(wasm, limits=limits) as inst, trio.open_nursery() as n:
        n.start_soon(ticks.run)
        outcomes["beside"] = await outcome(inst.call("", "spin"))
        n.cancel_scope.cancel()
    outcomes["ticks"] = ticks.count
    # its caller cancelled meanwhile
    async with trio_isyswasfa.open_instance(wasm, limits=Limits(max_run_seconds=0.3)) as inst:
        outcomes["cancelled"] = ["cancelled"]
        with trio.move_on_after(0.05) as scope:
            outcomes["cancelled"] = await outcome(inst.call("", "spin"))
        outcomes["cancel_caught"] = scope.cancelled_caught
    return outcomes


SPIN_BOUND_SECONDS = 120
"""How long the child running the spinning calls may take (~2 s when it works)."""


@pytest.fixture(scope="module")
def spun(wasm: bytes, engine: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """:func:`spin_outcomes` on ``engine``, in a child process. A run limit that stopped
    nothing would leave the guest spinning for ever, and in this process it would outlast
    pytest-timeout too (on our engine its exception mostly lands in the epoch callback,
    whose errors ctypes swallows): the child is killed instead, and the tests fail."""
    path = tmp_path_factory.mktemp("spin") / "limits.wasm"
    path.write_bytes(wasm)
    script = (
        "import json, sys, trio\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from test_limits import spin_outcomes\n"
        "print(json.dumps(trio.run(spin_outcomes, open(sys.argv[2], 'rb').read())))\n"
    )
    tests = Path(__file__).resolve().parent
    try:
        child = subprocess.run(
            [sys.executable, "-c", script, str(tests), str(path)],
            cwd=tests.parent,  # this checkout's package
            env={**os.environ, ENGINE_VARIABLE: engine},
            capture_output=True,
            text=True,
            timeout=SPIN_BOUND_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"a spinning guest still ran after {SPIN_BOUND_SECONDS} s: no limit stopped it")
    assert child.returncode == 0, child.stderr
    outcomes: dict[str, Any] = json.loads(child.stdout)
    return outcomes


def test_a_guest_that_never_returns_is_stopped(spun: dict[str, Any]) -> None:
    kind, message = spun["alone"]
    assert kind == "GuestTrap"
    assert re.search(
        r"longer than max_run_seconds \(0.2 s\), without returning to the host", message
    )
    assert spun["after"][0] == "InstanceDead"


def test_a_computing_guest_leaves_the_event_loop_free(spun: dict[str, Any]) -> None:
    # it yields every epoch tick (10 ms): other tasks run between its time slices,
    # and the call still ends only when the guest does (here: its run limit)
    kind, message = spun["beside"]
    assert kind == "GuestTrap"
    assert "longer than max_run_seconds" in message
    # a loop held for the whole 0.5 s would give the counter one turn at most (the call
    # may take one before the guest starts); free, one at each of the guest's yields
    # (counted 10 ms sleeps, not turns, once fell under 5 on a busy core)
    assert spun["ticks"] >= 2


def test_a_cancelled_caller_waits_for_a_computing_guest(spun: dict[str, Any]) -> None:
    # a guest computing cannot be interrupted mid-slice; the cancellation takes effect
    # once the call ends (here at its run limit), as it would had the guest held the
    # loop: the call ends by its run limit's trap (had the cancel cut it short, the
    # scope would have swallowed it and no trap would be raised)
    kind, message = spun["cancelled"]
    assert kind == "GuestTrap"
    assert "longer than max_run_seconds" in message
    assert not spun["cancel_caught"]


async def test_the_run_limit_is_per_call_not_per_instance(
    cases_component: trio_isyswasfa.Component,
) -> None:
    imports = {
        "test:cases/host": {
            "note": lambda s: None,
            "forever": trio.sleep_forever,
            "echo-later": trio.sleep_forever,
            "fallible": trio.sleep_forever,
        }
    }
    limits = Limits(max_run_seconds=0.3)
    async with trio_isyswasfa.open_instance(
        cases_component, imports=imports, limits=limits
    ) as inst:
        start = time.monotonic()
        for _ in range(5):  # 0.5 s in all, each call into the guest short
            assert await inst.call("test:cases/cases", "sleep-ms", 100) == 100
        assert time.monotonic() - start >= 0.5
        await trio.sleep(0.4)  # idle time is not run time either
        assert await inst.call("test:cases/cases", "add", 2, 3) == 5


async def test_memory_grows_up_to_the_limit_and_no_further(wasm: bytes) -> None:
    async with trio_isyswasfa.open_instance(wasm) as inst:
        assert await inst.call("", "grow", 100) == 1  # unlimited: from 1 page to 101
    async with trio_isyswasfa.open_instance(wasm, limits=Limits(max_memory=4 * PAGE)) as inst:
        assert await inst.call("", "grow", 2) == 1
        assert await inst.call("", "grow", 2) == -1  # 5 pages > 4
        assert await inst.call("", "grow", 1) == 3


async def test_a_component_that_needs_more_memory_than_allowed_does_not_open(
    wasm: bytes,
) -> None:
    with pytest.raises(trio_isyswasfa.LinkError):
        async with trio_isyswasfa.open_instance(wasm, limits=Limits(max_memory=1000)):
            pass


async def test_a_python_guest_out_of_memory_raises_memory_error_inside(
    wasi_component: trio_isyswasfa.Component,
) -> None:
    limits = Limits(max_memory=256 * 1024 * 1024)
    async with trio_isyswasfa.open_instance(wasi_component, limits=limits) as inst:
        outcome = await inst.call(
            "test:wasi/probe", "exec", "result = len(bytearray(1024 * 1024 * 1024))"
        )
        assert outcome == trio_isyswasfa.Err("MemoryError")
        again = await inst.call("test:wasi/probe", "exec", "result = len(bytearray(1000))")
        assert again == trio_isyswasfa.Ok("1000")


@pytest.mark.parametrize(
    ("text", "size"), [("512K", 512 << 10), (" 256 MiB ", 256 << 20), ("2g", 2 << 30), ("100", 100)]
)
def test_sizes_read_as_the_cli_writes_them(text: str, size: int) -> None:
    assert parse_size(text) == size


# (int() reads Arabic-Indic '512' as 512: a size is ASCII digits only)
@pytest.mark.parametrize("text", ["lots", "0K", "-1K", "1T", "\u0665\u0661\u0662K", "5\u00b2K"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(trio_isyswasfa.HostProtocolError, match="bad size"):
        parse_size(text)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(trio_isyswasfa.HostProtocolError, match="max_run_seconds"):
        Limits(max_run_seconds=0)
    with pytest.raises(trio_isyswasfa.HostProtocolError, match="max_memory"):
        Limits(max_memory=-1)


async def test_a_blocking_sleep_in_a_host_call_is_bounded_too(
    wasi_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    # the guest's 10 s sleep and the limit's wait are both on trio's (here virtual)
    # clock: the call must end at its 0.3 s limit, long before the sleep would
    code = "with monotonic_clock.subscribe_duration(10 * 10**9) as p:\n    p.block()"
    async with trio_isyswasfa.open_instance(
        wasi_component, limits=Limits(max_run_seconds=0.3)
    ) as inst:
        start = trio.current_time()
        with pytest.raises(trio_isyswasfa.GuestTrap, match="blocked in a host call"):
            await inst.call("test:wasi/probe", "exec", code)
        assert trio.current_time() - start <= 0.3


async def test_a_blocking_stdin_read_is_bounded_too(
    wasi_component: trio_isyswasfa.Component,
) -> None:
    read_fd, write_fd = os.pipe()  # nothing is ever written
    try:
        wasi = trio_isyswasfa.WasiConfig(stdin=read_fd)
        async with trio_isyswasfa.open_instance(
            wasi_component, wasi=wasi, limits=Limits(max_run_seconds=0.3)
        ) as inst:
            with pytest.raises(trio_isyswasfa.GuestTrap, match="blocked in a host call"):
                await inst.call(
                    "test:wasi/probe", "exec", "result = stdin.get_stdin().blocking_read(10)"
                )
    finally:
        os.close(read_fd)
        os.close(write_fd)


async def test_a_guest_holding_too_many_handles_is_stopped(
    wasi_component: trio_isyswasfa.Component,
) -> None:
    code = "result = len([monotonic_clock.subscribe_duration(10**9) for _ in range(100)])"
    async with trio_isyswasfa.open_instance(wasi_component, limits=Limits(max_handles=50)) as inst:
        assert await inst.call("test:wasi/probe", "exec", "result = 1") == trio_isyswasfa.Ok("1")
        with pytest.raises(trio_isyswasfa.GuestTrap, match="50 WASI handles"):
            await inst.call("test:wasi/probe", "exec", code)
    async with trio_isyswasfa.open_instance(wasi_component, limits=Limits(max_handles=500)) as inst:
        assert await inst.call("test:wasi/probe", "exec", code) == trio_isyswasfa.Ok("100")


@pytest.mark.parametrize(
    ("export", "what"),
    [("gather-pollable-sleeps", "50 WASI handles"), ("gather-host-calls", "50 isyswasfa tasks")],
)
async def test_a_guest_making_too_many_tasks_or_pollables_is_stopped(
    cases_component: trio_isyswasfa.Component,
    autojump_clock: trio.testing.MockClock,
    export: str,
    what: str,
) -> None:
    # 100 guest tasks, each awaiting a pollable of its own or a host import
    limits = Limits(max_handles=50)
    async with trio_isyswasfa.open_instance(
        cases_component, imports=CASES_IMPORTS, limits=limits
    ) as inst:
        with pytest.raises(trio_isyswasfa.GuestTrap, match=what):
            await inst.call("test:cases/cases", export, 100, 10)
    limits = Limits(max_handles=500)
    async with trio_isyswasfa.open_instance(
        cases_component, imports=CASES_IMPORTS, limits=limits
    ) as inst:
        assert await inst.call("test:cases/cases", export, 100, 10) == 100
