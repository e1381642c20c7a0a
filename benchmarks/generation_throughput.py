"""Generation throughput: raw `vllm.LLM` against synth-ray's Ray Data pipeline, one process.

The same prompts (chat-templated sample instructions), the same sampling, the same number of
output tokens (ignore_eos), the same tiny model. Prints output tokens/s of each and the ratio
pipeline / raw, both at steady state and end to end (engine start included).

Steady state: raw = the generate() call on a warm engine. The pipeline starts its engine
inside each run and Ray Data may hand small outputs over in one go, so its steady state is
measured by difference: two full runs, N prompts and a warm-up-sized n (N/4, at most 64), and
(tokens(N) - tokens(n)) / (time(N) - time(n)) cancels engine start and teardown; Ray starts
once before both, timed apart (end to end counts it). `--quick`
(the test suite) runs the pipeline once and prints the end-to-end ratio only.

Run: .venv/bin/python benchmarks/generation_throughput.py [--prompts 2048] [--max-tokens 32]
     .venv/bin/python benchmarks/generation_throughput.py --quick   (seconds: the test suite)
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def raw_vllm(model: str, prompts: list[str], max_tokens: int,
             eager: bool = False) -> dict[str, float]:
    from vllm import LLM, SamplingParams

    t0 = time.perf_counter()
    llm = LLM(model=model, dtype="float32", max_model_len=2048, seed=42, enforce_eager=eager)
    params = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=max_tokens, ignore_eos=True)
    llm.generate(prompts[:8], params, use_tqdm=False)  # warm-up, as the pipeline's first batch
    t1 = time.perf_counter()
    out = llm.generate(prompts, params, use_tqdm=False)
    t2 = time.perf_counter()
    tokens = sum(len(o.outputs[0].token_ids) for o in out)
    del llm
    gc.collect()
    return {"tokens": tokens, "steady_s": t2 - t1, "e2e_s": t2 - t0}


def pipeline(cfg, rows, max_tokens: int) -> dict[str, float]:
    import polars as pl
    import ray

    from synth_ray.engines.answering import EngineWindow, _normalise, _stream, chat_prompts
    from synth_ray.engines.layout import EngineRun, EngineSpec
    from synth_ray.engines.processors import vllm_processor
    from synth_ray.engines.store import GenerationStore, build_requests
    from synth_ray.engines.tokenizers import engine_tokenizer
    from synth_ray.runtime.cluster import ensure_ray

    t0 = time.perf_counter()
    ensure_ray(cfg.resources)
    source = cfg.sources[0]
    requests = build_requests(cfg, source, {1: rows})
    spec = EngineSpec.of_source(source)
    # as the generate stage
    window = EngineWindow.of(cfg.generation, spec)
    prompts, _ = chat_prompts(requests, window)
    requests = requests.with_columns(prompt=pl.col("gen_key").replace_strict(prompts))
    proc = vllm_processor(EngineRun.of(cfg), spec)
    # as answering.answer_many: the engine gets the templated prompt, the messages stay on
    # the driver and go back on each answer before its shard is written
    ds = proc(ray.data.from_arrow(requests.drop("messages").to_arrow()))
    messages = requests.select("gen_key", "messages").unique("gen_key")
    store = GenerationStore(Path(tempfile.mkdtemp()), source.name)
    tokenizer = engine_tokenizer(window.model)
    tokens = 0
    for batch in _stream(ds, cfg.generation.shard_rows, 3600):
        frame = _normalise(batch, tokenizer).drop("messages").join(messages, on="gen_key")
        store.write_shard(frame)  # the real path writes every shard to disk
        tokens += int(frame["completion_tokens"].sum())
    t_end = time.perf_counter()
    assert pl.concat([pl.read_parquet(p) for p in store.shards.glob("*.parquet")]).height == len(
        rows)
    return {"tokens": tokens, "e2e_s": t_end - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=2048)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, seconds: the test suite runs every benchmark so")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.max_tokens = 32, 8
        # start engines as synth-ray's CPU engines do (eager, no model-worker process)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"

    import polars as pl
    from transformers import AutoTokenizer

    from synth_ray import models
    from synth_ray.config import load_config
    from synth_ray.data.dolly import load_dataset
    from synth_ray.prompts import chat_messages

    rows = load_dataset("tiny://dolly-sample").rows
    while rows.height < args.prompts:
        rows = pl.concat([rows, rows.with_columns(pl.col("id") + "-r",
                                                  pl.col("instruction") + " Again.")])
    rows = rows.head(args.prompts)
    cfg = load_config(
        os.path.join(os.path.dirname(__file__), "..", "jobs", "configs", "plumbing.yaml"),
        [f"generation.sampling.max_tokens={args.max_tokens}",
         f"generation.sampling.min_tokens={args.max_tokens}",  # = ignore_eos for equal work
         "generation.batch_size=64", "generation.shard_rows=64"],
    )
    model = models.resolve_model(cfg.sources[0].model)
    tok = AutoTokenizer.from_pretrained(model)
    prompts = [tok.apply_chat_template(chat_messages(r["instruction"], r["context"],
                                                     cfg.generation.system_prompt),
                                       tokenize=False, add_generation_prompt=True)
               for r in rows.iter_rows(named=True)]

    # the same engine settings as the pipeline's: it runs a model of a few MB eager
    # (processors._engine_config), so raw vLLM does too; compiled, raw would measure
    # torch.compile against eager, not synth-ray's plumbing against none
    from synth_ray.engines.processors import SMALL_MODEL_BYTES, _weights_bytes

    eager = args.quick or _weights_bytes(model) < SMALL_MODEL_BYTES
    raw = raw_vllm(model, prompts, args.max_tokens, eager=eager)
    # Ray starts once, timed apart: end to end counts it, and both pipeline runs of the
    # steady state below find it up (else the first run's share of it would count as
    # per-row time in the difference)
    from synth_ray.runtime.cluster import ensure_ray

    t0 = time.perf_counter()
    ensure_ray(cfg.resources)
    ray_start_s = time.perf_counter() - t0
    pipe = pipeline(cfg, rows, args.max_tokens)
    raw_e2e = raw["tokens"] / raw["e2e_s"]
    pipe_e2e = pipe["tokens"] / (pipe["e2e_s"] + ray_start_s)
    print(f"prompts={args.prompts} max_tokens={args.max_tokens} model={cfg.sources[0].model} "
          f"engines {'eager' if eager else 'compiled'}")
    if args.quick:
        # one pipeline run: the steady state by difference needs a second, larger one, and
        # at 32 prompts the difference would be noise (the full run measures it)
        print(f"raw vllm.LLM      end-to-end {raw_e2e:9.1f} tok/s ({raw['e2e_s']:.1f} s)")
        print(f"ray.data pipeline end-to-end {pipe_e2e:9.1f} tok/s "
              f"({pipe['e2e_s'] + ray_start_s:.1f} s, Ray's start {ray_start_s:.1f} s)")
        print(f"ratio pipeline/raw: end-to-end {pipe_e2e / raw_e2e:.2f}x")
        return
    # the steady state by difference: a warm-up-sized run (a quarter of the prompts, at
    # most 64) against the full one cancels engine start and teardown
    small = pipeline(cfg, rows.head(min(64, args.prompts // 4)), args.max_tokens)
    raw_steady = raw["tokens"] / raw["steady_s"]
    pipe_steady = (pipe["tokens"] - small["tokens"]) / (pipe["e2e_s"] - small["e2e_s"])
    print(f"raw vllm.LLM      steady {raw_steady:9.1f} tok/s   end-to-end {raw_e2e:9.1f} tok/s "
          f"({raw['e2e_s']:.1f} s)")
    print(f"ray.data pipeline steady {pipe_steady:9.1f} tok/s   end-to-end {pipe_e2e:9.1f} "
          f"tok/s ({pipe['e2e_s'] + ray_start_s:.1f} s, Ray's start {ray_start_s:.1f} s)")
    print(f"ratio pipeline/raw: steady {pipe_steady / raw_steady:.2f}x, "
          f"end-to-end {pipe_e2e / raw_e2e:.2f}x")


if __name__ == "__main__":
    main()
