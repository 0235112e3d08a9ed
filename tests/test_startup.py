"""What ``python -m trio_isyswasfa`` imports: no HTTP server or client for a command that
imports no wasi:http, and no host at all for the commands that build components.

Start-up is most of what a short ``run`` costs (bench/bench_cli.py measures it against
``wasmtime run``); hypercorn and h11 alone cost 70-130 ms of CPU of it here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import trio_isyswasfa
from trio_isyswasfa import _digests
from trio_isyswasfa.engine import _load
from trio_isyswasfa.testing import build_wat_component

PROBE = """
import sys
import trio_isyswasfa
import trio_isyswasfa.http
import trio_isyswasfa.http.types  # what every instance registers
heavy = ("hypercorn", "h11", "trio_isyswasfa.http._asgi", "trio_isyswasfa.http._client")
print(sorted(m for m in sys.modules if m.split(".")[0] in heavy or m in heavy))
trio_isyswasfa.http.serve, trio_isyswasfa.http.HttpClient  # still there, on first use
print(all(m in sys.modules for m in ("hypercorn", "trio_isyswasfa.http._client")))
"""


def _probe(code: str, *args: str) -> str:
    """What ``code`` prints, run in a fresh interpreter with ``args``."""
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, timeout=120
    ).stdout


def test_a_command_imports_no_http_server_or_client() -> None:
    out = _probe(PROBE).splitlines()
    assert out == ["[]", "True"]


RUN_PROBE = """
import sys
from trio_isyswasfa._cli import main
status = main(["run", "--engine", "wasmtime", sys.argv[1]])
print(status)
print(sorted(m for m in sys.modules if m.startswith(tuple(sys.argv[2:]))))
"""

NOT_FOR_A_COMMAND = (
    "hypercorn",
    "h11",
    "h2",
    "httpx",
    "httpcore",
    "trio_isyswasfa.http",  # the whole package: a command imports no wasi:http
    "trio_isyswasfa.engine._types",  # the own engine's types, for --engine own
    "trio_isyswasfa.tools",  # lower, componentize, compose
    "trio_isyswasfa.testing",
)


@pytest.mark.guest
def test_running_a_command_imports_only_what_it_needs(tmp_path: Path) -> None:
    """``run`` of a command that imports no wasi:http loads no HTTP code and none of the
    other engine's or the build tools' (checked in a fresh interpreter, after the run)."""
    command = tmp_path / "cmd.wasm"
    command.write_bytes(command_bytes(tmp_path, 0))
    out = _probe(RUN_PROBE, str(command), *NOT_FOR_A_COMMAND).splitlines()
    assert out == ["0", "[]"]


FROZEN_PROBE = """
import gc, sys
import trio
from trio_isyswasfa._cli import main
real_run, frozen = trio.run, []

def run(*args, **kwargs):
    frozen.append(gc.get_freeze_count())
    return real_run(*args, **kwargs)

trio.run = run
print(main(["run", "--engine", sys.argv[2], sys.argv[1]]), frozen[0] > 0, gc.get_freeze_count())
"""


@pytest.mark.guest
@pytest.mark.parametrize("engine", ["own", "wasmtime"])
def test_run_keeps_what_it_loaded_out_of_the_collectors_way(tmp_path: Path, engine: str) -> None:
    """``run`` freezes what it has loaded before the command runs (full collections do
    not walk the component and the host again), and unfreezes it afterwards (a process
    that calls ``main`` and goes on, as a test does, collects it again)."""
    command = tmp_path / "cmd.wasm"
    command.write_bytes(command_bytes(tmp_path, 0))
    out = _probe(FROZEN_PROBE, str(command), engine).split()
    assert out == ["0", "True", "0"]


SERVE_FROZEN_PROBE = """
import gc, sys
import anyio
from trio_isyswasfa._cli import main
frozen = []

def run(*args, **kwargs):  # the server's event loop: stops at once, having looked
    frozen.append(gc.get_freeze_count())

