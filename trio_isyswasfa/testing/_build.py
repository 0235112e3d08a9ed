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
from typing import Literal

from .._engine import cache_dir
from .._errors import ToolError
from ..tools._paths import bundled_wit_dir, guest_python_dir, guest_rust_dir, tool_command


def guest_cache_dir() -> Path:
    """Where built guests are kept (``$TRIO_ISYSWASFA_GUEST_CACHE`` overrides)."""
    env = os.environ.get("TRIO_ISYSWASFA_GUEST_CACHE")
    return Path(env) if env else cache_dir().parent / "guests"


LOWERED_DIR = "wit-lowered"  # where a Rust guest crate's bindings read the lowered world
WASIP3_WIT_DIR = "wit-p3"  # where its `wasip3` build reads the world as written
_RUST_SKIPPED = frozenset({"__pycache__", "target", LOWERED_DIR, WASIP3_WIT_DIR})


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
    cargo build directory is shared by all guests of one workspace (the std build is
    done once per checkout).

    Raises:
      RustToolchainMissing: the toolchain is not installed (the message says how).
      ToolError: lowering, cargo or ``wasm-tools component new`` failed.
    """
    tools = RustToolchain.find()
    crate = Path(crate).resolve()
    workspace = _workspace_root(crate)
    _write_lowered(Path(wit), world, crate / LOWERED_DIR, suffix)

    h = hashlib.sha256()
    h.update(f"{world}\0{suffix}\0{tools.version()}".encode())
    for root in [Path(wit), crate, guest_rust_dir(), bundled_wit_dir()]:
        _hash_tree(h, root.resolve(), _RUST_SKIPPED)
    _hash_tree(h, crate / LOWERED_DIR)
    _hash_workspace(h, workspace)
    _hash_tree(h, Path(__file__).resolve())
    out = guest_cache_dir() / f"{world}-rust-{h.hexdigest()[:20]}.wasm"
    if out.exists():
        return out
    _cargo_component(tools, crate, RUST_TARGET, _workspace_target_dir(workspace), out)
    return out


def build_rust_wasip3(crate: Path | str, wit: Path | str | None = None) -> Path:
    """Return the path of a Rust crate built as a native WASI 0.3 component, building
    it if needed: the upgrade path of an isyswasfa guest (its ``wasip3`` cargo feature,
    stock wit-bindgen's async support), or a plain wit-bindgen crate of the workspace.

    With ``wit``, the world as written (not lowered) and its dependencies are staged
    into ``<crate>/wit-p3``, where ``isyswasfa_guest::generate!`` reads them in that
    build. The crate is built for ``wasm32-unknown-unknown`` with Debian's rustc and
    ``-Zbuild-std`` (with ``--features wasip3`` if it has that feature), in the
    workspace's build directory (the std build is shared), then made a component. Run it on a host with WASI 0.3 (``wasmtime run -W
    component-model-async=y -S p3=y``), not on ours. The cache key covers what
    :func:`build_rust_guest`'s does.

    Raises:
      RustToolchainMissing: the toolchain is not installed (the message says how).
      ToolError: staging, cargo or ``wasm-tools component new`` failed.
    """
    from ..tools.lower import stage_wit

    tools = RustToolchain.find()
    crate = Path(crate).resolve()
    manifest = tomllib.loads((crate / "Cargo.toml").read_text())
    features = ["--features", "wasip3"] if "wasip3" in manifest.get("features", {}) else []
    workspace = _workspace_root(crate)
    if wit is not None:
        with tempfile.TemporaryDirectory(prefix="isyswasfa-rust-p3-") as tmp:
            fresh = stage_wit(Path(wit), Path(tmp) / "wit")
            dest = crate / WASIP3_WIT_DIR
            if not (dest.is_dir() and _same_tree(fresh, dest)):
                if dest.exists():
                    shutil.rmtree(dest)
                shutil.copytree(fresh, dest)

    h = hashlib.sha256()
    h.update(f"wasip3\0{features}\0{tools.version()}".encode())
    roots = [crate, guest_rust_dir()] + ([Path(wit), crate / WASIP3_WIT_DIR] if wit else [])
    for root in roots:
        _hash_tree(h, root.resolve(), _RUST_SKIPPED if root == crate else frozenset())
    _hash_workspace(h, workspace)
    _hash_tree(h, Path(__file__).resolve())
    out = guest_cache_dir() / f"{crate.name}-wasip3-{h.hexdigest()[:20]}.wasm"
    if out.exists():
        return out
    _cargo_component(
        tools, crate, RUST_TARGET, _workspace_target_dir(workspace), out, features=features
    )
    return out


# -- plain WASI 0.2 components (no isyswasfa): what people outside this project build ----

ADAPTER_VERSION = "49.0.3"
"""The ``wasi-preview1-component-adapter-provider`` release whose adapters we use."""

AdapterKind = Literal["command", "reactor", "proxy"]
WASIP1_TARGET = "wasm32-wasip1"
WASI_LIBC = Path("/usr/lib/wasm32-wasi")  # Debian's wasi-libc: libc.a and the crt files


def toolchain_dir() -> Path:
    """Where ``.ci/install-toolchains`` puts the adapters (``$TRIO_ISYSWASFA_TOOLCHAIN`` overrides)."""
    env = os.environ.get("TRIO_ISYSWASFA_TOOLCHAIN")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trio_isyswasfa" / "toolchain"


def preview1_adapter(kind: AdapterKind) -> Path:
    """The preview1 adapter of ``kind`` that turns a ``wasm32-wasip1`` module into a
    component: ``command`` (exports ``wasi:cli/run``), ``reactor`` (the module's own
    exports), ``proxy`` (for ``wasi:http/proxy``: imports no filesystem nor sockets)."""
    return toolchain_dir() / f"wasi_snapshot_preview1.{kind}-{ADAPTER_VERSION}.wasm"


def build_rust_component(crate: Path | str, *, adapter: AdapterKind = "proxy") -> Path:
    """Return the component of a plain Rust crate (no isyswasfa), building it if needed.

    The crate is built as users of the ``wasi`` crate or ``wstd`` build theirs: for
    ``wasm32-wasip1`` with Debian's rustc and ``-Zbuild-std``, linked against Debian's
    wasi-libc (``crt1-command.o`` for ``adapter="command"``, a binary; ``crt1-reactor.o``
    otherwise, a ``cdylib``), then made a component with ``wasm-tools component new
    --adapt`` and the preview1 adapter of that kind. The crate is its own workspace with
    its own ``Cargo.lock`` (built ``--locked``). The cache key covers the crate, the
    adapter, the toolchain's version and this file.

    Raises:
      RustToolchainMissing: the toolchain, wasi-libc or the adapter is missing (the
        message says how to install them).
      ToolError: cargo or ``wasm-tools component new`` failed.
    """
    tools = RustToolchain.find()
    crt = WASI_LIBC / ("crt1-command.o" if adapter == "command" else "crt1-reactor.o")
    shim = preview1_adapter(adapter)
    for path, what in ((crt, "Debian's wasi-libc"), (shim, f"the preview1 {adapter} adapter")):
        if not path.is_file():
            raise RustToolchainMissing(f"{what} is missing ({path}): {INSTALL_HINT}")
    crate = Path(crate).resolve()

    h = hashlib.sha256()
    h.update(f"{adapter}\0{tools.version()}".encode())
    _hash_tree(h, crate, _RUST_SKIPPED)
    _hash_tree(h, shim)
    _hash_tree(h, Path(__file__).resolve())
    out = guest_cache_dir() / f"{crate.name}-{adapter}-{h.hexdigest()[:20]}.wasm"
    if out.exists():
        return out
    # one target directory per link setup: changing RUSTFLAGS would rebuild std each time
    target_dir = guest_cache_dir() / f"rust-{WASIP1_TARGET}-{crt.stem}-target"
    env = tools.environment()
    env.pop("RUSTFLAGS", None)
    env.update(
        CARGO_TARGET_WASM32_WASIP1_LINKER=str(tools.wasm_ld),
        CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS=(
            f"-C link-self-contained=no -L {WASI_LIBC} -C link-arg={crt}"
        ),
    )
    _cargo_component(tools, crate, WASIP1_TARGET, target_dir, out, env=env, adapt=shim)
    return out


def build_python_component(
    wit: Path | str, world: str, app: str, python_path: list[Path | str]
) -> Path:
    """Return the component of a plain componentize-py app (no isyswasfa), building it
    if its sources changed.

    ``wit`` holds the app's world and whatever packages it adds under ``deps/`` (say
    ``wasi:http@0.2.0``); the bundled packages it lacks come from ``wit/deps`` (the
    WASI 0.2 packages, and of the bundled ``wasi:http`` versions the one the world
    names), staged as for isyswasfa guests. The cache key covers the WIT used, the app's
    source directories and the componentize-py version.

    Raises:
      ToolError: componentize-py failed.
    """
    from importlib.metadata import version

    from ..tools.lower import stage_wit

    h = hashlib.sha256()
    h.update(f"{world}\0{app}\0{version('componentize-py')}".encode())
    for root in [Path(wit), bundled_wit_dir(), *map(Path, python_path)]:
        _hash_tree(h, root.resolve())
    _hash_tree(h, Path(__file__).resolve())
    out = guest_cache_dir() / f"{world}-py-{h.hexdigest()[:20]}.wasm"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(prefix="trio-isyswasfa-py-component-") as tmp:
        staged = stage_wit(Path(wit), Path(tmp) / "wit")
        cmd = [*tool_command("componentize-py"), "-d", str(staged), "-w", world, "componentize"]
        for path in python_path:
            cmd += ["-p", str(path)]
        built = Path(tmp) / "component.wasm"
        _run_tool([*cmd, app, "-o", str(built)], "componentize-py")
        tmp_out = out.with_suffix(f".{os.getpid()}.tmp")
        shutil.move(built, tmp_out)
        tmp_out.replace(out)
    return out


class JsToolchainMissing(ToolError):
    """componentize-js (or node) is not installed; the message says how."""


def componentize_js_dir() -> Path:
    """Where ``.ci/install-toolchains`` installs componentize-js from the lock committed
    in ``.ci/componentize-js`` (a folder named after the lock's hash)."""
    lock = Path(__file__).resolve().parents[2] / ".ci" / "componentize-js" / "package-lock.json"
    if not lock.is_file():
        raise JsToolchainMissing(f"{lock} is missing (it ships in the source checkout only)")
    return toolchain_dir() / f"componentize-js-{hashlib.sha256(lock.read_bytes()).hexdigest()[:16]}"


def build_js_component(source: Path | str, wit: Path | str, world: str) -> Path:
    """Return the component of a JavaScript module built with componentize-js, as its
    users build one, building it if needed.

    ``wit`` is completed with the bundled packages it lacks by the staging
    :func:`build_python_component` uses. The cache key covers the module, the WIT used, the
    installed componentize-js (its lock) and this file.

    Raises:
      JsToolchainMissing: node or componentize-js is missing (the message says how).
      ToolError: componentize-js failed.
    """
    node = shutil.which("node")
    home = componentize_js_dir()
    cli = home / "node_modules" / "@bytecodealliance" / "componentize-js" / "src" / "cli.js"
    if node is None or not cli.is_file():
        missing = "node" if node is None else f"componentize-js ({cli})"
        raise JsToolchainMissing(f"{missing} is missing: {INSTALL_HINT}")
    from ..tools.lower import stage_wit

    source = Path(source).resolve()
    wit = Path(wit).resolve()
    h = hashlib.sha256(world.encode())
    for root in [source, wit, bundled_wit_dir(), home / "package-lock.json"]:
        _hash_tree(h, root)
    _hash_tree(h, Path(__file__).resolve())
    out = guest_cache_dir() / f"{world}-js-{h.hexdigest()[:20]}.wasm"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(prefix="trio-isyswasfa-js-component-") as tmp:
        staged = stage_wit(wit, Path(tmp) / "wit")
        built = Path(tmp) / "component.wasm"
        cmd = [node, str(cli), "--wit", str(staged), "--world-name", world]
        _run_tool([*cmd, "-o", str(built), str(source)], "componentize-js")
        tmp_out = out.with_suffix(f".{os.getpid()}.tmp")
        shutil.move(built, tmp_out)
        tmp_out.replace(out)
    return out


def _hash_workspace(h: hashlib._Hash, workspace: Path) -> None:
    for name in ("Cargo.toml", "Cargo.lock"):
        if (workspace / name).is_file():
            _hash_tree(h, workspace / name)


def _workspace_target_dir(workspace: Path) -> Path:
    # one cargo build directory per workspace: cargo names a cdylib's output without a
    # hash of its source path, so two checkouts of the same crates sharing a directory
    # would take each other's fresh-looking artifacts (a guest built from the other's
    # sources); within a workspace every guest shares it (the std build is done once)
    workspace_key = hashlib.sha256(str(workspace).encode()).hexdigest()[:12]
    return guest_cache_dir() / f"rust-target-{workspace_key}"


def _cargo_component(
    tools: RustToolchain,
    crate: Path,
    target: str,
    target_dir: Path,
    out: Path,
    *,
    features: list[str] | None = None,
    env: dict[str, str] | None = None,
    adapt: Path | None = None,
) -> None:
    """Build ``crate``'s core module for ``target`` with ``-Zbuild-std`` and make it the
    component ``out`` (through a temporary file, so a reader never sees half of it)."""
    artifact = tomllib.loads((crate / "Cargo.toml").read_text())["package"]["name"]
    _force_relink(crate)
    cmd = [str(tools.cargo), "build", "--release", "--locked", *(features or [])]
    cmd += ["--target", target, "-Zbuild-std=std,panic_abort"]
    cmd += ["--manifest-path", str(crate / "Cargo.toml"), "--target-dir", str(target_dir)]
    _run_tool(cmd, "cargo build", env=tools.environment() if env is None else env)
    module = target_dir / target / "release" / f"{artifact.replace('-', '_')}.wasm"
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    new = [*tool_command("wasm-tools"), "component", "new", str(module)]
    if adapt is not None:
        new += ["--adapt", f"wasi_snapshot_preview1={adapt}"]
    _run_tool([*new, "-o", str(tmp)], "wasm-tools component new")
    tmp.replace(out)


def _force_relink(crate: Path) -> None:
    """Make cargo compile ``crate`` again. Cargo names a cdylib's module without a hash
    of its features, so the isyswasfa build and the ``wasip3`` build of one crate write
    the same file; each judges itself fresh by its sources' times, and would take the
    other's module for its own. A build happens only when the sources changed (the
    cache missed), so compiling the crate itself again costs next to nothing."""
    root = crate / "src" / "lib.rs"
    if not root.is_file():
        root = crate / "src" / "main.rs"
    if root.is_file():
        root.touch()


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
