"""Stage `generate`: every source answers the instructions of its parts, and the sources of
each bracket holding a target's own family (`targets.*.self_source`) summarise the news
articles (`judge.articles`) for the self-preference study, in the same engine pass.

Per source, one streaming Ray Data pipeline (`engines/generation.py`): requests -> chat
template -> vLLM engine replicas (or an OpenAI-compatible HTTP API) -> normalised rows;
sources whose engines would be built alike (one model under two system-turn styles, say)
share one pipeline and one engine start (`engine_groups`), each keeping its own rows. The
driver writes a shard every `generation.shard_rows` rows (`answering`), so a crash loses at
most the rows in flight; a rerun sends only the requests without an answer
(`engines/store.py`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl

from synth_ray.config import ExperimentConfig
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
from synth_ray.engines.generation import engine_groups, generate_groups, group_spec, work_plan
from synth_ray.engines.http import api_key
from synth_ray.engines.layout import EngineRun, engine_record
from synth_ray.runtime.cluster import check_resources, ensure_ray
from synth_ray.runtime.pipeline import Context, StageOutput
from synth_ray.runtime.rundir import hash_file, write_parquet

log = logging.getLogger("synth_ray")


def load_articles_once(ctx: Context) -> pl.DataFrame:
    judge = ctx.cfg.judge
    articles, rejects = load_articles(judge.articles, judge.max_articles, judge.article_sample)
    write_parquet(articles, ctx.run.path(ARTICLES))
    write_parquet(rejects, ctx.run.path(ARTICLE_REJECTS))
    if rejects.height:
        log.warning("[generate] %d article row(s) quarantined in %s", rejects.height,
                    ARTICLE_REJECTS)
    if judge.max_articles and articles.height < judge.max_articles:  # no sample drawn: all of them
        log.warning("[generate] %s holds %d usable article(s), fewer than judge.max_articles "
                    "= %d: all of them are summarised%s", judge.articles, articles.height,
                    judge.max_articles, " (no authors' sample drawn)"
                    if judge.article_sample == "authors" else "")
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


def inputs(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    plan = work_plan(cfg)
    parts = sorted({k for ks in plan.values() for k in ks})
    return {
        "splits": {k: hash_file(ctx.run.path(part_path(k))) for k in parts},
        "plan": plan,
        "summaries": {"sources": summary_sources(cfg), "articles": source_hash(cfg.judge.articles),
                      "max_articles": cfg.judge.max_articles,
                      **({"sample": "authors"} if cfg.judge.article_sample == "authors"
                         else {}),
                      "max_tokens": cfg.judge.summary_max_tokens,
                      # the authors' summarising prompt comes with their ranking design
                      **({"prompt": "authors"} if cfg.judge.preference_design == "authors"
                         else {})},
        "sources": [s.hashed() for s in ctx.cfg.sources],
        "generation": ctx.cfg.generation.hashed(),
        **({"probe": hash_file(ctx.run.path(TEST_PATH))}
           if ctx.cfg.generation.probe_prompts else {}),
    }


def preflight(cfg: ExperimentConfig) -> None:
    """Each source's API key variable set, each local model path there: checked before Ray
    starts (`preflight.checks_before_ray`) and again by the stage itself."""
    for name in work_plan(cfg):
        src = cfg.source(name)
        if src.backend == "http":
            api_key(src.http, f"source {name!r}")
        elif src.model.startswith(("/", ".", "~")):
            if not Path(src.model).expanduser().exists():
                raise FileNotFoundError(f"source {name!r}: model path {src.model} not found")


def run(ctx: Context) -> StageOutput:
    cfg = ctx.cfg
    plan = work_plan(cfg)
    preflight(cfg)  # fail on a missing key or model before any engine starts
    writers = summary_sources(cfg)
    articles = load_articles_once(ctx) if writers else None
    probe = probe_set(ctx)
    ensure_ray(cfg.resources)
    check_resources(cfg, "generate")
    groups = engine_groups(cfg, list(plan))
    summaries = generate_groups(ctx, plan, groups, articles, probe)
    outputs = [generation_path(n) for n, ks in plan.items() if ks]
    outputs += [summary_path(n) for n in writers] + ([ARTICLES, ARTICLE_REJECTS] if writers else [])
    outputs += ([probe_path(n) for n in plan] + [PROBE_SET]) if probe is not None else []
    rows = {n: s["rows"] for n, s in summaries.items()}
    total_err = sum(s["status"].get("error", 0) for s in summaries.values())
    return StageOutput(
        outputs, rows,
        f"{len(plan)} source(s), {sum(rows.values())} rows, {total_err} error rows",
        {"sources": summaries,
         "engines": [engine_record(EngineRun.of(cfg), group_spec(cfg, g)) for g in groups
                     if cfg.source(g[0]).backend == "vllm"]},
    )
