"""trio_isyswasfa: composable async for WebAssembly components on a trio host.

Layering (a test checks the first rule): ``_protocol`` imports neither trio/anyio nor
wasmtime; ``_engine`` is the only module that imports ``wasmtime``; ``wasi/*`` uses
``_resources`` and ``_engine`` helpers; nothing imports ``_cli``.

The public names load on first use: the command line's ``lower``, ``componentize``
and ``compose`` (and ``--help``) import no trio, wasmtime or WASI host, and a module of
the package imports only what it needs.
"""

from __future__ import annotations

import typing as _typing

from ._lazy import lazy_names as _lazy_names

if _typing.TYPE_CHECKING:
    from ._engine import Err as Err
    from ._engine import Ok as Ok
    from ._errors import GuestProtocolError as GuestProtocolError
    from ._errors import GuestTrap as GuestTrap
    from ._errors import HostProtocolError as HostProtocolError
    from ._errors import InstanceDead as InstanceDead
    from ._errors import InternalError as InternalError
    from ._errors import IsyswasfaError as IsyswasfaError
    from ._errors import LinkError as LinkError
    from ._errors import LoadError as LoadError
    from ._errors import ToolError as ToolError
    from ._errors import WasiError as WasiError
    from ._host import Component as Component
    from ._host import Instance as Instance
    from ._host import InstanceStatistics as InstanceStatistics
    from ._host import load_component as load_component
    from ._host import open_instance as open_instance
    from ._host import run_command as run_command
    from ._limits import Limits as Limits
    from .wasi import WasiConfig as WasiConfig
    from .wasi.cli import ComponentExit as ComponentExit
    from .wasi.filesystem import Preopen as Preopen
    from .wasi.sockets import NetPattern as NetPattern

_LAZY = {
    "Err": "._engine",
    "Ok": "._engine",
    "GuestProtocolError": "._errors",
    "GuestTrap": "._errors",
    "HostProtocolError": "._errors",
    "InstanceDead": "._errors",
    "InternalError": "._errors",
    "IsyswasfaError": "._errors",
    "LinkError": "._errors",
    "LoadError": "._errors",
    "ToolError": "._errors",
    "WasiError": "._errors",
    "Component": "._host",
    "Instance": "._host",
    "InstanceStatistics": "._host",
    "load_component": "._host",
    "open_instance": "._host",
    "run_command": "._host",
    "Limits": "._limits",
    "WasiConfig": ".wasi",
    "ComponentExit": ".wasi.cli",
    "Preopen": ".wasi.filesystem",
    "NetPattern": ".wasi.sockets",
}


if not _typing.TYPE_CHECKING:  # (for mypy, the imports above: a typo stays an error)
    __getattr__, __dir__ = _lazy_names(globals(), _LAZY)


__all__ = [
    "Component",
    "ComponentExit",
    "Err",
    "GuestProtocolError",
    "GuestTrap",
    "HostProtocolError",
    "Instance",
    "InstanceDead",
    "InstanceStatistics",
    "InternalError",
    "IsyswasfaError",
    "Limits",
    "LinkError",
    "LoadError",
    "NetPattern",
    "Ok",
    "Preopen",
    "ToolError",
    "WasiConfig",
    "WasiError",
    "load_component",
    "open_instance",
    "run_command",
]

__version__ = "0.1.0.dev0"
