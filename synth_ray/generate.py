"""Stage `generate`: every source answers the instructions of its parts.

Per source, one streaming Ray Data pipeline (`engines`): requests -> chat template -> vLLM
engine replicas (or an OpenAI-compatible HTTP API) -> normalised rows. The driver writes a
shard every `generation.shard_rows` rows (`answering`), so a crash loses at most the rows in
flight; a rerun sends only the requests without an answer (`generation_store`).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import polars as pl

from synth_ray.answering import answer
from synth_ray.cluster import ensure_ray
from synth_ray.config import SourceSection
from synth_ray.engines import EngineSpec, api_key, http_processor, vllm_processor
from synth_ray.generation_store import GenerationStore, build_requests, parts_per_source
from synth_ray.pipeline import Context, StageOutput
from synth_ray.rundir import hash_file
from synth_ray.split_stage import part_path

log = logging.getLogger("synth_ray")


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
