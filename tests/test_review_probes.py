"""Review probes of the hot paths (last session's landing and this session's branches).

Each test probes one suspicion: a strict ``xfail`` is a bug found (its reason says
where), a plain test a probe worth keeping. Guest probes load their components with
``engine="own"`` explicitly: this module is not among conftest's ``ENGINE_MODULES``,
so the ``cases_component`` fixture would give the wasmtime-py engine, on which none of
the own engine's fast paths (``FiberFunc.start_now``/``run_on``, the machine-code
``next``) runs. (test_hot_path_edges is among them now: its cancel-after-each-step and
hand-managed-scope probes run on both engines there.)
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import random
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from test_hot_path_edges import cases_imports

import trio_isyswasfa
from trio_isyswasfa.testing import (
    RustToolchainMissing,
    assert_quiet,
    build_python_guest,
    build_rust_guest,
    settle,
)

GUESTS = Path(__file__).resolve().parent / "guests"


@pytest.fixture(scope="module")
def own_cases() -> trio_isyswasfa.Component:
    """The test-cases guest, on our own engine whatever ``--engine`` says."""
    wasm = build_python_guest(
        GUESTS / "cases" / "wit", "cases-guest", "app", [GUESTS / "cases" / "src"]
    )
    component = trio_isyswasfa.load_component(wasm, engine="own")
    assert component.engine == "own"
    return component


@pytest.fixture(scope="module")
def own_rust_cases() -> trio_isyswasfa.Component:
    """The Rust test-cases guest, on our own engine."""
    crate = GUESTS / "rust-cases"
    try:
        wasm = build_rust_guest(crate / "wit", "rust-cases", crate)
    except RustToolchainMissing as exc:
        pytest.skip(f"Rust guest not built: {exc}")
    component = trio_isyswasfa.load_component(wasm, engine="own")
    assert component.engine == "own"
    return component


# -- an instance closed while calls are in flight ----------------------------------------


async def _echo_later(s: str, ms: int) -> str:
    await trio.sleep(ms / 1000)
    return f"host saw {s}"


@pytest.mark.guest
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "args"),
    [
        pytest.param("echo-via-host", ("x", 3_600_000), id="in-a-host-import"),
        pytest.param("sleep-ms", (3_600_000,), id="on-a-guest-timer"),
    ],
)
async def test_a_call_pending_when_its_instance_closes_raises_instance_dead(
    own_cases: trio_isyswasfa.Component,
    autojump_clock: trio.testing.MockClock,
    name: str,
    args: tuple[Any, ...],
) -> None:
    outcome: list[BaseException] = []

    async def call(inst: trio_isyswasfa.Instance) -> None:
        try:
            await inst.call("test:cases/cases", name, *args)
        except trio_isyswasfa.InstanceDead as exc:
            outcome.append(exc)

    with trio.move_on_after(600):  # (a hang guard, virtual time)
        async with (
            trio.open_nursery() as nursery,
            trio_isyswasfa.open_instance(own_cases, imports=cases_imports(_echo_later)) as inst,
        ):
            assert await inst.call("test:cases/cases", "immediate", "warm") == "WARM"
            nursery.start_soon(call, inst)
            await trio.testing.wait_all_tasks_blocked()
            assert inst.statistics().calls_in_flight == 1
            # the instance is closed; its caller in `nursery` must hear of it
    assert outcome, "the pending call never returned after its instance closed"


# -- HttpClient: what a guest puts in its request, and a connection dying after the write


def _http_helpers() -> Any:
    import test_http_client

    return test_http_client


async def test_a_get_the_server_dropped_after_the_send_time_write_is_retried_once() -> None:
    # the idempotent case of the probe above: replaying a GET on a fresh connection is
    # what the stale-connection logic is for (kept: it must not go with a fix of the POST)
    from trio_isyswasfa.http import HttpClient

    helpers = _http_helpers()

    async def hang_up_on_the_second(stream: trio.SocketStream, state: Any) -> None:
        buf = bytearray()
        while (request := await helpers.read_request(stream, buf)) is not None:
            state.requests.append(request)
            if len(state.requests) == 2:
                await stream.aclose()
                return
            await stream.send_all(helpers.ok(b"hello"))

    async with (
        HttpClient(allow=["127.0.0.1:*"]) as client,
        helpers.server(hang_up_on_the_second) as up,
    ):
        assert await helpers.body_of(await client.send(helpers.get(up.port, "/warm"))) == b"hello"
        origin = ("http", "127.0.0.1", up.port)
        sending = client.send(helpers.get(up.port, "/again"))
        assert client.statistics(origin) == (1, 0, 0)  # written at the call
        assert await helpers.body_of(await sending) == b"hello"
        assert up.connections == 2
        await trio.testing.wait_all_tasks_blocked()
        assert client.statistics(origin) == (1, 1, 0)


# -- the machine-code `next`'s fall-back, run -----------------------------------------


@pytest.mark.guest
@pytest.mark.slow
async def test_calls_run_through_the_python_next_callback(
    own_cases: trio_isyswasfa.Component,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    # where the machine code cannot be made (not x86-64, mmap or mprotect refused) the
    # dispatcher's `next` is the Python `_park`: test_hot_path_edges checks that
    # _native_park gives up, this that calls then still run (and yield, wait, cancel)
    import ctypes

    from wasmtime import _ffi as ffi

    from trio_isyswasfa.engine import _fiber

    parks: list[int] = []

    @_fiber._PARK_PROTOTYPE  # type: ignore[untyped-decorator]
    def counting_park(env, caller, args, nargs, results, nresults, trap_ret, cont):  # type: ignore[no-untyped-def]
        parks.append(1)
        _fiber._park(env, caller, args, nargs, results, nresults, trap_ret, cont)

    python_park = ctypes.cast(counting_park, ffi.wasmtime_func_async_callback_t)
    monkeypatch.setattr(_fiber, "_PARK", python_park)
    async with trio_isyswasfa.open_instance(own_cases, imports=cases_imports(_echo_later)) as inst:
        for _ in range(3):
            assert await inst.call("test:cases/cases", "immediate", "a") == "A"
            assert await inst.call("test:cases/cases", "echo-via-host", "b", 1) == "host saw b"
            assert await inst.call("test:cases/cases", "add", 2, 3) == 5
        with trio.move_on_after(0.001):
            await inst.call("test:cases/cases", "echo-via-host", "c", 1000)
        assert await inst.call("test:cases/cases", "gather-sleeps", 3, 1) == 3
        assert inst._engine.fibers._dispatch is not None  # type: ignore[attr-defined]
    assert len(parks) >= 10  # the calls went through it


# -- values the host passes: the own engine against wasmtime-py's -------------------------


class _Colour(enum.StrEnum):
    RED = "red"


@pytest.mark.guest
@pytest.mark.parametrize("where", ["export-argument", "import-result"])
async def test_a_str_subclass_crosses_as_a_string(
    own_cases: trio_isyswasfa.Component, where: str
) -> None:
    async def echo(s: str, ms: int) -> str:
        return _Colour.RED

    async with trio_isyswasfa.open_instance(own_cases, imports=cases_imports(echo)) as inst:
        if where == "export-argument":
            assert await inst.call("test:cases/cases", "immediate", _Colour.RED) == "RED"
        else:
            assert await inst.call("test:cases/cases", "echo-via-host", "x", 0) == "red"


# -- a crowd of calls, some cancelled after a few steps, on one instance ----------------


async def _crowd(component: trio_isyswasfa.Component, package: str, seed: int) -> None:
    """Forty calls of a seeded mix at once, each cancelled after 0-8 scheduler steps or
    left alone: the instance leaves nothing behind and answers the next call."""
    rnd = random.Random(seed)

    mix = [
        ("echo-via-host", ("x", 0)),
        ("echo-via-host", ("y", 2)),
        ("immediate", ("z",)),
        ("import-with-timeout", (0,)),
        ("import-with-timeout", (1,)),
    ]
    cases = f"{package}/cases"
    async with trio_isyswasfa.open_instance(
        component, imports=cases_imports(_echo_later, package), cancel_grace=5
    ) as inst:

        async def one(name: str, args: tuple[Any, ...], steps: int) -> None:
            with trio.CancelScope() as scope:
                if steps >= 0:

                    async def cancel_later() -> None:
                        for _ in range(steps):
                            await trio.lowlevel.checkpoint()
                        scope.cancel()

                    nursery.start_soon(cancel_later)
                await inst.call(cases, name, *args)

        async with trio.open_nursery() as nursery:
            for _ in range(40):
                name, args = rnd.choice(mix)
                nursery.start_soon(one, name, args, rnd.choice([-1, 0, 1, 2, 3, 5, 8]))
        await trio.sleep(20)  # (virtual time: past every grace)
        assert_quiet(inst)
        assert await inst.call(cases, "echo-via-host", "after", 0) == "host saw after"


@pytest.mark.guest
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize(
    ("guest", "package"),
    [("own_cases", "test:cases"), ("own_rust_cases", "test:rust-cases")],
    ids=["python", "rust"],
)
async def test_a_crowd_of_calls_cancelled_at_random_steps(
    request: pytest.FixtureRequest,
    autojump_clock: trio.testing.MockClock,
    guest: str,
    package: str,
    seed: int,
) -> None:
    await _crowd(request.getfixturevalue(guest), package, seed)


@pytest.mark.guest
@pytest.mark.parametrize(
    ("guest", "package"), [("own_cases", "test:cases"), ("own_rust_cases", "test:rust-cases")]
)
async def test_a_call_cancelled_while_its_result_waits_for_the_store_leaves_nothing_behind(
    request: pytest.FixtureRequest, guest: str, package: str
) -> None:
    """The crowd's leak, made deterministic: the guest task is ready and its host caller
    wakes to fetch the value, but another call has the store (a guest that yielded at
    an epoch tick, in the crowd), so ``-result`` must wait; the caller is cancelled
    while it waits. Before, the host had taken the ``ready`` handle already and it
    never reached the guest: the task stayed alive with one handle for ever. Now the
    wait comes first, and the cancellation is the one of docs/abi.md 4.4 for a call
    that finished but was not fetched: the guest discards the value and confirms."""
    from trio_isyswasfa._protocol import WakeHostCaller

    component = request.getfixturevalue(guest)
    cases = f"{package}/cases"
    async with trio_isyswasfa.open_instance(
        component, imports=cases_imports(_echo_later, package), cancel_grace=5
    ) as inst:
        turns = inst._engine.turns
        sched = inst._sched
        apply = sched.apply
        held: list[bool] = []
        taken = trio.Event()
        scopes: list[trio.CancelScope] = []

        def apply_as_the_store_gets_busy(actions: list[Any]) -> None:
            apply(actions)
            if not held and any(isinstance(a, WakeHostCaller) for a in actions):
                held.append(turns.take_nowait())  # another call has the store now
                scopes[0].cancel()
                taken.set()

        sched.apply = apply_as_the_store_gets_busy  # type: ignore[method-assign]
        outcome: list[object] = []

        async def call() -> None:
            with trio.CancelScope() as scope:
                scopes.append(scope)
                outcome.append(await inst.call(cases, "echo-via-host", "x", 0))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await taken.wait()
            await trio.testing.wait_all_tasks_blocked()
            turns.give_back()  # the other call returns
        sched.apply = apply  # type: ignore[method-assign]
        assert held == [True]
        await settle(inst)
        assert_quiet(inst)
        assert outcome == []  # cancelled before it was fetched: discarded
        assert sched.counts["cancel-complete"] == 1
        assert await inst.call(cases, "echo-via-host", "after", 0) == "host saw after"


async def test_a_request_written_at_send_and_closed_after_its_client_closes_its_socket() -> None:
    from trio_isyswasfa.http import HttpClient

    helpers = _http_helpers()
    async with helpers.server(helpers.keep_alive_server) as up:
        async with HttpClient(allow=["127.0.0.1:*"]) as client:
            get = helpers.get
            assert await helpers.body_of(await client.send(get(up.port, "/warm"))) == b"hello"
            sending = client.send(get(up.port, "/written"))
            sock = sending._written.conn.sock  # type: ignore[attr-defined]
            assert sock is not None
        sending.close()  # (what the instance's end does to an import's work never run)
        assert sock.fileno() == -1, "the socket of the given-up request is still open"


@pytest.mark.guest
@pytest.mark.slow
async def test_a_call_blocked_in_wasi_when_its_instance_closes_ends_soon(
    autojump_clock: trio.testing.MockClock,
) -> None:
    wasm = build_python_guest(
        GUESTS / "wasi" / "wit", "wasi-guest", "app", [GUESTS / "wasi" / "src"]
    )
    component = trio_isyswasfa.load_component(wasm, engine="own")
    ended: list[float] = []

    async def call(inst: trio_isyswasfa.Instance) -> None:
        with contextlib.suppress(trio_isyswasfa.InstanceDead):
            await inst.call("test:wasi/probe", "exec", "import time\ntime.sleep(3600)\nresult=1")
        ended.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        async with trio_isyswasfa.open_instance(component) as inst:
            assert await inst.call("test:wasi/probe", "exec", "result=1")
            nursery.start_soon(call, inst)
            await trio.sleep(1)  # (virtual time: it sleeps in the guest)
        closed = trio.current_time()
    assert ended
    assert ended[0] - closed < 60, f"the call ended {ended[0] - closed:.0f} s after the close"


# -- StartedAtCall.throw ---------------------------------------------------------------


def test_started_at_call_throws_with_the_single_argument_form() -> None:
    from trio_isyswasfa.http._background import StartedAtCall

    thrown: list[tuple[Any, ...]] = []

    class Recording:
        def throw(self, *args: Any) -> Any:
            thrown.append(args)
            raise args[0]

    class Work(StartedAtCall[None]):
        __slots__ = ()

        def __init__(self) -> None:
            self._coro = Recording()  # type: ignore[assignment]

    exc = ValueError("thrown in")
    with pytest.raises(ValueError, match="thrown in"):
        Work().throw(exc)
    assert thrown == [(exc,)], f"throw() passed {len(thrown[0])} arguments on"


# -- export (bfcb33a): may_leave in the dispatcher's memory, results lifted after the
# post-return ------------------------------------------------------------------------

LEAVE_WIT = """\
package test:leave;

