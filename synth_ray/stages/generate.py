"""Stage `generate`: every source answers the instructions of its parts, and the sources of
each bracket holding a target's own family (`targets.*.self_source`) summarise the news
articles (`judge.articles`) for the self-preference study, in the same engine pass.

Per source, one streaming Ray Data pipeline (`engines`): requests -> chat template -> vLLM
engine replicas (or an OpenAI-compatible HTTP API) -> normalised rows. The driver writes a
shard every `generation.shard_rows` rows (`answering`), so a crash loses at most the rows in
flight; a rerun sends only the requests without an answer (`engines/store.py`).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import polars as pl

from synth_ray.core.cluster import check_resources, ensure_ray
from synth_ray.core.config import ExperimentConfig, SourceSection
from synth_ray.core.pipeline import Context, StageOutput
from synth_ray.core.rundir import hash_file, write_parquet
from synth_ray.data.prompt_sets import load_articles, source_hash
from synth_ray.design import (
    ARTICLE_REJECTS,
    ARTICLES,
    PROBE_SET,
    TEST_PATH,
    generation_path,
    part_path,
    probe_path,
    summary_path,
    summary_sources,
)
from synth_ray.engines.answering import EngineWindow, answer_many
from synth_ray.engines.http import api_key, http_processor
from synth_ray.engines.processors import EngineSpec, engine_record, vllm_processor
from synth_ray.engines.store import (
    REQUEST_SCHEMA,
    GenerationStore,
    build_requests,
    parts_per_source,
    request_row,
)
from synth_ray.prompts import summarise_messages

log = logging.getLogger("synth_ray")


def summary_requests(cfg: ExperimentConfig, source: SourceSection,
                     articles: pl.DataFrame) -> pl.DataFrame:
    gen = cfg.generation.sampling
    sampling = {**gen.model_dump(), "max_tokens": cfg.judge.summary_max_tokens,
                "min_tokens": min(gen.min_tokens, cfg.judge.summary_max_tokens)}
    rows = [request_row(a["id"], 0, source.name, source.model, source.model, source.revision,
                        source.bracket, source.backend, sampling,
                        summarise_messages(a["article"], cfg.generation.system_prompt,
                                           source.system_turn, cfg.judge.preference_design))
            for a in articles.iter_rows(named=True)]
    return pl.DataFrame(rows, schema=REQUEST_SCHEMA)


def load_articles_once(ctx: Context) -> pl.DataFrame:
    j = ctx.cfg.judge
    articles, rejects = load_articles(j.articles, j.max_articles)
    write_parquet(articles, ctx.run.path(ARTICLES))
    write_parquet(rejects, ctx.run.path(ARTICLE_REJECTS))
    if rejects.height:
        log.warning("[generate] %d article row(s) quarantined in %s", rejects.height,
                    ARTICLE_REJECTS)
    return articles


def probe_set(ctx: Context) -> pl.DataFrame | None:
    """The test instructions every source answers (`generation.probe_prompts`, a sample seeded
    by split.seed, in id order), written once; None when off."""
    n = ctx.cfg.generation.probe_prompts
    if not n:
        return None
    test = pl.read_parquet(ctx.run.path(TEST_PATH))
    probe = test.sample(n=min(n, test.height), seed=ctx.cfg.split.seed).sort("id")
    write_parquet(probe, ctx.run.path(PROBE_SET))
    return probe


def generate_source(ctx: Context, source: SourceSection, parts: list[int],
                    articles: pl.DataFrame | None,
                    probe: pl.DataFrame | None = None) -> dict[str, Any]:
    cfg = ctx.cfg
    frames = {k: pl.read_parquet(ctx.run.path(part_path(k))) for k in parts}
    jobs = []
    if parts:
        jobs.append((build_requests(cfg, source, frames),
                     GenerationStore(ctx.run.path(generation_path(source.name)).parent,
                                     source.name)))
    if probe is not None:  # part 0: the shared probe set (before the summaries: finals[-1])
        jobs.append((build_requests(cfg, source, {0: probe}),
                     GenerationStore(ctx.run.path(probe_path(source.name)).parent,
                                     source.name)))
    if articles is not None:
        jobs.append((summary_requests(cfg, source, articles),
                     GenerationStore(ctx.run.path(summary_path(source.name)).parent,
                                     source.name)))

    def make():
        if source.backend == "http":
            return http_processor(cfg, source.http, source.model, cfg.generation.sampling,
                                  f"source {source.name!r}")
        return vllm_processor(cfg, EngineSpec.of_source(source))

    label = f"source {source.name!r} ({source.backend}, {source.model})"
    window = None if source.backend == "http" else EngineWindow.of(
        cfg, EngineSpec.of_source(source))
    finals, summary = answer_many(ctx, "generate", label, jobs, make, window)
    # rows and tokens cover both kinds of request; say how many were summaries
    summary["summaries"] = finals[-1].height if articles is not None else 0
    summary["probe"] = probe.height if probe is not None else 0
    return summary


def _generate_parallel(ctx: Context, plan: dict[str, list[int]],
                       articles: pl.DataFrame | None, probe: pl.DataFrame | None
                       ) -> dict[str, dict[str, Any]]:
    """Several sources at once: each pipeline waits for resources, Ray places the engines."""
    summaries: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=ctx.cfg.generation.parallel_sources) as pool:
        futures = {pool.submit(generate_source, ctx, ctx.cfg.source(n), ks,
                               articles if n in summary_sources(ctx.cfg) else None, probe): n
                   for n, ks in plan.items()}
        try:
            for f in as_completed(futures):
                summaries[futures[f]] = f.result()
        except BaseException:
            for f in futures:  # sources not started yet are not started at all
                f.cancel()
            raise
    return {n: summaries[n] for n in plan}


def work_plan(cfg: ExperimentConfig) -> dict[str, list[int]]:
    """Source -> training parts it answers; a source that only summarises has none."""
    plan = parts_per_source(cfg)
    return {s.name: plan.get(s.name, []) for s in cfg.sources
            if s.name in plan or s.name in summary_sources(cfg)}


def inputs(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    plan = work_plan(cfg)
    parts = sorted({k for ks in plan.values() for k in ks})
    return {
        "splits": {k: hash_file(ctx.run.path(part_path(k))) for k in parts},
        "plan": plan,
        "summaries": {"sources": summary_sources(cfg), "articles": source_hash(cfg.judge.articles),
                      "max_articles": cfg.judge.max_articles,
                      "max_tokens": cfg.judge.summary_max_tokens,
                      # the authors' summarising prompt comes with their ranking design
                      **({"prompt": "authors"} if cfg.judge.preference_design == "authors"
                         else {})},
        "sources": [s.hashed() for s in ctx.cfg.sources],
        "generation": ctx.cfg.generation.hashed(),
        **({"probe": hash_file(ctx.run.path(TEST_PATH))}
           if ctx.cfg.generation.probe_prompts else {}),
    }


def run(ctx: Context) -> StageOutput:
    cfg = ctx.cfg
    plan = work_plan(cfg)
    for name in plan:  # fail on a missing key or model before any engine starts
        src = cfg.source(name)
        if src.backend == "http":
            api_key(src.http, f"source {name!r}")
        elif src.model.startswith(("/", ".", "~")):
            if not Path(src.model).expanduser().exists():
                raise FileNotFoundError(f"source {name!r}: model path {src.model} not found")
    writers = summary_sources(cfg)
    articles = load_articles_once(ctx) if writers else None
    probe = probe_set(ctx)
    ensure_ray(cfg.resources)
    check_resources(cfg, "generate")
    if cfg.generation.parallel_sources == 1:
        summaries = {n: generate_source(ctx, cfg.source(n), ks,
                                        articles if n in writers else None, probe)
                     for n, ks in plan.items()}
    else:
        summaries = _generate_parallel(ctx, plan, articles, probe)
    outputs = [generation_path(n) for n, ks in plan.items() if ks]
    outputs += [summary_path(n) for n in writers] + ([ARTICLES, ARTICLE_REJECTS] if writers else [])
    outputs += ([probe_path(n) for n in plan] + [PROBE_SET]) if probe is not None else []
    rows = {n: s["rows"] for n, s in summaries.items()}
    total_err = sum(s["status"].get("error", 0) for s in summaries.values())
    return StageOutput(
        outputs, rows,
        f"{len(plan)} source(s), {sum(rows.values())} rows, {total_err} error rows",
        {"sources": summaries,
         "engines": [engine_record(cfg, EngineSpec.of_source(cfg.source(n))) for n in plan
                     if cfg.source(n).backend == "vllm"]},
    )
