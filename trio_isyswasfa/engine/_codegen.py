"""Generated lifting and lowering for records, tuples and variants.

:mod:`._abi` builds every type's four functions as closures; for the composite types
that most calls carry (records, tuples, variants, enums, options, results) this module
writes one straight-line Python function per operation instead, with scalars, handles
and nested composites inlined (no call per field, flat values at fixed positions) and
compiles it once. UTF-8 strings and ``list<u8>`` are sliced out of (copied into) the
memory view inline; other lists call their range functions, which for elements of
these kinds are generated too (:meth:`Generator.list_range`: one loop, one ``struct``
call per element or one ``iter_unpack`` over the list). Flags, strings in UTF-16 and
anything nested too deeply are called through their own (closure or generated)
functions.

Generated code reads exactly like the closures in :mod:`._abi` and raises the same
errors; the test suite runs both against each other.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

from .._errors import GuestTrap, HostProtocolError
from ._layout import (
    MAX_LIST_BYTE_LENGTH,
    MAX_STRING_BYTE_LENGTH,
    discriminant_size,
    field_offsets,
    layout,
    payload_offset,
    record_fields,
    variant_cases,
)
from ._types import (
    BorrowType,
    EnumType,
    ListType,
    OptionType,
    OwnType,
    Primitive,
    PrimType,
    RecordType,
    ResultType,
    TupleType,
    ValType,
    VariantType,
)
from ._values import Err, Ok, Record, Variant

_U8 = PrimType(Primitive.U8)
_MAX_INLINE_DEPTH = 4  # nested variants inlined before calling a child's functions

_INTS = {
    Primitive.U8: ("B", 0, 0xFF),
    Primitive.S8: ("b", -0x80, 0x7F),
    Primitive.U16: ("H", 0, 0xFFFF),
    Primitive.S16: ("h", -0x8000, 0x7FFF),
    Primitive.U32: ("I", 0, 0xFFFFFFFF),
    Primitive.S32: ("i", -0x80000000, 0x7FFFFFFF),
    Primitive.U64: ("Q", 0, 0xFFFFFFFFFFFFFFFF),
    Primitive.S64: ("q", -(1 << 63), (1 << 63) - 1),
}

_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")
_U32X2 = struct.Struct("<II")
_I32 = struct.Struct("<I")
_I64 = struct.Struct("<Q")


def _i2f32(x: int) -> float:
    v: float = _F32.unpack(_I32.pack(x & 0xFFFFFFFF))[0]
    return v


def _i2f64(x: int) -> float:
    v: float = _F64.unpack(_I64.pack(x & 0xFFFFFFFFFFFFFFFF))[0]
    return v


def _f2i32(x: float) -> int:
    v: int = _I32.unpack(_F32.pack(x))[0]
    return v


def _f2i64(x: float) -> int:
    v: int = _I64.unpack(_F64.pack(x))[0]
    return v


def _trap_disc(d: int, n: int) -> GuestTrap:
    return GuestTrap(f"canonical ABI: variant discriminant {d} is out of range ({n} cases)")


def _string_trap(buf: Any, ptr: int, units: int) -> GuestTrap:
    """Why a UTF-8 string's range is bad (the closures' messages)."""
    if units > MAX_STRING_BYTE_LENGTH:
        return GuestTrap(f"canonical ABI: string of {units} bytes is too long")
    return GuestTrap(f"canonical ABI: string of {units} bytes at {ptr:#x} is out of bounds")


def _utf8_trap(exc: UnicodeDecodeError) -> GuestTrap:
    return GuestTrap(f"canonical ABI: string is not valid UTF-8 ({exc.reason})")


def _list_trap(buf: Any, ptr: int, n: int, size: int, align: int) -> GuestTrap:
    """Why a list's range is bad (the closures' messages, in the closures' order)."""
    nbytes = n * size
    if nbytes > MAX_LIST_BYTE_LENGTH:
        return GuestTrap(f"canonical ABI: list of {n} elements ({nbytes} bytes) is too long")
    if ptr & (align - 1):
        return GuestTrap(f"canonical ABI: list pointer {ptr:#x} is not aligned to {align}")
    return GuestTrap(f"canonical ABI: list of {nbytes} bytes at {ptr:#x} is out of bounds")


def _get_utf8(buf: memoryview, ptr: int, units: int) -> str:
    """Lift the UTF-8 string of ``units`` bytes at ``ptr`` (the range checked first)."""
    if units > MAX_STRING_BYTE_LENGTH or ptr + units > len(buf):
        raise _string_trap(buf, ptr, units)
    try:
        return buf[ptr : ptr + units].tobytes().decode()
    except UnicodeDecodeError as exc:
        raise _utf8_trap(exc) from None


def _get_bytes(buf: memoryview, ptr: int, n: int) -> bytes:
    """Lift the ``list<u8>`` of ``n`` bytes at ``ptr`` (the range checked first)."""
    if n > MAX_LIST_BYTE_LENGTH or ptr + n > len(buf):
        raise _list_trap(buf, ptr, n, 1, 1)
    return buf[ptr : ptr + n].tobytes()


def _put_utf8(cx: Any, t: ValType, v: Any) -> tuple[int, int]:
    """Lower string ``v`` as UTF-8 into a new block (``realloc(0, 0, 1, n)``): its
    pointer and length. A value that is no string, or has lone surrogates, or is
    too long is the host's error, raised before the block is allocated."""
    if v.__class__ is not str and not isinstance(v, str):  # (a subclass: StrEnum)
        raise _bad_string(t, v, "not a str")
    try:
        data = v.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad_string(t, v, "has lone surrogates") from None
    n = len(data)
    if n > MAX_STRING_BYTE_LENGTH:
        raise _bad_string(t, v, "too long")
    ptr: int = cx.alloc(1, n)
    cx.buf[ptr : ptr + n] = data
    return ptr, n


def _bad_string(t: ValType, v: Any, why: str) -> HostProtocolError:
    return HostProtocolError(f"cannot lower {v!r:.80} as string: {why}")


