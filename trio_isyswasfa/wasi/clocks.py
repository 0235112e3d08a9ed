"""wasi:clocks 0.2: the monotonic clock follows the event loop's clock.

Under trio that is ``trio.current_time()``, so ``trio.testing.MockClock`` (and
``autojump_clock``) drives guest time too.
"""

from __future__ import annotations

from typing import Any

import anyio

from .._engine import record
from ._context import WasiContext
from .io import DeadlinePollable, WasiIo

MONOTONIC = "wasi:clocks/monotonic-clock"
WALL = "wasi:clocks/wall-clock"
NS = 1_000_000_000


def _datetime(seconds: int, nanoseconds: int) -> Any:
    return record(seconds=seconds, nanoseconds=nanoseconds)


class WasiClocks:
    """wasi:clocks for one instance."""

    def __init__(self, ctx: WasiContext, io: WasiIo) -> None:
        self.io = io
        self.wall_clock = ctx.config.wall_clock
        ctx.define(MONOTONIC, "now", self.now)
        ctx.define(MONOTONIC, "resolution", lambda: 1)
        ctx.define(MONOTONIC, "subscribe-instant", self.subscribe_instant)
        ctx.define(MONOTONIC, "subscribe-duration", self.subscribe_duration)
        ctx.define(WALL, "now", self.wall_now)
        ctx.define(WALL, "resolution", lambda: _datetime(0, 1))

    @staticmethod
    def now() -> int:
        return int(anyio.current_time() * NS)

    def subscribe_instant(self, when: int) -> Any:
        return self.io.new_pollable(DeadlinePollable(when / NS))

    def subscribe_duration(self, duration: int) -> Any:
        return self.io.new_pollable(DeadlinePollable(anyio.current_time() + duration / NS))

    def wall_now(self) -> Any:
        ns = self.wall_clock()
        return _datetime(ns // NS, ns % NS)
