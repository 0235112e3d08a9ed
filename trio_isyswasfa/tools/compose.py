"""Compose several isyswasfa components into one whose every poll export is reachable.

``wasm-tools compose`` (unpatched) instantiates the root and its dependencies and
wires each import to the export of the same name, but the composed component
exports only the root's exports: the dependencies' ``isyswasfa-poll-*`` functions,
through which the host drives their tasks, would be unreachable. (The 2024 project
patched wasm-compose for this; ``wac`` 0.12 panics on components whose imports
carry resources, as every isyswasfa component's do.)

Components built by different toolchains import the same WASI interfaces at different
patch versions (componentize-py's guests ``wasi:io/streams@0.2.9``, our Rust guests
``@0.2.0``). Inside one component wit-component unifies such imports to the newest
version; ``wasm-tools compose`` does not, and then finds the resources of
``wasi:http/types`` (whose bodies hold ``input-stream``) different on the two sides. So
before composing we rename each component's older semver-compatible imports to the
newest version any input imports (:func:`import_upgrades`): a newer minor or patch
release only adds to an interface, so every function the component uses is still there.

So we compose with the unpatched tool, read the outer component's structure from
``wasm-tools print --skeleton`` (function bodies elided), and append two sections
to the binary: an alias of each dependency instance's poll function, and an export
of it. Component sections may come in any order, so the nested components stay
byte for byte as they were. ``wasm-tools validate`` checks the result.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._errors import ToolError
from ._paths import tool_command

POLL_PREFIX = "isyswasfa-poll-"

_SORT_FUNC = 0x01
_ALIAS_SECTION = 6
_EXPORT_SECTION = 11

# lines of `wasm-tools print --skeleton`; items may carry `$name (@name "…")` before `(;N;)`
_NAMED = r'(?:\$(?:"[^"]*"|\S+) (?:\(@name "[^"]*"\) )?)?'
_COMPONENT = re.compile(r"^  \(component " + _NAMED + r"\(;(\d+);\)")
_COMPONENT_NAME = re.compile(r"^  \(component (\$(?:\"[^\"]*\"|\S+))")
_INSTANCE = re.compile(r"^  \(instance " + _NAMED + r"\(;(\d+);\) \(instantiate (\S+)")
_INNER_EXPORT = re.compile(r"^    \(export " + _NAMED + r'\(;\d+;\) "([^"]+)" \(func ')
_OUTER_EXPORT = re.compile(r"^  \(export " + _NAMED + r'\(;\d+;\) "([^"]+)"')
_OUTER_FUNC = re.compile(
    r"^  \(func \(;(\d+);\)"  # canon lift
    r"|^  \(.*\(func \(;(\d+);\)"  # an import or an alias
    r"|^  \(export " + _NAMED + r'\(;(\d+);\) "[^"]+" \(func '  # an export: a new index too
)


@dataclass(frozen=True)
class ComposedPoll:
    """The poll function of one instance inside a composed component."""

    name: str
    instance: int
    exported: bool  # already an export of the composed component (the root's)


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _name(text: str) -> bytes:
    raw = text.encode()
    return _leb(len(raw)) + raw


def _section(section_id: int, entries: list[bytes]) -> bytes:
    body = _leb(len(entries)) + b"".join(entries)
    return bytes([section_id]) + _leb(len(body)) + body


def _run(args: list[str], what: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "wac" not in ln]
        detail = lines[-1] if lines else f"exit status {proc.returncode}"
        raise ToolError(f"{what} failed: {detail.removeprefix('error: ')}")
    return proc.stdout


# a top-level import of a plain X.Y.Z version, as `wasm-tools print` writes it
_VERSIONED_IMPORT = re.compile(r'^(  \(import ")([^"@]+)@(\d+)\.(\d+)\.(\d+)"', re.MULTILINE)


def import_upgrades(skeletons: Sequence[str]) -> list[dict[str, str]]:
    """For each component (its ``wasm-tools print`` text), the renames that lift its
    imports to the newest semver-compatible version any of them imports.

    Compatible means the same name and major version (and minor version, for 0.x);
    pre-release versions such as ``0.3.0-draft`` are left alone.
    """
    newest: dict[tuple[str, int, int], tuple[int, int, int]] = {}
    found: list[list[tuple[str, tuple[str, int, int], tuple[int, int, int]]]] = []
    for text in skeletons:
        imports = []
        for m in _VERSIONED_IMPORT.finditer(text):
            name, version = m.group(2), (int(m.group(3)), int(m.group(4)), int(m.group(5)))
            key = (name, version[0], version[1] if version[0] == 0 else -1)
            newest[key] = max(newest.get(key, version), version)
            imports.append((name, key, version))
        found.append(imports)
    return [
        {
            f"{name}@{'.'.join(map(str, version))}": f"{name}@{'.'.join(map(str, newest[key]))}"
            for name, key, version in imports
            if newest[key] != version
        }
        for imports in found
    ]


def _rename_imports(text: str, renames: dict[str, str]) -> str:
    def rename(m: re.Match[str]) -> str:
        old = f"{m.group(2)}@{m.group(3)}.{m.group(4)}.{m.group(5)}"
        return f'{m.group(1)}{renames.get(old, old)}"'

    return _VERSIONED_IMPORT.sub(rename, text)


def _unify_import_versions(paths: list[Path], tmp: Path) -> list[Path]:
    """``paths``, with a renamed copy (in ``tmp``) of each component whose imports are
    older than another's (see :func:`import_upgrades`)."""
    wasm_tools = tool_command("wasm-tools")
    skeletons = [
        _run([*wasm_tools, "print", "--skeleton", str(p)], "wasm-tools print") for p in paths
    ]
    out = []
    for i, (path, renames) in enumerate(zip(paths, import_upgrades(skeletons), strict=True)):
        if not renames:
            out.append(path)
            continue
        text = _rename_imports(_run([*wasm_tools, "print", str(path)], "wasm-tools print"), renames)
        source, upgraded = tmp / f"upgraded-{i}.wat", tmp / f"upgraded-{i}-{path.name}"
        source.write_text(text)
        _run([*wasm_tools, "parse", str(source), "-o", str(upgraded)], "wasm-tools parse")
        out.append(upgraded)
    return out


