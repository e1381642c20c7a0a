"""Progress of long stages and the quiet terminal: bars with rate and ETA on a terminal,
plain lines elsewhere; Ray's, vLLM's and every library's output in the run's log file."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap

from rich.console import Console

from synth_ray.observe import progress


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _capture(monkeypatch, terminal: bool):
    clock = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    screen = io.StringIO()
    con = Console(file=screen, force_terminal=terminal, width=200)
    monkeypatch.setattr(progress, "console", lambda: con)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep()
    progress.log.addHandler(handler)
    progress.log.setLevel(logging.INFO)
    return clock, screen, records, handler


def test_plain_lines_give_rate_and_eta_at_most_every_interval(monkeypatch) -> None:
    clock, screen, records, handler = _capture(monkeypatch, terminal=False)
    try:
        with progress.track("generate", "source 'a'", 100, every_s=30) as task:
            clock.t += 10
            task.update(25)  # 10 s in: too soon for a line
            clock.t += 20
            task.update(60)  # 30 s: 2 rows/s, 40 rows left
            clock.t += 5
            task.update(70)
    finally:
        progress.log.removeHandler(handler)
    lines = [r.getMessage() for r in records]
    assert lines == ["[generate] source 'a': 60/100 rows (2.00 rows/s, ETA 20s)",
                     "[generate] source 'a': 70/100 rows (2.00 rows/s, ETA 15s)"]
    assert not any(getattr(r, progress.FILE_ONLY, False) for r in records)
    assert screen.getvalue() == ""  # no bar drawn off a terminal


def test_resumed_work_is_left_out_of_the_rate(monkeypatch) -> None:
    clock, _, records, handler = _capture(monkeypatch, terminal=False)
    try:
        with progress.track("train", "t--human", 200, "steps", every_s=1e9, start=150) as task:
            clock.t += 10
            task.update(160)  # 10 steps in 10 s, not 160
    finally:
        progress.log.removeHandler(handler)
    assert records[-1].getMessage() == "[train] t--human: 160/200 steps (1.00 steps/s, ETA 40s)"


def test_a_terminal_gets_a_bar_and_the_lines_go_to_the_file_only(monkeypatch) -> None:
    clock, screen, records, handler = _capture(monkeypatch, terminal=True)
    try:
        with progress.track("score", "perplexity (target)", 40, every_s=0) as task:
            clock.t += 4
            task.update(10)
            assert progress._bars is not None
            progress._bars.refresh()
        assert progress._bars is None  # stopped with its last task
    finally:
        progress.log.removeHandler(handler)
    shown = screen.getvalue()
    assert "[score] perplexity (target)" in shown and "10/40" in shown and "ETA" in shown
    # the periodic line while the bar shows it is for the log file; the final one for both
    assert [getattr(r, progress.FILE_ONLY, False) for r in records] == [True, False]


CHILD = textwrap.dedent("""
    import logging, os, sys, pathlib, warnings
    from synth_ray.observe.terminal import setup_logging, restore_std_streams
    run = pathlib.Path(sys.argv[1])
    setup_logging(run)
    logging.getLogger("synth_ray").info("ours: stage started")
    os.write(1, b"raw fd noise\\n")
    os.write(2, b"(RayTrainWorker pid=1) worker noise\\n")
    print("a print to stdout")
    logging.getLogger("ray").warning("a ray warning")
    warnings.warn("a python warning")
    logging.getLogger("synth_ray").info("ours: report at x")
    restore_std_streams()
""")


def _child(tmp_path, verbose: str):
    env = {**__import__("os").environ, "SYNTH_RAY_VERBOSE": verbose}
    return subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True,
                          text=True, timeout=60, env=env)


def test_library_output_goes_to_the_log_file_not_the_terminal(tmp_path) -> None:
    proc = _child(tmp_path, "0")
    assert proc.returncode == 0, proc.stderr
    seen = proc.stdout + proc.stderr
    assert "ours: stage started" in seen and "ours: report at x" in seen
    noise = ["raw fd noise", "worker noise", "a print to stdout", "a ray warning",
             "a python warning"]
    assert not [n for n in noise if n in seen], seen
    log = (tmp_path / "log.txt").read_text()
    assert all(n in log for n in noise + ["ours: stage started", "ours: report at x"]), log


def test_verbose_keeps_library_output_on_the_terminal(tmp_path) -> None:
    proc = _child(tmp_path, "1")
    seen = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert all(n in seen for n in ("raw fd noise", "worker noise", "a ray warning"))
    assert "ours: stage started" in (tmp_path / "log.txt").read_text()


BUILDER = textwrap.dedent("""
    import logging, os, subprocess, sys
    from pathlib import Path
    from synth_ray.observe.terminal import child_terminal, restore_std_streams, setup_logging
    setup_logging(Path(sys.argv[1]))
    env, fds = child_terminal()  # as `run` starts a model build (toy/pretrain.py)
    child = (
        "import logging, os\\n"
        "from synth_ray.observe.terminal import setup_logging\\n"
        "setup_logging()\\n"
        "logging.getLogger('synth_ray').info('[tiny] pt-x: 25/200 steps')\\n"
        "print('trainer noise')\\n"
        "assert 'SYNTH_RAY_CONSOLE_FD' not in os.environ  # not for its own children\\n")
    subprocess.run([sys.executable, "-c", child], env={**os.environ, **env}, pass_fds=fds,
                   check=True)
    restore_std_streams()
