"""``wasi:http@0.2.x``: the standard ``proxy`` world's types and handlers, host side.

What ``wasmtime serve``, Spin and the language SDKs' proxy components use: an exported
``incoming-handler.handle(request, response-out)`` that runs to completion, answering
through its ``response-outparam``, and an imported ``outgoing-handler.handle`` that
returns a ``future-incoming-response``. Bodies are our ``wasi:io`` streams over
bounded in-memory pipes (backpressure both ways, nothing buffered whole); trailers
and responses arrive through futures whose pollables are trio events, so a guest
blocked in ``poll`` suspends only itself.

The host's side of a served request is :class:`IncomingRequest` (built from the HTTP
request), :class:`ResponseOutparam` (awaited for the guest's answer) and the
:class:`OutgoingBody` of the response (read as the guest writes it). Outgoing
requests go to the same :data:`~trio_isyswasfa.http.OutgoingHandler` as the draft's
(an :class:`~trio_isyswasfa.http.HttpClient`'s ``send``, behind its allow-list).

Where we follow wasmtime's host rather than leave it open: the forbidden fields are
wasmtime's defaults (hop-by-hop fields, ``host`` and the proxy credentials); a body
written past its declared ``content-length`` fails the write
(``HTTP-response-body-size`` through ``http-error-code``) and the response is cut
off; a body dropped without ``finish`` is cut off too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar, TypeVar

import anyio

from .._engine import Err, Ok, ResourceKind, own, variant, variant_case
from .._seam import OwnComponent
from ..wasi._context import WasiContext
from ..wasi.io import (
    ErrorObject,
    InputStream,
    Pipe,
    PipeReader,
    PipeWriter,
    Pollable,
    StreamClosed,
    StreamFailed,
)
from .types import (
    _BAD_VALUE,
    _TOKEN,
    Body,
    ClientNotOpen,
    ErrorCode,
    Fields,
    HeaderError,
    OutgoingHandler,
    Request,
    RequestOptions,
    Response,
    TrailersReceiver,
    _authority,
    _method_from,
    _method_to,
    _path,
    _scheme_from,
    _scheme_to,
    _TrailersSlot,
    error_code_value,
)

_T = TypeVar("_T")
log = logging.getLogger("trio_isyswasfa.http")
_OK = Ok(None)  # (frozen: one serves every call that answers ``ok``)
_NONE = Err(None)

# interface keys: every 0.2.x release links here (``_host.interface_key``)
TYPES = "wasi:http/types@0.2"
INCOMING_HANDLER = "wasi:http/incoming-handler@0.2"
OUTGOING_HANDLER = "wasi:http/outgoing-handler@0.2"

FORBIDDEN = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "host",
        "http2-settings",
    }
)
"""Fields a 0.2 guest may not set: wasmtime's default list."""


_NAMES: dict[str, str] = {}
"""Field names a guest's list held that are tokens, by their lower case: a guest sends
the same few names on every response, and a regex match is the dearest step of the
check (bounded: at most ``_MAX_NAMES`` are kept)."""
_MAX_NAMES = 1024


class P2Fields(Fields):
    """Fields of a 0.2 guest (wasmtime's forbidden list)."""

    forbidden: ClassVar[frozenset[str]] = FORBIDDEN

    @classmethod
    def checked(cls, entries: Iterable[tuple[str, bytes]]) -> P2Fields:
        """Fields from a guest's list, validated as :meth:`append` validates each
        (raises :class:`HeaderError`): one loop, not two calls a field (a guest's
        response headers come this way on every request)."""
        out = cls()
        kept = out._entries
        bad = _BAD_VALUE.search
        forbidden = cls.forbidden
        names = _NAMES
        for name, value in entries:
            key = names.get(name)
            if key is None:
                if not _TOKEN.fullmatch(name):
                    raise HeaderError("invalid-syntax")
                key = name.lower()
                if len(names) < _MAX_NAMES:
                    names[name] = key
            if key in forbidden:
                raise HeaderError("forbidden")
            if bad(value):
                raise HeaderError("invalid-syntax")
            kept.append((name, bytes(value)))
        return out


# -- bodies -----------------------------------------------------------------------------


