"""The `train` stage's wall time for a grid of small adapters: one Ray Train run per adapter
(baseline) against several adapters per run (`training.adapters_per_run`), and Ray Train's
controller polling at Ray's 2 s against synth-ray's 0.25 s (`training.poll_interval_s`).

Same process, same Ray instance, same data: 6 adapters (the human condition, seeds 1-6) of
the tiny random-weight target, 184 training rows each, batch 8, 2 epochs (46 steps: the
demo's shape), 2 Tune trials at a time with 1 CPU each. Each variant trains into a fresh
run directory; the stage's own clock is reported, and each adapter's best validation loss
is checked to be the same in every variant (grouping must not change what is trained).

Run: .venv/bin/python benchmarks/train_grid.py [--seeds 6] [--per-run 3]
     .venv/bin/python benchmarks/train_grid.py --quick   (seconds: the test suite)
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def stage(seeds: int, per_run: int, poll: float, rows,
          epochs: int = 2) -> tuple[float, dict[str, float]]:
    from synth_ray.config import load_config
    from synth_ray.runtime.pipeline import open_run
    from synth_ray.stages import train as trainer
    from synth_ray.train.jobs import jobs

    run_dir = Path(tempfile.mkdtemp(prefix="bench-grid-"))
    (run_dir / "datasets").mkdir()
    rows.write_parquet(run_dir / "datasets" / "human.parquet")
    cfg = load_config(
        Path(__file__).parents[1] / "jobs" / "configs" / "plumbing.yaml",
        [f"run.dir={run_dir}", "sources=[]", "conditions.single_source={}",
         "conditions.multi_source={}", "targets.0.self_source=null",
         f"training.seeds={list(range(1, seeds + 1))}",
         f"training.epochs={epochs}", "training.eval_every_steps=25", "training.max_length=256",
         "training.parallel_trials=2", f"training.adapters_per_run={per_run}",
         f"training.poll_interval_s={poll}", "training.learning_rate=1e-3"],
    )
    ctx = open_run(cfg)
    t0 = time.perf_counter()
    trainer.run(ctx)
    took = time.perf_counter() - t0
    losses = {}
    for j in jobs(ctx.cfg, ctx.run):
        s = json.loads((Path(j["output"]) / "training_summary.json").read_text())
        losses[j["run_name"]] = round(s["best_val_loss"], 5)
    shutil.rmtree(run_dir, ignore_errors=True)
    return took, losses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--per-run", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, seconds: the test suite runs every benchmark so")
    ap.add_argument("--rows", type=int, default=207)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.per_run, args.rows, args.epochs = 2, 2, 45, 1

    import polars as pl

    from synth_ray.config import ResourcesSection
    from synth_ray.data.conditions import COLUMNS
    from synth_ray.data.dolly import load_dataset
    from synth_ray.runtime.cluster import ensure_ray

    rows = load_dataset("tiny://dolly-sample").rows.head(args.rows).with_columns(
        part=pl.lit(1, pl.Int32), source=pl.lit("human"), condition=pl.lit("human"),
        bracket=pl.lit(None, pl.Utf8),
        split=pl.when(pl.int_range(pl.len()) % 9 == 0).then(pl.lit("validation"))
        .otherwise(pl.lit("train")),
    ).select(COLUMNS)  # fmt: skip
    ensure_ray(ResourcesSection(num_cpus=2))
    variants = [("1 adapter per run, Ray's 2 s poll (baseline)", 1, 2.0),
                ("1 adapter per run, 0.25 s poll", 1, 0.25),
                (f"{args.per_run} adapters per run, 0.25 s poll", args.per_run, 0.25)]
    if args.quick:  # the baseline and the grouped runs: the two code paths
        variants = [variants[0], variants[2]]
    results = []
    for label, per_run, poll in variants:
        took, losses = stage(args.seeds, per_run, poll, rows, args.epochs)
        results.append((label, took, losses))
        print(f"{label:48s} {took:7.1f} s", flush=True)
    base = results[0][1]
    print(f"\n{args.seeds} adapters, 2 trials at a time; ratio = stage time / baseline")
    for label, took, losses in results:
        same = "same" if losses == results[0][2] else f"DIFFERENT {losses}"
        print(f"{label:48s} {took:7.1f} s  {took / base:5.2f}x  best val losses: {same}")


if __name__ == "__main__":
    main()
