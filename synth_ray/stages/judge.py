"""Stage `judge` (PAPER.md, Evaluation 4-5), per target:

1. Safety: the judge model rates every safety response (RB and RB+J, from `respond`) for
   harmfulness (1-5) and quality (1-`judge.quality_max`), through ray.data.llm with a
   regex-constrained answer, or an OpenAI-compatible API parsed strictly. Answers stream
   into shards like generation's, so a killed judge resumes; unparsable answers stay as rows
   with their raw text and count as failures. Then the danger zone per adapter and set.
2. Self-preference: the target itself (vanilla and every adapter, one LoRA engine) picks
   the better of two summaries of one article, each pair in both orders; the first token's
   label probabilities give S per source, SPB and pro-synthetic bias (`spb.py`).

Outputs under judge/<target>/: judgements.parquet (one row per response), danger_zone.parquet,
pairs.parquet, spb.parquet, judge_summary.json, and the judge's raw answers, raw.parquet.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import polars as pl

from synth_ray.config import ExperimentConfig, TargetSection
from synth_ray.design import (
    ARTICLES,
    SAFETY_SET,
    VANILLA,
    adapter_grid,
    judge_dir,
    responses_path,
    summary_path,
    summary_sources,
)
from synth_ray.engines.adapters import adapters_of, lora_engine
from synth_ray.engines.answering import EngineWindow, answer_many, chat_prompts, label_rows
from synth_ray.engines.http import api_key, http_processor
from synth_ray.engines.processors import EngineSpec, engine_record, vllm_processor
from synth_ray.engines.store import REQUEST_SCHEMA, GenerationStore, request_row
from synth_ray.engines.tokenizers import engine_tokenizer
from synth_ray.metrics.judging import (
    agreement,
    answer_regex,
    danger_zone,
    parse_harm_tags,
    parse_quality_line,
    parse_score,
    remove_unparsed_quality,
    scope_rows,
)
from synth_ray.metrics.spb import (
    a_win_rate,
    both_orders,
    position_bias,
    self_preference_bias,
    source_scores,
)
from synth_ray.models import resolve_model
from synth_ray.prompts import (
    AUTHORS_DECODING,
    FORCED_DECODING,
    LABELS,
    RANK_SAMPLING,
    harm_messages,
    pairwise_messages,
    quality_messages,
    ranking_messages,
)
from synth_ray.runtime.pipeline import Context, StageOutput
from synth_ray.runtime.rundir import atomic_write_text, hash_file, write_parquet

log = logging.getLogger("synth_ray")
HUMAN = "human"
JUDGED = ("ok", "truncated", "empty")  # an empty answer is judged too (it refuses nothing)
KINDS = ("harm", "quality")


def condition_of(cfg: ExperimentConfig) -> dict[str, tuple[str, int | None]]:
    """Adapter name -> (condition, seed); the vanilla target is its own condition."""
    return {VANILLA: (VANILLA, None), **{n: (c, s) for c, s, n in adapter_grid(cfg)}}


def quality_scopes(cfg: ExperimentConfig) -> dict[str, list[str]]:
    """Adapter -> the brackets whose family (vanilla, human, single, multi) it is in."""
    every = list(cfg.brackets())
    return {n: [c.partition("-")[2]] if c.partition("-")[2] else every
            for n, (c, _) in condition_of(cfg).items()}


def repeated(key: str, fraction: float, seed: int) -> bool:
    """A stable, seeded choice of the items judged twice."""
    h = int(hashlib.sha256(f"{seed}/{key}".encode()).hexdigest()[:8], 16)
    return h < fraction * 0x100000000


# -- 1. harmfulness and quality --------------------------------------------------------------


def judge_requests(cfg: ExperimentConfig, responses: pl.DataFrame,
                   items: pl.DataFrame) -> pl.DataFrame:
    """Two requests (harm, quality) per judged response, a second copy of a share of them.
    The judge sees the safety set's `prompt`: the bare request (it rates what was asked),
    or with `judge.jailbreak_design: authors` the wrapped one, as the authors' judge did."""
    j = cfg.judge
    sampling = j.sampling.model_dump()
    bare = dict(items.select("item_id", "prompt").iter_rows())
    top = {"harm": 5, "quality": j.quality_max}
    regex = {kind: answer_regex(j.decoding, kind, top[kind], j.max_reason_chars)
             for kind in KINDS}
    forced = j.backend == "vllm" and j.decoding in FORCED_DECODING
    rows = []
    for r in responses.filter(pl.col("status").is_in(JUDGED)).iter_rows(named=True):
        prompt = bare[r["id"]]
        msgs = {"harm": harm_messages(prompt, r["response"], j.decoding),
                "quality": quality_messages(prompt, r["response"], j.quality_max, j.decoding)}
        twice = repeated(f"{r['source']}/{r['id']}", j.repeat_fraction, j.seed)
        for kind in KINDS:
            for rep in (1, 2) if twice else (1,):
                who = "judge" if rep == 1 else "judge-repeat"  # a distinct key: sent again
                row = request_row(f"{kind}|{r['source']}|{r['id']}|{rep}", 0, who, j.model,
                                  j.model, j.revision, None, j.backend, sampling, msgs[kind])
                rows.append({**row, "guide_regex": regex[kind] if forced else ""})
    return pl.DataFrame(rows, schema={**REQUEST_SCHEMA, "guide_regex": pl.Utf8})


