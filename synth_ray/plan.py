"""`synth-ray plan`: what a config asks of a cluster, from the config alone (no Ray, no
GPU, no network): per stage every vLLM engine (device, tensor x pipeline parallel, replicas,
the bf16 weights against the GPU memory it is given), every training run (workers, GPUs,
ZeRO stage, nodes), request and token counts, expected GPU-hours and API tokens; and every
problem that would stop the run on the cluster (`problems`: `plan` exits 2 on any).

Counts are exact where the run directory already holds the split; otherwise they come from
the dataset's known size (Dolly-15k: 15,011 rows) or `dataset.max_rows`. Token lengths and
throughputs are stated assumptions, each with its source (`BASIS`), not measurements of
this config.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth_ray.config import EngineSection, ExperimentConfig
from synth_ray.costs import GIB, NET_EFFICIENCY, ZERO3_GATHERS, gpu_usd, zero3_gather_hours
from synth_ray.design import TEST_PATH, adapter_grid, part_path, summary_sources
from synth_ray.engines.store import parts_per_source
from synth_ray.runtime.cluster import (
    engine_device,
    engine_placement,
    gpu_type,
    resource_problems,
    train_scaling,
)

BF16_BYTES = 2
VLLM_MEMORY_SHARE = 0.9  # vLLM's default gpu_memory_utilization
WEIGHTS_SHARE = 0.85  # weights may fill this much of an engine's memory: the rest is KV cache
TRAIN_MEMORY_SHARE = 0.8  # a training worker's weights: the rest is activations, optimizer
KNOWN_ROWS = {"databricks/databricks-dolly-15k": 15_011}
REFUSALBENCH_PROMPTS = 886  # PAPER.md
MEAN_PROMPT_TOKENS = 120  # a Dolly instruction + context + chat template (assumption)
MEAN_JUDGE_TOKENS = 200  # a judge's reason and score line (assumption)
# The throughputs behind the GPU-hours, per H100, each with where it comes from.
DECODE_8B_TOKENS_PER_S = 8000.0
TRAIN_8B_TOKENS_PER_S = 6016.0
BASIS = [
    "decode: ~8,000 output tok/s for vLLM serving Llama-3.1-8B on one H100 (published "
    "figure, docs/benchmarks.md 'Expected GPU-hours'), scaled per GPU by 8B / model size",
    "training: 6,016 tok/s for LoRA on Llama-3.1-8B shapes on one H100 (measured, "
    "docs/benchmarks.md 'On one H100'), scaled by 8B / model size",
    f"ZeRO-3 over several nodes: each micro-batch gathers the bf16 weights {ZERO3_GATHERS} "
    "times (forward, backward; a third with gradient checkpointing), each node receiving "
    "the other nodes' share over its network (resources.gpu_types.*.node_gbps) at "
    f"{NET_EFFICIENCY:.0%} of line rate, not overlapped with compute (an upper bound); the "
    "LoRA gradients' reduce-scatter is negligible; within a node (NVLink) not counted",
    "GPU dollars: GPU-hours x resources.gpu_types.*.usd_per_gpu_hour of each request's GPU "
    "type (defaults: AWS on-demand list prices, dated in the config's price_basis); the "
    "hours are at H100 throughputs whatever the type, so a slower GPU's are low",
    "prompt reads (score, self-preference labels): a forward pass is half the FLOPs of the "
    "LoRA step measured above, so twice its tokens/s",
    f"lengths: {MEAN_PROMPT_TOKENS} prompt tokens per request, answers of --mean-output-tokens "
    f"(capped by max_tokens), {MEAN_JUDGE_TOKENS} tokens per judge answer (assumptions)",
]


def params_b(model: str, layout: EngineSection | None = None) -> float | None:
    """Parameters in billions: the config's `params_b`, a local folder's safetensors, or
    the size in the model's name ("Llama-3.1-70B-Instruct" -> 70)."""
    if layout is not None and layout.params_b:
        return layout.params_b
    folder = Path(model).expanduser()
    if folder.is_dir():
        files = list(folder.glob("*.safetensors"))
        if files:  # the dtype of the file is unknown here: bytes / 2 is bf16's count
            return sum(f.stat().st_size for f in files) / BF16_BYTES / 1e9
    m = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z])", model.rsplit("/", 1)[-1])
    return float(m.group(1)) if m else None


def weights_gib(billions: float | None) -> float | None:
    return None if billions is None else billions * 1e9 * BF16_BYTES / GIB


