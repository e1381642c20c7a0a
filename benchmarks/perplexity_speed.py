"""Perplexity throughput: vLLM prompt log-probs against the transformers loop, one run.

The same 512 (prompt, response) pairs from the bundled sample, scored by the tiny target in
fp32. Baseline: `hf_perplexities` (one forward pass per sample, as the check path does).
Compared: raw `vllm.LLM.generate(max_tokens=1, prompt_logprobs=0)` on a warm engine, and
synth-ray's Ray Data scoring pipeline end to end (engine start included). Prompt tokens/s
(whole sequence: template, instruction and response) and the agreement of the results.

Run: .venv/bin/python benchmarks/perplexity_speed.py [--samples 512]
     .venv/bin/python benchmarks/perplexity_speed.py --quick   (seconds: the test suite)
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, seconds: the test suite runs every benchmark so")
    args = ap.parse_args()
    if args.quick:
        args.samples = 16
        # start engines as synth-ray's CPU engines do (eager, no model-worker process)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"

    import polars as pl
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synth_ray import models
    from synth_ray.config import load_config
    from synth_ray.data.dolly import load_dataset
    from synth_ray.metrics.perplexity import (
        hf_response_logprobs,
        perplexity,
        response_logprobs_from_vllm,
        token_spans,
    )
    from synth_ray.prompts import chat_messages

    path = models.resolve_model("tiny://target")
    tok = AutoTokenizer.from_pretrained(path)
    rows = load_dataset("tiny://dolly-sample").rows.head(args.samples)
    spans = [token_spans(tok, chat_messages(r["instruction"], r["context"],
                                            "You are a helpful assistant."), r["response"])
             for r in rows.iter_rows(named=True)]
    n_tokens = sum(len(p) + len(a) for p, a in spans)

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    t = time.perf_counter()
    hf = [perplexity(hf_response_logprobs(model, p, a)) for p, a in spans]
    t_hf = time.perf_counter() - t

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=path, dtype="float32", max_model_len=2048, enforce_eager=args.quick)
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
    prompts = [TokensPrompt(prompt_token_ids=p + a) for p, a in spans]
    llm.generate(prompts[:8], params, use_tqdm=False)  # warm-up
    t = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    t_vllm = time.perf_counter() - t
    raw = [perplexity(response_logprobs_from_vllm(o.prompt_logprobs, p + a, len(p)))
           for o, (p, a) in zip(outs, spans)]
    del llm

    from synth_ray.engines.answering import score_rows
    from synth_ray.engines.layout import EngineRun, EngineSpec
    from synth_ray.runtime.cluster import ensure_ray

    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "jobs", "configs",
                                   "plumbing.yaml"))
    ensure_ray(cfg.resources)
    req = pl.DataFrame({"score_key": [str(i) for i in range(len(spans))],
                        "token_ids": [p + a for p, a in spans],
                        "start": [len(p) for p, _ in spans],
                        "lora_path": [None] * len(spans)},
                       schema={"score_key": pl.Utf8, "token_ids": pl.List(pl.Int64),
                               "start": pl.Int64, "lora_path": pl.Utf8})
    t = time.perf_counter()
    got = score_rows(EngineRun.of(cfg), EngineSpec(cfg.targets[0].model), req).sort(
        pl.col("score_key").cast(pl.Int64))
    t_pipe = time.perf_counter() - t
    worst = max(abs(a - b) / b for a, b in zip(raw, hf))
    worst_pipe = max(abs(a - b) / b for a, b in zip(got["perplexity"].to_list(), hf))
    print(f"samples={len(spans)} prompt tokens={n_tokens:,} model=tiny://target fp32")
    print(f"transformers loop           {n_tokens / t_hf:9.0f} tok/s  (baseline)")
    print(f"raw vLLM prompt_logprobs    {n_tokens / t_vllm:9.0f} tok/s  "
          f"{t_hf / t_vllm:.2f}x  max rel. diff {worst:.1e}")
    print(f"synth-ray pipeline, e2e     {n_tokens / t_pipe:9.0f} tok/s  "
          f"{t_hf / t_pipe:.2f}x  max rel. diff {worst_pipe:.1e}")


if __name__ == "__main__":
    main()
