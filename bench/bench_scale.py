"""How the host's cost per concurrent call, guest task and pollable grows with their number.

    python -m bench.bench_scale                      # N = 1k, 4k, 16k (a few minutes)
    python -m bench.bench_scale --sizes 1000,4000,16000,64000,100000

(from the repository's root, so that its own ``trio_isyswasfa`` is the one measured)

Each row runs N things at once in one instance of the test-cases Python guest, all
waiting 100 ms; each (row, N) runs in a fresh process so that its peak RSS is its own.
Columns: wall time; time in guest code (``Instance.statistics().guest_seconds``: no
host can make that part faster); host µs per item, ``(wall - 100 ms - guest) / N``;
CPU µs per item (the process's CPU time, host and guest, over N: on a shared machine
wall times swell with other processes' load, CPU time does not); peak RSS growth per
item (host and guest memory); and the ratios of each N's host µs and CPU µs per item
to the smallest N's, measured in the same run (flat is 1.0; the goal is at most 1.5).
Not run in CI.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

import trio_isyswasfa
from trio_isyswasfa.testing import build_python_guest, build_rust_guest

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "guests" / "cases"
IFACE = "test:cases/cases"
RUST_CASES = ROOT / "tests" / "guests" / "rust-cases"
RUST_IFACE = "test:rust-cases/cases"
WASI = ROOT / "tests" / "guests" / "wasi"
PROBE = "test:wasi/probe"
WAIT_MS = 100


async def echo_later(s: str, ms: int) -> str:
    await trio.sleep(ms / 1000)
    return s


IMPORTS = {
    "test:cases/host": {
        "note": lambda s: None,
        "forever": trio.sleep_forever,
        "echo-later": echo_later,
        "fallible": echo_later,
    },
    "test:rust-cases/host": {
        "note": lambda s: None,
        "forever": trio.sleep_forever,
        "echo-later": echo_later,
    },
}


async def _calls(inst: trio_isyswasfa.Instance, n: int, ms: int = WAIT_MS) -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(inst.call, IFACE, "sleep-ms", ms)


async def _pollables(inst: trio_isyswasfa.Instance, n: int, ms: int = WAIT_MS) -> None:
    await inst.call(IFACE, "gather-pollable-sleeps", n, ms)


async def _imports(inst: trio_isyswasfa.Instance, n: int, ms: int = WAIT_MS) -> None:
    await inst.call(IFACE, "gather-host-calls", n, ms)


async def _rust_sleeps(inst: trio_isyswasfa.Instance, n: int, ms: int = WAIT_MS) -> None:
    await inst.call(RUST_IFACE, "gather-sleeps", n, ms)


POLL_ROUNDS = 10


async def _polls(inst: trio_isyswasfa.Instance, n: int, ms: int = WAIT_MS) -> None:
    # a synchronous guest blocks in poll.poll on n quiet pipes beside a clock, 10 times
    code = (
        f"pipes = [pipe.make_pipe() for _ in range({n})]\n"
        "subs = [rx.subscribe() for tx, rx in pipes]\n"
        f"for _ in range({POLL_ROUNDS}):\n"
        f"    with monotonic_clock.subscribe_duration({ms // POLL_ROUNDS * 10**6}) as c:\n"
        "        result = poll.poll([c, *subs])\n"
    )
    outcome = await inst.call(PROBE, "exec", code)
    assert outcome == trio_isyswasfa.Ok("[0]"), outcome


ROWS = {
    "calls": ("concurrent export calls, each awaiting a pollable", _calls),
    "pollables": ("guest tasks, each awaiting its own pollable", _pollables),
    "imports": ("guest tasks, each awaiting a host import", _imports),
    "rust-sleeps": ("Rust guest: spawned tasks, each sleeping on its own pollable", _rust_sleeps),
    "polls": (f"blocking poll on N pipes and a clock, {POLL_ROUNDS} times", _polls),
}
RUST_ROWS = {"rust-sleeps"}
WASI_ROWS = {"polls"}
NO_HEAP_ROWS = {"polls"}  # its waits are not "host tasks running"


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


async def measure(row: str, n: int, trace: bool = False) -> dict[str, float]:
    """Run one row at size ``n`` in this process; its figures. With ``trace``, only
    the peak of the host's Python heap during the run (tracemalloc slows it down)."""
    component = trio_isyswasfa.load_component(_component_of(row))
    run = ROWS[row][1]
    async with trio_isyswasfa.open_instance(component, imports=IMPORTS) as inst:
        await run(inst, 10)  # warm up: the guest's first calls finish initialising it
        if trace:
            return await _heap_while_pending(inst, run, n)
        guest_before = inst.statistics().guest_seconds
        rounds_before = inst.statistics().poll_calls
        rss_before = _peak_kib()
        cpu_before = time.process_time()
        start = time.perf_counter()
        await run(inst, n)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu_before
        stats = inst.statistics()
    return {
        "wall": wall,
        "cpu": cpu,
        "guest": stats.guest_seconds - guest_before,
        "rss_kib": max(0, _peak_kib() - rss_before),
        "poll_calls": stats.poll_calls - rounds_before,
    }


