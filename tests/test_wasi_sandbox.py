"""Host-level tests of the filesystem's capability checks that no guest can reach alone:
each guards behind another check (or against a race), so these call the host's
methods directly and go red when that one check is deleted."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trio_isyswasfa import WasiConfig, WasiError
from trio_isyswasfa.wasi import _sandbox
from trio_isyswasfa.wasi._context import WasiContext
from trio_isyswasfa.wasi.filesystem import Descriptor, FileOutputStream, WasiFilesystem
from trio_isyswasfa.wasi.io import WasiIo


@pytest.fixture
def fs() -> Iterator[WasiFilesystem]:
    ctx = WasiContext(WasiConfig())
    yield WasiFilesystem(ctx, WasiIo(ctx))
    ctx.close()


@pytest.fixture
def host_file(tmp_path: Path) -> Path:
    path = tmp_path / "file"
    path.write_bytes(b"unchanged")
    return path


def descriptor(path: Path, flags: set[str], *, read_only: bool) -> Descriptor:
    """A descriptor open read-write on the host, whatever the guest was granted."""
    return Descriptor(os.open(path, os.O_RDWR), frozenset(flags), read_only)


class TestReadOnlyDescriptors:
    """A descriptor beneath a read-only preopen refuses every change, even one that
    (against the open-at check) says it was opened for writing."""

    @pytest.mark.parametrize(
        "change",
        [
            lambda fs, d: fs.write(d, b"x", 0),
            lambda fs, d: fs.write_via_stream(d, 0),
            lambda fs, d: fs.append_via_stream(d),
            lambda fs, d: fs.set_size(d, 0),
            lambda fs, d: fs.set_times(d, *[type("Now", (), {"tag": "now"})()] * 2),
        ],
        ids=["write", "write-via-stream", "append-via-stream", "set-size", "set-times"],
    )
    def test_refused(self, fs: WasiFilesystem, host_file: Path, change: Any) -> None:
        before = host_file.stat().st_mtime_ns
        d = descriptor(host_file, {"read", "write"}, read_only=True)
        try:
            with pytest.raises(WasiError) as info:
                change(fs, d)
        finally:
            d.close()
        assert info.value.code == "read-only"
        assert host_file.read_bytes() == b"unchanged"
        assert host_file.stat().st_mtime_ns == before


class TestOpenModes:
    """The flags a descriptor was opened with bound it, whatever the host fd allows."""

    def test_a_descriptor_opened_for_reading_cannot_write(
        self, fs: WasiFilesystem, host_file: Path
    ) -> None:
        d = descriptor(host_file, {"read"}, read_only=False)
        try:
            with pytest.raises(WasiError, match="not opened for writing"):
                fs.write(d, b"x", 0)
            # as on wasmtime, the streams are given (the preview1 adapter asks for one
            # to poll the descriptor), but their writes fail though the host fd could write
            for handle in (fs.write_via_stream(d, 0), fs.append_via_stream(d)):
                stream = fs.ctx.table.get(handle.rep, FileOutputStream)
                with pytest.raises(OSError, match="not opened for writing"):
                    stream.write_now(b"x")
        finally:
            d.close()
        assert host_file.read_bytes() == b"unchanged"

    def test_a_descriptor_opened_for_writing_cannot_read(
        self, fs: WasiFilesystem, host_file: Path
    ) -> None:
        d = descriptor(host_file, {"write"}, read_only=False)
        try:
            with pytest.raises(WasiError, match="not opened for reading"):
                fs.read(d, 10, 0)
            with pytest.raises(WasiError, match="not opened for reading"):
                fs.read_via_stream(d, 0)
        finally:
            d.close()


class TestResolutionRaces:
    """A directory swapped for a link between our look and our open must not lead out."""

    def test_an_intermediate_directory_swapped_for_a_link_is_not_followed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        root = tmp_path / "root"
        root.mkdir()
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret").write_text("outside the sandbox")
        (root / "d").symlink_to(outside)
        real_stat = os.stat
        dir_stat = real_stat(outside)

        def stale_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
            # what the walk saw a moment before the swap: a plain directory named `d`
            return dir_stat if path == "d" else real_stat(path, *args, **kwargs)

        monkeypatch.setattr(_sandbox.os, "stat", stale_stat)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with (
                pytest.raises(WasiError) as info,
                _sandbox.beneath(fd, "d/secret", follow=False) as (at, name),
            ):
                pytest.fail(f"resolved to {os.readlink(f'/proc/self/fd/{at}')}/{name}")
        finally:
            os.close(fd)
        assert info.value.code in ("loop", "not-directory")
