"""Review probes, fourth round: last session's changes (the start-function check and
start functions' bounds, a proxy response's declared length, the client's allow-list)
and the WASI filesystem and sockets hosts' handling of values the OS refuses.

Each probe was a bug found, a strict ``xfail`` until it was fixed; now each is a plain
test of the fix (its docstring says what was wrong), asserting what the user should
see. Where wasmtime is named as the reference, its source was read (wasmtime-wasi's p2
host), not run. The last test (the idle timer's cap) is for a bug the review noticed
without a probe.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import start_server
from test_engine_instance import wat_component
from test_engine_startcheck import FOLLOWED
from test_review_probes2 import _HELLO, _RET, _proxy, _raw_exchange

import trio_isyswasfa
from trio_isyswasfa.engine._instance import instance_plan
from trio_isyswasfa.http import ComponentApp

# -- engine/_startcheck.py ------------------------------------------------------------------


def _start_steps(tmp_path: Path, wat: str) -> list[bool]:
    """``sync_start`` of every core instance with a start function (the plan only: an
    instance is not made, as a start function that never ends would hang the test)."""
    plan = instance_plan(wat_component(tmp_path, wat))
    return [s.sync_start for n in plan.nodes for s in n.steps if getattr(s, "has_start", False)]


def test_a_start_function_with_exponentially_many_calls_is_not_inert(tmp_path: Path) -> None:
    """A chain of 40 functions each calling the next twice: 41 functions to read, but
    2**40 calls to run, which on the synchronous path (no epoch yield) would hold the
    event loop, uncancellable; a short such chain stays inert."""
    short = "(func $f0 (call $f1) (call $f1)) (func $f1)"
    wat = FOLLOWED.replace("(func $ctors BODY)", f"(func $ctors (call $f0)) {short}")
    assert _start_steps(tmp_path, wat) == [True]
    n = 40
    chain = "".join(f"(func $f{i} (call $f{i + 1}) (call $f{i + 1}))" for i in range(n))
    wat = FOLLOWED.replace("(func $ctors BODY)", f"(func $ctors (call $f0)) {chain} (func $f{n})")
    assert _start_steps(tmp_path, wat) == [False]


def test_max_run_seconds_bounds_a_start_function(tmp_path: Path) -> None:
    """A start function on the async path (it loops) stops at ``max_run_seconds``: the
    instance does not open."""
    from trio_isyswasfa import GuestTrap, Limits
    from trio_isyswasfa.engine._component import OwnEngineInstance

    # 2**31 rounds of a loop (its `loop` keeps it on the async path): ~1 s here, where
    # the limit is 0.05 s
    count = """(local i32) (local.set 0 (i32.const 0x80000000))
      (loop $l (local.set 0 (i32.add (local.get 0) (i32.const 1)))
        (br_if $l (i32.ne (local.get 0) (i32.const 0))))"""
    component = wat_component(tmp_path, FOLLOWED.replace("BODY", count))
    with pytest.raises(GuestTrap):
        OwnEngineInstance(
            component, lambda item: lambda n: None, limits=Limits(max_run_seconds=0.05)
        ).close()


# -- wasi_http.py: a response's declared length ----------------------------------------------


def _declaring(*lengths: str) -> trio_isyswasfa.Component:
    """A proxy guest answering ``hello`` (5 bytes) with a ``content-length`` field for
    each of ``lengths``."""
    data = f'{_HELLO} (data (i32.const 1100) "content-length")'
    appends = ""
    for i, value in enumerate(lengths):
        data += f' (data (i32.const {1200 + 16 * i}) "{value}")'
        appends += f"""(call $append (local.get $h) (i32.const 1100) (i32.const 14)
      (i32.const {1200 + 16 * i}) (i32.const {len(value)}) (i32.const {_RET}))"""
    return _proxy(
        f"""(local $h i32) (local.set $h (call $fields)) {appends}
    (call $respond (local.get $out) (i32.const 200) (local.get $h) (i32.const 1024)
      (i32.const 5))""",
        data,
    )


async def _answer(component: trio_isyswasfa.Component) -> bytes:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            url = await start_server(nursery, ComponentApp(component))
            answer = await _raw_exchange(
                url, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            )
            nursery.cancel_scope.cancel()
    return answer


async def test_a_repeated_content_length_still_limits_the_body() -> None:
    """A length repeated (RFC 9110 8.6: ``3`` twice, or ``3, 3``) is that length: the
    body is held to it as with one ``content-length: 3``. Of differing lengths the
    first holds the body, as wasmtime reads it, and only it goes out (two would be a
    message no client can frame)."""
    single = await _answer(_declaring("3"))
    assert single.endswith(b"\r\n\r\nhel")  # the reference: cut at its declared length
    for lengths in [("3", "3"), ("3, 3",), ("3", "5")]:
        answer = await _answer(_declaring(*lengths))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.lower().count(b"content-length") == 1, lengths
        assert b"content-length: 3\r\n" in head.lower() + b"\r\n", lengths
        assert body == b"hel", lengths


# -- _client.py: the outgoing allow-list ------------------------------------------------------


def test_an_address_pattern_admits_addresses_not_names() -> None:
    """fnmatch's `*` crosses dots: a user's '10.0.0.*:*' (the addresses 10.0.0.0/24, as
    the sockets allow-list reads it) must not admit a DNS name starting '10.0.0.', which
    the guest's own domain can resolve to any address. Name patterns still match names."""
    from trio_isyswasfa.http import HttpClient

    client = HttpClient(allow=["10.0.0.*:*", "192.168.?.1:80"])
    assert client.allowed("10.0.0.7:80", "http")  # what the pattern is for
    assert client.allowed("192.168.4.1", "http")
    assert not client.allowed("10.0.0.attacker.example:80", "http")
    assert not client.allowed("10.0.0.7.attacker.example:80", "http")
    assert not client.allowed("192.168.x.1:80", "http")
    names = HttpClient(allow=["*:80", "*.example.com:443", "10.0.0.*.example.net:*"])
    assert names.allowed("attacker.example", "http")
    assert names.allowed("api.example.com:443", "https")
    assert names.allowed("10.0.0.7.example.net", "https")


