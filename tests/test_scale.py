"""The host's work per concurrent call, task and pollable stays flat as their number grows.

Counted, not timed: wake-ups of calls waiting for the store, poll calls and host tasks
for N and 4N things at once must grow (at most) linearly; every line a crowd waits in
(the store's, a server's instance slots and pool, the HTTP client's connections) serves
in arrival order and wakes one waiter per hand-off; many requests at once stay on
``max_instances``. The speed itself is measured by ``bench/bench_scale.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.lowlevel
import trio.testing
import wasmtime.component
from conftest import CASES_IMPORTS
from test_http_client import body_of, get, ok, read_request, server
from test_http_serve import http_guest_component  # noqa: F401 (a fixture)

import trio_isyswasfa
from trio_isyswasfa.http import ComponentApp, HttpClient
from trio_isyswasfa.http._pool import InstancePool
from trio_isyswasfa.testing import asgi_request, open_lifespan

pytestmark = pytest.mark.guest

PROBE = "test:wasi/probe"
CASES = "test:cases/cases"
# a synchronous export that holds the store while it blocks 1 s in a host call
BLOCK = "with monotonic_clock.subscribe_duration(10**9) as p:\n    p.block()\nresult = 1"
# guest code for the tests of waits on one pipe: `wait` for its reader with a timeout,
# and `write_after` some seconds; each test's `main` follows
PIPE_WAITS = """
import asyncio
async def wait(rx, timeout=None):
    with rx.subscribe() as p:
        try:
            await asyncio.wait_for(wait_pollable(p), timeout)
            return "woke"
        except TimeoutError:
            return "gave up"
async def write_after(tx, seconds):
    with monotonic_clock.subscribe_duration(seconds * 10**9) as p:
        await wait_pollable(p)
    tx.write(b"x")
