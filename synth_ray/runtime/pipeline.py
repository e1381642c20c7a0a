"""Stages, their order, and the one rule for running any of them.

Each stage reads files of the run directory and writes its own outputs there; the manifest
records a hash of its inputs (config sections + upstream outputs). A stage whose outputs are
current is skipped unless forced.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from synth_ray.config import ExperimentConfig, dump_config
from synth_ray.config.uris import is_uri
from synth_ray.observe.tracker import Tracker
from synth_ray.runtime.rundir import DiskFullError, RunDir, atomic_write_text, hash_json

log = logging.getLogger("synth_ray")


_LOCKS: dict[str, Any] = {}  # run directory -> its open lock file, held by this process


class RunDirBusy(RuntimeError):
    """Another process holds the run directory."""


@dataclass
class StageOutput:
    outputs: list[str]
    rows: dict[str, int] = field(default_factory=dict)
    summary: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    cfg: ExperimentConfig
    run: RunDir
    tracker: Tracker = field(default_factory=Tracker)  # `tracking:`; none by default
    # stage -> the hash of its inputs, computed once: hashing reads every upstream output
    # (180,000 generations at the paper's size), and `run` asks before it runs (what is
    # pending) and again as it runs each stage. Cleared whenever a stage has run.
    input_hashes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    name: str  # the CLI verb, the module synth_ray/stages/<name>.py, its run-dir folder(s)
    doc: str

    @property
    def module(self) -> str:
        """Defines inputs(ctx) -> JSON-able and run(ctx) -> StageOutput."""
        return f"synth_ray.stages.{self.name}"

    def impl(self):
        """The stage's module, imported only when the stage runs (keeps the CLI quick)."""
        return importlib.import_module(self.module)


# The pipeline, in order. A stage reads only run files that earlier stages wrote (their
# paths in synth_ray/design.py), never another stage's module.
STAGES = [
    Stage("split", "Dolly-style rows -> 4 training parts + held-out test"),
    Stage("generate", "source models answer their parts (ray.data.llm)"),
    Stage("build", "training sets per condition"),
    Stage("train", "one LoRA adapter per (target, condition) with Ray Train"),
    Stage("respond", "every adapter and the vanilla target answer the test set"),
    Stage("score", "perplexity, Self-BLEU-3, semantic diversity, significance"),
    Stage("judge", "harmfulness, quality, danger zone, self-preference bias"),
    Stage("report", "tables, plots and one HTML page"),
]


def stage_table() -> list[Stage]:
    return list(STAGES)


def stage_names() -> list[str]:
    return [s.name for s in STAGES]


def get_stage(name: str) -> Stage:
    for s in stage_table():
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages: {stage_names()}")


def open_run(cfg: ExperimentConfig) -> Context:
    """Open (make) the run directory and take its lock for the life of this process: two
    drivers writing one run directory would answer the same rows twice."""
    remote = None
    root = cfg.run.local_root()
    if is_uri(cfg.run.dir):
        from synth_ray.runtime.storage import Remote

        remote = Remote(cfg.run.dir, root)
    run = RunDir(root, remote)
    run.root.mkdir(parents=True, exist_ok=True)
    key = str(run.root.resolve())
    if key not in _LOCKS:
        _LOCKS[key] = _take_lock(run)
    if remote:
        # what the bucket holds (a run started elsewhere), then what this mirror has and the
        # bucket lacks (a push cut short by a crash)
        log.info("run in %s; local mirror %s", remote.uri, root)
        run.pull()
    atomic_write_text(run.path("config.yaml"), dump_config(cfg))
    run.push()
    if remote:
        remote.push_every(cfg.run.push_every_s)
    return Context(cfg, run)


def _take_lock(run: RunDir) -> Any:
    lock = open(run.path(".lock"), "a+")  # noqa: SIM115 - held until the process exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        raise RunDirBusy(
            f"run directory {run.root} is in use by another synth-ray process "
            f"({lock.read().strip() or 'pid unknown'}); wait for it or use another run.dir"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}\n")
    lock.flush()
    return lock


