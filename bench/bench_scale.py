"""How the host's cost per concurrent call, guest task and pollable grows with their number.

    python -m bench.bench_scale                      # N = 1k, 4k, 16k (a few minutes)
    python -m bench.bench_scale --sizes 1000,4000,16000,64000,100000

(from the repository's root, so that its own ``trio_isyswasfa`` is the one measured)

Each row runs N things at once, all waiting 100 ms: in one instance of the test-cases
Python guest (calls, pollables, imports), of the Rust test guest (rust-sleeps: N spawned
tasks each sleeping 100 ms), of the WASI probe guest (polls: one synchronous call
blocking in ``poll`` on N pipes and a clock, 10 times 10 ms); hash-all fetching N URLs
of an upstream answering in 100 ms (bench/loadgen.py, its own process) in one request;
and ``serve`` under N connections at once, each a GET whose guest writes its body over
100 ms (the client is bench/loadgen.py, a small trio/h11 one: wrk and h2load are not
installed here). Each (row, N) runs in a fresh process so that its peak RSS is its own.
Columns: wall time; time in guest code (``Instance.statistics().guest_seconds``: no
host can make that part faster); host µs per item, ``(wall - 100 ms - guest) / N``;
CPU µs per item (the process's CPU time, host and guest, over N: on a shared machine
wall times swell with other processes' load, CPU time does not); peak RSS growth per
item (host and guest memory); and the ratios of each N's host µs and CPU µs per item
to the smallest N's, measured in the same run (flat is 1.0; the goal is at most 1.5).
``--memory`` adds the growth of the Python heap per item once all N wait
(tracemalloc, in a run of its own), and the host's share of it: what the bench's own
scaffolding holds is taken out (the caller's trio task per concurrent call; the
bench's host import ``echo-later``, its coroutine and its ``trio.sleep`` with the
cancel scope trio gives every sleep), found by where each block was allocated: by
code of the bench (directly or through trio), or by the host. A coroutine counts for
the code it runs (``Instance.call``'s, made when the bench starts a task with it, is
the host's; ``echo-later``'s, made by the host, the bench's). ``--compare TREE``
runs this bench against TREE's ``trio_isyswasfa``. Not run in CI.
"""

from __future__ import annotations

import argparse
import functools
import gc
import inspect
import json
import math
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio
import trio.testing
from trio._util import coroutine_or_error

import trio_isyswasfa
from trio_isyswasfa.http import ComponentApp, HttpClient, serve
from trio_isyswasfa.testing import asgi_request, build_python_guest, build_rust_guest, open_lifespan

from .loadgen import open_upstream_process

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


async def _measure_hash_all(n: int) -> dict[str, float]:
    """hash-all, in one request, fetching n URLs of an upstream (its own process) that
    answers each after WAIT_MS."""
    component = trio_isyswasfa.load_component(_hash_all_guest())
    async with (
        open_upstream_process(WAIT_MS) as base,
        HttpClient(
            allow=["127.0.0.1:*"], max_connections_per_origin=n, max_idle_per_origin=n
        ) as client,
    ):
        wasi = trio_isyswasfa.WasiConfig(http_outgoing=client.send)
        app = ComponentApp(component, wasi=wasi)
        async with open_lifespan(app):

            async def hash_all(k: int) -> None:
                headers = [(b"url", f"{base}/{i}".encode()) for i in range(k)]
                response = await asgi_request(app, headers=headers)
                assert response.status == 200, response.status
                assert response.body.count(b"\n") == k, response.body[:200]
                assert b"Error" not in response.body, response.body[:500]

            await hash_all(10)  # warm up
            guest_before = app.statistics().guest_seconds
            rss_before = _peak_kib()
            cpu_before = time.process_time()
            start = time.perf_counter()
            await hash_all(n)
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu_before
            guest = app.statistics().guest_seconds - guest_before
    return {
        "wall": wall,
        "cpu": cpu,
        "guest": guest,
        "rss_kib": max(0, _peak_kib() - rss_before),
    }


