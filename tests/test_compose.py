"""Composition: several guests in one component, each one's tasks still driven by the host."""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio
from conftest import HTTP_TIMEOUT, JABBERWOCKY, LANGUAGES, ExampleBuilder, Upstream, start_server

import trio_isyswasfa
from trio_isyswasfa.http import HttpClient
from trio_isyswasfa.tools.compose import Wire, compose, import_upgrades

pytestmark = [pytest.mark.guest, pytest.mark.slow]


def composed(
    tmp: pytest.TempPathFactory, root: trio_isyswasfa.Component, *deps: trio_isyswasfa.Component
) -> trio_isyswasfa.Component:
    out = tmp.mktemp("composed") / "composed.wasm"
    polls = compose(root.name, [d.name for d in deps], out)
    component = trio_isyswasfa.load_component(out)  # compiled once, then from the cache
    assert component.poll_exports == polls
    return component


ComposeExamples = Callable[[str, str, str, str], trio_isyswasfa.Component]

# (front, behind): the languages of a composed pair of examples, mixed both ways
LANGUAGE_PAIRS = [("python", "python"), ("rust", "python"), ("python", "rust")]


@pytest.fixture(scope="session")
def compose_examples(
    tmp_path_factory: pytest.TempPathFactory, example: ExampleBuilder
) -> ComposeExamples:
    """``compose_examples(root, root_language, dep, dep_language)``: the example ``root``
    composed in front of the example ``dep`` (its ``wasi:http/handler`` import wired to
    ``dep``'s export), each in its own language; built once per session."""
    built: dict[tuple[str, str, str, str], trio_isyswasfa.Component] = {}

    def build(
        root: str, root_language: str, dep: str, dep_language: str
    ) -> trio_isyswasfa.Component:
        key = (root, root_language, dep, dep_language)
        if key not in built:
            deps = [example(root, root_language), example(dep, dep_language)]
            built[key] = composed(tmp_path_factory, *deps)
        return built[key]

    return build


@pytest.fixture(scope="session")
def middleware_service(compose_examples: ComposeExamples) -> trio_isyswasfa.Component:
    return compose_examples("middleware", "python", "service", "python")


@pytest.mark.parametrize(("front", "behind"), LANGUAGE_PAIRS)
async def test_middleware_composed_with_service(
    nursery: trio.Nursery, compose_examples: ComposeExamples, front: str, behind: str
) -> None:
    component = compose_examples("middleware", front, "service", behind)
    assert component.poll_exports == ["isyswasfa-poll-middleware", "isyswasfa-poll-service"]
    url = await start_server(nursery, component)
    text = b"And the mome raths outgrabe. " * 2000
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        response = await http.post(
            f"{url}/middleware",
            content=zlib.compress(text),
            headers={"foo": "bar", "content-encoding": "deflate", "accept-encoding": "deflate"},
        )
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "deflate"
    assert response.headers["foo"] == "bar"
    assert response.headers["x-path"] == "/middleware"  # the service answered, inside
    assert response.headers["x-method"] == "POST"
    assert response.content == text


@pytest.mark.parametrize(("front", "behind"), LANGUAGE_PAIRS)
async def test_middleware_composed_with_hash_all(
    nursery: trio.Nursery,
    compose_examples: ComposeExamples,
    upstream: tuple[str, Upstream],
    front: str,
    behind: str,
) -> None:
    up_url, _ = upstream
    component = compose_examples("middleware", front, "hash-all", behind)
    async with HttpClient(allow=["127.0.0.1:*"]) as client:
        url = await start_server(nursery, component, client)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.get(
                f"{url}/hash-all",
                headers=[
                    ("accept-encoding", "deflate"),
                    *(("url", f"{up_url}{p}") for p in JABBERWOCKY),
                ],
            )
    assert response.headers["content-encoding"] == "deflate"
    assert sorted(response.text.splitlines()) == sorted(
        f"{up_url}{path}: {hashlib.sha256(body).hexdigest()}" for path, body in JABBERWOCKY.items()
    )


