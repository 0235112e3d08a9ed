"""The Python shapes of component-model values, shared by both engines.

Host functions and callers see the same values whichever engine runs a component:

* ``result`` values are :class:`Ok` / :class:`Err` (a bare value lowers as ``ok``);
* ``record`` values are :class:`Record` objects with one attribute per field, by its
  WIT name (``getattr(rec, "path-with-query")`` for kebab-case names);
* ``variant`` and ``option`` values are untagged when the Python classes of their cases
  tell them apart (``None`` for a case without payload), else :class:`Variant`
  ``(tag, payload)``: wasmtime-py's rule, which the WASI code relies on;
* ``enum`` values are their case names, ``flags`` a set of names, ``tuple`` a tuple,
  ``list<u8>`` ``bytes`` and other lists Python lists;
* handles are integers (reps).

:class:`Record` and :class:`Variant` are wasmtime-py's own classes, so values built for
one engine (``_engine.record(…)``, ``_engine.variant(…)``) lower through the other, values
lifted by either compare equal, and ``_engine.variant_case`` reads both.
"""

from __future__ import annotations

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