SERVE_FEW = 8  # the goal: 1,000 slow requests at once served by at most 8 instances


async def _measure_serve(n: int, max_instances: int | None = None) -> dict[str, Any]:
    """``serve`` (hypercorn, trio, the default instance policy; at most
    ``max_instances`` instances if given) under n connections at once, each a GET whose
    guest streams its body over WAIT_MS; the client is bench/loadgen.py in its own
    process."""
    component = trio_isyswasfa.load_component(_http_guest())
    limit = {} if max_instances is None else {"max_instances": max_instances}
    app = ComponentApp(component, max_waiting=n, **limit)  # type: ignore[arg-type]
    lines = WAIT_MS // 10  # the guest writes a line every 10 ms

    async def load(url: str, k: int) -> dict[str, Any]:
        target = f"{url}/stream?n={lines}"
        cmd = [sys.executable, "-m", "bench.loadgen", "get", target, str(k)]
        done = await trio.run_process(cmd, cwd=ROOT, capture_stdout=True)
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    async with trio.open_nursery() as nursery:
        (url,) = await nursery.start(
            functools.partial(serve, app, bind=["127.0.0.1:0"], access_log=False)
        )
        await load(url, 10)  # warm up: an instance opened, its guest initialised
        guest_before = app.statistics().guest_seconds
        rss_before = _peak_kib()
        cpu_before = time.process_time()
        start = time.perf_counter()
        got = await load(url, n)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu_before
        stats = app.statistics()
        nursery.cancel_scope.cancel()
    return {
        "wall": wall,
        "cpu": cpu,
        "guest": stats.guest_seconds - guest_before,
        "rss_kib": max(0, _peak_kib() - rss_before),
        "note": f"instances {stats.instances_opened}, statuses {got['statuses']}, "
        f"p50 {got['p50'] * 1000:.0f} ms, p99 {got['p99'] * 1000:.0f} ms",
    }


ROWS = {
    "calls": ("concurrent export calls, each awaiting a pollable", _calls),
    "pollables": ("guest tasks, each awaiting its own pollable", _pollables),
    "imports": ("guest tasks, each awaiting a host import", _imports),
    "rust-sleeps": ("Rust guest: spawned tasks, each sleeping on its own pollable", _rust_sleeps),
    "polls": (f"blocking poll on N pipes and a clock, {POLL_ROUNDS} times", _polls),
    "hash-all": ("hash-all fetching N URLs at once, one request", None),
    "serve": ("serve: N connections at once, slow guest responses", None),
    "serve-8": (f"serve as above, at most {SERVE_FEW} instances", None),
}
OWN_MEASURE = {
    "hash-all": _measure_hash_all,
    "serve": _measure_serve,
    "serve-8": functools.partial(_measure_serve, max_instances=SERVE_FEW),
}
RUST_ROWS = {"rust-sleeps"}
WASI_ROWS = {"polls"}
NO_HEAP_ROWS = {"polls", "hash-all", "serve", "serve-8"}  # no count of items waiting to wait for


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


async def measure(row: str, n: int, trace: bool = False) -> dict[str, float]:
    """Run one row at size ``n`` in this process; its figures. With ``trace``, only
    the peak of the host's Python heap during the run (tracemalloc slows it down)."""
    if row in OWN_MEASURE:
        return await OWN_MEASURE[row](n)  # type: ignore[no-any-return]
    component = trio_isyswasfa.load_component(_component_of(row))
    run = ROWS[row][1]
    assert run is not None
    async with trio_isyswasfa.open_instance(component, imports=IMPORTS) as inst:
        await run(inst, 10)  # warm up: the guest's first calls finish initialising it
        if trace:
            return await _heap_while_pending(inst, run, n, PENDING.get(row, _each_a_host_wait))
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


def _each_a_host_wait(stats: trio_isyswasfa.InstanceStatistics, n: int) -> bool:
    return stats.host_tasks_running >= n


