"""The canonical ABI of our own engine: layout, round trips, bad input, handle tables."""

from __future__ import annotations

import enum
import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_isyswasfa import GuestTrap, HostProtocolError
from trio_isyswasfa.engine._abi import (
    AbiContext,
    BytearrayMemory,
    FuncAbi,
    lift_flat_value,
    load_value,
    lower_flat_value,
    reference_type_abi,
    store_value,
    type_abi,
)
from trio_isyswasfa.engine._handles import AsyncEnd, CallScope, HandleTable
from trio_isyswasfa.engine._layout import layout
from trio_isyswasfa.engine._types import (
    BorrowType,
    EnumType,
    FlagsType,
    FuncType,
    ListType,
    OptionType,
    OwnType,
    Primitive,
    PrimType,
    RecordType,
    ResourceType,
    ResultType,
    StreamType,
    TupleType,
    ValType,
    VariantType,
)
from trio_isyswasfa.engine._values import Err, Ok, ReadInto, Record, Variant

P = Primitive
U8, U16, U32, U64 = (PrimType(k) for k in (P.U8, P.U16, P.U32, P.U64))
S8, S32, S64 = (PrimType(k) for k in (P.S8, P.S32, P.S64))
F32, F64 = PrimType(P.F32), PrimType(P.F64)
BOOL, CHAR, STRING = PrimType(P.BOOL), PrimType(P.CHAR), PrimType(P.STRING)
ENCODINGS = ("utf8", "utf16", "latin1+utf16")
RES = ResourceType("thing")


def record(**fields: Any) -> Record:
    rec = Record()
    for name, value in fields.items():
        setattr(rec, name.replace("_", "-"), value)
    return rec


# -- random types and values ------------------------------------------------------------

_INT_RANGES = {
    P.U8: (0, 0xFF),
    P.S8: (-0x80, 0x7F),
    P.U16: (0, 0xFFFF),
    P.S16: (-0x8000, 0x7FFF),
    P.U32: (0, 0xFFFFFFFF),
    P.S32: (-(1 << 31), (1 << 31) - 1),
    P.U64: (0, (1 << 64) - 1),
    P.S64: (-(1 << 63), (1 << 63) - 1),
}

_PRIMS = [PrimType(k) for k in Primitive if k is not P.ERROR_CONTEXT]


def _names(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(n))


def types(*, handles: bool = True, wide: bool = True) -> st.SearchStrategy[ValType]:
    """Random value types of bounded depth. ``handles``: own/borrow too; ``wide``: flags
    over 32 names and fixed-length lists (beyond what wasmtime accepts)."""
    leaves: list[st.SearchStrategy[ValType]] = [
        st.sampled_from(_PRIMS),
        st.integers(1, 300).map(lambda n: EnumType(_names("e", n))),
        st.integers(1, 70 if wide else 32).map(lambda n: FlagsType(_names("f", n))),
    ]
    if handles:
        leaves.append(st.sampled_from([OwnType(RES), BorrowType(RES)]))

    def extend(inner: st.SearchStrategy[ValType]) -> st.SearchStrategy[ValType]:
        composite = [
            inner.map(ListType),
            st.lists(inner, min_size=1, max_size=4).map(
                lambda ts: RecordType(tuple(zip(_names("r", len(ts)), ts, strict=True)))
            ),
            st.lists(inner, min_size=1, max_size=4).map(lambda ts: TupleType(tuple(ts))),
            st.lists(st.one_of(st.none(), inner), min_size=1, max_size=5).map(
                lambda ts: VariantType(tuple(zip(_names("c", len(ts)), ts, strict=True)))
            ),
            inner.map(OptionType),
            st.tuples(st.one_of(st.none(), inner), st.one_of(st.none(), inner)).map(
                lambda p: ResultType(*p)
            ),
        ]
        if wide:
            composite.append(
                st.tuples(inner, st.integers(1, 3)).map(lambda p: ListType(p[0], p[1]))
            )
        return st.one_of(composite)

    return st.recursive(st.one_of(leaves), extend, max_leaves=8)


