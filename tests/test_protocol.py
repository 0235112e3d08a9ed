"""The sans-IO protocol core: transitions, handle counting, protocol errors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import trio_isyswasfa
from trio_isyswasfa._protocol import (
    CancelHostWork,
    Deliver,
    InCancel,
    InCancelComplete,
    InListening,
    InReady,
    OutCancel,
    OutCancelComplete,
    OutListen,
    OutPending,
    OutReady,
    ProtocolCore,
    TaskState,
    WakeHostCaller,
)

PKG = Path(trio_isyswasfa.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_protocol_core_imports_no_event_loop_and_no_engine() -> None:
    for path in (PKG / "_protocol").glob("*.py"):
        assert not imported_modules(path) & {"trio", "anyio", "wasmtime", "asyncio"}, path


def test_only_the_engine_seam_imports_wasmtime() -> None:
    # the seam is _engine.py and its helper _fastcall.py; engine/ is our own engine
    # behind it (issue 12); testing/conformance.py runs wasmtime's own WASI host as the
    # reference our host is compared with (not as our engine)
    allowed = {Path("_engine.py"), Path("_fastcall.py"), Path("testing/conformance.py")}
    offenders = [
        p.relative_to(PKG)
        for p in PKG.rglob("*.py")
        if "wasmtime" in imported_modules(p)
        and p.relative_to(PKG) not in allowed
        and p.relative_to(PKG).parts[0] != "engine"
    ]
    assert offenders == []


def test_host_import_round_trip_counts_handles() -> None:
    core = ProtocolCore()
    rep = core.new_host_task()  # pending handle -> guest (1 ref)
    assert core.handle_output(0, OutListen(7, rep)) == [Deliver(0, InListening(7, rep))]
    assert core.host_work_finished(rep, "value") == [Deliver(0, InReady(7, rep))]
    core.handle_dropped(rep)  # the guest drops its cancel handle
    assert core.take_host_value(rep) == "value"  # and passes ready to -result
    assert core.statistics().tasks == 0


def test_listen_after_host_task_finished_delivers_ready_at_once() -> None:
    core = ProtocolCore()
    rep = core.new_host_task()
    assert core.host_work_finished(rep, 1) == []
    assert core.handle_output(3, OutListen(9, rep)) == [Deliver(3, InReady(9, rep))]
    assert core.take_host_value(rep) == 1
    assert core.statistics().tasks == 0


def test_a_listening_not_yet_sent_is_withdrawn_when_host_work_ends_first() -> None:
    core = ProtocolCore()
    rep = core.new_host_task()
    assert core.handle_output(0, OutListen(7, rep)) == [Deliver(0, InListening(7, rep))]
    assert core.withdraw_listening(rep) is False  # still pending: its cancel handle counts
    assert core.host_work_finished(rep, "value") == [Deliver(0, InReady(7, rep))]
    # the scheduler still holds the `listening`: the guest gets `ready` alone, as if the
    # work had ended before its `listen`, and never drops a cancel handle
    assert core.withdraw_listening(rep) is True
    assert core.take_host_value(rep) == "value"
    assert core.statistics().tasks == 0


def test_a_guest_callees_listening_is_never_withdrawn() -> None:
    core = ProtocolCore()
    rep = core.make_task()  # B's task; A awaits it
    core.handle_output(1, OutPending(5, rep))
    core.handle_output(0, OutListen(7, rep))  # `listening` carries B's cancel handle to A
    assert core.handle_output(1, OutReady(5, rep)) == [Deliver(0, InReady(7, rep))]
    assert core.withdraw_listening(rep) is False


def test_guest_cancels_host_task() -> None:
    core = ProtocolCore()
    rep = core.new_host_task()
    core.handle_output(0, OutListen(1, rep))
    assert core.handle_output(0, OutCancel(rep)) == [CancelHostWork(rep)]
    assert core.host_work_finished(rep, None, cancelled=True) == [Deliver(0, InCancelComplete(1))]
    assert core.statistics().tasks == 0


def test_dropping_every_handle_cancels_host_work() -> None:
    core = ProtocolCore()
    rep = core.new_host_task()
    assert core.handle_dropped(rep) == [CancelHostWork(rep)]
    assert core.host_work_finished(rep, None, cancelled=True) == []
    assert core.statistics().tasks == 0


def test_host_calls_guest_and_fetches_result() -> None:
    core = ProtocolCore()
    rep = core.make_task()  # pending, cancel, ready -> callee guest
    core.host_calls(rep)  # start returned the pending handle to the host
    assert core.handle_output(0, OutPending(42, rep)) == []
    assert core.handle_output(0, OutReady(42, rep)) == [WakeHostCaller(rep)]
    assert core.host_call_outcome(rep) is TaskState.READY
    core.take_host_call_ready(rep)
    core.handle_dropped(rep)  # the callee drops ready in -result
    assert core.statistics().tasks == 0


def test_host_cancels_guest_call() -> None:
    core = ProtocolCore()
    rep = core.make_task()
    core.host_calls(rep)
    assert core.cancel_host_call(rep) == []  # the callee's `pending` has not arrived yet
    assert core.handle_output(0, OutPending(5, rep)) == [Deliver(0, InCancel(5, rep))]
    core.handle_dropped(rep)  # the callee drops its ready handle when the task ends
    assert core.handle_output(0, OutCancelComplete(rep)) == [WakeHostCaller(rep)]
    core.finish_host_call(rep)
    assert core.statistics().tasks == 0


def test_a_ready_crossing_the_hosts_cancel_is_freed_and_the_cancel_still_confirmed() -> None:
    # docs/abi.md 4.4: the call ended before the callee saw our `cancel`; the callee
    # answers that `cancel` with `cancel-complete` and discards its value
    core = ProtocolCore()
    rep = core.make_task()
    core.host_calls(rep)
    core.handle_output(0, OutPending(5, rep))
    assert core.cancel_host_call(rep) == [Deliver(0, InCancel(5, rep))]
    assert core.handle_output(0, OutReady(5, rep)) == []  # no wake: no result to take
    assert core.host_call_outcome(rep) is TaskState.CANCELLING
    assert core.handle_output(0, OutCancelComplete(rep)) == [WakeHostCaller(rep)]
    assert core.host_call_outcome(rep) is TaskState.DONE
    core.finish_host_call(rep)
    assert core.statistics().tasks == 0


def test_a_ready_crossing_a_guest_callers_cancel_is_not_passed_on() -> None:
    core = ProtocolCore()
    rep = core.make_task()  # callee is poll 1, caller is poll 0
    core.handle_output(0, OutListen(10, rep))
    assert core.handle_output(1, OutPending(20, rep)) == [Deliver(0, InListening(10, rep))]
    assert core.handle_output(0, OutCancel(rep)) == [Deliver(1, InCancel(20, rep))]
    assert core.handle_output(1, OutReady(20, rep)) == []  # the caller waits for the confirmation
    assert core.handle_output(1, OutCancelComplete(rep)) == [Deliver(0, InCancelComplete(10))]
    assert core.statistics().tasks == 0


def test_guest_to_guest_routes_by_poll_index() -> None:
    core = ProtocolCore()
    rep = core.make_task()  # callee is poll 1, caller is poll 0
    assert core.handle_output(0, OutListen(10, rep)) == []  # callee's pending not seen
    assert core.handle_output(1, OutPending(20, rep)) == [Deliver(0, InListening(10, rep))]
    assert core.handle_output(1, OutReady(20, rep)) == [Deliver(0, InReady(10, rep))]
    core.handle_dropped(rep)  # caller drops cancel
    core.handle_dropped(rep)  # callee drops ready after -result
    assert core.statistics().tasks == 0


def test_guest_to_guest_cancel_sends_callee_its_own_state() -> None:
    # the original project sent the caller's listen-state here (a known bug)
    core = ProtocolCore()
    rep = core.make_task()
    core.handle_output(1, OutPending(20, rep))
    core.handle_output(0, OutListen(10, rep))
    assert core.handle_output(0, OutCancel(rep)) == [Deliver(1, InCancel(20, rep))]
    core.handle_dropped(rep)  # callee's ready
    assert core.handle_output(1, OutCancelComplete(rep)) == [Deliver(0, InCancelComplete(10))]
    assert core.statistics().tasks == 0


@pytest.mark.parametrize(
    "bad",
    [
        lambda core, rep: core.handle_output(0, OutReady(1, rep)),  # ready before pending
        lambda core, rep: core.handle_output(0, OutCancelComplete(rep)),  # nothing cancelled
        lambda core, rep: core.handle_output(0, OutCancel(rep)),  # not awaited by poll 0
        lambda core, rep: core.handle_output(0, OutListen(1, 999)),  # unknown handle
    ],
)
def test_protocol_violations_raise(bad: object) -> None:
    core = ProtocolCore()
    rep = core.make_task()
    with pytest.raises(trio_isyswasfa.GuestProtocolError):
        bad(core, rep)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("poll", "state"),
    [(0, 8), (1, 7)],
    ids=["another state", "another guest's poll"],
)
def test_ready_must_name_the_state_its_task_reported_as_pending(poll: int, state: int) -> None:
    # the guest's poll 0 reported the task pending as state 7: a `ready` for any other
    # (poll, state) is a broken guest, and the task stays pending
    core = ProtocolCore()
    rep = core.make_task()
    core.handle_output(0, OutPending(7, rep))
    with pytest.raises(trio_isyswasfa.GuestProtocolError, match=f"names state {state}"):
        core.handle_output(poll, OutReady(state, rep))
    assert core.get(rep) is not None
    assert core.get(rep).state is TaskState.PENDING  # type: ignore[union-attr]
    core.handle_output(0, OutReady(7, rep))
    assert core.get(rep).state is TaskState.READY  # type: ignore[union-attr]


def test_listen_twice_is_a_violation() -> None:
    core = ProtocolCore()
    rep = core.make_task()
    core.handle_output(0, OutListen(1, rep))
    with pytest.raises(trio_isyswasfa.GuestProtocolError, match="already has a caller"):
        core.handle_output(0, OutListen(2, rep))
