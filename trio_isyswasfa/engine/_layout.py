"""Canonical-ABI layout: the size, alignment and flat core types of every value type.

Computed once per type and cached (types are immutable and hashed by structure;
resource types by identity). Follows the component model's ``CanonicalABI.md``
(32-bit memories), with one extension: ``flags`` with more than 32 names take one
``i32`` per 32 names, as the specification did before it capped flags at 32.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ._types import (
    BorrowType,
    EnumType,
    FlagsType,
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

MAX_FLAT_PARAMS = 16
"""More flat parameters than this and a function's parameters go through memory."""

MAX_FLAT_RESULTS = 1
"""More flat results than this and a function's result goes through memory."""

MAX_STRING_BYTE_LENGTH = (1 << 28) - 1
"""The longest string, in bytes, the canonical ABI lifts or lowers."""

MAX_LIST_BYTE_LENGTH = (1 << 28) - 1
"""The largest list, in bytes, the canonical ABI lifts or lowers."""

UTF16_TAG = 1 << 31
"""Set in a ``latin1+utf16`` string's length when its code units are UTF-16."""

FlatType = str  # "i32" | "i64" | "f32" | "f64"


@dataclass(frozen=True, slots=True)
class Layout:
    """Where and how a value of one type lives in linear memory and in core values."""

    size: int
    align: int
    flat: tuple[FlatType, ...]


_PRIM: dict[Primitive, Layout] = {
    Primitive.BOOL: Layout(1, 1, ("i32",)),
    Primitive.S8: Layout(1, 1, ("i32",)),
    Primitive.U8: Layout(1, 1, ("i32",)),
    Primitive.S16: Layout(2, 2, ("i32",)),
    Primitive.U16: Layout(2, 2, ("i32",)),
    Primitive.S32: Layout(4, 4, ("i32",)),
    Primitive.U32: Layout(4, 4, ("i32",)),
    Primitive.S64: Layout(8, 8, ("i64",)),
    Primitive.U64: Layout(8, 8, ("i64",)),
    Primitive.F32: Layout(4, 4, ("f32",)),
    Primitive.F64: Layout(8, 8, ("f64",)),
    Primitive.CHAR: Layout(4, 4, ("i32",)),
    Primitive.STRING: Layout(8, 4, ("i32", "i32")),
    Primitive.ERROR_CONTEXT: Layout(4, 4, ("i32",)),
}

_HANDLE = Layout(4, 4, ("i32",))


def align_to(offset: int, align: int) -> int:
    """``offset`` rounded up to a multiple of ``align`` (a power of two)."""
    return (offset + align - 1) & -align


def discriminant_size(n_cases: int) -> int:
    """Bytes of a variant's discriminant: the smallest of 1, 2, 4 that counts the cases."""
    if n_cases <= 0:
        raise ValueError("a variant needs at least one case")
    if n_cases <= 1 << 8:
        return 1
    if n_cases <= 1 << 16:
        return 2
    return 4


def flags_words(n_names: int) -> int:
    """How many ``i32`` core values carry ``n_names`` flags."""
    return (n_names + 31) // 32


def join(a: FlatType, b: FlatType) -> FlatType:
    """The core type that holds either of two flat types (for variant payloads)."""
    if a == b:
        return a
    if {a, b} == {"i32", "f32"}:
        return "i32"
    return "i64"


def variant_cases(t: ValType) -> tuple[tuple[str, ValType | None], ...] | None:
    """The cases of a variant-like type (variant, enum, option, result), else None."""
    if isinstance(t, VariantType):
        return t.cases
    if isinstance(t, EnumType):
        return tuple((name, None) for name in t.names)
    if isinstance(t, OptionType):
        return (("none", None), ("some", t.inner))
    if isinstance(t, ResultType):
        return (("ok", t.ok), ("error", t.err))
    return None


def record_fields(t: RecordType | TupleType) -> tuple[ValType, ...]:
    """The field types of a record or tuple, in order."""
    if isinstance(t, RecordType):
        return tuple(ty for _, ty in t.fields)
    return t.elements


def field_offsets(types: tuple[ValType, ...]) -> tuple[int, ...]:
    """Each field's offset inside a record (or tuple) of ``types``."""
    offsets = []
    s = 0
    for ty in types:
        lay = layout(ty)
        s = align_to(s, lay.align)
        offsets.append(s)
        s += lay.size
    return tuple(offsets)


def payload_offset(t: ValType) -> int:
    """Offset of a variant-like value's payload from its start."""
    cases = variant_cases(t)
    assert cases is not None
    return align_to(discriminant_size(len(cases)), _max_case_align(cases))


def _max_case_align(cases: tuple[tuple[str, ValType | None], ...]) -> int:
    return max((layout(ty).align for _, ty in cases if ty is not None), default=1)


@lru_cache(maxsize=4096)
def layout(t: ValType) -> Layout:
    """Size, alignment and flattening of ``t`` (cached per type)."""
    if isinstance(t, PrimType):
        return _PRIM[t.kind]
    if isinstance(t, (OwnType, BorrowType, StreamType, FutureType)):
        return _HANDLE
    if isinstance(t, ListType):
        if t.length is None:
            return Layout(8, 4, ("i32", "i32"))
        if t.length <= 0:
            raise ValueError("a fixed-length list needs a length of at least 1")
        el = layout(t.element)
        return Layout(el.size * t.length, el.align, el.flat * t.length)
    if isinstance(t, (RecordType, TupleType)):
        types = record_fields(t)
        if not types:
            raise ValueError("records and tuples need at least one field")
        align = max(layout(ty).align for ty in types)
        offsets = field_offsets(types)
        end = offsets[-1] + layout(types[-1]).size
        flat = tuple(f for ty in types for f in layout(ty).flat)
        return Layout(align_to(end, align), align, flat)
    if isinstance(t, FlagsType):
        n = len(t.names)
        if n == 0:
            raise ValueError("flags need at least one name")
        if n <= 8:
            return Layout(1, 1, ("i32",))
        if n <= 16:
            return Layout(2, 2, ("i32",))
        words = flags_words(n)
        return Layout(4 * words, 4, ("i32",) * words)
    cases = variant_cases(t)
    if cases is not None:
        disc = discriminant_size(len(cases))
        case_align = _max_case_align(cases)
        align = max(disc, case_align)
        payload_size = max((layout(ty).size for _, ty in cases if ty is not None), default=0)
        size = align_to(align_to(disc, case_align) + payload_size, align)
        joined: list[FlatType] = []
        for _, ty in cases:
            if ty is None:
                continue
            for i, f in enumerate(layout(ty).flat):
                if i < len(joined):
                    joined[i] = join(joined[i], f)
                else:
                    joined.append(f)
        return Layout(size, align, ("i32", *joined))
    raise TypeError(f"not a value type: {t!r}")


def flatten(types: tuple[ValType, ...]) -> tuple[FlatType, ...]:
    """The flat core types of a sequence of values (parameters, say)."""
    return tuple(f for ty in types for f in layout(ty).flat)
