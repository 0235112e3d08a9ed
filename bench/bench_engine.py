"""Our own engine's parts, measured alone (issue 12).

    python -m bench.bench_engine

The canonical-ABI rows lift and lower values over a wasmtime memory (``Memory.data_ptr``
viewed through ctypes, as the engine views it) with a bump ``realloc``: ``list<u8>`` at 64 KiB and
1 MiB each way (GB/s, against a bare slice copy of the same bytes in the same run), a
file read lowered as a ``ReadInto`` (read straight into the block, as wasi:filesystem
streams do; against ``os.pread`` then lowering the bytes), and
a small call's values (µs, against building the same Python value by hand). Each figure
is measured at N and at 16N repetitions. Goals: bytes ≥ 1 GB/s each way; a small call's
lift + lower ≲ 2 µs.

The fiber rows call a core function ``add(i32, i32) -> i32`` on the async path
(``engine/_fiber.py``: a wasmtime fiber polled from trio) against synchronous calls of
the same guest in a plain store (a raw ctypes ``wasmtime_func_call_unchecked`` and
wasmtime-py's ``Func.__call__``), and a call that makes one async host call that need
not wait. Not run in CI.

The end-to-end rows (stage 3a) run one WAT component on our engine and on the stock
engine (wasmtime-py's component API behind the seam) in the same process, both through
their async ``call``: a sync export ``add(u32, u32) -> u32``, an export that makes one
host call, and a 1 MiB ``list<u8>`` a host import returns; then host calls shaped like
``wasi:http``'s and ``wasi:io``'s: a method taking a ``borrow`` and returning an ``own``
(with the guest's drop of it), and a method returning ``result<list<u8>, error-code>``
(16 bytes, through the guest's ``realloc``), and a header list
``list<tuple<string, list<u8>>>`` of 8 and 128 entries each way: passed to a host import
(``fields.from-list``'s shape: the guest's list lifted) and returned by one
(``fields.entries``' shape: lowered, one ``realloc`` for the array and one per string
and per value, in the specification's order). The host share of a call is
its time less a bare ``wasmtime_func_call_unchecked`` of the same core function (the
guest's own work, measured alongside); a host call's share is the extra time of the
export that makes one. Goals: host share ≤ 3 µs each; bytes ≥ 1 GB/s. Not run in CI.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from trio_isyswasfa import _engine
from trio_isyswasfa.engine._abi import AbiContext, FuncAbi, store_value, type_abi
from trio_isyswasfa.engine._component import OwnEngineInstance
from trio_isyswasfa.engine._core import CoreFunc
from trio_isyswasfa.engine._handles import CallScope
from trio_isyswasfa.engine._reader import read_component
from trio_isyswasfa.engine._types import (
    BorrowType,
    EnumType,
    FuncType,
    ListType,
    OptionType,
    OwnType,
    Primitive,
    PrimType,
    RecordType,
    ResourceType,
    ResultType,
    VariantType,
)
from trio_isyswasfa.engine._values import Ok, ReadInto, Record, Variant
from trio_isyswasfa.testing import build_wat_component

U8, U32, U64 = PrimType(Primitive.U8), PrimType(Primitive.U32), PrimType(Primitive.U64)


class CtypesMemory:
    """A linear memory the way the engine sees wasmtime's: a ctypes array, viewed. It
    never grows, so its view is made once (an engine keeps its view until the memory's
    size changes)."""

    def __init__(self, size: int) -> None:
        self.raw = (ctypes.c_ubyte * size)()
        self.next = 16
        self._view = memoryview(self.raw).cast("B")

    def view(self) -> memoryview:
        return self._view

    def realloc(self, old_ptr: int, old_size: int, align: int, new_size: int) -> int:
        ptr = (self.next + align - 1) & -align
        if ptr + new_size > len(self.raw):
            ptr = 16  # wrap around: the benchmark reuses the memory
        self.next = ptr + new_size
        return ptr


class WasmMemory(CtypesMemory):
    """The same over a real wasmtime linear memory (``data_ptr``): where a file read
    lands (the kernel copies into it faster than into a ctypes array on the host's
    heap, measured here)."""

    def __init__(self, size: int) -> None:
        import wasmtime

        store = wasmtime.Store(_engine.engine())
        memory = wasmtime.Memory(store, wasmtime.MemoryType(wasmtime.Limits(size >> 16, None)))
        base = ctypes.addressof(memory.data_ptr(store).contents)
        self.raw = (ctypes.c_ubyte * memory.data_len(store)).from_address(base)
        self.keep = (store, memory)
        self.next = 16
        self._view = memoryview(self.raw).cast("B")


def timed(fn: Callable[[], object], n: int) -> float:
    """Seconds per call of ``fn``: the best of 5 runs of ``n`` calls (the machine is shared)."""
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - start) / n)
    return min(runs)


def row(label: str, ours: float, base: float, unit: str, goal: str) -> None:
    print(f"{label:46} {ours:9.2f} {unit:5} baseline {base:8.2f}  ratio {ours / base:5.2f}  {goal}")


def bytes_rows(n: int) -> None:
    """``list<u8>`` guest→host (lift) and host→guest (lower), in GB/s."""
    memory = WasmMemory(8 << 20)
    cx = AbiContext(memory)
    for size in (64 << 10, 1 << 20):
        _bytes_rows(cx, memory, size, max(1, n * (64 << 10) // size))


def _bytes_rows(cx: AbiContext, memory: CtypesMemory, size: int, reps: int) -> None:
    lift = type_abi(ListType(U8)).lift_flat
    lower = type_abi(ListType(U8)).lower_flat
    data = bytes(range(256)) * (size // 256)
    view = memory.view()
    ptr = 1 << 20
    view[ptr : ptr + size] = data
    flat = [ptr, size]

    def lift_once() -> object:
        return lift(cx, cx.buf, iter(flat))

    def copy_out() -> object:
        return bytes(view[ptr : ptr + size])

    def lower_once() -> object:
        memory.next = ptr  # the guest freed the last block: the same memory again
        out: list[int] = []
        lower(cx, data, out)
        return out

    def copy_in() -> None:
        view[ptr : ptr + size] = data

    for label, ours_fn, base_fn in (("lift", lift_once, copy_out), ("lower", lower_once, copy_in)):
        ours = size / timed(ours_fn, reps) / 1e9
        base = size / timed(base_fn, reps) / 1e9
        row(f"list<u8> {label} {size >> 10} KiB  (x{reps})", ours, base, "GB/s", "goal ≥ 1")

    # a file read the guest receives: read straight into its block (ReadInto, what
    # wasi:filesystem streams do) against reading bytes and lowering them
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        fd = f.fileno()

        def fill(block: memoryview) -> int:
            return os.preadv(fd, [block], 0)

        def read_into() -> object:
            memory.next = ptr
            out: list[int] = []
            lower(cx, ReadInto(size, fill), out)
            return out

        def read_then_lower() -> object:
            memory.next = ptr
            out: list[int] = []
            lower(cx, os.pread(fd, size, 0), out)
            return out

        ours = size / timed(read_into, reps) / 1e9
        base = size / timed(read_then_lower, reps) / 1e9
        row(f"file -> list<u8> {size >> 10} KiB  (x{reps})", ours, base, "GB/s",
            "base: pread, then lower")  # fmt: skip


def small_rows(n: int) -> None:
    """A small call's host share, each direction, in µs: the arguments lowered and the
    result lifted (the host calls an export), or the arguments lifted and the result
    lowered (the guest calls an import)."""
    res = ResourceType("ready", host_kind=3)
    state = RecordType((("state", U32), ("ready", OwnType(res))))
    poll_input = VariantType((("ready", state), ("cancel", U32), ("cancel-complete", U32)))
    datetime = RecordType((("seconds", U64), ("nanoseconds", U32)))
    stat = RecordType(
        (("type", PrimType(Primitive.U8)), ("size", U64), ("mtime", OptionType(datetime)))
    )
    export = FuncAbi(FuncType((("input", poll_input), ("n", U32)), stat))
    descriptor = ResourceType("descriptor", host_kind=30)
    error_code = EnumType(("access", "again", "busy", "exist", "io"))
    imported = FuncAbi(FuncType((("self", BorrowType(descriptor)),), ResultType(stat, error_code)))
    memory = CtypesMemory(1 << 16)
    cx = AbiContext(memory)
    rec = Record()
    rec.state = 7
    rec.ready = 42
    arg = Variant("ready", rec)
    when = Record()
    when.seconds = 1_700_000_000
    when.nanoseconds = 5
    result = Record()
    result.type = 3
    result.size = 4096
    result.mtime = when
    retptr = cx.alloc(8, 32)
    ptr = store_value(cx, stat, result)
    fd = cx.table.lower_own(descriptor, 9)

    def export_call() -> object:
        core = export.lower_args(cx, (arg, 1))
        cx.table.lift_own(res, core[2])  # the guest takes the handle out again
        return export.lift_result(cx, [ptr])

    def import_call() -> object:
        cx.scope = CallScope()
        args = imported.lift_args(cx, [fd])
        imported.lower_result(cx, Ok(result), [*args, retptr])
        cx.scope.finish()
        return args

    def by_hand() -> object:
        # the Python objects such a call carries, built directly
        r = Record()
        r.state = 7
        r.ready = 42
        v = Variant("ready", r)
        w = Record()
        w.seconds = 1_700_000_000
        w.nanoseconds = 5
        s = Record()
        s.type = 3
        s.size = 4096
        s.mtime = w
        return v, s

    base = timed(by_hand, n) * 1e6
    for label, fn in (
        ("export: variant+u32 args, record result", export_call),
        ("import: borrow arg, result<record, enum>", import_call),
    ):
        row(f"{label}  (x{n})", timed(fn, n) * 1e6, base, "µs", "goal ≲ 2")

    add = FuncAbi(FuncType((("a", U32), ("b", U32)), U32))

    def add_once() -> object:
        return add.lift_result(cx, add.lower_args(cx, (1, 2)))

    row(
        f"export: add(u32, u32) -> u32  (x{n})",
        timed(add_once, n) * 1e6,
        timed(lambda: (1, 2), n) * 1e6,
        "µs",
        "goal ≲ 2",
    )


def abi_rows(n: int = 200) -> None:
    """The canonical-ABI rows, at N and 16N."""
    for reps in (n, 16 * n):
        print(f"-- canonical ABI, N = {reps}")
        bytes_rows(max(1, reps // 50))
        small_rows(reps * 10)


# a core guest for the fiber rows: add(a, b) = a + b, and via_host(a, b) = host(a) + b
FIBER_GUEST = """
(module
  (import "h" "host" (func $host (param i32) (result i32)))
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func (export "via_host") (param i32 i32) (result i32)
    (i32.add (call $host (local.get 0)) (local.get 1))))
