"""Per-instance WASI state and the configuration embedders pass in."""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._engine import Blocking, ResourceDef
from .._resources import HandleTable

if TYPE_CHECKING:
    from ..http.types import OutgoingHandler
    from .filesystem import Preopen
    from .sockets import NetPattern

HostFunc = Callable[..., Any]


@dataclass
class WasiConfig:
    """What a component sees of the world. Nothing from the host leaks in by default.

    Attributes:
      args: ``wasi:cli/environment.get-arguments`` (the program name first, if any).
      env: environment variables; the host's are *not* inherited.
      stdout, stderr: called with each chunk the guest writes, or a host file
        descriptor to write to (in a worker thread while the guest awaits; the CLI
        passes 1 and 2); ``None`` discards it. The defaults write to this process's
        stdout and stderr.
      stdin: bytes the guest reads from standard input (then end of file), or a host
        file descriptor to read it from (in a worker thread; the CLI passes 0).
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
    stdout: Callable[[bytes], object] | int | None = field(
        default_factory=lambda: _writer(sys.stdout)
    )
    stderr: Callable[[bytes], object] | int | None = field(
        default_factory=lambda: _writer(sys.stderr)
    )
    stdin: bytes | int = b""
    wall_clock: Callable[[], int] = time.time_ns
    preopens: Sequence[Preopen] = ()
    allow_net: Sequence[str | NetPattern] = ()
    http_outgoing: OutgoingHandler | None = None

    def __post_init__(self) -> None:
        from .sockets import parse_allow_net

        self.allow_net = parse_allow_net(self.allow_net)  # a bad pattern fails here


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

    def close(self) -> None:
        """Release what the guest left open (streams, descriptors) when the instance ends."""
        for obj in self.table.clear():
            close = getattr(obj, "close", None)
            if close is not None:
                close()
