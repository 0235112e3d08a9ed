"""wasi:io streams, wasi:clocks, wasi:random and stdio, called from inside a guest."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
import trio
import trio.testing
from conftest import LoopTicks

import trio_isyswasfa

pytestmark = [pytest.mark.guest, pytest.mark.slow]

PROBE = "test:wasi/probe"


async def run(inst: trio_isyswasfa.Instance, code: str, *, is_async: bool = False) -> object:
    outcome = await inst.call(PROBE, "exec-async" if is_async else "exec", code)
    assert isinstance(outcome, trio_isyswasfa.Ok), outcome
    return eval(outcome.value)


@pytest.fixture
def written() -> list[bytes]:
    return []


@pytest.fixture
async def inst(
    wasi_component: trio_isyswasfa.Component, written: list[bytes]
) -> AsyncIterator[trio_isyswasfa.Instance]:
    config = trio_isyswasfa.WasiConfig(
        stdin=b"line one\nline two\n", stdout=written.append, env={"A": "1"}, args=["prog", "x"]
    )
    async with trio_isyswasfa.open_instance(wasi_component, wasi=config) as instance:
        yield instance


class TestRandom:
    async def test_secure_bytes(self, inst: trio_isyswasfa.Instance) -> None:
        a, b, n = await run(
            inst,
            "result = (random.get_random_bytes(32), random.get_random_bytes(32),"
            " random.get_random_u64())",
        )  # type: ignore[misc]
        assert len(a) == len(b) == 32
        assert a != b
        assert 0 <= n < 2**64

    async def test_insecure_and_seed(self, inst: trio_isyswasfa.Instance) -> None:
        data, seed1, seed2 = await run(
            inst,
            "result = (insecure.get_insecure_random_bytes(1000),"
            " insecure_seed.insecure_seed(), insecure_seed.insecure_seed())",
        )  # type: ignore[misc]
        assert len(data) == 1000
        assert len(set(data)) > 100  # not a constant
        assert seed1 == seed2  # the seed is fixed for the instance's life


class TestClocks:
    async def test_monotonic_clock_is_the_loops_clock(self, inst: trio_isyswasfa.Instance) -> None:
        before = trio.current_time()
        now, resolution = await run(
            inst, "result = (monotonic_clock.now(), monotonic_clock.resolution())"
        )  # type: ignore[misc]
        assert before * 1e9 <= now <= trio.current_time() * 1e9
        assert resolution == 1

    async def test_past_instant_is_ready_at_once(self, inst: trio_isyswasfa.Instance) -> None:
        assert await run(
            inst,
            "with monotonic_clock.subscribe_instant(0) as p: result = p.ready()",
        )

    async def test_wall_clock(self, inst: trio_isyswasfa.Instance) -> None:
        import time

        seconds, resolution = await run(
            inst,
            "t = wall_clock.now(); r = wall_clock.resolution();"
            " result = (t.seconds, (r.seconds, r.nanoseconds))",
        )  # type: ignore[misc]
        assert abs(seconds - time.time()) < 60
        assert resolution == (0, 1)


class TestStdio:
    async def test_stdin_bytes_then_closed(self, inst: trio_isyswasfa.Instance) -> None:
        code = (
            "s = stdin.get_stdin()\n"
            "out = [s.blocking_read(5), s.read(100)]\n"
            "try:\n"
            "    s.read(1)\n"
            "except Err as e:\n"
            "    out.append(type(e.value).__name__)\n"
            "result = out"
        )
        assert await run(inst, code) == [b"line ", b"one\nline two\n", "StreamError_Closed"]

    async def test_stdout_reaches_the_callback(
        self, inst: trio_isyswasfa.Instance, written: list[bytes]
    ) -> None:
        await run(inst, "stdout.get_stdout().blocking_write_and_flush(b'hello stdout')")
        assert b"".join(written) == b"hello stdout"

    async def test_environment_and_arguments(self, inst: trio_isyswasfa.Instance) -> None:
        assert await run(
            inst, "result = (environment.get_environment(), environment.get_arguments())"
        ) == ([("A", "1")], ["prog", "x"])


class TestStdioStreams:
    """stdin, stdout and stderr as trio and anyio streams."""

    async def test_plain_python_reads_stdin_from_a_trio_stream(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        send, receive = trio.testing.memory_stream_one_way_pair()

        async def feed() -> None:
            for chunk in (b"first ", b"second ", b"third"):
                await trio.sleep(0.05)  # the guest is waiting in sys.stdin.read()
                await send.send_all(chunk)
            await send.aclose()

        config = trio_isyswasfa.WasiConfig(stdin=receive)
        async with (
            trio_isyswasfa.open_instance(wasi_component, wasi=config) as inst,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(feed)
            code = "import sys\nresult = sys.stdin.buffer.read()"
            assert await run(inst, code) == b"first second third"

    async def test_print_goes_to_a_trio_stream(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        send, receive = trio.testing.memory_stream_one_way_pair()
        config = trio_isyswasfa.WasiConfig(stdout=send)
        received = bytearray()

        async def collect() -> None:
            while data := await receive.receive_some():
                received.extend(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            async with trio_isyswasfa.open_instance(wasi_component, wasi=config) as inst:
                await run(inst, "for i in range(3): print('line', i)")
                # written, never flushed: it still goes out when the instance ends
                await run(inst, "stdout.get_stdout().write(b'unflushed')")
            await send.aclose()
        assert bytes(received) == b"line 0\nline 1\nline 2\nunflushed"

    async def test_anyio_streams_work_too(self, wasi_component: trio_isyswasfa.Component) -> None:
        # object streams of bytes, as anyio code often passes bytes around
        to_guest, from_host = anyio.create_memory_object_stream[bytes](10)
        to_host, from_guest = anyio.create_memory_object_stream[bytes](10)
        with to_guest, from_host, to_host, from_guest:
            await to_guest.send(b"ping")
            to_guest.close()
            config = trio_isyswasfa.WasiConfig(stdin=from_host, stderr=to_host)
            async with trio_isyswasfa.open_instance(wasi_component, wasi=config) as inst:
                code = "import sys\nsys.stderr.buffer.write(sys.stdin.buffer.read() + b' pong')"
                await run(inst, code + "\nsys.stderr.flush()")
            to_host.close()
            assert b"".join([chunk async for chunk in from_guest]) == b"ping pong"

    def test_stdio_of_no_known_kind_is_refused(self) -> None:
        with pytest.raises(TypeError, match="stdin must be bytes"):
            trio_isyswasfa.WasiConfig(stdin="text")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="stdout must be a callable"):
            trio_isyswasfa.WasiConfig(stdout=object())  # type: ignore[arg-type]


class TestStreams:
    async def test_pipe_read_does_not_wait(self, inst: trio_isyswasfa.Instance) -> None:
        code = """
