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
host can make that part faster); ``wait s``, the time this process sat idle, measured
(``IdleClock``: trio's run loop blocked in its I/O wait with no task runnable); the
issue's host µs per item ``(wall - waiting - guest) / N`` twice: ``host µs`` with the
waiting measured, ``100ms µs`` with the waiting taken as the 100 ms each item waits
(the bench's first formula, kept for comparison); ``CPU s``, the process's CPU time
(host and guest); the host's CPU µs per item, ``CPU * (busy - guest) / busy / N``
with ``busy = wall - waiting``: on a shared machine the busy wall time also holds the
time other processes took the cores from this one, which the CPU time does not, and
the guest's time is wall time too (the engine's clock), so the guest's share of the
busy time is taken as its share of the CPU time; peak RSS growth per item (host and
guest memory); and the ratios of each N's figures to the smallest N's, measured in
the same run (flat is 1.0; the goal is at most 1.5): ``host x`` (measured waiting),
``100ms x`` and ``CPU x``; ``loop/N``, the passes of trio's run loop per item.

A short run is noisy on a shared machine (1,000 calls take ~0.5 s, and two such runs
gave 214 and 421 host µs per call): each (row, N) is run again, each time in a fresh
process, until its runs make 2 s of wall time (``--min-seconds``; at most 9 runs), or
exactly ``--repeat K`` times, in rounds over the sizes (and ``--compare``'s trees) so
that a change of the machine's load falls on all alike. Every figure printed is the
median of the runs' (each ratio one of medians); ``runs`` says how many there were and
``host µs range`` the least and the most of their ``host µs``; ``gc2`` the full
collections of Python's garbage collector during a run (each walks the whole heap:
~40 ms with a Python guest's instance open, so whether a 1,000-call run has one or
none moves its host µs per call by ~40); ``serve``'s note (the
responses' statuses, latencies and the instances opened) is given for every run.

The goal is read on ``host x``. The fixed 100 ms counts as waiting time in which the
host was in fact working: at 1,000 imports the process computes ~0.4 s while the
timers run, so ``wall - 100 ms`` leaves out work that overlapped them and the small N
looks cheaper than it is (and its ratio worse); at 100,000 Rust tasks the timers are
a small part of the wall time and it hardly matters. The measured waiting takes out
exactly the time the host had nothing to do. Its one bias is the machine's load: time
the process was runnable but had no core counts as host time, so on a loaded machine
read ``CPU x`` beside it. ``IdleClock`` runs two hooks per pass of trio's run loop
(``passes`` in ``--one``'s output); they cost ~3 µs of CPU a pass together (``python -m
bench.bench_scale --instrument-cost`` measures it), ~1% at most of a row's host time
per item (``loop/N``: 0.01-0.1 passes per item in the guest-task rows, ~2 per call).
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
import statistics
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

from . import bench_calls
from .loadgen import open_upstream_process

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "guests" / "cases"
IFACE = "test:cases/cases"
RUST_CASES = ROOT / "tests" / "guests" / "rust-cases"
RUST_IFACE = "test:rust-cases/cases"
WASI = ROOT / "tests" / "guests" / "wasi"
PROBE = "test:wasi/probe"
WAIT_MS = 100
MIN_SECONDS = 2.0  # a size's runs are repeated until they make this much wall time
MAX_RUNS = 9


# the test guests' host imports, as bench_calls gives them (the Python guest's and the
# Rust guest's in one mapping)
IMPORTS = {**bench_calls.IMPORTS, **bench_calls.RUST_IMPORTS}


class IdleClock(trio.abc.Instrument):
    """A trio instrument that adds up the time the run loop sat blocked in its I/O
    wait: the time the process had nothing to run, the "waiting" of the issue's
    ``(wall - waiting - guest) / N``.

    Only waits that could block count (a timeout above 0: trio passes 0 when a task is
    runnable). The time also holds trio's handling of the events the wait returned
    (its ``after_io_wait`` hook runs after that), a few µs per wake-up.

    Args:
        clock: where the time is read (``time.perf_counter``; a test passes its own).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.waited = 0.0  # seconds blocked in the waits counted
        self.waits = 0  # waits that could block (timeout > 0)
        self.passes = 0  # passes of the run loop (each makes one wait)
        self._since: float | None = None

    def before_io_wait(self, timeout: float) -> None:
        """Note the start of a wait that may block."""
        self.passes += 1
        if timeout > 0:
            self._since = self.clock()

    def after_io_wait(self, timeout: float) -> None:
        """Add the wait's time, if it could block."""
        if self._since is not None:
            self.waited += self.clock() - self._since
            self.waits += 1
            self._since = None


class Window:
    """One measured stretch of a row in this process: wall and CPU time, and the
    time the run loop sat idle (an ``IdleClock`` installed from ``start`` to ``stop``)."""

    def __init__(self) -> None:
        self.idle = IdleClock()
        self.wall = self.cpu = 0.0
        self._start = self._cpu = 0.0
        self._full_gcs = 0

    def start(self) -> None:
        """Start the clocks; in a trio run."""
        trio.lowlevel.add_instrument(self.idle)
        self._full_gcs = gc.get_stats()[2]["collections"]
        self._cpu = time.process_time()
        self._start = time.perf_counter()

    def stop(self) -> dict[str, float]:
        """Stop them; the figures."""
        self.wall = time.perf_counter() - self._start
        self.cpu = time.process_time() - self._cpu
        trio.lowlevel.remove_instrument(self.idle)
        return {
            "wall": self.wall,
            "cpu": self.cpu,
            "waited": self.idle.waited,
            "waits": self.idle.waits,
            "passes": self.idle.passes,
            "full_gcs": gc.get_stats()[2]["collections"] - self._full_gcs,
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
            window = Window()
            window.start()
            await hash_all(n)
            fig = window.stop()
            guest = app.statistics().guest_seconds - guest_before
    return {**fig, "guest": guest, "rss_kib": max(0, _peak_kib() - rss_before)}


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
        window = Window()
        window.start()
        got = await load(url, n)
        fig = window.stop()
        stats = app.statistics()
        nursery.cancel_scope.cancel()
    return {
        **fig,
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
        window = Window()
        window.start()
        await run(inst, n)
        fig = window.stop()
        stats = inst.statistics()
    return {
        **fig,
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
    """The file and line number of the one line of ``func`` that contains ``text`` (two
    would make the heap's split between bench and host depend on which came first)."""
    lines, first = inspect.getsourcelines(func)
    found = [offset for offset, line in enumerate(lines) if text in line]
    if len(found) != 1:
        raise AssertionError(f"{len(found)} lines with {text!r} in {func.__qualname__}")
    return str(Path(inspect.getsourcefile(func) or "").resolve()), first + found[0]


# where coroutines are made for code other than the maker's: trio makes a task's (in
# these rows, of the host's ``Instance.call`` or host tasks), the host an async
# import's (in these rows, the bench's ``echo_later``)
_TASK_CORO = _line_of(coroutine_or_error, "async_fn(*args)")
_IMPORT_CORO = _line_of(trio_isyswasfa.Instance._async_import, "work = impl(*args)")


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


class Figures:
    """A run's host cost per item, three ways (see the module's docstring)."""

    def __init__(self, host_us: float, fixed_us: float, cpu_us: float) -> None:
        self.host_us = host_us  # (wall - measured waiting - guest) / N
        self.fixed_us = fixed_us  # (wall - WAIT_MS - guest) / N
        self.cpu_us = cpu_us  # CPU * (busy - guest) / busy / N

    @classmethod
    def of(cls, fig: dict[str, Any], n: int) -> Figures:
        """The figures per item of a run of ``n`` items (``measure``'s output)."""
        wall, guest = fig["wall"], fig["guest"]
        busy = wall - fig["waited"]
        return cls(
            max(0.0, wall - fig["waited"] - guest) / n * 1e6,
            max(0.0, wall - WAIT_MS / 1000 - guest) / n * 1e6,
            fig["cpu"] * (1 - guest / busy) / n * 1e6 if busy > guest else 0.0,
        )


def instrument_cost(passes: int = 100_000, rounds: int = 5) -> float:
    """µs of CPU an ``IdleClock`` adds to one pass of trio's run loop: a task that
    only yields, ``passes`` times, with and without it (the least of ``rounds`` runs
    each, alternated)."""

    async def spin() -> None:
        for _ in range(passes):
            await trio.lowlevel.checkpoint()

    best = {False: math.inf, True: math.inf}
    for _ in range(rounds):
        for with_clock in (False, True):
            instruments = [IdleClock()] if with_clock else []
            cpu = time.process_time()
            trio.run(spin, instruments=instruments)
            best[with_clock] = min(best[with_clock], time.process_time() - cpu)
    return (best[True] - best[False]) / passes * 1e6


def _repeated_runs(
    row: str, sizes: Sequence[int], trees: Sequence[tuple[Path, str]], args: argparse.Namespace
) -> dict[tuple[Path, int], list[dict[str, Any]]]:
    """The runs of ``row`` at every size on every tree: ``--repeat`` runs each, or by
    default as many as make ``--min-seconds`` of wall time (at most ``MAX_RUNS``).

    The runs go in rounds over the sizes and trees, so that a change in the machine's
    load falls on all of them alike rather than on one size's runs."""
    runs: dict[tuple[Path, int], list[dict[str, Any]]] = {
        (tree, n): [] for tree, _ in trees for n in sizes
    }

    repeat: int | None = args.repeat
    seconds: float = args.min_seconds

    def wanted(done: list[dict[str, Any]]) -> bool:
        if args.memory_only:
            return not done
        if repeat is not None:
            return len(done) < repeat
        return not done or (len(done) < MAX_RUNS and sum(f["wall"] for f in done) < seconds)

    while todo := [key for key, done in runs.items() if wanted(done)]:
        for tree, n in todo:
            runs[tree, n].append(
                dict.fromkeys(("wall", "guest", "cpu", "waited", "rss_kib"), math.nan)
                if args.memory_only
                else _run_child(row, n, tree)
            )
    return runs


def _median_run(runs: list[dict[str, Any]], n: int) -> tuple[dict[str, Any], Figures, str]:
    """The median of ``runs`` (one row's runs at one size), figure by figure; the
    figures per item, each the median of the runs'; and the range of their host µs."""
    fig: dict[str, Any] = {
        key: statistics.median(run[key] for run in runs)
        for key, value in runs[0].items()
        if isinstance(value, (int, float))
    }
    if "note" in runs[0]:  # (serve's statuses and instances: each run's own)
        fig["note"] = " | ".join(run["note"] for run in runs)
    each = [Figures.of(run, n) for run in runs]
    per = Figures(
        statistics.median(f.host_us for f in each),
        statistics.median(f.fixed_us for f in each),
        statistics.median(f.cpu_us for f in each),
    )
    low, high = min(f.host_us for f in each), max(f.host_us for f in each)
    return fig, per, "-" if len(runs) == 1 or math.isnan(low) else f"{low:.0f}-{high:.0f}"


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
    p.add_argument(
        "--instrument-cost",
        action="store_true",
        help="only measure what the idle clock costs per pass of trio's run loop",
    )
    p.add_argument(
        "--repeat",
        type=int,
        metavar="K",
        help="run each row at each size K times (fresh processes) and print the medians; "
        "by default a size is run again until its runs make --min-seconds of wall time "
        f"(at most {MAX_RUNS} runs), so that one noisy short run cannot decide a ratio",
    )
    p.add_argument(
        "--min-seconds",
        type=float,
        default=MIN_SECONDS,
        metavar="S",
        help=f"wall time a size's runs must make, without --repeat (default {MIN_SECONDS})",
    )
    p.add_argument("--one", nargs=2, metavar=("ROW", "N"), help=argparse.SUPPRESS)
    p.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        p.error("--repeat needs at least 1")
    if args.one:
        row, n = args.one
        print(json.dumps(trio.run(measure, row, int(n), args.trace)))
        return
    if args.instrument_cost:
        print(f"idle clock: {instrument_cost():.2f} µs of CPU per pass of trio's run loop")
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    for row in args.rows.split(","):
        _component_of(row)  # build (or find cached) once, before the children need it
    print(
        f"each item waits {WAIT_MS} ms; host = (wall - waiting - guest) / N with the waiting"
        f" measured ('wait s'), 100ms = the same with {WAIT_MS} ms as the waiting,"
        " CPU = the host's CPU per item; x = ratio to the smallest N"
    )
    print(
        f"{'':60} {'N':>7} {'wall s':>8} {'guest s':>8} {'wait s':>7} {'CPU s':>7} {'host µs':>8}"
        f" {'100ms µs':>8} {'CPU µs':>8} {'KiB':>6} {'host x':>6} {'100ms x':>7}"
        f" {'CPU x':>6} {'loop/N':>6} {'heap B':>7} {'host B':>7} {'gc2':>4} {'runs':>4}"
        f" {'host µs range':>13}"
    )
    trees = [(args.compare, "before: "), (ROOT, "")] if args.compare else [(ROOT, "")]
    for row in args.rows.split(","):
        if args.memory_only and row in NO_HEAP_ROWS:
            continue
        runs = _repeated_runs(row, sizes, trees, args)
        for tree, mark in trees:
            label = mark + ROWS[row][0]
            first: Figures | None = None
            for n in sizes:
                fig, per, spread = _median_run(runs[tree, n], n)
                heap = host_heap = math.nan
                if (args.memory or args.memory_only) and row not in NO_HEAP_ROWS:
                    traced = _run_child(row, n, tree, trace=True)
                    heap = traced["heap"] / n
                    host_heap = (traced["heap"] - traced["scaffold"]) / n
                first = first or per
                print(
                    f"{label:60} {n:>7} {fig['wall']:>8.2f} {fig['guest']:>8.2f}"
                    f" {fig['waited']:>7.2f} {fig['cpu']:>7.2f} {per.host_us:>8.1f}"
                    f" {per.fixed_us:>8.1f} {per.cpu_us:>8.1f} {fig['rss_kib'] / n:>6.2f}"
                    f" {_ratio(per.host_us, first.host_us):>6.2f}"
                    f" {_ratio(per.fixed_us, first.fixed_us):>7.2f}"
                    f" {_ratio(per.cpu_us, first.cpu_us):>6.2f}"
                    f" {fig.get('passes', math.nan) / n:>6.2f}"
                    f" {heap:>7.0f} {host_heap:>7.0f} {fig.get('full_gcs', math.nan):>4.0f}"
                    f" {len(runs[tree, n]):>4} {spread:>13}"
                    + (f"  ({fig['note']})" if "note" in fig else ""),
                    flush=True,
                )
                label = ""


if __name__ == "__main__":
    main()
