"""``wasi:http@0.3.0-draft``: requests, responses, fields and bodies, host side.

One :class:`Request` and one :class:`Response` type serve both directions, as in the
isyswasfa draft of WASI 0.3: a guest's exported ``handler.handle`` receives requests
the host built from incoming HTTP, and its imported ``handler.handle`` gives the host
requests to send. Bodies are ``wasi:io`` input streams plus an optional one-shot of
trailers. The same Python objects are what embedders see (an outgoing handler gets
a :class:`Request` and returns a :class:`Response`).

Unlike the 2024 host: field names match case-insensitively, names and values are
validated, hop-by-hop headers are refused, ``headers()`` returns an immutable view,
``body.stream()`` may be called again (each call gives a child handle), and
``finish`` consumes the body.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import anyio

from .._engine import Err, Ok, ResourceKind, record, variant, variant_case
from .._scheduler import close_unstarted
from ..wasi._context import WasiContext
from ..wasi.io import ErrorObject, InputStream, Pollable, StreamFailed
from ._background import StartedAtCall

log = logging.getLogger("trio_isyswasfa.http")

_T = TypeVar("_T")

TYPES = "wasi:http/types"
HANDLER = "wasi:http/handler"

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
FORBIDDEN = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
"""Hop-by-hop headers: the host's HTTP stack owns them, a guest may not set them."""