def values(t: ValType) -> st.SearchStrategy[Any]:
    """Random Python values of type ``t`` (no NaNs: they compare unequal)."""
    if isinstance(t, PrimType):
        k = t.kind
        if k in _INT_RANGES:
            return st.integers(*_INT_RANGES[k])
        if k is P.BOOL:
            return st.booleans()
        if k is P.F32:
            return st.floats(width=32, allow_nan=False)
        if k is P.F64:
            return st.floats(allow_nan=False)
        chars = st.characters(exclude_categories=("Cs",))
        if k is P.CHAR:
            return chars
        return st.text(chars, max_size=20)
    if isinstance(t, ListType):
        if t.length is not None:
            return st.lists(values(t.element), min_size=t.length, max_size=t.length)
        if t.element == U8:
            return st.binary(max_size=40)
        return st.lists(values(t.element), max_size=4)
    if isinstance(t, RecordType):
        names = [n for n, _ in t.fields]
        return st.tuples(*(values(ty) for _, ty in t.fields)).map(lambda vs: _record_of(names, vs))
    if isinstance(t, TupleType):
        return st.tuples(*(values(ty) for ty in t.elements))
    if isinstance(t, FlagsType):
        return st.sets(st.sampled_from(t.names))
    if isinstance(t, EnumType):
        return st.sampled_from(t.names)
    if isinstance(t, (OwnType, BorrowType)):
        return st.integers(0, 0xFFFFFFFF)
    if isinstance(t, ResultType):
        ok = values(t.ok).map(Ok) if t.ok is not None else st.just(Ok(None))
        err = values(t.err).map(Err) if t.err is not None else st.just(Err(None))
        return st.one_of(ok, err)
    abi = type_abi(t)
    cases = t.cases if isinstance(t, VariantType) else (("none", None), ("some", t.inner))  # type: ignore[union-attr]
    options = []
    for name, ty in cases:
        payload = values(ty) if ty is not None else st.none()
        if abi.tagged:
            options.append(payload.map(lambda p, n=name: Variant(n, p)))
        else:
            options.append(payload)
    return st.one_of(options)


def _record_of(names: list[str], vs: tuple[Any, ...]) -> Record:
    rec = Record()
    for n, v in zip(names, vs, strict=True):
        setattr(rec, n, v)
    return rec


def typed_values(**kw: bool) -> st.SearchStrategy[tuple[ValType, Any]]:
    return types(**kw).flatmap(lambda t: st.tuples(st.just(t), values(t)))


# -- layout -----------------------------------------------------------------------------


class TestLayout:
    def test_records_pad_to_their_alignment(self) -> None:
        lay = layout(RecordType((("a", U8), ("b", U32), ("c", U8))))
        assert (lay.size, lay.align, lay.flat) == (12, 4, ("i32", "i32", "i32"))

    def test_variant_discriminant_grows_with_cases(self) -> None:
        assert layout(EnumType(_names("e", 256))).size == 1
        assert layout(EnumType(_names("e", 257))).size == 2
        assert layout(EnumType(_names("e", 65537))).size == 4

    def test_variant_payloads_join_flat_types(self) -> None:
        assert layout(VariantType((("a", F32), ("b", U32)))).flat == ("i32", "i32")
        assert layout(VariantType((("a", F32), ("b", U64)))).flat == ("i32", "i64")
        assert layout(OptionType(F64)).flat == ("i32", "f64")
        v = VariantType((("a", TupleType((U8, F32))), ("b", F64), ("c", None)))
        assert layout(v).flat == ("i32", "i64", "f32")
        assert (layout(v).size, layout(v).align) == (16, 8)

    def test_flags_take_one_i32_per_32_names(self) -> None:
        assert layout(FlagsType(_names("f", 8))).size == 1
        assert layout(FlagsType(_names("f", 9))).size == 2
        assert layout(FlagsType(_names("f", 32))).flat == ("i32",)
        lay = layout(FlagsType(_names("f", 33)))
        assert (lay.size, lay.align, lay.flat) == (8, 4, ("i32", "i32"))

    def test_strings_lists_and_fixed_lists(self) -> None:
        assert layout(STRING).flat == ("i32", "i32")
        assert layout(ListType(U64)).size == 8
        fixed = layout(ListType(U16, 3))
        assert (fixed.size, fixed.align, fixed.flat) == (6, 2, ("i32",) * 3)

    def test_empty_types_are_rejected(self) -> None:
        with pytest.raises(ValueError, match="at least one"):
            layout(RecordType(()))
        with pytest.raises(ValueError, match="at least one"):
            layout(FlagsType(()))
        with pytest.raises(ValueError, match="at least"):
            layout(ListType(U8, 0))


# -- round trips ------------------------------------------------------------------------


def _context() -> AbiContext:
    return AbiContext(BytearrayMemory(1 << 12))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(typed_values(), st.sampled_from(ENCODINGS))
