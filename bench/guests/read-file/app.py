"""A wasi:cli command for ``bench/bench_file_read.py``: reads the file named by its
first argument in 1 MiB reads and prints how many bytes it read and how long the reads
took (by the monotonic clock the host gives it)."""

import sys
import time

from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        total = 0
        with open(sys.argv[1], "rb") as f:
            start = time.perf_counter()
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
            elapsed = time.perf_counter() - start
        print(total, elapsed)
