"""Fixtures for the round-trip example's tests (see the README's testing guide)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_isyswasfa import Component

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session", params=["python", "rust"])
def isyswasfa_component(
    request: pytest.FixtureRequest,
    isyswasfa_build_python: Callable[..., Component],
    isyswasfa_build_rust: Callable[..., Component],
) -> Component:
    """The round-trip guest in each language, built once per session (and cached on
    its sources): every test of this example runs against both."""
    if request.param == "rust":
        return isyswasfa_build_rust(HERE / "wit", "round-trip", HERE / "guest-rust")
    return isyswasfa_build_python(HERE / "wit", "round-trip", "app", [HERE / "guest"])


async def foo(s: str) -> str:
    """The host side of the imported ``baz.foo``."""
    await trio.sleep(0.01)
    return f"{s} - entered host - exited host"


@pytest.fixture
def isyswasfa_imports() -> dict[str, dict[str, Any]]:
    return {"example:round-trip/baz": {"foo": foo}}