def test_round_trip_through_memory(tv: tuple[ValType, Any], encoding: str) -> None:
    t, v = tv
    cx = _context()
    ptr = store_value(cx, t, v, encoding)
    assert load_value(cx, t, ptr, encoding) == v


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(typed_values(), st.sampled_from(ENCODINGS))
def test_round_trip_through_flat_values(tv: tuple[ValType, Any], encoding: str) -> None:
    t, v = tv
    cx = _context()
    flat = lower_flat_value(cx, t, v, encoding)
    assert len(flat) == len(layout(t).flat)
    for value, ft in zip(flat, layout(t).flat, strict=True):
        assert type(value) is (int if ft[0] == "i" else float)
        if ft[0] == "i":
            assert 0 <= value < 1 << int(ft[1:])
    assert lift_flat_value(cx, t, flat, encoding) == v


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(typed_values(), min_size=1, max_size=20), st.sampled_from(ENCODINGS))
def test_function_round_trip_spills_to_memory(
    params: list[tuple[ValType, Any]], encoding: str
) -> None:
    """Export lowering then import lifting of the same parameters (through memory once
    they flatten to more than 16 core values), and a result through a return pointer."""
    ft = FuncType(
        tuple((f"p{i}", t) for i, (t, _) in enumerate(params)),
        TupleType(tuple(t for t, _ in params)),
    )
    abi = FuncAbi(ft, encoding)
    args = tuple(v for _, v in params)
    cx = _context()
    core = abi.lower_args(cx, args)
    assert len(core) == len(abi.core_params)
    assert abi.lift_args(cx, core) == args
    if abi.result_in_memory:
        retptr = cx.alloc(8, layout(ft.result).size)  # type: ignore[arg-type]
        assert abi.lower_result(cx, args, [*core, retptr]) == []
        assert abi.lift_result(cx, [retptr]) == args
    else:
        results = abi.lower_result(cx, args, core)
        assert abi.lift_result(cx, results) == args


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(typed_values(), st.sampled_from(ENCODINGS))
def test_generated_code_agrees_with_the_closures(tv: tuple[ValType, Any], encoding: str) -> None:
    """Records and variants run generated code; the closures are the reference. Each
    lifts what the other lowered, through memory and flat values."""
    t, v = tv
    fast, slow = type_abi(t, encoding), reference_type_abi(t, encoding)
    for lower, lift in ((fast, slow), (slow, fast)):
        cx = _context()
        ptr = cx.alloc(lower.layout.align, lower.layout.size)
        lower.store(cx, ptr, v)
        assert lift.load(cx, cx.buf, ptr) == v
        flat: list[Any] = []
        lower.lower_flat(cx, v, flat)
        assert lift.lift_flat(cx, cx.buf, iter(flat)) == v


@pytest.mark.parametrize("make", [type_abi, reference_type_abi])
def test_variant_payloads_are_reinterpreted_in_joined_slots(make: Any) -> None:
    t = VariantType((("a", F32), ("b", U32), ("c", F64), ("d", TupleType((F32, U8)))))
    abi = make(t)
    assert abi.layout.flat == ("i32", "i64", "i32")
    cases = [
        (Variant("a", 1.5), [0, 0x3FC00000, 0]),
        (Variant("b", 7), [1, 7, 0]),
        (Variant("c", 2.5), [2, 0x4004000000000000, 0]),
        (Variant("d", (-2.0, 9)), [3, 0xC0000000, 9]),
    ]
    cx = _context()
    for value, flat in cases:
        out: list[Any] = []
        abi.lower_flat(cx, value, out)
        assert out == flat
        assert abi.lift_flat(cx, cx.buf, iter(flat)) == value
    # a guest may leave garbage in the high half of an i64 slot holding an i32 payload
    assert abi.lift_flat(cx, cx.buf, iter([1, (5 << 32) | 7, 0])) == Variant("b", 7)


@pytest.mark.parametrize("make", [type_abi, reference_type_abi])
def test_every_case_of_a_wide_variant_round_trips(make: Any) -> None:
    """Generated code dispatches wide variants by binary search: every case, each way."""
    payloads: list[ValType | None] = [U8, None, STRING, F64, TupleType((U16, CHAR)), None]
    t = VariantType(tuple((f"c{i}", payloads[i % len(payloads)]) for i in range(41)))
    samples = {U8: 7, STRING: "s", F64: 2.5, TupleType((U16, CHAR)): (9, "z")}
    abi = make(t)
    assert abi.tagged
    for i, (name, ty) in enumerate(t.cases):
        value = Variant(name, samples[ty] if ty is not None else None)
        cx = _context()
        ptr = store_value(cx, t, value)
        assert cx.buf[ptr] == i
        assert abi.load(cx, cx.buf, ptr) == value
        flat: list[Any] = []
        abi.lower_flat(cx, value, flat)
        assert flat[0] == i
        assert abi.lift_flat(cx, cx.buf, iter(flat)) == value
    wide_enum = EnumType(_names("e", 300))
    for i in (0, 1, 4, 5, 150, 255, 256, 299):
        assert (
            lift_flat_value(_context(), wide_enum, lower_flat_value(_context(), wide_enum, f"e{i}"))
            == f"e{i}"
        )
        assert lower_flat_value(_context(), wide_enum, f"e{i}") == [i]