class _ChildStream(InputStream):
    """An incoming body's stream, handed to the guest: reading it reads the body."""

    def __init__(self, body: IncomingBody) -> None:
        self._body = body

    def read(self, n: int) -> bytes:
        return self._body.stream.read(n)

    def subscribe(self) -> Pollable:
        return self._body.stream.subscribe()


class _Ended(InputStream):
    """A stream that has ended (it holds nothing: one serves every empty body)."""

    def read(self, n: int) -> bytes:
        raise StreamClosed


_ENDED = _Ended()


class IncomingBody:
    """A body the guest reads: its stream (taken once) and its trailers, if any."""

    def __init__(self, stream: InputStream, trailers: TrailersReceiver | None = None) -> None:
        self.stream = stream
        self.trailers = trailers
        self.stream_taken = False

    @classmethod
    def ended(cls) -> IncomingBody:
        """The body of a request without one (a GET, say): its stream ends at once,
        with no trailers, and nothing feeds it (no pipe to make per request)."""
        return cls(_ENDED)

    def take_stream(self) -> InputStream | None:
        """The stream, the first time; None afterwards."""
        if self.stream_taken:
            return None
        self.stream_taken = True
        return _ChildStream(self)

    def close(self) -> None:
        """Stop reading (the writer then sees ``closed``)."""
        close = getattr(self.stream, "close", None)
        if close is not None:
            close()


class _TrailersReady(Pollable):
    def __init__(self, future: FutureTrailers) -> None:
        self._future = future

    def ready(self) -> bool:
        return self._future.ready()

    async def wait(self) -> None:
        await self._future.wait()


class FutureTrailers:
    """The trailers of an incoming body, once the body has been read to its end."""

    def __init__(self, trailers: TrailersReceiver | None) -> None:
        self._trailers = trailers
        self.taken = False

    def ready(self) -> bool:
        return self._trailers is None or self._trailers.ready

    async def wait(self) -> None:
        if self._trailers is not None:
            await self._trailers.wait()

    def take(self) -> Fields | None:
        """The trailers (once ready): ``None`` if there were none."""
        self.taken = True
        if self._trailers is None:
            return None
        value = self._trailers.slot.value
        self._trailers.slot.value = None
        return value


class _BodyWriter(PipeWriter):
    """The stream of an outgoing body: counts what is written against its declared
    ``content-length`` and refuses more."""

    def __init__(self, body: OutgoingBody) -> None:
        self.pipe = body.pipe  # (what PipeWriter's __init__ does, without the call)
        self.body = body

    def check_write(self) -> int:
        pipe = self.pipe
        if self.body.state != "open" or not pipe.reader_open:
            raise StreamClosed
        return pipe.capacity - len(pipe.buffer)

    def write(self, data: bytes) -> None:
        body = self.body
        limit = body.content_length
        if limit is not None and body.written + len(data) > limit:
            problem = f"body written past its content-length ({limit} bytes)"
            if body.request:
                body.abort(problem)  # a request is not sent as if it were complete
            else:
                # as wasmtime: the response goes out whole, cut at its declared length
                room = limit - body.written
                if room > 0:
                    body.written = limit
                    super().write(data[:room])
                body.cut_at_length(problem)
            code = ErrorCode(body.size_error, body.written + len(data))
            raise StreamFailed(f"{code}: the declared content-length is {limit}", cause=code)
        body.written += len(data)
        pipe = self.pipe  # (PipeWriter.write, inline: one call fewer a write)
        pipe.buffer += data
        pipe.readable.changed()

    def close(self) -> None:
        pass  # the body ends with `finish` (or aborts when dropped), not with its stream


