"""Expected GPU-hours of the paper's generation, computed from a config (no GPU needed).

Requests per source follow the config's conditions (the single-source model answers all 4
parts, every other source its one part) over Dolly-15k's split (13,509 training rows in parts
of 3,377/3,377/3,377/3,378). Throughput is anchored on the ~8,000 output tok/s published for
vLLM serving Llama-3.1-8B on one H100 and scaled per GPU by 8B / model size (decode is
memory-bound: tokens/s per GPU falls about with the bytes of weights read per token).
Output length is an assumption (--mean-output-tokens); API sources cost no GPU time.

Run: .venv/bin/python benchmarks/generation_gpu_hours.py jobs/configs/paper-8b.yaml
"""

from __future__ import annotations

import argparse
import re

from synth_ray.core.config import load_config
from synth_ray.engines.store import parts_per_source

PART_ROWS = {1: 3377, 2: 3377, 3: 3377, 4: 3378}
H100_8B_TOKENS_PER_S = 8000.0
# Parameter counts (billions) of the paper's open sources, for the throughput scaling.
PARAMS_B = {"gemma-2-9b": 9.2, "falcon3-10b": 10.3, "qwen2.5-7b": 7.6, "mistral-large": 123,
            "command-r-plus": 104, "qwen2.5-72b": 72.7}  # fmt: skip


def params_b(name: str) -> float:
    if name in PARAMS_B:
        return PARAMS_B[name]
    m = re.search(r"(\d+(?:\.\d+)?)b", name)
    if not m:
        raise ValueError(f"no parameter count known for source {name!r}")
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--mean-output-tokens", type=float, default=350.0)
    args = ap.parse_args()
    cfg = load_config(args.config)
    total_gpu_h = 0.0
    print("| source | backend | requests | output tokens | GPUs/replica | GPU-hours |")
    print("|---|---|---|---|---|---|")
    for name, parts in parts_per_source(cfg).items():
        src = cfg.source(name)
        n = sum(PART_ROWS[k] for k in parts)
        tokens = n * args.mean_output_tokens
        if src.backend == "http":
            print(f"| {name} | http | {n:,} | {tokens / 1e6:.1f}M | - | API |")
            continue
        gpus = src.tensor_parallel_size * src.pipeline_parallel_size
        per_gpu = H100_8B_TOKENS_PER_S * 8.0 / params_b(name)
        gpu_h = tokens / per_gpu / 3600.0
        total_gpu_h += gpu_h
        print(f"| {name} | vllm | {n:,} | {tokens / 1e6:.1f}M | {gpus} | {gpu_h:.1f} |")
    print(f"\nTotal vLLM generation: {total_gpu_h:.1f} H100-hours "
          f"(mean {args.mean_output_tokens:.0f} output tokens per answer)")


if __name__ == "__main__":
    main()
