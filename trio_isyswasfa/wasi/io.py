"""wasi:io 0.2: error, poll and streams."""

from __future__ import annotations

import time
from typing import Any

import anyio

from .._engine import Err, ResourceKind, own
from .._errors import GuestProtocolError, HostProtocolError
from ._context import WasiContext

POLL = "wasi:io/poll"
ERROR = "wasi:io/error"
STREAMS = "wasi:io/streams"
PIPE = "isyswasfa:io/pipe"

CHUNK = 64 * 1024


# -- pollables ------------------------------------------------------------------------


class Pollable:
    """Something a guest can wait for. Level-triggered: ``ready`` re-checks."""

    def ready(self) -> bool:
        raise NotImplementedError

    async def wait(self) -> None:
        """Return once ``ready()`` may be true (callers re-check)."""
        raise NotImplementedError

    def block(self) -> None:
        """Wait without the event loop (``pollable.block``); most pollables cannot."""
        if not self.ready():
            raise HostProtocolError(
                f"the guest blocked synchronously on a {type(self).__name__}, which would "
                "stall the event loop; await it through isyswasfa:io/poll instead"
            )


class ReadyPollable(Pollable):
    """Always ready (streams that never make the guest wait)."""

    def ready(self) -> bool:
        return True

    async def wait(self) -> None:
        await anyio.lowlevel.checkpoint()


class DeadlinePollable(Pollable):
    """Ready once the event loop's clock reaches ``deadline`` (seconds)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def ready(self) -> bool:
        return anyio.current_time() >= self.deadline

    async def wait(self) -> None:
        await anyio.sleep_until(self.deadline)

    def block(self) -> None:
        # only a real-time sleep is possible without the loop; it stalls other tasks
        remaining = self.deadline - anyio.current_time()
        if remaining > 0:
            time.sleep(remaining)


# -- streams --------------------------------------------------------------------------


class StreamClosed(Exception):
    """The stream has ended (WIT ``stream-error::closed``)."""


class InputStream:
    """A byte source for ``wasi:io/streams.input-stream``."""

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes without waiting (may be empty); raise StreamClosed at the end."""
        raise NotImplementedError

    def subscribe(self) -> Pollable:
        return ReadyPollable()


class BytesInputStream(InputStream):
    """Reads from a fixed byte string, then reports closed."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def read(self, n: int) -> bytes:
        if self._pos >= len(self._data):
            raise StreamClosed
        chunk = bytes(self._data[self._pos : self._pos + n])
        self._pos += len(chunk)
        return chunk


class OutputStream:
    """A byte sink for ``wasi:io/streams.output-stream``."""

    def check_write(self) -> int:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def subscribe(self) -> Pollable:
        return ReadyPollable()


class CallbackOutputStream(OutputStream):
    """Hands each write to a callback at once (stdout, stderr); never waits."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink

    def check_write(self) -> int:
        return CHUNK

    def write(self, data: bytes) -> None:
        if len(data) > CHUNK:
            raise GuestProtocolError("write larger than check-write allowed")
        if self._sink is not None:
            self._sink(data)