def _isint(v: Any) -> bool:
    return isinstance(v, int)


def _isstr(v: Any) -> bool:
    return isinstance(v, str)


def _base(v: Any, cls: type, cases: list[frozenset[type]]) -> type:
    """The class of the first untagged case ``v`` is an instance of (else its own)."""
    for classes in cases:
        for base in classes:
            if isinstance(v, base):
                return base
    return cls


class _Gen:
    """One generated function: its lines and the constants it names."""

    def __init__(self, helpers: dict[str, Any]) -> None:
        self.ns: dict[str, Any] = dict(helpers)
        self.lines: list[str] = []
        self.count = 0
        self.consts: dict[int, str] = {}

    def var(self, prefix: str = "v") -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, obj: Any, prefix: str = "k") -> str:
        key = id(obj)
        name = self.consts.get(key)
        if name is None:
            self.count += 1
            name = f"c{self.count}_{prefix}"  # helpers start with "_": no clash
            self.ns[name] = obj
            self.consts[key] = name
        return name

    def emit(self, ind: int, line: str) -> None:
        self.lines.append("    " * ind + line)

    def compile(self, header: str, name: str) -> Callable[..., Any]:
        source = "\n".join([header, *self.lines]) + "\n"
        code = compile(source, f"<canonical ABI: {name}>", "exec")
        exec(code, self.ns)
        fn: Callable[..., Any] = self.ns[name]
        return fn


def _misaligned(name: str, align: int) -> str:
    """The start of a condition that is true when ``name`` is not aligned to ``align``
    (nothing when any address is)."""
    return f"{name} & {align - 1} or " if align > 1 else ""


def _at(base: str, off: int) -> str:
    return f"{base} + {off}" if off else base


