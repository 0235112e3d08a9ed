"""Edge cases of the hot paths that their own tests do not pin: cancellation after each
scheduler step (both guest languages, trio and asyncio), a first round that raises, a
host task's hand-entered cancel scope, `settle` on an instance that never settles, the
machine-code `next` and its fall-backs, requests written at `send()`, and the ticker's
tick count. Each test names the change it probes.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import gc
import warnings
from collections.abc import Generator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.lowlevel
import trio.testing

import trio_isyswasfa
from trio_isyswasfa import _scheduler
from trio_isyswasfa.engine import _fiber
from trio_isyswasfa.http.types import _Outcome
from trio_isyswasfa.testing import assert_quiet, settle

CASES = "test:cases/cases"


# -- heap 7392e21 x hashall c2d4ad3: a host task's first round that raises ------------


class _CountingAwaitable:
    """Work that is no native coroutine but closes like one (as http's ``_Outcome``)."""

    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1

    def __await__(self) -> Generator[Any, None, None]:  # pragma: no cover - never run
        yield from ()


async def _first_round_that_raises(work: Any) -> None:
    sched = _scheduler.Scheduler(lambda handle: int(handle))
    task = sched.core.new_host_task_record("probe")
    task.value = worker = _scheduler._HostWorker(True)
    worker.job, worker.work = task, work
    sched._host_running += 1
    sched._host_labels["probe"] = 1
    sched._dirty.add(0)  # a round is due

    async def broken_round() -> None:
        raise RuntimeError("the round broke (the instance's end, say)")

    sched._round = broken_round  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="the round broke"):
        await sched._first_round(task, worker)
    assert sched._host_running == 0
    assert worker.work is None  # (a worker's failure would not close it twice)


async def test_a_first_round_that_raises_closes_coroutine_like_work() -> None:
    work = _CountingAwaitable()
    await _first_round_that_raises(work)
    assert work.closed == 1


async def test_a_first_round_that_raises_closes_an_outgoing_requests_outcome() -> None:
    closed: list[bool] = []

    async def response() -> Any:  # pragma: no cover - never run
        return None

    class Sending:
        def __init__(self) -> None:
            self.coro = response()

        def close(self) -> None:
            closed.append(True)
            self.coro.close()

        def __await__(self) -> Generator[Any, None, Any]:  # pragma: no cover
            return self.coro.__await__()

    outcome = _Outcome(Sending())
    try:
        await _first_round_that_raises(outcome)
        assert closed == [True]
    finally:
        outcome.close()  # (no unawaited coroutine left for a later test's collection)


async def test_a_first_round_that_raises_closes_a_native_coroutine() -> None:
    ran: list[bool] = []

    async def work() -> None:  # pragma: no cover - never run
        ran.append(True)

    coro = work()
    await _first_round_that_raises(coro)
    assert ran == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del coro
        gc.collect()  # closed: no "never awaited" warning


async def test_a_host_task_whose_scope_exit_raises_is_still_counted_gone() -> None:
    class BrokenScope:
        def __exit__(self, *exc: object) -> bool:
            raise RuntimeError("the scope's exit broke")

    sched = _scheduler.Scheduler(lambda handle: int(handle))
    task = sched.core.new_host_task_record("probe")
    task.value = worker = _scheduler._HostWorker(True)
    worker.job, worker.scope = task, BrokenScope()  # type: ignore[assignment]
    sched._host_running += 1
    sched._host_labels["probe"] = 1
    try:
        raise ValueError("the work failed")
    except ValueError:
        with pytest.raises(RuntimeError, match="scope's exit broke"):
            sched._host_task_raised(worker, task)
    assert sched._host_running == 0
    assert "probe" not in sched._host_labels
    assert worker.scope is None  # (left: a worker's failure would not leave it twice)


# -- heap 345381c / 7392e21: the hand-managed cancel scope, on both backends -----------


