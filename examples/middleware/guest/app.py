"""Transparent deflate in front of another handler (the imported one).

A request body with `content-encoding: deflate` is inflated on its way in; if the
client accepts deflate, the response body is deflated on its way out. Bodies are
transformed chunk by chunk in spawned tasks (nothing is buffered), and trailers are
passed along.
"""

import zlib

from isyswasfa_guest import spawn
from isyswasfa_guest.streams import read, write_all
from wit_world import exports
from wit_world.imports import handler, pipe, types


def codings(headers: types.Fields, name: str) -> list[str]:
    """The content codings listed in header `name` (q=0 ones left out)."""
    out = []
    for value in headers.get(name):
        for item in value.decode("latin-1").split(","):
            coding, _, params = item.strip().partition(";")
            if coding and params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
                out.append(coding.lower())
    return out


def transformed(body: types.Body, step, finish) -> types.Body:
    """A body that is `body` passed through `step` (per chunk) and `finish` (at the end)."""
    tx, rx = pipe.make_pipe()
    trailers_tx, trailers_rx = types.make_trailers()

    async def run() -> None:
        with tx:
            with body.stream() as stream:
                while (chunk := await read(stream)) is not None:
                    if out := step(chunk):
                        await write_all(tx, out)
            if tail := finish():
                await write_all(tx, tail)
        trailers = await types.Body.finish(body)
        if trailers is None:
            trailers_tx.__exit__(None, None, None)  # no trailers: the receiver gets none
        else:
            types.TrailersSender.send(trailers_tx, trailers)

    spawn(run())
    return types.Body(rx, trailers_rx)


class Handler(exports.Handler):
    async def handle(self, request: types.Request) -> types.Response:
        method, scheme = request.method(), request.scheme()
        path, authority = request.path_with_query(), request.authority()
        headers, body = types.Request.into_parts(request)
        accepts_deflate = "deflate" in codings(headers, "accept-encoding")
        if accepts_deflate:
            headers.delete("accept-encoding")
        if codings(headers, "content-encoding") == ["deflate"]:
            headers.delete("content-encoding")
            headers.delete("content-length")
            inflater = zlib.decompressobj()
            body = transformed(body, inflater.decompress, inflater.flush)
        forwarded = types.Request(headers, body, None)
        forwarded.set_method(method)
        forwarded.set_scheme(scheme)
        forwarded.set_path_with_query(path)
        forwarded.set_authority(authority)
        response = await handler.handle(forwarded)
        if not accepts_deflate:
            return response
        status = response.status_code()
        headers, body = types.Response.into_parts(response)
        headers.delete("content-length")
        headers.set("content-encoding", [b"deflate"])
        deflater = zlib.compressobj(1)
        out = types.Response(headers, transformed(body, deflater.compress, deflater.flush))
        out.set_status_code(status)
        return out
