"""Loading with our own engine against the stock one (issue 12): reading and instantiating.

    python -m bench.bench_engine_load

Each row measures at N and 16N and prints the per-item time, so that growth that is
not linear shows, and a ratio to a baseline measured in the same run. Not run in CI.

Rows so far:

* read component: our reader on a componentize-py guest (about 20 MB), one read and
  sixteen; the baseline is what loading costs today with a warm cache (wasmtime
  deserialising the compiled component), which reading must stay far below.
* instantiate core modules: all core instances of that guest (72, in three component
  instances) made by ``engine._instance.CoreInstances`` from compiled modules, every
  canon function a trapping stub; the baseline is wasmtime's own instantiation of the
  compiled component with every import a trap.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import wasmtime
import wasmtime.component as wc

from trio_isyswasfa import _engine
from trio_isyswasfa.engine._instance import CoreInstances, Trampoline, compile_modules
from trio_isyswasfa.engine._reader import read_component
from trio_isyswasfa.testing import build_python_guest

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "guests" / "cases"


def per_item(fn: Callable[[], object], n: int, runs: int = 5) -> float:
    """Median over ``runs`` of the time per call of ``n`` calls of ``fn``, in ms."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - start) / n * 1e3)
    return statistics.median(times)


def report(label: str, ms: float, baseline: float, note: str = "") -> None:
    print(f"{label:44} {ms:9.2f} ms  {ms / baseline:6.3f}x baseline  {note}")


def stub(store: wasmtime.Store) -> Trampoline:
    def trampoline(d: object, ty: wasmtime.FuncType, callee: object) -> wasmtime.Func:
        """A core function of type ``ty`` that traps."""

        def trap(*args: object) -> None:
            raise RuntimeError("stub")

        return wasmtime.Func(store, ty, trap)

    return trampoline


def main() -> None:
    wasm = build_python_guest(CASES / "wit", "cases-guest", "app", [CASES / "src"])
    data = wasm.read_bytes()
    _engine.compile_component(data)  # warm the compile cache for the baseline
    baseline = per_item(lambda: _engine.compile_component(data), 1)
    print(f"guest: {len(data) / 1e6:.1f} MB; baseline (stock load, warm cache): {baseline:.1f} ms")
    for n in (1, 16):
        report(
            f"read component x{n} (per read)", per_item(lambda: read_component(data), n), baseline
        )

    eng = _engine.engine()
    compiled_component = _engine.compile_component(data)
    linker = wc.Linker(eng)
    linker.define_unknown_imports_as_traps(compiled_component)

    def stock_instance() -> None:
        store = wasmtime.Store(eng)
        store.set_epoch_deadline(1 << 40)
        linker.instantiate(store, compiled_component)

    read = read_component(data)
    modules = compile_modules(read)

    def our_instance() -> None:
        store = wasmtime.Store(eng)
        store.set_epoch_deadline(1 << 40)
        CoreInstances(read, store, trampoline=stub(store), compiled=modules)

    baseline = per_item(stock_instance, 4)
    print(f"baseline (wasmtime instantiates the component, imports trapping): {baseline:.1f} ms")
    for n in (1, 16):
        report(f"instantiate core modules x{n} (per instance)", per_item(our_instance, n), baseline)


if __name__ == "__main__":
    main()
