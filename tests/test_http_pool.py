"""The instance pool behind ``serve``: what it lends again, and what it keeps."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from conftest import lowered_wit
from test_hostile import WORLD, build

import trio_isyswasfa
from trio_isyswasfa.http._pool import InstancePool
from trio_isyswasfa.wasi import WasiConfig


@pytest.fixture(scope="module")
def hostile_wit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lowered_wit(tmp_path_factory, "hostile", WORLD)


def pool(wasm: bytes, *, max_idle: int = 32) -> InstancePool:
    component = trio_isyswasfa.load_component(wasm)
    return InstancePool(component, wasi=WasiConfig(), cancel_grace=0.5, max_idle=max_idle)


async def test_an_instance_that_failed_is_not_lent_again(hostile_wit: Path) -> None:
    # the borrower caught the trap, so the loan itself ends cleanly: the instance is
    # still broken, and the next borrower gets a fresh one
    async with pool(build(hostile_wit, poll="unreachable")) as instances:
        async with instances.lend() as first:
            with trio.fail_after(5), pytest.raises(trio_isyswasfa.GuestTrap):
                await first.call("", "go")
        async with instances.lend() as second:
            assert second is not first


async def test_a_sound_instance_is_lent_again(hostile_wit: Path) -> None:
    async with pool(build(hostile_wit)) as instances:
        async with instances.lend() as first:
            pass
        async with instances.lend() as second:
            assert second is first


async def test_at_most_max_idle_instances_are_kept(hostile_wit: Path) -> None:
    opened: list[trio_isyswasfa.Instance] = []
    async with pool(build(hostile_wit), max_idle=1) as instances:
        async with instances.lend() as a, instances.lend() as b:
            opened += [a, b]
        # both came back; one was kept, the other closed
        async with instances.lend() as c, instances.lend() as d:
            assert c in opened
            assert d not in opened
