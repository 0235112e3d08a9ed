"""The bench scripts' command lines: ``--help`` prints help and runs nothing, an unknown
option is an error (each bench's ``parser()``, importable without running anything)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")


@pytest.fixture(params=SCRIPTS)
def parser(request: pytest.FixtureRequest) -> object:
    module = importlib.import_module(f"bench.{request.param}")
    return module.parser()


def test_every_bench_script_is_checked() -> None:
    assert {"bench_calls", "bench_engine", "bench_engine_load", "loadgen"} <= set(SCRIPTS)


def test_help_prints_help(parser: object, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        parser.parse_args(["--help"])  # type: ignore[attr-defined]
    assert exit.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_an_unknown_option_is_an_error(parser: object, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        parser.parse_args(["--no-such-option"])  # type: ignore[attr-defined]
    assert exit.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_bench_calls_options_need_engines(capsys: pytest.CaptureFixture[str]) -> None:
    """Its plain run takes no option: one of ``--engines`` alone is refused, not ignored."""
    from bench import bench_calls

    with pytest.raises(SystemExit) as exit:
        bench_calls.cli(["--sizes", "1,16"])
    assert exit.value.code == 2
    assert "--sizes needs --engines" in capsys.readouterr().err
