"""HTTP on the trio host: ``wasi:http@0.2.x`` (standard ``proxy`` components, in
:mod:`trio_isyswasfa.http.wasi_http`) and isyswasfa's ``wasi:http@0.3.0-draft`` (the
types here), the ASGI bridge that serves either, and ``serve``.

The ASGI bridge, the client and ``serve`` (hypercorn, h11) load on first use: every
instance registers :mod:`.types`, so a command that never serves HTTP imports none of
them (70-130 ms of CPU, a tenth to a sixth of what ``run`` imports).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names as _lazy_names
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


if not TYPE_CHECKING:  # (for mypy, the imports above: a typo stays an error)
    __getattr__, __dir__ = _lazy_names(globals(), _LAZY)


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
