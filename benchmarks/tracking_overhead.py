"""What tracking costs a training step: the time of one `WorkerRun.log_step` (what rank 0 of
every Ray Train run calls after each optimizer step) against the time of one step of the
tiny target's training loop on this CPU, measured in this process.

- MLflow: Ray's `setup_mlflow` module, asynchronous logging (`synchronous=False`) into an
  SQLite store in a temp folder (the default store of a run).
- W&B: offline run (`wandb.init(mode="offline")`), as `setup_wandb` makes it.
The tiny target's CPU step is the worst case: an 8B step on a GPU takes seconds.

Run: .venv/bin/python benchmarks/tracking_overhead.py [--steps 400]
     .venv/bin/python benchmarks/tracking_overhead.py --quick   (seconds: the test suite)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def metrics(step: int) -> dict[str, float]:
    return {"step": step, "epoch": 0, "loss": 3.0 - step * 1e-3, "lr": 1e-4, "tokens": 2048.0,
            "step_time_s": 0.3, "tokens_per_s": 6800.0}


def per_step_s(run, steps: int) -> float:
    t0 = time.perf_counter()
    for i in range(1, steps + 1):
        run.log_step(metrics(i))
    run.end()  # flushes what is queued: counted
    return (time.perf_counter() - t0) / steps


def mlflow_run(folder: Path):
    import mlflow

    from synth_ray.observe.tracker import WorkerRun

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    exp = mlflow.create_experiment("bench", artifact_location=(folder / "a").as_uri())
    mlflow.start_run(experiment_id=exp)
    return WorkerRun(lambda m, step: mlflow.log_metrics(m, step=step, synchronous=False),
                     mlflow.log_metrics, mlflow.end_run)


def wandb_run(folder: Path):
    import wandb

    from synth_ray.observe.tracker import WorkerRun

    run = wandb.init(project="bench", dir=str(folder), mode="offline")
    return WorkerRun(lambda m, step: run.log(m, step=step), run.summary.update, run.finish)


def train_step_s(rows: int = 96) -> float:
    """Seconds per optimizer step of the tiny target's LoRA loop (train_throughput.py's
    `run_loop` measurement, padding-free, batch 8, the sample's first 96 rows)."""
    from train_throughput import loop_tokens_per_s
    from transformers import AutoTokenizer

    from synth_ray import models
    from synth_ray.config import LoRASection
    from synth_ray.data.dolly import load_dataset
    from synth_ray.train.data import encode_rows

    path = models.resolve_model("tiny://target")
    data = load_dataset("tiny://dolly-sample").rows.head(rows).to_dicts()
    examples = encode_rows(AutoTokenizer.from_pretrained(path), data,
                           "You are a helpful assistant.", 512, "response")
    batch = 8
    tps = loop_tokens_per_s(path, examples, batch, LoRASection(), True, 1024)
    mean_tokens = sum(len(e["input_ids"]) for e in examples) / len(examples)
    return batch * mean_tokens / tps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: seconds (test suite)")
    args = ap.parse_args()
    rows = 96
    if args.quick:
        args.steps, rows = 20, 24
    os.environ.setdefault("WANDB_SILENT", "true")
    step = train_step_s(rows)
    print(f"baseline: one training step of the tiny target (CPU): {step * 1e3:.1f} ms")
    with tempfile.TemporaryDirectory() as d:
        for name, make in (("mlflow (async, sqlite)", mlflow_run),
                           ("wandb (offline)", wandb_run)):
            folder = Path(d) / name.split()[0]
            folder.mkdir()
            cost = per_step_s(make(folder), args.steps)
            print(f"{name}: {cost * 1e3:.2f} ms per step logged = {cost / step:.3f}x a "
                  f"training step ({args.steps} steps)")


if __name__ == "__main__":
    main()
