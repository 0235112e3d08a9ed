"""The Rust guest library (guest/rust/isyswasfa-guest) on our host: what only a Rust
guest shows, with tests/guests/rust-cases.

The behaviours both guest libraries promise run for both languages in
test_guest_cases.py; the round trip, its concurrency and its cancellation at every point
in examples/round-trip; the HTTP examples in test_http_examples.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

import trio_isyswasfa

pytestmark = [pytest.mark.guest]

HERE = Path(__file__).resolve().parent / "guests" / "rust-cases"
CASES = "test:rust-cases/cases"


async def _never(*args: object) -> str:
    raise AssertionError("the guest called its host")


NO_HOST: dict[str, dict[str, object]] = {
    "test:rust-cases/host": {"note": print, "echo-later": _never, "forever": _never}
}


@pytest.fixture(scope="session")
def rust_cases_component(
    isyswasfa_build_rust: Callable[..., trio_isyswasfa.Component],
) -> trio_isyswasfa.Component:
    return isyswasfa_build_rust(HERE / "wit", "rust-cases", HERE)


async def test_panic_is_a_trap_carrying_its_message(
    rust_cases_component: trio_isyswasfa.Component,
) -> None:
    """The panic's message reaches the caller's GuestTrap (isyswasfa:isyswasfa/trap),
    and stderr too; the instance is dead afterwards."""
    written: list[bytes] = []
    wasi = trio_isyswasfa.WasiConfig(stderr=written.append)
    async with trio_isyswasfa.open_instance(
        rust_cases_component, imports=NO_HOST, wasi=wasi
    ) as inst:
        with pytest.raises(trio_isyswasfa.GuestTrap) as trapped:
            await inst.call(CASES, "fail", "boom at the guest")
        with pytest.raises(trio_isyswasfa.InstanceDead, match="boom at the guest"):
            await inst.call(CASES, "add", 1, 2)
    message = str(trapped.value)
    assert "boom at the guest" in message
    assert "panicked at tests/guests/rust-cases/src/lib.rs:" in message
    assert "unreachable" in message  # and the wasm trap it became
    assert b"boom at the guest" in b"".join(written)


async def test_sleeping_tasks_share_one_host_timer(
    rust_cases_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    """N spawned tasks sleeping at once cost the host a clock read each, not an await
    each: the guest's timer queue waits on one pollable for the earliest deadline."""

    async def listens(n: int) -> int:
        async with trio_isyswasfa.open_instance(rust_cases_component, imports=NO_HOST) as inst:
            assert await inst.call(CASES, "gather-sleeps", n, 100) == n
            stats = inst.statistics()
            assert stats.host_tasks_running == stats.tasks == 0
            return stats.listens

    small, large = await listens(50), await listens(200)
    # one await per deadline the timer armed for (each sleep was one before: n of them)
    assert small <= 3
    assert large <= 3
