"""Differential WASI 0.2 conformance: each corpus program (tests/conformance) behaves on
our host exactly as on wasmtime's own WASI implementation, except where a table below
says why not.

The programs are built from source here (cached on their sources) with the toolchains
``.ci/install-toolchains`` installs; without them these tests skip, saying how to get them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trio_isyswasfa.testing.conformance import (
    SECRET,
    Outcome,
    Program,
    ToolchainMissing,
    build_corpus,
    list_corpus,
    make_fixture,
    missing_toolchain,
    reference_for,
    run_on_terminal,
    run_program,
    snapshot,
)

# the first test builds the whole corpus (Rust std, a Python guest) on a fresh machine
pytestmark = [pytest.mark.guest, pytest.mark.slow, pytest.mark.timeout(1800)]

CORPUS = Path(__file__).resolve().parent / "conformance"
PROGRAMS = list_corpus(CORPUS)

DELIBERATE: dict[str, str] = {
    "python/py_sockets-outside": "network granted for loopback only: binding 0.0.0.0 or :: "
    "is access-denied here; wasmtime cannot grant less than every address",
}
"""Programs whose behaviour on our host differs from wasmtime's on purpose: name → why.
Every other difference the corpus finds is a bug. docs/wasi.md keeps this list for users."""

REFERENCES_DISAGREE = {
    "c/fs_trailing_slash": "lstat('link-file/') is ENOTDIR on wasmtime 50 (wasmtime-py) "
    "but succeeds on the wasmtime 49 CLI",
}
"""Programs on which the two references (wasmtime-py 50, wasmtime CLI 49) differ; the
tests follow wasmtime-py, the version our engine embeds."""


def _id(program: Program) -> str:
    return program.name


def _marks(table: dict[str, str]) -> list[pytest.param]:  # type: ignore[name-defined]
    return [
        pytest.param(
            p,
            id=p.name,
            marks=[pytest.mark.xfail(reason=table[p.name], strict=True)] if p.name in table else [],
        )
        for p in PROGRAMS
    ]


class Runs:
    """Each program's outcome on each host, run once per session over fresh fixtures."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.components: dict[str, dict[str, Path] | Exception] = {}
        self.outcomes: dict[tuple[str, str], Outcome] = {}

    def outcome(self, program: Program, host: str) -> Outcome:
        key = (program.name, host)
        if key not in self.outcomes:
            reason = missing_toolchain(program.language)
            if reason:
                pytest.skip(reason)
            if program.language not in self.components:
                try:
                    self.components[program.language] = build_corpus(
                        CORPUS, [p for p in PROGRAMS if p.language == program.language]
                    )
                except (ToolchainMissing, RuntimeError) as exc:
                    self.components[program.language] = exc  # built (or failed) once
            built = self.components[program.language]
            if isinstance(built, ToolchainMissing):
                pytest.skip(str(built))
            if isinstance(built, Exception):
                raise built
            component = built[program.name]
            run_dir = self.work / f"{len(self.outcomes)}-{host}"
            self.outcomes[key] = run_program(program, component, host, run_dir)
        return self.outcomes[key]


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory.mktemp("conformance"))


def test_corpus_is_listed() -> None:
    names = [p.name for p in PROGRAMS]
    assert len(names) == len(set(names))
    assert {"c/fs_escape", "c/cli_exit-abort", "c/fs_readdir"} <= set(names)
    abort = next(p for p in PROGRAMS if p.name == "c/cli_exit-abort")
    assert abort.args == ("abort",)
    assert abort.status == 134
    stdio = next(p for p in PROGRAMS if p.name == "c/cli_stdio")
    assert stdio.stdin == b"line one\nline two\n"
    sockets = {p.name: p for p in PROGRAMS if "py_sockets" in p.name}
    assert {name: p.net for name, p in sockets.items()} == {
        "python/py_sockets": "all",
        "python/py_sockets-denied": "none",
        "python/py_sockets-outside": "localhost",
    }
    # wasmtime-py cannot grant a component network: those runs are judged by wasmtime run
    assert reference_for(sockets["python/py_sockets"]) == "wasmtime-cli"
    assert reference_for(sockets["python/py_sockets-denied"]) == "wasmtime-py"


@pytest.mark.parametrize("program", PROGRAMS, ids=_id)
def test_reference_passes_its_own_checks(runs: Runs, program: Program) -> None:
    """The corpus is right about wasmtime: each program's checks hold there."""
    reference = runs.outcome(program, reference_for(program))
    assert reference.self_check_failures(program) == []


@pytest.mark.parametrize("program", _marks(DELIBERATE))
def test_behaves_as_on_wasmtime(runs: Runs, program: Program) -> None:
    ours = runs.outcome(program, "ours")
    reference = runs.outcome(program, reference_for(program))
    differences = ours.differences(reference)
    assert differences == [], "\n".join(differences)


@pytest.mark.parametrize("program", _marks(REFERENCES_DISAGREE))
def test_references_agree(runs: Runs, program: Program) -> None:
    """wasmtime's CLI (49) and library (50) give the same results: a difference here is
    listed in REFERENCES_DISAGREE, so a run of ours is judged against a stable answer."""
    if program.net != "none":
        pytest.skip("wasmtime-py cannot grant a component network")
    cli = runs.outcome(program, "wasmtime-cli")
    differences = cli.differences(runs.outcome(program, "wasmtime-py"))
    assert differences == [], "\n".join(differences)


