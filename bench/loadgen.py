"""A small HTTP/1.1 load generator (trio and h11) and a slow upstream (asyncio), for the benches.

    python -m bench.loadgen get URL N     # N connections at once, one GET each; JSON out
    python -m bench.loadgen upstream MS   # answer requests after MS ms; prints its port

(wrk and h2load would do as clients but are not installed here; this one keeps N
connections open at once, which is what the scale bench needs.) Each runs in its own
process so that its CPU is not counted as the measured server's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import h11
import trio

ROOT = Path(__file__).resolve().parent.parent
CONNECTING = 256  # connects in flight at once (the server's listen backlog is 1024)
BODY = b"x" * 1024


async def _get(host: str, port: int, target: str, connecting: trio.Semaphore) -> tuple[int, float]:
    start = time.perf_counter()
    async with connecting:
        stream = await trio.open_tcp_stream(host, port)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(method="GET", target=target, headers=[("host", host)])
        await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        status = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    return status, time.perf_counter() - start


async def get_all(url: str, n: int) -> dict[str, object]:
    """``n`` GETs of ``url``, each on its own connection, all at once."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    connecting = trio.Semaphore(CONNECTING)
    results: list[tuple[int, float]] = []

    async def one() -> None:
        try:
            results.append(await _get(host, port, target, connecting))
        except (trio.BrokenResourceError, OSError, h11.RemoteProtocolError):
            results.append((-1, time.perf_counter() - start))  # counted as status -1

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    latencies = sorted(lat for _, lat in results)
    statuses: dict[str, int] = {}
    for status, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "wall": time.perf_counter() - start,
        "statuses": statuses,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)],
    }


class _Answerer(asyncio.Protocol):
    """One upstream connection: each request answered with BODY after the delay.

    asyncio's protocol callbacks and a fixed answer, no HTTP library: on this 2-core
    machine the upstream shares the cores with the host it serves, and a trio/h11
    server spent ~0.5 ms of CPU per request there, which delayed a fan-out's answers
    by more than the host's own work did.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            length = 0
            if b"content-length:" in head:
                length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            if len(self.buffer) < end + 4 + length:
                return  # the body is still coming
            self.buffer = self.buffer[end + 4 + length :]
            asyncio.get_running_loop().call_later(self.delay, self._answer)

    def _answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ANSWER)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(BODY), BODY)


async def upstream(delay_ms: int) -> None:
    """Answer every request after ``delay_ms`` with 1 KiB, keeping connections alive
    (requests on one connection come one at a time: a keep-alive client's)."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Answerer(delay_ms / 1000), "127.0.0.1", 0, backlog=4096
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


@contextlib.asynccontextmanager
async def open_upstream_process(delay_ms: int) -> AsyncIterator[str]:
    """:func:`upstream` in its own process (its CPU is not the measured process's), for
    the block; its base URL. The process is terminated on leaving."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "bench.loadgen", "upstream", str(delay_ms)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        port = b""
        while not port.endswith(b"\n"):
            port += await process.stdout.receive_some(64)
        yield f"http://127.0.0.1:{int(port)}"
    finally:
        process.terminate()
        await process.wait()


def parser() -> argparse.ArgumentParser:
    """The command line: ``get URL N`` or ``upstream MS``."""
    p = argparse.ArgumentParser(
        prog="python -m bench.loadgen",
        description=__doc__.split("\n")[0] if __doc__ else None,
    )
    modes = p.add_subparsers(dest="mode", required=True)
    get = modes.add_parser("get", help="N connections at once, one GET each; JSON out")
    get.add_argument("url")
    get.add_argument("n", type=int)
    upstream = modes.add_parser("upstream", help="answer requests after MS ms; prints its port")
    upstream.add_argument("ms", type=int)
    return p


def main(argv: list[str] | None = None) -> None:
    """Run the mode the arguments name."""
    args = parser().parse_args(argv)
    if args.mode == "get":
        print(json.dumps(trio.run(get_all, args.url, args.n)))
    else:
        asyncio.run(upstream(args.ms))


if __name__ == "__main__":
    main()
