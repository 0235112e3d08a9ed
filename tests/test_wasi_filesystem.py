"""wasi:filesystem from inside a Python guest: preopens, real files, and the sandbox.

The guest's ``open()`` / ``os.*`` go through CPython's WASI libc and the preview-1
adapter to our wasi:filesystem, as they would on any WASI 0.2 host; the snippets that
use ``types`` call our interface directly.
"""

from __future__ import annotations

import errno
import os
import threading
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
from conftest import LoopTicks

import trio_isyswasfa
from trio_isyswasfa import Preopen
from trio_isyswasfa.testing import assert_quiet, settle
from trio_isyswasfa.wasi import filesystem
from trio_isyswasfa.wasi.filesystem import FILE_CHUNK, FileInputStream, FileOutputStream
from trio_isyswasfa.wasi.io import CHUNK, StreamClosed, StreamFailed, wait_ready

pytestmark = [pytest.mark.guest, pytest.mark.slow]

PROBE = "test:wasi/probe"


async def run(inst: trio_isyswasfa.Instance, code: str) -> str:
    """The repr of the snippet's ``result``; a failure raises AssertionError with its text."""
    outcome = await inst.call(PROBE, "exec", code)
    if isinstance(outcome, trio_isyswasfa.Err):
        raise GuestFailed(outcome.value)
    return outcome.value  # type: ignore[no-any-return]


async def run_async(inst: trio_isyswasfa.Instance, code: str) -> str:
    outcome = await inst.call(PROBE, "exec-async", code)
    if isinstance(outcome, trio_isyswasfa.Err):
        raise GuestFailed(outcome.value)
    return outcome.value  # type: ignore[no-any-return]


# a snippet's first lines: the preopen `root`, and `f`, hello.txt opened for reading
OPEN_HELLO_READ = (
    "(root, _), = preopens.get_directories()\n"
    "f = root.open_at(types.PathFlags(0), 'hello.txt', types.OpenFlags(0),"
    " types.DescriptorFlags.READ)\n"
)


class GuestFailed(Exception):
    pass


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "hello.txt").write_text("hello from the host")
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_text("inner")
    (tmp_path / "secret.txt").write_text("outside the sandbox")
    return root


@pytest.fixture
async def inst(
    wasi_component: trio_isyswasfa.Component, data: Path
) -> AsyncIterator[trio_isyswasfa.Instance]:
    config = trio_isyswasfa.WasiConfig(preopens=[Preopen(data, "/data")])
    async with trio_isyswasfa.open_instance(wasi_component, wasi=config) as instance:
        yield instance


@pytest.fixture
async def ro_inst(
    wasi_component: trio_isyswasfa.Component, data: Path
) -> AsyncIterator[trio_isyswasfa.Instance]:
    config = trio_isyswasfa.WasiConfig(preopens=[Preopen(data, "/data", read_only=True)])
    async with trio_isyswasfa.open_instance(wasi_component, wasi=config) as instance:
        yield instance


class TestFiles:
    async def test_reads_a_host_file(self, inst: trio_isyswasfa.Instance) -> None:
        assert await run(inst, "result = open('/data/hello.txt').read()") == repr(
            "hello from the host"
        )

    async def test_writes_reach_the_host(self, inst: trio_isyswasfa.Instance, data: Path) -> None:
        await run(inst, "with open('/data/new.txt', 'w') as f: f.write('x' * 100_000)")
        assert (data / "new.txt").read_text() == "x" * 100_000
        await run(inst, "with open('/data/new.txt', 'a') as f: f.write('tail')")
        assert (data / "new.txt").read_text().endswith("xtail")

    async def test_lists_directories_with_types(self, inst: trio_isyswasfa.Instance) -> None:
        listing = await run(
            inst, "result = sorted((e.name, e.is_dir()) for e in os.scandir('/data'))"
        )
        assert listing == repr([("hello.txt", False), ("sub", True)])

    async def test_stat_sizes_and_times(self, inst: trio_isyswasfa.Instance, data: Path) -> None:
        os.utime(data / "hello.txt", (1_000_000, 2_000_000))
        stat = await run(
            inst, "s = os.stat('/data/hello.txt'); result = (s.st_size, s.st_atime, s.st_mtime)"
        )
        assert stat == repr((len("hello from the host"), 1_000_000.0, 2_000_000.0))

    async def test_make_and_remove_directories(
        self, inst: trio_isyswasfa.Instance, data: Path
    ) -> None:
        await run(
            inst,
            "os.mkdir('/data/made'); os.remove('/data/sub/inner.txt'); os.rmdir('/data/sub')",
        )
        assert (data / "made").is_dir()
        assert not (data / "sub").exists()

    async def test_rename(self, inst: trio_isyswasfa.Instance, data: Path) -> None:
        await run(inst, "os.mkdir('/data/made'); os.rename('/data/hello.txt', '/data/made/moved')")
        assert (data / "made" / "moved").read_text() == "hello from the host"

    async def test_errors_carry_their_codes(self, inst: trio_isyswasfa.Instance) -> None:
        with pytest.raises(GuestFailed, match="FileNotFoundError"):
            await run(inst, "open('/data/missing.txt')")
        with pytest.raises(GuestFailed, match="FileExistsError"):
            await run(inst, "os.mkdir('/data/sub')")
        with pytest.raises(GuestFailed, match="OSError: Directory not empty"):
            await run(inst, "os.rmdir('/data/sub')")
        with pytest.raises(GuestFailed, match="NotADirectoryError"):
            await run(inst, "os.listdir('/data/hello.txt')")

    async def test_symlinks_inside_the_preopen_work(
        self, inst: trio_isyswasfa.Instance, data: Path
    ) -> None:
        await run(inst, "os.symlink('sub/inner.txt', '/data/link')")
        assert os.readlink(data / "link") == "sub/inner.txt"
        assert await run(
            inst, "result = (os.readlink('/data/link'), open('/data/link').read())"
        ) == (repr(("sub/inner.txt", "inner")))
        (data / "sub" / "up").symlink_to("../hello.txt")
        assert await run(inst, "result = open('/data/sub/up').read()") == repr(
            "hello from the host"
        )

    async def test_truncate(self, inst: trio_isyswasfa.Instance, data: Path) -> None:
        await run(inst, "os.truncate('/data/hello.txt', 5)")
        assert (data / "hello.txt").read_text() == "hello"

    async def test_hard_links(self, inst: trio_isyswasfa.Instance, data: Path) -> None:
        await run(inst, "os.link('/data/hello.txt', '/data/again.txt')")
        assert (data / "again.txt").stat().st_ino == (data / "hello.txt").stat().st_ino


