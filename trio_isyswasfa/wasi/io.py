"""wasi:io 0.2: error, poll and streams."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import select
from collections.abc import Awaitable, Callable, Generator, Hashable
from typing import TYPE_CHECKING, Any, Protocol, cast

import anyio
import anyio.abc

from .._engine import Blocking, Err, ReadInto, ResourceKind
from .._errors import GuestProtocolError
from ._context import WasiContext

if TYPE_CHECKING:
    from .._scheduler import Scheduler

POLL = "wasi:io/poll"
ERROR = "wasi:io/error"
STREAMS = "wasi:io/streams"
PIPE = "isyswasfa:io/pipe"

CHUNK = 64 * 1024
QUICK_WRITE = 4096  # PIPE_BUF on Linux: written whole, at once, to a writable pipe
BLOCKING_WRITE_MAX = 4096  # blocking-write-and-flush: "a write of up to 4096 bytes"


# -- pollables ------------------------------------------------------------------------


class Pollable:
    """Something a guest can wait for. Level-triggered: ``ready`` re-checks."""

    __slots__ = ()

    def ready(self) -> bool:
        raise NotImplementedError

    async def wait(self) -> None:
        """Return once ``ready()`` may be true (callers re-check)."""
        raise NotImplementedError

    def deadline(self) -> float | None:
        """The event loop's time at which it becomes ready, if only time makes it
        ready: waits for such pollables share one timer instead of a task each."""
        return None

    def source(self) -> Hashable:
        """What makes it ready: pollables with the same source are ready together,
        so guest waits on them share one host wait (several subscriptions to one
        stream, say). By default each pollable is its own source."""
        return self


class ReadyPollable(Pollable):
    """Always ready (streams that never make the guest wait)."""

    __slots__ = ()

    def ready(self) -> bool:
        return True

    async def wait(self) -> None:
        await anyio.lowlevel.checkpoint()


class DeadlinePollable(Pollable):
    """Ready once the event loop's clock reaches ``deadline`` (seconds)."""

    __slots__ = ("when",)  # one per sleeping guest task: keep it small

    def __init__(self, when: float) -> None:
        self.when = when

    def ready(self) -> bool:
        return anyio.current_time() >= self.when

    async def wait(self) -> None:
        await anyio.sleep_until(self.when)

    def deadline(self) -> float:
        return self.when


# -- streams --------------------------------------------------------------------------


class StreamClosed(Exception):
    """The stream has ended (WIT ``stream-error::closed``)."""