class _Signal:
    """An anyio Event replaced on every state change (level-triggered pollables)."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def changed(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class Pipe:
    """An in-memory byte pipe with a bounded buffer (``isyswasfa:io/pipe``).

    The writer's pollable is ready when there is space (or the reader is gone); the
    reader's when there is data (or the writer is gone). Dropping the writer ends
    the stream once the buffer drains.
    """

    def __init__(self, capacity: int = CHUNK) -> None:
        self.capacity = capacity
        self.buffer = bytearray()
        self.writer_open = True
        self.reader_open = True
        self.signal = _Signal()


class _PipePollable(Pollable):
    def __init__(self, pipe: Pipe, want_data: bool) -> None:
        self._pipe = pipe
        self._want_data = want_data

    def ready(self) -> bool:
        p = self._pipe
        if self._want_data:
            return bool(p.buffer) or not p.writer_open
        return len(p.buffer) < p.capacity or not p.reader_open

    async def wait(self) -> None:
        if not self.ready():
            await self._pipe.signal.wait()


class PipeReader(InputStream):
    """The reading end of a :class:`Pipe`."""

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    def read(self, n: int) -> bytes:
        p = self.pipe
        if not p.buffer:
            if not p.writer_open:
                raise StreamClosed
            return b""
        chunk = bytes(p.buffer[:n])
        del p.buffer[:n]
        p.signal.changed()
        return chunk

    def subscribe(self) -> Pollable:
        return _PipePollable(self.pipe, want_data=True)

    def close(self) -> None:
        self.pipe.reader_open = False
        self.pipe.buffer.clear()
        self.pipe.signal.changed()


class PipeWriter(OutputStream):
    """The writing end of a :class:`Pipe`."""

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    def check_write(self) -> int:
        p = self.pipe
        if not p.reader_open:
            raise StreamClosed
        return p.capacity - len(p.buffer)

    def write(self, data: bytes) -> None:
        if len(data) > self.check_write():
            raise GuestProtocolError("write larger than check-write allowed")
        self.pipe.buffer += data
        self.pipe.signal.changed()

    def subscribe(self) -> Pollable:
        return _PipePollable(self.pipe, want_data=False)

    def close(self) -> None:
        self.pipe.writer_open = False
        self.pipe.signal.changed()


class ErrorObject:
    """A ``wasi:io/error.error``: a debug string."""

    def __init__(self, message: str) -> None:
        self.message = message


_CLOSED = Err(None)


class WasiIo:
    """wasi:io for one instance."""

    def __init__(self, ctx: WasiContext) -> None:
        self.ctx = ctx
        t = ctx.table
        ctx.define_resource(POLL, "pollable", ResourceKind.POLLABLE)
        ctx.define_resource(ERROR, "error", ResourceKind.ERROR)
        ctx.define_resource(STREAMS, "input-stream", ResourceKind.INPUT_STREAM, self._closing)
        ctx.define_resource(STREAMS, "output-stream", ResourceKind.OUTPUT_STREAM, self._closing)
        ctx.define(PIPE, "make-pipe", self.make_pipe)
        ctx.define(POLL, "[method]pollable.ready", lambda p: t.get(p, Pollable).ready())
        ctx.define(POLL, "[method]pollable.block", lambda p: t.get(p, Pollable).block())
        ctx.define(POLL, "poll", self.poll)
        ctx.define(ERROR, "[method]error.to-debug-string", lambda e: t.get(e, ErrorObject).message)
        for name in ("read", "blocking-read"):
            ctx.define(STREAMS, f"[method]input-stream.{name}", self.read)
        for name in ("skip", "blocking-skip"):
            ctx.define(STREAMS, f"[method]input-stream.{name}", self.skip)
        ctx.define(STREAMS, "[method]input-stream.subscribe", self.subscribe_input)
        ctx.define(STREAMS, "[method]output-stream.check-write", self.check_write)
        ctx.define(STREAMS, "[method]output-stream.write", self.write)
        ctx.define(STREAMS, "[method]output-stream.blocking-write-and-flush", self.write_and_flush)
        ctx.define(STREAMS, "[method]output-stream.flush", self.flush)
        ctx.define(STREAMS, "[method]output-stream.blocking-flush", self.flush)
        ctx.define(STREAMS, "[method]output-stream.subscribe", self.subscribe_output)
        ctx.define(STREAMS, "[method]output-stream.write-zeroes", self.write_zeroes)
        ctx.define(
            STREAMS, "[method]output-stream.blocking-write-zeroes-and-flush", self.write_zeroes
        )
        ctx.define(STREAMS, "[method]output-stream.splice", self.splice)
        ctx.define(STREAMS, "[method]output-stream.blocking-splice", self.splice)

    def _closing(self, rep: int) -> None:
        stream = self.ctx.table.remove(rep)
        close = getattr(stream, "close", None)
        if close is not None:
            close()

    def make_pipe(self) -> Any:
        pipe = Pipe()
        writer = own(self.ctx.table.add(PipeWriter(pipe)), ResourceKind.OUTPUT_STREAM)
        reader = own(self.ctx.table.add(PipeReader(pipe)), ResourceKind.INPUT_STREAM)
        return (writer, reader)

    def new_pollable(self, pollable: Pollable) -> Any:
        """An owned pollable handle for the guest."""
        return own(self.ctx.table.add(pollable), ResourceKind.POLLABLE)

    def poll(self, reps: list[int]) -> list[int]:
        if not reps:
            raise GuestProtocolError("wasi:io/poll.poll called with an empty list")
        pollables = [self.ctx.table.get(r, Pollable) for r in reps]
        ready = [i for i, p in enumerate(pollables) if p.ready()]
        if ready:
            return ready
        deadlines = [p for p in pollables if isinstance(p, DeadlinePollable)]
        if not deadlines:
            pollables[0].block()  # raises: nothing here can wait without the loop
        min(deadlines, key=lambda p: p.deadline).block()
        return [i for i, p in enumerate(pollables) if p.ready()]

    # input streams
    def read(self, rep: int, n: int) -> Any:
        stream = self.ctx.table.get(rep, InputStream)
        try:
            return stream.read(min(n, CHUNK))
        except StreamClosed:
            return _CLOSED

    def skip(self, rep: int, n: int) -> Any:
        result = self.read(rep, n)
        return result if isinstance(result, Err) else len(result)

    def subscribe_input(self, rep: int) -> Any:
        return self.new_pollable(self.ctx.table.get(rep, InputStream).subscribe())

    # output streams
    def check_write(self, rep: int) -> Any:
        try:
            return self.ctx.table.get(rep, OutputStream).check_write()
        except StreamClosed:
            return _CLOSED

    def write(self, rep: int, data: bytes) -> Any:
        try:
            self.ctx.table.get(rep, OutputStream).write(bytes(data))
        except StreamClosed:
            return _CLOSED
        return None

    def write_and_flush(self, rep: int, data: bytes) -> Any:
        stream = self.ctx.table.get(rep, OutputStream)
        view = memoryview(bytes(data))
        while view:
            try:
                n = stream.check_write()
            except StreamClosed:
                return _CLOSED
            if n == 0:
                raise HostProtocolError("blocking write to a stream that is full")
            stream.write(bytes(view[:n]))
            view = view[n:]
        stream.flush()
        return None

    def flush(self, rep: int) -> Any:
        stream = self.ctx.table.get(rep, OutputStream)
        try:
            stream.check_write()  # a flush on a stream whose reader is gone reports it
        except StreamClosed:
            return _CLOSED
        stream.flush()
        return None

    def write_zeroes(self, rep: int, n: int) -> Any:
        return self.write_and_flush(rep, bytes(n))

    def subscribe_output(self, rep: int) -> Any:
        return self.new_pollable(self.ctx.table.get(rep, OutputStream).subscribe())

    def splice(self, out_rep: int, in_rep: int, n: int) -> Any:
        src = self.ctx.table.get(in_rep, InputStream)
        dst = self.ctx.table.get(out_rep, OutputStream)
        try:
            data = src.read(min(n, dst.check_write()))
        except StreamClosed:
            return _CLOSED
        if data:
            dst.write(data)
        return len(data)
