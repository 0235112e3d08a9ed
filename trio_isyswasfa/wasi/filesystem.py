"""wasi:filesystem 0.2: no preopened directories yet, so no descriptor ever exists.

Every operation that could be reached answers ``error-code::access`` through the
generic denial in the linker (see :data:`DENIED_CODE`).
"""

from __future__ import annotations

from .._engine import ResourceKind
from ._context import WasiContext

TYPES = "wasi:filesystem/types"
DENIED_CODE = "access"


class WasiFilesystem:
    """wasi:filesystem for one instance: an empty set of preopens."""

    def __init__(self, ctx: WasiContext) -> None:
        ctx.define_resource(TYPES, "descriptor", ResourceKind.DESCRIPTOR)
        ctx.define_resource(TYPES, "directory-entry-stream", ResourceKind.DIRECTORY_ENTRY_STREAM)
        ctx.define("wasi:filesystem/preopens", "get-directories", list)
        ctx.define(TYPES, "filesystem-error-code", lambda _err: None)
