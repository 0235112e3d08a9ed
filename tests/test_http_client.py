"""HttpClient, the host's sender of guests' outgoing requests, against raw TCP servers
that count connections and misbehave on purpose."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from trio_isyswasfa.http import HttpClient, _client
from trio_isyswasfa.http.types import (
    Body,
    ErrorCode,
    Fields,
    Request,
    RequestOptions,
    Response,
    _Outcome,
    make_trailers,
)
from trio_isyswasfa.wasi.io import (
    BytesInputStream,
    Pipe,
    PipeReader,
    PipeWriter,
    StreamFailed,
    read_chunk,
)

Handler = Callable[[trio.SocketStream, "Server"], Awaitable[None]]


@dataclass
class Server:
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[Server]:
    state = Server()

    async def serve(stream: trio.SocketStream) -> None:
        state.connections += 1
        with suppress(trio.BrokenResourceError):
            await handler(stream, state)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        state.port = listeners[0].socket.getsockname()[1]
        yield state
        nursery.cancel_scope.cancel()


async def read_request(stream: trio.SocketStream, buf: bytearray) -> bytes | None:
    """One request's head and body (content-length or chunked), or None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some()
        if not data:
            return None
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    del buf[:end]
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while not (b"\r\n0\r\n" in buf and buf.endswith(b"\r\n\r\n")):  # last chunk, trailers
            buf += await stream.receive_some()
        body = bytes(buf)
        buf.clear()
        return head + body
    if b"content-length:" in lower:
        n = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        while len(buf) < n:
            buf += await stream.receive_some()
        body = bytes(buf[:n])
        del buf[:n]
        return head + body
    return head


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


async def keep_alive_server(stream: trio.SocketStream, state: Server) -> None:
    buf = bytearray()
    while (request := await read_request(stream, buf)) is not None:
        state.requests.append(request)
        await stream.send_all(ok(b"hello"))


def get(port: int, path: str = "/", **options: int) -> Request:
    return Request(
        Fields(),
        Body(BytesInputStream(b"")),
        method="GET",
        scheme="http",
        authority=f"127.0.0.1:{port}",
        path_with_query=path,
        options=RequestOptions(**options) if options else None,
    )


async def body_of(response: Response) -> bytes:
    out = b""
    while (chunk := await read_chunk(response.body.stream)) is not None:
        out += chunk
    return out


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    async with HttpClient(allow=["127.0.0.1:*"]) as c:
        yield c


async def test_connections_are_kept_alive_and_reused(client: HttpClient) -> None:
    async with server(keep_alive_server) as up:
        for i in range(5):
            response = await client.send(get(up.port, f"/{i}"))
            assert response.status == 200
            assert await body_of(response) == b"hello"
            await trio.lowlevel.checkpoint()  # the pump hands the connection back
        assert up.connections == 1
        assert [r.split(b" ")[1] for r in up.requests] == [f"/{i}".encode() for i in range(5)]
        assert all(b"host: 127.0.0.1:" in r.lower() for r in up.requests)


async def test_concurrent_requests_open_connections_side_by_side(client: HttpClient) -> None:
    all_in = trio.Event()
    release = trio.Event()

    async def held(stream: trio.SocketStream, state: Server) -> None:
        buf = bytearray()
        while (request := await read_request(stream, buf)) is not None:
            state.requests.append(request)
            if len(state.requests) == 20:
                all_in.set()
            await release.wait()
            await stream.send_all(ok(b"late"))

    async with server(held) as up:
        bodies: list[bytes] = []

        async def one(i: int) -> None:
            bodies.append(await body_of(await client.send(get(up.port, f"/{i}"))))

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)
            # all 20 reach the server while none is answered: one after another,
            # the second would wait for the first's answer
            with trio.fail_after(30):  # a hang guard only
                await all_in.wait()
            assert up.connections == 20
            release.set()
        assert bodies == [b"late"] * 20
        assert up.connections == 20


