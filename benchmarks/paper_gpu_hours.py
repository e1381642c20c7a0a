"""Expected H100-hours of every stage of a paper config, computed from the config (no GPU).

Assumptions, each a flag: decode throughput anchored on ~8,000 output tok/s for vLLM
serving Llama-3.1-8B on one H100, scaled per GPU by 8B / model size (generation's script,
`generation_gpu_hours.py`); prefill (scoring, pairwise judging) 10x faster per token than
decode; training at 6 N FLOPs per token (N = target parameters; LoRA still runs the full
backward through the activations) at 40% MFU of the H100's 989 dense bf16 TFLOP/s; mean
prompt 150 tokens, mean answer 350 tokens; Dolly-15k's 13,509 training rows (95% trained
on) and 1,502 test rows; 1,120 safety prompts (RB 886 + jailbreaks); 100 articles.

Run: .venv/bin/python benchmarks/paper_gpu_hours.py jobs/configs/paper-8b.yaml
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from synth_ray.core.config import load_config
from synth_ray.design import adapter_grid

HERE = Path(__file__).parent
spec = importlib.util.spec_from_file_location("gen", HERE / "generation_gpu_hours.py")
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)

TRAIN_ROWS, TEST_ROWS, SAFETY, ARTICLES = 13509 * 0.95, 1502, 1120, 100
H100_FLOPS, MFU = 989e12, 0.40


def decode_h(tokens: float, params_b: float) -> float:
    return tokens / (gen.H100_8B_TOKENS_PER_S * 8.0 / params_b) / 3600


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--prompt-tokens", type=float, default=150.0)
    ap.add_argument("--answer-tokens", type=float, default=350.0)
    args = ap.parse_args()
    cfg = load_config(args.config)
    p, a = args.prompt_tokens, args.answer_tokens
    rows = []
    gen_h = sum(decode_h(sum(gen.PART_ROWS[k] for k in parts) * a,
                         gen.params_b(name))
                for name, parts in gen.parts_per_source(cfg).items()
                if cfg.source(name).backend == "vllm")
    rows.append(("generate", gen_h, "open sources answer their parts (API sources: no GPU)"))
    n_adapters = len(adapter_grid(cfg))
    for t in cfg.targets:
        n = gen.params_b(t.name) * 1e9
        tokens = TRAIN_ROWS * (p + a) * cfg.training.epochs
        train_h = n_adapters * 6 * n * tokens / (H100_FLOPS * MFU) / 3600
        rows.append((f"train ({t.name})", train_h,
                     f"{n_adapters} adapters x {tokens / 1e6:.0f}M tokens"))
        requests = (n_adapters + 1) * (TEST_ROWS + SAFETY)
        rows.append((f"respond ({t.name})", decode_h(requests * a, n / 1e9),
                     f"{requests:,} answers incl. vanilla"))
        scored = (n_adapters + 2) * TEST_ROWS * (p + a)
        rows.append((f"score ({t.name})", decode_h(scored, n / 1e9) / 10,
                     "prompt log-probs (prefill)"))
        judged = (n_adapters + 1) * SAFETY * 2 * (1 + cfg.judge.repeat_fraction)
        judge_h = decode_h(judged * cfg.judge.sampling.max_tokens / 2,
                           gen.params_b(cfg.judge.model.split("/")[-1].lower()))
        sources = len([s for s in cfg.sources if t.self_source and
                       s.bracket == cfg.source(t.self_source).bracket]) + 1
        pairs = (n_adapters + 1) * ARTICLES * sources * (sources - 1)
        spb_h = decode_h(pairs * (p + 3 * 256), n / 1e9) / 10
        rows.append((f"judge ({t.name})", judge_h + spb_h,
                     f"{judged:,.0f} judge answers (half the token budget each) + "
                     f"{pairs:,} pairwise prefills"))
    total = sum(h for _, h, _ in rows)
    print("| stage | H100-hours | what |\n|---|---|---|")
    for name, h, what in rows:
        print(f"| {name} | {h:.1f} | {what} |")
    print(f"| total | {total:.1f} | engine start-up and idle GPUs come on top |")


if __name__ == "__main__":
    main()
