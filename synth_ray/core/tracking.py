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

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from synth_ray.core.config import ExperimentConfig
from synth_ray.core.rundir import RunDir, atomic_write_text, hash_json

log = logging.getLogger("synth_ray")

STATE_FILE = "tracking.json"
ADAPTER_TAG = "synth_ray.adapter"
RUN_TAG = "synth_ray.run"
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")


def metric_key(*parts: str) -> str:
    """MLflow allows letters, digits, _ - . space and /; anything else becomes _."""
    return _KEY_BAD.sub("_", "/".join(p for p in parts if p))


def flat_numbers(obj: Any, prefix: str = "") -> dict[str, float]:
    """Every finite number of a summary JSON by its path; list items by their condition,
    adapter or pair name where they have one."""
    out: dict[str, float] = {}
    if isinstance(obj, bool):
        return {prefix: float(obj)} if prefix else {}
    if isinstance(obj, int | float):
        return {prefix: float(obj)} if prefix and math.isfinite(obj) else {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flat_numbers(v, metric_key(prefix, str(k))))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            name = str(i)
            if isinstance(v, dict):
                if "a" in v and "b" in v:
                    name = f"{v['a']}-vs-{v['b']}"
                else:
                    name = str(v.get("condition") or v.get("adapter") or i)
            out.update(flat_numbers(v, metric_key(prefix, name)))
    return out


def flat_params(cfg: ExperimentConfig) -> dict[str, str]:
    """The resolved config, one param per leaf (lists as JSON). Holds no secret: API keys
    are only ever named by their environment variable."""
    out: dict[str, str] = {}

    def walk(obj: Any, prefix: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            text = obj if isinstance(obj, str) else json.dumps(obj)
            out[prefix] = text[:6000]  # MLflow's limit for a param value

    walk(cfg.model_dump(mode="json"), "")
    return out


def evaluation_metrics(cfg: ExperimentConfig, stage: str, run: RunDir) -> dict[str, float]:
    """The evaluation tables a stage wrote (score: summary.json, judge: judge_summary.json,
    per target) as metrics keyed `<stage>/<target>/<path>`; none for other stages."""
    from synth_ray.design import judge_dir, score_dir

    files = {"score": (score_dir, "summary.json"), "judge": (judge_dir, "judge_summary.json")}
    if stage not in files:
        return {}
    folder, name = files[stage]
    metrics: dict[str, float] = {}
    for t in cfg.targets:
        path = run.path(folder(t.name), name)
        if path.exists():
            metrics.update(flat_numbers(json.loads(path.read_text()), metric_key(stage, t.name)))
    return metrics


def default_uri(run: RunDir) -> str:
    return f"sqlite:///{(run.root / 'mlflow' / 'mlflow.db').resolve()}"


def _check_server(uri: str) -> None:
    """A quick answer from the server before MLflow's client retries for minutes."""
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10)
    except OSError as e:
        raise ConnectionError(f"no MLflow server answers at {uri} "
                              f"({getattr(e, 'reason', e)}); start it, or set "
                              "tracking.uri: null for the run directory's own store") from None


class Tracker:
    """`tracking.backend: none`: every hook does nothing."""

    enabled = False

    def stage_done(self, stage: str, record: dict[str, Any]) -> None: ...

    def stage_metrics(self, stage: str, run: RunDir) -> None: ...

    def adapter_run(self, job: dict[str, Any]) -> dict[str, Any] | None:
        return None

    def finish(self, status: str) -> None: ...


