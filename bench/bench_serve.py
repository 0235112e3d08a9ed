"""``serve`` throughput and latency against bare hypercorn, and hash-all fan-out.

    bash .ci/install-bench-tools   # wrk, the load generator (a Debian package)
    python bench/bench_serve.py [--seconds 2] [--rounds 5] [--connections 64]

For each backend (trio, asyncio) it starts, all at once on loopback:

* the baseline: bare hypercorn with the same worker class serving a hello ASGI app;
* ``python -m trio_isyswasfa serve`` with the service example (the Python guest, and
  the Rust one when its toolchain is installed; ``--languages``), for each instance
  policy (``--policies``), with at most 32 instances;

warms each up (``--warmup`` seconds of wrk), then loads them in ``--rounds`` rounds of
``--seconds`` each: in each round every row runs in turn just after a run of the
baseline, and the baseline once more at the end. Each row's ratio in a round is to
the mean of the two baseline runs either side of it, seconds apart: the machine's
other load, which on a shared machine moves by several times from one few seconds to
the next, weighs alike on both. It prints the median requests/s, p50/p99 latency and
CPU per request, and the median ratio with the range of the rounds' ratios (goal: at
least 0.5x; 0.7x with the Rust service). A single baseline run before a row, as
before, made a row's ratio move by up to 0.2x between quiet runs of one tree. Then the hello route of the standard ``wasi:http/proxy`` guests
(``tests/guests/proxy-py-std``, and ``tests/guests/proxy-rust`` and ``tests/guests/proxy-js``
when their toolchains are installed) under ``wasmtime serve`` (a fresh instance per request, its default, and
``--max-instance-reuse-count 128``) and under our ``serve`` (each instance policy, both
backends; "n/a" while our serve refuses the component), each with its ratio to bare
hypercorn (trio) and ours with the ratio of ``per-request`` to wasmtime's default
(goal: at least 2x). Then hash-all (the Python guest, then the Rust one) fans out to 100 URLs of a local upstream
(bench/loadgen.py, its own process) that answers in 50 ms, and prints the total time as a
ratio to one upstream GET measured in the same run (goal: at most 1.5x;
bench/bench_hash_all.py breaks it down). Then N concurrent slow requests (the guest writes its body over 100 ms) go
to the ASGI app in-process, for the ``pooled`` and ``shared`` instance policies
(``--slow 200,1000``; each policy in a fresh process for its peak RSS). Not run in CI.

    python -m bench.bench_serve --skip-throughput --slow 200,1000   # no wrk needed
    python -m bench.bench_serve --skip-throughput --skip-fan-out --slow '' \
        --engines wasmtime,own --backends trio   # the proxy rows on both engines
    python -m bench.bench_serve --in-process 10 --engines wasmtime,own   # no wrk needed
    python -m bench.bench_serve --connections 8 --policies shared,pooled --skip-wasmtime \
        --languages python,rust --skip-fan-out --slow ''   # ours against bare hypercorn only

``--in-process N`` sends hello requests to the proxy guests straight into the ASGI app
(no HTTP, no hypercorn), N and 16N one after another, and prints the process's CPU
time per request for ``pooled`` and ``per-request`` (without and with spare instances)
on each engine, with the ratio to stock ``pooled``: what opening a fresh instance
adds to a request, measured where the shared machine's load sways it least; then the
isyswasfa service example (Python and Rust) for ``shared`` and ``pooled``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import trio

import trio_isyswasfa
from trio_isyswasfa.http import ComponentApp, HttpClient, serve
from trio_isyswasfa.testing import (
    JsToolchainMissing,
    RustToolchainMissing,
    asgi_request,
    build_js_component,
    build_python_component,
    build_python_guest,
    build_rust_component,
    build_rust_guest,
    open_lifespan,
)
from trio_isyswasfa.testing import http_differential as hd

ROOT = Path(__file__).resolve().parent.parent
HELLO_APP = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})
"""


def example(name: str, language: str = "python") -> Path:
    here = ROOT / "examples" / name
    if language == "rust":
        return build_rust_guest(here / "wit", name, here / "guest-rust")
    return build_python_guest(here / "wit", name, "app", [here / "guest"])


