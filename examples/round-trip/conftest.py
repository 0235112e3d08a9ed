"""Fixtures for the round-trip example's tests (see the README's testing guide)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_isyswasfa import Component

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def isyswasfa_component(isyswasfa_build_python: Callable[..., Component]) -> Component:
    """The round-trip guest, built once per session (and cached on its sources)."""
    return isyswasfa_build_python(HERE / "wit", "round-trip", "app", [HERE / "guest"])


async def foo(s: str) -> str:
    """The host side of the imported ``baz.foo``."""
    await trio.sleep(0.01)
    return f"{s} - entered host - exited host"


@pytest.fixture
def isyswasfa_imports() -> dict[str, dict[str, Any]]:
    return {"example:round-trip/baz": {"foo": foo}}