class OutgoingBody:
    """A body the guest writes (a response's, or an outgoing request's).

    ``state`` is ``"open"``, ``"finished"`` (complete, with trailers if any) or
    ``"aborted"`` (dropped unfinished, or written past its ``content-length``): the
    reader then sees the stream end with :attr:`complete` false and cuts the message off.
    """

    def __init__(
        self,
        content_length: int | None,
        *,
        request: bool = False,
        response: OutgoingResponse | None = None,
    ) -> None:
        self.pipe = Pipe()
        self.content_length = content_length
        self.request = request
        self.response = response  # (a response's body: see OutgoingResponse.bodiless)
        self.size_error = "HTTP-request-body-size" if request else "HTTP-response-body-size"
        self.overflowed = False
        self.written = 0
        self.state = "open"
        self.problem: str | None = None
        self.stream_taken = False
        self._trailers = _TrailersSlot()

    @classmethod
    def empty(cls) -> OutgoingBody:
        """A finished body without content (the guest never asked for the body)."""
        body = cls(None)
        body.state = "finished"
        body._end()
        return body

    @property
    def trailers(self) -> TrailersReceiver:
        """The body's trailers, for its reader (sent when it finishes; ``None``, if
        it has none or ends otherwise)."""
        return TrailersReceiver(self._trailers)

    def take_stream(self) -> _BodyWriter | None:
        """The stream the guest writes, the first time; None afterwards."""
        if self.stream_taken:
            return None
        self.stream_taken = True
        return _BodyWriter(self)

    def reader(self) -> PipeReader:
        """The stream the host reads the body from: it ends when the body does,
        complete or not (see :attr:`complete`)."""
        return PipeReader(self.pipe)

    def strict_reader(self) -> InputStream:
        """Like :meth:`reader`, but a body that ends incomplete fails the read that
        finds its end (``StreamFailed`` carrying ``HTTP-request-body-size``), so the
        client sending it gives up the request instead of sending it as complete."""
        return _StrictReader(self)

    @property
    def complete(self) -> bool:
        """Whether the guest finished the body (as declared): it may go out whole."""
        return self.state == "finished"

    def finish(self, trailers: Fields | None) -> ErrorCode | None:
        """The guest finished the body: the error, if it does not match its length."""
        if self.state == "aborted" or self.overflowed:
            return ErrorCode(self.size_error, self.written)
        if (
            self.content_length is not None
            and self.written != self.content_length
            and not (self.written == 0 and self.response is not None and self.response.bodiless)
        ):
            self.abort(f"body of {self.written} bytes, declared {self.content_length}")
            return ErrorCode(self.size_error, self.written)
        self.state = "finished"
        self._end(trailers)
        return None

    def cut_at_length(self, problem: str) -> None:
        """A response body written past its ``content-length``: the declared bytes are
        its whole (they go out as a complete response, as on wasmtime), and the guest's
        write and ``finish`` fail; :attr:`problem` says what the guest did."""
        if self.state == "open":
            self.state = "finished"
            self.overflowed = True
            self.problem = problem
            self._end()

    def abort(self, problem: str = "body dropped without finish") -> None:
        """The body is corrupt: its reader sees it end, incomplete."""
        if self.state == "open":
            self.state = "aborted"
            self.problem = problem
            self._end()

    def _end(self, trailers: Fields | None = None) -> None:
        self._trailers.send(trailers)  # (once: the reader learns there are none if not)
        self.pipe.writer_open = False
        self.pipe.readable.changed()


class _StrictReader(PipeReader):
    def __init__(self, body: OutgoingBody) -> None:
        super().__init__(body.pipe)
        self.body = body

    def read(self, n: int) -> bytes:
        try:
            return super().read(n)
        except StreamClosed:
            body = self.body
            if body.state == "aborted":
                code = ErrorCode(body.size_error, body.written)
                raise StreamFailed(f"{code}: {body.problem}", cause=code) from None
            raise


def content_length(fields: Fields) -> int | None:
    """The ``content-length`` a message declares: its first value (None if absent or
    not a number). A length repeated (``3`` twice, or ``3, 3``: RFC 9110 8.6) is that
    length; of differing ones the first holds the body, as wasmtime reads it (and only
    it goes out: ``_asgi._framing``)."""
    found: bytes | None = None
    for name, value in fields._entries:  # (a loop, not ``get``'s list: every response)
        if name.lower() == "content-length":
            found = value
            break
    if found is None:
        return None
    first = found.partition(b",")[0].strip()
    if not first.isdigit():
        return None
    return int(first)


# -- requests and responses ---------------------------------------------------------------