"""


class _Wakeups(trio.abc.Instrument):
    """Counts the times each watched task is scheduled to run: for a task parked in a
    line, the times it was woken."""

    def __init__(self) -> None:
        self.watched: set[trio.lowlevel.Task] = set()
        self.count: Counter[trio.lowlevel.Task] = Counter()

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        if task in self.watched:
            self.count[task] += 1

    def watch(self) -> None:
        """Watch the current task."""
        self.watched.add(trio.lowlevel.current_task())

    def unwatch(self) -> None:
        """Stop watching the current task."""
        self.watched.discard(trio.lowlevel.current_task())

    @property
    def total(self) -> int:
        return sum(self.count.values())


async def _line_up(
    take: Callable[[], Awaitable[object]], give: Callable[[], object], n: int
) -> tuple[list[int], int]:
    """``n`` tasks come one after another to wait for what ``take`` gets (this task
    holds it first); each, once it has it, notes its place and hands it on with
    ``give``. The order they were served in, and the wake-ups they had in line."""
    wakeups = _Wakeups()
    trio.lowlevel.add_instrument(wakeups)
    order: list[int] = []
    await take()

    async def waiter(i: int) -> None:
        wakeups.watch()
        await take()
        wakeups.unwatch()
        order.append(i)
        give()

    try:
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(waiter, i)
                await trio.testing.wait_all_tasks_blocked()  # in line, after the others
            give()
    finally:
        trio.lowlevel.remove_instrument(wakeups)
    return order, wakeups.total


class TestHandOffsWakeOneWaiterInTurn:
    """Each place a crowd can wait for one thing hands it to the first in line, and
    wakes only that one (a shared event would wake the n still waiting at each of the n
    hand-offs: n * (n + 1) / 2 wake-ups)."""

    N = 30

    async def test_a_servers_instance_slots(
        self, service_component: trio_isyswasfa.Component
    ) -> None:
        # requests waiting while all of max_instances * per_instance slots are taken
        app = ComponentApp(service_component, max_instances=1, per_instance=1)
        order, wakeups = await _line_up(app._take_slot, app._limiter().release, self.N)
        assert order == list(range(self.N))
        assert wakeups == self.N

    async def test_a_pools_opening_of_an_instance(
        self, service_component: trio_isyswasfa.Component
    ) -> None:
        # requests arriving together at a full shared pool wait for the one opening
        pool = InstancePool(
            service_component, wasi=trio_isyswasfa.WasiConfig(), cancel_grace=1, per_instance=4
        )
        opening = pool._opening
        order, wakeups = await _line_up(opening.acquire, opening.release, self.N)
        assert order == list(range(self.N))
        assert wakeups == self.N

    async def test_an_http_clients_connections_to_one_origin(self) -> None:
        # requests to one origin through one connection, held by a first request until
        # its answer is released: each waits in line for the connection
        async def run(n: int) -> int:
            paths: list[bytes] = []
            release = trio.Event()
            wakeups = _Wakeups()

            async def held_first(stream: trio.SocketStream, state: object) -> None:
                buf = bytearray()
                while (request := await read_request(stream, buf)) is not None:
                    paths.append(request.split(b" ")[1])
                    if len(paths) == 1:
                        await release.wait()
                    await stream.send_all(ok(b"x"))

            async def one(i: int) -> None:
                wakeups.watch()
                await body_of(await client.send(get(up.port, f"/{i}")))
                wakeups.unwatch()

            async with (
                server(held_first) as up,
                HttpClient(allow=["127.0.0.1:*"], max_connections_per_origin=1) as client,
            ):
                trio.lowlevel.add_instrument(wakeups)
                try:
                    async with trio.open_nursery() as nursery:
                        for i in range(n + 1):
                            nursery.start_soon(one, i)
                            await trio.testing.wait_all_tasks_blocked()
                        origin = ("http", "127.0.0.1", up.port)
                        assert client.statistics(origin) == (1, 0, n)  # (open, idle, waiting)
                        release.set()
                finally:
                    trio.lowlevel.remove_instrument(wakeups)
            assert paths == [f"/{i}".encode() for i in range(n + 1)]  # first come, first served
            return wakeups.total

        # each is woken once in line, and a few times for its own request's I/O: linear
        # (a shared event woke the n still in line at each of the n hand-offs)
        small, large = await run(10), await run(40)
        assert large <= 4.5 * small, (small, large)


@pytest.mark.parametrize(
    ("requests", "max_waiting", "served"),
    [
        (40, 40, 40),  # each waits for one of the 2 * 8 slots: all are served
        (40, 10, 26),  # 16 served at once, 10 wait: the 14 beyond get 503 at once
    ],
)
async def test_many_slow_requests_at_once_are_served_by_max_instances(
    request: pytest.FixtureRequest,
    autojump_clock: trio.testing.MockClock,
    requests: int,
    max_waiting: int,
    served: int,
) -> None:
    # the 1,000 slow requests on at most 8 instances (bench_scale's serve-8
    # row), scaled down: requests whose guests stream their bodies over 50 ms arrive
    # at once; the instance count stays bounded however many come, the rest wait in
    # line or are turned away with 503 (never an instance more)
    component = request.getfixturevalue("http_guest_component")
    app = ComponentApp(component, max_instances=2, per_instance=8, max_waiting=max_waiting)
    statuses: list[int] = []

    async def one() -> None:
        response = await asgi_request(app, "/stream", query="n=5")
        statuses.append(response.status)
        if response.status == 200:
            assert response.body.count(b"\n") == 5

    async with open_lifespan(app):
        async with trio.open_nursery() as nursery:
            for _ in range(requests):
                nursery.start_soon(one)
        stats = app.statistics()
    assert Counter(statuses) == Counter({200: served, 503: requests - served})
    assert (stats.completed, stats.rejected) == (served, requests - served)
    assert stats.instances_opened <= 2


async def _blocking_calls(
    component: trio_isyswasfa.Component, n: int
) -> trio_isyswasfa.InstanceStatistics:
    async with trio_isyswasfa.open_instance(component) as inst:
        await inst.call(PROBE, "exec", "result = 1")  # the guest's first call initialises it
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(inst.call, PROBE, "exec", BLOCK)
        return inst.statistics()


async def test_calls_waiting_for_the_store_are_woken_once_each(
    wasi_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    # every call blocks while holding the store, so all but one wait in line each time
    n = 20
    small = await _blocking_calls(wasi_component, n)
    large = await _blocking_calls(wasi_component, 4 * n)
    assert small.store_waits >= n - 1
    assert large.store_waits >= 4 * n - 1
    # one wake-up per wait: 4x the calls, 4x the wake-ups (a shared event woke the
    # whole line at every hand-off: 16x)
    assert small.store_wakeups == small.store_waits
    assert large.store_wakeups == large.store_waits
    assert large.store_wakeups <= 4.5 * small.store_wakeups


async def _cases_stats(
    component: trio_isyswasfa.Component, export: str, *args: int
) -> trio_isyswasfa.InstanceStatistics:
    async with trio_isyswasfa.open_instance(component, imports=CASES_IMPORTS) as inst:
        await inst.call(CASES, "immediate", "x")  # the guest's first call initialises it
        await inst.call(CASES, export, *args)
        stats = inst.statistics()
        assert stats.host_tasks_running == 0
        return stats


@pytest.mark.parametrize("export", ["gather-pollable-sleeps", "gather-sleeps"])
async def test_guest_tasks_sleeping_together_share_one_host_timer(
    cases_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock, export: str
) -> None:
    # n guest tasks, each with a clock pollable of its own due at one time (or asyncio
    # sleeps, which the guest's loop folds into one pollable): no host task, one timer
    for n in (50, 200):
        stats = await _cases_stats(cases_component, export, n, 100)
        assert stats.host_tasks_started == 0
        assert stats.timer_wakeups <= 2
        assert stats.poll_calls <= 6


async def test_handles_for_guests_are_made_in_wasmtime_only_for_the_stock_engine(
    cases_component: trio_isyswasfa.Component,
    autojump_clock: trio.testing.MockClock,
    engine: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # each sleeping guest task gets host handles (pending, ready): our own engine lowers
    # their reps; only wasmtime-py's component API needs wasmtime's handle objects
    made = 0
    real_own = wasmtime.component.ResourceHost.own

    def counting_own(rep: int, ty: int) -> wasmtime.component.ResourceHost:
        nonlocal made
        made += 1
        return real_own(rep, ty)

    monkeypatch.setattr(wasmtime.component.ResourceHost, "own", counting_own)
    n = 40
    await _cases_stats(cases_component, "gather-pollable-sleeps", n, 100)
    if engine == "own":
        assert made == 0
    else:
        assert made >= n


async def test_concurrent_calls_each_awaiting_a_pollable_cost_the_host_linearly(
    cases_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    async def run(n: int) -> trio_isyswasfa.InstanceStatistics:
        async with trio_isyswasfa.open_instance(cases_component, imports=CASES_IMPORTS) as inst:
            await inst.call(CASES, "immediate", "x")
            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    nursery.start_soon(inst.call, CASES, "sleep-ms", 100)
            return inst.statistics()

    small, large = await run(25), await run(100)
    assert small.host_tasks_started == large.host_tasks_started == 0
    assert large.timer_wakeups <= 2
    for n, stats in ((25, small), (100, large)):
        # each call waits at most twice for the store (its start and its result), and
        # is woken once per wait (the last may be handed the store and not have run yet)
        assert stats.store_wakeups <= stats.store_waits <= 2 * n + stats.poll_calls
    assert large.poll_calls <= 4.5 * small.poll_calls


@pytest.mark.parametrize("n", [25, 100])
async def test_each_answer_wakes_its_own_caller_only(
    cases_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock, n: int
) -> None:
    # n concurrent calls answered one at a time (call i sleeps 100 + i ms): a caller is
    # woken for its turns of the store and its answer, ~3 times, however many calls
    # wait beside it (waking every caller at each answer: ~n / 2 times each)
    woken = _Wakeups()

    async def call(i: int) -> None:
        woken.watch()
        await inst.call(CASES, "sleep-ms", 100 + i)
        woken.unwatch()

    async with trio_isyswasfa.open_instance(cases_component, imports=CASES_IMPORTS) as inst:
        await inst.call(CASES, "immediate", "x")
        trio.lowlevel.add_instrument(woken)
        try:
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(call, i)
        finally:
            trio.lowlevel.remove_instrument(woken)
    assert woken.total <= 5 * n, woken.count
    assert max(woken.count.values()) <= 10, woken.count


async def test_guest_tasks_awaiting_host_imports_cost_one_host_task_each(
    cases_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    small = await _cases_stats(cases_component, "gather-host-calls", 50, 100)
    large = await _cases_stats(cases_component, "gather-host-calls", 200, 100)
    assert (small.host_tasks_started, large.host_tasks_started) == (50, 200)
    assert large.poll_calls <= 4.5 * small.poll_calls


async def test_cancelled_sleeps_do_not_pile_up_in_the_timer(
    cases_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio_isyswasfa.open_instance(cases_component, imports=CASES_IMPORTS) as inst:
        for _ in range(300):  # each starts an hour's sleep that is then cancelled
            with trio.move_on_after(0.01):
                await inst.call(CASES, "cancel-aware-sleep", 3_600_000)
        stats = inst.statistics()
        assert stats.pollables_waiting == 0
        assert stats.cancels_confirmed == 300
        assert len(inst._sched._timers) <= 128


@pytest.mark.parametrize("with_pipe", [False, True])
async def test_poll_on_several_clocks_waits_for_the_soonest(
    wasi_component: trio_isyswasfa.Component,
    autojump_clock: trio.testing.MockClock,
    with_pipe: bool,
) -> None:
    # clock pollables cost one deadline together; a pipe's pollable still waits beside them
    code = (
        "tx, rx = pipe.make_pipe()\n"
        "clocks = [monotonic_clock.subscribe_duration(s * 10**9) for s in (3600, 2, 60)]\n"
        f"pollables = clocks + ([rx.subscribe()] if {with_pipe} else [])\n"
        "result = poll.poll(pollables)\n"
    )
    async with trio_isyswasfa.open_instance(wasi_component) as inst:
        start = trio.current_time()
        assert await inst.call(PROBE, "exec", code) == trio_isyswasfa.Ok("[1]")
        assert 2 <= trio.current_time() - start < 60


@pytest.mark.parametrize("n", [20, 80])
async def test_guest_tasks_waiting_on_one_stream_share_one_host_wait(
    wasi_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock, n: int
) -> None:
    # n guest tasks, each with its own subscription to one pipe's reader, then a write
    code = f"""{PIPE_WAITS}
