"""What ``python -m trio_isyswasfa run`` imports: no HTTP server or client for a command.

Start-up is most of what a short ``run`` costs (bench/bench_cli.py measures it against
``wasmtime run``); hypercorn and h11 alone cost 70-130 ms of CPU of it here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trio_isyswasfa.testing import build_wat_component

PROBE = """
import sys
import trio_isyswasfa
import trio_isyswasfa.http
import trio_isyswasfa.http.types  # what every instance registers
heavy = ("hypercorn", "h11", "trio_isyswasfa.http._asgi", "trio_isyswasfa.http._client")
print(sorted(m for m in sys.modules if m.split(".")[0] in heavy or m in heavy))
trio_isyswasfa.http.serve, trio_isyswasfa.http.HttpClient  # still there, on first use
print(all(m in sys.modules for m in ("hypercorn", "h11")))
"""


def test_a_command_imports_no_http_server_or_client() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    assert out == ["[]", "True"]


RUN_PROBE = """
import sys
from trio_isyswasfa._cli import main
status = main(["run", "--engine", "wasmtime", sys.argv[1]])
print(status)
print(sorted(m for m in sys.modules if m.startswith(tuple(sys.argv[2:]))))
"""

NOT_FOR_A_COMMAND = (
    "hypercorn",
    "h11",
    "h2",
    "httpx",
    "httpcore",
    "trio_isyswasfa.http",  # the whole package: a command imports no wasi:http
    "trio_isyswasfa.engine._types",  # the own engine's types, for --engine own
    "trio_isyswasfa.tools",  # lower, componentize, compose
    "trio_isyswasfa.testing",
)


@pytest.mark.guest
def test_running_a_command_imports_only_what_it_needs(tmp_path: Path) -> None:
    """``run`` of a command that imports no wasi:http loads no HTTP code and none of the
    other engine's or the build tools' (checked in a fresh interpreter, after the run)."""
    wit = tmp_path / "wit"
    wit.mkdir()
    (wit / "world.wit").write_text(
        "package test:cmd;\nworld cmd {\n  export wasi:cli/run@0.2.0;\n}\n"
        "package wasi:cli@0.2.0 {\n  interface run { run: func() -> result; }\n}\n"
    )
    wat = """(module (memory (export "memory") 1)
      (func (export "wasi:cli/run@0.2.0#run") (result i32) i32.const 0))"""
    command = tmp_path / "cmd.wasm"
    command.write_bytes(build_wat_component(wit, "cmd", wat))
    out = subprocess.run(
        [sys.executable, "-c", RUN_PROBE, str(command), *NOT_FOR_A_COMMAND],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.splitlines()
    assert out == ["0", "[]"]


def test_the_lazy_http_names_are_the_public_ones() -> None:
    import trio_isyswasfa.http as http

    for name in http.__all__:
        assert getattr(http, name) is not None
        assert name in dir(http)


def test_servers_can_name_the_app_factory() -> None:
    """hypercorn evaluates ``app_from_environment()`` in the module's namespace, where a
    name loaded on first use is not yet."""
    import trio_isyswasfa.http as http

    assert callable(eval("app_from_environment", vars(http)))