WARMUP = [2]  # seconds of wrk before each measurement (--warmup)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def child_pids(pid: int | None = None) -> list[int]:
    """The processes under ``pid`` (this one by default) now, children and theirs (the
    server under test and its workers, taken before wrk starts)."""
    pids = []
    for task in Path(f"/proc/{pid or os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            for child in (task / "children").read_text().split():
                pids += [int(child), *child_pids(int(child))]
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of processes ``pids`` so far (every thread of each)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def wrk(url: str, seconds: int, connections: int) -> tuple[float, float, float, int]:
    """Requests/s, p50 and p99 latency in ms, and the requests answered."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    failed = re.search(r"Non-2xx or 3xx responses: \d+", out)
    if failed:  # requests/s of failures measures nothing
        print(f"warning: {url}: {failed.group(0)}", file=sys.stderr)

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        assert m is not None, out
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
        return float(m.group(1)) * scale

    return rps, pct("50"), pct("99"), requests


@dataclasses.dataclass
class Served:
    """One server under load in the interleaved rounds: each round's wrk figures."""

    label: str
    url: str
    pids: list[int]  # the server's processes (its CPU time is counted)
    base: str | None  # the key of its baseline row, or None for a baseline
    rps: list[float] = dataclasses.field(default_factory=list)
    p50: list[float] = dataclasses.field(default_factory=list)
    p99: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)  # ms a request
    bracket: list[int] = dataclasses.field(default_factory=list)  # the baseline's run before

    def load(self, seconds: int, connections: int) -> None:
        """One round: ``seconds`` of wrk against it."""
        before = cpu_seconds(self.pids)
        rps, p50, p99, requests = wrk(self.url, seconds, connections)
        self.cpu.append((cpu_seconds(self.pids) - before) / max(requests, 1) * 1e3)
        self.rps.append(rps)
        self.p50.append(p50)
        self.p99.append(p99)

    def figures(self) -> tuple[float, ...]:
        """Median requests/s, p50, p99 and CPU ms a request over the rounds."""
        return tuple(statistics.median(xs) for xs in (self.rps, self.p50, self.p99, self.cpu))


@contextlib.contextmanager
def served(label: str, opened: AbstractContextManager[str], base: str | None) -> Iterator[Served]:
    """A server (``opened`` yields its URL) as a row of the rounds; its processes are
    those this one gained while it started."""
    before = set(child_pids())
    with opened as url:
        yield Served(label, url, [p for p in child_pids() if p not in before], base)


@contextlib.contextmanager
def open_process(cmd: list[str], port: int, root: Path = ROOT) -> Iterator[str]:
    """``cmd`` (a server listening on ``port``) running the package of ``root``; its URL."""
    # this checkout's package (or ``root``'s), whatever an installed one says (the child
    # starts in /tmp)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/tmp", env=env
    )
    try:
        wait_listening(port)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.send_signal(2)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rounds(rows: list[Served], seconds: int, connections: int, n: int) -> None:
    """Warm every row up, then ``n`` rounds: in each, every row in turn (an order turned
    by one each round) with the baseline just before it, and the baseline once more
    after the last. A row's ratio in a round is to the mean of the baseline's runs
    just before and just after it, seconds apart: the machine's other load, which
    moves from one few seconds to the next, then weighs alike on both sides of it."""
    for row in rows:
        wrk(row.url, WARMUP[0], connections)  # warm up: instances open, caches fill
    (base,) = [row for row in rows if row.base is None]
    others = [row for row in rows if row.base is not None]
    for i in range(n):
        turn = i % len(others) if others else 0
        for row in others[turn:] + others[:turn]:
            base.load(seconds, connections)
            row.bracket.append(len(base.rps) - 1)
            row.load(seconds, connections)
    base.load(seconds, connections)


def ratios(row: Served, base: Served) -> tuple[list[float], list[float]]:
    """Each round's ratio of ``row`` to ``base`` (the mean of the baseline's runs just
    before and after): by requests/s, and by CPU a request (the baseline's over this)."""
    rps, cpu = [], []
    for k, r, c in zip(row.bracket, row.rps, row.cpu, strict=True):
        rps.append(r / ((base.rps[k] + base.rps[k + 1]) / 2))
        cpu.append((base.cpu[k] + base.cpu[k + 1]) / 2 / c)
    return rps, cpu


