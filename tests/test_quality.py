"""The code stays ruff-clean and mypy-strict-clean (the project's own configuration), and
the Rust guest crate rustfmt-clean."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_ruff() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "trio_isyswasfa",
            "tests",
            "guest",
            "examples",
            "bench",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rustfmt() -> None:
    # Debian's rustfmt-web, beside the rustc-web the guests build with; the crate's
    # rustfmt.toml holds its style
    rustfmt = Path(os.environ.get("TRIO_ISYSWASFA_RUSTFMT", "/usr/bin/rustfmt"))
    if not rustfmt.exists():
        pytest.skip(f"no {rustfmt}: bash .ci/install-toolchains (Debian's rustfmt-web)")
    sources = sorted((ROOT / "guest" / "rust" / "isyswasfa-guest" / "src").glob("*.rs"))
    proc = subprocess.run(
        [rustfmt, "--check", *sources], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