class IncomingRequest:
    """A request the guest receives: head, immutable headers, and a body taken once.

    Args:
      method, scheme, path_with_query, authority: the request's head.
      headers: its fields as ``(name, value)`` pairs, or a function giving them, called
        when the guest first asks for them (many guests never do). ``host`` is left
        out: the guest sees it as the authority (as on wasmtime).
      body: the body's stream, and its trailers if any.
    """

    def __init__(
        self,
        method: str,
        scheme: str | None,
        path_with_query: str | None,
        authority: str | None,
        headers: Iterable[tuple[str, bytes]] | Callable[[], Iterable[tuple[str, bytes]]],
        body: IncomingBody,
    ) -> None:
        self.method = method
        self.scheme = scheme
        self.path_with_query = path_with_query
        self.authority = authority
        self._headers = headers
        self._fields: P2Fields | None = None
        self.body: IncomingBody | None = body

    @classmethod
    def from_request(cls, request: Request) -> IncomingRequest:
        """The guest's view of one of our :class:`~trio_isyswasfa.http.Request` s."""
        return cls(
            request.method,
            request.scheme,
            request.path_with_query,
            request.authority,
            request.headers.entries(),
            IncomingBody(request.body.stream, request.body.trailers),
        )

    @property
    def headers(self) -> P2Fields:
        """The request's fields (immutable; made once)."""
        fields = self._fields
        if fields is None:
            entries = self._headers
            if callable(entries):
                entries = entries()
            fields = self._fields = P2Fields(
                [(n, v) for n, v in entries if n.lower() != "host"], immutable=True
            )
        return fields

    def close(self) -> None:
        """The guest dropped it: stop reading a body it never took."""
        if self.body is not None:
            self.body.close()


class OutgoingRequest:
    """A request the guest builds to send through ``outgoing-handler.handle``."""

    def __init__(self, headers: Fields) -> None:
        self.headers = headers
        self.method = "GET"
        self.scheme: str | None = None
        self.path_with_query: str | None = None
        self.authority: str | None = None
        self.body: OutgoingBody | None = None
        self.body_taken = False

    def take_body(self) -> OutgoingBody | None:
        """The request's body, the first time; None afterwards."""
        if self.body_taken:
            return None
        self.body_taken = True
        self.body = OutgoingBody(content_length(self.headers), request=True)
        return self.body

    def to_request(self, options: RequestOptions | None) -> Request:
        """The request as our HTTP client sends it (its body read as the guest writes)."""
        body = self.body or OutgoingBody.empty()
        return Request(
            self.headers.copy(),
            Body(body.strict_reader(), body.trailers),
            method=self.method,
            scheme=self.scheme,
            path_with_query=self.path_with_query,
            authority=self.authority,
            options=options,
        )


class OutgoingResponse:
    """The response a guest builds; ``set`` hands it to the host."""

    def __init__(self, headers: Fields) -> None:
        self.headers = headers
        self.status = 200
        self.body: OutgoingBody | None = None
        self.body_taken = False
        self.to_head = False  # it answers a HEAD request (known once set)

    @property
    def bodiless(self) -> bool:
        """Whether the response goes out without a body whatever its
        ``content-length`` says (RFC 9110, 9.3.2 and 8.6: a HEAD request's, a 304's):
        its body may be empty then."""
        return self.to_head or self.status == 304

    def take_body(self) -> OutgoingBody | None:
        """The response's body, the first time; None afterwards."""
        if self.body_taken:
            return None
        self.body_taken = True
        self.body = OutgoingBody(content_length(self.headers), response=self)
        return self.body


class IncomingResponse:
    """A response to a guest's outgoing request."""

    def __init__(self, response: Response) -> None:
        self.status = response.status
        self.headers = P2Fields(response.headers.entries(), immutable=True)
        self.body: IncomingBody | None = IncomingBody(response.body.stream, response.body.trailers)

    def close(self) -> None:
        """The guest dropped it: stop reading a body it never took."""
        if self.body is not None:
            self.body.close()


