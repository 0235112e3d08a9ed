"""How a request to an isyswasfa (``wasi:http@0.3.0-draft`` handler) component is run:
its cancel scope entered only once it waits, and a client that leaves then still
cancels the guest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from test_http_proxy_requests import Client

import trio_isyswasfa
from trio_isyswasfa import _engine
from trio_isyswasfa.http import ComponentApp
from trio_isyswasfa.testing import asgi_request, asgi_scope, build_python_guest, open_lifespan

pytestmark = [pytest.mark.guest, pytest.mark.slow]

GUEST = Path(__file__).resolve().parent / "guests" / "http"


@pytest.fixture(scope="session")
def http_guest(engine: str) -> trio_isyswasfa.Component:
    wasm = build_python_guest(GUEST / "wit", "http-guest", "app", [GUEST / "src"])
    return trio_isyswasfa.load_component(wasm, engine=engine)


@pytest.mark.parametrize("policy", ["pooled", "shared"])
async def test_only_a_request_that_waits_enters_a_cancel_scope_and_leaving_cancels_it(
    http_guest: trio_isyswasfa.Component, made_scopes: list[object], policy: str
) -> None:
    # the request's cancel scope is entered once it is about to wait (for the guest:
    # the engine's before_wait; for its response; for a slot or an instance): one
    # answered at once makes none, one that waits gets one, and a client that leaves
    # a waiting request cancels its guest through it
    app = ComponentApp(http_guest, instances=policy)  # type: ignore[arg-type]
    async with open_lifespan(app):
        with trio.fail_after(60):
            assert (await asgi_request(app, "/")).status == 200  # warm
            quiet = 0  # requests no epoch tick fell inside (a tick may make one wait)
            for _ in range(50):
                made_scopes.clear()
                before = _engine.ticks
                assert (await asgi_request(app, "/")).status == 200
                if _engine.ticks == before:
                    assert made_scopes == []
                    quiet += 1
                    if quiet == 3:
                        break
            assert quiet == 3

            # the guest's handle waits in a host call (for the store too, when shared):
            # the scope is entered before the engine's own, and left after it
            made_scopes.clear()
            answers: list[tuple[int, bytes]] = []

            async def sleep() -> None:
                answer = await asgi_request(app, "/sleep", query="ms=30")
                answers.append((answer.status, answer.body))

            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(sleep)
            assert made_scopes
            assert answers == [(200, b"slept")] * 2

            # a response the guest writes as it goes: a client that leaves cancels it
            made_scopes.clear()
            client = Client()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(app, asgi_scope("/forever"), client.receive, client.send)
                await client.body.wait()  # the guest wrote its first line, and sleeps
                client.leave.set()
            assert made_scopes  # the request's scope (and its tasks')
            assert app.statistics().cancelled == 1
            assert client.messages[-1].get("more_body", False)  # cut off, not finished
            # the instance serves on
            assert (await asgi_request(app, "/")).status == 200


async def test_a_trap_in_a_shared_instance_cuts_off_a_response_going_out(
    http_guest: trio_isyswasfa.Component,
) -> None:
    # one request's response is being sent (its guest writes, then sleeps) when
    # another request to the same instance traps: the response is cut off (no
    # final message), its request counted as failed, rather than left hanging
    app = ComponentApp(http_guest, instances="shared")
    async with open_lifespan(app):
        with trio.fail_after(60):
            slow = Client()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(app, asgi_scope("/forever"), slow.receive, slow.send)
                await slow.body.wait()  # the first line is out, the guest sleeps
                trapped = await asgi_request(app, "/trap")
                assert trapped.status == 500
            assert slow.messages[0]["status"] == 200
            assert [m.get("body") for m in slow.messages[1:]] == [b"first line\n"]
            assert slow.messages[-1].get("more_body", False)  # cut off, not finished
            stats = app.statistics()
            assert (stats.failed, stats.cancelled, stats.completed) == (2, 0, 0)


async def test_a_trap_in_a_shared_instance_cuts_off_a_response_its_client_is_slow_to_take(
    http_guest: trio_isyswasfa.Component,
) -> None:
    # the guest answers at once (an empty body); its client is slow to take the head
    # when another request to the same instance traps: the response is cut off there,
    # and the request ends, rather than wait for the client to take a response from a
    # dead instance
    app = ComponentApp(http_guest, instances="shared")
    async with open_lifespan(app):
        with trio.fail_after(60):
            assert (await asgi_request(app, "/")).status == 200  # the instance is open
            taking, taken = trio.Event(), trio.Event()  # (taken: never)
            messages: list[dict[str, Any]] = []

            async def slow_send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    taking.set()
                    await taken.wait()  # (the server's send waits on its socket)
                messages.append(message)

            slow = Client()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(app, asgi_scope("/"), slow.receive, slow_send)
                await taking.wait()
                trapped = await asgi_request(app, "/trap")
                assert trapped.status == 500
                # the client takes nothing more: the request ends on its own
            assert messages == []
            stats = app.statistics()
            assert (stats.failed, stats.cancelled, stats.completed) == (2, 0, 1)


@pytest.mark.parametrize("spares", [0, 1])
async def test_requests_with_instances_of_their_own_that_wait_are_served_and_let_go(
    http_guest: trio_isyswasfa.Component, spares: int
) -> None:
    # per-request: an instance opened for the request (no spare ready, or none kept)
    # opens in the request's task, in a task group of its own there, so the request's
    # scope is entered before it opens, not inside it once the request waits
    app = ComponentApp(http_guest, instances="per-request", spare_instances=spares)
    async with open_lifespan(app):
        with trio.fail_after(60):
            answers: list[tuple[int, bytes]] = []

            async def sleep() -> None:
                answer = await asgi_request(app, "/sleep", query="ms=20")
                answers.append((answer.status, answer.body))

            async with trio.open_nursery() as nursery:
                for _ in range(3):  # (more than the spares)
                    nursery.start_soon(sleep)
            assert answers == [(200, b"slept")] * 3
            client = Client()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(app, asgi_scope("/forever"), client.receive, client.send)
                await client.body.wait()
                client.leave.set()
            assert app.statistics().cancelled == 1
