"""An HTTP guest whose paths misbehave on purpose, for the server's tests.

/trap            raises: the guest traps
/error           answers error-code internal-error("on purpose")
/stream?n=N      returns at once; a spawned task writes N lines, 10 ms apart
/forever         streams one line, then waits for an hour (the client will leave)
/headers         answers with the request's headers as text lines
/sleep?ms=N      sleeps N ms (300 if not given) the synchronous way (time.sleep), then
                 answers "slept"
"""

import time

from componentize_py_types import Err
from isyswasfa_guest import sleep_ns, spawn
from isyswasfa_guest.streams import write_all
from wit_world import exports
from wit_world.imports import pipe, types


def streaming_response(produce) -> types.Response:
    tx, rx = pipe.make_pipe()

    async def writer() -> None:
        with tx:
            await produce(tx)

    spawn(writer())
    headers = types.Fields.from_list([("content-type", b"text/plain")])
    return types.Response(headers, types.Body(rx, None))


class Handler(exports.Handler):
    async def handle(self, request: types.Request) -> types.Response:
        path = request.path_with_query() or "/"
        if path == "/trap":
            raise RuntimeError("a bug in the guest")
        if path == "/error":
            raise Err(types.ErrorCode_InternalError("on purpose"))
        if path.startswith("/stream"):
            n = int(path.partition("n=")[2] or "3")

            async def lines(tx) -> None:
                for i in range(n):
                    await write_all(tx, f"line {i}\n".encode())
                    await sleep_ns(10_000_000)

            return streaming_response(lines)
        if path == "/forever":

            async def forever(tx) -> None:
                await write_all(tx, b"first line\n")
                await sleep_ns(3600 * 10**9)

            return streaming_response(forever)
        if path.startswith("/sleep"):
            ms = int(path.partition("ms=")[2] or "300")
            time.sleep(ms / 1000)  # noqa: ASYNC251 - on purpose: blocks in wasi:io/poll

            async def slept(tx) -> None:
                await write_all(tx, b"slept")

            return streaming_response(slept)
        if path == "/headers":
            entries = request.headers().entries()

            async def text(tx) -> None:
                for name, value in entries:
                    await write_all(tx, f"{name}: {value.decode()}\n".encode())

            return streaming_response(text)
        tx, rx = pipe.make_pipe()
        with tx:
            pass  # an empty body: the writer is gone at once
        return types.Response(types.Fields(), types.Body(rx, None))