"""


def fiber_rows(n: int = 2000) -> None:
    """Core calls on the fiber path (stage 3b), in µs, at N and 16N, against plain
    synchronous calls of the same guest in a plain store: a raw ctypes
    ``wasmtime_func_call_unchecked`` and wasmtime-py's ``Func.__call__``."""
    import trio
    import wasmtime
    from wasmtime import _ffi as ffi

    from trio_isyswasfa import _engine
    from trio_isyswasfa.engine._fiber import FiberStore

    module = wasmtime.Module(_engine.engine(), wasmtime.wat2wasm(FIBER_GUEST))
    host_type = wasmtime.FuncType([wasmtime.ValType.i32()], [wasmtime.ValType.i32()])

    def plus_one(x: int) -> int:
        return x + 1

    # the fiber store, with an async host function that does not wait
    fs = FiberStore()
    fiber_exports = fs.instantiate(module, [fs.host_func(host_type, plus_one)]).exports(fs.store)
    fiber_add = fs.func(fiber_exports["add"])
    fiber_via_host = fs.func(fiber_exports["via_host"])
    # a plain store: synchronous calls, a wasmtime-py host function
    store = wasmtime.Store(_engine.engine())
    store.set_epoch_deadline(1 << 62)
    plain = wasmtime.Instance(store, module, [wasmtime.Func(store, host_type, plus_one)])
    plain_add = plain.exports(store)["add"]
    plain_via_host = plain.exports(store)["via_host"]
    raw = (ffi.wasmtime_val_raw_t * 2)()
    trap = ctypes.POINTER(ffi.wasm_trap_t)()
    context = store._context()
    add_func = ctypes.byref(plain_add._func)

    def raw_add() -> int:
        raw[0].i32 = 1
        raw[1].i32 = 2
        error = ffi.wasmtime_func_call_unchecked(context, add_func, raw, 2, ctypes.byref(trap))
        assert not error
        assert not trap
        return int(raw[0].i32)

    def fiber_timed(reps: int) -> tuple[float, float]:
        """µs per fiber call of add and of via_host: the best of 7 rounds each,
        alternating, so both see the same load (the machine is shared)."""

        async def run() -> tuple[float, float]:
            best = [float("inf"), float("inf")]
            for _ in range(7):
                for i, func in enumerate((fiber_add, fiber_via_host)):
                    start = time.perf_counter()
                    for _ in range(reps):
                        await func(1, 2)
                    best[i] = min(best[i], (time.perf_counter() - start) / reps)
            return best[0] * 1e6, best[1] * 1e6

        return trio.run(run)

    def plain_timed(reps: int) -> tuple[float, float, float]:
        """µs per raw ctypes add, Func.__call__ add and Func.__call__ via_host, alternating."""
        funcs = (raw_add, lambda: plain_add(store, 1, 2), lambda: plain_via_host(store, 1, 2))
        best = [float("inf")] * 3
        for _ in range(7):
            for i, func in enumerate(funcs):
                best[i] = min(best[i], timed(func, reps))
        return best[0] * 1e6, best[1] * 1e6, best[2] * 1e6

    assert raw_add() == 3
    assert plain_add(store, 1, 2) == 3
    for reps in (n, 16 * n):
        print(f"-- core calls on fibers, N = {reps}")
        fiber, via_host = fiber_timed(reps)
        raw_call, py_call, py_host = plain_timed(reps)
        row(f"fiber: add(i32, i32) -> i32  (x{reps})", fiber, raw_call, "µs",
            "baseline: raw ctypes call")  # fmt: skip
        row(f"fiber: add(i32, i32) -> i32  (x{reps})", fiber, py_call, "µs",
            "baseline: wasmtime-py Func.__call__")  # fmt: skip
        row(f"fiber: a call with one async host call  (x{reps})", via_host, py_host, "µs",
            "baseline: Func.__call__, sync host fn")  # fmt: skip
        row(f"fiber: its host call alone  (x{reps})", via_host - fiber, py_host - py_call, "µs",
            "baseline: the same with Func.__call__")  # fmt: skip


