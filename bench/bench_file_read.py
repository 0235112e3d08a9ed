"""A Python command guest reading a file into itself, through ``python -m trio_isyswasfa
run`` on each engine (issue 12's table).

    python -m bench.bench_file_read [--mb 64]

The guest (``bench/guests/read-file``) reads a file from a preopened directory in 1 MiB
reads and times the reads itself (start-up is not counted). Each engine runs it on a
file of ``--mb`` MB in fresh processes, round robin, best of three. Prints MB/s per engine and the ratio to the stock engine. (The guest is
built for isyswasfa, so ``wasmtime run`` cannot run it; issue 12 measured ~2 GB/s for
it on a plain build.) Goal: 1 GB/s. Not run in CI.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from trio_isyswasfa.testing import build_python_guest

ROOT = Path(__file__).resolve().parent.parent
WIT = ROOT / "tests" / "guests" / "command" / "wit"
GUEST = ROOT / "bench" / "guests" / "read-file"


def command(host: str, wasm: Path, data: Path, name: str) -> list[str]:
    engine = host.removeprefix("ours, ")
    return [
        sys.executable,
        "-m",
        "trio_isyswasfa",
        "run",
        "--engine",
        engine,
        "--dir",
        f"{data}::/data",
        str(wasm),
        f"/data/{name}",
    ]


def timed(argv: list[str], expected: int) -> float:
    """The seconds the guest's reads took, as it reports them."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    words = proc.stdout.split()
    if proc.returncode != 0 or len(words) != 2 or words[0] != str(expected):
        raise SystemExit(f"{argv}: status {proc.returncode}: {proc.stdout}{proc.stderr}")
    return float(words[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=64)
    args = parser.parse_args()
    size = args.mb * 1_000_000
    wasm = build_python_guest(WIT, "command", "app", [GUEST])
    hosts = ["ours, wasmtime", "ours, own"]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        (data / "big.bin").write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
        (data / "empty.bin").write_bytes(b"")
        for host in hosts:  # warm the compile caches
            timed(command(host, wasm, data, "empty.bin"), 0)
        best: dict[str, float] = {}
        for _ in range(3):  # round robin: the machine's load falls on every host alike
            for host in hosts:
                rate = size / timed(command(host, wasm, data, "big.bin"), size) / 1e6
                best[host] = max(best.get(host, 0.0), rate)
    base_host = "ours, wasmtime"
    print(f"file read into a Python guest, {args.mb} MB in 1 MiB reads (MB/s, best of 3)")
    for host in hosts:
        print(
            f"  {host:16} {best[host]:10.1f} MB/s   {best[host] / best[base_host]:.3f}x {base_host}"
        )


if __name__ == "__main__":
    main()