def test_code_is_generated_for_the_types_a_call_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variant's generated code inlines its cases' records: they get none of their own
    until something reads one of theirs (a wasi:http guest's first request generated
    ~140 functions, 0.3 s of the process, where it runs a dozen)."""
    from trio_isyswasfa.engine import _codegen

    compiled: list[str] = []

    def counting(source: str, filename: str, mode: str) -> Any:
        compiled.append(filename)
        return compile(source, filename, mode)

    monkeypatch.setattr(_codegen, "compile", counting, raising=False)
    payloads = [RecordType(((f"lazy-field-{i}", U32), ("lazy-name", STRING))) for i in range(20)]
    t = VariantType(tuple((f"lazy-case-{i}", ty) for i, ty in enumerate(payloads)))
    abi = type_abi(t)
    assert compiled == []  # made when first read
    cx = _context()
    value = Variant("lazy-case-7", record(lazy_field_7=7, lazy_name="seven"))
    flat: list[Any] = []
    abi.lower_flat(cx, value, flat)
    assert abi.lift_flat(cx, cx.buf, iter(flat)) == value
    assert len(compiled) == 4  # the variant's load, store, lift_flat and lower_flat
    record_abi = type_abi(payloads[7])  # read on its own, a case gets its four
    assert record_abi.load(cx, cx.buf, store_value(cx, payloads[7], value.payload)) == (
        value.payload
    )
    assert len(compiled) == 8


def test_many_flat_params_go_through_memory() -> None:
    ft = FuncType(tuple((f"p{i}", U32) for i in range(17)), STRING)
    abi = FuncAbi(ft)
    assert abi.core_params == ("i32",)
    assert abi.params_in_memory
    assert abi.core_results == ("i32",)
    assert abi.import_core_params == ("i32", "i32")
    small = FuncAbi(FuncType(tuple((f"p{i}", U32) for i in range(16)), U32))
    assert not small.params_in_memory
    assert small.core_params == ("i32",) * 16


def test_memory_is_viewed_anew_after_it_grows() -> None:
    memory = BytearrayMemory(64)
    cx = AbiContext(memory)
    ptr = store_value(cx, ListType(STRING), ["x" * 100, "y" * 1000])
    assert len(memory.data) > 64
    assert load_value(AbiContext(memory), ListType(STRING), ptr) == ["x" * 100, "y" * 1000]


def test_bytes_lower_from_any_buffer_and_lift_as_bytes() -> None:
    cx = _context()
    for data in (b"abc", bytearray(b"abc"), memoryview(b"abc")):
        ptr = store_value(cx, ListType(U8), data)
        assert load_value(cx, ListType(U8), ptr) == b"abc"


class TestReadInto:
    """A ``list<u8>`` the host writes into the guest's block itself (a file read)."""

    class Recording(BytearrayMemory):
        def __init__(self) -> None:
            super().__init__(1 << 12)
            self.calls: list[tuple[int, int, int, int]] = []

        def realloc(self, old_ptr: int, old_size: int, align: int, new_size: int) -> int:
            self.calls.append((old_ptr, old_size, align, new_size))
            return super().realloc(old_ptr, old_size, align, new_size)

    @staticmethod
    def filler(data: bytes) -> Any:
        def fill(view: memoryview) -> int:
            view[: len(data)] = data
            return len(data)

        return fill

    def test_fills_the_guests_block_in_place(self) -> None:
        memory = self.Recording()
        cx = AbiContext(memory)
        views: list[memoryview] = []

        def fill(view: memoryview) -> int:
            views.append(view)
            view[:] = b"abcd"
            return 4

        ptr = store_value(cx, ListType(U8), ReadInto(4, fill))
        assert load_value(cx, ListType(U8), ptr) == b"abcd"
        assert memory.calls[1:] == [(0, 0, 1, 4)]  # after the list's own (ptr, len)
        block = struct.unpack_from("<I", memory.data, ptr)[0]
        assert len(views[0]) == 4  # exactly the block, nothing around it
        assert bytes(memory.data[block : block + 4]) == b"abcd"

    def test_a_short_fill_shrinks_the_block(self) -> None:
        memory = self.Recording()
        cx = AbiContext(memory)
        ptr = store_value(cx, ListType(U8), ReadInto(100, self.filler(b"xyz")))
        assert load_value(cx, ListType(U8), ptr) == b"xyz"
        assert memory.calls[1] == (0, 0, 1, 100)
        # realloc(old block, 100, 1, 3): as the canonical ABI shrinks a transcoded string
        assert memory.calls[2][1:] == (100, 1, 3)
        assert memory.calls[2][0] != 0

    def test_an_empty_fill_keeps_the_block_and_gives_an_empty_list(self) -> None:
        memory = self.Recording()
        cx = AbiContext(memory)
        ptr = store_value(cx, ListType(U8), ReadInto(8, self.filler(b"")))
        assert load_value(cx, ListType(U8), ptr) == b""
        assert memory.calls[1:] == [(0, 0, 1, 8)]  # never to 0 (guests may not allow it)

    def test_lowers_as_the_ok_case_of_a_result(self) -> None:
        cx = _context()
        t = ResultType(ListType(U8), U32)
        out = lower_flat_value(cx, t, ReadInto(3, self.filler(b"abc")))
        assert lift_flat_value(cx, t, out) == Ok(b"abc")

    @pytest.mark.parametrize(
        ("size", "filled"), [(-1, 0), (1 << 29, 0), (4, 5), (4, -1), (4, None)]
    )
    def test_bad_sizes_are_host_errors(self, size: int, filled: Any) -> None:
        with pytest.raises(HostProtocolError):
            store_value(_context(), ListType(U8), ReadInto(size, lambda view: filled))

    def test_to_bytes_fills_a_host_buffer(self) -> None:
        assert ReadInto(10, self.filler(b"abc")).to_bytes() == b"abc"
        sizes: list[int] = []

        def fill(view: memoryview) -> int:
            sizes.append(len(view))
            return len(view)

        assert ReadInto(10, fill).to_bytes(4) == bytes(4)
        assert sizes == [4]


