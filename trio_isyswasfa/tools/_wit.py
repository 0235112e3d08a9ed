"""A resolved WIT package set (from ``wasm-tools component wit --json``) and a printer.

We parse WIT with ``wasm-tools`` rather than writing a parser, and print it
ourselves: no Python library prints WIT from a resolve.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import ToolError
from ._paths import tool_command

_KEYWORDS = frozenset(
    [
        "as",
        "async",
        "bool",
        "borrow",
        "char",
        "constructor",
        "enum",
        "export",
        "f32",
        "f64",
        "flags",
        "from",
        "func",
        "future",
        "import",
        "include",
        "interface",
        "list",
        "option",
        "own",
        "package",
        "record",
        "resource",
        "result",
        "s16",
        "s32",
        "s64",
        "s8",
        "static",
        "stream",
        "string",
        "tuple",
        "type",
        "u16",
        "u32",
        "u64",
        "u8",
        "use",
        "variant",
        "with",
        "world",
        "error-context",
    ]
)


def ident(name: str) -> str:
    """Return ``name`` escaped with ``%`` where it would clash with a WIT keyword."""
    return f"%{name}" if name in _KEYWORDS else name


def load_resolve(wit_dir: Path) -> Resolve:
    """Resolve the WIT package in ``wit_dir`` (with its ``deps/``) through wasm-tools."""
    proc = subprocess.run(
        [*tool_command("wasm-tools"), "component", "wit", "--json", str(wit_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ToolError(f"cannot parse WIT in {wit_dir}: {_first_error_line(proc.stderr)}")
    return Resolve(json.loads(proc.stdout))


def _first_error_line(stderr: str) -> str:
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("error:"):
            return line.removeprefix("error:").strip()
    return stderr.strip().splitlines()[0] if stderr.strip() else "unknown error"


@dataclass
class Resolve:
    """The JSON form of a resolved set of WIT packages, with lookups."""

    data: dict[str, Any]
    interfaces: list[dict[str, Any]] = field(init=False)
    types: list[dict[str, Any]] = field(init=False)
    worlds: list[dict[str, Any]] = field(init=False)
    packages: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.interfaces = self.data["interfaces"]
        self.types = self.data["types"]
        self.worlds = self.data["worlds"]
        self.packages = self.data["packages"]

    def package_of_world(self, name: str) -> tuple[int, int]:
        """Find world ``name`` (plain or ``pkg/name`` form); return (package, world) ids."""
        matches = []
        for wid, world in enumerate(self.worlds):
            pkg = self.packages[world["package"]]["name"]
            if name in (world["name"], f"{pkg}/{world['name']}"):
                matches.append((world["package"], wid))
        if not matches:
            known = ", ".join(sorted(w["name"] for w in self.worlds))
            raise ToolError(f"no world named {name!r} (worlds: {known})")
        return matches[-1]

    def interface_path(self, iid: int, from_package: int | None = None) -> str:
        """The name to write for interface ``iid`` when referenced from ``from_package``."""
        iface = self.interfaces[iid]
        pkg_id = iface["package"]
        if pkg_id == from_package:
            return ident(iface["name"])
        pkg = self.packages[pkg_id]["name"]
        ns_name, _, version = pkg.partition("@")
        path = f"{ns_name}/{iface['name']}"
        return f"{path}@{version}" if version else path

    def package_name(self, iid: int) -> str:
        """The package name (``ns:name[@ver]``) that owns interface ``iid``."""
        return str(self.packages[self.interfaces[iid]["package"]]["name"])


ASYNC_KINDS = frozenset({"async-freestanding", "async-method", "async-static"})


def func_kind(func: dict[str, Any]) -> tuple[str, int | None]:
    """Split a function's JSON ``kind`` into (kind name, resource type id or None)."""
    kind = func["kind"]
    if isinstance(kind, str):
        return kind, None
    ((name, resource),) = kind.items()
    return name, resource


def split_resource_func_name(name: str) -> tuple[str, str]:
    """``[method]res.get`` -> ("res", "get"); ``[constructor]res`` -> ("res", "")."""
    match = re.fullmatch(r"\[(?:method|static|async method|async static)\]([^.]+)\.(.+)", name)
    if match:
        return match.group(1), match.group(2)
    match = re.fullmatch(r"\[constructor\](.+)", name)
    if match:
        return match.group(1), ""
    return "", name


