"""A guest exercising the Python guest library; see tests/test_guest_python.py."""

import asyncio
import time

from componentize_py_types import Err
from isyswasfa_guest import spawn, wait_pollable
from isyswasfa_guest.streams import read_all, write_all
from wit_world import exports
from wit_world.imports import host, monotonic_clock, pipe

LEAKED: list[object] = []


async def sleep_ms(ms: int) -> None:
    with monotonic_clock.subscribe_duration(ms * 1_000_000) as pollable:
        await wait_pollable(pollable)


class Cases(exports.Cases):
    async def sleep_ms(self, ms: int) -> int:
        await sleep_ms(ms)
        return ms

    async def spawn_then_note(self, ms: int) -> str:
        async def later() -> None:
            await sleep_ms(ms)
            host.note("spawned task done")

        spawn(later())
        return "returned"

    async def cancel_aware_sleep(self, ms: int) -> str:
        try:
            await sleep_ms(ms)
        except asyncio.CancelledError:
            host.note("guest saw CancelledError")
            raise
        return "finished"

    async def import_with_timeout(self, ms: int) -> str:
        if ms == 0:
            # give up in the very step that started the import: its `listen` goes out
            # with the export's `pending`, already abandoned (asyncio.wait_for with a
            # zero timeout would cancel the coroutine before it ever ran)
            task = asyncio.ensure_future(host.forever())
            await asyncio.sleep(0)  # the import starts: its `listen` is buffered
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return "timed out"
        try:
            return await asyncio.wait_for(host.forever(), timeout=ms / 1000)
        except TimeoutError:
            return "timed out"

    async def gather_sleeps(self, n: int, ms: int) -> int:
        await asyncio.gather(*(asyncio.sleep(ms / 1000) for _ in range(n)))
        return n

    async def gather_pollable_sleeps(self, n: int, ms: int) -> int:
        # one deadline for all: the timers are due together however long creating them takes
        deadline = monotonic_clock.now() + ms * 1_000_000

        async def until_deadline() -> None:
            with monotonic_clock.subscribe_instant(deadline) as pollable:
                await wait_pollable(pollable)

        await asyncio.gather(*(until_deadline() for _ in range(n)))
        return n

    async def gather_host_calls(self, n: int, ms: int) -> int:
        replies = await asyncio.gather(*(host.echo_later("x", ms) for _ in range(n)))
        return len(replies)

    async def as_completed(self, ms: list[int]) -> list[int]:
        async def one(m: int) -> int:
            await sleep_ms(m)
            return m

        return [await fut for fut in asyncio.as_completed([one(m) for m in ms])]

    async def echo_via_host(self, s: str, ms: int) -> str:
        return await host.echo_later(s, ms)

    async def call_fallible(self, ok: bool) -> str:
        try:
            return "ok: " + await host.fallible(ok)
        except Err as err:
            return f"err: {err.value}"

    def add(self, a: int, b: int) -> int:
        return a + b

    async def fail(self, msg: str) -> str:
        await sleep_ms(1)
        raise ValueError(msg)

    async def try_result(self, ok: bool) -> str:
        await sleep_ms(1)
        if ok:
            return "yes"
        raise Err("no")

    async def immediate(self, s: str) -> str:
        return s.upper()

    async def pipe_through(self, n: int) -> int:
        """A spawned writer and this reader share a small pipe: both must wait."""
        data = bytes(i % 251 for i in range(n))
        tx, rx = pipe.make_pipe()

        async def writer() -> None:
            with tx:
                await write_all(tx, data)

        spawn(writer())
        with rx:
            received = await read_all(rx)
        return len(received) if received == data else 0

    async def write_after_reader_gone(self) -> str:
        tx, rx = pipe.make_pipe()
        rx.__exit__(None, None, None)
        with tx:
            try:
                await write_all(tx, b"x")
            except Err as err:
                return type(err.value).__name__
        return "wrote"

    async def two_steps(self, ms: int) -> str:
        """Suspends twice (a timer, then an import), and cleans up when cancelled."""
        await sleep_ms(ms)
        return await host.echo_later("two", ms)

    async def ignores_cancel(self, ms: int) -> str:
        """Deliberately broken: swallows CancelledError and carries on for an hour."""
        try:
            await sleep_ms(ms)
        except asyncio.CancelledError:
            await sleep_ms(3_600_000)
        return "done anyway"

    async def leaks_on_cancel(self, ms: int) -> str:
        """Deliberately broken: on cancellation it keeps a pollable handle forever."""
        try:
            await sleep_ms(ms)
        except asyncio.CancelledError:
            LEAKED.append(monotonic_clock.subscribe_duration(1))
            raise
        return "done"

    def wall_seconds(self) -> int:
        return int(time.time())
