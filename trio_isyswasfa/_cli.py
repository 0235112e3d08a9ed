"""The command line: ``python -m trio_isyswasfa {lower,componentize,compose,inspect,check,run,serve}``.

A thin layer: parse arguments, call the library, print one line per error (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from ._errors import IsyswasfaError

TRAP_STATUS = 134
"""``run``'s exit status when the component traps (128 + SIGABRT, as ``wasmtime run``)."""

INTERRUPTED_STATUS = 130
"""``serve``'s exit status when SIGINT came before it served (128 + SIGINT, as a shell's)."""


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="python -m trio_isyswasfa", description=__doc__)
    p.add_argument("--version", action="version", version=f"trio-isyswasfa {__version__}")
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

    compose = sub.add_parser(
        "compose",
        help="compose components into one, wiring imports to exports of the same name; "
        "every component's poll export stays reachable",
    )
    compose.add_argument("root", type=Path, help="the component whose exports the result has")
    compose.add_argument(
        "-d",
        "--dep",
        action="append",
        required=True,
        metavar="[NAME=]PATH",
        help="a dependency, named by its file stem unless NAME is given (repeatable)",
    )
    compose.add_argument(
        "-w",
        "--wire",
        action="append",
        default=[],
        metavar="[COMPONENT::]IMPORT=DEP[::EXPORT]",
        help="wire IMPORT of the root (or of dependency COMPONENT) to DEP's export EXPORT "
        "(default: the same name); with wires, nothing else is wired (repeatable)",
    )
    compose.add_argument("-o", "--output", type=Path, required=True)

    inspect = sub.add_parser("inspect", help="load a component and list its imports and exports")
    inspect.add_argument("component", type=Path)
    _engine_argument(inspect)

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
    run.add_argument(
        "--allow-net", action="append", default=[], metavar="HOST:PORT", help=ALLOW_NET_HELP
    )

    _limit_arguments(run)
    _engine_argument(run)

    serve = sub.add_parser(
        "serve",
        help="serve a component's wasi:http handler over HTTP (a wasi:http/proxy@0.2 "
        "component, or an isyswasfa one exporting wasi:http/handler@0.3.0-draft)",
    )
    serve.add_argument("component", type=Path)
    _engine_argument(serve)
    serve.add_argument(
        "--addr",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="address to listen on (repeatable; default 127.0.0.1:8080)",
    )
    serve.add_argument(
        "--backend",
        choices=["trio", "asyncio"],
        default="trio",
        help="event loop and hypercorn worker (default trio)",
    )
    serve.add_argument("--dir", action="append", default=[], metavar="HOST_PATH[::GUEST_PATH]")
    serve.add_argument("--dir-ro", action="append", default=[], metavar="HOST_PATH[::GUEST_PATH]")
    serve.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]")
    serve.add_argument(
        "--allow-net", action="append", default=[], metavar="HOST:PORT", help=ALLOW_NET_HELP
    )
    serve.add_argument(
        "--allow-outgoing",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="let the component send HTTP requests there (fnmatch pattern, repeatable; "
        "'*' for anywhere); by default it may send none",
    )
    serve.add_argument(
        "--instances",
        choices=["shared", "pooled", "per-request"],
        default=None,
        help="keep instances open between requests, each serving up to 16 at once "
        "(shared, the default for isyswasfa components), or one at a time (pooled, the "
        "default for wasi:http/proxy components, whose calls cannot overlap); or a fresh "
        "one per request, as wasmtime serve",
    )
    serve.add_argument(
        "--spare-instances",
        type=_whole_number,
        default=2,
        metavar="N",
        help="with --instances per-request, never-used instances kept open ahead of "
        "requests (default 2; each still serves one request); 0: each request opens its own",
    )
    serve.add_argument(
        "--max-instances",
        type=_whole_number,
        default=32,
        metavar="N",
        help="instances at once (default 32); further requests wait. A guest that mostly "
        "computes serves best with a few per CPU core",
    )
    serve.add_argument(
        "--max-waiting",
        type=_whole_number,
        default=1024,
        metavar="N",
        help="requests that may wait while every instance is busy (default 1024); "
        "beyond them a request is answered 503 at once",
    )
    serve.add_argument(
        "--backlog",
        type=_whole_number,
        default=None,
        metavar="N",
        help="connections the kernel holds until the server accepts them (default: the "
        "most the system allows, net.core.somaxconn); beyond them a client's handshake "
        "is dropped",
    )
    serve.add_argument("--no-access-log", action="store_true", help="do not log each request")
    _limit_arguments(serve)

    check = sub.add_parser(
        "check", help="check that a component links against this host (WASI and isyswasfa)"
    )
    check.add_argument("component", type=Path)
    return p


