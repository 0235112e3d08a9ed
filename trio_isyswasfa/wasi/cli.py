"""wasi:cli 0.2: arguments, environment, stdio, exit and terminals."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .._engine import Err, Ok, ResourceKind, own
from .._errors import IsyswasfaError
from ._context import WasiContext
from .io import (
    BytesInputStream,
    CallbackOutputStream,
    FdOutputStream,
    InputStream,
    OutputStream,
    ReceiveStreamInput,
    SendStreamOutput,
    ThreadedInputStream,
)

ENV = "wasi:cli/environment"


class ComponentExit(IsyswasfaError):
    """The guest called ``wasi:cli/exit.exit``; ``code`` is its exit status."""

    def __init__(self, code: int) -> None:
        super().__init__(f"component exited with status {code}")
        self.code = code


def _output_kind(sink: object) -> Callable[[Any], OutputStream] | None:
    """How a stdout/stderr setting becomes a stream; None for no kind we take."""
    if isinstance(sink, int):
        return FdOutputStream
    if sink is None or callable(sink):
        return CallbackOutputStream
    if hasattr(sink, "send_all") or hasattr(sink, "send"):
        return SendStreamOutput
    return None


def _input_kind(source: object) -> Callable[[Any], InputStream] | None:
    """How a stdin setting becomes a stream; None for no kind we take."""
    if isinstance(source, int):
        # a terminal may never answer: a read still waiting when the guest is gone is abandoned
        return lambda fd: ThreadedInputStream(lambda n: os.read(fd, n), abandon=True)
    if isinstance(source, bytes | bytearray | memoryview):
        return lambda data: BytesInputStream(bytes(data))
    if hasattr(source, "receive_some") or hasattr(source, "receive"):
        return ReceiveStreamInput
    return None


def check_stdio(stdin: object, stdout: object, stderr: object) -> None:
    """Raise TypeError for a stdio setting of no kind :class:`WasiConfig` takes."""
    if _input_kind(stdin) is None:
        raise TypeError(f"stdin must be bytes, a file descriptor or a stream: {stdin!r}")
    for name, sink in (("stdout", stdout), ("stderr", stderr)):
        if _output_kind(sink) is None:
            raise TypeError(
                f"{name} must be a callable, a file descriptor, a stream or None: {sink!r}"
            )


def _output(sink: Any) -> OutputStream:
    make = _output_kind(sink)
    assert make is not None  # WasiConfig checked it
    return make(sink)


def _stdin(source: Any) -> InputStream:
    make = _input_kind(source)
    assert make is not None  # WasiConfig checked it
    return make(source)


class Terminal:
    """A ``terminal-input`` / ``terminal-output``: the stream is a terminal (no methods)."""


class WasiCli:
    """wasi:cli for one instance."""

    def __init__(self, ctx: WasiContext) -> None:
        self.ctx = ctx
        cfg = ctx.config
        ctx.define(ENV, "get-environment", lambda: [(k, v) for k, v in cfg.env.items()])
        ctx.define(ENV, "get-arguments", lambda: list(cfg.args))
        ctx.define(ENV, "initial-cwd", lambda: None)
        ctx.define("wasi:cli/exit", "exit", self.exit)
        ctx.define("wasi:cli/exit", "exit-with-code", lambda code: self._exit(code))
        for name, sink in (("stdout", cfg.stdout), ("stderr", cfg.stderr)):
            out = _output(sink)
            if isinstance(out, SendStreamOutput):
                ctx.on_close(out.aclose)  # what the guest did not flush still goes out
            ctx.define(f"wasi:cli/{name}", f"get-{name}", self._stream(out))
        stdin = _stdin(cfg.stdin)
        ctx.define(
            "wasi:cli/stdin",
            "get-stdin",
            lambda: own(ctx.table.add(stdin), ResourceKind.INPUT_STREAM),
        )
        ctx.define_resource(
            "wasi:cli/terminal-input", "terminal-input", ResourceKind.TERMINAL_INPUT
        )
        ctx.define_resource(
            "wasi:cli/terminal-output", "terminal-output", ResourceKind.TERMINAL_OUTPUT
        )
        for name, source, kind in (
            ("stdin", cfg.stdin, ResourceKind.TERMINAL_INPUT),
            ("stdout", cfg.stdout, ResourceKind.TERMINAL_OUTPUT),
            ("stderr", cfg.stderr, ResourceKind.TERMINAL_OUTPUT),
        ):
            ctx.define(
                f"wasi:cli/terminal-{name}", f"get-terminal-{name}", self._terminal(source, kind)
            )

    def _terminal(self, source: object, kind: int) -> Any:
        """``get-terminal-*``: a terminal handle if that stream is a host terminal."""
        is_tty = isinstance(source, int) and os.isatty(source)
        table = self.ctx.table
        return lambda: own(table.add(Terminal()), kind) if is_tty else None

    def _stream(self, stream: OutputStream) -> Any:
        # every get-stdout returns a new handle to the same stream
        return lambda: own(self.ctx.table.add(stream), ResourceKind.OUTPUT_STREAM)

    def exit(self, status: Any) -> None:
        self._exit(0 if isinstance(status, Ok) else 1 if isinstance(status, Err) else 0)

    @staticmethod
    def _exit(code: int) -> None:
        raise ComponentExit(code)
