"""A standard ``wasi:http/proxy@0.2.0`` app for componentize-py, written as its users write one.

Nothing here knows trio_isyswasfa: it uses only the bindings componentize-py generates
for the standard world, with blocking WASI 0.2 calls (each request gets its own instance
under ``wasmtime serve``). Routes, shared with ``tests/guests/proxy-rust`` so the
differential harness (``trio_isyswasfa.testing.http_differential``) checks both alike:

* ``/`` and ``/hello``: ``hello, world`` with a ``content-length``;
* ``/echo``: the method, path and query, scheme and every request header, one per line;
  request headers named ``x-*`` come back as response headers, repeats kept;
* ``/echo-body``: the request body streamed back as it arrives, request trailers as
  response trailers (declared in a ``trailer`` header if the request declared them);
* ``/bytes?n=N``: N bytes of a fixed pattern, written in 64 KiB pieces;
* ``/trailers``: a short body, then response trailers (declared in ``trailer``);
* ``/outgoing``: GET of the URL in the ``x-upstream-url`` header through the host,
  relaying its status, ``content-type`` and body (502 with the error code on failure);
* ``/sleep?ms=N``: answers after N ms;
* ``/no-response``, ``/overflow``, ``/underflow``: bad answers (the response never set;
  13 bytes under a ``content-length`` of 5, of 100) for the host to cut or fail;
* anything else: 404.
"""

from __future__ import annotations

import contextlib
from urllib.parse import parse_qs, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import monotonic_clock, outgoing_handler, streams
from wit_world.imports.types import (
    Fields,
    FutureTrailers,
    IncomingBody,
    IncomingRequest,
    Method_Get,
    Method_Other,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Http,
    Scheme_Https,
    Scheme_Other,
)

GUEST = b"python"
PIECE = 4096  # what one blocking-write-and-flush may carry
READ = 65536
PATTERN = b"abcdefghijklmnopqrstuvwxyz0123456789\n"

TEXT = [("content-type", b"text/plain; charset=utf-8"), ("x-guest", GUEST)]


def method_name(request: IncomingRequest) -> str:
    method = request.method()
    if isinstance(method, Method_Other):
        return method.value
    return type(method).__name__.removeprefix("Method_").upper()  # Method_Get: GET


def scheme_name(request: IncomingRequest) -> str:
    scheme = request.scheme()
    if scheme is None:
        return "none"
    if isinstance(scheme, Scheme_Http):
        return "http"
    if isinstance(scheme, Scheme_Https):
        return "https"
    assert isinstance(scheme, Scheme_Other)
    return scheme.value


def write_all(out: streams.OutputStream, data: bytes) -> None:
    for start in range(0, len(data), PIECE):
        out.blocking_write_and_flush(data[start : start + PIECE])


def respond(
    outparam: ResponseOutparam,
    status: int,
    headers: list[tuple[str, bytes]],
    body: bytes,
    trailers: Fields | None = None,
) -> None:
    response = OutgoingResponse(Fields.from_list(headers))
    response.set_status_code(status)
    out_body = response.body()
    ResponseOutparam.set(outparam, Ok(response))
    with out_body.write() as out:
        write_all(out, body)
    OutgoingBody.finish(out_body, trailers)


def echo(request: IncomingRequest, outparam: ResponseOutparam) -> None:
    lines = [
        f"method: {method_name(request)}",
        f"path-with-query: {request.path_with_query()}",
        f"scheme: {scheme_name(request)}",
        f"authority: {request.authority()}",
    ]
    headers = list(TEXT)
    with request.headers() as fields:
        # by name (distinct names come in each host's own order); repeats keep theirs
        for name, value in sorted(fields.entries(), key=lambda e: e[0]):
            lines.append(f"header: {name}: {value.decode('utf-8', 'replace')}")
            if name.startswith("x-"):
                headers.append((name, value))
    respond(outparam, 200, headers, ("\n".join(lines) + "\n").encode())


def echo_body(request: IncomingRequest, outparam: ResponseOutparam) -> None:
    with request.headers() as fields:
        kind = fields.get("content-type") or [b"application/octet-stream"]
        declared = fields.get("trailer")  # HTTP/1.1 sends only the trailers declared
    headers = [("content-type", kind[0]), ("x-guest", GUEST)]
    headers += [("trailer", value) for value in declared]
    in_body = request.consume()
    response = OutgoingResponse(Fields.from_list(headers))
    out_body = response.body()
    ResponseOutparam.set(outparam, Ok(response))
    with in_body.stream() as source, out_body.write() as sink:
        while True:
            try:
                chunk = source.blocking_read(READ)
            except Err as err:
                if isinstance(err.value, streams.StreamError_Closed):
                    break
                raise
            write_all(sink, chunk)
    trailers = wait_trailers(IncomingBody.finish(in_body))
    OutgoingBody.finish(out_body, trailers)


def wait_trailers(future: FutureTrailers) -> Fields | None:
    with future:
        with future.subscribe() as ready:
            ready.block()
        outcome = future.get()
    assert outcome is not None
    if isinstance(outcome, Err) or isinstance(outcome.value, Err):
        return None
    return outcome.value.value


