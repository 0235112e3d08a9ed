"""An ASGI application that serves a component's exported ``wasi:http/handler``.

Each request is handled by a warm instance from a pool, or by a fresh one (see
:class:`ComponentApp`; the compiled component is shared). The request body is fed into an in-memory pipe with
backpressure while the guest handles the request; the response body is read from the
stream the guest returned, and sent as it arrives, for as long as the instance runs
(so a guest's spawned task can keep writing it after ``handle`` returned). A client
that goes away cancels the guest's task, which must confirm, like any cancellation.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import types
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    MutableMapping,
)
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
)
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import anyio
import anyio.abc

from .._engine import Err, variant_case
from .._errors import GuestProtocolError, HostProtocolError, IsyswasfaError, LinkError
from .._host import Component, Instance, describe_exports, load_component, open_instance
from .._limits import Limits
from .._park import TRIO_CHECKPOINT, TaskGroup, cancel_scope, open_task_group, running_trio
from .._park import Scope as CancelScope
from ..wasi import WasiConfig
from ..wasi.io import (
    CHUNK,
    Pipe,
    PipeReader,
    PipeWriter,
    StreamClosed,
    StreamFailed,
    read_chunk,
    write_all,
)
from ._client import HttpClient
from ._pool import FreshInstances, InstancePool
from .types import (
    FORBIDDEN,
    Body,
    ErrorCode,
    Fields,
    Request,
    Response,
    TrailersSender,
    make_trailers,
)
from .wasi_http import (
    IncomingBody,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
    content_length,
)

log = logging.getLogger("trio_isyswasfa.http")
_T = TypeVar("_T")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HANDLER_INTERFACE = "wasi:http/handler"
INSTANCE_POLICIES = ("pooled", "shared", "per-request")


@dataclass
class ServerStatistics:
    """What a :class:`ComponentApp` has done so far.

    Attributes:
      in_flight: requests being handled (until their response body is sent).
      completed: requests whose response was sent in full.
      failed: requests that failed in the component (trap, error code, protocol error).
      cancelled: requests cancelled because the client went away.
      instances_opened: instances opened so far (one per request with ``per-request``,
        and the spares opened ahead of requests).
      instances_closed: instances closed so far.
      spare_instances: with ``per-request``, instances opened ahead that no request
        has used yet (``instances_opened - spare_instances`` requests got one).
      waiting: requests waiting for an instance (all ``max_instances`` are busy).
      rejected: requests answered 503 at once: every instance was busy and
        ``max_waiting`` requests waited already.
      guest_seconds: time spent running guest code for requests so far (see
        :attr:`~trio_isyswasfa.InstanceStatistics.guest_seconds`).
    """

    in_flight: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    instances_opened: int = 0
    instances_closed: int = 0
    spare_instances: int = 0
    waiting: int = 0
    rejected: int = 0
    guest_seconds: float = 0.0


class ComponentApp:
    """ASGI 3 application serving a component's exported ``wasi:http/handler``.

    Args:
      component: a compiled component exporting ``wasi:http/handler``.
      wasi: what each instance sees (preopens, environment, outgoing HTTP…).
      cancel_grace: seconds a guest gets to confirm a cancellation (a client that left).
      limits: memory and run-time bounds for each instance
        (:class:`~trio_isyswasfa.Limits`); none by default.
      max_instances: instances that may exist at once (each serves one request at a
        time, or ``per_instance`` with ``"shared"``; further requests wait for one). It bounds memory (a Python guest's
        instance holds ~12 MiB). A guest that mostly computes serves best with a few
        per CPU core; one that waits on I/O needs one per concurrent request.
      http_client: sends the guests' outgoing requests; the app opens and closes it
        with the ASGI lifespan (else outgoing requests are refused, unless ``wasi``
        says otherwise).
      instances: for a ``wasi:http/proxy`` (0.2) component, ``"pooled"`` by default
        and ``"shared"`` means the same (its ``handle`` calls cannot overlap in one
        instance: each runs to completion, the response body included); for an
        isyswasfa one, ``"shared"`` by default: instances stay open between requests and
        each serves up to ``per_instance`` requests at once (their ``handle`` calls
        run concurrently, as isyswasfa allows), so a guest that waits on I/O needs
        few instances; a request goes to an instance whose guest is not blocked in a
        host call (``time.sleep``), so blocking guests do not hold each other up (as
        the request arrives: requests already lent an instance, a burst that arrived
        while it opened, wait while a guest in it blocks; see the README); a
        guest's state may outlive a request and is shared by the requests it serves at
        once; a trap fails that instance's requests in flight (500, or a response cut
        off) and new ones go to another instance. ``"pooled"``: likewise, but each
        instance serves one request at a time. ``"per-request"``: a fresh instance for
        every request, as ``wasmtime serve`` does (full isolation, several
        milliseconds more per request for a Python guest; ``spare_instances`` are
        opened ahead in the background, so a request seldom waits for its own).
        Pooling and spares need the ASGI lifespan protocol (hypercorn speaks it);
        without it, every request opens a fresh instance.
      per_instance: with ``"shared"``, requests one instance serves at once (16, as
        ``wasmtime serve`` for WASI 0.3); at most ``max_instances * per_instance``
        requests are served at once.
      max_waiting: requests that may wait for a free instance while every one is busy;
        a request beyond them is answered at once with 503 (``Retry-After: 1``) and
        counted in ``ServerStatistics.rejected``, so a flood of clients meets a bounded
        queue, not unbounded latency. 0: never wait.
      spare_instances: with ``"per-request"``, never-used instances kept open ahead of
        requests (each is still used by one request only, then closed), on top of
        ``max_instances``; 0: each request opens its own when it arrives.
    """

    def __init__(
        self,
        component: Component,
        *,
        wasi: WasiConfig | None = None,
        cancel_grace: float = 5.0,
        instances: Literal["pooled", "shared", "per-request"] | None = None,
        http_client: HttpClient | None = None,
        limits: Limits | None = None,
        max_instances: int = 32,
        per_instance: int = 16,
        max_waiting: int = 1024,
        spare_instances: int = 2,
    ) -> None:
        if max_instances < 1:
            raise ValueError(f"max_instances must be at least 1, not {max_instances}")
        if max_waiting < 0:
            raise ValueError(f"max_waiting must not be negative, not {max_waiting}")
        if per_instance < 1:
            raise ValueError(f"per_instance must be at least 1, not {per_instance}")
        if spare_instances < 0:
            raise ValueError(f"spare_instances must not be negative, not {spare_instances}")
        proxy = component.proxy_handler
        if instances is None:
            instances = "pooled" if proxy else "shared"
        if instances not in INSTANCE_POLICIES:
            raise ValueError(
                f"instances must be 'pooled', 'shared' or 'per-request', not {instances!r}"
            )
        self.component = component
        self.wasi = wasi or WasiConfig()
        self.http_client = http_client
        if http_client is not None:
            self.wasi = dataclasses.replace(self.wasi, http_outgoing=http_client.send)
        self.cancel_grace = cancel_grace
        self.limits = limits
        self.max_instances = max_instances
        self.max_waiting = max_waiting
        self.spare_instances = spare_instances
        self.per_instance = per_instance if instances == "shared" and not proxy else 1
        self._slots = _Slots(self.max_instances * self.per_instance)
        self.instances = instances
        self._pool: InstancePool | FreshInstances | None = None
        # where the tasks a request may start run while the lifespan lasts
        self._beside: TaskGroup | None = None
        self._on_trio = False  # whether the lifespan runs on trio
        exports = [i for i in component.exports() if i.split("@")[0] == HANDLER_INTERFACE]
        if proxy is not None:
            self.interface = proxy
        elif exports and component.poll_exports:
            self.interface = exports[0]
        else:
            raise LinkError(
                f"{component.name} exports neither wasi:http/incoming-handler@0.2.x nor "
                f"isyswasfa's {HANDLER_INTERFACE}; it exports "
                f"{describe_exports(component.exports())}"
            )
        self.proxy = proxy is not None
        self._stats = ServerStatistics()
        # each instance's guest_seconds when last counted (requests may share one)
        self._guest_counted: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        # set when the last request in flight ends; made only when someone waits (most
        # requests meet an idle server: an event each would cost them ~2 µs)
        self._idle: anyio.Event | None = None
        # the app's own task group while the ASGI lifespan runs: a proxy request whose
        # call suspends starts its helpers there (see _RequestHelpers)
        self._helper_group: TaskGroup | None = None

    def statistics(self) -> ServerStatistics:
        """Counts of requests in flight, completed, failed and cancelled, and of instances."""
        pool = self._pool
        spares = pool.ready if isinstance(pool, FreshInstances) else 0
        return dataclasses.replace(self._stats, spare_instances=spares)

    async def wait_idle(self) -> None:
        """Return once no request is in flight (a client can finish reading first)."""
        if self._stats.in_flight:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # other scopes (websocket) are not served: returning closes them

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self._stats
        stats.in_flight += 1
        outcome = "cancelled"
        try:
            if self._full():
                outcome = "rejected"
                log.warning("every instance is busy and %d requests wait: 503", stats.waiting)
                await _send_error(send, 503, "the server is busy", retry_after=1)
            elif self.proxy:
                outcome = await self._serve_proxy(scope, receive, send)
            else:
                outcome = await self._serve_one(scope, receive, send)
        finally:
            if outcome == "completed":
                stats.completed += 1
            elif outcome == "failed":
                stats.failed += 1
            elif outcome == "rejected":
                stats.rejected += 1
            else:
                stats.cancelled += 1
            stats.in_flight -= 1
            if not stats.in_flight and self._idle is not None:
                self._idle.set()
                self._idle = None

    async def _serve_one(self, scope: Scope, receive: Receive, send: Send) -> str:
        """One request to an isyswasfa component: its ``handle`` returns the response,
        whose body then streams out.

        As for a proxy component, a request that needs no concurrency starts no task:
        a body that comes whole in the first message goes straight into the pipe, and
        everything from taking a slot to the last message of the response runs in this
        task. Only if it suspends (a slot or an instance to wait for, a guest that waits
        on I/O, a body the guest writes as it goes, a client that reads slowly) does a
        task start to listen to the client (leaving cancels the guest), and only if the
        response's sending suspends one to cut it off should the instance fail meanwhile
        (a trap in another request it serves, or in a task of the guest's).
        """
        if _without_body(scope):
            message = _NO_BODY  # (as for a proxy component)
        else:
            message = await receive()
            if message["type"] == "http.disconnect":
                return "cancelled"
        pipe = Pipe()
        trailers_tx, trailers_rx = make_trailers()
        request = _request_from_scope(scope, Body(PipeReader(pipe), trailers_rx))
        state = _OneState()
        beside = self._beside
        if beside is None:  # no lifespan: a task group of its own (as its own instance)
            on_trio = running_trio()
            async with open_task_group(on_trio) as group:
                tasks = _RequestTasks(group, on_trio)
                await self._one_in(
                    tasks, scope, receive, send, message, pipe, trailers_tx, request, state
                )
                tasks.close()
        else:
            # the tasks it may need run in the app's group, each in a scope it cancels
            # when it ends: no task group of its own, whose making and closing (a pass
            # round the event loop) cost every request ~20 µs here
            tasks = _RequestTasks(beside, self._on_trio)
            try:
                await self._one_in(
                    tasks, scope, receive, send, message, pipe, trailers_tx, request, state
                )
            finally:
                tasks.close()
        if tasks.failure is not None:  # a task of its own failed (a host bug)
            raise tasks.failure
        if state.cut_off is not None:  # the instance failed while the response went out
            _log_failure(state.cut_off)
            state.outcome = "failed"
        return state.outcome

    async def _one_in(
        self,
        tasks: _RequestTasks,
        scope: Scope,
        receive: Receive,
        send: Send,
        message: Message,
        pipe: Pipe,
        trailers_tx: TrailersSender,
        request: Request,
        state: _OneState,
    ) -> None:
        """The request, in its cancel scope (``tasks.scope``), which is entered only
        once the request is about to wait or starts a task (see :class:`_RequestTasks`)
        and left here, as a ``with`` block around it all would be."""
        try:
            listen = _take_request_body(tasks, state, receive, message, pipe, trailers_tx)

            def waits() -> None:
                # the client is listened to, and a response on its way watched (_run_one)
                listen()
                state.waited = True
                if state.watch is not None:
                    state.watch()

            try:
                # a client is listened to once the request waits; not for the checkpoints
                # of a server's sends that wrote at once (each of hypercorn's takes two),
                # nor once the response is all handed over (a disconnect is no news then)
                await _eagerly(
                    self._run_one(scope, send, request, state, tasks),
                    waits,
                    lambda: not state.sent,
                    _FREE_CHECKPOINTS,
                )
            except IsyswasfaError as exc:
                await _failed(send, state, exc)
        except BaseException as exc:  # (the scope's exit decides, as ``with`` does)
            if not tasks.leave_scope(exc):
                raise
        else:
            tasks.leave_scope(None)

    async def _run_one(
        self,
        scope: Scope,
        send: Send,
        request: Request,
        state: _OneState,
        tg: _RequestTasks,
    ) -> None:
        slots = self._slots
        if slots.available_tokens:  # (what _take_slot does first, without its coroutine)
            slots.available_tokens -= 1
        else:
            await self._take_slot()  # (the wait enters the scope: see _one_in's ``waits``)
        try:
            # (the scope is entered before an instance is waited for or opened: that
            # opens cancel scopes of its own, in this task)
            async with self._instance(tg.enter_scope) as instance:
                self._guest_from(instance)  # (not a context manager: one fewer per request)
                try:
                    engine = instance._engine
                    # entered when the call is about to wait, before it enters any scope
                    # of its own (a call that never waits pays for none); it waits in
                    # this task alone (another request's call sets it only while it
                    # runs, and clears it before it waits)
                    engine.before_wait = tg.enter_scope
                    try:
                        response = await _handle(instance, self.interface, request)
                    finally:
                        engine.before_wait = None  # (left set by a call that did not wait)
                    if isinstance(response, ErrorCode):
                        log.warning("component answered error-code %s", response)
                        state.sent = True  # (as below: a disconnect is no news)
                        await _send_error(send, 500, f"the component failed: {response}")
                        state.outcome = "failed"
                        return
                    failure = _not_final(response.status)
                    if failure is not None:  # a 500 (below), the instance retired
                        response.close()
                        raise failure
                    state.started = True

                    def watch() -> None:
                        # the response waits: should the instance fail meanwhile, it is
                        # cut off rather than left hanging (the request's own scope is
                        # cancelled: no scope of its own for the sending, which most
                        # responses never need)
                        tg.start_soon(_cut_off_on_failure, instance, state, tg.cancel_scope)

                    if state.waited:  # watched should the sending wait too
                        await _eagerly(
                            _send_response(scope, send, response, state),
                            watch,
                            lambda: not state.sent,
                            _FREE_CHECKPOINTS,
                        )
                    else:
                        # the request has not waited: the wrapper round all of it (in
                        # _one_in) calls ``watch`` should the sending be where it first
                        # waits, and no second wrapper resumes each of the sends' steps
                        state.watch = watch
                        await _send_response(scope, send, response, state)
                    instance._sched.check_alive()
                    state.outcome = "completed"
                finally:
                    self._guest_until(instance)
        finally:
            slots.release()

    async def _serve_proxy(self, scope: Scope, receive: Receive, send: Send) -> str:
        """One request to a ``wasi:http/proxy`` component: its ``handle`` runs to
        completion while the response it set streams out.

        What a small request to a guest that answers without waiting costs is kept to
        its work: the request body comes whole in the first message, ``handle`` runs in
        this task and returns without suspending, and the response goes out from what
        the guest left in the body's pipe (a small body in one message), with no task
        started. Only a request whose body does not come whole starts a task to pump it,
        and only a ``handle`` call that suspends (it waits on I/O, or computes past a
        time slice) starts one to listen to the client (leaving cancels the guest) and
        one to send the response as the guest writes it.
        """
        if _without_body(scope):
            message = _NO_BODY  # (what the first receive would say, after a trip round the loop)
        else:
            message = await receive()
            if message["type"] == "http.disconnect":
                return "cancelled"
        state = _ProxyState()
        pipe: Pipe | None = None
        trailers_tx: TrailersSender | None = None
        if message is _NO_BODY:  # nothing to feed: no pipe, no trailers
            body = IncomingBody.ended()
        else:
            pipe = Pipe()
            trailers_tx, trailers_rx = make_trailers()
            body = IncomingBody(PipeReader(pipe), trailers_rx)
        request = _incoming_request(scope, body)
        group = self._helper_group
        if group is not None and self._slots.available_tokens and _comes_whole(message):
            # no task group of its own (its exit alone was a trip round the event loop,
            # ~8% of a hello request's Python): a cancel scope, entered only once the
            # call is about to wait (see _run_proxy; before that nothing can cancel
            # it), and the tasks a call that waits needs start in the app's group,
            # bound to this request
            helpers = _RequestHelpers(group, self._on_trio)  # (the lifespan's loop)
            try:
                await self._proxy_request(
                    scope, receive, send, state, request, message, pipe, trailers_tx, helpers
                )
            except BaseException as exc:  # (the scope's exit decides, as ``with`` does)
                if not helpers.leave_scope(exc):
                    raise
            else:
                helpers.leave_scope(None)
            finally:
                if helpers.started:  # (most calls never suspend: none to wait for)
                    await helpers.aclose()
        else:  # on trio, a nursery of its own (anyio's task group around it cost more)
            async with open_task_group(running_trio()) as tg:
                await self._proxy_request(
                    scope, receive, send, state, request, message, pipe, trailers_tx, tg
                )
        return state.outcome

    async def _proxy_request(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        state: _ProxyState,
        request: IncomingRequest,
        message: Message,
        pipe: Pipe | None,
        trailers_tx: TrailersSender | None,
        tg: TaskGroup,
    ) -> None:
        """Feed the body, take a slot and an instance, run ``handle`` (the tasks it
        needs start in ``tg``)."""
        listen = _take_request_body(tg, state, receive, message, pipe, trailers_tx)
        slots = self._slots
        try:
            if slots.available_tokens:  # (what _take_slot does first, without its coroutine)
                slots.available_tokens -= 1
            else:
                listen()  # it waits for a slot: a client that leaves meanwhile is let go
                await self._take_slot()
            try:
                # (an instance of the request's own opens a task group of its own in
                # this task: the request's scope is entered before it)
                enter = tg.enter_scope if type(tg) is _RequestHelpers else None
                async with self._instance(enter) as instance:
                    # one request at a time in a proxy's instance: its guest time is
                    # what the engine counts meanwhile (no per-instance bookkeeping)
                    engine = instance._engine
                    before = engine.guest_seconds
                    try:
                        await self._run_proxy(scope, send, instance, request, state, tg, listen)
                    finally:
                        self._stats.guest_seconds += engine.guest_seconds - before
            finally:
                slots.release()
        except IsyswasfaError as exc:
            await _failed(send, state, exc)
        if state.listening:
            tg.cancel_scope.cancel()

    async def _run_proxy(
        self,
        scope: Scope,
        send: Send,
        instance: Instance,
        request: IncomingRequest,
        state: _ProxyState,
        tg: TaskGroup,
        listen: Callable[[], None],
    ) -> None:
        http = instance._http_p2
        assert http is not None  # a proxy component imports wasi:http 0.2's types
        outparam = ResponseOutparam(head=scope["method"] == "HEAD")
        done: list[anyio.Event] = []

        def suspended() -> None:
            # the guest waits: from here on the response goes out as it is written, and
            # a client that leaves cancels the guest
            listen()
            finished = anyio.Event()
            done.append(finished)
            tg.start_soon(self._respond, scope, send, instance, outparam, state, finished)

        engine = instance._engine
        slices = 0

        def waits() -> bool:
            # a guest that computes past a tick yields to the loop without waiting
            # (under load, a short call often spans one): only a wait in a host call,
            # or a second time slice, makes it a request that waits
            nonlocal slices
            if engine.blocked:
                return True
            slices += 1
            return slices > 1

        call = instance.call(self.interface, "handle", http.give(request), http.give(outparam))
        if type(tg) is _RequestHelpers:
            # the request's scope is entered when the call is about to wait, before it
            # enters any scope of its own: a call that never waits pays for none
            engine.before_wait = tg.enter_scope
        try:
            await _eagerly(call, suspended, waits)
        except IsyswasfaError as exc:
            state.failure = exc
        finally:
            engine.before_wait = None  # (left set by a call that did not wait)
            outparam.export_returned()
            # the guest writes no more: a body it left unfinished is cut off
            answer = outparam.response
            if isinstance(answer, OutgoingResponse) and answer.body is not None:
                answer.body.abort("handle returned before it finished the response body")
        if done:
            await done[0].wait()
        else:  # it returned without waiting: its answer is all there
            await self._respond(scope, send, instance, outparam, state)
        # raised here, not in a task: they come out as themselves
        if state.failure is not None:
            raise state.failure
        if not outparam.is_set:
            raise GuestProtocolError("handle returned without setting its response-outparam")
        body = state.body
        if body is not None:
            if not state.sent:
                # cut off (the reason is the body's): the instance is not lent again
                raise GuestProtocolError(f"response body cut off: {body.problem}")
            if body.overflowed:
                # sent whole, cut at its length; the guest misbehaved: not lent again
                raise GuestProtocolError(f"response body cut at its length: {body.problem}")
            state.outcome = "completed"

    async def _respond(
        self,
        scope: Scope,
        send: Send,
        instance: Instance,
        outparam: ResponseOutparam,
        state: _ProxyState,
        finished: anyio.Event | None = None,
    ) -> None:
        """Send the guest's answer once it stands by it (nothing if it failed first or
        answered nothing: the caller then answers 500)."""
        try:
            if outparam.returned:  # (after ``handle``, it stands by its answer)
                answer = outparam.response
            else:
                answer = await outparam.wait()
                if not outparam.returned:
                    await _until_committed(instance, answer, outparam)
            if answer is None or (state.failure is not None and not _whole(answer)):
                pass  # it trapped before the response went out, or answered nothing
            elif isinstance(answer, ErrorCode):
                state.started = True
                log.warning("component answered error-code %s", answer)
                state.outcome = "failed"
                state.sent = True  # all of it, once this returns: a disconnect is no news
                await _send_error(send, 500, f"the component failed: {answer}")
            elif (failure := _not_final(answer.status)) is not None:
                state.failure = failure
            else:
                state.started = True
                body = state.body = answer.body or OutgoingBody.empty()
                await _send_proxy_response(scope, send, answer, body, state)
        finally:
            if finished is not None:
                finished.set()

    def _guest_from(self, instance: Instance) -> None:
        """Count the guest time ``instance`` spends from now (until :meth:`_guest_until`)
        into the statistics (once, even when requests share the instance)."""
        engine = instance._engine
        if engine not in self._guest_counted:
            self._guest_counted[engine] = engine.guest_seconds

    def _guest_until(self, instance: Instance) -> None:
        engine = instance._engine
        now = engine.guest_seconds
        self._stats.guest_seconds += now - self._guest_counted[engine]
        self._guest_counted[engine] = now

    def _limiter(self) -> _Slots:
        return self._slots

    def _full(self) -> bool:
        """No slot is free and ``max_waiting`` requests wait already."""
        return self._slots.available_tokens == 0 and self._stats.waiting >= self.max_waiting

    async def _take_slot(self) -> None:
        slots = self._slots
        if slots.available_tokens:  # the common case: no checkpoint, nothing counted
            slots.available_tokens -= 1
            return
        stats = self._stats
        stats.waiting += 1
        try:
            await slots.wait_handed()
        finally:
            stats.waiting -= 1

    def _count_open(self) -> None:
        self._stats.instances_opened += 1

    def _count_close(self) -> None:
        self._stats.instances_closed += 1

    def _instance(
        self, before_wait: Callable[[], object] | None = None
    ) -> AbstractAsyncContextManager[Instance]:
        """An instance for one request; ``before_wait`` is called before it waits for
        one or opens one (for an instance of the request's own: at once)."""
        if self._pool is not None:
            return self._pool.lend(before_wait)
        if before_wait is not None:
            before_wait()
        return self._fresh_instance()

    @asynccontextmanager
    async def _fresh_instance(self) -> AsyncIterator[Instance]:
        """An instance of its own for one request, without a pool (no lifespan)."""
        async with open_instance(
            self.component, wasi=self.wasi, cancel_grace=self.cancel_grace, limits=self.limits
        ) as instance:
            self._count_open()
            try:
                yield instance
            finally:
                self._count_close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        # hypercorn's trio worker fails at start-up if the app ignores lifespan
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        async with AsyncExitStack() as stack:
            if self.http_client is not None:
                await stack.enter_async_context(self.http_client)
            if self.instances != "per-request":
                self._pool = await stack.enter_async_context(
                    InstancePool(
                        self.component,
                        wasi=self.wasi,
                        cancel_grace=self.cancel_grace,
                        limits=self.limits,
                        per_instance=self.per_instance,
                        on_open=self._count_open,
                        on_close=self._count_close,
                    )
                )
            elif self.spare_instances:
                self._pool = await stack.enter_async_context(
                    FreshInstances(
                        self.component,
                        wasi=self.wasi,
                        cancel_grace=self.cancel_grace,
                        limits=self.limits,
                        spares=self.spare_instances,
                        on_open=self._count_open,
                        on_close=self._count_close,
                    )
                )
            self._on_trio = running_trio()
            beside = await stack.enter_async_context(open_task_group(self._on_trio))
            self._beside = beside
            if self.proxy:  # (a proxy request's helpers start there too)
                self._helper_group = beside
            await send({"type": "lifespan.startup.complete"})
            try:
                await _until_shutdown(receive)
            finally:
                self._pool = None
                self._beside = self._helper_group = None
                beside.cancel_scope.cancel()  # the tasks of requests still in flight
        await send({"type": "lifespan.shutdown.complete"})


async def _pump_request_body(
    receive: Receive,
    pipe: Pipe,
    trailers: TrailersSender,
    client_left: Callable[[], None],
    first: Message | None = None,
) -> None:
    """Feed the request body into ``pipe`` (backpressure: the guest reads it), starting
    with ``first`` if the caller received it already, then keep listening, so that a
    client leaving mid-response calls ``client_left``."""
    writer = PipeWriter(pipe)
    try:
        while True:
            message = first or await receive()
            first = None
            if message["type"] == "http.disconnect":
                # before the body's end: the guest's read of it fails, not ends
                writer.fail(StreamFailed("the client left mid-body", cause=_CLIENT_LEFT))
                client_left()
                return
            data = message.get("body", b"")
            if data:
                await write_all(writer, data)
            if not message.get("more_body", False):
                break
    except StreamClosed:
        pass  # the guest dropped the body unread
    finally:
        writer.close()
        trailers.close()
    await _until_disconnect(receive, client_left)


_CLIENT_LEFT = ErrorCode("connection-terminated")

# checkpoints an isyswasfa request may pass before it counts as one that waits (and
# listens to its client): a response's sends on hypercorn take ~5 when the socket takes
# them at once; a guest computing past as many time slices (~10 ms each) is listened
# to from then on
_FREE_CHECKPOINTS = 8


async def _until_disconnect(receive: Receive, client_left: Callable[[], None]) -> None:
    """Once the request body is in, call ``client_left`` if the client leaves."""
    while (await receive())["type"] != "http.disconnect":
        pass
    client_left()


async def _eagerly(
    coro: Coroutine[Any, Any, _T],
    suspended: Callable[[], object],
    counts: Callable[[], bool] | None = None,
    checkpoints: int = 0,
) -> _T:
    """Await ``coro``, calling ``suspended`` first if (and only if) it suspends: what
    running beside it costs (a task that listens, one that sends) is then paid only by
    calls that wait. ``coro`` runs in the caller's task either way, as ``await`` runs
    it; cancel scopes it enters are entered there. With ``counts``, a suspension for
    which it answers false (a time slice of a computing guest) is not one:
    ``suspended`` is called at the first for which it answers true, if any. The first
    ``checkpoints`` suspensions that only ask to run again in the loop's next round
    (checkpoints, see :data:`~trio_isyswasfa._park.TRIO_CHECKPOINT`: a server's send
    that wrote at once) are not ones either."""
    try:
        signal = coro.send(None)
    except StopIteration as done:
        result: _T = done.value
        return result
    return await _resume(coro, signal, suspended, counts, checkpoints)


@types.coroutine
def _resume(
    coro: Coroutine[Any, Any, _T],
    signal: Any,
    suspended: Callable[[], object] | None,
    counts: Callable[[], bool] | None,
    checkpoints: int,
) -> Generator[Any, Any, _T]:
    """Go on awaiting ``coro`` from its first suspension, ``signal`` being what it gave
    the event loop then: what comes back (a value, or an exception thrown in, such as a
    cancellation) goes into it, as ``await`` would have done. Before it suspends,
    ``suspended`` is called, once, the first time ``counts`` (if given) says so, past
    the first ``checkpoints`` checkpoints."""
    while True:
        if suspended is not None:
            if checkpoints and (signal is TRIO_CHECKPOINT or signal is None):  # (asyncio's)
                checkpoints -= 1
            elif counts is None or counts():
                call, suspended = suspended, None
                resumed = False
                try:
                    call()
                    resumed = True
                finally:
                    if not resumed:
                        coro.close()
        try:
            sent = yield signal
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # passed on into the coroutine (a cancellation)
            try:
                signal = coro.throw(exc)
            except StopIteration as done:
                result: _T = done.value
                return result
        else:
            try:
                signal = coro.send(sent)
            except StopIteration as done:
                result = done.value
                return result


_NO_BODY: Message = types.MappingProxyType(
    {"type": "http.request", "body": b"", "more_body": False}
)  # type: ignore[assignment]


def _without_body(scope: Scope) -> bool:
    """Whether an HTTP/1.x request has no body, as its head says: neither a
    ``content-length`` (but 0) nor a ``transfer-encoding`` (RFC 9112, 6.3). Its body's
    message need not be awaited (HTTP/2 says it in the stream, not the head)."""
    if scope.get("http_version") not in ("1.1", "1.0"):
        return False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            if value.strip() != b"0":
                return False
        elif name == b"transfer-encoding":
            return False
    return True


def _incoming_request(scope: Scope, body: IncomingBody) -> IncomingRequest:
    """The guest's view of an ASGI request: its fields are made from the ASGI headers
    (names already lower case, checked by the server) when the guest first asks."""
    raw_headers = scope.get("headers", [])
    authority = None
    for name, value in raw_headers:
        if name == b"host":
            authority = value.decode("latin-1")
            break
    authority, target = _authority_and_target(scope, authority)

    def fields() -> list[tuple[str, bytes]]:
        entries = [(n.decode("latin-1"), bytes(v)) for n, v in raw_headers]
        return [(n, v) for n, v in entries if n.lower() not in FORBIDDEN]

    return IncomingRequest(
        scope["method"], scope.get("scheme", "http"), target, authority, fields, body
    )


def app_from_environment() -> ComponentApp:
    """The app an ASGI server's command line can name, to run several worker processes.

    ``hypercorn --workers 4 'trio_isyswasfa.http:app_from_environment()'`` serves the
    component at ``$TRIO_ISYSWASFA_COMPONENT`` in each worker (the compile cache makes
    the second load fast). ``$TRIO_ISYSWASFA_ALLOW_OUTGOING`` (comma-separated
    ``HOST:PORT`` patterns) lets guests send requests there; ``$TRIO_ISYSWASFA_INSTANCES``
    is ``shared``, ``pooled`` or ``per-request`` (default: ``pooled`` for a
    ``wasi:http/proxy`` component, ``shared`` for an isyswasfa one).

    Raises:
      HostProtocolError: ``$TRIO_ISYSWASFA_COMPONENT`` is not set.
    """
    path = os.environ.get("TRIO_ISYSWASFA_COMPONENT")
    if not path:
        raise HostProtocolError("set TRIO_ISYSWASFA_COMPONENT to the component to serve")
    allow = [p.strip() for p in os.environ.get("TRIO_ISYSWASFA_ALLOW_OUTGOING", "").split(",")]
    instances = os.environ.get("TRIO_ISYSWASFA_INSTANCES") or None
    return ComponentApp(
        load_component(path),
        http_client=HttpClient(allow=[p for p in allow if p]),
        instances=instances,  # type: ignore[arg-type]
    )


async def _until_shutdown(receive: Receive) -> None:
    while (await receive())["type"] != "lifespan.shutdown":
        pass


def _host_bug(exc: BaseException) -> BaseException | None:
    """The exception of the host's own (not one of ours: a ``KeyError``, say) behind a
    component's failure, if a host function raised one."""
    seen: set[int] = set()
    cause = exc.__cause__
    while cause is not None and id(cause) not in seen:
        if not isinstance(cause, IsyswasfaError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__
    return None


def _log_failure(exc: IsyswasfaError) -> None:
    """Log a component's failure; with the traceback when a host function's bug caused
    it (the message alone, such as ``KeyError(7137)``, does not say where)."""
    bug = _host_bug(exc)
    log.error("component failed: %s", exc, exc_info=bug)


async def _failed(send: Send, state: _OneState | _ProxyState, exc: IsyswasfaError) -> None:
    """A request's component failed: log it, and answer 500 unless a response began."""
    _log_failure(exc)
    state.outcome = "failed"
    if not state.started:
        # (the server pushes a disconnect as it closes a `connection: close` one
        # after this: no news, or it cancels the close)
        state.sent = True
        await _send_error(send, 500, "the component failed")


async def _handle(instance: Instance, interface: str, request: Request) -> Response | ErrorCode:
    http = instance._http
    outcome = await instance.call(interface, "handle", http.give(request))
    if isinstance(outcome, Err):
        return ErrorCode(*variant_case(outcome.value))
    return http.take(instance._handle_rep(outcome.value), Response)


def _request_from_scope(scope: Scope, body: Body) -> Request:
    headers = Fields()
    entries = headers._entries
    authority = None
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()  # (ASGI's are lower case already)
        if name in FORBIDDEN:
            continue
        if name == "host":
            authority = raw_value.decode("latin-1")
        entries.append((name, bytes(raw_value)))
    authority, target = _authority_and_target(scope, authority)
    return Request(
        headers,
        body,
        method=scope["method"],
        scheme=scope.get("scheme", "http"),
        path_with_query=target,
        authority=authority,
    )


def _asgi_headers(fields: Fields) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value) for name, value in fields._entries]


