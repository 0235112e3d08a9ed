"""Serving components over HTTP: real clients (httpx, curl) on loopback, hypercorn inside."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from functools import partial
from pathlib import Path

import anyio
import h11
import httpx
import hypercorn.config
import pytest
import trio
import trio.testing
from conftest import HTTP_TIMEOUT, get_at_once, settled, start_server

import trio_isyswasfa
import trio_isyswasfa.http
from trio_isyswasfa.http import ComponentApp
from trio_isyswasfa.http._pool import InstancePool
from trio_isyswasfa.testing import asgi_request, asgi_scope, build_python_guest, open_lifespan

pytestmark = [pytest.mark.guest, pytest.mark.slow]

GUESTS = Path(__file__).resolve().parent / "guests"


@pytest.fixture(scope="session")
def http_guest_component(engine: str) -> trio_isyswasfa.Component:
    here = GUESTS / "http"
    return trio_isyswasfa.load_component(
        build_python_guest(here / "wit", "http-guest", "app", [here / "src"])
    )


@pytest.fixture(scope="session")
def rust_http_component(
    isyswasfa_build_rust: Callable[..., trio_isyswasfa.Component],
) -> trio_isyswasfa.Component:
    here = GUESTS / "rust-http"
    return isyswasfa_build_rust(here / "wit", "rust-http", here)


@pytest.fixture
async def service(
    nursery: trio.Nursery, service_component: trio_isyswasfa.Component
) -> tuple[str, ComponentApp]:
    app = ComponentApp(service_component)
    return await start_server(nursery, app), app


@pytest.fixture
async def misbehaving(
    nursery: trio.Nursery, http_guest_component: trio_isyswasfa.Component
) -> tuple[str, ComponentApp]:
    app = ComponentApp(http_guest_component, cancel_grace=2.0)
    return await start_server(nursery, app), app


@pytest.fixture
def jumping_clock() -> trio.testing.MockClock:
    """trio's clock for the test: real speed, and jumps when the test says."""
    return trio.testing.MockClock(rate=1)


def _sleeping(app: ComponentApp) -> int:
    """How many of ``app``'s pooled instances have a guest blocked in a host call."""
    pool = app._pool
    if pool is None:  # the lifespan has not started yet
        return 0
    assert isinstance(pool, InstancePool)
    return sum(slot.instance._engine.blocked for slot in pool._open)


