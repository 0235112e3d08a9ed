"""Serving a component over HTTP on hypercorn, under trio or asyncio."""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc
import sniffio
from hypercorn.config import Config

from .._host import Component
from ..wasi import WasiConfig
from ._asgi import ComponentApp


def parse_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) as a ``(host, port)`` pair.

    Raises:
      ValueError: the address is malformed.
    """
    host, sep, port = addr.rpartition(":")
    # (ASCII digits only: str.isdigit takes '²', and int() takes '٨٠' as 80)
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"bad address {addr!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


SOMAXCONN = Path("/proc/sys/net/core/somaxconn")


def default_backlog() -> int:
    """``serve``'s listen backlog when none is given: the most the system allows.

    The backlog is how many connections the kernel holds before the server accepts
    them. Past it, Linux drops the client's handshake ACK, and a client that already
    sent its request is reset when the half-open connection expires: at 4,000
    connections at once, a backlog of 1,024 lost ~700-1,000 of them that way while the
    event loop accepted. Linux caps any backlog at ``net.core.somaxconn`` (read here;
    ``socket.SOMAXCONN`` where it cannot be read), so asking for more buys nothing.
    """
    try:
        return max(1, int(SOMAXCONN.read_text()))
    except (OSError, ValueError):
        return socket.SOMAXCONN


def _listen(addr: str, backlog: int) -> socket.socket:
    host, port = parse_addr(addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def _unread(sock: Any) -> int:
    """How many bytes wait in ``sock``'s receive queue, not read yet (0 if it is shut)."""
    try:
        got = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    count: int = struct.unpack("i", got)[0]
    return count


_IDLE_SPARED = 2
"""Times a connection's idle timer may run out on unread bytes (and no request begun)
and the connection still be kept: at most ``(1 + _IDLE_SPARED) * keep_alive_timeout``
idle."""


def _spare_busy_connections() -> None:
    """Make hypercorn's trio worker close an idle connection only if its client is idle.

    hypercorn closes a connection that stays idle for ``keep_alive_timeout`` (5 s),
    counted from the accept, and again after each response. But the time is the
    server's, not the client's: a loop held up by guests (a first call, an instance
    opening: seconds under load) reads a request that arrived in time only after the
    timer ran out, and the connection was closed unanswered, its request lost ("Server
    disconnected"; the timer and the read wake in one batch, and the read also lets the
    loop run once before it stops the timer). Its connections here close on the timer
    only when no request is under way and no byte waits unread (bytes unread without a
    request begun spare it :data:`_IDLE_SPARED` times at most). Installed once, for the
    process (hypercorn looks its connection class up when it serves).
    """
    import hypercorn.trio.run
    import trio
    from hypercorn.events import Event, Updated
    from hypercorn.trio.tcp_server import TCPServer

    if hypercorn.trio.run.TCPServer is not TCPServer:  # type: ignore[attr-defined]
        return  # installed already (or replaced by someone else: theirs stays)

    class PatientTCPServer(TCPServer):
        busy = False  # a request under way (hypercorn stops the timer, after a turn)

        def protocol_send(self, event: Event) -> Coroutine[Any, Any, None]:
            # (not a coroutine of its own: hypercorn's, returned, is what is awaited,
            # so each of its steps, a checkpoint of every send, resumes one frame fewer)
            if isinstance(event, Updated):
                self.busy = not event.idle
            return super().protocol_send(event)

        async def _idle_timeout(self) -> None:
            spared = 0  # times the timer ran out on bytes unread and no request begun
            while True:
                with trio.move_on_after(self.config.keep_alive_timeout):
                    await self.context.terminated.wait()
                    break  # shutting down: idle connections close at once
                if self.busy:
                    continue
                stream: Any = self.stream
                sock = getattr(stream, "socket", None) or stream.transport_stream.socket
                # bytes unread: a request the held-up loop has not read yet, spared a
                # few rounds (the loop runs meanwhile and reads it), not forever: a
                # client sending a byte as each round ends would hold the connection
                if spared >= _IDLE_SPARED or not _unread(sock):
                    break
                spared += 1
            with trio.CancelScope(shield=True):
                await self._initiate_server_close()

    hypercorn.trio.run.TCPServer = PatientTCPServer  # type: ignore[attr-defined]


async def serve(
    component: Component | ComponentApp,
    *,
    bind: Sequence[str] = ("127.0.0.1:8080",),
    wasi: WasiConfig | None = None,
    access_log: bool = True,
    instances: Literal["pooled", "shared", "per-request"] | None = None,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    backlog: int | None = None,
    task_status: anyio.abc.TaskStatus[list[str]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``component`` over HTTP until ``shutdown_trigger`` returns.

    The component is a standard ``wasi:http/proxy@0.2`` one (it exports
    ``wasi:http/incoming-handler@0.2.x``) or an isyswasfa one exporting
    ``wasi:http/handler@0.3.0-draft``; its exports say which. ``component`` may also be
    a :class:`ComponentApp` (to read its statistics); then ``wasi`` and ``instances``
    are ignored. ``instances`` is the instance policy (see :class:`ComponentApp`; by
    default ``pooled`` for a proxy component, ``shared`` for an isyswasfa one).

    Runs hypercorn's worker for the event loop it is called from (trio or asyncio).
    ``task_status.started`` receives the bound URLs (bind port 0 to get a free one).
    On shutdown, requests in flight finish (hypercorn's graceful timeout) first.
    ``backlog`` is the listen queue, by default the most the system allows (see
    :func:`default_backlog`): connections beyond it that the server has not accepted
    yet are dropped by the kernel, not answered 503.

    Raises:
      OSError: an address cannot be bound.
      ValueError: ``backlog`` is below 1.
    """
    if backlog is None:
        backlog = default_backlog()
    elif backlog < 1:
        raise ValueError(f"backlog must be at least 1, not {backlog}")
    sockets: list[socket.socket] = []
    try:  # (bound one by one inside it: those bound before an address that fails are closed)
        for addr in bind:
            sockets.append(_listen(addr, backlog))
        urls = []
        for sock in sockets:
            host, port = sock.getsockname()[:2]
            urls.append(f"http://{f'[{host}]' if ':' in host else host}:{port}")
        config = Config()
        # hypercorn takes the listening sockets over by file descriptor (and closes them)
        config.bind = [f"fd://{sock.detach()}" for sock in sockets]
        config.backlog = backlog  # hypercorn listens again with it (its default: 100)
        config.accesslog = "-" if access_log else None
        config.errorlog = "-"
        config.graceful_timeout = 5.0
        app = (
            component
            if isinstance(component, ComponentApp)
            else ComponentApp(component, wasi=wasi, instances=instances)
        )
        trigger = shutdown_trigger or anyio.sleep_forever
        task_status.started(urls)
        if sniffio.current_async_library() == "trio":
            import hypercorn.trio

            _spare_busy_connections()
            await hypercorn.trio.serve(app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]
        else:
            import hypercorn.asyncio

            await hypercorn.asyncio.serve(app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]
    finally:
        for sock in sockets:
            sock.close()
