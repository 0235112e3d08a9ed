"""TCP and UDP on loopback through CPython's socket module (wasi-libc's sockets over
wasi:sockets 0.2): one process is server and client at once. Each check prints what it
saw and a FAIL line when that is not what wasmtime does.

Modes (argv[1]): ``all`` (the network granted), ``denied`` (no network: every host's
default), ``outside`` (addresses outside loopback: wasmtime, granted every address, lets
them be bound; our host, granted only loopback, denies them).
"""
# run: net=all -- all
# run denied: -- denied
# run outside: net=localhost -- outside

import contextlib
import errno
import os
import select
import socket
import sys

from wit_world import exports

failures = 0


def check(label: str, got: object, want: object) -> None:
    global failures
    print(f"{label}: {got!r}")
    if got != want:
        print(f"FAIL {label}: want {want!r}")
        failures += 1


def error_of(fn, *args) -> str:  # type: ignore[no-untyped-def]
    """``ok``, or the errno name ``fn(*args)`` raised."""
    try:
        fn(*args)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "ok"


def option(sock: socket.socket, level: int, name: int, value: int | None = None) -> object:
    """``getsockopt`` (``value`` None) or ``setsockopt``: the value or ``ok``, else the
    errno name."""
    try:
        if value is None:
            return sock.getsockopt(level, name)
        sock.setsockopt(level, name, value)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "ok"


