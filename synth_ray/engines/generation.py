"""What the generate stage asks of the engines: each source's jobs (its training parts, the
shared probe set, the articles' summaries), the sources one engine serves together
(`engine_groups`), and one streaming pipeline per group (`generate_group`: requests -> chat
template -> vLLM engine replicas, or an OpenAI-compatible HTTP API -> normalised rows, each
source's rows to its own stores through `answering.answer_many`), the groups one by one or
`generation.parallel_sources` at once.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, replace
from typing import Any

import polars as pl

from synth_ray.config import ExperimentConfig, SourceSection
from synth_ray.design import generation_path, part_path, probe_path, summary_path, summary_sources
from synth_ray.engines.answering import EngineWindow, answer_many
from synth_ray.engines.http import http_processor
from synth_ray.engines.layout import EngineRun, EngineSpec
from synth_ray.engines.processors import vllm_processor
from synth_ray.engines.store import (
    REQUEST_SCHEMA,
    GenerationStore,
    build_requests,
    parts_per_source,
    source_row,
)
from synth_ray.prompts import summarise_messages
from synth_ray.runtime.pipeline import Context


def work_plan(cfg: ExperimentConfig) -> dict[str, list[int]]:
    """Source -> training parts it answers; a source that only summarises has none."""
    plan = parts_per_source(cfg)
    return {s.name: plan.get(s.name, []) for s in cfg.sources
            if s.name in plan or s.name in summary_sources(cfg)}


def summary_requests(cfg: ExperimentConfig, source: SourceSection,
                     articles: pl.DataFrame) -> pl.DataFrame:
    gen = cfg.generation.sampling
    sampling = {**gen.model_dump(), "max_tokens": cfg.judge.summary_max_tokens,
                "min_tokens": min(gen.min_tokens, cfg.judge.summary_max_tokens)}
    rows = [source_row(a["id"], 0, source, sampling,
                       summarise_messages(a["article"], cfg.generation.system_prompt,
                                          source.system_turn, cfg.judge.preference_design))
            for a in articles.iter_rows(named=True)]
    return pl.DataFrame(rows, schema=REQUEST_SCHEMA)


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


def group_spec(cfg: ExperimentConfig, names: list[str]) -> EngineSpec:
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
            return http_processor(first.http, first.model, cfg.generation.sampling,
                                  f"source {first.name!r}")
        return vllm_processor(EngineRun.of(cfg), group_spec(cfg, names))

    who = f"source {first.name!r}" if len(names) == 1 else \
        f"sources {', '.join(repr(n) for n in names)} (one engine)"
    label = f"{who} ({first.backend}, {first.model})"
    window = None if first.backend == "http" else EngineWindow.of(
        cfg.generation, EngineSpec.of_source(first))
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


def generate_groups(ctx: Context, plan: dict[str, list[int]], groups: list[list[str]],
                    articles: pl.DataFrame | None, probe: pl.DataFrame | None
                    ) -> dict[str, dict[str, Any]]:
    """Every group's pipeline, one by one or `generation.parallel_sources` at once; returns
    each source's summary, in the plan's order."""
    if ctx.cfg.generation.parallel_sources == 1:
        summaries = {n: s for g in groups for n, s in
                     generate_group(ctx, g, plan, articles, probe).items()}
        return {n: summaries[n] for n in plan}
    return _generate_parallel(ctx, plan, groups, articles, probe)