def spread(xs: Sequence[float]) -> str:
    return f"{min(xs):.2f}-{max(xs):.2f}"


def print_load(when: str) -> None:
    """The machine's load average beside its cores: above the cores, requests/s move
    with the other load by several times within a few seconds, CPU per request far less."""
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    note = ": read the CPU ratios" if load > cores else ""
    print(f"(load {load:.1f} on {cores} cores {when}{note})", flush=True)


def print_row(label: str, got: tuple[float, ...], rps: list[float], cpu: list[float]) -> None:
    """A row: median figures, then median ratios each with the range of the rounds'."""
    print(
        f"{label:52} {got[0]:8.0f} {got[1]:8.2f} {got[2]:8.2f} "
        f"{statistics.median(rps):6.2f}x {spread(rps):>9} "
        f"{got[3]:9.2f} {statistics.median(cpu):6.2f}x {spread(cpu):>9}",
        flush=True,
    )


def print_base(row: Served) -> None:
    """A baseline's row; its spread is of its own requests/s (and CPU) over the
    rounds, relative to their median: how much the machine moved meanwhile."""
    got = row.figures()
    print_row(row.label, got, [r / got[0] for r in row.rps], [got[3] / c for c in row.cpu])


def bare_hypercorn(backend: str) -> AbstractContextManager[Served]:
    """The baseline: bare hypercorn with ``backend``'s worker serving a hello ASGI app."""
    hello = Path("/tmp/trio_isyswasfa_bench_hello.py")
    hello.write_text(HELLO_APP)
    port = free_port()
    command = [sys.executable, "-m", "hypercorn", "--worker-class", backend]
    command += ["--bind", f"127.0.0.1:{port}", "trio_isyswasfa_bench_hello:app"]
    return served(f"bare hypercorn, hello app ({backend})", open_process(command, port), base=None)


def print_header(seconds: int, connections: int, n: int) -> None:
    print(
        f"wrk -t1 -c{connections} -d{seconds}s, GET with an empty body, loopback, {n} rounds"
        " (every server up at once, each loaded in turn just after the baseline)"
    )
    print(
        f"{'server':52} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>7} {'range':>9} "
        f"{'CPU ms/r':>9} {'ratio':>7} {'range':>9}"
    )
    print("(medians over the rounds; a ratio is to the bare server's runs just before and after")
    print(" this one's, its range that of the rounds' ratios; CPU ms/r: the server's")
    print(" CPU time per request, all its threads, its ratio the baseline's over this one's,")
    print(" which the machine's other load sways less; a baseline's range is of its own")
    print(" figures over their median)")


def serve_command(service: Path, port: int, backend: str, policy: str, most: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trio_isyswasfa",
        "serve",
        str(service),
        "--addr",
        f"127.0.0.1:{port}",
        "--backend",
        backend,
        "--no-access-log",
        "--instances",
        policy,
        "--max-instances",
        str(most),
    ]


def throughput(
    seconds: int,
    connections: int,
    backends: tuple[str, ...] = ("trio", "asyncio"),
    policies: tuple[str, ...] = ("shared", "pooled", "per-request"),
    languages: tuple[str, ...] = ("python", "rust"),
    before: Path | None = None,
    n: int = 5,
) -> None:
    """Our serve with the service example in each of ``languages`` (each of
    ``policies``, at most 32 instances) against bare hypercorn, in ``n`` interleaved
    rounds. With ``before``, each row also from that tree's package."""
    services = {}
    for language in ("python", "rust"):
        if language in languages:
            try:
                services[language] = example("service", language)
            except RustToolchainMissing as exc:
                print(f"(no Rust service example: {exc})")
    print_header(seconds, connections, n)
    for backend in backends:
        with contextlib.ExitStack() as stack:
            base = stack.enter_context(bare_hypercorn(backend))
            rows = [base]
            for (language, service), (policy, most), root in [
                (s, (p, 32), r)
                for s in services.items()
                for p in policies
                for r in ([before, ROOT] if before else [ROOT])
            ]:
                port = free_port()
                name = "service.wasm" if language == "python" else "service (Rust)"
                label = f"serve {name} ({backend}, {policy}, max {most}"
                label += ", before)" if root is before else ")"
                command = serve_command(service, port, backend, policy, most)
                opened = open_process(command, port, root)
                rows.append(stack.enter_context(served(label, opened, "bare")))
            print_load("before")
            rounds(rows, seconds, connections, n)
            print_load("after")
        print_base(base)
        for row in rows[1:]:
            print_row(row.label, row.figures(), *ratios(row, base))
    print("goal: serve >= 0.50x the bare server's requests/s (>= 0.7x with the Rust service)")


