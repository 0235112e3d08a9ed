"""wasi:sockets 0.2: TCP, UDP and name lookup on non-blocking host sockets.

Nothing is allowed by default: every address a guest binds, connects or sends to
must match the instance's allow-list (``WasiConfig(allow_net=[...])``, the CLI's
``--allow-net``), or the operation answers ``access-denied``; name lookups are
allowed only when the allow-list is not empty (else ``permanent-resolver-failure``,
as wasmtime answers).

Each socket is a plain non-blocking :mod:`socket`; host functions never wait (WASI 0.2
host calls cannot suspend). What a guest awaits is a pollable whose ``wait`` is
``anyio.wait_readable`` / ``wait_writable`` on the socket, so waiting is the event
loop's own (trio or asyncio). A name is resolved by the first wait on its stream's
pollable (``anyio.getaddrinfo``, a worker thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import ipaddress
import re
import select
import socket
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from .._engine import Blocking, ResourceKind, own, record, variant, variant_case
from .._errors import GuestProtocolError, HostProtocolError, WasiError
from ._context import WasiContext
from .io import (
    CHUNK,
    FillPollable,
    HostWaits,
    InputStream,
    OutputStream,
    Pollable,
    ReadyPollable,
    RoomPollable,
    StreamClosed,
    StreamFailed,
    flushed,
)

NETWORK = "wasi:sockets/network"
TCP = "wasi:sockets/tcp"
UDP = "wasi:sockets/udp"
LOOKUP = "wasi:sockets/ip-name-lookup"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# -- the allow-list ---------------------------------------------------------------------

_LOCALHOST = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
_PORTS = re.compile(r"([0-9]+)(?:-([0-9]+))?")  # a pattern's PORT: a number or LOW-HIGH


@dataclass(frozen=True)
class NetPattern:
    """Addresses a guest may bind, connect or send to: ``HOST:PORT``.

    HOST is ``*``, an IP address (``[…]`` around IPv6), a network in CIDR form
    (``10.0.0.0/8``, ``[fd00::]/8``) or ``localhost`` (127.0.0.0/8 and ::1). PORT is
    ``*``, a number or a range ``LOW-HIGH``. Binding to port 0 (any free port) needs a
    PORT that includes 0, such as ``*``.
    """

    networks: tuple[IPNetwork, ...] | None  # None: any address
    ports: tuple[int, int]

    @classmethod
    def parse(cls, spec: str) -> NetPattern:
        """Parse ``HOST:PORT``; a malformed pattern raises HostProtocolError."""

        def bad(why: str) -> HostProtocolError:
            return HostProtocolError(f"bad network pattern {spec!r}: {why}")

        host, sep, port = spec.rpartition(":")
        if not sep or not host or not port:
            raise bad("expected HOST:PORT (HOST may be *, an address, a CIDR network or localhost)")
        networks: tuple[IPNetwork, ...] | None
        if host == "*":
            networks = None
        elif host == "localhost":
            networks = _LOCALHOST
        else:
            if host.startswith("["):
                inner, close, rest = host[1:].partition("]")
                if not close:
                    raise bad("unclosed [")
                host = inner + rest
            elif host.count(":") > 0:
                raise bad("write an IPv6 address in brackets, as [::1]:80")
            try:
                networks = (ipaddress.ip_network(host, strict=False),)
            except ValueError:
                raise bad(
                    f"{host!r} is not an IP address or network (names are not allowed: "
                    "sockets see addresses)"
                ) from None
        if port == "*":
            ports = (0, 65535)
        else:
            # (ASCII digits only: int() also takes ' 80', '+80', '8_0' and '٨٠')
            found = _PORTS.fullmatch(port)
            if found is None:
                raise bad(f"port {port!r} is not *, a number or LOW-HIGH")
            low, high = found.groups()
            ports = (int(low), int(high or low))
            if not 0 <= ports[0] <= ports[1] <= 65535:
                raise bad(f"port {port!r} is out of range")
        return cls(networks, ports)

    def matches(self, address: IPAddress, port: int) -> bool:
        """Whether ``address:port`` falls inside this pattern."""
        if not self.ports[0] <= port <= self.ports[1]:
            return False
        if self.networks is None:
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self.networks)


def parse_allow_net(patterns: Iterable[str | NetPattern]) -> tuple[NetPattern, ...]:
    """The allow-list of ``WasiConfig.allow_net``, patterns parsed."""
    return tuple(p if isinstance(p, NetPattern) else NetPattern.parse(p) for p in patterns)


# -- addresses --------------------------------------------------------------------------

_FAMILY = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
_MAX_KEEP_ALIVE_COUNT = 127
"""Linux's most keep-alive probes (``TCP_KEEPCNT``), the least of the platforms': a
larger count is clamped to it, as wasmtime does (past it Linux answers ``EINVAL``)."""


def _family_name(family: int) -> str:
    return "ipv4" if family == socket.AF_INET else "ipv6"


def _enum_name(value: Any) -> str:
    """A WIT enum value a guest passed (wasmtime-py gives its case name)."""
    if isinstance(value, str):
        return value
    raise GuestProtocolError(f"expected an enum case, got {value!r}")


def lift_socket_address(value: Any) -> tuple[IPAddress, int, int, int]:
    """A guest's ``ip-socket-address`` as (address, port, flow-info, scope-id)."""
    tag, payload = variant_case(value)
    if tag == "ipv4":
        return ipaddress.IPv4Address(bytes(payload.address)), payload.port, 0, 0
    if tag == "ipv6":
        packed = b"".join(int(x).to_bytes(2, "big") for x in payload.address)
        return (
            ipaddress.IPv6Address(packed),
            payload.port,
            getattr(payload, "flow-info"),
            getattr(payload, "scope-id"),
        )
    raise GuestProtocolError(f"unknown ip-socket-address case {tag!r}")


