"""Whether a core module's start function may run on wasmtime's synchronous path.

A module with a start function is instantiated on the async path
(``wasmtime_linker_instantiate_async``) because its start function might reach an
async host function, and reaching one on the synchronous path (``wasmtime_instance_new``)
aborts the process. The async path costs a linker, a definition per import and a fiber
polled to its end (issue 12's ≤ 1 ms opening): wit-component's ``fixups`` module, in
every Rust guest made with the preview-1 adapter, has a start function that is the
guest's ``_initialize`` (``__wasm_call_ctors``, empty in a Rust guest).

:func:`start_is_inert` reads the start function's code, and the code of every function
it calls, following a call to an imported function into the module instance that
exports it (an earlier core instance of the same component instance). It answers yes
only when everything reachable is in a small set of instructions that cannot reach a
host function and cannot run long: no ``call`` of anything but such code (a host
function, a canon-defined function, anything the plan cannot follow, is a no),
no ``call_indirect`` or ``call_ref`` (the callee is data), no ``loop`` and no recursion,
nothing of the SIMD, atomics, exception or GC proposals, and nothing it cannot read.
Without loops or recursion each function body runs each of its instructions at most
once per call, so the code a run executes is at most its body's bytes plus, for each
call in it, what the callee executes: the check adds that up along the call graph (a
function called twice counts twice, so a chain of functions each calling the next
twice counts 2**n calls, not n functions) and answers no past :data:`MAX_RUN_BYTES`
(so it ends soon, with no epoch yield to bound it). A bulk instruction
(``memory.fill``, ``memory.copy``, ``table.fill`` …) runs as long as its length: it
counts its length's bytes (a table's elements eight each), and needs that length as
a constant just before it. It is conservative: a no costs only the async path's time.
"""

from __future__ import annotations

from collections.abc import Callable

from .._errors import LoadError
from ._reader import _Reader

MAX_FUNCTIONS = 64
"""Functions a start function may reach before the check gives up (answers no)."""
MAX_CODE_BYTES = 64 * 1024
"""Bytes of function bodies the check reads before it gives up."""
MAX_RUN_BYTES = 256 * 1024
"""Bytes of code a start function may run, counted along every call (each call of a
function counts its body again), before the check answers no: each byte an
instruction at most, well under a millisecond of compiled code."""

# value types of one byte (i32, i64, f32, f64, v128, funcref, externref)
_VALTYPES = frozenset((0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F))
# instructions without immediates: unreachable, nop, else, end, return, drop, select,
# the numeric instructions (comparisons, arithmetic, conversions, sign extensions),
# ref.is_null
_PLAIN = frozenset((0x00, 0x01, 0x05, 0x0B, 0x0F, 0x1A, 0x1B, 0xD1, *range(0x45, 0xC5)))
# one u32 immediate: br, br_if, local.get/set/tee, global.get/set, table.get/set,
# memory.size, memory.grow, ref.func
_ONE_INDEX = frozenset((0x0C, 0x0D, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x3F, 0x40, 0xD2))
_MEMARG = frozenset(range(0x28, 0x3F))  # loads and stores
_CALLS = frozenset((0x10, 0x12))  # call, return_call
# 0xFC prefix: the saturating truncations take nothing; the bulk memory and table
# instructions take one or two indices
_FC_INDICES = {**dict.fromkeys(range(8), 0), 8: 2, 9: 1, 10: 2, 11: 1, 12: 2, 13: 1, 14: 2}
_FC_INDICES.update({15: 1, 16: 1, 17: 1})


class _NotInert(Exception):
    """What the check met cannot be shown harmless (or it could not read it)."""


