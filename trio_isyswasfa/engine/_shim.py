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
in which case nothing else runs. A runner may instead copy the call's strings and byte
lists in itself (*staged* arguments): the driver writes their bytes into the
dispatcher's memory (``STAGE`` on) and, in each one's pointer slot, their length and
where they are; the runner allocates each with the guest's ``realloc`` (``may_leave``
cleared meanwhile, as for any lowering) and copies it into the guest's memory
(``memory.copy`` between the two memories), which saves the ``lower`` host function's
crossing into Python and the ``realloc`` call from Python.
Everything a runner calls runs on the fiber, so the guest may wait in a blocking host
function and yields at epoch deadlines, as on a fiber of its own.

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
LEAVE = RESULTS + 8 * MAX_VALUES
"""Offset of the ``may_leave`` flags: one byte per component instance of the store, 1
while it may call out (import entries read it), 0 while its post-return or its
``realloc`` in a lowering runs (a runner writes it: no host function between an
export and its post-return, nor around a staged argument's ``realloc``)."""
LEAVE_SIZE = 256
"""How many component instances of one store have their flag here (the others keep
theirs in host memory, and their exports lift through the ``lift`` hook)."""
STAGE = LEAVE + LEAVE_SIZE
"""Offset of the staged arguments' bytes, up to the end of the dispatcher's one page."""
STAGE_SIZE = 65536 - STAGE
"""How many bytes of staged arguments one call can take."""

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
    params: tuple[str, ...],
    results: tuple[str, ...],
    *,
    lower: bool,
    post: bool,
    staged: tuple[tuple[int, int], ...] = (),
    sized: bool = False,
    leave: int | None = None,
    staged_leave: int | None = None,
) -> wasmtime.Module:
    """The runner of a function of core type ``params -> results`` (core value kinds
    such as ``"i32"``, at most :data:`MAX_VALUES` each). It imports ``("", "memory")``
    (the dispatcher's), then ``("", "guest")`` (the guest's memory) if ``staged`` or
    ``sized``, ``("", "f")``, ``("", "realloc")`` if ``staged``, ``("", "lower")`` if
    ``lower``, then ``("", "lift")`` and ``("", "post")`` if ``post``, and exports
    ``run``. With ``sized`` (and ``post``), ``lift`` takes one more argument after the
    results: the guest memory's size in pages (``memory.size``), so that the host need
    not ask wasmtime for it (a C call) to know whether its view of the memory holds.

    ``staged`` lists ``(index, align)`` of the pointer parameters whose bytes the driver
    staged (at most one of ``lower`` and ``staged``): the slot of each holds the byte
    length (its low 32 bits) and the bytes' offset in the dispatcher's memory (its high
    32 bits); the runner calls ``realloc(0, 0, align, length)``, traps unless the block
    is aligned, and copies the bytes there (``memory.copy`` traps if they are out of
    bounds) before it calls ``f`` with the block's address in that slot. It clears the
    instance's ``may_leave`` flag at offset ``staged_leave`` (see :data:`LEAVE`) while
    it allocates, as the canonical ABI does while it lowers values into an instance:
    the guest's ``realloc`` cannot call out (or make or drop a handle) then.

    With ``leave`` (the offset of the instance's ``may_leave`` flag, see :data:`LEAVE`)
    and ``post``, there is no ``lift`` hook: the runner stores the results (as without
    ``post``), clears the flag, calls ``post`` and sets the flag again, so that the
    host lifts the results after the call, and the post-return cannot call out, with
    no host function in between (for results that a post-return cannot change: no
    memory, no handles; the caller's to judge)."""
    if len(params) > MAX_VALUES or len(results) > MAX_VALUES:
        raise ValueError("too many core values for a runner")
    if lower and staged:
        raise ValueError("a runner lowers its arguments by a hook or from staged bytes")
    if any(params[i] != "i32" for i, _ in staged):
        raise ValueError("a staged argument's pointer is an i32")
    if sized and not post:
        raise ValueError("only a lift hook takes the memory's size")
    if leave is not None and (not post or sized or not LEAVE <= leave < STAGE):
        raise ValueError("a may_leave flag is a post-return's, without a lift hook")
    if bool(staged) != (staged_leave is not None) or not LEAVE <= (staged_leave or LEAVE) < STAGE:
        raise ValueError("staged arguments are allocated with the may_leave flag cleared")
    key = (params, results, lower, post, staged, sized, leave, staged_leave)
    module = _MODULES.get(key)
    if module is None:
        module = _MODULES[key] = wasmtime.Module(_engine.engine(), _runner(*key))
    return module