def _ip_tuple(address: IPAddress) -> tuple[int, ...]:
    if isinstance(address, ipaddress.IPv4Address):
        return tuple(address.packed)
    packed = address.packed
    return tuple(int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2))


def lower_ip_address(address: IPAddress) -> Any:
    """An ``ip-address`` value for the guest."""
    tag = "ipv4" if isinstance(address, ipaddress.IPv4Address) else "ipv6"
    return variant(tag, _ip_tuple(address))


def lower_socket_address(sockaddr: Any) -> Any:
    """An ``ip-socket-address`` value for the guest, from a Python sockaddr."""
    address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
    if isinstance(address, ipaddress.IPv4Address):
        return variant("ipv4", record(port=sockaddr[1], address=_ip_tuple(address)))
    return variant(
        "ipv6",
        record(
            port=sockaddr[1],
            address=_ip_tuple(address),
            **{"flow-info": sockaddr[2], "scope-id": sockaddr[3]},
        ),
    )


def _sockaddr(family: int, address: IPAddress, port: int, flow: int, scope: int) -> Any:
    """A Python sockaddr for ``family``, checking the address belongs to it."""
    if family == socket.AF_INET:
        if not isinstance(address, ipaddress.IPv4Address):
            raise WasiError("invalid-argument", "an IPv6 address for an IPv4 socket")
        return (str(address), port)
    if not isinstance(address, ipaddress.IPv6Address):
        raise WasiError("invalid-argument", "an IPv4 address for an IPv6 socket")
    if address.ipv4_mapped is not None:
        # WASI sockets are single-stack: IPv4-mapped addresses are refused
        raise WasiError("invalid-argument", "IPv4-mapped IPv6 addresses are not supported")
    return (str(address), port, flow, scope)


_ERRNO_CODES = {
    errno.EACCES: "access-denied",
    errno.EPERM: "access-denied",
    errno.EADDRINUSE: "address-in-use",
    errno.EADDRNOTAVAIL: "address-not-bindable",
    errno.ECONNREFUSED: "connection-refused",
    errno.ECONNRESET: "connection-reset",
    errno.EPIPE: "connection-reset",
    errno.ECONNABORTED: "connection-aborted",
    errno.ENETUNREACH: "remote-unreachable",
    errno.EHOSTUNREACH: "remote-unreachable",
    errno.ENETDOWN: "remote-unreachable",
    errno.ETIMEDOUT: "timeout",
    errno.EMSGSIZE: "datagram-too-large",
    errno.EINVAL: "invalid-argument",
    errno.ENOMEM: "out-of-memory",
    errno.ENOBUFS: "out-of-memory",
    errno.EAFNOSUPPORT: "not-supported",
    errno.EOPNOTSUPP: "not-supported",
    errno.EPROTONOSUPPORT: "not-supported",
    errno.EMFILE: "new-socket-limit",
    errno.ENFILE: "new-socket-limit",
}


def socket_error(exc: OSError) -> WasiError:
    """The WASI ``error-code`` for a host socket error."""
    code = _ERRNO_CODES.get(exc.errno or 0, "unknown")
    return WasiError(code, exc.strerror or str(exc))


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def _writable(sock: socket.socket) -> bool:
    return bool(select.select([], [sock], [], 0)[1])


class _SocketPollable(Pollable):
    """Ready when the socket is readable (or writable)."""

    def __init__(self, sock: socket.socket, *, write: bool) -> None:
        self._sock = sock
        self._write = write

    def ready(self) -> bool:
        if self._sock.fileno() < 0:
            return True
        return _writable(self._sock) if self._write else _readable(self._sock)

    async def wait(self) -> None:
        if self._sock.fileno() < 0:
            return
        try:
            if self._write:
                await anyio.wait_writable(self._sock)
            else:
                await anyio.wait_readable(self._sock)
        except anyio.ClosedResourceError:
            pass  # closed while we waited: ready (the next operation says so)

    def source(self) -> Hashable:
        # one OS wait per socket and direction (trio allows no second one anyway)
        return (self._sock, self._write)


