"""Lists of records and tuples that hold strings and lists (``fields.from-list``'s
``list<tuple<string, list<u8>>>``, environments, directory entries): generated loops
(``engine/_codegen.py``'s ``list_range``) against the closures, the guest's bad ranges
inside an element, and the order of the guest's ``realloc`` calls."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine_abi import ENCODINGS, values

from trio_isyswasfa import GuestTrap, HostProtocolError
from trio_isyswasfa.engine._abi import (
    AbiContext,
    BytearrayMemory,
    lift_flat_value,
    load_value,
    lower_flat_value,
    reference_type_abi,
    store_value,
    type_abi,
)
from trio_isyswasfa.engine._types import (
    EnumType,
    ListType,
    OptionType,
    Primitive,
    PrimType,
    RecordType,
    TupleType,
    ValType,
)

P = Primitive
U8, U16, U32, U64 = (PrimType(k) for k in (P.U8, P.U16, P.U32, P.U64))
BOOL, CHAR, STRING, F64 = PrimType(P.BOOL), PrimType(P.CHAR), PrimType(P.STRING), PrimType(P.F64)
BYTES = ListType(U8)
HEADERS = ListType(TupleType((STRING, BYTES)))


def _fields() -> st.SearchStrategy[ValType]:
    """The fields such elements hold: strings, bytes, lists of strings, scalars (so
    that runs of scalars and pairs meet padding), an option and an enum."""
    return st.sampled_from(
        [
            STRING,
            BYTES,
            ListType(STRING),
            ListType(U32),
            U8,
            U16,
            U64,
            BOOL,
            CHAR,
            F64,
            OptionType(STRING),
            EnumType(("file", "directory", "symlink")),
        ]
    )


def element_lists() -> st.SearchStrategy[ValType]:
    """``list<record{…}>`` and ``list<tuple<…>>`` of one to four such fields, a list of
    strings, and lists of those lists."""
    element = st.one_of(
        st.lists(_fields(), min_size=1, max_size=4).map(lambda ts: TupleType(tuple(ts))),
        st.lists(_fields(), min_size=1, max_size=4).map(
            lambda ts: RecordType(tuple((f"f{i}", t) for i, t in enumerate(ts)))
        ),
        st.just(STRING),
    )
    lists = element.map(ListType)
    return st.one_of(lists, lists.map(lambda t: ListType(TupleType((STRING, t)))))


def _typed_lists() -> st.SearchStrategy[tuple[ValType, Any]]:
    return element_lists().flatmap(lambda t: st.tuples(st.just(t), values(t)))


def _context(size: int = 1 << 12) -> AbiContext:
    return AbiContext(BytearrayMemory(size))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_typed_lists(), st.sampled_from(ENCODINGS))
def test_lists_round_trip_through_memory_and_flat_values(
    tv: tuple[ValType, Any], encoding: str
) -> None:
    t, v = tv
    cx = _context()
    assert load_value(cx, t, store_value(cx, t, v, encoding), encoding) == v
    assert lift_flat_value(cx, t, lower_flat_value(cx, t, v, encoding), encoding) == v


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_typed_lists(), st.sampled_from(ENCODINGS))
def test_generated_lists_agree_with_the_closures(tv: tuple[ValType, Any], encoding: str) -> None:
    """Each lifts what the other lowered, and both write the same bytes."""
    t, v = tv
    fast, slow = type_abi(t, encoding), reference_type_abi(t, encoding)
    images = []
    for lower, lift in ((fast, slow), (slow, fast)):
        cx = _context()
        flat: list[Any] = []
        lower.lower_flat(cx, v, flat)
        assert lift.lift_flat(cx, cx.buf, iter(flat)) == v
        images.append(bytes(cx.buf))
    assert images[0] == images[1]


class _Logged(BytearrayMemory):
    """A bump memory that notes each ``realloc``'s alignment and size."""

    def __init__(self) -> None:
        super().__init__(1 << 12)
        self.calls: list[tuple[int, int]] = []

    def realloc(self, old_ptr: int, old_size: int, align: int, new_size: int) -> int:
        self.calls.append((align, new_size))
        return super().realloc(old_ptr, old_size, align, new_size)


@pytest.mark.parametrize("make", [type_abi, reference_type_abi])
def test_realloc_order_is_the_array_then_each_element_in_order(make: Any) -> None:
    """The specification's ``store_list_into_range``: the element array first, then each
    element's strings and lists, one ``realloc`` each, in order (the guest sees them)."""
    memory = _Logged()
    cx = AbiContext(memory)
    value = [("host", b"example.com"), ("accept", b"*/*"), ("x-é", b"")]
    make(HEADERS).lower_flat(cx, value, [])
    assert memory.calls == [(4, 48), (1, 4), (1, 11), (1, 6), (1, 3), (1, 4), (1, 0)]