async def test_connections_per_origin_are_bounded_and_requests_wait_in_line() -> None:
    open_now = peak = 0
    three_in = trio.Event()
    release = trio.Event()

    async def held(stream: trio.SocketStream, state: Server) -> None:
        # answers only once released: what the client holds open and queues is then
        # read with nothing moving, not guessed after a sleep
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        try:
            buf = bytearray()
            while (request := await read_request(stream, buf)) is not None:
                state.requests.append(request)
                if len(state.requests) == 3:
                    three_in.set()
                await release.wait()
                await stream.send_all(ok(b"late"))
        finally:
            open_now -= 1

    async with (
        server(held) as up,
        HttpClient(allow=["127.0.0.1:*"], max_connections_per_origin=3) as client,
    ):
        origin = ("http", "127.0.0.1", up.port)
        bodies: list[bytes] = []

        async def one(i: int) -> None:
            bodies.append(await body_of(await client.send(get(up.port, f"/{i}"))))

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(one, i)
            with trio.fail_after(30):  # a hang guard only
                await three_in.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert client.statistics(origin) == (3, 0, 7)  # three sent, seven in line
            assert (up.connections, peak) == (3, 3)
            release.set()
        assert bodies == [b"late"] * 10
        assert up.connections == 3  # each freed connection went to the next in line
        assert peak == 3
        assert len(up.requests) == 10
        assert client.statistics(origin) == (3, 3, 0)


async def test_a_request_cancelled_in_line_gives_up_its_place() -> None:
    release = trio.Event()

    async def held(stream: trio.SocketStream, state: Server) -> None:
        buf = bytearray()
        while (request := await read_request(stream, buf)) is not None:
            state.requests.append(request)
            if b"/hold" in request:
                await release.wait()
            await stream.send_all(ok(b"done"))

    async with (
        server(held) as up,
        HttpClient(allow=["127.0.0.1:*"], max_connections_per_origin=1) as client,
    ):
        origin = ("http", "127.0.0.1", up.port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send, get(up.port, "/hold"))
            await trio.sleep(0.01)
            with trio.move_on_after(0.01):
                await client.send(get(up.port, "/cancelled"))
            assert client.statistics(origin) == (1, 0, 0)  # left the line
            release.set()
        assert await body_of(await client.send(get(up.port, "/after"))) == b"done"
        assert [r.split(b" ")[1] for r in up.requests] == [b"/hold", b"/after"]
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    async with HttpClient(allow=["127.0.0.1:*"]) as client:
        with pytest.raises(ErrorCode):
            await client.send(get(closed_port))
        # a failed connection leaves nothing behind for its origin
        assert client.statistics(("http", "127.0.0.1", closed_port)) == (0, 0, 0)
        assert not client._pools


async def test_requests_in_line_fail_when_the_client_closes() -> None:
    async def never(stream: trio.SocketStream, state: Server) -> None:
        await trio.sleep_forever()

    async with server(never) as up:
        failures: list[str] = []
        told = trio.Event()

        async def in_line(client: HttpClient) -> None:
            with pytest.raises(ErrorCode) as info:
                await client.send(get(up.port, "/second"))
            failures.append(info.value.case)
            told.set()

        async with trio.open_nursery() as nursery:
            async with HttpClient(allow=["127.0.0.1:*"], max_connections_per_origin=1) as client:
                nursery.start_soon(client.send, get(up.port, "/first"))
                await trio.sleep(0.01)
                nursery.start_soon(in_line, client)
                await trio.sleep(0.01)
            with trio.fail_after(5):
                await told.wait()  # told at once, not left waiting forever
            nursery.cancel_scope.cancel()  # the first one still waits for its answer
        assert failures == ["internal-error"]


async def test_a_streamed_request_body_goes_out_chunked(client: HttpClient) -> None:
    async with server(keep_alive_server) as up:
        pipe = Pipe()
        writer = PipeWriter(pipe)
        writer.write(b"first part, ")
        writer.write(b"second part")
        writer.close()
        request = get(up.port, "/upload")
        request.method = "POST"
        request.body = Body(PipeReader(pipe))
        response = await client.send(request)
        assert await body_of(response) == b"hello"
        (sent,) = up.requests
        assert b"transfer-encoding: chunked" in sent.lower()
        assert b"first part, " in sent
        assert b"second part" in sent


