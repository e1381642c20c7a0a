"""Stage `generate`: every source answers the instructions of its parts, and the sources of
each bracket holding a target's own family (`targets.*.self_source`) summarise the news
articles (`judge.articles`) for the self-preference study, in the same engine pass.

Per source, one streaming Ray Data pipeline (`engines`): requests -> chat template -> vLLM
engine replicas (or an OpenAI-compatible HTTP API) -> normalised rows; sources whose engines
would be built alike (one model under two system-turn styles, say) share one pipeline and
one engine start (`engine_groups`), each keeping its own rows. The driver writes a
shard every `generation.shard_rows` rows (`answering`), so a crash loses at most the rows in
flight; a rerun sends only the requests without an answer (`engines/store.py`).
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import polars as pl

from synth_ray.config import ExperimentConfig, SourceSection
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
from synth_ray.runtime.cluster import check_resources, ensure_ray
from synth_ray.runtime.pipeline import Context, StageOutput
from synth_ray.runtime.rundir import hash_file, write_parquet

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
    articles, rejects = load_articles(j.articles, j.max_articles, j.article_sample)
    write_parquet(articles, ctx.run.path(ARTICLES))
    write_parquet(rejects, ctx.run.path(ARTICLE_REJECTS))
    if rejects.height:
        log.warning("[generate] %d article row(s) quarantined in %s", rejects.height,
                    ARTICLE_REJECTS)
    if j.max_articles and articles.height < j.max_articles:  # no sample drawn: all of them
        log.warning("[generate] %s holds %d usable article(s), fewer than judge.max_articles "
                    "= %d: all of them are summarised%s", j.articles, articles.height,
                    j.max_articles, " (no authors' sample drawn)"
                    if j.article_sample == "authors" else "")
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


def _source_jobs(ctx: Context, source: SourceSection, parts: list[int],
                 articles: pl.DataFrame | None, probe: pl.DataFrame | None
                 ) -> list[tuple[str, pl.DataFrame, GenerationStore]]:
    """(kind, requests, store) of one source: its parts, the probe set, the summaries."""
    cfg = ctx.cfg
    jobs = []
    if parts:
        frames = {k: pl.read_parquet(ctx.run.path(part_path(k))) for k in parts}
        jobs.append(("parts", build_requests(cfg, source, frames),
                     GenerationStore(ctx.run.path(generation_path(source.name)).parent,
                                     source.name)))
    if probe is not None:  # part 0: the shared probe set
        jobs.append(("probe", build_requests(cfg, source, {0: probe}),
                     GenerationStore(ctx.run.path(probe_path(source.name)).parent,
                                     source.name)))
    if articles is not None:
        jobs.append(("summaries", summary_requests(cfg, source, articles),
                     GenerationStore(ctx.run.path(summary_path(source.name)).parent,
                                     source.name)))
    return jobs


def engine_groups(cfg: ExperimentConfig, names: list[str]) -> list[list[str]]:
    """Sources one engine serves together: vLLM sources whose engines would be built alike
    (model, revision, layout, engine arguments; the sampling is the run's for every source),
    e.g. one model asked with and without a system turn. Their requests differ (each
    source's own messages and keys), so each keeps its own rows; the engine starts once. An
    HTTP source is a group of its own."""
    groups: dict[str, list[str]] = {}
    for n in names:
        s = cfg.source(n)
        key = f"http:{n}" if s.backend == "http" else json.dumps(
            asdict(replace(EngineSpec.of_source(s), name="")), sort_keys=True, default=str)
        groups.setdefault(key, []).append(n)
    return list(groups.values())


def _group_spec(cfg: ExperimentConfig, names: list[str]) -> EngineSpec:
    return replace(EngineSpec.of_source(cfg.source(names[0])),
                   name="source " + " + ".join(names))


def generate_group(ctx: Context, names: list[str], plan: dict[str, list[int]],
                   articles: pl.DataFrame | None,
                   probe: pl.DataFrame | None = None) -> dict[str, dict[str, Any]]:
    """One pipeline (one engine start) for a group of sources (`engine_groups`); each
    source's rows go to its own stores. Returns each source's summary."""
    cfg = ctx.cfg
    writers = summary_sources(cfg)
    owned = [(n, *job) for n in names for job in _source_jobs(
        ctx, cfg.source(n), plan[n], articles if n in writers else None, probe)]
    first = cfg.source(names[0])

    def make():
        if first.backend == "http":
            return http_processor(cfg, first.http, first.model, cfg.generation.sampling,
                                  f"source {first.name!r}")
        return vllm_processor(cfg, _group_spec(cfg, names))

    who = f"source {first.name!r}" if len(names) == 1 else \
        f"sources {', '.join(repr(n) for n in names)} (one engine)"
    label = f"{who} ({first.backend}, {first.model})"
    window = None if first.backend == "http" else EngineWindow.of(
        cfg, EngineSpec.of_source(first))
    finals, whole = answer_many(ctx, "generate", label, [(r, st) for _, _, r, st in owned],
                                make, window)
    out = {}
    for n in names:
        mine = {kind: f for (o, kind, _, _), f in zip(owned, finals) if o == n}
        rows = pl.concat(list(mine.values()))  # work_plan: every source has a job
        # rows and tokens are the source's own; the pipeline's timing and what it sent
        # (sent, resent, wall_s, tokens_per_s) are the group's
        summary = {**whole, "rows": rows.height,
                   "status": dict(rows.group_by("status").len().iter_rows()),
                   "prompt_tokens": int(rows["prompt_tokens"].sum()),
                   "completion_tokens": int(rows["completion_tokens"].sum()),
                   "summaries": mine["summaries"].height if "summaries" in mine else 0,
                   "probe": mine["probe"].height if "probe" in mine else 0}
        if len(names) > 1:
            summary["engine_shared_with"] = [m for m in names if m != n]
        out[n] = summary
    return out


def _generate_parallel(ctx: Context, plan: dict[str, list[int]], groups: list[list[str]],
                       articles: pl.DataFrame | None, probe: pl.DataFrame | None
                       ) -> dict[str, dict[str, Any]]:
    """Several engine groups at once: each pipeline waits for resources, Ray places the
    engines."""
    summaries: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=ctx.cfg.generation.parallel_sources) as pool:
        futures = [pool.submit(generate_group, ctx, g, plan, articles, probe) for g in groups]
        try:
            for f in as_completed(futures):
                summaries.update(f.result())
        except BaseException:
            for f in futures:  # groups not started yet are not started at all
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
    if cfg.generation.parallel_sources == 1:
        summaries = {n: s for g in groups for n, s in
                     generate_group(ctx, g, plan, articles, probe).items()}
        summaries = {n: summaries[n] for n in plan}
    else:
        summaries = _generate_parallel(ctx, plan, groups, articles, probe)
    outputs = [generation_path(n) for n, ks in plan.items() if ks]
    outputs += [summary_path(n) for n in writers] + ([ARTICLES, ARTICLE_REJECTS] if writers else [])
    outputs += ([probe_path(n) for n in plan] + [PROBE_SET]) if probe is not None else []
    rows = {n: s["rows"] for n, s in summaries.items()}
    total_err = sum(s["status"].get("error", 0) for s in summaries.values())
    return StageOutput(
        outputs, rows,
        f"{len(plan)} source(s), {sum(rows.values())} rows, {total_err} error rows",
        {"sources": summaries,
         "engines": [engine_record(cfg, _group_spec(cfg, g)) for g in groups
                     if cfg.source(g[0]).backend == "vllm"]},
    )