class _Shared:
    """An OS socket shared by a socket resource and its streams; closed with the last."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.users = 1
        self._lock = threading.Lock()  # a closed output stream may finish in a thread
        self.sending: threading.Thread | None = None  # that thread, while it sends

    def retain(self) -> _Shared:
        with self._lock:
            self.users += 1
        return self

    def release(self) -> None:
        with self._lock:
            self.users -= 1
            last = self.users == 0
        if last:
            # wake any wait still registered for this file descriptor (a guest may drop
            # a socket a spawned task still awaits), so the number can be reused
            with contextlib.suppress(RuntimeError):  # not on the loop's thread: none
                anyio.notify_closing(self.sock)
            self.sock.close()


# -- TCP --------------------------------------------------------------------------------


class TcpInputStream(InputStream):
    """What a connected TCP socket receives."""

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared.retain()
        self.shut = False

    def read(self, n: int) -> bytes:
        if self.shut:
            raise StreamClosed
        try:
            data = self._shared.sock.recv(n)
        except BlockingIOError:
            return b""
        except OSError as exc:
            err = socket_error(exc)
            raise StreamFailed(str(err), err.code) from None
        if not data and n:
            raise StreamClosed
        return data

    def subscribe(self) -> Pollable:
        return ReadyPollable() if self.shut else _SocketPollable(self._shared.sock, write=False)

    def close(self) -> None:
        self._shared.release()


class TcpOutputStream(OutputStream):
    """What a connected TCP socket sends: a bounded buffer that drains into the socket
    whenever the guest touches the stream or its pollable."""

    def __init__(self, shared: _Shared, capacity: int = CHUNK) -> None:
        self._shared = shared.retain()
        self._capacity = capacity
        self._buffer = bytearray()
        self._failed: StreamFailed | None = None
        self.shut = False

    def _drain(self) -> None:
        while self._buffer and self._failed is None:
            try:
                sent = self._shared.sock.send(self._buffer)
            except BlockingIOError:
                return
            except OSError as exc:
                err = socket_error(exc)
                self._failed = StreamFailed(str(err), err.code)
                return
            del self._buffer[:sent]

    def check_write(self) -> int:
        if self.shut:
            raise StreamClosed
        self._drain()
        if self._failed is not None:
            raise self._failed
        return self._capacity - len(self._buffer)

    def write(self, data: bytes) -> None:
        self._buffer += data
        self._drain()

    def flush(self) -> None:
        self._drain()

    def subscribe(self) -> Pollable:
        # level-triggered: ready whenever there is room, however the buffer changes later
        return ReadyPollable() if self.shut else RoomPollable(self)

    def has_room(self) -> bool:
        self._drain()
        return len(self._buffer) < self._capacity or self._failed is not None

    async def drain(self) -> None:
        try:
            while not self.has_room():
                await anyio.wait_writable(self._shared.sock)
        except anyio.ClosedResourceError:
            pass

    def close(self) -> None:
        if self._buffer and self._failed is None:
            # the guest wrote and let go: the rest still goes out, as from a kernel
            # socket buffer, from a worker thread that holds the socket until then
            rest = threading.Thread(
                target=_send_rest, args=(self._shared, bytes(self._buffer)), daemon=True
            )
            self._shared.sending = rest
            rest.start()
            self._buffer.clear()
            return
        self._shared.release()


def _send_rest(shared: _Shared, data: bytes, timeout: float = 30.0) -> None:
    view = memoryview(data)
    try:
        while view:
            if not select.select([], [shared.sock], [], timeout)[1]:
                return
            try:
                view = view[shared.sock.send(view) :]
            except BlockingIOError:
                continue
    except OSError:
        pass
    finally:
        shared.release()


class TcpSocket:
    """A ``wasi:sockets/tcp.tcp-socket`` and its WASI state machine."""

    def __init__(self, shared: _Shared, family: int, state: str = "unbound") -> None:
        self.shared = shared
        self.family = family
        self.state = state
        self.backlog = 128
        self.input: TcpInputStream | None = None
        self.output: TcpOutputStream | None = None

    @property
    def sock(self) -> socket.socket:
        return self.shared.sock

    def streams(self) -> tuple[TcpInputStream, TcpOutputStream]:
        self.input = TcpInputStream(self.shared)
        self.output = TcpOutputStream(self.shared)
        return self.input, self.output

    def close(self) -> None:
        self.shared.release()


# -- UDP --------------------------------------------------------------------------------

MAX_DATAGRAM = 65535
SEND_PERMITS = 64


class UdpSocket:
    """A ``wasi:sockets/udp.udp-socket``."""

    def __init__(self, shared: _Shared, family: int) -> None:
        self.shared = shared
        self.family = family
        self.state = "unbound"
        self.remote: Any = None  # the sockaddr of the current stream(), if any
        self.generation = 0  # streams of an earlier stream() call stop working

    @property
    def sock(self) -> socket.socket:
        return self.shared.sock

    def close(self) -> None:
        self.shared.release()


class _DatagramStream:
    def __init__(self, udp: UdpSocket) -> None:
        self.udp = udp
        self.generation = udp.generation
        udp.shared.retain()

    def pollable(self) -> Pollable:
        return _SocketPollable(self.udp.sock, write=isinstance(self, OutgoingDatagrams))

    def check_current(self) -> None:
        if self.generation != self.udp.generation:
            raise WasiError("invalid-state", "a later stream() call replaced this stream")

    def close(self) -> None:
        self.udp.shared.release()


class IncomingDatagrams(_DatagramStream):
    """``incoming-datagram-stream``."""


class OutgoingDatagrams(_DatagramStream):
    """``outgoing-datagram-stream``."""

    def __init__(self, udp: UdpSocket) -> None:
        super().__init__(udp)
        self.permits = 0


# -- name lookup ------------------------------------------------------------------------


class ResolveStream:
    """``resolve-address-stream``: resolved by the first wait on its pollable."""

    def __init__(self, name: str, addresses: list[IPAddress] | None = None) -> None:
        self.name = name
        self.addresses = addresses
        self.error: WasiError | None = None
        self._lock = anyio.Lock()

    def ready(self) -> bool:
        return self.addresses is not None or self.error is not None

    async def fill(self) -> None:
        """Resolve in a worker thread (``anyio.getaddrinfo``) while the loop runs on."""
        async with self._lock:
            if self.ready():
                return
            try:
                infos = await anyio.getaddrinfo(self.name, None, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError) as exc:
                self._failed(exc)
            else:
                self._resolved(infos)

    def _failed(self, exc: BaseException) -> None:
        errno_ = getattr(exc, "errno", None)
        if isinstance(exc, socket.gaierror) and errno_ in (
            socket.EAI_NONAME,
            getattr(socket, "EAI_NODATA", None),
        ):
            self.error = WasiError("name-unresolvable", str(exc))
        elif isinstance(exc, socket.gaierror) and errno_ == socket.EAI_AGAIN:
            self.error = WasiError("temporary-resolver-failure", str(exc))
        else:
            self.error = WasiError("permanent-resolver-failure", str(exc))

    def _resolved(self, infos: Sequence[Any]) -> None:
        seen: list[IPAddress] = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if address not in seen:
                seen.append(address)
        self.addresses = seen


# -- the interfaces ---------------------------------------------------------------------


class Network:
    """The ``network`` resource: the right to use the instance's allow-list."""


