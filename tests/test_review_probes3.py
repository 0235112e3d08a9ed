"""Review probes, third round: the ``wasi:http@0.3.0-draft`` (isyswasfa) serve path
against what last session fixed on the ``proxy@0.2`` path only, the app without the
lifespan protocol, and last session's changes.

Each probe is a bug found, a strict ``xfail`` until it is fixed (its reason says what
is wrong). The draft guest is ``tests/guests/review3``: the request's path spells its
answer (``/STATUS/CONTENT-LENGTH/BODY``), so each probe says exactly what it answers.
The expected answers are those the ``proxy@0.2`` path gives since its fixes
(``tests/test_review_probes2.py``), where wasmtime serve was the reference.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import trio
from conftest import GUESTS, start_server
from test_review_probes2 import _connect

import trio_isyswasfa
from trio_isyswasfa.http import ComponentApp


@pytest.fixture(scope="module")
def draft_guest() -> trio_isyswasfa.Component:
    """The review's draft guest (tests/guests/review3), compiled."""
    from trio_isyswasfa.testing import build_python_guest

    wasm = build_python_guest(
        GUESTS / "http" / "wit", "http-guest", "app", [GUESTS / "review3" / "src"]
    )
    return trio_isyswasfa.load_component(Path(wasm))


async def _exchange(url: str, method: str, target: str) -> bytes:
    """The whole answer to one ``connection: close`` request (b"" if the server closes
    at once, or it is gone)."""
    answer = b""
    with contextlib.suppress(OSError):
        stream = await _connect(url)
        async with stream:
            await stream.send_all(
                f"{method} {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode()
            )
            with trio.move_on_after(10):  # (a hang guard: it closes at once when right)
                while data := await stream.receive_some():
                    answer += data
    return answer


async def _serve_and_ask(
    component: trio_isyswasfa.Component, requests: list[tuple[str, str]]
) -> tuple[list[bytes], trio_isyswasfa.http.ServerStatistics]:
    """Serve ``component`` with hypercorn (as ``serve`` does), send ``requests`` one by
    one, and return the answers and the app's statistics once it is idle."""
    app = ComponentApp(component)
    answers = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            url = await start_server(nursery, app)
            for method, target in requests:
                answers.append(await _exchange(url, method, target))
            with trio.move_on_after(5):
                await app.wait_idle()
            nursery.cancel_scope.cancel()
    return answers, app.statistics()


def _status(answer: bytes) -> bytes:
    return answer.split(b"\r\n", 1)[0]


def _body(answer: bytes) -> bytes:
    head, _, body = answer.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        out = b""
        while body:
            size, _, rest = body.partition(b"\r\n")
            n = int(size, 16)
            if not n:
                break
            out, body = out + rest[:n], rest[n + 2 :]
        return out
    return body


# -- the draft path: a guest's interim (1xx) status ------------------------------------------


@pytest.mark.guest
async def test_a_draft_guest_answering_101_does_not_stop_the_server(
    draft_guest: trio_isyswasfa.Component,
) -> None:
    answers, _ = await _serve_and_ask(
        draft_guest, [("GET", "/101/-/hello"), ("GET", "/200/-/alive")]
    )
    # the proxy path's answer: an interim status is the guest's failure (500)
    assert _status(answers[0]) == b"HTTP/1.1 500 "
    assert _status(answers[1]) == b"HTTP/1.1 200 "
    assert _body(answers[1]) == b"alive"


@pytest.mark.guest
async def test_a_draft_guest_answering_100_gets_a_500(
    draft_guest: trio_isyswasfa.Component,
) -> None:
    answers, stats = await _serve_and_ask(draft_guest, [("GET", "/100/-/hello")])
    assert _status(answers[0]) == b"HTTP/1.1 500 "
    assert (stats.failed, stats.cancelled) == (1, 0), stats


# -- the draft path: a response content-length ----------------------------------------------


@pytest.mark.guest
@pytest.mark.parametrize("value", ["abc", "-1"])
async def test_a_draft_guests_content_length_that_is_no_number(
    draft_guest: trio_isyswasfa.Component, value: str
) -> None:
    answers, stats = await _serve_and_ask(draft_guest, [("GET", f"/200/{value}/hello")])
    # as on the proxy path (and wasmtime serve): the body, chunked, the bad field left
    # out; a 500 of ours saying the component failed would do too
    assert (_status(answers[0]), _body(answers[0])) in [
        (b"HTTP/1.1 200 ", b"hello"),
        (b"HTTP/1.1 500 ", b"the component failed\n"),
    ]
    assert stats.cancelled == 0, stats


