"""What the terminal shows, and where everything else goes.

The terminal (stderr) shows synth-ray's own lines: stages, progress, problems, the report's
path. Everything Ray, vLLM, DeepSpeed, Tune and the workers print (per-step reports of
every Ray Train worker, engine start-up, warnings, tracebacks of engines shut down) goes to
the run's `log.txt`, next to synth-ray's lines: the process's own stdout and stderr file
descriptors are pointed at that file, which catches C++ logs and `print`s too, not just
Python loggers. `--verbose` (or SYNTH_RAY_VERBOSE=1) leaves them on the terminal as well.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

VERBOSE_ENV = "SYNTH_RAY_VERBOSE"
LOG_FILE = "log.txt"
# Set on a record that only the log file should keep (a progress line while a bar shows it).
FILE_ONLY = "synth_ray_file_only"

_console = Console(stderr=True)
_redirected: dict[int, int] = {}  # fd -> a copy of what it was before
# A child synth-ray process (a model build that `run` starts) is handed the terminal under
# this variable: its fds 1 and 2 are the run's log, as its parent's are (library noise
# there), while its own lines (progress, ETA) reach the terminal.
CONSOLE_FD_ENV = "SYNTH_RAY_CONSOLE_FD"


def console() -> Console:
    """The terminal: stderr as it was before any redirection."""
    return _console


def child_terminal() -> tuple[dict[str, str], tuple[int, ...]]:
    """(environment, pass_fds) for a synth-ray child process whose lines must reach the
    terminal while this process's fds 1 and 2 point at the run's log; nothing to add when
    they were never redirected (the child then writes to the terminal anyway)."""
    saved = _redirected.get(2)
    if saved is None:
        return {}, ()
    return {CONSOLE_FD_ENV: str(saved)}, (saved,)


def _adopt_terminal() -> bool:
    """In a child handed the terminal (`child_terminal`): the console writes there. The
    variable is removed so that processes started from here (Ray's local workers inherit
    the environment) never look for a descriptor they do not have."""
    fd = os.environ.pop(CONSOLE_FD_ENV, None)
    if not fd:
        return False
    try:
        _console.file = os.fdopen(int(fd), "w", buffering=1, closefd=False)
    except (OSError, ValueError):
        return False
    return True


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


class _TerminalFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, FILE_ONLY, False)


def setup_logging(run_dir: Path | None = None, *, verbose_: bool | None = None) -> None:
    """synth-ray's logger on the terminal; with `run_dir`, every logger of the process (and,
    unless verbose, its stdout and stderr) in `<run_dir>/log.txt` as well."""
    loud = verbose() if verbose_ is None else verbose_
    if loud:
        os.environ[VERBOSE_ENV] = "1"  # stages and worker processes started from here
    else:
        # in-process progress bars of Hugging Face and Ray Data: ours replace them
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    ours = logging.getLogger("synth_ray")
    ours.setLevel(logging.INFO)
    for h in ours.handlers:
        h.close()
    ours.handlers.clear()
    handed = _adopt_terminal()
    term = RichHandler(console=_console, show_path=False, markup=False)
    term.addFilter(_TerminalFilter())
    ours.addHandler(term)
    ours.propagate = False
    if handed:  # a child of `run`: its lines in the run's log too (fd 2 points there)
        plain = logging.StreamHandler(sys.stderr)
        plain.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        ours.addHandler(plain)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "synth_ray", False):
            root.removeHandler(h)
            h.close()
    if run_dir is None:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOG_FILE
    fh = logging.FileHandler(path)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    fh.setLevel(logging.INFO)  # Ray Data's logger is at DEBUG for its own file
    fh.synth_ray = True  # type: ignore[attr-defined]
    ours.addHandler(fh)
    # every other library's loggers (propagating to the root) go to the file too
    root.addHandler(fh)
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    logging.captureWarnings(True)
    if loud:
        root.addHandler(_root_terminal())
    else:
        redirect_std_streams(path)


def _root_terminal() -> logging.Handler:
    h = RichHandler(console=_console, show_path=False, markup=False)
    h.synth_ray = True  # type: ignore[attr-defined]
    return h


def redirect_std_streams(path: Path) -> None:
    """Point file descriptors 1 and 2 at `path` (appending), keeping the terminal for
    `console()`. Ray's worker logs (printed by the driver), C++ logs, Tune's tables and
    every library's `print` land in the file."""
    sys.stdout.flush()
    sys.stderr.flush()
    if not _redirected:
        saved = os.dup(2)
        try:  # in-process callers (typer's CliRunner) replace sys.stderr: keep writing there
            on_fd2 = sys.stderr.fileno() == 2
        except (AttributeError, OSError, ValueError):
            on_fd2 = False
        if on_fd2:
            _console.file = os.fdopen(saved, "w", buffering=1, closefd=False)
        _redirected[1] = os.dup(1)
        _redirected[2] = saved
    target = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
    finally:
        os.close(target)


def restore_std_streams() -> None:
    """The terminal back on fds 1 and 2 (at exit: a crash's traceback must be seen). Ray is
    shut down first: its thread printing the workers' logs would go on writing to the
    terminal until the process ends."""
    if not _redirected:
        return
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        with contextlib.suppress(Exception):
            ray.shutdown()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    out = _redirected.pop(1)
    os.dup2(out, 1)
    os.close(out)
    saved = _redirected.pop(2)
    os.dup2(saved, 2)
    os.close(saved)
    _console.file = None  # back to whatever sys.stderr is when it writes


def quiet_libraries() -> None:
    """After Ray is imported: its loggers write to the root logger (the log file) rather
    than to stderr directly, and Ray Data's own progress bars are off unless verbose (the
    driver's progress shows rows, rate and ETA)."""
    if verbose():
        return
    for name in ("ray", "ray.data", "ray.train", "ray.tune", "vllm", "deepspeed"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                lg.removeHandler(h)
        lg.propagate = True
    if "ray.data" in sys.modules:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