ALLOW_NET_HELP = (
    "let the component's sockets bind, connect or send there (repeatable): HOST is *, an "
    "IP address ([::1] for IPv6), a CIDR network or localhost; PORT is *, N or LOW-HIGH. "
    "By default it has no network"
)


def _whole_number(text: str) -> int:
    """An option's ``N``: ``int`` for ASCII digits only (``int`` alone reads '٨', ' 8',
    '+8' and '8_0' as 8); a minus sign is left to the option's own check to refuse."""
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    """An option's ``S``: ``float`` for ASCII digits and one point only (``float`` alone
    also reads '٨', '1_0', '1e3' and 'inf')."""
    whole, _, fraction = text.removeprefix("-").partition(".")
    if not ((whole + fraction).isascii() and (whole + fraction).isdigit()):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return float(text)


def _engine_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=["wasmtime", "own"],
        default=None,
        help="what runs the component: wasmtime-py's component API, or our own canonical "
        "ABI over wasmtime's core API (default: $TRIO_ISYSWASFA_ENGINE, else own)",
    )


def _limit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="largest size each of the guest's linear memories may grow to (e.g. 256M)",
    )
    parser.add_argument(
        "--max-run-seconds",
        type=_seconds,
        metavar="S",
        help="stop the guest (a trap) when one call into it runs longer than S seconds",
    )
    parser.add_argument(
        "--max-handles",
        type=_whole_number,
        metavar="N",
        help="stop the guest (a trap) when it holds more than N WASI handles at once",
    )


def _limits(args: argparse.Namespace) -> Any:
    """The Limits that ``--max-memory`` and ``--max-run-seconds`` describe."""
    from ._limits import Limits, parse_size

    return Limits(
        max_memory=parse_size(args.max_memory) if args.max_memory is not None else None,
        max_run_seconds=args.max_run_seconds,
        max_handles=args.max_handles,
    )


def _wasi_config(args: argparse.Namespace, **extra: Any) -> Any:
    """The WasiConfig that ``--dir``, ``--dir-ro`` and ``--env`` describe."""
    import os

    from ._errors import HostProtocolError
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
    return WasiConfig(env=env, preopens=preopens, allow_net=args.allow_net, **extra)


def _serve(args: argparse.Namespace) -> int:
    import signal

    # SIGINT stops serve at any moment, start-up included, even in a process that
    # inherited it ignored (a shell script's background job): once serving, the signal
    # receiver below takes it anyway, and a signal dropped while the component still
    # loads left a server running that its starter had asked to stop
    signal.signal(signal.SIGINT, signal.default_int_handler)
    status = INTERRUPTED_STATUS
    try:
        status = _serve_until_stopped(args)
    except* KeyboardInterrupt:  # before the signal receiver was installed
        print("SIGINT during start-up: not serving", file=sys.stderr)
    return status


