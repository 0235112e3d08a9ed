"""Lower a WIT world with ``async func`` (WASI 0.3 syntax) to the isyswasfa ABI on 0.2.

Every async function ``foo(params) -> T`` becomes

* ``foo-isyswasfa-start: func(params) -> result<T, pending>`` and
* ``foo-isyswasfa-result: func(ready: ready) -> T`` (a static function for methods),

the world imports ``isyswasfa:isyswasfa/isyswasfa`` and ``isyswasfa:io/poll``, and it
exports ``isyswasfa-poll-<suffix>: func(input: list<poll-input>) -> list<poll-output>``.
See ``docs/abi.md``.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._errors import ToolError
from ._paths import bundled_wit_dir
from ._wit import (
    ASYNC_KINDS,
    Printer,
    Resolve,
    func_kind,
    ident,
    indent,
    load_resolve,
    print_package,
    split_resource_func_name,
)

START = "-isyswasfa-start"
RESULT = "-isyswasfa-result"
POLL_PREFIX = "isyswasfa-poll-"
ABI_INTERFACE = "isyswasfa:isyswasfa/isyswasfa"
_LABEL = re.compile(r"[a-z][a-z0-9]*(-[a-z][a-z0-9]*)*")


@dataclass(frozen=True)
class AsyncFunction:
    """One function the lowering split in two."""

    name: str  # the WIT name, e.g. ``foo`` or ``[method]r.foo``
    kind: str  # freestanding, method or static
    params: list[str]
    has_result: bool
    returns_result: bool  # the WIT result is itself a ``result<T, E>``


@dataclass
class LoweredInterface:
    """The async functions of one imported or exported interface (or the world itself)."""

    key: str  # ``ns:pkg/iface@ver``, a world-level name, or ``""`` for world functions
    name: str  # the interface's own name (``""`` for world functions)
    functions: list[AsyncFunction] = field(default_factory=list)
    sync_functions: list[str] = field(default_factory=list)


@dataclass
class LoweredWorld:
    """What :func:`lower_world` wrote, and what generators need to know about it."""

    wit_dir: Path
    world: str
    package: str
    poll_export: str
    wasi_io_version: str
    wasi_clocks_version: str
    imports: list[LoweredInterface]
    exports: list[LoweredInterface]

    def to_json(self) -> str:
        """A stable JSON description (written beside the WIT as ``isyswasfa.json``)."""
        data = asdict(self)
        data["wit_dir"] = "."
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def lower_world(
    wit_dir: Path | str, world: str, out_dir: Path | str, *, suffix: str | None = None
) -> LoweredWorld:
    """Write the lowered form of ``world`` (in ``wit_dir``) to ``out_dir``.

    Args:
      wit_dir: a WIT directory (with ``deps/``) or a single ``.wit`` file.
      world: the world's name, plain or as ``ns:pkg/world``.
      out_dir: created or emptied; receives ``<world>.wit``, ``deps/…`` and ``isyswasfa.json``.
      suffix: names the poll export ``isyswasfa-poll-<suffix>``; defaults to the world name.
        It must be unique among components composed together.

    Raises:
      ToolError: the WIT does not parse, the world is unknown, or it uses something the
        lowering does not support (named in the message).
    """
    wit_dir, out_dir = Path(wit_dir), Path(out_dir)
    if not wit_dir.exists():
        raise ToolError(f"no such WIT path: {wit_dir}")
    with tempfile.TemporaryDirectory(prefix="isyswasfa-wit-") as tmp:
        staged = stage_wit(wit_dir, Path(tmp) / "wit")
        resolve = load_resolve(staged)
    pkg_id, world_id = resolve.package_of_world(world)
    world_name = resolve.worlds[world_id]["name"]
    suffix = world_name if suffix is None else suffix
    if not _LABEL.fullmatch(suffix):
        raise ToolError(f"poll suffix {suffix!r} is not a kebab-case label such as 'round-trip'")
    lowering = _Lowering(resolve, pkg_id, world_id, POLL_PREFIX + suffix)
    files = lowering.files()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    for rel, text in files.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    result = LoweredWorld(
        wit_dir=out_dir,
        world=world_name,
        package=resolve.packages[pkg_id]["name"],
        poll_export=POLL_PREFIX + suffix,
        wasi_io_version=lowering.io_version,
        wasi_clocks_version=lowering.clock_version,
        imports=lowering.summary["import"],
        exports=lowering.summary["export"],
    )
    (out_dir / "isyswasfa.json").write_text(result.to_json())
    return result


_PACKAGE_LINE = re.compile(r"^\s*package\s+([^;\s{]+)", re.MULTILINE)


def stage_wit(src: Path, dest: Path) -> Path:
    """Copy the user's WIT and add our bundled packages that it does not define itself."""
    if src.is_file():
        dest.mkdir(parents=True)
        shutil.copy(src, dest / src.name)
    else:
        shutil.copytree(src, dest)
    texts = [f.read_text() for f in dest.rglob("*.wit")]
    present = {m.group(1).split("@")[0] for text in texts for m in _PACKAGE_LINE.finditer(text)}
    # versions the user's WIT names (`wasi:http/proxy@0.2.0`): of the bundled packages
    # of one name (wasi:http 0.2 and isyswasfa's 0.3 draft), the one it asks for
    wanted: dict[str, set[str]] = {}
    for text in texts:
        for m in _VERSIONED_USE.finditer(text):
            wanted.setdefault(m.group(1), set()).add(m.group(2))
    added: set[str] = set()
    for dep in sorted((bundled_wit_dir() / "deps").iterdir()):
        versions = dict(
            m.group(1).partition("@")[::2]
            for f in dep.glob("*.wit")
            for m in _PACKAGE_LINE.finditer(f.read_text())
        )
        names = set(versions)
        if not names or names & (present | added):
            continue
        if any(
            not any(_compatible(versions[n], v) for v in wanted[n]) for n in names & set(wanted)
        ):
            continue
        shutil.copytree(dep, dest / "deps" / f"isyswasfa-bundled-{dep.name}")
        added |= names
    return dest


