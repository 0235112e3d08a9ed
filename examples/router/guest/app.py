"""Dispatches by path to the components it is composed with.

/echo, /double-echo   the echo component
/hash-all             the hash-all component
/service              the service component
/middleware           the middleware component (composed in front of the service)
/proxy                through the host, to the URL in the `url` header (path and all)
anything else         405
"""

from urllib.parse import urlsplit

from wit_world import exports
from wit_world.imports import echo, handler, hash_all, middleware, pipe, service, types


def status_only(status: int) -> types.Response:
    tx, rx = pipe.make_pipe()
    with tx:
        pass
    response = types.Response(types.Fields(), types.Body(rx, None))
    response.set_status_code(status)
    return response


async def proxy(request: types.Request) -> types.Response:
    urls = [v.decode() for v in request.headers().get("url")]
    if not urls:
        return status_only(400)
    url = urlsplit(urls[0])
    method = request.method()
    headers, body = types.Request.into_parts(request)
    headers.delete("url")
    outgoing = types.Request(headers, body, None)
    outgoing.set_method(method)
    outgoing.set_scheme(types.Scheme_Https() if url.scheme == "https" else types.Scheme_Http())
    outgoing.set_authority(url.netloc)
    outgoing.set_path_with_query((url.path or "/") + (f"?{url.query}" if url.query else ""))
    return await handler.handle(outgoing)


ROUTES = {
    "/echo": echo.handle,
    "/double-echo": echo.handle,
    "/hash-all": hash_all.handle,
    "/service": service.handle,
    "/middleware": middleware.handle,
    "/proxy": proxy,
}


class Handler(exports.Handler):
    async def handle(self, request: types.Request) -> types.Response:
        path = (request.path_with_query() or "/").partition("?")[0]
        route = ROUTES.get(path)
        if route is None:
            return status_only(405)
        return await route(request)