# Rust sleeps share one host timer: the guest arms it once all n tasks sleep
PENDING = {"rust-sleeps": lambda stats, n: stats.host_tasks_running >= 1}


async def _heap_while_pending(
    inst: trio_isyswasfa.Instance,
    run: Callable[..., Awaitable[None]],
    n: int,
    pending: Callable[[trio_isyswasfa.InstanceStatistics, int], bool],
) -> dict[str, float]:
    """The growth of the Python heap once all ``n`` items wait (for an hour), and the
    part of it the bench's own scaffolding holds (see the module's docstring)."""
    gc.collect()
    tracemalloc.start(TRACE_FRAMES)
    before = tracemalloc.take_snapshot()  # (held from here on: taken before the count)
    heap_before = tracemalloc.get_traced_memory()[0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, inst, n, 3_600_000)
        while not pending(inst.statistics(), n):  # noqa: ASYNC110 (a counter, no event)
            await trio.sleep(0.05)
        # and every call is parked: on a loaded machine some were still on their way
        # (a start call's frames alive) when the count was reached
        await trio.testing.wait_all_tasks_blocked(0.05)
        gc.collect()
        heap = tracemalloc.get_traced_memory()[0] - heap_before
        after = tracemalloc.take_snapshot()
        grown = after.compare_to(before, "traceback")
        scaffold = (
            sum(s.size_diff for s in grown if _by_the_bench(s.traceback))
            if TRACE_FRAMES > 1
            else math.nan
        )
        print(json.dumps({"heap": heap, "scaffold": scaffold}), flush=True)
        os._exit(0)  # cancelling n calls or tasks would take long, and measures nothing
    raise AssertionError("unreachable")


# deep enough to reach the bench's or the host's frame of a block; $BENCH_SCALE_FRAMES=1
# traces far faster (for large N on a loaded machine) but cannot tell the bench's
# blocks from the host's: 'host B' is then left out
TRACE_FRAMES = int(os.environ.get("BENCH_SCALE_FRAMES", "16"))
_BENCH_DIR = str(Path(__file__).resolve().parent)
_HOST_DIR = str(Path(trio_isyswasfa.__file__).resolve().parent)


def _line_of(func: Callable[..., Any], text: str) -> tuple[str, int]:
    """The file and line number of the line of ``func`` that contains ``text``."""
    lines, first = inspect.getsourcelines(func)
    for offset, line in enumerate(lines):
        if text in line:
            return str(Path(inspect.getsourcefile(func) or "").resolve()), first + offset
    raise AssertionError(f"no line with {text!r} in {func.__qualname__}")


# where coroutines are made for code other than the maker's: trio makes a task's (in
# these rows, of the host's ``Instance.call`` or host tasks), the host an async
# import's (in these rows, the bench's ``echo_later``)
_TASK_CORO = _line_of(coroutine_or_error, "async_fn(*args)")
_IMPORT_CORO = _line_of(trio_isyswasfa.Instance._async_import, "impl(*args)")


@functools.cache
def _resolved(filename: str) -> str:
    return str(Path(filename).resolve())


def _by_the_bench(traceback: tracemalloc.Traceback) -> bool:
    """Whether a block was allocated for the bench: by its code (directly or through
    trio: the innermost frame of the bench or the host is the bench's), or as the
    coroutine of a bench function the host called."""
    innermost = traceback[-1]
    if (_resolved(innermost.filename), innermost.lineno) == _TASK_CORO:
        return False
    for frame in reversed(traceback):
        where = _resolved(frame.filename)
        if where.startswith(_BENCH_DIR):
            return True
        if where.startswith(_HOST_DIR):
            return (where, frame.lineno) == _IMPORT_CORO
    return False  # (neither: made by trio or the interpreter on its own, e.g. a GC list)


def _guest() -> Path:
    return build_python_guest(CASES / "wit", "cases-guest", "app", [CASES / "src"])


def _rust_guest() -> Path:
    return build_rust_guest(RUST_CASES / "wit", "rust-cases", RUST_CASES)


