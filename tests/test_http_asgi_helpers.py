"""The tasks a proxy request starts only when its ``handle`` call suspends, run in the
app's task group but bound to the request (``http._asgi._RequestHelpers``): a helper
that fails cancels its request and comes out of it; the request's end cancels those
still running. Checked on both backends, without a component."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest

from trio_isyswasfa._park import open_task_group, running_trio
from trio_isyswasfa.http._asgi import _RequestHelpers

BACKENDS = ["trio", "asyncio"]


def run(
    backend: str,
    body: Callable[[_RequestHelpers], Awaitable[None]],
    after: Callable[[], None] = lambda: None,
) -> None:
    """``body(helpers)`` as a request whose call waits would run it: in the request's
    scope (entered by hand, as the engine's ``before_wait`` enters it, and left where
    the request ends), with the helpers closed after it (then ``after()``, while the
    app's task group still runs), the app's task group around both."""

    async def main() -> None:
        on_trio = running_trio()
        with anyio.fail_after(10):  # (a guard: a helper left running would hold the group)
            async with open_task_group(on_trio) as group:
                helpers = _RequestHelpers(group, on_trio)
                try:
                    helpers.enter_scope()
                    try:
                        await body(helpers)
                    except BaseException as exc:  # (as _serve_proxy leaves it)
                        if not helpers.leave_scope(exc):
                            raise
                    else:
                        helpers.leave_scope(None)
                finally:
                    await helpers.aclose()
                after()

    anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_helper_cancels_its_request_and_is_raised_from_it(backend: str) -> None:
    reached: list[str] = []

    async def fails() -> None:
        raise ValueError("the client's connection broke")

    async def request(helpers: _RequestHelpers) -> None:
        helpers.start_soon(fails)
        try:
            with anyio.fail_after(10):  # (a guard: without the cancel it would wait on)
                await anyio.sleep_forever()  # the guest waits: the failure cancels it
        except anyio.get_cancelled_exc_class():
            reached.append("cancelled")
            raise

    with pytest.raises(BaseExceptionGroup) as info:
        run(backend, request)
    assert info.group_contains(ValueError, match="connection broke")
    assert reached == ["cancelled"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_requests_end_cancels_the_helpers_still_running(backend: str) -> None:
    ended: list[str] = []

    async def listens(name: str) -> None:
        try:
            await anyio.sleep_forever()  # a client that stays
        finally:
            ended.append(name)

    async def request(helpers: _RequestHelpers) -> None:
        helpers.start_soon(listens, "running")
        await anyio.sleep(0.01)  # it runs by now
        helpers.start_soon(listens, "not started yet")

    def when_the_request_is_over() -> None:
        assert sorted(ended) == ["not started yet", "running"]

    run(backend, request, when_the_request_is_over)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_helper_can_cancel_the_request_it_helps(backend: str) -> None:
    async def client_left(helpers: _RequestHelpers) -> None:
        helpers.cancel_scope.cancel()

    async def request(helpers: _RequestHelpers) -> None:
        helpers.start_soon(client_left, helpers)
        with anyio.fail_after(10):  # (a guard: without the cancel it would wait on)
            await anyio.sleep_forever()

    run(backend, request)  # the request's scope caught its own cancellation