@pytest.mark.guest
@pytest.mark.parametrize(
    ("target", "sent"),
    [("/200/10/hello", b"hello"), ("/200/2/hello", b"he")],
    ids=["cut-short", "too-long"],
)
async def test_a_draft_guests_body_unlike_its_content_length_is_its_failure(
    draft_guest: trio_isyswasfa.Component, target: str, sent: bytes
) -> None:
    answers, stats = await _serve_and_ask(draft_guest, [("GET", target)])
    # the proxy path: the response is cut off (short) or cut at its length (long), and
    # the request counts as the guest's failure
    assert _status(answers[0]) == b"HTTP/1.1 200 "
    assert _body(answers[0]) == sent
    assert (stats.failed, stats.cancelled) == (1, 0), stats


# -- an instance of its own per request: its close after the response -----------------------


@pytest.fixture(scope="module")
def http_guest() -> trio_isyswasfa.Component:
    """The server tests' draft guest (tests/guests/http: /stream, /trap…), compiled."""
    from trio_isyswasfa.testing import build_python_guest

    here = GUESTS / "http"
    return trio_isyswasfa.load_component(
        Path(build_python_guest(here / "wit", "http-guest", "app", [here / "src"]))
    )


@pytest.mark.guest
@pytest.mark.parametrize("lifespan", [True, False], ids=["per-request-no-spares", "no-lifespan"])
async def test_a_streamed_response_from_an_instance_of_its_own_completes(
    http_guest: trio_isyswasfa.Component, lifespan: bool, caplog: pytest.LogCaptureFixture
) -> None:
    from trio_isyswasfa.testing import asgi_request, open_lifespan

    app = ComponentApp(http_guest, instances="per-request", spare_instances=0)
    answers = []
    with trio.fail_after(60):
        async with open_lifespan(app) if lifespan else contextlib.nullcontext():
            for _ in range(2):
                response = await asgi_request(app, "/stream?n=2")
                answers.append((response.status, response.body))
    assert answers == [(200, b"line 0\nline 1\n")] * 2
    stats = app.statistics()
    assert (stats.completed, stats.failed) == (2, 0), stats
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


# -- the proxy@0.2 path: a request through a client not open ------------------------------