class Generator:
    """Writes the four functions of one composite type.

    ``child(t)`` gives a type's :class:`~._abi.TypeAbi` (for what is not inlined);
    ``helpers`` are the shared names generated code calls (``_bad``, ``_char_of``…);
    ``shape(t)`` gives a variant-like type's Python shape: ``(tagged, case_classes,
    handle_flags)``.
    """

    def __init__(
        self,
        child: Callable[[ValType], Any],
        helpers: dict[str, Any],
        shape: Callable[[ValType], tuple[bool, list[frozenset[type]], list[bool]]],
        encoding: str = "utf8",
    ) -> None:
        self.child = child
        self.encoding = encoding
        self._blen = "len(buf)"  # the memory's size, in code reading strings
        self.helpers = {
            **helpers,
            "_string_trap": _string_trap,
            "_utf8_trap": _utf8_trap,
            "_list_trap": _list_trap,
            "_put_utf8": _put_utf8,
            "_get_utf8": _get_utf8,
            "_get_bytes": _get_bytes,
            "_u32x2": _U32X2.unpack_from,
            "_p32x2": _U32X2.pack_into,
            "_i2f32": _i2f32,
            "_i2f64": _i2f64,
            "_f2i32": _f2i32,
            "_f2i64": _f2i64,
            "_trap_disc": _trap_disc,
            "_isint": _isint,
            "_isstr": _isstr,
            "_base": _base,
            "_new": object.__new__,
            "_Record": Record,
            "_Variant": Variant,
            "_Ok": Ok,
            "_Err": Err,
            "_NAN": math.nan,
            "_getattr": getattr,
            "HostProtocolError": HostProtocolError,
        }
        self.shape = shape

    def inlines(self, t: ValType) -> bool:
        """Whether generated code handles ``t`` itself (else it calls ``t``'s functions):
        UTF-8 strings and ``list<u8>`` are read and written inline, other lists of any
        length through their range functions (no call per element level)."""
        if isinstance(t, PrimType):
            if t.kind is Primitive.STRING:
                return self.encoding == "utf8"
            return t.kind is not Primitive.ERROR_CONTEXT
        if isinstance(t, ListType):
            return t.length is None
        if isinstance(t, (RecordType, TupleType, OwnType, BorrowType)):
            return True
        return variant_cases(t) is not None

    def _pair(self, t: ValType) -> bool:
        """Whether ``t`` is a (pointer, length) pair in memory that generated code reads
        itself (so a run of fields may unpack it with its neighbours)."""
        if isinstance(t, PrimType):
            return t.kind is Primitive.STRING and self.encoding == "utf8"
        return isinstance(t, ListType) and t.length is None

    def functions(
        self, t: ValType
    ) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        """``(load, store, lift_flat, lower_flat)`` for ``t``."""
        return (self._load_fn(t), self._store_fn(t), self._lift_fn(t), self._lower_fn(t))

    # -- strings and lists --------------------------------------------------------------

    def list_range(self, t: ListType) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """``(read_range, write_range)`` for a list of ``t``'s elements: one loop with the
        element's reading (writing) inline, its strings and bytes sliced out of (copied
        into) the memory view, and an element whose fields are all scalars, strings or
        lists unpacked from one ``struct.iter_unpack`` over the whole range.

        ``read_range(cx, buf, ptr, n)`` checks the range against the memory before it
        reads anything (a trap); ``write_range(cx, v)`` allocates the element array, then
        stores each element in order, each string or list of it with its own ``realloc``
        as the specification orders them; it gives ``(ptr, n)``."""
        el = t.element
        lay = layout(el)
        size, align = lay.size, lay.align
        g = _Gen(self.helpers)
        g.emit(1, "blen = len(buf)")
        g.emit(1, f"nbytes = n * {size}")
        g.emit(
            1,
            f"if nbytes > {MAX_LIST_BYTE_LENGTH} or {_misaligned('p', align)}p + nbytes > blen:",
        )
        g.emit(2, f"raise _list_trap(buf, p, n, {size}, {align})")
        g.emit(1, "out = []")
        g.emit(1, "add = out.append")
        self._blen = "blen"  # (the view cannot change while a list is read)
        try:
            whole = self._whole_run(el)
            if whole is not None:
                types, run = whole
                offsets = field_offsets(types)
                each = _run_struct(types, offsets, run, self._pair, size)
                assert each.size == size
                raws = self._raw_names(g, types, run)
                names = ", ".join(n for ns in raws for n in ns)
                g.emit(
                    1, f"for {names}, in {g.const(each.iter_unpack, 'it')}(buf[p : p + nbytes]):"
                )
                values = [self._loaded(g, types[i], ns, 2) for i, ns in zip(run, raws, strict=True)]
                if isinstance(el, (RecordType, TupleType)):
                    value = self._assemble(g, el, values, 2)
                else:
                    value = values[0]
            else:
                g.emit(1, f"for q in range(p, p + nbytes, {size}):")
                value = self._load(g, el, "q", 0, 2, 0)
            g.emit(2, f"add({value})")
            g.emit(1, "return out")
        finally:
            self._blen = "len(buf)"
        read = g.compile("def read_range(cx, buf, p, n):", "read_range")

        g = _Gen(self.helpers)
        tc = g.const(t, "t")
        g.emit(1, "if v.__class__ is not list and not isinstance(v, (list, tuple)):")
        g.emit(2, f"raise _bad({tc}, v, 'not a list')")
        g.emit(1, "n = len(v)")
        g.emit(1, f"if n * {size} > {MAX_LIST_BYTE_LENGTH}: raise _bad({tc}, v, 'too long')")
        g.emit(1, f"p = cx.alloc({align}, n * {size})")
        g.emit(1, "q = p")
        g.emit(1, "for x in v:")
        self._store(g, el, "x", "q", 0, 2, 0)
        g.emit(2, f"q += {size}")
        g.emit(1, "return p, n")
        write = g.compile("def write_range(cx, v):", "write_range")
        return read, write

    def _whole_run(self, t: ValType) -> tuple[tuple[ValType, ...], list[int]] | None:
        """When every byte of a ``t`` that matters unpacks with one ``struct`` (a string,
        a list, or a record or tuple of scalars, strings and lists): its fields and
        their indices (one run)."""
        if self._pair(t):
            return (t,), [0]
        if isinstance(t, (RecordType, TupleType)):
            types = record_fields(t)
            runs = _runs(types, self._pair)
            if len(runs) == 1 and all(
                self._pair(ty) or (isinstance(ty, PrimType) and ty.kind in _CODES) for ty in types
            ):
                return types, runs[0]
        return None

    def _read_range(self, g: _Gen, t: ValType, ptr: str, n: str, ind: int) -> str:
        """Emit the lifting of string or list ``t`` from the names of its unsigned
        pointer and length (the range checked against the memory first); the
        expression of its value."""
        inline = self._blen != "len(buf)"  # in a list's loop; elsewhere a call (less
        # code to compile at load, for values that come one at a time)
        if isinstance(t, PrimType) and not inline:
            return f"_get_utf8(buf, {ptr}, {n})"
        if isinstance(t, PrimType):  # a UTF-8 string
            x, e = g.var("s"), g.var("e")
            g.emit(ind, f"if {n} > {MAX_STRING_BYTE_LENGTH} or {ptr} + {n} > {self._blen}:")
            g.emit(ind + 1, f"raise _string_trap(buf, {ptr}, {n})")
            g.emit(ind, "try:")  # (a copy then its decode: cheaper than str(view, codec))
            g.emit(ind + 1, f"{x} = buf[{ptr} : {ptr} + {n}].tobytes().decode()")
            g.emit(ind, f"except UnicodeDecodeError as {e}:")
            g.emit(ind + 1, f"raise _utf8_trap({e}) from None")
            return x
        assert isinstance(t, ListType)
        if t.element == _U8 and not inline:
            return f"_get_bytes(buf, {ptr}, {n})"
        if t.element == _U8:
            g.emit(ind, f"if {n} > {MAX_LIST_BYTE_LENGTH} or {ptr} + {n} > {self._blen}:")
            g.emit(ind + 1, f"raise _list_trap(buf, {ptr}, {n}, 1, 1)")
            return f"buf[{ptr} : {ptr} + {n}].tobytes()"
        return f"{g.const(self.child(t).read_range, 'rd')}(cx, buf, {ptr}, {n})"

    def _write_range(self, g: _Gen, t: ValType, v: str, ind: int) -> tuple[str, str]:
        """Emit the lowering of string or list value ``v`` into a new block (checked
        before the block is allocated); the names of its pointer and length. A call:
        the guest's ``realloc`` it makes costs far more than the call, and the lines
        saved are compiled once per type at load."""
        q, n = g.var("wp"), g.var("wn")
        if isinstance(t, PrimType):  # a UTF-8 string
            g.emit(ind, f"{q}, {n} = _put_utf8(cx, {g.const(t, 't')}, {v})")
            return q, n
        g.emit(ind, f"{q}, {n} = {g.const(self.child(t).write_range, 'wr')}(cx, {v})")
        return q, n

    # -- a host import's whole call ------------------------------------------------------

    def import_entry(
        self,
        params: tuple[ValType, ...],
        result: ValType | None,
        *,
        core_params: tuple[str, ...],
        core_result: str | None,
        params_in_memory: bool,
        params_abi: Any,
        params_touch_memory: bool,
        to_error: bool,
        lends: bool,
    ) -> Callable[..., Callable[[int], None]]:
        """The factory of a host import's core function on its raw values: one function
        that checks the instance may call out, reads the core arguments, lifts them,
        calls the host, lowers its result (into the return pointer when it travels in
        memory) and ends the call's borrows, with everything but strings, lists and
        flags inlined. ``make(fn, cx, faults, instance, fault, leave, from_address,
        unpack_from, pack_into)`` binds it to one instance (see
        :func:`~._abi.import_entry_factory`)."""
        g = _Gen(self.helpers)
        result_in_memory = result is not None and core_result is None
        args = [f"a{i}" for i in range(len(core_params))]
        g.emit(2, "nonlocal last, view")
        g.emit(2, "if faults.fault is not None:")
        g.emit(3, "raise _GuestTrap('instance is dead')")
        g.emit(2, "if not may_leave[0]:")
        g.emit(3, "raise leave()")
        g.emit(2, "rv = view")
        g.emit(2, "if raw != last:")
        g.emit(3, "rv = view = from_address(raw)")
        g.emit(3, "last = raw")
        if args:
            g.emit(2, f"{', '.join(args)}, = unpack_from(rv)")
        if lends:
            g.emit(2, "n0 = len(lenders)")
        g.emit(2, "try:")
        # (:meth:`AbiContext.refresh` and :func:`check_range`, inline: the range
        # check calls it only for the trap that says why)
        if params_touch_memory:
            g.emit(3, "buf = cx.buf = memory.view() if memory is not None else cx.buf")
        else:
            g.emit(3, "buf = cx.buf")
        if params_in_memory:
            size, align = params_abi.layout.size, params_abi.layout.align
            g.emit(3, f"ptr = {args[0]} & 0xFFFFFFFF")
            g.emit(3, f"if {_misaligned('ptr', align)}ptr + {size} > len(buf):")
            g.emit(4, f"_check_range(buf, ptr, {size}, {align})")
            g.emit(3, f"values = {g.const(params_abi.load, 'ld')}(cx, buf, ptr)")
            call = "fn(*values)"
        else:
            names = []
            pos = 0
            for ty in params:
                width = len(layout(ty).flat)
                name = g.var("p")
                g.emit(3, f"{name} = {self._lift(g, ty, args[pos : pos + width], 3, 0)}")
                names.append(name)
                pos += width
            call = f"fn({', '.join(names)})"
        if to_error:
            g.emit(3, "try:")
            g.emit(4, f"value = {call}")
            g.emit(3, "except _WasiError as exc:")
            g.emit(4, "value = _Err(exc.code)")
        else:
            g.emit(3, f"value = {call}")
        if result is not None:
            tc = g.const(result, "t")
            g.emit(3, "try:")
            if result_in_memory:
                rl = layout(result)
                g.emit(4, f"rp = {args[-1]} & 0xFFFFFFFF")
                # the view the arguments were read from is the memory's still: only the
                # host ran since (a view is a C call)
                if params_touch_memory:
                    g.emit(4, "rb = cx.buf")
                else:
                    g.emit(4, "rb = cx.buf = memory.view() if memory is not None else cx.buf")
                g.emit(4, f"if {_misaligned('rp', rl.align)}rp + {rl.size} > len(rb):")
                g.emit(5, f"_check_range(rb, rp, {rl.size}, {rl.align})")
                self._store(g, result, "value", "rp", 0, 4, 0)
            else:
                assert core_result is not None
                self._lower(g, result, "value", ["o0"], 4, 0)
                mask = {"i32": " & 0xFFFFFFFF", "i64": " & 0xFFFFFFFFFFFFFFFF"}.get(core_result, "")
                g.emit(4, f"pack_into(rv, 0, o0{mask})")
            g.emit(3, "except _IsyswasfaError:")
            g.emit(4, "raise")
            g.emit(3, "except _HOST_VALUE_ERRORS as exc:")
            g.emit(4, f"raise _host_errors({tc}, value, exc) from exc")
        if lends:  # the handles lent to this call are free to move again
            g.emit(3, "for h in lenders[n0:]:")
            g.emit(4, "h.lends -= 1")
            g.emit(3, "del lenders[n0:]")
        g.emit(2, "except Exception as exc:")
        g.emit(3, "f = fault(exc)")
        g.emit(3, "raise f from f.__cause__")
        body = g.lines
        g.lines = [
            "    last = 0",
            "    view = None",
            "    lenders = cx.scope.lenders",
            "    memory = cx.memory",
            "    may_leave = instance.leave_flag",
            "    def entry(raw):",
            *body,
            "    return entry",
        ]
        header = (
            "def make(fn, cx, faults, instance, fault, leave, from_address, unpack_from, "
            "pack_into):"
        )
        return g.compile(header, "make")

    # -- lift_flat ----------------------------------------------------------------------

    def _lift_fn(self, t: ValType) -> Callable[..., Any]:
        g = _Gen(self.helpers)
        n = len(layout(t).flat)
        names = [f"f{i}" for i in range(n)]
        for name in names:
            g.emit(1, f"{name} = next(it)")
        result = self._lift(g, t, names, 1, 0)
        g.emit(1, f"return {result}")
        return g.compile("def lift_flat(cx, buf, it):", "lift_flat")

    def _lift(self, g: _Gen, t: ValType, src: list[str], ind: int, depth: int) -> str:
        if not self.inlines(t) or depth > _MAX_INLINE_DEPTH:
            fn = g.const(self.child(t).lift_flat, "lf")
            return f"{fn}(cx, buf, iter(({', '.join(src)},)))"
        if self._pair(t):
            a, n = g.var("sp"), g.var("sn")
            g.emit(ind, f"{a} = {src[0]} & 0xFFFFFFFF")
            g.emit(ind, f"{n} = {src[1]} & 0xFFFFFFFF")
            return self._read_range(g, t, a, n, ind)
        if isinstance(t, PrimType):
            return self._lift_prim(g, t, src[0], ind)
        if isinstance(t, (RecordType, TupleType)):
            values = []
            pos = 0
            for ty in record_fields(t):
                width = len(layout(ty).flat)
                values.append(self._lift(g, ty, src[pos : pos + width], ind, depth))
                pos += width
            return self._build(g, t, values, ind)
        if isinstance(t, OwnType):
            return f"cx.table.lift_own({g.const(t.resource, 'rt')}, {src[0]} & 0xFFFFFFFF)"
        if isinstance(t, BorrowType):
            rt = g.const(t.resource, "rt")
            return f"cx.table.lift_borrow({rt}, {src[0]} & 0xFFFFFFFF, cx.scope)"
        return self._lift_variant(g, t, src, ind, depth)

    def _lift_prim(self, g: _Gen, t: PrimType, e: str, ind: int) -> str:
        k = t.kind
        if k in _INTS:
            _, lo, hi = _INTS[k]
            if lo == 0:
                return f"({e} & {hi})"
            mask, sign = hi * 2 + 1, hi + 1
            return f"((({e} & {mask}) ^ {sign}) - {sign})"
        if k is Primitive.BOOL:
            return f"(({e} & 0xFFFFFFFF) != 0)"
        if k is Primitive.CHAR:
            return f"_char_of({e} & 0xFFFFFFFF)"
        x = g.var("x")
        g.emit(ind, f"{x} = float({e})")
        g.emit(ind, f"if {x} != {x}: {x} = _NAN")
        return x

    def _build(self, g: _Gen, t: RecordType | TupleType, values: list[str], ind: int) -> str:
        if isinstance(t, TupleType):
            return f"({', '.join(values)},)"
        r = g.var("r")
        g.emit(ind, f"{r} = _Record()")
        d = g.var("d")
        g.emit(ind, f"{d} = {r}.__dict__")
        for (name, _), value in zip(t.fields, values, strict=True):
            g.emit(ind, f"{d}[{name!r}] = {value}")
        return r

    def _wrap(self, t: ValType, tagged: bool, index: int, name: str, payload: str) -> str:
        if isinstance(t, ResultType):
            return f"_Ok({payload})" if index == 0 else f"_Err({payload})"
        if isinstance(t, EnumType):
            return repr(name)
        if tagged:
            return f"_Variant({name!r}, {payload})"
        return payload

    def _lift_variant(self, g: _Gen, t: ValType, src: list[str], ind: int, depth: int) -> str:
        cases = variant_cases(t)
        assert cases is not None
        tagged = self.shape(t)[0]
        joined = layout(t).flat[1:]
        d, r = g.var("d"), g.var("r")
        g.emit(ind, f"{d} = {src[0]} & 0xFFFFFFFF")
        g.emit(ind, f"if {d} >= {len(cases)}: raise _trap_disc({d}, {len(cases)})")
        if isinstance(t, EnumType):
            return f"{g.const(t.names, 'names')}[{d}]"

        def case(i: int, at: int) -> None:
            name, ty = cases[i]
            if ty is None:
                payload = "None"
            else:
                own = layout(ty).flat
                coerced = [
                    _coerce_in(have, want, e)
                    for have, want, e in zip(joined, own, src[1:], strict=False)
                ]
                payload = self._lift(g, ty, coerced, at, depth + 1)
            g.emit(at, f"{r} = {self._wrap(t, tagged, i, name, payload)}")

        _tree(g, ind, d, 0, len(cases), case)
        return r

    # -- lower_flat ---------------------------------------------------------------------

    def _lower_fn(self, t: ValType) -> Callable[..., Any]:
        g = _Gen(self.helpers)
        n = len(layout(t).flat)
        outs = [f"o{i}" for i in range(n)]
        self._lower(g, t, "v", outs, 1, 0)
        if n == 1:
            g.emit(1, "out.append(o0)")
        else:
            g.emit(1, f"out.extend(({', '.join(outs)},))")
        return g.compile("def lower_flat(cx, v, out):", "lower_flat")

    def _lower(self, g: _Gen, t: ValType, v: str, outs: list[str], ind: int, depth: int) -> None:
        tc = g.const(t, "t")
        if not self.inlines(t) or depth > _MAX_INLINE_DEPTH:
            fn = g.const(self.child(t).lower_flat, "lw")
            tmp = g.var("tmp")
            g.emit(ind, f"{tmp} = []")
            g.emit(ind, f"{fn}(cx, {v}, {tmp})")
            g.emit(ind, f"{', '.join(outs)}, = {tmp}")
            return
        if self._pair(t):
            q, n = self._write_range(g, t, v, ind)
            g.emit(ind, f"{outs[0]} = {q}")
            g.emit(ind, f"{outs[1]} = {n}")
            return
        if isinstance(t, PrimType):
            k = t.kind
            o = outs[0]
            if k in _INTS:
                _, lo, hi = _INTS[k]
                g.emit(
                    ind,
                    f"if {v}.__class__ is not int and not _isint({v}) or not {lo} <= {v} <= {hi}:",
                )
                g.emit(ind + 1, f"raise _bad({tc}, {v}, 'out of range or not an integer')")
                g.emit(ind, f"{o} = {v} & {hi * 2 + 1}" if lo < 0 else f"{o} = {v}")
            elif k is Primitive.BOOL:
                g.emit(ind, f"if {v}.__class__ is not bool: raise _bad({tc}, {v})")
                g.emit(ind, f"{o} = 1 if {v} else 0")
            elif k is Primitive.CHAR:
                g.emit(ind, f"{o} = _ord_of({tc}, {v})")
            elif k is Primitive.F32:
                g.emit(ind, f"{o} = _canon32({v}, {tc})")
            else:
                g.emit(ind, f"{o} = _as_float({v}, {tc})")
                g.emit(ind, f"if {o} != {o}: {o} = _NAN")
            return
        if isinstance(t, (RecordType, TupleType)):
            types, parts = self._unpack_fields(g, t, v, tc, ind)
            pos = 0
            for p, ty in zip(parts, types, strict=True):
                width = len(layout(ty).flat)
                self._lower(g, ty, p, outs[pos : pos + width], ind, depth)
                pos += width
            return
        if isinstance(t, (OwnType, BorrowType)):
            g.emit(ind, f"{outs[0]} = {self._handle_index(g, t, v, tc)}")
            return
        self._lower_variant(g, t, v, outs, ind, depth)

    def _handle_index(self, g: _Gen, t: OwnType | BorrowType, v: str, tc: str) -> str:
        """The expression that puts the handle ``v`` (a rep, or an object with one) into
        the instance's table as an own or a borrow, giving its index."""
        rt = g.const(t.resource, "rt")
        rep = f"({v} if {v}.__class__ is int else _rep_of({tc}, {v}))"
        if isinstance(t, OwnType):
            return f"cx.table.lower_own({rt}, {rep})"
        return f"cx.table.lower_borrow({rt}, {rep}, cx.scope)"

    def _unpack_fields(
        self, g: _Gen, t: RecordType | TupleType, v: str, tc: str, ind: int
    ) -> tuple[tuple[ValType, ...], list[str]]:
        """Emit code that checks a record or tuple value ``v`` and takes its fields
        apart into fresh variables; their types and names (for lowering and storing)."""
        types = record_fields(t)
        parts = [g.var("p") for _ in types]
        if isinstance(t, TupleType):
            g.emit(ind, f"if {v}.__class__ is not tuple or len({v}) != {len(types)}:")
            g.emit(ind + 1, f"raise _bad({tc}, {v}, 'not a tuple of {len(types)}')")
            g.emit(ind, f"{', '.join(parts)}, = {v}")
        else:
            for part, (name, _) in zip(parts, t.fields, strict=True):
                g.emit(ind, f"{part} = _getattr({v}, {name!r})")
        return types, parts

    def _select(
        self, g: _Gen, t: ValType, v: str, ind: int, body: Callable[[int, int, str | None], None]
    ) -> None:
        """Emit the branch for each case of value ``v``: ``body(case, indent, payload)``
        (payload ``None`` for an enum, where the case index is the whole value)."""
        cases = variant_cases(t)
        assert cases is not None
        tc = g.const(t, "t")
        if isinstance(t, (EnumType, VariantType, OptionType)) and (
            isinstance(t, EnumType) or self.shape(t)[0]
        ):
            idx = g.const({name: i for i, (name, _) in enumerate(cases)}, "idx")
            i = g.var("i")
            if isinstance(t, EnumType):
                g.emit(
                    ind, f"{i} = {idx}.get({v}) if {v}.__class__ is str or _isstr({v}) else None"
                )
                g.emit(ind, f"if {i} is None: raise _bad({tc}, {v}, 'not a case name')")
                body(-1, ind, i)
                return
            g.emit(ind, f"{i} = {idx}.get({v}.tag)")
            g.emit(ind, f"if {i} is None: raise _bad({tc}, {v}, 'not a Variant of this type')")
            _tree(g, ind, i, 0, len(cases), lambda k, at: body(k, at, f"{v}.payload"))
            return
        conds = self._cases_of(g, t, v, ind)
        for k, (cond, payload) in enumerate(conds):
            if cond == "else":
                g.emit(ind, "else:")
            else:
                g.emit(ind, f"{'if' if k == 0 else 'elif'} {cond}:")
            body(k, ind + 1, payload)
        if conds[-1][0] != "else":
            g.emit(ind, "else:")
            g.emit(ind + 1, f"raise _bad({tc}, {v}, 'matches no case')")

    def _cases_of(self, g: _Gen, t: ValType, v: str, ind: int) -> list[tuple[str, str | None]]:
        """Per case of an untagged variant or result, the condition that selects it and
        the payload expression; the last condition may be ``"else"``."""
        if isinstance(t, ResultType):
            return [
                (f"{v}.__class__ is not _Err", f"({v}.value if {v}.__class__ is _Ok else {v})"),
                ("else", f"{v}.value"),
            ]
        _, classes, handles = self.shape(t)
        c = g.var("c")
        g.emit(ind, f"{c} = {v}.__class__")
        every = frozenset().union(*classes)
        # a subclass of a case's class (a StrEnum member for a string) is that class
        g.emit(
            ind,
            f"if {c} not in {g.const(every, 'every')}: {c} = _base({v}, {c}, {g.const(classes, 'cases')})",
        )
        conds: list[tuple[str, str | None]] = []
        for cls, handle in zip(classes, handles, strict=True):
            cond = f"{c} in {g.const(cls, 'cls')}"
            if handle:
                cond = f"({cond} or hasattr({v}, 'rep'))"
            conds.append((cond, v))
        return conds

    def _lower_variant(
        self, g: _Gen, t: ValType, v: str, outs: list[str], ind: int, depth: int
    ) -> None:
        cases = variant_cases(t)
        assert cases is not None
        joined = layout(t).flat[1:]

        def case(i: int, at: int, payload: str | None) -> None:
            if i < 0:  # an enum: the index is the value
                g.emit(at, f"{outs[0]} = {payload}")
                return
            ty = cases[i][1]
            g.emit(at, f"{outs[0]} = {i}")
            own = layout(ty).flat if ty is not None else ()
            if ty is not None:
                assert payload is not None
                pv = g.var("pv")
                g.emit(at, f"{pv} = {payload}")
                mine = [g.var("q") for _ in own]
                self._lower(g, ty, pv, mine, at, depth + 1)
                for out, have, want, q in zip(outs[1:], own, joined, mine, strict=False):
                    g.emit(at, f"{out} = {_coerce_out(have, want, q)}")
            for out, want in zip(outs[1 + len(own) :], joined[len(own) :], strict=True):
                g.emit(at, f"{out} = {'0' if want[0] == 'i' else '0.0'}")

        self._select(g, t, v, ind, case)

    # -- load ---------------------------------------------------------------------------

    def _load_fn(self, t: ValType) -> Callable[..., Any]:
        g = _Gen(self.helpers)
        result = self._load(g, t, "ptr", 0, 1, 0)
        g.emit(1, f"return {result}")
        return g.compile("def load(cx, buf, ptr):", "load")

    def _load(self, g: _Gen, t: ValType, base: str, off: int, ind: int, depth: int) -> str:
        p = _at(base, off)
        if not self.inlines(t) or depth > _MAX_INLINE_DEPTH:
            return f"{g.const(self.child(t).load, 'ld')}(cx, buf, {p})"
        if self._pair(t):
            a, n = g.var("sp"), g.var("sn")
            g.emit(ind, f"{a}, {n} = _u32x2(buf, {p})")
            return self._read_range(g, t, a, n, ind)
        if isinstance(t, PrimType):
            k = t.kind
            if k is Primitive.BOOL:
                return f"(buf[{p}] != 0)"
            if k in _INTS:
                unpack = g.const(struct.Struct("<" + _INTS[k][0]).unpack_from, "u")
                return f"{unpack}(buf, {p})[0]"
            if k is Primitive.CHAR:
                return f"_char_of(_u32(buf, {p})[0])"
            unpack = g.const((_F32 if k is Primitive.F32 else _F64).unpack_from, "u")
            x = g.var("x")
            g.emit(ind, f"{x} = {unpack}(buf, {p})[0]")
            g.emit(ind, f"if {x} != {x}: {x} = _NAN")
            return x
        if isinstance(t, (RecordType, TupleType)):
            types = record_fields(t)
            offsets = field_offsets(types)
            values = [""] * len(types)
            for run in _runs(types, self._pair):
                first = _at(base, off + offsets[run[0]])
                if len(run) == 1:
                    i = run[0]
                    values[i] = self._load(g, types[i], base, off + offsets[i], ind, depth)
                    continue
                unpack = g.const(_run_struct(types, offsets, run, self._pair).unpack_from, "u")
                raws = self._raw_names(g, types, run)
                g.emit(ind, f"{', '.join(n for ns in raws for n in ns)}, = {unpack}(buf, {first})")
                for i, names in zip(run, raws, strict=True):
                    values[i] = self._loaded(g, types[i], names, ind)
            return self._assemble(g, t, values, ind)
        if isinstance(t, OwnType):
            return f"cx.table.lift_own({g.const(t.resource, 'rt')}, _u32(buf, {p})[0])"
        if isinstance(t, BorrowType):
            rt = g.const(t.resource, "rt")
            return f"cx.table.lift_borrow({rt}, _u32(buf, {p})[0], cx.scope)"
        cases = variant_cases(t)
        assert cases is not None
        tagged = self.shape(t)[0]
        disc = discriminant_size(len(cases))
        unpack = g.const(struct.Struct("<" + {1: "B", 2: "H", 4: "I"}[disc]).unpack_from, "u")
        d, r = g.var("d"), g.var("r")
        g.emit(ind, f"{d} = {unpack}(buf, {p})[0]")
        g.emit(ind, f"if {d} >= {len(cases)}: raise _trap_disc({d}, {len(cases)})")
        if isinstance(t, EnumType):
            return f"{g.const(t.names, 'names')}[{d}]"
        poff = off + payload_offset(t)

        def case(i: int, at: int) -> None:
            name, ty = cases[i]
            payload = "None" if ty is None else self._load(g, ty, base, poff, at, depth + 1)
            g.emit(at, f"{r} = {self._wrap(t, tagged, i, name, payload)}")

        _tree(g, ind, d, 0, len(cases), case)
        return r

    def _assemble(self, g: _Gen, t: RecordType | TupleType, values: list[str], ind: int) -> str:
        """A record or tuple from its fields' value expressions, read in order."""
        if isinstance(t, TupleType):
            return f"({', '.join(values)},)"
        # the record's fields must be read before it is built: bind them first
        bound = []
        for value in values:
            name = g.var("y")
            g.emit(ind, f"{name} = {value}")
            bound.append(name)
        return self._build(g, t, bound, ind)

    def _raw_names(self, g: _Gen, types: tuple[ValType, ...], run: list[int]) -> list[list[str]]:
        """Fresh names for the raw numbers a run's fields unpack to (two for a pair)."""
        return [[g.var("w") for _ in range(2 if self._pair(types[i]) else 1)] for i in run]

    def _loaded(self, g: _Gen, t: ValType, raws: list[str], ind: int) -> str:
        """A packable field's value from its raw unpacked numbers (one for a scalar, a
        pointer and a length for a string or list)."""
        if self._pair(t):
            return self._read_range(g, t, raws[0], raws[1], ind)
        e = raws[0]
        assert isinstance(t, PrimType)
        if t.kind is Primitive.BOOL:
            return f"({e} != 0)"
        if t.kind is Primitive.CHAR:
            return f"_char_of({e})"
        if t.kind in (Primitive.F32, Primitive.F64):
            x = g.var("x")
            g.emit(ind, f"{x} = {e}")
            g.emit(ind, f"if {x} != {x}: {x} = _NAN")
            return x
        return e

    def _packable(self, g: _Gen, t: ValType, v: str, ind: int) -> str:
        """The raw number to pack for scalar value ``v`` (checked where struct cannot)."""
        assert isinstance(t, PrimType)
        tc = g.const(t, "t")
        if t.kind is Primitive.BOOL:
            g.emit(ind, f"if {v}.__class__ is not bool: raise _bad({tc}, {v})")
            return v
        if t.kind is Primitive.CHAR:
            return f"_ord_of({tc}, {v})"
        if t.kind is Primitive.F32:
            return f"_canon32({v}, {tc})"
        if t.kind is Primitive.F64:
            x = g.var("x")
            g.emit(ind, f"{x} = _as_float({v}, {tc})")
            return f"({x} if {x} == {x} else _NAN)"
        return v

    # -- store --------------------------------------------------------------------------

    def _store_fn(self, t: ValType) -> Callable[..., Any]:
        g = _Gen(self.helpers)
        self._store(g, t, "v", "ptr", 0, 1, 0)
        g.emit(1, "return None")
        return g.compile("def store(cx, ptr, v):", "store")

    def _store(
        self, g: _Gen, t: ValType, v: str, base: str, off: int, ind: int, depth: int
    ) -> None:
        p = _at(base, off)
        tc = g.const(t, "t")
        if not self.inlines(t) or depth > _MAX_INLINE_DEPTH:
            g.emit(ind, f"{g.const(self.child(t).store, 'st')}(cx, {p}, {v})")
            return
        if self._pair(t):
            # (written at once: the next field's realloc sees it, as in the specification)
            q, n = self._write_range(g, t, v, ind)
            g.emit(ind, f"_p32x2(cx.buf, {p}, {q}, {n})")
            return
        if isinstance(t, PrimType):
            k = t.kind
            if k is Primitive.BOOL:
                g.emit(ind, f"if {v}.__class__ is not bool: raise _bad({tc}, {v})")
                g.emit(ind, f"cx.buf[{p}] = {v}")
            elif k in _INTS:
                pack = g.const(struct.Struct("<" + _INTS[k][0]).pack_into, "pk")
                g.emit(ind, f"{pack}(cx.buf, {p}, {v})")
            elif k is Primitive.CHAR:
                g.emit(ind, f"_p32(cx.buf, {p}, _ord_of({tc}, {v}))")
            elif k is Primitive.F32:
                g.emit(ind, f"_pf32(cx.buf, {p}, _canon32({v}, {tc}))")
            else:
                x = g.var("x")
                g.emit(ind, f"{x} = _as_float({v}, {tc})")
                g.emit(ind, f"_pf64(cx.buf, {p}, {x} if {x} == {x} else _NAN)")
            return
        if isinstance(t, (RecordType, TupleType)):
            types, parts = self._unpack_fields(g, t, v, tc, ind)
            offsets = field_offsets(types)
            for run in _runs(types):
                if len(run) == 1:
                    i = run[0]
                    self._store(g, types[i], parts[i], base, off + offsets[i], ind, depth)
                    continue
                pack = g.const(_run_struct(types, offsets, run).pack_into, "pk")
                args = [self._packable(g, types[i], parts[i], ind) for i in run]
                first = _at(base, off + offsets[run[0]])
                g.emit(ind, f"{pack}(cx.buf, {first}, {', '.join(args)})")
            return
        if isinstance(t, (OwnType, BorrowType)):
            g.emit(ind, f"_p32(cx.buf, {p}, {self._handle_index(g, t, v, tc)})")
            return
        cases = variant_cases(t)
        assert cases is not None
        disc = discriminant_size(len(cases))
        pack = g.const(struct.Struct("<" + {1: "B", 2: "H", 4: "I"}[disc]).pack_into, "pk")
        poff = off + payload_offset(t)

        def case(i: int, at: int, payload: str | None) -> None:
            if i < 0:  # an enum: the index is the value
                g.emit(at, f"{pack}(cx.buf, {p}, {payload})")
                return
            g.emit(at, f"{pack}(cx.buf, {p}, {i})")
            case_ty = cases[i][1]
            if case_ty is not None:
                assert payload is not None
                pv = g.var("pv")
                g.emit(at, f"{pv} = {payload}")
                self._store(g, case_ty, pv, base, poff, at, depth + 1)

        self._select(g, t, v, ind, case)