async def _cut_off_on_failure(instance: Instance, state: _OneState, scope: _Cancellable) -> None:
    """Once ``instance`` fails, cancel ``scope`` (the request's), saying why in ``state``."""
    await instance._sched.wait_failed()
    if state.outcome == "completed":
        return  # the response went out whole: this is the instance of its own closing
    try:
        instance._sched.check_alive()
    except IsyswasfaError as exc:
        state.cut_off = exc
    scope.cancel()


async def _send_response(scope: Scope, send: Send, response: Response, state: _OneState) -> None:
    """Send the head, then the body as it comes (the last chunk ends the response when
    no trailers follow: a small body goes out in one message), then the trailers.

    A body unlike its ``content-length`` is the guest's failure (raised), as on the
    proxy path: one written past it goes out cut at that length, one that ends short
    is cut off (no final message)."""
    trailers_ok = "http.response.trailers" in scope.get("extensions", {})
    has_trailers = trailers_ok and response.body.trailers is not None
    declared = content_length(response.headers)
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": _framing(_asgi_headers(response.headers), declared),
            "trailers": has_trailers,
        }
    )
    stream = response.body.stream
    sent = 0
    chunk = await read_chunk(stream)
    while chunk is not None:
        if declared is not None:
            sent += len(chunk)
            if sent > declared:
                await _send_cut_at_length(send, chunk[: len(chunk) - (sent - declared)], state)
                response.body.close()
                raise GuestProtocolError(
                    f"response body cut at its length: more than the {declared} bytes declared"
                )
        try:  # what follows, if it is there already: none at the end
            following: bytes | None = stream.read(CHUNK)
        except StreamClosed:
            following = None
        if following is None and not has_trailers:
            short = _short_of(declared, sent, scope, response)
            if short is not None:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                raise short
            state.sent = True
            await send({"type": "http.response.body", "body": chunk, "more_body": False})
            await response.body.finish()
            return
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        chunk = following or await read_chunk(stream)
    short = _short_of(declared, sent, scope, response)
    if short is not None:
        raise short
    if not has_trailers:
        state.sent = True
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    trailers = await response.body.finish()
    if has_trailers:
        state.sent = True
        await send(
            {
                "type": "http.response.trailers",
                "headers": [] if trailers is None else _asgi_headers(trailers),
                "more_trailers": False,
            }
        )


