"""How a request to a ``wasi:http/proxy`` component is run: with no task of its own when
``handle`` answers without waiting, with a listener and a sender once it waits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_isyswasfa
from trio_isyswasfa import _engine
from trio_isyswasfa.http import ComponentApp
from trio_isyswasfa.testing import asgi_request, asgi_scope, build_python_component, open_lifespan

pytestmark = [pytest.mark.guest, pytest.mark.slow]

GUEST = Path(__file__).resolve().parent / "guests" / "proxy-python"


@pytest.fixture(scope="session")
def proxy_component(engine: str) -> trio_isyswasfa.Component:
    wasm = build_python_component(GUEST / "wit", "proxy-guest", "app", [GUEST / "src"])
    return trio_isyswasfa.load_component(wasm, engine=engine)


def scope_of(path: str, query: str = "") -> dict[str, Any]:
    return asgi_scope(path, query=query)


class Client:
    """One ASGI client: its request has an empty body; it leaves when told to."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.leave = trio.Event()
        self.body = trio.Event()  # a first piece of the response body came
        self._asked = False

    async def receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if message["type"] == "http.response.body":
            self.body.set()


async def test_a_client_that_leaves_while_its_request_waits_for_a_slot_is_let_go(
    nursery: trio.Nursery, proxy_component: trio_isyswasfa.Component
) -> None:
    # one instance: the second request waits for the first's slot; its client leaves
    app = ComponentApp(proxy_component, max_instances=1)  # no lifespan: fresh instances
    first, second = Client(), Client()
    first_done = trio.Event()

    async def serve_first() -> None:
        await app(scope_of("/sleep", "ms=2000"), first.receive, first.send)
        first_done.set()

    nursery.start_soon(serve_first)
    await trio.testing.wait_all_tasks_blocked()  # the first guest sleeps
    assert app.statistics().in_flight == 1
    with trio.fail_after(30):
        async with trio.open_nursery() as waiting:
            waiting.start_soon(app, scope_of("/hello"), second.receive, second.send)
            await trio.testing.wait_all_tasks_blocked()
            assert app.statistics().waiting == 1
            second.leave.set()
    # let go before the first request is over, without an answer
    assert not first_done.is_set()
    assert second.messages == []
    assert app.statistics().cancelled == 1
    await first_done.wait()
    assert first.messages[-1].get("more_body") is False


async def test_only_a_request_that_waits_enters_a_cancel_scope_and_leaving_cancels_it(
    proxy_component: trio_isyswasfa.Component, made_scopes: list[object]
) -> None:
    # a request's cancel scope is entered when its call is about to wait (the
    # engine's before_wait): a hello that answers at once makes none, a guest that
    # waits gets one, and a client that leaves then cancels the guest through it
    app = ComponentApp(proxy_component)
    async with open_lifespan(app):
        with trio.fail_after(30):
            assert (await asgi_request(app, "/hello")).body == b"hello, world!\n"  # warm
            quiet = 0  # requests no epoch tick fell inside (a tick may make one wait)
            for _ in range(50):
                made_scopes.clear()
                before = _engine.ticks
                assert (await asgi_request(app, "/hello")).body == b"hello, world!\n"
                if _engine.ticks == before:
                    assert made_scopes == []
                    quiet += 1
                    if quiet == 3:
                        break
            assert quiet == 3
            made_scopes.clear()
            client = Client()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(app, scope_of("/forever"), client.receive, client.send)
                await client.body.wait()  # the guest writes, waiting between lines
                client.leave.set()
            assert made_scopes  # the request's scope (and its helpers')
            assert app.statistics().cancelled == 1


async def test_a_request_with_an_instance_of_its_own_that_waits_is_served_and_let_go(
    proxy_component: trio_isyswasfa.Component,
) -> None:
    # per-request with no spares: the instance opens in the request's task, in a task
    # group of its own there, so the request's scope is entered before it opens (not
    # inside it once the call waits: leaving it then broke trio's scope stack)
    app = ComponentApp(proxy_component, instances="per-request", spare_instances=0)
    async with open_lifespan(app):
        with trio.fail_after(30):
            answer = await asgi_request(app, "/sleep", query="ms=20")
            assert (answer.status, answer.body) == (200, b"slept\n")
            client = Client()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(app, scope_of("/forever"), client.receive, client.send)
                await client.body.wait()  # the guest writes, waiting between writes
                client.leave.set()
            assert app.statistics().cancelled == 1
            assert (await asgi_request(app, "/hello")).body == b"hello, world!\n"
