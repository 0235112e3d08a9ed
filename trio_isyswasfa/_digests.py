"""The content digest of a component file, remembered by what ``stat`` says of it.

Loading a cached compiled component needs the component's SHA-256, and hashing an
18 MB Python guest means reading it all: ~40 ms of every ``run``. This module keeps,
on disk next to the compiled code, the digest of each file it hashed, keyed by the
file's identity and state: path, device, inode, size, modification time and change
time (nanoseconds). A file written since has another change time (a process cannot
set it), so a stale entry is never found.

One race remains in any such scheme: a file rewritten within the same clock tick as
the ``stat`` would keep its times. So a digest is remembered only for a file whose
times are :data:`SETTLED_SECONDS` older than the moment it was read, and whose
``stat`` did not change while it was read; a file written later gets later times.
(A file system whose clock runs that far behind ours could defeat it; the cache is
then off with ``use_cache=False``.)
"""

from __future__ import annotations

import hashlib
import os
import select
import stat
import time
from pathlib import Path

from . import _engine

SETTLED_SECONDS = 2.0
"""How long ago a file must have last changed for its digest to be remembered."""

WAIT_SLICE_SECONDS = 0.1
"""How long :func:`read_stream` waits at a time for its file to have data: at most
this long after a signal that landed just before a wait, its Python handler runs."""


def is_regular(path: Path) -> bool:
    """Whether ``path`` is a regular file (not a FIFO, a pipe, a device).

    Raises:
      OSError: it cannot be looked at (missing, say).
    """
    return stat.S_ISREG(path.stat().st_mode)


def read_stream(path: Path) -> bytes:
    """The bytes of a file that is no regular one (a FIFO, a pipe such as a shell's
    ``<(…)``), up to its end.

    Such a read may wait for ever (for a writer, for data), and a plain blocking read
    can miss the signal meant to stop it: the interpreter runs a signal's Python
    handler (Ctrl-C's ``KeyboardInterrupt``) only between bytecodes, so a signal that
    lands after its last check and before the read blocks leaves the read waiting,
    handler unrun (``serve`` hung so, once in ~80 tries under load, on SIGINT during
    its start-up). So the file is opened without blocking and waited on in slices of
    :data:`WAIT_SLICE_SECONDS`: the handler runs at the latest one slice later. (A
    FIFO opened so does not wait for its writer; until one comes and goes, it has no
    end: Linux's ``poll`` reports none.)

    Raises:
      OSError: it cannot be read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        waiting = select.poll()
        waiting.register(fd, select.POLLIN)
        chunks: list[bytes] = []
        while True:
            if not waiting.poll(WAIT_SLICE_SECONDS * 1000):
                continue  # (the loop's turn is where a pending signal's handler runs)
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _entry(index: Path, path: Path, st: os.stat_result) -> Path:
    identity = "\0".join(
        map(str, (path.resolve(), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    )
    return index / hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()


def known_digest(index: Path, path: Path) -> str | None:
    """The digest remembered for ``path`` as it is now, or None."""
    try:
        text = _entry(index, path, path.stat()).read_text("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    return text if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else None


def read_known(index: Path, path: Path) -> tuple[bytes, str] | None:
    """``path``'s bytes and the digest remembered for them, or None when none is (or
    the file changed while it was read). The digest is looked up by the open file's own
    ``stat``, taken before the read and checked unchanged after it, so the bytes are
    the ones it was remembered for (unlike :func:`known_digest` and then a read, which
    a write between the two would pair with another file's digest).

    Raises:
      OSError: the file cannot be read.
    """
    with path.open("rb") as file:
        before = os.fstat(file.fileno())
        try:
            text = _entry(index, path, before).read_text("ascii")
        except (OSError, UnicodeDecodeError):
            return None
        if len(text) != 64 or not all(c in "0123456789abcdef" for c in text):
            return None
        data = file.read()
        after = os.fstat(file.fileno())
    return (data, text) if _state(before) == _state(after) else None


def read_and_digest(index: Path | None, path: Path) -> tuple[bytes, str]:
    """``path``'s bytes and their SHA-256 (hex); remembered in ``index`` (unless None)
    when the file is settled.

    Raises:
      OSError: it cannot be read.
    """
    started = time.time_ns()
    with path.open("rb") as file:
        before = os.fstat(file.fileno())
        data = file.read()
        after = os.fstat(file.fileno())
    digest = hashlib.sha256(data).hexdigest()
    settled = started - int(SETTLED_SECONDS * 1e9)
    if (
        index is not None
        and _state(before) == _state(after)
        and max(after.st_mtime_ns, after.st_ctime_ns) < settled
    ):
        _remember(_entry(index, path, after), digest)
    return data, digest


def _state(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _remember(entry: Path, digest: str) -> None:
    _engine.keep_in_cache(entry, digest.encode("ascii"))
