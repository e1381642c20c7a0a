"""Stage `score`: perplexity, Self-BLEU-3 and semantic diversity per (target, condition),
with summaries, bootstrap CIs and significance tests (PAPER.md, Evaluation 1-3); the logic
is in `scoring/` and `metrics/`.

Perplexity, two views, both through one vLLM engine per target (prompt log-probs):
- `outputs`: the vanilla target scores each condition's test outputs, and the human test
  responses (Table 2);
- `human`: each fine-tuned adapter scores the human test responses.
Self-BLEU (individual, aggregated, document-level) and semantic diversity of each
condition's outputs run as parallel Ray tasks, one per (target, condition).

Outputs: eval/<target>/perplexity.parquet (one row per scored sample),
eval/<target>/diversity.parquet, self_bleu_individual.parquet (each drawn response's own
Self-BLEU: the individual form's items), eval/<target>/summary.json.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import polars as pl

from synth_ray.config import TargetSection
from synth_ray.design import SELF_BLEU_ITEMS, SEMANTIC_ITEMS, TEST_PATH, responses_path, score_dir
from synth_ray.engines.adapters import adapters_of, lora_engine
from synth_ray.engines.answering import EngineWindow, score_rows
from synth_ray.engines.layout import EngineRun, EngineSpec, engine_record
from synth_ray.engines.tokenizers import engine_tokenizer
from synth_ray.metrics.lexical import diversity_metrics
from synth_ray.models import resolve_model
from synth_ray.runtime.pipeline import Context, StageOutput
from synth_ray.runtime.rundir import atomic_write_text, hash_file, write_parquet
from synth_ray.scoring.diversity import diversity_of, notebook_draws, submit_streams
from synth_ray.scoring.perplexity import (
    HUMAN_REFERENCE,
    SCORED,
    scoring_requests,
    too_long,
    with_scores,
)
from synth_ray.scoring.summary import summary_tables

log = logging.getLogger("synth_ray")


def perplexities(ctx: Context, spec: EngineSpec, requests: pl.DataFrame) -> pl.DataFrame:
    # a sequence with no room in the engine's context is refused here, not by vLLM (a
    # batch mixing refused and scored rows is lost to Ray Data; see answering.chat_prompts)
    context = EngineWindow.of(ctx.cfg.generation, spec).max_model_len  # the engine's own window
    fits = requests["token_ids"].list.len() < context
    scored = score_rows(EngineRun.of(ctx.cfg), spec, requests.filter(fits).select(
        "score_key", "token_ids", "start", "lora_path"))
    scored = pl.concat([scored, too_long(requests.filter(~fits), context)],
                       how="diagonal_relaxed")
    return with_scores(requests, scored)


def score_target(ctx: Context, target: TargetSection, test: pl.DataFrame,
                 task: Any) -> tuple[list[str], int, dict[str, float], dict[str, Any]]:
    """(outputs, rows, perplexity means, engine record) of one target."""
    import ray

    cfg = ctx.cfg
    eval_json = cfg.evaluation.model_dump(mode="json")
    responses = pl.read_parquet(ctx.run.path(responses_path(target.name)))
    adapters = adapters_of(ctx, target)
    texts = {c: responses.filter((pl.col("source") == c) & pl.col("status").is_in(SCORED))
             ["response"].to_list() for c in adapters}
    texts[HUMAN_REFERENCE] = test["response"].to_list()
    # diversity tasks run on the cluster while the engine scores perplexity
    pending = {c: task.remote(t, eval_json) for c, t in texts.items() if len(t) >= 2}
    streams = (submit_streams(cfg, {c: t for c, t in texts.items()
                                    if c in pending and c != HUMAN_REFERENCE})
               if notebook_draws(cfg) else None)
    tok = engine_tokenizer(resolve_model(target.model), target.trust_remote_code)
    requests = scoring_requests(cfg, tok, responses, test, adapters)
    log.info("[score] %s: %d perplexity requests, %d diversity tasks", target.name,
             requests.height, len(pending))
    spec = lora_engine(ctx, target, len(adapters))
    engine = engine_record(EngineRun.of(cfg), spec)
    scores = perplexities(ctx, spec, requests)
    diversity = diversity_of(cfg, target.name, {c: ray.get(r) for c, r in pending.items()},
                             None if streams is None
                             else {key: ray.get(r) for key, r in streams.items()})
    tables = summary_tables(cfg, scores, diversity)
    base = score_dir(target.name)
    write_parquet(scores.with_columns(target=pl.lit(target.name)),
                  ctx.run.path(base, "perplexity.parquet"))
    write_parquet(diversity.rows, ctx.run.path(base, "diversity.parquet"))
    write_parquet(diversity.items, ctx.run.path(base, SELF_BLEU_ITEMS))
    outputs = []
    if diversity.distances.height:
        write_parquet(diversity.distances, ctx.run.path(base, SEMANTIC_ITEMS))
        outputs.append(f"{base}/{SEMANTIC_ITEMS}")
    atomic_write_text(ctx.run.path(base, "summary.json"),
                      json.dumps(tables, indent=2, default=float) + "\n")
    outputs += [f"{base}/perplexity.parquet", f"{base}/diversity.parquet",
                f"{base}/{SELF_BLEU_ITEMS}", f"{base}/summary.json"]
    means = {c: round(s["mean"], 4) for c, s in
             tables["perplexity"]["outputs"]["summary"].items()}
    errors = scores.filter(pl.col("error") != "").height
    log.info("[score] %s: perplexity of outputs (vanilla scorer, Tukey mean): %s; "
             "%d scoring errors", target.name, means, errors)
    return outputs, scores.height, means, engine


def inputs(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    return {"responses": {t.name: hash_file(ctx.run.path(responses_path(t.name)))
                          for t in cfg.targets},
            "test": hash_file(ctx.run.path(TEST_PATH)),
            # hashed(): fields added since leave old runs' hashes alone at their defaults
            "evaluation": {k: v for k, v in cfg.evaluation.hashed().items()
                           if k not in ("sampling", "max_loras")}}


def run(ctx: Context) -> StageOutput:
    import ray

    from synth_ray.runtime.cluster import check_resources, ensure_ray

    cfg = ctx.cfg
    ensure_ray(cfg.resources)
    check_resources(cfg, "score")
    test = pl.read_parquet(ctx.run.path(TEST_PATH))
    task = ray.remote(num_cpus=1)(diversity_metrics)
    outputs, rows, extra, engines = [], {}, {}, []
    for target in cfg.targets:
        written, rows[target.name], extra[target.name], engine = score_target(
            ctx, target, test, task)
        outputs += written
        engines.append(engine)
    return StageOutput(outputs, rows, f"scored {sum(rows.values())} samples",
                       {"perplexity_outputs": extra, "engines": engines})