def judge_spec(cfg: ExperimentConfig) -> EngineSpec:
    j = cfg.judge
    return EngineSpec.of("judge", j.model, j.revision, j.trust_remote_code, j)


def judge_processor(cfg: ExperimentConfig):
    j = cfg.judge
    if j.backend == "http":
        return http_processor(cfg, j.http, j.model, j.sampling, "judge")
    return vllm_processor(cfg, judge_spec(cfg), j.sampling)


def parse_answers(cfg: ExperimentConfig, raw: pl.DataFrame) -> pl.DataFrame:
    """One row per judge answer: kind, adapter, item, repeat, score or the failure."""
    j = cfg.judge
    constrained = j.backend == "vllm" and j.decoding == "constrained"
    rows = []
    for r in raw.iter_rows(named=True):
        kind, adapter, rest = r["id"].split("|", 2)  # item ids may hold "|" themselves
        item_id, rep = rest.rsplit("|", 1)
        top = 5 if kind == "harm" else cfg.judge.quality_max
        if r["status"] == "error":
            score, err = None, f"judge call failed: {r['error']}"
        else:
            p = (parse_score(r["response"], top, constrained) if j.decoding == "constrained"
                 else parse_harm_tags(r["response"]) if kind == "harm"
                 else parse_quality_line(r["response"], top))
            score, err = p.score, p.error
        rows.append({"kind": kind, "adapter": adapter, "item_id": item_id, "repeat": int(rep),
                     "score": score, "raw": r["response"], "parse_error": err})
    return pl.DataFrame(rows, schema={"kind": pl.Utf8, "adapter": pl.Utf8, "item_id": pl.Utf8,
                                      "repeat": pl.Int64, "score": pl.Int64, "raw": pl.Utf8,
                                      "parse_error": pl.Utf8})


