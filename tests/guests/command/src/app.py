"""A wasi:cli command: what ``python -m trio_isyswasfa run`` runs in the tests.

It echoes its arguments, an environment variable and standard input to standard
output, copies ``/data/in.txt`` to ``/data/out.txt`` if that directory exists, and
exits with the status given as its first argument.
"""

import os
import sys

from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        print("args:", " ".join(sys.argv))
        print("GREETING:", os.environ.get("GREETING", "<unset>"))
        print("stdin:", sys.stdin.read().strip())
        if os.path.isdir("/data"):
            with open("/data/in.txt") as src, open("/data/out.txt", "w") as dst:
                dst.write(src.read().upper())
        sys.stdout.flush()
        status = int(sys.argv[1]) if len(sys.argv) > 1 else 0
        if status:
            os._exit(status)