RUN_WIT = """
package bench:run;
interface host {
  note: func(n: u32);
  fetch: func(n: u32) -> list<u8>;
  enum error-code { closed, other }
  resource pipe {
    child: func() -> pipe;
    read: func(n: u64) -> result<list<u8>, error-code>;
  }
  open: func() -> pipe;
  take-headers: func(h: list<tuple<string, list<u8>>>) -> u32;
  give-headers: func(n: u32) -> list<tuple<string, list<u8>>>;
}
interface api {
  add: func(a: u32, b: u32) -> u32;
  ping: func(n: u32) -> u32;
  fetch-len: func(n: u32) -> u32;
  child-drop: func() -> u32;
  read-len: func(n: u32) -> u32;
  headers-in: func(n: u32) -> u32;
  headers-out: func(n: u32) -> u32;
}
world w { import host; export api; }
"""

_RUN_WAT_TEMPLATE = """
(module
  (import "bench:run/host" "note" (func $note (param i32)))
  (import "bench:run/host" "fetch" (func $fetch (param i32 i32)))
  (import "bench:run/host" "open" (func $open (result i32)))
  (import "bench:run/host" "[method]pipe.child" (func $child (param i32) (result i32)))
  (import "bench:run/host" "[method]pipe.read" (func $read (param i32 i64 i32)))
  (import "bench:run/host" "[resource-drop]pipe" (func $drop (param i32)))
  (import "bench:run/host" "take-headers" (func $take (param i32 i32) (result i32)))
  (import "bench:run/host" "give-headers" (func $give (param i32 i32)))
  (memory (export "memory") 1)
  (global $pipe (mut i32) (i32.const 0))
  (func $pipe (result i32)  ;; a pipe the guest keeps, opened at its first use
    (if (i32.eqz (global.get $pipe)) (then (global.set $pipe (call $open))))
    (global.get $pipe))
  (global $bump (mut i32) (i32.const 4096))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (local $p i32)
    ;; a bump allocator that an export frees in full (reset_heap) before its host call
    (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (global.set $bump (i32.add (local.get $p) (local.get 3)))
    (block $fits
      (br_if $fits (i32.le_u (i32.add (local.get $p) (local.get 3))
                             (i32.mul (memory.size) (i32.const 65536))))
      (drop (memory.grow (i32.add (i32.const 1) (i32.shr_u (local.get 3) (i32.const 16))))))
    (local.get $p))
  (func $reset_heap (global.set $bump (i32.const 4096)))
  (func (export "bench:run/api#add") (param i32 i32) (result i32)
    (i32.add (local.get 0) (local.get 1)))
  (func (export "bench:run/api#ping") (param i32) (result i32)
    (call $note (local.get 0))
    (local.get 0))
  (func (export "bench:run/api#fetch-len") (param i32) (result i32)
    (call $reset_heap)
    (call $fetch (local.get 0) (i32.const 1024))
    (i32.load (i32.const 1028)))
  (func (export "bench:run/api#child-drop") (result i32) (local $c i32)
    (local.set $c (call $child (call $pipe)))
    (call $drop (local.get $c))
    (local.get $c))
  (func (export "bench:run/api#read-len") (param i32) (result i32)
    (call $reset_heap)
    (call $read (call $pipe) (i64.extend_i32_u (local.get 0)) (i32.const 1024))
    (i32.load (i32.const 1032)))
  ;; fields.from-list's shape: the guest's header list (HEADER_DATA) to the host
  (func (export "bench:run/api#headers-in") (param i32) (result i32)
    (call $take (i32.const HEADER_ARRAY) (local.get 0)))
  ;; fields.entries' shape: the host's header list into the guest's memory
  (func (export "bench:run/api#headers-out") (param i32) (result i32)
    (call $reset_heap)
    (call $give (local.get 0) (i32.const 1024))
    (i32.load (i32.const 1028)))
  HEADER_DATA)
"""

