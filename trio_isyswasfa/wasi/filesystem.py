"""wasi:filesystem 0.2: preopened host directories, sandboxed.

The embedder chooses the directories (:class:`Preopen`); a guest reaches nothing
else. Each descriptor holds its own host file descriptor, and every path is resolved
beneath the descriptor it is relative to (see :mod:`._sandbox`): no ``..`` above it,
no absolute paths, no symbolic link leading out. A read-only preopen, and everything
opened through it, refuses every change with ``error-code::read-only``. Permissions
pass down: a directory opened with ``open-at`` may be changed exactly when the one it
was opened from may (as in wasmtime), whatever ``descriptor-flags`` it asked for.

Streams over a regular file move up to :data:`FILE_CHUNK` bytes per call. A read
runs on the event loop's thread, where a worker thread's round trip would cost more
than the copy: it takes what the page cache holds (``RWF_NOWAIT``: it never waits for
the disk) straight into the guest's memory (:class:`~trio_isyswasfa._engine.ReadInto`),
and leaves what the cache does not hold to a worker thread while the guest awaits the
stream's pollable. Writes go out when the guest flushes, up to 64 KiB at once on the
loop's thread, more in a worker thread (a write may wait for the kernel). Streams over
anything else (a FIFO, a device) and the direct calls (``read``, ``write``, ``sync``,
``open-at``…) move data in a worker thread while the guest waits, so a guest reading
a FIFO or a huge directory leaves the event loop free.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat as stat_mod
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from .._engine import Blocking, ReadInto, ResourceKind, own, record
from .._errors import HostProtocolError, WasiError
from ._context import WasiContext
from ._sandbox import beneath, error_from_os, names_directory
from .io import (
    CHUNK,
    ErrorObject,
    HostWaits,
    StreamClosed,
    StreamFailed,
    ThreadedInputStream,
    ThreadedOutputStream,
    WasiIo,
)

TYPES = "wasi:filesystem/types"
PREOPENS = "wasi:filesystem/preopens"

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# A read that never waits for the disk (Linux ≥ 4.14): what the page cache holds, else
# EAGAIN. Without it, regular files are read in a worker thread, as other files are.
_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None) if hasattr(os, "preadv") else None

FILE_CHUNK = 1 << 20
"""Bytes a stream over a regular file moves per call on the event loop's thread: a
memory copy of at most 1 MiB (0.1 to 0.5 ms on the reference machine, about what one
guest call costs us anyway), large enough that the call's own cost is a few percent
of the copy's. Guests asking for more get this much per call."""
_WRITE_FLAGS = frozenset({"write"})
_MUTATING_OPEN = frozenset({"create", "truncate"})


@dataclass(frozen=True)
class Preopen:
    """A host directory the guest sees as ``guest_path``.

    Attributes:
      host_path: an existing directory on the host.
      guest_path: the name the guest sees (default: ``host_path`` as given).
      read_only: refuse every change to files and directories beneath it.

    Raises:
      HostProtocolError: ``host_path`` is not an existing directory.
    """

    host_path: str | os.PathLike[str]
    guest_path: str = ""
    read_only: bool = False

    def __post_init__(self) -> None:
        path = Path(self.host_path)
        if not path.is_dir():
            what = "does not exist" if not path.exists() else "is not a directory"
            raise HostProtocolError(f"preopen {str(path)!r} {what}")
        if not self.guest_path:
            object.__setattr__(self, "guest_path", os.fspath(self.host_path))

    @classmethod
    def parse(cls, spec: str, *, read_only: bool = False) -> Preopen:
        """``HOST_PATH[::GUEST_PATH]``, as the CLI's ``--dir`` takes it."""
        host, sep, guest = spec.partition("::")
        if not host or (sep and not guest):
            raise HostProtocolError(f"bad directory {spec!r}: expected HOST_PATH[::GUEST_PATH]")
        return cls(host, guest, read_only)


