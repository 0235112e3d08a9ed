"""Build tiny components from WAT text, for precise (and hostile) host tests."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from .._errors import ToolError
from ..tools._paths import tool_command


def build_wat_component(wit: Path | str, world: str, wat: str) -> bytes:
    """A component whose core module is ``wat``, typed by ``world`` of ``wit``.

    The module uses the canonical ABI's legacy names (``isyswasfa:isyswasfa/isyswasfa``
    / ``make-task`` imports, ``isyswasfa-poll-x`` exports, ``cabi_realloc``, ``memory``).
    """
    wasm_tools = tool_command("wasm-tools")
    with tempfile.TemporaryDirectory(prefix="isyswasfa-wat-") as tmp:
        work = Path(tmp)
        (work / "module.wat").write_text(wat)
        steps = [
            ["parse", str(work / "module.wat"), "-o", str(work / "core.wasm")],
            [
                "component",
                "embed",
                str(wit),
                "-w",
                world,
                str(work / "core.wasm"),
                "-o",
                str(work / "embedded.wasm"),
            ],
            ["component", "new", str(work / "embedded.wasm"), "-o", str(work / "component.wasm")],
        ]
        for step in steps:
            proc = subprocess.run([*wasm_tools, *step], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise ToolError(f"wasm-tools {step[0]} failed: {proc.stderr.strip()}")
        return (work / "component.wasm").read_bytes()


def bump_realloc_wat(base: int, *, first: str = "") -> str:
    """WAT for a module's ``cabi_realloc``: a bump allocator from ``base`` that grows
    the module's ``memory`` as it needs (never frees). Splice it into a module's text.

    Args:
      base: the first address it hands out.
      first: WAT instructions each call runs before it allocates, leaving the stack
        empty: to count the calls in a global, or ``return`` another address.
    """
    return f"""  (global $bump (mut i32) (i32.const {base}))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (local $p i32)
    {first}
    (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (global.set $bump (i32.add (local.get $p) (local.get 3)))
    (block $fits
      (br_if $fits (i32.le_u (global.get $bump) (i32.mul (memory.size) (i32.const 65536))))
      (drop (memory.grow (i32.add (i32.const 1)
        (i32.shr_u (i32.sub (global.get $bump) (i32.mul (memory.size) (i32.const 65536)))
                   (i32.const 16))))))
    (local.get $p))
"""
