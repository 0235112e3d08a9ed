"""Loading on our own engine (``engine/_load.py``): the module index that finds a
component's compiled core modules by the component's digest, without hashing them.
A missing, truncated, corrupt or other-version index is ignored and written again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import trio
from test_startup import command_bytes

import trio_isyswasfa
from trio_isyswasfa.engine import _load
from trio_isyswasfa.engine._reader import read_component


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRIO_ISYSWASFA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def wasm(tmp_path: Path) -> bytes:
    return command_bytes(tmp_path, 1)


def digests_of(data: bytes) -> dict[int, str]:
    component = read_component(data)
    return {m.offset: hashlib.sha256(m.data).hexdigest() for m in component.modules}


def test_the_index_is_written_then_read_instead_of_hashing(
    wasm: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = hashlib.sha256(wasm).hexdigest()
    expected = digests_of(wasm)
    assert _load.module_digests(read_component(wasm), digest) == expected
    assert json.loads(_load.index_path(digest).read_text())["version"] == _load.INDEX_VERSION

    def unhashed(_data: object) -> str:
        raise AssertionError("hashed again")

    monkeypatch.setattr(_load, "module_digest", unhashed)
    assert _load.module_digests(read_component(wasm), digest) == expected


def test_without_a_digest_nothing_is_remembered(wasm: bytes, cache: Path) -> None:
    assert _load.module_digests(read_component(wasm), None) == digests_of(wasm)
    assert not list(cache.glob("*-own-modules-*"))


BOGUS = "0" * 64  # well formed: a check that lets a bad index through returns it


def bad_indexes(offsets: list[int]) -> dict[str, bytes]:
    good = {"version": _load.INDEX_VERSION, "modules": {str(o): BOGUS for o in offsets}}
    whole = json.dumps(good).encode()
    return {
        "empty": b"",
        "truncated": whole[: len(whole) // 2],
        "not utf-8": b"\xff\xfe\x00garbage",
        "not an object": json.dumps([good]).encode(),
        "another version": json.dumps({**good, "version": _load.INDEX_VERSION + 1}).encode(),
        "no version": json.dumps({"modules": good["modules"]}).encode(),
        "modules not an object": json.dumps({**good, "modules": [BOGUS]}).encode(),
        "a module missing": json.dumps({**good, "modules": {}}).encode(),
        "a module too many": json.dumps(
            {**good, "modules": {**good["modules"], "999999": BOGUS}}
        ).encode(),
        "another module's offset": json.dumps(
            {**good, "modules": {str(o + 1): BOGUS for o in offsets}}
        ).encode(),
        "a digest not hex": json.dumps(
            {**good, "modules": {str(o): "z" * 64 for o in offsets}}
        ).encode(),
        "a digest too short": json.dumps(
            {**good, "modules": {str(o): BOGUS[:63] for o in offsets}}
        ).encode(),
        "a digest not a string": json.dumps(
            {**good, "modules": dict.fromkeys(map(str, offsets), 7)}
        ).encode(),
    }


@pytest.mark.parametrize("case", list(bad_indexes([0])))
def test_a_bad_index_is_ignored_and_written_again(wasm: bytes, case: str) -> None:
    digest = hashlib.sha256(wasm).hexdigest()
    expected = digests_of(wasm)
    path = _load.index_path(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bad_indexes(list(expected))[case])
    assert _load.module_digests(read_component(wasm), digest) == expected
    written = json.loads(path.read_text())
    assert written == {
        "version": _load.INDEX_VERSION,
        "modules": {str(k): v for k, v in expected.items()},
    }


def test_a_component_loads_and_runs_past_a_corrupt_index(tmp_path: Path, wasm: bytes) -> None:
    path = tmp_path / "cmd.wasm"
    path.write_bytes(wasm)
    index = _load.index_path(hashlib.sha256(wasm).hexdigest())
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_bytes(b'{"version": 1, "modules": {"')
    component = trio_isyswasfa.load_component(path, engine="own")
    assert trio.run(trio_isyswasfa.run_command, component) == 1
    assert json.loads(index.read_text())["version"] == _load.INDEX_VERSION
