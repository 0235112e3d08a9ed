"""wasi:cli commands: ``python -m trio_isyswasfa run`` and :func:`run_command`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import trio_isyswasfa
from trio_isyswasfa._host import interface_key, wasi_version_problem
from trio_isyswasfa.testing import build_python_guest, build_wat_component
from trio_isyswasfa.tools._paths import bundled_wit_dir

GUEST = Path(__file__).parent / "guests" / "command"


@pytest.fixture(scope="session")
def command_wasm() -> Path:
    """The Python command guest (tests/guests/command), built once."""
    return build_python_guest(GUEST / "wit", "command", "app", [GUEST / "src"])


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_isyswasfa", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.guest
@pytest.mark.slow
class TestRun:
    def test_args_env_stdin_stdout_and_a_directory(
        self, command_wasm: Path, tmp_path: Path
    ) -> None:
        (tmp_path / "in.txt").write_text("from the host")
        proc = cli(
            "run",
            "--dir",
            f"{tmp_path}::/data",
            "--env",
            "GREETING=hello",
            str(command_wasm),
            "0",
            "two words",
            stdin="piped in\n",
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == [
            f"args: {command_wasm.name} 0 two words",
            "GREETING: hello",
            "stdin: piped in",
        ]
        assert (tmp_path / "out.txt").read_text() == "FROM THE HOST"

    def test_nothing_from_the_host_unless_passed(
        self, command_wasm: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("GREETING", "from the host's environment")
        proc = cli("run", str(command_wasm))
        assert proc.returncode == 0, proc.stderr
        assert "GREETING: <unset>" in proc.stdout
        proc = cli("run", "--env", "GREETING", str(command_wasm))
        assert "GREETING: from the host's environment" in proc.stdout

    def test_exit_status(self, command_wasm: Path) -> None:
        # WASI 0.2.0's exit carries only success or failure: any error status is 1
        proc = cli("run", str(command_wasm), "3")
        assert proc.returncode == 1
        assert proc.stdout.startswith("args:")

    def test_read_only_directory(self, command_wasm: Path, tmp_path: Path) -> None:
        (tmp_path / "in.txt").write_text("x")
        proc = cli("run", "--dir-ro", f"{tmp_path}::/data", str(command_wasm))
        # the guest's open() fails, its exception escapes `run` and the guest traps
        assert "OSError: [Errno 69] Read-only file system: '/data/out.txt'" in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("error: guest trapped in ")
        assert proc.returncode == 134
        assert not (tmp_path / "out.txt").exists()

    async def test_run_command_api(self, command_wasm: Path) -> None:
        out: list[bytes] = []
        config = trio_isyswasfa.WasiConfig(stdin=b"from bytes", stdout=out.append)
        status = await trio_isyswasfa.run_command(command_wasm, ["0"], wasi=config)
        assert status == 0
        assert b"stdin: from bytes" in b"".join(out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dir", "/no/such/dir", "x.wasm"], "preopen '/no/such/dir' does not exist"),
        (["--dir", "::guest", "x.wasm"], "bad directory '::guest'"),
        (["--env", "=value", "x.wasm"], "bad --env '=value'"),
        (["missing.wasm"], "cannot read missing.wasm"),
    ],
)
def test_run_bad_input(args: list[str], message: str) -> None:
    proc = cli("run", *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert "Traceback" not in proc.stderr


def wat_command(tmp_path: Path, run_body: str) -> bytes:
    """A command whose ``run`` is ``run_body`` (WAT), importing wasi:cli/exit."""
    wit = tmp_path / "wit"
    (wit / "deps").mkdir(parents=True)
    for dep in (bundled_wit_dir() / "deps").iterdir():
        (wit / "deps" / dep.name).symlink_to(dep)
    (wit / "world.wit").write_text(
        "package test:cmd;\nworld cmd {\n  import wasi:cli/exit@0.2.0;\n"
        "  export wasi:cli/run@0.2.0;\n}\n"
    )
    wat = f"""(module
      (import "wasi:cli/exit@0.2.0" "exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "wasi:cli/run@0.2.0#run") (result i32) {run_body}))"""
    return build_wat_component(wit, "cmd", wat)


def wat_random_importer(tmp_path: Path, version: str) -> bytes:
    """A command importing ``wasi:random/random@version`` as 0.2 declares it."""
    wit = tmp_path / "wit"
    for package, text in {
        "random": f"package wasi:random@{version};\n"
        "interface random { get-random-u64: func() -> u64; }\n",
        "cli": "package wasi:cli@0.2.0;\ninterface run { run: func() -> result; }\n",
    }.items():
        (wit / "deps" / package).mkdir(parents=True)
        (wit / "deps" / package / f"{package}.wit").write_text(text)
    (wit / "world.wit").write_text(
        "package test:rnd;\nworld rnd {\n"
        f"  import wasi:random/random@{version};\n  export wasi:cli/run@0.2.0;\n}}\n"
    )
    wat = f"""(module
      (import "wasi:random/random@{version}" "get-random-u64" (func $u64 (result i64)))
      (memory (export "memory") 1)
      (func (export "wasi:cli/run@0.2.0#run") (result i32)
        call $u64 drop i32.const 0))"""
    return build_wat_component(wit, "rnd", wat)


@pytest.mark.parametrize("version", ["0.2.0", "0.2.9", "0.2.12"])
async def test_every_wasi_0_2_release_links(tmp_path: Path, version: str) -> None:
    assert await trio_isyswasfa.run_command(wat_random_importer(tmp_path, version)) == 0


# (str.isdigit takes '٨' and '²': a release's patch number is ASCII digits only)
@pytest.mark.parametrize("version", ["0.2.٨", "0.2.\u00b2", "0.2.", "0.2.1-rc", "0.20.1", "1.2.3"])
def test_only_ascii_0_2_releases_are_wasi_0_2(version: str) -> None:
    wanted = f"imports wasi:random/random@{version}, but this host implements WASI 0.2.x"
    assert wasi_version_problem(f"wasi:random/random@{version}") == wanted
    assert interface_key(f"wasi:http/types@{version}") == "wasi:http/types"  # not 0.2's


@pytest.mark.parametrize("version", ["0.1.0", "0.3.0", "0.2.0-rc-2023-11-10", "1.0.0"])
async def test_other_wasi_versions_are_refused_by_name(tmp_path: Path, version: str) -> None:
    # the function's name and type match 0.2's: only the version tells them apart
    wasm = wat_random_importer(tmp_path, version)
    message = f"imports wasi:random/random@{version}, but this host implements WASI 0.2.x"
    with pytest.raises(trio_isyswasfa.LinkError, match=re.escape(message)):
        await trio_isyswasfa.run_command(wasm)


class TestTinyCommands:
    """Commands with no isyswasfa at all, written in WAT."""

    async def test_run_result_is_the_status(self, tmp_path: Path) -> None:
        assert await trio_isyswasfa.run_command(wat_command(tmp_path / "a", "i32.const 0")) == 0
        assert await trio_isyswasfa.run_command(wat_command(tmp_path / "b", "i32.const 1")) == 1

    async def test_exit_wins_over_the_return_value(self, tmp_path: Path) -> None:
        # exit(ok), then a `run` that would have failed: the status is exit's
        wasm = wat_command(tmp_path, "i32.const 0 call $exit i32.const 1")
        assert await trio_isyswasfa.run_command(wasm) == 0
        wasm = wat_command(tmp_path / "err", "i32.const 1 call $exit i32.const 0")
        assert await trio_isyswasfa.run_command(wasm) == 1

    async def test_a_component_that_is_no_command(
        self, cases_component: trio_isyswasfa.Component
    ) -> None:
        with pytest.raises(trio_isyswasfa.LinkError, match="not a command"):
            await trio_isyswasfa.run_command(cases_component)