anyio.run = run
status = main(["serve", "--engine", sys.argv[2], sys.argv[1], "--addr", "127.0.0.1:0"])
print(status, frozen[0] > 0, gc.get_freeze_count())
"""

PROXY_WIT = """package test:proxy;
world p {
  import wasi:http/types@0.2.0;
  export wasi:http/incoming-handler@0.2.0;
}
"""


@pytest.mark.parametrize("engine", ["own", "wasmtime"])
def test_serve_keeps_what_it_loaded_out_of_the_collectors_way(tmp_path: Path, engine: str) -> None:
    """``serve`` freezes what it has loaded before its event loop starts (full
    collections do not walk the component, the host and hypercorn again as requests
    come), and unfreezes it once it stops serving."""
    from trio_isyswasfa.tools.lower import stage_wit

    wit = tmp_path / "wit"
    wit.mkdir()
    (wit / "world.wit").write_text(PROXY_WIT)
    staged = stage_wit(wit, tmp_path / "staged")
    handle = '(func (export "wasi:http/incoming-handler@0.2.0#handle") (param i32 i32))'
    proxy = tmp_path / "proxy.wasm"
    proxy.write_bytes(
        build_wat_component(staged, "p", f'(module (memory (export "memory") 1) {handle})')
    )
    out = _probe(SERVE_FROZEN_PROBE, str(proxy), engine).split()
    assert out == ["0", "True", "0"]


TOOLS_PROBE = """
import sys
import trio_isyswasfa
from trio_isyswasfa._cli import main
import trio_isyswasfa.tools.lower, trio_isyswasfa.tools.compose, trio_isyswasfa.tools.componentize
try:
    main([sys.argv[1], "--help"])
except SystemExit:
    pass
