"""Serving standard ``wasi:http/proxy@0.2`` components (a componentize-py app, no
isyswasfa): real HTTP requests through our hypercorn server, in-process."""

from __future__ import annotations

import contextlib
import gc
import re
import subprocess
import sys
from pathlib import Path

import h11
import httpx
import pytest
import trio
import wasmtime
from conftest import HTTP_TIMEOUT, JABBERWOCKY, get_at_once, settled, start_server
from test_http_serve import RawClient, eventually, pattern
from test_wasi_cli import wat_command

import trio_isyswasfa
import trio_isyswasfa.http
from trio_isyswasfa import _engine
from trio_isyswasfa.engine._component import OwnEngineInstance
from trio_isyswasfa.engine._core import live_host_funcs as core_live_host_funcs
from trio_isyswasfa.engine._fiber import live_host_funcs as fiber_live_host_funcs
from trio_isyswasfa.http import ComponentApp, HttpClient
from trio_isyswasfa.http.wasi_http import ResponseOutparam
from trio_isyswasfa.testing import asgi_request, build_python_component, open_lifespan

pytestmark = [pytest.mark.guest, pytest.mark.slow]

GUEST = Path(__file__).resolve().parent / "guests" / "proxy-python"


@pytest.fixture(scope="session")
def proxy_component(engine: str) -> trio_isyswasfa.Component:
    wasm = build_python_component(GUEST / "wit", "proxy-guest", "app", [GUEST / "src"])
    return trio_isyswasfa.load_component(wasm, engine=engine)  # once per engine


@pytest.fixture
async def proxy(
    nursery: trio.Nursery, proxy_component: trio_isyswasfa.Component
) -> tuple[str, ComponentApp]:
    app = ComponentApp(proxy_component)
    return await start_server(nursery, app), app


class TestServing:
    async def test_hello(self, proxy: tuple[str, ComponentApp]) -> None:
        url, app = proxy
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            response = await client.get(f"{url}/hello")
        assert response.status_code == 200
        assert response.text == "hello, world!\n"
        assert response.headers["content-type"] == "text/plain"
        assert app.instances == "pooled"

    async def test_echoes_method_path_headers_and_body(
        self, proxy: tuple[str, ComponentApp]
    ) -> None:
        url, app = proxy
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            response = await client.post(
                f"{url}/echo?x=1", headers={"foo": "bar"}, content=b"And the mome raths outgrabe"
            )
        assert response.status_code == 200
        assert response.headers["x-echo-method"] == "POST"
        assert response.headers["x-echo-path"] == "/echo?x=1"
        assert response.headers["x-echo-authority"] == url.removeprefix("http://")
        assert response.headers["x-echo-foo"] == "bar"
        assert response.content == b"And the mome raths outgrabe"
        stats = await settled(app)
        assert (stats.completed, stats.failed) == (1, 0)

    async def test_streams_a_large_body_both_ways(self, proxy: tuple[str, ComponentApp]) -> None:
        url, _ = proxy
        data = pattern(1 << 20)
        client = await RawClient.connect(url)
        headers = [("host", "x"), ("content-length", str(len(data)))]
        async with client.stream:
            request = h11.Request(method="PUT", target="/echo", headers=headers)
            head, body = await client.exchange(request, data, 65536)
        assert head.status_code == 200
        assert body == data

    async def test_a_response_streams_while_handle_still_runs(
        self, proxy: tuple[str, ComponentApp]
    ) -> None:
        url, _ = proxy
        async with (
            httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client,
            client.stream("GET", f"{url}/stream?n=200") as response,
        ):
            text = (await response.aread()).decode()
        assert text == "".join(f"line {i}\n" for i in range(200))

    async def test_the_guest_sees_the_specs_field_checks(
        self, proxy: tuple[str, ComponentApp]
    ) -> None:
        url, _ = proxy
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            response = await client.get(f"{url}/fields")
        assert response.text.splitlines() == [
            "connection: Forbidden",
            "host: Forbidden",
            "bad name: InvalidSyntax",
            "ok: InvalidSyntax",
            "incoming: Immutable",
            "from-list: Forbidden",
        ]

    async def test_trailers_follow_the_body_when_the_client_accepts_them(
        self, proxy_component: trio_isyswasfa.Component
    ) -> None:
        # ASGI sends trailers over HTTP/2 only: the app is driven directly, as hypercorn would
        app = ComponentApp(proxy_component, instances="per-request")
        scope = {
            "type": "http",
            "http_version": "2",
            "method": "POST",
            "scheme": "http",
            "path": "/echo",
            "raw_path": b"/echo",
            "query_string": b"",
            "headers": [(b"te", b"trailers"), (b"x-trailer", b"fizz")],
            "server": ("127.0.0.1", 80),
            "extensions": {"http.response.trailers": {}},
        }
        incoming = [{"type": "http.request", "body": b"payload", "more_body": False}]
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            if incoming:
                return incoming.pop()
            await trio.sleep_forever()
            raise AssertionError

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        with trio.fail_after(30):
            await app(scope, receive, send)
        assert [m["type"] for m in sent] == [
            "http.response.start",
            "http.response.body",
            "http.response.body",
            "http.response.trailers",
        ]
        assert sent[0]["trailers"] is True
        assert b"".join(m.get("body", b"") for m in sent[1:3]) == b"payload"  # type: ignore[misc]
        assert sent[3]["headers"] == [(b"x-trailer", b"fizz")]