class TestSandbox:
    async def test_dot_dot_cannot_leave_the_preopen(self, inst: trio_isyswasfa.Instance) -> None:
        with pytest.raises(GuestFailed, match="PermissionError"):
            await run(inst, "open('/data/../secret.txt').read()")
        with pytest.raises(GuestFailed, match="PermissionError"):
            await run(inst, "open('/data/sub/../../secret.txt').read()")

    async def test_absolute_paths_outside_preopens_do_not_exist(
        self, inst: trio_isyswasfa.Instance, data: Path
    ) -> None:
        secret = data.parent / "secret.txt"
        with pytest.raises(GuestFailed, match="FileNotFoundError"):
            await run(inst, f"open({str(secret)!r}).read()")

    async def test_absolute_path_through_the_interface_is_refused(
        self, inst: trio_isyswasfa.Instance, data: Path
    ) -> None:
        secret = data.parent / "secret.txt"
        code = (
            "(root, _), = preopens.get_directories()\n"
            f"root.open_at(types.PathFlags(0), {str(secret)!r}, types.OpenFlags(0),"
            " types.DescriptorFlags.READ)"
        )
        with pytest.raises(GuestFailed, match="NOT_PERMITTED"):
            await run(inst, code)

    async def test_symlink_pointing_out_is_refused(
        self, inst: trio_isyswasfa.Instance, data: Path
    ) -> None:
        (data / "escape").symlink_to(data.parent / "secret.txt")
        (data / "escape-dir").symlink_to(data.parent)
        (data / "sneaky").symlink_to("../secret.txt")
        for path in ("/data/escape", "/data/escape-dir/secret.txt", "/data/sneaky"):
            with pytest.raises(GuestFailed, match="PermissionError"):
                await run(inst, f"open({path!r}).read()")

    async def test_guest_cannot_plant_an_absolute_symlink(
        self, inst: trio_isyswasfa.Instance, data: Path
    ) -> None:
        with pytest.raises(GuestFailed, match="PermissionError"):
            await run(inst, "os.symlink('/etc/passwd', '/data/planted')")
        assert not (data / "planted").exists()

    async def test_read_only_preopen_refuses_every_change(
        self, ro_inst: trio_isyswasfa.Instance, data: Path
    ) -> None:
        assert await run(ro_inst, "result = open('/data/hello.txt').read()") == repr(
            "hello from the host"
        )
        attempts = [
            "open('/data/hello.txt', 'w')",
            "open('/data/hello.txt', 'a')",
            "open('/data/new.txt', 'x')",
            "os.mkdir('/data/dir')",
            "os.remove('/data/hello.txt')",
            "os.symlink('hello.txt', '/data/link')",
            "os.rmdir('/data/sub')",
            "os.truncate('/data/hello.txt', 0)",
            "os.utime('/data/hello.txt', (1, 1))",
        ]
        for code in attempts:
            with pytest.raises(GuestFailed, match="Read-only file system"):
                await run(ro_inst, code)
        assert sorted(os.listdir(data)) == ["hello.txt", "sub"]
        assert (data / "hello.txt").read_text() == "hello from the host"

    def test_missing_preopen_is_a_clear_error(self, tmp_path: Path) -> None:
        with pytest.raises(trio_isyswasfa.HostProtocolError, match="does not exist"):
            Preopen(tmp_path / "nope")
        (tmp_path / "file").write_text("")
        with pytest.raises(trio_isyswasfa.HostProtocolError, match="is not a directory"):
            Preopen(tmp_path / "file")

    @pytest.mark.parametrize("spec", ["", "::guest", "host::"])
    def test_malformed_dir_spec(self, spec: str) -> None:
        with pytest.raises(trio_isyswasfa.HostProtocolError, match="HOST_PATH"):
            Preopen.parse(spec)


