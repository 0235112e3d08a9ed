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

:class:`Record` and :class:`Variant` behave like wasmtime-py's classes of the same names
(only ``_engine.py`` may import wasmtime): a record compares equal to any object with
the same attributes, and lowering takes any object with the fields as attributes (a
wasmtime-py ``Record`` too) and any object with ``tag`` and ``payload`` as a tagged
variant. When this engine runs guests, ``_engine.record`` / ``variant`` /
``variant_case`` switch to these classes; ``wasi/`` and ``http/`` do not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class Record:
    """A WIT record value: one attribute per field, by its WIT name."""

    def __eq__(self, other: object) -> bool:
        mine = self.__dict__
        theirs = getattr(other, "__dict__", None)
        return theirs is not None and mine == theirs

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"Record({fields})"


@dataclass(slots=True)
class Variant:
    """A tagged WIT variant (or option) value: the case name and its payload."""

    tag: str
    payload: Any = None


@dataclass(frozen=True, slots=True)
class Ok:
    """The ``ok`` case of a WIT ``result``."""

    value: Any = None


@dataclass(frozen=True, slots=True)
class Err:
    """The ``err`` case of a WIT ``result``."""

    value: Any = None


ALIASES: dict[type, type] = {}
"""Foreign classes lowered as ours (the seam registers wasmtime-py's ``Record`` and
``Variant``), for telling untagged variant cases apart by class."""


def register_alias(foreign: type, ours: type) -> None:
    """Lower values of class ``foreign`` as if they were of class ``ours``."""
    ALIASES[foreign] = ours
