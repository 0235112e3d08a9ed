"""Build guest components from source, once, cached on a hash of everything that matters."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .._engine import cache_dir
from ..tools._paths import bundled_wit_dir, guest_python_dir


def guest_cache_dir() -> Path:
    """Where built guests are kept (``$TRIO_ISYSWASFA_GUEST_CACHE`` overrides)."""
    env = os.environ.get("TRIO_ISYSWASFA_GUEST_CACHE")
    return Path(env) if env else cache_dir().parent / "guests"


def _hash_tree(h: hashlib._Hash, root: Path) -> None:
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in paths:
        if "__pycache__" in path.parts:
            continue
        h.update(str(path.relative_to(root.parent)).encode())
        h.update(path.read_bytes())


def build_python_guest(
    wit: Path | str,
    world: str,
    app: str,
    python_path: list[Path | str],
    *,
    suffix: str | None = None,
) -> Path:
    """Return the path of the component for this guest, building it if its sources changed.

    The cache key covers the WIT, the app's source directories, the bundled guest
    library and WIT, our build tools and the componentize-py version.
    """
    from importlib.metadata import version

    from ..tools import componentize as tool

    h = hashlib.sha256()
    h.update(f"{world}\0{app}\0{suffix}\0{version('componentize-py')}".encode())
    for root in [Path(wit), *map(Path, python_path), guest_python_dir(), bundled_wit_dir()]:
        _hash_tree(h, root.resolve())
    _hash_tree(h, Path(tool.__file__).resolve().parent)
    out = guest_cache_dir() / f"{world}-{h.hexdigest()[:20]}.wasm"
    if not out.exists():
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        tool.componentize(wit, world, app, tmp, python_path=list(python_path), suffix=suffix)
        tmp.replace(out)
    return out