class TestInstancePolicies:
    @pytest.mark.parametrize(("policy", "opened"), [("pooled", 1), ("per-request", 3)])
    async def test_pooled_reuses_an_instance_per_request_opens_one_each(
        self,
        nursery: trio.Nursery,
        proxy_component: trio_isyswasfa.Component,
        policy: str,
        opened: int,
    ) -> None:
        app = ComponentApp(proxy_component, instances=policy)  # type: ignore[arg-type]
        url = await start_server(nursery, app)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            for _ in range(3):
                assert (await client.get(f"{url}/hello")).text == "hello, world!\n"
        stats = await settled(app)
        # per-request: spares opened ahead and not used yet are no request's
        assert (stats.completed, stats.instances_opened - stats.spare_instances) == (3, opened)
        assert stats.guest_seconds > 0  # the guest's time in the requests is counted

    @pytest.mark.parametrize(
        ("policy", "spares", "counts"),
        [
            ("per-request", 2, ["1", "1", "1", "1"]),
            ("per-request", 0, ["1", "1", "1", "1"]),
            ("pooled", 2, ["1", "2", "3", "4"]),
        ],
    )
    async def test_per_request_gives_each_request_a_fresh_instance(
        self,
        nursery: trio.Nursery,
        proxy_component: trio_isyswasfa.Component,
        policy: str,
        spares: int,
        counts: list[str],
    ) -> None:
        # the guest counts the requests its instance handled: 1 in a fresh one
        app = ComponentApp(
            proxy_component,
            instances=policy,  # type: ignore[arg-type]
            spare_instances=spares,
        )
        url = await start_server(nursery, app)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            got = [(await client.get(f"{url}/count")).text.strip() for _ in range(4)]
        assert got == counts
        stats = await settled(app)
        if policy == "per-request":
            assert stats.instances_opened - stats.spare_instances == 4
            assert stats.spare_instances <= spares

    async def test_spare_instances_are_opened_ahead_and_closed_at_shutdown(
        self, proxy_component: trio_isyswasfa.Component
    ) -> None:
        app = ComponentApp(proxy_component, instances="per-request", spare_instances=2)
        with trio.fail_after(60):
            async with open_lifespan(app):
                await eventually(lambda: app.statistics().spare_instances == 2)
                assert (await asgi_request(app, "/count")).body == b"1\n"
                assert (await asgi_request(app, "/count")).body == b"1\n"
                # each taken spare is replaced in the background
                await eventually(lambda: app.statistics().spare_instances == 2)
                await eventually(lambda: app.statistics().instances_closed == 2)
                assert app.statistics().instances_opened == 4
        stats = app.statistics()
        assert (stats.instances_opened, stats.instances_closed, stats.spare_instances) == (4, 4, 0)

    async def test_an_instance_that_cannot_open_fails_its_request_not_the_server(
        self, proxy_component: trio_isyswasfa.Component
    ) -> None:
        # a Python guest's memory does not fit: neither spares nor requests' instances open
        app = ComponentApp(
            proxy_component,
            instances="per-request",
            limits=trio_isyswasfa.Limits(max_memory=1 << 20),
        )
        with trio.fail_after(60):
            async with open_lifespan(app):
                for _ in range(2):
                    assert (await asgi_request(app, "/hello")).body == b"the component failed\n"
        stats = app.statistics()
        assert (stats.failed, stats.instances_opened, stats.spare_instances) == (2, 0, 0)

    async def test_closed_instances_leave_no_host_functions_behind(
        self, nursery: trio.Nursery, proxy_component: trio_isyswasfa.Component
    ) -> None:
        # each host function's closure holds its instance: one left registered after
        # the instance closed keeps the whole instance (its store, its memory) alive
        before = (core_live_host_funcs(), fiber_live_host_funcs())
        app = ComponentApp(proxy_component, instances="per-request", spare_instances=0)
        url = await start_server(nursery, app)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            for _ in range(3):  # /sleep: the guest waits in a blocking host function
                assert (await client.get(f"{url}/sleep?ms=1")).text == "slept\n"
        await eventually(lambda: app.statistics().instances_closed == 3)
        assert (core_live_host_funcs(), fiber_live_host_funcs()) == before

    async def test_a_closed_instance_is_freed_without_the_garbage_collector(
        self, engine: str, proxy_component: trio_isyswasfa.Component
    ) -> None:
        # an instance that only the collector frees keeps its store (its memory) until
        # the collector runs, and each collection walks all of it: per-request serving
        # made hundreds of such objects a request
        if engine != "own":
            pytest.skip("wasmtime-py's component instances are left to the collector")
        app = ComponentApp(proxy_component, instances="per-request", spare_instances=0)
        with trio.fail_after(60):
            async with open_lifespan(app):
                assert (await asgi_request(app, "/hello")).status == 200  # warm
                gc.collect()
                gc.disable()
                try:
                    for path in ("/hello", "/count", "/sleep?ms=1"):
                        assert (await asgi_request(app, path)).status == 200
                    assert app.statistics().instances_closed == 4
                    left = [o for o in gc.get_objects() if isinstance(o, OwnEngineInstance)]
                finally:
                    gc.enable()
        assert left == []

    async def test_spare_instances_must_not_be_negative(
        self, proxy_component: trio_isyswasfa.Component
    ) -> None:
        with pytest.raises(ValueError, match="spare_instances must not be negative"):
            ComponentApp(proxy_component, instances="per-request", spare_instances=-1)

    async def test_concurrent_requests_each_get_an_instance(
        self, nursery: trio.Nursery, proxy_component: trio_isyswasfa.Component
    ) -> None:
        # "shared" means one request at a time per instance for a 0.2 component
        app = ComponentApp(proxy_component, instances="shared")
        url = await start_server(nursery, app)
        texts = await get_at_once(f"{url}/stream?n=50", 3)
        assert texts == ["".join(f"line {i}\n" for i in range(50))] * 3
        stats = await settled(app)
        assert app.per_instance == 1
        assert stats.completed == 3