_CODES = {
    **{k: code for k, (code, _, _) in _INTS.items()},
    Primitive.BOOL: "B",
    Primitive.CHAR: "I",
    Primitive.F32: "f",
    Primitive.F64: "d",
}


def _runs(
    types: tuple[ValType, ...], pair: Callable[[ValType], bool] | None = None
) -> list[list[int]]:
    """Field indices grouped: each run of consecutive scalars (one ``struct`` call), and
    every other field alone. With ``pair``, the fields it accepts (strings and lists:
    a pointer and a length) join runs too (for reading: writing one needs its realloc
    between the fields)."""
    runs: list[list[int]] = []
    current: list[int] = []
    for i, ty in enumerate(types):
        if (isinstance(ty, PrimType) and ty.kind in _CODES) or (pair is not None and pair(ty)):
            current.append(i)
            continue
        if current:
            runs.append(current)
            current = []
        runs.append([i])
    if current:
        runs.append(current)
    return runs


def _run_struct(
    types: tuple[ValType, ...],
    offsets: tuple[int, ...],
    run: list[int],
    pair: Callable[[ValType], bool] | None = None,
    size: int = 0,
) -> struct.Struct:
    """The ``struct`` layout of a run of scalar fields (and pairs, with ``pair``),
    padding included, padded at the end to ``size`` bytes from the run's start."""
    fmt = ["<"]
    start = at = offsets[run[0]]
    for i in run:
        ty = types[i]
        if pair is not None and pair(ty):
            code = "II"
        else:
            assert isinstance(ty, PrimType)
            code = _CODES[ty.kind]
        fmt.append("x" * (offsets[i] - at) + code)
        at = offsets[i] + layout(ty).size
    fmt.append("x" * max(0, start + size - at))
    return struct.Struct("".join(fmt))


