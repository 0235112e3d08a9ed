"""The HTTP examples end to end: echo, double-echo, hash-all, and the middleware in front
of the service, against a local upstream; every test runs once per guest language."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest
import trio
from conftest import (
    HTTP_TIMEOUT,
    JABBERWOCKY,
    LANGUAGES,
    LONG,
    ExampleBuilder,
    Upstream,
    start_server,
)

import trio_isyswasfa
from trio_isyswasfa.http import HttpClient

pytestmark = [pytest.mark.guest, pytest.mark.slow]


@pytest.fixture(scope="module", params=LANGUAGES)
def language(request: pytest.FixtureRequest) -> str:
    """The language of the example guests under test (each module's tests run once per
    language, grouped, so each guest is built and compiled once)."""
    return str(request.param)


@pytest.fixture
def echo_component(example: ExampleBuilder, language: str) -> trio_isyswasfa.Component:
    return example("echo", language)


@pytest.fixture
def hash_all_component(example: ExampleBuilder, language: str) -> trio_isyswasfa.Component:
    return example("hash-all", language)


@pytest.fixture
def middleware_component(example: ExampleBuilder, language: str) -> trio_isyswasfa.Component:
    return example("middleware", language)


@pytest.fixture
def service_component(example: ExampleBuilder, language: str) -> trio_isyswasfa.Component:
    return example("service", language)


@pytest.fixture
async def client(nursery: trio.Nursery) -> AsyncIterator[HttpClient]:
    async with HttpClient(allow=["127.0.0.1:*"]) as http_client:
        yield http_client


def pattern(n: int) -> bytes:
    return bytes((251 * i) % 256 for i in range(1, n + 1))


class TestEcho:
    async def test_echo(
        self, nursery: trio.Nursery, echo_component: trio_isyswasfa.Component
    ) -> None:
        url = await start_server(nursery, echo_component)
        data = pattern(100_000)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.post(
                f"{url}/echo",
                content=data,
                headers={"content-type": "application/octet-stream", "x-dropped": "yes"},
            )
            wrong = await http.get(f"{url}/echo")
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["content-type"] == "application/octet-stream"
        assert "x-dropped" not in response.headers
        assert wrong.status_code == 405

    async def test_double_echo_goes_through_the_host(
        self,
        nursery: trio.Nursery,
        echo_component: trio_isyswasfa.Component,
        upstream: tuple[str, Upstream],
        client: HttpClient,
    ) -> None:
        up_url, _ = upstream
        url = await start_server(nursery, echo_component, client)
        data = pattern(200_000)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.post(
                f"{url}/double-echo",
                content=data,
                headers={"content-type": "application/octet-stream", "url": f"{up_url}/echo"},
            )
            no_url = await http.post(f"{url}/double-echo", content=b"x")
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["content-type"] == "application/octet-stream"
        assert no_url.status_code == 400

    async def test_outgoing_requests_are_refused_by_default(
        self,
        nursery: trio.Nursery,
        echo_component: trio_isyswasfa.Component,
        upstream: tuple[str, Upstream],
    ) -> None:
        up_url, up = upstream
        url = await start_server(nursery, echo_component)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.post(
                f"{url}/double-echo", content=b"x", headers={"url": f"{up_url}/echo"}
            )
        assert response.status_code == 500
        assert "HTTP-request-denied" in response.text
        assert up.most_in_flight == 0

    async def test_the_allow_list_is_checked(self, nursery: trio.Nursery) -> None:
        async with HttpClient(allow=["127.0.0.1:8080", "*.example.com:443"]) as http_client:
            assert http_client.allowed("127.0.0.1:8080", "http")
            assert not http_client.allowed("127.0.0.1:8081", "http")
            assert http_client.allowed("api.example.com", "https")
            assert not http_client.allowed("api.example.com", "http")  # port 80
            assert not http_client.allowed("example.com.evil:443", "https")


# how each language's hash-all words a failed upstream: a WIT error code, a bad status
HASH_ALL_FAILURES = {
    "python": ("ErrorCode_HttpRequestDenied()", "ValueError('status 405')"),
    "rust": ("ErrorCode::HttpRequestDenied", "status 405"),
}


class TestHashAll:
    @pytest.fixture
    async def hash_all(
        self,
        nursery: trio.Nursery,
        hash_all_component: trio_isyswasfa.Component,
        upstream: tuple[str, Upstream],
        client: HttpClient,
    ) -> tuple[str, str, Upstream]:
        """The hash-all server's URL, and the upstream's URL and state."""
        url = await start_server(nursery, hash_all_component, client)
        return url, *upstream

    async def test_hashes_every_url(self, hash_all: tuple[str, str, Upstream]) -> None:
        url, up_url, _ = hash_all
        bodies = {**JABBERWOCKY, "/long": LONG}
        urls = [f"{up_url}{path}" for path in bodies]
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.get(f"{url}/hash-all", headers=[("url", u) for u in urls])
        assert response.status_code == 200
        lines = response.text.splitlines()
        assert len(lines) == 5
        expected = {
            f"{up_url}{path}: {hashlib.sha256(body).hexdigest()}" for path, body in bodies.items()
        }
        assert set(lines) == expected

    async def test_failures_are_lines_too(
        self, hash_all: tuple[str, str, Upstream], language: str
    ) -> None:
        url, up_url, _ = hash_all
        denied, missing = HASH_ALL_FAILURES[language]
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.get(
                f"{url}/hash-all",
                headers=[("url", f"{up_url}/missing"), ("url", "http://denied.invalid/x")],
            )
        assert sorted(response.text.splitlines()) == sorted(
            [f"http://denied.invalid/x: {denied}", f"{up_url}/missing: {missing}"]
        )

    async def test_concurrent_and_streaming(self, hash_all: tuple[str, str, Upstream]) -> None:
        # /held answers only after we have read the first line of the response: the
        # other lines were streamed while it was outstanding, and all five upstream
        # requests were in flight at once
        url, up_url, up = hash_all
        urls = [f"{up_url}{path}" for path in [*JABBERWOCKY, "/held"]]
        lines: list[str] = []
        async with (
            httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http,
            http.stream("GET", f"{url}/hash-all", headers=[("url", u) for u in urls]) as response,
        ):
            async for line in response.aiter_lines():
                lines.append(line)
                if len(lines) == 4:
                    assert not up.release.is_set()
                    assert not any("/held" in seen for seen in lines)
                    up.release.set()
        assert len(lines) == 5
        assert lines[-1].startswith(f"{up_url}/held: ")
        assert up.most_in_flight == 5


class TestMiddleware:
    """The middleware in front of the service, here through the host (a reverse proxy:
    the request's authority names the service's server)."""

    @pytest.fixture
    async def middleware(
        self,
        nursery: trio.Nursery,
        middleware_component: trio_isyswasfa.Component,
        service_component: trio_isyswasfa.Component,
        client: HttpClient,
    ) -> tuple[str, str]:
        """The middleware server's URL and the service server's."""
        service_url = await start_server(nursery, service_component)
        return await start_server(nursery, middleware_component, client), service_url

    async def test_deflate_both_ways(self, middleware: tuple[str, str]) -> None:
        url, service_url = middleware
        text = b"And the mome raths outgrabe. " * 1000
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.post(
                f"{url}/middleware",
                content=zlib.compress(text),
                headers={
                    "host": service_url.removeprefix("http://"),
                    "foo": "bar",
                    "content-encoding": "deflate",
                    "accept-encoding": "gzip, deflate",
                },
            )
        assert response.status_code == 200
        assert response.headers["foo"] == "bar"
        assert response.headers["content-encoding"] == "deflate"
        assert response.content == text  # httpx inflated it

    async def test_plain_when_the_client_does_not_accept_deflate(
        self, middleware: tuple[str, str]
    ) -> None:
        url, service_url = middleware
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.post(
                f"{url}/plain",
                content=b"plain text",
                headers={
                    "host": service_url.removeprefix("http://"),
                    "accept-encoding": "identity",
                },
            )
        assert response.status_code == 200
        assert "content-encoding" not in response.headers
        assert response.content == b"plain text"
