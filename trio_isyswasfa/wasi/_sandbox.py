"""Path resolution beneath a directory descriptor, the way capability hosts do it.

Every path a guest passes is resolved one component at a time with ``openat``-style
calls on directory file descriptors, never as a host path string: ``..`` may not climb
above the descriptor the guest resolved from, absolute paths are refused, and a
symbolic link is followed by splicing its (relative) target into the remaining path,
under the same rules. Intermediate directories are opened with ``O_NOFOLLOW``, so a
link swapped in behind our back makes the open fail instead of escaping.

Linux has ``openat2(RESOLVE_BENEATH)`` for this, but Python does not expose it and
other Unixes lack it; this walk is the portable form (what cap-std does in Rust).
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from .._errors import WasiError

MAX_SYMLINKS = 40  # as Linux's MAXSYMLINKS

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def names_directory(path: str) -> bool:
    """Whether ``path`` can only name a directory: it ends in ``/`` or ``/.``, as
    ``file/`` does, which POSIX (and wasmtime) resolve to ``not-directory``."""
    return path.endswith(("/", "/.")) and bool(_split(path))


@contextmanager
def beneath(
    root_fd: int, path: str, *, follow: bool, create: bool = False
) -> Iterator[tuple[int, str]]:
    """Resolve ``path`` beneath directory ``root_fd``.

    Yields ``(dir_fd, name)``: the directory that holds the last component, and that
    component's name (``"."`` when the path names the directory itself). The last
    component is not opened, so it need not exist; it is a symlink only when
    ``follow`` is false. ``dir_fd`` is closed when the ``with`` ends.

    A path that ends in ``/`` names a directory (:func:`names_directory`): unless
    ``create`` says its last component is a name to create, a link there is followed
    and anything but a directory is ``not-directory``. The caller decides what a
    trailing slash means for a name that does not exist yet.

    Raises:
      WasiError: ``not-permitted`` for an absolute path or an escape, ``loop`` for
        too many links, ``invalid`` for a NUL byte, ``not-directory`` for a
        non-directory named with a trailing slash, or the code of the failing call.
    """
    if path.startswith("/"):
        raise WasiError("not-permitted", f"absolute path {path!r}")
    if "\0" in path:
        raise WasiError("invalid", "path contains a NUL byte")
    if path == "":
        raise WasiError("no-entry", "empty path")
    parts = deque(_split(path))
    dir_only = names_directory(path) and not create
    stack = [os.dup(root_fd)]
    links = 0
    try:
        name = "."
        while parts:
            part = parts.popleft()
            if part == "..":
                if len(stack) == 1:
                    raise WasiError("not-permitted", f"{path!r} leads outside its directory")
                os.close(stack.pop())
                continue
            last = not parts
            try:
                st = os.stat(part, dir_fd=stack[-1], follow_symlinks=False)
            except FileNotFoundError:
                if last:
                    name = part
                    break
                raise
            if stat.S_ISLNK(st.st_mode) and (follow or dir_only or not last):
                links += 1
                if links > MAX_SYMLINKS:
                    raise WasiError("loop", f"too many symbolic links in {path!r}")
                target = os.readlink(part, dir_fd=stack[-1])
                if target.startswith("/"):
                    raise WasiError("not-permitted", f"{path!r} goes through an absolute link")
                if last and names_directory(target) and not create:
                    dir_only = True  # a link to `file/` names a directory too
                parts.extendleft(reversed(_split(target) or ["."]))
                continue
            if last:
                if dir_only and not stat.S_ISDIR(st.st_mode):
                    raise WasiError("not-directory", f"{path!r} names a directory")
                name = part
                break
            stack.append(os.open(part, _DIR_FLAGS, dir_fd=stack[-1]))
        yield stack[-1], name
    except OSError as exc:
        raise error_from_os(exc) from exc
    finally:
        for fd in stack:
            os.close(fd)


_ERRNO_CODES = {
    "EACCES": "access",
    "EAGAIN": "would-block",
    "EALREADY": "already",
    "EBADF": "bad-descriptor",
    "EBUSY": "busy",
    "EDEADLK": "deadlock",
    "EDQUOT": "quota",
    "EEXIST": "exist",
    "EFBIG": "file-too-large",
    "EILSEQ": "illegal-byte-sequence",
    "EINPROGRESS": "in-progress",
    "EINTR": "interrupted",
    "EINVAL": "invalid",
    "EIO": "io",
    "EISDIR": "is-directory",
    "ELOOP": "loop",
    "EMLINK": "too-many-links",
    "EMSGSIZE": "message-size",
    "ENAMETOOLONG": "name-too-long",
    "ENODEV": "no-device",
    "ENOENT": "no-entry",
    "ENOLCK": "no-lock",
    "ENOMEM": "insufficient-memory",
    "ENOSPC": "insufficient-space",
    "ENOTDIR": "not-directory",
    "ENOTEMPTY": "not-empty",
    "ENOTRECOVERABLE": "not-recoverable",
    "ENOTSUP": "unsupported",
    "EOPNOTSUPP": "unsupported",
    "ENOTTY": "no-tty",
    "ENXIO": "no-such-device",
    "EOVERFLOW": "overflow",
    "EPERM": "not-permitted",
    "EPIPE": "pipe",
    "EROFS": "read-only",
    "ESPIPE": "invalid-seek",
    "ETXTBSY": "text-file-busy",
    "EXDEV": "cross-device",
}
_BY_ERRNO: dict[int, str] = {}
for _name, _code in _ERRNO_CODES.items():
    if hasattr(errno, _name):
        _BY_ERRNO.setdefault(getattr(errno, _name), _code)


def error_from_os(exc: OSError) -> WasiError:
    """The ``wasi:filesystem`` error code for an ``OSError`` (``io`` if none fits)."""
    code = _BY_ERRNO.get(exc.errno or 0, "io")
    return WasiError(code, exc.strerror or code)