HEADER = ("content-type", b"text/plain; charset=utf-8")
"""One header of the header-list rows (each element of the list is this one)."""
MAX_HEADERS = 128
HEADER_SIZES = (8, 128)
"""The header-list rows' sizes (N and 16N elements)."""
_HEADER_ARRAY = 40960  # past what the bump allocator hands out for MAX_HEADERS


def _header_data() -> str:
    """The WAT data segment of ``MAX_HEADERS`` ``tuple<string, list<u8>>`` elements at
    ``_HEADER_ARRAY``, all pointing at one name and one value after them."""
    name, value = HEADER[0].encode(), HEADER[1]
    at_name = _HEADER_ARRAY + 16 * MAX_HEADERS
    at_value = at_name + len(name)
    element = struct.pack("<IIII", at_name, len(name), at_value, len(value))
    blob = element * MAX_HEADERS + name + value
    text = "".join(f"\\{b:02x}" for b in blob)
    return f'(data (i32.const {_HEADER_ARRAY}) "{text}")'


RUN_WAT = _RUN_WAT_TEMPLATE.replace("HEADER_ARRAY", str(_HEADER_ARRAY)).replace(
    "HEADER_DATA", _header_data()
)

API = "bench:run/api"
MIB = 1 << 20
PIPE = 11  # the host resource kind of the bench's ``pipe``


