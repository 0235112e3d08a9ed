"""Loading with our own engine against the stock one (issue 12): reading and instantiating.

    python -m bench.bench_engine_load [--load-only] [--rows ROWS] [--guests GUESTS]
                                      [--before TREE]

Each row measures at N and 16N and prints the per-item time, so that growth that is
not linear shows, and a ratio to a baseline measured in the same run (both engines
timed round robin, the best round of each counting). Not run in CI.

Rows:

* read component: our reader on a componentize-py guest (about 20 MB), one read and
  sixteen; the baseline is what loading costs today with a warm cache (wasmtime
  deserialising the compiled component), which reading must stay far below.
* open an instance: ``OwnEngineInstance`` against the stock ``EngineInstance``, both
  with the same host functions, for a WAT component (one core module, two host
  imports), for the componentize-py guest (14 core modules, ~2,300 core imports,
  every WASI import served by our WASI host functions) and for the hello proxy guests
  of ``bench_serve`` (componentize-py's, 14 core modules; and the Rust one, 4, when the
  Rust toolchain is here; their ``wasi:http`` imports served by functions that fail if
  called), and the Rust service example (isyswasfa's own guest crate, 3 core modules),
  N = 10 and 160 instances one after another. The component is read and
  compiled once; each instance is made and closed. For ours, the floor under it is
  printed too: the time spent in the wasmtime C API calls that instantiating these
  core modules needs at the least (``wasmtime_instance_new`` for each, and
  ``wasmtime_instance_export_get`` for each distinct item they import from each other),
  measured inside the same instantiations (the best one).
* memory: resident set growth per live instance (``/proc/self/statm``), 16 kept.
* load a component file: ``load_file`` on each engine, with a warm cache (what ``run``
  does before its instance), for the C hello and the Python hello of ``bench_cli``: the
  baseline is the wasmtime engine's load (deserialising the compiled component; the
  file's digest remembered by its ``stat``); ours reads the file and the component,
  finds its compiled core modules and makes the instance plan. Each load of ours
  starts with no compiled module held in the process, as a new ``run`` does.
  ``--load-only`` runs only these rows (no componentize-py build of the cases guest).
* first instance: what ``run`` pays for its one instance, in fresh processes (bytecode
  cached): the CPU time of importing the host, loading the file (warm cache), opening
  the first instance and then a second one, with the real WASI host
  (``_host.Instance``), medians of N and 16N runs for the C hello and the Python hello,
  on each engine; the baseline is the wasmtime engine's first instance. ``--before
  TREE`` runs ours from another checkout of the package too (``git worktree add`` or
  ``git archive REV | tar -x -C TREE``), for before/after figures from one run.

``--rows`` picks rows (``load,read,open,first``; all by default) and ``--guests`` the
guests of the "open an instance" rows (``wat,cases,python,rust,service``) and of the "first
instance" rows (``c,python``).

Times are wall-clock; the CPU time of the process is printed too, which the other
processes of a shared machine inflate far less.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from trio_isyswasfa import _digests, _engine, _seam
from trio_isyswasfa._errors import HostProtocolError
from trio_isyswasfa._host import interface_key
from trio_isyswasfa.engine._component import OwnEngineInstance
from trio_isyswasfa.engine._instance import _MODULES
from trio_isyswasfa.engine._reader import read_component
from trio_isyswasfa.testing import RustToolchainMissing, build_python_guest, build_wat_component
from trio_isyswasfa.testing.conformance import build_c, build_python
from trio_isyswasfa.wasi import WasiConfig
from trio_isyswasfa.wasi._context import WasiContext
from trio_isyswasfa.wasi.cli import WasiCli
from trio_isyswasfa.wasi.clocks import WasiClocks
from trio_isyswasfa.wasi.filesystem import WasiFilesystem
from trio_isyswasfa.wasi.io import WasiIo
from trio_isyswasfa.wasi.random import WasiRandom
from trio_isyswasfa.wasi.sockets import WasiSockets, parse_allow_net

from .bench_engine import RUN_WAT, RUN_WIT, run_resolver

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "guests" / "cases"
CLI_GUESTS = ROOT / "bench" / "cli_guests"
ABI = "isyswasfa:isyswasfa/isyswasfa"


def per_item(fn: Callable[[], object], n: int, runs: int = 5) -> float:
    """Median over ``runs`` of the time per call of ``n`` calls of ``fn``, in ms."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - start) / n * 1e3)
    return statistics.median(times)


