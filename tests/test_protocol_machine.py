"""A Hypothesis state machine over the protocol core: a well-behaved guest awaits host
tasks (and sometimes cancels them) in random orders; nothing raises, nothing leaks."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trio_isyswasfa._protocol import (
    CancelHostWork,
    Deliver,
    InCancelComplete,
    InListening,
    InReady,
    OutCancel,
    OutListen,
    ProtocolCore,
)

GUEST = 0


class GuestAwaitingHostTasks(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core = ProtocolCore()
        self.unlistened: list[int] = []  # reps whose pending handle the guest holds
        self.listening: dict[int, int] = {}  # listen-state -> rep, awaiting
        self.cancel_handles: dict[int, int] = {}  # listen-state -> rep (cancel handle held)
        self.cancelling: set[int] = set()  # listen-states with a cancel sent
        self.host_running: set[int] = set()
        self.host_cancelled: set[int] = set()  # cancel requested by the core
        self.inbox: list[object] = []
        self.next_state = 1

    def _apply(self, actions: list[object]) -> None:
        for action in actions:
            if isinstance(action, Deliver):
                assert action.poll == GUEST
                event = action.event
                if isinstance(event, InReady):
                    # as the scheduler does: a `listening` still in the inbox is left
                    # out (the guest gets `ready` alone) when the core allows it
                    for i, queued in enumerate(self.inbox):
                        if (
                            isinstance(queued, InListening)
                            and queued.state == event.state
                            and self.core.withdraw_listening(queued.cancel)
                        ):
                            del self.inbox[i]
                            break
                self.inbox.append(event)
            elif isinstance(action, CancelHostWork):
                self.host_cancelled.add(action.rep)

    @rule()
    def start_host_task(self) -> None:
        rep = self.core.new_host_task()
        self.unlistened.append(rep)
        self.host_running.add(rep)

    @precondition(lambda self: self.unlistened)
    @rule(i=st.integers(min_value=0))
    def guest_listens(self, i: int) -> None:
        rep = self.unlistened.pop(i % len(self.unlistened))
        state = self.next_state
        self.next_state += 1
        self.listening[state] = rep
        self._apply(self.core.handle_output(GUEST, OutListen(state, rep)))

    @precondition(lambda self: self.unlistened)
    @rule(i=st.integers(min_value=0))
    def guest_drops_unlistened_pending(self, i: int) -> None:
        rep = self.unlistened.pop(i % len(self.unlistened))
        self._apply(self.core.handle_dropped(rep))

    @precondition(lambda self: self.host_running)
    @rule(data=st.data())
    def host_task_ends(self, data: st.DataObject) -> None:
        rep = data.draw(st.sampled_from(sorted(self.host_running)))
        self.host_running.discard(rep)
        cancelled = rep in self.host_cancelled
        self._apply(self.core.host_work_finished(rep, f"value {rep}", cancelled=cancelled))

    @precondition(lambda self: self.cancel_handles)
    @rule(data=st.data())
    def guest_cancels(self, data: st.DataObject) -> None:
        state = data.draw(st.sampled_from(sorted(self.cancel_handles)))
        rep = self.cancel_handles.pop(state)
        self.cancelling.add(state)
        self._apply(self.core.handle_output(GUEST, OutCancel(rep)))

    @precondition(lambda self: self.inbox)
    @rule()
    def guest_polls(self) -> None:
        inbox, self.inbox = self.inbox, []
        for event in inbox:
            if isinstance(event, InListening):
                assert self.listening[event.state] == event.cancel
                self.cancel_handles[event.state] = event.cancel
            elif isinstance(event, InReady):
                rep = self.listening[event.state]
                if event.state in self.cancel_handles:
                    del self.cancel_handles[event.state]
                    self._apply(self.core.handle_dropped(rep))  # drop the cancel handle
                # a cancelling guest still fetches (and discards) the value
                assert self.core.take_host_value(rep) == f"value {rep}"
                if event.state not in self.cancelling:
                    del self.listening[event.state]
            elif isinstance(event, InCancelComplete):
                assert event.state in self.cancelling
                self.cancelling.discard(event.state)
                self.listening.pop(event.state, None)
            else:  # pragma: no cover
                raise AssertionError(event)

    @invariant()
    def handle_counts_are_sane(self) -> None:
        stats = self.core.statistics()
        assert stats.handles >= 0
        assert (
            stats.tasks
            <= len(self.host_running) + len(self.listening) + len(self.unlistened) + 1000
        )

    def teardown(self) -> None:
        # settle: the guest drops what it never listened to, the host finishes its
        # work, and the guest processes every event until nothing is left
        for rep in self.unlistened:
            self._apply(self.core.handle_dropped(rep))
        self.unlistened.clear()
        for _ in range(10):
            for rep in sorted(self.host_running):
                self.host_task_ends_now(rep)
            while self.inbox:
                self.guest_polls()
            for state in sorted(self.cancel_handles):
                rep = self.cancel_handles.pop(state)
                self._apply(self.core.handle_dropped(rep))
                self.listening.pop(state, None)
        assert self.core.statistics().tasks == 0, self.core.statistics()

    def host_task_ends_now(self, rep: int) -> None:
        self.host_running.discard(rep)
        cancelled = rep in self.host_cancelled
        self._apply(self.core.host_work_finished(rep, f"value {rep}", cancelled=cancelled))


GuestAwaitingHostTasks.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None
)
TestGuestAwaitingHostTasks = GuestAwaitingHostTasks.TestCase
