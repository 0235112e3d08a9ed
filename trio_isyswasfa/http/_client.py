"""Sending guests' outgoing requests with httpx, streaming both ways.

httpx (on anyio, so under trio or asyncio) is the client: we use a well-kept library
rather than our own HTTP/1.1 client. The request body is read from the guest's
stream as httpx sends it; the response is handed to the guest as soon as its head
arrives, and its body is pumped into an in-memory pipe (backpressure: the pump waits
while the guest does not read) by a task in the client's own task group, so it
outlives the ``handle`` call that returned the response.
"""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator, Sequence

import anyio
import httpx

from ..wasi.io import Pipe, PipeReader, PipeWriter, StreamClosed, read_chunk, write_all
from ._background import BackgroundTasks
from .types import FORBIDDEN, Body, ErrorCode, Fields, Request, Response

_DEFAULT_PORTS = {"http": 80, "https": 443}


class HttpClient(BackgroundTasks):
    """An outgoing handler for guests: ``WasiConfig(http_outgoing=client.send)``.

    Use it as an async context manager; response bodies still streaming when it
    closes are cut off.

    Args:
      allow: ``host:port`` patterns (``fnmatch``, e.g. ``"127.0.0.1:*"``,
        ``"*.example.com:443"``, or ``"*"`` for anything) a guest may send requests to;
        anything else is refused with ``HTTP-request-denied``. Empty: nothing is allowed.
      timeout: default timeout in seconds for connecting and for each read.
    """

    def __init__(self, *, allow: Sequence[str] = (), timeout: float = 30.0) -> None:
        self.allow = list(allow)
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> HttpClient:
        self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        await super().__aenter__()
        return self

    async def _closed(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def allowed(self, authority: str, scheme: str) -> bool:
        """Whether ``authority`` (``host[:port]``) matches the allow-list."""
        host, sep, port = authority.rpartition(":")
        if not sep or not port.isdigit():
            host, port = authority, str(_DEFAULT_PORTS.get(scheme, 80))
        target = f"{host.lower()}:{port}"
        return any(pattern == "*" or fnmatch.fnmatchcase(target, pattern) for pattern in self.allow)

    async def send(self, request: Request) -> Response:
        """Send ``request``; return the response once its head arrived.

        Raises:
          ErrorCode: the request was refused or failed (``HTTP-request-denied``,
            ``connection-refused``, ``connection-timeout``, ``HTTP-request-URI-invalid``…).
        """
        if self._client is None:
            raise RuntimeError("use HttpClient in an `async with` block")
        scheme = request.scheme or "http"
        if scheme not in ("http", "https"):
            request.close()
            raise ErrorCode("HTTP-request-URI-invalid")
        if not request.authority:
            request.close()
            raise ErrorCode("HTTP-request-URI-invalid")
        if not self.allowed(request.authority, scheme):
            request.close()
            raise ErrorCode("HTTP-request-denied")
        url = f"{scheme}://{request.authority}{request.path_with_query or '/'}"
        try:
            outgoing = self._client.build_request(
                request.method,
                url,
                headers=[(n.encode("latin-1"), v) for n, v in request.headers.entries()],
                content=await _content(request.body),
                timeout=_timeout(request, self._timeout),
            )
        except (httpx.InvalidURL, ValueError) as exc:
            request.close()
            raise ErrorCode("HTTP-request-URI-invalid") from exc
        try:
            response = await self._client.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            request.close()
            raise _error_code(exc) from exc
        pipe = Pipe()
        self._tasks.start_soon(_pump, response, PipeWriter(pipe))
        headers = Fields(
            (n.decode("latin-1"), v)
            for n, v in response.headers.raw
            if n.decode("latin-1").lower() not in FORBIDDEN
        )
        return Response(headers, Body(PipeReader(pipe)), status=response.status_code)


async def _content(body: Body) -> bytes | AsyncIterator[bytes]:
    """The body for httpx: ``b""`` if it is empty (no chunked GET), else a stream."""
    first = await read_chunk(body.stream)
    if first is None:
        body.close()
        return b""

    async def chunks() -> AsyncIterator[bytes]:
        try:
            yield first
            while (chunk := await read_chunk(body.stream)) is not None:
                yield chunk
        finally:
            body.close()

    return chunks()


async def _pump(response: httpx.Response, writer: PipeWriter) -> None:
    try:
        async for chunk in response.aiter_raw():
            await write_all(writer, chunk)
    except StreamClosed:
        pass  # the guest dropped the body: stop reading
    except httpx.HTTPError:
        pass  # the connection broke: the guest sees the body end early
    finally:
        writer.close()
        with anyio.CancelScope(shield=True):
            await response.aclose()


def _timeout(request: Request, default: float) -> httpx.Timeout:
    options = request.options
    if options is None:
        return httpx.Timeout(default)

    def seconds(ns: int | None) -> float:
        return default if ns is None else ns / 1e9

    return httpx.Timeout(
        default,
        connect=seconds(options.connect_timeout),
        read=seconds(options.between_bytes_timeout or options.first_byte_timeout),
    )


def _error_code(exc: httpx.HTTPError) -> ErrorCode:
    """The ``error-code`` for an httpx failure (``internal-error`` with its text if none fits)."""
    if isinstance(exc, httpx.ConnectTimeout):
        return ErrorCode("connection-timeout")
    if isinstance(exc, httpx.ReadTimeout):
        return ErrorCode("connection-read-timeout")
    if isinstance(exc, httpx.WriteTimeout):
        return ErrorCode("connection-write-timeout")
    if isinstance(exc, httpx.ConnectError):
        text = str(exc).lower()
        if "name or service not known" in text or "nodename" in text or "resolve" in text:
            return ErrorCode("DNS-error", {"rcode": None, "info-code": None})
        return ErrorCode("connection-refused")
    if isinstance(exc, httpx.RemoteProtocolError):
        return ErrorCode("HTTP-protocol-error")
    if isinstance(exc, httpx.UnsupportedProtocol):
        return ErrorCode("HTTP-request-URI-invalid")
    return ErrorCode("internal-error", str(exc) or type(exc).__name__)