async def test_an_idle_connection_the_server_closed_is_replaced(client: HttpClient) -> None:
    async def one_per_connection(stream: trio.SocketStream, state: Server) -> None:
        buf = bytearray()
        if (request := await read_request(stream, buf)) is not None:
            state.requests.append(request)
            await stream.send_all(ok(b"once"))  # says keep-alive, then closes

    async with server(one_per_connection) as up:
        assert await body_of(await client.send(get(up.port))) == b"once"
        await trio.sleep(0.05)
        assert await body_of(await client.send(get(up.port))) == b"once"
        assert up.connections == 2


async def test_a_request_leaves_when_send_is_called(client: HttpClient) -> None:
    # with an idle connection to its origin, a request with no body is written at the
    # call, before its coroutine runs: a guest's requests leave as its call makes them
    arrived = trio.Event()

    async def noting(stream: trio.SocketStream, state: Server) -> None:
        buf = bytearray()
        while (request := await read_request(stream, buf)) is not None:
            state.requests.append(request)
            if len(state.requests) == 2:
                arrived.set()
            await stream.send_all(ok(b"hello"))

    async with server(noting) as up:
        assert await body_of(await client.send(get(up.port, "/warm"))) == b"hello"
        sending = client.send(get(up.port, "/early"))
        with trio.fail_after(10):  # (not a timing: without the write it never arrives)
            await arrived.wait()
        assert up.requests[-1].startswith(b"GET /early HTTP/1.1\r\n")
        assert await body_of(await sending) == b"hello"
        assert up.connections == 1


@pytest.mark.parametrize("through_the_host_task", [False, True])
async def test_a_request_written_at_send_but_never_awaited_closes_its_connection(
    client: HttpClient, through_the_host_task: bool
) -> None:
    # its response will not be read: the connection cannot carry another request
    async with server(keep_alive_server) as up:
        assert await body_of(await client.send(get(up.port, "/warm"))) == b"hello"
        origin = ("http", "127.0.0.1", up.port)
        sending = client.send(get(up.port, "/dropped"))
        assert client.statistics(origin) == (1, 0, 0)  # in use, by a request on its way
        # (wasi:http's host task for it, closed when it could not start, closes it too)
        (_Outcome(sending) if through_the_host_task else sending).close()
        await trio.testing.wait_all_tasks_blocked()
        assert client.statistics(origin) == (0, 0, 0)
        assert await body_of(await client.send(get(up.port, "/after"))) == b"hello"
        assert up.connections == 2


async def test_a_request_written_at_send_then_cancelled_closes_its_connection(
    client: HttpClient,
) -> None:
    async with server(keep_alive_server) as up:
        assert await body_of(await client.send(get(up.port, "/warm"))) == b"hello"
        origin = ("http", "127.0.0.1", up.port)
        with trio.CancelScope() as scope:
            scope.cancel()  # before the coroutine's first step
            await client.send(get(up.port, "/cancelled"))
        assert scope.cancelled_caught
        await trio.testing.wait_all_tasks_blocked()
        assert client.statistics(origin) == (0, 0, 0)
        assert await body_of(await client.send(get(up.port, "/after"))) == b"hello"
        assert up.connections == 2


# -- requests written at send() leave in batches ---------------------------------------


async def idle_connections(client: HttpClient, port: int, n: int) -> None:
    """``n`` keep-alive connections to ``port``, idle in the client's pool."""
    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(partial(body_of_get, client, port, f"/warm{i}"))
    assert client.statistics(("http", "127.0.0.1", port)) == (n, n, 0)


async def body_of_get(client: HttpClient, port: int, path: str) -> bytes:
    return await body_of(await client.send(get(port, path)))