class TestOutgoing:
    @pytest.fixture
    async def loopback_proxy(
        self, nursery: trio.Nursery, proxy_component: trio_isyswasfa.Component
    ) -> str:
        """The URL of the proxy guest served with outgoing HTTP allowed to loopback."""
        app = ComponentApp(proxy_component, http_client=HttpClient(allow=["127.0.0.1:*"]))
        return await start_server(nursery, app)

    async def test_a_guest_fetches_through_the_allow_list(
        self, loopback_proxy: str, upstream: tuple[str, object]
    ) -> None:
        upstream_url, _ = upstream
        url = loopback_proxy
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            got = await client.get(f"{url}/fetch", params={"url": f"{upstream_url}/d"})
            posted = await client.post(
                f"{url}/fetch-post", params={"url": f"{upstream_url}/echo"}, content=b"x" * 100_000
            )
        assert got.status_code == 200
        assert got.headers["x-upstream-status"] == "200"
        assert got.content == JABBERWOCKY["/d"]
        assert posted.content == b"x" * 100_000

    async def test_a_request_body_dropped_unfinished_fails_the_request(
        self, loopback_proxy: str, upstream: tuple[str, object]
    ) -> None:
        # not sent as if complete: the guest learns the body broke off
        upstream_url, _ = upstream
        url = loopback_proxy
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            response = await client.post(
                f"{url}/fetch-drop", params={"url": f"{upstream_url}/echo"}, content=b"x" * 1000
            )
        assert (response.status_code, response.text) == (502, "error: HttpRequestBodySize\n")

    @pytest.mark.parametrize("allow", [None, ["10.0.0.1:*"]])
    async def test_a_request_outside_the_allow_list_is_denied(
        self,
        nursery: trio.Nursery,
        proxy_component: trio_isyswasfa.Component,
        upstream: tuple[str, object],
        allow: list[str] | None,
    ) -> None:
        upstream_url, upstream_app = upstream
        client = None if allow is None else HttpClient(allow=allow)
        app = ComponentApp(proxy_component, http_client=client)
        url = await start_server(nursery, app)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.get(f"{url}/fetch", params={"url": f"{upstream_url}/d"})
        assert (response.status_code, response.text) == (502, "error: HttpRequestDenied\n")
        assert upstream_app.most_in_flight == 0  # type: ignore[attr-defined]