async def main():
    tx, rx = pipe.make_pipe()
    first = rx.read(10)              # nothing yet: empty, not an error
    tx.write(b'abc')
    second = rx.read(10)
    tx.__exit__(None, None, None)    # the writer goes away: the reader sees `closed`
    try:
        rx.read(10)
        third = 'data'
    except Err as e:
        third = type(e.value).__name__
    rx.__exit__(None, None, None)
    return (first, second, third)
"""
        assert await run(inst, code, is_async=True) == (b"", b"abc", "StreamError_Closed")

    async def test_splice_moves_bytes_between_streams(self, inst: trio_isyswasfa.Instance) -> None:
        code = """
async def main():
    a_tx, a_rx = pipe.make_pipe()
    b_tx, b_rx = pipe.make_pipe()
    with a_tx, a_rx, b_tx, b_rx:
        a_tx.write(b'spliced bytes')
        n = b_tx.splice(a_rx, 100)
        return (n, b_rx.read(100), a_tx.check_write())
"""
        assert await run(inst, code, is_async=True) == (13, b"spliced bytes", 65536)

    async def test_poll_on_one_pollable(self, inst: trio_isyswasfa.Instance) -> None:
        code = "with monotonic_clock.subscribe_duration(0) as p:\n    result = poll.poll([p])"
        assert await run(inst, code) == [0]

    async def test_poll_on_several_pollables(self, inst: trio_isyswasfa.Instance) -> None:
        code = (
            "with monotonic_clock.subscribe_duration(10**12) as late,"
            " monotonic_clock.subscribe_duration(0) as now:\n"
            "    result = poll.poll([late, now])"
        )
        assert await run(inst, code) == [1]

    @pytest.mark.timeout(30, func_only=True)  # without the run limit it would never end
    async def test_blocking_read_on_an_empty_pipe_waits_until_the_run_limit(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        # the guest holds the only writer: it waits forever, as a native thread would
        limits = trio_isyswasfa.Limits(max_run_seconds=0.3)
        code = "tx, rx = pipe.make_pipe()\nrx.blocking_read(1)"
        async with trio_isyswasfa.open_instance(wasi_component, limits=limits) as inst:
            with pytest.raises(trio_isyswasfa.GuestTrap, match="blocked in a host call"):
                await inst.call(PROBE, "exec", code)

    async def test_cancelling_a_caller_whose_guest_is_blocked_gives_the_instance_up(
        self, inst: trio_isyswasfa.Instance
    ) -> None:
        # synchronous guest code cannot be interrupted where it stands: the call ends
        # at once and the instance, stopped in the middle of guest code, is dead
        code = "tx, rx = pipe.make_pipe()\nrx.blocking_read(1)"
        with trio.move_on_after(0.1) as scope:
            await inst.call(PROBE, "exec", code)
        assert scope.cancelled_caught
        assert not inst._reusable()  # a pool under `serve` lends it no more
        with pytest.raises(trio_isyswasfa.InstanceDead, match="abandoned"):
            await inst.call(PROBE, "exec", "result = 1")

    @pytest.mark.parametrize(
        ("write", "message"),
        [("write(bytes(70000))", "check-write"), ("write_zeroes(70000)", "write-zeroes larger")],
        ids=["write", "write-zeroes"],
    )
    async def test_a_write_beyond_check_write_is_a_protocol_error(
        self, inst: trio_isyswasfa.Instance, write: str, message: str
    ) -> None:
        code = f"tx, rx = pipe.make_pipe()\ntx.{write}"
        with pytest.raises(trio_isyswasfa.GuestProtocolError, match=message):
            await inst.call(PROBE, "exec", code)

    @pytest.mark.parametrize(
        ("call", "name"),
        [
            ("blocking_write_and_flush(bytes({n}))", "blocking-write-and-flush"),
            ("blocking_write_zeroes_and_flush({n})", "blocking-write-zeroes-and-flush"),
        ],
    )
    async def test_blocking_writes_are_4096_bytes_at_most(
        self, wasi_component: trio_isyswasfa.Component, call: str, name: str
    ) -> None:
        # as wasmtime: 4096 bytes pass, one more is a guest error that stops the instance
        code = "tx, rx = pipe.make_pipe()\ntx." + call + "\nresult = rx.read(5000)"
        async with trio_isyswasfa.open_instance(wasi_component) as inst:
            assert await run(inst, code.format(n=4096)) == bytes(4096)
            with pytest.raises(trio_isyswasfa.GuestProtocolError, match=f"{name} of 4097 bytes"):
                await inst.call(PROBE, "exec", code.format(n=4097))


async def test_stdout_to_a_host_fd_is_written_in_a_thread(
    wasi_component: trio_isyswasfa.Component,
) -> None:
    import os

    read_fd, write_fd = os.pipe()
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_fd, 65536):
            received.extend(chunk)

    code = """
