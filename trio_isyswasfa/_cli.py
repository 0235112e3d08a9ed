"""The command line: ``python -m trio_isyswasfa {lower,componentize,inspect,check}``.

A thin layer: parse arguments, call the library, print one line per error (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ._errors import IsyswasfaError


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

    check = sub.add_parser(
        "check", help="check that a component links against this host (WASI and isyswasfa)"
    )
    check.add_argument("component", type=Path)
    return p


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
