"""Per-instance WASI state and the configuration embedders pass in."""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio

from .._engine import Blocking, ResourceDef, own
from .._resources import HandleTable

if TYPE_CHECKING:
    import trio

    from .._scheduler import Scheduler
    from ..http.types import OutgoingHandler
    from .filesystem import Preopen
    from .sockets import NetPattern

HostFunc = Callable[..., Any]


StdoutSink: TypeAlias = (
    "Callable[[bytes], object] | int | trio.abc.SendStream | anyio.abc.ByteSendStream | None"
)
StdinSource: TypeAlias = "bytes | int | trio.abc.ReceiveStream | anyio.abc.ByteReceiveStream"


@dataclass
class WasiConfig:
    """What a component sees of the world. Nothing from the host leaks in by default.

    Attributes:
      args: ``wasi:cli/environment.get-arguments`` (the program name first, if any).
      env: environment variables; the host's are *not* inherited.
      stdout, stderr: called with each chunk the guest writes; a host file
        descriptor to write to (the CLI passes 1 and 2); or a trio ``SendStream`` /
        anyio ``ByteSendStream``, sent to while the guest waits on its flushes (what
        it leaves unflushed is sent when the instance ends). ``None`` discards it.
        The defaults write to this process's stdout and stderr.
      stdin: bytes the guest reads from standard input (then end of file); a host
        file descriptor to read it from (in a worker thread; the CLI passes 0); or a
        trio ``ReceiveStream`` / anyio ``ByteReceiveStream``, received from while the
        guest waits to read.
      wall_clock: returns ``wasi:clocks/wall-clock`` time in nanoseconds since the
        epoch; tests may freeze or offset it. The monotonic clock always follows the
        event loop's clock (``trio.current_time()``, so ``MockClock`` drives it).
      preopens: host directories the guest may use
        (:class:`~trio_isyswasfa.wasi.filesystem.Preopen`); none by default.
      allow_net: addresses the guest may bind, connect or send to with wasi:sockets,
        as ``HOST:PORT`` patterns (``"127.0.0.1:*"``, ``"[::1]:8080"``,
        ``"10.0.0.0/8:443"``, ``"localhost:8000-8999"``, ``"*:*"``) or
        :class:`~trio_isyswasfa.wasi.sockets.NetPattern`; empty (the default) denies
        all networking, name lookups included (``access-denied``).
      http_outgoing: sends the requests the guest passes to its imported
        ``wasi:http/handler`` (see :mod:`trio_isyswasfa.http`); ``None`` refuses them
        with ``error-code::HTTP-request-denied``.
    """

    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    stdout: StdoutSink = field(default_factory=lambda: _writer(sys.stdout))
    stderr: StdoutSink = field(default_factory=lambda: _writer(sys.stderr))
    stdin: StdinSource = b""
    wall_clock: Callable[[], int] = time.time_ns
    preopens: Sequence[Preopen] = ()
    allow_net: Sequence[str | NetPattern] = ()
    http_outgoing: OutgoingHandler | None = None

    def __post_init__(self) -> None:
        from .cli import check_stdio
        from .sockets import parse_allow_net

        self.allow_net = parse_allow_net(self.allow_net)  # a bad pattern fails here
        check_stdio(self.stdin, self.stdout, self.stderr)


def _writer(stream: Any) -> Callable[[bytes], object]:
    def write(data: bytes) -> None:
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            buffer.write(data)
            buffer.flush()
        else:
            stream.write(data.decode("utf-8", "replace"))
            stream.flush()

    return write


CLOSE_GRACE = 5.0  # seconds an ending instance's unflushed output may take to go out


class WasiContext:
    """Shared state of one instance's WASI: its handle table and configuration."""

    def __init__(self, config: WasiConfig, *, max_handles: int | None = None) -> None:
        self.config = config
        self.table = HandleTable(max_handles)
        self.functions: dict[tuple[str, str], HostFunc | Blocking] = {}
        self.resources: dict[tuple[str, str], ResourceDef] = {}
        self.async_functions: dict[
            tuple[str, str], tuple[Callable[..., Awaitable[Any]], Callable[[Any], Any]]
        ] = {}
        self._on_close: list[Callable[[], Awaitable[object]]] = []
        # the instance's scheduler, once it has one: blocking polls share its waits
        self.scheduler: Scheduler | None = None
        self.own: Callable[[int, int], Any] = own
        """An owned handle of host resource ``rep`` (of ResourceKind ``kind``) for the
        guest, in its engine's shape: ``own(rep, kind)``. The host sets the loaded
        component's (on our own engine the rep itself: a wasmtime-py handle object
        costs a frame to make, one to read back and a finaliser)."""

    def define(self, interface: str, name: str, fn: HostFunc | Blocking) -> None:
        """Register ``fn`` for WIT function ``name`` of ``interface`` (no version);
        a :class:`Blocking` one suspends the guest while it waits."""
        self.functions[(interface, name)] = fn

    def define_async(
        self,
        interface: str,
        name: str,
        fn: Callable[..., Awaitable[Any]],
        finish: Callable[[Any], Any] = lambda value: value,
    ) -> None:
        """Register async WIT function ``name`` (lowered to ``-isyswasfa-start``/``-result``).

        ``fn`` runs as a host task; ``finish`` turns its value into what ``-result``
        returns, on the loop's thread when the guest takes it (so a value that is never
        taken, because the guest cancelled, never becomes a handle).
        """
        self.async_functions[(interface, name)] = (fn, finish)

    def define_resource(
        self, interface: str, name: str, kind: int, on_drop: Callable[[int], object] | None = None
    ) -> None:
        """Register resource ``name`` of ``interface``; a drop calls ``on_drop`` (default:
        forget the object)."""
        self.resources[(interface, name)] = ResourceDef(kind, on_drop or self.table.remove)

    def close_handle(self, rep: int) -> None:
        """A guest dropped a handle to something that holds a resource: close it."""
        close = getattr(self.table.remove(rep), "close", None)
        if close is not None:
            close()

    def on_close(self, fn: Callable[[], Awaitable[object]]) -> None:
        """Await ``fn`` when the instance ends, before :meth:`close`."""
        self._on_close.append(fn)

    async def aclose(self) -> None:
        """Finish what must be awaited when the instance ends (output the guest wrote
        to a stream and did not flush), for CLOSE_GRACE seconds at most, even when the
        instance ends by cancellation."""
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + CLOSE_GRACE):
            for fn in self._on_close:
                await fn()

    def close(self) -> None:
        """Release what the guest left open (streams, descriptors) when the instance ends."""
        for obj in self.table.clear():
            close = getattr(obj, "close", None)
            if close is not None:
                close()
        # the host functions close over this context (and the instance): dropped, the
        # instance is freed when its last reference goes, not by the garbage collector
        self.functions.clear()
        self.resources.clear()
        self.async_functions.clear()
        self._on_close.clear()
        self.scheduler = None
