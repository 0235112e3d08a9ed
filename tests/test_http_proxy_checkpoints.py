"""A ``wasi:http/proxy@0.2`` request over real HTTP (hypercorn, a keep-alive client)
starts no task of ours when its ``handle`` answers without waiting: hypercorn's sends
take two trio checkpoints each even when the socket takes the bytes at once, and an
isyswasfa request once counted them as waits (docs/engine.md, "A proxy request over
HTTP"); a proxy request sends its response after ``handle`` has returned, outside the
``_eagerly`` that decides whether its helpers start, so no checkpoint of a send can
start them."""

from __future__ import annotations

import h11
import pytest
import trio
from conftest import start_server
from test_http_proxy import GUEST
from test_http_serve import RawClient

import trio_isyswasfa
from trio_isyswasfa import _engine
from trio_isyswasfa.http import ComponentApp
from trio_isyswasfa.testing import build_python_component

pytestmark = [pytest.mark.guest, pytest.mark.slow]


@pytest.fixture(scope="session")
def hello_proxy(engine: str) -> trio_isyswasfa.Component:
    wasm = build_python_component(GUEST / "wit", "proxy-guest", "app", [GUEST / "src"])
    return trio_isyswasfa.load_component(wasm, engine=engine)  # once per engine


class _Spawns(trio.abc.Instrument):
    """The names of the tasks of ours spawned while it is installed (hypercorn's own,
    a task per request and its keep-alive timer, are not ours)."""

    def __init__(self) -> None:
        self.ours: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        # serve's PatientTCPServer only subclasses hypercorn's keep-alive timer: the
        # task per connection is still hypercorn's
        if task.name.startswith("trio_isyswasfa.") and not task.name.endswith("._idle_timeout"):
            self.ours.append(task.name)


@pytest.mark.parametrize("instances", ["pooled", "shared"])
async def test_a_hello_over_http_starts_no_task_of_ours(
    nursery: trio.Nursery, hello_proxy: trio_isyswasfa.Component, instances: str
) -> None:
    app = ComponentApp(hello_proxy, instances=instances)
    url = await start_server(nursery, app)
    raw = await RawClient.connect(url)
    spawns = _Spawns()
    quiet = 0  # requests no epoch tick fell inside (two make a guest one that waits)
    async with raw.stream:

        async def get() -> bytes:
            await raw.send(h11.Request(method="GET", target="/hello", headers=[("host", "x")]))
            await raw.send(h11.EndOfMessage())
            response = await raw.next_event()
            assert isinstance(response, h11.Response)
            assert response.status_code == 200
            body = b""
            while not isinstance(event := await raw.next_event(), h11.EndOfMessage):
                assert isinstance(event, h11.Data)
                body += event.data
            raw.conn.start_next_cycle()
            return body

        with trio.fail_after(30):
            assert await get() == b"hello, world!\n"  # the instance is open and warm
            trio.lowlevel.add_instrument(spawns)
            try:
                while quiet < 5:
                    spawns.ours.clear()
                    before = _engine.ticks
                    assert await get() == b"hello, world!\n"
                    if _engine.ticks == before:
                        assert spawns.ours == []
                        quiet += 1
            finally:
                trio.lowlevel.remove_instrument(spawns)
    assert app.statistics().instances_opened == 1
