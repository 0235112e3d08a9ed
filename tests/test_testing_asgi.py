"""trio_isyswasfa.testing's in-process ASGI driver: open_lifespan and asgi_request,
checked against small plain ASGI apps (no component)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trio_isyswasfa.testing import AsgiResponse, asgi_request, asgi_scope, open_lifespan

Message = dict[str, Any]


class LifespanApp:
    """Answers each lifespan step with ``answers[step]`` and records what it saw."""

    def __init__(self, **answers: str) -> None:
        self.answers = {"startup": "complete", "shutdown": "complete", **answers}
        self.seen: list[str] = []

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            step = message["type"].removeprefix("lifespan.")
            self.seen.append(step)
            answer = self.answers[step]
            if answer == "return":
                return
            await send({"type": f"lifespan.{step}.{answer}", "message": "no"})
            if step == "shutdown":
                return


class TestOpenLifespan:
    async def test_starts_up_before_the_block_and_shuts_down_after_it(self) -> None:
        app = LifespanApp()
        async with open_lifespan(app):
            assert app.seen == ["startup"]
        assert app.seen == ["startup", "shutdown"]

    @pytest.mark.parametrize("step", ["startup", "shutdown"])
    async def test_a_failed_step_fails_the_block(self, step: str) -> None:
        app = LifespanApp(**{step: "failed"})
        with pytest.RaisesGroup(
            pytest.RaisesExc(AssertionError, match=f"lifespan {step}: the app answered")
        ):
            async with open_lifespan(app):
                pass

    async def test_an_app_that_returns_without_answering_fails_the_block(self) -> None:
        app = LifespanApp(startup="return")
        with pytest.RaisesGroup(
            pytest.RaisesExc(AssertionError, match="returned without completing lifespan startup")
        ):
            async with open_lifespan(app):
                pytest.fail("the block ran")  # pragma: no cover

    async def test_an_app_that_raises_fails_the_block_with_its_exception(self) -> None:
        # alone: not also as a step that found the app gone
        async def app(scope: Message, receive: Any, send: Any) -> None:
            await receive()
            raise ValueError("no start-up today")

        with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="no start-up today")):
            async with open_lifespan(app):
                pytest.fail("the block ran")  # pragma: no cover

    async def test_the_block_failing_cancels_the_app(self) -> None:
        app = LifespanApp()
        with pytest.RaisesGroup(KeyError):
            async with open_lifespan(app):
                raise KeyError("the block")
        assert app.seen == ["startup"]  # no shutdown: cancelled


class TestAsgiRequest:
    async def test_sends_the_request_and_collects_the_answer(self) -> None:
        seen: list[Any] = []

        async def app(scope: Message, receive: Any, send: Any) -> None:
            seen.append(scope)
            seen.append(await receive())
            headers = [(b"x-one", b"1"), (b"x-two", b"2")]
            await send({"type": "http.response.start", "status": 201, "headers": headers})
            await send({"type": "http.response.body", "body": b"he", "more_body": True})
            await send({"type": "http.response.body", "body": b"llo"})

        got = await asgi_request(
            app, "/p", method="POST", query="a=1", headers=[(b"x-in", b"v")], body=b"data"
        )
        assert got == AsgiResponse(201, [(b"x-one", b"1"), (b"x-two", b"2")], b"hello")
        scope, request = seen
        assert (scope["type"], scope["method"], scope["path"], scope["query_string"]) == (
            "http",
            "POST",
            "/p",
            b"a=1",
        )
        # a body comes with its length, as a client sends it (an HTTP/1.1 request
        # without one has no body)
        assert scope["headers"] == [(b"host", b"test"), (b"x-in", b"v"), (b"content-length", b"4")]
        assert request == {"type": "http.request", "body": b"data", "more_body": False}

    async def test_a_host_header_given_is_kept_alone(self) -> None:
        headers: list[Any] = []

        async def app(scope: Message, receive: Any, send: Any) -> None:
            headers.append(scope["headers"])
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body"})

        assert await asgi_request(app, headers=[(b"Host", b"x")]) == AsgiResponse(200, [], b"")
        assert headers == [[(b"Host", b"x")]]  # named in any case: none added beside it

    async def test_the_client_stays_after_the_body(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        async def app(scope: Message, receive: Any, send: Any) -> None:
            await receive()
            with trio.move_on_after(1) as waited:  # a disconnect would end it early
                await receive()
            assert waited.cancelled_caught
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"stayed"})

        assert (await asgi_request(app)).body == b"stayed"

    async def test_an_app_that_does_not_answer_is_reported(self) -> None:
        async def app(scope: Message, receive: Any, send: Any) -> None:
            pass

        with pytest.raises(AssertionError, match="GET /: the app returned without a response"):
            await asgi_request(app)


def test_asgi_scope_names_the_request_and_adds_a_host_only_when_missing() -> None:
    scope = asgi_scope("/a b", method="POST", query="x=1", headers=[(b"x-y", b"z")])
    assert (scope["type"], scope["method"], scope["path"], scope["raw_path"]) == (
        "http",
        "POST",
        "/a b",
        b"/a b",
    )
    assert scope["query_string"] == b"x=1"
    assert scope["headers"] == [(b"host", b"test"), (b"x-y", b"z")]
    own_host = asgi_scope(headers=[(b"Host", b"example.org")])
    assert own_host["headers"] == [(b"Host", b"example.org")]