def round_robin(
    fns: dict[str, Callable[[], object]], n: int, rounds: int = 5
) -> tuple[dict[str, float], dict[str, float]]:
    """ms per call of each of ``fns``, ``n`` calls a round, rounds interleaved so that
    the shared machine's load falls on all alike; the best round counts. Gives the
    wall-clock time and the process's CPU time (which the other processes on a shared
    machine inflate much less)."""
    wall = dict.fromkeys(fns, float("inf"))
    cpu = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                fn()
            cpu[name] = min(cpu[name], (time.process_time() - start_cpu) / n * 1e3)
            wall[name] = min(wall[name], (time.perf_counter() - start) / n * 1e3)
    return wall, cpu


def report(label: str, ms: float, baseline: float, note: str = "") -> None:
    print(f"{label:50} {ms:9.3f} ms  {ms / baseline:7.3f}x baseline  {note}")


def wasi_resolver(
    *, http: bool = False, draft: bool = False
) -> Callable[[_engine.ImportedItem], _engine.Resolved]:
    """Our WASI host functions, as the host registers them (``wasi:http@0.2`` too with
    ``http``, ``wasi:http@0.3.0-draft`` with ``draft``); the isyswasfa resources as plain
    resources; any other import a function that fails if called."""
    wasi = WasiContext(WasiConfig())
    if http:
        from trio_isyswasfa.http.wasi_http import WasiHttpP2

        WasiHttpP2(wasi, None, lambda work: None)
    if draft:
        from trio_isyswasfa.http.types import WasiHttp

        WasiHttp(wasi, None)
    io = WasiIo(wasi)
    WasiClocks(wasi, io)
    WasiRandom(wasi)
    WasiCli(wasi)
    WasiFilesystem(wasi, io)
    WasiSockets(wasi, parse_allow_net(()))

    def missing(*_args: Any) -> Any:
        raise HostProtocolError("not served in this bench")

    def resolve(item: _engine.ImportedItem) -> _engine.Resolved:
        key = (interface_key(item.interface), item.name)
        if item.func_type is None:
            if key[0] == ABI:
                return _engine.ResourceDef(_engine.ResourceKind.READY, lambda rep: None)
            return wasi.resources.get(key)
        return wasi.functions.get(key) or missing

    return resolve


