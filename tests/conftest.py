"""Shared fixtures: guest components built once per session (cached on their sources).

**One suite, two engines.** ``--engine=both`` (the default), ``own`` or ``wasmtime``
chooses what runs the guests. The session fixture ``engine`` sets
``$TRIO_ISYSWASFA_ENGINE`` (so every ``load_component``, and the CLI run in a
subprocess, uses it) and every component fixture depends on it; with ``both``, the
tests of :data:`ENGINE_MODULES` run once per engine (``test[wasmtime]``,
``test[own]``), grouped by engine. Tests that cannot pass on our own engine yet are in
:data:`OWN_XFAIL`, strict, with the reason.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import hypercorn.trio
import pytest
import trio
from hypercorn.config import Config

import trio_isyswasfa
from trio_isyswasfa import Err, Ok
from trio_isyswasfa._seam import ENGINE_VARIABLE
from trio_isyswasfa.http import ComponentApp, HttpClient, serve
from trio_isyswasfa.testing import build_python_guest
from trio_isyswasfa.tools.lower import lower_world

ROOT = Path(__file__).resolve().parent.parent
GUESTS = Path(__file__).resolve().parent / "guests"

HTTP_TIMEOUT = httpx.Timeout(60.0)
"""The tests' HTTP clients' time limit: a hang guard only. httpx's own 5 s default is
shorter than an own-engine Python guest's answer takes at a load of 16-20 on 2 cores
(a 30 kB deflate round trip: 1.8 s quiet)."""


ENGINE_MODULES = {
    "test_asyncio_backend",
    "test_cli",
    "test_compose",
    "test_guest_python",
    "test_guest_rust",
    "test_hostile",
    "test_hot_path_edges",
    "test_http_client",
    "test_http_examples",
    "test_http_pool",
    "test_http_proxy",
    "test_http_proxy_checkpoints",
    "test_http_proxy_requests",
    "test_http_requests",
    "test_http_serve",
    "test_limits",
    "test_scale",
    "test_testing_toolkit",
    "test_wasi_cli",
    "test_wasi_conformance",
    "test_wasi_filesystem",
    "test_wasi_io_clocks_random",
    "test_wasi_sandbox",
    "test_wasi_sockets",
}
"""Modules whose tests run guests, so run on each engine ``--engine`` names."""

OWN_XFAIL: dict[str, str] = {}
"""Tests (node ids without parameters) that fail on our own engine, and why (strict)."""

OWN_HANGS: dict[str, str] = {}
"""Tests that hang on our own engine: marked xfail and not run."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engine",
        choices=["both", "own", "wasmtime"],
        default="both",
        help="the engine(s) guests run on (both: the guest tests run once on each)",
    )