class ResponseOutparam:
    """Where the guest's answer to a served request lands (``response-outparam.set``).

    Most answers are read after ``handle`` returned, without waiting: the event a
    waiter needs is made only when one waits.
    """

    def __init__(self, *, head: bool = False) -> None:
        self.head = head  # the request is a HEAD request
        self.response: OutgoingResponse | ErrorCode | None = None
        self.is_set = False
        self.returned = False  # the ``handle`` call is over
        self._settled: anyio.Event | None = None

    def set(self, response: OutgoingResponse | ErrorCode) -> None:
        """The guest's answer (``response-outparam.set``)."""
        if self.head and isinstance(response, OutgoingResponse):
            response.to_head = True
        self.response = response
        self.is_set = True
        if self._settled is not None:  # (_wake, inline: every request sets one)
            self._settled.set()

    def export_returned(self) -> None:
        """The ``handle`` call is over: whoever waits learns whether it answered."""
        self.returned = True
        self._wake()

    def _wake(self) -> None:
        if self._settled is not None:
            self._settled.set()

    async def wait(self) -> OutgoingResponse | ErrorCode | None:
        """The guest's answer, once set, or None once ``handle`` returned without one
        (at once, without a checkpoint, if either happened already)."""
        if not (self.is_set or self.returned):
            if self._settled is None:
                self._settled = anyio.Event()
            await self._settled.wait()
        return self.response


class _FutureReady(Pollable):
    def __init__(self, future: FutureIncomingResponse) -> None:
        self._future = future

    def ready(self) -> bool:
        return self._future.done.is_set()

    async def wait(self) -> None:
        await self._future.done.wait()


