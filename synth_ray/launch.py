"""Launching a loaded config's stages (the run's log, its tracker, the checks before work, the
stages), and the command line's one error path: an expected error (a bad config, a run dir
that is not one, a bad option) is one red line on the terminal and exit 2, no traceback.
Shared by `cli.py`'s commands and `synth-ray rehearse`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import typer
from rich.markup import escape

from synth_ray.config import ConfigError, ExperimentConfig, load_config
from synth_ray.observe.terminal import console as terminal_console
from synth_ray.observe.terminal import restore_std_streams, setup_logging
from synth_ray.preflight import (
    EXIT_CONFIG,
    EXIT_FAILED,
    MODEL_STAGES,
    checks_before_ray,
    cluster_checks,
    refuse,
)
from synth_ray.runtime.pipeline import (
    RunDirBusy,
    execute,
    get_stage,
    open_run,
    stages_to_run,
)

console = terminal_console()
log = logging.getLogger("synth_ray")


def fail(message: str, code: int = EXIT_CONFIG) -> NoReturn:
    """The error path: `message` as one red line, then exit `code` (2: the input is wrong)."""
    console.print("[red]error:[/red]", escape(message), highlight=False)
    raise typer.Exit(code)


@contextmanager
def exits_on(*errors: type[Exception], prefix: str = "") -> Iterator[None]:
    """Any of `errors` raised inside becomes `fail(prefix + its message)`."""
    try:
        yield
    except errors as e:
        fail(prefix + str(e))


def load(config: Path, overrides: list[str] | None) -> ExperimentConfig:
    with exits_on(ConfigError):
        return load_config(config, overrides or [])


def run_config(cfg: ExperimentConfig, names: list[str], force: list[str],
               verbose: bool = False, before=None) -> None:
    """The stages `names` of a loaded config; `before()` runs once the run's log is open."""
    setup_logging(verbose_=verbose or None)
    # before the run dir is touched: a local run.dir on a cluster, a missing input
    from synth_ray.runtime.readiness import problems

    refuse(problems(cfg))
    try:
        ctx = open_run(cfg)
    except RunDirBusy as e:
        log.error("%s", e)
        raise typer.Exit(EXIT_FAILED) from None
    # the log file once the run is open: a run in a bucket has just pulled its log (this
    # machine appends to it), and a file replaced under an open handler would lose lines
    setup_logging(ctx.run.root)
    if before is not None:
        before()
    status = "FAILED"
    try:
        ctx.tracker = _tracker(ctx)
        _stages_of(ctx, names, force)
        status = "FINISHED"
    finally:
        try:
            ctx.tracker.finish(status)
        except Exception as e:  # the run's own outcome is what counts
            log.warning("[tracking] could not close the tracking run: %s", e)
        try:  # a run in a bucket: the log's last lines (each stage pushed its outputs)
            ctx.run.push()
        except Exception as e:
            log.warning("could not push the run to %s: %s", ctx.run.uri(), e)
        restore_std_streams()


def _tracker(ctx):
    """The config's experiment tracker, reachable before any stage runs (or exit 2): days of
    GPU time must not run untracked because a server was down at the start."""
    from synth_ray.observe.tracking import open_tracker

    try:
        return open_tracker(ctx.cfg, ctx.run)
    except ImportError as e:
        log.error("tracking.backend=%s needs a package that is not installed: %s",
                  ctx.cfg.tracking.backend, e)
    except Exception as e:
        log.error("tracking.backend=%s (tracking.uri=%s): cannot open the tracking run: "
                  "%s: %s", ctx.cfg.tracking.backend, ctx.cfg.tracking.uri, type(e).__name__,
                  str(e)[:500])
    raise typer.Exit(EXIT_CONFIG)


def _stages_of(ctx, names: list[str], force: list[str]) -> None:
    cfg = ctx.cfg
    log.info("run %r in %s", cfg.run.name, ctx.run.root.resolve())
    if set(names) & MODEL_STAGES:
        from synth_ray import models

        try:  # build what the config's scheme ids need at once (the toy models: pre-training)
            models.prepare([s.model for s in cfg.sources] + [t.model for t in cfg.targets]
                           + [cfg.judge.model])
        except Exception as e:
            log.error("[models] preparing the config's models failed: %s: %s",
                      type(e).__name__, e)
            raise typer.Exit(EXIT_FAILED) from None
    pending = stages_to_run(ctx, names, force) if set(names) & MODEL_STAGES else []
    if set(pending) & MODEL_STAGES:  # finished GPU stages need no GPUs to be skipped
        checks_before_ray(ctx, pending)
        cluster_checks(ctx.cfg, pending, ctx.run.root)
    for name in names:
        try:
            execute(get_stage(name), ctx, force=name in force)
        except Exception as e:
            log.error("[%s] failed: %s: %s (run dir %s)", name, type(e).__name__, e, ctx.run.root)
            raise typer.Exit(EXIT_FAILED) from None
    log.info("run directory: %s", ctx.run.uri() or ctx.run.root.resolve())
    report = ctx.run.path("report", "index.html")
    if "report" in names and report.exists():
        log.info("report: %s", report.resolve())
