"""Training throughput: synth-ray's Ray Train path against a plain single-process PEFT loop,
one run, same data, same tiny target, same LoRA, same batch size, same threads.

Baseline: a plain loop (transformers + PEFT + AdamW, no Ray) in this process with the
machine's CPU threads. Ray Train: `fit_adapter` with one worker given the same number of
CPUs (hence threads). Both: tokens/s over every step after the first two (warm-up); the Ray
path's step time includes its per-step report and checkpoints.

Run: .venv/bin/python benchmarks/train_throughput.py [--rows 256] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch


def plain_loop(model_path: str, examples: list, batch: int, lr: float, lora) -> float:
    from peft import get_peft_model
    from torch.utils.data import DataLoader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synth_ray.train.data import collate
    from synth_ray.train.lora import peft_config

    tok = AutoTokenizer.from_pretrained(model_path)
    torch.manual_seed(42)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32),
                           peft_config(lora))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    loader = DataLoader(examples, batch_size=batch, shuffle=True,
                        collate_fn=lambda b: collate(b, tok.pad_token_id),
                        generator=torch.Generator().manual_seed(42))
    tokens, t_start = 0, None
    for i, b in enumerate(loader):
        if i == 2:
            tokens, t_start = 0, time.perf_counter()
        loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(b["attention_mask"].sum())
    return tokens / (time.perf_counter() - t_start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--report-every", type=int, default=10)
    args = ap.parse_args()

    import polars as pl

    from synth_ray.core.config import load_config
    from synth_ray.core.pipeline import open_run
    from synth_ray.data.dolly import load_dataset
    from synth_ray.models import resolve_model
    from synth_ray.stages.build import COLUMNS
    from synth_ray.stages.train import jobs
    from synth_ray.train.data import encode_rows
    from synth_ray.train.driver import fit_adapter

    threads = torch.get_num_threads()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-train-"))
    cfg = load_config(
        Path(__file__).parents[1] / "jobs" / "configs" / "plumbing.yaml",
        [f"run.dir={run_dir}", "conditions.human=true", "sources=[]", "conditions.single_source={}",
         "conditions.multi_source={}", f"targets.0.per_device_batch_size={args.batch}",
         f"targets.0.effective_batch_size={args.batch}", f"targets.0.cpus_per_worker={threads}",
         "training.eval_every_steps=1000000", "training.learning_rate=1e-3",
         f"training.report_every_steps={args.report_every}"],
    )
    ctx = open_run(cfg)
    rows = load_dataset("tiny://dolly-sample").rows.head(args.rows).with_columns(
        part=pl.lit(1, pl.Int32), source=pl.lit("human"), condition=pl.lit("human"),
        bracket=pl.lit(None, pl.Utf8), split=pl.lit("train")).select(COLUMNS)
    (run_dir / "datasets").mkdir()
    rows.write_parquet(run_dir / "datasets" / "human.parquet")

    model_path = resolve_model(cfg.targets[0].model)
    from transformers import AutoTokenizer

    examples = encode_rows(AutoTokenizer.from_pretrained(model_path), rows.to_dicts(),
                           cfg.generation.system_prompt, cfg.training.max_length, "response")
    base = plain_loop(model_path, examples, args.batch, 1e-3, cfg.lora)

    from synth_ray.core.cluster import ensure_ray

    ensure_ray(cfg.resources)
    job = jobs(ctx)[0]
    fit_adapter(job)
    hist = json.loads((Path(job["output"]) / "training_summary.json").read_text())["history"]
    steady = hist[2:]
    ray_tps = sum(h["tokens"] for h in steady) / sum(h["step_time_s"] for h in steady)
    print(f"rows={args.rows} batch={args.batch} threads={threads} steps={len(hist)} "
          f"report_every={args.report_every}")
    print(f"plain PEFT loop      {base:9.1f} tok/s")
    print(f"Ray Train, 1 worker  {ray_tps:9.1f} tok/s")
    print(f"ratio Ray Train / plain: {ray_tps / base:.2f}x")
    os.system(f"rm -rf {run_dir}")


if __name__ == "__main__":
    main()
