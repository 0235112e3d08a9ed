"""The Python hello of bench/bench_cli.py: a componentize-py command that prints a line."""

from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        print("hello, world")
