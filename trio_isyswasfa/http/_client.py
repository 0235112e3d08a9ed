"""Sending guests' outgoing requests over HTTP/1.1 (on anyio), streaming both ways.

Why not httpx: a guest fanning out is the headline use, and httpcore's connection
pool re-examines every connection and queued request on each request's every step,
so 100 concurrent requests to one origin cost about six times the client time of
this module (measured: ~250 ms against ~40 ms for 100 GETs on loopback). Here our own
sans-IO HTTP/1.1 (``_h1``, strict; it replaced h11, which cost a quarter of each
request: see its docstring) does the protocol; we keep, per origin, a list of idle
keep-alive connections, a count of the open ones and a line of the requests waiting
for one.

What one request costs is what a fan-out costs, so the common case is kept short: on
trio, a plain-TCP connection's socket is written and read directly, waiting (one
trio wait) only when it is not ready, where a trio socket stream yields once more
after every call; a response whose body arrived with its head (most small ones) is
handed over whole (its bytes, no pipe), its connection back in the pool before the
guest sees it, with no task of its own. A longer body is pumped into an in-memory pipe (backpressure: the
pump waits while the guest does not read) by a task in the client's own task group,
so it outlives the ``handle`` call that returned the response. A connection goes back
to its origin's pool once a response was read to its end; one whose body the guest
dropped is closed.
"""

from __future__ import annotations

import contextlib
import fnmatch
import ipaddress
import math
import socket
import ssl
from collections import deque
from collections.abc import Coroutine, Generator, Sequence
from dataclasses import dataclass
from inspect import CORO_CREATED, getcoroutinestate
from time import perf_counter
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import trio

from .._park import Waiter, running_trio
from ..wasi.io import (
    CHUNK,
    BytesInputStream,
    Pipe,
    PipeReader,
    PipeWriter,
    StreamClosed,
    StreamFailed,
    read_chunk,
    write_all,
)
from . import _h1
from ._background import BackgroundTasks, StartedAtCall
from .types import (
    FORBIDDEN,
    Body,
    ClientNotOpen,
    ErrorCode,
    Fields,
    Request,
    Response,
    TrailersSender,
    make_trailers,
)

_DEFAULT_PORTS = {"http": 80, "https": 443}
_READ = 64 * 1024
_ORIGINS_CACHED = 1024  # authorities whose allow-list verdict is remembered
# requests written at send() leave together (see HttpClient._write_head): at most this
# many wait, and none once this long (seconds) has passed since the last ones left
_WRITE_BATCH = 16
_WRITE_LINGER = 0.01

Origin = tuple[str, str, int]  # scheme, host, port


class _ReadDeadlines:
    """The read timeouts of a client's plain sockets on trio, kept by one task rather
    than by a cancel scope around each read: entering and leaving a scope with a
    deadline cost more than the read itself (~8 µs a response, a large part of what
    a fan-out's answers cost the client), while a read whose deadline passes is rare.
    Such a read is woken by ``notify_closing`` on its socket, whose connection is
    closed anyway once a read timed out.

    The task sleeps until the earliest deadline of the reads waiting now (for good
    while none waits, so an idle client sets no timer), and is woken sooner when a
    read with an earlier one begins. It is a trio system task, not one of the client's
    own, as a guest's request in flight when the client closes goes on to its answer
    (with its timeout) as before; it ends once the client closed and no read waits."""

    __slots__ = ("_at", "_reading", "_running", "_scope", "closed")

    def __init__(self) -> None:
        self._reading: dict[_Connection, float] = {}  # waiting reads, by deadline
        self._at = math.inf  # when the task wakes next
        self._scope: trio.CancelScope | None = None  # the task's sleep
        self._running = False
        self.closed = False

    def add(self, conn: _Connection, deadline: float) -> None:
        """``conn`` waits to read until ``deadline`` (trio's clock)."""
        self._reading[conn] = deadline
        if deadline < self._at:
            self._at = deadline
            if self._scope is not None:
                self._scope.deadline = deadline
            elif not self._running:
                self._running = True
                trio.lowlevel.spawn_system_task(self._watch, name="HttpClient read timeouts")

    def discard(self, conn: _Connection) -> None:
        """``conn`` no longer waits to read."""
        reading = self._reading
        reading.pop(conn, None)
        if not reading:
            scope = self._scope
            if self.closed:
                if scope is not None:
                    scope.cancel()  # the task ends
            elif self._at != math.inf:
                self._at = math.inf  # (no wake-up for nothing: a test's clock would jump)
                if scope is not None:
                    scope.deadline = math.inf

    def close(self) -> None:
        """The client closed: the task ends once no read waits."""
        self.closed = True
        if not self._reading and self._scope is not None:
            self._scope.cancel()

    async def _watch(self) -> None:
        try:
            while self._reading or not self.closed:
                with trio.CancelScope(deadline=self._at) as self._scope:
                    await trio.sleep_forever()
                now = trio.current_time()
                for conn, deadline in list(self._reading.items()):
                    if deadline <= now:
                        del self._reading[conn]
                        conn.timed_out = True
                        sock = conn.sock
                        assert sock is not None  # (only plain sockets are watched)
                        if sock.fileno() != -1:  # (closed under it: its waiter woke already)
                            trio.lowlevel.notify_closing(sock)
                self._at = min(self._reading.values(), default=math.inf)
        finally:
            self._scope = None
            self._running = False
            self._at = math.inf


