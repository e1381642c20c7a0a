"""Experiment tracking (`tracking:`): one MLflow run per pipeline run, a nested run per
adapter.

The driver owns the pipeline's run: the resolved config as params, each stage's time and rows,
the evaluation tables (score and judge summaries) as metrics, the report as an artifact.
Each adapter's run is made by the driver as a child of it and written by rank 0 of the Ray
Train run through Ray's `setup_mlflow` (loss, lr, tokens/s and MFU per report; the best
validation loss at the end). The ids live in `<run>/tracking.json`, so a rerun of a killed
or failed run continues the same MLflow runs; a rerun with another config starts new ones.
W&B (`backend: wandb`) keeps the same shape through Ray's `setup_wandb`.
"""

from __future__ import annotations

from typing import Any

from synth_ray.config import ExperimentConfig
from synth_ray.observe import mlflow_tracking, wandb_tracking
from synth_ray.observe.tracker import Tracker, WorkerRun
from synth_ray.runtime.rundir import RunDir


def open_tracker(cfg: ExperimentConfig, run: RunDir) -> Tracker:
    backend = cfg.tracking.backend
    if backend == "none":
        return Tracker()
    if backend == "mlflow":
        return mlflow_tracking.MlflowTracker(cfg, run)
    return wandb_tracking.WandbTracker(cfg, run)


def worker_session(info: dict[str, Any] | None, params: dict[str, Any]) -> WorkerRun | None:
    """In a Ray Train worker: the adapter's run that the driver named, through Ray's own
    integration (`setup_mlflow` / `setup_wandb`); None on ranks other than 0 and without
    tracking."""
    if not info:
        return None
    import ray.train

    if ray.train.get_context().get_world_rank() != 0:
        return None
    try:
        if info["backend"] == "wandb":
            return wandb_tracking.worker_run(info, params)
        return mlflow_tracking.worker_run(info, params)
    except Exception as e:
        print(f"[tracking] WARNING: no tracked run for this adapter: {type(e).__name__}: "
              f"{str(e)[:300]}")
        return None