class TestInterface:
    async def test_types_flags_and_identity(self, inst: trio_isyswasfa.Instance) -> None:
        code = (
            "(root, name), = preopens.get_directories()\n"
            "f = root.open_at(types.PathFlags(0), 'sub/../hello.txt', types.OpenFlags(0),"
            " types.DescriptorFlags.READ)\n"
            "g = root.open_at(types.PathFlags(0), 'hello.txt', types.OpenFlags(0),"
            " types.DescriptorFlags.READ)\n"
            "result = (name, root.get_type().name, f.get_type().name,"
            " f.metadata_hash() == g.metadata_hash(), f.metadata_hash() != root.metadata_hash(),"
            " root.metadata_hash_at(types.PathFlags(0), 'hello.txt') == f.metadata_hash(),"
            " sorted(x.name for x in types.DescriptorFlags if x in f.get_flags()))"
        )
        assert await run(inst, code) == repr(
            ("/data", "DIRECTORY", "REGULAR_FILE", True, True, True, ["READ"])
        )

    async def test_is_same_object(self, inst: trio_isyswasfa.Instance) -> None:
        code = (
            "(root, _), = preopens.get_directories()\n"
            "(again, _), = preopens.get_directories()\n"
            "f = root.open_at(types.PathFlags(0), 'hello.txt', types.OpenFlags(0),"
            " types.DescriptorFlags.READ)\n"
            "result = (root.is_same_object(again), root.is_same_object(f))"
        )
        assert await run(inst, code) == repr((True, False))

    async def test_a_descriptor_of_the_wrong_kind_gets_an_error_code(
        self, inst: trio_isyswasfa.Instance
    ) -> None:
        code = (
            OPEN_HELLO_READ + "def outcome(op):\n"
            "    try:\n"
            "        op()\n"
            "        return 'ok'\n"
            "    except Err as e:\n"
            "        return e.value.name\n"
            "result = [outcome(lambda: f.open_at(types.PathFlags(0), 'x', types.OpenFlags(0),"
            " types.DescriptorFlags.READ)),\n"
            "          outcome(lambda: f.read_directory()),\n"
            "          outcome(lambda: root.read(10, 0)),\n"
            "          outcome(lambda: f.write(b'no', 0))]"
        )
        assert await run(inst, code) == repr(
            ["NOT_DIRECTORY", "NOT_DIRECTORY", "BAD_DESCRIPTOR", "BAD_DESCRIPTOR"]
        )

    async def test_direct_read_and_write(self, inst: trio_isyswasfa.Instance, data: Path) -> None:
        code = (
            "(root, _), = preopens.get_directories()\n"
            "rw = types.DescriptorFlags.READ | types.DescriptorFlags.WRITE\n"
            "f = root.open_at(types.PathFlags(0), 'direct.bin', types.OpenFlags.CREATE, rw)\n"
            "n = f.write(b'0123456789', 0)\n"
            "result = (n, f.read(4, 3), f.read(100, 8), f.read(100, 10), f.stat().size)"
        )
        # as wasmtime: the end is a read that finds nothing
        assert await run(inst, code) == repr(
            (10, (b"3456", False), (b"89", False), (b"", True), 10)
        )
        assert (data / "direct.bin").read_bytes() == b"0123456789"

    async def test_writing_through_a_read_descriptor_is_refused(
        self, inst: trio_isyswasfa.Instance
    ) -> None:
        code = OPEN_HELLO_READ + "f.write(b'x', 0)"
        with pytest.raises(GuestFailed, match="BAD_DESCRIPTOR"):
            await run(inst, code)

    async def test_directory_entries(self, inst: trio_isyswasfa.Instance) -> None:
        code = (
            "(root, _), = preopens.get_directories()\n"
            "entries = root.read_directory()\n"
            "out = []\n"
            "while (e := entries.read_directory_entry()) is not None:\n"
            "    out.append((e.name, e.type.name))\n"
            "result = sorted(out)"
        )
        assert await run(inst, code) == repr([("hello.txt", "REGULAR_FILE"), ("sub", "DIRECTORY")])

    async def test_file_error_codes_through_a_file_descriptor(
        self, inst: trio_isyswasfa.Instance
    ) -> None:
        code = (
            OPEN_HELLO_READ
            + "f.open_at(types.PathFlags(0), 'x', types.OpenFlags(0), types.DescriptorFlags.READ)"
        )
        with pytest.raises(GuestFailed, match="NOT_DIRECTORY"):
            await run(inst, code)

    async def test_a_descriptor_of_the_wrong_kind_is_an_error_code(
        self, inst: trio_isyswasfa.Instance
    ) -> None:
        opened = (
            "(root, _), = preopens.get_directories()\n"
            "f = root.open_at(types.PathFlags(0), 'hello.txt', types.OpenFlags(0),"
            " types.DescriptorFlags.READ)\n"
        )
        with pytest.raises(GuestFailed, match="IS_DIRECTORY"):
            await run(inst, opened + "root.read_via_stream(0)")
        with pytest.raises(GuestFailed, match="NOT_DIRECTORY"):
            await run(inst, opened + "f.read_directory()")
        with pytest.raises(GuestFailed, match="NOT_DIRECTORY"):
            await run(inst, opened + "f.create_directory_at('x')")
        # the instance is fine afterwards
        assert await run(inst, "result = open('/data/hello.txt').read()") == repr(
            "hello from the host"
        )


