"""The command line: one line per error and exit status 2 for bad input."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import wasmtime

import trio_isyswasfa
from trio_isyswasfa._engine import compile_problem
from trio_isyswasfa.testing import guest_cache_dir
from trio_isyswasfa.tools._paths import tool_command

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


# (int() and float() read Arabic-Indic digits, '+8', '8_0'; float() 'inf' and '1e3' too)
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--max-handles", "\u0668"], "not a whole number: '\u0668'"),
        (["--max-handles", "8_0"], "not a whole number: '8_0'"),
        (["--max-run-seconds", "\u0668"], "not a number of seconds: '\u0668'"),
        (["--max-run-seconds", "inf"], "not a number of seconds: 'inf'"),
    ],
)
def test_run_takes_numbers_in_ascii_digits_only(options: list[str], message: str) -> None:
    proc = run("run", *options, "x.wasm")
    assert proc.returncode == 2
    assert message in proc.stderr.strip().splitlines()[-1]


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
        == f"error: {path} has no isyswasfa-poll-* export: it was not built for isyswasfa "
        "(and is neither a wasi:cli command nor a wasi:http proxy); it exports f"
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


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"trio-isyswasfa {trio_isyswasfa.__version__}"


# components this host cannot run: each is refused in one line that names the cause
ASYNC_BUILTIN = """(component
  (core func $new (canon waitable-set.new))
  (core module $m (import "" "new" (func (result i32))))
  (core instance (instantiate $m (with "" (instance (export "new" (func $new)))))))"""
CUSTOM_PAGE_SIZES = "(component (core module (memory 1 (pagesize 1))))"


@pytest.mark.parametrize(
    ("wat", "message"),
    [
        (
            ASYNC_BUILTIN,
            "uses the component model's async built-ins (`waitable-set.new`), as WASI 0.3",
        ),
        (CUSTOM_PAGE_SIZES, "uses the WebAssembly custom page sizes proposal"),
    ],
)
@pytest.mark.parametrize("command", ["inspect", "run"])
def test_a_component_this_host_cannot_run_is_named_in_one_line(
    tmp_path: Path, wat: str, message: str, command: str
) -> None:
    path = tmp_path / "x.wasm"
    path.write_bytes(wasmtime.wat2wasm(wat))
    proc = run(command, str(path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert "failed to parse" not in lines[0]


def test_an_unexplained_compile_error_keeps_its_cause() -> None:
    text = "failed to parse WebAssembly module\n\nCaused by:\n    type mismatch (at offset 0x10)"
    assert compile_problem(text) == (
        "cannot compile component: failed to parse WebAssembly module: "
        "type mismatch (at offset 0x10)"
    )


def plain_componentize_py(wit: Path, world: str, src: Path) -> Path:
    """A component built by componentize-py alone, cached on its sources and version."""
    h = hashlib.sha256(version("componentize-py").encode())
    for path in sorted([*wit.rglob("*.wit"), *src.rglob("*.py")]):
        h.update(path.name.encode() + path.read_bytes())
    out = guest_cache_dir() / f"plain-{world}-{h.hexdigest()[:20]}.wasm"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        command = [*tool_command("componentize-py"), "-d", str(wit), "-w", world]
        subprocess.run(
            [*command, "componentize", "-p", str(src), "app", "-o", str(tmp)],
            check=True,
            capture_output=True,
        )
        tmp.replace(out)
    return out


@pytest.mark.guest
@pytest.mark.slow
def test_a_wasi_0_3_component_from_componentize_py_is_named() -> None:
    guest = Path(__file__).parent / "guests" / "p3"
    wasm = plain_componentize_py(guest / "wit", "p3", guest / "src")
    proc = run("run", str(wasm))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "async built-ins (`context.get`), as WASI 0.3 components do" in lines[0]