interface host {
  note: func(n: u32);
}

interface api {
  enum colour { red, green }
  bad-colour: func() -> colour;
  good-colour: func() -> colour;
  big-char: func() -> char;
  add: func(a: u32, b: u32) -> u32;
  count: func() -> u32;
}

world w {
  import host;
  export api;
}
"""

LEAVE_WAT = """\
(module
  (import "test:leave/host" "note" (func $note (param i32)))
  (memory (export "memory") 1)
  (global $posts (mut i32) (i32.const 0))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "test:leave/api#bad-colour") (result i32) (i32.const 7))
  (func (export "cabi_post_test:leave/api#bad-colour") (param i32) (call $note (i32.const 1)))
  (func (export "test:leave/api#good-colour") (result i32) (i32.const 1))
  (func (export "cabi_post_test:leave/api#good-colour") (param i32)
    (global.set $posts (i32.add (global.get $posts) (i32.const 1))))
  (func (export "test:leave/api#big-char") (result i32) (i32.const 0xD800))
  (func (export "cabi_post_test:leave/api#big-char") (param i32)
    (global.set $posts (i32.add (global.get $posts) (i32.const 100))))
  (func (export "test:leave/api#add") (param i32 i32) (result i32)
    (call $note (i32.add (local.get 0) (local.get 1)))
    (i32.add (local.get 0) (local.get 1)))
  (func (export "cabi_post_test:leave/api#add") (param i32)
    (global.set $posts (i32.add (global.get $posts) (local.get 0))))
  (func (export "test:leave/api#count") (result i32) (global.get $posts))
)
"""


@pytest.fixture(scope="module")
def leave_wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from trio_isyswasfa.testing import build_wat_component

    wit = tmp_path_factory.mktemp("leave") / "leave.wit"
    wit.write_text(LEAVE_WIT)
    return build_wat_component(wit, "w", LEAVE_WAT)


def _open_leave(wasm: bytes, notes: list[int]) -> Any:
    from trio_isyswasfa import _engine
    from trio_isyswasfa.engine._component import OwnEngineInstance
    from trio_isyswasfa.engine._reader import read_component

    def resolve(item: _engine.ImportedItem) -> Any:
        assert item.name == "note"
        return notes.append

    return OwnEngineInstance(read_component(wasm), resolve, use_cache=False)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("bad-colour", "discriminant|enum|case"), ("big-char", "char|code point|surrogate")],
)
async def test_a_result_that_fails_to_lift_fails_the_call_before_its_post_return(
    leave_wasm: bytes, name: str, reason: str
) -> None:
    # the canonical ABI lifts an export's results, then runs its post-return: a result
    # that cannot be lifted (an enum case out of range, a surrogate as a char) traps
    # the call with that reason, and the post-return never runs (here it would call
    # the host: a trap of its own, "cannot leave", would hide the reason)
    notes: list[int] = []
    inst = _open_leave(leave_wasm, notes)
    try:
        with pytest.raises(trio_isyswasfa.GuestTrap, match=reason):
            await inst.func("test:leave/api", name).call()
        assert notes == []
    finally:
        inst.close()


async def test_plain_results_and_post_returns_in_turn(leave_wasm: bytes) -> None:
    # the export calls the host (may_leave set), its post-return does not (cleared
    # around it): many calls in a row, the flag set again after each
    notes: list[int] = []
    inst = _open_leave(leave_wasm, notes)
    try:
        add = inst.func("test:leave/api", "add")
        for i in range(50):
            assert await add.call(i, 1) == i + 1
            assert await inst.func("test:leave/api", "good-colour").call() == "green"
        assert notes == [i + 1 for i in range(50)]
        assert await inst.func("test:leave/api", "count").call() == sum(range(1, 51)) + 50
        assert inst.func("test:leave/api", "add").call_sync(2, 2) == 4  # the sync path too
        assert notes[-1] == 4
    finally:
        inst.close()


# -- roundtrip: what an import's host work sees of its caller's context ------------------

_CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("_CALLER", default="none")


@pytest.mark.guest
@pytest.mark.slow
async def test_an_import_sees_its_callers_context_and_keeps_its_own(
    own_cases: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    # an import the guest calls in its caller's first poll runs its work in a copy of
    # that caller's context (trio's start_soon copies the spawner's): it sees what the
    # caller set, and what it sets stays its own (not the next import's, not the caller's)
    seen: list[tuple[str, str]] = []

    async def echo(s: str, ms: int) -> str:
        seen.append((s, _CALLER.get()))
        _CALLER.set(f"set by the import for {s}")
        await trio.sleep(ms / 1000)
        return s

    async with trio_isyswasfa.open_instance(own_cases, imports=cases_imports(echo)) as inst:

        async def call_as(who: str, s: str) -> None:
            _CALLER.set(who)
            assert await inst.call("test:cases/cases", "echo-via-host", s, 1) == s
            assert _CALLER.get() == who

        for i in range(4):  # one after another (a reused worker, if any)
            await call_as(f"caller {i}", f"s{i}")
        async with trio.open_nursery() as nursery:  # at once
            for i in range(4, 8):
                nursery.start_soon(call_as, f"caller {i}", f"s{i}")
    assert sorted(seen) == [(f"s{i}", f"caller {i}") for i in range(8)]


# -- export (8b339f9): the straight path of a plain export call -------------------------


@pytest.mark.guest
@pytest.mark.slow
async def test_plain_export_calls_check_their_arguments_and_take_turns(
    own_cases: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    # `add(u32, u32) -> u32` is plain (no memory, no handles): from its second call it
    # takes a straight path that inlines the checks and the turn; every check holds there
    cases = "test:cases/cases"
    async with trio_isyswasfa.open_instance(own_cases, imports=cases_imports(_echo_later)) as inst:
        for _ in range(3):
            assert await inst.call(cases, "add", 2, 3) == 5
        for bad in [("2", 3), (-1, 3), (2**32, 3), (2,), (2, 3, 4), (2.5, 3)]:
            with pytest.raises(trio_isyswasfa.HostProtocolError):
                await inst.call(cases, "add", *bad)
            assert await inst.call(cases, "add", 2**32 - 2, 1) == 2**32 - 1  # it lives
        # many at once, beside pending and cancelled async calls: each gets its turn
        got: list[int] = []

        async def add(i: int) -> None:
            got.append(await inst.call(cases, "add", i, 1))

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(add, i)
                nursery.start_soon(inst.call, cases, "echo-via-host", str(i), i % 3)
                if i % 5 == 0:
                    with trio.move_on_after(0.001):
                        await inst.call(cases, "echo-via-host", "cancelled", 10)
        assert sorted(got) == list(range(1, 31))
        assert inst._engine.turns.statistics().waiting == 0  # type: ignore[attr-defined]
        await settle(inst)
        assert_quiet(inst)
        # a dead instance refuses the straight path too
        inst._engine.faults.record(trio_isyswasfa.GuestTrap("killed by the test"))  # type: ignore[attr-defined]
        with pytest.raises(trio_isyswasfa.InstanceDead):
            await inst.call(cases, "add", 1, 1)


# -- what counts as an async import ----------------------------------------------------


_MADE: list[Any] = []  # the coroutines the imports below made (closed by the test)


class _CallableEcho:
    """An import as an object: its call gives the coroutine of an ``async def``."""

    async def _echo(self, s: str, ms: int) -> str:
        await trio.sleep(ms / 1000)
        return f"host saw {s}"

    def __call__(self, s: str, ms: int) -> Any:
        coro = self._echo(s, ms)
        _MADE.append(coro)
        return coro


def _plain_decorator(fn: Any) -> Any:
    def wrapper(*args: Any) -> Any:  # (no functools.wraps: what many decorators do)
        coro = fn(*args)
        _MADE.append(coro)
        return coro

    return wrapper


@_plain_decorator
async def _decorated_echo(s: str, ms: int) -> str:
    await trio.sleep(ms / 1000)
    return f"host saw {s}"


@pytest.mark.guest
@pytest.mark.parametrize("impl", [_CallableEcho(), _decorated_echo], ids=["callable", "decorated"])
async def test_an_import_that_returns_an_awaitable_runs_as_a_host_task(
    own_cases: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock, impl: Any
) -> None:
    failure: str | None = None
    try:
        async with trio_isyswasfa.open_instance(own_cases, imports=cases_imports(impl)) as inst:
            got = await inst.call("test:cases/cases", "echo-via-host", "x", 1)
    except trio_isyswasfa.GuestTrap as exc:
        failure = str(exc)
        got = None
    finally:
        for coro in _MADE:  # (one lowered by mistake is never awaited: no warning later)
            coro.close()
        _MADE.clear()
    assert failure is None
    assert got == "host saw x"


@pytest.mark.guest
@pytest.mark.slow
async def test_a_call_made_as_its_instance_closes_raises_instance_dead(
    own_cases: trio_isyswasfa.Component, autojump_clock: trio.testing.MockClock
) -> None:
    cases = "test:cases/cases"
    outcomes: list[str] = []
    for _ in range(6):  # (trio runs a batch of tasks in either order)
        got: list[str] = []

        async def late(inst: trio_isyswasfa.Instance, got: list[str] = got) -> None:
            try:
                await inst.call(cases, "echo-via-host", "late", 0)
                got.append("answered")
            except trio_isyswasfa.InstanceDead:
                got.append("InstanceDead")
            except trio_isyswasfa.GuestTrap as exc:
                got.append(f"GuestTrap: {exc}")

        with trio.move_on_after(600):  # (a hang guard, virtual time)
            async with (
                trio.open_nursery() as outer,
                trio_isyswasfa.open_instance(own_cases, imports=cases_imports(_echo_later)) as inst,
            ):
                assert await inst.call(cases, "echo-via-host", "warm", 0) == "host saw warm"
                await trio.testing.wait_all_tasks_blocked()  # (an idle worker, if any)
                outer.start_soon(late, inst)  # it runs as the instance closes
        outcomes.append(got[0] if got else "hung")
    assert set(outcomes) <= {"InstanceDead", "answered"}, outcomes