@dataclass
class Counts:
    """Rows the stages will see, and where the numbers come from."""

    train_rows: int | None
    test_rows: int | None
    source: str


def row_counts(cfg: ExperimentConfig) -> Counts:
    root = cfg.run.local_root()
    if (root / TEST_PATH).exists():
        import polars as pl

        parts = [root / part_path(k) for k in range(1, cfg.split.num_parts + 1)]
        if all(p.exists() for p in parts):
            train = sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in parts)
            test = pl.scan_parquet(root / TEST_PATH).select(pl.len()).collect().item()
            return Counts(train, test, f"the split in {root}")
    n = cfg.dataset.max_rows or KNOWN_ROWS.get(cfg.dataset.path)
    if n is None:
        return Counts(None, None, f"unknown: {cfg.dataset.path!r} has no known size; run "
                      "`synth-ray split` first or set dataset.max_rows")
    test = math.ceil(n * cfg.split.test_fraction)
    return Counts(n - test, test, f"{n:,} rows ({cfg.dataset.path}), split "
                  f"{cfg.split.test_fraction:g} test")


def safety_items(cfg: ExperimentConfig) -> int:
    judge = cfg.judge
    path = Path(judge.safety_prompts).expanduser()
    if path.is_file() and path.suffix == ".jsonl":
        n = sum(1 for line in path.open() if line.strip())
    else:
        n = REFUSALBENCH_PROMPTS
    n = min(n, judge.max_safety_prompts or n)
    return n * (1 + judge.jailbreaks_per_prompt)


def engine_row(cfg: ExperimentConfig, name: str, model: str, layout: EngineSection,
               problems: list[str], key: str) -> dict[str, Any]:
    """One engine: its layout, its bf16 weights and the GPU memory it is given."""
    device = engine_device(cfg)
    gpu = device == "cuda"
    tp = layout.tensor_parallel_size if gpu else 1
    pp = layout.pipeline_parallel_size if gpu else 1
    b = params_b(model, layout)
    weights = weights_gib(b)
    share = layout.gpu_memory_utilization or VLLM_MEMORY_SHARE
    kind = gpu_type(cfg.resources, layout.accelerator_type)
    memory = tp * pp * kind.memory_gib * share if gpu else None
    fits = None
    if gpu and weights is not None:
        fits = weights <= WEIGHTS_SHARE * memory
        if not fits:
            problems.append(f"{key}: {model} needs ~{weights:.0f} GiB of bf16 weights; "
                            f"tensor x pipeline parallel {tp} x {pp} on "
                            f"{kind.memory_gib:g} GiB {kind.name or ''} GPUs gives "
                            f"{memory:.0f} GiB "
                            f"to vLLM (weights may use {WEIGHTS_SHARE:.0%}): raise "
                            f"{key}.tensor_parallel_size")
    elif gpu:
        problems.append(f"{key}: no parameter count for {model!r}; set {key}.params_b")
    placement = engine_placement(cfg.resources, tp, pp, layout.accelerator_type, gpu)
    return {"name": name, "model": model, "device": device, "tensor_parallel_size": tp,
            "pipeline_parallel_size": pp, "replicas": layout.replicas,
            "weights_gib": None if weights is None else round(weights, 1),
            "gpu_memory_gib": None if memory is None else round(memory, 1), "fits": fits,
            "bundles": placement["bundles"], "strategy": placement["strategy"],
            "accelerator_type": placement["accelerator_type"],
            "usd_per_gpu_hour": kind.usd_per_gpu_hour if gpu else None, "params_b": b}


def _api(http, input_tokens: float, output_tokens: float) -> dict[str, Any]:
    """A hosted endpoint's tokens, and their price where the config gives one."""
    usd = http.usd(input_tokens, output_tokens) if http else None
    return {"input_tokens": round(input_tokens), "output_tokens": round(output_tokens),
            "usd": None if usd is None else round(usd, 2)}


def decode_hours(tokens: float, billions: float | None) -> float:
    if not billions:
        return 0.0
    return tokens / (DECODE_8B_TOKENS_PER_S * 8.0 / billions) / 3600.0


