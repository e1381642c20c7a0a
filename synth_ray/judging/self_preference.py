"""Self-preference (PAPER.md, Evaluation 5): the target itself (vanilla and every adapter)
picks the better of two summaries of one article, each pair in both orders; the first
token's label probabilities give S per source, SPB and pro-synthetic bias
(`metrics/spb.py`). Here: the summaries that enter, the pairs sent, the answers joined back
(a pair the engine's window refused keeps its error) and the SPB table per adapter.
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from synth_ray.config import ExperimentConfig
from synth_ray.design import ARTICLES, summary_path
from synth_ray.judging.conditions import condition_of
from synth_ray.metrics.spb import (
    a_win_rate,
    both_orders,
    position_bias,
    self_preference_bias,
    source_scores,
)
from synth_ray.prompts import LABELS, pairwise_messages, ranking_messages
from synth_ray.runtime.pipeline import Context

HUMAN_SUMMARY = "human"  # the source of the articles' own highlights, the human summaries


def compared_sources(cfg: ExperimentConfig, self_source: str) -> list[str]:
    """The sources whose summaries a target compares: every source of its self source's
    bracket (the human summaries join them in `summaries_by_source`)."""
    return [s.name for s in cfg.brackets()[cfg.source(self_source).bracket]]


def label_ids(tokenizer: Any) -> list[int]:
    ids = [tokenizer.encode(label, add_special_tokens=False) for label in LABELS]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"the labels {LABELS} must each be one token of the target's "
                         f"tokenizer, got {ids}; pairwise judging reads the first token")
    return [i[0] for i in ids]


def summaries_by_source(ctx: Context, sources: list[str]) -> pl.DataFrame:
    """(article_id, source, summary): every usable synthetic summary and the human one."""
    articles = pl.read_parquet(ctx.run.path(ARTICLES))
    frames = [articles.select(pl.col("id").alias("article_id"), source=pl.lit(HUMAN_SUMMARY),
                              summary=pl.col("highlights"))]
    for s in sources:
        g = pl.read_parquet(ctx.run.path(summary_path(s)))
        frames.append(g.filter(pl.col("status").is_in(("ok", "truncated"))).select(
            pl.col("id").alias("article_id"), source=pl.lit(s), summary=pl.col("response")))
    return pl.concat(frames)


def pair_requests(articles: pl.DataFrame, summaries: pl.DataFrame,
                  adapters: dict[str, Any], design: str = "with_article") -> pl.DataFrame:
    by_article = {}
    for r in summaries.iter_rows(named=True):
        by_article.setdefault(r["article_id"], {})[r["source"]] = r["summary"]
    rows = []
    for a in articles.iter_rows(named=True):
        have = by_article.get(a["id"], {})
        for src_a, src_b in both_orders(sorted(have)):
            msgs = json.dumps(ranking_messages(have[src_a], have[src_b]) if design == "authors"
                              else pairwise_messages(a["article"], have[src_a], have[src_b]))
            for name, path in adapters.items():
                rows.append({"pair_key": f"{name}|{a['id']}|{src_a}|{src_b}", "adapter": name,
                             "article_id": a["id"], "source_a": src_a, "source_b": src_b,
                             "messages_json": msgs, "lora_path": str(path.resolve())})
    return pl.DataFrame(rows, schema={"pair_key": pl.Utf8, "adapter": pl.Utf8,
                                      "article_id": pl.Utf8, "source_a": pl.Utf8,
                                      "source_b": pl.Utf8, "messages_json": pl.Utf8,
                                      "lora_path": pl.Utf8})


def with_prompts(requests: pl.DataFrame, prompts: dict[str, str]) -> pl.DataFrame:
    """The requests whose chat prompt fits the engine, each with its `prompt`: the rows the
    target's label engine reads."""
    send = requests.filter(pl.col("pair_key").is_in(list(prompts))).with_columns(
        prompt=pl.col("pair_key").replace_strict(prompts, return_dtype=pl.Utf8))
    return send.select("pair_key", "prompt", "messages_json", "lora_path")


def judged_pairs(requests: pl.DataFrame, got: pl.DataFrame,
                 refused: dict[str, str]) -> pl.DataFrame:
    """Every pair with the engine's answer, or the error of a pair it refused."""
    got = pl.concat([got, pl.DataFrame(
        [{"pair_key": k, "error": e} for k, e in refused.items()],
        schema={"pair_key": pl.Utf8, "error": pl.Utf8})], how="diagonal_relaxed")
    return requests.drop("messages_json", "lora_path").join(got, on="pair_key", how="left")


def spb_table(cfg: ExperimentConfig, pairs: pl.DataFrame, self_source: str) -> pl.DataFrame:
    cond = condition_of(cfg)
    rows = []
    for adapter in sorted(set(pairs["adapter"])):
        part = pairs.filter((pl.col("adapter") == adapter) & pl.col("p_a").is_not_null())
        scores = source_scores(part) if part.height else {}
        spb, pro = (self_preference_bias(scores, self_source, HUMAN_SUMMARY)
                    if self_source in scores and len(scores) > 2 else (None, None))
        rows.append({"adapter": adapter, "condition": cond.get(adapter, (adapter, None))[0],
                     "seed": cond.get(adapter, (None, None))[1], "self_source": self_source,
                     "spb": spb, "pro_synthetic_bias": pro,
                     "position_bias": position_bias(part) if part.height else None,
                     "a_win_rate": a_win_rate(part) if part.height else None,
                     "pairs": part.height,
                     "failed": pairs.filter(pl.col("adapter") == adapter).height - part.height,
                     "scores": json.dumps(scores)})
    return pl.DataFrame(rows, schema={"adapter": pl.Utf8, "condition": pl.Utf8,
                                      "seed": pl.Int64, "self_source": pl.Utf8,
                                      "spb": pl.Float64, "pro_synthetic_bias": pl.Float64,
                                      "position_bias": pl.Float64,
                                      "a_win_rate": pl.Float64, "pairs": pl.Int64,
                                      "failed": pl.Int64, "scores": pl.Utf8})


def spb_by_adapter(table: pl.DataFrame) -> dict[str, float | None]:
    """Each adapter's SPB to 4 places, as the stage logs it."""
    return {r["adapter"]: None if r["spb"] is None else round(r["spb"], 4)
            for r in table.iter_rows(named=True)}
