"""How many requests a generating engine schedules at once, and how many batches Ray Data
keeps in flight to it.

ray.data.llm builds each engine as vLLM's `AsyncLLM`, whose usage context (ENGINE_CONTEXT)
is not in vLLM's table of batch defaults (`EngineArgs.get_batch_defaults`, vLLM 0.32): an
engine left to itself falls through to `SchedulerConfig`'s 128 sequences and 2,048 tokens a
step on every device, where vLLM's offline `LLM` class schedules 256 sequences and 4,096
tokens on a CPU, and 1,024 and 16,384 on an H100 (vllm-project/vllm#37393; Ray Serve passes
its usage context since ray-project/ray#55159, the batch stage does not). synth-ray's
engines do offline batch work, so every generating engine gets the `LLM` class's defaults
for its device, unless its config section's `engine_kwargs` set them. On this project's CPU
machine the pipeline's engine then runs as `vllm.LLM` does, which the benchmark against raw
vLLM compares it with (docs/benchmarks.md, "Generation: Ray Data pipeline vs raw vLLM").

The reading engines (perplexity, pairwise labels) keep vLLM's engine defaults: their prompt
log-probs take logits for every prompt token of a step, which 16,384 tokens a step would
multiply by eight against 2,048, unmeasured on a GPU.
"""

from __future__ import annotations

import math
from typing import Any

from synth_ray.runtime.cluster import GpuType

# Ray's own default (OfflineProcessorConfig.max_concurrent_batches)
RAY_CONCURRENT_BATCHES = 8


def offline_batch_limits(gpu: bool, gpu_type: GpuType, world_size: int) -> dict[str, int]:
    """`max_num_seqs` and `max_num_batched_tokens` of vLLM's table for its `LLM` class on the
    engine's device (read from the config's GPU type: the driver may run on a node without
    the engines' GPU): a CPU engine 256 and 4,096 per worker; a GPU of at least 70 GiB that
    is not an A100, 1,024 and 16,384; any other GPU 256 and 8,192."""
    if not gpu:
        seqs, tokens = 256 * world_size, 4096 * world_size
    elif gpu_type.memory_gib >= 70 and "a100" not in (gpu_type.name or "").lower():
        seqs, tokens = 1024, 16384
    else:
        seqs, tokens = 256, 8192
    return {"max_num_seqs": seqs, "max_num_batched_tokens": tokens}


def concurrent_batches(max_num_seqs: int | None, batch_size: int,
                       pipeline_parallel: int = 1) -> int:
    """Batches Ray Data keeps in flight to one engine: rows for twice the sequences the
    engine schedules (ray.data.llm sizes an engine at max_num_seqs x pipeline stages), so it
    stays full while a finished batch is handed back and the next arrives (ray.data.llm
    warns below once); never under Ray's default."""
    if not max_num_seqs:
        return RAY_CONCURRENT_BATCHES
    return max(RAY_CONCURRENT_BATCHES,
               math.ceil(2 * max_num_seqs * pipeline_parallel / batch_size))


def with_offline_limits(engine_kwargs: dict[str, Any], gpu: bool, gpu_type: GpuType,
                        world_size: int) -> dict[str, Any]:
    """The engine's kwargs with both limits set as vLLM sets them for its `LLM` class, in
    vLLM's order (EngineArgs._set_default_max_num_seqs_and_batched_tokens_args), so a
    config that sets one of them, a performance mode or no chunked prefill resolves as it
    would under `vllm.LLM`: the table's values, doubled in "throughput" mode; the tokens at
    least the context window without chunked prefill, at most the sequences' whole
    contexts; the sequences at most the tokens. The config's own values are kept."""
    seqs, tokens = engine_kwargs.get("max_num_seqs"), engine_kwargs.get("max_num_batched_tokens")
    base = offline_batch_limits(gpu, gpu_type, world_size)
    if engine_kwargs.get("performance_mode") == "throughput":
        base = {k: 2 * v for k, v in base.items()}
    out = dict(engine_kwargs)
    if tokens is None:
        window = int(engine_kwargs["max_model_len"])
        tokens = base["max_num_batched_tokens"]
        if engine_kwargs.get("enable_chunked_prefill") is False:
            tokens = max(tokens, window)  # a whole prompt must fit one step
        tokens = min(tokens, (seqs or base["max_num_seqs"]) * window)
        out["max_num_batched_tokens"] = tokens
    if seqs is None:
        out["max_num_seqs"] = min(base["max_num_seqs"], tokens)
    return out