def stage_generate(cfg: ExperimentConfig, counts: Counts, out_tokens: float,
                   problems: list[str]) -> dict[str, Any]:
    engines, requests, tokens, hours, api = [], 0, 0.0, 0.0, {}
    per_part = counts.train_rows / cfg.split.num_parts if counts.train_rows else None
    writers = summary_sources(cfg)
    articles = cfg.judge.max_articles or 100
    answering = parts_per_source(cfg)
    for i, s in enumerate(cfg.sources):
        parts = answering.get(s.name, [])
        n = round(per_part * len(parts)) if per_part is not None else 0
        n_sum = articles if s.name in writers else 0
        if parts or n_sum:  # the shared probe set (generation.probe_prompts), same sampling
            n += cfg.generation.probe_prompts
        t = n * min(out_tokens, cfg.generation.sampling.max_tokens) \
            + n_sum * cfg.judge.summary_max_tokens
        requests, tokens = requests + n + n_sum, tokens + t
        if s.backend == "http":
            api[s.name] = _api(s.http, (n + n_sum) * MEAN_PROMPT_TOKENS, t)
            continue
        row = engine_row(cfg, f"source {s.name}", s.model, s, problems, f"sources.{i}")
        # per-GPU throughput: the hours count every GPU of a tensor-parallel replica
        row["gpu_hours"] = round(decode_hours(t, row["params_b"]), 2) \
            if row["device"] == "cuda" else 0.0
        hours += row["gpu_hours"]
        engines.append(row)
    return {"stage": "generate", "engines": engines, "training": [], "requests": requests,
            "output_tokens": round(tokens), "gpu_hours": round(hours, 2), "api_tokens": api}


def stage_train(cfg: ExperimentConfig, counts: Counts, out_tokens: float,
                problems: list[str]) -> dict[str, Any]:
    runs, hours = [], 0.0
    n_adapters = len(adapter_grid(cfg))
    for i, t in enumerate(cfg.targets):
        kind = gpu_type(cfg.resources, t.accelerator_type)
        scaling = train_scaling(cfg, t)
        b = params_b(t.model, t.engine)
        weights = weights_gib(b)
        zero = 3 if t.strategy == "deepspeed" else 0
        per_gpu = None if weights is None else weights / (t.num_workers if zero else 1)
        nodes = math.ceil(t.num_workers / kind.gpus_per_node) if t.use_gpu else 1
        fits = None
        if t.use_gpu and per_gpu is not None:
            fits = per_gpu <= TRAIN_MEMORY_SHARE * kind.memory_gib
            if not fits:
                problems.append(f"targets.{i}: ~{per_gpu:.0f} GiB of bf16 weights per GPU "
                                f"({'ZeRO-3 over ' + str(t.num_workers) if zero else 'DDP: whole'}"
                                f") on {kind.memory_gib:g} GiB {kind.name or ''} GPUs; use "
                                "strategy: deepspeed with more workers")
        # a condition's training set: the train rows less its validation share
        examples = (counts.train_rows or 0) * (1 - cfg.split.validation_fraction)
        tokens = n_adapters * cfg.training.epochs * examples * (MEAN_PROMPT_TOKENS + min(
            out_tokens, cfg.training.max_length))
        compute = (tokens / (TRAIN_8B_TOKENS_PER_S * 8.0 / b) / 3600.0) \
            if (t.use_gpu and b) else 0.0
        micro_steps = n_adapters * cfg.training.epochs * examples / (
            t.per_device_batch_size * t.num_workers)
        gather = zero3_gather_hours(t, kind, weights, nodes, micro_steps) if t.use_gpu else 0.0
        h = compute + gather * t.num_workers  # every GPU waits for the gathers
        hours += h
        runs.append({"target": t.name, "workers": t.num_workers,
                     "gpus_per_worker": 1 if t.use_gpu else 0,
                     "cpus_per_worker": t.cpus_per_worker, "zero_stage": zero, "nodes": nodes,
                     "accelerator_type": scaling.get("accelerator_type"),
                     "strategy": scaling["placement_strategy"],
                     "weights_per_gpu_gib": None if per_gpu is None else round(per_gpu, 1),
                     "fits": fits, "adapters": n_adapters, "tokens": round(tokens),
                     "gpu_hours": round(h, 2),
                     "zero3_gather_gpu_hours": round(gather * t.num_workers, 2),
                     "node_gbps": kind.node_gbps if gather else None,
                     "usd_per_gpu_hour": kind.usd_per_gpu_hour if t.use_gpu else None})
    return {"stage": "train", "engines": [], "training": runs, "requests": 0,
            "output_tokens": 0, "gpu_hours": round(hours, 2), "api_tokens": {}}