class Printer:
    """Prints types, functions, interfaces and worlds of a resolve as WIT text."""

    def __init__(self, resolve: Resolve) -> None:
        self.r = resolve

    # -- types ---------------------------------------------------------------
    def type_ref(self, ty: Any) -> str:
        """A reference to a type: a primitive, a named type or an anonymous one."""
        if isinstance(ty, str):
            return ty
        if isinstance(ty, dict):  # synthetic types made by a transform
            return str(ty["wit"])
        t = self.r.types[ty]
        if t["name"] is not None and t["owner"] is not None:
            return ident(t["name"])
        return self.anon(t["kind"])

    def anon(self, kind: Any) -> str:
        if isinstance(kind, str):
            raise ToolError(f"cannot print anonymous type of kind {kind!r}")
        ((tag, body),) = kind.items()
        if tag == "list":
            return f"list<{self.type_ref(body)}>"
        if tag == "option":
            return f"option<{self.type_ref(body)}>"
        if tag == "tuple":
            return "tuple<" + ", ".join(self.type_ref(t) for t in body["types"]) + ">"
        if tag == "result":
            ok, err = body["ok"], body["err"]
            if ok is None and err is None:
                return "result"
            if err is None:
                return f"result<{self.type_ref(ok)}>"
            ok_s = "_" if ok is None else self.type_ref(ok)
            return f"result<{ok_s}, {self.type_ref(err)}>"
        if tag == "handle":
            ((mode, target),) = body.items()
            name = self.type_ref(target)
            return name if mode == "own" else f"borrow<{name}>"
        if tag == "type":
            return self.type_ref(body)
        if tag in ("future", "stream"):
            raise ToolError(f"{tag}<…> types are not supported by the isyswasfa lowering yet")
        raise ToolError(f"cannot print anonymous type {tag!r}")

    def type_def(
        self, name: str, tid: int, owner_iface: int | None, from_package: int | None = None
    ) -> list[str]:
        """Lines defining named type ``tid`` (or a ``use`` when it aliases another interface)."""
        t = self.r.types[tid]
        kind = t["kind"]
        n = ident(name)
        if kind == "resource":
            return [f"resource {n};"]  # bodies are printed by the interface printer
        ((tag, body),) = kind.items()
        if tag == "type" and isinstance(body, int):
            target = self.r.types[body]
            towner = target["owner"] or {}
            if (
                target["name"] is not None
                and "interface" in towner
                and towner["interface"] != owner_iface
            ):
                here = self._pkg_of(owner_iface) if owner_iface is not None else from_package
                src = self.r.interface_path(towner["interface"], here)
                alias = ident(target["name"])
                spec = alias if target["name"] == name else f"{alias} as {n}"
                return [f"use {src}.{{{spec}}};"]
            return [f"type {n} = {self.type_ref(body)};"]
        if tag == "record":
            fields = [f"  {ident(f['name'])}: {self.type_ref(f['type'])}," for f in body["fields"]]
            return [f"record {n} {{", *fields, "}"]
        if tag == "variant":
            cases = []
            for c in body["cases"]:
                payload = "" if c["type"] is None else f"({self.type_ref(c['type'])})"
                cases.append(f"  {ident(c['name'])}{payload},")
            return [f"variant {n} {{", *cases, "}"]
        if tag == "enum":
            return [f"enum {n} {{", *(f"  {ident(c['name'])}," for c in body["cases"]), "}"]
        if tag == "flags":
            return [f"flags {n} {{", *(f"  {ident(c['name'])}," for c in body["flags"]), "}"]
        return [f"type {n} = {self.anon(kind)};"]

    def _pkg_of(self, iid: int | None) -> int | None:
        return None if iid is None else int(self.r.interfaces[iid]["package"])

    # -- functions -----------------------------------------------------------
    def signature(self, params: list[dict[str, Any]], result: Any, *, skip_self: bool) -> str:
        ps = params[1:] if skip_self else params
        args = ", ".join(f"{ident(p['name'])}: {self.type_ref(p['type'])}" for p in ps)
        res = "" if result is None else f" -> {self.type_ref(result)}"
        return f"func({args}){res}"

    def func_lines(self, func: dict[str, Any]) -> Iterator[tuple[str | None, str]]:
        """Yield (resource name or None, line) for one function (no lowering)."""
        kind, _res = func_kind(func)
        res_name, fname = split_resource_func_name(func["name"])
        prefix = "async " if kind in ASYNC_KINDS else ""
        if kind == "constructor":
            sig = self.signature(func["params"], None, skip_self=False)
            yield res_name, f"constructor{sig.removeprefix('func')};"
        elif kind in ("method", "async-method"):
            sig = self.signature(func["params"], func.get("result"), skip_self=True)
            yield res_name, f"{ident(fname)}: {prefix}{sig};"
        elif kind in ("static", "async-static"):
            sig = self.signature(func["params"], func.get("result"), skip_self=False)
            yield res_name, f"{ident(fname)}: static {prefix}{sig};"
        else:
            sig = self.signature(func["params"], func.get("result"), skip_self=False)
            yield None, f"{ident(fname)}: {prefix}{sig};"

    # -- interfaces ----------------------------------------------------------
    def interface_body(
        self,
        iid: int,
        extra_uses: list[str] | None = None,
        func_lines: Any = None,
    ) -> list[str]:
        """The body lines of interface ``iid``; ``func_lines`` may transform functions."""
        iface = self.r.interfaces[iid]
        produce = func_lines or self.func_lines
        lines: list[str] = list(extra_uses or [])
        resource_lines: dict[str, list[str]] = {}
        free_lines: list[str] = []
        for func in iface["functions"].values():
            for res, line in produce(func):
                if res:
                    resource_lines.setdefault(res, []).append(line)
                else:
                    free_lines.append(line)
        for name, tid in iface["types"].items():
            if self.r.types[tid]["kind"] == "resource":
                body = resource_lines.pop(name, [])
                if body:
                    lines.append(f"resource {ident(name)} {{")
                    lines.extend(f"  {line}" for line in body)
                    lines.append("}")
                else:
                    lines.append(f"resource {ident(name)};")
            else:
                lines.extend(self.type_def(name, tid, iid))
        lines.extend(free_lines)
        return lines


def print_package(name: str, items: list[str]) -> str:
    """Join package items (already-printed interfaces and worlds) into one WIT file."""
    return f"package {name};\n\n" + "\n\n".join(items) + "\n"


def indent(lines: list[str], prefix: str = "  ") -> list[str]:
    """Indent every line of a block."""
    return [f"{prefix}{line}" if line else line for line in lines]
