"""wasi:sockets from inside a Python guest: TCP and UDP on loopback, name lookup, and the
allow-list that denies everything by default."""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import pytest
import trio

import trio_isyswasfa
from trio_isyswasfa import NetPattern, WasiConfig

PROBE = "test:wasi/probe"

# Helpers the snippets share: addresses, and the start/finish dance awaited on pollables.
PRELUDE = """
NET = instance_network.instance_network()
V4 = network.IpAddressFamily.IPV4
WOULD_BLOCK = network.ErrorCode.WOULD_BLOCK

def v4(port, address=(127, 0, 0, 1)):
    return network.IpSocketAddress_Ipv4(network.Ipv4SocketAddress(port=port, address=address))

def code(e):
    return e.value.name.lower().replace('_', '-')

def outcomes(ops):
    out = []
    for op in ops:
        try:
            op()
            out.append('ok')
        except Err as e:
            out.append(code(e))
    return out

async def finish(sock, op):
    while True:
        try:
            return op()
        except Err as e:
            if e.value != WOULD_BLOCK:
                raise
            with sock.subscribe() as p:
                await wait_pollable(p)

async def connect(port):
    s = tcp_create_socket.create_tcp_socket(V4)
    s.start_connect(NET, v4(port))
    rx, tx = await finish(s, s.finish_connect)
    return s, rx, tx

async def listen(port=0):
    s = tcp_create_socket.create_tcp_socket(V4)
    s.start_bind(NET, v4(port))
    s.finish_bind()
    s.start_listen()
    s.finish_listen()
    return s
"""


async def run(inst: trio_isyswasfa.Instance, code: str) -> object:
    outcome = await inst.call(PROBE, "exec-async", PRELUDE + code)
    assert isinstance(outcome, trio_isyswasfa.Ok), outcome
    return eval(outcome.value)


@asynccontextmanager
async def tcp_server(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
) -> AsyncIterator[int]:
    """A trio TCP server on loopback for the duration; yields its port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def listening() -> tuple[socket.socket, int]:
    """A plain listening socket on loopback (for peers that run in threads) and its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server, server.getsockname()[1]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def probe(component: trio_isyswasfa.Component, *allow: str):  # type: ignore[no-untyped-def]
    return trio_isyswasfa.open_instance(component, wasi=WasiConfig(allow_net=list(allow)))