def _headers_at(words: list[int], data: bytes = b"") -> AbiContext:
    """A memory with ``words`` (an element array) at 0 and ``data`` at 256."""
    cx = _context(1 << 10)
    struct.pack_into(f"<{len(words)}I", cx.buf, 0, *words)
    cx.buf[256 : 256 + len(data)] = data
    return cx


@pytest.mark.parametrize("make", [type_abi, reference_type_abi])
class TestBadRangesInsideElements:
    """A guest's bad pointer or length inside an element traps before the host copies
    or decodes anything for it (no ``MemoryError``, no slice past the memory)."""

    def test_string_out_of_bounds(self, make: Any) -> None:
        cx = _headers_at([256, 4, 256, 0, 1020, 8, 256, 0], b"host")
        with pytest.raises(GuestTrap, match="string of 8 bytes at 0x3fc is out of bounds"):
            make(HEADERS).lift_flat(cx, cx.buf, iter([0, 2]))

    def test_string_too_long(self, make: Any) -> None:
        cx = _headers_at([256, 1 << 30, 256, 0])
        with pytest.raises(GuestTrap, match="too long"):
            make(HEADERS).lift_flat(cx, cx.buf, iter([0, 1]))

    def test_bytes_out_of_bounds_and_too_long(self, make: Any) -> None:
        cx = _headers_at([256, 4, 200, (1 << 28) - 2], b"host")
        with pytest.raises(GuestTrap, match="out of bounds"):
            make(HEADERS).lift_flat(cx, cx.buf, iter([0, 1]))
        cx = _headers_at([256, 4, 0, 0xFFFFFFFF], b"host")
        with pytest.raises(GuestTrap, match="too long"):
            make(HEADERS).lift_flat(cx, cx.buf, iter([0, 1]))

    def test_invalid_utf8(self, make: Any) -> None:
        cx = _headers_at([256, 2, 256, 0], b"\xff\xfe")
        with pytest.raises(GuestTrap, match="UTF-8"):
            make(HEADERS).lift_flat(cx, cx.buf, iter([0, 1]))

    def test_nested_list_out_of_bounds(self, make: Any) -> None:
        t = ListType(TupleType((STRING, ListType(STRING))))
        cx = _headers_at([256, 1, 16, 1, 1016, 100], b"a")
        with pytest.raises(GuestTrap, match="out of bounds"):
            make(t).lift_flat(cx, cx.buf, iter([0, 1]))

    def test_element_array_out_of_bounds_or_misaligned(self, make: Any) -> None:
        cx = _headers_at([])
        with pytest.raises(GuestTrap, match="out of bounds"):
            make(HEADERS).lift_flat(cx, cx.buf, iter([1008, 2]))
        with pytest.raises(GuestTrap, match="aligned"):
            make(HEADERS).lift_flat(cx, cx.buf, iter([2, 1]))
        with pytest.raises(GuestTrap, match="too long"):
            make(HEADERS).lift_flat(cx, cx.buf, iter([0, 1 << 25]))

    def test_bad_host_values_are_host_errors(self, make: Any) -> None:
        for bad in ([("a", "not bytes")], [("\ud800", b"")], [(b"a", b"")], [("a",)], "ab"):
            with pytest.raises(HostProtocolError):
                make(HEADERS).lower_flat(_context(), bad, [])

    def test_a_lone_header_traps_alike(self, make: Any) -> None:
        """Outside a list's loop (a record or tuple on its own: a call) the same checks."""
        t = TupleType((STRING, BYTES))
        cx = _headers_at([], b"\xff\xfe")
        with pytest.raises(GuestTrap, match="string of 8 bytes at 0x3fc is out of bounds"):
            make(t).lift_flat(cx, cx.buf, iter([1020, 8, 0, 0]))
        with pytest.raises(GuestTrap, match="UTF-8"):
            make(t).lift_flat(cx, cx.buf, iter([256, 2, 0, 0]))
        with pytest.raises(GuestTrap, match="out of bounds"):
            make(t).lift_flat(cx, cx.buf, iter([0, 0, 200, (1 << 28) - 2]))
        struct.pack_into("<IIII", cx.buf, 0, 0, 0, 0, 0xFFFFFFFF)
        with pytest.raises(GuestTrap, match="too long"):
            make(t).load(cx, cx.buf, 0)