def stage_target_engines(cfg: ExperimentConfig, stage: str, counts: Counts, out_tokens: float,
                         problems: list[str]) -> dict[str, Any]:
    """respond, score and the judge's self-preference labels: a target's LoRA engine."""
    engines, requests, tokens, hours = [], 0, 0.0, 0.0
    served = len(adapter_grid(cfg)) + 1  # + the vanilla target
    prompts = (counts.test_rows or 0) + safety_items(cfg)
    answer = min(out_tokens, cfg.evaluation.sampling.max_tokens)
    for i, t in enumerate(cfg.targets):
        if stage == "judge" and not t.self_source:
            continue
        row = engine_row(cfg, f"target {t.name}", t.model, t.engine, problems,
                         f"targets.{i}.engine")
        if stage == "respond":
            n, tk = served * prompts, served * prompts * answer
            h = decode_hours(tk, row["params_b"])
        elif stage == "score":  # a prompt read of every response
            n, tk = served * prompts, served * prompts * (MEAN_PROMPT_TOKENS + answer)
            h = decode_hours(tk, row["params_b"]) * DECODE_8B_TOKENS_PER_S / (
                2 * TRAIN_8B_TOKENS_PER_S)
        else:  # judge: pairs of summaries, both orders, each adapter
            writers = len(summary_sources(cfg)) + 1
            pairs = (cfg.judge.max_articles or 100) * writers * (writers - 1)
            n = served * pairs
            tk = n * (MEAN_PROMPT_TOKENS + 2 * cfg.judge.summary_max_tokens)
            h = decode_hours(tk, row["params_b"]) * DECODE_8B_TOKENS_PER_S / (
                2 * TRAIN_8B_TOKENS_PER_S)
        row["gpu_hours"] = round(h, 2) if row["device"] == "cuda" else 0.0
        requests, tokens, hours = requests + n, tokens + tk, hours + row["gpu_hours"]
        engines.append(row)
    return {"stage": stage, "engines": engines, "training": [], "requests": requests,
            "output_tokens": round(tokens) if stage == "respond" else 0,
            "gpu_hours": round(hours, 2), "api_tokens": {}}


def stage_judge(cfg: ExperimentConfig, counts: Counts, out_tokens: float,
                problems: list[str]) -> dict[str, Any]:
    judge = cfg.judge
    served = len(adapter_grid(cfg)) + 1
    n = round(served * safety_items(cfg) * 2 * (1 + judge.repeat_fraction)) * len(cfg.targets)
    tokens = n * min(MEAN_JUDGE_TOKENS, judge.sampling.max_tokens)
    labels = stage_target_engines(cfg, "judge", counts, out_tokens, problems)
    out = {**labels, "requests": labels["requests"] + n, "output_tokens": tokens}
    if judge.backend == "http":
        out["api_tokens"] = {"judge": _api(judge.http, n * (MEAN_PROMPT_TOKENS + out_tokens),
                                           tokens)}
        return out
    row = engine_row(cfg, "judge", judge.model, judge, problems, "judge")
    row["gpu_hours"] = round(decode_hours(tokens, row["params_b"]), 2) \
        if row["device"] == "cuda" else 0.0
    out["engines"] = [row, *labels["engines"]]
    out["gpu_hours"] = round(labels["gpu_hours"] + row["gpu_hours"], 2)
    return out


def make_plan(cfg: ExperimentConfig, mean_output_tokens: float = 350.0) -> dict[str, Any]:
    problems: list[str] = []
    counts = row_counts(cfg)
    stages = [stage_generate(cfg, counts, mean_output_tokens, problems),
              stage_train(cfg, counts, mean_output_tokens, problems),
              stage_target_engines(cfg, "respond", counts, mean_output_tokens, problems),
              stage_target_engines(cfg, "score", counts, mean_output_tokens, problems),
              stage_judge(cfg, counts, mean_output_tokens, problems)]
    # placement on the cluster the config describes, as one that adds nodes of each
    # request's GPU type (`grow`: today's nodes do not count; how many nodes a fixed cluster
    # has, and of which type, is checked against Ray when a stage starts)
    problems += resource_problems(cfg, [s["stage"] for s in stages], [], grow=True)
    api: dict[str, dict[str, float]] = {}
    for s in stages:
        for k, v in s["api_tokens"].items():
            api[k] = v
    problems = list(dict.fromkeys(problems))  # respond, score, judge share a target engine
    for st in stages:
        st["gpu_usd"], st["unpriced_gpu_hours"] = gpu_usd(st["engines"] + st["training"])
    priced = [st["gpu_usd"] for st in stages if st["gpu_usd"] is not None]
    return {"config": cfg.run.name, "device": engine_device(cfg),
            "gpu_usd": round(sum(priced), 2) if priced else None,
            "gpu_prices": {k: {"usd_per_gpu_hour": t.usd_per_gpu_hour,
                               "basis": t.price_basis}
                           for k, t in cfg.resources.gpu_types.items()},
            "unpriced_gpu_hours": round(sum(st["unpriced_gpu_hours"] for st in stages), 2),
            "rows": {"train": counts.train_rows, "test": counts.test_rows,
                     "from": counts.source},
            "stages": stages, "gpu_hours": round(sum(s["gpu_hours"] for s in stages), 1),
            "api_tokens": api, "api_usd": _total_usd(api), "basis": BASIS,
            "problems": problems}