def test_nans_are_canonical_both_ways() -> None:
    weird32 = struct.unpack("<f", struct.pack("<I", 0x7FA00001))[0]
    weird64 = struct.unpack("<d", struct.pack("<Q", 0xFFF0000000000123))[0]
    cx = _context()
    p = store_value(cx, TupleType((F32, F64)), (weird32, weird64))
    assert bytes(cx.buf[p : p + 16]) == struct.pack("<I4xQ", 0x7FC00000, 0x7FF8000000000000)
    cx.buf[p : p + 4] = struct.pack("<I", 0xFFC00123)
    lifted = load_value(cx, TupleType((F32, F64)), p)
    assert all(math.isnan(x) for x in lifted)
    assert struct.pack("<d", lifted[0]) == struct.pack("<d", math.nan)
    [flat] = lower_flat_value(cx, F32, weird32)
    assert struct.pack("<f", flat) == struct.pack("<I", 0x7FC00000)


def test_latin1_utf16_picks_the_compact_form() -> None:
    cx = _context()
    t = TupleType((STRING,))
    assert lower_flat_value(cx, STRING, "héllo", "latin1+utf16")[1] == 5
    assert lower_flat_value(cx, STRING, "h€llo", "latin1+utf16")[1] == 5 | (1 << 31)
    assert lower_flat_value(cx, STRING, "h€llo", "utf16")[1] == 5
    assert lower_flat_value(cx, STRING, "h€llo", "utf8")[1] == 7
    assert load_value(cx, t, store_value(cx, t, ("h€llo",), "latin1+utf16"), "latin1+utf16") == (
        "h€llo",
    )


def test_value_shapes_match_the_seam() -> None:
    """Results are Ok/Err; variants untagged when their classes differ, like
    wasmtime-py (``stream-error`` is a handle or None), else Variant."""
    stream_error = VariantType((("last-operation-failed", OwnType(RES)), ("closed", None)))
    assert not type_abi(stream_error).tagged
    both_empty = VariantType((("a", None), ("b", None)))
    assert type_abi(both_empty).tagged
    assert type_abi(OptionType(OptionType(U8))).tagged
    assert not type_abi(OptionType(ResultType(U8, None))).tagged
    cx = _context()
    t = ResultType(ListType(U8), stream_error)
    assert lift_flat_value(cx, t, lower_flat_value(cx, t, b"hi")) == Ok(b"hi")
    assert lift_flat_value(cx, t, lower_flat_value(cx, t, Err(None))) == Err(None)
    assert lift_flat_value(cx, t, lower_flat_value(cx, t, Err(7))) == Err(7)
    r = RecordType((("path-with-query", STRING),))
    assert load_value(cx, r, store_value(cx, r, record(path_with_query="/x"))) == record(
        path_with_query="/x"
    )


# -- bad input from the guest -----------------------------------------------------------


def _memory_with(words: list[int], size: int = 1 << 10) -> AbiContext:
    cx = AbiContext(BytearrayMemory(size))
    struct.pack_into(f"<{len(words)}I", cx.buf, 0, *words)
    return cx