async def main():
    tx, rx = pipe.make_pipe()
    await asyncio.gather(write_after(tx, 1), *(wait(rx) for _ in range({n})))
    return rx.read(10)
"""
    async with trio_isyswasfa.open_instance(wasi_component) as inst:
        assert await inst.call(PROBE, "exec-async", code) == trio_isyswasfa.Ok("b'x'")
        stats = inst.statistics()
        assert stats.host_tasks_started == 1
        assert stats.host_tasks_running == 0


async def test_a_cancelled_wait_on_a_shared_stream_leaves_the_others_waiting(
    wasi_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    # one of three readers gives up after 1 s; the other two still see the write at 2 s
    code = f"""{PIPE_WAITS}
async def main():
    tx, rx = pipe.make_pipe()
    *woken, _ = await asyncio.gather(wait(rx, 1), wait(rx, 60), wait(rx, 60), write_after(tx, 2))
    return woken
"""
    async with trio_isyswasfa.open_instance(wasi_component) as inst:
        outcome = await inst.call(PROBE, "exec-async", code)
        assert outcome == trio_isyswasfa.Ok(repr(["gave up", "woke", "woke"]))
        stats = inst.statistics()
        assert stats.host_tasks_started == 1
        assert (stats.cancels_sent, stats.host_tasks_running) == (0, 0)


async def test_a_wait_after_every_waiter_on_a_stream_gave_up_waits_anew(
    wasi_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    # the host's shared wait of the first reader is being cancelled when the second
    # starts waiting: the second must not be woken by that ending, only by the write
    code = f"""{PIPE_WAITS}
