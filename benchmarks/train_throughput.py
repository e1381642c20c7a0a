"""Training throughput on CPU, the tiny target, the bundled sample's real lengths.

1. Batching (issue 22), no Ray: the per-worker loop (`train.loop.run_loop`, what every Ray
   Train worker runs) with padded micro-batches (the baseline), padding-free ones, and
   padding-free with the chunked loss, in this process, alternating `--rounds` times.
   tokens/s counts real tokens only, so padding shows as a lower rate.
2. Ray Train's overhead: `fit_adapter` with one worker given the machine's threads against
   a plain PEFT loop (transformers + PEFT + AdamW, no Ray) over the same data.
Both: tokens/s over every step after the first two (warm-up).

Run: .venv/bin/python benchmarks/train_throughput.py [--rows 256] [--batch 8] [--rounds 3]
     .venv/bin/python benchmarks/train_throughput.py --quick   (seconds: the test suite)
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


def loop_tokens_per_s(model_path: str, examples: list, batch: int, lora, padding_free: bool,
                      chunk: int | None) -> float:
    """`run_loop` over one epoch of `examples` (train_gpu.py's loop, on the CPU here): a
    fresh LoRA model each time; tokens/s after two warm-up steps."""
    from peft import get_peft_model
    from train_gpu import synth_ray_loop  # this folder: the same loop as the GPU figure
    from transformers import AutoModelForCausalLM

    from synth_ray.train.lora import peft_config

    torch.manual_seed(42)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32),
                           peft_config(lora))
    return synth_ray_loop(model, examples, batch, "cpu", padding_free, chunk)


def batching(model_path: str, examples: list, batch: int, lora, rounds: int) -> None:
    variants = {"padded (baseline)": (False, None), "padding-free": (True, None),
                "padding-free + chunked loss": (True, 1024)}
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):  # alternate, so drift on a shared machine hits every variant
        for name, (free, chunk) in variants.items():
            rates[name].append(loop_tokens_per_s(model_path, examples, batch, lora, free, chunk))
    lengths = [len(e["input_ids"]) for e in examples]
    print(f"1. batching: {len(examples)} examples, lengths {min(lengths)}-{max(lengths)} "
          f"(mean {sum(lengths) / len(lengths):.0f}), micro-batch {batch}, {rounds} round(s), "
          f"threads {torch.get_num_threads()}")
    med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    for name, r in med.items():
        runs = ", ".join(f"{x:.0f}" for x in rates[name])
        print(f"   {name:30s} {r:9.1f} tok/s (median; all: {runs})")
    base = med["padded (baseline)"]
    print(f"padding-free / padded tokens/s: {med['padding-free'] / base:.2f}x")
    print(f"padding-free + chunked loss / padded tokens/s: "
          f"{med['padding-free + chunked loss'] / base:.2f}x")


LOSS_MEMORY = """
import resource, sys, torch
from synth_ray.train.loss import chunked_cross_entropy
tokens, vocab, hidden, chunk = map(int, sys.argv[1:5])
torch.manual_seed(0)
head = torch.nn.Linear(hidden, vocab, bias=False).requires_grad_(False)
h = torch.randn(1, tokens, hidden, requires_grad=True)
labels = torch.randint(0, vocab, (1, tokens))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if chunk:
    loss, _ = chunked_cross_entropy(h, head, labels, chunk)
else:  # transformers' ForCausalLMLoss: all logits, upcast to fp32
    logits = head(h).float()
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:])
loss.backward()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def loss_memory(tokens: int, vocab: int = 128256, hidden: int = 256) -> None:
    """Peak memory of the loss alone (forward + backward), each variant in a fresh
    process: Llama-3's vocabulary over `tokens` positions, full logits vs 1,024 at a time."""
    import subprocess
    import sys

    mib = {}
    for name, chunk in (("full logits (transformers)", 0), ("chunked, 1,024 tokens", 1024)):
        out = subprocess.run([sys.executable, "-c", LOSS_MEMORY, str(tokens), str(vocab),
                              str(hidden), str(chunk)], capture_output=True, text=True,
                             check=True)
        mib[name] = float(out.stdout.strip().splitlines()[-1])
    print(f"3. loss memory: {tokens} tokens x vocab {vocab:,}, peak RSS growth in the loss")
    for name, m in mib.items():
        print(f"   {name:30s} {m:9.0f} MiB")
    ratio = mib["chunked, 1,024 tokens"] / mib["full logits (transformers)"]
    print(f"chunked / full loss peak memory: {ratio:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--report-every", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: seconds (test suite)")
    ap.add_argument("--loss-tokens", type=int, default=4096)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.batch, args.rounds, args.loss_tokens = 40, 4, 1, 2048

    import polars as pl

    from synth_ray.config import load_config
    from synth_ray.data.conditions import COLUMNS
    from synth_ray.data.dolly import load_dataset
    from synth_ray.models import resolve_model
    from synth_ray.runtime.pipeline import open_run
    from synth_ray.train.data import encode_rows
    from synth_ray.train.driver import fit_adapter
    from synth_ray.train.jobs import jobs

    threads = torch.get_num_threads()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-train-"))
    cfg = load_config(
        Path(__file__).parents[1] / "jobs" / "configs" / "plumbing.yaml",
        [f"run.dir={run_dir}", "conditions.human=true", "sources=[]", "conditions.single_source={}",
         "targets.0.self_source=null",
         # part 2 compares Ray's overhead: the plain loop's padded batches and model loss
         "training.padding_free=false", "training.loss_chunk_tokens=null",
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
    batching(model_path, examples, args.batch, cfg.lora, args.rounds)
    loss_memory(args.loss_tokens)

    base = plain_loop(model_path, examples, args.batch, 1e-3, cfg.lora)

    from synth_ray.runtime.cluster import ensure_ray

    ensure_ray(cfg.resources)
    job = jobs(ctx.cfg, ctx.run)[0]
    fit_adapter(job)
    hist = json.loads((Path(job["output"]) / "training_summary.json").read_text())["history"]
    steady = hist[2:]
    ray_tps = sum(h["tokens"] for h in steady) / sum(h["step_time_s"] for h in steady)
    print(f"rows={args.rows} batch={args.batch} threads={threads} steps={len(hist)} "
          f"report_every={args.report_every}")
    print("2. Ray Train's overhead (padded batches in both)")
    print(f"plain PEFT loop      {base:9.1f} tok/s")
    print(f"Ray Train, 1 worker  {ray_tps:9.1f} tok/s")
    print(f"ratio Ray Train / plain: {ray_tps / base:.2f}x")
    os.system(f"rm -rf {run_dir}")


if __name__ == "__main__":
    main()
