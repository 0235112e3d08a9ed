"""Public names a package loads on first use (PEP 562's module ``__getattr__``).

Imports nothing but :mod:`importlib`: the package's ``__init__`` uses it before any
name of its own has loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_names(
    namespace: dict[str, Any], names: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` for ``names`` (each public name, and
    the module it comes from, relative to the package whose ``namespace`` this is).

    A name is imported at its first lookup and kept in ``namespace``, so the next
    lookup finds it there without calling ``__getattr__`` again.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *names})

    return __getattr__, __dir__
