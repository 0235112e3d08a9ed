"""Call latency and timer fan-out of the trio host with a Python guest, and the same
calls into a Rust guest side by side (when the Rust toolchain is installed).

    python bench/bench_calls.py [--engines]

Prints each figure with its goal, and as a ratio to a baseline measured in the same
run: a plain synchronous export call (the engine's own floor for one call into the
guest). Then the same calls on both engines (``load_component(engine=...)``: wasmtime-py's
component API and our own), round robin in one run at N and 16N, with the host's share
of each (wall time less the time in guest code): goals ≤ 3 µs for a sync export and
≤ 100 µs for one pending round trip. Not run in CI.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

import trio_isyswasfa
from trio_isyswasfa.testing import RustToolchainMissing, build_python_guest, build_rust_guest

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "guests" / "cases"
IFACE = "test:cases/cases"
RUST_CASES = ROOT / "tests" / "guests" / "rust-cases"
RUST_IFACE = "test:rust-cases/cases"


async def echo_later(s: str, ms: int) -> str:
    await trio.sleep(ms / 1000)
    return s


IMPORTS = {
    "test:cases/host": {
        "note": lambda s: None,
        "forever": trio.sleep_forever,
        "echo-later": echo_later,
        "fallible": echo_later,
    }
}


RUST_IMPORTS = {
    "test:rust-cases/host": {
        "note": lambda s: None,
        "echo-later": echo_later,
        "forever": trio.sleep_forever,
    }
}


async def call_latencies(
    component: trio_isyswasfa.Component, imports: object, iface: str, n: int
) -> dict[str, tuple[float, float]]:
    """Sync export, async export completing at once, one pending round trip (µs)."""
    async with trio_isyswasfa.open_instance(component, imports=imports) as inst:  # type: ignore[arg-type]
        for _ in range(200):  # warm up
            await inst.call(iface, "immediate", "x")
            await inst.call(iface, "echo-via-host", "x", 0)
        return {
            "sync": await per_call(inst, lambda: inst.call(iface, "add", 1, 2), 2 * n),
            "immediate": await per_call(inst, lambda: inst.call(iface, "immediate", "x"), 2 * n),
            "pending": await per_call(inst, lambda: inst.call(iface, "echo-via-host", "x", 0), n),
        }


async def per_call(
    inst: trio_isyswasfa.Instance, fn: Callable[[], Awaitable[object]], n: int
) -> tuple[float, float]:
    """Median of 5 runs of ``n`` sequential calls, and the mean guest time of a call,
    both in microseconds."""
    runs = []
    guest_before = inst.statistics().guest_seconds
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            await fn()
        runs.append((time.perf_counter() - start) / n * 1e6)
    guest = (inst.statistics().guest_seconds - guest_before) / (5 * n) * 1e6
    return statistics.median(runs), guest


def report(label: str, value: str, guest: str, note: str) -> None:
    print(f"{label:58} {value:>11} {guest:>11}  {note}")


async def main() -> None:
    wasm = build_python_guest(CASES / "wit", "cases-guest", "app", [CASES / "src"])
    component = trio_isyswasfa.load_component(wasm)
    async with trio_isyswasfa.open_instance(component, imports=IMPORTS) as inst:
        for _ in range(200):  # warm up
            await inst.call(IFACE, "immediate", "x")
            await inst.call(IFACE, "echo-via-host", "x", 0)
        base, base_g = await per_call(inst, lambda: inst.call(IFACE, "add", 1, 2), 2000)
        immediate, immediate_g = await per_call(
            inst, lambda: inst.call(IFACE, "immediate", "x"), 2000
        )
        pending, pending_g = await per_call(
            inst, lambda: inst.call(IFACE, "echo-via-host", "x", 0), 1000
        )

    n = 10_000
    async with trio_isyswasfa.open_instance(component, imports=IMPORTS) as inst:
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(inst.call, IFACE, "sleep-ms", 100)
        fanout = time.perf_counter() - start
        stats = inst.statistics()
        fanout_g = stats.guest_seconds
    try:
        rust_wasm = build_rust_guest(RUST_CASES / "wit", "rust-cases", RUST_CASES)
    except RustToolchainMissing as exc:
        rust = None
        print(f"(no Rust guest: {exc})")
    else:
        rust_component = trio_isyswasfa.load_component(rust_wasm)
        rust = await call_latencies(rust_component, RUST_IMPORTS, RUST_IFACE, 1000)
    timers = {}
    for export in ("gather-pollable-sleeps", "gather-sleeps"):
        async with trio_isyswasfa.open_instance(component, imports=IMPORTS) as inst:
            start = time.perf_counter()
            await inst.call(IFACE, export, n, 100)
            timers[export] = (time.perf_counter() - start, inst.statistics().guest_seconds)

    print("'in guest' is the time spent running guest code (Instance.statistics().guest_seconds):")
    print("no host can make that part faster.")
    report("", "wall", "in guest", "")
    report("baseline: sync export call", f"{base:.1f} µs", f"{base_g:.1f} µs", "")
    report(
        "async export, completes at once",
        f"{immediate:.1f} µs",
        f"{immediate_g:.1f} µs",
        f"{immediate / base:.2f}x baseline; goal ≤ 50 µs",
    )
    report(
        "async export, one pending round trip",
        f"{pending:.1f} µs",
        f"{pending_g:.1f} µs",
        f"{pending / base:.2f}x baseline; goal ≤ 150 µs",
    )
    report(
        f"{n} export calls, each awaiting a 100 ms pollable",
        f"{fanout:.3f} s",
        f"{fanout_g:.3f} s",
        f"{fanout / 0.1:.1f}x the timer; {stats.poll_calls} poll calls",
    )
    if rust is not None:
        print("The same calls into the Rust guest (tests/guests/rust-cases), same run:")
        for key, label, goal in (
            ("sync", "Rust guest: sync export call", ""),
            ("immediate", "Rust guest: async export, completes at once", "goal ≤ 20 µs"),
            ("pending", "Rust guest: async export, one pending round trip", "goal ≤ 150 µs"),
        ):
            wall, guest = rust[key]
            report(
                label,
                f"{wall:.1f} µs",
                f"{guest:.1f} µs",
                f"{wall / base:.2f}x Python's baseline; {goal}".rstrip("; "),
            )
    own, own_g = timers["gather-pollable-sleeps"]
    report(
        f"{n} guest tasks, own pollables due in 100 ms",
        f"{own:.3f} s",
        f"{own_g:.3f} s",
        f"{own / 0.1:.1f}x the timer; goal ≤ 0.5 s",
    )
    shared, shared_g = timers["gather-sleeps"]
    report(
        f"{n} guest tasks, each in asyncio.sleep(0.1)",
        f"{shared:.3f} s",
        f"{shared_g:.3f} s",
        f"{shared / 0.1:.1f}x the timer; goal ≤ 0.5 s (one pollable for the guest loop)",
    )


async def engine_rows(wasm: Path, n: int) -> None:
    """Both engines, round robin, best of three rounds: wall and host share (µs)."""
    components = {e: trio_isyswasfa.load_component(wasm, engine=e) for e in ("wasmtime", "own")}
    best: dict[str, dict[str, tuple[float, float]]] = {}
    for _ in range(3):
        for engine, component in components.items():
            got = await call_latencies(component, IMPORTS, IFACE, n)
            mine = best.setdefault(engine, got)
            for key, (wall, guest) in got.items():
                if wall - guest < mine[key][0] - mine[key][1]:
                    mine[key] = (wall, guest)
    print(f"-- both engines, N = {n} (µs per call; host share = wall less guest code)")
    goals = {"sync": "goal ≤ 3", "immediate": "", "pending": "goal ≤ 100"}
    for key, label in (
        ("sync", "sync export call"),
        ("immediate", "async export, completes at once"),
        ("pending", "async export, one pending round trip"),
    ):
        (sw, sg), (ow, og) = best["wasmtime"][key], best["own"][key]
        print(
            f"{label:40} stock {sw:8.1f} (host {sw - sg:7.1f})   own {ow:8.1f} "
            f"(host {ow - og:7.1f})   host share {(ow - og) / (sw - sg):.2f}x stock  {goals[key]}"
        )


if __name__ == "__main__":
    import sys

    if "--engines" in sys.argv:
        cases = build_python_guest(CASES / "wit", "cases-guest", "app", [CASES / "src"])
        for size in (100, 1600):
            trio.run(engine_rows, cases, size)
    else:
        trio.run(main)
