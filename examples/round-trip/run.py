"""Build (cached) and run the round-trip example: host -> guest -> host -> guest -> host.

python examples/round-trip/run.py [--rust] [MESSAGE]

``--rust`` runs the Rust guest (guest-rust/) instead of the Python one (guest/).
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

import trio_isyswasfa
from trio_isyswasfa.testing import build_python_guest, build_rust_guest

HERE = Path(__file__).resolve().parent


async def foo(s: str) -> str:
    """The host's implementation of the imported ``baz.foo``: sleeps, then wraps."""
    await trio.sleep(0.01)
    return f"{s} - entered host - exited host"


async def main(message: str, rust: bool) -> None:
    if rust:
        wasm = build_rust_guest(HERE / "wit", "round-trip", HERE / "guest-rust")
    else:
        wasm = build_python_guest(HERE / "wit", "round-trip", "app", [HERE / "guest"])
    async with trio_isyswasfa.open_instance(
        wasm, imports={"example:round-trip/baz": {"foo": foo}}
    ) as instance:
        print(await instance.call("example:round-trip/baz", "foo", message))


if __name__ == "__main__":
    args = sys.argv[1:]
    rust = "--rust" in args
    words = [a for a in args if a != "--rust"]
    trio.run(main, words[0] if words else "hello, world!", rust)
