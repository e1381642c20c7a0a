"""`synth-ray status RUN_DIR`: where a run stands, read from its run directory alone (its
`config.yaml` and `manifest.json`; nothing is locked, written or started): each stage's
status, rows, error, wall time, and what the next `synth-ray run` would redo and why.

"Would redo" is the same test `run` makes (`RunDir.is_current`: done, same input hash,
every output present). A stage whose inputs are not there yet waits for an earlier one; a
stage after one that will be redone may be redone too (its inputs are that stage's
outputs), which only the rerun can tell.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from synth_ray.config import ExperimentConfig, load_config
from synth_ray.runtime.pipeline import Context, stage_table
from synth_ray.runtime.rundir import MANIFEST, RunDir, hash_json


class NotARunDir(ValueError):
    """The folder holds no run (no config.yaml written by `run`)."""


def run_config(root: Path) -> ExperimentConfig:
    """The resolved config a run directory holds (written when `run` opened it)."""
    config = root / "config.yaml"
    if not config.exists():
        raise NotARunDir(f"{root}: not a run directory (no config.yaml; `synth-ray run` "
                         "writes one when it opens a run)")
    return load_config(config)


def run_status(root: Path) -> dict[str, Any]:
    cfg = run_config(root)
    run = RunDir(root, None)
    ctx = Context(cfg, run)
    stages, upstream_redo = [], None
    for stage in stage_table():
        rec = run.stage(stage.name) or {}
        status = rec.get("status", "not run")
        try:
            current = run.is_current(stage.name, hash_json(stage.impl().inputs(ctx)))
            why = "" if current else ("never finished" if status != "done"
                                      else "inputs or outputs changed")
        except FileNotFoundError as e:  # an input an earlier stage has not written yet
            current, why = False, f"waits for an earlier stage ({Path(e.filename).name})"
        if current and upstream_redo:
            why = f"current now; redone if {upstream_redo} changes its outputs"
        elif not current:
            upstream_redo = upstream_redo or stage.name
        rows = rec.get("rows") or {}
        stages.append({
            "stage": stage.name, "status": status, "rows": sum(rows.values()) if rows else None,
            "wall_s": rec.get("wall_s"), "finished": rec.get("finished"),
            "error": (rec.get("error") or "").split("\n", 1)[0] or None,
            "next_run": "skip" if current and not why else "redo" if not current else "skip?",
            "why": why,
        })
    return {"run": cfg.run.name, "dir": str(root), "manifest": str(root / MANIFEST),
            "stages": stages, "tracking": tracking_of(root)}


def tracking_of(root: Path) -> dict[str, Any] | None:
    """Where the run's experiment tracking went (`tracking.json`)."""
    import json

    from synth_ray.observe.tracker import STATE_FILE

    path = root / STATE_FILE
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    out = {k: state.get(k) for k in ("backend", "uri", "experiment_id", "run_id", "id")
           if state.get(k) is not None}
    out["adapters"] = len(state.get("adapters") or {})
    return out


def age(ts: float | None) -> str:
    if not ts:
        return ""
    s = time.time() - ts
    return (f"{s / 86400:.1f} d ago" if s > 86400 else f"{s / 3600:.1f} h ago" if s > 3600
            else f"{s / 60:.0f} min ago")