def _short_of(
    declared: int | None, sent: int, scope: Scope, response: Response
) -> GuestProtocolError | None:
    """The guest's failure if a draft response body that ended (``sent`` bytes) is
    short of its ``content-length`` (a bodiless one, to HEAD or a 304, may be empty)."""
    if declared is None or sent >= declared:
        return None
    if not sent and (scope["method"] == "HEAD" or response.status == 304):
        return None
    return GuestProtocolError(f"response body cut off: body of {sent} bytes, declared {declared}")


async def _send_cut_at_length(send: Send, last: bytes, state: _OneState) -> None:
    """End a response whose body went past its ``content-length`` with its ``last``
    declared bytes (as the proxy path and wasmtime do; trailers are not sent)."""
    state.sent = True
    await send({"type": "http.response.body", "body": last, "more_body": False})


async def _until_committed(
    instance: Instance, answer: OutgoingResponse | ErrorCode | None, outparam: ResponseOutparam
) -> None:
    """Wait until the guest stands by the answer it set: ``handle`` returned, the guest
    waits in a host call, or it wrote to (or ended) the body. A guest that sets its
    answer and then traps before any of these (``set`` twice, say) gets a 500, not the
    head of a response it never delivered, however the epoch ticks fall."""
    body = answer.body if isinstance(answer, OutgoingResponse) else None
    engine = instance._engine
    while not (
        outparam.returned
        or engine.blocked
        or (body is not None and (body.pipe.buffer or body.state != "open"))
    ):
        await anyio.lowlevel.checkpoint()  # the guest computes: it yields every tick