class FutureIncomingResponse:
    """The response to an outgoing request, while it is on its way."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.outcome: IncomingResponse | ErrorCode | None = None
        self.taken = False
        self.scope = anyio.CancelScope()

    async def run(self, send: Callable[[], Awaitable[Response]]) -> None:
        """Send the request (in the instance's task group), keeping the outcome."""
        outcome: IncomingResponse | ErrorCode
        with self.scope:
            try:
                outcome = IncomingResponse(await send())
            except ErrorCode as exc:
                outcome = exc
            except StreamFailed as exc:  # the guest's body broke off (see strict_reader)
                cause = exc.cause
                outcome = cause if isinstance(cause, ErrorCode) else ErrorCode("internal-error")
            except ClientNotOpen:  # (a ComponentApp's HttpClient without the lifespan)
                outcome = ErrorCode("HTTP-request-denied")
            except Exception as exc:  # the handler's bug: the guest gets an error code
                log.exception("sending a guest's request failed")
                outcome = ErrorCode("internal-error", f"{type(exc).__name__}: {exc}")
            self.outcome = outcome
            self.done.set()

    def close(self) -> None:
        """The guest dropped it: stop sending, release a response it never took."""
        self.scope.cancel()
        if isinstance(self.outcome, IncomingResponse) and not self.taken:
            self.outcome.close()


# -- the interfaces ---------------------------------------------------------------------


class WasiHttpP2:
    """``wasi:http@0.2.x`` (types and outgoing-handler) for one instance.

    Args:
      ctx: the instance's WASI context.
      outgoing: sends the guest's outgoing requests (None: ``HTTP-request-denied``).
      spawn: starts a task in the instance's task group (the sends run there, so
        they outlive the host call that started them).
      own_handle: makes an owned handle of a rep in the engine's shape (the loaded
        component's ``own_handle``; the default, a handle either engine takes, costs
        the own engine for nothing).
    """

    _KINDS: ClassVar[dict[type, int]] = {
        P2Fields: ResourceKind.P2_FIELDS,
        IncomingRequest: ResourceKind.INCOMING_REQUEST,
        OutgoingRequest: ResourceKind.OUTGOING_REQUEST,
        RequestOptions: ResourceKind.P2_REQUEST_OPTIONS,
        ResponseOutparam: ResourceKind.RESPONSE_OUTPARAM,
        IncomingResponse: ResourceKind.INCOMING_RESPONSE,
        IncomingBody: ResourceKind.INCOMING_BODY,
        FutureTrailers: ResourceKind.FUTURE_TRAILERS,
        OutgoingResponse: ResourceKind.OUTGOING_RESPONSE,
        OutgoingBody: ResourceKind.OUTGOING_BODY,
        FutureIncomingResponse: ResourceKind.FUTURE_INCOMING_RESPONSE,
    }

    def __init__(
        self,
        ctx: WasiContext,
        outgoing: OutgoingHandler | None,
        spawn: Callable[[Callable[[], Awaitable[None]]], None],
        own_handle: Callable[[int, int], Any] = own,
    ) -> None:
        self.ctx = ctx
        self._handle = own_handle
        self.outgoing = outgoing
        self.spawn = spawn
        t = ctx.table
        # on our engine a handle is its rep: giving an object is adding it to the table
        self._reps = own_handle is OwnComponent.own_handle
        self.give: Callable[[Any], Any] = t.add if self._reps else self._give_handle
        """An owned handle to an object for the guest."""
        self.take = t.take
        """The object behind an owned handle the guest passed us (it is ours now;
        ``take(rep, cls)``)."""
        r = ctx.define_resource
        r(TYPES, "fields", ResourceKind.P2_FIELDS)
        r(TYPES, "incoming-request", ResourceKind.INCOMING_REQUEST, ctx.close_handle)
        r(TYPES, "outgoing-request", ResourceKind.OUTGOING_REQUEST, self._drop_outgoing)
        r(TYPES, "request-options", ResourceKind.P2_REQUEST_OPTIONS)
        r(TYPES, "response-outparam", ResourceKind.RESPONSE_OUTPARAM)
        r(TYPES, "incoming-response", ResourceKind.INCOMING_RESPONSE, ctx.close_handle)
        r(TYPES, "incoming-body", ResourceKind.INCOMING_BODY, ctx.close_handle)
        r(TYPES, "future-trailers", ResourceKind.FUTURE_TRAILERS)
        r(TYPES, "outgoing-response", ResourceKind.OUTGOING_RESPONSE, self._drop_outgoing)
        r(TYPES, "outgoing-body", ResourceKind.OUTGOING_BODY, self._drop_body)
        r(
            TYPES,
            "future-incoming-response",
            ResourceKind.FUTURE_INCOMING_RESPONSE,
            ctx.close_handle,
        )

        def d(name: str, fn: Callable[..., Any]) -> None:
            ctx.define(TYPES, name, fn)

        get = t.get  # (each host function below looks its objects up itself: no layer)
        give = self.give
        # fields
        d("[constructor]fields", lambda: give(P2Fields()))
        d("[static]fields.from-list", self._fields_from_list)
        d("[method]fields.get", lambda f, name: get(f, P2Fields).get(name))
        d("[method]fields.has", lambda f, name: get(f, P2Fields).has(name))
        d("[method]fields.set", lambda f, name, vals: _header(get(f, P2Fields).set, name, vals))
        d("[method]fields.delete", lambda f, name: _header(get(f, P2Fields).delete, name))
        d("[method]fields.append", lambda f, n, value: _header(get(f, P2Fields).append, n, value))
        d("[method]fields.entries", lambda f: get(f, P2Fields).entries())
        d("[method]fields.clone", lambda f: give(get(f, P2Fields).copy()))
        d("http-error-code", self._http_error_code)
        # incoming requests
        d("[method]incoming-request.method", lambda r: _method_to(get(r, IncomingRequest).method))
        d(
            "[method]incoming-request.path-with-query",
            lambda r: get(r, IncomingRequest).path_with_query,
        )
        d("[method]incoming-request.scheme", lambda r: _scheme_to(get(r, IncomingRequest).scheme))
        d("[method]incoming-request.authority", lambda r: get(r, IncomingRequest).authority)
        d(
            "[method]incoming-request.headers",
            lambda r: self._headers(get(r, IncomingRequest).headers),
        )
        d("[method]incoming-request.consume", lambda r: self._consume(get(r, IncomingRequest)))
        # outgoing requests
        d("[constructor]outgoing-request", lambda h: give(OutgoingRequest(self._own(h))))
        d("[method]outgoing-request.body", lambda r: self._body(self._out(r)))
        d("[method]outgoing-request.method", lambda r: _method_to(self._out(r).method))
        d("[method]outgoing-request.set-method", self._setter("method", _method_from))
        d("[method]outgoing-request.path-with-query", lambda r: self._out(r).path_with_query)
        d(
            "[method]outgoing-request.set-path-with-query",
            self._setter("path_with_query", _path),
        )
        d("[method]outgoing-request.scheme", lambda r: _scheme_to(self._out(r).scheme))
        d("[method]outgoing-request.set-scheme", self._setter("scheme", _scheme_from))
        d("[method]outgoing-request.authority", lambda r: self._out(r).authority)
        d("[method]outgoing-request.set-authority", self._setter("authority", _authority))
        d("[method]outgoing-request.headers", lambda r: self._headers(self._out(r).headers))
        # request options
        d("[constructor]request-options", lambda: give(RequestOptions()))
        for name in ("connect-timeout", "first-byte-timeout", "between-bytes-timeout"):
            attr = name.replace("-", "_")
            d(f"[method]request-options.{name}", self._option_getter(attr))
            d(f"[method]request-options.set-{name}", self._option_setter(attr))
        # the served request's answer
        d("[static]response-outparam.set", self._set_response)
        # incoming responses
        d("[method]incoming-response.status", lambda r: t.get(r, IncomingResponse).status)
        d(
            "[method]incoming-response.headers",
            lambda r: self._headers(t.get(r, IncomingResponse).headers),
        )
        d(
            "[method]incoming-response.consume",
            lambda r: self._consume(t.get(r, IncomingResponse)),
        )
        # incoming bodies and their trailers
        d("[method]incoming-body.stream", self._incoming_stream)
        d("[static]incoming-body.finish", self._finish_incoming)
        d(
            "[method]future-trailers.subscribe",
            lambda f: self._pollable(_TrailersReady(t.get(f, FutureTrailers))),
        )
        d("[method]future-trailers.get", self._trailers_get)
        # outgoing responses and bodies
        d("[constructor]outgoing-response", lambda h: give(OutgoingResponse(self._own(h))))
        d("[method]outgoing-response.status-code", lambda r: get(r, OutgoingResponse).status)
        d("[method]outgoing-response.set-status-code", self._set_status)
        d(
            "[method]outgoing-response.headers",
            lambda r: self._headers(get(r, OutgoingResponse).headers),
        )
        d("[method]outgoing-response.body", lambda r: self._body(get(r, OutgoingResponse)))
        d("[method]outgoing-body.write", self._body_stream)
        d("[static]outgoing-body.finish", self._finish_outgoing)
        # outgoing requests' responses
        d(
            "[method]future-incoming-response.subscribe",
            lambda f: self._pollable(_FutureReady(t.get(f, FutureIncomingResponse))),
        )
        d("[method]future-incoming-response.get", self._response_get)
        ctx.define(OUTGOING_HANDLER, "handle", self._send)

    # -- handles ----------------------------------------------------------------------
    def _give_handle(self, obj: Any) -> Any:
        # ``give`` on the stock engine: a handle made of the rep
        return self._handle(self.ctx.table.add(obj), self._KINDS[type(obj)])

    def _new(self, obj: Any, kind: int) -> Any:
        """An owned handle of resource ``kind`` (a WASI one) to ``obj``."""
        rep = self.ctx.table.add(obj)
        return rep if self._reps else self._handle(rep, kind)

    def _own(self, rep: int) -> Fields:
        headers = self.take(rep, P2Fields)
        return headers if not headers.immutable else headers.copy()

    def _out(self, rep: int) -> OutgoingRequest:
        return self.ctx.table.get(rep, OutgoingRequest)

    def _headers(self, headers: Fields) -> Any:
        # a child: an immutable view of the message's headers (as wasmtime, a copy of
        # mutable ones; immutable ones are shared, as nothing can change them)
        return self.give(headers if headers.immutable else headers.copy(immutable=True))

    def _pollable(self, pollable: Pollable) -> Any:
        return self._new(pollable, ResourceKind.POLLABLE)

    def _drop_outgoing(self, rep: int) -> None:
        message = self.ctx.table.remove(rep)
        body = getattr(message, "body", None)
        if isinstance(body, OutgoingBody):
            body.abort("the message was dropped before it was sent")

    def _drop_body(self, rep: int) -> None:
        self.ctx.table.remove(rep).abort()

    # -- fields -----------------------------------------------------------------------
    def _fields_from_list(self, entries: Iterable[tuple[str, bytes]]) -> Any:
        try:
            return Ok(self.give(P2Fields.checked(entries)))
        except HeaderError as exc:
            return Err(variant(exc.code))

    def _http_error_code(self, rep: int) -> Any:
        cause = self.ctx.table.get(rep, ErrorObject).cause
        return error_code_value(cause) if isinstance(cause, ErrorCode) else None

    # -- messages ---------------------------------------------------------------------
    def _consume(self, message: IncomingRequest | IncomingResponse) -> Any:
        body, message.body = message.body, None
        return _NONE if body is None else Ok(self.give(body))

    def _body(self, message: OutgoingRequest | OutgoingResponse) -> Any:
        body = message.take_body()
        return _NONE if body is None else Ok(self.give(body))

    def _setter(self, attr: str, convert: Callable[[Any], Any]) -> Callable[..., Any]:
        def setter(rep: int, value: Any) -> Any:
            request = self._out(rep)
            try:
                setattr(request, attr, convert(value))
            except ValueError:
                return _NONE
            return _OK

        return setter

    def _set_status(self, rep: int, status: int) -> Any:
        if not 100 <= status <= 999:
            return _NONE
        self.ctx.table.get(rep, OutgoingResponse).status = status
        return _OK

    def _option_getter(self, attr: str) -> Callable[[int], Any]:
        return lambda rep: getattr(self.ctx.table.get(rep, RequestOptions), attr)

    def _option_setter(self, attr: str) -> Callable[[int, Any], Any]:
        def setter(rep: int, value: int | None) -> Any:
            setattr(self.ctx.table.get(rep, RequestOptions), attr, value)
            return _OK

        return setter

    def _set_response(self, rep: int, response: Any) -> None:
        outparam = self.take(rep, ResponseOutparam)
        if isinstance(response, Err):
            outparam.set(ErrorCode(*variant_case(response.value)))
        else:
            outparam.set(self.take(response.value, OutgoingResponse))

    # -- bodies -------------------------------------------------------------------------
    def _incoming_stream(self, rep: int) -> Any:
        stream = self.ctx.table.get(rep, IncomingBody).take_stream()
        if stream is None:
            return _NONE
        return Ok(self._new(stream, ResourceKind.INPUT_STREAM))

    def _finish_incoming(self, rep: int) -> Any:
        body = self.take(rep, IncomingBody)
        body.close()  # what is left unread is dropped; the trailers follow its end
        return self.give(FutureTrailers(body.trailers))

    def _trailers_get(self, rep: int) -> Any:
        future = self.ctx.table.get(rep, FutureTrailers)
        if future.taken:
            return _NONE
        if not future.ready():
            return None
        trailers = future.take()
        return Ok(Ok(None if trailers is None else self.give(P2Fields(trailers.entries()))))

    def _body_stream(self, rep: int) -> Any:
        table = self.ctx.table
        stream = table.get(rep, OutgoingBody).take_stream()
        if stream is None:
            return _NONE
        out = table.add(stream)  # (``_new``, inline: every response's body is written)
        return Ok(out if self._reps else self._handle(out, ResourceKind.OUTPUT_STREAM))

    def _finish_outgoing(self, rep: int, trailers: int | None) -> Any:
        body = self.take(rep, OutgoingBody)
        fields = None if trailers is None else self.take(trailers, P2Fields)
        error = body.finish(fields)
        return _OK if error is None else Err(error_code_value(error))

    # -- outgoing requests --------------------------------------------------------------
    def _send(self, rep: int, options: int | None) -> Any:
        request = self.take(rep, OutgoingRequest)
        opts = None if options is None else self.take(options, RequestOptions)
        outgoing = self.outgoing
        if outgoing is None:
            if request.body is not None:
                request.body.abort("the request was refused")
            return Err(error_code_value(ErrorCode("HTTP-request-denied")))
        future = FutureIncomingResponse()
        sent = request.to_request(opts)
        self.spawn(lambda: future.run(lambda: outgoing(sent)))
        return Ok(self.give(future))

    def _response_get(self, rep: int) -> Any:
        future = self.ctx.table.get(rep, FutureIncomingResponse)
        if future.taken:
            return _NONE
        if not future.done.is_set():
            return None
        future.taken = True
        outcome = future.outcome
        if isinstance(outcome, ErrorCode):
            return Ok(Err(error_code_value(outcome)))
        return Ok(Ok(self.give(outcome)))


def _header(op: Callable[..., None], *args: Any) -> Any:
    try:
        op(*args)
    except HeaderError as exc:
        return Err(variant(exc.code))
    return _OK


__all__ = [
    "FutureIncomingResponse",
    "FutureTrailers",
    "IncomingBody",
    "IncomingRequest",
    "IncomingResponse",
    "OutgoingBody",
    "OutgoingRequest",
    "OutgoingResponse",
    "P2Fields",
    "ResponseOutparam",
    "WasiHttpP2",
]
