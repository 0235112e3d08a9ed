"""HTTP on the trio host: ``wasi:http@0.2.x`` (standard ``proxy`` components, in
:mod:`trio_isyswasfa.http.wasi_http`) and isyswasfa's ``wasi:http@0.3.0-draft`` (the
types here), the ASGI bridge that serves either, and ``serve``."""

from ._asgi import ComponentApp as ComponentApp
from ._asgi import ServerStatistics as ServerStatistics
from ._asgi import app_from_environment as app_from_environment
from ._client import HttpClient as HttpClient
from ._serve import serve as serve
from .types import Body as Body
from .types import ErrorCode as ErrorCode
from .types import Fields as Fields
from .types import OutgoingHandler as OutgoingHandler
from .types import Request as Request
from .types import RequestOptions as RequestOptions
from .types import Response as Response
from .types import make_trailers as make_trailers

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