def _cluster_gpus() -> float:
    """GPUs of the Ray cluster a stage ran on (0 for stages that need no Ray): with the
    stage's wall time, an upper bound on its GPU-hours for the report."""
    import sys

    ray = sys.modules.get("ray")  # never import Ray just to ask
    if ray is None or not ray.is_initialized():
        return 0.0
    return float(ray.cluster_resources().get("GPU", 0))


def input_hash(stage: Stage, ctx: Context) -> str:
    """The hash of the stage's inputs, computed once until a stage runs (which may write
    what a later stage reads)."""
    if stage.name not in ctx.input_hashes:
        ctx.input_hashes[stage.name] = hash_json(stage.impl().inputs(ctx))
    return ctx.input_hashes[stage.name]


def _peak_rss_mb() -> float:
    """The driver's peak resident memory so far (MiB): a `run` records, after each stage, the
    most its process has held up to then; the engines and workers are Ray's processes, not
    counted here. What tells whether the driver stays bounded at the paper's size."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def is_current(stage: Stage, ctx: Context) -> bool:
    """Done before with these inputs and every output still there: `run` skips it. A stage
    whose inputs an earlier stage has not written yet is not current."""
    try:
        return ctx.run.is_current(stage.name, input_hash(stage, ctx))
    except FileNotFoundError:
        return False


def stages_to_run(ctx: Context, names: list[str], force: list[str]) -> list[str]:
    """The stages of `names` that `run` may execute: from the first one not current (or
    forced) on, since every later stage reads what it writes."""
    for i, name in enumerate(names):
        if name in force or not is_current(get_stage(name), ctx):
            return names[i:]
    return []


def execute(stage: Stage, ctx: Context, force: bool = False) -> str:
    """Run one stage unless current. Returns 'done', 'skipped'; raises on failure."""
    impl = stage.impl()
    inputs = input_hash(stage, ctx)
    if not force and ctx.run.is_current(stage.name, inputs):
        log.info("[%s] up to date in %s (inputs %s): skipped; --force to redo",
                 stage.name, ctx.run.root, inputs)
        return "skipped"
    log.info("[%s] starting in %s", stage.name, ctx.run.root)
    ctx.run.mark_running(stage.name, inputs)
    ctx.input_hashes.clear()  # what this stage writes, a later one reads
    t0 = time.time()
    try:
        out = impl.run(ctx)
    except BaseException as e:
        # on a full disk the manifest cannot record the failure either: the stage's own
        # error is the one to report
        with contextlib.suppress(DiskFullError):
            ctx.run.mark_failed(stage.name, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        try:  # the failure's record and whatever the stage finished, kept in the bucket
            ctx.run.push()
        except Exception as push_error:  # the stage's own error is the one to report
            log.warning("[%s] could not push the run to its bucket: %s", stage.name,
                        push_error)
        raise
    ctx.run.mark_done(stage.name, out.outputs, out.rows, summary=out.summary,
                      cluster_gpus=_cluster_gpus(), driver_peak_rss_mb=_peak_rss_mb(),
                      **out.extra)
    ctx.run.push()  # outputs first, manifest last (storage.py)
    log.info("[%s] done in %.1fs: %s", stage.name, time.time() - t0, out.summary)
    track_stage(ctx, stage.name)
    return "done"


def track_stage(ctx: Context, name: str) -> None:
    """The stage's time, rows and tables to the experiment tracker. A tracking server that
    is down costs its record (said in the log), never the stage's outputs."""
    if not ctx.tracker.enabled:
        return
    try:
        ctx.tracker.stage_done(name, ctx.run.manifest()["stages"][name])
        ctx.tracker.stage_metrics(name, ctx.run)
    except Exception as e:
        log.warning("[tracking] could not record stage %s: %s: %s", name, type(e).__name__, e)
        with contextlib.suppress(Exception):  # and in the manifest: no silent gap
            ctx.run.note(name, "tracking_error", f"{type(e).__name__}: {str(e)[:500]}")
