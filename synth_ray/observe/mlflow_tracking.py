"""`tracking.backend: mlflow`: one MLflow run per pipeline run, a nested run per adapter (the
shape `tracking.py` describes), written by the driver and by rank 0 of each Ray Train run
through Ray's `setup_mlflow`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synth_ray.config import ExperimentConfig
from synth_ray.observe.tracker import (
    ADAPTER_TAG,
    RUN_TAG,
    STATE_FILE,
    Tracker,
    WorkerRun,
    evaluation_metrics,
    flat_params,
    log,
)
from synth_ray.runtime.rundir import RunDir, atomic_write_text, hash_json


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


def worker_run(info: dict[str, Any], params: dict[str, Any]) -> WorkerRun:
    import os

    from ray.air.integrations.mlflow import setup_mlflow

    # the child run the driver made: MLflow's start_run takes its id from this variable
    os.environ["MLFLOW_RUN_ID"] = info["run_id"]
    mlflow = setup_mlflow(params, tracking_uri=info["uri"], experiment_id=info["experiment_id"])
    return WorkerRun(
        # asynchronous: a step never waits for the server (end_run flushes)
        lambda m, step: mlflow.log_metrics(m, step=step, synchronous=False),
        mlflow.log_metrics, mlflow.end_run)
