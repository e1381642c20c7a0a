"""`tracking.backend: wandb`: the MLflow tracker's shape on Weights & Biases.

W&B has no nested runs: the pipeline's run and its adapters' runs share a `group` (the
pipeline run's id), with job types `pipeline` and `adapter`. Offline mode (the default)
writes under `<run.dir>/wandb` and needs no network or key; `wandb sync` uploads it later.
Run ids live in `<run>/tracking.json`, so a rerun continues the same runs (resume="allow").
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from synth_ray.config import ExperimentConfig
from synth_ray.observe.tracker import (
    STATE_FILE,
    Tracker,
    WorkerRun,
    evaluation_metrics,
    flat_params,
    log,
)
from synth_ray.runtime.rundir import RunDir, atomic_write_text, hash_json


class WandbTracker(Tracker):
    enabled = True

    def __init__(self, cfg: ExperimentConfig, run: RunDir):
        import wandb

        self.cfg, self.run_dir = cfg, run
        tracking = cfg.tracking
        os.environ["WANDB_MODE"] = tracking.wandb_mode  # read by setup_wandb in the workers too
        self.dir = str(run.root.resolve())
        state = self._state()
        config_hash = hash_json(cfg.model_dump(mode="json"))
        if state.get("backend") != "wandb" or state.get("config") != config_hash:
            state = {"backend": "wandb", "id": uuid.uuid4().hex[:12],
                     "config": config_hash, "adapters": {}}
            self._save(state)
        self.id = state["id"]
        self.run = wandb.init(project=tracking.experiment, name=cfg.run.name, id=self.id,
                              group=self.id, job_type="pipeline", dir=self.dir,
                              mode=tracking.wandb_mode, resume="allow", config=flat_params(cfg))
        log.info("[tracking] W&B run %s (%s) in project %r, folder %s", self.id,
                 tracking.wandb_mode, tracking.experiment, self.run.dir)

    def _state(self) -> dict[str, Any]:
        path = self.run_dir.path(STATE_FILE)
        return json.loads(path.read_text()) if path.exists() else {}

    def _save(self, state: dict[str, Any]) -> None:
        atomic_write_text(self.run_dir.path(STATE_FILE), json.dumps(state, indent=2) + "\n")

    def stage_done(self, stage: str, record: dict[str, Any]) -> None:
        self.run.log({f"stage/{stage}/seconds": float(record.get("wall_s") or 0.0),
                      f"stage/{stage}/rows": float(sum((record.get("rows") or {}).values()))})

    def stage_metrics(self, stage: str, run: RunDir) -> None:
        import wandb

        if stage == "report":
            art = wandb.Artifact(f"report-{self.id}", type="report")
            art.add_dir(str(run.path("report")))
            self.run.log_artifact(art)
        elif metrics := evaluation_metrics(self.cfg, stage, run):
            self.run.summary.update(metrics)  # final values: the run's summary

    def adapter_run(self, job: dict[str, Any]) -> dict[str, Any]:

        state = self._state()
        rid = state.setdefault("adapters", {}).get(job["run_name"])
        if rid is None:
            rid = state["adapters"][job["run_name"]] = uuid.uuid4().hex[:12]
            self._save(state)
        tracking = self.cfg.tracking
        return {"backend": "wandb", "project": tracking.experiment, "group": self.id, "id": rid,
                "name": job["run_name"], "mode": tracking.wandb_mode, "dir": self.dir}

    def finish(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


def worker_run(info: dict[str, Any], params: dict[str, Any]) -> WorkerRun:
    """Rank 0 of a Train run: the adapter's W&B run through Ray's `setup_wandb`."""
    from ray.air.integrations.wandb import setup_wandb

    os.environ["WANDB_MODE"] = info["mode"]  # Ray skips the API key check offline
    # a W&B service of its own: a worker started by a local Ray instance inherits the
    # driver's (WANDB_SERVICE), which still holds the run of a killed worker under this
    # id, and a resumed run would wait on it
    os.environ.pop("WANDB_SERVICE", None)
    run = setup_wandb(params, project=info["project"], group=info["group"], id=info["id"],
                      name=info["name"], job_type="adapter", dir=info["dir"],
                      mode=info["mode"], resume="allow")
    return WorkerRun(lambda m, step: run.log(m, step=step), run.summary.update, run.finish)