class StreamFailed(Exception):
    """The last operation failed (WIT ``stream-error::last-operation-failed``).

    ``code`` is the ``wasi:filesystem`` (or sockets) error code the guest can recover
    from the error resource, if there is one; ``cause`` what another package can
    recover from it (``wasi:http``'s ``http-error-code`` finds its error code there).
    """

    def __init__(self, message: str, code: str | None = None, cause: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.cause = cause


class InputStream:
    """A byte source for ``wasi:io/streams.input-stream``.

    ``max_read`` bounds one read (the guest may ask for more): what one host call may
    hand over at once, on the event loop's thread.
    """

    max_read = CHUNK

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes without waiting (may be empty); raise StreamClosed at the end."""
        raise NotImplementedError

    def read_into_guest(self, n: int) -> bytes | ReadInto:
        """As :meth:`read`, for a read the guest receives: a stream that can read
        straight into the guest's memory returns a :class:`ReadInto` (at least one
        byte), which the engine fills as it lowers the result."""
        return self.read(n)

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
        """Start flushing what was written (``flush``); done when ``subscribe`` is ready."""

    def subscribe(self) -> Pollable:
        return ReadyPollable()


class BufferedInputStream(InputStream):
    """Hands out what :meth:`fill` (awaited through the stream's pollable, as
    ``blocking-read`` does) put in its buffer, then its end or failure."""

    def __init__(self) -> None:
        self._buffer = b""
        self._eof = False
        self._failure: StreamFailed | None = None

    def read(self, n: int) -> bytes:
        if self._buffer:
            chunk, self._buffer = self._buffer[:n], self._buffer[n:]
            return chunk
        if self._failure is not None:
            raise self._failure
        if self._eof:
            raise StreamClosed
        return b""

    def ready(self) -> bool:
        return bool(self._buffer) or self._eof or self._failure is not None

    async def fill(self) -> None:
        """Get the next chunk, the end, or a failure."""
        raise NotImplementedError

    def subscribe(self) -> Pollable:
        return FillPollable(self)


class Fillable(Protocol):
    """Something made ready by awaiting ``fill`` (a stream's next chunk, a name lookup)."""

    def ready(self) -> bool: ...

    async def fill(self) -> None: ...


class FillPollable(Pollable):
    """Ready when its source is; waiting fills the source."""

    def __init__(self, source: Fillable) -> None:
        self._source = source

    def ready(self) -> bool:
        return self._source.ready()

    async def wait(self) -> None:
        if not self.ready():
            await self._source.fill()

    def source(self) -> Hashable:
        return cast(Hashable, self._source)  # our sources compare by identity


class ThreadedInputStream(BufferedInputStream):
    """Reads a blocking source (a file, the process's stdin) in a worker thread.

    ``read`` only hands out what is buffered; waiting on the stream's pollable (as
    ``blocking-read`` does) reads the next chunk in a thread, so a guest reading a
    huge file leaves the event loop free.
    """

    def __init__(
        self,
        read_chunk: Callable[[int], bytes],
        *,
        abandon: bool = False,
        chunk: int = CHUNK,
    ) -> None:
        super().__init__()
        self._read_chunk = read_chunk  # returns b"" at the end; may raise OSError
        self._chunk = chunk  # bytes per read in the worker thread
        self._abandon = abandon  # a read that may never return (a terminal) is abandoned
        self._busy = False
        self._signal = _Signal()
        self.closed = False

    def _settle(self, data: bytes | None, exc: OSError | None) -> None:
        if exc is not None:
            self._failure = self.failure_from(exc)
        elif data:
            self._buffer += data
        else:
            self._eof = True

    def failure_from(self, exc: OSError) -> StreamFailed:
        """How a read error reaches the guest (subclasses attach an error code)."""
        return StreamFailed(exc.strerror or str(exc))

    async def fill(self) -> None:
        """Read the next chunk in a worker thread (or wait for the read under way).

        The read hands its outcome to the loop itself (:meth:`_land`), so a read
        abandoned by a cancelled wait (a terminal may never answer) still delivers
        what it read to the next wait instead of losing it.
        """
        if self._busy:
            await self._signal.wait()
            return
        self._busy = True
        await anyio.to_thread.run_sync(self._read_in_thread, abandon_on_cancel=self._abandon)

    def _read_in_thread(self) -> None:
        try:
            landed: tuple[bytes | None, OSError | None] = (self._read_chunk(self._chunk), None)
        except OSError as exc:
            landed = (None, exc)
        # RuntimeError: the event loop has ended (RunFinishedError): nobody is left to read
        with contextlib.suppress(RuntimeError):
            anyio.from_thread.run_sync(self._land, *landed)

    def _land(self, data: bytes | None, error: OSError | None) -> None:
        self._busy = False
        self._settle(data, error)
        if self.closed:
            self.release()
        self._signal.changed()

    def close(self) -> None:
        self.closed = True
        if not self._busy:
            self.release()

    def release(self) -> None:
        """Free what the source holds (once no read is under way)."""


class BufferedOutputStream(OutputStream):
    """Buffers writes up to one chunk (``capacity`` bytes) and sends them
    (:meth:`send`) while the guest waits on the stream's pollable (as a blocking flush
    does). A failed send is reported by the next ``check-write``."""

    capacity = CHUNK

    def __init__(self) -> None:
        self._pending = b""
        self._failure: StreamFailed | None = None
        self._busy = False
        self._signal = _Signal()

    async def send(self, data: bytes) -> None:
        """Send all of ``data``; a failure becomes :attr:`_failure`."""
        raise NotImplementedError

    def _check(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def check_write(self) -> int:
        self._check()
        return 0 if self._busy else self.capacity - len(self._pending)

    def write(self, data: bytes) -> None:
        self._pending += data

    def subscribe(self) -> Pollable:
        return RoomPollable(self)

    def has_room(self) -> bool:
        return not self._busy and (not self._pending or self._failure is not None)

    async def drain(self) -> None:
        """Send the pending chunk (or wait for the send under way)."""
        if self._busy:
            await self._signal.wait()
            return
        data, self._pending = self._pending, b""
        self._busy = True
        try:
            await self.send(data)
        finally:
            self._busy = False
            self._drained()
            self._signal.changed()

    def _drained(self) -> None:
        """A send ended (subclasses release what a closed stream holds)."""


class ThreadedOutputStream(BufferedOutputStream):
    """Writes to a blocking sink (a file, the process's stdout) in a worker thread.

    A small write that cannot block (up to ``quick_write`` bytes) goes out on the
    loop's thread at once (a flush of a print); otherwise the chunk is written in a
    worker thread when the guest waits, and on the loop's thread when the guest drops
    the stream. Subclasses define :meth:`write_now`.
    """

    quick_write = QUICK_WRITE

    def __init__(self) -> None:
        super().__init__()
        self._closed = False

    def write_now(self, data: bytes) -> None:
        """Write all of ``data`` (blocking; may raise OSError)."""
        raise NotImplementedError

    def failure_from(self, exc: OSError) -> StreamFailed:
        """How a write error reaches the guest (subclasses attach an error code)."""
        return StreamFailed(exc.strerror or str(exc))

    def release(self) -> None:
        """Free what the sink holds (once no write is under way)."""

    async def send(self, data: bytes) -> None:
        try:
            await anyio.to_thread.run_sync(self.write_now, data)
        except OSError as exc:
            self._failure = self.failure_from(exc)

    def _drained(self) -> None:
        if self._closed:
            self.release()

    def flush(self) -> None:
        # a small write that cannot block (a print, a log line) goes out at once on this
        # thread: a worker thread's round trip costs far more than the write
        if self._busy or not self._pending or len(self._pending) > self.quick_write:
            return
        if not self.can_write_now():
            return
        data, self._pending = self._pending, b""
        try:
            self.write_now(data)
        except OSError as exc:
            self._failure = self.failure_from(exc)

    def can_write_now(self) -> bool:
        """Whether a write of up to ``quick_write`` bytes would not block."""
        return False

    def close(self) -> None:
        self._closed = True
        if not self._busy:
            try:
                if self._pending:
                    self.write_now(self._pending)
            except OSError:
                pass  # the guest dropped the stream: nobody is left to tell
            finally:
                self.release()


class RoomPollable(Pollable):
    """Ready when an output stream has room for more writes; waiting drains it.

    The stream provides ``has_room()`` and ``async drain()`` (make room).
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def ready(self) -> bool:
        return bool(self._stream.has_room())

    async def wait(self) -> None:
        if not self.ready():
            await self._stream.drain()

    def source(self) -> Hashable:
        stream: Hashable = self._stream
        return stream


class FdOutputStream(ThreadedOutputStream):
    """Writes to a host file descriptor it does not own (the process's stdout)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def write_now(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def can_write_now(self) -> bool:
        # writable: a regular file always; a pipe or socket with room for PIPE_BUF
        # (QUICK_WRITE) bytes, which a write of that size takes whole
        poller = select.poll()
        poller.register(self._fd, select.POLLOUT)
        return any(event & select.POLLOUT for _, event in poller.poll(0))


class CallbackOutputStream(OutputStream):
    """Hands each write to a callback at once (stdout, stderr); never waits."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink

    def check_write(self) -> int:
        return CHUNK

    def write(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink(data)


class ReceiveStreamInput(BufferedInputStream):
    """Reads a trio ``ReceiveStream`` (``receive_some``), an anyio byte stream or an
    anyio object stream of ``bytes`` (``receive``): waiting on the pollable, as
    ``blocking-read`` does, receives the next chunk. The receive calls are
    cancel-safe, so a cancelled wait loses nothing.
    """

    def __init__(self, source: Any) -> None:
        super().__init__()
        self._source = source
        self._lock = anyio.Lock()

    async def fill(self) -> None:
        async with self._lock:
            if self.ready():
                return
            try:
                receive_some = getattr(self._source, "receive_some", None)
                if receive_some is not None:  # trio
                    data = await receive_some(CHUNK)
                else:  # anyio: a byte stream, or an object stream of bytes
                    byte_stream = isinstance(self._source, anyio.abc.ByteReceiveStream)
                    try:
                        data = await (
                            self._source.receive(CHUNK) if byte_stream else self._source.receive()
                        )
                    except anyio.EndOfStream:
                        data = b""
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                self._failure = StreamFailed(str(exc) or type(exc).__name__)
                return
            if data:
                self._buffer += data
            else:
                self._eof = True


class SendStreamOutput(BufferedOutputStream):
    """Writes to a trio ``SendStream`` (``send_all``) or an anyio byte stream
    (``send``). Writes are buffered up to one chunk and sent while the guest waits on
    the stream (a flush, ``blocking-write-and-flush``, its pollable); what is left when
    the instance ends is sent then (:meth:`aclose`)."""

    def __init__(self, sink: Any) -> None:
        super().__init__()
        send_all = getattr(sink, "send_all", None)
        self._send = send_all if send_all is not None else sink.send

    async def send(self, data: bytes) -> None:
        try:
            await self._send(data)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            self._failure = StreamFailed(str(exc) or type(exc).__name__)

    async def aclose(self) -> None:
        """Send what the guest wrote and did not flush (the instance is ending)."""
        while self._pending and self._failure is None:
            await self.drain()


class _Signal:
    """Wakes whoever waits for the next state change (level-triggered pollables: the
    waiters re-check). The event is made only when someone waits, so a change that
    nobody waits for (most writes) costs nothing."""

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def changed(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self) -> None:
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


class Pipe:
    """An in-memory byte pipe with a bounded buffer (``isyswasfa:io/pipe``).

    The writer's pollable is ready when there is space (or the reader is gone); the
    reader's when there is data (or the writer is gone). Dropping the writer ends
    the stream once the buffer drains. Each side waits on its own signal, so a write
    wakes only readers and a read only writers.
    """

    def __init__(self, capacity: int = CHUNK) -> None:
        self.capacity = capacity
        self.buffer = bytearray()
        self.writer_open = True
        self.reader_open = True
        self.failure: StreamFailed | None = None  # the writer's end: the read past it fails
        self.readable = _Signal()  # data arrived, or the writer went away
        self.writable = _Signal()  # room was made, or the reader went away


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
            pipe = self._pipe
            await (pipe.readable if self._want_data else pipe.writable).wait()

    def source(self) -> Hashable:
        return (self._pipe, self._want_data)


class PipeReader(InputStream):
    """The reading end of a :class:`Pipe`."""

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    def read(self, n: int) -> bytes:
        p = self.pipe
        if not p.buffer:
            if not p.writer_open:
                if p.failure is not None:
                    raise p.failure
                raise StreamClosed
            return b""
        chunk = bytes(p.buffer[:n])
        del p.buffer[:n]
        p.writable.changed()
        return chunk

    def subscribe(self) -> Pollable:
        return _PipePollable(self.pipe, want_data=True)

    def close(self) -> None:
        self.pipe.reader_open = False
        self.pipe.buffer.clear()
        self.pipe.writable.changed()


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
        self.pipe.buffer += data
        self.pipe.readable.changed()

    def subscribe(self) -> Pollable:
        return _PipePollable(self.pipe, want_data=False)

    def close(self) -> None:
        self.pipe.writer_open = False
        self.pipe.readable.changed()

    def fail(self, failure: StreamFailed) -> None:
        """End the stream broken: once what was written is read, the reader's next read
        raises ``failure`` (the guest's ``last-operation-failed``) instead of ending."""
        self.pipe.failure = failure
        self.close()


class ErrorObject:
    """A ``wasi:io/error.error``: a debug string, and the error code it stands for
    (``code``: filesystem, sockets; ``cause``: another package's, such as wasi:http's)."""

    def __init__(self, message: str, code: str | None = None, cause: object = None) -> None:
        self.message = message
        self.code = code
        self.cause = cause


_CLOSED = Err(None)


class WasiIo:
    """wasi:io for one instance."""

    def __init__(self, ctx: WasiContext) -> None:
        self.ctx = ctx
        t = ctx.table
        ctx.define_resource(POLL, "pollable", ResourceKind.POLLABLE)
        ctx.define_resource(ERROR, "error", ResourceKind.ERROR)
        ctx.define_resource(STREAMS, "input-stream", ResourceKind.INPUT_STREAM, ctx.close_handle)
        ctx.define_resource(STREAMS, "output-stream", ResourceKind.OUTPUT_STREAM, ctx.close_handle)
        ctx.define(PIPE, "make-pipe", self.make_pipe)
        ctx.define(POLL, "[method]pollable.ready", lambda p: t.get(p, Pollable).ready())
        ctx.define(POLL, "[method]pollable.block", Blocking(self.block))
        ctx.define(POLL, "poll", Blocking(self.poll))
        ctx.define(ERROR, "[method]error.to-debug-string", lambda e: t.get(e, ErrorObject).message)
        ctx.define(STREAMS, "[method]input-stream.read", self.read)
        ctx.define(STREAMS, "[method]input-stream.blocking-read", Blocking(self.blocking_read))
        ctx.define(STREAMS, "[method]input-stream.skip", self.skip)
        ctx.define(STREAMS, "[method]input-stream.blocking-skip", Blocking(self.blocking_skip))
        ctx.define(STREAMS, "[method]input-stream.subscribe", self.subscribe_input)
        ctx.define(STREAMS, "[method]output-stream.check-write", self.check_write)
        ctx.define(STREAMS, "[method]output-stream.write", self.write)
        ctx.define(
            STREAMS,
            "[method]output-stream.blocking-write-and-flush",
            Blocking(self.write_and_flush),
        )
        ctx.define(STREAMS, "[method]output-stream.flush", self.flush)
        ctx.define(STREAMS, "[method]output-stream.blocking-flush", Blocking(self.blocking_flush))
        ctx.define(STREAMS, "[method]output-stream.subscribe", self.subscribe_output)
        ctx.define(STREAMS, "[method]output-stream.write-zeroes", self.write_zeroes)
        ctx.define(
            STREAMS,
            "[method]output-stream.blocking-write-zeroes-and-flush",
            Blocking(self.write_zeroes_and_flush),
        )
        ctx.define(STREAMS, "[method]output-stream.splice", self.splice)
        ctx.define(STREAMS, "[method]output-stream.blocking-splice", Blocking(self.blocking_splice))

    def make_pipe(self) -> Any:
        pipe = Pipe()
        add, handle = self.ctx.table.add, self.ctx.own
        writer = handle(add(PipeWriter(pipe)), ResourceKind.OUTPUT_STREAM)
        reader = handle(add(PipeReader(pipe)), ResourceKind.INPUT_STREAM)
        return (writer, reader)

    def new_pollable(self, pollable: Pollable) -> Any:
        """An owned pollable handle for the guest."""
        return self.ctx.own(self.ctx.table.add(pollable), ResourceKind.POLLABLE)

    def poll(self, reps: list[int]) -> HostWaits:
        if not reps:
            raise GuestProtocolError("wasi:io/poll.poll called with an empty list")
        pollables = [self.ctx.table.get(r, Pollable) for r in reps]
        while True:
            ready = [i for i, p in enumerate(pollables) if p.ready()]
            if ready:
                return ready
            yield functools.partial(wait_any, pollables, self.ctx.scheduler)

    def block(self, rep: int) -> HostWaits:
        return until_ready(self.ctx.table.get(rep, Pollable))

    def failed(self, exc: StreamFailed) -> Any:
        """``err(last-operation-failed(error))`` for a stream operation that failed."""
        error = ErrorObject(str(exc), exc.code, exc.cause)
        return Err(self.ctx.own(self.ctx.table.add(error), ResourceKind.ERROR))

    def _stream_op(self, op: Callable[[], Any]) -> Any:
        """Run a stream operation, mapping the end and failures to ``stream-error``."""
        try:
            return op()
        except StreamClosed:
            return _CLOSED
        except StreamFailed as exc:
            return self.failed(exc)

    # input streams
    def _input(self, rep: int) -> InputStream:
        return self.ctx.table.get(rep, InputStream)

    def read(self, rep: int, n: int) -> Any:
        # (`_stream_op` inline, no closure: a guest's every read comes here, twice for
        # each small response body it reads to the end)
        stream = self.ctx.table.get(rep, InputStream)
        limit = stream.max_read
        try:
            return stream.read_into_guest(n if n < limit else limit)
        except StreamClosed:
            return _CLOSED
        except StreamFailed as exc:
            return self.failed(exc)

    def blocking_read(self, rep: int, n: int) -> HostWaits:
        stream = self._input(rep)
        return self._blocking_stream_op(
            lambda: _read_some(stream, min(n, stream.max_read), stream.read_into_guest)
        )

    def skip(self, rep: int, n: int) -> Any:
        stream = self._input(rep)
        return self._stream_op(lambda: len(stream.read(min(n, stream.max_read))))

    def blocking_skip(self, rep: int, n: int) -> HostWaits:
        stream = self._input(rep)
        result = yield from self._blocking_stream_op(
            lambda: _read_some(stream, min(n, stream.max_read))
        )
        return result if isinstance(result, Err) else len(result)

    def subscribe_input(self, rep: int) -> Any:
        return self.new_pollable(self._input(rep).subscribe())

    # output streams
    def _output(self, rep: int) -> OutputStream:
        return self.ctx.table.get(rep, OutputStream)

    def check_write(self, rep: int) -> Any:
        stream = self._output(rep)
        return self._stream_op(stream.check_write)

    def write(self, rep: int, data: bytes) -> Any:
        stream = self._output(rep)

        def op() -> None:
            if len(data) > stream.check_write():
                raise GuestProtocolError("write larger than check-write allowed")
            stream.write(bytes(data))

        return self._stream_op(op)

    @staticmethod
    def _check_blocking_size(n: int, what: str) -> None:
        # as wasmtime: a larger one is the guest's mistake, not a reason to block longer
        if n > BLOCKING_WRITE_MAX:
            raise GuestProtocolError(f"{what} of {n} bytes (at most {BLOCKING_WRITE_MAX})")

    def write_and_flush(self, rep: int, data: bytes) -> HostWaits:
        self._check_blocking_size(len(data), "blocking-write-and-flush")
        return self._write_and_flush(rep, data)

    def _write_and_flush(self, rep: int, data: bytes) -> HostWaits:
        # one generator, not _blocking_stream_op's two: every response body of a
        # wasi:http proxy guest is written this way, most of them in one piece
        stream = self._output(rep)
        try:
            # (a lifted ``list<u8>`` is bytes: viewed, not copied; anything else is copied
            # now, before a wait, as the guest's memory may change meanwhile)
            view = memoryview(data if type(data) is bytes else bytes(data))
            while view:
                n = stream.check_write()
                if n == 0:
                    yield from until_ready(stream.subscribe())
                    continue
                if n >= len(view):  # (most writes: all of it at once, one copy)
                    stream.write(bytes(view))
                    break
                stream.write(bytes(view[:n]))
                view = view[n:]
            # ``flushed``, inline (two generators fewer a write)
            stream.flush()
            pollable = stream.subscribe()
            if not pollable.ready():
                yield functools.partial(wait_ready, pollable)
            stream.check_write()
        except StreamClosed:
            return _CLOSED
        except StreamFailed as exc:
            return self.failed(exc)
        return None

    def flush(self, rep: int) -> Any:
        stream = self._output(rep)

        def op() -> None:
            stream.check_write()  # a flush on a stream whose reader is gone reports it
            stream.flush()

        return self._stream_op(op)

    def blocking_flush(self, rep: int) -> HostWaits:
        stream = self._output(rep)

        def op() -> HostWaits:
            stream.check_write()  # a flush on a stream whose reader is gone reports it
            yield from flushed(stream)

        return self._blocking_stream_op(op)

    def write_zeroes(self, rep: int, n: int) -> Any:
        stream = self._output(rep)

        def op() -> None:
            if n > stream.check_write():
                raise GuestProtocolError("write-zeroes larger than check-write allowed")
            stream.write(bytes(n))

        return self._stream_op(op)

    def write_zeroes_and_flush(self, rep: int, n: int) -> HostWaits:
        self._check_blocking_size(n, "blocking-write-zeroes-and-flush")
        return self._write_and_flush(rep, bytes(n))

    def subscribe_output(self, rep: int) -> Any:
        return self.new_pollable(self._output(rep).subscribe())

    def splice(self, out_rep: int, in_rep: int, n: int) -> Any:
        src = self._input(in_rep)
        dst = self._output(out_rep)

        def op() -> int:
            room = min(n, dst.check_write(), CHUNK)
            data = src.read(room) if room else b""
            if data:
                dst.write(data)
            return len(data)

        return self._stream_op(op)

    def blocking_splice(self, out_rep: int, in_rep: int, n: int) -> HostWaits:
        src = self._input(in_rep)
        dst = self._output(out_rep)

        def op() -> HostWaits:
            if n == 0:
                return 0
            while (room := min(n, dst.check_write(), CHUNK)) == 0:
                yield from until_ready(dst.subscribe())
            data = yield from _read_some(src, room)
            dst.write(data)
            yield from flushed(dst)
            return len(data)

        return self._blocking_stream_op(op)

    def _blocking_stream_op(self, op: Callable[[], HostWaits]) -> HostWaits:
        """A blocking stream operation, mapping the end and failures to ``stream-error``."""
        try:
            return (yield from op())
        except StreamClosed:
            return _CLOSED
        except StreamFailed as exc:
            return self.failed(exc)


HostWaits = Generator[Callable[[], Awaitable[None]], None, Any]
"""A blocking host function: yields what to await, returns its result."""


def until_ready(pollable: Pollable) -> HostWaits:
    """A blocking host function's wait for ``pollable``."""
    if not pollable.ready():
        yield functools.partial(wait_ready, pollable)


def _read_some(
    stream: InputStream, n: int, read: Callable[[int], bytes | ReadInto] | None = None
) -> HostWaits:
    """At least one byte (up to ``n``), waiting for it; StreamClosed at the end.
    ``read`` is how (``stream.read`` by default; a :class:`ReadInto` holds a byte)."""
    read = read or stream.read
    while not (data := read(n)):
        yield from until_ready(stream.subscribe())
    return data


def flushed(stream: OutputStream) -> HostWaits:
    """Flush, and wait until done: the stream takes writes again (as wasmtime's
    ``blocking-flush``); a failure surfaces through ``check-write``."""
    stream.flush()
    yield from until_ready(stream.subscribe())
    stream.check_write()


async def wait_any(pollables: list[Pollable], scheduler: Scheduler | None = None) -> None:
    """Wait until one of ``pollables`` may be ready (the caller re-checks). Clock
    pollables cost one deadline together (the soonest), not a task each; the others
    one wait per source (pollables of one stream are ready together). With the
    instance's ``scheduler``, those waits are its shared waits, which outlive this
    call for the next poll on the same sources and serve guest tasks' waits too."""
    soonest = math.inf
    others: dict[Hashable, Callable[[], Awaitable[None]]] = {}
    for pollable in pollables:
        deadline = pollable.deadline()
        if deadline is not None:
            soonest = min(soonest, deadline)
        elif (source := pollable.source()) not in others:
            others[source] = functools.partial(wait_ready, pollable)
    if not others:
        await anyio.sleep_until(soonest)
    elif scheduler is not None:
        await scheduler.wait_sources(others, soonest)
    elif len(others) == 1 and soonest == math.inf:
        await next(iter(others.values()))()
    else:
        with anyio.CancelScope(deadline=soonest):
            async with anyio.create_task_group() as tg:

                async def one(wait: Callable[[], Awaitable[None]]) -> None:
                    await wait()
                    tg.cancel_scope.cancel()

                for wait in others.values():
                    tg.start_soon(one, wait)


# -- host-side helpers ----------------------------------------------------------------


async def wait_ready(pollable: Pollable) -> None:
    """Wait until ``pollable`` is ready (level-triggered: re-check after every wake)."""
    while not pollable.ready():
        await pollable.wait()


async def read_chunk(stream: InputStream, n: int = CHUNK) -> bytes | None:
    """The host reads the next chunk of a stream, waiting for data; ``None`` at its end.

    Raises:
      StreamFailed: the stream's last operation failed.
    """
    while True:
        try:
            data = stream.read(n)
        except StreamClosed:
            return None
        if data:
            return data
        await wait_ready(stream.subscribe())


async def write_all(stream: OutputStream, data: bytes) -> None:
    """The host writes all of ``data``, waiting for room (backpressure).

    Raises:
      StreamClosed: the reader went away.
    """
    view = memoryview(data)
    while view:
        room = stream.check_write()
        if room == 0:
            await wait_ready(stream.subscribe())
            continue
        stream.write(bytes(view[:room]))
        view = view[room:]