# -- descriptors ------------------------------------------------------------------------


class Descriptor:
    """An open file or directory the guest holds a handle to.

    ``flags`` are what ``get-flags`` reports; ``read_only`` is the permission, inherited
    from the preopen through every ``open-at``.
    """

    def __init__(self, fd: int, flags: frozenset[str], read_only: bool) -> None:
        self.fd = fd
        self.flags = flags
        self.read_only = read_only
        st = os.fstat(fd)
        self.is_dir = stat_mod.S_ISDIR(st.st_mode)
        self.mode = st.st_mode

    def close(self) -> None:
        os.close(self.fd)

    def directory(self) -> int:
        """The fd, if this is a directory (``not-directory`` otherwise)."""
        if not self.is_dir:
            raise WasiError("not-directory")
        return self.fd

    def mutable_directory(self) -> int:
        """The fd of a directory whose contents the guest may change: one beneath a
        writable preopen (``mutate-directory`` is not asked for again: the preview-1
        adapter opens every directory without it, and wasmtime lets it change them)."""
        fd = self.directory()
        if self.read_only:
            raise WasiError("read-only")
        return fd

    def file(self, *, write: bool = False) -> int:
        """The fd of a regular file opened for reading (or writing); a directory is
        ``bad-descriptor`` for these calls, as in wasmtime."""
        if self.is_dir:
            raise WasiError("bad-descriptor", "a directory, not a file")
        need = "write" if write else "read"
        if need not in self.flags:
            raise WasiError(
                "bad-descriptor", "not opened for " + ("writing" if write else "reading")
            )
        return self.fd