async def _scope_paths(component: trio_isyswasfa.Component, sleep: Any) -> list[str]:
    """An import that raises before and after a checkpoint, one the guest cancels, and
    one whose caller is cancelled: the instance stays sound (or ends with the import's
    own error) and leaves no host work behind."""
    seen: list[str] = []

    async def echo_later(s: str, ms: int) -> str:
        await sleep(ms / 1000)
        return f"host saw {s}"

    def imports(echo: Any) -> dict[str, dict[str, object]]:
        return {
            "test:cases/host": {
                "note": seen.append,
                "forever": anyio.sleep_forever,
                "echo-later": echo,
                "fallible": echo,
            }
        }

    async with trio_isyswasfa.open_instance(component, imports=imports(echo_later)) as inst:
        # the guest cancels its own import (timeout shorter than the import)
        got = await inst.call(CASES, "import-with-timeout", 1)
        seen.append(f"timeout: {got}")
        # the caller is cancelled at once, then while the import runs
        for delay in (0, 0.001, 0.005):
            with anyio.move_on_after(delay):
                await inst.call(CASES, "echo-via-host", "x", 50)
        assert await inst.call(CASES, "echo-via-host", "y", 0)
        await settle(inst)
        assert_quiet(inst)
        assert inst._sched.host_scope_count() == 0

    for before_checkpoint in (True, False):

        async def failing(s: str, ms: int, before: bool = before_checkpoint) -> str:
            if not before:
                await anyio.lowlevel.checkpoint()
            raise ValueError(f"the import failed on {s}")

        with pytest.raises(BaseExceptionGroup) as info:
            async with trio_isyswasfa.open_instance(component, imports=imports(failing)) as inst:
                await inst.call(CASES, "echo-via-host", "z", 0)
        assert info.group_contains(ValueError, match="the import failed on z")
    return seen


@pytest.mark.guest
@pytest.mark.slow
async def test_hand_managed_host_scope_on_trio(
    cases_component: trio_isyswasfa.Component,
) -> None:
    seen = await _scope_paths(cases_component, trio.sleep)
    assert any(s.startswith("timeout:") for s in seen)


@pytest.mark.guest
@pytest.mark.slow
def test_hand_managed_host_scope_on_asyncio(
    cases_component: trio_isyswasfa.Component,
) -> None:
    async def main() -> list[str]:
        with anyio.fail_after(60):  # (a hang guard, not a timing)
            return await _scope_paths(cases_component, anyio.sleep)

    seen = anyio.run(main, backend="asyncio")
    assert any(s.startswith("timeout:") for s in seen)


# -- roundtrip: host imports run in reused worker tasks ---------------------------------

_CALLER = contextvars.ContextVar("_CALLER", default="nobody")


def _imports_with(echo: Any, forever: Any = trio.sleep_forever) -> dict[str, dict[str, object]]:
    return {
        "test:cases/host": {
            "note": print,
            "forever": forever,
            "echo-later": echo,
            "fallible": echo,
        }
    }


@pytest.mark.parametrize("worker", ["new", "idle"])
async def test_an_import_dropped_before_its_worker_wakes_is_cancelled_as_it_begins(
    worker: str,
) -> None:
    # the guest drops the import's only handle in the call that started it: the
    # cancellation comes before the worker has begun the work (it must not cancel the
    # worker's scope then: the worker may first do a round), so it waits for the work
    # to begin, and cancels it at its first checkpoint
    sched = _scheduler.Scheduler(lambda handle: int(handle))
    sched.set_polls([])
    began: list[str] = []

    async def work(name: str, forever: bool) -> str:
        began.append(name)
        if forever:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        return name

    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        if worker == "idle":  # one import done: its worker waits for the next
            sched.start_host_task("probe", work("first", forever=False))
            await trio.testing.wait_all_tasks_blocked()
            assert len(sched._idle_workers) == 1
        rep = sched.start_host_task("probe", work("dropped", forever=True))
        sched.apply(sched.core.handle_dropped(rep))  # its only handle
        with trio.fail_after(5):  # (a hang guard, not a timing)
            while sched.host_scope_count():
                await trio.testing.wait_all_tasks_blocked()
        assert began[-1] == "dropped"  # it began, as work in a cancelled scope does
        assert sched.failure is None
        nursery.cancel_scope.cancel()


