"""The command line: ``python -m trio_isyswasfa {lower,componentize,inspect,check,run}``.

A thin layer: parse arguments, call the library, print one line per error (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ._errors import IsyswasfaError

TRAP_STATUS = 134
"""``run``'s exit status when the component traps (128 + SIGABRT, as ``wasmtime run``)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trio_isyswasfa", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    lower = sub.add_parser("lower", help="lower a WIT world with async funcs to the isyswasfa ABI")
    lower.add_argument("wit", type=Path, help="WIT directory (with deps/) or file")
    lower.add_argument("-w", "--world", required=True)
    lower.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    lower.add_argument("--suffix", help="poll export suffix (default: the world name)")

    comp = sub.add_parser("componentize", help="build a Python guest component")
    comp.add_argument("app", help="the app module name")
    comp.add_argument("-d", "--wit", type=Path, required=True)
    comp.add_argument("-w", "--world", required=True)
    comp.add_argument("-p", "--python-path", type=Path, action="append", default=[])
    comp.add_argument("-o", "--output", type=Path, required=True)
    comp.add_argument("--suffix")

    inspect = sub.add_parser("inspect", help="load a component and list its imports and exports")
    inspect.add_argument("component", type=Path)

    run = sub.add_parser(
        "run", help="run a wasi:cli/command component; exit with its status (like wasmtime run)"
    )
    run.add_argument("component", type=Path)
    run.add_argument("args", nargs=argparse.REMAINDER, help="the component's arguments")
    run.add_argument(
        "--dir",
        action="append",
        default=[],
        metavar="HOST_PATH[::GUEST_PATH]",
        help="give the component a host directory (repeatable)",
    )
    run.add_argument(
        "--dir-ro",
        action="append",
        default=[],
        metavar="HOST_PATH[::GUEST_PATH]",
        help="give the component a host directory it may only read (repeatable)",
    )
    run.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="set an environment variable; NAME alone passes on the host's value",
    )

    check = sub.add_parser(
        "check", help="check that a component links against this host (WASI and isyswasfa)"
    )
    check.add_argument("component", type=Path)
    return p


def _run(args: argparse.Namespace) -> int:
    import os

    import trio

    from ._errors import GuestTrap, HostProtocolError
    from ._host import run_command
    from .wasi import WasiConfig
    from .wasi.filesystem import Preopen

    preopens = [Preopen.parse(d) for d in args.dir]
    preopens += [Preopen.parse(d, read_only=True) for d in args.dir_ro]
    env: dict[str, str] = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not name:
            raise HostProtocolError(f"bad --env {item!r}: expected NAME[=VALUE]")
        env[name] = value if sep else os.environ.get(name, "")
    config = WasiConfig(env=env, preopens=preopens, stdin=0)
    try:
        return trio.run(lambda: run_command(args.component, args.args, wasi=config))
    except GuestTrap as exc:
        print(f"error: {exc}", file=sys.stderr)
        return TRAP_STATUS


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "lower":
            from .tools.lower import lower_world

            result = lower_world(args.wit, args.world, args.out, suffix=args.suffix)
            print(f"wrote {result.wit_dir} (world {result.world}, export {result.poll_export})")
        elif args.command == "componentize":
            from .tools.componentize import componentize

            componentize(
                args.wit,
                args.world,
                args.app,
                args.output,
                python_path=args.python_path or [Path(".")],
                suffix=args.suffix,
            )
            print(f"wrote {args.output}")
        elif args.command == "inspect":
            from ._host import load_component

            component = load_component(args.component)
            print("imports:")
            for name in component.imports:
                print(f"  {name}")
            print("exports:")
            for iface, funcs in component.exports().items():
                for f in funcs:
                    print(f"  {iface + '#' if iface else ''}{f}")
        elif args.command == "run":
            return _run(args)
        elif args.command == "check":
            from ._host import check_links, load_component

            check_links(load_component(args.component))
            print(f"{args.component}: links against this host")
    except IsyswasfaError as exc:
        message = str(exc).strip().splitlines()
        print(f"error: {message[0] if message else type(exc).__name__}", file=sys.stderr)
        for line in message[1:]:
            print(f"  {line}", file=sys.stderr)
        return 2
    return 0
