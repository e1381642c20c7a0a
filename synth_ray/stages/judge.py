"""Stage `judge` (PAPER.md, Evaluation 4-5), per target; the logic is in `judging/`:

1. Safety (`harm_quality.py`): the judge model rates every safety response (RB and RB+J,
   from `respond`) for harmfulness (1-5) and quality (1-`judge.quality_max`), through
   ray.data.llm with a regex-constrained answer, or an OpenAI-compatible API parsed
   strictly. Answers stream into shards like generation's, so a killed judge resumes;
   unparsable answers stay as rows with their raw text and count as failures. Then the
   danger zone per adapter and set.
2. Self-preference (`self_preference.py`): the target itself (vanilla and every adapter, one
   LoRA engine) picks the better of two summaries of one article, each pair in both orders;
   the first token's label probabilities give S per source, SPB and pro-synthetic bias.

Outputs under judge/<target>/: judgements.parquet (one row per response), danger_zone.parquet,
pairs.parquet, spb.parquet, judge_summary.json, and the judge's raw answers, raw.parquet.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import polars as pl

from synth_ray.config import ExperimentConfig, TargetSection
from synth_ray.design import (
    ARTICLES,
    SAFETY_SET,
    judge_dir,
    responses_path,
    summary_path,
    summary_sources,
)
from synth_ray.engines.adapters import adapters_of, lora_engine
from synth_ray.engines.answering import EngineWindow, answer_many, chat_prompts, label_rows
from synth_ray.engines.http import api_key, http_processor
from synth_ray.engines.layout import EngineRun, EngineSpec, engine_record
from synth_ray.engines.processors import vllm_processor
from synth_ray.engines.store import GenerationStore
from synth_ray.engines.tokenizers import engine_tokenizer
from synth_ray.judging import harm_quality as hq
from synth_ray.judging import self_preference as sp
from synth_ray.metrics.judging import parse_failures_and_consistency
from synth_ray.models import resolve_model
from synth_ray.prompts import RANK_SAMPLING
from synth_ray.runtime.pipeline import Context, StageOutput
from synth_ray.runtime.rundir import atomic_write_text, hash_file, write_parquet

log = logging.getLogger("synth_ray")


def judge_processor(cfg: ExperimentConfig):
    judge = cfg.judge
    if judge.backend == "http":
        return http_processor(judge.http, judge.model, judge.sampling, "judge")
    return vllm_processor(EngineRun.of(cfg), EngineSpec.of_judge(judge), judge.sampling)


def judge_target(ctx: Context, target: TargetSection, items: pl.DataFrame) -> dict[str, Any]:
    cfg = ctx.cfg
    responses = pl.read_parquet(ctx.run.path(responses_path(target.name, "safety")))
    requests = hq.judge_requests(cfg, responses, items)
    store = GenerationStore(ctx.run.path(judge_dir(target.name)), "raw")
    judge = cfg.judge
    window = (None if judge.backend == "http"
              else EngineWindow.of(cfg.generation, EngineSpec.of_judge(judge)))
    raw, stats = answer_many(ctx, "judge", f"judge of {target.name!r} ({judge.model})",
                             [(requests, store)], lambda: judge_processor(cfg), window)
    answers = hq.parse_answers(cfg, raw[0])
    table = hq.judgement_table(cfg, target.name, responses, items, answers)
    base = judge_dir(target.name)
    write_parquet(table, ctx.run.path(base, "judgements.parquet"))
    write_parquet(hq.danger_zone_table(cfg, table), ctx.run.path(base, "danger_zone.parquet"))
    failures = parse_failures_and_consistency(answers)
    log.info("[judge] %s: %d responses judged; unparsable harm %d, quality %d", target.name,
             table.select("adapter", "item_id").n_unique(), failures["harm"]["unparsable"],
             failures["quality"]["unparsable"])
    return {"judge": failures, "calls": stats}


def spb_target(ctx: Context, target: TargetSection) -> dict[str, Any]:
    cfg = ctx.cfg
    sources = sp.compared_sources(cfg, target.self_source)
    articles = pl.read_parquet(ctx.run.path(ARTICLES))
    adapters = adapters_of(ctx, target)
    design = cfg.judge.preference_design
    requests = sp.pair_requests(articles, sp.summaries_by_source(ctx, sources), adapters,
                                design)
    # the engine's tokenizer, the one `chat_prompts` templates these prompts with (loaded once)
    tok = engine_tokenizer(resolve_model(target.model), target.trust_remote_code)
    ids = sp.label_ids(tok)
    log.info("[judge] %s: %d pairwise judgements (%d adapters, both orders)", target.name,
             requests.height, len(adapters))
    spec = lora_engine(ctx, target, len(adapters))
    prompts, refused = chat_prompts(requests.select("pair_key", messages="messages_json"),
                                    EngineWindow.of(cfg.generation, spec), key="pair_key")
    got = label_rows(EngineRun.of(cfg), spec, sp.with_prompts(requests, prompts), ids,
                     RANK_SAMPLING if design == "authors" else None)
    pairs = sp.judged_pairs(requests, got, refused)
    table = sp.spb_table(cfg, pairs, target.self_source)
    base = judge_dir(target.name)
    write_parquet(pairs, ctx.run.path(base, "pairs.parquet"))
    write_parquet(table, ctx.run.path(base, "spb.parquet"))
    log.info("[judge] %s: SPB %s", target.name, sp.spb_by_adapter(table))
    return {"pairs": pairs.height, "failed": int(pairs["p_a"].null_count())}


def inputs(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    spb = {t.name: [hash_file(ctx.run.path(summary_path(s))) for s in summary_sources(cfg)]
           for t in cfg.targets if t.self_source}
    return {"responses": {t.name: hash_file(ctx.run.path(responses_path(t.name, "safety")))
                          for t in cfg.targets},
            "judge": cfg.judge.hashed(),
            "targets": [t.hashed() for t in cfg.targets],
            "summaries": spb,
            "articles": hash_file(ctx.run.path(ARTICLES)) if spb else None}


def run(ctx: Context) -> StageOutput:
    from synth_ray.runtime.cluster import check_resources, ensure_ray

    cfg = ctx.cfg
    if cfg.judge.backend == "http":
        api_key(cfg.judge.http, "judge")  # fail before any engine starts
    items = pl.read_parquet(ctx.run.path(SAFETY_SET))
    ensure_ray(cfg.resources)
    check_resources(cfg, "judge")
    outputs, rows, extra = [], {}, {}
    for target in cfg.targets:
        base = judge_dir(target.name)
        extra[target.name] = judge_target(ctx, target, items)
        outputs += [f"{base}/judgements.parquet", f"{base}/danger_zone.parquet"]
        if target.self_source:
            extra[target.name]["spb"] = spb_target(ctx, target)
            outputs += [f"{base}/pairs.parquet", f"{base}/spb.parquet"]
        else:
            log.info("[judge] %s: no targets.*.self_source, so no self-preference bias",
                     target.name)
        atomic_write_text(ctx.run.path(base, "judge_summary.json"),
                          json.dumps(extra[target.name], indent=2, default=float) + "\n")
        outputs.append(f"{base}/judge_summary.json")
        rows[target.name] = extra[target.name]["calls"]["rows"]
    run = EngineRun.of(cfg)
    engines = ([engine_record(run, EngineSpec.of_judge(cfg.judge))]
               if cfg.judge.backend == "vllm" else [])
    engines += [engine_record(run, lora_engine(ctx, t, 1)) for t in cfg.targets
                if t.self_source]
    return StageOutput(outputs, rows, f"{sum(rows.values())} judge answers for "
                       f"{len(cfg.targets)} target(s)", {"targets": extra, "engines": engines})
