"""Awaitable helpers over ``wasi:io/streams`` (backpressure via stream pollables)."""

from __future__ import annotations

from typing import Any

from . import _b, wait_pollable

CHUNK = 64 * 1024


def _closed(exc: BaseException) -> bool:
    return type(getattr(exc, "value", None)).__name__.endswith("Closed")


async def write_all(stream: Any, data: bytes) -> None:
    """Write all of ``data``, waiting for space; raises ``Err(closed)`` if the reader left."""
    view = memoryview(data)
    while view:
        n = stream.check_write()
        if n == 0:
            with stream.subscribe() as pollable:
                await wait_pollable(pollable)
            continue
        stream.write(bytes(view[:n]))
        view = view[n:]


async def read(stream: Any, max_bytes: int = CHUNK) -> bytes | None:
    """The next chunk (at most ``max_bytes``), waiting for data; ``None`` at the end."""
    while True:
        try:
            data = stream.read(max_bytes)
        except _b.err as exc:
            if _closed(exc):
                return None
            raise
        if data:
            return bytes(data)
        with stream.subscribe() as pollable:
            await wait_pollable(pollable)


async def read_all(stream: Any) -> bytes:
    """Everything until the end of the stream."""
    chunks = []
    while (chunk := await read(stream)) is not None:
        chunks.append(chunk)
    return b"".join(chunks)