class _Connection:
    """One HTTP/1.1 connection: its stream (or, on trio, its plain socket) and its
    protocol state."""

    __slots__ = ("deadlines", "h1", "origin", "received", "sock", "stream", "timed_out")

    def __init__(
        self, stream: anyio.abc.ByteStream, origin: Origin, deadlines: _ReadDeadlines | None
    ) -> None:
        self.stream = stream
        self.origin = origin
        self.h1 = _h1.ClientConnection()
        self.received = 0  # bytes received since the current request was sent
        # the non-blocking socket under the stream: used directly where that is safe
        # (trio, no TLS; ``deadlines`` given), it costs a wait only when it is not ready
        self.sock: socket.socket | None = (
            stream.extra(anyio.abc.SocketAttribute.raw_socket) if deadlines else None
        )
        self.deadlines = deadlines
        self.timed_out = False  # a read outlived its deadline: the socket is done

    async def send(self, data: bytes | memoryview) -> None:
        sock = self.sock
        if sock is None:
            await self.stream.send(bytes(data))
            return
        view = memoryview(data)
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                continue
            view = view[sent:]

    async def receive(self, seconds: float) -> bytes:
        """What arrived next (``b""`` at the end), waiting at most ``seconds``.

        Raises:
          TimeoutError: nothing arrived in time.
          OSError: the connection broke.
        """
        sock = self.sock
        if sock is None:
            with anyio.CancelScope(deadline=anyio.current_time() + seconds):
                try:
                    return await self.stream.receive(_READ)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return b""
            raise TimeoutError  # the scope's deadline passed (others' cancellations propagate)
        try:
            return sock.recv(_READ)
        except BlockingIOError:
            pass
        # (a raw socket only on trio: trio's own wait, not anyio's wrapper of it; the
        # client's one task keeps the deadline, see _ReadDeadlines)
        deadlines = self.deadlines
        assert deadlines is not None
        deadlines.add(self, trio.current_time() + seconds)
        try:
            while True:
                try:
                    await trio.lowlevel.wait_readable(sock)
                except trio.ClosedResourceError:
                    if self.timed_out:
                        raise TimeoutError from None
                    raise
                if self.timed_out:  # (woken by data as the deadline passed)
                    raise TimeoutError
                try:
                    return sock.recv(_READ)
                except BlockingIOError:
                    continue
        finally:
            deadlines.discard(self)

    async def next_event(self, read_seconds: float) -> _h1.Event:
        """The next event; each read from the socket may take ``read_seconds``."""
        h1 = self.h1
        while (event := h1.next_event()) is _h1.NEED_DATA:
            data = await self.receive(read_seconds)
            self.received += len(data)
            h1.receive_data(data)
        return event

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.stream.aclose()


class _Claim:
    """A request waiting for a connection of its origin: it is handed an idle one, or
    leave to open one (``conn`` None), or told that the client closed."""

    __slots__ = ("closed", "conn", "granted", "waiter")

    def __init__(self) -> None:
        self.waiter = Waiter(running_trio())
        self.granted = False
        self.closed = False
        self.conn: _Connection | None = None

    def grant(self, conn: _Connection | None) -> None:
        self.granted = True
        self.conn = conn
        self.waiter.set()


class _OriginPool:
    """One origin's connections: the idle ones, how many are open (idle or in use) and
    the requests waiting in line for one, each woken alone, first come first served."""

    __slots__ = ("idle", "open", "origin", "waiting")

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.idle: list[_Connection] = []
        self.open = 0
        self.waiting: deque[_Claim] = deque()


@dataclass
class _Timeouts:
    connect: float
    first_byte: float
    between_bytes: float


class _Stale(Exception):
    """A reused keep-alive connection turned out closed before any response byte."""


class _Unread:
    __slots__ = ()


_UNREAD = _Unread()  # the request body's first chunk is still to be read


class _Written:
    """A request written when :meth:`HttpClient.send` was called (or queued then to
    leave with the next ones: see :meth:`HttpClient._write_head`), but for ``rest``
    (what the socket did not take): its connection, taken from the idle ones, is in
    use from then on. ``broken``: the connection failed before a byte of it left."""

    __slots__ = ("broken", "conn", "head", "origin", "pool", "rest", "timeouts")

    def __init__(
        self,
        pool: _OriginPool,
        conn: _Connection,
        head: _h1.RequestHead,
        timeouts: _Timeouts,
        rest: memoryview,
    ) -> None:
        self.pool = pool
        self.conn = conn
        self.head = head
        self.timeouts = timeouts
        self.rest = rest
        self.broken = False