def composed_polls(skeleton: str) -> list[ComposedPoll]:
    """The poll functions of the instances inside a composed component.

    Raises:
      ToolError: two instances have poll functions of the same name (their suffixes
        must be unique among composed components).
    """
    polls_of: dict[str, list[str]] = {}  # component (by index and by name) -> poll exports
    instances: list[tuple[int, str]] = []
    exported: set[str] = set()
    current: list[str] | None = None
    for line in skeleton.splitlines():
        if m := _COMPONENT.match(line):
            current = polls_of[m.group(1)] = []
            if n := _COMPONENT_NAME.match(line):
                polls_of[n.group(1)] = current
        elif m := _INNER_EXPORT.match(line):
            if current is not None and m.group(1).startswith(POLL_PREFIX):
                current.append(m.group(1))
        elif line.startswith("  ("):
            current = None
            if m := _INSTANCE.match(line):
                instances.append((int(m.group(1)), m.group(2)))
            elif m := _OUTER_EXPORT.match(line):
                exported.add(m.group(1))
    seen: dict[str, int] = {}
    out = []
    for instance, component in instances:
        for name in polls_of.get(component, []):
            if name in seen:
                raise ToolError(
                    f"two composed components export {name}: give each a unique poll suffix"
                )
            seen[name] = instance
            out.append(ComposedPoll(name, instance, exported=name in exported))
    return out


def next_func_index(skeleton: str) -> int:
    """The next free index in the outer component's function index space."""
    indexes = [
        int(next(g for g in m.groups() if g is not None))
        for line in skeleton.splitlines()
        if (m := _OUTER_FUNC.match(line))
    ]
    return max(indexes, default=-1) + 1


def export_polls(wasm: bytes, polls: list[ComposedPoll], first_func: int) -> bytes:
    """``wasm`` with an alias and an export appended for each of ``polls``."""
    if not polls:
        return wasm
    aliases = [bytes([_SORT_FUNC, 0x00]) + _leb(p.instance) + _name(p.name) for p in polls]
    exports = [
        bytes([0x00]) + _name(p.name) + bytes([_SORT_FUNC]) + _leb(first_func + i) + bytes([0x00])
        for i, p in enumerate(polls)
    ]
    return wasm + _section(_ALIAS_SECTION, aliases) + _section(_EXPORT_SECTION, exports)


