"""The canonical ABI: lifting and lowering component values, sans-IO.

Everything here works on a :class:`GuestMemory` (a writable byte view of a linear memory
plus its ``realloc``) and a :class:`~._handles.HandleTable`; nothing calls wasm itself.
The engine supplies both: a ``memoryview`` over wasmtime's ``Memory.data_ptr``, or a
``bytearray`` in tests (:class:`BytearrayMemory`).

Each value type is specialised once (:func:`type_abi`, cached) into four closures:
``load``/``store`` to and from memory and ``lift_flat``/``lower_flat`` to and from core
values; nothing walks a type tree per call. Bytes and strings cross with one copy
(a slice of the memory view, a slice assignment into it); lists of numbers with one
``struct`` call.

Errors, as documented in docs/engine.md:

* the guest broke the ABI (a pointer or length out of bounds or misaligned, invalid
  UTF-8 or UTF-16, a bad discriminant, a char that is not a scalar value, a bad handle)
  → :class:`~trio_isyswasfa.GuestTrap`, raised *before* the host allocates anything for
  the value (lengths are checked against the memory first);
* the host gave a value that does not fit the type (a ``u8`` of 300, a missing record
  field, an unknown enum case) → :class:`~trio_isyswasfa.HostProtocolError`.

Core values: integers are Python ints, accepted signed or unsigned (two's complement) and
produced unsigned, as in the specification; floats are Python floats. Lifted floats have
their NaNs canonicalised; lowered NaNs are canonical too (the specification's
deterministic profile).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from .._errors import GuestTrap, HostProtocolError, IsyswasfaError, WasiError
from ._codegen import Generator, _get_utf8, _put_utf8
from ._handles import AsyncEnd, CallScope, HandleTable
from ._layout import (
    MAX_FLAT_PARAMS,
    MAX_FLAT_RESULTS,
    MAX_LIST_BYTE_LENGTH,
    MAX_STRING_BYTE_LENGTH,
    UTF16_TAG,
    FlatType,
    Layout,
    align_to,
    discriminant_size,
    field_offsets,
    flatten,
    layout,
    payload_offset,
    record_fields,
    variant_cases,
)
from ._types import (
    BorrowType,
    EnumType,
    FlagsType,
    FuncType,
    FutureType,
    ListType,
    OptionType,
    OwnType,
    Primitive,
    PrimType,
    RecordType,
    ResultType,
    StreamType,
    TupleType,
    ValType,
    VariantType,
)
from ._values import Err, Ok, ReadInto, Record, Variant

STRING_ENCODINGS = ("utf8", "utf16", "latin1+utf16")

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_NAN = math.nan
_U32 = struct.Struct("<I")
_U32X2 = struct.Struct("<II")
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")
_I32_AS_F32 = struct.Struct("<I")
_I64 = struct.Struct("<Q")


def _trap(message: str) -> GuestTrap:
    return GuestTrap(f"canonical ABI: {message}")


class GuestMemory(Protocol):
    """A guest's linear memory and allocator, as the canonical ABI needs them."""

    def view(self) -> memoryview:
        """The memory's bytes now (writable, format ``B``). Call again after anything
        that may grow the memory: an older view may be too short or stale."""

    def realloc(self, old_ptr: int, old_size: int, align: int, new_size: int) -> int:
        """The guest's ``cabi_realloc``."""


class BytearrayMemory:
    """A :class:`GuestMemory` over a ``bytearray`` with a bump allocator.

    For tests and benchmarks. Growing replaces the ``bytearray`` (a view taken before
    then keeps the old bytes), which is what a real memory's growth looks like to a
    caller that forgot to take a new view.
    """

    def __init__(self, size: int = 1 << 16, *, base: int = 8, max_size: int = 1 << 31) -> None:
        self.data = bytearray(size)
        self.next = base
        self.max_size = max_size

    def view(self) -> memoryview:
        """A view of the bytes."""
        return memoryview(self.data)

    def realloc(self, old_ptr: int, old_size: int, align: int, new_size: int) -> int:
        """Bump allocation (old blocks are never reused)."""
        ptr = align_to(self.next, align)
        end = ptr + new_size
        if end > len(self.data):
            grown = max(end, 2 * len(self.data))
            if grown > self.max_size:
                raise MemoryError("test memory is full")
            self.data = self.data + bytes(grown - len(self.data))
        if old_size:
            self.data[ptr : ptr + min(old_size, new_size)] = self.data[
                old_ptr : old_ptr + min(old_size, new_size)
            ]
        self.next = end
        return ptr


class AbiContext:
    """What lifting and lowering one call needs: the memory, the instance's handle table
    and the call's borrow scope. ``buf`` is the current view of the memory; every
    allocation takes a new one."""

    __slots__ = ("buf", "memory", "scope", "table")

    def __init__(
        self,
        memory: GuestMemory | None = None,
        table: HandleTable | None = None,
        scope: CallScope | None = None,
        *,
        view: bool = True,
    ) -> None:
        """``view=False`` takes no view of the memory yet (``buf`` is empty): for a call
        that touches memory only through :class:`FuncAbi`, which views it anew (or
        allocates) before each access; a view is a C call."""
        self.memory = memory
        self.buf: memoryview = memory.view() if memory is not None and view else memoryview(b"")
        self.table = table if table is not None else HandleTable()
        self.scope = scope if scope is not None else CallScope()

    def refresh(self) -> memoryview:
        """Take a new view of the memory (after the guest ran)."""
        if self.memory is not None:
            self.buf = self.memory.view()
        return self.buf

    def alloc(self, align: int, size: int) -> int:
        """``realloc(0, 0, align, size)``, checked: traps if the guest's allocator
        returns a misaligned or out-of-bounds block."""
        memory = self.memory
        if memory is None:
            raise HostProtocolError("this value needs a memory and realloc to lower")
        # (:meth:`_realloc`, inline: every string, list and record in memory comes here)
        ptr = memory.realloc(0, 0, align, size) & _M32
        buf = self.buf = memory.view()
        if ptr & (align - 1) or ptr + size > len(buf):
            self._check_block(buf, ptr, align, size)
        return ptr

    def shrink(self, ptr: int, old_size: int, align: int, new_size: int) -> int:
        """``realloc(ptr, old_size, align, new_size)`` to a smaller, non-empty block,
        checked as :meth:`alloc` checks."""
        memory = self.memory
        assert memory is not None  # alloc made the block
        return self._realloc(memory, ptr, old_size, align, new_size)

    def _realloc(self, memory: GuestMemory, ptr: int, old_size: int, align: int, size: int) -> int:
        """The guest's ``realloc``, its block checked: aligned and inside the memory
        (whose view is taken anew: the call may have grown it)."""
        ptr = memory.realloc(ptr, old_size, align, size) & _M32
        buf = self.buf = memory.view()
        self._check_block(buf, ptr, align, size)
        return ptr

    @staticmethod
    def _check_block(buf: memoryview, ptr: int, align: int, size: int) -> None:
        """Trap unless the block ``realloc`` returned is aligned and inside ``buf``."""
        if ptr & (align - 1):
            raise _trap(f"realloc returned {ptr:#x}, not aligned to {align}")
        if ptr + size > len(buf):
            raise _trap(f"realloc returned {ptr:#x}, but {size} bytes there are out of bounds")


def check_range(buf: memoryview, ptr: int, size: int, align: int) -> None:
    """Trap unless ``size`` bytes at ``ptr`` are inside ``buf`` and ``ptr`` is aligned."""
    if ptr & (align - 1):
        raise _trap(f"pointer {ptr:#x} is not aligned to {align}")
    if ptr + size > len(buf):
        raise _trap(f"{size} bytes at {ptr:#x} are out of bounds (memory is {len(buf)} bytes)")


