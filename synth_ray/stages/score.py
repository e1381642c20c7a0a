"""Stage `score`: perplexity, Self-BLEU-3 and semantic diversity per (target, condition),
with summaries, bootstrap CIs and significance tests (PAPER.md, Evaluation 1-3).

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

from synth_ray.config import ExperimentConfig
from synth_ray.design import HUMAN as HUMAN_DATA
from synth_ray.design import (
    SELF_BLEU_ITEMS,
    SEMANTIC_ITEMS,
    TEST_PATH,
    VANILLA,
    adapter_conditions,
    adapter_name,
    responses_path,
    score_dir,
)
from synth_ray.engines.adapters import adapters_of, lora_engine
from synth_ray.engines.answering import EngineWindow, score_rows
from synth_ray.engines.processors import engine_record
from synth_ray.engines.tokenizers import engine_tokenizer
from synth_ray.metrics.perplexity import token_spans
from synth_ray.metrics.stats import compare_family, compare_groups, summarize
from synth_ray.models import resolve_model
from synth_ray.runtime.pipeline import Context, StageOutput
from synth_ray.runtime.rundir import atomic_write_text, hash_file, write_parquet

log = logging.getLogger("synth_ray")
HUMAN = "human-reference"
SCORED = ("ok", "truncated")  # answers that exist; empty and failed rows have no text


def diversity_metrics(texts: list[str], cfg_json: dict[str, Any]) -> dict[str, Any]:
    """Self-BLEU-3 in its three forms and semantic diversity of one set of responses."""
    from synth_ray.metrics.diversity import semantic_diversity
    from synth_ray.metrics.lexical import lexical_of_set
    from synth_ray.metrics.self_bleu import self_bleu

    sb = cfg_json["self_bleu"]
    lexical = lexical_of_set(texts, sb)
    import random

    docs = random.Random(sb["seed"]).sample(texts, min(sb["aggregated_samples"], len(texts)))
    doc = self_bleu(docs, sb["max_order"]) if len(docs) >= 2 else float("nan")
    sem = semantic_diversity(docs, cfg_json["embedding_model"]) if len(docs) >= 2 \
        else float("nan")
    from synth_ray.metrics.heaps import heaps_law

    heaps = heaps_law(texts)  # vocabulary growth over the condition's responses in order
    return {**lexical, "heaps_k": heaps["K"], "heaps_beta": heaps["beta"],
            "heaps_tokens": heaps["tokens"], "self_bleu_document": doc,
            "semantic_diversity": sem, "responses": len(texts)}


def stream_order(cfg: ExperimentConfig, present: set[str]
                 ) -> dict[tuple[str, int], list[str]]:
    """(bracket, training seed) -> the adapters of one notebook stream in its order: the
    bracket's single and multi adapter of that seed, the human adapter of that seed, the
    vanilla target; only those in `present`."""
    out = {}
    for bracket in cfg.brackets():
        for seed in cfg.training.seeds:
            names = [adapter_name(cfg, f"{kind}-{bracket}", seed) for kind in ("single", "multi")]
            names += [adapter_name(cfg, HUMAN_DATA, seed), VANILLA]
            out[(bracket, seed)] = [n for n in names if n in present]
    return out


def notebook_draws(cfg: ExperimentConfig) -> bool:
    """Whether any diversity measure is drawn as the authors' notebooks draw it."""
    ev = cfg.evaluation
    return ev.self_bleu.draw == "eligible" or ev.semantic == "authors"


def submit_streams(cfg: ExperimentConfig, texts: dict[str, list[str]]) -> dict[tuple, Any]:
    """`self_bleu.draw: eligible` and `semantic: authors`: the measures as the authors'
    notebooks draw them, one Ray task per bracket and seed (metrics/lexical.py), started
    beside the per-condition tasks while the engine scores; `merge_streams` reads them."""
    import ray

    from synth_ray.metrics.lexical import notebook_stream

    task = ray.remote(num_cpus=1)(notebook_stream)
    ev = cfg.evaluation.model_dump(mode="json")
    return {key: task.remote({n: texts[n] for n in names}, ev)
            for key, names in stream_order(cfg, set(texts)).items() if names}


def merge_streams(results: dict[tuple[str, int], dict[str, dict]],
                  done: dict[str, dict[str, Any]]) -> tuple[dict, list[dict], list[dict]]:
    """Each stream's lexical values into `done`'s rows (the first stream that drew an
    adapter wins: single and multi are in one, human and vanilla in every bracket's),
    the values per bracket (vanilla, in every seed's stream of a bracket: the first
    seed's), the individual items and the sampled semantic distances, once per adapter
    and bracket."""
    by_bracket: dict[str, dict[str, dict]] = {}
    items, distances, seen = [], [], set()
    for (bracket, _), streamed in results.items():
        for name, lex in streamed.items():
            mine = by_bracket.setdefault(bracket, {})
            if name in mine:  # vanilla, in every seed's stream: the first seed's draw
                continue
            items += [{"condition": name, "bracket": bracket, "self_bleu": x}
                      for x in lex.pop("individual_items", [])]
            distances += [{"condition": name, "bracket": bracket, "distance": x}
                          for x in lex.pop("semantic_distances", [])]
            mine[name] = lex
            if name not in seen:
                seen.add(name)
                done[name].update(lex)
    return by_bracket, items, distances