def _total_usd(api: dict[str, dict[str, Any]]) -> float | None:
    """Dollars over the endpoints that have a price (None: none has)."""
    priced = [v["usd"] for v in api.values() if v["usd"] is not None]
    return round(sum(priced), 2) if priced else None


def summary_lines(plan: dict[str, Any]) -> list[str]:
    """The plan in a few lines, for the terminal (and `run` before it starts)."""
    out = [f"plan for {plan['config']!r}: vLLM engines on {plan['device']}; rows: "
           f"{plan['rows']['from']}"]
    for s in plan["stages"]:
        parts = [f"{e['name']} {e['tensor_parallel_size']}x{e['pipeline_parallel_size']}"
                 f"x{e['replicas']}"
                 + (f" {e['accelerator_type']}" if e["accelerator_type"] else "")
                 + (f" {e['weights_gib']:.0f}/{e['gpu_memory_gib']:.0f} GiB"
                    if e["gpu_memory_gib"] and e["weights_gib"] else "")
                 + ("" if e["fits"] is not False else " DOES NOT FIT")
                 for e in s["engines"]]
        parts += [f"{t['target']}: {t['workers']} worker(s) x "
                  + (f"{t['gpus_per_worker']} {t['accelerator_type'] or 'any'} GPU"
                     if t["gpus_per_worker"] else f"{t['cpus_per_worker']} CPU")
                  + f", ZeRO-{t['zero_stage']}, {t['nodes']} "
                  f"node(s) {t['strategy']}" + (
                      f", of which ~{t['zero3_gather_gpu_hours']:g} GPU-h gathering weights "
                      f"over {t['node_gbps']:g} Gbit/s" if t["zero3_gather_gpu_hours"] else "")
                  for t in s["training"]]
        if parts or s["requests"]:
            out.append(f"  {s['stage']}: {s['requests']:,} requests; "
                       f"{'; '.join(parts) or 'no engines'}; ~{s['gpu_hours']:g} GPU-h")
    usd = ("" if plan["gpu_usd"] is None else f", ~${plan['gpu_usd']:,.0f} at the GPU "
           "types' prices (resources.gpu_types)")
    if plan["unpriced_gpu_hours"]:
        usd += (f"; {plan['unpriced_gpu_hours']:g} GPU-h on a GPU type with no price "
                "(resources.accelerator_type / usd_per_gpu_hour)")
    out.append(f"  expected GPU-hours: ~{plan['gpu_hours']:g} (H100 throughputs, "
               f"docs/benchmarks.md){usd}")
    if plan["api_tokens"]:
        total = sum(v["input_tokens"] + v["output_tokens"] for v in plan["api_tokens"].values())
        unpriced = [k for k, v in plan["api_tokens"].items() if v["usd"] is None]
        usd = "" if plan["api_usd"] is None else f", ~${plan['api_usd']:,.0f}"
        out.append(f"  API tokens: ~{total / 1e6:.1f}M over {len(plan['api_tokens'])} "
                   f"endpoint(s){usd}" + (f" (no price set for {', '.join(unpriced)}: "
                                          "sources.*.http.usd_per_million_*)" if unpriced
                                          else ""))
    out += [f"  PROBLEM: {p}" for p in plan["problems"]]
    # what must be in place where the run runs (runtime/readiness.py): not the cluster's
    # fit, so listed without failing
    out += [f"  BEFORE A RUN: {p}" for p in plan.get("before_a_run", [])]
    if plan.get("node_env"):
        out.append("  on every node (environment, never the config): " + ", ".join(
            f"{k} ({v})" for k, v in plan["node_env"].items()))
    return out


def to_json(plan: dict[str, Any]) -> str:
    return json.dumps(plan, indent=2)