@pytest.mark.guest
async def test_a_proxy_request_through_a_client_not_open_is_refused(
    upstream: tuple[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    """(Beside the draft path's probe below) the proxy@0.2 path refuses it too, where
    it answered the guest ``internal-error`` and logged the ``RuntimeError``."""
    from test_http_proxy import GUEST

    from trio_isyswasfa.http import HttpClient
    from trio_isyswasfa.testing import asgi_request, build_python_component

    wasm = build_python_component(GUEST / "wit", "proxy-guest", "app", [GUEST / "src"])
    client = HttpClient(allow=["127.0.0.1:*"])  # (the app enters it with the lifespan)
    app = ComponentApp(trio_isyswasfa.load_component(wasm), http_client=client)
    with trio.fail_after(60):
        response = await asgi_request(app, "/fetch", query=f"url={upstream[0]}/d")
    assert (response.status, response.body) == (502, b"error: HttpRequestDenied\n")
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


# -- serve: an address that cannot be bound ----------------------------------------------


async def test_serve_closes_what_it_bound_when_a_later_address_fails() -> None:
    import gc
    import socket
    import warnings

    from test_review_probes2 import _HELLO, _proxy

    from trio_isyswasfa.http import serve

    component = _proxy(
        "(call $respond (local.get $out) (i32.const 200) (call $fields)"
        " (i32.const 1024) (i32.const 5))",
        _HELLO,
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with trio.fail_after(10), pytest.raises(OSError, match="in use"):
                await serve(component, bind=["127.0.0.1:0", f"127.0.0.1:{port}"])
            gc.collect()
    assert [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)] == []


@pytest.mark.parametrize("port", ["8\u00b2", "\u0668\u0660", "80 "])
def test_serve_takes_only_ascii_digits_for_a_port(port: str) -> None:
    """(Noticed with the probe above) a port of other digits is a bad address, not an
    unhelpful int() error ('²') or another port ('٨٠' read as 80)."""
    from trio_isyswasfa.http._serve import parse_addr

    with pytest.raises(ValueError, match="bad address"):
        parse_addr(f"127.0.0.1:{port}")
    assert parse_addr("[::1]:8080") == ("::1", 8080)


# -- HttpClient: a response body read after the client closed --------------------------------


async def test_a_response_body_cut_off_by_the_clients_close_fails_the_read() -> None:
    import test_http_client as h

    from trio_isyswasfa.http import HttpClient
    from trio_isyswasfa.wasi.io import StreamFailed, read_chunk

    async def slow(stream: trio.SocketStream, state: object) -> None:
        await h.read_request(stream, bytearray())
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
        await trio.sleep_forever()  # the rest comes later (after the client closed)

    body = b""
    with trio.fail_after(10):
        async with h.server(slow) as up:
            async with HttpClient(allow=["127.0.0.1:*"]) as client:
                response = await client.send(h.get(up.port))
            # the client is closed (its owner's `async with` ended); a guest reads on
            with contextlib.suppress(StreamFailed):
                while (chunk := await read_chunk(response.body.stream)) is not None:
                    body += chunk
                # ended without an error: it must have been the whole body
                assert len(body) == 100, f"a clean end after {len(body)} of 100 bytes"


# -- the draft's outgoing request: a body that breaks off -----------------------------------


async def test_a_draft_requests_body_that_breaks_off_is_its_error_code() -> None:
    import test_http_client as h

    from trio_isyswasfa import WasiConfig
    from trio_isyswasfa.http import HttpClient
    from trio_isyswasfa.http.types import Body, ErrorCode, Fields, Request, WasiHttp
    from trio_isyswasfa.wasi._context import WasiContext
    from trio_isyswasfa.wasi.io import Pipe, PipeReader, PipeWriter, StreamFailed

    with trio.fail_after(10):
        async with (
            h.server(h.keep_alive_server) as up,
            HttpClient(allow=["127.0.0.1:*"]) as client,
        ):
            ctx = WasiContext(WasiConfig())
            try:
                http = WasiHttp(ctx, client.send)
                # the body: the guest's incoming request body, as a forwarding guest
                # passes it on; its client leaves after three bytes (see serve's pump)
                pipe = Pipe()
                writer = PipeWriter(pipe)
                writer.write(b"abc")
                request = Request(
                    Fields(),
                    Body(PipeReader(pipe)),
                    method="POST",
                    scheme="http",
                    authority=f"127.0.0.1:{up.port}",
                    path_with_query="/",
                )
                # what the guest's `handler.handle` import starts (its host task's work)
                outcome = http._send(http.give(request).rep)
                writer.fail(
                    StreamFailed("the client left", cause=ErrorCode("connection-terminated"))
                )
                answer = await outcome
            finally:
                ctx.close()
    assert isinstance(answer, ErrorCode)
    assert answer.case == "connection-terminated"


async def test_a_draft_outgoing_handler_that_raises_gives_internal_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """(With the fix above) a handler's own bug is the guest's ``internal-error``, and
    logged, rather than an exception out of the send's host task."""
    import test_http_client as h

    from trio_isyswasfa import WasiConfig
    from trio_isyswasfa.http.types import ErrorCode, Request, Response, WasiHttp
    from trio_isyswasfa.wasi._context import WasiContext

    async def broken(request: Request) -> Response:
        await trio.lowlevel.checkpoint()
        raise KeyError("the handler's bug")

    ctx = WasiContext(WasiConfig())
    try:
        http = WasiHttp(ctx, broken)
        with trio.fail_after(10):
            answer = await http._send(http.give(h.get(9)).rep)
    finally:
        ctx.close()
    assert isinstance(answer, ErrorCode)
    assert (answer.case, answer.payload) == ("internal-error", 'KeyError: "the handler\'s bug"')
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "sending a guest's request failed"
    ]


async def test_a_draft_request_through_a_client_not_open_is_refused() -> None:
    import test_http_client as h

    from trio_isyswasfa import WasiConfig
    from trio_isyswasfa.http import HttpClient
    from trio_isyswasfa.http.types import ErrorCode, WasiHttp
    from trio_isyswasfa.wasi._context import WasiContext

    client = HttpClient(allow=["127.0.0.1:*"])  # (the app enters it with the lifespan)
    ctx = WasiContext(WasiConfig())
    try:
        http = WasiHttp(ctx, client.send)
        # what the guest's `handler.handle` import does during its call
        outcome = http._send(http.give(h.get(9)).rep)
        with trio.fail_after(10):
            answer = await outcome
    finally:
        ctx.close()
    assert isinstance(answer, ErrorCode)
