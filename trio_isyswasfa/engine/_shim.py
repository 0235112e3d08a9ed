"""A core module that runs an export, the lifting of its results and its post-return
as one call: one fiber for the three.

An export call of our engine runs on a wasmtime fiber (``_fiber``), and its
``post-return`` must too when the instance has async host functions (a synchronous call
that reaches one aborts the process). A fiber costs wasmtime ~10 µs to set up, so two of
them per call (the call, then its post-return) cost more than the rest of the call. The
canonical ABI lifts the results between the two, in Python: so the shim is a tiny core
module that imports the three functions (the export, a host function that lifts, the
post-return) and exports ``run``, which calls them in turn::

    (func (export "run") (param P...)
      (call $f (local.get 0) ...)        ;; the export's results, into locals
      (call $lift (local.get R) ...)     ;; the host lifts them (they are still valid)
      (call $post (local.get R) ...))    ;; then the guest frees them

Everything ``run`` calls runs on its fiber, so the export may wait in a blocking host
function as before, and a post-return that calls one traps as before (``may_leave``).
Modules are compiled once per core signature, for the process.
"""

from __future__ import annotations

import wasmtime

from .. import _engine

_MODULES: dict[tuple[tuple[str, ...], tuple[str, ...]], wasmtime.Module] = {}


def call_lift_post(params: tuple[str, ...], results: tuple[str, ...]) -> wasmtime.Module:
    """The shim for an export of core type ``params -> results`` (core value kinds such
    as ``"i32"``); it imports ``("", "f")``, ``("", "lift")`` and ``("", "post")`` in
    that order."""
    key = (params, results)
    module = _MODULES.get(key)
    if module is None:
        module = _MODULES[key] = wasmtime.Module(_engine.engine(), _wat(params, results))
    return module


def _wat(params: tuple[str, ...], results: tuple[str, ...]) -> str:
    def decl(word: str, kinds: tuple[str, ...]) -> str:
        return f" ({word} {' '.join(kinds)})" if kinds else ""

    locals_ = range(len(params), len(params) + len(results))
    take = "".join(f" (local.set {i})" for i in reversed(locals_))
    give = "".join(f" (local.get {i})" for i in locals_)
    args = "".join(f" (local.get {i})" for i in range(len(params)))
    return (
        "(module"
        f' (import "" "f" (func $f{decl("param", params)}{decl("result", results)}))'
        f' (import "" "lift" (func $lift{decl("param", results)}))'
        f' (import "" "post" (func $post{decl("param", results)}))'
        f' (func (export "run"){decl("param", params)}{decl("local", results)}'
        f"  (call $f{args}){take}"
        f"  (call $lift{give})"
        f"  (call $post{give})))"
    )


__all__ = ["call_lift_post"]