_OK = Ok(None)  # (frozen: one for every call that succeeds with nothing to say)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_OK = Ok(None)  # (frozen: one for every setter's success)
# control characters but tab (as http::HeaderValue refuses them)
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class HeaderError(Exception):
    """A fields operation failed with WIT ``header-error`` case ``code``."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class ErrorCode(Exception):
    """A WIT ``error-code``: ``case`` as spelled in the WIT (``"connection-refused"``,
    ``"internal-error"``…) and its payload (``None``, a string, a number, or a dict
    for record payloads). Raise it from an outgoing handler to fail the request."""

    case: str
    payload: Any = None

    def __str__(self) -> str:
        return self.case if self.payload is None else f"{self.case}: {self.payload}"


class ClientNotOpen(RuntimeError):
    """An outgoing handler used while it is not open (an :class:`HttpClient` outside
    its ``async with`` block, as a :class:`ComponentApp`'s without the lifespan): a
    guest's request through it is refused (``HTTP-request-denied``)."""


# -- fields -----------------------------------------------------------------------------


class Fields:
    """HTTP fields (headers or trailers): ordered ``(name, value)`` pairs.

    Names match case-insensitively and keep the case they were given.
    """

    forbidden: ClassVar[frozenset[str]] = FORBIDDEN
    """Names a guest may not set (lower case)."""

    def __init__(self, entries: Iterable[tuple[str, bytes]] = (), *, immutable: bool = False):
        # (most are made empty: a guest's new fields, a request's with no headers)
        self._entries: list[tuple[str, bytes]] = (
            [(n, bytes(v)) for n, v in entries] if entries != () else []
        )
        self.immutable = immutable

    @classmethod
    def checked(cls, entries: Iterable[tuple[str, bytes]]) -> Fields:
        """Fields from a guest's list, validated (raises :class:`HeaderError`)."""
        out = cls()
        for name, value in entries:
            out.append(name, value)
        return out

    def _check(self, name: str, values: Iterable[bytes] = ()) -> str:
        if self.immutable:
            raise HeaderError("immutable")
        if not _TOKEN.fullmatch(name):
            raise HeaderError("invalid-syntax")
        key = name.lower()
        if key in self.forbidden:
            raise HeaderError("forbidden")
        for value in values:
            if _BAD_VALUE.search(value):
                raise HeaderError("invalid-syntax")
        return key

    def get(self, name: str) -> list[bytes]:
        """Every value of ``name``, in order."""
        key = name.lower()
        return [v for n, v in self._entries if n.lower() == key]

    def has(self, name: str) -> bool:
        key = name.lower()
        return any(n.lower() == key for n, _ in self._entries)

    def set(self, name: str, values: list[bytes]) -> None:
        """Replace every value of ``name``."""
        key = self._check(name, values)
        entries = self._entries
        for n, _ in entries:
            if n.lower() == key:  # (most names a guest sets are new: nothing to drop)
                entries = self._entries = [(n, v) for n, v in entries if n.lower() != key]
                break
        for value in values:
            entries.append((name, bytes(value)))

    def delete(self, name: str) -> None:
        key = self._check(name)
        self._entries = [(n, v) for n, v in self._entries if n.lower() != key]

    def append(self, name: str, value: bytes) -> None:
        self._check(name, [value])
        self._entries.append((name, bytes(value)))

    def entries(self) -> list[tuple[str, bytes]]:
        return list(self._entries)

    def copy(self, *, immutable: bool = False) -> Fields:
        return type(self)(self._entries, immutable=immutable)

    def __repr__(self) -> str:
        return f"Fields({self._entries!r})"


# -- trailers and bodies ----------------------------------------------------------------


class _TrailersSlot:
    """A one-shot of trailers: sent once, or closed when the sender goes away unsent.
    The event a receiver waits on is made only when one has to wait."""

    def __init__(self) -> None:
        self.value: Fields | None = None
        self.sent = False
        self._done: anyio.Event | None = None

    def send(self, value: Fields | None) -> None:
        if not self.sent:
            self.value = value
            self.sent = True
            if self._done is not None:
                self._done.set()

    async def wait(self) -> None:
        """Return once sent (at once, without a checkpoint, if it was)."""
        if not self.sent:
            if self._done is None:
                self._done = anyio.Event()
            await self._done.wait()

    async def receive(self) -> Fields | None:
        await self.wait()
        value, self.value = self.value, None
        return value


class TrailersSender:
    """The sending end of a body's trailers (``trailers-sender``)."""

    def __init__(self, slot: _TrailersSlot) -> None:
        self.slot = slot

    def send(self, trailers: Fields | None) -> None:
        self.slot.send(trailers)

    def close(self) -> None:
        self.slot.send(None)  # dropped unsent: the receiver gets `none`


class TrailersReceiver:
    """The receiving end of a body's trailers (``trailers-receiver``)."""

    def __init__(self, slot: _TrailersSlot) -> None:
        self.slot = slot

    @property
    def ready(self) -> bool:
        """Whether the trailers (or their absence) were sent."""
        return self.slot.sent

    async def wait(self) -> None:
        """Return once :attr:`ready`."""
        await self.slot.wait()

    async def receive(self) -> Fields | None:
        return await self.slot.receive()


def make_trailers() -> tuple[TrailersSender, TrailersReceiver]:
    """A connected sender/receiver pair for one body's trailers."""
    slot = _TrailersSlot()
    return TrailersSender(slot), TrailersReceiver(slot)


class _StreamView(InputStream):
    """A child handle on a body's stream: reads it, does not close it when dropped."""

    def __init__(self, stream: InputStream) -> None:
        self._stream = stream

    def read(self, n: int) -> bytes:
        return self._stream.read(n)

    def subscribe(self) -> Pollable:
        return self._stream.subscribe()


class Body:
    """A body: a byte stream and, optionally, trailers that follow it."""

    def __init__(self, stream: InputStream, trailers: TrailersReceiver | None = None) -> None:
        self.stream = stream
        self.trailers = trailers

    def close(self) -> None:
        """Drop the stream (a pipe's writer then sees ``closed``)."""
        close = getattr(self.stream, "close", None)
        if close is not None:
            close()

    async def finish(self) -> Fields | None:
        """Close the stream and wait for the trailers (``None`` if there are none)."""
        self.close()
        if self.trailers is None:
            return None
        return await self.trailers.receive()


# -- requests and responses ----------------------------------------------------------


@dataclass
class RequestOptions:
    """Timeouts of an outgoing request, in nanoseconds (``None``: the client's default)."""

    connect_timeout: int | None = None
    first_byte_timeout: int | None = None
    between_bytes_timeout: int | None = None
    immutable: bool = False


@dataclass
class Request:
    """An HTTP request, incoming or outgoing.

    Attributes:
      method: ``"GET"``, ``"POST"``… (any other token is kept as given).
      scheme: ``"http"``, ``"https"``, another scheme, or ``None``.
      path_with_query: e.g. ``"/search?q=x"``, or ``None``.
      authority: ``host[:port]``, or ``None``.
    """

    headers: Fields
    body: Body
    method: str = "GET"
    scheme: str | None = None
    path_with_query: str | None = None
    authority: str | None = None
    options: RequestOptions | None = None

    def close(self) -> None:
        self.body.close()


@dataclass
class Response:
    """An HTTP response, incoming or outgoing."""

    headers: Fields
    body: Body
    status: int = 200

    def close(self) -> None:
        self.body.close()


OutgoingHandler = Callable[[Request], Awaitable[Response]]
"""Sends a guest's outgoing request: returns the response or raises :class:`ErrorCode`."""


# -- conversions to and from wasmtime-py values ---------------------------------------


def _method_from(value: Any) -> str:
    tag, payload = variant_case(value)
    if tag == "other":
        if not isinstance(payload, str) or not _TOKEN.fullmatch(payload):
            raise ValueError("invalid method")
        return payload
    return str(tag).upper()


def _method_to(method: str) -> Any:
    return variant(method.lower()) if method in METHODS else variant("other", method)


def _scheme_from(value: Any) -> str | None:
    if value is None:
        return None
    tag, payload = variant_case(value)
    return str(payload) if tag == "other" else str(tag).lower()


def _scheme_to(scheme: str | None) -> Any:
    if scheme is None:
        return None
    return variant(scheme.upper()) if scheme in ("http", "https") else variant("other", scheme)


def error_code_value(code: ErrorCode) -> Any:
    """An :class:`ErrorCode` as a wasmtime-py ``error-code`` value."""
    payload = code.payload
    if isinstance(payload, dict):
        payload = record(**payload)
    return variant(code.case, payload)


# -- the interface ----------------------------------------------------------------------


class WasiHttp:
    """wasi:http@0.3.0-draft for one instance."""

    def __init__(self, ctx: WasiContext, outgoing: OutgoingHandler | None) -> None:
        self.ctx = ctx
        self.outgoing = outgoing
        t = ctx.table
        ctx.define_resource(TYPES, "fields", ResourceKind.FIELDS)
        ctx.define_resource(TYPES, "body", ResourceKind.BODY, ctx.close_handle)
        ctx.define_resource(TYPES, "request", ResourceKind.REQUEST, ctx.close_handle)
        ctx.define_resource(TYPES, "response", ResourceKind.RESPONSE, ctx.close_handle)
        ctx.define_resource(TYPES, "request-options", ResourceKind.REQUEST_OPTIONS)
        ctx.define_resource(
            TYPES, "trailers-sender", ResourceKind.TRAILERS_SENDER, ctx.close_handle
        )
        ctx.define_resource(TYPES, "trailers-receiver", ResourceKind.TRAILERS_RECEIVER)

        def d(name: str, fn: Callable[..., Any]) -> None:
            ctx.define(TYPES, name, fn)

        # fields
        d("[constructor]fields", lambda: self.give(Fields()))
        d("[static]fields.from-list", self._fields_from_list)
        d("[method]fields.get", lambda f, name: t.get(f, Fields).get(name))
        d("[method]fields.has", lambda f, name: t.get(f, Fields).has(name))
        d("[method]fields.set", self._fields_set)
        d("[method]fields.delete", lambda f, name: _header(t.get(f, Fields).delete, name))
        d(
            "[method]fields.append",
            lambda f, name, value: _header(t.get(f, Fields).append, name, value),
        )
        d("[method]fields.entries", lambda f: t.get(f, Fields).entries())
        d("[method]fields.clone", lambda f: self.give(t.get(f, Fields).copy()))
        # trailers
        d("make-trailers", lambda: tuple(self.give(x) for x in make_trailers()))
        d(
            "[static]trailers-sender.send",
            lambda s, f: self.take(s, TrailersSender).send(self.take(f, Fields)),
        )
        ctx.define_async(
            TYPES,
            "[static]trailers-receiver.receive",
            lambda r: self.take(r, TrailersReceiver).receive(),
            finish=lambda fields: None if fields is None else self.give(fields),
        )
        # bodies
        d("[constructor]body", self._body)
        d("[method]body.stream", lambda b: self.give_stream(_StreamView(t.get(b, Body).stream)))
        ctx.define_async(
            TYPES,
            "[static]body.finish",
            lambda b: self.take(b, Body).finish(),
            finish=lambda fields: Ok(None if fields is None else self.give(fields)),
        )
        # request options
        d("[constructor]request-options", lambda: self.give(RequestOptions()))
        for name in ("connect-timeout", "first-byte-timeout", "between-bytes-timeout"):
            attr = name.replace("-", "_")
            d(f"[method]request-options.{name}", self._option_getter(attr))
            d(f"[method]request-options.set-{name}", self._option_setter(attr))
        # requests
        d("[constructor]request", self._request)
        d("[method]request.method", lambda r: _method_to(t.get(r, Request).method))
        d("[method]request.set-method", self._request_setter("method", _method_from))
        d("[method]request.path-with-query", lambda r: t.get(r, Request).path_with_query)
        d("[method]request.set-path-with-query", self._request_setter("path_with_query", _path))
        d("[method]request.scheme", lambda r: _scheme_to(t.get(r, Request).scheme))
        d("[method]request.set-scheme", self._request_setter("scheme", _scheme_from))
        d("[method]request.authority", lambda r: t.get(r, Request).authority)
        d("[method]request.set-authority", self._request_setter("authority", _authority))
        d("[method]request.options", self._request_options)
        d(
            "[method]request.headers",
            lambda r: self.give(t.get(r, Request).headers.copy(immutable=True)),
        )
        d("[static]request.into-parts", lambda r: self._into_parts(self.take(r, Request)))
        # responses
        d("[constructor]response", self._response)
        d("[method]response.status-code", lambda r: t.get(r, Response).status)
        d("[method]response.set-status-code", self._set_status)
        d(
            "[method]response.headers",
            lambda r: self.give(t.get(r, Response).headers.copy(immutable=True)),
        )
        d("[static]response.into-parts", lambda r: self._into_parts(self.take(r, Response)))
        d("http-error-code", self._http_error_code)
        # the imported handler: the host sends the guest's request
        ctx.define_async(HANDLER, "handle", self._send, finish=self._sent)

    # -- handles ----------------------------------------------------------------------
    _KINDS: ClassVar[dict[type, int]] = {
        Fields: ResourceKind.FIELDS,
        Body: ResourceKind.BODY,
        Request: ResourceKind.REQUEST,
        Response: ResourceKind.RESPONSE,
        RequestOptions: ResourceKind.REQUEST_OPTIONS,
        TrailersSender: ResourceKind.TRAILERS_SENDER,
        TrailersReceiver: ResourceKind.TRAILERS_RECEIVER,
    }

    def give(self, obj: Any) -> Any:
        """An owned handle to ``obj`` for the guest."""
        return self.ctx.own(self.ctx.table.add(obj), self._KINDS[type(obj)])

    def give_stream(self, stream: InputStream) -> Any:
        return self.ctx.own(self.ctx.table.add(stream), ResourceKind.INPUT_STREAM)

    def take(self, rep: int, cls: type[_T]) -> _T:
        """The object behind an owned handle the guest passed us (it is ours now)."""
        return self.ctx.table.take(rep, cls)

    # -- functions --------------------------------------------------------------------
    def _fields_from_list(self, entries: list[tuple[str, bytes]]) -> Any:
        try:
            return Ok(self.give(Fields.checked(entries)))
        except HeaderError as exc:
            return Err(variant(exc.code))

    def _fields_set(self, rep: int, name: str, values: list[bytes]) -> Any:
        # (a guest's most common fields call: one frame, where a lambda and _header made three)
        try:
            self.ctx.table.get(rep, Fields).set(name, values)
        except HeaderError as exc:
            return Err(variant(exc.code))
        return _OK

    def _body(self, stream_rep: int, trailers_rep: int | None) -> Any:
        stream = self.take(stream_rep, InputStream)
        trailers = None if trailers_rep is None else self.take(trailers_rep, TrailersReceiver)
        return self.give(Body(stream, trailers))

    def _request(self, headers: int, body: int, options: int | None) -> Any:
        opts = None if options is None else self.take(options, RequestOptions)
        if opts is not None:
            opts.immutable = True
        return self.give(Request(self.take(headers, Fields), self.take(body, Body), options=opts))

    def _response(self, headers: int, body: int) -> Any:
        return self.give(Response(self.take(headers, Fields), self.take(body, Body)))

    def _into_parts(self, message: Request | Response) -> tuple[Any, Any]:
        return self.give(message.headers), self.give(message.body)

    def _request_setter(self, attr: str, convert: Callable[[Any], Any]) -> Callable[..., Any]:
        def setter(rep: int, value: Any) -> Any:
            request = self.ctx.table.get(rep, Request)
            try:
                setattr(request, attr, convert(value))
            except ValueError:
                return Err(None)
            return _OK

        return setter

    def _request_options(self, rep: int) -> Any:
        options = self.ctx.table.get(rep, Request).options
        if options is None:
            return None
        return self.give(RequestOptions(**{**options.__dict__, "immutable": True}))

    def _option_getter(self, attr: str) -> Callable[[int], Any]:
        return lambda rep: getattr(self.ctx.table.get(rep, RequestOptions), attr)

    def _option_setter(self, attr: str) -> Callable[[int, Any], Any]:
        def setter(rep: int, value: int | None) -> Any:
            options = self.ctx.table.get(rep, RequestOptions)
            if options.immutable:
                return Err(variant("immutable"))
            setattr(options, attr, value)
            return _OK

        return setter

    def _set_status(self, rep: int, status: int) -> Any:
        if not 100 <= status <= 999:
            return Err(None)
        self.ctx.table.get(rep, Response).status = status
        return _OK

    def _http_error_code(self, rep: int) -> Any:
        error = self.ctx.table.get(rep, ErrorObject)
        code = getattr(error, "http_code", None)
        return None if code is None else error_code_value(code)

    def _send(self, rep: int) -> _Outcome:
        # during the guest's call: the handler is called now, so an HttpClient writes
        # the request at once (see HttpClient.send); its host task reads the response
        request = self.take(rep, Request)
        if self.outgoing is None:
            request.close()
            return _Outcome(_refused(ErrorCode("HTTP-request-denied")))
        try:
            sending = self.outgoing(request)
        except ErrorCode as exc:  # a plain function refusing it at once
            return _Outcome(_refused(exc))
        except ClientNotOpen:  # (raised out of the guest's call, it was a trap)
            request.close()
            return _Outcome(_refused(ErrorCode("HTTP-request-denied")))
        return _Outcome(sending)

    def _sent(self, outcome: Response | ErrorCode) -> Any:
        if isinstance(outcome, ErrorCode):
            return Err(error_code_value(outcome))
        return Ok(self.give(outcome))


async def _refused(code: ErrorCode) -> Response:
    raise code


class _Outcome(StartedAtCall["Response | ErrorCode"]):
    """The host task of an outgoing request: awaits the handler's response, with an
    :class:`ErrorCode` it raises as the value. Closed before it ever ran (the host
    task could not start), it closes what the handler returned, which may have
    written the request already and must give it up."""

    __slots__ = ("_sending",)

    def __init__(self, sending: Awaitable[Response]) -> None:
        self._sending = sending
        self._coro = self._outcome()

    async def _outcome(self) -> Response | ErrorCode:
        try:
            return await self._sending
        except ErrorCode as exc:
            return exc
        except Exception as exc:  # never out of the host task: that fails the instance
            return _sending_failure(exc)

    def _give_up(self) -> None:
        close_unstarted(self._sending)


def _sending_failure(exc: Exception) -> ErrorCode:
    """The guest's error code for a send that raised: a request body that broke off
    (its ``StreamFailed`` carries the code), else the handler's bug (logged)."""
    if isinstance(exc, StreamFailed):
        return exc.cause if isinstance(exc.cause, ErrorCode) else ErrorCode("internal-error")
    log.error("sending a guest's request failed", exc_info=exc)
    return ErrorCode("internal-error", f"{type(exc).__name__}: {exc}")


def _header(op: Callable[..., None], *args: Any) -> Any:
    try:
        op(*args)
    except HeaderError as exc:
        return Err(variant(exc.code))
    return _OK


_NOT_IN_PATH = re.compile("[ \r\n\0#]")
_NOT_IN_AUTHORITY = re.compile("[ /?#@\r\n\0]")


def _path(value: str | None) -> str | None:
    if value is not None and (not value or _NOT_IN_PATH.search(value)):
        raise ValueError("invalid path")
    return value


def _authority(value: str | None) -> str | None:
    if value is not None and _NOT_IN_AUTHORITY.search(value):
        raise ValueError("invalid authority")
    return value


__all__ = [
    "Body",
    "ClientNotOpen",
    "ErrorCode",
    "Fields",
    "HeaderError",
    "OutgoingHandler",
    "Request",
    "RequestOptions",
    "Response",
    "TrailersReceiver",
    "TrailersSender",
    "WasiHttp",
    "make_trailers",
]
