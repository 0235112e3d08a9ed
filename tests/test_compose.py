"""Composition: several guests in one component, each one's tasks still driven by the host."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import httpx
import pytest
import trio
from conftest import JABBERWOCKY, Upstream, start_server

import trio_isyswasfa
from trio_isyswasfa.http import HttpClient
from trio_isyswasfa.tools.compose import Wire, compose

pytestmark = [pytest.mark.guest, pytest.mark.slow]


def composed(
    tmp: pytest.TempPathFactory, root: trio_isyswasfa.Component, *deps: trio_isyswasfa.Component
) -> trio_isyswasfa.Component:
    out = tmp.mktemp("composed") / "composed.wasm"
    polls = compose(root.name, [d.name for d in deps], out)
    component = trio_isyswasfa.load_component(out)  # compiled once, then from the cache
    assert component.poll_exports == polls
    return component


@pytest.fixture(scope="session")
def middleware_service(
    tmp_path_factory: pytest.TempPathFactory,
    middleware_component: trio_isyswasfa.Component,
    service_component: trio_isyswasfa.Component,
) -> trio_isyswasfa.Component:
    return composed(tmp_path_factory, middleware_component, service_component)


@pytest.fixture(scope="session")
def middleware_hash_all(
    tmp_path_factory: pytest.TempPathFactory,
    middleware_component: trio_isyswasfa.Component,
    hash_all_component: trio_isyswasfa.Component,
) -> trio_isyswasfa.Component:
    return composed(tmp_path_factory, middleware_component, hash_all_component)


async def test_middleware_composed_with_service(
    nursery: trio.Nursery, middleware_service: trio_isyswasfa.Component
) -> None:
    component = middleware_service
    assert component.poll_exports == ["isyswasfa-poll-middleware", "isyswasfa-poll-service"]
    url = await start_server(nursery, component)
    text = b"And the mome raths outgrabe. " * 2000
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{url}/middleware",
            content=zlib.compress(text),
            headers={"foo": "bar", "content-encoding": "deflate", "accept-encoding": "deflate"},
        )
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "deflate"
    assert response.headers["foo"] == "bar"
    assert response.headers["x-path"] == "/middleware"  # the service answered, inside
    assert response.content == text


async def test_middleware_composed_with_hash_all(
    nursery: trio.Nursery,
    middleware_hash_all: trio_isyswasfa.Component,
    upstream: tuple[str, Upstream],
) -> None:
    up_url, _ = upstream
    component = middleware_hash_all
    async with HttpClient(allow=["127.0.0.1:*"]) as client:
        url = await start_server(nursery, component, client)
        async with httpx.AsyncClient() as http:
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


@pytest.fixture(scope="session")
def router_composed(
    tmp_path_factory: pytest.TempPathFactory,
    router_component: trio_isyswasfa.Component,
    echo_component: trio_isyswasfa.Component,
    hash_all_component: trio_isyswasfa.Component,
    service_component: trio_isyswasfa.Component,
    middleware_component: trio_isyswasfa.Component,
) -> trio_isyswasfa.Component:
    out = tmp_path_factory.mktemp("router") / "router.wasm"
    deps = {
        "echo": echo_component,
        "hash-all": hash_all_component,
        "service": service_component,
        "middleware": middleware_component,
    }
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
        async with httpx.AsyncClient() as http:
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