def wait(sock: socket.socket, *, write: bool = False, timeout: float = 10.0) -> bool:
    """Whether ``sock`` became readable (or writable) within ``timeout`` seconds."""
    r, w, _ = select.select([] if write else [sock], [sock] if write else [], [], timeout)
    return bool(r or w)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def tcp() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # wasi-libc: EINVAL (Linux answers 0.0.0.0:0)
    check("tcp: getsockname before bind", error_of(server.getsockname), "EINVAL")
    check("tcp: bind 127.0.0.1:0", error_of(server.bind, ("127.0.0.1", 0)), "ok")
    host, port = server.getsockname()
    check("tcp: bound to loopback, a port chosen", (host, port > 0), ("127.0.0.1", True))
    check("tcp: bind twice", error_of(server.bind, ("127.0.0.1", 0)), "EINVAL")
    check("tcp: listen", error_of(server.listen, 8), "ok")
    other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    check("tcp: bind a port in use", error_of(other.bind, ("127.0.0.1", port)), "EADDRINUSE")
    other.close()
    check("tcp: getpeername of a listener", error_of(server.getpeername), "ENOTCONN")

    server.setblocking(False)
    check("tcp: accept with nobody waiting", error_of(server.accept), "EAGAIN")
    server.setblocking(True)

    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    check("tcp: recv before connect", error_of(client.recv, 1), "ENOTCONN")
    check("tcp: connect", error_of(client.connect, ("127.0.0.1", port)), "ok")
    conn, peer = server.accept()
    check("tcp: accepted the client's address", peer == client.getsockname(), True)
    check("tcp: client's peer is the server", client.getpeername() == ("127.0.0.1", port), True)
    check("tcp: accepted socket's own address", conn.getsockname() == ("127.0.0.1", port), True)
    check("tcp: connect again", error_of(client.connect, ("127.0.0.1", port)), "EISCONN")

    client.sendall(b"ping")
    check("tcp: server receives", recv_exactly(conn, 4), b"ping")
    conn.sendall(b"pong")
    check("tcp: client receives", recv_exactly(client, 4), b"pong")

    conn.setblocking(False)
    check("tcp: recv with nothing sent", error_of(conn.recv, 16), "EAGAIN")

    # 1 MiB each way, interleaved on non-blocking sockets: neither side may stall
    client.setblocking(False)
    payload = bytes(range(256)) * 4096
    sent = received = 0
    back = bytearray()
    rounds = 0
    while (sent < len(payload) or received < len(payload)) and rounds < 100_000:
        rounds += 1
        want_write = [client] if sent < len(payload) else []
        readable, writable, _ = select.select([conn], want_write, [], 10.0)
        if not readable and not writable:
            break
        if writable:
            with contextlib.suppress(BlockingIOError):
                sent += client.send(payload[sent : sent + 65536])
        if readable:
            try:
                chunk = conn.recv(65536)
            except BlockingIOError:
                chunk = b""
            received += len(chunk)
            back += chunk
    check("tcp: 1 MiB sent", sent, len(payload))
    check("tcp: 1 MiB received intact", bytes(back) == payload, True)
    client.setblocking(True)
    conn.setblocking(True)

    check("tcp: shutdown write", error_of(client.shutdown, socket.SHUT_WR), "ok")
    check("tcp: server sees end of stream", conn.recv(16), b"")
    conn.sendall(b"after shutdown")
    check("tcp: client still receives", recv_exactly(client, 14), b"after shutdown")
    # wasi-libc: ESHUTDOWN (Linux answers EPIPE)
    check("tcp: send after shutdown", error_of(client.send, b"x"), "ESHUTDOWN")
    conn.close()
    check("tcp: end of stream after the peer closes", client.recv(16), b"")
    client.close()

    # non-blocking connect: in progress or done at once (both are POSIX), then writable
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)
    started = error_of(client.connect, ("127.0.0.1", port))
    print(f"tcp: non-blocking connect started: {started in ('ok', 'EINPROGRESS')}")
    check("tcp: becomes writable", wait(client, write=True), True)
    check("tcp: SO_ERROR after connect", client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), 0)
    conn, _ = server.accept()
    conn.close()
    client.close()

    # options as programs set them
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    check("tcp: SO_KEEPALIVE", sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    check("tcp: TCP_NODELAY", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0, True)
    check("tcp: SO_TYPE", sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    print(f"tcp: SO_RCVBUF at least what was set: {rcvbuf >= 65536}")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    print(f"tcp: SO_SNDBUF at least what was set: {sndbuf >= 65536}")
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        number = getattr(socket, name)
        check(f"tcp: set {name} {value}", option(sock, socket.IPPROTO_TCP, number, value), "ok")
        check(f"tcp: {name}", option(sock, socket.IPPROTO_TCP, number), value)
    print(f"tcp: set TCP_KEEPIDLE 0: {option(sock, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 0)}")
    check("tcp: set IP_TTL 33", option(sock, socket.IPPROTO_IP, socket.IP_TTL, 33), "ok")
    check("tcp: IP_TTL", option(sock, socket.IPPROTO_IP, socket.IP_TTL), 33)
    print(f"tcp: set IP_TTL 0: {option(sock, socket.IPPROTO_IP, socket.IP_TTL, 0)}")
    for name in ("SO_REUSEADDR", "SO_ACCEPTCONN", "SO_DOMAIN", "SO_PROTOCOL"):
        print(f"tcp: {name}: {option(sock, socket.SOL_SOCKET, getattr(socket, name))}")
    sock.close()
    six = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    v6only = option(six, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    print(f"tcp6: IPV6_V6ONLY: {v6only}")
    hops = socket.IPV6_UNICAST_HOPS
    check("tcp6: set IPV6_UNICAST_HOPS 44", option(six, socket.IPPROTO_IPV6, hops, 44), "ok")
    check("tcp6: IPV6_UNICAST_HOPS", option(six, socket.IPPROTO_IPV6, hops), 44)
    six.close()

    # errors
    gone = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    gone.bind(("127.0.0.1", 0))
    closed_port = gone.getsockname()[1]
    gone.close()
    refused = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    check(
        "tcp: connect to a closed port",
        error_of(refused.connect, ("127.0.0.1", closed_port)),
        "ECONNREFUSED",
    )
    refused.close()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    check("tcp: connect to port 0", error_of(sock.connect, ("127.0.0.1", 0)), "EINVAL")
    check(
        "tcp: bind an address of no interface",
        error_of(sock.bind, ("192.0.2.1", 0)),
        "EADDRNOTAVAIL",
    )
    sock.close()
    server.close()

    # IPv6 loopback
    six = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    check("tcp6: bind [::1]:0", error_of(six.bind, ("::1", 0)), "ok")
    six.listen(1)
    port6 = six.getsockname()[1]
    client = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    check("tcp6: connect", error_of(client.connect, ("::1", port6)), "ok")
    conn, peer = six.accept()
    check("tcp6: accepted address is ::1", peer[0], "::1")
    client.sendall(b"six")
    check("tcp6: receives", recv_exactly(conn, 3), b"six")
    for s in (conn, client, six):
        s.close()
    four = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        four.bind(("::1", 0))
        mismatch = "bound"
    except OSError as exc:
        mismatch = str(exc)
    check("tcp: bind an IPv4 socket to ::1", mismatch, "unknown address family")
    four.close()


def lookup() -> None:
    # names as bytes: a str goes through the idna codec, which the guest does not bundle
    def addresses(name: bytes, family: int) -> object:
        try:
            infos = socket.getaddrinfo(name, 80, family, socket.SOCK_STREAM)
        except OSError as exc:
            return f"{type(exc).__name__} {exc.errno}"
        return sorted({info[4][0] for info in infos})

    inet, inet6, unspec = socket.AF_INET, socket.AF_INET6, socket.AF_UNSPEC
    check("lookup: an IPv4 literal", addresses(b"127.0.0.1", inet), ["127.0.0.1"])
    check("lookup: an IPv6 literal", addresses(b"::1", inet6), ["::1"])
    check("lookup: localhost, IPv4", addresses(b"localhost", inet), ["127.0.0.1"])
    print(f"lookup: localhost, any family: {addresses(b'localhost', unspec)}")
    print(f"lookup: a name with a space: {addresses(b'bad name', inet)}")


def udp() -> None:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    check("udp: bind a", error_of(a.bind, ("127.0.0.1", 0)), "ok")
    check("udp: bind b", error_of(b.bind, ("127.0.0.1", 0)), "ok")
    a_addr, b_addr = a.getsockname(), b.getsockname()
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    check("udp: bind a port in use", error_of(c.bind, a_addr), "EADDRINUSE")
    c.close()

    check("udp: sendto", a.sendto(b"one", b_addr), 3)
    data, sender = b.recvfrom(100)
    check("udp: recvfrom", (data, sender == a_addr), (b"one", True))
    a.sendto(b"x" * 60000, b_addr)
    data, sender = b.recvfrom(65536)
    check("udp: a 60000-byte datagram", (len(data), sender == a_addr), (60000, True))
    a.sendto(b"truncated", b_addr)
    check("udp: a short read truncates the datagram", b.recv(4), b"trun")

    b.setblocking(False)
    check("udp: recv with nothing sent", error_of(b.recv, 100), "EAGAIN")
    b.setblocking(True)
    check("udp: send without a peer", error_of(a.send, b"x"), "EDESTADDRREQ")

    check("udp: connect", error_of(a.connect, b_addr), "ok")
    check("udp: connected peer", a.getpeername() == b_addr, True)
    check("udp: send when connected", a.send(b"two"), 3)
    data, sender = b.recvfrom(100)
    check("udp: received", (data, sender == a_addr), (b"two", True))
    third = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    third.bind(("127.0.0.1", 0))
    third.sendto(b"stranger", a_addr)
    b.sendto(b"peer", a_addr)
    a.settimeout(10.0)
    check("udp: a connected socket hears only its peer", a.recv(100), b"peer")
    third.close()

    check("udp: set IP_TTL 7", option(b, socket.IPPROTO_IP, socket.IP_TTL, 7), "ok")
    check("udp: IP_TTL", option(b, socket.IPPROTO_IP, socket.IP_TTL), 7)
    check("udp: SO_TYPE", option(b, socket.SOL_SOCKET, socket.SO_TYPE), socket.SOCK_DGRAM)
    print(f"udp: SO_RCVBUF positive: {b.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > 0}")
    a.close()
    b.close()
    # a datagram to a closed port is lost, or refused afterwards on a connected socket
    gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gone.bind(("127.0.0.1", 0))
    closed = gone.getsockname()
    gone.close()
    d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    check("udp: sendto a closed port", d.sendto(b"lost", closed), 4)
    d.close()


def denied() -> None:
    check(
        "no network: TCP socket",
        error_of(socket.socket, socket.AF_INET, socket.SOCK_STREAM),
        "EACCES",
    )
    check(
        "no network: UDP socket",
        error_of(socket.socket, socket.AF_INET, socket.SOCK_DGRAM),
        "EACCES",
    )
    try:
        socket.getaddrinfo(b"localhost", 80, socket.AF_INET)
        lookup = "resolved"
    except OSError as exc:
        lookup = f"{type(exc).__name__} {exc.errno}"
    # EAI_FAIL: wasi:sockets' permanent-resolver-failure
    check("no network: look up localhost", lookup, "gaierror -4")


def outside() -> None:
    """Binding beyond loopback: allowed on wasmtime (granted every address)."""
    for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        for kind, name in ((socket.SOCK_STREAM, "tcp"), (socket.SOCK_DGRAM, "udp")):
            sock = socket.socket(family, kind)
            check(
                f"{name}: bind {address} (all interfaces)", error_of(sock.bind, (address, 0)), "ok"
            )
            sock.close()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    check("tcp: bind 127.0.0.1", error_of(sock.bind, ("127.0.0.1", 0)), "ok")
    sock.close()


class Run(exports.Run):
    def run(self) -> None:
        mode = sys.argv[1]
        {"all": lambda: (tcp(), udp(), lookup()), "denied": denied, "outside": outside}[mode]()
        print(f"{failures} failed", flush=True)
        if failures:
            os._exit(1)
