"""A guest that runs Python snippets, for tests of the host's WASI from inside a guest.

Each snippet sees ``os``, ``socket``, the WIT bindings (``types``, ``preopens``, ``streams``, …),
``Err`` and the guest library's stream helpers.
"""

import encodings.idna  # noqa: F401  (socket looks host names up through it)
import os
import socket
import traceback
from typing import Any

from componentize_py_types import Err
from isyswasfa_guest import wait_pollable
from isyswasfa_guest.streams import read, read_all, write_all
from wit_world import exports
from wit_world.imports import (
    environment,
    error,
    insecure,
    insecure_seed,
    instance_network,
    ip_name_lookup,
    monotonic_clock,
    network,
    pipe,
    poll,
    preopens,
    random,
    stdin,
    stdout,
    streams,
    tcp,
    tcp_create_socket,
    types,
    udp,
    udp_create_socket,
    wall_clock,
)

NAMES: dict[str, Any] = {
    "os": os,
    "socket": socket,
    "Err": Err,
    "environment": environment,
    "error": error,
    "insecure": insecure,
    "insecure_seed": insecure_seed,
    "instance_network": instance_network,
    "ip_name_lookup": ip_name_lookup,
    "network": network,
    "tcp": tcp,
    "tcp_create_socket": tcp_create_socket,
    "udp": udp,
    "udp_create_socket": udp_create_socket,
    "monotonic_clock": monotonic_clock,
    "pipe": pipe,
    "poll": poll,
    "preopens": preopens,
    "random": random,
    "stdin": stdin,
    "stdout": stdout,
    "streams": streams,
    "types": types,
    "wall_clock": wall_clock,
    "wait_pollable": wait_pollable,
    "read": read,
    "read_all": read_all,
    "write_all": write_all,
}


def describe(exc: BaseException) -> str:
    if isinstance(exc, Err):
        return f"Err: {exc.value!r}"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror}"
    return "".join(traceback.format_exception_only(exc)).strip()


class Probe(exports.Probe):
    def exec(self, code: str) -> str:
        names = dict(NAMES)
        try:
            exec(code, names)
        except Exception as exc:
            raise Err(describe(exc)) from exc
        return repr(names.get("result"))

    async def exec_async(self, code: str) -> str:
        names = dict(NAMES)
        try:
            exec(code, names)
            value = await names["main"]()
        except Exception as exc:
            raise Err(describe(exc)) from exc
        return repr(value)
