"""wasi:random 0.2: secure bytes from the OS, insecure ones from a per-instance PRNG."""

from __future__ import annotations

import os
import random as _random

from .._errors import GuestProtocolError
from ._context import WasiContext

RANDOM = "wasi:random/random"
INSECURE = "wasi:random/insecure"
INSECURE_SEED = "wasi:random/insecure-seed"
MAX_BYTES = 1 << 20


def _check(n: int) -> int:
    if n > MAX_BYTES:
        raise GuestProtocolError(f"asked for {n} random bytes at once (limit {MAX_BYTES})")
    return n


class WasiRandom:
    """wasi:random for one instance."""

    def __init__(self, ctx: WasiContext) -> None:
        prng = _random.Random(os.urandom(16))
        seed = (prng.getrandbits(64), prng.getrandbits(64))
        ctx.define(RANDOM, "get-random-bytes", lambda n: os.urandom(_check(n)))
        ctx.define(RANDOM, "get-random-u64", lambda: int.from_bytes(os.urandom(8), "little"))
        ctx.define(INSECURE, "get-insecure-random-bytes", lambda n: prng.randbytes(_check(n)))
        ctx.define(INSECURE, "get-insecure-random-u64", lambda: prng.getrandbits(64))
        ctx.define(INSECURE_SEED, "insecure-seed", lambda: seed)