Load = Callable[[AbiContext, memoryview, int], Any]
Store = Callable[[AbiContext, int, Any], None]
LiftFlat = Callable[[AbiContext, memoryview, Iterator[Any]], Any]
LowerFlat = Callable[[AbiContext, Any, list[Any]], None]


@dataclass(frozen=True, slots=True)
class TypeAbi:
    """One type's lifting and lowering, specialised.

    ``load(cx, buf, ptr)`` reads a value at ``ptr`` (already checked to be in bounds and
    aligned); ``store(cx, ptr, value)`` writes one (into ``cx.buf``, which an allocation
    may replace); ``lift_flat(cx, buf, values)`` consumes flat core values from an
    iterator; ``lower_flat(cx, value, out)`` appends them to ``out``. ``classes`` are the
    Python classes of lifted values (for telling untagged variant cases apart);
    ``handle`` says objects with a ``rep`` attribute lower too; ``tagged`` says a
    variant or option crosses as :class:`Variant` ``(tag, payload)``. A list of
    variable length has ``read_range(cx, buf, ptr, n)`` and ``write_range(cx, value)``
    too (its elements at a pointer, checked; a new block's ``(ptr, n)``), which
    generated code calls straight.
    """

    ty: ValType
    layout: Layout
    load: Load
    store: Store
    lift_flat: LiftFlat
    lower_flat: LowerFlat
    classes: frozenset[type]
    handle: bool = False
    tagged: bool = False
    read_range: Callable[[AbiContext, memoryview, int, int], Any] | None = None
    write_range: Callable[[AbiContext, Any], tuple[int, int]] | None = None
    pending: Any = field(default=None, repr=False, compare=False)
    """What generating the functions needs while they are not made yet (see
    :class:`_UngeneratedTypeAbi`), else ``None``."""


def _bad_value(ty: ValType, value: Any, why: str = "") -> HostProtocolError:
    return HostProtocolError(
        f"cannot lower {value!r:.80} as {_type_name(ty)}" + (f": {why}" if why else "")
    )


def _type_name(ty: ValType) -> str:
    if isinstance(ty, PrimType):
        return ty.kind.value
    return type(ty).__name__.removesuffix("Type").lower()


# -- scalars ----------------------------------------------------------------------------

_INT_FORMATS = {
    Primitive.U8: ("B", 0, 0xFF),
    Primitive.S8: ("b", -0x80, 0x7F),
    Primitive.U16: ("H", 0, 0xFFFF),
    Primitive.S16: ("h", -0x8000, 0x7FFF),
    Primitive.U32: ("I", 0, _M32),
    Primitive.S32: ("i", -0x80000000, 0x7FFFFFFF),
    Primitive.U64: ("Q", 0, _M64),
    Primitive.S64: ("q", -(1 << 63), (1 << 63) - 1),
}


def _int_abi(t: PrimType) -> TypeAbi:
    code, lo, hi = _INT_FORMATS[t.kind]
    st = struct.Struct("<" + code)
    unpack_from, pack_into = st.unpack_from, st.pack_into
    bits = 64 if t.kind in (Primitive.U64, Primitive.S64) else 32
    core_mask = _M64 if bits == 64 else _M32
    width = st.size * 8
    mask = (1 << width) - 1
    sign = 1 << (width - 1) if lo < 0 else 0

    def load(cx: AbiContext, buf: memoryview, ptr: int) -> int:
        return unpack_from(buf, ptr)[0]  # type: ignore[no-any-return]

    def store(cx: AbiContext, ptr: int, v: Any) -> None:
        try:
            pack_into(cx.buf, ptr, v)
        except struct.error as exc:
            raise _bad_value(t, v, str(exc)) from None

    if sign:

        def lift_flat(cx: AbiContext, buf: memoryview, it: Iterator[Any]) -> int:
            x: int = next(it) & mask
            return x - ((x & sign) << 1)

    else:

        def lift_flat(cx: AbiContext, buf: memoryview, it: Iterator[Any]) -> int:
            return next(it) & mask  # type: ignore[no-any-return]

    def lower_flat(cx: AbiContext, v: Any, out: list[Any]) -> None:
        if type(v) is not int and not isinstance(v, int):
            raise _bad_value(t, v, "not an integer")
        if not lo <= v <= hi:
            raise _bad_value(t, v, "out of range")
        out.append(v & core_mask)

    return TypeAbi(t, layout(t), load, store, lift_flat, lower_flat, frozenset({int}))


def _bool_abi(t: PrimType) -> TypeAbi:
    def load(cx: AbiContext, buf: memoryview, ptr: int) -> bool:
        return buf[ptr] != 0

    def store(cx: AbiContext, ptr: int, v: Any) -> None:
        if type(v) is not bool:
            raise _bad_value(t, v)
        cx.buf[ptr] = v

    def lift_flat(cx: AbiContext, buf: memoryview, it: Iterator[Any]) -> bool:
        return bool(next(it) & _M32)

    def lower_flat(cx: AbiContext, v: Any, out: list[Any]) -> None:
        if type(v) is not bool:
            raise _bad_value(t, v)
        out.append(int(v))

    return TypeAbi(t, layout(t), load, store, lift_flat, lower_flat, frozenset({bool}))


def _canon32(v: Any, t: ValType) -> float:
    """``v`` as an f32 value (NaN canonical); a host error if it is not one."""
    if type(v) is not float:
        if type(v) is int or isinstance(v, (int, float)):
            v = float(v)
        else:
            raise _bad_value(t, v, "not a float")
    if v != v:
        return _NAN
    try:
        return _F32.unpack(_F32.pack(v))[0]  # type: ignore[no-any-return]
    except OverflowError:
        raise _bad_value(t, v, "out of f32 range") from None


def _float_abi(t: PrimType) -> TypeAbi:
    st = _F32 if t.kind is Primitive.F32 else _F64
    unpack_from, pack_into = st.unpack_from, st.pack_into
    is32 = t.kind is Primitive.F32

    def load(cx: AbiContext, buf: memoryview, ptr: int) -> float:
        v: float = unpack_from(buf, ptr)[0]
        return v if v == v else _NAN

    def store(cx: AbiContext, ptr: int, v: Any) -> None:
        if type(v) is not float:
            v = _canon32(v, t) if is32 else _as_float(v, t)
        elif v != v:
            v = _NAN
        try:
            pack_into(cx.buf, ptr, v)
        except (OverflowError, struct.error) as exc:
            raise _bad_value(t, v, str(exc)) from None

    def lift_flat(cx: AbiContext, buf: memoryview, it: Iterator[Any]) -> float:
        v = next(it)
        return float(v) if v == v else _NAN

    if is32:

        def lower_flat(cx: AbiContext, v: Any, out: list[Any]) -> None:
            out.append(_canon32(v, t))

    else:

        def lower_flat(cx: AbiContext, v: Any, out: list[Any]) -> None:
            v = _as_float(v, t)
            out.append(v if v == v else _NAN)

    return TypeAbi(t, layout(t), load, store, lift_flat, lower_flat, frozenset({float}))


def _as_float(v: Any, t: ValType) -> float:
    if type(v) is float:
        return v
    if isinstance(v, (int, float)):
        return float(v)
    raise _bad_value(t, v, "not a float")


def _char_of(i: int) -> str:
    if i >= 0x110000 or 0xD800 <= i <= 0xDFFF:
        raise _trap(f"{i:#x} is not a Unicode scalar value (char)")
    return chr(i)