class _Sending(StartedAtCall[Response]):
    """What :meth:`HttpClient.send` returns: its coroutine, which reads the response
    (and sends what was not sent at the call). Closed before it ever ran, it gives up
    the request it wrote: the connection is closed, as its response will not be read."""

    __slots__ = ("_client", "_request", "_written")

    def __init__(
        self,
        client: HttpClient,
        request: Request,
        coro: Coroutine[Any, Any, Response],
        written: _Written | None,
    ) -> None:
        self._client = client
        self._request = request
        self._coro = coro
        self._written = written

    def _give_up(self) -> None:
        self._request.close()
        if self._written is not None:
            self._client._give_up(self._written)

    def __await__(self) -> Generator[Any, None, Response]:
        # (`await` drops this object before the coroutine's first step: the finaliser
        # must not take that for a request nobody will read)
        self._written = None
        return super().__await__()

    def __del__(self) -> None:
        # dropped without close() or await: a request written at send() would keep
        # its connection counted open, its response unread. No task may start here,
        # nor the pool be touched (a finaliser runs wherever the garbage is found, on
        # any thread): _drop_written hands the closing to the event loop's thread.
        written = self._written
        if written is not None and getcoroutinestate(self._coro) == CORO_CREATED:
            self._written = None
            self._client._drop_written(written)