""")


def test_a_model_build_started_by_run_shows_its_progress_on_the_terminal(tmp_path) -> None:
    """`run`'s fds 1 and 2 point at the run's log; the model build it starts (a child
    process) gets the terminal handed over for its own lines (steps, ETA), while what its
    libraries print stays in the log with the rest."""
    proc = subprocess.run([sys.executable, "-c", BUILDER, str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    seen = proc.stdout + proc.stderr
    assert "[tiny] pt-x: 25/200 steps" in seen and "trainer noise" not in seen, seen
    log = (tmp_path / "log.txt").read_text()
    assert "[tiny] pt-x: 25/200 steps" in log and "trainer noise" in log, log


def test_only_the_engine_shutdown_traceback_is_dropped() -> None:
    """vLLM's loggers with the plugin's filter: the output handler's failure is logged
    while the engine works, and dropped once this process's own shutdown has begun."""
    from synth_ray.engines import shutdown_noise

    client = logging.getLogger("vllm.v1.engine.core_client")
    engine = logging.getLogger("vllm.v1.engine.async_llm")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    keep = Keep()
    saved = [(lg, list(lg.filters), lg.level) for lg in (client, engine)]
    for lg in (client, engine):
        lg.addHandler(keep)
        lg.setLevel(logging.INFO)
    try:
        shutdown_noise.register()
        engine.error("AsyncLLM output_handler failed.")  # a real death: kept
        client.info("[shutdown] MPClient: start timeout=default")
        engine.error("AsyncLLM output_handler failed.")  # its own shutdown: dropped
        engine.error("something else")
    finally:
        for lg, filters, level in saved:
            lg.removeHandler(keep)
            lg.filters[:] = filters
            lg.setLevel(level)
    assert seen == ["AsyncLLM output_handler failed.",
                    "[shutdown] MPClient: start timeout=default", "something else"]


def test_a_finished_adapter_says_so_once_while_others_go_on() -> None:
    """train/board.py: an adapter (or toy model) that reached its last step logs its final
    line once, not again at every interval until the slowest one ends (the demo's first
    run printed "200/200 steps" for finished models for minutes)."""
    import time

    import ray

    from synth_ray.train import board

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    keep = Keep()
    ours = logging.getLogger("synth_ray")
    level = ours.level
    ours.setLevel(logging.INFO)
    ours.addHandler(keep)
    ray.init(address="local", num_cpus=1, include_dashboard=False, configure_logging=False,
             log_to_driver=False)
    try:
        with board.watch_steps(every_s=0.05, stage="tiny", line_every_s=0.1) as name:
            board.post(name, "pt-a", 5, 5)
            board.post(name, "pt-b", 1, 5)
            # pt-b goes on (its line again every 0.1 s); pt-a is done. Waited for, not slept:
            # a loaded machine can starve the watcher for a second (2 lines in 1.0 s seen)
            deadline = time.monotonic() + 20
            while (sum(line.startswith("[tiny] pt-b: 1/5") for line in seen) < 3
                   and time.monotonic() < deadline):
                time.sleep(0.05)
            board.post(name, "pt-b", 5, 5)
            time.sleep(0.3)
    finally:
        ray.shutdown()
        ours.removeHandler(keep)
        ours.setLevel(level)
    assert sum(line.startswith("[tiny] pt-a: 5/5 steps") for line in seen) == 1, seen
    assert sum(line.startswith("[tiny] pt-b: 1/5 steps") for line in seen) >= 3, seen  # going
    assert sum(line.startswith("[tiny] pt-b: 5/5 steps") for line in seen) == 1, seen