def _ord_of(t: ValType, v: Any) -> int:
    if (type(v) is not str and not isinstance(v, str)) or len(v) != 1:
        raise _bad_value(t, v, "not a single character")
    i = ord(v)
    if 0xD800 <= i <= 0xDFFF:
        raise _bad_value(t, v, "a surrogate is not a char")
    return i


def _char_abi(t: PrimType) -> TypeAbi:
    unpack_from, pack_into = _U32.unpack_from, _U32.pack_into

    def load(cx: AbiContext, buf: memoryview, ptr: int) -> str:
        return _char_of(unpack_from(buf, ptr)[0])

    def store(cx: AbiContext, ptr: int, v: Any) -> None:
        pack_into(cx.buf, ptr, _ord_of(t, v))

    def lift_flat(cx: AbiContext, buf: memoryview, it: Iterator[Any]) -> str:
        return _char_of(next(it) & _M32)

    def lower_flat(cx: AbiContext, v: Any, out: list[Any]) -> None:
        out.append(_ord_of(t, v))

    return TypeAbi(t, layout(t), load, store, lift_flat, lower_flat, frozenset({str}))


# -- strings ----------------------------------------------------------------------------


def _string_abi(t: PrimType, encoding: str) -> TypeAbi:
    unpack_from, pack_into = _U32X2.unpack_from, _U32X2.pack_into

    if encoding == "utf8":
        # (the generated code's helpers: one definition of the checks and messages)
        read = _get_utf8

        def write(cx: AbiContext, v: Any) -> tuple[int, int]:
            return _put_utf8(cx, t, v)

    else:
        latin1 = encoding == "latin1+utf16"

        def read(buf: memoryview, ptr: int, units: int) -> str:
            if latin1 and not units & UTF16_TAG:
                codec, size = "latin-1", units
            else:
                codec, size = "utf-16-le", 2 * (units & ~UTF16_TAG if latin1 else units)
            if size > MAX_STRING_BYTE_LENGTH:
                raise _trap(f"string of {size} bytes is too long")
            if ptr & 1:
                raise _trap(f"string pointer {ptr:#x} is not aligned to 2")
            if ptr + size > len(buf):
                raise _trap(f"string of {size} bytes at {ptr:#x} is out of bounds")
            try:
                return str(buf[ptr : ptr + size], codec)
            except UnicodeDecodeError as exc:
                raise _trap(f"string is not valid UTF-16 ({exc.reason})") from None

        def write(cx: AbiContext, v: Any) -> tuple[int, int]:
            if type(v) is not str and not isinstance(v, str):  # (a subclass: StrEnum)
                raise _bad_value(t, v, "not a str")
            tag = 0
            try:
                if latin1:
                    try:
                        data = v.encode("latin-1")
                    except UnicodeEncodeError:
                        data = v.encode("utf-16-le")
                        tag = UTF16_TAG
                else:
                    data = v.encode("utf-16-le")
            except UnicodeEncodeError:
                raise _bad_value(t, v, "has lone surrogates") from None
            n = len(data)
            if n > MAX_STRING_BYTE_LENGTH:
                raise _bad_value(t, v, "too long")
            ptr = cx.alloc(2, n)
            cx.buf[ptr : ptr + n] = data
            return ptr, (n // 2 | tag) if (tag or not latin1) else n

    def load(cx: AbiContext, buf: memoryview, ptr: int) -> str:
        p, units = unpack_from(buf, ptr)
        return read(buf, p, units)

    def store(cx: AbiContext, ptr: int, v: Any) -> None:
        p, units = write(cx, v)
        pack_into(cx.buf, ptr, p, units)

    def lift_flat(cx: AbiContext, buf: memoryview, it: Iterator[Any]) -> str:
        p = next(it) & _M32
        return read(buf, p, next(it) & _M32)

    def lower_flat(cx: AbiContext, v: Any, out: list[Any]) -> None:
        out.extend(write(cx, v))

    return TypeAbi(t, layout(t), load, store, lift_flat, lower_flat, frozenset({str}))


# -- lists ------------------------------------------------------------------------------

_BYTES_CLASSES = frozenset({bytes, bytearray, memoryview, ReadInto})


def _read_into(cx: AbiContext, t: ListType, v: ReadInto) -> tuple[int, int]:
    """Lower a :class:`ReadInto`: allocate its size, let it fill the block in place
    (one copy: from its source straight into linear memory), shrink the block to what
    it wrote."""
    size = v.size
    if type(size) is not int or not 0 <= size <= MAX_LIST_BYTE_LENGTH:
        raise _bad_value(t, v, "size out of range")
    p = cx.alloc(1, size)
    n = v.fill(cx.buf[p : p + size])
    if type(n) is not int or not 0 <= n <= size:
        raise _bad_value(t, v, f"filled {n!r} of {size} bytes")
    if 0 < n < size:
        p = cx.shrink(p, size, 1, n)
    return p, n


def _list_abi(t: ListType, encoding: str, generated: bool) -> TypeAbi:
    if t.length is not None:
        return _fixed_list_abi(t, encoding, generated)
    el = (type_abi if generated else reference_type_abi)(t.element, encoding)
    unpack_from, pack_into = _U32X2.unpack_from, _U32X2.pack_into
    read, write, classes = _list_range(t, el)
    if generated and _generates_lists_of(t.element, encoding):
        read, write = _generate_list(t, encoding)

    def load(cx: AbiContext, buf: memoryview, ptr: int) -> Any:
        p, n = unpack_from(buf, ptr)
        return read(cx, buf, p, n)

    def store(cx: AbiContext, ptr: int, v: Any) -> None:
        p, n = write(cx, v)
        pack_into(cx.buf, ptr, p, n)

    def lift_flat(cx: AbiContext, buf: memoryview, it: Iterator[Any]) -> Any:
        p = next(it) & _M32
        return read(cx, buf, p, next(it) & _M32)

    def lower_flat(cx: AbiContext, v: Any, out: list[Any]) -> None:
        out.extend(write(cx, v))

    return TypeAbi(
        t,
        layout(t),
        load,
        store,
        lift_flat,
        lower_flat,
        classes,
        read_range=read,
        write_range=write,
    )


_BULK_CODES = {
    Primitive.U8: "B",
    Primitive.S8: "b",
    Primitive.U16: "H",
    Primitive.S16: "h",
    Primitive.U32: "I",
    Primitive.S32: "i",
    Primitive.U64: "Q",
    Primitive.S64: "q",
    Primitive.F32: "f",
    Primitive.F64: "d",
    Primitive.BOOL: "B",
    Primitive.CHAR: "I",
}


def _list_range(
    t: ListType, el: TypeAbi
) -> tuple[
    Callable[[AbiContext, memoryview, int, int], Any],
    Callable[[AbiContext, Any], tuple[int, int]],
    frozenset[type],
]:
    """How to read ``n`` elements at a guest pointer (checked first), and write a list
    into a new block; the Python classes of the list value."""
    size, align = el.layout.size, el.layout.align
    elem = t.element

    def check(buf: memoryview, p: int, n: int) -> None:
        nbytes = n * size
        if nbytes > MAX_LIST_BYTE_LENGTH:
            raise _trap(f"list of {n} elements ({nbytes} bytes) is too long")
        if p & (align - 1):
            raise _trap(f"list pointer {p:#x} is not aligned to {align}")
        if p + nbytes > len(buf):
            raise _trap(f"list of {nbytes} bytes at {p:#x} is out of bounds")

    if isinstance(elem, PrimType) and elem.kind is Primitive.U8:

        def read_bytes(cx: AbiContext, buf: memoryview, p: int, n: int) -> bytes:
            check(buf, p, n)
            return bytes(buf[p : p + n])

        def write_bytes(cx: AbiContext, v: Any) -> tuple[int, int]:
            if type(v) is ReadInto:
                return _read_into(cx, t, v)
            if type(v) not in _BYTES_CLASSES and not isinstance(v, (bytes, bytearray)):
                raise _bad_value(t, v, "not bytes")
            n = len(v) if type(v) is not memoryview else v.nbytes
            if n > MAX_LIST_BYTE_LENGTH:
                raise _bad_value(t, v, "too long")
            p = cx.alloc(1, n)
            cx.buf[p : p + n] = v
            return p, n

        return read_bytes, write_bytes, _BYTES_CLASSES

    code = _BULK_CODES.get(elem.kind) if isinstance(elem, PrimType) else None
    if code is not None:
        assert isinstance(elem, PrimType)
        kind = elem.kind

        def convert(values: tuple[Any, ...]) -> list[Any]:
            if kind is Primitive.BOOL:
                return [x != 0 for x in values]
            if kind is Primitive.CHAR:
                return [_char_of(x) for x in values]
            if kind in (Primitive.F32, Primitive.F64):
                return [x if x == x else _NAN for x in values]
            return list(values)

        def prepare(v: list[Any] | tuple[Any, ...]) -> list[Any] | tuple[Any, ...]:
            if kind is Primitive.BOOL:
                for x in v:
                    if type(x) is not bool:
                        raise _bad_value(t, v, f"{x!r} is not a bool")
                return v
            if kind is Primitive.CHAR:
                return [_ord_of(elem, x) for x in v]
            if kind is Primitive.F32:
                return [_canon32(x, elem) for x in v]
            if kind is Primitive.F64:
                return [x if x == x else _NAN for x in (_as_float(y, elem) for y in v)]
            return v

        def read_bulk(cx: AbiContext, buf: memoryview, p: int, n: int) -> list[Any]:
            check(buf, p, n)
            return convert(struct.unpack_from(f"<{n}{code}", buf, p))

        def write_bulk(cx: AbiContext, v: Any) -> tuple[int, int]:
            if type(v) is not list and not isinstance(v, (list, tuple)):
                raise _bad_value(t, v, "not a list")
            n = len(v)
            if n * size > MAX_LIST_BYTE_LENGTH:
                raise _bad_value(t, v, "too long")
            values = prepare(v)
            p = cx.alloc(align, n * size)
            try:
                struct.pack_into(f"<{n}{code}", cx.buf, p, *values)
            except struct.error as exc:
                raise _bad_value(t, v, str(exc)) from None
            return p, n

        return read_bulk, write_bulk, frozenset({list})

    load_el, store_el = el.load, el.store

    def read_list(cx: AbiContext, buf: memoryview, p: int, n: int) -> list[Any]:
        check(buf, p, n)
        return [load_el(cx, buf, q) for q in range(p, p + n * size, size)]

    def write_list(cx: AbiContext, v: Any) -> tuple[int, int]:
        if type(v) is not list and not isinstance(v, (list, tuple)):
            raise _bad_value(t, v, "not a list")
        n = len(v)
        if n * size > MAX_LIST_BYTE_LENGTH:
            raise _bad_value(t, v, "too long")
        p = cx.alloc(align, n * size)
        q = p
        for x in v:
            store_el(cx, q, x)
            q += size
        return p, n

    return read_list, write_list, frozenset({list})


def _fixed_list_abi(t: ListType, encoding: str, generated: bool) -> TypeAbi:
    el = (type_abi if generated else reference_type_abi)(t.element, encoding)
    n = t.length
    assert n is not None
    size = el.layout.size
    load_el, store_el, lift_el, lower_el = el.load, el.store, el.lift_flat, el.lower_flat

    def check(v: Any) -> None:
        if type(v) is not list and not isinstance(v, (list, tuple)):
            raise _bad_value(t, v, "not a list")
        if len(v) != n:
            raise _bad_value(t, v, f"needs exactly {n} elements")

    def load(cx: AbiContext, buf: memoryview, ptr: int) -> list[Any]:
        return [load_el(cx, buf, q) for q in range(ptr, ptr + n * size, size)]

    def store(cx: AbiContext, ptr: int, v: Any) -> None:
        check(v)
        for x in v:
            store_el(cx, ptr, x)
            ptr += size

    def lift_flat(cx: AbiContext, buf: memoryview, it: Iterator[Any]) -> list[Any]:
        return [lift_el(cx, buf, it) for _ in range(n)]

    def lower_flat(cx: AbiContext, v: Any, out: list[Any]) -> None:
        check(v)
        for x in v:
            lower_el(cx, x, out)

    return TypeAbi(t, layout(t), load, store, lift_flat, lower_flat, frozenset({list}))


# -- records and tuples -----------------------------------------------------------------


def _record_abi(t: RecordType | TupleType, encoding: str, generated: bool) -> TypeAbi:
    types = record_fields(t)
    if generated:  # (the fields' functions untouched: generated code inlines them)
        shape = frozenset({Record}) if isinstance(t, RecordType) else frozenset({tuple})
        return _ungenerated(t, layout(t), shape, False, (encoding, None))
    fields = [reference_type_abi(ty, encoding) for ty in types]
    offsets = field_offsets(types)
    loads = tuple(zip(offsets, [f.load for f in fields], strict=True))
    stores = tuple(zip(offsets, [f.store for f in fields], strict=True))
    lifts = tuple(f.lift_flat for f in fields)
    lowers = tuple(f.lower_flat for f in fields)
    is_record = isinstance(t, RecordType)
    names = tuple(name for name, _ in t.fields) if isinstance(t, RecordType) else ()
    count = len(types)
    new = object.__new__

    if is_record:

        def build(values: list[Any]) -> Any:
            rec = new(Record)
            rec.__dict__.update(zip(names, values, strict=True))
            return rec

        def parts(v: Any) -> Any:
            try:
                return [getattr(v, name) for name in names]
            except AttributeError as exc:
                raise _bad_value(t, v, f"missing field ({exc})") from None

        classes: frozenset[type] = frozenset({Record})
    else:

        def build(values: list[Any]) -> Any:
            return tuple(values)

        def parts(v: Any) -> Any:
            if type(v) is not tuple or len(v) != count:
                raise _bad_value(t, v, f"not a tuple of {count}")
            return v

        classes = frozenset({tuple})

    def load(cx: AbiContext, buf: memoryview, ptr: int) -> Any:
        return build([ld(cx, buf, ptr + off) for off, ld in loads])

    def store(cx: AbiContext, ptr: int, v: Any) -> None:
        for (off, st), x in zip(stores, parts(v), strict=True):
            st(cx, ptr + off, x)

    def lift_flat(cx: AbiContext, buf: memoryview, it: Iterator[Any]) -> Any:
        return build([lf(cx, buf, it) for lf in lifts])

    def lower_flat(cx: AbiContext, v: Any, out: list[Any]) -> None:
        for lw, x in zip(lowers, parts(v), strict=True):
            lw(cx, x, out)

    return TypeAbi(t, layout(t), load, store, lift_flat, lower_flat, classes)


def _subclass_case(t: ValType, v: Any, case_classes: list[frozenset[type]]) -> int:
    """The untagged case a value of a subclass of a case's class is (a ``StrEnum`` member
    for a string case, as wasmtime-py takes it): the first whose class it derives from."""
    for i, c in enumerate(case_classes):
        if isinstance(v, tuple(c)):
            return i
    raise _bad_value(t, v, "matches no case")


# -- flags ------------------------------------------------------------------------------


def _flags_abi(t: FlagsType) -> TypeAbi:
    names = t.names
    bit = {name: 1 << i for i, name in enumerate(names)}
    lay = layout(t)
    words = len(lay.flat)
    nbytes = lay.size
    all_bits = (1 << len(names)) - 1

    def unpack(i: int) -> set[str]:
        i &= all_bits
        out = set()
        while i:
            low = i & -i
            out.add(names[low.bit_length() - 1])
            i ^= low
        return out

    def pack(v: Any) -> int:
        if type(v) not in (set, frozenset):
            raise _bad_value(t, v, "not a set of names")
        i = 0
        try:
            for name in v:
                i |= bit[name]
        except (KeyError, TypeError):
            raise _bad_value(t, v, "unknown flag") from None
        return i

    def load(cx: AbiContext, buf: memoryview, ptr: int) -> set[str]:
        return unpack(int.from_bytes(buf[ptr : ptr + nbytes], "little"))

    def store(cx: AbiContext, ptr: int, v: Any) -> None:
        cx.buf[ptr : ptr + nbytes] = pack(v).to_bytes(nbytes, "little")

    def lift_flat(cx: AbiContext, buf: memoryview, it: Iterator[Any]) -> set[str]:
        i = 0
        for w in range(words):
            i |= (next(it) & _M32) << (32 * w)
        return unpack(i)

    def lower_flat(cx: AbiContext, v: Any, out: list[Any]) -> None:
        i = pack(v)
        for _ in range(words):
            out.append(i & _M32)
            i >>= 32

    return TypeAbi(t, lay, load, store, lift_flat, lower_flat, frozenset({set, frozenset}))


# -- variants ---------------------------------------------------------------------------

_NONE_CLASSES = frozenset({type(None)})


def _coerce_in(have: FlatType, want: FlatType) -> Callable[[Any], Any] | None:
    """Turn a joined flat value (``have``) back into the case's own (``want``)."""
    if have == want:
        return None
    if want == "f32":
        return lambda x: _F32.unpack(_I32_AS_F32.pack(x & _M32))[0]
    if want == "f64":
        return lambda x: _F64.unpack(_I64.pack(x & _M64))[0]
    return lambda x: x & _M32  # i64 holding an i32


def _coerce_out(have: FlatType, want: FlatType) -> Callable[[Any], Any] | None:
    """Turn a case's flat value (``have``) into the joined slot's type (``want``)."""
    if have == want:
        return None
    if have == "f32":
        return lambda x: _I32_AS_F32.unpack(_F32.pack(x))[0]
    if have == "f64":
        return lambda x: _I64.unpack(_F64.pack(x))[0]
    return None  # an unsigned i32 is already a valid i64


def _constant(name: str) -> Callable[[Any], Any]:
    return lambda _payload: name


def _tagger(name: str) -> Callable[[Any], Any]:
    return lambda payload: Variant(name, payload)


def _identity(payload: Any) -> Any:
    return payload


def _variant_abi(t: ValType, encoding: str, generated: bool) -> TypeAbi:
    cases = variant_cases(t)
    assert cases is not None
    lay = layout(t)
    n_cases = len(cases)
    disc = discriminant_size(n_cases)
    disc_st = struct.Struct("<" + {1: "B", 2: "H", 4: "I"}[disc])
    d_unpack, d_pack = disc_st.unpack_from, disc_st.pack_into
    off = payload_offset(t)
    joined = lay.flat[1:]
    n_slots = len(joined)
    zeros = [0 if f[0] == "i" else 0.0 for f in joined]
    sub = type_abi if generated else reference_type_abi
    abis = [sub(ty, encoding) if ty is not None else None for _, ty in cases]

    is_result = isinstance(t, ResultType)
    is_enum = isinstance(t, EnumType)
    # Python shape: results are Ok/Err; enums are names; other variant-likes are
    # untagged when their cases' classes are disjoint, else Variant(tag, payload)
    case_classes = [a.classes if a is not None else _NONE_CLASSES for a in abis]
    tagged = False
    if not (is_result or is_enum):
        seen: set[type] = set()
        for cls in case_classes:
            if seen & cls:
                tagged = True
            seen |= cls
    classes: frozenset[type]
    if is_result:
        classes = frozenset({Ok, Err})
    elif is_enum:
        classes = frozenset({str})
    elif tagged:
        classes = frozenset({Variant})
    else:
        classes = frozenset(seen)

    names = [name for name, _ in cases]
    wrap: list[Callable[[Any], Any]]
    if is_result:
        wrap = [Ok, Err]
    elif is_enum:
        wrap = [_constant(name) for name in names]
    elif tagged:
        wrap = [_tagger(name) for name in names]
    else:
        wrap = [_identity for _ in names]

    # lowering: which case a value is, and its payload
    index_of = {name: i for i, name in enumerate(names)}

    def untagged_case(v: Any) -> int:
        cls = type(v)
        for i, (c, a) in enumerate(zip(case_classes, abis, strict=True)):
            if cls in c or (a is not None and a.handle and hasattr(v, "rep")):
                return i
        return _subclass_case(t, v, case_classes)

    def split(v: Any) -> tuple[int, Any]:
        if is_result:
            cls = type(v)
            if cls is Err:
                return 1, v.value
            if cls is Ok:
                return 0, v.value
            return 0, v  # a bare value is ok
        if is_enum:
            i = index_of.get(v) if type(v) is str or isinstance(v, str) else None
            if i is None:
                raise _bad_value(t, v, "not a case name")
            return i, None
        if tagged:
            try:
                i = index_of[v.tag]
            except (AttributeError, KeyError, TypeError):
                raise _bad_value(t, v, "not a Variant of this type") from None
            return i, v.payload
        return untagged_case(v), v

    if generated:  # (the cases' functions untouched: generated code inlines them)
        shape = (tagged, case_classes, [a is not None and a.handle for a in abis])
        return _ungenerated(t, lay, classes, tagged, (encoding, shape))
    loads = [a.load if a is not None else None for a in abis]
    stores = [a.store if a is not None else None for a in abis]

    def load(cx: AbiContext, buf: memoryview, ptr: int) -> Any:
        i = d_unpack(buf, ptr)[0]
        if i >= n_cases:
            raise _trap(f"variant discriminant {i} is out of range ({n_cases} cases)")
        ld = loads[i]
        return wrap[i](ld(cx, buf, ptr + off) if ld is not None else None)

    def store(cx: AbiContext, ptr: int, v: Any) -> None:
        i, payload = split(v)
        d_pack(cx.buf, ptr, i)
        st = stores[i]
        if st is not None:
            st(cx, ptr + off, payload)

    # flat: a case's payload sits in the first slots of the joined payload
    lifts_in: list[tuple[LiftFlat, list[Callable[[Any], Any] | None]] | None] = []
    lowers_out: list[tuple[LowerFlat, list[Callable[[Any], Any] | None]] | None] = []
    for a in abis:
        if a is None:
            lifts_in.append(None)
            lowers_out.append(None)
            continue
        own_flat = a.layout.flat
        lifts_in.append(
            (a.lift_flat, [_coerce_in(h, w) for h, w in zip(joined, own_flat, strict=False)])
        )
        lowers_out.append(
            (a.lower_flat, [_coerce_out(h, w) for h, w in zip(own_flat, joined, strict=False)])
        )

    def lift_flat(cx: AbiContext, buf: memoryview, it: Iterator[Any]) -> Any:
        i = next(it) & _M32
        slots = [next(it) for _ in range(n_slots)]
        if i >= n_cases:
            raise _trap(f"variant discriminant {i} is out of range ({n_cases} cases)")
        entry = lifts_in[i]
        if entry is None:
            return wrap[i](None)
        lf, coerce = entry
        values = [c(x) if c is not None else x for c, x in zip(coerce, slots, strict=False)]
        return wrap[i](lf(cx, buf, iter(values)))

    def lower_flat(cx: AbiContext, v: Any, out: list[Any]) -> None:
        i, payload = split(v)
        out.append(i)
        entry = lowers_out[i]
        if entry is None:
            out.extend(zeros)
            return
        lw, coerce = entry
        mine: list[Any] = []
        lw(cx, payload, mine)
        for c, x in zip(coerce, mine, strict=True):
            out.append(c(x) if c is not None else x)
        out.extend(zeros[len(mine) :])

    return TypeAbi(t, lay, load, store, lift_flat, lower_flat, classes, tagged=tagged)


# -- handles ----------------------------------------------------------------------------

_HANDLE_CLASSES = frozenset({int})


def _rep_of(t: ValType, v: Any) -> int:
    if type(v) is int:
        return v
    rep = getattr(v, "rep", None)
    if type(rep) is not int:
        raise _bad_value(t, v, "not a handle rep")
    return rep


def _handle_abi(t: OwnType | BorrowType) -> TypeAbi:
    rt = t.resource
    unpack_from, pack_into = _U32.unpack_from, _U32.pack_into
    if isinstance(t, OwnType):

        def lift(cx: AbiContext, i: int) -> int:
            return cx.table.lift_own(rt, i)

        def lower(cx: AbiContext, v: Any) -> int:
            return cx.table.lower_own(rt, _rep_of(t, v))

    else:

        def lift(cx: AbiContext, i: int) -> int:
            return cx.table.lift_borrow(rt, i, cx.scope)

        def lower(cx: AbiContext, v: Any) -> int:
            return cx.table.lower_borrow(rt, _rep_of(t, v), cx.scope)

    def load(cx: AbiContext, buf: memoryview, ptr: int) -> int:
        return lift(cx, unpack_from(buf, ptr)[0])

    def store(cx: AbiContext, ptr: int, v: Any) -> None:
        pack_into(cx.buf, ptr, lower(cx, v))

    def lift_flat(cx: AbiContext, buf: memoryview, it: Iterator[Any]) -> int:
        return lift(cx, next(it) & _M32)

    def lower_flat(cx: AbiContext, v: Any, out: list[Any]) -> None:
        out.append(lower(cx, v))

    return TypeAbi(t, layout(t), load, store, lift_flat, lower_flat, _HANDLE_CLASSES, True)


def _end_abi(t: StreamType | FutureType) -> TypeAbi:
    """WASI 0.3 stream and future ends: moved between tables as indices."""
    unpack_from, pack_into = _U32.unpack_from, _U32.pack_into

    def lower(cx: AbiContext, v: Any) -> int:
        if not isinstance(v, AsyncEnd):
            raise _bad_value(t, v, "not a stream or future end")
        try:
            return cx.table.lower_end(t, v)
        except TypeError as exc:
            raise _bad_value(t, v, str(exc)) from None

    def load(cx: AbiContext, buf: memoryview, ptr: int) -> AsyncEnd:
        return cx.table.lift_end(t, unpack_from(buf, ptr)[0])

    def store(cx: AbiContext, ptr: int, v: Any) -> None:
        pack_into(cx.buf, ptr, lower(cx, v))

    def lift_flat(cx: AbiContext, buf: memoryview, it: Iterator[Any]) -> AsyncEnd:
        return cx.table.lift_end(t, next(it) & _M32)

    def lower_flat(cx: AbiContext, v: Any, out: list[Any]) -> None:
        out.append(lower(cx, v))

    return TypeAbi(t, layout(t), load, store, lift_flat, lower_flat, frozenset({AsyncEnd}))


# -- specialisation ---------------------------------------------------------------------


def type_abi(t: ValType, encoding: str = "utf8") -> TypeAbi:
    """``t``'s lifting and lowering with strings in ``encoding`` (cached per type, and
    shared by all encodings when ``t`` holds no string).

    Records, tuples and variant-likes get generated code (:mod:`._codegen`); the rest
    closures.
    """
    if encoding not in STRING_ENCODINGS:
        raise ValueError(f"unknown string encoding {encoding!r}")
    if encoding != "utf8" and not _has_string(t):
        encoding = "utf8"
    return _generated_abi(t, encoding)


@lru_cache(maxsize=4096)
def _generated_abi(t: ValType, encoding: str) -> TypeAbi:
    return _build_abi(t, encoding, True)


@lru_cache(maxsize=4096)
def _has_string(t: ValType) -> bool:
    if isinstance(t, PrimType):
        return t.kind is Primitive.STRING
    if isinstance(t, ListType):
        return _has_string(t.element)
    if isinstance(t, (RecordType, TupleType)):
        return any(map(_has_string, record_fields(t)))
    if isinstance(t, (StreamType, FutureType, OwnType, BorrowType)):
        return False
    cases = variant_cases(t)
    return cases is not None and any(_has_string(ty) for _, ty in cases if ty is not None)


@lru_cache(maxsize=1024)
def reference_type_abi(t: ValType, encoding: str = "utf8") -> TypeAbi:
    """``t``'s lifting and lowering as closures only (for checking generated code)."""
    return _build_abi(t, encoding, False)


def _shape_of(t: ValType) -> tuple[bool, list[frozenset[type]], list[bool]]:
    cases = variant_cases(t)
    assert cases is not None
    abis = [type_abi(ty, "utf8") if ty is not None else None for _, ty in cases]
    return (
        type_abi(t, "utf8").tagged,
        [a.classes if a is not None else _NONE_CLASSES for a in abis],
        [a is not None and a.handle for a in abis],
    )


def _generate(
    t: ValType, encoding: str, shape: tuple[bool, list[frozenset[type]], list[bool]] | None
) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    def shape_of(u: ValType) -> tuple[bool, list[frozenset[type]], list[bool]]:
        if u is t and shape is not None:
            return shape
        return _shape_of(u)

    gen = Generator(lambda u: type_abi(u, encoding), _GENERATED_HELPERS, shape_of, encoding)
    return gen.functions(t)


_FUNCTIONS = ("load", "store", "lift_flat", "lower_flat")


class _UngeneratedTypeAbi(TypeAbi):
    """A record's, tuple's or variant-like's :class:`TypeAbi` whose four generated
    functions are not made yet: they are made together at the first read of any, and
    the object then becomes a plain :class:`TypeAbi` (whose attribute reads skip
    ``__getattr__``'s slower hook). Code generated for a type inlines the records and
    variants inside it, so most of these never need their own: a wasi:http guest's
    first request generated ~140 functions (the cases of ``error-code``, the records
    of its payloads…) to call a dozen imports, some 0.3 s of a fresh process."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name not in _FUNCTIONS:
            raise AttributeError(name)
        encoding, shape = self.pending
        made = _generate(self.ty, encoding, shape)
        for field_name, fn in zip(_FUNCTIONS, made, strict=True):
            object.__setattr__(self, field_name, fn)
        object.__setattr__(self, "pending", None)
        object.__setattr__(self, "__class__", TypeAbi)
        return getattr(self, name)


def _ungenerated(
    t: ValType,
    lay: Layout,
    classes: frozenset[type],
    tagged: bool,
    pending: tuple[str, tuple[bool, list[frozenset[type]], list[bool]] | None],
) -> TypeAbi:
    """``t``'s :class:`TypeAbi`, its functions generated when first read."""
    made = object.__new__(_UngeneratedTypeAbi)
    for name, value in (
        ("ty", t),
        ("layout", lay),
        ("classes", classes),
        ("handle", False),
        ("tagged", tagged),
        ("read_range", None),
        ("write_range", None),
        ("pending", pending),
    ):
        object.__setattr__(made, name, value)
    return made


def _generates_lists_of(el: ValType, encoding: str) -> bool:
    """Whether a list of ``el`` gets a generated loop: elements the generator handles
    inline, but not the numbers and bytes that cross in one ``struct`` call."""
    if isinstance(el, PrimType) and el.kind in _BULK_CODES:
        return False
    gen = Generator(lambda u: type_abi(u, encoding), _GENERATED_HELPERS, _shape_of, encoding)
    return gen.inlines(el)


def _generate_list(
    t: ListType, encoding: str
) -> tuple[
    Callable[[AbiContext, memoryview, int, int], Any], Callable[[AbiContext, Any], tuple[int, int]]
]:
    gen = Generator(lambda u: type_abi(u, encoding), _GENERATED_HELPERS, _shape_of, encoding)
    return gen.list_range(t)


def _build_abi(t: ValType, encoding: str, generated: bool) -> TypeAbi:
    if encoding not in STRING_ENCODINGS:
        raise ValueError(f"unknown string encoding {encoding!r}")
    if isinstance(t, PrimType):
        kind = t.kind
        if kind in _INT_FORMATS:
            return _int_abi(t)
        if kind is Primitive.BOOL:
            return _bool_abi(t)
        if kind in (Primitive.F32, Primitive.F64):
            return _float_abi(t)
        if kind is Primitive.CHAR:
            return _char_abi(t)
        if kind is Primitive.STRING:
            return _string_abi(t, encoding)
        raise NotImplementedError("error-context values are not supported yet")
    if isinstance(t, ListType):
        return _list_abi(t, encoding, generated)
    if isinstance(t, (RecordType, TupleType)):
        return _record_abi(t, encoding, generated)
    if isinstance(t, FlagsType):
        return _flags_abi(t)
    if isinstance(t, (VariantType, EnumType, OptionType, ResultType)):
        return _variant_abi(t, encoding, generated)
    if isinstance(t, (OwnType, BorrowType)):
        return _handle_abi(t)
    if isinstance(t, (StreamType, FutureType)):
        return _end_abi(t)
    raise TypeError(f"not a value type: {t!r}")


# what a host value that does not fit its type raises from the lowering code
_HOST_VALUE_ERRORS = (TypeError, ValueError, OverflowError, AttributeError, KeyError, struct.error)

_GENERATED_HELPERS: dict[str, Any] = {
    "_bad": _bad_value,
    "_char_of": _char_of,
    "_ord_of": _ord_of,
    "_canon32": _canon32,
    "_as_float": _as_float,
    "_rep_of": _rep_of,
    "_u32": _U32.unpack_from,
    "_p32": _U32.pack_into,
    "_pf32": _F32.pack_into,
    "_pf64": _F64.pack_into,
}


def _host_errors(t: ValType, v: Any, exc: Exception) -> HostProtocolError:
    err = _bad_value(t, v, f"{type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


_ENTRY_HELPERS: dict[str, Any] = {
    **_GENERATED_HELPERS,
    "_GuestTrap": GuestTrap,
    "_WasiError": WasiError,
    "_IsyswasfaError": IsyswasfaError,
    "_HOST_VALUE_ERRORS": _HOST_VALUE_ERRORS,
    "_host_errors": _host_errors,
    "_check_range": check_range,
}


# -- whole values -----------------------------------------------------------------------


def load_value(cx: AbiContext, t: ValType, ptr: int, encoding: str = "utf8") -> Any:
    """Lift the value of type ``t`` at guest pointer ``ptr`` (bounds and alignment
    checked: a trap if the guest gave a bad pointer)."""
    abi = type_abi(t, encoding)
    buf = cx.buf
    check_range(buf, ptr, abi.layout.size, abi.layout.align)
    return abi.load(cx, buf, ptr)


def store_value(cx: AbiContext, t: ValType, v: Any, encoding: str = "utf8") -> int:
    """Lower ``v`` into a new block of guest memory; its pointer."""
    abi = type_abi(t, encoding)
    ptr = cx.alloc(abi.layout.align, abi.layout.size)
    try:
        abi.store(cx, ptr, v)
    except IsyswasfaError:
        raise
    except _HOST_VALUE_ERRORS as exc:
        raise _host_errors(t, v, exc) from exc
    return ptr


def lift_flat_value(cx: AbiContext, t: ValType, values: list[Any], encoding: str = "utf8") -> Any:
    """Lift a value of type ``t`` from its flat core values."""
    abi = type_abi(t, encoding)
    it = iter(values)
    v = abi.lift_flat(cx, cx.buf, it)
    if next(it, None) is not None:
        raise HostProtocolError("more core values than the type flattens to")
    return v


def lower_flat_value(cx: AbiContext, t: ValType, v: Any, encoding: str = "utf8") -> list[Any]:
    """Lower ``v`` to its flat core values."""
    out: list[Any] = []
    try:
        type_abi(t, encoding).lower_flat(cx, v, out)
    except IsyswasfaError:
        raise
    except _HOST_VALUE_ERRORS as exc:
        raise _host_errors(t, v, exc) from exc
    return out


# -- functions --------------------------------------------------------------------------


class FuncAbi:
    """One function type's lifting and lowering, specialised once.

    For an export the host calls (``canon lift``): :meth:`lower_args` then, after the
    core call, :meth:`lift_result`. For an import the guest calls (``canon lower``):
    :meth:`lift_args` then :meth:`lower_result`. Parameters that flatten to more than
    ``MAX_FLAT_PARAMS`` core values travel in memory (allocated with ``realloc``), and a
    result of more than ``MAX_FLAT_RESULTS`` through a pointer (returned by the export,
    or passed to the import as its last core parameter).
    """

    __slots__ = (
        "_arity",
        "_encoding",
        "_import_entries",
        "_params",
        "_params_touch_memory",
        "_result",
        "_result_touches_memory",
        "core_params",
        "core_results",
        "func",
        "import_core_params",
        "import_core_results",
        "params_in_memory",
        "result_in_memory",
    )

    _params: TypeAbi | None
    _result: TypeAbi | None

    def __init__(self, func: FuncType, encoding: str = "utf8", *, lazy: bool = False) -> None:
        """``lazy``: the generated code is made at the first call (see
        :func:`func_abi`), not now."""
        self.func = func
        self._encoding = encoding
        param_types = tuple(ty for _, ty in func.params)
        # ``_params`` and ``_result`` (the generated code) are made on the first call
        # (see ``_UnmadeFuncAbi``): a guest imports hundreds of functions and calls few
        flat_params = flatten(param_types)
        flat_result = flatten((func.result,)) if func.result is not None else ()
        self.params_in_memory = len(flat_params) > MAX_FLAT_PARAMS
        self.result_in_memory = len(flat_result) > MAX_FLAT_RESULTS
        self._arity = len(param_types)
        self._params_touch_memory = self.params_in_memory or any(map(_touches_memory, param_types))
        self._result_touches_memory = self.result_in_memory or (
            func.result is not None and _touches_memory(func.result)
        )
        params: tuple[FlatType, ...] = ("i32",) if self.params_in_memory else flat_params
        self.core_params = params
        self.core_results: tuple[FlatType, ...] = ("i32",) if self.result_in_memory else flat_result
        self.import_core_params: tuple[FlatType, ...] = (
            (*params, "i32") if self.result_in_memory else params
        )
        self.import_core_results: tuple[FlatType, ...] = (
            () if self.result_in_memory else flat_result
        )
        self._import_entries: dict[bool, Callable[..., Callable[[int], None]] | None] = {}
        if not lazy:
            self._make()

    def _make(self) -> None:
        """Make ``_params`` and ``_result``, the generated code."""
        types = tuple(ty for _, ty in self.func.params)
        self._params = type_abi(TupleType(types), self._encoding) if types else None
        result = self.func.result
        self._result = type_abi(result, self._encoding) if result is not None else None

    # -- the host calls a guest export --------------------------------------------------

    def lower_args(self, cx: AbiContext, args: tuple[Any, ...] | list[Any]) -> list[Any]:
        """The core arguments for calling the export with ``args``."""
        abi = self._params
        if abi is None:
            if args:
                raise HostProtocolError(f"expected no arguments, got {len(args)}")
            return []
        values = args if args.__class__ is tuple else tuple(args)
        if len(values) != self._arity:
            raise HostProtocolError(
                f"expected {len(self.func.params)} arguments, got {len(values)}"
            )
        try:
            if self.params_in_memory:
                ptr = cx.alloc(abi.layout.align, abi.layout.size)
                abi.store(cx, ptr, values)
                return [ptr]
            out: list[Any] = []
            abi.lower_flat(cx, values, out)
            return out
        except IsyswasfaError:
            raise
        except _HOST_VALUE_ERRORS as exc:
            raise _host_errors(abi.ty, values, exc) from exc

    def lift_result(self, cx: AbiContext, results: Sequence[Any]) -> Any:
        """The export's result from its core results (the memory is viewed anew)."""
        abi = self._result
        if abi is None:
            return None
        buf = cx.buf
        if self._result_touches_memory:  # (:meth:`AbiContext.refresh`, inline)
            memory = cx.memory
            if memory is not None:
                buf = cx.buf = memory.view()
        if self.result_in_memory:
            ptr = results[0] & _M32
            size, align = abi.layout.size, abi.layout.align
            if ptr & (align - 1) or ptr + size > len(buf):
                check_range(buf, ptr, size, align)  # (the trap that says why)
            return abi.load(cx, buf, ptr)
        return abi.lift_flat(cx, buf, iter(results))

    # -- a guest calls a host import ----------------------------------------------------

    def lift_args(self, cx: AbiContext, args: list[Any]) -> tuple[Any, ...]:
        """The import's arguments from its core arguments."""
        abi = self._params
        if abi is None:
            return ()
        buf = cx.refresh() if self._params_touch_memory else cx.buf
        if self.params_in_memory:
            ptr = args[0] & _M32
            check_range(buf, ptr, abi.layout.size, abi.layout.align)
            return abi.load(cx, buf, ptr)  # type: ignore[no-any-return]
        return abi.lift_flat(cx, buf, iter(args))  # type: ignore[no-any-return]

    def lower_result(self, cx: AbiContext, value: Any, args: list[Any]) -> list[Any]:
        """The import's core results for ``value`` (written through the return pointer,
        the last core argument, when the result travels in memory)."""
        abi = self._result
        if abi is None:
            return []
        try:
            if self.result_in_memory:
                ptr = args[-1] & _M32
                check_range(cx.refresh(), ptr, abi.layout.size, abi.layout.align)
                abi.store(cx, ptr, value)
                return []
            out: list[Any] = []
            abi.lower_flat(cx, value, out)
            return out
        except IsyswasfaError:
            raise
        except _HOST_VALUE_ERRORS as exc:
            raise _host_errors(abi.ty, value, exc) from exc


def import_entry_factory(
    abi: FuncAbi, to_error: bool
) -> Callable[..., Callable[[int], None]] | None:
    """The generated whole call of a host import of ``abi``'s type (see
    :meth:`~._codegen.Generator.import_entry`), made once per function type, encoding
    and ``to_error`` (a :class:`~trio_isyswasfa.WasiError` from the host becomes the
    result's ``err``); ``None`` for a result that holds a borrow (no valid component
    has one: the generic path traps on it).

    ``make(fn, cx, faults, instance, fault, leave, from_address, unpack_from,
    pack_into)`` gives the function of one instance: ``cx`` its :class:`AbiContext`
    (shared by its calls: a call's borrows are the lenders it added to ``cx.scope``),
    ``faults.fault`` and ``instance.leave_flag[0]`` (``may_leave``) checked first, ``leave()`` what to raise
    when it may not call out, ``fault(exc)`` what to raise for a failure; the rest
    read and write the raw values at the address the entry is called with.
    """
    entries = abi._import_entries
    if to_error in entries:
        return entries[to_error]
    func = abi.func
    made: Callable[..., Callable[[int], None]] | None = None
    if func.result is None or not _has_borrow(func.result):
        gen = Generator(
            lambda u: type_abi(u, abi._encoding), _ENTRY_HELPERS, _shape_of, abi._encoding
        )
        core_results = abi.import_core_results
        made = gen.import_entry(
            tuple(ty for _, ty in func.params),
            func.result,
            core_params=abi.import_core_params,
            core_result=core_results[0] if core_results else None,
            params_in_memory=abi.params_in_memory,
            params_abi=abi._params,
            params_touch_memory=abi._params_touch_memory,
            to_error=to_error,
            lends=any(_has_borrow(ty) for _, ty in func.params),
        )
    entries[to_error] = made
    return made


class _UnmadeFuncAbi(FuncAbi):
    """A :class:`FuncAbi` whose ``_params`` and ``_result`` (the generated code) are not
    made yet: a guest imports hundreds of functions and calls few. They are made at the
    first read of either, and the object then becomes a plain :class:`FuncAbi`: a class
    with ``__getattr__`` routes *every* attribute read through a slower hook (about ten
    times an ordinary one), and a call reads some eight of them."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name not in ("_params", "_result"):
            raise AttributeError(name)
        self._make()
        self.__class__ = FuncAbi  # type: ignore[assignment]
        return getattr(self, name)


@lru_cache(maxsize=4096)
def _has_borrow(t: ValType) -> bool:
    """Whether values of ``t`` hold a ``borrow`` handle."""
    if isinstance(t, BorrowType):
        return True
    if isinstance(t, ListType):
        return _has_borrow(t.element)
    if isinstance(t, (RecordType, TupleType)):
        return any(map(_has_borrow, record_fields(t)))
    cases = variant_cases(t)
    return cases is not None and any(_has_borrow(ty) for _, ty in cases if ty is not None)


@lru_cache(maxsize=4096)
def _touches_memory(t: ValType) -> bool:
    """Whether lifting or lowering ``t`` from flat values reads or writes memory."""
    if isinstance(t, PrimType):
        return t.kind is Primitive.STRING
    if isinstance(t, ListType):
        return t.length is None or _touches_memory(t.element)
    if isinstance(t, (RecordType, TupleType)):
        return any(map(_touches_memory, record_fields(t)))
    cases = variant_cases(t)
    if cases is not None:
        return any(_touches_memory(ty) for _, ty in cases if ty is not None)
    return False


@lru_cache(maxsize=1024)
def func_abi(func: FuncType, encoding: str = "utf8") -> FuncAbi:
    """``func``'s :class:`FuncAbi` (cached per function type and encoding)."""
    return _UnmadeFuncAbi(func, encoding, lazy=True)


__all__ = [
    "MAX_FLAT_PARAMS",
    "MAX_FLAT_RESULTS",
    "AbiContext",
    "BytearrayMemory",
    "FuncAbi",
    "GuestMemory",
    "TypeAbi",
    "check_range",
    "func_abi",
    "import_entry_factory",
    "lift_flat_value",
    "load_value",
    "lower_flat_value",
    "store_value",
    "type_abi",
]