class TestGuestTraps:
    def test_list_out_of_bounds_traps_before_allocating(self) -> None:
        # a length of 2**28 - 2 u8 at 0: the check comes before any copy
        cx = _memory_with([])
        with pytest.raises(GuestTrap, match="out of bounds"):
            lift_flat_value(cx, ListType(U8), [16, (1 << 28) - 2])
        with pytest.raises(GuestTrap, match="too long"):
            lift_flat_value(cx, ListType(U64), [0, 0xFFFFFFFF])
        with pytest.raises(GuestTrap, match="out of bounds"):
            lift_flat_value(cx, ListType(STRING), [8, 200])
        with pytest.raises(GuestTrap, match="out of bounds"):
            lift_flat_value(cx, ListType(U32), [1020, 2])

    def test_misaligned_pointers_trap(self) -> None:
        cx = _memory_with([])
        with pytest.raises(GuestTrap, match="aligned"):
            lift_flat_value(cx, ListType(U32), [2, 1])
        with pytest.raises(GuestTrap, match="aligned"):
            lift_flat_value(cx, STRING, [3, 1], "utf16")
        with pytest.raises(GuestTrap, match="aligned"):
            load_value(cx, U64, 4)

    def test_strings_out_of_bounds_or_invalid_trap(self) -> None:
        cx = _memory_with([])
        with pytest.raises(GuestTrap, match="out of bounds"):
            lift_flat_value(cx, STRING, [1000, 100])
        with pytest.raises(GuestTrap, match="too long"):
            lift_flat_value(cx, STRING, [0, 1 << 30])
        cx.buf[0:2] = b"\xff\xfe"
        with pytest.raises(GuestTrap, match="UTF-8"):
            lift_flat_value(cx, STRING, [0, 2])
        cx.buf[0:2] = b"\x00\xd8"  # a lone high surrogate
        with pytest.raises(GuestTrap, match="UTF-16"):
            lift_flat_value(cx, STRING, [0, 1], "utf16")
        with pytest.raises(GuestTrap, match="out of bounds"):
            lift_flat_value(cx, STRING, [0, (1 << 31) | 600], "latin1+utf16")

    def test_bad_discriminants_and_chars_trap(self) -> None:
        cx = _memory_with([3])
        with pytest.raises(GuestTrap, match="discriminant"):
            load_value(cx, OptionType(U8), 0)
        with pytest.raises(GuestTrap, match="discriminant"):
            lift_flat_value(cx, ResultType(None, None), [2])
        with pytest.raises(GuestTrap, match="discriminant"):
            lift_flat_value(cx, EnumType(("a", "b")), [2])
        for bad in (0xD800, 0x110000):
            with pytest.raises(GuestTrap, match="char"):
                lift_flat_value(cx, CHAR, [bad])
        cx.buf[0:4] = struct.pack("<I", 0xDFFF)
        with pytest.raises(GuestTrap, match="char"):
            load_value(cx, CHAR, 0)

    @pytest.mark.parametrize("make", [type_abi, reference_type_abi])
    def test_bad_discriminants_trap_in_both_implementations(self, make: Any) -> None:
        cx = _memory_with([5])
        for t in (OptionType(U8), ResultType(U8, None), EnumType(("a", "b"))):
            abi = make(t)
            with pytest.raises(GuestTrap, match="discriminant"):
                abi.load(cx, cx.buf, 0)
            with pytest.raises(GuestTrap, match="discriminant"):
                abi.lift_flat(cx, cx.buf, iter([5, 0]))

    def test_result_pointer_out_of_bounds_traps(self) -> None:
        abi = FuncAbi(FuncType((), STRING))
        cx = _memory_with([])
        with pytest.raises(GuestTrap, match="out of bounds"):
            abi.lift_result(cx, [1020])
        with pytest.raises(GuestTrap, match="aligned"):
            abi.lift_result(cx, [2])
        with pytest.raises(GuestTrap, match="out of bounds"):
            abi.lower_result(cx, "x", [4096])
        spilled = FuncAbi(FuncType(tuple((f"p{i}", U64) for i in range(17)), None))
        with pytest.raises(GuestTrap, match="out of bounds"):
            spilled.lift_args(cx, [1000])

    def test_realloc_returning_bad_blocks_traps(self) -> None:
        class Liar(BytearrayMemory):
            answer = 0

            def realloc(self, old_ptr: int, old_size: int, align: int, new_size: int) -> int:
                return self.answer

        memory = Liar(256)
        cx = AbiContext(memory)
        memory.answer = 252
        with pytest.raises(GuestTrap, match="out of bounds"):
            store_value(cx, STRING, "0123456789")
        memory.answer = 2
        with pytest.raises(GuestTrap, match="aligned"):
            store_value(cx, ListType(U32), [1])


# -- bad values from the host -----------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "value"),
    [
        (U8, 256),
        (S8, -129),
        (U32, -1),
        (U64, 1 << 64),
        (U32, 1.5),
        (BOOL, 1),
        (F32, 1e300),
        (F64, "x"),
        (CHAR, "ab"),
        (CHAR, "\ud800"),
        (STRING, b"bytes"),
        (STRING, "\ud800"),
        (ListType(U8), "text"),
        (ListType(U16), [1, 70000]),
        (ListType(U16, 2), [1]),
        (RecordType((("a", U8),)), record(b=1)),
        (TupleType((U8, U8)), (1,)),
        (EnumType(("a", "b")), "c"),
        (FlagsType(("a", "b")), {"c"}),
        (FlagsType(("a", "b")), ["a"]),
        (VariantType((("a", U8), ("b", None), ("c", None))), Variant("d")),
        (VariantType((("a", U8), ("b", STRING))), 1.5),
        (OwnType(RES), "handle"),
    ],
)
def test_bad_host_values_are_host_errors(t: ValType, value: Any) -> None:
    for lower in (lower_flat_value, store_value):
        with pytest.raises(HostProtocolError):
            lower(_context(), t, value)


def test_host_values_over_the_size_limits_are_host_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trio_isyswasfa.engine import _abi, _codegen

    for module in (_abi, _codegen):  # (UTF-8 strings: _codegen's helpers serve both)
        monkeypatch.setattr(module, "MAX_STRING_BYTE_LENGTH", 4)
        monkeypatch.setattr(module, "MAX_LIST_BYTE_LENGTH", 8)
    for t, value in ((STRING, "hello"), (ListType(U8), b"123456789"), (ListType(U32), [1, 2, 3])):
        with pytest.raises(HostProtocolError, match="too long"):
            lower_flat_value(_context(), t, value)
    cx = _memory_with([])
    with pytest.raises(GuestTrap, match="too long"):
        lift_flat_value(cx, STRING, [0, 5])
    with pytest.raises(GuestTrap, match="too long"):
        lift_flat_value(cx, ListType(U8), [0, 9])


