"""Serving a component over HTTP on hypercorn, under trio or asyncio."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Sequence
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

            await hypercorn.trio.serve(app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]
        else:
            import hypercorn.asyncio

            await hypercorn.asyncio.serve(app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]
    finally:
        for sock in sockets:
            sock.close()
