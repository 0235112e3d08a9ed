"""Build guest components from source, once, cached on a hash of everything that matters."""

from __future__ import annotations

import filecmp
import hashlib
import os
import shutil
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .._engine import cache_dir
from .._errors import ToolError
from ..tools._paths import bundled_wit_dir, guest_python_dir, guest_rust_dir, tool_command


def guest_cache_dir() -> Path:
    """Where built guests are kept (``$TRIO_ISYSWASFA_GUEST_CACHE`` overrides)."""
    env = os.environ.get("TRIO_ISYSWASFA_GUEST_CACHE")
    return Path(env) if env else cache_dir().parent / "guests"


LOWERED_DIR = "wit-lowered"  # where a Rust guest crate's bindings read the lowered world
_RUST_SKIPPED = frozenset({"__pycache__", "target", LOWERED_DIR})


def _hash_tree(
    h: hashlib._Hash, root: Path, skip: frozenset[str] = frozenset({"__pycache__"})
) -> None:
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in paths:
        if skip & set(path.relative_to(root.parent).parts):
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


def build_plain_python_guest(
    wit: Path | str, world: str, app: str, python_path: list[Path | str]
) -> Path:
    """Like :func:`build_python_guest`, for a guest built with componentize-py as it
    is, without isyswasfa: a standard ``wasi:http/proxy`` app (``include
    wasi:http/proxy@0.2.0;``) or ``wasi:cli`` command. The bundled WIT packages the
    world does not define itself are added, as for isyswasfa guests.
    """
    from importlib.metadata import version

    from ..tools.lower import stage_wit

    h = hashlib.sha256()
    h.update(f"plain\0{world}\0{app}\0{version('componentize-py')}".encode())
    for root in [Path(wit), *map(Path, python_path), bundled_wit_dir()]:
        _hash_tree(h, root.resolve())
    out = guest_cache_dir() / f"{world}-{h.hexdigest()[:20]}.wasm"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        with tempfile.TemporaryDirectory(prefix="isyswasfa-build-") as work:
            staged = stage_wit(Path(wit), Path(work) / "wit")
            cmd = [*tool_command("componentize-py"), "-q", "-d", str(staged), "-w", world]
            cmd += ["componentize", app, "-o", str(tmp)]
            for p in python_path:
                cmd += ["-p", str(p)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
                raise ToolError(f"componentize-py failed:\n{tail}")
        tmp.replace(out)
    return out


# -- Rust guests ------------------------------------------------------------------------

INSTALL_HINT = "install it with `bash .ci/install-toolchains` (Debian's rustc-web, lld-22)"
RUST_TARGET = "wasm32-unknown-unknown"


class RustToolchainMissing(ToolError):
    """The Rust toolchain that builds guests is not installed; the message says how."""


@dataclass(frozen=True)
class RustToolchain:
    """Debian's ``cargo``/``rustc`` (with the std sources, for ``-Zbuild-std``) and ``wasm-ld``.

    Called by full path: rustup's proxies may come first on ``PATH`` and know no wasm
    target here. ``$TRIO_ISYSWASFA_CARGO``, ``…_RUSTC`` and ``…_WASM_LD`` override.
    """

    cargo: Path
    rustc: Path
    wasm_ld: Path

    @classmethod
    def find(cls) -> RustToolchain:
        """The installed toolchain; raises :class:`RustToolchainMissing` saying what is missing."""
        env = os.environ.get
        tools = cls(
            cargo=Path(env("TRIO_ISYSWASFA_CARGO", "/usr/bin/cargo")),
            rustc=Path(env("TRIO_ISYSWASFA_RUSTC", "/usr/bin/rustc")),
            wasm_ld=Path(env("TRIO_ISYSWASFA_WASM_LD", "/usr/lib/llvm-22/bin/wasm-ld")),
        )
        for path in (tools.cargo, tools.rustc, tools.wasm_ld):
            if not path.is_file():
                raise RustToolchainMissing(f"{path} is missing: {INSTALL_HINT}")
        sysroot = Path(tools._output([str(tools.rustc), "--print", "sysroot"]).strip())
        if not (sysroot / "lib" / "rustlib" / "src" / "rust" / "library").is_dir():
            raise RustToolchainMissing(
                f"the Rust std sources are missing under {sysroot}: {INSTALL_HINT}"
            )
        return tools

    def version(self) -> str:
        """``rustc -vV`` and ``cargo -V``: part of every guest's cache key."""
        return self._output([str(self.rustc), "-vV"]) + self._output([str(self.cargo), "-V"])

    def environment(self) -> dict[str, str]:
        """The environment for cargo: Debian's rustc, nightly flags allowed, wasm-ld."""
        env = dict(os.environ)
        env.update(
            RUSTC=str(self.rustc),
            RUSTC_BOOTSTRAP="1",
            CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=str(self.wasm_ld),
        )
        env.pop("RUSTUP_TOOLCHAIN", None)
        return env

    @staticmethod
    def _output(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise RustToolchainMissing(f"{cmd[0]} does not run ({exc}): {INSTALL_HINT}") from exc


def build_rust_guest(
    wit: Path | str,
    world: str,
    crate: Path | str,
    *,
    suffix: str | None = None,
) -> Path:
    """Return the path of the component for a Rust guest crate, building it if needed.

    The crate's ``wit_bindgen`` bindings (``isyswasfa_guest::generate!``) read the
    lowered world from ``<crate>/wit-lowered``, which this writes (it is not kept in
    git). The cache key covers the WIT, the crate, the ``isyswasfa-guest`` library,
    the bundled WIT, the workspace's ``Cargo.lock`` and the toolchain's version; the
    cargo build directory is shared by all guests (the std build is done once).

    Raises:
      RustToolchainMissing: the toolchain is not installed (the message says how).
      ToolError: lowering, cargo or ``wasm-tools component new`` failed.
    """
    tools = RustToolchain.find()
    crate = Path(crate).resolve()
    manifest = tomllib.loads((crate / "Cargo.toml").read_text())
    artifact = manifest["package"]["name"].replace("-", "_")
    workspace = _workspace_root(crate)
    _write_lowered(Path(wit), world, crate / LOWERED_DIR, suffix)

    h = hashlib.sha256()
    h.update(f"{world}\0{suffix}\0{tools.version()}".encode())
    for root in [Path(wit), crate, guest_rust_dir(), bundled_wit_dir()]:
        _hash_tree(h, root.resolve(), _RUST_SKIPPED)
    _hash_tree(h, crate / LOWERED_DIR)
    for name in ("Cargo.toml", "Cargo.lock"):
        if (workspace / name).is_file():
            _hash_tree(h, workspace / name)
    _hash_tree(h, Path(__file__).resolve())
    out = guest_cache_dir() / f"{world}-rust-{h.hexdigest()[:20]}.wasm"
    if out.exists():
        return out
    target_dir = guest_cache_dir() / "rust-target"
    cmd = [
        str(tools.cargo),
        "build",
        "--release",
        "--locked",
        "--target",
        RUST_TARGET,
        "-Zbuild-std=std,panic_abort",
        "--manifest-path",
        str(crate / "Cargo.toml"),
        "--target-dir",
        str(target_dir),
    ]
    _run_tool(cmd, "cargo build", env=tools.environment())
    module = target_dir / RUST_TARGET / "release" / f"{artifact}.wasm"
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    _run_tool(
        [*tool_command("wasm-tools"), "component", "new", str(module), "-o", str(tmp)],
        "wasm-tools component new",
    )
    tmp.replace(out)
    return out


def _workspace_root(crate: Path) -> Path:
    for parent in [crate, *crate.parents]:
        manifest = parent / "Cargo.toml"
        if manifest.is_file() and "workspace" in tomllib.loads(manifest.read_text()):
            return parent
    return crate


def _write_lowered(wit: Path, world: str, dest: Path, suffix: str | None) -> None:
    """Lower the world into ``dest``, touching it only when the text changed (so cargo
    does not rebuild for nothing)."""
    from ..tools.lower import lower_world as lower

    with tempfile.TemporaryDirectory(prefix="isyswasfa-rust-wit-") as tmp:
        fresh = Path(tmp) / "wit"
        lower(wit, world, fresh, suffix=suffix)
        if dest.is_dir() and _same_tree(fresh, dest):
            return
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(fresh, dest)


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def _run_tool(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise ToolError(f"{what} failed:\n" + "\n".join(lines[-30:]))
