"""Shared fixtures: guest components built once per session (cached on their sources)."""

from __future__ import annotations

from pathlib import Path

import pytest

import trio_isyswasfa
from trio_isyswasfa.testing import build_python_guest

ROOT = Path(__file__).resolve().parent.parent
GUESTS = Path(__file__).resolve().parent / "guests"


@pytest.fixture(scope="session")
def cases_component() -> trio_isyswasfa.Component:
    """The test-cases guest (tests/guests/cases), compiled."""
    wasm = build_python_guest(
        GUESTS / "cases" / "wit", "cases-guest", "app", [GUESTS / "cases" / "src"]
    )
    return trio_isyswasfa.load_component(wasm)


@pytest.fixture(scope="session")
def round_trip_component() -> trio_isyswasfa.Component:
    """The round-trip example guest, compiled."""
    here = ROOT / "examples" / "round-trip"
    wasm = build_python_guest(here / "wit", "round-trip", "app", [here / "guest"])
    return trio_isyswasfa.load_component(wasm)


@pytest.fixture(scope="session")
def wasi_component() -> trio_isyswasfa.Component:
    """A guest that runs Python snippets against our WASI (tests/guests/wasi), compiled."""
    wasm = build_python_guest(
        GUESTS / "wasi" / "wit", "wasi-guest", "app", [GUESTS / "wasi" / "src"]
    )
    return trio_isyswasfa.load_component(wasm)


def example_component(name: str) -> trio_isyswasfa.Component:
    """The guest of ``examples/<name>`` (world ``<name>``, app ``app`` in ``guest/``), compiled."""
    here = ROOT / "examples" / name
    return trio_isyswasfa.load_component(
        build_python_guest(here / "wit", name, "app", [here / "guest"])
    )


@pytest.fixture(scope="session")
def service_component() -> trio_isyswasfa.Component:
    return example_component("service")


@pytest.fixture(scope="session")
def echo_component() -> trio_isyswasfa.Component:
    return example_component("echo")


@pytest.fixture(scope="session")
def hash_all_component() -> trio_isyswasfa.Component:
    return example_component("hash-all")


@pytest.fixture(scope="session")
def middleware_component() -> trio_isyswasfa.Component:
    return example_component("middleware")