def targets(up: Server) -> list[bytes]:
    return [r.split(b" ")[1] for r in up.requests if not r.split(b" ")[1].startswith(b"/warm")]


@pytest.fixture
def never_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests made one after another always count as a batch (however slow the machine)
    monkeypatch.setattr(_client, "_WRITE_LINGER", 3600.0)


@pytest.mark.usefixtures("never_linger")
async def test_requests_written_at_send_wait_for_the_first_coroutine_to_run(
    client: HttpClient,
) -> None:
    async with server(keep_alive_server) as up:
        await idle_connections(client, up.port, 3)
        first = client.send(get(up.port, "/a"))  # the first after a pause leaves at once
        second = client.send(get(up.port, "/b"))
        third = client.send(get(up.port, "/c"))
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert targets(up) == [b"/a"]
        with trio.fail_after(10):  # (not a timing: unwritten, it would wait 30 s and fail)
            assert await body_of(await second) == b"hello"  # its first step writes the batch
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert sorted(targets(up)) == [b"/a", b"/b", b"/c"]
        assert [await body_of(await s) for s in (first, third)] == [b"hello", b"hello"]
        assert up.connections == 3


@pytest.mark.usefixtures("never_linger")
async def test_a_full_batch_of_requests_leaves_at_once(
    client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_client, "_WRITE_BATCH", 2)
    async with server(keep_alive_server) as up:
        await idle_connections(client, up.port, 3)
        sending = [client.send(get(up.port, path)) for path in ("/a", "/b", "/c")]
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert sorted(targets(up)) == [b"/a", b"/b", b"/c"]  # no coroutine ran
        assert [await body_of(await s) for s in sending] == [b"hello"] * 3


@pytest.mark.usefixtures("never_linger")
async def test_a_request_given_up_while_it_waits_to_leave_never_leaves(
    client: HttpClient,
) -> None:
    async with server(keep_alive_server) as up:
        await idle_connections(client, up.port, 2)
        origin = ("http", "127.0.0.1", up.port)
        first = client.send(get(up.port, "/a"))
        dropped = client.send(get(up.port, "/dropped"))
        dropped.close()  # before its coroutine ran: it goes nowhere, its connection closes
        assert await body_of(await first) == b"hello"  # (its first step writes a batch)
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert targets(up) == [b"/a"]
        assert client.statistics(origin) == (1, 1, 0)


async def test_a_request_whose_idle_connection_was_reset_goes_on_a_fresh_one(
    client: HttpClient,
) -> None:
    # nothing of it left, so even a method that may not be sent twice is sent again
    async def reset_after_one(stream: trio.SocketStream, state: Server) -> None:
        buf = bytearray()
        if (request := await read_request(stream, buf)) is not None:
            state.requests.append(request)
            await stream.send_all(ok(b"once"))  # says keep-alive, then resets
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()

    async with server(reset_after_one) as up:
        assert await body_of_get(client, up.port, "/warm") == b"once"
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)  # (the reset arrives)
        post = get(up.port, "/post")
        post.method = "POST"
        assert await body_of(await client.send(post)) == b"once"
        assert [r.split(b" ")[:2] for r in up.requests] == [[b"GET", b"/warm"], [b"POST", b"/post"]]
        assert up.connections == 2


async def test_a_body_the_guest_dropped_closes_its_connection(client: HttpClient) -> None:
    async def big(stream: trio.SocketStream, state: Server) -> None:
        buf = bytearray()
        while (request := await read_request(stream, buf)) is not None:
            state.requests.append(request)
            await stream.send_all(ok(b"x" * 1_000_000))

    async with server(big) as up:
        response = await client.send(get(up.port))
        assert await read_chunk(response.body.stream)
        response.body.close()  # not read to its end
        await trio.sleep(0.05)
        assert len(await body_of(await client.send(get(up.port)))) == 1_000_000
        assert up.connections == 2