class TestMisbehavingGuests:
    @pytest.mark.parametrize("route", ["/no-set", "/set-twice", "/error-code", "/trap"])
    async def test_a_guest_without_a_proper_answer_gets_a_500_and_the_server_serves_on(
        self, proxy: tuple[str, ComponentApp], route: str
    ) -> None:
        url, app = proxy
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            response = await client.get(f"{url}{route}")
            assert response.status_code == 500
            again = await client.get(f"{url}/hello")
        assert again.text == "hello, world!\n"
        stats = await settled(app)
        assert (stats.failed, stats.completed) == (1, 1), stats

    @pytest.mark.parametrize("route", ["/no-set", "/set-twice", "/trap", "/overflow"])
    async def test_the_instance_that_misbehaved_is_retired(
        self, proxy: tuple[str, ComponentApp], route: str
    ) -> None:
        url, app = proxy
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            with contextlib.suppress(httpx.HTTPError):
                await client.get(f"{url}{route}")
            await client.get(f"{url}/hello")
        stats = await settled(app)
        assert stats.instances_opened == 2

    @pytest.mark.parametrize(
        ("route", "said"),
        [
            ("/short", "/short: written, finish: ErrorCode_HttpResponseBodySize"),
            ("/drop-body", None),
        ],
    )
    async def test_a_body_that_breaks_its_length_or_is_dropped_is_cut_off(
        self,
        nursery: trio.Nursery,
        proxy_component: trio_isyswasfa.Component,
        route: str,
        said: str | None,
    ) -> None:
        printed: list[bytes] = []
        app = ComponentApp(proxy_component, wasi=trio_isyswasfa.WasiConfig(stdout=printed.append))
        url = await start_server(nursery, app)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(f"{url}{route}")
            again = await client.get(f"{url}/hello")
        assert again.text == "hello, world!\n"
        if said is not None:
            assert b"".join(printed).decode().splitlines() == [said]
        stats = await settled(app)
        assert (stats.failed, stats.completed) == (1, 1)

    async def test_a_body_written_past_its_length_goes_out_cut_at_that_length(
        self, nursery: trio.Nursery, proxy_component: trio_isyswasfa.Component
    ) -> None:
        """As on wasmtime: the client gets the declared bytes, the guest's write fails,
        and the instance is retired."""
        printed: list[bytes] = []
        app = ComponentApp(proxy_component, wasi=trio_isyswasfa.WasiConfig(stdout=printed.append))
        url = await start_server(nursery, app)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            cut = await client.get(f"{url}/overflow")
            again = await client.get(f"{url}/hello")
        assert (cut.status_code, cut.content) == (200, b"0123456789")
        assert again.text == "hello, world!\n"
        assert b"".join(printed).decode().splitlines() == [
            "/overflow: refused, finish: ErrorCode_HttpResponseBodySize"
        ]
        stats = await settled(app)
        assert (stats.failed, stats.completed) == (1, 1)