_VERSIONED_USE = re.compile(r"\b([a-z][\w-]*:[a-z][\w-]*)/[\w-]+@([0-9][\w.+-]*)")


def _compatible(have: str, want: str) -> bool:
    """Whether a bundled package version serves a use of ``want`` (WIT's semver rule:
    a 0.x.y release serves any 0.x.z; pre-releases only themselves)."""
    if have == want:
        return True
    if "-" in have or "-" in want:
        return False
    return have.split(".")[:2] == want.split(".")[:2]


class _Lowering:
    def __init__(self, resolve: Resolve, pkg_id: int, world_id: int, poll_export: str) -> None:
        self.r = resolve
        self.p = Printer(resolve)
        self.pkg_id = pkg_id
        self.world_id = world_id
        self.poll_export = poll_export
        self.summary: dict[str, list[LoweredInterface]] = {"import": [], "export": []}
        self._abi_pkg = self._find_package("isyswasfa:isyswasfa")
        self.clock_version = self._version_of("wasi:clocks")
        self.io_version = self._version_of("wasi:io")

    def _version_of(self, name: str) -> str:
        for pkg in self.r.packages:
            if pkg["name"].split("@")[0] == name:
                return str(pkg["name"]).partition("@")[2]
        raise ToolError(f"package {name} is missing")  # pragma: no cover - always staged

    def _find_package(self, name: str) -> int:
        for i, pkg in enumerate(self.r.packages):
            if pkg["name"] == name:
                return i
        raise ToolError(f"package {name} is missing")  # pragma: no cover - always staged

    # -- functions -------------------------------------------------------------
    def _lowered_funcs(self, func: dict[str, Any]) -> Iterator[tuple[str | None, str]]:
        kind, _ = func_kind(func)
        if kind not in ASYNC_KINDS:
            yield from self.p.func_lines(func)
            return
        res_name, fname = split_resource_func_name(func["name"])
        result = func.get("result")
        ok = "_" if result is None else self.p.type_ref(result)
        start_ret = f"result<{ok}, pending>"
        ret = "" if result is None else f" -> {self.p.type_ref(result)}"
        if kind == "async-method":
            args = self.p.signature(func["params"], None, skip_self=True)
            yield res_name, f"{ident(fname + START)}: {args} -> {start_ret};"
            yield res_name, f"{ident(fname + RESULT)}: static func(ready: ready){ret};"
        elif kind == "async-static":
            args = self.p.signature(func["params"], None, skip_self=False)
            yield res_name, f"{ident(fname + START)}: static {args} -> {start_ret};"
            yield res_name, f"{ident(fname + RESULT)}: static func(ready: ready){ret};"
        else:
            args = self.p.signature(func["params"], None, skip_self=False)
            yield None, f"{ident(fname + START)}: {args} -> {start_ret};"
            yield None, f"{ident(fname + RESULT)}: func(ready: ready){ret};"

    def _async_functions(self, funcs: dict[str, Any]) -> list[AsyncFunction]:
        out = []
        for func in funcs.values():
            kind, _ = func_kind(func)
            if kind in ASYNC_KINDS:
                params = [p["name"] for p in func["params"]]
                result = func.get("result")
                out.append(
                    AsyncFunction(
                        name=func["name"],
                        kind=kind.removeprefix("async-"),
                        params=params,
                        has_result=result is not None,
                        returns_result=self._is_result(result),
                    )
                )
        return out

    def _is_result(self, ty: Any) -> bool:
        while isinstance(ty, int):
            kind = self.r.types[ty]["kind"]
            if isinstance(kind, dict) and "result" in kind:
                return True
            if isinstance(kind, dict) and "type" in kind:
                ty = kind["type"]
                continue
            return False
        return False

    @staticmethod
    def _sync_functions(funcs: dict[str, Any]) -> list[str]:
        return [f["name"] for f in funcs.values() if func_kind(f)[0] not in ASYNC_KINDS]

    def _abi_use(self, names: str, iface_pkg: int | None) -> str:
        src = ABI_INTERFACE if iface_pkg != self._abi_pkg else "isyswasfa"
        return f"use {src}.{{{names}}};"

    # -- interfaces --------------------------------------------------------------
    def _interface_lines(self, iid: int) -> list[str]:
        iface = self.r.interfaces[iid]
        uses = []
        if self._async_functions(iface["functions"]):
            clash = {"pending", "ready"} & set(iface["types"])
            if clash:
                raise ToolError(
                    f"interface {iface['name']} defines {', '.join(sorted(clash))}, "
                    "which the isyswasfa lowering needs to name"
                )
            uses.append(self._abi_use("pending, ready", iface["package"]))
        return self.p.interface_body(iid, uses, self._lowered_funcs)

    # -- worlds ------------------------------------------------------------------
    def _world_lines(self) -> list[str]:
        world = self.r.worlds[self.world_id]
        lines = [
            f"import {ABI_INTERFACE};",
            "import isyswasfa:io/poll;",
            f"import wasi:clocks/monotonic-clock@{self.clock_version};",
        ]
        needs_abi_types = False
        seen = set(lines)
        for direction in ("import", "export"):
            for key, item in world[direction + "s"].items():
                new, uses_abi = self._world_item(direction, key, item)
                needs_abi_types |= uses_abi
                if len(new) > 1 and new[-1] == "}":
                    lines.extend(new)  # an inline interface: its lines belong together
                    continue
                lines.extend(line for line in new if line not in seen)
                seen.update(new)
        uses = ["pending, ready"] if needs_abi_types else []
        uses.append("poll-input, poll-output")
        lines.insert(3, f"use {ABI_INTERFACE}.{{{', '.join(uses)}}};")
        lines.append(
            f"export {self.poll_export}: func(input: list<poll-input>) -> list<poll-output>;"
        )
        return lines

    def _world_item(self, direction: str, key: str, item: dict[str, Any]) -> tuple[list[str], bool]:
        summary = self.summary[direction]
        if "interface" in item:
            iid = item["interface"]["id"]
            iface = self.r.interfaces[iid]
            funcs = self._async_functions(iface["functions"])
            sync = self._sync_functions(iface["functions"])
            if iface["name"] is None:  # an inline interface
                if funcs or direction == "export":
                    summary.append(LoweredInterface(key, key, funcs, sync))
                body = indent(self._interface_lines(iid))
                return [f"{direction} {ident(key)}: interface {{", *body, "}"], False
            path = self.r.interface_path(iid, self.pkg_id)
            if funcs or direction == "export":
                full = self.r.interface_path(iid)
                summary.append(LoweredInterface(full, iface["name"], funcs, sync))
            return [f"{direction} {path};"], False
        if "function" in item:
            func = item["function"]
            funcs = self._async_functions({key: func})
            sync = self._sync_functions({key: func})
            if funcs or direction == "export":
                summary.append(LoweredInterface("", "", funcs, sync))
            out = [f"{direction} {line}" for _, line in self._lowered_funcs(func)]
            return out, bool(funcs)
        if "type" in item:
            tid = item["type"]
            return self.p.type_def(self.r.types[tid]["name"], tid, None, self.pkg_id), False
        raise ToolError(f"unsupported world item {key!r}")

    # -- output ------------------------------------------------------------------
    def files(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for pid, pkg in enumerate(self.r.packages):
            items = []
            for name, iid in pkg["interfaces"].items():
                body = indent(self._interface_lines(iid))
                items.append("\n".join([f"interface {ident(name)} {{", *body, "}"]))
            if pid == self.pkg_id:
                world = self.r.worlds[self.world_id]
                body = indent(self._world_lines())
                items.append("\n".join([f"world {ident(world['name'])} {{", *body, "}"]))
                out[f"{_file_stem(pkg['name'])}.wit"] = print_package(pkg["name"], items)
            elif items:
                out[f"deps/{_file_stem(pkg['name'])}/package.wit"] = print_package(
                    pkg["name"], items
                )
        return out


def _file_stem(package: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", package)