@pytest.fixture(scope="session")
def fresh_secret(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The listing of ``secret/`` in a fixture no program touched."""
    work = tmp_path_factory.mktemp("fresh")
    make_fixture(work)
    return [line for line in snapshot(work) if line.startswith("secret")]


@pytest.mark.parametrize("program", PROGRAMS, ids=_id)
def test_nothing_outside_the_preopen_changes(
    runs: Runs, program: Program, fresh_secret: list[str]
) -> None:
    """Whatever a program does, ``secret/`` beside its preopen is as it was."""
    tree = runs.outcome(program, "ours").tree
    assert [line for line in tree if line.startswith("secret")] == fresh_secret
    assert f"{len(SECRET)} bytes {SECRET!r}" in fresh_secret[-1]


def test_escapes_are_refused(runs: Runs) -> None:
    """Every escape the corpus tries fails on our host, and the secret is never read."""
    program = next(p for p in PROGRAMS if p.name == "c/fs_escape")
    ours = runs.outcome(program, "ours")
    assert b"escaped the preopen" not in ours.stdout
    assert SECRET.strip() not in ours.stdout
    assert ours.status == 0, ours.stdout.decode()


def test_a_loopback_grant_denies_other_addresses(runs: Runs) -> None:
    """Granted ``localhost:*``, a guest binds loopback and nothing else (wasmtime, which
    cannot grant less than every address, binds them all: DELIBERATE)."""
    program = next(p for p in PROGRAMS if p.name == "python/py_sockets-outside")
    out = runs.outcome(program, "ours").stdout.decode()
    for what in ("tcp: bind 0.0.0.0", "udp: bind 0.0.0.0", "tcp: bind ::", "udp: bind ::"):
        assert f"{what} (all interfaces): 'EACCES'" in out
    assert "tcp: bind 127.0.0.1: 'ok'" in out


@pytest.mark.parametrize(
    "terminal", [(0, 1, 2), (1, 2), (0,)], ids=["all", "stdout-stderr", "stdin"]
)
def test_stdio_on_a_terminal_as_on_wasmtime(runs: Runs, terminal: tuple[int, ...]) -> None:
    """``wasi:cli/terminal-*``: the streams on a pseudo-terminal are terminals (isatty,
    a character device), the others not, on ``run`` as on ``wasmtime run``."""
    program = next(p for p in PROGRAMS if p.name == "c/cli_tty")
    runs.outcome(program, "ours")  # builds the C corpus, or skips without it
    component = runs.components["c"][program.name]  # type: ignore[index]
    want = [str(int(fd in terminal)) for fd in range(3)]
    ours = run_on_terminal(component, "ours-cli", want, terminal=terminal)
    theirs = run_on_terminal(component, "wasmtime-cli", want, terminal=terminal)
    assert ours[0] == 0, ours[1].decode()
    assert b"9 checks, 0 failed" in ours[1]
    assert ours == theirs


# The harness itself, without any toolchain


def test_differences_name_each_part(tmp_path: Path) -> None:
    base = Outcome("wasmtime-py", 0, b"a\nb\n", b"", ("root/ dir 0o755",), 0.0)
    assert base.differences(base) == []
    other = Outcome("ours", 1, b"a\nc\n", b"oops\n", ("root/ dir 0o700",), 9.0)
    text = "\n".join(other.differences(base))
    assert "exit status: ours 1, wasmtime-py 0" in text
    assert "-b" in text
    assert "+c" in text
    assert "+oops" in text
    assert "files left behind" in text
    assert "+root/ dir 0o700" in text


def test_self_check_failures(tmp_path: Path) -> None:
    program = Program("c/x", "c", tmp_path / "x.c", status=0)
    ok = Outcome("wasmtime-py", 0, b"open: ok\n1 checks, 0 failed\n", b"", (), 0.0)
    assert ok.self_check_failures(program) == []
    bad = Outcome("wasmtime-py", 1, b"open: ENOENT\nFAIL open: want ok\n", b"", (), 0.0)
    assert bad.self_check_failures(program) == ["FAIL open: want ok", "exit status 1, meant 0"]


def test_fixture_snapshot_sees_outside_and_links(tmp_path: Path) -> None:
    root = make_fixture(tmp_path)
    before = snapshot(tmp_path)
    assert "root/abs symlink -> /etc/passwd" in before
    assert "root/out symlink -> .." in before
    (tmp_path / "secret" / "planted").write_bytes(b"x")
    (root / "file.txt").write_bytes(b"changed")
    after = snapshot(tmp_path)
    mode = oct((tmp_path / "secret" / "planted").stat().st_mode & 0o7777)
    assert f"secret/planted file {mode} 1 bytes b'x'" in after
    assert f"root/file.txt file {mode} 7 bytes b'changed'" in after


def test_missing_toolchain_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIO_ISYSWASFA_TOOLCHAIN", str(tmp_path))
    reason = missing_toolchain("c")
    assert reason is not None
    assert "command adapter" in reason
    assert "bash .ci/install-toolchains" in reason
    assert "\n" not in reason


def test_figures_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m trio_isyswasfa.testing.conformance`` prints the score and the times."""
    reason = missing_toolchain("c")
    if reason:
        pytest.skip(reason)
    from trio_isyswasfa.testing.conformance import main

    assert main([str(CORPUS), "-k", "c/cli_env", "--hosts", "ours", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 programs behave as on wasmtime (wasmtime-py)" in out
    assert "differs" not in out
    assert "  ours " in out
    assert "  wasmtime-py " in out
