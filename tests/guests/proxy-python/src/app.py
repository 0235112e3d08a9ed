"""A standard wasi:http/proxy app (componentize-py, no isyswasfa), written as a user of
wasmtime serve or Spin would: synchronous, blocking on WASI streams and pollables.

Routes: /hello; /sleep?ms=N (blocks in poll, then answers); /forever (writes lines
until the client leaves); /echo (method, path, authority and headers as x-echo-* headers, the
request body streamed back, `x-trailer: v` sent back as a trailer); /stream?n=N (N
lines, each written and flushed apart); /fetch?url=URL (an outgoing GET: its status
and body); /fetch-post?url=URL (the request body sent on to URL with POST);
/fetch-drop?url=URL (the same, its body dropped unfinished); and
misbehaviours: /no-set, /set-twice, /error-code, /trap, /drop-body, /overflow (writes
past its content-length), /short (finishes short of it), /fields (tries forbidden and
immutable fields, answers what the host said); /count (how many requests this
instance has handled, this one included: 1 in a fresh instance).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import monotonic_clock, outgoing_handler, types
from wit_world.imports.streams import StreamError_Closed

CHUNK = 4096  # blocking-write-and-flush takes at most 4096 bytes
HANDLED = [0]  # requests this instance has handled


def respond(
    out: types.ResponseOutparam,
    status: int,
    headers: list[tuple[str, bytes]],
    body: bytes = b"",
    trailers: list[tuple[str, bytes]] | None = None,
) -> None:
    response = types.OutgoingResponse(types.Fields.from_list(headers))
    response.set_status_code(status)
    outgoing = response.body()
    types.ResponseOutparam.set(out, Ok(response))
    write_all(outgoing, body)
    finish(outgoing, trailers)


def write_all(outgoing: types.OutgoingBody, data: bytes) -> None:
    with outgoing.write() as stream:
        for i in range(0, len(data), CHUNK):
            stream.blocking_write_and_flush(data[i : i + CHUNK])


def finish(outgoing: types.OutgoingBody, trailers: list[tuple[str, bytes]] | None) -> None:
    fields = types.Fields.from_list(trailers) if trailers else None
    types.OutgoingBody.finish(outgoing, fields)


def method_name(method: types.Method) -> str:
    if isinstance(method, types.Method_Other):
        return method.value
    return type(method).__name__.removeprefix("Method_").upper()


def read_body(body: types.IncomingBody) -> bytes:
    data = bytearray()
    with body.stream() as stream:
        while True:
            try:
                data += stream.blocking_read(65536)
            except Err as exc:
                if isinstance(exc.value, StreamError_Closed):
                    break
                raise
    return bytes(data)


def fetch(
    url: str, method: types.Method, body: bytes | None, *, drop: bool = False
) -> types.IncomingResponse:
    parts = urlsplit(url)
    request = types.OutgoingRequest(types.Fields())
    request.set_method(method)
    request.set_scheme(types.Scheme_Https() if parts.scheme == "https" else types.Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query(parts.path + (f"?{parts.query}" if parts.query else ""))
    outgoing = request.body() if body is not None else None
    future = outgoing_handler.handle(request, None)
    if outgoing is not None:
        write_all(outgoing, body or b"")
        if drop:
            outgoing.__exit__(None, None, None)  # dropped without finish: the request breaks off
        else:
            finish(outgoing, None)
    while (result := future.get()) is None:
        with future.subscribe() as pollable:
            pollable.block()
    assert isinstance(result, Ok)
    if isinstance(result.value, Err):
        raise result.value
    return result.value.value


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: types.IncomingRequest, response_out: types.ResponseOutparam) -> None:
        HANDLED[0] += 1
        path = request.path_with_query() or "/"
        route, _, query = path.partition("?")
        params = {k: v[0] for k, v in parse_qs(query).items()}
        text = [("content-type", b"text/plain")]
        if route == "/hello":
            respond(response_out, 200, text, b"hello, world!\n")
        elif route == "/echo":
            self.echo(request, response_out)
        elif route == "/stream":
            response = types.OutgoingResponse(types.Fields.from_list(text))
            body = response.body()
            types.ResponseOutparam.set(response_out, Ok(response))
            with body.write() as stream:
                for i in range(int(params.get("n", "3"))):
                    stream.blocking_write_and_flush(f"line {i}\n".encode())
            finish(body, None)
        elif route in ("/fetch", "/fetch-post", "/fetch-drop"):
            post = route != "/fetch"
            sent = read_body(request.consume()) if post else None
            try:
                upstream = fetch(
                    params["url"],
                    types.Method_Post() if post else types.Method_Get(),
                    sent,
                    drop=route == "/fetch-drop",
                )
            except Err as exc:
                name = type(exc.value).__name__.removeprefix("ErrorCode_")
                respond(response_out, 502, text, f"error: {name}\n".encode())
                return
            data = read_body(upstream.consume())
            headers = [("x-upstream-status", str(upstream.status()).encode())]
            respond(response_out, 200, text + headers, data)
        elif route == "/sleep":
            with monotonic_clock.subscribe_duration(int(params["ms"]) * 1_000_000) as pollable:
                pollable.block()
            respond(response_out, 200, text, b"slept\n")
        elif route == "/forever":
            response = types.OutgoingResponse(types.Fields.from_list(text))
            body = response.body()
            types.ResponseOutparam.set(response_out, Ok(response))
            with body.write() as stream:
                while True:
                    stream.blocking_write_and_flush(b"line\n" * 100)
        elif route == "/no-set":
            pass
        elif route == "/set-twice":
            first = types.OutgoingResponse(types.Fields())
            second = types.OutgoingResponse(types.Fields())
            types.ResponseOutparam.set(response_out, Ok(first))
            sum(range(1_000_000))  # computes a while: epoch ticks fall between the two
            types.ResponseOutparam.set(response_out, Ok(second))
        elif route == "/error-code":
            types.ResponseOutparam.set(response_out, Err(types.ErrorCode_InternalError("no")))
        elif route == "/trap":
            raise RuntimeError("the guest failed")
        elif route == "/drop-body":
            response = types.OutgoingResponse(types.Fields.from_list(text))
            body = response.body()
            types.ResponseOutparam.set(response_out, Ok(response))
            with body.write() as stream:
                stream.blocking_write_and_flush(b"the start, and then nothing\n")
            body.__exit__(None, None, None)  # dropped without finish
        elif route in ("/overflow", "/short"):
            response = types.OutgoingResponse(
                types.Fields.from_list([*text, ("content-length", b"10")])
            )
            body = response.body()
            types.ResponseOutparam.set(response_out, Ok(response))
            outcome = "written"
            with body.write() as stream:
                try:
                    stream.blocking_write_and_flush(
                        b"0123456789abcdef" if route == "/overflow" else b"01234"
                    )
                except Err:
                    outcome = "refused"
            try:
                types.OutgoingBody.finish(body, None)
            except Err as exc:
                outcome += f", finish: {type(exc.value).__name__}"
            print(f"{route}: {outcome}")
        elif route == "/count":
            respond(response_out, 200, text, f"{HANDLED[0]}\n".encode())
        elif route == "/fields":
            respond(response_out, 200, text, self.fields(request).encode())
        else:
            respond(response_out, 404, text, b"no such route\n")

    def echo(self, request: types.IncomingRequest, response_out: types.ResponseOutparam) -> None:
        headers = [
            ("content-type", b"application/octet-stream"),
            ("x-echo-method", method_name(request.method()).encode()),
            ("x-echo-path", (request.path_with_query() or "").encode()),
            ("x-echo-authority", (request.authority() or "").encode()),
        ]
        with request.headers() as fields:
            for name, value in fields.entries():
                if name.lower() not in ("host", "content-length", "content-type"):
                    headers.append((f"x-echo-{name}", value))
            trailer = fields.get("x-trailer")
        response = types.OutgoingResponse(types.Fields.from_list(headers))
        outgoing = response.body()
        types.ResponseOutparam.set(response_out, Ok(response))
        body = request.consume()
        with body.stream() as source, outgoing.write() as sink:
            while True:
                try:
                    data = source.blocking_read(65536)
                except Err as exc:
                    if isinstance(exc.value, StreamError_Closed):
                        break
                    raise
                for i in range(0, len(data), CHUNK):
                    sink.blocking_write_and_flush(data[i : i + CHUNK])
        types.IncomingBody.finish(body).__exit__(None, None, None)
        finish(outgoing, [("x-trailer", trailer[0])] if trailer else None)

    def fields(self, request: types.IncomingRequest) -> str:
        said = []
        fields = types.Fields()
        for name, value in [
            ("connection", b"close"),
            ("host", b"x"),
            ("bad name", b"v"),
            ("ok", b"a\nb"),
        ]:
            try:
                fields.append(name, value)
                said.append(f"{name}: ok")
            except Err as exc:
                said.append(f"{name}: {type(exc.value).__name__.removeprefix('HeaderError_')}")
        with request.headers() as incoming:
            try:
                incoming.set("x-new", [b"1"])
                said.append("incoming: ok")
            except Err as exc:
                said.append(f"incoming: {type(exc.value).__name__.removeprefix('HeaderError_')}")
        try:
            types.Fields.from_list([("transfer-encoding", b"chunked")])
            said.append("from-list: ok")
        except Err as exc:
            said.append(f"from-list: {type(exc.value).__name__.removeprefix('HeaderError_')}")
        return "\n".join(said) + "\n"
