"""Which engine runs a component: the one factory the host builds instances through.

Two engines sit behind the same seam:

* ``"own"`` (the default): our own canonical ABI over wasmtime's core API (``engine/``);
* ``"wasmtime"``: wasmtime-py's component API, through ``_engine`` (the reference).

Both take host functions in the same shapes (plain functions, :class:`Blocking`
generators, :class:`ResourceDef` resources) and give values in the same shapes, so
``_host``, the scheduler, WASI and HTTP do not know which one runs. An engine is chosen
per component when it is loaded (``load_component(..., engine=...)``); without a choice,
the environment variable ``TRIO_ISYSWASFA_ENGINE`` names it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from . import _digests, _engine
from ._engine import ImportedItem, Resolved
from ._errors import HostProtocolError, LinkError, LoadError
from ._limits import Limits
from ._turns import Turns

ENGINES = ("wasmtime", "own")
"""The engines a component can run on."""

ENGINE_VARIABLE = "TRIO_ISYSWASFA_ENGINE"


def default_engine() -> str:
    """The engine used when a load names none: ``$TRIO_ISYSWASFA_ENGINE``, else
    ``"own"``.

    Raises:
      HostProtocolError: the variable names no engine.
    """
    return check_engine(os.environ.get(ENGINE_VARIABLE) or "own")


def check_engine(name: str) -> str:
    """``name`` if it names an engine.

    Raises:
      HostProtocolError: it does not.
    """
    if name not in ENGINES:
        raise HostProtocolError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
    return name


class EngineFunc(Protocol):
    """An exported function of an engine instance."""

    async def call(self, *args: Any) -> Any:
        """Run it; the event loop runs on while the guest waits or computes."""


class EngineInstance(Protocol):
    """What the host uses of an instance, whichever engine made it."""

    faults: _engine.FaultSink
    turns: Turns
    before_wait: Callable[[], object] | None
    """Called once, then cleared, when an export call is about to wait for the first
    time (for the store, for the guest's wait in a host function, or at the end of a
    time slice), in the caller's task and before the call enters any cancel scope of
    its own: the caller may enter a cancel scope by hand there, which then holds the
    call's waits, and which only a call that waits pays for. A call that does not
    wait leaves it set (the caller clears it). An isyswasfa export's call, which
    waits for the guest's task between its two core calls, calls it there too
    (:meth:`waits_now`): set, it is the caller's alone only while the caller runs, and
    the engine's calls from other tasks (the scheduler's polls) would call it there.
    """

    def waits_now(self) -> None:
        """Call :attr:`before_wait` once, then clear it (an export call is about to
        wait)."""

    @property
    def guest_seconds(self) -> float:
        """Time spent running guest code so far."""

    @property
    def blocked(self) -> bool:
        """Whether a call is suspended in a blocking host function."""

    def func(self, interface: str, name: str) -> Any:
        """A callable export (:class:`EngineFunc`)."""

    def export_names(self) -> dict[str, dict[str, Any]]:
        """Exported functions by interface (``""`` for the root)."""

    def handle_rep(self, handle: Any) -> int:
        """The rep of a host resource handle the guest passed or returned."""

    def own_handle(self, rep: int, kind: int) -> Any:
        """An owned handle of host resource ``rep`` (of ``kind``) to give the guest."""

    def close(self) -> None:
        """Done with the instance."""


class EngineComponent:
    """A loaded component for one engine: its imports and exports, and instances."""

    engine: str
    interfaces: list[str]
    """Every imported name (interfaces and root functions), sorted."""
    exports: dict[str, dict[str, Any]]
    """Exported functions by interface (``""`` for the root), with their types."""

    @staticmethod
    def own_handle(rep: int, kind: int) -> Any:
        """An owned handle of host resource ``rep`` (of ``kind``) to give the guest, in
        this engine's shape (as its instances' :meth:`EngineInstance.own_handle`): known
        before any instance exists, for host interfaces defined ahead of instantiation."""
        raise NotImplementedError

    def instantiate(
        self, resolve_item: Callable[[ImportedItem], Resolved], limits: Limits | None
    ) -> EngineInstance:
        """A new instance whose imports ``resolve_item`` gives (it raises
        :class:`~trio_isyswasfa.LinkError` for what the host does not provide)."""
        raise NotImplementedError


class StockComponent(EngineComponent):
    """A component on wasmtime-py's component API."""

    engine = "wasmtime"
    own_handle = staticmethod(_engine.own)  # a wasmtime-py handle, made when lowered

    def __init__(self, raw: Any) -> None:
        """Wrap a compiled ``wasmtime.component.Component``."""
        self.raw = raw
        self.plan = _engine.LinkPlan(raw)
        self.interfaces = self.plan.interfaces
        self.exports = _engine.component_exports(raw)

    def instantiate(
        self, resolve_item: Callable[[ImportedItem], Resolved], limits: Limits | None
    ) -> EngineInstance:
        return _engine.EngineInstance(self.plan, self.exports, resolve_item, limits)