async def round_robin(
    fns: dict[str, Callable[[], Awaitable[object]]],
    n: dict[str, int],
    rounds: int = 7,
    setup: dict[str, Callable[[], object]] | None = None,
) -> dict[str, float]:
    """Seconds per call of each of ``fns``: every round times each once (``n[name]``
    calls), interleaved so that the shared machine's load falls on all alike; the best
    round counts. ``setup[name]``, if given, runs untimed before each of its batches."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            if setup is not None and name in setup:
                setup[name]()
            start = time.perf_counter()
            for _ in range(n[name]):
                await fn()
            best[name] = min(best[name], (time.perf_counter() - start) / n[name])
    return best


def _run_component() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        wit = Path(tmp) / "w.wit"
        wit.write_text(RUN_WIT)
        return build_wat_component(wit, "w", RUN_WAT)


def run_resolver(payload: bytes, notes: list[int]) -> Callable[[_engine.ImportedItem], Any]:
    """The host side of ``RUN_WAT``'s imports: ``note`` appends to ``notes``, ``fetch``
    and ``pipe.read`` answer from ``payload``, pipes are fresh host handles."""
    pipes = iter(range(1, 1 << 62))
    headers = [HEADER] * MAX_HEADERS

    def resolve(item: _engine.ImportedItem) -> Any:
        if item.func_type is None:  # the pipe resource
            return _engine.ResourceDef(PIPE, lambda rep: None)
        return {
            "note": notes.append,
            "fetch": lambda k: payload,
            "open": lambda: _engine.own(next(pipes), PIPE),
            "[method]pipe.child": lambda rep: _engine.own(next(pipes), PIPE),
            "[method]pipe.read": lambda rep, k: payload[:k],
            "take-headers": len,
            "give-headers": lambda k: headers[:k],
        }[item.name]

    return resolve


async def run_rows(n: int = 2000) -> None:
    """End to end on both engines: export call, host call, bytes from a host import."""
    wasm = _run_component()
    payload = bytes(MIB)
    notes: list[int] = []

    resolve = run_resolver(payload, notes)
    raw = _engine.compile_component(wasm, use_cache=False)
    stock = _engine.EngineInstance(_engine.LinkPlan(raw), _engine.component_exports(raw), resolve)
    ours = OwnEngineInstance(read_component(wasm), resolve, use_cache=False)
    # the guest's own work: the same core function, called bare (no guest-time
    # accounting: no GuestClock). Our export calls leave the store's fiber parked, and a
    # store with a parked fiber is that fiber's alone (wasmtime's rule, see _fiber): each
    # batch of bare calls stops it first, untimed (the next export call starts a new one,
    # timed: once per batch of N, as an instance called after a synchronous call pays it)
    bare = CoreFunc(ours.store, ours.root.lifted(API, "add").core)
    setup = {"bare": ours.fibers.stop_server}
    engines = {"ours": ours, "stock": stock}
    funcs = {
        k: {
            f: e.func(API, f)
            for f in (
                "add",
                "ping",
                "fetch-len",
                "child-drop",
                "read-len",
                "headers-in",
                "headers-out",
            )
        }
        for k, e in engines.items()
    }

    async def bare_add() -> object:
        return bare([1, 2])

    for reps in (n, 16 * n):
        print(f"-- end to end, N = {reps} (µs per call; bytes: MB/s of a 1 MiB list<u8>)")
        fns: dict[str, Callable[[], Awaitable[object]]] = {"bare": bare_add}
        counts = {"bare": reps}
        for kind, fs in funcs.items():
            fns[f"{kind} add"] = lambda f=fs["add"]: f.call(1, 2)
            fns[f"{kind} ping"] = lambda f=fs["ping"]: f.call(1)
            fns[f"{kind} fetch"] = lambda f=fs["fetch-len"]: f.call(MIB)
            fns[f"{kind} child"] = lambda f=fs["child-drop"]: f.call()
            fns[f"{kind} read"] = lambda f=fs["read-len"]: f.call(16)
            for size in HEADER_SIZES:
                fns[f"{kind} in{size}"] = lambda f=fs["headers-in"], k=size: f.call(k)
                fns[f"{kind} out{size}"] = lambda f=fs["headers-out"], k=size: f.call(k)
                counts[f"{kind} in{size}"] = counts[f"{kind} out{size}"] = max(1, reps // 8)
            counts.update({f"{kind} {what}": reps for what in ("add", "ping", "child", "read")})
            counts[f"{kind} fetch"] = max(1, reps // 100)
        t = {k: v * 1e6 for k, v in (await round_robin(fns, counts, setup=setup)).items()}
        share = {
            kind: (
                t[f"{kind} add"] - t["bare"],
                t[f"{kind} ping"] - t[f"{kind} add"],
                MIB / (t[f"{kind} fetch"] - t[f"{kind} add"]),
                t[f"{kind} child"] - t[f"{kind} add"],
                t[f"{kind} read"] - t[f"{kind} add"],
            )
            for kind in funcs
        }
        o, s = share["ours"], share["stock"]
        print(f"bare core call of add (the guest's own work): {t['bare']:.2f} µs")
        row("sync export add(u32,u32): host share", o[0], s[0], "µs", "goal ≤ 3 (base: stock)")
        row("one host call: host share", o[1], s[1], "µs", "goal ≤ 3 (base: stock)")
        row("borrow -> own host call + its drop: share", o[3], s[3], "µs", "(base: stock)")
        row("borrow -> result<list<u8>> (16 B): share", o[4], s[4], "µs", "(base: stock)")
        row("list<u8> 1 MiB host→guest (import)", o[2], s[2], "MB/s", "goal ≥ 1000 (base: stock)")
        for size in HEADER_SIZES:
            for way, what in (("in", "guest→host (from-list)"), ("out", "host→guest (entries)")):
                ours_us, stock_us = (t[f"{k} {way}{size}"] - t[f"{k} add"] for k in funcs)
                row(f"{size} headers {what}: share", ours_us, stock_us, "µs", "(base: stock)")
    stock.close()
    ours.close()


def parser() -> argparse.ArgumentParser:
    """The command line: no options (``--help`` says what runs)."""
    return argparse.ArgumentParser(
        prog="python -m bench.bench_engine",
        description=__doc__.split("\n")[0] if __doc__ else None,
    )


def main(argv: list[str] | None = None) -> None:
    """Run every row."""
    parser().parse_args(argv)
    abi_rows()
    fiber_rows()
    trio.run(run_rows)


if __name__ == "__main__":
    main()