def proxy_components() -> dict[str, Path]:
    """The hello proxy guests that build here, by language."""
    here = ROOT / "tests" / "guests"
    built = {
        "python": build_python_component(
            here / "proxy-py-std" / "wit", "proxy-app", "app", [here / "proxy-py-std"]
        )
    }
    try:
        built["rust"] = build_rust_component(here / "proxy-rust", adapter="proxy")
    except RustToolchainMissing as exc:
        print(f"(no Rust proxy guest: {exc})")
    try:
        built["js"] = build_js_component(
            here / "proxy-js" / "app.js", here / "proxy-py-std" / "wit", "proxy-app"
        )
    except JsToolchainMissing as exc:
        print(f"(no JavaScript proxy guest: {exc})")
    return built


def open_served(
    server: hd.Server, component: Path, extra: list[str], root: Path | None = None
) -> AbstractContextManager[str]:
    """``component`` served by ``server``; its URL once it answered hello. With ``root``,
    our serve runs the package of that tree (``--before``)."""
    if root is not None:
        port = free_port()
        command = hd.server_command("ours", component, allow_outgoing=(), extra_args=extra)
        command[command.index("127.0.0.1:0")] = f"127.0.0.1:{port}"
        return open_process(command, port, root=root)
    return _checked_server(server, component, extra)


@contextlib.contextmanager
def _checked_server(server: hd.Server, component: Path, extra: list[str]) -> Iterator[str]:
    with hd.open_server(server, component, extra_args=extra) as addr:
        hello = hd.exchange(addr, hd.Exchange("hello", "GET", "/"))
        if (hello.status, hello.body) != (200, b"hello, world\n"):
            raise NotServed(f"n/a (answers {hello.status} {hello.body[:20]!r})")
        yield f"http://{addr}/"


class NotServed(Exception):
    """A row that could not be measured; the message says why, short."""


def proxy_throughput(
    seconds: int,
    connections: int,
    engines: tuple[str, ...] = ("own",),
    backends: tuple[str, ...] = ("trio", "asyncio"),
    languages: tuple[str, ...] = ("python", "rust", "js"),
    policies: tuple[str, ...] = ("per-request", "pooled", "shared"),
    wasmtime: bool = True,
    before: Path | None = None,
    n: int = 5,
) -> None:
    """The hello route of the standard proxy guests: wasmtime serve (unless not
    ``wasmtime``) and ours (on each of ``engines``, each of ``backends``, each of
    ``policies``; with ``before``, each row of ours also from that tree), each against
    bare hypercorn of its worker class in ``n`` interleaved rounds."""
    if hd.missing_server("wasmtime"):
        print(f"(no wasmtime serve rows: {hd.missing_server('wasmtime')})")
    print_header(seconds, connections, n)
    print("wasi:http/proxy hello guests (GET /), ratio to bare hypercorn of the same worker")
    print("class (trio for wasmtime serve); wasmtime's default is an instance per request")
    for language, component in proxy_components().items():
        if language not in languages:
            continue
        runs: list[tuple[str, hd.Server, list[str], str, Path | None]] = []
        if wasmtime and not hd.missing_server("wasmtime"):
            runs += [
                ("default", "wasmtime", [], "trio", None),
                ("reuse 128", "wasmtime", ["--max-instance-reuse-count", "128"], "trio", None),
            ]
        for engine in engines:
            for backend in backends:
                for policy in policies:
                    extra = ["--backend", backend, "--instances", policy, "--engine", engine]
                    what = f"{backend}, {policy}, {engine}"
                    if before is not None:  # both trees started alike
                        runs.append((f"{what}, before", "ours", extra, backend, before))
                    runs.append((what, "ours", extra, backend, ROOT if before else None))
        for backend in dict.fromkeys(run[3] for run in runs):
            with contextlib.ExitStack() as stack:
                base = stack.enter_context(bare_hypercorn(backend))
                rows = [base]
                for what, server, extra, _, root in runs:
                    if _ != backend:
                        continue
                    name = "wasmtime serve" if server == "wasmtime" else "serve"
                    label = f"{name}, {language} ({what})"
                    try:
                        opened = open_served(server, component, extra, root)
                        rows.append(stack.enter_context(served(label, opened, "bare")))
                    except (NotServed, RuntimeError, hd.ServerFailed) as exc:
                        why = str(exc) if isinstance(exc, NotServed) else "n/a (host not supported)"
                        print(f"{label:52} {why[:34]:>34}", flush=True)
                print_load("before")
                rounds(rows, seconds, connections, n)
                print_load("after")
            print_base(base)
            default = next((r for r in rows if r.label.endswith("(default)")), None)
            for row in rows[1:]:
                print_row(row.label, row.figures(), *ratios(row, base))
                if default is not None and "per-request" in row.label:
                    got, wasm = row.figures(), default.figures()
                    print(
                        f"{'':52} {got[0] / wasm[0]:.2f}x wasmtime's default"
                        f" ({wasm[3] / got[3]:.2f}x by CPU)"
                    )
    print("goals: ours >= 0.50x bare hypercorn; per-request >= 2x wasmtime serve's default")


