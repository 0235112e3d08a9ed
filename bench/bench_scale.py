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
``--memory`` adds the growth of the host's Python heap per item once all N wait
(tracemalloc, in a run of its own). Not run in CI.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

import trio_isyswasfa
from trio_isyswasfa.http import ComponentApp, HttpClient, serve
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


async def _asgi_get(
    app: ComponentApp, path: str, query: str = "", headers: list[tuple[bytes, bytes]] = ()
) -> tuple[int, bytes]:
    """One GET straight into the ASGI app (no HTTP parser: no header size limit)."""
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(b"host", b"bench"), *headers],
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }
    asked = False
    status = 0
    body: list[bytes] = []

    async def receive() -> dict[str, object]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await trio.sleep_forever()  # the client stays
        raise AssertionError  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(scope, receive, send)  # type: ignore[arg-type]
    return status, b"".join(body)


@asynccontextmanager
async def _lifespan(app: ComponentApp) -> AsyncIterator[None]:
    to_app, app_reads = trio.open_memory_channel[dict[str, str]](1)
    app_writes, from_app = trio.open_memory_channel[dict[str, str]](1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, {"type": "lifespan"}, app_reads.receive, app_writes.send)
        await to_app.send({"type": "lifespan.startup"})
        await from_app.receive()
        yield
        await to_app.send({"type": "lifespan.shutdown"})
        await from_app.receive()


async def _measure_hash_all(n: int) -> dict[str, float]:
    """hash-all, in one request, fetching n URLs of an upstream (its own process) that
    answers each after WAIT_MS."""
    upstream = await trio.lowlevel.open_process(
        [sys.executable, "-m", "bench.loadgen", "upstream", str(WAIT_MS)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert upstream.stdout is not None
        port = b""
        while not port.endswith(b"\n"):
            port += await upstream.stdout.receive_some(64)
        base = f"http://127.0.0.1:{int(port)}"
        component = trio_isyswasfa.load_component(_hash_all_guest())
        async with HttpClient(
            allow=["127.0.0.1:*"], max_connections_per_origin=n, max_idle_per_origin=n
        ) as client:
            wasi = trio_isyswasfa.WasiConfig(http_outgoing=client.send)
            app = ComponentApp(component, wasi=wasi)
            async with _lifespan(app):

                async def hash_all(k: int) -> None:
                    headers = [(b"url", f"{base}/{i}".encode()) for i in range(k)]
                    status, body = await _asgi_get(app, "/", headers=headers)
                    assert status == 200, status
                    assert body.count(b"\n") == k, body[:200]
                    assert b"Error" not in body, body[:500]

                await hash_all(10)  # warm up
                guest_before = app.statistics().guest_seconds
                rss_before = _peak_kib()
                cpu_before = time.process_time()
                start = time.perf_counter()
                await hash_all(n)
                wall = time.perf_counter() - start
                cpu = time.process_time() - cpu_before
                guest = app.statistics().guest_seconds - guest_before
    finally:
        upstream.terminate()
        await upstream.wait()
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
    """The growth of the host's Python heap once all ``n`` items wait (for an hour)."""
    gc.collect()
    tracemalloc.start(1)
    heap_before = tracemalloc.get_traced_memory()[0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, inst, n, 3_600_000)
        while not pending(inst.statistics(), n):  # noqa: ASYNC110 (a counter, no event)
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
                f" {_ratio(cpu_us, first[1]):>6.2f} {heap:>7.0f}"
                + (f"  ({fig['note']})" if "note" in fig else ""),
                flush=True,
            )
            label = ""


if __name__ == "__main__":
    main()
