"""The bench scripts' command lines: ``--help`` prints help and runs nothing, an unknown
option is an error (each bench's ``parser()``, importable without running anything)."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import pytest
import trio

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")


@pytest.fixture(params=SCRIPTS)
def parser(request: pytest.FixtureRequest) -> object:
    module = importlib.import_module(f"bench.{request.param}")
    return module.parser()


def test_every_bench_script_is_checked() -> None:
    assert {"bench_calls", "bench_engine", "bench_engine_load", "loadgen"} <= set(SCRIPTS)


def test_help_prints_help(parser: object, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        parser.parse_args(["--help"])  # type: ignore[attr-defined]
    assert exit.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_an_unknown_option_is_an_error(parser: object, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        parser.parse_args(["--no-such-option"])  # type: ignore[attr-defined]
    assert exit.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_bench_calls_options_need_engines(capsys: pytest.CaptureFixture[str]) -> None:
    """Its plain run takes no option: one of ``--engines`` alone is refused, not ignored."""
    from bench import bench_calls

    with pytest.raises(SystemExit) as exit:
        bench_calls.cli(["--sizes", "1,16"])
    assert exit.value.code == 2
    assert "--sizes needs --engines" in capsys.readouterr().err


class TestIdleClock:
    """``bench_scale.IdleClock``, the bench's measure of the time the host sat idle."""

    def test_counts_only_waits_that_could_block(self) -> None:
        from bench.bench_scale import IdleClock

        now = [10.0]
        idle = IdleClock(clock=lambda: now[0])
        idle.before_io_wait(0)  # a task was runnable: trio only polled
        now[0] += 5.0  # (the time trio then spends running tasks)
        idle.after_io_wait(0)
        idle.before_io_wait(0.25)  # nothing to run: the loop may block
        now[0] += 0.25
        idle.after_io_wait(0.25)
        now[0] += 1.0  # busy again
        idle.before_io_wait(0)
        idle.after_io_wait(0)
        assert (idle.waited, idle.waits, idle.passes) == (0.25, 1, 3)

    def test_a_sleep_is_waiting_and_a_busy_loop_is_not(self) -> None:
        # one task sleeps, then computes; beside it another sleeps longer than both,
        # part of it while the first computes: only the time with nothing runnable counts
        from bench.bench_scale import IdleClock

        sleep = busy = 0.1
        idle = IdleClock()

        async def sleeper() -> None:
            await trio.sleep(sleep)
            start = time.perf_counter()
            while time.perf_counter() - start < busy:
                pass

        async def main() -> float:
            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sleeper)
                nursery.start_soon(trio.sleep, sleep + busy / 2)
            return time.perf_counter() - start

        wall = trio.run(main, instruments=[idle])
        # the busy loop never waited, however loaded the machine is (the clock
        # counting every pass would count it); the sleep mostly did (a loaded machine
        # may take the core from the process between its waits: half is generous)
        assert idle.waited <= wall - busy
        assert idle.waited >= sleep / 2
        assert 1 <= idle.waits <= idle.passes
        # (the second sleeper's deadline passed during the busy loop: trio finds both
        # tasks done without waiting again; a handful of passes in all)
        assert idle.passes < 20