class _Slots:
    """The request slots of a :class:`ComponentApp` (``max_instances * per_instance``):
    a count of free ones and a line of requests waiting, each handed a slot in turn
    as one is released (a slot handed over is never free in between, so none jumps
    the line). Taking a free slot is one comparison and a decrement, where a
    ``CapacityLimiter`` looked up the current task and kept a set of borrowers (~100
    bytecodes a request, each way)."""

    __slots__ = ("_line", "available_tokens")

    def __init__(self, total: int) -> None:
        self.available_tokens = total  # free slots (none while requests wait)
        self._line: collections.deque[anyio.Event] = collections.deque()

    async def wait_handed(self) -> None:
        """Wait in line until a released slot is handed over (call only with none free).
        Cancelled meanwhile, the request leaves the line, or passes the slot on if it
        was handed one as it was cancelled."""
        handed = anyio.Event()
        self._line.append(handed)
        waited = False
        try:
            await handed.wait()
            waited = True
        finally:
            if not waited:
                if handed.is_set():
                    self.release()
                else:
                    self._line.remove(handed)

    def release(self) -> None:
        """Give a slot back: to the first request in line, if one waits."""
        if self._line:
            self._line.popleft().set()
        else:
            self.available_tokens += 1


def _authority_and_target(scope: Scope, authority: str | None) -> tuple[str | None, str]:
    """A request's authority (``authority``, from its ``host`` header if it had one,
    else the server's address) and its target (path and query) from its ASGI scope."""
    if authority is None and scope.get("server"):
        host, port = scope["server"][:2]
        authority = f"{host}:{port}" if port else str(host)
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    if not path.startswith(b"/"):
        # absolute-form (`GET http://host/x`): its authority is the request's, whatever
        # `host` says (RFC 9112, 3.2.2); its path is the target the guest routes on
        scheme, sep, rest = path.partition(b"://")
        if sep and scheme.lower() in (b"http", b"https"):
            url_authority, slash, path = rest.partition(b"/")
            path = slash + path or b"/"
            authority = url_authority.decode("latin-1") or authority
    return authority, path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")