class HttpClient(BackgroundTasks):
    """An outgoing handler for guests: ``WasiConfig(http_outgoing=client.send)``.

    Use it as an async context manager; response bodies still streaming when it
    closes are cut off.

    Args:
      allow: ``host:port`` patterns (``fnmatch``, e.g. ``"127.0.0.1:*"``,
        ``"*.example.com:443"``, or ``"*"`` for anything) a guest may send requests to;
        anything else is refused with ``HTTP-request-denied``. Empty: nothing is allowed.
        An IPv6 literal (``"[::1]:*"``) admits that address only (its port may be a
        pattern). A host pattern of digits, dots and wildcards only (``"10.0.0.*:*"``)
        admits IPv4 literals only, as the sockets allow-list reads it: not the DNS
        name ``10.0.0.attacker.example``.
      timeout: default timeout in seconds for connecting and for each read.
      max_connections_per_origin: connections open at once to one origin (scheme,
        host, port); further requests to it wait in line for one to be free (a guest
        fanning out to 10,000 URLs of one server must not open 10,000 sockets: that is
        the process's file descriptors, and a flood the server did not ask for). The
        default, 100, is httpx's and aiohttp's default connection limit: a fan-out of
        up to 100 requests to one origin all go out at once.
      max_idle_per_origin: keep-alive connections kept open per origin between
        requests (at most ``max_connections_per_origin`` are ever open).
    """

    def __init__(
        self,
        *,
        allow: Sequence[str] = (),
        timeout: float = 30.0,
        max_connections_per_origin: int = 100,
        max_idle_per_origin: int = 100,
    ) -> None:
        if max_connections_per_origin < 1:
            raise ValueError(
                f"max_connections_per_origin must be at least 1, not {max_connections_per_origin}"
            )
        self.allow = list(allow)
        self._timeout = timeout
        self._max_connections = max_connections_per_origin
        self._max_idle = max_idle_per_origin
        self._pools: dict[Origin, _OriginPool] = {}
        # (scheme, authority) -> its origin, or the error-code case refusing it; for
        # the allow-list as it was when `_verdicts_for` was taken
        self._verdicts: dict[tuple[str, str], Origin | str] = {}
        self._verdicts_for: list[str] = []
        self._ssl: ssl.SSLContext | None = None
        self._open = False
        self._checkpoint_if_cancelled = anyio.lowlevel.checkpoint_if_cancelled
        self._on_trio = False  # (known once entered)
        # the run's token on trio (where alone requests are written at send()): a
        # finaliser hands its work to the event loop's thread through it
        self._token: trio.lowlevel.TrioToken | None = None
        self._deadlines: _ReadDeadlines | None = None  # (made at the first connection)
        # (method, authority) -> a head with no fields but host, checked, cut around its
        # target: what comes before it, what after, and the method (see `_head`)
        self._bare_heads: dict[tuple[str, str | None], tuple[bytes, bytes, bytes]] = {}
        self._default_timeouts = _Timeouts(timeout, timeout, timeout)
        self._unsent: list[_Written] = []  # written at send(), waiting to leave together
        self._flushed = -math.inf  # when the last of them left (perf_counter)

    async def __aenter__(self) -> HttpClient:
        await super().__aenter__()
        self._open = True
        self._on_trio = running_trio()
        if self._on_trio:  # trio's own (anyio's looks the backend up at every call)
            self._checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
            self._token = trio.lowlevel.current_trio_token()
        return self

    async def _closed(self) -> None:
        self._open = False
        if self._deadlines is not None:
            self._deadlines.close()
            self._deadlines = None
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            while pool.waiting:
                claim = pool.waiting.popleft()
                claim.closed = True
                claim.grant(None)
            for conn in pool.idle:
                await conn.aclose()

    def allowed(self, authority: str, scheme: str) -> bool:
        """Whether ``authority`` (``host[:port]``) matches the allow-list."""
        host, port = _split_authority(authority, scheme)
        host = host.lower()
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return any(
            pattern == "*"
            or (
                _v6_literal_matches(pattern, host, port)
                if pattern.startswith("[")
                else fnmatch.fnmatchcase(target, pattern)
                and (not _is_address_pattern(pattern) or _is_v4_literal(host))
            )
            for pattern in self.allow
        )

    def statistics(self, origin: Origin) -> tuple[int, int, int]:
        """``(open, idle, waiting)`` for ``origin`` ``(scheme, host, port)``: connections
        open to it, how many of them are idle, and requests waiting for one."""
        pool = self._pools.get(origin)
        return (pool.open, len(pool.idle), len(pool.waiting)) if pool else (0, 0, 0)

    def send(self, request: Request) -> Coroutine[Any, Any, Response]:
        """Send ``request``; the coroutine returns the response once its head arrived.

        When nothing needs waiting for, the request is written at the call, before
        the coroutine runs: a request with no body, over plain HTTP on trio, to an
        origin with an idle keep-alive connection. A guest's requests then leave as
        its call makes them (an import's host task runs only once the guest yields),
        so a fan-out's answers start their way while the guest still builds the rest.
        Requests made in a quick row leave in batches of up to 16 (the first at
        once; the last ones when the first of their coroutines runs, at the latest).

        Raises:
          ErrorCode: the request was refused or failed (``HTTP-request-denied``,
            ``connection-refused``, ``connection-timeout``, ``HTTP-request-URI-invalid``…).
          ClientNotOpen: outside the client's ``async with`` block (a ``RuntimeError``;
            a guest's request is refused then).
        """
        if not self._open:
            raise ClientNotOpen("use HttpClient in an `async with` block")
        first, written = self._write_now(request)
        return _Sending(self, request, self._sending(request, first, written), written)

    async def _sending(
        self, request: Request, first: bytes | _Unread | None, written: _Written | None
    ) -> Response:
        try:
            if written is None:  # (else in `_send`, which closes its connection if cancelled)
                await self._checkpoint_if_cancelled()
            return await self._send(request, first, written)
        finally:
            request.close()  # what the guest passed is ours to release, sent or not

    def _write_now(self, request: Request) -> tuple[bytes | _Unread | None, _Written | None]:
        """Write ``request`` now if nothing needs waiting for (see :meth:`send`); else
        leave it to the coroutine, with the body's first chunk if it was read here.
        Refusals are left to the coroutine too: it raises them."""
        try:
            first: bytes | None = request.body.stream.read(CHUNK)
        except StreamClosed:
            first = None
        except StreamFailed:
            return _UNREAD, None  # (the coroutine's read fails the same way)
        if first is None and self._on_trio:
            return None, self._write_head(request)
        return (first or _UNREAD), None  # (b"": nothing yet, nothing taken)

    def _write_head(self, request: Request) -> _Written | None:
        scheme = request.scheme or "http"
        if scheme != "http" or not request.authority:
            return None
        try:
            origin = self._origin(scheme, request.authority)
            head = self._head(request, self._target(request), None)
        except ErrorCode:
            return None
        pool = self._pools.get(origin)
        if pool is None or pool.waiting or not pool.idle or head.length or head.chunked:
            return None
        conn = pool.idle.pop()
        h1 = conn.h1
        data = h1.send_request(head) + h1.send_end()  # (no body: nothing to refuse)
        conn.received = 0
        written = _Written(pool, conn, head, self._timeouts_of(request), memoryview(data))
        # A fan-out's requests leave in batches rather than one by one: on loopback,
        # each write does the receiving side's work too and wakes the server, which may
        # take this process's core; written one after another while the guest builds
        # the rest, a fan-out's writes cost 2-3x the CPU of the same writes in a row
        # (the kernel's caches cold each time) and, on a busy machine, a wait for the
        # core after each. The first request after a pause leaves at once; those that
        # follow within _WRITE_LINGER wait for _WRITE_BATCH of them, or for the first
        # of their coroutines to run (once the guest yields), whichever comes first.
        unsent = self._unsent
        unsent.append(written)
        if len(unsent) >= _WRITE_BATCH or perf_counter() - self._flushed > _WRITE_LINGER:
            self._flush()
        return written

    def _flush(self) -> None:
        """Write the requests waiting to leave (see :meth:`_write_head`), one after
        another; what a socket does not take, its coroutine sends."""
        unsent, self._unsent = self._unsent, []
        for written in unsent:
            sock = written.conn.sock
            assert sock is not None  # plain HTTP on trio
            try:
                sent = sock.send(written.rest)
            except BlockingIOError:
                continue
            except OSError:
                # it broke while idle: the coroutine sends it on a fresh connection (as
                # nothing of it left, whatever its method)
                written.broken = True
                continue
            written.rest = written.rest[sent:]
        self._flushed = perf_counter()

    def _timeouts_of(self, request: Request) -> _Timeouts:
        if request.options is None:
            return self._default_timeouts  # (never changed: shared)
        return _timeouts(request, self._timeout)

    def _give_up(self, written: _Written) -> None:
        """A request written at ``send`` whose coroutine never ran: its connection
        carries a response nobody reads, so it is closed (and if it is still waiting
        to leave, it never does)."""
        self._unqueue(written)
        if self._open:
            self._tasks.start_soon(self._close, written.pool, written.conn)
        else:
            # no task may start now, and the client's close closed only its idle
            # connections: this one's socket is closed here (on the loop's thread, in a
            # task's step: no need to defer it as a finaliser must)
            self._dropped(written)

    def _drop_written(self, written: _Written) -> None:
        """:meth:`_give_up` for a finaliser, which runs wherever the garbage is found:
        on another thread, or between any two steps of the event loop's own code. The
        pool is touched, and a request waiting in line woken, only on the event loop's
        thread between tasks (trio's ``run_sync_soon``, safe from anywhere); once the
        run is over, nothing else runs, so here and now."""
        token = self._token
        if token is not None:
            try:
                token.run_sync_soon(self._dropped, written)
                return
            except trio.RunFinishedError:
                pass
        self._dropped(written)

    def _unqueue(self, written: _Written) -> None:
        """``written`` no longer waits to leave (if it did)."""
        with contextlib.suppress(ValueError):
            self._unsent.remove(written)

    def _dropped(self, written: _Written) -> None:
        """Close a dropped written request's socket and free its place in the pool."""
        self._unqueue(written)
        sock = written.conn.sock
        if sock is not None:  # (a request is written at send() only on a plain socket)
            with contextlib.suppress(RuntimeError):  # (outside trio: nobody waits on it)
                trio.lowlevel.notify_closing(sock)
            sock.close()
        if self._open:
            self._forget(written.pool)
        else:
            written.pool.open -= 1

    def _origin(self, scheme: str, authority: str) -> Origin:
        """The origin ``authority`` names, if the allow-list admits it (the verdict is
        remembered until the allow-list changes).

        Raises:
          ErrorCode: ``HTTP-request-denied``, or ``HTTP-request-URI-invalid``.
        """
        if self.allow != self._verdicts_for:
            self._verdicts.clear()
            self._verdicts_for = list(self.allow)
        key = (scheme, authority)
        verdict = self._verdicts.get(key)
        if verdict is None:
            host, port = _split_authority(authority, scheme)
            if not (host and host.isascii() and 0 < port < 65536):
                # (a guest's authority: wasi:http lets any string through; a host
                # beyond ASCII could not even be written in the request's head)
                verdict = "HTTP-request-URI-invalid"
            elif not self.allowed(authority, scheme):
                verdict = "HTTP-request-denied"
            else:
                verdict = (scheme, host, port)
            if len(self._verdicts) >= _ORIGINS_CACHED:
                self._verdicts.clear()
            self._verdicts[key] = verdict
        if isinstance(verdict, str):
            raise ErrorCode(verdict)
        return verdict

    @staticmethod
    def _target(request: Request) -> bytes:
        """The request line's target.

        Raises:
          ErrorCode: ``HTTP-request-URI-invalid``.
        """
        target = (request.path_with_query or "/").encode("utf-8")
        if not target.startswith(b"/") or not _h1.is_target(target):
            raise ErrorCode("HTTP-request-URI-invalid")
        return target

    def _head(self, request: Request, target: bytes, first: bytes | None) -> _h1.RequestHead:
        """The request's head (``first``: its body's first chunk, None: no body), for
        ``target`` as :meth:`_target` checked it.

        A request with no fields and no body (a fan-out's GETs) takes a head made and
        checked once per method and authority, with its target put in: checking the
        method, the ``host`` field and the target again, and formatting it all, was
        most of what writing such a request cost in Python.

        Raises:
          ErrorCode: ``internal-error``: a head HTTP/1.1 cannot carry.
        """
        entries = request.headers.entries()
        if entries or first is not None:
            return self._full_head(request, target, entries, first)
        key = (request.method, request.authority)
        bare = self._bare_heads.get(key)
        if bare is None:
            ref = self._full_head(request, b"/", entries, None).data  # b"GET / HTTP/1.1…"
            cut = ref.index(b" / HTTP/1.1\r\n") + 1
            bare = (ref[:cut], ref[cut + 1 :], request.method.encode("utf-8"))
            if len(self._bare_heads) >= _ORIGINS_CACHED:
                self._bare_heads.clear()
            self._bare_heads[key] = bare
        before, after, method = bare
        return _h1.RequestHead(before + target + after, method, False, 0)

    @staticmethod
    def _full_head(
        request: Request, target: bytes, entries: list[tuple[str, bytes]], first: bytes | None
    ) -> _h1.RequestHead:
        """:meth:`_head`, every part checked (``entries``: the request's fields)."""
        # `host` is always the authority the allow-list admitted: a guest's own (the
        # draft's fields allow one) would reach another virtual host behind that address
        headers = [(b"host", (request.authority or "").encode("latin-1"))]
        headers += [
            (n.encode("latin-1"), v)
            for n, v in entries
            if n.lower() not in _HOP_BY_HOP and n.lower() != "host"
        ]
        chunked = first is not None and not any(n.lower() == b"content-length" for n, _ in headers)
        if chunked:
            headers.append((b"transfer-encoding", b"chunked"))
        try:
            return _h1.request_head(request.method.encode("utf-8"), target, headers)
        except _h1.LocalProtocolError as exc:  # a field value HTTP/1.1 cannot carry
            raise ErrorCode("internal-error", f"the request head cannot be sent: {exc}") from exc

    async def _send(
        self, request: Request, first: bytes | _Unread | None, written: _Written | None
    ) -> Response:
        rest: memoryview | None = None
        pool: _OriginPool
        conn: _Connection | None
        if written is not None:  # on its way since `send`
            if self._unsent:
                self._flush()  # (it may be waiting, with the rest of its batch)
            pool, conn, head = written.pool, written.conn, written.head
            timeouts, rest, fresh = written.timeouts, written.rest, False
            origin = conn.origin
        else:
            scheme = request.scheme or "http"
            if scheme not in ("http", "https") or not request.authority:
                raise ErrorCode("HTTP-request-URI-invalid")
            origin = self._origin(scheme, request.authority)
            target = self._target(request)
            if isinstance(first, _Unread):
                first = await read_chunk(request.body.stream)
            head = self._head(request, target, first)
            timeouts = self._timeouts_of(request)
            known = self._pools.get(origin)
            pool = (
                known if known is not None else self._pools.setdefault(origin, _OriginPool(origin))
            )
            conn = await self._acquire(pool)
            fresh = conn is None
        chunked = head.chunked
        ok = False
        try:
            if written is not None:
                await self._checkpoint_if_cancelled()
                if written.broken:
                    assert conn is not None  # (the written request's own)
                    await conn.aclose()  # (its place in the pool goes to the fresh one)
                    conn, fresh, rest = None, True, None
            while True:
                if conn is None:
                    conn = await self._connect(origin, timeouts.connect)
                try:
                    response = await self._exchange(
                        conn,
                        head,
                        None if isinstance(first, _Unread) else first,
                        request.body,
                        timeouts,
                        fresh,
                        chunked,
                        rest,
                    )
                    break
                except _Stale:
                    # the server closed it while idle: once more on a fresh one, which
                    # takes its place (the count of open connections stays)
                    await conn.aclose()
                    conn, fresh, rest = None, True, None
            ok = True
        finally:
            if not ok:
                if conn is not None:
                    await conn.aclose()
                self._forget(pool)
        body = self._take_arrived(pool, conn, timeouts)
        return Response(_fields(response.headers), body, status=response.status)

    async def _acquire(self, pool: _OriginPool) -> _Connection | None:
        """An idle connection of the pool, or None: leave to open one (counted as open
        from now on: :meth:`_forget` it if that fails). Waits in line while the origin
        has ``max_connections_per_origin`` open."""
        if not pool.waiting:
            if pool.idle:
                return pool.idle.pop()
            if pool.open < self._max_connections:
                pool.open += 1
                return None
        claim = _Claim()
        pool.waiting.append(claim)
        taken = False
        try:
            while not claim.granted:
                await claim.waiter.wait()
            taken = True
        finally:
            if not claim.granted:  # cancelled in line
                pool.waiting.remove(claim)
            elif not taken and not claim.closed:  # cancelled as it was handed one
                self._pass_on(pool, claim.conn)
        if claim.closed:
            raise ErrorCode("internal-error", "the HTTP client was closed")
        return claim.conn

    def _forget(self, pool: _OriginPool) -> None:
        """One of the pool's connections is closed (or was never opened): its place goes
        to the first request in line."""
        pool.open -= 1
        if pool.waiting and pool.open < self._max_connections:
            pool.open += 1
            pool.waiting.popleft().grant(None)
        elif not pool.open and self._pools.get(pool.origin) is pool:
            del self._pools[pool.origin]  # nothing left of it (a guest may name many origins)

    def _reuse(self, pool: _OriginPool, conn: _Connection) -> bool:
        """Give ``conn``, whose response is over, to the first request in line, or keep
        it idle; False if neither (it is to be closed)."""
        if not self._open or self._pools.get(conn.origin) is not pool:
            return False
        if pool.waiting:
            pool.waiting.popleft().grant(conn)
            return True
        if len(pool.idle) < self._max_idle:
            pool.idle.append(conn)
            return True
        return False

    def _pass_on(self, pool: _OriginPool, conn: _Connection | None) -> None:
        """What a request was handed and will not use (its idle connection, or its
        place to open one) goes to the next in line."""
        if conn is None:
            self._forget(pool)
        elif not self._reuse(pool, conn):
            self._tasks.start_soon(self._close, pool, conn)

    async def _close(self, pool: _OriginPool, conn: _Connection) -> None:
        self._forget(pool)
        await conn.aclose()

    async def _release(self, pool: _OriginPool, conn: _Connection, keep: bool) -> None:
        """The response on ``conn`` is over: reuse the connection if it can be, else
        close it."""
        if keep:
            conn.received = 0
            if self._reuse(pool, conn):
                return
        await self._close(pool, conn)

    async def _connect(self, origin: Origin, connect_seconds: float) -> _Connection:
        scheme, host, port = origin
        try:
            with anyio.fail_after(connect_seconds):
                if scheme == "https":
                    if self._ssl is None:
                        self._ssl = ssl.create_default_context()
                    stream: anyio.abc.ByteStream = await anyio.connect_tcp(
                        host, port, ssl_context=self._ssl, tls_standard_compatible=False
                    )
                else:
                    stream = await anyio.connect_tcp(host, port)
        except TimeoutError:
            raise ErrorCode("connection-timeout") from None
        except socket.gaierror as exc:
            raise ErrorCode("DNS-error", {"rcode": None, "info-code": None}) from exc
        except ssl.SSLError as exc:
            raise ErrorCode("TLS-protocol-error") from exc
        except OSError as exc:
            raise ErrorCode("connection-refused") from exc
        deadlines = None
        if scheme == "http" and self._on_trio:
            deadlines = self._deadlines
            if deadlines is None:
                deadlines = self._deadlines = _ReadDeadlines()
        return _Connection(stream, origin, deadlines)

    async def _exchange(
        self,
        conn: _Connection,
        head: _h1.RequestHead,
        first: bytes | None,
        body: Body,
        timeouts: _Timeouts,
        fresh: bool,
        chunked: bool,
        rest: memoryview | None = None,
    ) -> _h1.Head:
        """Send the request (its body as it streams, then its trailers if it is sent
        chunked: HTTP/1.1 has nowhere else for them) and read the response's head.
        ``rest``: the request (no body) was written at ``send`` but for these bytes."""

        def stale() -> bool:
            # a reused connection the server had closed: nothing came back, and the
            # request can be sent again on a fresh one (its body was empty, and its
            # method idempotent: the server may have received it and acted on it)
            return not fresh and replayable and conn.received == 0

        h1 = conn.h1
        replayable = head.method in _IDEMPOTENT
        conn.received = 0
        try:
            if rest is not None:
                if rest:
                    await conn.send(rest)
            elif first is None:  # no body: the head is the whole request, one write
                await conn.send(h1.send_request(head) + h1.send_end())
            else:
                replayable = False
                await conn.send(h1.send_request(head) + h1.send_data(first))
                while (chunk := await read_chunk(body.stream)) is not None:
                    await conn.send(h1.send_data(chunk))
                trailers = await body.finish()
                fields = trailers.entries() if chunked and trailers is not None else ()
                data = h1.send_end([(n.encode("latin-1"), v) for n, v in fields])
                if data:
                    await conn.send(data)
            event = await conn.next_event(timeouts.first_byte)
            if event is _h1.CLOSED:
                raise ErrorCode("HTTP-response-incomplete")
            assert isinstance(event, _h1.Head)  # (informational responses are skipped)
            return event
        except ErrorCode:
            if stale():
                raise _Stale from None
            raise
        except TimeoutError:  # before OSError, its base class
            raise ErrorCode("connection-read-timeout") from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            if stale():
                raise _Stale from exc
            raise ErrorCode("connection-terminated") from exc
        except _h1.RemoteProtocolError as exc:
            if stale():
                raise _Stale from exc
            if h1.eof:  # closed before a whole response head arrived
                raise ErrorCode("HTTP-response-incomplete") from exc
            raise ErrorCode("HTTP-protocol-error") from exc
        except _h1.BodyLengthError as exc:
            raise ErrorCode("HTTP-request-body-size") from exc
        except _h1.LocalProtocolError as exc:
            raise ErrorCode("internal-error", f"the request cannot be sent: {exc}") from exc

    def _take_arrived(self, pool: _OriginPool, conn: _Connection, timeouts: _Timeouts) -> Body:
        """The response's body, from what arrived with its head, without waiting. If
        that was the whole response (most small ones), the body is those bytes (no
        pipe, no task) and the connection goes back at once; else a pipe the pump fills
        with the rest (backpressure: it waits while the guest does not read)."""
        h1 = conn.h1
        arrived: list[bytes] = []
        end: _h1.End | None = None
        try:
            while (event := h1.next_event()) is not _h1.NEED_DATA:
                if isinstance(event, bytes):
                    arrived.append(event)
                else:
                    assert isinstance(event, _h1.End)
                    end = event
                    break
        except _h1.RemoteProtocolError as exc:
            # the body ends early (with what arrived): its read fails; the connection closes
            self._tasks.start_soon(self._close, pool, conn)
            failure = _body_failure(exc, h1.eof)
            return Body(_CutShort(b"".join(arrived), failure), None)
        else:
            if end is None:  # more to come
                pipe = Pipe()
                writer = PipeWriter(pipe)
                sender, receiver = make_trailers()
                pending = b"".join(arrived)
                self._tasks.start_soon(self._pump, pool, conn, writer, sender, timeouts, pending)
                return Body(PipeReader(pipe), receiver)
        trailers = None
        if end is not None and end.trailers:
            sender, trailers = make_trailers()
            sender.send(_fields(end.trailers))
            sender.close()
        if end is not None and h1.reusable():
            conn.received = 0
            if self._reuse(pool, conn):
                return Body(BytesInputStream(b"".join(arrived)), trailers)
        self._tasks.start_soon(self._close, pool, conn)  # closing waits: in a task
        return Body(BytesInputStream(b"".join(arrived)), trailers)

    async def _pump(
        self,
        pool: _OriginPool,
        conn: _Connection,
        writer: PipeWriter,
        trailers: TrailersSender,
        timeouts: _Timeouts,
        pending: bytes,
    ) -> None:
        """Move the rest of the response body into the guest's pipe, then its trailers;
        keep the connection if it can."""
        keep = False
        over = False  # the body ended, or its reader was told why not
        try:
            if pending:
                await write_all(writer, pending)
            while True:
                event = await conn.next_event(timeouts.between_bytes)
                if isinstance(event, bytes):
                    await write_all(writer, event)
                else:
                    assert isinstance(event, _h1.End)
                    if event.trailers:
                        trailers.send(_fields(event.trailers))
                    keep = conn.h1.reusable()
                    break
            over = True
        except StreamClosed:
            over = True  # the guest dropped the body
        except (TimeoutError, anyio.BrokenResourceError, OSError, _h1.RemoteProtocolError) as exc:
            # the connection broke or stalled: the guest's read fails once what came is read
            writer.fail(_body_failure(exc, conn.h1.eof))
            over = True
        finally:
            if not over:  # cut off (the client closed, cancelling this): never a clean end
                code = ErrorCode("connection-terminated")
                writer.fail(StreamFailed(f"the response body broke off: {code}", cause=code))
            trailers.close()  # none, unless they were sent above
            writer.close()
            await self._release(pool, conn, keep)