def _wasi_guest() -> Path:
    return build_python_guest(WASI / "wit", "wasi-guest", "app", [WASI / "src"])


def _hash_all_guest() -> Path:
    here = ROOT / "examples" / "hash-all"
    return build_python_guest(here / "wit", "hash-all", "app", [here / "guest"])


def _http_guest() -> Path:
    here = ROOT / "tests" / "guests" / "http"
    return build_python_guest(here / "wit", "http-guest", "app", [here / "src"])


def _component_of(row: str) -> Path:
    if row == "hash-all":
        return _hash_all_guest()
    if row in ("serve", "serve-8"):
        return _http_guest()
    if row in RUST_ROWS:
        return _rust_guest()
    return _wasi_guest() if row in WASI_ROWS else _guest()


def _run_child(row: str, n: int, tree: Path = ROOT, trace: bool = False) -> dict[str, Any]:
    # this bench (the same scaffolding, the same accounting) on ``tree``'s package: run
    # as this checkout's module (it imports its siblings), ``tree`` first on the path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(ROOT)])}
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_scale", "--one", row, str(n)]
        + (["--trace"] if trace else []),
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _ratio(value: float, base: float) -> float:
    return value / base if base else float("nan")


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1000,4000,16000", help="comma-separated N")
    p.add_argument("--rows", default=",".join(ROWS), help=f"some of {','.join(ROWS)}")
    p.add_argument(
        "--compare",
        type=Path,
        metavar="TREE",
        help="also run each row in another checkout (one with this bench in it), e.g. "
        "the commit before a change, and print its rows first, marked 'before'",
    )
    p.add_argument(
        "--memory",
        action="store_true",
        help="also run each size under tracemalloc: the growth of the Python heap per "
        "item once all wait ('heap B'), and the host's share of it ('host B': less the "
        "bench's own tasks and imports; the guest's memory and wasmtime's are in 'KiB' only)",
    )
    p.add_argument(
        "--memory-only",
        action="store_true",
        help="only the heap columns (no timed run; the rows that have them)",
    )
    p.add_argument("--one", nargs=2, metavar=("ROW", "N"), help=argparse.SUPPRESS)
    p.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
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
        f" {'KiB':>6} {'host x':>6} {'CPU x':>6} {'heap B':>7} {'host B':>7}"
    )
    trees = [(args.compare, "before: "), (ROOT, "")] if args.compare else [(ROOT, "")]
    for row, (tree, mark) in ((r, t) for r in args.rows.split(",") for t in trees):
        label = mark + ROWS[row][0]
        first: tuple[float, float] | None = None
        for n in sizes:
            if args.memory_only and row in NO_HEAP_ROWS:
                break
            fig = (
                {"wall": math.nan, "guest": math.nan, "cpu": math.nan, "rss_kib": math.nan}
                if args.memory_only
                else _run_child(row, n, tree)
            )
            heap = host_heap = math.nan
            if (args.memory or args.memory_only) and row not in NO_HEAP_ROWS:
                traced = _run_child(row, n, tree, trace=True)
                heap = traced["heap"] / n
                host_heap = (traced["heap"] - traced["scaffold"]) / n
            host_us = max(0.0, fig["wall"] - WAIT_MS / 1000 - fig["guest"]) / n * 1e6
            cpu_us = fig["cpu"] / n * 1e6
            first = first or (host_us, cpu_us)
            print(
                f"{label:60} {n:>7} {fig['wall']:>8.2f} {fig['guest']:>8.2f} {host_us:>8.1f}"
                f" {cpu_us:>8.1f} {fig['rss_kib'] / n:>6.2f} {_ratio(host_us, first[0]):>6.2f}"
                f" {_ratio(cpu_us, first[1]):>6.2f} {heap:>7.0f} {host_heap:>7.0f}"
                + (f"  ({fig['note']})" if "note" in fig else ""),
                flush=True,
            )
            label = ""


if __name__ == "__main__":
    main()