def test_serve_refuses_a_component_exporting_neither_handler(tmp_path: Path) -> None:
    wasm = tmp_path / "cmd.wasm"
    wasm.write_bytes(wat_command(tmp_path, "i32.const 0"))
    proc = subprocess.run(
        [sys.executable, "-m", "trio_isyswasfa", "serve", str(wasm), "--addr", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "exports neither wasi:http/incoming-handler@0.2.x" in lines[0]
    assert "it exports wasi:cli/run@0.2.0" in lines[0]


class TestConcurrency:
    async def test_a_guest_blocked_in_poll_suspends_only_itself(
        self, proxy: tuple[str, ComponentApp]
    ) -> None:
        url, _ = proxy
        finished: list[str] = []
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:

            async def get(route: str) -> None:
                response = await client.get(f"{url}{route}")
                finished.append(response.text)

            async with trio.open_nursery() as requests:
                requests.start_soon(get, "/sleep?ms=1000")
                await trio.sleep(0.1)  # the first guest is blocked in poll by now
                requests.start_soon(get, "/hello")
        assert finished == ["hello, world!\n", "slept\n"]

    async def test_a_client_that_leaves_cancels_the_guest_and_the_server_serves_on(
        self, proxy: tuple[str, ComponentApp]
    ) -> None:
        url, app = proxy
        raw = await RawClient.connect(url)
        async with raw.stream:
            await raw.send(h11.Request(method="GET", target="/forever", headers=[("host", "x")]))
            await raw.send(h11.EndOfMessage())
            assert isinstance(await raw.next_event(), h11.Response)
            assert isinstance(await raw.next_event(), h11.Data)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            again = await client.get(f"{url}/hello")
        assert again.text == "hello, world!\n"
        stats = await settled(app)
        assert (stats.cancelled, stats.completed, stats.instances_opened) == (1, 1, 2)

    async def test_a_time_slice_is_no_wait_a_request_starts_no_task_for_it(
        self, proxy_component: trio_isyswasfa.Component, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # a guest that computes past an epoch tick yields to the loop without waiting: a
        # short call often spans one (under load, most do), and its request paid for a
        # task listening to the client and one sending the response as if it waited
        tick = wasmtime.Engine.increment_epoch

        def set_and_tick(outparam: ResponseOutparam, response: object) -> None:
            set_response(outparam, response)
            for _ in range(2):  # the guest yields at its next check, once
                tick(_engine.engine())

        set_response = ResponseOutparam.set
        spawned: list[str] = []

        class Spawns(trio.abc.Instrument):
            def task_spawned(self, task: trio.lowlevel.Task) -> None:
                spawned.append(task.name)

        app = ComponentApp(proxy_component)
        async with open_lifespan(app):
            assert (await asgi_request(app, "/hello")).status == 200  # the instance is warm
            monkeypatch.setattr(ResponseOutparam, "set", set_and_tick)
            spawns = Spawns()
            trio.lowlevel.add_instrument(spawns)
            sliced_once = 0
            with trio.fail_after(30):
                while sliced_once < 3:
                    spawned.clear()
                    before = _engine.ticks  # (the ticker counts each tick, holding the GIL)
                    assert (await asgi_request(app, "/hello")).body == b"hello, world!\n"
                    if _engine.ticks == before:
                        # no tick of the ticker thread's fell inside (with one, the
                        # guest computed past two: that counts as a wait)
                        assert spawned == []
                        sliced_once += 1
            trio.lowlevel.remove_instrument(spawns)
            stats = await settled(app)
        assert (stats.failed, stats.instances_opened) == (0, 1)


def test_app_from_environment_serves_a_proxy_component(
    monkeypatch: pytest.MonkeyPatch, proxy_component: trio_isyswasfa.Component
) -> None:
    monkeypatch.setenv("TRIO_ISYSWASFA_COMPONENT", proxy_component.name)
    app = trio_isyswasfa.http.app_from_environment()
    assert (app.proxy, app.instances, app.interface) == (
        True,
        "pooled",
        "wasi:http/incoming-handler@0.2.0",
    )


def _wit_functions(wit: str) -> set[str]:
    """The function names (as the component model spells them) a WIT interface declares."""
    names: set[str] = set()
    resource = None
    for line in wit.splitlines():
        line = line.strip()
        if m := re.match(r"resource ([\w-]+) \{", line):
            resource = m.group(1)
        elif line == "}":
            resource = None
        elif resource and line.startswith("constructor("):
            names.add(f"[constructor]{resource}")
        elif m := re.match(r"%?([\w-]+): (static )?func", line):
            if resource is None:
                names.add(m.group(1))
            else:
                names.add(f"[{'static' if m.group(2) else 'method'}]{resource}.{m.group(1)}")
    return names


def test_every_function_of_the_wit_is_implemented_and_nothing_else() -> None:
    from trio_isyswasfa.http.wasi_http import OUTGOING_HANDLER, TYPES, WasiHttpP2
    from trio_isyswasfa.wasi._context import WasiContext

    ctx = WasiContext(trio_isyswasfa.WasiConfig())
    WasiHttpP2(ctx, None, lambda work: None)
    wit = Path(__file__).resolve().parent.parent / "wit" / "deps" / "http-0.2"
    types_wit = (wit / "types.wit").read_text()
    handler_wit = (wit / "handler.wit").read_text()
    outgoing = handler_wit[handler_wit.index("interface outgoing-handler") :]
    assert {n for i, n in ctx.functions if i == TYPES} == _wit_functions(types_wit)
    assert {n for i, n in ctx.functions if i == OUTGOING_HANDLER} == _wit_functions(outgoing)
    resources = set(re.findall(r"resource ([\w-]+)", types_wit))
    assert {n for i, n in ctx.resources if i == TYPES} == resources


@pytest.mark.parametrize(
    ("version", "headers", "bodiless"),
    [
        ("1.1", [(b"host", b"h")], True),
        ("1.0", [], True),
        ("1.1", [(b"content-length", b"0")], True),
        ("1.1", [(b"content-length", b"5")], False),
        ("1.1", [(b"transfer-encoding", b"chunked")], False),
        ("2", [], False),  # HTTP/2 ends a body in the stream, not in the head
    ],
)
def test_only_a_head_that_says_so_spares_the_wait_for_the_body(
    version: str, headers: list[tuple[bytes, bytes]], bodiless: bool
) -> None:
    from trio_isyswasfa.http._asgi import _without_body

    assert _without_body({"http_version": version, "headers": headers}) is bodiless