def rss() -> int:
    """This process's resident set now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_per_instance(make: Callable[[], Any], keep: int = 16) -> float:
    """Resident set growth per live instance, in MB, ``keep`` instances alive."""
    gc.collect()
    before = rss()
    live = [make() for _ in range(keep)]
    grown = rss() - before
    for inst in live:
        inst.close()
    return grown / keep / 1e6


def instantiate_rows(
    label: str, data: bytes, resolve: Callable[[_engine.ImportedItem], Any], n: int
) -> None:
    """Open (and close) instances of ``data`` on both engines, N and 16N of them."""
    raw = _engine.compile_component(data)
    plan, exports = _engine.LinkPlan(raw), _engine.component_exports(raw)
    read = read_component(data)

    def stock() -> _engine.EngineInstance:
        return _engine.EngineInstance(plan, exports, resolve)

    def ours() -> OwnEngineInstance:
        return OwnEngineInstance(read, resolve)

    floors: list[float] = []

    def ours_timed() -> None:
        inst = ours()
        stats = inst.root.statistics()
        floors.append((stats.wasmtime_seconds + stats.fetch_seconds) * 1e3)
        inst.close()

    stats = ours().root.statistics()  # the first one makes the plan
    stock().close()
    print(
        f"-- {label}: {stats.core_instances} core instances, {stats.imports} core imports "
        f"({stats.fetched} distinct items fetched or made)"
    )
    for reps in (n, 16 * n):
        floors.clear()
        t, cpu = round_robin({"ours": ours_timed, "stock": lambda: stock().close()}, reps)
        report(f"open an instance, ours  (x{reps})", t["ours"], t["stock"], "goal ≤ 1 ms")
        floor = min(floors)
        report(
            f"  of which wasmtime's C API  (x{reps})",
            floor,
            t["stock"],
            f"(the floor: {t['ours'] / floor:.1f}x of it in all)",
        )
        report(f"open an instance, stock  (x{reps})", t["stock"], t["stock"])
        report(f"  CPU time, ours  (x{reps})", cpu["ours"], cpu["stock"], "baseline: stock's")
    mine, theirs = rss_per_instance(ours), rss_per_instance(stock)
    print(f"resident memory per live instance: ours {mine:.2f} MB, stock {theirs:.2f} MB")


def load_rows(n: int) -> None:
    """Load each ``bench_cli`` guest from its file on both engines, N and 16N times."""
    guests = {
        "C hello": build_c(CLI_GUESTS / "hello.c"),
        "Python hello": build_python(CLI_GUESTS / "python" / "hello.py"),
    }
    for label, path in guests.items():
        for engine in ("own", "wasmtime"):  # compile once, remember the digest
            _seam.load_file(path, engine=engine)
        with mock.patch.object(_digests, "SETTLED_SECONDS", -60.0):  # built just now
            _digests.read_and_digest(_engine.cache_dir() / "digests", path)

        def own(path: Path = path) -> object:
            _MODULES.clear()  # as in a new process: deserialise the compiled modules
            return _seam.load_file(path, engine="own")

        def stock(path: Path = path) -> object:
            return _seam.load_file(path, engine="wasmtime")

        print(f"-- load {label} ({path.stat().st_size / 1e6:.1f} MB) from its file, warm cache")
        for reps in (n, 16 * n):
            t, cpu = round_robin({"own": own, "wasmtime": stock}, reps)
            report(f"load, ours  (x{reps})", t["own"], t["wasmtime"])
            report(f"load, wasmtime engine  (x{reps})", t["wasmtime"], t["wasmtime"])
            report(
                f"  CPU time, ours  (x{reps})",
                cpu["own"],
                cpu["wasmtime"],
                f"baseline: the wasmtime engine's, {cpu['wasmtime']:.1f} ms",
            )


# what one fresh process does for ``first_rows``: CPU ms of each phase, on one line
_FIRST = """
import sys, time
from pathlib import Path
clock = time.process_time
start = clock()
from trio_isyswasfa import _host
from trio_isyswasfa.wasi import WasiConfig
imported = clock()
component = _host.load_component(Path(sys.argv[1]), engine=sys.argv[2])
loaded = clock()
times = [imported - start, loaded - imported]
for _ in range(2):
    before = clock()
    _host.Instance(component, {}, WasiConfig(stdout=None, stderr=None))._engine.close()
    times.append(clock() - before)
