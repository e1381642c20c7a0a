"""Perplexity (PAPER.md, Evaluation 2), two views, both scored by one vLLM engine per target
(prompt log-probs):
- `outputs`: the vanilla target scores each condition's test outputs, and the human test
  responses (Table 2);
- `human`: each fine-tuned adapter scores the human test responses.
Here: the requests (token ids with the answer's start), the rows a too-short engine window
refuses, the scores joined back, and their summaries and tests per view (`metrics/stats.py`).
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from synth_ray.config import ExperimentConfig
from synth_ray.design import HUMAN as HUMAN_DATA
from synth_ray.design import VANILLA, adapter_conditions
from synth_ray.metrics.perplexity import token_spans
from synth_ray.metrics.stats import compare_family, compare_groups, summarize

# the dataset's own test responses, scored (and measured for diversity) as a reference row
HUMAN_REFERENCE = "human-reference"
SCORED = ("ok", "truncated")  # answers that exist; empty and failed rows have no text


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
        add("outputs", HUMAN_REFERENCE, VANILLA, r["id"], msgs, r["response"])
        for name in adapters:
            if name != VANILLA:
                add("human", name, name, r["id"], msgs, r["response"])
    return pl.DataFrame(rows, schema={"score_key": pl.Utf8, "view": pl.Utf8,
                                      "condition": pl.Utf8, "scorer": pl.Utf8, "id": pl.Utf8,
                                      "token_ids": pl.List(pl.Int64), "start": pl.Int64,
                                      "lora_path": pl.Utf8})


def too_long(requests: pl.DataFrame, context: int) -> pl.DataFrame:
    """(score_key, error) for requests with no room in the engine's context of `context`
    tokens: refused before vLLM sees them."""
    return requests.select(
        "score_key", error=pl.format(f"sequence of {{}} tokens is longer than the context "
                                     f"of {context} tokens (targets.*.engine."
                                     "max_model_len or generation.max_model_len)",
                                     pl.col("token_ids").list.len()))


def with_scores(requests: pl.DataFrame, scored: pl.DataFrame) -> pl.DataFrame:
    """The requests (without token ids) with their perplexity or error; every row must
    have come back with one or the other."""
    scores = requests.drop("token_ids", "lora_path").join(scored, on="score_key", how="left")
    missing = scores.filter(pl.col("perplexity").is_null() & pl.col("error").is_null())
    if missing.height:
        raise RuntimeError(f"{missing.height} scoring rows came back from no block")
    return scores


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
