"""The host is written on anyio: the same embedding API works under asyncio."""

from __future__ import annotations

import time

import anyio
import pytest

import trio_isyswasfa

pytestmark = [pytest.mark.guest, pytest.mark.slow]


def test_round_trip_and_cancellation_under_asyncio(
    round_trip_component: trio_isyswasfa.Component, cases_component: trio_isyswasfa.Component
) -> None:
    notes: list[str] = []

    async def foo(s: str) -> str:
        await anyio.sleep(0.01)
        return f"{s} - entered host - exited host"

    async def main() -> tuple[str, bool, float]:
        async with trio_isyswasfa.open_instance(
            round_trip_component, imports={"example:round-trip/baz": {"foo": foo}}
        ) as inst:
            value = await inst.call("example:round-trip/baz", "foo", "hi")
        imports = {
            "test:cases/host": {
                "note": notes.append,
                "forever": anyio.sleep_forever,
                "echo-later": foo,
                "fallible": foo,
            }
        }
        async with trio_isyswasfa.open_instance(cases_component, imports=imports) as inst:
            with anyio.move_on_after(0.05) as scope:
                await inst.call("test:cases/cases", "cancel-aware-sleep", 60_000)
            start = time.monotonic()
            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(inst.call, "test:cases/cases", "sleep-ms", 100)
            elapsed = time.monotonic() - start
        return value, scope.cancelled_caught, elapsed

    value, cancelled, elapsed = anyio.run(main, backend="asyncio")
    assert value == "hi - entered guest - entered host - exited host - exited guest"
    assert cancelled
    assert notes == ["guest saw CancelledError"]
    assert elapsed < 2.0