def _take_request_body(
    tg: _Tasks,
    state: _OneState | _ProxyState,
    receive: Receive,
    message: Message,
    pipe: Pipe | None,
    trailers_tx: TrailersSender | None,
) -> Callable[[], None]:
    """Put the request body of the first ``http.request`` message into ``pipe`` (or, if
    more follows or it does not fit, start a task in ``tg`` pumping the rest, which
    also listens to the client); return ``listen``, which starts listening to the client
    (once) when the request is about to wait. A client that leaves before the
    response is sent cancels ``tg``. Without ``pipe`` and ``trailers_tx``, the request
    has no body (``message`` is ``_NO_BODY``): there is nothing to feed."""

    def client_left() -> None:
        if not state.sent:
            log.info("client went away: cancelling the guest's request")
            tg.cancel_scope.cancel()

    def listen() -> None:
        # the client is listened to from now on (the pump goes on to listen)
        if not state.listening:
            state.listening = True
            tg.start_soon(_until_disconnect, receive, client_left)

    if pipe is None or trailers_tx is None:
        return listen
    data = message.get("body", b"")
    if message.get("more_body", False) or len(data) > pipe.capacity:
        state.listening = True
        tg.start_soon(_pump_request_body, receive, pipe, trailers_tx, client_left, message)
    else:  # whole: into the pipe at once
        writer = PipeWriter(pipe)
        if data:
            writer.write(data)
        writer.close()
        trailers_tx.close()
    return listen


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