heavy = sys.argv[2:]
print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy)))
"""

NOT_FOR_THE_TOOLS = (
    "trio",
    "anyio",
    "wasmtime",
    "trio_isyswasfa._host",
    "trio_isyswasfa._engine",
    "trio_isyswasfa.engine",
    "trio_isyswasfa.wasi",
)


@pytest.mark.parametrize("command", ["lower", "componentize", "compose"])
def test_the_build_commands_import_no_host(command: str) -> None:
    """``trio_isyswasfa``'s public names load on first use: the commands that build
    components (and ``import trio_isyswasfa`` alone) import no event loop, no wasmtime,
    no engine and no WASI host (checked in a fresh interpreter)."""
    out = _probe(TOOLS_PROBE, command, *NOT_FOR_THE_TOOLS).splitlines()
    assert out[-1] == "[]"


def test_the_lazy_public_names_load_on_first_use() -> None:
    probe = (
        "import sys, trio_isyswasfa\n"
        "print('trio_isyswasfa._host' in sys.modules)\n"
        "trio_isyswasfa.load_component\n"
        "print('trio_isyswasfa._host' in sys.modules)\n"
    )
    out = _probe(probe).splitlines()
    assert out == ["False", "True"]
    for name in trio_isyswasfa.__all__:
        assert getattr(trio_isyswasfa, name) is not None
        assert name in dir(trio_isyswasfa)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        trio_isyswasfa.nothing  # type: ignore[attr-defined]  # noqa: B018


def test_the_lazy_http_names_are_the_public_ones() -> None:
    import trio_isyswasfa.http as http

    for name in http.__all__:
        assert getattr(http, name) is not None
        assert name in dir(http)


def test_servers_can_name_the_app_factory() -> None:
    """hypercorn evaluates ``app_from_environment()`` in the module's namespace, where a
    name loaded on first use is not yet."""
    import trio_isyswasfa.http as http

    assert callable(eval("app_from_environment", vars(http)))


def command_bytes(tmp_path: Path, status: int) -> bytes:
    """A tiny command whose ``run`` returns ok (0) or err (1): same size either way."""
    wit = tmp_path / f"wit{status}"
    wit.mkdir()
    (wit / "world.wit").write_text(
        "package test:cmd;\nworld cmd {\n  export wasi:cli/run@0.2.0;\n}\n"
        "package wasi:cli@0.2.0 {\n  interface run { run: func() -> result; }\n}\n"
    )
    wat = f"""(module (memory (export "memory") 1)
      (func (export "wasi:cli/run@0.2.0#run") (result i32) i32.const {status}))"""
    return build_wat_component(wit, "cmd", wat)


class TestRememberedDigests:
    """A component file loaded before is found in the compiled cache without being
    hashed again (on the wasmtime engine, without being read at all; ours reads it, and
    finds its compiled modules through the remembered digest, see ``engine/_load``), and
    never when it has changed since. On both engines."""

    @pytest.fixture(autouse=True)
    def cache(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        monkeypatch.setenv("TRIO_ISYSWASFA_CACHE", str(tmp_path / "cache"))
        return tmp_path / "cache"

    @pytest.fixture(autouse=True, params=["wasmtime", "own"])
    def which(self, request: pytest.FixtureRequest) -> str:
        self.engine = str(request.param)
        return self.engine

    def run(self, path: Path) -> int:
        component = trio_isyswasfa.load_component(path, engine=self.engine)
        return trio.run(trio_isyswasfa.run_command, component)

    def test_a_settled_file_is_not_read_again(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "cmd.wasm"
        path.write_bytes(command_bytes(tmp_path, 1))
        monkeypatch.setattr(_digests, "SETTLED_SECONDS", -60.0)  # as if written long ago
        assert self.run(path) == 1

        def unread(*_args: object) -> None:
            raise AssertionError("read again")

        def unhashed(*_args: object) -> None:
            raise AssertionError("a core module hashed again")

        monkeypatch.setattr(_digests, "read_and_digest", unread)
        monkeypatch.setattr(_load, "module_digest", unhashed)
        assert self.run(path) == 1

    def test_a_file_written_since_is_read_again(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "cmd.wasm"
        first, second = command_bytes(tmp_path, 1), command_bytes(tmp_path, 0)
        assert len(first) == len(second)
        path.write_bytes(first)
        monkeypatch.setattr(_digests, "SETTLED_SECONDS", -60.0)
        assert self.run(path) == 1
        # the same size and modification time: only the change time tells
        times = path.stat()
        path.write_bytes(second)
        os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
        assert (path.stat().st_size, path.stat().st_mtime_ns) == (
            times.st_size,
            times.st_mtime_ns,
        )
        assert self.run(path) == 0

    def test_a_file_written_just_now_is_not_remembered(self, tmp_path: Path, cache: Path) -> None:
        # it could be written again within the same clock tick, keeping its times
        path = tmp_path / "cmd.wasm"
        path.write_bytes(command_bytes(tmp_path, 1))
        assert self.run(path) == 1
        assert _digests.known_digest(cache / "digests", path) is None
        # compiled code is still kept (ours may have found its module compiled earlier
        # in this process, and kept the component's module index only)
        assert list(cache.glob("*.cwasm")) or list(cache.glob("*-own-modules-*"))

    def test_a_file_that_changes_while_read_is_not_remembered(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path
    ) -> None:
        path = tmp_path / "cmd.wasm"
        first, second = command_bytes(tmp_path, 1), command_bytes(tmp_path, 0)
        path.write_bytes(first)
        monkeypatch.setattr(_digests, "SETTLED_SECONDS", -60.0)
        looks = _rewrite_at_second_fstat(monkeypatch, path, second, keep_old_mtime=True)
        data, _ = _digests.read_and_digest(cache / "digests", path)
        monkeypatch.undo()
        assert (len(looks), data) == (2, first)
        assert _digests.known_digest(cache / "digests", path) is None

    def test_a_file_that_changes_while_read_is_not_paired_with_its_digest(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path
    ) -> None:
        """Our engine reads a file whose digest it remembers: if the file changes
        meanwhile, the bytes read are not taken for the remembered ones."""
        path = tmp_path / "cmd.wasm"
        first, second = command_bytes(tmp_path, 1), command_bytes(tmp_path, 0)
        path.write_bytes(first)
        monkeypatch.setattr(_digests, "SETTLED_SECONDS", -60.0)
        _digests.read_and_digest(cache / "digests", path)
        assert _digests.read_known(cache / "digests", path) == (first, _sha256(first))
        looks = _rewrite_at_second_fstat(monkeypatch, path, second)
        assert _digests.read_known(cache / "digests", path) is None
        assert len(looks) == 2

    def test_a_fifo_is_read_again_each_time(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A FIFO gives what its writer writes: its ``stat`` (size 0, the times of its
        last write) says nothing of the next component, so none is remembered by it.
        (The wasmtime engine ran the first one again; ours let the writer go unread.)"""
        path = tmp_path / "cmd.wasm"
        os.mkfifo(path)
        monkeypatch.setattr(_digests, "SETTLED_SECONDS", -60.0)
        for status in (1, 0):
            with _written(path, command_bytes(tmp_path, status)):
                assert self.run(path) == status