class TestDeniedByDefault:
    async def test_every_way_in_is_access_denied(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        code = """
async def main():
    return outcomes([lambda: tcp_create_socket.create_tcp_socket(V4),
                     lambda: udp_create_socket.create_udp_socket(V4),
                     lambda: ip_name_lookup.resolve_addresses(NET, 'localhost')])
"""
        async with probe(wasi_component) as inst:
            # a lookup fails as wasmtime's does when lookups are not allowed
            assert await run(inst, code) == ["access-denied"] * 2 + ["permanent-resolver-failure"]

    async def test_addresses_outside_the_allow_list_are_denied(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        allowed, other = free_port(), free_port()
        code = f"""
async def main():
    s = tcp_create_socket.create_tcp_socket(V4)
    return outcomes([lambda: s.start_connect(NET, v4({other})),  # another port
                     lambda: s.start_connect(NET, v4({allowed}, (10, 0, 0, 1))),  # host
                     lambda: s.start_bind(NET, v4(0))])  # any port
"""
        async with probe(wasi_component, f"127.0.0.1:{allowed}") as inst:
            assert await run(inst, code) == ["access-denied"] * 3


class TestTcp:
    async def test_guest_connects_to_a_host_server(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        async def shout(stream: trio.SocketStream) -> None:
            data = await stream.receive_some()
            await stream.send_all(data.upper())
            await stream.aclose()

        async with tcp_server(shout) as port:
            code = f"""
async def main():
    s, rx, tx = await connect({port})
    with s, rx, tx:
        await write_all(tx, b'hello over tcp')
        reply = await read_all(rx)
        return (reply, s.remote_address().value.port, s.is_listening())
"""
            async with probe(wasi_component, "127.0.0.1:*") as inst:
                assert await run(inst, code) == (b"HELLO OVER TCP", port, False)

    async def test_host_connects_to_a_guest_listener(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        port = free_port()
        code = f"""
async def main():
    with await listen({port}) as server:
        conn, rx, tx = await finish(server, server.accept)
        with conn, rx, tx:
            request = await read(rx)
            await write_all(tx, b'you said ' + request)
            peer = conn.remote_address().value.address
        return (request, peer, server.is_listening())
"""
        async with probe(wasi_component, f"127.0.0.1:{port}") as inst, trio.open_nursery() as n:
            result: list[object] = []

            async def guest() -> None:
                result.append(await run(inst, code))

            n.start_soon(guest)
            for _ in range(200):
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                    break
                except OSError:
                    await trio.sleep(0.01)
            async with stream:
                await stream.send_all(b"ping")
                reply = b""
                while chunk := await stream.receive_some():
                    reply += chunk
        assert reply == b"you said ping"
        assert result == [(b"ping", (127, 0, 0, 1), True)]

    async def test_listen_accept_and_connect_inside_one_guest(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        code = """
import asyncio
async def main():
    with await listen(0) as server:
        port = server.local_address().value.port
        async def serve():
            conn, rx, tx = await finish(server, server.accept)
            with conn, rx, tx:
                await write_all(tx, (await read_all(rx))[::-1])
        async def client():
            s, rx, tx = await connect(port)
            with s, rx:
                with tx:
                    await write_all(tx, b'stressed')
                    s.shutdown(tcp.ShutdownType.SEND)
                return await read_all(rx)
        _, reply = await asyncio.gather(serve(), client())
        return reply
"""
        async with probe(wasi_component, "127.0.0.1:*") as inst:
            assert await run(inst, code) == b"desserts"

    async def test_a_megabyte_each_way_with_backpressure(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        async def echo(stream: trio.SocketStream) -> None:
            async for chunk in stream:
                await stream.send_all(chunk)

        async with tcp_server(echo) as port:
            code = f"""
import asyncio
async def main():
    s, rx, tx = await connect({port})
    data = bytes(range(256)) * 4096
    async def send():
        with tx:
            await write_all(tx, data)
            s.shutdown(tcp.ShutdownType.SEND)
    async def receive():
        got = bytearray()
        while len(got) < len(data) and (chunk := await read(rx)) is not None:
            got += chunk
        return len(got), got == data
    with s, rx:
        _, got = await asyncio.gather(send(), receive())
    return got
"""
            async with probe(wasi_component, "127.0.0.1:*") as inst:
                assert await run(inst, code) == (1024 * 1024, True)

    async def test_refused_connection_and_state_errors(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        port = free_port()  # nobody listens there
        code = f"""
async def main():
    out = []
    s = tcp_create_socket.create_tcp_socket(V4)
    s.start_connect(NET, v4({port}))
    try:
        await finish(s, s.finish_connect)
    except Err as e:
        out.append(code(e))
    t = tcp_create_socket.create_tcp_socket(V4)
    return out + outcomes([t.finish_bind, t.start_listen, t.accept, t.local_address,
                           t.remote_address, lambda: t.start_connect(NET, v4(0))])
"""
        async with probe(wasi_component, "127.0.0.1:*") as inst:
            assert await run(inst, code) == [
                "connection-refused",
                "not-in-progress",
                "invalid-state",
                "invalid-state",
                "invalid-state",
                "invalid-state",
                "invalid-argument",
            ]

    async def test_options_read_back(self, wasi_component: trio_isyswasfa.Component) -> None:
        code = """
async def main():
    s = tcp_create_socket.create_tcp_socket(V4)
    s.set_keep_alive_enabled(True)
    s.set_keep_alive_idle_time(30 * 10**9)
    s.set_keep_alive_count(4)
    s.set_hop_limit(42)
    try:
        s.set_hop_limit(0)
        zero = 'ok'
    except Err as e:
        zero = code(e)
    return (s.keep_alive_enabled(), s.keep_alive_idle_time(), s.keep_alive_count(),
            s.hop_limit(), zero, s.address_family().name, s.receive_buffer_size() > 0)
"""
        async with probe(wasi_component, "127.0.0.1:*") as inst:
            assert await run(inst, code) == (
                True,
                30 * 10**9,
                4,
                42,
                "invalid-argument",
                "IPV4",
                True,
            )

    async def test_ipv6_loopback(self, wasi_component: trio_isyswasfa.Component) -> None:
        code = """
import asyncio
def v6(port):
    return network.IpSocketAddress_Ipv6(network.Ipv6SocketAddress(
        port=port, flow_info=0, address=(0, 0, 0, 0, 0, 0, 0, 1), scope_id=0))
async def main():
    server = tcp_create_socket.create_tcp_socket(network.IpAddressFamily.IPV6)
    server.start_bind(NET, v6(0))
    server.finish_bind()
    server.start_listen()
    server.finish_listen()
    port = server.local_address().value.port
    async def accept():
        conn, rx, tx = await finish(server, server.accept)
        with conn, rx, tx:
            return await read_all(rx), conn.remote_address().value.address
    async def send():
        s = tcp_create_socket.create_tcp_socket(network.IpAddressFamily.IPV6)
        try:
            s.start_connect(NET, v4(port))
        except Err as e:
            mixed = code(e)
        s.start_connect(NET, v6(port))
        rx, tx = await finish(s, s.finish_connect)
        with s, rx:
            with tx:
                await write_all(tx, b'over ipv6')
        return mixed
    received, mixed = await asyncio.gather(accept(), send())
    return received, mixed
"""
        async with probe(wasi_component, "[::1]:*") as inst:
            assert await run(inst, code) == (
                (b"over ipv6", (0, 0, 0, 0, 0, 0, 0, 1)),
                "invalid-argument",
            )


class TestUdp:
    async def test_datagrams_both_ways_with_a_host_socket(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        host = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await host.bind(("127.0.0.1", 0))
        host_port = host.getsockname()[1]
        code = f"""
async def main():
    u = udp_create_socket.create_udp_socket(V4)
    u.start_bind(NET, v4(0))
    u.finish_bind()
    rx, tx = u.stream(None)
    with u, rx, tx:
        tx.check_send()
        sent = tx.send([udp.OutgoingDatagram(data=b'ping', remote_address=v4({host_port}))])
        while True:
            got = rx.receive(10)
            if got:
                break
            with rx.subscribe() as p:
                await wait_pollable(p)
        return sent, [(d.data, d.remote_address.value.port) for d in got]
"""
        async with probe(wasi_component, "127.0.0.1:*") as inst, trio.open_nursery() as n:
            result: list[object] = []

            async def guest() -> None:
                result.append(await run(inst, code))

            n.start_soon(guest)
            with host:
                data, sender = await host.recvfrom(100)
                await host.sendto(b"pong:" + data, sender)
        assert result == [(1, [(b"pong:ping", host_port)])]

    async def test_a_connected_stream_talks_to_its_peer_only(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        code = """
def bound():
    u = udp_create_socket.create_udp_socket(V4)
    u.start_bind(NET, v4(0))
    u.finish_bind()
    return u
async def receive(rx):
    while not (got := rx.receive(10)):
        with rx.subscribe() as p:
            await wait_pollable(p)
    return [d.data for d in got]
async def main():
    a, b, stranger = bound(), bound(), bound()
    pa, pb = a.local_address().value.port, b.local_address().value.port
    a_rx, a_tx = a.stream(v4(pb))
    b_rx, b_tx = b.stream(v4(pa))
    s_rx, s_tx = stranger.stream(None)
    s_tx.check_send()
    s_tx.send([udp.OutgoingDatagram(data=b'not for you', remote_address=v4(pa))])
    b_tx.check_send()
    b_tx.send([udp.OutgoingDatagram(data=b'hello a', remote_address=None)])
    a_tx.check_send()
    try:
        a_tx.send([udp.OutgoingDatagram(data=b'x', remote_address=v4(pa))])
        wrong = 'sent'
    except Err as e:
        wrong = code(e)
    return (await receive(a_rx), a.remote_address().value.port == pb, wrong)
"""
        async with probe(wasi_component, "127.0.0.1:*") as inst:
            assert await run(inst, code) == ([b"hello a"], True, "invalid-argument")

    async def test_sending_outside_the_allow_list_is_denied(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        code = """
async def main():
    u = udp_create_socket.create_udp_socket(V4)
    u.start_bind(NET, v4(0))
    u.finish_bind()
    rx, tx = u.stream(None)
    tx.check_send()
    try:
        tx.send([udp.OutgoingDatagram(data=b'x', remote_address=v4(53, (10, 1, 2, 3)))])
        return 'sent'
    except Err as e:
        return code(e)
"""
        async with probe(wasi_component, "127.0.0.1:*") as inst:
            assert await run(inst, code) == "access-denied"

    async def test_a_stream_connected_outside_the_allow_list_is_denied(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        # the allow-list admits binding, and a host socket on another port is listening:
        # connecting the stream to it is denied, and nothing reaches it
        host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        host.bind(("127.0.0.1", 0))
        host.setblocking(False)
        host_port = host.getsockname()[1]
        allowed = free_port(socket.SOCK_DGRAM)
        code = f"""
async def main():
    u = udp_create_socket.create_udp_socket(V4)
    u.start_bind(NET, v4(0))
    u.finish_bind()
    try:
        rx, tx = u.stream(v4({host_port}))
    except Err as e:
        return code(e)
    tx.check_send()
    tx.send([udp.OutgoingDatagram(data=b'leaked', remote_address=None)])
    return 'sent'
"""
        async with probe(wasi_component, "127.0.0.1:0", f"127.0.0.1:{allowed}") as inst:
            assert await run(inst, code) == "access-denied"
        with host, pytest.raises(BlockingIOError):
            host.recv(100)

    async def test_sending_more_than_check_send_allowed_is_a_protocol_error(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        port = free_port(socket.SOCK_DGRAM)
        code = f"""
async def main():
    u = udp_create_socket.create_udp_socket(V4)
    u.start_bind(NET, v4(0))
    u.finish_bind()
    rx, tx = u.stream(None)
    allowed = tx.check_send()
    datagram = udp.OutgoingDatagram(data=b'x', remote_address=v4({port}))
    tx.send([datagram] * (allowed + 1))
"""
        async with probe(wasi_component, "127.0.0.1:*") as inst:
            with pytest.raises(trio_isyswasfa.GuestProtocolError, match="check-send"):
                await inst.call(PROBE, "exec-async", PRELUDE + code)


class TestNameLookup:
    async def test_localhost_and_literals_resolve(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        code = """
async def main():
    out = {}
    for name in ('localhost', '127.0.0.1', '[::1]'):
        stream = ip_name_lookup.resolve_addresses(NET, name)
        found = []
        while True:
            try:
                a = stream.resolve_next_address()
            except Err as e:
                if e.value != WOULD_BLOCK:
                    raise
                with stream.subscribe() as p:
                    await wait_pollable(p)
                continue
            if a is None:
                break
            found.append(a.value)
        out[name] = found
    try:
        ip_name_lookup.resolve_addresses(NET, 'not a name')
        bad = 'ok'
    except Err as e:
        bad = code(e)
    return out, bad
"""
        async with probe(wasi_component, "127.0.0.1:*") as inst:
            found, bad = await run(inst, code)  # type: ignore[misc]
        assert (127, 0, 0, 1) in found["localhost"]
        assert found["127.0.0.1"] == [(127, 0, 0, 1)]
        assert found["[::1]"] == [(0, 0, 0, 0, 0, 0, 0, 1)]
        assert bad == "invalid-argument"


class TestPatterns:
    @pytest.mark.parametrize(
        ("spec", "address", "port", "expected"),
        [
            ("127.0.0.1:*", "127.0.0.1", 80, True),
            ("127.0.0.1:*", "127.0.0.2", 80, False),
            ("localhost:8000-8999", "127.0.0.5", 8080, True),
            ("localhost:8000-8999", "::1", 9000, False),
            ("10.0.0.0/8:443", "10.9.8.7", 443, True),
            ("[::1]:80", "::1", 80, True),
            ("[::1]:80", "::ffff:127.0.0.1", 80, False),
            ("127.0.0.1:80", "::ffff:127.0.0.1", 80, True),
            ("*:*", "203.0.113.9", 1, True),
        ],
    )
    def test_matching(self, spec: str, address: str, port: int, expected: bool) -> None:
        import ipaddress

        assert NetPattern.parse(spec).matches(ipaddress.ip_address(address), port) is expected

    @pytest.mark.parametrize(
        "spec",
        [
            *("", "127.0.0.1", "example.com:80", "::1:80", "[::1:80", "1.2.3.4:x", "*:70000"),
            # int() takes each of these ports as 80: a port is ASCII digits only
            *("1.2.3.4:٨٠", "1.2.3.4:+80", "1.2.3.4:8_0", "1.2.3.4: 80", "1.2.3.4:1-٨٠"),
        ],
    )
    def test_malformed_patterns_are_refused(self, spec: str) -> None:
        with pytest.raises(trio_isyswasfa.HostProtocolError, match="bad network pattern"):
            WasiConfig(allow_net=[spec])


class TestBlockingPoll:
    async def test_poll_waits_on_several_sockets_and_a_deadline(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        # wasi:io/poll.poll blocks (holding the loop, as a native host's thread) until
        # one of the sockets or the deadline is ready
        code = """
async def main():
    idle, server = await listen(0), await listen(0)
    client = tcp_create_socket.create_tcp_socket(V4)
    client.start_connect(NET, v4(server.local_address().value.port))
    with idle.subscribe() as a, client.subscribe() as b:
        first = poll.poll([a, b])
    with idle.subscribe() as a, monotonic_clock.subscribe_duration(10**7) as later:
        second = poll.poll([a, later])
    return first, second
"""
        async with probe(wasi_component, "127.0.0.1:*") as inst:
            assert await run(inst, code) == ([1], [1])

    async def test_two_tasks_awaiting_one_socket_share_its_wait(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        # each task has a subscription of its own to one listener: one OS wait serves
        # both (two would be refused by the event loop: one waiter per socket)
        code = """
import asyncio
async def main():
    server = await listen(0)
    async def wait():
        with server.subscribe() as p:
            await wait_pollable(p)
        return 'woke'
    waiters = [asyncio.ensure_future(wait()) for _ in range(2)]
    await asyncio.sleep(0.02)
    client = tcp_create_socket.create_tcp_socket(V4)
    client.start_connect(NET, v4(server.local_address().value.port))
    woken = await asyncio.gather(*waiters)
    with server, client:
        return woken
"""
        async with probe(wasi_component, "127.0.0.1:*") as inst:
            assert await run(inst, code) == ["woke", "woke"]
            assert inst.statistics().host_tasks_started == 1


class TestDropWhileWaited:
    async def test_a_socket_dropped_while_a_task_awaits_it_frees_its_number(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        # a spawned guest task keeps awaiting a listener's pollable while the guest drops
        # the listener; the next socket likely gets the same file descriptor number and
        # must be awaitable (the host's wait on the old one is woken and ends)
        code = """
import asyncio
async def main():
    server = await listen(0)
    p = server.subscribe()
    waiter = asyncio.ensure_future(wait_pollable(p))
    await asyncio.sleep(0.02)
    server.__exit__(None, None, None)
    await waiter
    p.__exit__(None, None, None)
    again = await listen(0)
    s, rx, tx = await connect(again.local_address().value.port)
    conn, crx, ctx = await finish(again, again.accept)
    with s, rx, tx, conn, crx, ctx, again:
        await write_all(tx, b'still works')
        return await read(crx)
"""
        async with probe(wasi_component, "127.0.0.1:*") as inst:
            assert await run(inst, code) == b"still works"


class TestCPythonSocketModule:
    """Unmodified CPython socket code in a guest: wasi-libc's blocking calls wait in the
    host (holding the event loop, as a native host's thread is held), so the peer here
    is a plain thread."""

    async def test_create_connection_send_and_receive(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        server, port = listening()

        def shout() -> None:
            with server, server.accept()[0] as conn:
                conn.sendall(conn.recv(100).upper())

        thread = threading.Thread(target=shout, daemon=True)
        thread.start()
        code = (
            f"with socket.create_connection(('localhost', {port})) as s:\n"
            "    s.sendall(b'plain python sockets')\n"
            "    result = (s.recv(100), s.getpeername())"
        )
        async with probe(wasi_component, "127.0.0.1:*") as inst:
            outcome = await inst.call(PROBE, "exec", code)
        thread.join(5)
        assert outcome == trio_isyswasfa.Ok(repr((b"PLAIN PYTHON SOCKETS", ("127.0.0.1", port))))

    async def test_without_the_allow_list_python_sees_permission_errors(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        async with probe(wasi_component) as inst:
            outcome = await inst.call(PROBE, "exec", "socket.socket()")
            # create_connection looks the address up first: that fails as on wasmtime
            lookup = await inst.call(PROBE, "exec", "socket.create_connection(('127.0.0.1', 9))")
        assert isinstance(outcome, trio_isyswasfa.Err)
        assert "PermissionError" in outcome.value
        assert lookup == trio_isyswasfa.Err("gaierror: Non-recoverable error")

    @pytest.mark.timeout(30, func_only=True)  # without the run limit it would never end
    async def test_a_blocking_name_lookup_is_bounded_by_max_run_seconds(
        self,
        wasi_component: trio_isyswasfa.Component,
        monkeypatch: pytest.MonkeyPatch,
        autojump_clock: trio.testing.MockClock,
    ) -> None:
        # a resolver that hangs (as one whose server does not answer) for one name
        real = anyio.getaddrinfo

        async def hanging(host: Any, *args: Any, **kwargs: Any) -> Any:
            if host == "hangs.example":
                await trio.sleep_forever()
            return await real(host, *args, **kwargs)

        monkeypatch.setattr(anyio, "getaddrinfo", hanging)
        limits = trio_isyswasfa.Limits(max_run_seconds=0.5)
        async with trio_isyswasfa.open_instance(
            wasi_component, wasi=WasiConfig(allow_net=["127.0.0.1:*"]), limits=limits
        ) as inst:
            start = trio.current_time()
            with pytest.raises(trio_isyswasfa.GuestTrap, match="blocked in a host call"):
                await inst.call(PROBE, "exec", "socket.getaddrinfo('hangs.example', 80)")
            # on trio's (here virtual) clock, the limit's wait ends the call at 0.5 s
            assert trio.current_time() - start <= 0.5

    @pytest.mark.timeout(30, func_only=True)  # without the run limit it would never end
    async def test_a_blocking_read_is_bounded_by_max_run_seconds(
        self, wasi_component: trio_isyswasfa.Component
    ) -> None:
        server, port = listening()
        code = f"s = socket.create_connection(('127.0.0.1', {port}))\nresult = s.recv(100)"
        limits = trio_isyswasfa.Limits(max_run_seconds=0.5)
        with server:  # accepts (the kernel does), never answers
            async with trio_isyswasfa.open_instance(
                wasi_component, wasi=WasiConfig(allow_net=["127.0.0.1:*"]), limits=limits
            ) as inst:
                # unbounded, the read would wait until the test's time limit fails it
                with pytest.raises(trio_isyswasfa.GuestTrap, match="blocked in a host call"):
                    await inst.call(PROBE, "exec", code)
            # the guest had connected before it was stopped: its connection is queued
            server.setblocking(False)
            server.accept()[0].close()