async def _heap_while_pending(
    inst: trio_isyswasfa.Instance, run: Callable[..., Awaitable[None]], n: int
) -> dict[str, float]:
    """The growth of the host's Python heap once all ``n`` items wait (for an hour)."""
    gc.collect()
    tracemalloc.start(1)
    heap_before = tracemalloc.get_traced_memory()[0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, inst, n, 3_600_000)
        while inst.statistics().host_tasks_running < n:  # noqa: ASYNC110 (a counter, no event)
            await trio.sleep(0.05)
        gc.collect()
        heap = tracemalloc.get_traced_memory()[0] - heap_before
        print(json.dumps({"heap": heap}), flush=True)
        os._exit(0)  # cancelling n calls or tasks would take long, and measures nothing
    raise AssertionError("unreachable")


def _guest() -> Path:
    return build_python_guest(CASES / "wit", "cases-guest", "app", [CASES / "src"])


def _rust_guest() -> Path:
    return build_rust_guest(RUST_CASES / "wit", "rust-cases", RUST_CASES)


def _wasi_guest() -> Path:
    return build_python_guest(WASI / "wit", "wasi-guest", "app", [WASI / "src"])


def _component_of(row: str) -> Path:
    if row in RUST_ROWS:
        return _rust_guest()
    return _wasi_guest() if row in WASI_ROWS else _guest()


def _run_child(row: str, n: int, tree: Path = ROOT, trace: bool = False) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_scale", "--one", row, str(n)]
        + (["--trace"] if trace else []),
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _ratio(value: float, base: float) -> float:
    return value / base if base else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,4000,16000", help="comma-separated N")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"some of {','.join(ROWS)}")
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="TREE",
        help="also run each row in another checkout (one with this bench in it), e.g. "
        "the commit before a change, and print its rows first, marked 'before'",
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="also run each size under tracemalloc: the peak of the host's Python heap "
        "per item ('heap B'; the guest's memory and wasmtime's are in 'KiB' only)",
    )
    parser.add_argument("--one", nargs=2, metavar=("ROW", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        row, n = args.one
        print(json.dumps(trio.run(measure, row, int(n), args.trace)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    for row in args.rows.split(","):
        _component_of(row)  # build (or find cached) once, before the children need it
    print(f"each item waits {WAIT_MS} ms; host = (wall - {WAIT_MS} ms - guest) / N")
    print(
        f"{'':60} {'N':>7} {'wall s':>8} {'guest s':>8} {'host µs':>8} {'CPU µs':>8}"
        f" {'KiB':>6} {'host x':>6} {'CPU x':>6} {'heap B':>7}"
    )
    trees = [(args.compare, "before: "), (ROOT, "")] if args.compare else [(ROOT, "")]
    for row, (tree, mark) in ((r, t) for r in args.rows.split(",") for t in trees):
        label = mark + ROWS[row][0]
        first: tuple[float, float] | None = None
        for n in sizes:
            fig = _run_child(row, n, tree)
            heap = math.nan
            if args.memory and row not in NO_HEAP_ROWS:
                heap = _run_child(row, n, tree, trace=True)["heap"] / n
            host_us = max(0.0, fig["wall"] - WAIT_MS / 1000 - fig["guest"]) / n * 1e6
            cpu_us = fig["cpu"] / n * 1e6
            first = first or (host_us, cpu_us)
            print(
                f"{label:60} {n:>7} {fig['wall']:>8.2f} {fig['guest']:>8.2f} {host_us:>8.1f}"
                f" {cpu_us:>8.1f} {fig['rss_kib'] / n:>6.2f} {_ratio(host_us, first[0]):>6.2f}"
                f" {_ratio(cpu_us, first[1]):>6.2f} {heap:>7.0f}",
                flush=True,
            )
            label = ""


if __name__ == "__main__":
    main()
