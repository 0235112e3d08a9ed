"""wasi:sockets 0.2: networking is denied; every operation answers ``access-denied``."""

from __future__ import annotations

from .._engine import ResourceKind, own
from .._errors import WasiError
from ._context import WasiContext

DENIED_CODE = "access-denied"


def _deny(*_args: object) -> None:
    raise WasiError(DENIED_CODE, "network access is not allowed")


class WasiSockets:
    """wasi:sockets for one instance: a network handle exists, nothing can use it."""

    def __init__(self, ctx: WasiContext) -> None:
        net = "wasi:sockets/network"
        ctx.define_resource(net, "network", ResourceKind.NETWORK)
        ctx.define_resource("wasi:sockets/tcp", "tcp-socket", ResourceKind.TCP_SOCKET)
        ctx.define_resource("wasi:sockets/udp", "udp-socket", ResourceKind.UDP_SOCKET)
        ctx.define_resource(
            "wasi:sockets/udp", "incoming-datagram-stream", ResourceKind.INCOMING_DATAGRAM_STREAM
        )
        ctx.define_resource(
            "wasi:sockets/udp", "outgoing-datagram-stream", ResourceKind.OUTGOING_DATAGRAM_STREAM
        )
        ctx.define_resource(
            "wasi:sockets/ip-name-lookup",
            "resolve-address-stream",
            ResourceKind.RESOLVE_ADDRESS_STREAM,
        )
        network = object()
        ctx.define(
            "wasi:sockets/instance-network",
            "instance-network",
            lambda: own(ctx.table.add(network), ResourceKind.NETWORK),
        )
        ctx.define("wasi:sockets/tcp-create-socket", "create-tcp-socket", _deny)
        ctx.define("wasi:sockets/udp-create-socket", "create-udp-socket", _deny)
        ctx.define("wasi:sockets/ip-name-lookup", "resolve-addresses", _deny)