async def main():
    tx, rx = pipe.make_pipe()
    later = asyncio.ensure_future(write_after(tx, 5))
    first = await wait(rx, 1)
    second = await wait(rx, 2)
    third = await wait(rx, 60)
    await later
    return [first, second, third]
"""
    async with trio_isyswasfa.open_instance(wasi_component) as inst:
        outcome = await inst.call(PROBE, "exec-async", code)
        assert outcome == trio_isyswasfa.Ok(repr(["gave up", "gave up", "woke"]))
        assert inst.statistics().host_tasks_running == 0


def _polls_on_pipes(k: int, rounds: int) -> str:
    # a synchronous guest polling k quiet pipes beside a 1 ms clock, `rounds` times;
    # the pipes stay open after the call (kept in a module the guest's calls share)
    return (
        f"pipes = [pipe.make_pipe() for _ in range({k})]\n"
        "os.kept_pipes = getattr(os, 'kept_pipes', []) + pipes\n"
        "subs = [rx.subscribe() for tx, rx in pipes]\n"
        f"for _ in range({rounds}):\n"
        "    with monotonic_clock.subscribe_duration(10**6) as clock:\n"
        "        ready = poll.poll([clock, *subs])\n"
        "result = ready\n"
    )


@pytest.mark.parametrize("k", [10, 40])
async def test_blocking_polls_on_the_same_streams_start_one_host_wait_per_stream(
    wasi_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock, k: int
) -> None:
    # each poll returns at its clock; the pipes' waits outlive it for the next poll
    # (a task per pollable per poll: rounds * k host tasks)
    async with trio_isyswasfa.open_instance(wasi_component) as inst:
        assert await inst.call(PROBE, "exec", _polls_on_pipes(k, 10)) == trio_isyswasfa.Ok("[0]")
        assert inst.statistics().host_tasks_started == k
        await trio.testing.wait_all_tasks_blocked()
        assert len(inst._sched._shared) == k  # still open, waited on for the next poll
        # a poll that wants none of them ends them
        assert await inst.call(PROBE, "exec", _polls_on_pipes(1, 1)) == trio_isyswasfa.Ok("[0]")
        assert inst.statistics().host_tasks_started == k + 1
        await trio.testing.wait_all_tasks_blocked()
        assert len(inst._sched._shared) == 1
    assert not inst._sched._shared


async def test_a_blocking_poll_wakes_for_the_stream_that_got_data(
    wasi_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    # 20 quiet pipes (one subscribed twice) and stdin; stdin gets data after 1 s
    send, receive = trio.testing.memory_stream_one_way_pair()
    code = (
        "pipes = [pipe.make_pipe() for _ in range(20)]\n"
        "subs = [rx.subscribe() for tx, rx in pipes] + [pipes[0][1].subscribe()]\n"
        "with stdin.get_stdin() as s:\n"
        "    result = poll.poll([*subs, s.subscribe()])\n"
    )
    config = trio_isyswasfa.WasiConfig(stdin=receive)
    async with trio_isyswasfa.open_instance(wasi_component, wasi=config) as inst:
        outcome: list[object] = []

        async def call() -> None:
            outcome.append(await inst.call(PROBE, "exec", code))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await trio.sleep(1)
            assert not outcome
            await send.send_all(b"hi")
        assert outcome == [trio_isyswasfa.Ok("[21]")]
        # one wait per source: the pipe subscribed twice has one
        assert inst.statistics().host_tasks_started == 21
