"""The tracking interface every backend implements (`Tracker` on the driver, `WorkerRun` in a
Train worker) and what they share: metric keys, the config as flat params, the evaluation
tables as metrics, the run's `tracking.json`. The backends: `mlflow_tracking.py`,
`wandb_tracking.py`; `tracking.py` picks one from the config.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from synth_ray.config import ExperimentConfig
from synth_ray.runtime.rundir import RunDir

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


class Tracker:
    """`tracking.backend: none`: every hook does nothing."""

    enabled = False

    def stage_done(self, stage: str, record: dict[str, Any]) -> None: ...

    def stage_metrics(self, stage: str, run: RunDir) -> None: ...

    def adapter_run(self, job: dict[str, Any]) -> dict[str, Any] | None:
        return None

    def finish(self, status: str) -> None: ...


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