def _descriptor_type(mode: int) -> str:
    for test, name in (
        (stat_mod.S_ISREG, "regular-file"),
        (stat_mod.S_ISDIR, "directory"),
        (stat_mod.S_ISLNK, "symbolic-link"),
        (stat_mod.S_ISCHR, "character-device"),
        (stat_mod.S_ISBLK, "block-device"),
        (stat_mod.S_ISFIFO, "fifo"),
        (stat_mod.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "unknown"


def _datetime(ns: int) -> Any:
    return record(seconds=ns // 1_000_000_000, nanoseconds=ns % 1_000_000_000)


def _stat(st: os.stat_result) -> Any:
    return record(
        **{
            "type": _descriptor_type(st.st_mode),
            "link-count": st.st_nlink,
            "size": st.st_size,
            "data-access-timestamp": _datetime(st.st_atime_ns),
            "data-modification-timestamp": _datetime(st.st_mtime_ns),
            "status-change-timestamp": _datetime(st.st_ctime_ns),
        }
    )


# -- streams over files -----------------------------------------------------------------


class FileInputStream(ThreadedInputStream):
    """``read-via-stream``: reads a file from an offset.

    A regular file is read on the loop's thread, up to :data:`FILE_CHUNK` bytes per
    read, as far as the page cache holds it (``RWF_NOWAIT``), and into the guest's
    memory itself when the guest reads (:meth:`read_into_guest`). A read that would
    wait for the disk returns nothing, and waiting on the stream's pollable reads
    the chunk in a worker thread, as for every other kind of file.
    """

    def __init__(self, fd: int, offset: int) -> None:
        dup = os.dup(fd)
        try:
            regular = stat_mod.S_ISREG(os.fstat(dup).st_mode)
        except OSError:
            os.close(dup)
            raise
        self._inline = regular and _NOWAIT is not None
        chunk = FILE_CHUNK if self._inline else CHUNK
        super().__init__(self._read_at, chunk=chunk)
        self.max_read = chunk
        self._fd = dup
        self._offset = offset
        self._probe = bytearray(1)

    def _read_at(self, n: int) -> bytes:
        data = os.pread(self._fd, n, self._offset)
        self._offset += len(data)
        return data

    def failure_from(self, exc: OSError) -> StreamFailed:
        return StreamFailed(str(exc), error_from_os(exc).code)

    def release(self) -> None:
        os.close(self._fd)

    def read(self, n: int) -> bytes:
        data = self.read_into_guest(n)
        return data.to_bytes() if isinstance(data, ReadInto) else data

    def read_into_guest(self, n: int) -> bytes | ReadInto:
        if (
            not self._inline
            or n == 0
            or self._buffer
            or self._busy
            or self._eof
            or self._failure is not None
        ):
            return super().read(n)  # what a worker thread read, the end, a failure
        assert _NOWAIT is not None
        try:
            want = min(n, os.fstat(self._fd).st_size - self._offset)
            # is the first byte in the page cache? (the rest may not be: short reads)
            cached = want > 0 and os.preadv(self._fd, [self._probe], self._offset, _NOWAIT)
        except BlockingIOError:
            return b""  # on disk: waiting on the pollable reads it in a worker thread
        except OSError as exc:
            self._failure = self.failure_from(exc)
            return super().read(n)
        if not cached:
            self._eof = True
            raise StreamClosed
        return ReadInto(want, self._fill)

    async def fill(self) -> None:
        # what the page cache holds needs no worker thread (a guest that waits on the
        # stream before reading it, as poll() does, finds it ready at once)
        if not (self._inline and not self._busy and self._read_cached()):
            await super().fill()

    def _read_cached(self) -> bool:
        """Buffer the next chunk if the page cache holds its start (or note the end or
        a failure); whether it did."""
        assert _NOWAIT is not None
        try:
            size = min(self._chunk, max(os.fstat(self._fd).st_size - self._offset, 1))
            buf = bytearray(size)
            n = os.preadv(self._fd, [buf], self._offset, _NOWAIT)
        except BlockingIOError:
            return False
        except OSError as exc:
            self._settle(None, exc)
            return True
        self._offset += n
        self._settle(bytes(buf[:n]), None)  # nothing: the end
        self._signal.changed()
        return True

    def _fill(self, view: memoryview) -> int:
        """Read into the guest's block from the page cache: what it holds (at least its
        first byte, which it held a moment ago; if that was just evicted, the disk is
        read). A failure or a file cut short meanwhile is the next read's to report."""
        assert _NOWAIT is not None
        try:
            try:
                n = os.preadv(self._fd, [view], self._offset, _NOWAIT)
            except BlockingIOError:
                n = os.preadv(self._fd, [view], self._offset)
        except OSError as exc:
            self._failure = self.failure_from(exc)
            return 0
        self._offset += n
        return n


class FileOutputStream(ThreadedOutputStream):
    """``write-via-stream`` / ``append-via-stream``: writes in a worker thread while
    the guest waits on a flush, except small flushes to a regular file.

    A regular file takes :data:`FILE_CHUNK` bytes per flush, and a flush of up to
    ``CHUNK`` (64 KiB) goes into the page cache at once on the loop's thread (a worker
    thread's round trip costs more than that copy); a larger one, which may wait for
    the kernel to make room (dirty-page throttling: no write is sure not to wait), goes
    through the worker thread, one round trip per MiB. Other files (a FIFO, a device)
    take a chunk per flush, in the worker thread. A stream of a descriptor not opened
    for writing (``writable=False``) fails every write with ``bad-descriptor``,
    whatever its host fd allows.
    """

    def __init__(self, fd: int, offset: int | None, *, writable: bool = True) -> None:
        super().__init__()
        dup = os.dup(fd)
        try:
            self._inline = stat_mod.S_ISREG(os.fstat(dup).st_mode)
        except OSError:
            os.close(dup)
            raise
        self._fd = dup
        self._offset = offset  # None: append
        self._writable = writable
        if self._inline:
            self.capacity = FILE_CHUNK
            self.quick_write = CHUNK

    def write_now(self, data: bytes) -> None:
        if not self._writable:
            raise OSError(errno.EBADF, "not opened for writing")
        view = memoryview(data)
        if self._offset is None:
            os.lseek(self._fd, 0, os.SEEK_END)
            while view:
                view = view[os.write(self._fd, view) :]
        else:
            while view:
                written = os.pwrite(self._fd, view, self._offset)
                self._offset += written
                view = view[written:]

    def failure_from(self, exc: OSError) -> StreamFailed:
        return StreamFailed(str(exc), error_from_os(exc).code)

    def can_write_now(self) -> bool:
        return self._inline  # into the page cache; a FIFO's reader may not be reading

    def release(self) -> None:
        os.close(self._fd)


class DirectoryEntries:
    """``directory-entry-stream``: a directory's entries, read once when opened."""

    def __init__(self, fd: int) -> None:
        dup = os.dup(fd)
        try:
            with os.scandir(dup) as it:
                self.entries = [(e.name, _entry_type(e)) for e in it]
        finally:
            os.close(dup)
        self.entries.reverse()


def _entry_type(entry: os.DirEntry[str]) -> str:
    try:
        return _descriptor_type(entry.stat(follow_symlinks=False).st_mode)
    except OSError:
        return "unknown"


# -- the interface ----------------------------------------------------------------------


def _follow(path_flags: set[str]) -> bool:
    return "symlink-follow" in path_flags


_MAX_OFFSET = 2**63 - 1
"""The largest file offset or size the OS takes (a C ``off_t``); past it Python raises
``OverflowError`` before the call, which would trap the guest."""
_MAX_SECONDS = 2**63 - 1
"""The latest time a file can be given, in seconds since the epoch (a C ``time_t``)."""


def _offset(value: int, what: str = "offset") -> int:
    """A guest's file offset or size (a ``u64``) the OS can take: past what an ``off_t``
    holds it is ``invalid``, as on wasmtime (the kernel's ``EINVAL`` there)."""
    if value > _MAX_OFFSET:
        raise WasiError("invalid", f"{what} {value} is past the largest file offset")
    return value


def _timestamp(value: Any, current_ns: int) -> int | None:
    """A ``new-timestamp`` as nanoseconds (``None``: leave it unchanged); one past what
    a ``time_t`` holds is ``overflow``, as on wasmtime."""
    tag = getattr(value, "tag", None)
    if tag == "no-change":
        return None
    if tag == "now":
        return current_ns
    if tag == "timestamp":
        dt = value.payload
        ns = int(dt.seconds) * 1_000_000_000 + int(dt.nanoseconds)
        if ns // 1_000_000_000 > _MAX_SECONDS:
            raise WasiError("overflow", f"timestamp {dt.seconds} s is past the latest time")
        return ns
    raise WasiError("invalid", f"unknown timestamp {value!r}")


def _with_error_codes(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with ``OSError`` turned into the WASI error code."""

    def run(*args: Any) -> Any:
        try:
            return fn(*args)
        except OSError as exc:
            raise error_from_os(exc) from exc

    return run


class WasiFilesystem:
    """wasi:filesystem for one instance: its preopens and the descriptors beneath them."""

    def __init__(self, ctx: WasiContext, io: WasiIo) -> None:
        self.ctx = ctx
        self.io = io
        self._hash_key = os.urandom(16)
        t = ctx.table
        ctx.define_resource(TYPES, "descriptor", ResourceKind.DESCRIPTOR, ctx.close_handle)
        ctx.define_resource(TYPES, "directory-entry-stream", ResourceKind.DIRECTORY_ENTRY_STREAM)
        ctx.define(PREOPENS, "get-directories", self.get_directories)
        ctx.define(TYPES, "filesystem-error-code", self.filesystem_error_code)
        ctx.define(
            TYPES,
            "[method]directory-entry-stream.read-directory-entry",
            lambda rep: self._next_entry(t.get(rep, DirectoryEntries)),
        )
        # calls that may take long (data, durability, opening: a FIFO's open waits for
        # its writer; a directory may be huge) run in a worker thread while the guest is
        # suspended; what they open becomes a handle back on the loop's thread
        threaded: dict[str, Callable[..., Any]] = {
            "read": self.read,
            "write": self.write,
            "sync": lambda d: os.fsync(d.fd),
            "sync-data": self.sync_data,
            "set-size": self.set_size,
        }
        for name, fn in threaded.items():
            ctx.define(TYPES, f"[method]descriptor.{name}", self._threaded_method(fn))
        ctx.define(
            TYPES,
            "[method]descriptor.open-at",
            self._threaded_method(self.open_at, finish=lambda opened: self._new(*opened)),
        )
        ctx.define(
            TYPES,
            "[method]descriptor.read-directory",
            self._threaded_method(
                lambda d: DirectoryEntries(d.directory()),
                finish=lambda entries: own(
                    self.ctx.table.add(entries), ResourceKind.DIRECTORY_ENTRY_STREAM
                ),
            ),
        )
        # short metadata calls run on the loop's thread: a worker thread's round trip
        # would cost far more than the call (os.stat in a Python guest: 0.37 -> 1.2 ms)
        methods: dict[str, Callable[..., Any]] = {
            "read-via-stream": self.read_via_stream,
            "write-via-stream": self.write_via_stream,
            "append-via-stream": self.append_via_stream,
            "advise": self.advise,
            "get-flags": lambda d: set(d.flags),
            "get-type": lambda d: _descriptor_type(d.mode),
            "set-times": self.set_times,
            "create-directory-at": self.create_directory_at,
            "stat": lambda d: _stat(os.fstat(d.fd)),
            "stat-at": self.stat_at,
            "set-times-at": self.set_times_at,
            "link-at": self.link_at,
            "readlink-at": self.readlink_at,
            "remove-directory-at": self.remove_directory_at,
            "rename-at": self.rename_at,
            "symlink-at": self.symlink_at,
            "unlink-file-at": self.unlink_file_at,
            "is-same-object": self.is_same_object,
            "metadata-hash": lambda d: self._hash(os.fstat(d.fd)),
            "metadata-hash-at": self.metadata_hash_at,
        }
        for name, fn in methods.items():
            ctx.define(TYPES, f"[method]descriptor.{name}", self._method(fn))

    def _threaded_method(
        self, fn: Callable[..., Any], *, finish: Callable[[Any], Any] | None = None
    ) -> Blocking:
        """As :meth:`_method`, with ``fn`` run in a worker thread (the guest waits);
        ``finish`` turns its value into the result on the loop's thread. The thread is
        not abandoned when the wait is cancelled, so what it opens always reaches
        ``finish``: the cancellation takes effect at the guest's next wait."""
        table = self.ctx.table
        run = _with_error_codes(fn)

        def method(rep: int, *args: Any) -> HostWaits:
            d = table.get(rep, Descriptor)
            outcome: list[Any] = []

            async def work() -> None:
                try:
                    outcome.append(await anyio.to_thread.run_sync(run, d, *args))
                except Exception as exc:  # handed back to the guest's call below
                    outcome.append(exc)

            yield work
            if isinstance(outcome[0], Exception):
                raise outcome[0]
            return outcome[0] if finish is None else finish(outcome[0])

        return Blocking(method)

    def _method(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Look the descriptor up and turn ``OSError`` into the WASI error code."""
        table = self.ctx.table
        run = _with_error_codes(fn)
        return lambda rep, *args: run(table.get(rep, Descriptor), *args)

    def _new(self, fd: int, flags: frozenset[str], read_only: bool) -> Any:
        try:
            descriptor = Descriptor(fd, flags, read_only)
        except OSError:
            os.close(fd)
            raise
        return own(self.ctx.table.add(descriptor), ResourceKind.DESCRIPTOR)

    def get_directories(self) -> list[tuple[Any, str]]:
        out = []
        for preopen in self.ctx.config.preopens:
            fd = os.open(preopen.host_path, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
            flags = frozenset({"read"} if preopen.read_only else {"read", "mutate-directory"})
            out.append((self._new(fd, flags, preopen.read_only), preopen.guest_path))
        return out

    def filesystem_error_code(self, rep: int) -> str | None:
        error = self.ctx.table.get(rep, ErrorObject)
        return error.code

    # streams and direct I/O
    def _writable(self, d: Descriptor) -> int:
        fd = d.file(write=True)
        if d.read_only:
            raise WasiError("read-only")
        return fd

    def read_via_stream(self, d: Descriptor, offset: int) -> Any:
        if d.is_dir:
            raise WasiError("is-directory")  # wasmtime's answer here (elsewhere: bad-descriptor)
        stream = FileInputStream(d.file(), _offset(offset))
        return own(self.ctx.table.add(stream), ResourceKind.INPUT_STREAM)

    def _output_stream(self, d: Descriptor, offset: int | None) -> Any:
        """An output stream of ``d`` (``offset`` None: appending). As on wasmtime, a file
        not open for writing still gets a stream (the preview1 adapter asks for one to
        poll it), whose writes fail."""
        if offset is not None:
            _offset(offset)
        if d.is_dir or "write" in d.flags:
            stream = FileOutputStream(self._writable(d), offset)
        else:
            stream = FileOutputStream(d.fd, offset, writable=False)
        return own(self.ctx.table.add(stream), ResourceKind.OUTPUT_STREAM)

    def write_via_stream(self, d: Descriptor, offset: int) -> Any:
        return self._output_stream(d, offset)

    def append_via_stream(self, d: Descriptor) -> Any:
        return self._output_stream(d, None)

    def set_size(self, d: Descriptor, size: int) -> None:
        if d.is_dir:
            raise WasiError("bad-descriptor", "a directory, not a file")
        if d.read_only:
            raise WasiError("read-only")
        os.ftruncate(d.fd, _offset(size, "size"))  # not open for writing: invalid, as there

    def read(self, d: Descriptor, length: int, offset: int) -> tuple[bytes, bool]:
        want = min(length, CHUNK)
        data = os.pread(d.file(), want, _offset(offset))
        return data, not data  # the end is a read that finds nothing, as in wasmtime

    def write(self, d: Descriptor, buffer: bytes, offset: int) -> int:
        return os.pwrite(self._writable(d), buffer, _offset(offset))

    def advise(self, d: Descriptor, offset: int, length: int, advice: str) -> None:
        if d.is_dir:
            raise WasiError("bad-descriptor", "a directory, not a file")
        code = getattr(os, f"POSIX_FADV_{advice.replace('-', '').upper()}", None)
        if code is not None and hasattr(os, "posix_fadvise"):
            # a length past the end of any file: to the end (0), as the kernel takes it
            length = 0 if length > _MAX_OFFSET else length
            os.posix_fadvise(d.fd, _offset(offset), length, code)

    def sync_data(self, d: Descriptor) -> None:
        (getattr(os, "fdatasync", None) or os.fsync)(d.fd)

    @staticmethod
    def _next_entry(entries: DirectoryEntries) -> Any:
        if not entries.entries:
            return None
        name, kind = entries.entries.pop()
        return record(type=kind, name=name)

    # times
    def _times(self, st: os.stat_result, atime: Any, mtime: Any) -> tuple[int, int]:
        now = time.time_ns()  # files live on the host: `now` is the host's time
        a = _timestamp(atime, now)
        m = _timestamp(mtime, now)
        return (st.st_atime_ns if a is None else a, st.st_mtime_ns if m is None else m)

    def set_times(self, d: Descriptor, atime: Any, mtime: Any) -> None:
        if d.read_only:
            raise WasiError("read-only")
        os.utime(d.fd, ns=self._times(os.fstat(d.fd), atime, mtime))

    def set_times_at(
        self, d: Descriptor, path_flags: set[str], path: str, atime: Any, mtime: Any
    ) -> None:
        dir_fd = d.mutable_directory()
        follow = _follow(path_flags)
        with beneath(dir_fd, path, follow=follow) as (at, name):
            if _timestamp(atime, 0) is None and _timestamp(mtime, 0) is None:
                return  # nothing to change: wasmtime does not look (a missing name is fine)
            st = os.stat(name, dir_fd=at, follow_symlinks=False)
            os.utime(name, ns=self._times(st, atime, mtime), dir_fd=at, follow_symlinks=False)

    # paths
    def stat_at(self, d: Descriptor, path_flags: set[str], path: str) -> Any:
        with beneath(d.directory(), path, follow=_follow(path_flags)) as (at, name):
            return _stat(os.stat(name, dir_fd=at, follow_symlinks=False))

    def metadata_hash_at(self, d: Descriptor, path_flags: set[str], path: str) -> Any:
        with beneath(d.directory(), path, follow=_follow(path_flags)) as (at, name):
            return self._hash(os.stat(name, dir_fd=at, follow_symlinks=False))

    def _hash(self, st: os.stat_result) -> Any:
        # keyed, so guests learn object identity but not host inode numbers
        digest = hashlib.blake2b(
            f"{st.st_dev}:{st.st_ino}".encode(), key=self._hash_key, digest_size=16
        ).digest()
        return record(
            lower=int.from_bytes(digest[:8], "little"), upper=int.from_bytes(digest[8:], "little")
        )

    def is_same_object(self, d: Descriptor, other_rep: int) -> bool:
        other = self.ctx.table.get(other_rep, Descriptor)
        a, b = os.fstat(d.fd), os.fstat(other.fd)
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def open_at(
        self,
        d: Descriptor,
        path_flags: set[str],
        path: str,
        open_flags: set[str],
        flags: set[str],
    ) -> tuple[int, frozenset[str], bool]:
        dir_fd = d.directory()
        flags = set(flags)
        if d.read_only and (flags & _WRITE_FLAGS or open_flags & _MUTATING_OPEN):
            raise WasiError("read-only")
        want_dir = "directory" in open_flags
        if want_dir and open_flags & (_MUTATING_OPEN | {"exclusive"}):
            raise WasiError("invalid")
        if "create" in open_flags and names_directory(path):
            raise WasiError("is-directory", f"cannot create a file named {path!r}")
        # a directory opened for writing is `is-directory`, from the host as on Linux
        mode = (
            os.O_RDWR
            if {"read", "write"} <= flags
            else os.O_WRONLY
            if "write" in flags
            else os.O_RDONLY
        )
        os_flags = mode | os.O_NOFOLLOW | _CLOEXEC
        if "create" in open_flags:
            os_flags |= os.O_CREAT
        if "exclusive" in open_flags:
            os_flags |= os.O_EXCL
        if "truncate" in open_flags:
            os_flags |= os.O_TRUNC
        if want_dir or names_directory(path):
            os_flags |= os.O_DIRECTORY
        if "data-integrity-sync" in flags:
            os_flags |= getattr(os, "O_DSYNC", 0)
        if "file-integrity-sync" in flags or "requested-write-sync" in flags:
            os_flags |= getattr(os, "O_SYNC", 0)
        follow = _follow(path_flags)
        with beneath(dir_fd, path, follow=follow) as (at, name):
            fd = os.open(name, os_flags, 0o666, dir_fd=at)
        try:
            if stat_mod.S_ISDIR(os.fstat(fd).st_mode):
                flags &= {"read"}  # what wasmtime reports for a directory it opened
            else:
                flags.discard("mutate-directory")
        except OSError:
            os.close(fd)
            raise
        return fd, frozenset(flags), d.read_only  # a handle once back on the loop's thread

    def readlink_at(self, d: Descriptor, path: str) -> str:
        with beneath(d.directory(), path, follow=False) as (at, name):
            target = os.readlink(name, dir_fd=at)
        if target.startswith("/"):  # as wasmtime: a host path is none of the guest's business
            raise WasiError("not-permitted", "the link points to an absolute path")
        return target

    def create_directory_at(self, d: Descriptor, path: str) -> None:
        with beneath(d.mutable_directory(), path, follow=False, create=True) as (at, name):
            os.mkdir(name, dir_fd=at)

    def remove_directory_at(self, d: Descriptor, path: str) -> None:
        if path.rstrip("/").rpartition("/")[2] == ".":
            # the resolver drops "." components; "dir/." must not remove dir (wasmtime: invalid)
            raise WasiError("invalid", "cannot remove a directory through '.'")
        with beneath(d.mutable_directory(), path, follow=False) as (at, name):
            if names_directory(path):
                os.stat(name, dir_fd=at, follow_symlinks=False)  # missing: `no-entry`
                # like removing `.`: wasmtime refuses `dir/` with `invalid`
                raise WasiError("invalid", f"cannot remove {path!r}: remove {path.rstrip('/.')!r}")
            os.rmdir(name, dir_fd=at)

    def unlink_file_at(self, d: Descriptor, path: str) -> None:
        with beneath(d.mutable_directory(), path, follow=False) as (at, name):
            if stat_mod.S_ISDIR(os.stat(name, dir_fd=at, follow_symlinks=False).st_mode):
                raise WasiError("is-directory")
            os.unlink(name, dir_fd=at)

    def symlink_at(self, d: Descriptor, old_path: str, new_path: str) -> None:
        if old_path.startswith("/"):
            raise WasiError("not-permitted", "a symbolic link may not point to an absolute path")
        if "\0" in old_path:  # (os.symlink's ValueError would trap the guest)
            raise WasiError("invalid", "the link's target contains a NUL byte")
        with beneath(d.mutable_directory(), new_path, follow=False, create=True) as (at, name):
            if names_directory(new_path):
                _exists_or_no_entry(at, name)
            os.symlink(old_path, name, dir_fd=at)

    def link_at(
        self, d: Descriptor, old_flags: set[str], old_path: str, new_rep: int, new_path: str
    ) -> None:
        new = self.ctx.table.get(new_rep, Descriptor)
        if _follow(old_flags):
            raise WasiError("invalid", "link-at does not follow symbolic links (as wasmtime)")
        with (
            beneath(d.mutable_directory(), old_path, follow=False) as (old_at, old),
            beneath(new.mutable_directory(), new_path, follow=False, create=True) as (
                new_at,
                new_name,
            ),
        ):
            if names_directory(new_path):
                _exists_or_no_entry(new_at, new_name)
            os.link(old, new_name, src_dir_fd=old_at, dst_dir_fd=new_at, follow_symlinks=False)

    def rename_at(self, d: Descriptor, old_path: str, new_rep: int, new_path: str) -> None:
        new = self.ctx.table.get(new_rep, Descriptor)
        # the old name is the entry itself, never what a link there points to
        with (
            beneath(d.mutable_directory(), old_path, follow=False, create=True) as (old_at, old),
            beneath(new.mutable_directory(), new_path, follow=False, create=True) as (
                new_at,
                new_name,
            ),
        ):
            if (names_directory(old_path) or names_directory(new_path)) and not stat_mod.S_ISDIR(
                os.stat(old, dir_fd=old_at, follow_symlinks=False).st_mode
            ):
                raise WasiError("not-directory", f"{old_path!r} is no directory")
            os.rename(old, new_name, src_dir_fd=old_at, dst_dir_fd=new_at)


def _exists_or_no_entry(dir_fd: int, name: str) -> None:
    """For a new name written with a trailing slash: ``exist`` if there is something
    there already, else ``no-entry`` (only a directory may be named so, and only
    ``create-directory-at`` makes one)."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise WasiError("no-entry", f"{name}/ does not exist") from None
    raise WasiError("exist", f"{name} exists")