# -- wasi/filesystem.py: values the host cannot pass to the OS --------------------------------


@pytest.fixture
def guest_fs(tmp_path: Path) -> Iterator[tuple[Any, int, int]]:
    """A filesystem as a guest reaches it (its registered host functions), with a
    writable directory and a file in it open read-write: ``(ctx, dir_rep, file_rep)``."""
    from trio_isyswasfa import WasiConfig
    from trio_isyswasfa.wasi._context import WasiContext
    from trio_isyswasfa.wasi.filesystem import Descriptor, WasiFilesystem
    from trio_isyswasfa.wasi.io import WasiIo

    ctx = WasiContext(WasiConfig())
    WasiFilesystem(ctx, WasiIo(ctx))
    (tmp_path / "f").write_bytes(b"abc")
    flags = os.O_RDONLY | os.O_DIRECTORY
    directory = Descriptor(os.open(tmp_path, flags), frozenset({"read", "mutate-directory"}), False)
    file = Descriptor(os.open(tmp_path / "f", os.O_RDWR), frozenset({"read", "write"}), False)
    yield ctx, ctx.table.add(directory), ctx.table.add(file)
    ctx.close()


def _guest_call(ctx: Any, name: str, *args: Any) -> Any:
    """Call ``[method]descriptor.NAME`` as the engine does (a blocking one's waits run)."""
    from trio_isyswasfa._engine import Blocking
    from trio_isyswasfa.wasi.filesystem import TYPES

    fn = ctx.functions[(TYPES, f"[method]descriptor.{name}")]
    if not isinstance(fn, Blocking):
        return fn(*args)
    steps = fn.fn(*args)
    try:
        wait = steps.send(None)
        while True:
            trio.run(wait)
            wait = steps.send(None)
    except StopIteration as stop:
        return stop.value


_TOO_FAR = 2**64 - 1  # (an off_t of -1, as the preview-1 adapter passes it on)


def _write_far(ctx: Any, file: int) -> Any:
    """``write-via-stream`` at offset ``_TOO_FAR``, then a write to the stream and its
    flush (the write goes to the file there)."""
    handle = _guest_call(ctx, "write-via-stream", file, _TOO_FAR)
    stream = getattr(handle, "rep", handle)
    ctx.functions[("wasi:io/streams", "[method]output-stream.write")](stream, b"x")
    return ctx.functions[("wasi:io/streams", "[method]output-stream.flush")](stream)


def _far_future() -> Any:
    from trio_isyswasfa._engine import record, variant

    return variant("timestamp", record(seconds=2**64 - 1, nanoseconds=0))


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda ctx, d, f: _guest_call(ctx, "symlink-at", d, "a\0b", "link"), "invalid"),
        (lambda ctx, d, f: _guest_call(ctx, "read", f, 1, _TOO_FAR), "invalid"),
        (lambda ctx, d, f: _guest_call(ctx, "write", f, b"x", _TOO_FAR), "invalid"),
        (lambda ctx, d, f: _write_far(ctx, f), "invalid"),
        (lambda ctx, d, f: _guest_call(ctx, "read-via-stream", f, _TOO_FAR), "invalid"),
        (lambda ctx, d, f: _guest_call(ctx, "read-via-stream", f, 2**63), "invalid"),
        (lambda ctx, d, f: _guest_call(ctx, "set-size", f, _TOO_FAR), "invalid"),
        (lambda ctx, d, f: _guest_call(ctx, "advise", f, _TOO_FAR, 1, "normal"), "invalid"),
        (
            lambda ctx, d, f: _guest_call(ctx, "set-times", f, _far_future(), _far_future()),
            "overflow",
        ),
    ],
    ids=[
        "symlink-target-with-NUL",
        "read-offset",
        "write-offset",
        "write-via-stream-offset",
        "read-via-stream-offset",
        "read-via-stream-offset-2**63",
        "set-size",
        "advise-offset",
        "set-times-far-future",
    ],
)
def test_a_value_the_os_refuses_is_an_error_code_not_a_trap(
    guest_fs: tuple[Any, int, int], call: Any, code: str
) -> None:
    """os.symlink raises ValueError for a NUL byte in the target (the one guest path
    ``_sandbox.beneath`` does not resolve), and os.pread/pwrite/ftruncate/posix_fadvise/
    utime OverflowError for an offset, size or time past a C off_t/time_t: each must be
    the error code wasmtime answers (``invalid``, ``overflow``), not a trap (the
    instance's death); a read-via-stream that far is no end of stream."""
    from trio_isyswasfa import WasiError

    ctx, dir_rep, file_rep = guest_fs
    with pytest.raises(WasiError) as caught:
        call(ctx, dir_rep, file_rep)
    assert caught.value.code == code


