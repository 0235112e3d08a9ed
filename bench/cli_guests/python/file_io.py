"""The file guest of ``bench/bench_file_read.py``: a componentize-py command that reads
a file (``read PATH``) or writes one (``write PATH SIZE``) in 1 MiB calls, and prints
how many bytes it moved and how long that took by the monotonic clock its host gives
it (opening and closing the file are not counted; the write's flush is)."""

import sys
import time

from wit_world import exports

CHUNK = 1 << 20


class Run(exports.Run):
    def run(self) -> None:
        mode, path = sys.argv[1], sys.argv[2]
        total = 0
        if mode == "read":
            with open(path, "rb") as f:
                start = time.perf_counter()
                while chunk := f.read(CHUNK):
                    total += len(chunk)
                elapsed = time.perf_counter() - start
        else:
            size = int(sys.argv[3])
            block = bytes(range(256)) * (CHUNK // 256)
            with open(path, "wb") as f:
                start = time.perf_counter()
                while total < size:
                    total += f.write(block[: min(CHUNK, size - total)])
                f.flush()
                elapsed = time.perf_counter() - start
        print(total, elapsed)
