"""What the Rust hash-all guest costs per URL, by counts (not times): answers that come
in together are written in one go, however many URLs there are."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from conftest import ExampleBuilder

import trio_isyswasfa
from trio_isyswasfa.http import ComponentApp
from trio_isyswasfa.http.types import Body, Fields, Request, Response
from trio_isyswasfa.testing import asgi_request, open_lifespan
from trio_isyswasfa.wasi.io import BytesInputStream, WasiIo

pytestmark = [pytest.mark.guest, pytest.mark.slow]


def body_of(url: str) -> bytes:
    return f"the body of {url}\n".encode() * 40


class HeldUpstream:
    """An outgoing handler that answers nothing until all ``expected`` requests are in
    and everything else waits, then answers them all in one pass of trio's loop."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.urls: list[str] = []
        self.all_in = trio.Event()
        self.release = trio.Event()

    async def release_when_all_wait(self) -> None:
        await self.all_in.wait()
        await trio.testing.wait_all_tasks_blocked()
        self.release.set()

    def send(self, request: Request) -> Awaitable[Response]:
        url = f"http://{request.authority}{request.path_with_query}"
        request.close()
        self.urls.append(url)
        if len(self.urls) == self.expected:
            self.all_in.set()
        return self._answer(url)

    async def _answer(self, url: str) -> Response:
        await self.release.wait()
        return Response(Fields(), Body(BytesInputStream(body_of(url))))


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The lengths of every ``output-stream.write`` the guests make from now on."""
    seen: list[int] = []
    write: Callable[[WasiIo, int, bytes], Any] = WasiIo.write

    def counted(self: WasiIo, rep: int, data: bytes) -> Any:
        seen.append(len(data))
        return write(self, rep, data)

    monkeypatch.setattr(WasiIo, "write", counted)
    return seen


@pytest.mark.parametrize("n", [8, 32])
async def test_answers_that_arrive_together_are_written_together(
    example: ExampleBuilder, writes: list[int], n: int
) -> None:
    # before, the guest wrote each URL's line on its own (n writes, n check-writes)
    # and polled every URL's future whenever any was woken (n² polls over the call)
    component = example("hash-all", "rust")
    upstream = HeldUpstream(n)
    app = ComponentApp(component, wasi=trio_isyswasfa.WasiConfig(http_outgoing=upstream.send))
    urls = [f"http://upstream.test/{i}" for i in range(n)]
    async with open_lifespan(app), trio.open_nursery() as nursery:
        nursery.start_soon(upstream.release_when_all_wait)
        response = await asgi_request(app, headers=[(b"url", u.encode()) for u in urls])
    assert response.status == 200
    assert sorted(upstream.urls) == sorted(urls)
    expected = {f"{u}: {hashlib.sha256(body_of(u)).hexdigest()}" for u in urls}
    assert set(response.body.decode().splitlines()) == expected
    assert sum(writes) == len(response.body)
    # every answer came in one pass: one write holds every line, at any n
    assert len(writes) == 1, writes
