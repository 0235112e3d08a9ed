"""Echo, without buffering.

POST /echo          answers with the request body, streamed back as it arrives
POST /double-echo   sends the body on to the URL in its one `url` header (through the
                    host) and streams that response back
anything else       405
Only `content-type` of the request's headers is kept.
"""

from urllib.parse import urlsplit

from wit_world import exports
from wit_world.imports import handler, pipe, types


def empty_body() -> types.Body:
    tx, rx = pipe.make_pipe()
    with tx:
        pass
    return types.Body(rx, None)


def status_only(status: int) -> types.Response:
    response = types.Response(types.Fields(), empty_body())
    response.set_status_code(status)
    return response


def content_type_of(headers: types.Fields) -> types.Fields:
    return types.Fields.from_list([("content-type", v) for v in headers.get("content-type")])


class Handler(exports.Handler):
    async def handle(self, request: types.Request) -> types.Response:
        method = request.method()
        path = request.path_with_query()
        if not isinstance(method, types.Method_Post):
            return status_only(405)
        if path == "/echo":
            headers, body = types.Request.into_parts(request)
            with headers:
                return types.Response(content_type_of(headers), body)
        if path == "/double-echo":
            urls = [v.decode() for v in request.headers().get("url")]
            if len(urls) != 1:
                return status_only(400)
            url = urlsplit(urls[0])
            headers, body = types.Request.into_parts(request)
            with headers:
                outgoing = types.Request(content_type_of(headers), body, None)
            outgoing.set_method(types.Method_Post())
            outgoing.set_scheme(
                types.Scheme_Https() if url.scheme == "https" else types.Scheme_Http()
            )
            outgoing.set_authority(url.netloc)
            outgoing.set_path_with_query(url.path + (f"?{url.query}" if url.query else "") or "/")
            return await handler.handle(outgoing)
        return status_only(405)