def _body_failure(exc: BaseException, eof: bool) -> StreamFailed:
    """Why a response body broke off, as its reader's failure (the guest's
    ``last-operation-failed``, whose error gives the ``error-code``)."""
    if isinstance(exc, TimeoutError):
        code = ErrorCode("connection-read-timeout")
    elif isinstance(exc, _h1.RemoteProtocolError):
        code = ErrorCode("HTTP-response-incomplete" if eof else "HTTP-protocol-error")
    else:
        code = ErrorCode("connection-terminated")
    return StreamFailed(f"the response body broke off: {code}", cause=code)


class _CutShort(BytesInputStream):
    """What arrived of a response body that broke off with its head: the read past it
    fails."""

    def __init__(self, data: bytes, failure: StreamFailed) -> None:
        super().__init__(data)
        self.failure = failure

    def read(self, n: int) -> bytes:
        try:
            return super().read(n)
        except StreamClosed:
            raise self.failure from None


# Headers the client manages itself (the guest's copies are dropped).
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade", "te"})


def _fields(headers: Sequence[tuple[bytes, bytes]]) -> Fields:
    """Received header or trailer fields for a guest (forbidden ones left out)."""
    # (names arrive in lower case)
    return Fields((name, v) for n, v in headers if (name := n.decode("latin-1")) not in FORBIDDEN)