def _tree(g: _Gen, ind: int, d: str, lo: int, hi: int, body: Callable[[int, int], None]) -> None:
    """Branch on ``d`` (known to be in ``[lo, hi)``): a binary search down to chains of
    at most four comparisons, so that wide variants dispatch in a few tests."""
    if hi - lo == 1:
        body(lo, ind)
        return
    if hi - lo <= 4:
        for k in range(lo, hi):
            if k == hi - 1:
                g.emit(ind, "else:")
            else:
                g.emit(ind, f"{'if' if k == lo else 'elif'} {d} == {k}:")
            body(k, ind + 1)
        return
    mid = (lo + hi) // 2
    g.emit(ind, f"if {d} < {mid}:")
    _tree(g, ind + 1, d, lo, mid, body)
    g.emit(ind, "else:")
    _tree(g, ind + 1, d, mid, hi, body)


def _coerce_in(have: str, want: str, e: str) -> str:
    """Expression turning joined slot ``e`` (``have``) into the case's type (``want``)."""
    if have == want:
        return e
    if want == "f32":
        return f"_i2f32({e})"
    if want == "f64":
        return f"_i2f64({e})"
    return f"({e} & 0xFFFFFFFF)"


def _coerce_out(have: str, want: str, q: str) -> str:
    """Expression turning a case's flat value ``q`` (``have``) into its slot (``want``)."""
    if have == want:
        return q
    if have == "f32":
        return f"_f2i32({q})"
    if have == "f64":
        return f"_f2i64({q})"
    return q
