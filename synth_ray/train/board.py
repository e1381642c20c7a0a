"""Optimizer steps of the adapters training now, for the driver's progress bars.

Ray Train reports a worker's metrics to its run's controller, not to the driver of a grid of
Tune trials. Rank 0 of each run posts (adapter, step, total) to a small named actor that the
driver made (no CPU); the driver polls it. Losing a post costs a bar update, nothing else.
"""

from __future__ import annotations

import contextlib
import os
import threading
from contextlib import ExitStack, contextmanager
from typing import Any


class _Board:
    def __init__(self) -> None:
        self.steps: dict[str, tuple[int, int]] = {}

    def post(self, adapter: str, step: int, total: int) -> None:
        self.steps[adapter] = (step, total)

    def read(self) -> dict[str, tuple[int, int]]:
        return dict(self.steps)


_handles: dict[str, Any] = {}


def post(board: str | None, adapter: str, step: int, total: int) -> None:
    """From a Train worker (rank 0): fire and forget."""
    if not board:
        return
    import ray

    try:
        if board not in _handles:
            _handles[board] = ray.get_actor(board)
        _handles[board].post.remote(adapter, step, total)
    except Exception:  # the driver (and its board) gone: nobody is watching
        _handles.pop(board, None)


@contextmanager
def watch_steps(every_s: float = 2.0, stage: str = "train", line_every_s: float | None = None):
    """Yields the board's name for the jobs; shows each posting adapter (or pre-trained
    model) as a progress task of `stage` (steps, rate, ETA) until it reaches its last step.
    `every_s`: how often the board is read; `line_every_s`: a plain line's interval off a
    terminal (progress.EVERY_S by default)."""
    import ray

    from synth_ray.observe.progress import track

    name = f"synth-ray-steps-{os.getpid()}-{threading.get_ident()}"
    board = ray.remote(num_cpus=0)(_Board).options(name=name).remote()
    stop = threading.Event()
    tasks: dict[str, Any] = {}

    ended: set[str] = set()

    def poll(stack: ExitStack) -> None:
        while True:
            last = stop.wait(every_s)  # one more read after the runs end: their last steps
            try:
                steps = ray.get(board.read.remote(), timeout=30)
            except Exception:
                steps = {}
            for adapter, (step, total) in steps.items():
                if adapter in ended:
                    continue
                if adapter not in tasks:
                    own = stack.enter_context(ExitStack())
                    lines = {} if line_every_s is None else {"every_s": line_every_s}
                    tasks[adapter] = (own.enter_context(
                        track(stage, adapter, total, "steps", start=step, **lines)), own)
                task, own = tasks[adapter]
                if step >= total:  # done: its last line once, now, not every 30 s until the
                    task.done = step  # slowest one ends (and no interval line beside it)
                    own.close()
                    ended.add(adapter)
                else:
                    task.update(step)
            if last:
                return

    with ExitStack() as stack:
        thread = threading.Thread(target=poll, args=(stack,), daemon=True,
                                  name="train-steps")
        thread.start()
        try:
            yield name
        finally:
            stop.set()
            thread.join(timeout=60)
            with contextlib.suppress(Exception):
                ray.kill(board)
