"""A component's core modules, compiled or found in the caches, without hashing them
again: what loading a component on our own engine costs besides reading it.

Each core module is compiled once and kept on disk by the SHA-256 of its bytes
(``_instance.compile_module``). Finding those copies means hashing every module (the
18 MB of a componentize-py guest) on every load; so, next to them, a small index file
named by the component's own digest remembers each module's digest by its byte offset.
A load that knows the component's digest (remembered by the file's ``stat``,
:mod:`trio_isyswasfa._digests`) reads the index and hashes nothing.

The index is ASCII text (no JSON: its import would cost a command's start-up more
than reading the index saves): a header line with the format version
(:data:`INDEX_VERSION`, in the file's name too), then one ``offset digest`` line per
module and an ``end`` line. A file of another version, or one that is truncated,
corrupt, or does not list exactly the component's modules, is ignored and written
again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import wasmtime

from .. import _engine
from ._instance import compile_module
from ._model import ComponentDef

INDEX_VERSION = 1
"""The index file's format: a change makes every older index unread (it is rebuilt)."""

_HEX = frozenset("0123456789abcdef")


def index_path(digest: str) -> Path:
    """The module index of the component whose bytes have SHA-256 ``digest``."""
    return _engine.cache_dir() / f"{digest}-own-modules-v{INDEX_VERSION}.txt"


def _header() -> str:
    return f"trio_isyswasfa module index v{INDEX_VERSION}"


def _read_index(path: Path, offsets: list[int]) -> dict[int, str] | None:
    """The module digests ``path`` lists for exactly ``offsets``, or None if it is
    missing, of another version, or not sound."""
    try:
        lines = path.read_bytes().decode("ascii").split("\n")
    except (OSError, UnicodeDecodeError):
        return None
    # the header, a line per module, "end", and the empty string after the last newline
    if len(lines) != len(offsets) + 3 or lines[0] != _header() or lines[-2:] != ["end", ""]:
        return None
    out: dict[int, str] = {}
    for line in lines[1:-2]:
        offset, _, key = line.partition(" ")
        # (the text is ASCII: isdigit takes no '٨', which int() would read as 8)
        if not offset.isdigit() or len(key) != 64 or not _HEX.issuperset(key):
            return None
        out[int(offset)] = key
    return out if sorted(out) == sorted(offsets) else None


def _write_index(path: Path, keys: dict[int, str]) -> None:
    body = "".join(f"{offset} {key}\n" for offset, key in keys.items())
    _engine.keep_in_cache(path, f"{_header()}\n{body}end\n".encode("ascii"))


def module_digest(data: bytes | memoryview) -> str:
    """The SHA-256 (hex) of a core module's bytes: its key in the compiled cache."""
    return hashlib.sha256(data).hexdigest()


def module_digests(component: ComponentDef, digest: str | None) -> dict[int, str]:
    """The SHA-256 (hex) of each core module of ``component`` (nested ones too), by
    byte offset: from the index of the component with ``digest`` when there is a sound
    one, else hashed (and, with a ``digest``, remembered)."""
    modules = {m.offset: m for c in component.walk() for m in c.modules}
    if digest is not None:
        known = _read_index(index_path(digest), list(modules))
        if known is not None:
            return known
    keys = {offset: module_digest(m.data) for offset, m in modules.items()}
    if digest is not None:
        _write_index(index_path(digest), keys)
    return keys


def load_modules(
    component: ComponentDef, *, use_cache: bool = True, digest: str | None = None
) -> dict[int, wasmtime.Module]:
    """Every core module of ``component``, compiled (or found in the caches), by byte
    offset; ``digest`` is the component's SHA-256 (hex), if known, for the index.

    Raises:
      LoadError: a core module does not compile.
    """
    if not use_cache:
        digest = None
    keys = module_digests(component, digest)
    return {
        m.offset: compile_module(m.data, use_cache=use_cache, key=keys[m.offset])
        for c in component.walk()
        for m in c.modules
    }


__all__ = ["INDEX_VERSION", "index_path", "load_modules", "module_digest", "module_digests"]