@dataclass(frozen=True)
class Wire:
    """One import of the root (``importer`` ``None``) or of a named dependency, fed
    from export ``export`` (default: the import's own name) of dependency ``dep``."""

    importer: str | None
    name: str
    dep: str
    export: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Wire:
        """``[COMPONENT::]IMPORT=DEP[::EXPORT]``, as the CLI's ``--wire`` takes it."""
        left, sep, right = spec.partition("=")
        importer, _, name = left.rpartition("::")
        dep, _, export = right.partition("::")
        if not sep or not name or not dep:
            raise ToolError(f"bad wire {spec!r}: expected [COMPONENT::]IMPORT=DEP[::EXPORT]")
        return cls(importer or None, name, dep, export or None)


def _dep_name(spec: str | Path) -> tuple[str, Path]:
    text = str(spec)
    name, sep, path = text.partition("=")
    if sep and name and "/" not in name:
        return name, Path(path)
    return Path(text).stem, Path(text)


def _config(deps: dict[str, Path], wires: Sequence[Wire]) -> str:
    def argument(wire: Wire) -> dict[str, str]:
        return {"instance": wire.dep, "export": wire.export or wire.name}

    instantiations: dict[str, dict[str, object]] = {"root": {"arguments": {}}}
    for name in deps:
        instantiations[name] = {"dependency": name, "arguments": {}}
    for wire in wires:
        target = wire.importer or "root"
        if target not in instantiations or wire.dep not in deps:
            unknown = target if target not in instantiations else wire.dep
            raise ToolError(f"wire {wire.name}: no dependency named {unknown!r}")
        args = instantiations[target]["arguments"]
        assert isinstance(args, dict)
        args[wire.name] = argument(wire)
    # YAML is a superset of JSON: wasm-tools reads this as its configuration
    return json.dumps(
        {
            "dependencies": {n: str(p.resolve()) for n, p in deps.items()},
            "instantiations": instantiations,
        }
    )


def compose(
    root: Path | str,
    deps: Sequence[Path | str],
    out: Path | str,
    *,
    wires: Sequence[Wire] = (),
) -> list[str]:
    """Compose ``root`` with ``deps`` into ``out``.

    Without ``wires``, each import is wired to a dependency's export of the same name
    (wasm-tools' own matching). With ``wires``, exactly those imports are wired
    (dependencies named ``NAME=PATH``, or by file stem) and every other import of
    every component stays an import of the result, for the host to serve.

    Every dependency's poll function is exported beside the root's, so the host
    drives all of them. Returns the names of the composed component's poll exports.

    Raises:
      ToolError: a file is missing, a wire names an unknown dependency, wasm-tools
        refused the composition, or two components share a poll suffix.
    """
    wasm_tools = tool_command("wasm-tools")
    named = dict(_dep_name(d) for d in deps)
    for path in [Path(root), *named.values()]:
        if not path.is_file():
            raise ToolError(f"no such component: {path}")
    with tempfile.TemporaryDirectory(prefix="isyswasfa-compose-") as tmp:
        root, *paths = _unify_import_versions([Path(root), *named.values()], Path(tmp))
        named = dict(zip(named, paths, strict=True))
        composed = Path(tmp) / "composed.wasm"
        args = [*wasm_tools, "compose", "-q", str(root), "-o", str(composed)]
        if wires:
            config = Path(tmp) / "config.yaml"
            config.write_text(_config(named, wires))
            args += ["-c", str(config)]
        else:
            for path in named.values():
                args += ["-d", str(path)]
        _run(args, "wasm-tools compose")
        skeleton = _run([*wasm_tools, "print", "--skeleton", str(composed)], "wasm-tools print")
        polls = composed_polls(skeleton)
        missing = [p for p in polls if not p.exported]
        result = Path(tmp) / "result.wasm"
        result.write_bytes(export_polls(composed.read_bytes(), missing, next_func_index(skeleton)))
        _run([*wasm_tools, "validate", str(result)], "validating the composition")
        Path(out).write_bytes(result.read_bytes())
    return sorted(p.name for p in polls)
