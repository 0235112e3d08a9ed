"""HTTP on the trio host: ``wasi:http@0.2.x`` (standard ``proxy`` components, in
:mod:`trio_isyswasfa.http.wasi_http`) and isyswasfa's ``wasi:http@0.3.0-draft`` (the
types here), the ASGI bridge that serves either, and ``serve``.

The ASGI bridge, the client and ``serve`` (hypercorn, h11) load on first use: every
instance registers :mod:`.types`, so a command that never serves HTTP imports none of
them (70-130 ms of CPU, a tenth to a sixth of what ``run`` imports).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .types import Body as Body
from .types import ErrorCode as ErrorCode
from .types import Fields as Fields
from .types import OutgoingHandler as OutgoingHandler
from .types import Request as Request
from .types import RequestOptions as RequestOptions
from .types import Response as Response
from .types import make_trailers as make_trailers

if TYPE_CHECKING:
    from ._asgi import ComponentApp as ComponentApp
    from ._asgi import ServerStatistics as ServerStatistics
    from ._client import HttpClient as HttpClient
    from ._serve import serve as serve

_LAZY = {
    "ComponentApp": "._asgi",
    "ServerStatistics": "._asgi",
    "HttpClient": "._client",
    "serve": "._serve",
}


def app_from_environment() -> ComponentApp:
    """The app an ASGI server's command line can name, to run several worker processes.

    ``hypercorn --workers 4 'trio_isyswasfa.http:app_from_environment()'`` serves the
    component at ``$TRIO_ISYSWASFA_COMPONENT`` in each worker; see
    :func:`trio_isyswasfa.http._asgi.app_from_environment`. Defined here, not loaded on
    first use as the other server names are, because servers evaluate that expression
    in this module's namespace, which a lazy name is not in yet.

    Raises:
      HostProtocolError: ``$TRIO_ISYSWASFA_COMPONENT`` is not set.
    """
    from ._asgi import app_from_environment as make

    return make()


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "Body",
    "ComponentApp",
    "ErrorCode",
    "Fields",
    "HttpClient",
    "OutgoingHandler",
    "Request",
    "RequestOptions",
    "Response",
    "ServerStatistics",
    "app_from_environment",
    "make_trailers",
    "serve",
]