class MlflowTracker(Tracker):
    enabled = True

    def __init__(self, cfg: ExperimentConfig, run: RunDir):
        from mlflow import MlflowClient

        self.cfg, self.run = cfg, run
        self.uri = cfg.tracking.uri or default_uri(run)
        if self.uri.startswith(("http://", "https://")):
            _check_server(self.uri)
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(self.uri)
        self.experiment_id = self._experiment()
        self.config_hash = hash_json(cfg.model_dump(mode="json"))
        self.run_id = self._parent()
        log.info("[tracking] MLflow run %s in experiment %r at %s", self.run_id,
                 cfg.tracking.experiment, self.uri)

    def _experiment(self) -> str:
        name = self.cfg.tracking.experiment
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        artifacts = None
        if self.uri.startswith("sqlite:///"):  # artifacts beside the database, not in cwd
            artifacts = (self.run.root / "mlflow" / "artifacts").resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=artifacts)

    def _state(self) -> dict[str, Any]:
        path = self.run.path(STATE_FILE)
        return json.loads(path.read_text()) if path.exists() else {}

    def _parent(self) -> str:
        state = self._state()
        if (state.get("uri") == self.uri and state.get("config") == self.config_hash
                and state.get("experiment_id") == self.experiment_id):
            try:
                self.client.update_run(state["run_id"], status="RUNNING")
                return state["run_id"]
            except Exception as e:  # deleted in the UI, or another server: a new run
                log.warning("[tracking] MLflow run %s cannot be continued (%s); starting a "
                            "new one", state.get("run_id"), e)
        run = self.client.create_run(self.experiment_id, run_name=self.cfg.run.name,
                                     tags={RUN_TAG: str(self.run.root.resolve())})
        rid = run.info.run_id
        self._log_params(rid, flat_params(self.cfg))
        atomic_write_text(self.run.path(STATE_FILE), json.dumps(
            {"backend": "mlflow", "uri": self.uri, "experiment_id": self.experiment_id,
             "run_id": rid, "config": self.config_hash, "adapters": {}}, indent=2) + "\n")
        return rid

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes 100 params per batch
            self.client.log_batch(run_id, params=items[i:i + 100])

    def _log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):  # and 1,000 metrics
            self.client.log_batch(run_id, metrics=items[i:i + 1000])

    def stage_done(self, stage: str, record: dict[str, Any]) -> None:
        m = {f"stage/{stage}/seconds": float(record.get("wall_s") or 0.0),
             f"stage/{stage}/rows": float(sum((record.get("rows") or {}).values()))}
        self._log_metrics(self.run_id, m)

    def stage_metrics(self, stage: str, run: RunDir) -> None:
        """Score and judge: their summary tables as metrics; report: the page as an artifact."""
        if stage == "report":
            self.client.log_artifacts(self.run_id, str(run.path("report")), "report")
        elif metrics := evaluation_metrics(self.cfg, stage, run):
            self._log_metrics(self.run_id, metrics)

    def adapter_run(self, job: dict[str, Any]) -> dict[str, Any]:
        """The adapter's child run (made once, found again on a rerun), for its Train run."""
        state = self._state()
        adapters = state.setdefault("adapters", {})
        rid = adapters.get(job["run_name"])
        if rid is None:
            run = self.client.create_run(
                self.experiment_id, run_name=job["run_name"],
                tags={"mlflow.parentRunId": self.run_id, ADAPTER_TAG: job["run_name"],
                      "condition": job["condition"], "target": job["target"],
                      "seed": str(job["seed"])})
            rid = adapters[job["run_name"]] = run.info.run_id
            atomic_write_text(self.run.path(STATE_FILE), json.dumps(state, indent=2) + "\n")
        return {"backend": "mlflow", "uri": self.uri, "experiment_id": self.experiment_id,
                "run_id": rid}

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def open_tracker(cfg: ExperimentConfig, run: RunDir) -> Tracker:
    backend = cfg.tracking.backend
    if backend == "none":
        return Tracker()
    if backend == "mlflow":
        return MlflowTracker(cfg, run)
    from synth_ray.core.wandb_tracking import WandbTracker

    return WandbTracker(cfg, run)


class WorkerRun:
    """An adapter's tracked run in a Train worker (rank 0). A tracking backend that fails
    mid-training costs the curve from then on (said once in the worker's log), never the
    training."""

    def __init__(self, log_step, log_final, end) -> None:
        self._log_step, self._log_final, self._end = log_step, log_final, end
        self.failed = False

    def _call(self, fn, *args) -> None:
        if self.failed:
            return
        try:
            fn(*args)
        except Exception as e:
            self.failed = True
            print(f"[tracking] WARNING: logging stopped for this adapter: "
                  f"{type(e).__name__}: {str(e)[:300]}")

    def log_step(self, metrics: dict[str, float]) -> None:
        values = {k: float(v) for k, v in metrics.items() if k not in ("step", "epoch")}
        self._call(self._log_step, values, int(metrics["step"]))

    def log_final(self, metrics: dict[str, float | None]) -> None:
        self._call(self._log_final, {k: float(v) for k, v in metrics.items()
                                     if v is not None and math.isfinite(v)})

    def end(self) -> None:
        self._call(self._end)


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
            from synth_ray.core.wandb_tracking import worker_run

            return worker_run(info, params)
        return _mlflow_worker_run(info, params)
    except Exception as e:
        print(f"[tracking] WARNING: no tracked run for this adapter: {type(e).__name__}: "
              f"{str(e)[:300]}")
        return None


def _mlflow_worker_run(info: dict[str, Any], params: dict[str, Any]) -> WorkerRun:
    import os

    from ray.air.integrations.mlflow import setup_mlflow

    # the child run the driver made: MLflow's start_run takes its id from this variable
    os.environ["MLFLOW_RUN_ID"] = info["run_id"]
    mlflow = setup_mlflow(params, tracking_uri=info["uri"], experiment_id=info["experiment_id"])
    return WorkerRun(
        # asynchronous: a step never waits for the server (end_run flushes)
        lambda m, step: mlflow.log_metrics(m, step=step, synchronous=False),
        mlflow.log_metrics, mlflow.end_run)
