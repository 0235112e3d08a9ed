"""The command line: one line per error and exit status 2 for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden" / "lower"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_isyswasfa", *args], capture_output=True, text=True, check=False
    )


def test_lower_writes_the_world(tmp_path: Path) -> None:
    proc = run("lower", str(GOLDEN / "input.wit"), "-w", "golden", "-o", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert "isyswasfa-poll-golden" in proc.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"hello, not wasm", "not a WebAssembly binary"),
        (b"\0asm\x01\x00\x00\x00", "core WebAssembly module, not a component"),
    ],
)
def test_inspect_bad_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "x.wasm"
    if content is not None:
        path.write_bytes(content)
    proc = run("inspect", str(path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert message in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--allow-net", "nowhere"], "bad network pattern 'nowhere'"),
        (["--allow-net", "example.com:80"], "names are not allowed"),
        (["--max-memory", "lots"], "bad size 'lots'"),
        (["--dir", "::guest"], "bad directory"),
    ],
)
def test_run_names_a_bad_option_in_one_line(options: list[str], message: str) -> None:
    proc = run("run", *options, "x.wasm")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert message in lines[0]


def test_component_without_poll_export(tmp_path: Path) -> None:
    from trio_isyswasfa.testing import build_wat_component

    wit = tmp_path / "w.wit"
    wit.write_text("package a:b;\nworld w { export f: func() -> u32; }\n")
    wasm = build_wat_component(
        wit,
        "w",
        '(module (memory (export "memory") 1) (func (export "f") (result i32) i32.const 1))',
    )
    path = tmp_path / "plain.wasm"
    path.write_bytes(wasm)
    proc = run("inspect", str(path))
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == f"error: {path} has no isyswasfa-poll-* export: it was not built for isyswasfa"
    )


def test_lower_bad_world(tmp_path: Path) -> None:
    proc = run("lower", str(GOLDEN / "input.wit"), "-w", "nope", "-o", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no world named 'nope'")


@pytest.mark.guest
def test_check_names_an_import_the_host_lacks(cases_component: object) -> None:
    from trio_isyswasfa.testing import build_python_guest

    cases = Path(__file__).parent / "guests" / "cases"
    wasm = build_python_guest(cases / "wit", "cases-guest", "app", [cases / "src"])
    proc = run("check", str(wasm))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: imports note from test:cases/host")
    assert "which this host does not provide" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.guest
def test_check_accepts_a_component_with_only_wasi_imports(tmp_path: Path) -> None:
    from trio_isyswasfa.testing import build_wat_component
    from trio_isyswasfa.tools.lower import lower_world

    src = tmp_path / "w.wit"
    src.write_text("package a:b;\nworld w { export f: async func(); }\n")
    lower_world(src, "w", tmp_path / "lowered")
    wat = """(module (memory (export "memory") 1)
      (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
      (func (export "f-isyswasfa-start") (result i32) i32.const 16)
      (func (export "f-isyswasfa-result") (param i32))
      (func (export "isyswasfa-poll-w") (param i32 i32) (result i32) i32.const 16))"""
    path = tmp_path / "ok.wasm"
    path.write_bytes(build_wat_component(tmp_path / "lowered", "w", wat))
    proc = run("check", str(path))
    assert proc.returncode == 0, proc.stderr
