"""The Python guest library under CPython, with fake bindings standing in for the host."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import sys
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from trio_isyswasfa.tools._paths import guest_python_dir


@dataclass(eq=False)
class Handle:
    kind: str
    rep: int
    dropped: bool = False
    fstate: int = 0

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        assert not self.dropped, f"{self} dropped twice"
        self.dropped = True

    def state(self) -> int:
        return self.fstate


@dataclass
class Ok:
    value: Any


@dataclass(frozen=True)
class Err(Exception):
    value: Any


def _variant(name: str) -> type:
    return dataclass(type(name, (), {"__annotations__": {"value": Any}}))


def _record(name: str, *fields: str) -> type:
    return dataclass(type(name, (), {"__annotations__": dict.fromkeys(fields, Any)}))


@dataclass
class FakeHost:
    """Fake bindings: records every handle it makes; time only moves when told."""

    reps: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    handles: list[Handle] = field(default_factory=list)
    now: int = 0

    def handle(self, kind: str, rep: int | None = None) -> Handle:
        h = Handle(kind, next(self.reps) if rep is None else rep)
        self.handles.append(h)
        return h

    def make_task(self) -> tuple[Handle, Handle, Handle]:
        rep = next(self.reps)
        return self.handle("pending", rep), self.handle("cancel", rep), self.handle("ready", rep)

    def live(self) -> list[Handle]:
        return [h for h in self.handles if not h.dropped]


@pytest.fixture
def env() -> Iterator[tuple[ModuleType, FakeHost, Any]]:
    host = FakeHost()
    abi = SimpleNamespace(make_task=host.make_task)
    for name in ("Listening", "Ready", "Cancel", "CancelComplete"):
        setattr(abi, f"PollInput_{name}", _variant(f"PollInput_{name}"))
    for name in ("Ready", "Listen", "Pending", "Cancel", "CancelComplete"):
        setattr(abi, f"PollOutput_{name}", _variant(f"PollOutput_{name}"))
    abi.PollInputListening = _record("PollInputListening", "state", "cancel")
    abi.PollInputReady = _record("PollInputReady", "state", "ready")
    abi.PollInputCancel = _record("PollInputCancel", "state", "cancel")
    abi.PollOutputReady = _record("PollOutputReady", "state", "ready")
    abi.PollOutputListen = _record("PollOutputListen", "state", "pending")
    abi.PollOutputPending = _record("PollOutputPending", "state", "cancel")
    clock = SimpleNamespace(now=lambda: host.now)
    spec = importlib.util.spec_from_file_location(
        f"isyswasfa_guest_{id(host)}", guest_python_dir() / "isyswasfa_guest" / "__init__.py"
    )
    assert spec is not None
    assert spec.loader is not None
    guest = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = guest  # a fresh copy per test: the library keeps module state
    try:
        spec.loader.exec_module(guest)
        guest.bind(abi, SimpleNamespace(), clock, Ok, Err)
        yield guest, host, abi
    finally:
        del sys.modules[spec.name]
        asyncio.events._set_running_loop(None)


def outputs_of(guest: ModuleType, abi: Any, inputs: list[Any] | None = None) -> list[Any]:
    return list(guest.poll(inputs or []))


def listening_then_cancel(
    env: Any, pending: Any, export: Coroutine[Any, Any, None]
) -> tuple[int, int, Any, Any]:
    """Start ``export``, which awaits ``pending``: its first poll leaves it pending, and
    the host listens to the await (with a cancel handle for it). Returns the listen's
    state, the export task's state, that cancel handle and one for cancelling the task
    (not sent yet)."""
    guest, host, abi = env
    with pytest.raises(Err):
        guest.first_poll(export)
    listen, reported = outputs_of(guest, abi)
    lid, fid = listen.value.state, reported.value.state
    sub_cancel = host.handle("cancel", pending.rep)
    outputs_of(guest, abi, [abi.PollInput_Listening(abi.PollInputListening(lid, sub_cancel))])
    return lid, fid, sub_cancel, host.handle("cancel")


def test_export_that_finishes_at_once(env: Any) -> None:
    guest, host, abi = env

    async def f() -> int:
        return 7

    assert guest.first_poll(f()) == 7
    assert outputs_of(guest, abi) == []
    assert host.handles == []


def test_pending_import_round_trip(env: Any) -> None:
    guest, host, abi = env
    pending = host.handle("pending")

    async def f() -> str:
        ready = await guest.await_ready(pending)
        return f"got {ready.kind}"

    with pytest.raises(Err) as info:
        guest.first_poll(f())
    task_pending = info.value.value
    listen, reported = outputs_of(guest, abi)
    assert isinstance(listen, abi.PollOutput_Listen)
    assert listen.value.pending is pending
    assert isinstance(reported, abi.PollOutput_Pending)
    lid, fid = listen.value.state, reported.value.state

    cancel = host.handle("cancel", pending.rep)
    assert (
        outputs_of(guest, abi, [abi.PollInput_Listening(abi.PollInputListening(lid, cancel))]) == []
    )
    ready = host.handle("ready", pending.rep)
    (done,) = outputs_of(guest, abi, [abi.PollInput_Ready(abi.PollInputReady(lid, ready))])
    assert isinstance(done, abi.PollOutput_Ready)
    assert done.value.state == fid
    assert cancel.dropped  # the caller drops its cancel handle once ready arrives
    done.value.ready.fstate = fid
    assert guest.get_ready(done.value.ready) == "got ready"
    assert task_pending.kind == "pending"
    # nothing the guest kept is live: only handles it handed over (to the host in
    # `listen`/`pending`/`ready`, or the import's ready given to the awaiting code)
    handed_over = {pending, task_pending, reported.value.cancel, ready, done.value.ready}
    assert {id(h) for h in host.live()} <= {id(h) for h in handed_over}
    assert guest.statistics()["exports"] == 0
    assert guest.statistics()["listens"] == 0


def test_host_cancel_reaches_the_coroutine_and_sub_awaits(env: Any) -> None:
    guest, host, abi = env
    pending = host.handle("pending")
    seen: list[str] = []

    async def f() -> None:
        try:
            await guest.await_ready(pending)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    lid, fid, sub_cancel, task_cancel = listening_then_cancel(env, pending, f())
    (out,) = outputs_of(guest, abi, [abi.PollInput_Cancel(abi.PollInputCancel(fid, task_cancel))])
    # the guest first cancels what it awaits, and waits for that confirmation
    assert isinstance(out, abi.PollOutput_Cancel)
    assert out.value is sub_cancel
    assert seen == []
    (confirm,) = outputs_of(guest, abi, [abi.PollInput_CancelComplete(lid)])
    assert seen == ["cancelled"]
    assert isinstance(confirm, abi.PollOutput_CancelComplete)
    assert confirm.value is task_cancel
    assert guest.statistics() == {
        "listens": 0,
        "exports": 0,
        "spawned": 0,
        "buffered_outputs": 0,
        "timers": 0,
    }


def test_a_cancel_and_the_awaits_ready_in_one_poll_are_confirmed(env: Any) -> None:
    # the host cancels the call, and in the same poll the import it awaits is ready:
    # the await's future is cancelled before its `ready` arrives, and the task sees
    # the cancel only after that `ready` settled the await: it must not wait again
    guest, host, abi = env
    pending = host.handle("pending")

    async def f() -> None:
        await guest.await_ready(pending)

    lid, fid, _, task_cancel = listening_then_cancel(env, pending, f())
    ready = host.handle("ready", pending.rep)
    (confirm,) = outputs_of(
        guest,
        abi,
        [
            abi.PollInput_Cancel(abi.PollInputCancel(fid, task_cancel)),
            abi.PollInput_Ready(abi.PollInputReady(lid, ready)),
        ],
    )
    assert isinstance(confirm, abi.PollOutput_CancelComplete)
    assert confirm.value is task_cancel
    assert ready.dropped  # nobody takes the value
    assert guest.statistics()["listens"] == 0
    assert guest.statistics()["exports"] == 0


def test_abandoned_await_cancels_when_listening_arrives(env: Any) -> None:
    guest, host, abi = env
    pending = host.handle("pending")

    async def f() -> None:
        await guest.await_ready(pending)

    task = guest.spawn(f())
    (listen,) = outputs_of(guest, abi)
    task.cancel()
    assert outputs_of(guest, abi) == []  # no cancel handle yet: nothing to send
    cancel = host.handle("cancel", pending.rep)
    (out,) = outputs_of(
        guest, abi, [abi.PollInput_Listening(abi.PollInputListening(listen.value.state, cancel))]
    )
    assert isinstance(out, abi.PollOutput_Cancel)
    assert not task.done()  # still waiting for the confirmation
    outputs_of(guest, abi, [abi.PollInput_CancelComplete(listen.value.state)])
    assert task.cancelled()


def test_ready_for_a_cancelled_await_is_handed_back(env: Any) -> None:
    guest, host, abi = env
    pending = host.handle("pending")
    abandoned: list[Handle] = []

    async def f() -> None:
        await guest.await_ready(pending, abandoned.append)

    task = guest.spawn(f())
    (listen,) = outputs_of(guest, abi)
    task.cancel()
    outputs_of(guest, abi)
    ready = host.handle("ready", pending.rep)
    outputs_of(guest, abi, [abi.PollInput_Ready(abi.PollInputReady(listen.value.state, ready))])
    assert abandoned == [ready]  # e.g. to call -result and free the callee's value
    assert task.cancelled()


def test_spawned_task_runs_at_once_and_later(env: Any) -> None:
    guest, host, abi = env
    pending = host.handle("pending")
    steps: list[str] = []

    async def f() -> None:
        steps.append("started")
        await guest.await_ready(pending)
        steps.append("resumed")

    guest.spawn(f())
    assert steps == []  # runs on the next poll (or in the export call that spawned it)
    (listen,) = outputs_of(guest, abi)
    assert steps == ["started"]
    ready = host.handle("ready", pending.rep)
    outputs_of(guest, abi, [abi.PollInput_Ready(abi.PollInputReady(listen.value.state, ready))])
    assert steps == ["started", "resumed"]
    assert guest.statistics()["spawned"] == 0


def test_ids_wrap_around_and_skip_live_ones(env: Any) -> None:
    guest, _host, _abi = env
    ids = guest._Ids()
    ids._next = 0xFFFF_FFFF
    assert ids.take({}) == 0xFFFF_FFFF
    assert ids.take({1: None}) == 2


def test_event_for_unknown_listen_state_is_an_error(env: Any) -> None:
    guest, _host, abi = env
    with pytest.raises(RuntimeError, match="unknown listen state"):
        guest.poll([abi.PollInput_CancelComplete(12345)])
