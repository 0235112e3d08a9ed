"""The handle table's checks: a handle stands for one live object of one kind."""

from __future__ import annotations

import pytest

import trio_isyswasfa
from trio_isyswasfa import WasiConfig
from trio_isyswasfa._resources import HandleTable
from trio_isyswasfa.wasi._context import WasiContext
from trio_isyswasfa.wasi.filesystem import Descriptor
from trio_isyswasfa.wasi.sockets import Network, WasiSockets, parse_allow_net


class Pollable:
    pass


def test_a_handle_of_another_kind_is_a_protocol_error() -> None:
    table = HandleTable()
    rep = table.add(Pollable())
    with pytest.raises(trio_isyswasfa.GuestProtocolError, match=f"handle {rep} is not a live"):
        table.get(rep, Descriptor)
    assert isinstance(table.get(rep, Pollable), Pollable)


def test_a_dropped_handle_is_a_protocol_error() -> None:
    table = HandleTable()
    rep = table.add(Pollable())
    table.remove(rep)
    with pytest.raises(trio_isyswasfa.GuestProtocolError):
        table.get(rep, Pollable)


def test_name_lookups_need_a_live_network_handle() -> None:
    # the network handle is the right to use the allow-list: another handle is refused
    ctx = WasiContext(WasiConfig())
    sockets = WasiSockets(ctx, parse_allow_net(["127.0.0.1:*"]))
    not_a_network = ctx.table.add(Pollable())
    with pytest.raises(trio_isyswasfa.GuestProtocolError, match="not a live Network"):
        sockets.resolve_addresses(not_a_network, "127.0.0.1")
    network = ctx.table.add(Network())
    assert sockets.resolve_addresses(network, "127.0.0.1") is not None
    ctx.close()