class OwnComponent(EngineComponent):
    """A component on our own engine: read by our reader, its core modules compiled
    once (cached on disk) for all its instances."""

    engine = "own"

    @staticmethod
    def own_handle(rep: int, kind: int) -> int:
        """The rep itself: our lowering knows the resource type from the function's."""
        return rep

    def __init__(self, data: bytes, *, use_cache: bool, digest: str | None = None) -> None:
        """Read ``data`` and compile its core modules (``digest``: the SHA-256 of
        ``data`` in hex, if known, which finds the compiled modules without hashing
        them, see :mod:`.engine._load`)."""
        from .engine._component import exported_funcs
        from .engine._instance import instance_plan
        from .engine._load import load_modules
        from .engine._reader import read_component

        if not data.startswith(b"\0asm"):
            raise LoadError("not a WebAssembly binary")
        if data[4:8] == b"\x01\x00\x00\x00":
            raise LoadError("a core WebAssembly module, not a component")
        self.data = data  # the definition keeps views into it
        try:
            self.definition = read_component(data)
        except LoadError as exc:  # worded as the stock engine words what it cannot load
            error = LoadError(f"cannot compile component: {exc}")
            error.offset = exc.offset
            raise error from exc
        if self.definition.uses_async:
            used = sorted(self.definition.builtins)
            raise LoadError(_engine.async_problem(f"`{used[0]}`" if used else None))
        try:
            self.compiled = load_modules(self.definition, use_cache=use_cache, digest=digest)
        except LoadError as exc:  # name a missing proposal as the stock engine does
            if exc.__cause__ is None:
                raise
            raise LoadError(_engine.compile_problem(str(exc.__cause__))) from exc.__cause__
        self.use_cache = use_cache
        # the plan instances replay, made now rather than on a first request's path; a
        # component whose core instances do not fit together (a module importing what
        # its instantiation does not give) could never be instantiated: refused here,
        # as the stock engine refuses it
        try:
            instance_plan(self.definition, compiled=self.compiled, use_cache=use_cache)
        except LinkError as exc:
            raise LoadError(f"cannot compile component: {exc}") from exc
        self.interfaces = sorted(self.definition.imports)
        self.exports = dict(exported_funcs(self.definition))

    def instantiate(
        self, resolve_item: Callable[[ImportedItem], Resolved], limits: Limits | None
    ) -> EngineInstance:
        from .engine._component import OwnEngineInstance

        return OwnEngineInstance(
            self.definition,
            resolve_item,
            limits=limits,
            compiled=self.compiled,
            use_cache=self.use_cache,
        )


def load(data: bytes, *, engine: str | None = None, use_cache: bool = True) -> EngineComponent:
    """Load component bytes for ``engine`` (default: :func:`default_engine`).

    Raises:
      LoadError: the bytes are no component the engine can load.
      HostProtocolError: ``engine`` names no engine.
    """
    name = default_engine() if engine is None else check_engine(engine)
    if name == "own":
        return OwnComponent(data, use_cache=use_cache)
    return StockComponent(_engine.compile_component(data, use_cache=use_cache))


def load_file(path: Path, *, engine: str | None = None, use_cache: bool = True) -> EngineComponent:
    """Load a component file for ``engine``, as :func:`load` its bytes.

    With the cache, a file loaded before is not hashed again: its digest, remembered by
    what ``stat`` says of it (see :mod:`._digests`), finds its compiled copy (on the
    wasmtime engine, without reading the file at all; ours reads it, and finds its
    compiled core modules through the component's digest). A file that is no regular
    one (a FIFO, a pipe) is read whole each time, so that a signal stops the wait for
    it (see :func:`._digests.read_stream`).

    Raises:
      OSError: the file cannot be read.
      LoadError: it is no component the engine can load.
      HostProtocolError: ``engine`` names no engine.
    """
    name = default_engine() if engine is None else check_engine(engine)
    if not _digests.is_regular(path):
        # a FIFO or a pipe: read once, so its ``stat`` says nothing of what it gives
        return load(_digests.read_stream(path), engine=name, use_cache=use_cache)
    if not use_cache:
        return load(path.read_bytes(), engine=name, use_cache=use_cache)
    index = _engine.cache_dir() / "digests"
    if name == "own":
        known = _digests.read_known(index, path)
        data, own = known if known is not None else _digests.read_and_digest(index, path)
        return OwnComponent(data, use_cache=True, digest=own)
    digest = _digests.known_digest(index, path)
    raw = _engine.load_compiled(digest) if digest is not None else None
    if raw is None:
        data, stock = _digests.read_and_digest(index, path)
        raw = _engine.compile_component(data, digest=stock)
    return StockComponent(raw)


__all__ = [
    "ENGINES",
    "ENGINE_VARIABLE",
    "EngineComponent",
    "EngineFunc",
    "EngineInstance",
    "OwnComponent",
    "StockComponent",
    "check_engine",
    "default_engine",
    "load",
    "load_file",
]