async def main():
    with stdout.get_stdout() as out:
        await write_all(out, bytes(range(256)) * 1000)
        out.blocking_flush()
    return 'done'
"""
    config = trio_isyswasfa.WasiConfig(stdout=write_fd)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, drain)
            async with trio_isyswasfa.open_instance(wasi_component, wasi=config) as inst:
                # far more than a pipe holds: the guest waits on the stream's pollable
                assert await run(inst, code, is_async=True) == "done"
            os.close(write_fd)
            write_fd = -1
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        os.close(read_fd)
    assert bytes(received) == bytes(range(256)) * 1000


async def test_a_terminal_is_reported_as_one(wasi_component: trio_isyswasfa.Component) -> None:
    import os
    import pty

    leader, follower = pty.openpty()
    try:
        on_tty = trio_isyswasfa.WasiConfig(stdout=follower)
        async with trio_isyswasfa.open_instance(wasi_component, wasi=on_tty) as inst:
            assert await run(inst, "result = os.isatty(1), os.isatty(2)") == (True, False)
        async with trio_isyswasfa.open_instance(wasi_component) as inst:
            assert await run(inst, "result = os.isatty(1)") is False
    finally:
        os.close(leader)
        os.close(follower)


async def test_a_guest_blocked_in_a_read_leaves_the_event_loop_free(
    wasi_component: trio_isyswasfa.Component,
) -> None:
    # plain CPython code: sys.stdin.buffer.read blocks in blocking-read; meanwhile
    # another trio task keeps running and is the one that sends the data
    import os

    read_fd, write_fd = os.pipe()
    ticks = LoopTicks()
    try:
        config = trio_isyswasfa.WasiConfig(stdin=read_fd)

        async def feed() -> None:
            await trio.sleep(0.3)
            os.write(write_fd, b"late data")

        async with (
            trio_isyswasfa.open_instance(wasi_component, wasi=config) as inst,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(ticks.run)
            nursery.start_soon(feed)
            with trio.fail_after(5):
                outcome = await run(inst, "import sys\nresult = sys.stdin.buffer.read(9)")
            nursery.cancel_scope.cancel()
        assert outcome == b"late data"
        assert ticks.count >= 10  # the loop ran on while the guest waited
    finally:
        os.close(read_fd)
        os.close(write_fd)


async def test_stdin_data_is_not_lost_when_a_wait_is_cancelled(
    wasi_component: trio_isyswasfa.Component,
) -> None:
    # a read of stdin abandoned by a cancelled wait still hands its data to the next one
    import os

    read_fd, write_fd = os.pipe()
    code = """
import asyncio
async def main():
    s = stdin.get_stdin()
    try:
        await asyncio.wait_for(read(s), 0.05)
        first = 'data too early'
    except TimeoutError:
        first = 'timed out'
    return (first, await read(s))
"""
    try:
        config = trio_isyswasfa.WasiConfig(stdin=read_fd)
        async with trio_isyswasfa.open_instance(wasi_component, wasi=config) as inst:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    result: list[object] = []

                    async def call() -> None:
                        result.append(await run(inst, code, is_async=True))

                    nursery.start_soon(call)
                    await trio.sleep(0.3)  # the guest's wait timed out; its read is still blocked
                    os.write(write_fd, b"late data")
            assert result == [("timed out", b"late data")]
    finally:
        os.close(write_fd)
        os.close(read_fd)
