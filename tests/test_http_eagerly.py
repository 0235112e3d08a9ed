"""``http._asgi._eagerly``: a request's coroutine runs in the caller's task, and what it
needs beside it only when it waits (``suspended`` is called at its first suspension
that counts). Checkpoints (a server's send that wrote at once) do not count, up to the
budget given; a wait for anything does. Checked on both backends, without a component."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from trio_isyswasfa.http._asgi import _eagerly

BACKENDS = ["trio", "asyncio"]


async def _checkpoints(n: int) -> str:
    for _ in range(n):
        await anyio.lowlevel.checkpoint()
    return "done"


def _suspensions(backend: str, n: int, budget: int) -> list[str]:
    """What ``_eagerly`` called ``suspended`` for around ``n`` checkpoints, budget
    ``budget`` (and the result)."""
    calls: list[str] = []

    async def main() -> None:
        calls.append(
            await _eagerly(_checkpoints(n), lambda: calls.append("suspended"), None, budget)
        )

    anyio.run(main, backend=backend)
    return calls


@pytest.mark.parametrize("backend", BACKENDS)
def test_checkpoints_within_the_budget_are_no_suspension(backend: str) -> None:
    assert _suspensions(backend, 3, 3) == ["done"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_checkpoint_past_the_budget_is_one(backend: str) -> None:
    # (a guest computing past as many time slices is listened to from then on)
    assert _suspensions(backend, 4, 3) == ["suspended", "done"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_a_budget_the_first_checkpoint_is_one(backend: str) -> None:
    assert _suspensions(backend, 2, 0) == ["suspended", "done"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_wait_is_a_suspension_whatever_the_budget(backend: str) -> None:
    calls: list[str] = []

    async def waits(event: anyio.Event) -> str:
        await event.wait()
        return "done"

    async def main() -> None:
        event = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _set(event))  # runs once the request waits
            result = await _eagerly(waits(event), lambda: calls.append("suspended"), None, 8)
            calls.append(result)

    anyio.run(main, backend=backend)
    assert calls == ["suspended", "done"]


async def _set(event: anyio.Event) -> None:
    event.set()


@pytest.mark.parametrize("backend", BACKENDS)
def test_counts_still_decides_past_the_checkpoints(backend: str) -> None:
    calls: list[str] = []

    async def main() -> None:
        result = await _eagerly(
            _checkpoints(5), lambda: calls.append("suspended"), lambda: False, 2
        )
        calls.append(result)

    anyio.run(main, backend=backend)
    assert calls == ["done"]
