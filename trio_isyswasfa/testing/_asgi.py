"""Drive an ASGI app in-process, without a server or an HTTP parser.

A test (or a bench) that wants what the app answers, not what hypercorn and h11 add,
runs the app's lifespan with :func:`open_lifespan` and sends it requests with
:func:`asgi_request` (or builds a request's scope with :func:`asgi_scope` and plays
the client itself): no socket, no header size limit, no port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio

Message = MutableMapping[str, Any]
AsgiApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[Message]],
        Callable[[Message], Awaitable[None]],
    ],
    Awaitable[None],
]


@asynccontextmanager
async def open_lifespan(app: AsgiApp) -> AsyncIterator[None]:
    """Run ``app``'s ASGI lifespan around the block, as a server would.

    Sends ``lifespan.startup`` and enters the block once the app answered
    ``lifespan.startup.complete``; on leaving it, sends ``lifespan.shutdown`` and waits
    for ``lifespan.shutdown.complete``. The app runs in a task group around the block,
    so what fails (the app, a step or the block) arrives in an ``ExceptionGroup``, as
    from any task group; the app is cancelled then.

    Raises:
      AssertionError: the app answered ``lifespan.startup.failed`` or
        ``lifespan.shutdown.failed``, or returned without completing a step.
    """
    to_app, app_reads = anyio.create_memory_object_stream[Message](1)
    app_writes, from_app = anyio.create_memory_object_stream[Message](1)
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}

    async def run_app() -> None:
        await app(scope, app_reads.receive, app_writes.send)
        app_writes.close()  # it returned: a step still waiting for its answer ends

    async def step(name: str) -> None:
        await to_app.send({"type": f"lifespan.{name}"})
        try:
            answer = await from_app.receive()
        except anyio.EndOfStream:
            raise AssertionError(f"the app returned without completing lifespan {name}") from None
        if answer["type"] != f"lifespan.{name}.complete":
            raise AssertionError(f"lifespan {name}: the app answered {dict(answer)!r}")

    async with to_app, app_reads, app_writes, from_app, anyio.create_task_group() as tg:
        tg.start_soon(run_app)
        await step("startup")
        yield
        await step("shutdown")


@dataclass(frozen=True, slots=True)
class AsgiResponse:
    """What an ASGI app answered one request: the status, the response headers as
    the app sent them (``(name, value)`` byte pairs) and the whole body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def asgi_scope(
    path: str = "/",
    *,
    method: str = "GET",
    query: str = "",
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> dict[str, Any]:
    """The ASGI ``http`` scope of one request: HTTP/1.1 from ``127.0.0.1`` to
    ``127.0.0.1:80``, with a ``host: test`` header unless ``headers`` has one (for a
    test that drives the app's ``receive`` and ``send`` itself)."""
    if not any(name.lower() == b"host" for name, _ in headers):
        headers = [(b"host", b"test"), *headers]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": list(headers),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }


async def asgi_request(
    app: AsgiApp,
    path: str = "/",
    *,
    method: str = "GET",
    query: str = "",
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
) -> AsgiResponse:
    """Send one HTTP request straight into ``app`` and return what it answered.

    The request is HTTP/1.1 from ``127.0.0.1`` with a ``host: test`` header unless
    ``headers`` has one; ``body`` arrives in one ``http.request`` message (with a
    ``content-length`` header unless ``headers`` has one, as a client sends it). The client
    stays: a ``receive`` after the body waits until it is cancelled (it never answers
    ``http.disconnect``), as a client that keeps its connection open would. Returns
    once the app returned; an app that raises raises here.

    Raises:
      AssertionError: the app returned without starting a response.
    """
    if body and not any(name.lower() == b"content-length" for name, _ in headers):
        headers = [*headers, (b"content-length", str(len(body)).encode())]  # as a client says
    scope = asgi_scope(path, method=method, query=query, headers=headers)
    asked = False
    start: Message | None = None
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": body, "more_body": False}
        await anyio.sleep_forever()  # the client stays
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    if start is None:
        raise AssertionError(f"{method} {path}: the app returned without a response")
    return AsgiResponse(start["status"], list(start.get("headers", [])), b"".join(chunks))
