"""The round-trip guest: written as for a native WASI 0.3 build with componentize-py."""

from isyswasfa_guest import wait_pollable
from wit_world import exports
from wit_world.imports import baz, monotonic_clock


class Baz(exports.Baz):
    async def foo(self, s: str) -> str:
        with monotonic_clock.subscribe_duration(10_000_000) as pollable:
            await wait_pollable(pollable)
        value = await baz.foo(f"{s} - entered guest")
        return f"{value} - exited guest"