async def fan_out(n: int = 100, delay: float = 0.05, language: str = "python") -> None:
    """hash-all through ``serve`` over ``n`` URLs of bench/loadgen.py's upstream (its own
    process: an upstream in this process spent more of the event loop than the guest's
    whole fan-out), against one upstream GET measured in the same run."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # run as a script: bench/ is not a package then
    from bench.bench_hash_all import host_get
    from bench.loadgen import open_upstream_process

    component = trio_isyswasfa.load_component(example("hash-all", language))
    async with (
        trio.open_nursery() as nursery,
        open_upstream_process(round(delay * 1000)) as up,
        HttpClient(
            allow=["127.0.0.1:*"], max_connections_per_origin=n, max_idle_per_origin=n
        ) as client,
    ):
        await host_get(client, f"{up}/0")  # a warm keep-alive connection
        laps = []
        for _ in range(10):
            start = time.perf_counter()
            await host_get(client, f"{up}/0")
            laps.append(time.perf_counter() - start)
        one = sorted(laps)[len(laps) // 2]
        app = ComponentApp(component, wasi=trio_isyswasfa.WasiConfig(http_outgoing=client.send))
        (url,) = await nursery.start(
            lambda task_status: serve(
                app, bind=["127.0.0.1:0"], access_log=False, task_status=task_status
            )
        )
        headers = [("url", f"{up}/{i}") for i in range(n)]
        async with httpx.AsyncClient(timeout=60) as http:
            await http.get(f"{url}/", headers=headers)  # warm up: the connections opened
            runs = []
            for _ in range(3):
                guest_before = app.statistics().guest_seconds
                start = time.perf_counter()
                response = await http.get(f"{url}/", headers=headers)
                elapsed = time.perf_counter() - start
                await app.wait_idle()  # the server counts a request once it has finished
                runs.append((elapsed, app.statistics().guest_seconds - guest_before))
                assert len(response.text.splitlines()) == n
        best, guest = min(runs)
        print(
            f"hash-all ({language} guest) over {n} URLs answering in {delay * 1000:.0f} ms: "
            f"{best * 1000:.0f} ms = {best / one:.2f}x one upstream GET ({one * 1000:.1f} ms, "
            f"this run; goal <= 1.5x); {guest * 1000:.0f} ms of it running guest code "
            "(python -m bench.bench_hash_all --profile: where the rest goes)"
        )
        nursery.cancel_scope.cancel()


SLOW_PATH = "/stream"
SLOW_LINES = 10  # lines of the body, 10 ms apart


async def _slow_request(app: ComponentApp, lines: int = SLOW_LINES) -> bytes:
    """One GET of the slow path, straight into the ASGI app; the body it answered."""
    return (await asgi_request(app, SLOW_PATH, query=f"n={lines}")).body


async def _cpu_per_request(
    component: trio_isyswasfa.Component, policy: str, spares: int, n: int, body: bytes = b""
) -> tuple[float, float]:
    """CPU ms and guest ms per hello request into the ASGI app, one after another,
    ``n`` requests after three to warm up (with request body ``body``: the service
    example echoes it)."""
    app = ComponentApp(
        component,
        instances=policy,  # type: ignore[arg-type]
        spare_instances=spares,
    )
    async with open_lifespan(app):
        for _ in range(3):
            await asgi_request(app)
        guest = app.statistics().guest_seconds
        cpu = time.process_time()
        for _ in range(n):
            assert (await asgi_request(app, body=body)).body.startswith(b"hello")
        cpu = time.process_time() - cpu
        guest = app.statistics().guest_seconds - guest
    return cpu / n * 1e3, guest / n * 1e3


def in_process(engines: tuple[str, ...], languages: tuple[str, ...], n: int) -> None:
    """The host's CPU per request, without HTTP: hello requests straight into the ASGI
    app, for each proxy guest, engine and policy; the ratio is to ``pooled`` on the
    stock engine (what a request costs without opening an instance). Then the same for
    the isyswasfa service example (it echoes a 5-byte body), ``shared`` and ``pooled``,
    the ratio to stock ``shared``."""
    print("hello requests straight into the ASGI app, one after another (no HTTP, no")
    print("hypercorn): CPU ms per request, guest ms of it (wall), ratio to stock pooled's CPU")
    runs = [("pooled", 0), ("per-request", 0), ("per-request", 2)]
    guests: list[tuple[str, Path, list[tuple[str, int]], bytes]] = [
        (language, path, runs, b"") for language, path in proxy_components().items()
    ]
    for language in ("python", "rust"):
        try:
            path = example("service", language)
        except RustToolchainMissing as exc:
            print(f"(no Rust service example: {exc})")
            continue
        guests.append((f"{language} service", path, [("shared", 0), ("pooled", 0)], b"hello"))
    for name, path, policies, body in guests:
        if name.split()[0] not in languages:
            continue
        for reps in (n, 16 * n):
            base: float | None = None
            for engine in ("wasmtime", *[e for e in engines if e != "wasmtime"]):
                component = trio_isyswasfa.load_component(path, engine=engine)
                for policy, spares in policies:
                    cpu, guest = trio.run(_cpu_per_request, component, policy, spares, reps, body)
                    base = base or cpu
                    what = policy + (f", {spares} spares" if policy == "per-request" else "")
                    label = f"{name}, {engine}, {what} (x{reps})"
                    print(f"{label:52} {cpu:8.2f} {guest:8.2f} {cpu / base:6.2f}x", flush=True)


async def slow_requests(policy: str, n: int, lines: int = SLOW_LINES) -> dict[str, float]:
    """``n`` concurrent requests to one app with instance policy ``policy``, each body
    ``lines`` lines written 10 ms apart."""
    import resource

    here = ROOT / "tests" / "guests" / "http"
    component = trio_isyswasfa.load_component(
        build_python_guest(here / "wit", "http-guest", "app", [here / "src"])
    )
    app = ComponentApp(component, instances=policy, max_instances=32)  # type: ignore[arg-type]
    async with open_lifespan(app):
        await _slow_request(app)  # warm up: one instance opened, its guest initialised
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cpu_before = time.process_time()
        start = time.perf_counter()
        bodies: list[bytes] = []

        async def one() -> None:
            bodies.append(await _slow_request(app, lines))

        async with trio.open_nursery() as requests:
            for _ in range(n):
                requests.start_soon(one)
        wall = time.perf_counter() - start
        stats = app.statistics()
        assert stats.completed == n + 1, stats
        assert all(b.count(b"\n") == lines for b in bodies)
    return {
        "wall": wall,
        "cpu": time.process_time() - cpu_before,
        "instances": stats.instances_opened,
        "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before,
    }


def print_slow(sizes: list[int]) -> None:
    import json

    print("N concurrent requests whose guest writes its body over 100 ms, in-process ASGI,")
    print("at most 32 instances (shared: up to 16 requests each)")
    print(f"{'policy':10} {'N':>6} {'wall s':>8} {'CPU ms/req':>10} {'instances':>9} {'MiB':>6}")
    for n in sizes:
        for policy in ("pooled", "shared"):
            out = subprocess.run(
                [sys.executable, "-m", "bench.bench_serve", "--one-slow", policy, str(n)],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            )
            fig = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{policy:10} {n:>6} {fig['wall']:>8.2f} {fig['cpu'] / n * 1000:>10.2f}"
                f" {fig['instances']:>9} {fig['rss_kib'] / 1024:>6.0f}",
                flush=True,
            )


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--seconds", type=int, default=2, help="seconds of wrk a row in each round (default 2)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="rounds of the throughput rows, every server loaded in turn in each (default 5)",
    )
    p.add_argument("--connections", type=int, default=64)
    p.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="seconds of load before each measurement (pooled instances open meanwhile)",
    )
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-proxy", action="store_true")
    p.add_argument("--skip-fan-out", action="store_true")
    p.add_argument(
        "--engines",
        default="own",
        help="comma-separated engines our serve runs the proxy guests on (own,wasmtime;"
        " own, serve's default, unless given)",
    )
    p.add_argument(
        "--backends", default="trio,asyncio", help="comma-separated worker classes (trio,asyncio)"
    )
    p.add_argument(
        "--languages",
        default="python,rust,js",
        help="the guests to serve (python,rust,js; the service example: python,rust)",
    )
    p.add_argument(
        "--policies",
        default="per-request,pooled,shared",
        help="comma-separated instance policies of the proxy rows",
    )
    p.add_argument(
        "--skip-wasmtime", action="store_true", help="no wasmtime serve rows for the proxies"
    )
    p.add_argument(
        "--slow", default="200", help="comma-separated N for slow requests ('' for none)"
    )
    p.add_argument(
        "--in-process",
        type=int,
        default=0,
        metavar="N",
        help="CPU per hello request straight into the ASGI app, N and 16N requests "
        "(each --engines, each --languages), then stop",
    )
    p.add_argument(
        "--before",
        type=Path,
        metavar="TREE",
        help="also run each row of ours (service example and proxies) from the package in"
        " TREE (a tree holding trio_isyswasfa/, e.g. `git archive main trio_isyswasfa`), just"
        " before this one's",
    )
    p.add_argument("--one-slow", nargs=2, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    WARMUP[0] = args.warmup
    if args.in_process:
        in_process(
            tuple(args.engines.split(",")), tuple(args.languages.split(",")), args.in_process
        )
        return
    if args.one_slow:
        import json

        policy, n = args.one_slow
        print(json.dumps(trio.run(slow_requests, policy, int(n))))
        return
    if args.rounds < 1:
        sys.exit("--rounds needs at least 1")
    if not (args.skip_throughput and args.skip_proxy):
        if shutil.which("wrk") is None:
            sys.exit("wrk is not installed: bash .ci/install-bench-tools")
        sys.path.insert(0, "/tmp")
    if not args.skip_throughput:
        throughput(
            args.seconds,
            args.connections,
            tuple(args.backends.split(",")),
            tuple(args.policies.split(",")),
            tuple(args.languages.split(",")),
            args.before.resolve() if args.before else None,
            args.rounds,
        )
    if not args.skip_proxy:
        proxy_throughput(
            args.seconds,
            args.connections,
            tuple(args.engines.split(",")),
            tuple(args.backends.split(",")),
            tuple(args.languages.split(",")),
            tuple(args.policies.split(",")),
            not args.skip_wasmtime,
            args.before.resolve() if args.before else None,
            args.rounds,
        )
    if not args.skip_fan_out:
        trio.run(fan_out)
        try:
            trio.run(functools.partial(fan_out, language="rust"))
        except RustToolchainMissing as exc:
            print(f"hash-all (rust guest): not built: {exc}")
    if args.slow:
        print_slow([int(n) for n in args.slow.split(",")])


if __name__ == "__main__":
    main()
