"""WASI 0.2 implemented in Python on anyio/trio, one module per WASI package.

Each module defines a class whose methods implement one package's functions for
one component instance, and a table mapping WIT names (without version) to them.
Pollables are level-triggered: ``ready()`` re-checks the resource, ``wait()`` sleeps
on the event loop until it may have changed.
"""

from ._context import WasiConfig

__all__ = ["WasiConfig"]
