"""hash-all's fan-out, against one upstream request's latency measured in the same run,
and where the time goes.

    python -m bench.bench_hash_all                         # N = 100, 1600; both guests
    python -m bench.bench_hash_all --sizes 100 --languages rust --profile
    python -m bench.bench_hash_all --before /tmp/base     # another tree's package, alternated

(from the repository's root, so that its own ``trio_isyswasfa`` is the one measured)

The upstream (bench/loadgen.py, its own process, so its CPU is not ours) answers each
GET with 1 KiB after ``--delay-ms`` (50). Rows, each the best of ``--runs``:

* ``one upstream GET``: one GET through the host's ``HttpClient`` on a warm keep-alive
  connection, body read: **the baseline**, one upstream latency;
* ``host client, N GETs at once``: the same client, no guest: the floor of any fan-out
  through this host (client, connection pool, event loop);
* ``hash-all (L guest), N URLs``: one request straight into ``ComponentApp`` (ASGI,
  in-process: no HTTP front end), the guest fetching and hashing N URLs at once;
* ``… upstream in-process`` (``--in-process-upstream``; the smallest N only): the same
  with the upstream a hypercorn app in this process, as bench_serve.py measured it
  before: what sharing one event loop with the upstream costs.

Columns: wall ms and its ratio to the baseline (the goal for hash-all over 100 URLs
answering in 50 ms: at most 1.5x), the ratio of the host's time per URL at this N to
the smallest N's (flat is 1.0), the time in guest code, the process's CPU time, and
how often the process was preempted in that run (involuntary context switches: on a
busy machine each costs a wait for a core; a request written to the loopback upstream
wakes it, and it may take this process's core).
``--before TREE`` measures another tree's ``trio_isyswasfa`` (e.g. ``git -C MAIN archive
HEAD trio_isyswasfa | tar -x -C TREE``) against this one: each runs every row in a
process of its own (so each has its own baseline), alternated ``--alternate`` times,
on a machine whose load changes between them.
``--timeline`` runs hash-all once more and prints when, from the request's start, the
guest's requests were handed to the client and their response heads came back, and
when the response ended: whether the fan-out leaves at once or in a trickle, and how
long the answers take to go through after the upstream's latency; and the CPU time
spent before the first answer came back (sending) and after it (answering).
``--profile`` runs hash-all once more under cProfile and prints its CPU by layer
(the engine and wasmtime with the guest code they run, our scheduler and WASI, the
HTTP client and server side, h11, the event loop) and the guest's wall time beside it:
where a missed goal's time went. Not run in CI.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import os
import pstats
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import hypercorn.trio
import trio
from hypercorn.config import Config

import trio_isyswasfa
from trio_isyswasfa.http import ComponentApp, HttpClient
from trio_isyswasfa.http.types import Body, Fields, Request, Response
from trio_isyswasfa.testing import (
    RustToolchainMissing,
    asgi_request,
    build_python_guest,
    build_rust_guest,
    open_lifespan,
)
from trio_isyswasfa.wasi.io import BytesInputStream, read_chunk

from .loadgen import open_upstream_process

ROOT = Path(__file__).resolve().parent.parent
HASH_ALL = ROOT / "examples" / "hash-all"
BODY = b"x" * 1024  # what bench/loadgen.py's upstream answers

# cProfile's file names, by the layer they belong to (first match wins)
LAYERS = (
    ("engine", ("/trio_isyswasfa/engine/", "/trio_isyswasfa/_engine", "/wasmtime/")),
    ("http client", ("/trio_isyswasfa/http/_client", "/trio_isyswasfa/http/_h1")),
    ("http: ASGI, types", ("/trio_isyswasfa/http/",)),
    ("scheduler, protocol", ("/trio_isyswasfa/_scheduler", "/trio_isyswasfa/_protocol")),
    ("host, WASI, resources", ("/trio_isyswasfa/",)),
    ("h11 (hypercorn's, the in-process upstream)", ("/h11/",)),
    ("hypercorn (in-process upstream)", ("/hypercorn/",)),
    ("event loop (trio, anyio, sockets)", ("/trio/", "/anyio/", "/outcome/", "/sniffio/")),
)


def guest(language: str) -> Path:
    """The hash-all example's guest in ``language``, built (cached on its sources)."""
    if language == "rust":
        return build_rust_guest(HASH_ALL / "wit", "hash-all", HASH_ALL / "guest-rust")
    return build_python_guest(HASH_ALL / "wit", "hash-all", "app", [HASH_ALL / "guest"])


