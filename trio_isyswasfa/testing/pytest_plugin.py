"""pytest fixtures for testing components (the ``trio_isyswasfa`` pytest plugin).

Installed as an entry point, so ``pip install trio-isyswasfa`` makes these
available. Define a session-scoped ``isyswasfa_component`` fixture in your
``conftest.py`` (with :func:`isyswasfa_load`, :func:`isyswasfa_build_python` or
:func:`isyswasfa_build_rust`),
override ``isyswasfa_imports`` / ``isyswasfa_wasi`` as needed, and ask for
``isyswasfa_instance`` to get a fresh instance per test. ``isyswasfa_instance`` is
an async fixture: run your tests with pytest-trio (``trio_mode = true``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from .._host import Component, Instance, load_component, open_instance
from ..wasi import WasiConfig
from ._build import RustToolchainMissing, build_python_guest, build_rust_guest


@pytest.fixture(scope="session")
def isyswasfa_load() -> Callable[[str | Path], Component]:
    """``isyswasfa_load(path)``: compile a component once per session (and on disk)."""
    loaded: dict[Path, Component] = {}

    def load(path: str | Path) -> Component:
        key = Path(path).resolve()
        if key not in loaded:
            loaded[key] = load_component(key)
        return loaded[key]

    return load


@pytest.fixture(scope="session")
def isyswasfa_build_python(
    isyswasfa_load: Callable[[str | Path], Component],
) -> Callable[..., Component]:
    """``isyswasfa_build_python(wit, world, app, python_path)``: build (cached on the
    sources) and load a Python guest."""

    def build(
        wit: str | Path, world: str, app: str, python_path: list[str | Path], **kw: Any
    ) -> Component:
        return isyswasfa_load(build_python_guest(wit, world, app, python_path, **kw))

    return build


@pytest.fixture(scope="session")
def isyswasfa_build_rust(
    isyswasfa_load: Callable[[str | Path], Component],
) -> Callable[..., Component]:
    """``isyswasfa_build_rust(wit, world, crate)``: build (cached on the sources) and
    load a Rust guest; the test is skipped, saying how to install the toolchain, when
    it is missing."""

    def build(wit: str | Path, world: str, crate: str | Path, **kw: Any) -> Component:
        try:
            path = build_rust_guest(wit, world, crate, **kw)
        except RustToolchainMissing as exc:
            pytest.skip(f"Rust guest not built: {exc}")
        return isyswasfa_load(path)

    return build


@pytest.fixture
def isyswasfa_imports() -> Mapping[str, Mapping[str, Any]]:
    """The component's non-WASI imports; override in your conftest."""
    return {}


@pytest.fixture
def isyswasfa_wasi() -> WasiConfig:
    """What the component sees of the world; override in your conftest."""
    return WasiConfig()


@pytest.fixture
async def isyswasfa_instance(
    isyswasfa_component: Component,
    isyswasfa_imports: Mapping[str, Mapping[str, Any]],
    isyswasfa_wasi: WasiConfig,
) -> AsyncIterator[Instance]:
    """A fresh instance of ``isyswasfa_component`` for this test."""
    async with open_instance(
        isyswasfa_component, imports=isyswasfa_imports, wasi=isyswasfa_wasi
    ) as instance:
        yield instance


# A test that builds a Rust guest may, on a fresh machine, build Rust's standard library
# for wasm first (minutes on two cores): under pytest-timeout it gets this long.
RUST_BUILD_TIMEOUT = 1800


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give tests that build a Rust guest time for a cold standard-library build."""
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if "isyswasfa_build_rust" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(RUST_BUILD_TIMEOUT))