@pytest.mark.parametrize(
    ("handler_reply", "options", "case"),
    [
        (b"this is not http\r\n\r\n", {}, "HTTP-protocol-error"),
        (None, {"first_byte_timeout": 100_000_000}, "connection-read-timeout"),
        (b"", {}, "HTTP-response-incomplete"),
    ],
)
async def test_failures_become_error_codes(
    client: HttpClient, handler_reply: bytes | None, options: dict[str, int], case: str
) -> None:
    async def misbehave(stream: trio.SocketStream, state: Server) -> None:
        await read_request(stream, bytearray())
        if handler_reply is None:
            await trio.sleep_forever()
        await stream.send_all(handler_reply)
        await stream.aclose()

    async with server(misbehave) as up:
        with trio.fail_after(5), pytest.raises(ErrorCode) as info:
            await client.send(get(up.port, **options))
        assert info.value.case == case


async def hang_after_request(stream: trio.SocketStream, state: Server) -> None:
    state.requests.append(await read_request(stream, bytearray()) or b"")
    await trio.sleep_forever()


async def test_a_shorter_read_timeout_fires_while_a_longer_one_waits(client: HttpClient) -> None:
    # the client's one task keeps every read's deadline: a read with an earlier
    # deadline than those already waiting must wake it sooner
    async with server(hang_after_request) as up, trio.open_nursery() as nursery:
        nursery.start_soon(client.send, get(up.port, "/long", first_byte_timeout=3_600 * 10**9))
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(10), pytest.raises(ErrorCode) as info:
            await client.send(get(up.port, "/short", first_byte_timeout=50_000_000))
        assert info.value.case == "connection-read-timeout"
        assert client.statistics(("http", "127.0.0.1", up.port)) == (1, 0, 0)  # closed
        nursery.cancel_scope.cancel()


async def test_a_body_that_stalls_times_out_between_bytes(client: HttpClient) -> None:
    async def stall(stream: trio.SocketStream, state: Server) -> None:
        await read_request(stream, bytearray())
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        await trio.sleep_forever()

    async with server(stall) as up:
        response = await client.send(get(up.port, between_bytes_timeout=50_000_000))
        got = bytearray()

        async def drain() -> None:
            while (chunk := await read_chunk(response.body.stream)) is not None:
                got.extend(chunk)

        with trio.fail_after(10), pytest.raises(StreamFailed) as info:
            await drain()
        assert got == b"half"  # what came before the bytes stopped, then the failure
        assert "connection-read-timeout" in str(info.value)
        await trio.testing.wait_all_tasks_blocked()
        assert client.statistics(("http", "127.0.0.1", up.port)) == (0, 0, 0)


async def test_a_read_in_flight_when_the_client_closes_keeps_its_timeout() -> None:
    failed = trio.Event()

    async def wait_for(sending: Awaitable[Response]) -> None:
        with pytest.raises(ErrorCode) as info:
            await sending
        assert info.value.case == "connection-read-timeout"
        failed.set()

    async with server(hang_after_request) as up, trio.open_nursery() as nursery:
        async with HttpClient(allow=["127.0.0.1:*"]) as client:
            nursery.start_soon(wait_for, client.send(get(up.port, first_byte_timeout=10**8)))
            await trio.testing.wait_all_tasks_blocked()
        # closed while the read waits: it goes on, its deadline with it
        with trio.fail_after(10):
            await failed.wait()


async def test_an_idle_client_leaves_no_timer_behind(client: HttpClient) -> None:
    # once no read waits, nothing is due: an autojump clock would otherwise leap to a
    # stale deadline (and a real one wake the process for nothing)
    async with server(keep_alive_server) as up:
        assert await body_of(await client.send(get(up.port))) == b"hello"
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_effective_deadline() == float("inf")
        assert trio.lowlevel.current_statistics().seconds_to_next_deadline == float("inf")