def query(request: IncomingRequest, name: str, default: int) -> int:
    values = parse_qs(urlsplit(request.path_with_query() or "/").query).get(name)
    return int(values[0]) if values else default


def many_bytes(request: IncomingRequest, outparam: ResponseOutparam) -> None:
    n = query(request, "n", 1 << 20)
    response = OutgoingResponse(
        Fields.from_list([("content-type", b"application/octet-stream"), ("x-guest", GUEST)])
    )
    out_body = response.body()
    ResponseOutparam.set(outparam, Ok(response))
    block = PATTERN * (READ // len(PATTERN))  # whole patterns: the next block goes on
    with out_body.write() as out:
        sent = 0
        while sent < n:
            piece = block[: n - sent]
            write_all(out, piece)
            sent += len(piece)
    OutgoingBody.finish(out_body, None)


def with_trailers(outparam: ResponseOutparam) -> None:
    body = b"trailers follow\n"
    trailers = Fields.from_list(
        [("x-trailer-one", b"1"), ("x-body-length", str(len(body)).encode())]
    )
    headers = [*TEXT, ("trailer", b"x-trailer-one, x-body-length")]
    respond(outparam, 200, headers, body, trailers)


def outgoing(request: IncomingRequest, outparam: ResponseOutparam) -> None:
    with request.headers() as fields:
        target = fields.get("x-upstream-url")
    if not target:
        respond(outparam, 400, TEXT, b"missing x-upstream-url\n")
        return
    url = urlsplit(target[0].decode())
    upstream = OutgoingRequest(Fields.from_list([("x-from-guest", GUEST)]))
    upstream.set_method(Method_Get())
    upstream.set_scheme(Scheme_Https() if url.scheme == "https" else Scheme_Http())
    upstream.set_authority(url.netloc)
    upstream.set_path_with_query(url.path + (f"?{url.query}" if url.query else "") or "/")
    try:
        future = outgoing_handler.handle(upstream, None)
    except Err as err:
        respond(outparam, 502, TEXT, f"upstream error: {err.value!r}\n".encode())
        return
    with future:
        with future.subscribe() as ready:
            ready.block()
        outcome = future.get()
    assert outcome is not None
    assert isinstance(outcome, Ok)
    if isinstance(outcome.value, Err):
        respond(outparam, 502, TEXT, f"upstream error: {outcome.value.value!r}\n".encode())
        return
    with outcome.value.value as answer:
        status = answer.status()
        with answer.headers() as fields:
            kind = fields.get("content-type") or [b"application/octet-stream"]
        in_body = answer.consume()
        body = bytearray()
        with in_body.stream() as source:
            while True:
                try:
                    body += source.blocking_read(READ)
                except Err as err:
                    if isinstance(err.value, streams.StreamError_Closed):
                        break
                    raise
        wait_trailers(IncomingBody.finish(in_body))
    headers = [
        ("content-type", kind[0]),
        ("x-guest", GUEST),
        ("x-upstream-status", str(status).encode()),
    ]
    respond(outparam, status, headers, bytes(body))


def sleep(request: IncomingRequest, outparam: ResponseOutparam) -> None:
    ms = query(request, "ms", 100)
    with monotonic_clock.subscribe_duration(ms * 1_000_000) as timer:
        timer.block()
    respond(outparam, 200, TEXT, f"slept {ms} ms\n".encode())


def declared_length(outparam: ResponseOutparam, declared: int) -> None:
    """Answer ``hello, world`` (13 bytes) under a ``content-length`` of ``declared``,
    going on whatever the host says about the mismatch (it must cut or fail the response)."""
    response = OutgoingResponse(
        Fields.from_list([*TEXT, ("content-length", str(declared).encode())])
    )
    out_body = response.body()
    ResponseOutparam.set(outparam, Ok(response))
    with out_body.write() as out, contextlib.suppress(Err):
        out.blocking_write_and_flush(b"hello, world\n")
    with contextlib.suppress(Err):
        OutgoingBody.finish(out_body, None)


class IncomingHandler(exports.IncomingHandler):
    """The one export of the proxy world: route by path."""

    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        with request:
            path = urlsplit(request.path_with_query() or "/").path
            if path in ("/", "/hello"):
                body = b"hello, world\n"
                headers = [*TEXT, ("content-length", str(len(body)).encode())]
                respond(response_out, 200, headers, body)
            elif path == "/echo":
                echo(request, response_out)
            elif path == "/echo-body":
                echo_body(request, response_out)
            elif path == "/bytes":
                many_bytes(request, response_out)
            elif path == "/trailers":
                with_trailers(response_out)
            elif path == "/outgoing":
                outgoing(request, response_out)
            elif path == "/sleep":
                sleep(request, response_out)
            # bad answers, for the host to handle as the spec says: never set the
            # response; write past a declared content-length; finish short of it
            elif path == "/no-response":
                pass
            elif path == "/overflow":
                declared_length(response_out, 5)
            elif path == "/underflow":
                declared_length(response_out, 100)
            else:
                respond(response_out, 404, TEXT, b"not found\n")