@pytest.mark.guest
@pytest.mark.slow
async def test_a_host_worker_serves_imports_one_after_another_in_each_callers_context(
    cases_component: trio_isyswasfa.Component,
) -> None:
    seen: list[tuple[object, str]] = []

    async def echo_later(s: str, ms: int) -> str:
        seen.append((trio.lowlevel.current_task(), _CALLER.get()))
        await trio.sleep(ms / 1000)
        return f"host saw {s}"

    async with trio_isyswasfa.open_instance(
        cases_component, imports=_imports_with(echo_later)
    ) as inst:
        for caller in ("first", "second", "third"):
            _CALLER.set(caller)
            assert await inst.call(CASES, "echo-via-host", caller, 0) == f"host saw {caller}"
        await settle(inst)
        assert_quiet(inst)
    # one task ran them all (no task spawned per import), each in a copy of its
    # caller's context, as a task spawned at the call would have been
    assert [caller for _, caller in seen] == ["first", "second", "third"]
    assert len({id(task) for task, _ in seen}) == 1
    assert inst.statistics().host_tasks_started == 3


@pytest.mark.guest
@pytest.mark.slow
async def test_an_import_cancelled_that_ends_all_the_same_leaves_its_worker_sound(
    cases_component: trio_isyswasfa.Component,
) -> None:
    ended: list[str] = []

    async def stubborn() -> str:
        with trio.CancelScope(shield=True):  # ignores the cancellation, ends by itself
            await trio.sleep(0.01)
        ended.append("stubborn")
        return "ended all the same"

    async def echo_later(s: str, ms: int) -> str:
        await trio.sleep(ms / 1000)
        return f"host saw {s}"

    async with trio_isyswasfa.open_instance(
        cases_component, imports=_imports_with(echo_later, stubborn)
    ) as inst:
        assert await inst.call(CASES, "import-with-timeout", 1) == "timed out"
        await settle(inst)
        assert ended == ["stubborn"]
        # the worker's scope was cancelled for that import: the next import it runs
        # must not inherit the cancellation
        assert await inst.call(CASES, "echo-via-host", "y", 0) == "host saw y"
        await settle(inst)
        assert_quiet(inst)
        assert inst.statistics().cancels_sent == 0  # (the guest cancelled, not the host)


# -- rtsched (2026-12-02, sixth session): a `listening` overtaken by its `ready` ----------