class WasiSockets:
    """wasi:sockets for one instance, limited by ``WasiConfig.allow_net``."""

    def __init__(self, ctx: WasiContext, allow: Sequence[NetPattern]) -> None:
        self.ctx = ctx
        self.allow = tuple(allow)
        self.network = Network()
        t = ctx.table
        ctx.define_resource(NETWORK, "network", ResourceKind.NETWORK)
        for iface, name, kind in (
            (TCP, "tcp-socket", ResourceKind.TCP_SOCKET),
            (UDP, "udp-socket", ResourceKind.UDP_SOCKET),
            (UDP, "incoming-datagram-stream", ResourceKind.INCOMING_DATAGRAM_STREAM),
            (UDP, "outgoing-datagram-stream", ResourceKind.OUTGOING_DATAGRAM_STREAM),
            (LOOKUP, "resolve-address-stream", ResourceKind.RESOLVE_ADDRESS_STREAM),
        ):
            ctx.define_resource(iface, name, kind, ctx.close_handle)
        ctx.define(
            "wasi:sockets/instance-network",
            "instance-network",
            lambda: own(t.add(self.network), ResourceKind.NETWORK),
        )
        ctx.define("wasi:sockets/tcp-create-socket", "create-tcp-socket", self.create_tcp)
        ctx.define("wasi:sockets/udp-create-socket", "create-udp-socket", self.create_udp)
        ctx.define(LOOKUP, "resolve-addresses", self.resolve_addresses)
        ctx.define(LOOKUP, "[method]resolve-address-stream.resolve-next-address", self.next_address)
        ctx.define(
            LOOKUP,
            "[method]resolve-address-stream.subscribe",
            lambda r: self._pollable(FillPollable(t.get(r, ResolveStream))),
        )
        tcp_methods: dict[str, Callable[..., Any] | Blocking] = {
            "start-bind": lambda r, n, a: self._start_bind(self._tcp(r), n, a),
            "finish-bind": lambda r: self._finish_bind(self._tcp(r)),
            "start-connect": self.tcp_start_connect,
            "finish-connect": self.tcp_finish_connect,
            "start-listen": self.tcp_start_listen,
            "finish-listen": self.tcp_finish_listen,
            "accept": self.tcp_accept,
            "remote-address": self.tcp_remote_address,
            "is-listening": lambda r: self._tcp(r).state == "listening",
            "set-listen-backlog-size": self.tcp_set_backlog,
            "keep-alive-enabled": lambda r: bool(
                self._getopt(self._tcp(r), socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            ),
            "set-keep-alive-enabled": lambda r, v: self._setopt(
                self._tcp(r), socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(v)
            ),
            "keep-alive-idle-time": lambda r: self._get_seconds(r, "TCP_KEEPIDLE"),
            "set-keep-alive-idle-time": lambda r, v: self._set_seconds(r, "TCP_KEEPIDLE", v),
            "keep-alive-interval": lambda r: self._get_seconds(r, "TCP_KEEPINTVL"),
            "set-keep-alive-interval": lambda r, v: self._set_seconds(r, "TCP_KEEPINTVL", v),
            "keep-alive-count": lambda r: self._getopt(
                self._tcp(r), socket.IPPROTO_TCP, socket.TCP_KEEPCNT
            ),
            # clamped to Linux's most, 127, as wasmtime does (0 stays invalid-argument)
            "set-keep-alive-count": lambda r, v: self._set_positive(
                self._tcp(r), socket.IPPROTO_TCP, socket.TCP_KEEPCNT, min(v, _MAX_KEEP_ALIVE_COUNT)
            ),
            **self._common_methods(self._tcp, "hop-limit"),
            "subscribe": self.tcp_subscribe,
            "shutdown": Blocking(self.tcp_shutdown),
        }
        for name, fn in tcp_methods.items():
            ctx.define(TCP, f"[method]tcp-socket.{name}", fn)
        udp_methods: dict[str, Callable[..., Any]] = {
            "start-bind": lambda r, n, a: self._start_bind(self._udp(r), n, a),
            "finish-bind": lambda r: self._finish_bind(self._udp(r)),
            "stream": self.udp_stream,
            "remote-address": self.udp_remote_address,
            **self._common_methods(self._udp, "unicast-hop-limit"),
            "subscribe": lambda r: self._pollable(ReadyPollable()),
        }
        for name, fn in udp_methods.items():
            ctx.define(UDP, f"[method]udp-socket.{name}", fn)
        ctx.define(UDP, "[method]incoming-datagram-stream.receive", self.udp_receive)
        ctx.define(UDP, "[method]outgoing-datagram-stream.check-send", self.udp_check_send)
        ctx.define(UDP, "[method]outgoing-datagram-stream.send", self.udp_send)
        for stream in ("incoming", "outgoing"):
            ctx.define(
                UDP,
                f"[method]{stream}-datagram-stream.subscribe",
                lambda r: self._pollable(t.get(r, _DatagramStream).pollable()),
            )

    # helpers
    def _common_methods(
        self, get: Callable[[int], TcpSocket | UdpSocket], hop_limit: str
    ) -> dict[str, Callable[..., Any]]:
        """The methods TCP and UDP sockets share (``hop_limit``: that method's name)."""
        return {
            "local-address": lambda r: self._local_address(get(r)),
            "address-family": lambda r: _family_name(get(r).family),
            hop_limit: lambda r: self._get_hop_limit(get(r)),
            f"set-{hop_limit}": lambda r, v: self._set_hop_limit(get(r), v),
            "receive-buffer-size": lambda r: self._getopt(
                get(r), socket.SOL_SOCKET, socket.SO_RCVBUF
            ),
            "set-receive-buffer-size": lambda r, v: self._set_buffer(get(r), socket.SO_RCVBUF, v),
            "send-buffer-size": lambda r: self._getopt(get(r), socket.SOL_SOCKET, socket.SO_SNDBUF),
            "set-send-buffer-size": lambda r, v: self._set_buffer(get(r), socket.SO_SNDBUF, v),
        }

    def _pollable(self, pollable: Pollable) -> Any:
        return own(self.ctx.table.add(pollable), ResourceKind.POLLABLE)

    def _tcp(self, rep: int) -> TcpSocket:
        return self.ctx.table.get(rep, TcpSocket)

    def _udp(self, rep: int) -> UdpSocket:
        return self.ctx.table.get(rep, UdpSocket)

    def _check_network(self, rep: int) -> None:
        self.ctx.table.get(rep, Network)

    def _allowed(self, address: IPAddress, port: int) -> bool:
        return any(p.matches(address, port) for p in self.allow)

    def _deny_unless_allowed(self, address: IPAddress, port: int, what: str) -> None:
        if not self._allowed(address, port):
            raise WasiError("access-denied", f"{what} {address}:{port} is not in the allow-list")

    def _new_socket(self, family_value: Any, kind: int) -> _Shared:
        if not self.allow:
            raise WasiError("access-denied", "network access is not allowed")
        family = _FAMILY.get(_enum_name(family_value))
        if family is None:
            raise WasiError("not-supported")
        try:
            sock = socket.socket(family, kind)
        except OSError as exc:
            raise socket_error(exc) from None
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        return _Shared(sock)

    def _bind(self, sock: socket.socket, family: int, address_value: Any) -> None:
        address, port, flow, scope = lift_socket_address(address_value)
        addr = _sockaddr(family, address, port, flow, scope)
        if address.is_multicast:
            raise WasiError("invalid-argument", "cannot bind to a multicast address")
        self._deny_unless_allowed(address, port, "binding to")
        try:
            sock.bind(addr)
        except OSError as exc:
            raise socket_error(exc) from None

    def _local_address(self, s: TcpSocket | UdpSocket) -> Any:
        if s.state in ("unbound", "bind-started"):
            raise WasiError("invalid-state", "the socket is not bound")
        return lower_socket_address(s.sock.getsockname())

    def _getopt(self, s: TcpSocket | UdpSocket, level: int, option: int) -> int:
        try:
            return int(s.sock.getsockopt(level, option))
        except OSError as exc:
            raise socket_error(exc) from None

    def _setopt(self, s: TcpSocket | UdpSocket, level: int, option: int, value: int) -> None:
        try:
            s.sock.setsockopt(level, option, value)
        except OSError as exc:
            raise socket_error(exc) from None

    def _set_positive(self, s: TcpSocket | UdpSocket, level: int, option: int, value: int) -> None:
        if value <= 0:
            raise WasiError("invalid-argument", "the value must be positive")
        self._setopt(s, level, option, value)

    def _set_buffer(self, s: TcpSocket | UdpSocket, option: int, value: int) -> None:
        if value <= 0:
            raise WasiError("invalid-argument", "a buffer size must be positive")
        self._setopt(s, socket.SOL_SOCKET, option, min(value, 2**31 - 1))

    def _get_seconds(self, rep: int, option: str) -> int:
        opt = getattr(socket, option, None)
        if opt is None:
            raise WasiError("not-supported")
        return self._getopt(self._tcp(rep), socket.IPPROTO_TCP, opt) * 1_000_000_000

    def _set_seconds(self, rep: int, option: str, ns: int) -> None:
        opt = getattr(socket, option, None)
        if opt is None:
            raise WasiError("not-supported")
        if ns <= 0:
            raise WasiError("invalid-argument", "the duration must be positive")
        seconds = max(1, min((ns + 999_999_999) // 1_000_000_000, 32767))
        self._setopt(self._tcp(rep), socket.IPPROTO_TCP, opt, seconds)

    def _get_hop_limit(self, s: TcpSocket | UdpSocket) -> int:
        if s.family == socket.AF_INET:
            return self._getopt(s, socket.IPPROTO_IP, socket.IP_TTL)
        return self._getopt(s, socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS)

    def _set_hop_limit(self, s: TcpSocket | UdpSocket, value: int) -> None:
        if value == 0:
            raise WasiError("invalid-argument", "the hop limit must be positive")
        if s.family == socket.AF_INET:
            self._setopt(s, socket.IPPROTO_IP, socket.IP_TTL, value)
        else:
            self._setopt(s, socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, value)

    # tcp
    def create_tcp(self, family: Any) -> Any:
        shared = self._new_socket(family, socket.SOCK_STREAM)
        tcp = TcpSocket(shared, shared.sock.family)
        return own(self.ctx.table.add(tcp), ResourceKind.TCP_SOCKET)

    def _start_bind(self, s: TcpSocket | UdpSocket, network: int, address: Any) -> None:
        self._check_network(network)
        if s.state != "unbound":
            raise WasiError("invalid-state", "the socket is already bound")
        if isinstance(s, TcpSocket):
            # let a listener rebind a port in TIME_WAIT, as wasmtime does
            s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._bind(s.sock, s.family, address)
        s.state = "bind-started"

    def _finish_bind(self, s: TcpSocket | UdpSocket) -> None:
        if s.state != "bind-started":
            raise WasiError("not-in-progress")
        s.state = "bound"

    def tcp_start_connect(self, rep: int, network: int, address_value: Any) -> None:
        tcp = self._tcp(rep)
        self._check_network(network)
        if tcp.state == "connecting":
            raise WasiError("concurrency-conflict")
        if tcp.state not in ("unbound", "bound"):
            raise WasiError("invalid-state", f"cannot connect a socket that is {tcp.state}")
        address, port, flow, scope = lift_socket_address(address_value)
        addr = _sockaddr(tcp.family, address, port, flow, scope)
        if address.is_unspecified or address.is_multicast or port == 0:
            raise WasiError("invalid-argument", f"cannot connect to {address}:{port}")
        self._deny_unless_allowed(address, port, "connecting to")
        code = tcp.sock.connect_ex(addr)
        if code in (0, errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
            tcp.state = "connecting"
            return
        tcp.state = "closed"
        raise socket_error(OSError(code, errno.errorcode.get(code, "error")))

    def tcp_finish_connect(self, rep: int) -> Any:
        tcp = self._tcp(rep)
        if tcp.state != "connecting":
            raise WasiError("not-in-progress")
        if not _writable(tcp.sock):
            raise WasiError("would-block")
        code = tcp.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            tcp.state = "closed"
            raise socket_error(OSError(code, errno.errorcode.get(code, "error")))
        tcp.state = "connected"
        return self._own_streams(tcp)

    def _own_streams(self, tcp: TcpSocket) -> tuple[Any, Any]:
        rx, tx = tcp.streams()
        t = self.ctx.table
        return (
            own(t.add(rx), ResourceKind.INPUT_STREAM),
            own(t.add(tx), ResourceKind.OUTPUT_STREAM),
        )

    def tcp_start_listen(self, rep: int) -> None:
        tcp = self._tcp(rep)
        if tcp.state == "listen-started":
            raise WasiError("concurrency-conflict")
        if tcp.state != "bound":
            raise WasiError("invalid-state", "only a bound socket can listen")
        try:
            tcp.sock.listen(tcp.backlog)
        except OSError as exc:
            raise socket_error(exc) from None
        tcp.state = "listen-started"

    def tcp_finish_listen(self, rep: int) -> None:
        tcp = self._tcp(rep)
        if tcp.state != "listen-started":
            raise WasiError("not-in-progress")
        tcp.state = "listening"

    def tcp_accept(self, rep: int) -> Any:
        tcp = self._tcp(rep)
        if tcp.state != "listening":
            raise WasiError("invalid-state", "the socket is not listening")
        try:
            conn, _ = tcp.sock.accept()
        except BlockingIOError:
            raise WasiError("would-block") from None
        except OSError as exc:
            raise socket_error(exc) from None
        client = TcpSocket(_Shared(conn), tcp.family, "connected")
        rx, tx = self._own_streams(client)
        return (own(self.ctx.table.add(client), ResourceKind.TCP_SOCKET), rx, tx)

    def tcp_remote_address(self, rep: int) -> Any:
        tcp = self._tcp(rep)
        if tcp.state != "connected":
            raise WasiError("invalid-state", "the socket is not connected")
        try:
            return lower_socket_address(tcp.sock.getpeername())
        except OSError as exc:
            raise socket_error(exc) from None

    def tcp_set_backlog(self, rep: int, value: int) -> None:
        tcp = self._tcp(rep)
        if value == 0:
            raise WasiError("invalid-argument", "the backlog must be positive")
        if tcp.state in ("connecting", "connected"):
            raise WasiError("invalid-state")
        tcp.backlog = min(value, 2**31 - 1)
        if tcp.state == "listening":
            tcp.sock.listen(tcp.backlog)

    def tcp_subscribe(self, rep: int) -> Any:
        tcp = self._tcp(rep)
        if tcp.state in ("connecting", "listening"):
            return self._pollable(_SocketPollable(tcp.sock, write=tcp.state == "connecting"))
        return self._pollable(ReadyPollable())

    def tcp_shutdown(self, rep: int, how_value: Any) -> HostWaits:
        tcp = self._tcp(rep)
        if tcp.state != "connected":
            raise WasiError("invalid-state", "the socket is not connected")
        how = _enum_name(how_value)
        flag = {"receive": socket.SHUT_RD, "send": socket.SHUT_WR, "both": socket.SHUT_RDWR}[how]
        if how in ("send", "both"):
            if tcp.output is not None:
                # what the guest wrote goes out before the FIN (a failure shows on the stream)
                with contextlib.suppress(StreamClosed, StreamFailed):
                    yield from flushed(tcp.output)
            rest = tcp.shared.sending
            if rest is not None:  # a dropped output stream's last bytes go before the FIN
                yield functools.partial(anyio.to_thread.run_sync, rest.join, 30)
        try:
            tcp.sock.shutdown(flag)
        except OSError as exc:
            raise socket_error(exc) from None
        if how in ("receive", "both") and tcp.input is not None:
            tcp.input.shut = True
        if how in ("send", "both") and tcp.output is not None:
            tcp.output.shut = True

    # udp
    def create_udp(self, family: Any) -> Any:
        shared = self._new_socket(family, socket.SOCK_DGRAM)
        udp = UdpSocket(shared, shared.sock.family)
        return own(self.ctx.table.add(udp), ResourceKind.UDP_SOCKET)

    def udp_stream(self, rep: int, remote_value: Any) -> Any:
        udp = self._udp(rep)
        if udp.state != "bound":
            raise WasiError("invalid-state", "the socket is not bound")
        remote = None
        if remote_value is not None:
            address, port, flow, scope = lift_socket_address(remote_value)
            remote = _sockaddr(udp.family, address, port, flow, scope)
            if address.is_unspecified or port == 0:
                raise WasiError("invalid-argument", f"cannot connect to {address}:{port}")
            self._deny_unless_allowed(address, port, "connecting to")
        try:
            if remote is not None:
                udp.sock.connect(remote)
            elif udp.remote is not None:
                _disconnect(udp.sock)
        except OSError as exc:
            raise socket_error(exc) from None
        udp.remote = remote
        udp.generation += 1
        t = self.ctx.table
        return (
            own(t.add(IncomingDatagrams(udp)), ResourceKind.INCOMING_DATAGRAM_STREAM),
            own(t.add(OutgoingDatagrams(udp)), ResourceKind.OUTGOING_DATAGRAM_STREAM),
        )

    def udp_remote_address(self, rep: int) -> Any:
        udp = self._udp(rep)
        if udp.remote is None:
            raise WasiError("invalid-state", "the socket has no remote address")
        return lower_socket_address(udp.sock.getpeername())

    def udp_receive(self, rep: int, max_results: int) -> list[Any]:
        stream = self.ctx.table.get(rep, IncomingDatagrams)
        stream.check_current()
        out: list[Any] = []
        while len(out) < max_results:
            try:
                data, sender = stream.udp.sock.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                break
            except OSError as exc:
                if out:
                    break
                raise socket_error(exc) from None
            out.append(record(data=data, **{"remote-address": lower_socket_address(sender)}))
        return out

    def udp_check_send(self, rep: int) -> int:
        stream = self.ctx.table.get(rep, OutgoingDatagrams)
        stream.check_current()
        stream.permits = SEND_PERMITS if _writable(stream.udp.sock) else 0
        return stream.permits

    def udp_send(self, rep: int, datagrams: list[Any]) -> int:
        stream = self.ctx.table.get(rep, OutgoingDatagrams)
        stream.check_current()
        if len(datagrams) > stream.permits:
            raise GuestProtocolError("send of more datagrams than check-send allowed")
        udp = stream.udp
        sent = 0
        for datagram in datagrams:
            target = getattr(datagram, "remote-address")
            data = bytes(datagram.data)
            try:
                if target is None:
                    if udp.remote is None:
                        raise WasiError("invalid-argument", "no remote address to send to")
                    udp.sock.send(data)
                else:
                    address, port, flow, scope = lift_socket_address(target)
                    addr = _sockaddr(udp.family, address, port, flow, scope)
                    if udp.remote is not None and addr[:2] != udp.remote[:2]:
                        raise WasiError("invalid-argument", "not the stream's remote address")
                    if address.is_unspecified or port == 0:
                        raise WasiError("invalid-argument", f"cannot send to {address}:{port}")
                    self._deny_unless_allowed(address, port, "sending to")
                    if udp.remote is not None:
                        udp.sock.send(data)
                    else:
                        udp.sock.sendto(data, addr)
            except BlockingIOError:
                break
            except OSError as exc:
                if sent:
                    break
                raise socket_error(exc) from None
            except WasiError:
                if sent:
                    break
                raise
            sent += 1
        stream.permits -= sent
        if not sent and datagrams:
            raise WasiError("would-block")
        return sent

    # name lookup
    def resolve_addresses(self, network: int, name: str) -> Any:
        self._check_network(network)
        if not self.allow:
            # as wasmtime answers when lookups are not allowed: C libraries make it EAI_FAIL,
            # which programs handle as a failed lookup (access-denied is not a resolver error)
            raise WasiError("permanent-resolver-failure", "network access is not allowed")
        if not name or len(name) > 253 or any(c.isspace() for c in name):
            raise WasiError("invalid-argument", f"{name!r} is not a host name")
        literal = name[1:-1] if name.startswith("[") and name.endswith("]") else name
        try:
            addresses: list[IPAddress] | None = [ipaddress.ip_address(literal)]
        except ValueError:
            addresses = None
            if ":" in name:
                raise WasiError("invalid-argument", f"{name!r} is not a host name") from None
        stream = ResolveStream(name, addresses)
        return own(self.ctx.table.add(stream), ResourceKind.RESOLVE_ADDRESS_STREAM)

    def next_address(self, rep: int) -> Any:
        stream = self.ctx.table.get(rep, ResolveStream)
        if stream.error is not None:
            raise stream.error
        if stream.addresses is None:
            raise WasiError("would-block")
        if not stream.addresses:
            return None
        return lower_ip_address(stream.addresses.pop(0))


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library this process already runs on (its own symbols, no search)."""
    return ctypes.CDLL(None, use_errno=True)


def _disconnect(sock: socket.socket) -> None:
    """Undo ``connect`` on a datagram socket (connect to AF_UNSPEC)."""
    unspec = (ctypes.c_ubyte * 16)()  # sockaddr with sa_family = AF_UNSPEC (0)
    if _libc().connect(sock.fileno(), unspec, 16) != 0:
        err = ctypes.get_errno()
        if err != errno.EAFNOSUPPORT:  # Linux answers this, yet disconnects
            raise OSError(err, errno.errorcode.get(err, "error"))
