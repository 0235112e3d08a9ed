"""Tiny core modules that let one long-lived fiber per store run every call into it.

Starting a wasmtime fiber per call (``wasmtime_func_call_async``, its polls and its
``delete``) cost more than the rest of a small export call: wasmtime builds a future and
a fiber, and Python makes three C calls. So each :class:`~._fiber.FiberStore` keeps one
fiber, started at its first call, parked between calls in an async host function
(``next``), and hands it each call through a small memory of its own (the *dispatcher*,
one instance per store)::

    (func (export "serve") (local $cmd i32)
      (loop $calls
        (local.set $cmd (i32.load (i32.const 0)))        ;; CMD: which runner; 0 = stop
        (if (i32.eqz (local.get $cmd)) (then (return)))
        (call_indirect (type $run) (local.get $cmd))     ;; the call
        (i32.store8 (i32.const 8) (i32.const 0))         ;; FLAG = 0: parked
        (call $next)                                      ;; suspends until FLAG = 1
        (br $calls)))

A call is one poll of that fiber: the driver writes ``CMD``, ``FLAG = 1`` and the core
arguments (``ARGS``, 8 bytes a value) with one ``struct`` call, the ``next`` call
returns, and the fiber runs the call's *runner* (one instance per function, in the
dispatcher's table), which loads the arguments, calls the function, and stores its
results (``RESULTS``), or hands them to a host function that lifts them (``lift``) and
calls the post-return (``post``), so that the results are lifted before the
post-return frees them and the post-return may not call out (``may_leave``). A runner
may first call ``lower``, a host function that lowers the call's arguments on the fiber
(the guest's ``realloc`` is a call into the store) and answers 0 when they did not fit,
in which case nothing else runs. Everything a runner calls runs on the fiber, so the
guest may wait in a blocking host function and yields at epoch deadlines, as on a fiber
of its own.

Modules are compiled once per shape, for the process.
"""

from __future__ import annotations

import wasmtime

from .. import _engine

CMD = 0
"""Offset of the runner's index in the dispatcher's table (an i32; 0 stops the fiber)."""
FLAG = 8
"""Offset of the byte that is 1 while a call runs and 0 once the fiber is parked; the
byte after it is always 0."""
ARGS = 16
"""Offset of the core arguments, one 8-byte slot each."""
RESULTS = ARGS + 8 * 16
"""Offset of the core results, one 8-byte slot each."""
MAX_VALUES = 16
"""The most core arguments (and results) a runner takes through the memory."""

_DISPATCHER = f"""(module
  (import "" "memory" (memory 1 1))
  (import "" "next" (func $next))
  (table (export "table") 1 funcref)
  (type $run (func))
  (func (export "serve") (local $cmd i32)
    (loop $calls
      (local.set $cmd (i32.load (i32.const {CMD})))
      (if (i32.eqz (local.get $cmd)) (then (return)))
      (call_indirect (type $run) (local.get $cmd))
      (i32.store8 (i32.const {FLAG}) (i32.const 0))
      (call $next)
      (br $calls))))"""

_MODULES: dict[object, wasmtime.Module] = {}


def dispatcher() -> wasmtime.Module:
    """The dispatcher: imports ``("", "memory")`` (one page, made by the host, whose
    address is known before ``next`` is made) and ``("", "next")``; exports ``table``
    and ``serve``."""
    module = _MODULES.get("dispatcher")
    if module is None:
        module = _MODULES["dispatcher"] = wasmtime.Module(_engine.engine(), _DISPATCHER)
    return module


def runner(
    params: tuple[str, ...], results: tuple[str, ...], *, lower: bool, post: bool
) -> wasmtime.Module:
    """The runner of a function of core type ``params -> results`` (core value kinds
    such as ``"i32"``, at most :data:`MAX_VALUES` each). It imports ``("", "memory")``
    (the dispatcher's), ``("", "f")``, then ``("", "lower")`` if ``lower``, then
    ``("", "lift")`` and ``("", "post")`` if ``post``, and exports ``run``."""
    if len(params) > MAX_VALUES or len(results) > MAX_VALUES:
        raise ValueError("too many core values for a runner")
    key = (params, results, lower, post)
    module = _MODULES.get(key)
    if module is None:
        module = _MODULES[key] = wasmtime.Module(_engine.engine(), _runner(*key))
    return module


def _runner(params: tuple[str, ...], results: tuple[str, ...], lower: bool, post: bool) -> str:
    def decl(word: str, kinds: tuple[str, ...]) -> str:
        return f" ({word} {' '.join(kinds)})" if kinds else ""

    load = "".join(
        f" ({kind}.load offset={ARGS + 8 * i} (i32.const 0))" for i, kind in enumerate(params)
    )
    take = "".join(f" (local.set {i})" for i in reversed(range(len(results))))
    give = "".join(f" (local.get {i})" for i in range(len(results)))
    imports = [
        '(import "" "memory" (memory 1))',
        f'(import "" "f" (func $f{decl("param", params)}{decl("result", results)}))',
    ]
    body = []
    if lower:
        imports.append('(import "" "lower" (func $lower (result i32)))')
        body.append("(if (i32.eqz (call $lower)) (then (return)))")
    body.append(f"(call $f{load}){take}")
    if post:
        imports.append(f'(import "" "lift" (func $lift{decl("param", results)}))')
        imports.append(f'(import "" "post" (func $post{decl("param", results)}))')
        body.append(f"(call $lift{give}) (call $post{give})")
    else:
        body.extend(
            f"({kind}.store offset={RESULTS + 8 * i} (i32.const 0) (local.get {i}))"
            for i, kind in enumerate(results)
        )
    return (
        "(module "
        + " ".join(imports)
        + f' (func (export "run"){decl("local", results)} '
        + " ".join(body)
        + "))"
    )


__all__ = ["ARGS", "CMD", "FLAG", "MAX_VALUES", "RESULTS", "dispatcher", "runner"]