async def eventually(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds (checked every 10 ms for up to 5 s)."""
    for _ in range(500):
        if condition():
            return
        await trio.sleep(0.01)
    raise AssertionError("the condition never held")


class RawClient:
    """HTTP/1.1 over a trio socket with h11, sending and receiving at the same time (httpx
    sends the whole body before it reads, which an echo of a large body would deadlock)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, url: str) -> RawClient:
        host, port = url.removeprefix("http://").split(":")
        return cls(await trio.open_tcp_stream(host, int(port)))

    async def send(self, *events: h11.Event) -> None:
        for event in events:
            data = self.conn.send(event)
            if data:
                await self.stream.send_all(data)

    async def next_event(self) -> h11.Event:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.stream.receive_some(65536))

    async def response(self) -> tuple[h11.Response, bytes]:
        head = await self.next_event()
        assert isinstance(head, h11.Response)
        body = bytearray()
        while not isinstance(event := await self.next_event(), h11.EndOfMessage):
            if isinstance(event, h11.Data):
                body += event.data
        return head, bytes(body)

    async def exchange(
        self,
        request: h11.Request,
        body: bytes,
        chunk: int,
        halfway: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[h11.Response, bytes]:
        """Send ``request`` with ``body`` in pieces of ``chunk`` bytes while reading the
        response; ``halfway()`` is awaited once half the body is sent. The response's
        head and body."""
        result: list[tuple[h11.Response, bytes]] = []

        async def receive() -> None:
            result.append(await self.response())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await self.send(request)
            for i in range(0, len(body), chunk):
                await self.send(h11.Data(data=body[i : i + chunk]))
                if halfway is not None and i == len(body) // 2:
                    await halfway()
            await self.send(h11.EndOfMessage())
        return result[0]


def pattern(n: int) -> bytes:
    """Byte i (from 1) is 251·i mod 256, as the original echo tests sent."""
    return bytes((251 * i) % 256 for i in range(1, n + 1))


class TestService:
    async def test_echoes_headers_and_body(self, service: tuple[str, ComponentApp]) -> None:
        url, app = service
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            response = await client.post(
                f"{url}/service?x=1", headers={"foo": "bar"}, content=b"And the mome raths outgrabe"
            )
        assert response.status_code == 200
        assert response.headers["foo"] == "bar"
        assert response.headers["x-method"] == "POST"
        assert response.headers["x-path"] == "/service?x=1"
        assert response.content == b"And the mome raths outgrabe"
        stats = await settled(app)
        assert (stats.completed, stats.failed) == (1, 0)

    async def test_streams_a_large_body_both_ways(self, service: tuple[str, ComponentApp]) -> None:
        url, _ = service
        data = pattern(1 << 20)
        client = await RawClient.connect(url)
        first_byte_back_before_sending_all = False

        async def halfway() -> None:
            nonlocal first_byte_back_before_sending_all
            await trio.testing.wait_all_tasks_blocked()
            first_byte_back_before_sending_all = client.conn.their_state is h11.SEND_BODY

        headers = [
            ("host", "localhost"),
            ("content-type", "application/octet-stream"),
            ("transfer-encoding", "chunked"),
        ]
        async with client.stream:
            request = h11.Request(method="POST", target="/echo", headers=headers)
            head, body = await client.exchange(request, data, 16 * 1024, halfway)
        assert head.status_code == 200
        assert (b"content-type", b"application/octet-stream") in head.headers
        assert body == data
        # the response was on its way while half the request was still unsent
        assert first_byte_back_before_sending_all

    async def test_concurrent_requests(self, service: tuple[str, ComponentApp]) -> None:
        url, app = service
        results: dict[int, bytes] = {}

        async def one(client: httpx.AsyncClient, i: int) -> None:
            response = await client.post(f"{url}/{i}", content=f"request {i}".encode())
            results[i] = response.content

        async with (
            httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client,
            trio.open_nursery() as nursery,
        ):
            for i in range(20):
                nursery.start_soon(one, client, i)
        assert results == {i: f"request {i}".encode() for i in range(20)}
        assert (await settled(app)).completed == 20

    @pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
    async def test_curl(self, service: tuple[str, ComponentApp]) -> None:
        url, _ = service
        proc = await trio.run_process(
            ["curl", "-s", "-i", "-H", "foo: bar", "--data-binary", "hello curl", f"{url}/c"],
            capture_stdout=True,
        )
        head, _, body = proc.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"\r\nfoo: bar" in head
        assert body == b"hello curl"


class TestProtocol:
    async def test_http2_with_prior_knowledge(self, service: tuple[str, ComponentApp]) -> None:
        url, _ = service
        async with httpx.AsyncClient(http1=False, http2=True, timeout=HTTP_TIMEOUT) as client:
            response = await client.post(f"{url}/h2", content=b"over HTTP/2", headers={"a": "b"})
        assert response.http_version == "HTTP/2"
        assert response.content == b"over HTTP/2"
        assert response.headers["a"] == "b"

    async def raw_exchange(self, url: str, request: bytes) -> bytes:
        host, port = url.removeprefix("http://").split(":")
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            await stream.send_all(request)
            data = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some(65536):
                    data += chunk
                    if b"\r\n\r\n" in data:
                        break
        return data

    async def test_malformed_request_is_answered_by_the_server(
        self, service: tuple[str, ComponentApp]
    ) -> None:
        url, app = service
        reply = await self.raw_exchange(url, b"NOT AN HTTP REQUEST\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400")
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:  # and it keeps serving
            assert (await client.post(f"{url}/", content=b"fine")).content == b"fine"
        assert app.statistics().failed == 0  # the component never saw it

    async def test_a_request_the_held_loop_read_late_is_answered(
        self,
        nursery: trio.Nursery,
        service_component: trio_isyswasfa.Component,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # hypercorn closes a connection idle for keep_alive_timeout from the accept on; a
        # loop held past it (a guest's first call, an instance opening: seconds under
        # load) woke the timer with the read of a request that came in time, and the
        # connection was closed unanswered ("Server disconnected"), the request lost
        monkeypatch.setattr(hypercorn.config.Config, "keep_alive_timeout", 0.2)
        url = await start_server(nursery, ComponentApp(service_component))
        host, port = url.removeprefix("http://").split(":")
        for i in range(3):
            # a plain blocking socket: the request goes out with no checkpoint after it
            # (a trio stream's send lets the server read it at once)
            sock = socket.create_connection((host, int(port)))
            client = RawClient(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
            async with client.stream:
                await trio.testing.wait_all_tasks_blocked()  # accepted: its timer runs
                sock.sendall(f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n{i}".encode())
                # the loop is held past the timer, as a busy guest holds it (the
                # stimulus, not a wait for something)
                time.sleep(0.4)  # noqa: ASYNC251
                with trio.fail_after(10):
                    head, body = await client.response()
            assert (head.status_code, body) == (200, b"%d" % i)

    def test_a_request_the_held_loop_read_late_is_answered_on_asyncio(
        self, service_component: trio_isyswasfa.Component, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # hypercorn's asyncio worker has no such race, and this test keeps it so: asyncio
        # hands a turn's socket reads to their tasks before the timers that ran out, so a
        # request's head that came in time stops its connection's timer before the
        # timer's close runs (held loop or not); the body comes turns after the timer
        monkeypatch.setattr(hypercorn.config.Config, "keep_alive_timeout", 0.2)
        answers: list[tuple[int, bytes]] = []

        async def timer_runs() -> None:
            """Until the connection's keep-alive timer runs (not merely made: a task
            made runs its first step, where it starts the timer, at the next turn)."""
            while not any(  # noqa: ASYNC110 (hypercorn signals nothing: polled once a turn)
                task.get_coro().__qualname__.endswith("_idle_timeout")  # type: ignore[union-attr]
                for task in asyncio.all_tasks()
            ):
                await asyncio.sleep(0)
            for _ in range(3):
                await asyncio.sleep(0)

        async def main() -> None:
            stop = asyncio.Event()
            async with anyio.create_task_group() as tg:
                urls = await tg.start(
                    partial(
                        trio_isyswasfa.http.serve,
                        bind=["127.0.0.1:0"],
                        access_log=False,
                        shutdown_trigger=stop.wait,
                    ),
                    ComponentApp(service_component),
                )
                host, port = urls[0].removeprefix("http://").split(":")
                # a plain blocking socket: the request goes out with no checkpoint after it
                sock = socket.create_connection((host, int(port)))
                conn = h11.Connection(h11.CLIENT)
                with sock, anyio.fail_after(10):
                    # one connection: its first request waits on the timer counted from the
                    # accept, the next ones on the timer restarted after each response
                    for i in range(3):
                        await timer_runs()
                        sock.sendall(
                            conn.send(
                                h11.Request(
                                    method="POST",
                                    target="/",
                                    headers=[("host", "x"), ("content-length", "1")],
                                )
                            )
                        )
                        # the loop is held past the timer, as a busy guest holds it
                        time.sleep(0.4)  # noqa: ASYNC251
                        for _ in range(20):  # turns enough for the timer's close to run
                            await asyncio.sleep(0)
                        sock.sendall(conn.send(h11.Data(data=b"%d" % i)))
                        sock.sendall(conn.send(h11.EndOfMessage()))
                        head, body = None, b""
                        while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                            if event is h11.NEED_DATA:
                                sock.setblocking(False)
                                loop = asyncio.get_running_loop()
                                conn.receive_data(await loop.sock_recv(sock, 65536))
                                sock.setblocking(True)
                            elif isinstance(event, h11.Response):
                                head = event
                            elif isinstance(event, h11.Data):
                                body += event.data
                            elif isinstance(event, h11.ConnectionClosed):
                                break  # unanswered
                        answers.append((0 if head is None else head.status_code, body))
                        if head is None:
                            break
                        conn.start_next_cycle()
                stop.set()

        asyncio.run(main())
        assert answers == [(200, b"%d" % i) for i in range(3)]

    async def test_oversized_headers_are_refused(self, service: tuple[str, ComponentApp]) -> None:
        url, _ = service
        big = b"x-big: " + b"a" * 100_000 + b"\r\n"
        reply = await self.raw_exchange(url, b"GET / HTTP/1.1\r\nhost: x\r\n" + big + b"\r\n")
        assert reply.split(b" ")[1] in (b"400", b"431")
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            assert (await client.post(f"{url}/", content=b"still")).content == b"still"


async def post_numbers(url: str, n: int) -> None:
    """POST 0, 1, … n-1 one after another to the service, which echoes each body."""
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        for i in range(n):
            assert (await client.post(f"{url}/", content=str(i))).text == str(i)


class TestInstancePolicies:
    async def test_pooled_instances_are_reused(self, service: tuple[str, ComponentApp]) -> None:
        url, app = service  # shared, the default: one request after another needs one
        await post_numbers(url, 5)
        assert (await settled(app)).instances_opened == 1

    async def test_pooled_instances_serve_one_request_at_a_time(
        self, nursery: trio.Nursery, http_guest_component: trio_isyswasfa.Component
    ) -> None:
        app = ComponentApp(http_guest_component, instances="pooled")
        url = await start_server(nursery, app)
        await get_at_once(f"{url}/stream?n=5", 3)
        assert (await settled(app)).instances_opened == 3

    async def test_per_request_instances(
        self, nursery: trio.Nursery, service_component: trio_isyswasfa.Component
    ) -> None:
        app = ComponentApp(service_component, instances="per-request")
        url = await start_server(nursery, app)
        await post_numbers(url, 3)
        stats = await settled(app)
        # the spares opened ahead (two by default) are no request's yet
        assert stats.instances_opened - stats.spare_instances == 3
        assert stats.spare_instances <= 2

    async def test_requests_wait_for_one_of_max_instances(
        self, nursery: trio.Nursery, service_component: trio_isyswasfa.Component
    ) -> None:
        app = ComponentApp(service_component, instances="pooled", max_instances=1)
        url = await start_server(nursery, app)
        release = trio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            yield b"first "
            await release.wait()
            yield b"second"

        replies: dict[str, str] = {}

        async def post(name: str, content: bytes | AsyncIterator[bytes]) -> None:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
                replies[name] = (await client.post(f"{url}/", content=content)).text

        async with trio.open_nursery() as requests:
            requests.start_soon(post, "slow", slow_body())
            # the slow request holds the one slot once its instance is open (in_flight
            # alone also counts it while it still waits for the slot)
            await eventually(lambda: app.statistics().instances_opened == 1)
            requests.start_soon(post, "quick", b"quick")
            await eventually(lambda: app.statistics().waiting == 1)
            assert "quick" not in replies  # it waits for the one instance
            release.set()
        assert replies == {"slow": "first second", "quick": "quick"}
        stats = await settled(app)
        assert (stats.instances_opened, stats.waiting, stats.completed) == (1, 0, 2)

    async def test_a_request_beyond_max_waiting_is_answered_503_at_once(
        self, nursery: trio.Nursery, service_component: trio_isyswasfa.Component
    ) -> None:
        app = ComponentApp(service_component, instances="pooled", max_instances=1, max_waiting=1)
        url = await start_server(nursery, app)
        release = trio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            yield b"first "
            await release.wait()
            yield b"second"

        replies: dict[str, tuple[int, str]] = {}

        async def post(name: str, content: bytes | AsyncIterator[bytes]) -> None:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
                response = await client.post(f"{url}/", content=content)
                replies[name] = (response.status_code, response.text)
                if response.status_code == 503:
                    assert response.headers["retry-after"] == "1"

        async with trio.open_nursery() as requests:
            requests.start_soon(post, "slow", slow_body())
            # the slow request holds the one slot once its instance is open (in_flight
            # alone also counts it while it still waits for the slot)
            await eventually(lambda: app.statistics().instances_opened == 1)
            requests.start_soon(post, "waits", b"waits")
            await eventually(lambda: app.statistics().waiting == 1)
            # the one instance is busy and one request waits: the next is turned away
            await post("turned away", b"turned away")
            assert replies["turned away"] == (503, "the server is busy\n")
            release.set()
        assert replies["slow"] == (200, "first second")
        assert replies["waits"] == (200, "waits")
        stats = await settled(app)
        assert (stats.rejected, stats.completed, stats.instances_opened) == (1, 2, 1)

    @pytest.mark.parametrize("given", [777, None])
    async def test_the_listen_backlog_is_ours_not_hypercorns(
        self,
        nursery: trio.Nursery,
        service_component: trio_isyswasfa.Component,
        monkeypatch: pytest.MonkeyPatch,
        given: int | None,
    ) -> None:
        # hypercorn listens again on the sockets it is given, with its own backlog (100):
        # past it the kernel drops handshakes and resets clients that sent a request;
        # by default it is the most the system allows (1,024 lost ~20% of 4,000
        # connections at once where net.core.somaxconn is 4,096)
        backlogs: list[int] = []
        listen = socket.socket.listen

        def recording(sock: socket.socket, backlog: int) -> None:
            backlogs.append(backlog)
            listen(sock, backlog)

        monkeypatch.setattr(socket.socket, "listen", recording)
        app = ComponentApp(service_component)
        urls: list[str] = await nursery.start(
            lambda task_status: trio_isyswasfa.http.serve(
                app, bind=["127.0.0.1:0"], access_log=False, backlog=given, task_status=task_status
            )
        )
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            assert (await client.get(f"{urls[0]}/")).status_code == 200
        assert backlogs
        assert set(backlogs) == {given or _system_backlog()}

    async def test_a_backlog_below_one_is_refused(
        self, service_component: trio_isyswasfa.Component
    ) -> None:
        with pytest.raises(ValueError, match="backlog must be at least 1, not 0"):
            await trio_isyswasfa.http.serve(service_component, bind=["127.0.0.1:0"], backlog=0)

    def test_max_waiting_is_not_negative(self, service_component: trio_isyswasfa.Component) -> None:
        with pytest.raises(ValueError, match="max_waiting"):
            ComponentApp(service_component, max_waiting=-1)

    def test_unknown_policy(self, service_component: trio_isyswasfa.Component) -> None:
        with pytest.raises(ValueError, match="'pooled', 'shared' or 'per-request'"):
            ComponentApp(service_component, instances="bogus")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="per_instance"):
            ComponentApp(service_component, instances="shared", per_instance=0)

    async def test_shared_instances_serve_several_requests_at_once(
        self, nursery: trio.Nursery, http_guest_component: trio_isyswasfa.Component
    ) -> None:
        # 10 requests at once whose guests each take 50 ms: 4 to an instance
        app = ComponentApp(http_guest_component, instances="shared", per_instance=4)
        url = await start_server(nursery, app)
        texts = await get_at_once(f"{url}/stream?n=5", 10)
        assert texts == ["".join(f"line {i}\n" for i in range(5))] * 10
        stats = await settled(app)
        assert (stats.instances_opened, stats.completed, stats.failed) == (3, 10, 0)

    async def test_a_trap_fails_only_the_shared_instance_it_happened_in(
        self, nursery: trio.Nursery, http_guest_component: trio_isyswasfa.Component
    ) -> None:
        app = ComponentApp(http_guest_component, instances="shared", per_instance=4)
        url = await start_server(nursery, app)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            async with client.stream("GET", f"{url}/forever") as streaming:
                lines = streaming.aiter_lines()
                assert await anext(lines) == "first line"
                # the same instance serves the trapping request: it fails, and so does
                # the response it was still writing (cut off, not left hanging)
                assert (await client.get(f"{url}/trap")).status_code == 500
                with trio.fail_after(5), pytest.raises(httpx.HTTPError):
                    await _read_to_end(lines)
            # new requests go to a new instance
            again = await client.get(f"{url}/stream?n=2")
        assert (again.status_code, again.text) == (200, "line 0\nline 1\n")
        stats = await settled(app)
        assert (stats.instances_opened, stats.failed, stats.completed) == (2, 2, 1)


async def _read_to_end(lines: AsyncIterator[str]) -> None:
    async for _ in lines:
        pass


class TestMisbehavingGuests:
    async def test_a_trap_is_a_500_and_the_server_keeps_serving(
        self, misbehaving: tuple[str, ComponentApp]
    ) -> None:
        url, app = misbehaving
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            response = await client.get(f"{url}/trap")
            assert response.status_code == 500
            again = await client.get(f"{url}/stream?n=2")
        assert again.status_code == 200
        assert again.text == "line 0\nline 1\n"
        stats = await settled(app)
        assert (stats.failed, stats.completed) == (1, 1)
        assert stats.instances_opened == 2  # the instance that trapped was not lent again

    async def test_a_rust_panic_is_a_500_and_a_fresh_instance_serves_the_next(
        self, nursery: trio.Nursery, rust_http_component: trio_isyswasfa.Component
    ) -> None:
        app = ComponentApp(rust_http_component)
        url = await start_server(nursery, app)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            assert (await client.get(f"{url}/hello")).text == "hello from Rust\n"
            response = await client.get(f"{url}/panic")
            assert response.status_code == 500
            again = await client.get(f"{url}/hello")
        assert (again.status_code, again.text) == (200, "hello from Rust\n")
        stats = await settled(app)
        assert (stats.failed, stats.completed) == (1, 2)
        assert stats.instances_opened == 2  # the instance that panicked was not lent again

    async def test_a_rust_panic_while_streaming_cuts_the_response_off(
        self, nursery: trio.Nursery, rust_http_component: trio_isyswasfa.Component
    ) -> None:
        app = ComponentApp(rust_http_component)
        url = await start_server(nursery, app)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            async with client.stream("GET", f"{url}/panic-while-streaming") as streaming:
                assert streaming.status_code == 200
                lines = streaming.aiter_lines()
                assert await anext(lines) == "first line"
                # the spawned task that writes the body panics: the body is cut off,
                # not left hanging and not ended as if complete
                with trio.fail_after(5), pytest.raises(httpx.HTTPError):
                    await _read_to_end(lines)
            again = await client.get(f"{url}/hello")
        assert (again.status_code, again.text) == (200, "hello from Rust\n")
        stats = await settled(app)
        assert (stats.failed, stats.completed, stats.instances_opened) == (1, 1, 2)

    async def test_guests_blocked_in_a_sleep_do_not_hold_up_each_other(
        self, misbehaving: tuple[str, ComponentApp], jumping_clock: trio.testing.MockClock
    ) -> None:
        # 8 requests whose guests each call time.sleep(60): a request goes to an instance
        # whose guest is not blocked, so all 8 sleep at once, each in an instance of its
        # own. Counted, not timed: trio's clock runs at real speed until the 8 sleep, then
        # jumps the minute. A request queued behind a sleeping guest would keep the count
        # short until that sleep ended, a minute on. Each request leaves once the ones
        # before sleep: a burst arriving while the pool opens its first instance joins
        # that instance (up to `per_instance`), before any guest in it blocks.
        url, app = misbehaving
        bodies: list[str] = []

        async def one() -> None:
            bodies.append((await client.get(f"{url}/sleep?ms=60000")).text)

        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(600.0)) as client,
            trio.open_nursery() as nursery,
        ):
            for k in range(1, 9):
                nursery.start_soon(one)
                with trio.fail_after(30):  # a loaded machine opens an instance in seconds
                    while _sleeping(app) < k:  # noqa: ASYNC110 - no event tells of a block
                        await trio.sleep(0.01)
            assert not bodies
            jumping_clock.jump(60)
        assert bodies == ["slept"] * 8
        assert app.statistics().instances_opened == 8

    async def test_an_error_code_is_a_500_naming_it(
        self, misbehaving: tuple[str, ComponentApp]
    ) -> None:
        url, _ = misbehaving
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            response = await client.get(f"{url}/error")
        assert response.status_code == 500
        assert "internal-error: on purpose" in response.text

    async def test_a_spawned_task_streams_after_handle_returned(
        self, misbehaving: tuple[str, ComponentApp]
    ) -> None:
        url, _ = misbehaving
        lines = []
        async with (
            httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client,
            client.stream("GET", f"{url}/stream?n=5") as r,
        ):
            async for line in r.aiter_lines():
                lines.append(line)
        assert lines == [f"line {i}" for i in range(5)]

    async def test_a_client_leaving_mid_stream_cancels_the_guest(
        self, misbehaving: tuple[str, ComponentApp], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        url, app = misbehaving
        lent: list[trio_isyswasfa.Instance] = []
        lend = InstancePool.lend

        @asynccontextmanager
        async def recording_lend(
            pool: InstancePool, before_wait: Callable[[], object] | None = None
        ) -> AsyncIterator[trio_isyswasfa.Instance]:
            async with lend(pool, before_wait) as instance:
                lent.append(instance)
                yield instance

        monkeypatch.setattr(InstancePool, "lend", recording_lend)
        client = await RawClient.connect(url)
        async with client.stream:
            await client.send(
                h11.Request(method="GET", target="/forever", headers=[("host", "x")]),
                h11.EndOfMessage(),
            )
            head = await client.next_event()
            assert isinstance(head, h11.Response)
            assert head.status_code == 200
            data = await client.next_event()
            assert isinstance(data, h11.Data)
            assert data.data.startswith(b"first line")
        # we left while the guest still waits (for an hour): it is cancelled, and confirms
        stats = await settled(app)
        assert (stats.cancelled, stats.failed, stats.completed) == (1, 0, 0)
        # the request did not end cleanly: its instance is closed, its guest task (and
        # the hour-long wait it was in) cancelled, and it is never lent again
        (first,) = lent
        await eventually(lambda: first.statistics().host_tasks_running == 0)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            assert (await http.get(f"{url}/stream?n=1")).text == "line 0\n"
        assert len(lent) == 2
        assert lent[1] is not first
        assert app.statistics().instances_opened == 2

    async def test_a_task_of_a_request_that_fails_fails_that_request_only(
        self, service_component: trio_isyswasfa.Component
    ) -> None:
        # the client listener of a request whose body comes in parts runs beside it, in
        # the app's task group: the server's receive raising there fails that request,
        # with its exception, and the app serves on
        app = ComponentApp(service_component, instances="pooled")
        scope = asgi_scope(method="POST", headers=[(b"content-length", b"10")])

        async def receive() -> dict[str, object]:
            if not received:
                received.append(1)
                return {"type": "http.request", "body": b"hello", "more_body": True}
            raise RuntimeError("the server broke")

        async def send(message: object) -> None:
            pass

        async with open_lifespan(app):
            for _ in range(2):
                received: list[int] = []
                with trio.fail_after(10), pytest.raises(RuntimeError, match="server broke"):
                    await app(scope, receive, send)
            with trio.fail_after(10):
                assert (await asgi_request(app, body=b"again")).body == b"again"
        stats = app.statistics()
        assert (stats.cancelled, stats.completed, stats.in_flight) == (2, 1, 0)

    @pytest.mark.parametrize("lifespan", [True, False])
    async def test_a_requests_client_listener_ends_with_it(
        self, service_component: trio_isyswasfa.Component, lifespan: bool
    ) -> None:
        app = ComponentApp(service_component, instances="pooled")
        scope = asgi_scope(method="POST", headers=[(b"content-length", b"5")])
        parts = [b"hel", b"lo"]
        listening: list[str] = []
        body: list[bytes] = []

        async def receive() -> dict[str, object]:
            if parts:
                part = parts.pop(0)
                return {"type": "http.request", "body": part, "more_body": bool(parts)}
            listening.append("listens")
            try:
                await trio.sleep_forever()
            finally:
                listening.append("stopped")
            raise AssertionError("unreachable")

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.body":
                body.append(message["body"])  # type: ignore[arg-type]

        async with open_lifespan(app) if lifespan else nullcontext():
            with trio.fail_after(10):
                await app(scope, receive, send)
            await trio.testing.wait_all_tasks_blocked()
            assert (b"".join(body), listening) == (b"hello", ["listens", "stopped"])

    @pytest.mark.parametrize("waits", ["never", "at the head", "at the end"])
    async def test_a_client_is_listened_to_only_when_a_send_waits(
        self, service_component: trio_isyswasfa.Component, waits: str
    ) -> None:
        # hypercorn's send takes two checkpoints when the socket takes the bytes at
        # once: no task listens to the client for that; a send that waits (a client
        # reading slowly) has one listen, so that a client leaving then is noticed,
        # unless it is the response's last (a client leaving then is no news)
        app = ComponentApp(service_component, instances="pooled")
        listened: list[str] = []
        sent: list[object] = []

        async def receive() -> dict[str, object]:
            listened.append("listens")
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: dict[str, object]) -> None:
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
            last = message["type"] == "http.response.body" and not message.get("more_body")
            if waits == ("at the end" if last else "at the head"):
                await trio.testing.wait_all_tasks_blocked()
            sent.append(message["type"])

        async with open_lifespan(app):
            with trio.fail_after(10):
                await asgi_request(app)  # (the instance opens: a wait)
                await app(asgi_scope(), receive, send)  # a GET: no body to receive
            await trio.testing.wait_all_tasks_blocked()
        assert sent == ["http.response.start", "http.response.body"]
        assert listened == (["listens"] if waits == "at the head" else [])
        assert app.statistics().completed == 2

    async def test_request_headers_reach_the_guest(
        self, misbehaving: tuple[str, ComponentApp]
    ) -> None:
        url, _ = misbehaving
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            response = await client.get(f"{url}/headers", headers={"X-Custom": "value"})
        assert "X-Custom: value" in response.text or "x-custom: value" in response.text
        assert "connection:" not in response.text.lower()  # hop-by-hop headers stay out


def _system_backlog() -> int:
    """The kernel's cap on a listen backlog, as it says it."""
    somaxconn = Path("/proc/sys/net/core/somaxconn")
    return int(somaxconn.read_text()) if somaxconn.exists() else socket.SOMAXCONN


@contextmanager
def _serving(component: trio_isyswasfa.Component, *args: str) -> Iterator[tuple[str, str]]:
    """``python -m trio_isyswasfa serve component *args`` on a free port: its first
    line on stderr and its URL; stopped by a SIGINT at the end, which it must obey."""
    serve = [sys.executable, "-m", "trio_isyswasfa", "serve", component.name]
    with subprocess.Popen(
        [*serve, "--addr", "127.0.0.1:0", "--no-access-log", *args],
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            yield line, line.split(" on ")[1].split(" ")[0]
        finally:
            proc.send_signal(signal.SIGINT)  # a graceful stop
            assert proc.wait(timeout=10) == 0


class TestCli:
    def test_serve_on_the_asyncio_backend(
        self, service_component: trio_isyswasfa.Component
    ) -> None:
        with _serving(service_component, "--backend", "asyncio") as (line, url):
            assert line.startswith(f"Serving {service_component.name} on http://127.0.0.1:")
            assert "(asyncio, shared instances)" in line
            response = httpx.post(f"{url}/x", content=b"over asyncio", timeout=10)
            assert response.content == b"over asyncio"

    @pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
    def test_serve_listens_with_the_backlog_given(
        self, service_component: trio_isyswasfa.Component
    ) -> None:
        # the kernel's own word: `ss -ltn` shows a listening socket's backlog as Send-Q
        with _serving(service_component, "--backlog", "37") as (_, url):
            assert httpx.get(f"{url}/", timeout=10).status_code == 200
            port = url.rsplit(":", 1)[1]
            listening = subprocess.run(
                ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
            ).stdout.split()
            assert listening[:3] == ["LISTEN", "0", "37"], listening

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--addr", "nonsense"], "bad address 'nonsense': expected HOST:PORT"),
            (["--addr", "127.0.0.1:99999"], "bad address"),
            (["--spare-instances", "-1"], "--spare-instances must not be negative"),
            (["--backlog", "0"], "--backlog must be at least 1, not 0"),
        ],
    )
    def test_bad_addresses(
        self, service_component: trio_isyswasfa.Component, args: list[str], message: str
    ) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "trio_isyswasfa", "serve", service_component.name, *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1
        assert message in lines[0]

    def test_a_component_that_serves_no_http(
        self, cases_component: trio_isyswasfa.Component
    ) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "trio_isyswasfa", "serve", cases_component.name],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert proc.returncode == 2
        assert "exports neither wasi:http/incoming-handler@0.2.x nor" in proc.stderr

    @pytest.mark.parametrize("inherited", ["SIG_IGN", "default_int_handler"])
    def test_sigint_during_start_up_stops_serve(self, tmp_path: Path, inherited: str) -> None:
        # the component is a FIFO: serve waits reading it, in the middle of its start-up,
        # until the test writes; SIG_IGN is what a shell script's background job inherits
        fifo = tmp_path / "component.wasm"
        os.mkfifo(fifo)
        launcher = (
            "import os, signal, sys\n"
            f"signal.signal(signal.SIGINT, signal.{inherited})  # kept across exec\n"
            "os.execv(sys.executable, sys.argv[1:])"
        )
        serve = [
            sys.executable,
            "-m",
            "trio_isyswasfa",
            "serve",
            str(fifo),
            "--addr",
            "127.0.0.1:0",
        ]
        proc = subprocess.Popen(
            [sys.executable, "-c", launcher, *serve], stderr=subprocess.PIPE, text=True
        )
        writer = None
        try:
            writer = _open_when_read(fifo, proc)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 130  # 128 + SIGINT; it hung with SIG_IGN
            assert proc.stderr is not None
            assert proc.stderr.read() == "SIGINT during start-up: not serving\n"
        finally:
            if writer is not None:
                os.close(writer)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()

    def test_a_second_sigint_stops_at_once(
        self, http_guest_component: trio_isyswasfa.Component
    ) -> None:
        # the first waits for the requests in flight (here one that never ends), the
        # second cancels them
        serve = [sys.executable, "-m", "trio_isyswasfa", "serve", http_guest_component.name]
        with subprocess.Popen(
            [*serve, "--addr", "127.0.0.1:0", "--no-access-log"], stderr=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stderr is not None
            try:
                line = proc.stderr.readline()
                url = line.split(" on ")[1].split(" ")[0]
                with httpx.stream("GET", f"{url}/forever", timeout=30) as response:
                    lines = response.iter_lines()
                    assert next(lines) == "first line"
                    proc.send_signal(signal.SIGINT)
                    while "SIGINT: finishing requests in flight" not in (
                        said := proc.stderr.readline()
                    ):
                        assert said, "serve ended without a word"
                    proc.send_signal(signal.SIGINT)
                    assert proc.wait(timeout=30) == 0
                    assert "SIGINT again: stopping now" in proc.stderr.read()
                    with pytest.raises(httpx.HTTPError):
                        next(lines)  # cut short: the guest's task was cancelled
            finally:
                if proc.poll() is None:
                    proc.kill()


def _open_when_read(fifo: Path, proc: subprocess.Popen[str]) -> int:
    """Open ``fifo`` for writing once ``proc`` opened it to read (it reads on then)."""
    for _ in range(1200):  # up to 60 s: start-up is slow on a loaded machine
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        time.sleep(0.05)
    raise AssertionError("serve never opened its component")


async def test_trailers_pass_through_the_guest(
    service_component: trio_isyswasfa.Component,
) -> None:
    """The original service test, at the API level (ASGI has no request trailers): body
    and trailers of the request come back as the response's."""
    from trio_isyswasfa.http._asgi import _handle
    from trio_isyswasfa.http.types import Body, Fields, Request, Response, make_trailers
    from trio_isyswasfa.wasi.io import Pipe, PipeReader, PipeWriter, read_chunk, write_all

    pipe = Pipe()
    sender, receiver = make_trailers()
    request = Request(
        Fields([("foo", b"bar")]),
        Body(PipeReader(pipe), receiver),
        method="POST",
        path_with_query="/service",
    )
    async with (
        trio_isyswasfa.open_instance(service_component) as inst,
        trio.open_nursery() as nursery,
    ):

        async def feed() -> None:
            writer = PipeWriter(pipe)
            await write_all(writer, b"And the mome raths outgrabe")
            writer.close()
            sender.send(Fields([("fizz", b"buzz")]))

        nursery.start_soon(feed)
        response = await _handle(inst, "wasi:http/handler", request)
        assert isinstance(response, Response)
        body = b""
        while (chunk := await read_chunk(response.body.stream)) is not None:
            body += chunk
        trailers = await response.body.finish()
    assert response.status == 200
    assert response.headers.get("foo") == [b"bar"]
    assert body == b"And the mome raths outgrabe"
    assert trailers is not None
    assert trailers.get("fizz") == [b"buzz"]


def test_several_hypercorn_workers(service_component: trio_isyswasfa.Component) -> None:
    """The documented way to use more than one process: hypercorn's own workers."""
    import os
    import re

    env = {**os.environ, "TRIO_ISYSWASFA_COMPONENT": service_component.name}
    cmd = [sys.executable, "-m", "hypercorn", "--workers", "2", "--bind", "127.0.0.1:0"]
    with subprocess.Popen(
        [*cmd, "trio_isyswasfa.http:app_from_environment()"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            match = re.search(r"Running on (http://127\.0\.0\.1:\d+)", line)
            assert match, line
            for i in range(4):
                reply = httpx.post(f"{match.group(1)}/w", content=f"worker {i}", timeout=30)
                assert reply.content == f"worker {i}".encode()
        finally:
            proc.send_signal(2)
            proc.wait(timeout=30)


def test_app_from_environment_needs_a_component(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIO_ISYSWASFA_COMPONENT", raising=False)
    with pytest.raises(trio_isyswasfa.HostProtocolError, match="TRIO_ISYSWASFA_COMPONENT"):
        trio_isyswasfa.http.app_from_environment()


def test_a_host_bug_behind_a_failure_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from trio_isyswasfa.http._asgi import _log_failure

    def host_function() -> None:
        raise KeyError(7137)

    try:
        host_function()
    except KeyError as bug:
        trap = trio_isyswasfa.GuestTrap("host function failed: KeyError(7137)")
        trap.__cause__ = bug
    _log_failure(trap)
    _log_failure(trio_isyswasfa.GuestTrap("unreachable executed"))  # the guest's own
    with_traceback, plain = caplog.records
    assert with_traceback.exc_info is not None
    assert isinstance(with_traceback.exc_info[1], KeyError)
    assert "in host_function" in caplog.text  # where the host failed
    assert plain.exc_info is None
