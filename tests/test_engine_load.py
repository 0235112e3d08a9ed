"""Loading on our own engine (``engine/_load.py``): the module index that finds a
component's compiled core modules by the component's digest, without hashing them.
A missing, truncated, corrupt or other-version index is ignored and written again."""

from __future__ import annotations

import hashlib
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
    assert _load.index_path(digest).read_bytes() == index_text(
        [f"{k} {v}" for k, v in expected.items()]
    )

    def unhashed(_data: object) -> str:
        raise AssertionError("hashed again")

    monkeypatch.setattr(_load, "module_digest", unhashed)
    assert _load.module_digests(read_component(wasm), digest) == expected


def test_without_a_digest_nothing_is_remembered(wasm: bytes, cache: Path) -> None:
    assert _load.module_digests(read_component(wasm), None) == digests_of(wasm)
    assert not list(cache.glob("*-own-modules-*"))


BOGUS = "0" * 64  # well formed: a check that lets a bad index through returns it
ARABIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")  # digits int() reads, not ASCII


def index_text(lines: list[str], *, header: str | None = None, end: str = "end\n") -> bytes:
    head = f"trio_isyswasfa module index v{_load.INDEX_VERSION}" if header is None else header
    return (head + "\n" + "".join(f"{line}\n" for line in lines) + end).encode()


def bad_indexes(offsets: list[int]) -> dict[str, bytes]:
    good = [f"{o} {BOGUS}" for o in offsets]
    whole = index_text(good)
    return {
        "empty": b"",
        "truncated": whole[: len(whole) // 2],
        "no end": index_text(good, end=""),
        "not ascii": "é".encode() + whole,
        "another version": index_text(good, header="trio_isyswasfa module index v0"),
        "no header": index_text(good, header=""),
        "a module missing": index_text([]),
        "a module too many": index_text([*good, f"999999 {BOGUS}"]),
        "a module twice": index_text([*good, *good]),
        "another module's offset": index_text([f"{o + 1} {BOGUS}" for o in offsets]),
        "an offset not a number": index_text([f"x{o} {BOGUS}" for o in offsets]),
        # (int() reads Arabic-Indic digits: the index is read as ASCII, so they never count)
        "an offset in other digits": index_text(
            [f"{str(o).translate(ARABIC)} {BOGUS}" for o in offsets]
        ),
        "a digest not hex": index_text([f"{o} {'z' * 64}" for o in offsets]),
        "a digest too short": index_text([f"{o} {BOGUS[:63]}" for o in offsets]),
        "lines after the end": whole + index_text(good),
    }


@pytest.mark.parametrize("case", list(bad_indexes([0])))
def test_a_bad_index_is_ignored_and_written_again(wasm: bytes, case: str) -> None:
    digest = hashlib.sha256(wasm).hexdigest()
    expected = digests_of(wasm)
    path = _load.index_path(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bad_indexes(list(expected))[case])
    assert _load.module_digests(read_component(wasm), digest) == expected
    assert path.read_bytes() == index_text([f"{k} {v}" for k, v in expected.items()])


def test_a_component_loads_and_runs_past_a_corrupt_index(tmp_path: Path, wasm: bytes) -> None:
    path = tmp_path / "cmd.wasm"
    path.write_bytes(wasm)
    index = _load.index_path(hashlib.sha256(wasm).hexdigest())
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_bytes(b"trio_isyswasfa module index v")
    component = trio_isyswasfa.load_component(path, engine="own")
    assert trio.run(trio_isyswasfa.run_command, component) == 1
    assert index.read_bytes().startswith(index_text([])[:-4])


@pytest.mark.parametrize("engine", ["own", "wasmtime"])
def test_a_cache_that_cannot_be_written_only_costs_time(
    tmp_path: Path, wasm: bytes, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    monkeypatch.setenv("TRIO_ISYSWASFA_CACHE", str(blocker / "cache"))
    path = tmp_path / "cmd.wasm"
    path.write_bytes(wasm)
    component = trio_isyswasfa.load_component(path, engine=engine)
    assert trio.run(trio_isyswasfa.run_command, component) == 1
    assert blocker.read_bytes() == b""