def semantic_tests(cfg: ExperimentConfig, distances: pl.DataFrame) -> dict[str, Any]:
    """`semantic: authors`: per bracket, its family's tests (Levene, Kruskal-Wallis, pairwise
    Mann-Whitney with Bonferroni) on each condition's sampled distances, seeds pooled."""
    out = {}
    for bracket in cfg.brackets():
        mine = distances.filter(pl.col("bracket") == bracket)
        groups = {n: mine.filter(pl.col("condition") == n)["distance"].to_list()
                  for n in set(mine["condition"])}
        out[bracket] = compare_family(pooled_by_condition(cfg, groups), [
            VANILLA, f"single-{bracket}", f"multi-{bracket}", HUMAN_DATA])
    return out


def scoring_requests(cfg: ExperimentConfig, tokenizer: Any, responses: pl.DataFrame,
                     test: pl.DataFrame, adapters: dict[str, Any]) -> pl.DataFrame:
    rows = []
    eot = cfg.evaluation.perplexity.end_of_turn

    def add(view: str, condition: str, scorer: str, rid: str, messages, text: str) -> None:
        prompt, answer = token_spans(tokenizer, messages, text, eot)
        if answer:
            rows.append({"score_key": f"{view}|{condition}|{scorer}|{rid}", "view": view,
                         "condition": condition, "scorer": scorer, "id": rid,
                         "token_ids": prompt + answer, "start": len(prompt),
                         "lora_path": str(adapters[scorer].resolve())})

    from synth_ray.prompts import chat_messages

    for r in responses.filter(pl.col("status").is_in(SCORED)).iter_rows(named=True):
        add("outputs", r["source"], VANILLA, r["id"], json.loads(r["messages"]), r["response"])
    for r in test.iter_rows(named=True):
        msgs = chat_messages(r["instruction"], r["context"], cfg.generation.system_prompt)
        add("outputs", HUMAN, VANILLA, r["id"], msgs, r["response"])
        for name in adapters:
            if name != VANILLA:
                add("human", name, name, r["id"], msgs, r["response"])
    return pl.DataFrame(rows, schema={"score_key": pl.Utf8, "view": pl.Utf8,
                                      "condition": pl.Utf8, "scorer": pl.Utf8, "id": pl.Utf8,
                                      "token_ids": pl.List(pl.Int64), "start": pl.Int64,
                                      "lora_path": pl.Utf8})


def pooled_by_condition(cfg: ExperimentConfig,
                        groups: dict[str, list[float]]) -> dict[str, list[float]]:
    """Adapter groups (`human-seed1`, ...) pooled into their conditions (`human`)."""
    of = adapter_conditions(cfg)
    out: dict[str, list[float]] = {}
    for name, values in groups.items():
        out.setdefault(of.get(name, name), []).extend(values)
    return out


