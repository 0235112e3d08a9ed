"""The WIT lowering tool: golden output, acceptance by 0.2 toolchains, clear errors."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from trio_isyswasfa import ToolError
from trio_isyswasfa.tools._paths import tool_command
from trio_isyswasfa.tools.lower import lower_world, stage_wit

GOLDEN = Path(__file__).parent / "golden" / "lower"


@pytest.fixture(scope="module")
def lowered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lowered")
    lower_world(GOLDEN / "input.wit", "golden", out, suffix="golden-test")
    return out


def test_golden_output(lowered: Path) -> None:
    expected = (GOLDEN / "expected.wit").read_text()
    assert (lowered / "test-golden-1.0.0.wit").read_text() == expected


def test_lowered_world_parses_and_has_no_async(lowered: Path) -> None:
    proc = subprocess.run(
        [*tool_command("wasm-tools"), "component", "wit", "--json", str(lowered)],
        capture_output=True,
        text=True,
        check=True,
    )
    resolve = json.loads(proc.stdout)
    kinds = {json.dumps(f["kind"]) for i in resolve["interfaces"] for f in i["functions"].values()}
    assert not any("async" in k for k in kinds)


def test_metadata_describes_split_functions(lowered: Path) -> None:
    meta = json.loads((lowered / "isyswasfa.json").read_text())
    assert meta["poll_export"] == "isyswasfa-poll-golden-test"
    exported = {i["key"]: [f["name"] for f in i["functions"]] for i in meta["exports"]}
    assert exported["test:golden/types@1.0.0"] == [
        "[method]counter.wait-for",
        "[static]counter.make",
        "wait",
        "fire",
    ]
    assert exported[""] == ["run"]
    imported_top = next(i for i in meta["imports"] if i["key"] == "")["functions"][0]
    assert imported_top["name"] == "top"
    assert imported_top["returns_result"] is True


@pytest.mark.slow
def test_componentize_py_accepts_the_lowered_world(lowered: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            *tool_command("componentize-py"),
            "-d",
            str(lowered),
            "-w",
            "golden",
            "bindings",
            str(tmp_path / "bindings"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    generated = (tmp_path / "bindings" / "wit_world" / "__init__.py").read_text()
    assert "def run_isyswasfa_start" in generated
    assert "def isyswasfa_poll_golden_test" in generated


def test_default_suffix_is_the_world_name(tmp_path: Path) -> None:
    result = lower_world(GOLDEN / "input.wit", "golden", tmp_path / "out")
    assert result.poll_export == "isyswasfa-poll-golden"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"world": "nope"}, "no world named 'nope'"),
        ({"suffix": "Bad_Suffix"}, "not a kebab-case label"),
        ({"wit": "missing-dir"}, "no such WIT path"),
    ],
)
def test_bad_input(tmp_path: Path, kwargs: dict[str, str], message: str) -> None:
    args = {"wit": str(GOLDEN / "input.wit"), "world": "golden", **kwargs}
    with pytest.raises(ToolError, match=message):
        lower_world(args["wit"], args["world"], tmp_path / "out", suffix=kwargs.get("suffix"))


@pytest.mark.parametrize(
    ("wit", "message"),
    [
        pytest.param("world w { import nope; }", "cannot parse WIT", id="unparsable"),
        pytest.param(
            "interface i { resource pending; f: async func(); }\nworld w { export i; }",
            "defines pending",
            id="an interface defining pending",
        ),
    ],
)
def test_a_bad_wit_is_refused_naming_the_problem(tmp_path: Path, wit: str, message: str) -> None:
    src = tmp_path / "bad.wit"
    src.write_text(f"package a:b;\n{wit}\n")
    with pytest.raises(ToolError, match=message):
        lower_world(src, "w", tmp_path / "out")


def test_inline_interfaces_with_the_same_body_are_each_printed_whole(tmp_path: Path) -> None:
    src = tmp_path / "w.wit"
    src.write_text(
        "package a:b;\nworld w {\n"
        "  import one: interface { f: async func(x: u32) -> u32; }\n"
        "  import two: interface { f: async func(x: u32) -> u32; }\n"
        "}\n"
    )
    lower_world(src, "w", tmp_path / "out")
    text = (tmp_path / "out" / "a-b.wit").read_text()
    for name in ("one", "two"):
        block = text.split(f"import {name}: interface {{")[1].split("\n  }")[0]
        assert "f-isyswasfa-start: func(x: u32) -> result<u32, pending>;" in block
        assert "f-isyswasfa-result: func(ready: ready) -> u32;" in block


def _staged_http(tmp_path: Path, world: str) -> list[str]:
    src = tmp_path / "src"
    src.mkdir(parents=True)
    (src / "world.wit").write_text(f"package test:app;\n\nworld app {{\n{world}\n}}\n")
    dest = stage_wit(src, tmp_path / "staged")
    return sorted(
        m.group(1)
        for f in (dest / "deps").rglob("*.wit")
        for m in re.finditer(r"^package (wasi:http@[^;\s]+)", f.read_text(), re.MULTILINE)
    )


def test_staging_adds_the_bundled_wasi_http_the_world_names(tmp_path: Path) -> None:
    """Two bundled packages are both wasi:http (0.2 and the 0.3 draft); a world gets the
    one it names, never both (wit-bindgen would then rename every wasi:http module)."""
    assert _staged_http(tmp_path / "p2", "  include wasi:http/proxy@0.2.0;") == ["wasi:http@0.2.0"]
    assert _staged_http(tmp_path / "draft", "  import wasi:http/types@0.3.0-draft;") == [
        "wasi:http@0.3.0-draft"
    ]
    assert len(_staged_http(tmp_path / "none", "  import wasi:io/poll@0.2.0;")) == 1