def judgement_table(cfg: ExperimentConfig, target: str, responses: pl.DataFrame,
                    items: pl.DataFrame, answers: pl.DataFrame) -> pl.DataFrame:
    """One row per safety response with its harm and quality (first judgement of each).
    Sampled decoding (the authors' rule): an item whose quality did not parse for one
    adapter of a bracket's family has no quality for any adapter of it (`scope`: the
    bracket; vanilla and human then have a row per bracket); else `scope` is empty."""
    first = answers.filter(pl.col("repeat") == 1)
    scoped = cfg.judge.decoding in AUTHORS_DECODING
    scopes = quality_scopes(cfg) if scoped else {}
    if scoped:
        first = remove_unparsed_quality(first, scopes)
    else:
        first = first.with_columns(scope=pl.lit(None, pl.Utf8))
    wide = None
    for kind in KINDS:
        part = first.filter(pl.col("kind") == kind).select(
            "adapter", "item_id", pl.col("score").alias(kind), pl.col("raw").alias(f"{kind}_raw"),
            pl.col("parse_error").alias(f"{kind}_error"), "scope")
        wide = part if wide is None else wide.join(part, on=["adapter", "item_id", "scope"],
                                                   how="full", coalesce=True, nulls_equal=True)
    cond = condition_of(cfg)
    base = responses.select(pl.col("source").alias("adapter"), pl.col("id").alias("item_id"),
                            "response", "status").join(items, on="item_id", how="left")
    # every response once per family, judged or not (an unjudged one has no scores)
    base = (base.join(scope_rows(scopes), on="adapter", how="left") if scoped
            else base.with_columns(scope=pl.lit(None, pl.Utf8)))
    table = base.join(wide, on=["adapter", "item_id", "scope"], how="left",
                      nulls_equal=True).with_columns(
        target=pl.lit(target),
        condition=pl.col("adapter").replace_strict({k: v[0] for k, v in cond.items()},
                                                   default=None),
        seed=pl.col("adapter").replace_strict({k: v[1] for k, v in cond.items()},
                                              default=None, return_dtype=pl.Int64),
    )
    h, q = cfg.judge.harm_threshold, cfg.judge.quality_threshold
    return table.with_columns(
        danger=pl.when(pl.col("harm").is_null() | pl.col("quality").is_null()).then(None)
        .otherwise((pl.col("harm") >= h) & (pl.col("quality") >= q)))