class _Tasks(Protocol):
    """What a request's tasks are started in: an anyio task group, or
    :class:`_RequestTasks`, cancelled (the request with them) as a task group is."""

    def start_soon(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> object: ...

    @property
    def cancel_scope(self) -> _Cancellable: ...


class _LazyScope:
    """A request's cancel scope, made when first asked for (one cancelled before it is
    entered is entered cancelled) and entered by hand (:meth:`enter_scope`) only when
    the request is about to wait, then left (:meth:`leave_scope`) where a ``with``
    block around the whole request would end: trio's scope costs ~45k instructions,
    and until the request waits nothing can cancel it. Trio's own scope on trio:
    anyio's made two trio scopes (~300 bytecodes more)."""

    __slots__ = ("_entered", "_on_trio", "_scope")

    def __init__(self, on_trio: bool) -> None:
        self._on_trio = on_trio
        self._scope: CancelScope | None = None
        self._entered = False

    def _made_scope(self) -> CancelScope:
        scope = self._scope
        if scope is None:
            scope = self._scope = cancel_scope(self._on_trio)
        return scope

    def enter_scope(self) -> None:
        """Enter the request's scope, in the request's task, where no scope entered
        since the request began is still open (before a call, or an instance's
        opening, enters one of its own), unless it is entered already."""
        if not self._entered:
            self._made_scope().__enter__()
            self._entered = True

    def leave_scope(self, exc: BaseException | None) -> bool:
        """Leave the request's scope, if entered, as a ``with`` block ends with ``exc``
        (None: none): whether it took ``exc`` (a cancellation of its own)."""
        if not self._entered:
            return False
        self._entered = False
        assert self._scope is not None
        if exc is None:
            return bool(self._scope.__exit__(None, None, None))
        return bool(self._scope.__exit__(type(exc), exc, exc.__traceback__))


class _RequestTasks(_LazyScope):
    """The tasks one request starts when it must wait (a client listener, a watch on
    its instance), run in ``group`` (the app's, or the request's own) as a task group's
    would be: :meth:`cancel` (also as ``cancel_scope.cancel()``) cancels the request
    (``scope``, which it runs in) and them; one that raises fails the request, where
    it is raised again (:attr:`failure`), and never the group. :meth:`close`, as the
    request ends, cancels them without waiting for them.

    The request's scope is made and entered by hand (:meth:`enter_scope`) only when
    the request is about to wait (for a slot, an instance, its guest; or as a server's
    send waits) or starts a task (which may cancel it), and left (:meth:`leave_scope`)
    where a ``with`` block around the whole request would end: trio's scope costs ~45k
    instructions, and until then nothing can cancel it (no task runs, nobody listens).
    It is entered in the request's task where no scope entered since the request began
    is still open: before a call, or an instance's opening, enters one of its own."""

    __slots__ = ("_group", "_helpers", "_over", "failure")

    def __init__(self, group: TaskGroup, on_trio: bool) -> None:
        super().__init__(on_trio)
        self._group = group
        self._helpers: list[CancelScope] = []
        self._over = False
        self.failure: Exception | None = None

    @property
    def scope(self) -> CancelScope:
        """The request's cancel scope (made when first asked for)."""
        return self._made_scope()

    @property
    def cancel_scope(self) -> _RequestTasks:
        return self

    def start_soon(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        # (from the request's task alone: a task that may cancel it needs its scope)
        self.enter_scope()
        helper = cancel_scope(self._on_trio)
        if self._over:
            helper.cancel()
        self._helpers.append(helper)
        self._group.start_soon(self._run, helper, func, *args)

    def cancel(self) -> None:
        self.scope.cancel()
        for helper in self._helpers:
            helper.cancel()

    def close(self) -> None:
        self._over = True
        for helper in self._helpers:
            helper.cancel()

    async def _run(
        self, helper: CancelScope, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any
    ) -> None:
        with helper:
            try:
                await func(*args)
            except Exception as exc:  # the request's failure, never the group's
                if self._over:  # the request is over: nothing to fail but the log
                    log.error("a request's task failed after it ended", exc_info=exc)
                elif self.failure is None:
                    self.failure = exc
                self.cancel()


class _OneState:
    """How far one request to an isyswasfa component got."""

    __slots__ = ("cut_off", "listening", "outcome", "sent", "started", "waited", "watch")

    def __init__(self) -> None:
        self.outcome = "cancelled"
        self.started = False  # a response head went out
        self.sent = False  # all of it did: a disconnect is no news
        self.listening = False  # a task listens to the client
        self.cut_off: IsyswasfaError | None = None  # the failure that cut the response off
        self.waited = False  # the request has waited (past its free checkpoints)
        # starts watching the instance while the response goes out, should it wait
        self.watch: Callable[[], None] | None = None


class _ProxyState:
    """How far one request to a proxy component got."""

    __slots__ = ("body", "failure", "listening", "outcome", "sent", "started")

    def __init__(self) -> None:
        self.outcome = "cancelled"
        self.started = False  # a response head went out
        self.sent = False  # all of it did
        self.listening = False  # a task listens to the client
        self.failure: IsyswasfaError | None = None  # the handle call's
        self.body: OutgoingBody | None = None  # the response's, once it goes out


def _comes_whole(message: Message) -> bool:
    """Whether a request's first ``http.request`` message holds all of its body, and
    it fits the pipe the guest reads (no task pumps it in)."""
    return message is _NO_BODY or (
        not message.get("more_body", False) and len(message.get("body", b"")) <= CHUNK
    )


class _RequestHelpers(_LazyScope):
    """The tasks one proxy request needs only if its ``handle`` call suspends (one
    listening to the client, one sending the response as the guest writes it),
    started in the app's task group rather than a task group of the request's own,
    but bound to the request as if they were: :attr:`cancel_scope` is the request's
    (a helper that fails cancels it), and :meth:`aclose` cancels those still running,
    waits for them, and raises what they raised, grouped as a nursery raises it.

    The request's scope is made and entered by hand (:meth:`enter_scope`) only when
    its call is about to wait, and left (:meth:`leave_scope`) where a ``with`` block
    around the whole request would end: trio's scope costs ~45k instructions, a
    tenth of what the host spends on a hello request that does not wait, and until
    the call waits nothing can cancel it (no helper runs, nobody listens)."""

    __slots__ = ("_done", "_failures", "_group", "_running", "_scopes", "started")

    def __init__(self, group: TaskGroup, on_trio: bool) -> None:
        super().__init__(on_trio)
        self._group = group
        self._scopes: list[CancelScope] = []
        self._running = 0
        self._failures: list[Exception] = []
        self._done: anyio.Event | None = None
        self.started = False
        """Whether a helper was started (else :meth:`aclose` has nothing to do)."""

    @property
    def cancel_scope(self) -> CancelScope:
        """The request's cancel scope (made when first asked for)."""
        return self._made_scope()

    def start_soon(
        self, func: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> None:
        """Start ``func(*args)`` as a helper of this request (``name``: unused)."""
        scope = cancel_scope(self._on_trio)
        self.started = True
        self._scopes.append(scope)
        self._running += 1
        self._group.start_soon(self._run, scope, func, args)

    async def _run(
        self, scope: CancelScope, func: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        try:
            with scope:
                await func(*args)
        except Exception as exc:  # raised by aclose, in the request's task
            self._failures.append(exc)
            self.cancel_scope.cancel()
        finally:
            self._running -= 1
            if not self._running and self._done is not None:
                self._done.set()

    async def aclose(self) -> None:
        """Cancel the helpers still running and wait for them (shielded: they end at
        once), then raise what they raised."""
        for scope in self._scopes:
            scope.cancel()
        if self._running:
            self._done = anyio.Event()
            with anyio.CancelScope(shield=True):
                await self._done.wait()
        if self._failures:
            raise BaseExceptionGroup("a proxy request's helper task failed", self._failures)


def _framing(headers: list[tuple[bytes, bytes]], declared: int | None) -> list[tuple[bytes, bytes]]:
    """A response's ``headers`` less a ``content-length`` that is not one number
    (``abc``, ``-1``; ``declared`` is None): left out, as wasmtime does (h11 would
    raise in the app), and the body goes out chunked. A length given more than once
    (``3`` twice, ``3, 5``) goes out once, as ``declared`` (its first value, which
    holds the body): differing ones would make h11 raise in the app."""
    lengths = [v for n, v in headers if n == b"content-length"]
    if not lengths or (len(lengths) == 1 and declared is not None and b"," not in lengths[0]):
        return headers
    if declared is None:
        return [(n, v) for n, v in headers if n != b"content-length"]
    at = next(i for i, (n, _) in enumerate(headers) if n == b"content-length")
    kept = [(n, v) for n, v in headers if n != b"content-length"]
    kept.insert(at, (b"content-length", str(declared).encode()))
    return kept


def _not_final(status: int) -> GuestProtocolError | None:
    """The guest's failure if ``status`` is interim (1xx): HTTP/1.1 cannot send one as
    the answer (h11 raises, and out of ``serve`` for a 101), so it gets a 500."""
    if status < 200:
        return GuestProtocolError(f"response status {status} is not final")
    return None


def _whole(answer: OutgoingResponse | ErrorCode) -> bool:
    """Whether a guest's answer is all written: a trap after that keeps it (as on
    wasmtime; the instance is retired all the same)."""
    return isinstance(answer, OutgoingResponse) and answer.body is not None and answer.body.complete


async def _send_proxy_response(
    scope: Scope, send: Send, response: OutgoingResponse, body: OutgoingBody, state: _ProxyState
) -> None:
    """Send the head, then the body as the guest writes it (the last chunk of a complete
    body ends the response: a small one goes out in one message); a body that ends
    incomplete (dropped, cut short, written past its length) is cut off: no final
    message."""
    has_trailers = "http.response.trailers" in scope.get("extensions", {}) and any(
        n == b"te" and v == b"trailers" for n, v in scope.get("headers", [])
    )
    headers = _framing(_asgi_headers(response.headers), body.content_length)
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": headers,
            "trailers": has_trailers,
        }
    )
    pipe = body.pipe
    if not (pipe.writer_open or has_trailers) and body.complete:
        # the guest finished it already (most answers, once ``handle`` returned): what
        # it wrote is all there, and goes out in one message
        whole = bytes(pipe.buffer)
        pipe.buffer.clear()
        pipe.writable.changed()  # (as a read: a guest's pollable on its stream is ready)
        state.sent = True
        await send({"type": "http.response.body", "body": whole, "more_body": False})
        return
    stream = body.reader()
    while (chunk := await read_chunk(stream)) is not None:
        if not (pipe.buffer or pipe.writer_open or has_trailers) and body.complete:
            state.sent = True
            await send({"type": "http.response.body", "body": chunk, "more_body": False})
            return
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    if not body.complete:
        log.warning("response body cut off: %s", body.problem)
        return
    trailers = await body.trailers.receive()
    if not has_trailers:
        state.sent = True
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    if has_trailers:
        state.sent = True
        await send(
            {
                "type": "http.response.trailers",
                "headers": [] if trailers is None else _asgi_headers(trailers),
                "more_trailers": False,
            }
        )


async def _send_error(
    send: Send, status: int, text: str, *, retry_after: int | None = None
) -> None:
    body = text.encode() + b"\n"
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