def test_values_the_os_takes_still_work(guest_fs: tuple[Any, int, int], tmp_path: Path) -> None:
    """The limits are the OS's own: an offset far past the end reads nothing, a long advice
    reaches the end of the file, and a time as late as a time_t holds is set (the
    kernel clamps it to what the file system keeps)."""
    from trio_isyswasfa._engine import record, variant

    ctx, dir_rep, file_rep = guest_fs
    assert _guest_call(ctx, "read", file_rep, 1, 2**62) == (b"", True)
    _guest_call(ctx, "advise", file_rep, 0, _TOO_FAR, "normal")
    late = variant("timestamp", record(seconds=2**63 - 2, nanoseconds=0))
    _guest_call(ctx, "set-times", file_rep, late, late)
    assert os.stat(tmp_path / "f").st_mtime > 2**32
    _guest_call(ctx, "symlink-at", dir_rep, "f", "link")
    assert os.readlink(tmp_path / "link") == "f"


# -- wasi/sockets.py ------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1000, 2**32 - 1])
def test_a_large_keep_alive_count_is_clamped(count: int) -> None:
    """Passed to setsockopt as it was, a count past 2**31-1 raised TypeError (the guest
    trapped) and one past Linux's 127 answered invalid-argument; wasmtime clamps it to
    1..127 and succeeds (as the other setters here clamp theirs)."""
    from trio_isyswasfa import WasiConfig, WasiError
    from trio_isyswasfa.wasi._context import WasiContext
    from trio_isyswasfa.wasi.sockets import TCP, WasiSockets

    ctx = WasiContext(WasiConfig(allow_net=["127.0.0.1:*"]))
    WasiSockets(ctx, ctx.config.allow_net)  # type: ignore[arg-type]
    try:
        handle = ctx.functions[("wasi:sockets/tcp-create-socket", "create-tcp-socket")]("ipv4")
        rep = getattr(handle, "rep", handle)
        ctx.functions[(TCP, "[method]tcp-socket.set-keep-alive-count")](rep, count)
        assert ctx.functions[(TCP, "[method]tcp-socket.keep-alive-count")](rep) == 127
        with pytest.raises(WasiError, match="positive"):  # 0 is still refused, as there
            ctx.functions[(TCP, "[method]tcp-socket.set-keep-alive-count")](rep, 0)
    finally:
        ctx.close()


# -- http/_serve.py: the idle timer --------------------------------------------------------


async def test_unread_bytes_spare_an_idle_connection_a_few_times_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A connection's idle timer that runs out with bytes unread and no request begun
    (a request the held-up loop has not read yet) spares the connection, but not each
    time: a client that sends a byte as every round ends (slowloris) is closed after a
    few rounds, where stock hypercorn closes it after one."""
    import socket
    from types import SimpleNamespace

    import hypercorn.trio.run

    from trio_isyswasfa.http import _serve

    _serve._spare_busy_connections()
    server = object.__new__(hypercorn.trio.run.TCPServer)  # type: ignore[attr-defined]
    ours, client = socket.socketpair()
    closed: list[float] = []

    async def close() -> None:
        closed.append(trio.current_time())

    try:
        client.send(b"G")  # never read: unread at the end of every round
        server.config = SimpleNamespace(keep_alive_timeout=5.0)
        server.context = SimpleNamespace(terminated=trio.Event())
        server.stream = SimpleNamespace(socket=ours)
        server._initiate_server_close = close
        start = trio.current_time()
        with trio.fail_after(3600):  # (the clock's: it jumps)
            await server._idle_timeout()
        assert closed == [start + 5.0 * (1 + _serve._IDLE_SPARED)]
        ours.recv(1)  # nothing unread: closed when the first round ends
        await server._idle_timeout()
        assert closed[1] == closed[0] + 5.0
    finally:
        ours.close()
        client.close()