needs_nowait = pytest.mark.skipif(
    filesystem._NOWAIT is None, reason="no RWF_NOWAIT here: every file is read in a thread"
)


@pytest.fixture
def cold_cache(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The page cache holds nothing (as after a reboot): a read that must not wait for
    the disk finds nothing. Lists the threads that read the disk."""
    real = os.preadv
    readers: list[str] = []

    def preadv(fd: int, buffers: Any, offset: int, flags: int = 0) -> int:
        if flags & (filesystem._NOWAIT or 0):
            raise BlockingIOError(errno.EAGAIN, "not in the page cache")
        readers.append(threading.current_thread().name)
        return real(fd, buffers, offset, flags)

    def pread(fd: int, n: int, offset: int) -> bytes:
        readers.append(threading.current_thread().name)
        return real_pread(fd, n, offset)

    real_pread = os.pread
    monkeypatch.setattr(os, "preadv", preadv)
    monkeypatch.setattr(os, "pread", pread)
    return readers


@pytest.fixture
def loop_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Each ``os.preadv``: the thread it ran on and how many bytes it read."""
    real = os.preadv
    reads: list[tuple[str, int]] = []

    def preadv(fd: int, buffers: Any, offset: int, flags: int = 0) -> int:
        n = real(fd, buffers, offset, flags)
        reads.append((threading.current_thread().name, n))
        return n

    monkeypatch.setattr(os, "preadv", preadv)
    return reads


class TestStreams:
    @needs_nowait
    async def test_a_cached_file_is_read_on_the_loop_a_mib_per_call(
        self,
        inst: trio_isyswasfa.Instance,
        data: Path,
        loop_reads: list[tuple[str, int]],
        engine: str,
    ) -> None:
        blob = os.urandom(3 << 20)
        (data / "big.bin").write_bytes(blob)
        code = (
            "import zlib\n"
            + OPEN_HELLO_READ.replace("hello.txt", "big.bin")
            + (
                "s = f.read_via_stream(0)\n"
                "a = s.read(4 << 20)\n"
                "b = s.blocking_read(4 << 20)\n"
                "c = s.read(4 << 20)\n"
                "try:\n"
                "    s.read(1)\n"
                "    end = 'more'\n"
                "except Err as e:\n"
                "    end = type(e.value).__name__\n"
                "result = ([len(a), len(b), len(c)], zlib.crc32(a + b + c), end)"
            )
        )
        if engine != "own":  # the stock engine's list conversion takes 64 KiB at a time
            blob = blob[: 3 * CHUNK]
            (data / "big.bin").write_bytes(blob)
        sizes, crc, end = eval(await run(inst, code))
        # bounded per call, whatever the guest asks
        assert sizes == [FILE_CHUNK if engine == "own" else CHUNK] * 3
        assert crc == zlib.crc32(blob)
        assert end == "StreamError_Closed"
        # no worker thread: each read went from the page cache into the guest at once
        assert {thread for thread, n in loop_reads} == {threading.current_thread().name}
        assert sum(n for _, n in loop_reads if n > 1) == len(blob)

    async def test_plain_python_reading_a_huge_file_leaves_the_loop_free(
        self, inst: trio_isyswasfa.Instance, data: Path, cold_cache: list[str]
    ) -> None:
        # open().read() of a file on disk: each chunk the page cache does not hold is
        # read in a worker thread while the guest is suspended, so other tasks run
        blob = os.urandom(16 << 20)
        (data / "big.bin").write_bytes(blob)
        code = (
            "import zlib\nwith open('/data/big.bin', 'rb') as f:\n    result = zlib.crc32(f.read())"
        )
        ticks = LoopTicks(interval=0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticks.run)
            crc = int(await run(inst, code))
            nursery.cancel_scope.cancel()
        assert crc == zlib.crc32(blob)
        assert ticks.count >= 16  # at least once per 1 MiB chunk
        assert threading.current_thread().name not in cold_cache  # never on the loop

    async def test_huge_file_streams_without_starving_the_loop(
        self, inst: trio_isyswasfa.Instance, data: Path, cold_cache: list[str]
    ) -> None:
        blob = os.urandom(4 << 20)
        (data / "big.bin").write_bytes(blob)
        code = """
import zlib
async def main():
    (root, _), = preopens.get_directories()
    crc = n = 0
    with root, root.open_at(
        types.PathFlags(0), 'big.bin', types.OpenFlags(0), types.DescriptorFlags.READ
    ) as f, f.read_via_stream(0) as stream:
        while (chunk := await read(stream)) is not None:
            crc = zlib.crc32(chunk, crc)
            n += 1
    return (crc, n)
"""
        ticks = LoopTicks(interval=0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticks.run)
            crc, chunks = eval(await run_async(inst, code))
            nursery.cancel_scope.cancel()
        assert crc == zlib.crc32(blob)
        assert chunks == 64  # 4 MiB in 64 KiB reads
        # each MiB was read in a worker thread while the loop ran other tasks
        assert ticks.count >= 4
        await settle(inst)
        assert_quiet(inst)

    async def test_direct_reads_and_writes_run_in_a_worker_thread(
        self, inst: trio_isyswasfa.Instance, data: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # a disk slow to write (as a network file system can be): the guest's pwrite
        # waits in a worker thread, and the event loop runs on meanwhile
        real = os.pwrite

        def slow_pwrite(fd: int, buffer: bytes, offset: int) -> int:
            time.sleep(0.3)
            return real(fd, buffer, offset)

        monkeypatch.setattr(os, "pwrite", slow_pwrite)
        code = (
            "fd = os.open('/data/direct.bin', os.O_RDWR | os.O_CREAT)\n"
            "os.pwrite(fd, b'written directly', 0)\n"
            "result = os.pread(fd, 100, 0)\n"
            "os.close(fd)"
        )
        ticks = LoopTicks()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticks.run)
            assert await run(inst, code) == repr(b"written directly")
            nursery.cancel_scope.cancel()
        assert (data / "direct.bin").read_bytes() == b"written directly"
        assert ticks.count >= 10

    async def test_a_file_opened_for_a_cancelled_call_is_not_leaked(
        self,
        wasi_component: trio_isyswasfa.Component,
        data: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # the caller gives up while open-at runs in its thread: the thread finishes and
        # the guest's call ends, the cancellation takes effect then, and nothing the
        # call opened is leaked
        (data / "slow.txt").write_text("x")
        real = os.open

        def slow_open(path: Any, *args: Any, **kwargs: Any) -> int:
            if path == "slow.txt":
                time.sleep(0.3)
            return real(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", slow_open)
        config = trio_isyswasfa.WasiConfig(preopens=[Preopen(data, "/data")])
        open_fds = len(os.listdir("/proc/self/fd"))
        async with trio_isyswasfa.open_instance(wasi_component, wasi=config) as inst:
            await run(inst, "result = 1")  # the preopen is open
            with trio.move_on_after(0.1):
                await run(inst, "f = open('/data/slow.txt')")
            assert await run(inst, "result = 1") == "1"  # the instance lives on
        assert len(os.listdir("/proc/self/fd")) == open_fds

    async def test_opening_a_fifo_waits_for_its_writer_without_the_loop(
        self, inst: trio_isyswasfa.Instance, data: Path
    ) -> None:
        # open() of a FIFO blocks until a writer comes; here the writer is another task
        os.mkfifo(data / "fifo")
        ticks = LoopTicks()

        def write_fifo() -> None:
            with open(data / "fifo", "wb"):
                pass  # opening is what the guest waits for

        async def writer() -> None:
            await trio.sleep(0.3)
            await trio.to_thread.run_sync(write_fifo)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticks.run)
            nursery.start_soon(writer)
            code = "with open('/data/fifo', 'rb') as f:\n    result = 'opened'"
            with trio.fail_after(5):
                assert await run(inst, code) == repr("opened")
            nursery.cancel_scope.cancel()
        assert ticks.count >= 10

    async def test_write_via_stream_waits_for_the_disk(
        self, inst: trio_isyswasfa.Instance, data: Path
    ) -> None:
        code = """
async def main():
    (root, _), = preopens.get_directories()
    flags = types.DescriptorFlags.READ | types.DescriptorFlags.WRITE
    with root, root.open_at(types.PathFlags(0), 'out.bin', types.OpenFlags.CREATE, flags) as f:
        with f.write_via_stream(0) as stream:
            await write_all(stream, bytes(range(256)) * 1000)
        with f.append_via_stream() as stream:
            await write_all(stream, b'end')
        return f.stat().size
"""
        assert await run_async(inst, code) == repr(256_003)
        assert (data / "out.bin").read_bytes() == bytes(range(256)) * 1000 + b"end"
        await settle(inst)
        assert_quiet(inst)


class TestFileStreamsOnTheHost:
    """How file streams move bytes, without a guest: which reads and writes run on the
    event loop's thread, and which wait in a worker thread."""

    @staticmethod
    def read_all(stream: FileInputStream, n: int) -> bytes:
        data = stream.read_into_guest(n)
        return data if isinstance(data, bytes) else data.to_bytes()

    @staticmethod
    def stream_of(path: Path, data: bytes, offset: int = 0) -> FileInputStream:
        """A file holding ``data``, read from ``offset`` through a stream of its own
        descriptor (the one opened here is closed at once)."""
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        stream = FileInputStream(fd, offset)
        os.close(fd)
        return stream

    @needs_nowait
    async def test_a_cached_read_fills_the_guests_block_from_the_offset(
        self, tmp_path: Path
    ) -> None:
        stream = self.stream_of(tmp_path / "f.bin", b"0123456789", 2)
        assert stream.read_into_guest(0) == b""  # nothing asked: not the end
        first = stream.read_into_guest(5)
        assert not isinstance(first, bytes)
        assert first.size == 5
        assert first.to_bytes() == b"23456"
        assert self.read_all(stream, 100) == b"789"  # no more than the file holds
        with pytest.raises(StreamClosed):
            stream.read_into_guest(100)
        stream.close()

    @needs_nowait
    async def test_what_the_cache_does_not_hold_is_read_in_a_worker_thread(
        self, tmp_path: Path, cold_cache: list[str]
    ) -> None:
        stream = self.stream_of(tmp_path / "f.bin", b"x" * 100)
        assert stream.read_into_guest(10) == b""  # the loop never waits for the disk
        assert cold_cache == []
        await wait_ready(stream.subscribe())
        assert stream.read(10) == b"x" * 10
        assert self.read_all(stream, 1000) == b"x" * 90
        assert cold_cache
        assert threading.current_thread().name not in cold_cache
        stream.close()

    async def test_a_fifo_is_never_read_on_the_loop(self, tmp_path: Path) -> None:
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer too: opening does not wait
        try:
            os.write(fd, b"piped")
            stream = FileInputStream(fd, 0)
            assert stream.max_read == CHUNK
            # nothing read here: a read of a FIFO may wait, so it is the worker thread's
            assert stream.read_into_guest(10) == b""
            assert os.read(fd, 10) == b"piped"
            stream.close()
        finally:
            os.close(fd)

    @needs_nowait
    async def test_a_read_that_fails_is_the_next_reads_failure(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        stream = self.stream_of(tmp_path / "f.bin", b"x" * 100)
        pending = stream.read_into_guest(10)
        assert not isinstance(pending, bytes)

        def failing(*args: Any) -> int:
            raise OSError(errno.EIO, "the disk broke")

        monkeypatch.setattr(os, "preadv", failing)
        assert pending.to_bytes() == b""  # the fill does not raise into the engine
        with pytest.raises(StreamFailed) as failed:
            stream.read_into_guest(10)
        assert failed.value.code == "io"
        stream.close()

    async def test_a_small_flush_to_a_regular_file_is_written_at_once(self, tmp_path: Path) -> None:
        path = tmp_path / "out.bin"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)
        stream = FileOutputStream(fd, 0)
        os.close(fd)
        assert stream.check_write() == FILE_CHUNK
        stream.write(b"y" * CHUNK)
        stream.flush()
        assert path.read_bytes() == b"y" * CHUNK  # no worker thread, no wait
        assert stream.subscribe().ready()
        stream.write(b"z" * (CHUNK + 1))  # more may wait for the kernel: a worker thread
        stream.flush()
        assert not stream.subscribe().ready()
        await wait_ready(stream.subscribe())
        assert path.read_bytes() == b"y" * CHUNK + b"z" * (CHUNK + 1)
        stream.close()

    async def test_a_fifo_is_never_written_on_the_loop(self, tmp_path: Path) -> None:
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # its reader, never blocking
        try:
            stream = FileOutputStream(fd, None)
            assert stream.check_write() == CHUNK
            stream.write(b"hi")
            stream.flush()
            # not written here: a write to a FIFO may wait, so it is the worker thread's
            with pytest.raises(BlockingIOError):
                os.read(fd, 10)
            assert not stream.subscribe().ready()
            stream.close()
        finally:
            os.close(fd)


# a snippet's first lines for calls through the interface: the preopen `root`, short
# names for flags, and `outcome(f)`: "ok", or the name of the error code f() raised
INTERFACE = (
    "(root, _), = preopens.get_directories()\n"
    "P0 = types.PathFlags(0)\n"
    "O0 = types.OpenFlags(0)\n"
    "DIR = types.OpenFlags.DIRECTORY\n"
    "CREATE = types.OpenFlags.CREATE\n"
    "R = types.DescriptorFlags.READ\n"
    "W = types.DescriptorFlags.WRITE\n"
    "M = types.DescriptorFlags.MUTATE_DIRECTORY\n"
    "NOW = types.NewTimestamp_Now()\n"
    "def outcome(f):\n"
    "    try:\n"
    "        f()\n"
    "        return 'ok'\n"
    "    except Err as e:\n"
    "        return e.value.name\n"
)


def tree(root: Path) -> list[str]:
    """Every path beneath ``root``, relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


class TestPermissionsPassDown:
    """A directory opened with ``open-at`` has the permissions of the one it was opened
    from, whatever flags it asked for: the preview-1 adapter never asks for
    ``mutate-directory``, and wasmtime lets such a directory be changed."""

    async def test_a_subdirectory_opened_without_mutate_can_be_changed(
        self, inst: trio_isyswasfa.Instance, data: Path
    ) -> None:
        code = INTERFACE + (
            "sub = root.open_at(P0, 'sub', DIR, R)\n"
            "dot = root.open_at(P0, '.', DIR, R)\n"
            "deeper = (sub.create_directory_at('made'), sub.open_at(P0, 'made', DIR, R))[1]\n"
            "result = [outcome(lambda: dot.create_directory_at('top')),\n"
            "          outcome(lambda: deeper.create_directory_at('nested')),\n"
            "          outcome(lambda: sub.rename_at('inner.txt', deeper, 'moved.txt')),\n"
            "          outcome(lambda: sub.symlink_at('made', 'link')),\n"
            "          outcome(lambda: sub.unlink_file_at('link')),\n"
            "          outcome(lambda: deeper.open_at(P0, 'new.txt', CREATE, R | W)),\n"
            "          outcome(lambda: sub.set_times_at(P0, 'made', NOW, NOW)),\n"
            "          sorted(f.name for f in types.DescriptorFlags if f in sub.get_flags())]"
        )
        assert await run(inst, code) == repr(["ok"] * 7 + [["READ"]])
        assert tree(data) == [
            "hello.txt",
            "sub",
            "sub/made",
            "sub/made/moved.txt",
            "sub/made/nested",
            "sub/made/new.txt",
            "top",
        ]

    async def test_plain_python_changes_a_directory_it_opened(
        self, inst: trio_isyswasfa.Instance, data: Path
    ) -> None:
        # what a C or Rust program does through the adapter: openat(dir) then mkdirat
        code = (
            "fd = os.open('/data/sub', os.O_RDONLY | os.O_DIRECTORY)\n"
            "os.mkdir('made', dir_fd=fd)\n"
            "os.rename('inner.txt', 'made/inner.txt', src_dir_fd=fd, dst_dir_fd=fd)\n"
            "os.close(fd)"
        )
        await run(inst, code)
        assert tree(data) == ["hello.txt", "sub", "sub/made", "sub/made/inner.txt"]

    async def test_a_read_only_preopen_is_read_only_all_the_way_down(
        self, ro_inst: trio_isyswasfa.Instance, data: Path
    ) -> None:
        (data / "sub" / "deeper").mkdir()
        before = tree(data)
        code = INTERFACE + (
            "result = []\n"
            "for d in (root, root.open_at(P0, '.', DIR, R), root.open_at(P0, 'sub', DIR, R | M),\n"
            "          root.open_at(P0, 'sub', DIR, R).open_at(P0, 'deeper', DIR, R | M)):\n"
            "    result += [outcome(lambda: d.create_directory_at('x')),\n"
            "               outcome(lambda: d.open_at(P0, 'x', CREATE, R)),\n"
            "               outcome(lambda: d.symlink_at('.', 'x')),\n"
            "               outcome(lambda: d.set_times(NOW, NOW)),\n"
            "               outcome(lambda: d.set_times_at(P0, '.', NOW, NOW))]\n"
            "sub = root.open_at(P0, 'sub', DIR, R)\n"
            "result += [outcome(lambda: sub.unlink_file_at('inner.txt')),\n"
            "           outcome(lambda: sub.remove_directory_at('deeper')),\n"
            "           outcome(lambda: sub.rename_at('inner.txt', sub, 'moved')),\n"
            "           outcome(lambda: sub.link_at(P0, 'inner.txt', sub, 'again')),\n"
            "           outcome(lambda: sub.open_at(P0, 'inner.txt', types.OpenFlags.TRUNCATE, R)),\n"
            "           outcome(lambda: sub.open_at(P0, 'inner.txt', O0, W))]"
        )
        assert await run(ro_inst, code) == repr(["READ_ONLY"] * 26)
        assert tree(data) == before
        assert (data / "sub" / "inner.txt").read_text() == "inner"


class TestPathsLikeWasmtime:
    """Path edge cases answer as wasmtime's own host does (checked side by side with
    ``wasmtime.component.Linker.add_wasip2()`` on the same snippets)."""

    @pytest.mark.parametrize(
        ("call", "code"),
        [
            ("root.unlink_file_at('hello.txt/')", "NOT_DIRECTORY"),
            ("root.unlink_file_at('sub/inner.txt/')", "NOT_DIRECTORY"),
            ("root.unlink_file_at('missing/')", "NO_ENTRY"),
            ("root.unlink_file_at('sub/')", "IS_DIRECTORY"),
            ("root.unlink_file_at('to-file/')", "NOT_DIRECTORY"),
            ("root.unlink_file_at('to-sub/')", "IS_DIRECTORY"),
            ("root.symlink_at('hello.txt', 'link/')", "NO_ENTRY"),
            ("root.symlink_at('hello.txt', 'sub/')", "EXIST"),
            ("root.link_at(P0, 'hello.txt', root, 'link/')", "NO_ENTRY"),
            ("root.link_at(P0, 'hello.txt/', root, 'link')", "NOT_DIRECTORY"),
            ("root.link_at(types.PathFlags.SYMLINK_FOLLOW, 'to-file', root, 'x')", "INVALID"),
            ("root.open_at(P0, 'sub/inner.txt/', O0, R)", "NOT_DIRECTORY"),
            ("root.open_at(P0, 'sub/inner.txt//', O0, R)", "NOT_DIRECTORY"),
            ("root.open_at(P0, 'hello.txt/.', O0, R)", "NOT_DIRECTORY"),
            ("root.open_at(P0, 'new/', CREATE, R | W)", "IS_DIRECTORY"),
            ("root.open_at(types.PathFlags.SYMLINK_FOLLOW, 'to-slash', O0, R)", "NOT_DIRECTORY"),
            ("root.open_at(P0, '.', DIR, R | W)", "IS_DIRECTORY"),
            ("root.open_at(P0, 'sub', DIR, W)", "IS_DIRECTORY"),
            ("root.open_at(P0, 'sub', DIR | types.OpenFlags.EXCLUSIVE, R)", "INVALID"),
            ("root.open_at(P0, 'sub', DIR | CREATE, R)", "INVALID"),
            ("root.stat_at(P0, 'hello.txt/')", "NOT_DIRECTORY"),
            ("root.stat_at(P0, 'dangling/')", "NO_ENTRY"),
            ("root.readlink_at('to-file/')", "NOT_DIRECTORY"),
            ("root.readlink_at('to-sub/')", "INVALID"),
            ("root.remove_directory_at('sub/')", "INVALID"),
            ("root.remove_directory_at('hello.txt/')", "NOT_DIRECTORY"),
            ("root.rename_at('hello.txt/', root, 'x')", "NOT_DIRECTORY"),
            ("root.rename_at('hello.txt', root, 'x/')", "NOT_DIRECTORY"),
            ("root.rename_at('to-sub/', root, 'x')", "NOT_DIRECTORY"),
            ("root.create_directory_at('dangling/')", "EXIST"),
            ("root.read(1, 0)", "BAD_DESCRIPTOR"),
            ("root.write(b'x', 0)", "BAD_DESCRIPTOR"),
            ("root.set_size(0)", "BAD_DESCRIPTOR"),
            ("root.advise(0, 1, types.Advice.NORMAL)", "BAD_DESCRIPTOR"),
            ("root.write_via_stream(0)", "BAD_DESCRIPTOR"),
            ("root.append_via_stream()", "BAD_DESCRIPTOR"),
            ("root.read_via_stream(0)", "IS_DIRECTORY"),
            ("root.open_at(P0, 'to-file', O0, R)", "LOOP"),
            ("root.open_at(P0, 'dangling', CREATE, R | W)", "LOOP"),
            ("root.stat_at(types.PathFlags.SYMLINK_FOLLOW, 'chain-0')", "LOOP"),
            ("root.open_at(types.PathFlags.SYMLINK_FOLLOW, 'chain-0', O0, R)", "LOOP"),
            ("root.stat_at(P0, 'hello\\0.txt')", "INVALID"),
            ("root.open_at(P0, 'sub\\0', O0, R)", "INVALID"),
        ],
    )
    async def test_refused_and_nothing_changes(
        self, inst: trio_isyswasfa.Instance, data: Path, call: str, code: str
    ) -> None:
        (data / "to-file").symlink_to("hello.txt")
        (data / "to-sub").symlink_to("sub")
        (data / "dangling").symlink_to("nowhere")
        (data / "to-slash").symlink_to("hello.txt/")
        for i in range(41):  # one link more than Linux (and wasmtime) follow
            (data / f"chain-{i}").symlink_to(f"chain-{i + 1}" if i < 40 else "hello.txt")
        before = tree(data)
        snippet = INTERFACE + f"result = outcome(lambda: {call})"
        assert await run(inst, snippet) == repr(code)
        assert tree(data) == before

    @pytest.mark.parametrize(
        "call",
        [
            "root.set_times_at(P0, 'missing', types.NewTimestamp_NoChange(),"
            " types.NewTimestamp_NoChange())",
            "root.open_at(P0, 'hello.txt', O0, W).advise(0, 1, types.Advice.SEQUENTIAL)",
        ],
    )
    async def test_succeeds(self, inst: trio_isyswasfa.Instance, call: str) -> None:
        assert await run(inst, INTERFACE + f"result = outcome(lambda: {call})") == repr("ok")

    async def test_forty_links_are_followed(
        self, inst: trio_isyswasfa.Instance, data: Path
    ) -> None:
        for i in range(40):
            (data / f"chain-{i}").symlink_to(f"chain-{i + 1}" if i < 39 else "hello.txt")
        code = (
            INTERFACE + "result = root.stat_at(types.PathFlags.SYMLINK_FOLLOW, 'chain-0').type.name"
        )
        assert await run(inst, code) == repr("REGULAR_FILE")

    @pytest.mark.parametrize(
        ("call", "made"),
        [
            ("root.create_directory_at('made/')", "made"),
            ("root.rename_at('sub/', root, 'moved/')", "moved"),
            ("root.open_at(P0, 'sub/', O0, R)", None),
            ("root.stat_at(P0, 'to-sub/')", None),
        ],
    )
    async def test_a_trailing_slash_on_a_directory_is_fine(
        self, inst: trio_isyswasfa.Instance, data: Path, call: str, made: str | None
    ) -> None:
        (data / "to-sub").symlink_to("sub")
        assert await run(inst, INTERFACE + f"result = outcome(lambda: {call})") == repr("ok")
        if made is not None:
            assert (data / made).is_dir()