@pytest.mark.guest
@pytest.mark.slow
async def test_an_import_that_ends_before_its_listening_goes_out_sends_ready_alone(
    cases_component: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    # (the clock jumps only when every task waits: the 2 ms flush of a `listening`
    # never fires while the import is running, however loaded the machine is)
    tags: list[list[str]] = []

    async def echo_later(s: str, ms: int) -> str:
        await trio.sleep(ms / 1000)
        return f"host saw {s}"

    async with trio_isyswasfa.open_instance(
        cases_component, imports=_imports_with(echo_later)
    ) as inst:
        sched = inst._sched
        polls = sched._polls

        class Recording:
            def __init__(self, func: Any) -> None:
                self.func = func

            async def call(self, values: list[Any]) -> Any:
                tags.append([value.tag for value in values])
                return await self.func.call(values)

        sched.set_polls([Recording(func) for func in polls])
        # the import ends at its first checkpoint, before anything else polls the guest:
        # its `listening` (still held back to ride along) is left out, so the guest
        # never gets its cancel handle, only its `ready` (whichever task trio runs
        # first: several calls)
        for n in range(5):
            tags.clear()
            assert await inst.call(CASES, "echo-via-host", "x", 0) == "host saw x"
            assert tags == [[], ["ready"]], (n, tags)
        # an import still running when its flush is due gets its `listening` first
        tags.clear()
        assert await inst.call(CASES, "echo-via-host", "y", 20) == "host saw y"
        assert tags == [[], ["listening"], ["ready"]]
        await settle(inst)
        assert_quiet(inst)


# -- flaky 104199d: settle on an instance with a task that never blocks ----------------


@pytest.mark.guest
@pytest.mark.slow
async def test_settle_ends_on_an_instance_whose_import_never_blocks(
    cases_component: trio_isyswasfa.Component,
) -> None:
    async def spinning(s: str, ms: int) -> str:
        while True:
            await trio.lowlevel.checkpoint()  # never blocks

    imports = {
        "test:cases/host": {
            "note": print,
            "forever": trio.sleep_forever,
            "echo-later": spinning,
            "fallible": spinning,
        }
    }
    async with (
        trio_isyswasfa.open_instance(cases_component, imports=imports) as inst,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(inst.call, CASES, "echo-via-host", "x", 0)  # spins on
        await trio.sleep(0.01)
        failed = False
        with trio.move_on_after(30):  # a hang guard: settle should raise
            with pytest.raises(AssertionError, match=r"never idle.*echo-later") as info:
                await settle(inst, give_up_after=0.5)
            failed = True
        nursery.cancel_scope.cancel()
        assert failed, "settle never returned"
        assert "1 host task(s) still running" in str(info.value)


# -- entry f86b29d: the machine-code park's fall-backs ----------------------------------


class _FakeLibc:
    def __init__(self, *, mmap_fails: bool = False, mprotect_fails: bool = False) -> None:
        self.pages: list[ctypes.Array[ctypes.c_char]] = []
        self.mmap_fails = mmap_fails
        self.mprotect_fails = mprotect_fails
        self.calls: list[tuple[str, int]] = []
        self.mmap = self._func(self._mmap)
        self.mprotect = self._func(self._mprotect)

    @staticmethod
    def _func(fn: Any) -> Any:
        class Func:
            restype: Any = None
            argtypes: Any = None

            def __call__(self, *args: Any) -> Any:
                return fn(*args)

        return Func()

    def _mmap(self, _addr: Any, size: int, prot: int, *_rest: Any) -> int | None:
        self.calls.append(("mmap", prot))
        if self.mmap_fails:
            return ctypes.c_void_p(-1).value
        page = ctypes.create_string_buffer(size)
        self.pages.append(page)
        return ctypes.addressof(page)

    def _mprotect(self, _addr: int, _size: int, prot: int) -> int:
        self.calls.append(("mprotect", prot))
        return -1 if self.mprotect_fails else 0


@pytest.mark.parametrize("failing", ["mmap", "mprotect"])
def test_the_native_park_falls_back_when_the_page_cannot_be_made(
    monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    if _fiber._FLAG_SET is _fiber._python_flag_reader:
        pytest.skip("no C flag reader: no machine code is tried")
    libc = _FakeLibc(mmap_fails=failing == "mmap", mprotect_fails=failing == "mprotect")
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: libc)
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr("sys.platform", "linux")
    assert _fiber._native_park() is None
    # W^X: the page is mapped writable, never executable, and only then made executable
    assert libc.calls[0] == ("mmap", 1 | 2)
    if failing == "mprotect":
        assert libc.calls[1] == ("mprotect", 1 | 4)


async def test_the_ticker_thread_counts_its_ticks() -> None:
    # fresh_slice (f86b29d) re-arms a store's deadline only when _engine.ticks moved:
    # the ticker thread itself must count (serve's 21fcd32 rewrites the ticker's loop
    # and counts there too: a merge that keeps one loop without the count would leave
    # every call after an idle tick to yield at once). Tests that tick by hand
    # (_engine.tick()) do not see that.
    from trio_isyswasfa import _engine

    _engine._start_ticker()
    before = _engine.ticks
    for _ in range(3000):  # (a hang guard: a tick is due every EPOCH_TICK)
        if _engine.ticks != before:
            break
        await trio.sleep(_engine.EPOCH_TICK)
    assert _engine.ticks != before, "the ticker thread's ticks are not counted"


# -- hashall 95ddf70 / c2d4ad3: a request written at send() -----------------------------


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_a_request_written_at_send_and_dropped_gives_up_its_connection() -> None:
    from test_http_client import body_of, get, keep_alive_server, server

    from trio_isyswasfa.http import HttpClient

    async with HttpClient(allow=["127.0.0.1:*"]) as client, server(keep_alive_server) as up:
        assert await body_of(await client.send(get(up.port, "/warm"))) == b"hello"
        await trio.testing.wait_all_tasks_blocked()
        origin = ("http", "127.0.0.1", up.port)
        assert client.statistics(origin) == (1, 1, 0)
        sending = client.send(get(up.port, "/dropped"))
        assert client.statistics(origin) == (1, 0, 0)  # written: its connection taken
        del sending
        gc.collect()
        await trio.testing.wait_all_tasks_blocked()
        assert client.statistics(origin) == (0, 0, 0)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize("where", ["another-thread", "the-loop-thread"])
async def test_a_dropped_request_hands_its_place_to_the_next_on_the_event_loop(
    where: str,
) -> None:
    # the finaliser of a request written at send() runs wherever its last reference
    # goes (here a worker thread, or the loop's thread outside any task); the request
    # waiting in line for the connection's place must be woken on the event loop
    from test_http_client import body_of, get, keep_alive_server, server

    from trio_isyswasfa.http import HttpClient

    got: list[bytes] = []
    fetched = trio.Event()

    async def fetch(client: HttpClient, port: int) -> None:
        got.append(await body_of(await client.send(get(port, "/waiting"))))
        fetched.set()

    client = HttpClient(allow=["127.0.0.1:*"], max_connections_per_origin=1)
    async with client, server(keep_alive_server) as up, trio.open_nursery() as nursery:
        assert await body_of(await client.send(get(up.port, "/warm"))) == b"hello"
        await trio.testing.wait_all_tasks_blocked()
        origin = ("http", "127.0.0.1", up.port)
        held = [client.send(get(up.port, "/dropped"))]  # written: the one place taken
        nursery.start_soon(fetch, client, up.port)
        await trio.testing.wait_all_tasks_blocked()
        assert client.statistics(origin) == (1, 0, 1)  # the fetch waits in line
        if where == "another-thread":
            await trio.to_thread.run_sync(held.clear)
        else:
            trio.lowlevel.current_trio_token().run_sync_soon(held.clear)
        with trio.fail_after(10):  # (a hang guard: a lost wake-up never returns)
            await fetched.wait()
    assert got == [b"hello"]
    assert up.connections == 2  # the dropped request's connection was not reused


async def test_a_request_written_at_send_runs_as_a_nursery_task() -> None:
    # send() is no `async def` any more: what trio's start_soon asks of it still holds
    from test_http_client import body_of, get, keep_alive_server, server

    from trio_isyswasfa.http import HttpClient

    got: list[bytes] = []

    async def fetch(client: HttpClient, port: int) -> None:
        got.append(await body_of(await client.send(get(port, "/x"))))

    async with HttpClient(allow=["127.0.0.1:*"]) as client, server(keep_alive_server) as up:
        assert await body_of(await client.send(get(up.port, "/warm"))) == b"hello"
        await trio.testing.wait_all_tasks_blocked()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send, get(up.port, "/start-soon"))
            nursery.start_soon(fetch, client, up.port)
        assert got == [b"hello"]
        sending = client.send(get(up.port, "/twice"))
        assert await body_of(await sending) == b"hello"
        with pytest.raises(RuntimeError, match="cannot reuse"):
            await sending


def test_a_request_sent_under_asyncio_through_a_task_group() -> None:
    # anyio's start_soon on asyncio, given send() itself (no `async def` any more)
    import asyncio

    from test_http_client import get

    from trio_isyswasfa.http import HttpClient

    async def main() -> list[int]:
        writers: list[asyncio.StreamWriter] = []

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                    await writer.drain()

        srv = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        statuses: list[int] = []
        try:
            async with HttpClient(allow=["127.0.0.1:*"]) as client:

                async def fetch() -> None:
                    statuses.append((await client.send(get(port, "/a"))).status)

                await fetch()  # (an idle connection for the next ones)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(fetch)
                    tg.start_soon(client.send, get(port, "/b"))
        finally:
            srv.close()
            for writer in writers:
                writer.close()
            await srv.wait_closed()
            for _ in range(3):
                await asyncio.sleep(0)
        return statuses

    assert anyio.run(main, backend="asyncio") == [200, 200]


# -- heap 7392e21 + entry 857708a: the caller cancelled after each step of a call -------


def cases_imports(echo: Any, package: str = "test:cases") -> dict[str, dict[str, object]]:
    """The host imports of the test-cases guest of ``package`` (Python's or Rust's),
    with ``echo`` as its ``echo-later`` (and the Python guest's ``fallible``)."""
    host: dict[str, object] = {
        "note": lambda s: None,
        "forever": anyio.sleep_forever,
        "echo-later": echo,
    }
    if package == "test:cases":
        host["fallible"] = echo
    return {f"{package}/host": host}


async def _cancel_after_each_step(
    component: trio_isyswasfa.Component,
    name: str,
    args: tuple[Any, ...],
    *,
    checkpoint: Any,
    sleep: Any,
    steps: int,
    grace: float,
    package: str = "test:cases",
) -> None:
    """Cancel the caller of ``name(*args)`` after 0, 1, … ``steps - 1`` scheduler
    steps, a fresh instance each: it must leave nothing behind once ``grace`` passed,
    and answer the next call."""

    async def echo_later(s: str, ms: int) -> str:
        await sleep(ms / 1000)
        return f"host saw {s}"

    imports = cases_imports(echo_later, package)
    cases = f"{package}/cases"
    failures: list[str] = []
    for k in range(steps):
        async with trio_isyswasfa.open_instance(
            component, imports=imports, cancel_grace=grace
        ) as inst:
            async with anyio.create_task_group() as tg:
                tg.start_soon(inst.call, cases, name, *args)
                for _ in range(k):
                    await checkpoint()
                tg.cancel_scope.cancel()
            await sleep(grace * 2)  # (virtual time on trio)
            try:
                assert_quiet(inst)
            except AssertionError as exc:
                failures.append(f"cancelled after {k} steps: {exc}")
            try:
                after = await inst.call(cases, "echo-via-host", "after", 0)
            except trio_isyswasfa.IsyswasfaError as exc:
                failures.append(f"cancelled after {k} steps, then: {exc!r}")
            else:
                assert after == "host saw after"
    assert not failures, f"{name}{args}: " + "; ".join(failures)


# the Python guest gathers host imports; the Rust guest has no such export: it gathers
# sleeps. The Rust guest drops a cancelled export's future at once (its awaits learn of
# the cancel before a `ready` in the same poll): the race the Python guest had.
_GATHER = {"python": "gather-host-calls", "rust": "gather-sleeps"}
_STEP_CALLS = [
    pytest.param(language, name, args, id=f"{language}-{label}")
    for language in ("python", "rust")
    for label, name, args in (
        ("echo-now", "echo-via-host", ("x", 0)),
        ("echo-later", "echo-via-host", ("x", 1)),
        ("gather-now", _GATHER[language], (3, 0)),
        ("gather-later", _GATHER[language], (3, 1)),
        ("immediate", "immediate", ("x",)),
        ("import-with-timeout", "import-with-timeout", (0,)),
    )
]
_GUESTS = {
    "python": ("cases_component", "test:cases"),
    "rust": ("rust_cases_component", "test:rust-cases"),
}


@pytest.fixture(scope="module")
def rust_cases_component(
    isyswasfa_build_rust: Any,
) -> trio_isyswasfa.Component:
    from pathlib import Path

    crate = Path(__file__).resolve().parent / "guests" / "rust-cases"
    component: trio_isyswasfa.Component = isyswasfa_build_rust(crate / "wit", "rust-cases", crate)
    return component


@pytest.mark.guest
@pytest.mark.slow
@pytest.mark.parametrize(("language", "name", "args"), _STEP_CALLS)
async def test_the_caller_cancelled_after_each_step_on_trio(
    request: pytest.FixtureRequest,
    autojump_clock: trio.testing.MockClock,
    language: str,
    name: str,
    args: tuple[Any, ...],
) -> None:
    fixture, package = _GUESTS[language]
    await _cancel_after_each_step(
        request.getfixturevalue(fixture),
        name,
        args,
        checkpoint=trio.lowlevel.checkpoint,
        sleep=trio.sleep,
        steps=12,
        grace=10.0,
        package=package,
    )


# on asyncio, in real time, the host's import races the cancel with the clock
_ASYNCIO_STEP_CALLS = [
    pytest.param("echo-via-host", ("x", 0), id="echo-now"),
    pytest.param("echo-via-host", ("x", 1), id="echo-later"),
    pytest.param("immediate", ("x",), id="immediate"),
    pytest.param("import-with-timeout", (0,), id="import-with-timeout"),
]


@pytest.mark.guest
@pytest.mark.slow
@pytest.mark.parametrize(("name", "args"), _ASYNCIO_STEP_CALLS)
def test_the_caller_cancelled_after_each_step_on_asyncio(
    cases_component: trio_isyswasfa.Component, name: str, args: tuple[Any, ...]
) -> None:
    async def main() -> None:
        with anyio.fail_after(120):  # (a hang guard, not a timing)
            await _cancel_after_each_step(
                cases_component,
                name,
                args,
                checkpoint=anyio.lowlevel.checkpoint,
                sleep=anyio.sleep,
                steps=8,
                grace=0.2,
            )

    anyio.run(main, backend="asyncio")
