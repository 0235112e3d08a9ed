"""A small HTTP/1.1 load generator and a slow upstream, on trio and h11, for the benches.

    python -m bench.loadgen get URL N     # N connections at once, one GET each; JSON out
    python -m bench.loadgen upstream MS   # serve GETs answering after MS ms; prints its port

(wrk and h2load would do as clients but are not installed here; this one keeps N
connections open at once, which is what the scale bench needs.) Each runs in its own
process so that its CPU is not counted as the measured server's.
"""

from __future__ import annotations

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


async def _answer(stream: trio.SocketStream, delay: float) -> None:
    conn = h11.Connection(h11.SERVER)
    async with stream:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                pass
            elif isinstance(event, h11.EndOfMessage):
                await trio.sleep(delay)
                headers = [("content-length", str(len(BODY)))]
                out = conn.send(h11.Response(status_code=200, headers=headers))
                out += conn.send(h11.Data(data=BODY)) + conn.send(h11.EndOfMessage())
                await stream.send_all(out)
                conn.start_next_cycle()
            else:  # the client closed, or broke the protocol
                return


async def upstream(delay_ms: int) -> None:
    """Answer every GET after ``delay_ms`` with 1 KiB, keeping connections alive."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=4096)
    port = listeners[0].socket.getsockname()[1]
    print(port, flush=True)

    async def handle(stream: trio.SocketStream) -> None:
        # a client that went away
        with contextlib.suppress(trio.BrokenResourceError, h11.RemoteProtocolError, OSError):
            await _answer(stream, delay_ms / 1000)

    await trio.serve_listeners(handle, listeners)


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


def main() -> None:
    mode, *args = sys.argv[1:]
    if mode == "get":
        url, n = args
        print(json.dumps(trio.run(get_all, url, int(n))))
    elif mode == "upstream":
        trio.run(upstream, int(args[0]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