_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
"""Methods a client may send again after a connection failure (RFC 9110, 9.2.2)."""


_ADDRESS_PATTERN_CHARS = frozenset("0123456789.*?[]!-")


def _is_address_pattern(pattern: str) -> bool:
    """Whether an allow-list pattern's host part reads as IPv4 addresses (``10.0.0.*``,
    ``192.168.?.1``): digits, dots and wildcards only, at least one digit. Such a
    pattern admits IPv4 literals only: its ``*`` would otherwise cross dots and admit
    the DNS name ``10.0.0.attacker.example``, which resolves wherever its owner likes."""
    host = pattern.rpartition(":")[0] if ":" in pattern else pattern
    return any(c.isdigit() for c in host) and set(host) <= _ADDRESS_PATTERN_CHARS


def _is_v4_literal(host: str) -> bool:
    """Whether ``host`` is an IPv4 address in dotted-decimal form (four numbers, no
    leading zeros: what ``ipaddress`` reads)."""
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _v6_literal_matches(pattern: str, host: str, port: int) -> bool:
    """Whether an allow-list pattern ``[v6-address]:port-pattern`` admits ``host``
    and ``port``: the address compared as one (its brackets are no ``fnmatch``
    character class), the port as a pattern."""
    literal, _, rest = pattern[1:].partition("]")
    if not rest.startswith(":"):
        return False
    try:
        if ipaddress.IPv6Address(literal) != ipaddress.IPv6Address(host):
            return False
    except ValueError:
        return False
    return fnmatch.fnmatchcase(str(port), rest[1:])


def _split_authority(authority: str, scheme: str) -> tuple[str, int]:
    """``host[:port]`` (``[v6]:port`` too) as (host, port), the scheme's port by default;
    port -1 if it is not a decimal number of ASCII digits."""
    default = _DEFAULT_PORTS.get(scheme, 80)
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port = authority.rpartition(":")
        if not sep:
            host, port = authority, ""
    if not port:
        return host, default
    # (ASCII digits only: str.isdigit takes '²', which int() refuses, and '٣', which it
    # reads as 3)
    return (host, int(port)) if port.isascii() and port.isdigit() else (host, -1)


def _timeouts(request: Request, default: float) -> _Timeouts:
    options = request.options

    def seconds(ns: int | None) -> float:
        return default if ns is None else max(ns / 1e9, 0.0)

    if options is None:
        return _Timeouts(default, default, default)
    return _Timeouts(
        seconds(options.connect_timeout),
        seconds(options.first_byte_timeout),
        seconds(options.between_bytes_timeout),
    )


__all__ = ["HttpClient"]
