"""Progress of a long stage: rows (generate, respond, score, judge) or optimizer steps
(train), with rate and ETA.

On a terminal, rich progress bars (several at once: sources generating in parallel, adapters
training as Tune trials) drawn under the log lines. Elsewhere (CI, `ray job submit` logs, a
redirected stderr) a plain log line at most every `every_s` seconds and one at the end. The
run's log file always gets the plain lines.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from synth_ray.observe.terminal import FILE_ONLY, console

log = logging.getLogger("synth_ray")

EVERY_S = 30.0  # plain lines: at most this often per task

_lock = threading.Lock()
_bars: Progress | None = None
_active = 0


def fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Task:
    """One counted piece of work. `advance(n)` / `update(done)` from any thread."""

    def __init__(self, stage: str, label: str, total: int, unit: str, every_s: float,
                 bars: Progress | None, start: int = 0):
        self.stage, self.label, self.total, self.unit = stage, label, total, unit
        self.every_s, self._bars = every_s, bars
        self.done = self.start = start  # start: done before (a resumed run), not in the rate
        self.t0 = time.monotonic()
        self._last_line = self.t0
        self._id = None if bars is None else bars.add_task(
            escape(f"[{stage}] {label}"), total=total or None, unit=unit, completed=start)

    def rate(self) -> float:
        return (self.done - self.start) / max(time.monotonic() - self.t0, 1e-9)

    def eta_s(self) -> float | None:
        r = self.rate()
        return (self.total - self.done) / r if r > 0 and self.total else None

    def line(self) -> str:
        return (f"[{self.stage}] {self.label}: {self.done}/{self.total} {self.unit} "
                f"({self.rate():.2f} {self.unit}/s, ETA {fmt_eta(self.eta_s())})")

    def update(self, done: int) -> None:
        self.done = done
        if self._id is not None:
            self._bars.update(self._id, completed=done)
        now = time.monotonic()
        if now - self._last_line >= self.every_s:
            self._last_line = now
            self._log()

    def set_total(self, total: int) -> None:
        self.total = total
        if self._id is not None:
            self._bars.update(self._id, total=total)

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def _log(self) -> None:
        # with a bar on screen the line is for the log file only
        log.info("%s", self.line(), extra={FILE_ONLY: self._id is not None})


class _RateColumn(TextColumn):
    def __init__(self):
        super().__init__("")

    def render(self, task):
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.2f}/s")


def _make_bars() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[unit]}"), _RateColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console(),
                    transient=False, speed_estimate_period=120,
                    get_time=lambda: time.monotonic())


@contextmanager
def track(stage: str, label: str, total: int, unit: str = "rows", every_s: float = EVERY_S,
          start: int = 0):
    """A task shown while the block runs; its final line is logged when it ends."""
    global _bars, _active
    live = console().is_terminal
    with _lock:
        if live and _bars is None:
            _bars = _make_bars()
            _bars.start()
        _active += 1
        task = Task(stage, label, total, unit, every_s, _bars if live else None, start)
    try:
        yield task
    finally:
        with _lock:
            _active -= 1
            if task._id is not None and _bars is not None:
                _bars.remove_task(task._id)
            if _active == 0 and _bars is not None:
                _bars.stop()
                _bars = None
        log.info("%s", task.line())