async def test_requests_without_fields_each_get_their_own_head(client: HttpClient) -> None:
    # a head with no fields is made once per method and authority, its target put in
    async with server(keep_alive_server) as up:
        for method, path in [("GET", "/a"), ("GET", "/b?q=1"), ("DELETE", "/a"), ("GET", "/")]:
            request = get(up.port, path)
            request.method = method
            response = await client.send(request)
            await body_of(response)
        host = f"host: 127.0.0.1:{up.port}\r\n".encode()
        assert up.requests == [
            b"GET /a HTTP/1.1\r\n" + host + b"\r\n",
            b"GET /b?q=1 HTTP/1.1\r\n" + host + b"\r\n",
            b"DELETE /a HTTP/1.1\r\n" + host + b"\r\n",
            b"GET / HTTP/1.1\r\n" + host + b"\r\n",
        ]


async def test_a_host_http_1_1_cannot_carry_is_refused_every_time() -> None:
    async with HttpClient(allow=["*"]) as client:
        for _ in range(2):  # (a refused head is not kept as a checked one)
            request = get(80)
            request.authority = "bad\x7fhost:80"
            with pytest.raises(ErrorCode) as info:
                await client.send(request)
            assert info.value.case == "internal-error"


def task_names() -> list[str]:
    """Every live task's name, system tasks included."""
    names: list[str] = []
    tasks = [trio.lowlevel.current_root_task()]
    while tasks:
        task = tasks.pop()
        names.append(task.name)
        tasks.extend(t for nursery in task.child_nurseries for t in nursery.child_tasks)
    return names


async def test_the_read_timeouts_task_ends_with_its_client() -> None:
    async with server(keep_alive_server) as up:
        async with HttpClient(allow=["127.0.0.1:*"]) as client:
            assert await body_of(await client.send(get(up.port))) == b"hello"
            await trio.testing.wait_all_tasks_blocked()
            assert "HttpClient read timeouts" in task_names()
        await trio.testing.wait_all_tasks_blocked()
        assert "HttpClient read timeouts" not in task_names()


async def test_refused_denied_and_invalid_requests(client: HttpClient) -> None:
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(ErrorCode) as info:
        await client.send(get(closed_port))
    assert info.value.case == "connection-refused"
    denied = get(80)
    denied.authority = "example.com"
    with pytest.raises(ErrorCode) as info:
        await client.send(denied)
    assert info.value.case == "HTTP-request-denied"
    for bad in ("no-slash", "/with space"):
        with pytest.raises(ErrorCode) as info:
            await client.send(get(closed_port, bad))
        assert info.value.case == "HTTP-request-URI-invalid"


@pytest.mark.parametrize(
    "authority",
    [
        "127.0.0.1:\u00b2",  # str.isdigit, but int() refuses it
        "127.0.0.1:\u0663",  # an Arabic-Indic 3: int() reads it as 3
        "\u65e5\u672c:80",  # beyond Latin-1: the host header could not be written
        "h\u00e9te:80",  # Latin-1, not ASCII
        "127.0.0.1:65536",
        "127.0.0.1:0",
    ],
)
async def test_an_authority_that_is_no_ascii_host_and_port_is_an_invalid_uri(
    authority: str,
) -> None:
    # wasi:http's set-authority lets any string through: the client must answer with
    # an ErrorCode (an exception of another kind kills an isyswasfa draft guest)
    async with HttpClient(allow=["*"]) as client:
        request = get(1)
        request.authority = authority
        with pytest.raises(ErrorCode) as info:
            await client.send(request)
        assert info.value.case == "HTTP-request-URI-invalid"
        assert isinstance(client.allowed(authority, "http"), bool)  # (not a ValueError)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_request_of_a_non_idempotent_method_the_server_received_is_not_sent_twice(
    method: str,
) -> None:
    # RFC 9110 9.2.2: a bodiless request on a reused connection the server closed
    # without answering is sent again on a fresh one only if its method is idempotent
    # (test_review_probes keeps the GET that is)
    async def hang_up_on_the_second(stream: trio.SocketStream, state: Any) -> None:
        buf = bytearray()
        while (request := await read_request(stream, buf)) is not None:
            state.requests.append(request)
            if len(state.requests) == 2:
                await stream.aclose()  # it arrived; the server dies before answering
                return
            await stream.send_all(ok(b"hello"))

    async with (
        HttpClient(allow=["127.0.0.1:*"]) as client,
        server(hang_up_on_the_second) as up,
    ):
        assert await body_of(await client.send(get(up.port, "/warm"))) == b"hello"
        request = get(up.port, "/charge")
        request.method = method
        with pytest.raises(ErrorCode) as info:
            await client.send(request)
        assert info.value.case in ("connection-terminated", "HTTP-response-incomplete")
        sent = [r for r in up.requests if r.startswith(method.encode() + b" ")]
        assert len(sent) == 1, f"the {method} reached the server {len(sent)} times"
        assert up.connections == 1


