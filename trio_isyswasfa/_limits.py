"""How much of the machine one instance may take: memory, and time in one guest entry."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._errors import HostProtocolError

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


@dataclass(frozen=True)
class Limits:
    """Bounds for an untrusted guest. ``None`` leaves a bound off (the default).

    Attributes:
      max_memory: bytes each of the guest's linear memories may grow to; beyond it
        ``memory.grow`` fails, as it does when a native host runs out (a Python guest
        raises ``MemoryError``), and an instance whose component needs more at start
        does not open (:class:`~trio_isyswasfa.LinkError`).
      max_run_seconds: how long one entry into the guest (an export call, a poll or,
        on our engine, a start function as the instance opens; host functions it
        calls included) may run before the guest is stopped with
        :class:`~trio_isyswasfa.GuestTrap`. A guest that computes without returning,
        or blocks in a host call (a blocking socket read, ``pollable.block``), holds
        the event loop; this bounds how long. Computing is checked every 10 ms;
        blocking waits (sockets, sleeps, stdin) end at the limit. (A blocking name
        lookup is not cut short.)
      max_handles: WASI handles (streams, pollables, files, sockets, HTTP objects…)
        the guest may hold at once, and likewise isyswasfa tasks (pending calls of
        async imports and exports, waits on pollables); one more stops it
        (:class:`GuestTrap`), so a guest that spawns without bound fails clearly
        instead of exhausting host memory. Files and sockets hold host file
        descriptors, which the whole process shares.
    """

    max_memory: int | None = None
    max_run_seconds: float | None = None
    max_handles: int | None = None

    def __post_init__(self) -> None:
        if self.max_handles is not None and self.max_handles <= 0:
            raise HostProtocolError(f"max_handles must be positive, not {self.max_handles}")
        if self.max_memory is not None and self.max_memory <= 0:
            raise HostProtocolError(f"max_memory must be positive, not {self.max_memory}")
        if self.max_run_seconds is not None and not self.max_run_seconds > 0:
            raise HostProtocolError(f"max_run_seconds must be positive, not {self.max_run_seconds}")


def parse_size(text: str) -> int:
    """``"512K"``, ``"256M"``, ``"2G"`` or a number of bytes (the CLI's ``--max-memory``)."""
    # (ASCII digits only: without re.ASCII, \d takes '٥١٢', which int() reads as 512)
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE | re.ASCII)
    if match is None or int(match.group(1)) == 0:
        raise HostProtocolError(f"bad size {text!r}: expected a positive number, with K, M or G")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]