def _engines(config: pytest.Config) -> list[str]:
    chosen = config.getoption("--engine")
    return ["wasmtime", "own"] if chosen == "both" else [chosen]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rpartition(".")[2] in ENGINE_MODULES:
        metafunc.parametrize("engine", _engines(metafunc.config), indirect=True, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("engine") != "own":
            continue
        test = item.nodeid.partition("[")[0]
        if test in OWN_XFAIL:
            item.add_marker(pytest.mark.xfail(reason=OWN_XFAIL[test], strict=True))
        elif test in OWN_HANGS:
            item.add_marker(pytest.mark.xfail(reason=OWN_HANGS[test], run=False))


@pytest.fixture(scope="session", autouse=True)
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """The engine this test's guests run on (``$TRIO_ISYSWASFA_ENGINE`` meanwhile)."""
    name: str = getattr(request, "param", None) or _engines(request.config)[0]
    before = os.environ.get(ENGINE_VARIABLE)
    os.environ[ENGINE_VARIABLE] = name
    try:
        yield name
    finally:
        if before is None:
            os.environ.pop(ENGINE_VARIABLE, None)
        else:
            os.environ[ENGINE_VARIABLE] = before


@pytest.fixture(scope="session")
def isyswasfa_load(engine: str) -> Callable[[str | Path], trio_isyswasfa.Component]:
    """The plugin's loader, once per engine."""
    loaded: dict[Path, trio_isyswasfa.Component] = {}

    def load(path: str | Path) -> trio_isyswasfa.Component:
        key = Path(path).resolve()
        if key not in loaded:
            loaded[key] = trio_isyswasfa.load_component(key, engine=engine)
        return loaded[key]

    return load


class LoopTicks:
    """Counts how often another trio task got to run while a test awaited a guest:
    ``nursery.start_soon(ticks.run)``, then check ``ticks.count``."""

    def __init__(self, interval: float = 0.01) -> None:
        self.count = 0
        self.interval = interval

    async def run(self) -> None:
        while True:
            await trio.sleep(self.interval)
            self.count += 1


def lowered_wit(tmp_path_factory: pytest.TempPathFactory, world: str, wit: str) -> Path:
    """A folder with the lowered form of ``world`` declared in ``wit`` (WAT guests' types)."""
    src = tmp_path_factory.mktemp(f"{world}-src") / "world.wit"
    src.write_text(wit)
    out = tmp_path_factory.mktemp(f"{world}-wit")
    lower_world(src, world, out)
    return out


@pytest.fixture(scope="session")
def cases_component(engine: str) -> trio_isyswasfa.Component:
    """The test-cases guest (tests/guests/cases), compiled."""
    wasm = build_python_guest(
        GUESTS / "cases" / "wit", "cases-guest", "app", [GUESTS / "cases" / "src"]
    )
    return trio_isyswasfa.load_component(wasm)


@dataclass
class CasesHost:
    """The test host's side of the test-cases guests' ``host`` interface (the Python
    guest's ``test:cases/host``, the Rust guest's), recording what happened."""

    notes: list[str] = field(default_factory=list)
    noted: trio.Event = field(default_factory=trio.Event)
    forever_cancelled: trio.Event = field(default_factory=trio.Event)

    def note(self, s: str) -> None:
        self.notes.append(s)
        self.noted.set()

    async def forever(self) -> str:
        try:
            await trio.sleep_forever()
        finally:
            self.forever_cancelled.set()

    async def echo_later(self, s: str, ms: int) -> str:
        await trio.sleep(ms / 1000)
        return f"host saw {s}"

    async def fallible(self, ok: bool) -> Ok | Err:
        await trio.sleep(0.001)
        return Ok("fine") if ok else Err("broken")

    def imports(self, iface: str = "test:cases/host") -> dict[str, dict[str, object]]:
        functions = {"note": self.note, "forever": self.forever, "echo-later": self.echo_later}
        if iface == "test:cases/host":
            functions["fallible"] = self.fallible
        return {iface: functions}


@pytest.fixture(scope="session")
def round_trip_component(engine: str) -> trio_isyswasfa.Component:
    """The round-trip example guest, compiled."""
    here = ROOT / "examples" / "round-trip"
    wasm = build_python_guest(here / "wit", "round-trip", "app", [here / "guest"])
    return trio_isyswasfa.load_component(wasm)


@pytest.fixture(scope="session")
def wasi_component(engine: str) -> trio_isyswasfa.Component:
    """A guest that runs Python snippets against our WASI (tests/guests/wasi), compiled."""
    wasm = build_python_guest(
        GUESTS / "wasi" / "wit", "wasi-guest", "app", [GUESTS / "wasi" / "src"]
    )
    return trio_isyswasfa.load_component(wasm)


LANGUAGES = ("python", "rust")
"""The languages every example guest is written in (``guest/`` and ``guest-rust/``)."""

ExampleBuilder = Callable[[str, str], trio_isyswasfa.Component]


@pytest.fixture(scope="session")
def example(
    isyswasfa_build_python: Callable[..., trio_isyswasfa.Component],
    isyswasfa_build_rust: Callable[..., trio_isyswasfa.Component],
) -> ExampleBuilder:
    """``example(name, language)``: the guest of ``examples/<name>`` (world ``<name>``)
    in ``language``, built once per session and cached on its sources: the Python app
    ``app`` in ``guest/``, or the Rust crate in ``guest-rust/`` (skipped, saying how to
    install the toolchain, where it is missing)."""

    def build(name: str, language: str = "python") -> trio_isyswasfa.Component:
        here = ROOT / "examples" / name
        if language == "rust":
            return isyswasfa_build_rust(here / "wit", name, here / "guest-rust")
        assert language == "python", language
        return isyswasfa_build_python(here / "wit", name, "app", [here / "guest"])

    return build


@pytest.fixture(scope="session")
def service_component(example: ExampleBuilder) -> trio_isyswasfa.Component:
    return example("service", "python")


@pytest.fixture(scope="session")
def echo_component(example: ExampleBuilder) -> trio_isyswasfa.Component:
    return example("echo", "python")


@pytest.fixture(scope="session")
def hash_all_component(example: ExampleBuilder) -> trio_isyswasfa.Component:
    return example("hash-all", "python")


@pytest.fixture(scope="session")
def middleware_component(example: ExampleBuilder) -> trio_isyswasfa.Component:
    return example("middleware", "python")


JABBERWOCKY = {
    "/a": b"\xe2\x80\x99Twas brillig, and the slithy toves",
    "/b": b"Did gyre and gimble in the wabe:",
    "/c": b"All mimsy were the borogoves,",
    "/d": b"And the mome raths outgrabe.",
}
LONG = b"".join(JABBERWOCKY.values()) * 1000
"""What the upstream's ``/long`` answers: many SHA-256 blocks, in several chunks."""


class Upstream:
    """A local HTTP server: Jabberwocky lines at /a…/d, ``LONG`` at /long, an echo at POST /echo, and
    /held, which answers only when the test releases it."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.respond(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def respond(self, scope: Any, receive: Any, send: Any) -> None:
        path, method = scope["path"], scope["method"]
        if method == "POST" and path == "/echo":
            ctype = [(n, v) for n, v in scope["headers"] if n == b"content-type"]
            await send({"type": "http.response.start", "status": 200, "headers": ctype})
            while True:
                message = await receive()
                await send(
                    {
                        "type": "http.response.body",
                        "body": message.get("body", b""),
                        "more_body": True,
                    }
                )
                if not message.get("more_body"):
                    break
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if path == "/held":
            await self.release.wait()
            body = b"held until released"
        elif method == "GET" and path in JABBERWOCKY:
            body = JABBERWOCKY[path]
        elif method == "GET" and path == "/long":
            body = LONG
        else:
            await send({"type": "http.response.start", "status": 405, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def upstream(nursery: trio.Nursery) -> tuple[str, Upstream]:
    app = Upstream()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    urls = await nursery.start(hypercorn.trio.serve, app, config)
    return urls[0], app


@pytest.fixture(scope="session")
def router_component(example: ExampleBuilder) -> trio_isyswasfa.Component:
    return example("router", "python")


async def _echo_later(s: str, ms: int) -> str:
    await trio.sleep(ms / 1000)
    return s


CASES_IMPORTS: dict[str, dict[str, Any]] = {
    "test:cases/host": {
        "note": lambda s: None,
        "forever": trio.sleep_forever,
        "echo-later": _echo_later,
        "fallible": _echo_later,
    }
}
"""Host imports for ``cases_component``: ``echo-later`` (and ``fallible``) answer after
``ms`` milliseconds of trio time."""


async def start_server(
    nursery: trio.Nursery,
    target: trio_isyswasfa.Component | ComponentApp,
    client: HttpClient | None = None,
) -> str:
    """Serve ``target`` on a free loopback port in ``nursery``; its URL. A component
    gets outgoing HTTP through ``client`` (none: refused)."""
    if isinstance(target, ComponentApp):
        app = target
    else:
        wasi = trio_isyswasfa.WasiConfig(http_outgoing=client.send if client else None)
        app = ComponentApp(target, wasi=wasi)
    urls: list[str] = await nursery.start(
        lambda task_status: serve(
            app, bind=["127.0.0.1:0"], access_log=False, task_status=task_status
        )
    )
    return urls[0]


async def settled(app: ComponentApp) -> trio_isyswasfa.http.ServerStatistics:
    """The app's statistics once no request is in flight (the client may be done first)."""
    with trio.fail_after(5):
        await app.wait_idle()
    return app.statistics()


async def get_at_once(url: str, count: int) -> list[str]:
    """GET ``url`` ``count`` times at once, each on a connection of its own; the bodies
    of the answers (each a 2xx), in the order they finished."""
    texts: list[str] = []
    # one TLS context for all (unused over http://): each client loading the CA bundle
    # held the loop the server shares for 0.5-0.9 s on a loaded machine, and a client
    # that sent its request seconds after it connected met hypercorn's 5 s timer
    verify = ssl.create_default_context()

    async def get() -> None:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, verify=verify) as client:
            response = await client.get(url)
            response.raise_for_status()
            texts.append(response.text)

    async with trio.open_nursery() as requests:
        for _ in range(count):
            requests.start_soon(get)
    return texts


@pytest.fixture
def made_scopes(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every cancel scope the ASGI app makes for a request (``_asgi.cancel_scope``),
    in order: a test clears it and looks again."""
    from trio_isyswasfa.http import _asgi

    made: list[object] = []
    real = _asgi.cancel_scope

    def counted(on_trio: bool) -> Any:
        made.append(scope := real(on_trio))
        return scope

    monkeypatch.setattr(_asgi, "cancel_scope", counted)
    return made