def test_values_built_for_the_stock_engine_lower_too() -> None:
    import wasmtime.component as wc

    import trio_isyswasfa._engine as seam

    inner = RecordType((("a", U8),))
    t = TupleType((OptionType(inner), OptionType(VariantType((("p", None), ("q", None))))))
    value = (seam.record(a=1), seam.variant("q"))
    assert type(value[0]) is wc.Record
    for make in (type_abi, reference_type_abi):
        abi = make(t)
        cx = _context()
        out: list[Any] = []
        abi.lower_flat(cx, value, out)
        assert abi.lift_flat(cx, cx.buf, iter(out)) == (record(a=1), Variant("q"))


def test_handle_values_may_be_objects_with_a_rep() -> None:
    class Host:
        rep = 42

    cx = _context()
    [index] = lower_flat_value(cx, OwnType(RES), Host())
    assert cx.table.lift_own(RES, index) == 42


# -- handle tables ----------------------------------------------------------------------


class TestHandleTable:
    def test_own_moves_in_and_out(self) -> None:
        table = HandleTable()
        i = table.lower_own(RES, 7)
        assert i == 1
        assert len(table) == 1
        assert table.lift_own(RES, i) == 7
        assert len(table) == 0
        with pytest.raises(GuestTrap, match="does not exist"):
            table.lift_own(RES, i)
        assert table.lower_own(RES, 8) == i  # indices are reused

    def test_a_full_table_traps(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(HandleTable, "MAX_LENGTH", 3)
        table = HandleTable()
        for rep in range(3):
            table.lower_own(RES, rep)
        with pytest.raises(GuestTrap, match="full"):
            table.lower_own(RES, 3)

    def test_index_zero_and_unknown_indices_trap(self) -> None:
        table = HandleTable()
        for i in (0, 1, 99):
            with pytest.raises(GuestTrap, match="does not exist"):
                table.resource_rep(RES, i)

    def test_wrong_resource_type_traps(self) -> None:
        table = HandleTable()
        i = table.lower_own(RES, 7)
        other = ResourceType("thing")  # same name, another type
        with pytest.raises(GuestTrap, match="wrong resource type"):
            table.lift_own(other, i)
        with pytest.raises(GuestTrap, match="wrong resource type"):
            table.resource_drop(other, i)
        j = table.add(AsyncEnd(StreamType(U8), True))
        with pytest.raises(GuestTrap, match="not a resource"):
            table.resource_rep(RES, j)

    def test_lent_own_cannot_move_or_drop_until_the_call_ends(self) -> None:
        table = HandleTable()
        i = table.lower_own(RES, 7)
        scope = CallScope()
        assert table.lift_borrow(RES, i, scope) == 7
        with pytest.raises(GuestTrap, match="lent"):
            table.resource_drop(RES, i)
        with pytest.raises(GuestTrap, match="lent"):
            table.lift_own(RES, i)
        scope.finish()
        assert table.lift_own(RES, i) == 7

    def test_borrow_is_not_an_own(self) -> None:
        table = HandleTable()
        i = table.lower_borrow(RES, 7, CallScope())
        with pytest.raises(GuestTrap, match="borrow where an own"):
            table.lift_own(RES, i)

    def test_borrows_must_be_dropped_before_the_call_returns(self) -> None:
        table = HandleTable()
        scope = CallScope()
        i = table.lower_borrow(RES, 7, scope)
        j = table.lower_borrow(RES, 8, scope)
        table.resource_drop(RES, i)
        with pytest.raises(GuestTrap, match="not dropped"):
            scope.finish()
        table.resource_drop(RES, j)
        clean = CallScope()
        table.resource_drop(RES, table.lower_borrow(RES, 9, clean))
        clean.finish()

    def test_borrow_dropped_twice_traps(self) -> None:
        table = HandleTable()
        scope = CallScope()
        i = table.lower_borrow(RES, 7, scope)
        table.resource_drop(RES, i)
        with pytest.raises(GuestTrap, match="does not exist"):
            table.resource_drop(RES, i)
        assert scope.borrows == 0

    def test_borrow_of_own_resource_is_the_rep(self) -> None:
        table = HandleTable()
        table.defines.add(RES)
        scope = CallScope()
        assert table.lower_borrow(RES, 1234, scope) == 1234
        assert len(table) == 0
        assert scope.borrows == 0

    def test_destructor_runs_when_an_own_is_dropped(self) -> None:
        table = HandleTable()
        dropped: list[int] = []
        table.destructors[RES] = dropped.append
        i = table.resource_new(RES, 5)
        table.resource_drop(RES, table.lower_borrow(RES, 6, CallScope()))
        assert dropped == []
        table.resource_drop(RES, i)
        assert dropped == [5]

    def test_borrowed_handle_lifted_in_a_call_is_lent(self) -> None:
        cx = _context()
        i = cx.table.lower_own(RES, 3)
        ft = FuncAbi(FuncType((("x", BorrowType(RES)),), None))
        assert ft.lift_args(cx, [i]) == (3,)
        with pytest.raises(GuestTrap, match="lent"):
            cx.table.resource_drop(RES, i)
        cx.scope.finish()
        cx.table.resource_drop(RES, i)

    def test_stream_and_future_values_cross_as_table_indices(self) -> None:
        from trio_isyswasfa.engine._types import FutureType

        for t in (StreamType(U8), FutureType(None), RecordType((("s", StreamType(STRING)),))):
            cx = _context()
            inner = t.fields[0][1] if isinstance(t, RecordType) else t
            end = AsyncEnd(inner, True)
            value = record(s=end) if isinstance(t, RecordType) else end
            flat = lower_flat_value(cx, t, value)
            assert flat == [1]
            assert lift_flat_value(cx, t, flat) == value
            assert len(cx.table) == 0  # lifting moved it out again
            assert load_value(cx, t, store_value(cx, t, value)) == value
        with pytest.raises(HostProtocolError):
            lower_flat_value(_context(), StreamType(U8), AsyncEnd(StreamType(U8), False))
        with pytest.raises(HostProtocolError):
            lower_flat_value(_context(), StreamType(U8), 3)

    def test_stream_ends_move_between_tables(self) -> None:
        t = StreamType(U8)
        a, b = HandleTable(), HandleTable()
        end = AsyncEnd(t, True)
        i = a.add(end)
        assert b.lower_end(t, a.lift_end(t, i)) == 1
        with pytest.raises(GuestTrap, match="does not exist"):
            a.lift_end(t, i)
        with pytest.raises(GuestTrap, match="another stream"):
            b.lift_end(StreamType(U16), 1)
        writer = b.add(AsyncEnd(t, False))
        with pytest.raises(GuestTrap, match="not a readable"):
            b.lift_end(t, writer)
        busy = AsyncEnd(t, True)
        busy.busy = True
        with pytest.raises(GuestTrap, match="being copied"):
            b.lift_end(t, b.add(busy))


def test_poll_events_lower_as_the_poll_input_values_they_stand_for() -> None:
    """On our engine the scheduler hands a poll export its input events as they are
    (their ``tag`` and ``payload``): each must lower to the bytes and handles that the
    wasmtime-py value ``lower_inputs`` makes of it lowers to."""
    from trio_isyswasfa._engine import lower_inputs
    from trio_isyswasfa._protocol import InCancel, InCancelComplete, InListening, InReady

    ready, cancel = ResourceType("ready", 3), ResourceType("cancel", 2)
    poll_input = VariantType(
        (
            ("listening", RecordType((("state", U32), ("cancel", OwnType(cancel))))),
            ("ready", RecordType((("state", U32), ("ready", OwnType(ready))))),
            ("cancel", RecordType((("state", U32), ("cancel", OwnType(cancel))))),
            ("cancel-complete", U32),
        )
    )
    events = [InListening(7, 11), InReady(8, 12), InCancel(9, 13), InCancelComplete(10)]
    as_values = lower_inputs(events, lambda rep, _kind: rep)  # our engine's handles are reps
    got, want = _context(), _context()
    store_value(got, ListType(poll_input), events)
    store_value(want, ListType(poll_input), as_values)
    assert got.memory is not None
    assert want.memory is not None
    assert bytes(got.memory.view()) == bytes(want.memory.view())
    assert [got.table.resource_rep(cancel, 1), got.table.resource_rep(ready, 2)] == [11, 12]


# -- subclasses of the value classes (as wasmtime-py takes them) -------------------------


class _Colour(enum.StrEnum):
    RED = "red"
    A = "a"


class _Level(enum.IntEnum):
    ONE = 1


class _Blob(bytes):
    pass


_SUBCLASS_VALUES = [
    (STRING, _Colour.RED, "red"),
    (CHAR, _Colour.A, "a"),
    (EnumType(("green", "red")), _Colour.RED, "red"),
    (ListType(U8), _Blob(b"xy"), b"xy"),
    (U32, _Level.ONE, 1),
    (OptionType(STRING), _Colour.RED, "red"),
    (VariantType((("a", U32), ("b", STRING))), _Colour.RED, "red"),
    (VariantType((("a", U32), ("b", STRING))), _Level.ONE, 1),
    (ListType(STRING), [_Colour.RED], ["red"]),
    (TupleType((STRING, U32)), (_Colour.RED, _Level.ONE), ("red", 1)),
]


@pytest.mark.parametrize("make", [type_abi, reference_type_abi])
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize(("t", "value", "plain"), _SUBCLASS_VALUES)
def test_subclasses_of_str_int_and_bytes_lower_as_their_base(
    make: Any, encoding: str, t: ValType, value: Any, plain: Any
) -> None:
    abi = make(t, encoding)
    cx = _context()
    out: list[Any] = []
    abi.lower_flat(cx, value, out)
    lifted = abi.lift_flat(cx, cx.buf, iter(out))
    assert lifted == plain
    assert type(lifted) is type(plain)
    ptr = cx.alloc(abi.layout.align, abi.layout.size)
    abi.store(cx, ptr, value)
    assert abi.load(cx, cx.buf, ptr) == plain
