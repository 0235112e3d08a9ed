"""Responds with the request's own headers, body and trailers, streamed back as they
arrive (nothing is buffered), plus two headers describing the request."""

from wit_world import exports
from wit_world.imports import types


class Handler(exports.Handler):
    async def handle(self, request: types.Request) -> types.Response:
        method = request.method()
        path = request.path_with_query() or "/"
        name = method.value if isinstance(method, types.Method_Other) else type(method).__name__
        headers, body = types.Request.into_parts(request)
        headers.set("x-method", [name.removeprefix("Method_").upper().encode()])
        headers.set("x-path", [path.encode()])
        return types.Response(headers, body)
