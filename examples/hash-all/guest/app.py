"""GETs every URL named in the request's `url` headers, all at once, hashing each
body with SHA-256 as it streams in, and streams back one `URL: HEX` line as each
finishes (`URL: ERROR` for a failure, a non-2xx status included)."""

import asyncio
import hashlib
from urllib.parse import urlsplit

from isyswasfa_guest import spawn
from isyswasfa_guest.streams import read, write_all
from wit_world import exports
from wit_world.imports import handler, pipe, types


def empty_body() -> types.Body:
    tx, rx = pipe.make_pipe()
    with tx:
        pass
    return types.Body(rx, None)


async def sha256_of(url: str) -> str:
    parts = urlsplit(url)
    request = types.Request(types.Fields(), empty_body(), None)
    request.set_scheme(types.Scheme_Https() if parts.scheme == "https" else types.Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    response = await handler.handle(request)
    status = response.status_code()
    headers, body = types.Response.into_parts(response)
    headers.__exit__(None, None, None)
    with body:
        if not 200 <= status < 300:
            raise ValueError(f"status {status}")
        digest = hashlib.sha256()
        with body.stream() as stream:
            while (chunk := await read(stream)) is not None:
                digest.update(chunk)
    return digest.hexdigest()


async def line_for(url: str) -> str:
    try:
        return f"{url}: {await sha256_of(url)}\n"
    except Exception as exc:  # a failure is a line too
        return f"{url}: {getattr(exc, 'value', exc)!r}\n"


class Handler(exports.Handler):
    async def handle(self, request: types.Request) -> types.Response:
        urls = [v.decode() for v in request.headers().get("url")]
        tx, rx = pipe.make_pipe()

        async def hash_all() -> None:
            with tx:
                for line in asyncio.as_completed([line_for(url) for url in urls]):
                    await write_all(tx, (await line).encode())

        spawn(hash_all())
        headers = types.Fields.from_list([("content-type", b"text/plain")])
        return types.Response(headers, types.Body(rx, None))