class ModuleCode:
    """What the check reads of a core module: its imported functions (the position of
    each among all its imports), its exported functions by name, its start function
    and where each function body lies. Read once per module, from its bytes.

    Raises:
      LoadError: the bytes are not a module this reader reads.
    """

    __slots__ = ("_bodies", "_code", "data", "exports", "imported", "start")

    def __init__(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        self.data = view
        self.imported: list[int] = []  # import position of each imported function
        self.exports: dict[str, int] = {}  # exported functions' indices
        self.start: int | None = None
        self._code: tuple[int, int] | None = None  # the code section's body
        self._bodies: list[tuple[int, int]] | None = None
        if bytes(view[:8]) != b"\0asm\x01\x00\x00\x00":
            raise LoadError("not a core module")
        r = _Reader(view, view)
        r.pos = 8
        while r.pos < r.end:
            sid = r.byte()
            size = r.u32()
            body, end = r.pos, r.pos + size
            if end > r.end:
                raise LoadError(f"section {sid} runs past the end")
            if sid == 2:
                self._imports(r)
            elif sid == 7:
                self._exports(r)
            elif sid == 8:
                self.start = r.u32()
            elif sid == 10:
                self._code = (body, end)
            r.pos = end

    def _imports(self, r: _Reader) -> None:
        for position in range(r.count("import", 3)):
            r.name()
            r.name()
            kind = r.byte()
            if kind == 0x00:  # a function: its type index
                r.u32()
                self.imported.append(position)
            elif kind == 0x01:  # a table: its element type and limits
                if r.byte() not in _VALTYPES:
                    raise LoadError("a table of a type this reader does not read")
                _limits(r)
            elif kind == 0x02:  # a memory
                _limits(r)
            elif kind == 0x03:  # a global: its type and mutability
                if r.byte() not in _VALTYPES:
                    raise LoadError("a global of a type this reader does not read")
                r.byte()
            else:
                raise LoadError(f"an import of kind {kind:#04x}")

    def _exports(self, r: _Reader) -> None:
        for _ in range(r.count("export", 3)):
            name = r.name()
            kind = r.byte()
            index = r.u32()
            if kind == 0x00:
                self.exports[name] = index

    def body(self, index: int) -> tuple[int, int]:
        """Where defined function ``index`` (counting imported functions first) has its
        body (after its size)."""
        bodies = self._bodies
        if bodies is None:
            bodies = self._bodies = []
            if self._code is not None:
                r = _Reader(self.data, self.data)
                r.pos, r.end = self._code
                for _ in range(r.count("function body")):
                    size = r.u32()
                    bodies.append((r.pos, r.pos + size))
                    r.take(size)
        at = index - len(self.imported)
        if not 0 <= at < len(bodies):
            raise LoadError(f"no body for function {index}")
        return bodies[at]


def _limits(r: _Reader) -> None:
    flags = r.byte()
    if flags & ~0x0F:
        raise LoadError(f"limits with flags {flags:#04x}")
    r.u64()
    if flags & 0x01:
        r.u64()
    if flags & 0x08:  # a custom page size
        r.u32()


def _signed_leb(r: _Reader) -> int:
    """A signed LEB128 integer (an ``i32.const``'s or ``i64.const``'s)."""
    data, pos, end = r.data, r.pos, r.end
    value = shift = 0
    while True:
        if pos >= end or pos - r.pos >= 10:
            raise _NotInert("a bad integer")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            r.pos = pos
            return value - (1 << shift) if b & 0x40 else value


# the bulk instructions (0xfc prefix), whose time is their length operand's: the
# bytes each such length counts for (memory.init, memory.copy, memory.fill: bytes;
# table.init, table.copy, table.grow, table.fill: elements)
_BULK = {8: 1, 10: 1, 11: 1, 12: 8, 14: 8, 15: 8, 17: 8}


def calls_of(code: ModuleCode, index: int) -> list[int]:
    """The functions defined function ``index`` of ``code`` calls directly.

    Raises:
      _NotInert: its body has an instruction outside the inert set, or does not read.
    """
    return _read_body(code, index)[0]


def _read_body(code: ModuleCode, index: int) -> tuple[list[int], int]:
    """The functions defined function ``index`` of ``code`` calls directly, and the
    bytes its bulk instructions (``memory.fill`` …) touch at most, which count with
    its code's: each needs its length as a constant just before it.

    Raises:
      _NotInert: its body has an instruction outside the inert set, a bulk
        instruction whose length is not a constant, or does not read.
    """
    body, end = code.body(index)
    r = _Reader(code.data, code.data)
    r.pos, r.end = body, end
    for _ in range(r.count("local group")):
        r.u32()
        if r.byte() not in _VALTYPES:
            raise _NotInert("a local of a type this check does not read")
    calls: list[int] = []
    bulk = 0
    data = r.data
    constant = -1  # the value of an i32.const or i64.const just read, else -1
    while r.pos < end:
        op = data[r.pos]
        r.pos += 1
        if op in (0x41, 0x42):  # i32.const, i64.const
            constant = _signed_leb(r)
            continue
        length, constant = constant, -1
        if op in _PLAIN:
            continue
        if op in _ONE_INDEX:
            r.u32()
        elif op in _MEMARG:
            align = r.u32()
            if align & 0x40:  # multi-memory: a memory index follows
                r.u32()
            r.u64()
        elif op in _CALLS:
            calls.append(r.u32())
        elif op in (0x02, 0x04):  # block, if: a block type
            kind = data[r.pos] if r.pos < end else 0x80
            if kind == 0x40 or kind in _VALTYPES:
                r.pos += 1
            elif kind < 0x40:  # a type index (a non-negative s33)
                r.s33()
            else:
                raise _NotInert("a block type this check does not read")
        elif op == 0x0E:  # br_table
            for _ in range(r.count("branch label") + 1):
                r.u32()
        elif op in (0x43, 0x44):  # f32.const, f64.const
            r.take(4 if op == 0x43 else 8)
        elif op == 0x1C:  # select with types
            for _ in range(r.count("select type")):
                if r.byte() not in _VALTYPES:
                    raise _NotInert("a select of a type this check does not read")
        elif op == 0xD0:  # ref.null: funcref or externref
            if r.byte() not in (0x70, 0x6F):
                raise _NotInert("a ref.null of a type this check does not read")
        elif op == 0xFC:
            sub = r.u32()
            indices = _FC_INDICES.get(sub)
            if indices is None:
                raise _NotInert(f"instruction 0xfc {sub}")
            for _ in range(indices):
                r.u32()
            if sub in _BULK:
                if length < 0:  # (a negative i32 is a length past 2 GiB)
                    raise _NotInert(f"instruction 0xfc {sub} of a length not known")
                bulk += length * _BULK[sub]
        else:  # loop, call_indirect, call_ref, exceptions, SIMD, atomics, GC, ...
            raise _NotInert(f"instruction {op:#04x}")
    return calls, bulk


Follow = Callable[[int, int], "tuple[int, str] | None"]
"""``follow(instance, position)``: where import ``position`` of core instance
``instance`` comes from, as ``(earlier instance, export name)``, or ``None`` when it is
not an export of an earlier core instance (a host or canon-defined function)."""


def start_is_inert(
    instance: int, codes: Callable[[int], ModuleCode | None], follow: Follow
) -> bool:
    """Whether core instance ``instance``'s start function (its module is
    ``codes(instance)``) surely reaches no host function and ends soon: see the
    module's docstring for the rules. ``codes(i)`` reads core instance ``i``'s module
    (``None``: not readable); ``follow`` says where an imported function comes from."""
    code = codes(instance)
    if code is None or code.start is None:
        return False
    budget = [MAX_FUNCTIONS, MAX_CODE_BYTES]
    done: dict[tuple[int, int], int] = {}
    try:
        _check(instance, code.start, codes, follow, done, set(), budget)
    except (_NotInert, LoadError):
        return False
    return True


def _check(
    instance: int,
    index: int,
    codes: Callable[[int], ModuleCode | None],
    follow: Follow,
    done: dict[tuple[int, int], int],
    active: set[tuple[int, int]],
    budget: list[int],
) -> int:
    """Check function ``index`` of core instance ``instance`` and all it calls, and
    answer how many bytes of code one call of it runs at most (``done`` holds that for
    each function checked); raise :class:`_NotInert` if anything is not inert."""
    while True:  # an imported function: where it really is
        code = codes(instance)
        if code is None:
            raise _NotInert(f"core instance {instance} cannot be read")
        if index >= len(code.imported):
            break
        source = follow(instance, code.imported[index])
        if source is None:
            raise _NotInert("a call of a host or canon-defined function")
        instance, name = source
        target = codes(instance)
        if target is None or name not in target.exports:
            raise _NotInert(f"core instance {instance} exports no function {name!r}")
        index = target.exports[name]
    key = (instance, index)
    ran = done.get(key)
    if ran is not None:
        return ran
    if key in active:
        raise _NotInert("recursion")
    budget[0] -= 1
    body, end = code.body(index)
    budget[1] -= end - body
    if budget[0] < 0 or budget[1] < 0:
        raise _NotInert("too much code to read")
    active.add(key)
    calls, bulk = _read_body(code, index)
    ran = end - body + bulk
    if ran > MAX_RUN_BYTES:
        raise _NotInert("runs too long (bulk instructions)")
    for callee in calls:
        ran += _check(instance, callee, codes, follow, done, active, budget)
        if ran > MAX_RUN_BYTES:
            raise _NotInert("runs too long (too many calls)")
    active.discard(key)
    done[key] = ran
    return ran


__all__ = [
    "MAX_CODE_BYTES",
    "MAX_FUNCTIONS",
    "MAX_RUN_BYTES",
    "ModuleCode",
    "calls_of",
    "start_is_inert",
]