def _serve_until_stopped(args: argparse.Namespace) -> int:
    import gc
    import importlib
    import signal

    import anyio

    from ._errors import HostProtocolError
    from ._host import load_component
    from .http._asgi import ComponentApp
    from .http._client import HttpClient
    from .http._serve import parse_addr, serve

    if args.max_instances < 1:
        raise HostProtocolError(f"--max-instances must be at least 1, not {args.max_instances}")
    if args.max_waiting < 0:
        raise HostProtocolError(f"--max-waiting must not be negative, not {args.max_waiting}")
    if args.spare_instances < 0:
        raise HostProtocolError(
            f"--spare-instances must not be negative, not {args.spare_instances}"
        )
    if args.backlog is not None and args.backlog < 1:
        raise HostProtocolError(f"--backlog must be at least 1, not {args.backlog}")
    addrs = args.addr or ["127.0.0.1:8080"]
    for addr in addrs:
        try:
            parse_addr(addr)
        except ValueError as exc:
            raise HostProtocolError(str(exc)) from None
    app = ComponentApp(
        load_component(args.component, engine=args.engine),
        wasi=_wasi_config(args),
        instances=args.instances,
        max_instances=args.max_instances,
        max_waiting=args.max_waiting,
        spare_instances=args.spare_instances,
        limits=_limits(args),
        http_client=HttpClient(allow=args.allow_outgoing) if args.allow_outgoing else None,
    )

    async def main() -> None:
        stop = anyio.Event()

        async def on_signals(signals: AsyncIterator[int], now: anyio.CancelScope) -> None:
            async for signum in signals:
                name = signal.Signals(signum).name
                if stop.is_set():
                    print(f"{name} again: stopping now", file=sys.stderr)
                    now.cancel()
                    return
                print(f"{name}: finishing requests in flight", file=sys.stderr)
                stop.set()

        # installed before any other step of start-up, and kept to the end: a signal
        # never becomes a KeyboardInterrupt raised inside the app's lifespan, which
        # hypercorn takes for a failed lifespan and serves on without it
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:
                tg.start_soon(on_signals, signals, tg.cancel_scope)

                async def serving(task_status: anyio.abc.TaskStatus[list[str]]) -> None:
                    await serve(
                        app,
                        bind=addrs,
                        access_log=not args.no_access_log,
                        shutdown_trigger=stop.wait,
                        backlog=args.backlog,
                        task_status=task_status,
                    )
                    # it returns after a signal, once the requests in flight are done
                    tg.cancel_scope.cancel()  # the signal receiver's task too

                urls = await tg.start(serving)
                print(
                    f"Serving {args.component} on {', '.join(urls)} "
                    f"({args.backend}, {app.instances} instances); Ctrl-C stops",
                    file=sys.stderr,
                    flush=True,
                )

    # What is loaded by now (the host's modules, the component and its plan, hypercorn's
    # worker for this event loop) lives as long as the server: frozen, the collector's
    # full collections skip it instead of walking it again and again as requests come
    # (in hash-all they were ~10% of the CPU). Collected first, so no garbage of the load
    # is kept for good; frozen before the event loop starts, so none of a request's
    # objects, nor an instance opened for one request, is.
    importlib.import_module(f"hypercorn.{args.backend}")
    gc.collect()
    gc.freeze()
    failure: OSError | None = None
    try:
        anyio.run(main, backend=args.backend)
    except* OSError as group:
        failure = group.exceptions[0]  # type: ignore[assignment]
    finally:
        gc.unfreeze()  # a process that goes on after serving collects them again
    if failure is not None:
        print(f"error: cannot listen: {failure.strerror or failure}", file=sys.stderr)
        return 2
    return 0


def _run(args: argparse.Namespace) -> int:
    import gc

    import trio

    from ._errors import GuestTrap
    from ._host import load_component, run_command

    config = _wasi_config(args, stdin=0, stdout=1, stderr=2)
    limits = _limits(args)
    component = load_component(args.component, engine=args.engine)
    # What is loaded by now (the host's modules, the component as read and its plan:
    # ~50,000 objects for a componentize-py guest) lives until the command ends. Frozen,
    # the collector's full collections skip it: the Python hello's run made one, which
    # walked all of it (~15-50 ms of CPU) to free 52 objects.
    gc.freeze()
    try:
        return trio.run(lambda: run_command(component, args.args, wasi=config, limits=limits))
    except GuestTrap as exc:
        print(f"error: {exc}", file=sys.stderr)
        return TRAP_STATUS
    finally:
        gc.unfreeze()  # a process that goes on after the command collects them again


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
        elif args.command == "compose":
            from .tools.compose import Wire, compose

            wires = [Wire.parse(w) for w in args.wire]
            polls = compose(args.root, args.dep, args.output, wires=wires)
            print(f"wrote {args.output} (poll exports: {', '.join(polls)})")
        elif args.command == "inspect":
            from ._host import load_component

            component = load_component(args.component, engine=args.engine)
            print("imports:")
            for name in component.imports:
                print(f"  {name}")
            print("exports:")
            for iface, funcs in component.exports().items():
                for f in funcs:
                    print(f"  {iface + '#' if iface else ''}{f}")
        elif args.command == "run":
            return _run(args)
        elif args.command == "serve":
            return _serve(args)
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