@contextlib.contextmanager
def _written(fifo: Path, data: bytes) -> Iterator[None]:
    """A thread gives ``data`` to the first reader of ``fifo``. A reader that then waits
    for another writer (it left the first unread) is given an empty file 30 s later, so
    that the test fails instead of hanging."""
    done = threading.Event()

    def give(data: bytes) -> None:
        while not done.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
                time.sleep(0.01)
                continue
            os.set_blocking(fd, True)
            try:
                os.write(fd, data)
                return
            except BrokenPipeError:
                continue  # the reader left before reading: give it again
            finally:
                os.close(fd)

    def write() -> None:
        give(data)
        if not done.wait(30):
            give(b"")

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_a_signal_stops_the_wait_for_a_fifo_wherever_it_lands(tmp_path: Path) -> None:
    """A component read from a FIFO (or a pipe) waits for its writer: a signal must stop
    that wait (``serve``'s SIGINT during start-up). Its C-level handler may run without
    interrupting the read: when it lands between the interpreter's last check for
    signals and the read (``serve`` hung so, once in 270 tries under load), or on
    another thread, as here, so the test is deterministic. The wait ends anyway."""
    fifo = tmp_path / "component.wasm"
    os.mkfifo(fifo)

    class Stop(Exception):
        pass

    def stop(_signum: int, _frame: object) -> None:
        raise Stop

    stopped = threading.Event()
    released: list[bool] = []

    def signal_off_the_main_thread() -> None:
        fd = None
        while fd is None:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # once it is read
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                time.sleep(0.01)
        try:
            signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)  # handled here
            if not stopped.wait(30):  # a read the signal did not stop: end it (the
                released.append(True)  # test fails instead of hanging)
        finally:
            os.close(fd)

    previous = signal.signal(signal.SIGUSR1, stop)
    thread = threading.Thread(target=signal_off_the_main_thread, daemon=True)
    thread.start()
    try:
        with pytest.raises(Stop):
            trio_isyswasfa.load_component(fifo)
    finally:
        stopped.set()
        thread.join()
        signal.signal(signal.SIGUSR1, previous)
    assert not released


def _rewrite_at_second_fstat(
    monkeypatch: pytest.MonkeyPatch, path: Path, data: bytes, *, keep_old_mtime: bool = False
) -> list[int]:
    """Make the digest cache's second ``fstat`` (the one after its read) find ``path``
    rewritten with ``data`` (its mtime a second older with ``keep_old_mtime``, so that
    only the ctime tells); the list of the descriptors looked at."""
    real_fstat = os.fstat
    looks: list[int] = []

    def fstat(fd: int) -> os.stat_result:
        looks.append(fd)
        if len(looks) == 2:  # after the read: someone wrote the file meanwhile
            path.write_bytes(data)
            if keep_old_mtime:
                os.utime(path, ns=(0, path.stat().st_mtime_ns - 10**9))
        return real_fstat(fd)

    monkeypatch.setattr(_digests.os, "fstat", fstat)
    return looks


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
