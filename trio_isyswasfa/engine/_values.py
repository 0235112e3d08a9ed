"""The Python shapes of component-model values, shared by both engines.

Host functions and callers see the same values whichever engine runs a component:

* ``result`` values are :class:`Ok` / :class:`Err` (a bare value lowers as ``ok``);
* ``record`` values are :class:`Record` objects with one attribute per field, by its
  WIT name (``getattr(rec, "path-with-query")`` for kebab-case names);
* ``variant`` and ``option`` values are untagged when the Python classes of their cases
  tell them apart (``None`` for a case without payload), else :class:`Variant`
  ``(tag, payload)``: wasmtime-py's rule, which the WASI code relies on;
* ``enum`` values are their case names, ``flags`` a set of names, ``tuple`` a tuple,
  ``list<u8>`` ``bytes`` and other lists Python lists (a host may lower a ``list<u8>``
  as a :class:`ReadInto`, which writes the bytes into the guest's memory itself);
* handles are integers (reps).

:class:`Record` and :class:`Variant` are wasmtime-py's own classes, so values built for
one engine (``_engine.record(…)``, ``_engine.variant(…)``) lower through the other, values
lifted by either compare equal, and ``_engine.variant_case`` reads both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wasmtime.component import Record as Record
from wasmtime.component import Variant as Variant


@dataclass(frozen=True, slots=True)
class Ok:
    """The ``ok`` case of a WIT ``result``."""

    value: Any = None


@dataclass(frozen=True, slots=True)
class Err:
    """The ``err`` case of a WIT ``result``."""

    value: Any = None


class ReadInto:
    """A ``list<u8>`` the host writes straight into the guest's memory as it lowers it.

    Lowering allocates ``size`` bytes with the guest's ``realloc`` and calls
    ``fill(view)`` with a writable view of exactly those bytes of linear memory; ``fill``
    writes the list there (a file read lands where the guest will read it: one copy, no
    ``bytes`` object between) and returns how many bytes it wrote, from 0 to ``size``.
    The list is that long: a shorter one is shrunk with ``realloc`` (as the canonical
    ABI shrinks transcoded strings); an empty one keeps its block, which the guest may
    then never free, so ``fill`` should return 0 only when something went wrong.

    ``fill`` runs once, during the call, on the event loop's thread; the view is valid
    only until it returns (the guest may grow and move its memory afterwards). It must
    not raise: a failure is the host's to keep and report later (a stream reports it
    at its next operation). An engine without a memory to write into calls
    :meth:`to_bytes`.
    """

    __slots__ = ("fill", "size")

    def __init__(self, size: int, fill: Callable[[memoryview], int]) -> None:
        self.size = size
        self.fill = fill

    def to_bytes(self, limit: int | None = None) -> bytes:
        """Fill a host buffer instead (for an engine that lowers ``bytes`` only), of
        at most ``limit`` bytes if given (a list may be shorter than its size)."""
        buf = bytearray(self.size if limit is None else min(self.size, limit))
        with memoryview(buf) as view:
            n = self.fill(view)
        del buf[n:]
        return bytes(buf)

    def __repr__(self) -> str:
        return f"ReadInto(size={self.size})"