def _runner(
    params: tuple[str, ...],
    results: tuple[str, ...],
    lower: bool,
    post: bool,
    staged: tuple[tuple[int, int], ...],
    sized: bool,
    leave: int | None,
    staged_leave: int | None,
) -> str:
    def decl(word: str, kinds: tuple[str, ...]) -> str:
        return f" ({word} {' '.join(kinds)})" if kinds else ""

    # locals: the results, then one block address per staged argument
    blocks = {index: len(results) + k for k, (index, _) in enumerate(staged)}
    load = "".join(
        f" (local.get {blocks[i]})"
        if i in blocks
        else f" ({kind}.load offset={ARGS + 8 * i} (i32.const 0))"
        for i, kind in enumerate(params)
    )
    take = "".join(f" (local.set {i})" for i in reversed(range(len(results))))
    give = "".join(f" (local.get {i})" for i in range(len(results)))
    imports = ['(import "" "memory" (memory 1))']
    body = []
    if staged or sized:
        imports.append('(import "" "guest" (memory 0))')
    imports.append(f'(import "" "f" (func $f{decl("param", params)}{decl("result", results)}))')
    if staged:
        imports.append('(import "" "realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))')
        body.append(f"(i32.store8 offset={staged_leave} (i32.const 0) (i32.const 0))")
    for index, align in staged:
        block = blocks[index]
        length = f"(i32.load offset={ARGS + 8 * index} (i32.const 0))"
        body.append(
            f"(local.set {block} (call $realloc (i32.const 0) (i32.const 0)"
            f" (i32.const {align}) {length}))"
        )
        if align > 1:
            body.append(
                f"(if (i32.and (local.get {block}) (i32.const {align - 1})) (then unreachable))"
            )
        body.append(
            f"(memory.copy 1 0 (local.get {block})"
            f" (i32.load offset={ARGS + 8 * index + 4} (i32.const 0)) {length})"
        )
    if staged:
        body.append(f"(i32.store8 offset={staged_leave} (i32.const 0) (i32.const 1))")
    if lower:
        imports.append('(import "" "lower" (func $lower (result i32)))')
        body.append("(if (i32.eqz (call $lower)) (then (return)))")
    body.append(f"(call $f{load}){take}")
    if post and leave is not None:
        imports.append(f'(import "" "post" (func $post{decl("param", results)}))')
        body.extend(
            f"({kind}.store offset={RESULTS + 8 * i} (i32.const 0) (local.get {i}))"
            for i, kind in enumerate(results)
        )
        body.append(f"(i32.store8 offset={leave} (i32.const 0) (i32.const 0))")
        body.append(f"(call $post{give})")
        body.append(f"(i32.store8 offset={leave} (i32.const 0) (i32.const 1))")
    elif post:
        lifted = (*results, "i32") if sized else results
        imports.append(f'(import "" "lift" (func $lift{decl("param", lifted)}))')
        imports.append(f'(import "" "post" (func $post{decl("param", results)}))')
        size = " (memory.size 1)" if sized else ""
        body.append(f"(call $lift{give}{size}) (call $post{give})")
    else:
        body.extend(
            f"({kind}.store offset={RESULTS + 8 * i} (i32.const 0) (local.get {i}))"
            for i, kind in enumerate(results)
        )
    local_kinds = results + ("i32",) * len(staged)
    return (
        "(module "
        + " ".join(imports)
        + f' (func (export "run"){decl("local", local_kinds)} '
        + " ".join(body)
        + "))"
    )


__all__ = [
    "ARGS",
    "CMD",
    "FLAG",
    "LEAVE",
    "LEAVE_SIZE",
    "MAX_VALUES",
    "RESULTS",
    "STAGE",
    "STAGE_SIZE",
    "dispatcher",
    "runner",
]