print(" ".join(f"{t * 1e3:.3f}" for t in times))
"""
_PHASES = ("import the host", "load the file", "first instance", "second instance")


def first_instance(tree: Path, path: Path, engine: str, env: dict[str, str]) -> list[float]:
    """CPU ms of each of :data:`_PHASES` in one fresh process running ``tree``'s package."""
    out = subprocess.run(
        [sys.executable, "-c", _FIRST, str(path), engine],
        env={**env, "PYTHONPATH": str(tree)},
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [float(x) for x in out.split()]


def first_rows(n: int, before: Path | None, which: set[str]) -> None:
    """Import, load and the first two instances of each ``bench_cli`` guest in fresh
    processes, N and 16N of them, medians of their CPU times (``which``: ``c``,
    ``python``)."""
    guests = {}
    if "c" in which:
        guests["C hello"] = build_c(CLI_GUESTS / "hello.c")
    if "python" in which:
        guests["Python hello"] = build_python(CLI_GUESTS / "python" / "hello.py")
    trees = {"ours": (ROOT, "own"), "wasmtime engine": (ROOT, "wasmtime")}
    if before is not None:
        trees["ours before"] = (before.resolve(), "own")
    with tempfile.TemporaryDirectory(prefix="bench-load-pyc-") as pyc:
        env = {**os.environ, "PYTHONPYCACHEPREFIX": pyc}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for label, path in guests.items():
            for tree, engine in trees.values():  # compiled and bytecode cached
                first_instance(tree, path, engine, env)
            print(f"-- {label}: CPU ms per fresh process, median (the first instance vs a second)")
            for reps in (n, 16 * n):
                samples: dict[str, list[list[float]]] = {name: [] for name in trees}
                for _ in range(reps):  # interleaved, so the load falls on all alike
                    for name, (tree, engine) in trees.items():
                        samples[name].append(first_instance(tree, path, engine, env))
                medians = {
                    name: [statistics.median(s[i] for s in runs) for i in range(len(_PHASES))]
                    for name, runs in samples.items()
                }
                baseline = medians["wasmtime engine"][2]
                for name, phases in medians.items():
                    for phase, ms in zip(_PHASES, phases, strict=True):
                        report(f"{phase}, {name}  (x{reps})", ms, baseline)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_engine_load",
        description=__doc__.split("\n")[0] if __doc__ else None,
    )
    p.add_argument("--load-only", action="store_true", help="only the component-file loads")
    p.add_argument(
        "--rows", default="load,read,open,first", help="rows to run (load,read,open,first)"
    )
    p.add_argument(
        "--guests", default="wat,cases,python,rust,service", help="guests of the open rows"
    )
    p.add_argument("--before", type=Path, help="a checkout of the package to compare (first)")
    p.add_argument("--n", type=int, default=4, help="fresh processes in the first round (first)")
    return p


def main(argv: list[str] | None = None) -> None:
    """Run the rows (``--load-only``: the file loads alone)."""
    args = parser().parse_args(argv)
    rows = {"load"} if args.load_only else set(args.rows.split(","))
    if "load" in rows:
        load_rows(2)
    if "read" in rows:
        read_rows()
    if "open" in rows:
        open_rows(set(args.guests.split(",")))
    if "first" in rows:
        first_rows(args.n, args.before, set(args.guests.split(",")))


def read_rows() -> None:
    """Our reader on the componentize-py cases guest, against the stock load."""
    wasm = build_python_guest(CASES / "wit", "cases-guest", "app", [CASES / "src"])
    data = wasm.read_bytes()
    _engine.compile_component(data)  # warm the compile cache for the baseline
    baseline = per_item(lambda: _engine.compile_component(data), 1)
    print(f"guest: {len(data) / 1e6:.1f} MB; baseline (stock load, warm cache): {baseline:.1f} ms")
    for n in (1, 16):
        report(
            f"read component x{n} (per read)", per_item(lambda: read_component(data), n), baseline
        )


def open_rows(guests: set[str]) -> None:
    """The "open an instance" rows of ``guests``."""
    with tempfile.TemporaryDirectory() as tmp:
        wit = Path(tmp) / "w.wit"
        wit.write_text(RUN_WIT)
        wat = build_wat_component(wit, "w", RUN_WAT)
    if "wat" in guests:
        instantiate_rows("WAT component", wat, run_resolver(b"", []), 100)
    if "cases" in guests:
        cases = build_python_guest(CASES / "wit", "cases-guest", "app", [CASES / "src"])
        instantiate_rows("componentize-py guest", cases.read_bytes(), wasi_resolver(), 10)
    if "service" in guests:
        from .bench_serve import example

        try:
            service = example("service", "rust")
        except RustToolchainMissing as exc:
            print(f"(no Rust service example: {exc})")
        else:
            resolve = wasi_resolver(draft=True)
            instantiate_rows("Rust service example", service.read_bytes(), resolve, 10)
    if guests & {"python", "rust"}:
        from .bench_serve import proxy_components

        for language, path in proxy_components().items():
            if language in guests:
                resolve = wasi_resolver(http=True)
                instantiate_rows(f"{language} hello proxy", path.read_bytes(), resolve, 10)


if __name__ == "__main__":
    main()
