"""``wasi:http@0.3.0-draft`` on the trio host: types, the ASGI bridge and ``serve``."""

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