def perplexity_tables(scores: pl.DataFrame, cfg: ExperimentConfig) -> dict[str, Any]:
    rule, k = cfg.evaluation.perplexity.outlier_rule, cfg.evaluation.perplexity.iqr_k
    out: dict[str, Any] = {}
    for view in ("outputs", "human"):
        part = scores.filter((pl.col("view") == view) & pl.col("perplexity").is_not_null())
        groups = {c: part.filter(pl.col("condition") == c)["perplexity"].to_list()
                  for c in sorted(set(part["condition"]))}
        out[view] = {"summary": {c: summarize(v, rule, k) for c, v in groups.items()},
                     "tests": compare_groups(groups)}
        if view == "outputs":  # the paper's family: a bracket's four conditions
            pooled = pooled_by_condition(cfg, groups)  # several seeds: one group each
            out[view]["brackets"] = {
                b: compare_family(pooled, [VANILLA, f"single-{b}", f"multi-{b}", HUMAN_DATA])
                for b in cfg.brackets()}
    return out


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
    eval_json = cfg.evaluation.model_dump(mode="json")
    task = ray.remote(num_cpus=1)(diversity_metrics)
    outputs, rows, extra, engines = [], {}, {}, []
    for target in cfg.targets:
        responses = pl.read_parquet(ctx.run.path(responses_path(target.name)))
        adapters = adapters_of(ctx, target)
        texts = {c: responses.filter((pl.col("source") == c) & pl.col("status").is_in(SCORED))
                 ["response"].to_list() for c in adapters}
        texts[HUMAN] = test["response"].to_list()
        # diversity tasks run on the cluster while the engine scores perplexity
        pending = {c: task.remote(t, eval_json) for c, t in texts.items() if len(t) >= 2}
        streams = (submit_streams(cfg, {c: t for c, t in texts.items()
                                        if c in pending and c != HUMAN})
                   if notebook_draws(cfg) else None)
        tok = engine_tokenizer(resolve_model(target.model), target.trust_remote_code)
        requests = scoring_requests(cfg, tok, responses, test, adapters)
        log.info("[score] %s: %d perplexity requests, %d diversity tasks", target.name,
                 requests.height, len(pending))
        # a sequence with no room in the engine's context is refused here, not by vLLM (a
        # batch mixing refused and scored rows is lost to Ray Data; see answering.chat_prompts)
        spec = lora_engine(ctx, target, len(adapters))
        engines.append(engine_record(cfg, spec))
        context = EngineWindow.of(cfg, spec).max_model_len  # the engine's own window
        fits = requests["token_ids"].list.len() < context
        scored = score_rows(cfg, spec, requests.filter(fits).select(
            "score_key", "token_ids", "start", "lora_path"))
        scored = pl.concat([scored, requests.filter(~fits).select(
            "score_key", error=pl.format(f"sequence of {{}} tokens is longer than the context "
                                         f"of {context} tokens (targets.*.engine."
                                         "max_model_len or generation.max_model_len)",
                                         pl.col("token_ids").list.len()))],
            how="diagonal_relaxed")
        scores = requests.drop("token_ids", "lora_path").join(scored, on="score_key", how="left")
        missing = scores.filter(pl.col("perplexity").is_null() & pl.col("error").is_null())
        if missing.height:
            raise RuntimeError(f"{missing.height} scoring rows came back from no block")
        done = {c: ray.get(ref) for c, ref in pending.items()}
        # each response's own Self-BLEU (the individual form's items): the report's test
        rows_of_items = [{"condition": c, "bracket": None, "self_bleu": x}
                         for c, d in done.items() for x in d.pop("individual_items")]
        by_bracket = None
        distance_rows: list[dict] = []
        if streams is not None:  # each adapter's row: the first stream that drew it
            by_bracket, streamed, distance_rows = merge_streams(
                {key: ray.get(ref) for key, ref in streams.items()},
                {c: d for c, d in done.items() if c != HUMAN})
            if cfg.evaluation.self_bleu.draw == "eligible":  # the streams' lexical items
                rows_of_items = [r for r in rows_of_items if r["condition"] == HUMAN] + streamed
        items = pl.DataFrame(rows_of_items, schema={"condition": pl.Utf8, "bracket": pl.Utf8,
                                                    "self_bleu": pl.Float64})
        diversity = pl.DataFrame([{"target": target.name, "condition": c, **d}
                                  for c, d in done.items()])
        tables = {"perplexity": perplexity_tables(scores, cfg),
                  "diversity": diversity.to_dicts()}
        if by_bracket is not None:  # the notebooks' draws: human and vanilla per bracket
            tables["by_bracket"] = by_bracket
        distances = pl.DataFrame(distance_rows, schema={
            "condition": pl.Utf8, "bracket": pl.Utf8, "distance": pl.Float64})
        if distances.height:  # `semantic: authors`: the authors' tests on sampled distances
            tables["semantic_tests"] = semantic_tests(cfg, distances)
        base = score_dir(target.name)
        write_parquet(scores.with_columns(target=pl.lit(target.name)),
                      ctx.run.path(base, "perplexity.parquet"))
        write_parquet(diversity, ctx.run.path(base, "diversity.parquet"))
        write_parquet(items, ctx.run.path(base, SELF_BLEU_ITEMS))
        if distances.height:
            write_parquet(distances, ctx.run.path(base, SEMANTIC_ITEMS))
            outputs.append(f"{base}/{SEMANTIC_ITEMS}")
        atomic_write_text(ctx.run.path(base, "summary.json"),
                          json.dumps(tables, indent=2, default=float) + "\n")
        outputs += [f"{base}/perplexity.parquet", f"{base}/diversity.parquet",
                    f"{base}/{SELF_BLEU_ITEMS}", f"{base}/summary.json"]
        rows[target.name] = scores.height
        extra[target.name] = {c: round(s["mean"], 4) for c, s in
                              tables["perplexity"]["outputs"]["summary"].items()}
        errors = scores.filter(pl.col("error") != "").height
        log.info("[score] %s: perplexity of outputs (vanilla scorer, Tukey mean): %s; "
                 "%d scoring errors", target.name, extra[target.name], errors)
    return StageOutput(outputs, rows, f"scored {sum(rows.values())} samples",
                       {"perplexity_outputs": extra, "engines": engines})