async def test_a_header_value_http_1_1_cannot_carry_is_an_error_code(client: HttpClient) -> None:
    async with server(keep_alive_server) as up:
        request = get(up.port)
        request.headers = Fields([("x-padded", b" value")])  # the fields allow it
        with pytest.raises(ErrorCode) as info:
            await client.send(request)  # not h11's exception, which would kill the caller
        assert info.value.case == "internal-error"
        assert up.connections == 0


async def test_a_change_to_the_allow_list_applies_to_the_next_request(
    client: HttpClient,
) -> None:
    async with server(keep_alive_server) as up:
        assert await body_of(await client.send(get(up.port))) == b"hello"
        client.allow.remove("127.0.0.1:*")  # in place: the verdict remembered is dropped
        with pytest.raises(ErrorCode) as info:
            await client.send(get(up.port))
        assert info.value.case == "HTTP-request-denied"
        client.allow = [f"127.0.0.1:{up.port}"]
        assert await body_of(await client.send(get(up.port))) == b"hello"
        assert len(up.requests) == 2


async def test_trailers_go_out_after_a_chunked_body_and_come_back(client: HttpClient) -> None:
    async def with_trailers(stream: trio.SocketStream, state: Server) -> None:
        buf = bytearray()
        while (request := await read_request(stream, buf)) is not None:
            state.requests.append(request)
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n"
            )

    async with server(with_trailers) as up:
        pipe = Pipe()
        writer = PipeWriter(pipe)
        writer.write(b"signed body")
        writer.close()
        sender, receiver = make_trailers()
        sender.send(Fields([("x-signature", b"s1")]))
        request = get(up.port, "/upload")
        request.method = "POST"
        request.body = Body(PipeReader(pipe), receiver)
        response = await client.send(request)
        assert await body_of(response) == b"hello"
        trailers = await response.body.finish()
        assert trailers is not None
        assert trailers.entries() == [("x-checksum", b"abc")]
        (sent,) = up.requests
        assert sent.endswith(b"0\r\nx-signature: s1\r\n\r\n")


async def test_a_body_shorter_than_its_content_length_is_an_error_code(
    client: HttpClient,
) -> None:
    async with server(keep_alive_server) as up:
        request = get(up.port, "/upload")
        request.method = "PUT"
        request.headers = Fields([("content-length", b"10")])
        request.body = Body(BytesInputStream(b"short"))
        with pytest.raises(ErrorCode) as info:
            await client.send(request)
        assert info.value.case == "HTTP-request-body-size"
        assert up.requests == []  # never sent as a whole request


async def test_a_response_head_with_bare_line_feeds_fails_at_once(client: HttpClient) -> None:
    async def bare_lf(stream: trio.SocketStream, state: Server) -> None:
        await read_request(stream, bytearray())
        await stream.send_all(b"HTTP/1.1 200 OK\ncontent-length: 2\n\nhi")
        await trio.sleep_forever()  # the connection stays open: no end to wait for

    async with server(bare_lf) as up:
        with trio.fail_after(5), pytest.raises(ErrorCode) as info:
            await client.send(get(up.port))
        assert info.value.case == "HTTP-protocol-error"
