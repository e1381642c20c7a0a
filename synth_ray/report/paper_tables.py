"""The report's "Paper tables": the run's numbers laid out as the paper's tables, one row per
bracket, columns vanilla / single / multi / human (PAPER.md, "Numbers to reproduce"), and,
for a target with `published:` set, the paper's number and the difference in each cell.

Every number comes from the run's own files (eval/<target>/summary.json, judge/<target>/
danger_zone.parquet and spb.parquet); a condition with several seeds shows mean ± SD over its
adapters. The vanilla and human columns repeat across brackets, as in the paper.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from synth_ray.config import ExperimentConfig
from synth_ray.design import adapter_conditions, judge_dir, score_dir
from synth_ray.metrics.judging import first_scope
from synth_ray.report import published as pub
from synth_ray.report.tables import md_table
from synth_ray.report.tables import read_json as _json

KINDS = ("vanilla", "single", "multi", "human")
SCHEMA = {"adapter": pl.Utf8, "condition": pl.Utf8, "kind": pl.Utf8, "bracket": pl.Utf8,
          "metric": pl.Utf8, "value": pl.Float64}


def kind_of(condition: str) -> tuple[str, str | None]:
    """('single', 'small') for single-small; ('vanilla', None), ('human', None)."""
    head, _, bracket = condition.partition("-")
    return head, bracket or None


def adapter_values(cfg: ExperimentConfig, root: Any, target: str) -> pl.DataFrame:
    """One row per (adapter, metric) the run has measured for the target."""
    conds = adapter_conditions(cfg)
    rows: list[dict[str, Any]] = []

    def add(adapter: str, metric: str, value: Any, in_bracket: str | None = None) -> None:
        if adapter in conds and value is not None and value == value:
            kind, bracket = kind_of(conds[adapter])
            rows.append({"adapter": adapter, "condition": conds[adapter], "kind": kind,
                         "bracket": bracket or in_bracket, "metric": metric,
                         "value": float(value)})

    summary = _json(root / score_dir(target) / "summary.json")
    if summary:
        for view, metric in (("outputs", pub.PERPLEXITY), ("human", "perplexity_human")):
            for name, s in summary["perplexity"][view]["summary"].items():
                add(name, metric, s["mean"])
        for d in summary["diversity"]:
            add(d["condition"], pub.LEXICAL_INDIVIDUAL, d["lexical_diversity_individual"])
            add(d["condition"], pub.LEXICAL_AGGREGATED, d["lexical_diversity_aggregated"])
            add(d["condition"], "semantic", d["semantic_diversity"])
        # the notebooks' draws (`self_bleu.draw: eligible`, `semantic: authors`): human and
        # vanilla have a value per bracket
        for bracket, drawn in (summary.get("by_bracket") or {}).items():
            for name, d in drawn.items():
                if kind_of(conds.get(name, name))[1] is None:
                    for metric, key in ((pub.LEXICAL_INDIVIDUAL, "lexical_diversity_individual"),
                                        (pub.LEXICAL_AGGREGATED, "lexical_diversity_aggregated"),
                                        ("semantic", "semantic_diversity")):
                        add(name, metric, d.get(key), bracket)
    base = root / judge_dir(target)
    if (base / "danger_zone.parquet").exists():
        zone = pl.read_parquet(base / "danger_zone.parquet")

        def add_zone(r: dict[str, Any], in_bracket: str | None) -> None:
            for metric, col in (("harm", "harm_mean"), ("quality", "quality_mean"),
                                ("danger", "danger_share")):
                add(r["adapter"], f"{metric}_{r['prompt_set']}", r[col], in_bracket)

        # the authors' per-bracket quality rule: vanilla and human have a value per bracket
        # (its own row), and the first bracket's stands for them where no bracket is asked
        for r in zone.iter_rows(named=True):
            if r.get("scope") and kind_of(conds.get(r["adapter"], ""))[1] is None:
                add_zone(r, r["scope"])
        for r in first_scope(zone, ["adapter", "prompt_set"], list(cfg.brackets())).iter_rows(
                named=True):
            add_zone(r, None)
    if (base / "spb.parquet").exists():
        for r in pl.read_parquet(base / "spb.parquet").iter_rows(named=True):
            add(r["adapter"], pub.SPB, r["spb"])
            add(r["adapter"], "pro_synthetic", r["pro_synthetic_bias"])
    return pl.DataFrame(rows, schema=SCHEMA)


def values_of(frame: pl.DataFrame, metric: str, bracket: str, kind: str) -> list[float]:
    """The per-adapter values of one cell: vanilla and human whatever the bracket."""
    part = frame.filter((pl.col("metric") == metric) & (pl.col("kind") == kind))
    if kind in ("single", "multi"):
        part = part.filter(pl.col("bracket") == bracket)
    else:  # the bracket's own value where it has one (by_bracket), else the one
        mine = part.filter(pl.col("bracket") == bracket)
        part = mine if mine.height else part.filter(pl.col("bracket").is_null())
    return part["value"].to_list()


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    s = pl.Series(values)
    return float(s.mean()), (float(s.std()) if len(values) > 1 else None)


def cell(values: list[float], paper: float | None) -> str:
    mean, sd = mean_sd(values)
    if mean is None:
        return "-" if paper is None else f"- (paper {paper:.3g})"
    text = f"{mean:.3g}" if sd is None else f"{mean:.3g} ± {sd:.2g}"
    if paper is not None:
        text += f" (paper {paper:.3g}, Δ {mean - paper:+.3g})"
    return text


def table(frame: pl.DataFrame, brackets: list[str], rows: list[tuple[str, str]],
          paper_target: str | None) -> str | None:
    """rows: (metric, label). One line per (bracket, metric) with any value; None if none."""
    out = []
    for bracket in brackets:
        for metric, label in rows:
            cells = [values_of(frame, metric, bracket, k) for k in KINDS]
            if not any(cells):
                continue
            out.append([bracket, label] + [cell(v, pub.published(paper_target, metric, bracket,
                                                                 k))
                                           for v, k in zip(cells, KINDS, strict=True)])
    return md_table(["bracket", "measure", *KINDS], out) if out else None


def pooled_danger(root: Any, target: str) -> str | None:
    """The danger-zone share of single (and multi) pooled over every bracket, per prompt set,
    as the authors reported it for the 70B target: responses in the zone over responses
    scored, summed over the pooled adapters."""
    path = root / judge_dir(target) / "danger_zone.parquet"
    if not path.exists():
        return None
    zone = pl.read_parquet(path).with_columns(
        kind=pl.col("condition").str.split("-").list.first())
    synthetic = zone.filter(pl.col("kind").is_in(["single", "multi"]))
    brackets = set(synthetic["condition"].str.replace(r"^(single|multi)-", ""))
    if len(brackets) < 2:  # one bracket: the per-bracket table already shows it
        return None
    zone = synthetic
    agg = (zone.group_by("kind", "prompt_set")
           .agg(pl.col("danger").sum(), pl.col("scored").sum(), pl.col("adapter").n_unique())
           .sort("prompt_set", "kind"))
    rows = [[r["kind"], r["prompt_set"], r["danger"], r["scored"],
             r["danger"] / r["scored"] if r["scored"] else float("nan"), r["adapter"]]
            for r in agg.iter_rows(named=True)]
    return md_table(["condition (brackets pooled)", "prompt set", "in the zone", "scored",
                     "share", "adapters"], rows)


# the authors' method, point by point (docs/paper.md, "Matches"): config key -> their value
AUTHORS_METHOD = {
    "split.method": "sklearn", "dataset.drop_duplicate_instructions": False,
    "split.validation_fraction": 0.05, "training.loss_on": "all",
    "training.eval_every_steps": 20, "training.early_stopping_patience": 5,
    "judge.decoding": "sampled", "judge.jailbreak_design": "authors",
    "judge.preference_design": "authors", "evaluation.perplexity.end_of_turn": True,
    "evaluation.self_bleu.sentences": "punkt", "evaluation.self_bleu.draw": "eligible",
    "evaluation.self_bleu.individual_samples": 500,
    "evaluation.self_bleu.aggregated_samples": 100,
    "conditions.exclude": ["error"],  # they trained on every answer, truncated or empty
    "training.system_prompt": "You are a helpful AI assistant.",  # their 8B training's
    "judge.article_sample": "authors", "judge.safety_rows": "authors",
    "evaluation.semantic": "authors", "evaluation.semantic_sentences": 5000,
}


def method_differences(cfg: ExperimentConfig) -> list[str]:
    """'key: this run's value (the authors': theirs)' for each point where the run's method
    is not the authors'."""
    out = []
    for key, theirs in AUTHORS_METHOD.items():
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if value != theirs:
            out.append(f"`{key}`: {value} (the authors': {theirs})")
    return out


SPECS = [
    ("Table 2: perplexity of outputs under the vanilla target (mean, Tukey outliers "
     "removed)", [(pub.PERPLEXITY, "perplexity")]),
    ("Table 2, second view: each fine-tuned model scoring the human test responses",
     [("perplexity_human", "perplexity of human answers")]),
    ("Lexical diversity (100 - Self-BLEU-3) and semantic diversity",
     [(pub.LEXICAL_INDIVIDUAL, "lexical, individual"), (pub.LEXICAL_AGGREGATED,
                                                        "lexical, aggregated"),
      ("semantic", "semantic (mean cosine distance)")]),
    ("Harmfulness (judge, 1-5) on RefusalBench (RB) and RB + jailbreaks (RB+J), with quality",
     [(pub.HARM_RB, "harm, RB"), (pub.HARM_RBJ, "harm, RB+J"),
      ("quality_RB", "quality, RB"), ("quality_RB+J", "quality, RB+J")]),
    ("Danger zone: share of scored responses with high harm and high quality",
     [("danger_RB", "danger share, RB"), ("danger_RB+J", "danger share, RB+J")]),
    ("Table 3: self-preference bias (SPB) and pro-synthetic bias",
     [(pub.SPB, "SPB"), ("pro_synthetic", "pro-synthetic bias")]),
]


def paper_tables(cfg: ExperimentConfig, root: Any) -> str:
    differ = method_differences(cfg)
    parts = ["This run follows the authors' method on every point docs/paper.md lists."
             if not differ else "This run's method differs from the authors' (docs/paper.md) "
             "in: " + "; ".join(differ) + "."]
    for target in cfg.targets:
        frame = adapter_values(cfg, root, target.name)
        if not frame.height:
            parts.append(f"### {target.name}\n\n_Not scored yet._")
            continue
        text = [f"### {target.name}"]
        if target.published:
            text.append(pub.NOTE + f" Paper target: `{target.published}`.")
        for title, rows in SPECS:
            got = table(frame, list(cfg.brackets()), rows, target.published)
            if got:
                text += [f"**{title}**", got]
        pooled = pooled_danger(root, target.name)
        if pooled:
            text += ["**Danger zone, brackets pooled** (the authors' 70B view):", pooled]
        if target.published == "llama-3.1-8b" and "danger_RB+J" in set(frame["metric"]):
            text.append(f"The paper: single-source small data put "
                        f"{pub.DANGER_SINGLE_SMALL:.1%} of the 8B target's outputs in the "
                        "danger zone (prompt set not stated).")
        parts.append("\n\n".join(text))
    if len(parts) == 1:
        parts.append("_No target configured._")
    return "\n\n".join(parts)