def judge_quality(answers: pl.DataFrame) -> dict[str, Any]:
    """Parse-failure counts and judge consistency on the items judged twice."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        part = answers.filter(pl.col("kind") == kind)
        fails = part.filter(pl.col("score").is_null())
        reasons = dict(fails.group_by("parse_error").len().iter_rows()) if fails.height else {}
        on = ["adapter", "item_id"]
        out[kind] = {
            "answers": part.height, "unparsable": fails.height,
            "unparsable_rate": fails.height / part.height if part.height else float("nan"),
            "failure_reasons": reasons,
            "consistency": agreement(part.filter(pl.col("repeat") == 1).select(*on, "score"),
                                     part.filter(pl.col("repeat") == 2).select(*on, "score"),
                                     on),
        }
    return out


def judge_target(ctx: Context, target: TargetSection, items: pl.DataFrame) -> dict[str, Any]:
    cfg = ctx.cfg
    responses = pl.read_parquet(ctx.run.path(responses_path(target.name, "safety")))
    requests = judge_requests(cfg, responses, items)
    store = GenerationStore(ctx.run.path(judge_dir(target.name)), "raw")
    j = cfg.judge
    window = None if j.backend == "http" else EngineWindow.of(cfg, judge_spec(cfg))
    raw, stats = answer_many(ctx, "judge", f"judge of {target.name!r} ({j.model})",
                             [(requests, store)], lambda: judge_processor(cfg), window)
    answers = parse_answers(cfg, raw[0])
    table = judgement_table(cfg, target.name, responses, items, answers)
    zone = danger_zone(table, cfg.judge.harm_threshold, cfg.judge.quality_threshold,
                       ["target", "condition", "adapter", "prompt_set", "scope"])
    base = judge_dir(target.name)
    write_parquet(table, ctx.run.path(base, "judgements.parquet"))
    write_parquet(zone, ctx.run.path(base, "danger_zone.parquet"))
    quality = judge_quality(answers)
    log.info("[judge] %s: %d responses judged; unparsable harm %d, quality %d", target.name,
             table.select("adapter", "item_id").n_unique(), quality["harm"]["unparsable"],
             quality["quality"]["unparsable"])
    return {"judge": quality, "calls": stats}


# -- 2. self-preference bias -----------------------------------------------------------------


def label_ids(tokenizer: Any) -> list[int]:
    ids = [tokenizer.encode(label, add_special_tokens=False) for label in LABELS]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"the labels {LABELS} must each be one token of the target's "
                         f"tokenizer, got {ids}; pairwise judging reads the first token")
    return [i[0] for i in ids]


def summaries_by_source(ctx: Context, sources: list[str]) -> pl.DataFrame:
    """(article_id, source, summary): every usable synthetic summary and the human one."""
    articles = pl.read_parquet(ctx.run.path(ARTICLES))
    frames = [articles.select(pl.col("id").alias("article_id"), source=pl.lit(HUMAN),
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


def spb_table(cfg: ExperimentConfig, pairs: pl.DataFrame, self_source: str) -> pl.DataFrame:
    cond = condition_of(cfg)
    rows = []
    for adapter in sorted(set(pairs["adapter"])):
        part = pairs.filter((pl.col("adapter") == adapter) & pl.col("p_a").is_not_null())
        scores = source_scores(part) if part.height else {}
        spb, pro = (self_preference_bias(scores, self_source, HUMAN)
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


def spb_target(ctx: Context, target: TargetSection) -> dict[str, Any]:
    cfg = ctx.cfg
    bracket = cfg.source(target.self_source).bracket
    sources = [s.name for s in cfg.brackets()[bracket]]
    articles = pl.read_parquet(ctx.run.path(ARTICLES))
    adapters = adapters_of(ctx, target)
    design = cfg.judge.preference_design
    requests = pair_requests(articles, summaries_by_source(ctx, sources), adapters, design)
    # the engine's tokenizer, the one `chat_prompts` templates these prompts with (loaded once)
    tok = engine_tokenizer(resolve_model(target.model), target.trust_remote_code)
    ids = label_ids(tok)
    log.info("[judge] %s: %d pairwise judgements (%d adapters, both orders)", target.name,
             requests.height, len(adapters))
    spec = lora_engine(ctx, target, len(adapters))
    prompts, refused = chat_prompts(requests.select("pair_key", messages="messages_json"),
                                    EngineWindow.of(cfg, spec), key="pair_key")
    send = requests.filter(pl.col("pair_key").is_in(list(prompts))).with_columns(
        prompt=pl.col("pair_key").replace_strict(prompts, return_dtype=pl.Utf8))
    got = label_rows(cfg, spec, send.select("pair_key", "prompt", "messages_json", "lora_path"),
                     ids, RANK_SAMPLING if design == "authors" else None)
    got = pl.concat([got, pl.DataFrame(
        [{"pair_key": k, "error": e} for k, e in refused.items()],
        schema={"pair_key": pl.Utf8, "error": pl.Utf8})], how="diagonal_relaxed")
    pairs = requests.drop("messages_json", "lora_path").join(got, on="pair_key", how="left")
    table = spb_table(cfg, pairs, target.self_source)
    base = judge_dir(target.name)
    write_parquet(pairs, ctx.run.path(base, "pairs.parquet"))
    write_parquet(table, ctx.run.path(base, "spb.parquet"))
    log.info("[judge] %s: SPB %s", target.name,
             {r["adapter"]: None if r["spb"] is None else round(r["spb"], 4)
              for r in table.iter_rows(named=True)})
    return {"pairs": pairs.height, "failed": int(pairs["p_a"].null_count())}


# -- the stage -------------------------------------------------------------------------------


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
    engines = [engine_record(cfg, judge_spec(cfg))] if cfg.judge.backend == "vllm" else []
    engines += [engine_record(cfg, lora_engine(ctx, t, 1)) for t in cfg.targets if t.self_source]
    return StageOutput(outputs, rows, f"{sum(rows.values())} judge answers for "
                       f"{len(cfg.targets)} target(s)", {"targets": extra, "engines": engines})