class TestRepeat:
    """``bench_scale`` runs a short row again and prints medians, so that one noisy run
    cannot decide a ratio."""

    @staticmethod
    def run(wall: float, waited: float = 0.0) -> dict[str, float]:
        return {"wall": wall, "guest": 0.0, "cpu": wall, "waited": waited, "rss_kib": 0}

    def test_short_sizes_run_until_the_seconds_are_made_in_rounds(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from bench import bench_scale

        walls = {1000: 0.5, 16000: 8.0}
        order: list[int] = []

        def child(row: str, n: int, tree: Path, trace: bool = False) -> dict[str, float]:
            order.append(n)
            return self.run(walls[n])

        monkeypatch.setattr(bench_scale, "_run_child", child)
        args = bench_scale.parser().parse_args(["--min-seconds", "2"])
        runs = bench_scale._repeated_runs("calls", [1000, 16000], [(BENCH, "")], args)
        assert [len(runs[BENCH, n]) for n in (1000, 16000)] == [4, 1]
        # the long size once in the first round, beside the short one, not after all
        assert order == [1000, 16000, 1000, 1000, 1000]
        args = bench_scale.parser().parse_args(["--repeat", "3"])
        runs = bench_scale._repeated_runs("calls", [1000, 16000], [(BENCH, "")], args)
        assert [len(runs[BENCH, n]) for n in (1000, 16000)] == [3, 3]
        walls[1000] = 0.01  # however short, a size is run at most MAX_RUNS times
        args = bench_scale.parser().parse_args([])
        runs = bench_scale._repeated_runs("calls", [1000], [(BENCH, "")], args)
        assert len(runs[BENCH, 1000]) == bench_scale.MAX_RUNS

    def test_figures_are_medians_and_the_range_is_printed(self) -> None:
        from bench import bench_scale

        runs = [self.run(0.40), self.run(0.20), self.run(0.90, waited=0.1)]
        fig, per, spread = bench_scale._median_run(runs, 1000)
        assert fig["wall"] == 0.40
        assert fig["waited"] == 0.0
        assert per.host_us == pytest.approx(400.0)  # of 400, 200 and 800 µs
        assert spread == "200-800"
        assert bench_scale._median_run(runs[:1], 1000)[2] == "-"
        # serve's statuses are each run's: a run that lost connections is not hidden
        noted = [{**run, "note": f"statuses {i}"} for i, run in enumerate(runs)]
        assert bench_scale._median_run(noted, 1000)[0]["note"] == (
            "statuses 0 | statuses 1 | statuses 2"
        )

    def test_repeat_needs_a_run(self, capsys: pytest.CaptureFixture[str]) -> None:
        from bench import bench_scale

        with pytest.raises(SystemExit):
            bench_scale.main(["--repeat", "0"])
        assert "--repeat needs at least 1" in capsys.readouterr().err


class TestServeRounds:
    """bench_serve's rows: each loaded just after the baseline, in rounds, each ratio
    to the baseline's runs on either side of it (the machine's load moves in seconds)."""

    def test_each_row_runs_between_two_baseline_runs(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from bench import bench_serve

        order: list[str] = []
        speed = {"bare": 1000.0, "a": 600.0, "b": 300.0}
        slow = [1.0]  # the machine's other load: every run half as fast as the one before

        def wrk(url: str, seconds: int, connections: int) -> tuple[float, float, float, int]:
            order.append(url)
            slow[0] *= 2
            rps = speed[url] / slow[0]
            return rps, 1.0, 2.0, int(rps * seconds)

        monkeypatch.setattr(bench_serve, "wrk", wrk)
        clock = iter(range(1000))  # the servers' CPU seconds: one a run
        monkeypatch.setattr(bench_serve, "cpu_seconds", lambda pids: next(clock) / 2)
        base = bench_serve.Served("bare", "bare", [], None)
        a = bench_serve.Served("a", "a", [], "bare")
        b = bench_serve.Served("b", "b", [], "bare")
        bench_serve.rounds([base, a, b], 1, 8, 2)
        warm = ["bare", "a", "b"]
        assert order == [*warm, "bare", "a", "bare", "b", "bare", "b", "bare", "a", "bare"]
        rps_a, _ = bench_serve.ratios(a, base)
        rps_b, _ = bench_serve.ratios(b, base)
        # the load halves every run: a row's ratio to its neighbours is (speed / 2) /
        # ((1 + 1/4) / 2), whatever the round
        assert rps_a == pytest.approx([0.6 * 0.5 / 0.625] * 2)
        assert rps_b == pytest.approx([0.3 * 0.5 / 0.625] * 2)
