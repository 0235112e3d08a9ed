"""Broken or hostile guests (tiny WAT components): clear errors, never a crash or hang."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from conftest import lowered_wit

import trio_isyswasfa
from trio_isyswasfa.testing import build_wat_component

WORLD = """
package test:hostile;
world hostile {
  export go: async func() -> u32;
}
"""

# Memory map: 16 start's return area, 32 poll's return area, 64 make-task's handles
# (pending 64, cancel 68, ready 72), 256 the poll output list, 1024+ cabi_realloc's heap.
TEMPLATE = """
(module
  (import "isyswasfa:isyswasfa/isyswasfa" "make-task" (func $make_task (param i32)))
  (import "isyswasfa:isyswasfa/isyswasfa" "[resource-drop]pending" (func $drop_pending (param i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $r i32)
    global.get $heap
    local.set $r
    global.get $heap
    local.get 3
    i32.add
    i32.const 7
    i32.add
    i32.const -8
    i32.and
    global.set $heap
    local.get $r)
  (func (export "go-isyswasfa-start") (result i32)
    i32.const 64
    call $make_task
    START_EXTRA
    ;; err(pending)
    i32.const 16
    i32.const 1
    i32.store8
    i32.const 20
    i32.const 64
    i32.load
    i32.store
    i32.const 16)
  (func (export "go-isyswasfa-result") (param i32) (result i32)
    i32.const 42)
  (func (export "isyswasfa-poll-hostile") (param i32 i32) (result i32)
    POLL_BODY))
"""

# poll returns [ready{state: 999, ready}] although it never reported `pending`
UNKNOWN_STATE = """
    i32.const 72
    i32.load
    i32.eqz
    if
      EMPTY
    end
    i32.const 256
    i32.const 0
    i32.store8
    i32.const 260
    i32.const 999
    i32.store
    i32.const 264
    i32.const 72
    i32.load
    i32.store
    i32.const 32
    i32.const 256
    i32.store
    i32.const 36
    i32.const 1
    i32.store
    i32.const 32
"""

EMPTY_POLL = """
    i32.const 32
    i32.const 0
    i32.store
    i32.const 36
    i32.const 0
    i32.store
    i32.const 32
"""

DROP_TWICE = """
    i32.const 64
    i32.load
    call $drop_pending
    i32.const 64
    i32.load
    call $drop_pending
"""


@pytest.fixture(scope="module")
def hostile_wit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lowered_wit(tmp_path_factory, "hostile", WORLD)


def build(wit: Path, *, poll: str = EMPTY_POLL, start_extra: str = "") -> bytes:
    poll = poll.replace("EMPTY", EMPTY_POLL + "\n      return")
    wat = TEMPLATE.replace("POLL_BODY", poll).replace("START_EXTRA", start_extra)
    return build_wat_component(wit, "hostile", wat)


async def call_go(wasm: bytes) -> BaseException:
    async with trio_isyswasfa.open_instance(wasm) as inst:
        with trio.fail_after(30), pytest.raises(trio_isyswasfa.IsyswasfaError) as info:
            await inst.call("", "go")
        with pytest.raises(trio_isyswasfa.InstanceDead):
            await inst.call("", "go")
    return info.value


async def test_poll_output_naming_unknown_state(hostile_wit: Path) -> None:
    exc = await call_go(build(hostile_wit, poll=UNKNOWN_STATE))
    assert isinstance(exc, trio_isyswasfa.GuestProtocolError)
    assert "999" in str(exc)


async def test_handle_dropped_twice(hostile_wit: Path) -> None:
    exc = await call_go(build(hostile_wit, start_extra=DROP_TWICE))
    assert isinstance(exc, trio_isyswasfa.GuestTrap)
    assert "handle" in str(exc)


async def test_trap_inside_poll(hostile_wit: Path) -> None:
    exc = await call_go(build(hostile_wit, poll="unreachable"))
    assert isinstance(exc, trio_isyswasfa.GuestTrap)
    assert "unreachable" in str(exc)


# without the grace period the shielded wait for the guest's confirmation never ends, and
# nothing inside the test can interrupt a shield: the time limit turns it into a failure
@pytest.mark.timeout(60, func_only=True)
async def test_guest_that_ignores_cancellation_cannot_hang_the_host(hostile_wit: Path) -> None:
    # the guest goes pending and never answers, not even a cancel: after the grace
    # period the instance is declared broken and the caller's cancellation proceeds
    async with trio_isyswasfa.open_instance(build(hostile_wit), cancel_grace=0.1) as inst:
        with trio.fail_after(30), trio.move_on_after(0.05) as scope:
            await inst.call("", "go")
        assert scope.cancelled_caught
        with pytest.raises(trio_isyswasfa.InstanceDead, match="did not confirm a cancellation"):
            await inst.call("", "go")


@pytest.mark.timeout(60, func_only=True)
async def test_a_trap_leaves_open_instance_as_itself(hostile_wit: Path) -> None:
    # the instance's task group is ours: callers see the GuestTrap, not an exception group;
    # a trap that does not wake the caller would leave it waiting: our deadline fails it
    wasm = build(hostile_wit, poll="unreachable")
    with trio.fail_after(30), pytest.raises(trio_isyswasfa.GuestTrap, match="unreachable"):
        async with trio_isyswasfa.open_instance(wasm, cancel_grace=0.5) as inst:
            await inst.call("", "go")