@asynccontextmanager
async def hypercorn_upstream(delay_ms: int) -> AsyncIterator[str]:
    """The same upstream as a hypercorn app in this process (bench_serve.py's before)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await trio.sleep(delay_ms / 1000)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": BODY})

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.backlog = 4096
    async with trio.open_nursery() as nursery:
        (url,) = await nursery.start(hypercorn.trio.serve, app, config)
        yield url
        nursery.cancel_scope.cancel()


async def host_get(client: HttpClient, url: str) -> None:
    """One GET through the host's client, its body read to the end."""
    authority, _, path = url.removeprefix("http://").partition("/")
    request = Request(
        Fields(),
        Body(BytesInputStream(b"")),
        method="GET",
        scheme="http",
        authority=authority,
        path_with_query="/" + path,
    )
    response = await client.send(request)
    got = 0
    while (chunk := await read_chunk(response.body.stream)) is not None:
        got += len(chunk)
    response.close()
    assert (response.status, got) == (200, len(BODY)), (response.status, got)


class Timeline:
    """An outgoing handler around the client's that notes, while ``on``, when each
    request was handed to it and when its response head came back."""

    def __init__(self, send: Callable[[Request], Awaitable[Response]]) -> None:
        self._send = send
        self.on = False
        self.handed: list[float] = []
        self.answered: list[float] = []
        self.first_answer_cpu = 0.0  # process time when the first response head came back

    def send(self, request: Request) -> Awaitable[Response]:
        """The client's ``send`` (called at once: it may write the request now)."""
        if not self.on:
            return self._send(request)
        self.handed.append(time.perf_counter())
        return self._answered(self._send(request))

    async def _answered(self, sending: Awaitable[Response]) -> Response:
        try:
            return await sending
        finally:
            if not self.answered:
                self.first_answer_cpu = time.process_time()
            self.answered.append(time.perf_counter())

    async def show(self, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` once with the notes on; print them."""
        self.handed.clear()
        self.answered.clear()
        self.on = True
        cpu = time.process_time()
        start = time.perf_counter()
        try:
            await job()
        finally:
            self.on = False
        end, sending = time.perf_counter() - start, self.first_answer_cpu - cpu
        cpu = time.process_time() - cpu

        def span(marks: list[float]) -> str:
            return f"{(min(marks) - start) * 1000:.1f} to {(max(marks) - start) * 1000:.1f}"

        print(
            f"    one more, in ms from its start: requests handed to the client"
            f" {span(self.handed)}, response heads back {span(self.answered)},"
            f" its response over at {end * 1000:.1f} ({cpu * 1000:.1f} ms of CPU:"
            f" {sending * 1000:.1f} before the first answer, {(cpu - sending) * 1000:.1f} after)"
        )


async def best_of(runs: int, job: Callable[[], Awaitable[None]]) -> tuple[float, float, int]:
    """The best wall time of ``runs`` runs of ``job``, the CPU time of that run and how
    often the process was preempted in it."""
    best = (float("inf"), 0.0, 0)
    for _ in range(runs):
        preempted = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
        cpu = time.process_time()
        start = time.perf_counter()
        await job()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        preempted = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - preempted
        best = min(best, (wall, cpu, preempted))
    return best


def layers_of(profile: cProfile.Profile) -> dict[str, float]:
    """The profile's own (not cumulative) time, summed by layer (a call through ctypes
    into wasmtime, guest code included, counts as its Python caller's own time)."""
    out: dict[str, float] = {}
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.items():
        layer = "other Python and builtins"
        for label, marks in LAYERS:
            if any(mark in filename for mark in marks):
                layer = label
                break
        if "_socket.socket" in name or "select.epoll" in name:
            layer = "event loop (trio, anyio, sockets)"  # the system calls
        elif "canonical ABI" in filename or "/ctypes/" in filename:
            layer = "engine"  # code the engine generated; ctypes casts
        out[layer] = out.get(layer, 0.0) + tottime
    return out


async def run(args: argparse.Namespace) -> None:
    label = f"{args.label}: " if args.label else ""
    sizes = [int(s) for s in args.sizes.split(",")]
    components = {}
    built = dict(item.split("=", 1) for item in args.built)
    for language in args.languages.split(","):
        try:
            path = Path(built[language]) if language in built else guest(language)
        except RustToolchainMissing as exc:
            print(f"hash-all ({language} guest): not built: {exc}")
            continue
        for engine in args.engines.split(","):
            components[f"{language} guest, {engine}"] = trio_isyswasfa.load_component(
                path, engine=engine
            )
    print(
        f"upstream answers each GET after {args.delay_ms} ms; best of {args.runs} runs;"
        " ratio = wall / one upstream GET; host x = host time per URL over the smallest N's"
    )
    print(
        f"{'':52} {'N':>5} {'wall ms':>8} {'ratio':>6} {'host x':>6} {'guest ms':>8} {'CPU ms':>7}"
        f" {'preempt':>7}"
    )

    def row(
        label: str,
        n: int,
        wall: float,
        base: float,
        first: dict[str, float],
        guest_s: float,
        cpu: float,
        preempted: int,
    ) -> None:
        per_url = max(0.0, wall - base - guest_s) / n
        first.setdefault(label, per_url)
        host_x = per_url / first[label] if first[label] else float("nan")
        print(
            f"{label:52} {n:>5} {wall * 1000:>8.1f} {wall / base:>6.2f} {host_x:>6.2f}"
            f" {guest_s * 1000:>8.1f} {cpu * 1000:>7.1f} {preempted:>7}",
            flush=True,
        )

    upstreams = [("", open_upstream_process)]
    if args.in_process_upstream:
        upstreams.append((", upstream in-process", hypercorn_upstream))
    for where, open_upstream in upstreams:
        # in-process, the upstream's own CPU starves the client at 16N (read timeouts)
        ns = sizes if not where else sizes[:1]
        async with (
            open_upstream(args.delay_ms) as base_url,
            # every URL at once, on connections kept open: the fan-out itself is measured
            # (by default a client opens 100 connections per origin, the rest wait)
            HttpClient(
                allow=["127.0.0.1:*"],
                max_connections_per_origin=max(sizes),
                max_idle_per_origin=max(sizes),
            ) as client,
        ):
            one = functools.partial(host_get, client, f"{base_url}/0")
            await one()  # a warm keep-alive connection
            laps = []
            for _ in range(10):
                start = time.perf_counter()
                await one()
                laps.append(time.perf_counter() - start)
            base = statistics.median(laps)
            baseline = f"{label}one upstream GET (the baseline){where}"
            print(f"{baseline:52} {1:>5} {base * 1000:>8.1f}")
            first: dict[str, float] = {}
            for n in ns:

                async def fan_out(n: int = n) -> None:
                    async with trio.open_nursery() as nursery:
                        for i in range(n):
                            nursery.start_soon(host_get, client, f"{base_url}/{i}")

                await fan_out()  # the connections opened once, as the guest's will be
                wall, cpu, preempted = await best_of(args.runs, fan_out)
                name = f"{label}host client, N GETs at once{where}"
                row(name, n, wall, base, first, 0.0, cpu, preempted)
            timeline = Timeline(client.send)
            wasi = trio_isyswasfa.WasiConfig(http_outgoing=timeline.send)
            for language, component in components.items():
                app = ComponentApp(component, wasi=wasi)
                async with open_lifespan(app):
                    for n in ns:
                        headers = [(b"url", f"{base_url}/{i}".encode()) for i in range(n)]

                        async def hash_all(app: ComponentApp = app, headers: Any = headers) -> None:
                            response = await asgi_request(app, headers=headers)
                            body = response.body
                            assert response.status == 200, response.status
                            assert body.count(b"\n") == len(headers), body[:200]
                            assert b"status" not in body, body[:300]

                        await hash_all()  # warm up: an instance, its connections
                        guest_before = app.statistics().guest_seconds
                        wall, cpu, preempted = await best_of(args.runs, hash_all)
                        guest_s = (app.statistics().guest_seconds - guest_before) / args.runs
                        name = f"{label}hash-all ({language}), N URLs{where}"
                        row(name, n, wall, base, first, guest_s, cpu, preempted)
                        if args.timeline:
                            await timeline.show(hash_all)
                        if args.profile and not where:
                            await profile(app, hash_all, guest_s)


async def profile(app: ComponentApp, job: Callable[[], Awaitable[None]], guest_s: float) -> None:
    """Run ``job`` once under cProfile; print its CPU time by layer."""
    profiler = cProfile.Profile(time.process_time)  # CPU: not the waits in epoll
    guest_before = app.statistics().guest_seconds
    profiler.enable()
    await job()
    profiler.disable()
    guest_s = app.statistics().guest_seconds - guest_before
    layers = layers_of(profiler)
    total = sum(layers.values())
    print(f"    under cProfile (inflates Python ~2x): {total * 1000:.1f} ms of CPU, by layer:")
    # guest code runs inside the engine's calls; guest_seconds is their wall time, which
    # a loaded machine inflates, so it is shown beside the CPU, not taken from it
    layers["engine, guest code included"] = layers.pop("engine", 0.0)
    for label, seconds in sorted(layers.items(), key=lambda kv: -kv[1]):
        print(f"    {label:48} {seconds * 1000:>8.1f} ms {seconds / total:>6.1%}")
    print(f"    (guest code ran {guest_s * 1000:.1f} ms of wall time: guest_seconds)")


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="100,1600", help="comma-separated N (URLs)")
    p.add_argument("--languages", default="rust,python")
    p.add_argument("--engines", default="wasmtime,own", help="some of wasmtime,own")
    p.add_argument("--delay-ms", type=int, default=50)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--timeline", action="store_true", help="when the requests left, and returned")
    p.add_argument(
        "--before",
        metavar="TREE",
        help="a folder holding another trio_isyswasfa package, measured alternately with this one",
    )
    p.add_argument("--alternate", type=int, default=2, help="rounds of before/after (--before)")
    p.add_argument("--label", default="", help=argparse.SUPPRESS)  # a row prefix
    # LANGUAGE=PATH: a guest built already (by the parent of --before's processes)
    p.add_argument("--built", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument(
        "--in-process-upstream",
        action="store_true",
        help="also run every row with the upstream a hypercorn app in this process",
    )
    return p


def compare(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """Every row for the tree ``--before`` names and for this one, each in a process of
    its own that imports that tree's package, alternated ``--alternate`` times."""
    rest = [a for a in argv if not a.startswith("--before") and a != args.before]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    # built here, with this tree's tools (the other tree may hold only its package)
    for language in args.languages.split(","):
        try:
            rest += ["--built", f"{language}={guest(language)}"]
        except RustToolchainMissing as exc:
            print(f"hash-all ({language} guest): not built: {exc}")
    for _ in range(args.alternate):
        for label, tree in (("before", Path(args.before)), ("after", ROOT)):
            # (the child's working folder comes first on its path: the tree's package
            # is the one imported, this tree's `bench` the one run)
            command = [sys.executable, "-m", "bench.bench_hash_all", *rest, "--label", label]
            subprocess.run(command, cwd=tree, env=env, check=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the rows the arguments name."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    if args.before:
        compare(args, argv)
        return
    trio.run(run, args)


if __name__ == "__main__":
    main()