async def test_rust_middleware_in_front_of_python_hash_all_on_the_cli(
    compose_examples: ComposeExamples, upstream: tuple[str, Upstream]
) -> None:
    """The original project's demonstration: `python -m trio_isyswasfa serve` on the Rust
    middleware composed in front of the Python hash-all, answering a deflate request."""
    up_url, up = upstream
    component = compose_examples("middleware", "rust", "hash-all", "python")
    cmd = [sys.executable, "-m", "trio_isyswasfa", "serve", component.name]
    args = ["--addr", "127.0.0.1:0", "--allow-outgoing", "127.0.0.1:*", "--no-access-log"]
    proc = await trio.lowlevel.open_process([*cmd, *args], stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        banner = b""
        with trio.fail_after(60):
            while not banner.endswith(b"\n"):
                chunk = await proc.stderr.receive_some(1)
                assert chunk, "serve exited before it listened"
                banner += chunk
        url = banner.decode().split(" on ")[1].split(" ")[0]
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.get(
                f"{url}/hash-all",
                headers=[
                    ("accept-encoding", "deflate"),
                    ("url", f"{up_url}/a"),
                    ("url", f"{up_url}/b"),
                ],
            )
    finally:
        proc.send_signal(signal.SIGINT)  # a graceful stop
        with trio.fail_after(30):
            assert await proc.wait() == 0
    assert response.headers["content-encoding"] == "deflate"
    assert sorted(response.text.splitlines()) == sorted(
        f"{up_url}{p}: {hashlib.sha256(JABBERWOCKY[p]).hexdigest()}" for p in ("/a", "/b")
    )
    assert up.most_in_flight >= 1


def test_two_components_with_one_suffix_are_refused(
    tmp_path: Path, service_component: trio_isyswasfa.Component
) -> None:
    with pytest.raises(trio_isyswasfa.ToolError, match="unique poll suffix"):
        compose(service_component.name, [service_component.name], tmp_path / "x.wasm")


def test_cli(
    tmp_path: Path,
    middleware_component: trio_isyswasfa.Component,
    service_component: trio_isyswasfa.Component,
) -> None:
    out = tmp_path / "out.wasm"
    cmd = [sys.executable, "-m", "trio_isyswasfa", "compose", middleware_component.name]
    proc = subprocess.run(
        [*cmd, "-d", service_component.name, "-o", str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"wrote {out} (poll exports: isyswasfa-poll-middleware, isyswasfa-poll-service)"
    )
    proc = subprocess.run(
        [*cmd, "-d", "missing.wasm", "-o", str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: no such component: missing.wasm"


HANDLER = "wasi:http/handler@0.3.0-draft"


@pytest.fixture(scope="module", params=LANGUAGES)
def router_composed(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    example: ExampleBuilder,
) -> trio_isyswasfa.Component:
    """The router composed with the four other examples, all in one language."""
    language = str(request.param)
    out = tmp_path_factory.mktemp("router") / "router.wasm"
    deps = {name: example(name, language) for name in ("echo", "hash-all", "service", "middleware")}
    router_component = example("router", language)
    wires = [Wire(None, f"example:router/{name}", name, HANDLER) for name in deps]
    wires.append(Wire("middleware", HANDLER, "service"))  # the middleware fronts the service
    compose(router_component.name, [f"{n}={c.name}" for n, c in deps.items()], out, wires=wires)
    return trio_isyswasfa.load_component(out)


async def test_router_reaches_every_component_and_the_host(
    nursery: trio.Nursery,
    router_composed: trio_isyswasfa.Component,
    upstream: tuple[str, Upstream],
) -> None:
    up_url, _ = upstream
    assert len(router_composed.poll_exports) == 5
    text = b"And the mome raths outgrabe. " * 100
    async with HttpClient(allow=["127.0.0.1:*"]) as client:
        url = await start_server(nursery, router_composed, client)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            echo = await http.post(f"{url}/echo", content=text)
            double = await http.post(
                f"{url}/double-echo", content=text, headers={"url": f"{up_url}/echo"}
            )
            proxied = await http.post(
                f"{url}/proxy", content=text, headers={"url": f"{up_url}/echo"}
            )
            hashes = await http.get(
                f"{url}/hash-all", headers=[("url", f"{up_url}{p}") for p in JABBERWOCKY]
            )
            service = await http.post(f"{url}/service", content=text, headers={"foo": "bar"})
            middleware = await http.post(
                f"{url}/middleware",
                content=zlib.compress(text),
                headers={"content-encoding": "deflate", "accept-encoding": "deflate"},
            )
            nowhere = await http.get(f"{url}/nowhere")
    assert echo.content == double.content == proxied.content == text
    assert len(hashes.text.splitlines()) == 4
    assert (service.content, service.headers["foo"]) == (text, "bar")
    assert middleware.headers["content-encoding"] == "deflate"
    assert middleware.headers["x-path"] == "/middleware"  # router, middleware, then service
    assert middleware.content == text
    assert nowhere.status_code == 405


@pytest.mark.parametrize(
    ("spec", "wire"),
    [
        ("a:b/c=dep", Wire(None, "a:b/c", "dep")),
        (
            "mw::wasi:http/handler@0.3.0-draft=svc",
            Wire("mw", "wasi:http/handler@0.3.0-draft", "svc"),
        ),
        ("x=dep::wasi:http/handler", Wire(None, "x", "dep", "wasi:http/handler")),
    ],
)
def test_wire_specs(spec: str, wire: Wire) -> None:
    assert Wire.parse(spec) == wire


def test_import_upgrades_lift_older_compatible_versions() -> None:
    rust = (
        '  (import "wasi:io/streams@0.2.0" (instance (;0;) (type 1)))\n'
        '  (import "wasi:http/types@0.3.0-draft" (instance (;1;) (type 2)))\n'
        '  (import "x:y/z@1.2.0" (instance (;2;) (type 3)))\n'
        '  (import "x:y/old@0.1.4" (instance (;3;) (type 4)))\n'
        '    (import "wasi:io/poll@0.2.0" "poll" (func))\n'  # nested: not the component's
    )
    python = (
        '  (import "wasi:io/streams@0.2.9" (instance (;0;) (type 1)))\n'
        '  (import "wasi:io/poll@0.2.9" (instance (;1;) (type 2)))\n'
        '  (import "x:y/z@1.5.1" (instance (;2;) (type 3)))\n'
        '  (import "x:y/z@2.0.0" (instance (;3;) (type 4)))\n'
        '  (import "x:y/old@0.2.0" (instance (;4;) (type 5)))\n'
    )
    assert import_upgrades([rust, python]) == [
        {"wasi:io/streams@0.2.0": "wasi:io/streams@0.2.9", "x:y/z@1.2.0": "x:y/z@1.5.1"},
        {},
    ]
    assert import_upgrades([python, python]) == [{}, {}]


def test_bad_wire_specs() -> None:
    with pytest.raises(trio_isyswasfa.ToolError, match="expected"):
        Wire.parse("no-equals-sign")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_compressed_through_composed_middleware(
    nursery: trio.Nursery, middleware_service: trio_isyswasfa.Component
) -> None:
    url = await start_server(nursery, middleware_service)
    proc = await trio.run_process(
        ["curl", "-s", "--compressed", "-D", "-", "--data-binary", "hello, deflate", f"{url}/c"],
        capture_stdout=True,
    )
    head, _, body = proc.stdout.partition(b"\r\n\r\n")
    assert b"\r\ncontent-encoding: deflate" in head.lower()
    assert body == b"hello, deflate"  # curl inflated it
