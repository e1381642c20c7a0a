"""A verdict for each of the paper's three claims (PAPER.md, "The claims"), per target and
bracket, with the tests behind it as a table:

1. Distribution collapse: multi-source data keeps the outputs broader than single-source
   (higher perplexity under the vanilla target, higher lexical diversity).
2. Safety: synthetic data erodes safety (harm above vanilla) and puts more outputs in the
   danger zone (high harm and high quality), per prompt set.
3. Self-preference: fine-tuning lowers it, and the order is human < multi < single
   (< vanilla).

One rule, with one seed or many (`metrics/claim_tests.py`): a check holds only where a test
across items, using every seed's items, is significant after its family's correction, and
its own statistic, its effect size and each seed's effect point the same way. Perplexity
and harm: rank tests, Bonferroni over the bracket's 6 pairs (the authors' family);
individual lexical diversity (100 - each response's own Self-BLEU): the same rank test;
the danger-zone share: an exact test on its counts, Bonferroni over the 2 synthetic
conditions; SPB: a paired permutation over articles (p; a paired bootstrap for the
interval), Bonferroni over the 3 steps of the order. Aggregated lexical diversity is one
number per set of responses: shown, untested, never evidence. The headline counts only
tested checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from synth_ray.design import (
    HUMAN,
    SELF_BLEU_ITEMS,
    VANILLA,
    adapter_grid,
    judge_dir,
    score_dir,
)
from synth_ray.metrics.claim_tests import Evidence, proportion_check, rank_check
from synth_ray.metrics.item_tests import spb_difference
from synth_ray.metrics.judging import in_family
from synth_ray.report import published as pub
from synth_ray.report.paper_tables import mean_sd, values_of
from synth_ray.report.tables import md_table

HEADER = ["check", "values (mean over seeds)", "test", "p", "effect [95% CI]", "per seed",
          "verdict"]


@dataclass(frozen=True)
class Check:
    label: str
    state: str  # holds | reversed | none | untested | unmeasured
    shown: str  # the two sides' per-adapter values
    evidence: Evidence | None
    why: str

    def row(self) -> list[str]:
        ev = self.evidence
        if ev is None:
            return [self.label, self.shown, "-", "-", "-", "-", f"{self.state}: {self.why}"]
        effect = f"{ev.effect_name} {ev.effect:.3g} [{ev.low:.3g}, {ev.high:.3g}]"
        seeds = ", ".join(f"{e:.3g}" for e in ev.seed_effects) or "one"
        return [self.label, self.shown, ev.test, f"{ev.p:.3g}", effect, seeds,
                self.state if self.state != "none" else f"none: {self.why}"]


def check(label: str, a: str, b: str, a_vals: list[float], b_vals: list[float],
          evidence: Evidence | None, untested: str = "no test across items for this measure"
          ) -> Check:
    """Does `a` exceed `b`? Decided by the evidence alone; the per-adapter values are shown.
    `untested`: why there is no evidence, where there is none."""
    if not a_vals or not b_vals:
        return Check(label, "unmeasured", "-", None, "not measured")
    (ma, _), (mb, _) = mean_sd(a_vals), mean_sd(b_vals)
    shown = f"{a} {ma:.3g} vs {b} {mb:.3g}"
    if evidence is None:
        way = "higher" if ma > mb else "lower" if ma < mb else "equal"
        return Check(label, "untested", shown, None,
                     f"{untested} ({a} is {way}); not evidence")
    state, why = evidence.state()
    return Check(label, state, shown, evidence, why)


def headline(claim: str, checks: list[Check]) -> str:
    states = {c.state for c in checks if c.state not in ("unmeasured", "untested")}
    if not states:
        word = "not tested"
    elif states == {"holds"}:
        word = "**holds**"
    elif states == {"reversed"}:
        word = "**reversed**"
    elif "holds" in states and "reversed" in states:
        word = "**mixed**"
    elif "holds" in states:
        word = "**partly holds**"
    elif "reversed" in states:
        word = "**partly reversed**"
    else:
        word = "**not supported** (no check significant with its seeds agreeing)"
    return f"{claim}: {word}\n\n" + md_table(HEADER, [c.row() for c in checks])


@dataclass
class Items:
    """The per-item values of one target's run, per adapter, for the tests; `adapters`: a
    condition's adapters in seed order (the vanilla target: one)."""

    adapters: dict[str, list[str]]
    perplexity: pl.DataFrame | None = None  # condition (the adapter), perplexity
    self_bleu: pl.DataFrame | None = None  # condition (the adapter), self_bleu
    judgements: pl.DataFrame | None = None  # adapter, prompt_set, harm, quality, danger
    pairs: pl.DataFrame | None = None  # adapter, article_id, source_a, source_b, p_a

    @classmethod
    def of_run(cls, cfg: Any, root: Any, target: str) -> Items:
        adapters: dict[str, list[str]] = {VANILLA: [VANILLA]}
        for cond, _, name in adapter_grid(cfg):
            adapters.setdefault(cond, []).append(name)

        def read(path: Any) -> pl.DataFrame | None:
            return pl.read_parquet(path) if path.exists() else None

        scores = read(root / score_dir(target) / "perplexity.parquet")
        pairs = read(root / judge_dir(target) / "pairs.parquet")
        return cls(adapters,
                   scores.filter((pl.col("view") == "outputs")
                                 & pl.col("perplexity").is_not_null())
                   if scores is not None else None,
                   read(root / score_dir(target) / SELF_BLEU_ITEMS),
                   read(root / judge_dir(target) / "judgements.parquet"),
                   pairs.filter(pl.col("p_a").is_not_null()) if pairs is not None else None)

    def sets(self, frame: pl.DataFrame | None, cond: str, key: str, value: str
             ) -> list[list[float]] | None:
        """The condition's items, one list per adapter; None where any adapter has none."""
        if frame is None or cond not in self.adapters:
            return None
        out = [frame.filter((pl.col(key) == name) & pl.col(value).is_not_null()
                            & pl.col(value).cast(pl.Float64).is_finite())[value].to_list()
               for name in self.adapters[cond]]
        return out if all(out) else None  # an adapter without items: no test


def _ranks(a: list[list[float]] | None, b: list[list[float]] | None,
           family: int) -> Evidence | None:
    return rank_check(a, b, family) if a and b else None


def collapse(frame: pl.DataFrame, items: Items, bracket: str) -> str:
    single, multi = f"single-{bracket}", f"multi-{bracket}"
    ppl = [items.sets(items.perplexity, c, "condition", "perplexity") for c in (multi, single)]
    checks = [check("perplexity of outputs, multi > single", multi, single,
                    values_of(frame, pub.PERPLEXITY, bracket, "multi"),
                    values_of(frame, pub.PERPLEXITY, bracket, "single"),
                    _ranks(*ppl, family=6))]
    # each response's lexical diversity: 100 - its own Self-BLEU among its sentences
    sb = items.self_bleu
    div = (sb.with_columns(diversity=100 - pl.col("self_bleu")) if sb is not None else None)
    ind = [items.sets(div, c, "condition", "diversity") for c in (multi, single)]
    checks.append(check("lexical diversity (individual), multi > single", multi, single,
                        values_of(frame, pub.LEXICAL_INDIVIDUAL, bracket, "multi"),
                        values_of(frame, pub.LEXICAL_INDIVIDUAL, bracket, "single"),
                        _ranks(*ind, family=1),
                        "no per-response Self-BLEU in this run (scored by an older "
                        "synth-ray: `synth-ray score CONFIG --force`)" if sb is None else
                        "an adapter without scored responses"))
    checks.append(check("lexical diversity (aggregated), multi > single", multi, single,
                        values_of(frame, pub.LEXICAL_AGGREGATED, bracket, "multi"),
                        values_of(frame, pub.LEXICAL_AGGREGATED, bracket, "single"), None,
                        "one number per set of responses: no test across items"))
    return headline(f"[{bracket}] 1. multi-source data keeps the outputs broader than "
                    "single-source", checks)


def _danger_counts(part: pl.DataFrame, adapters: list[str]) -> list[tuple[int, int]] | None:
    both = part.filter(pl.col("harm").is_not_null() & pl.col("quality").is_not_null())
    out = [(int(both.filter(pl.col("adapter") == a)["danger"].sum()),
            both.filter(pl.col("adapter") == a).height) for a in adapters]
    return out if all(n for _, n in out) else None


def safety(frame: pl.DataFrame, items: Items, bracket: str) -> list[str]:
    if items.judgements is None:
        return []
    out = []
    family = in_family(items.judgements, bracket)  # the bracket's quality rule
    for pset in sorted(set(family["prompt_set"])):
        part = family.filter(pl.col("prompt_set") == pset)
        checks = []
        for kind in ("single", "multi"):
            cond = f"{kind}-{bracket}"
            harm = [items.sets(part, c, "adapter", "harm") for c in (cond, VANILLA)]
            checks.append(check(f"harm, {kind} > vanilla", cond, VANILLA,
                                values_of(frame, f"harm_{pset}", bracket, kind),
                                values_of(frame, f"harm_{pset}", bracket, "vanilla"),
                                _ranks(*harm, family=6)))
        for kind in ("single", "multi"):
            cond = f"{kind}-{bracket}"
            counts = [_danger_counts(part, items.adapters.get(c, [])) for c in (cond, VANILLA)]
            ev = proportion_check(*counts, family=2) if all(counts) else None
            checks.append(check(f"danger-zone share, {kind} > vanilla", cond, VANILLA,
                                values_of(frame, f"danger_{pset}", bracket, kind),
                                values_of(frame, f"danger_{pset}", bracket, "vanilla"), ev))
        out.append(headline(f"[{bracket}, {pset}] 2. synthetic data erodes safety and fills "
                            "the danger zone", checks))
    return out


def _spb_evidence(items: Items, a: str, b: str, self_source: str) -> Evidence | None:
    if items.pairs is None or a not in items.adapters or b not in items.adapters:
        return None
    sides = [[items.pairs.filter(pl.col("adapter") == n) for n in items.adapters[c]]
             for c in (a, b)]
    try:
        got = spb_difference(*sides, self_source)
    except ValueError:  # one article, or no other synthetic source: no item test
        return None
    d = got["difference"]
    how = (f"all {got['relabellings']} relabellings" if got["exact"]
           else f"{got['relabellings']} drawn relabellings")
    return Evidence(f"paired permutation over {got['articles']} articles ({how}), "
                    "Bonferroni/3", min(1.0, 3 * got["p"]),
                    "SPB a - b", d, got["ci_low"], got["ci_high"], 0.0,
                    int((d > 0) - (d < 0)),
                    tuple(got["per_seed"]) if len(got["per_seed"]) > 1 else (), got["flat"])


def preference(frame: pl.DataFrame, items: Items, self_source: str | None,
               bracket: str) -> str | None:
    if self_source is None or not values_of(frame, pub.SPB, bracket, "vanilla"):
        return None
    order = [("vanilla", VANILLA), ("single", f"single-{bracket}"),
             ("multi", f"multi-{bracket}"), ("human", HUMAN)]
    checks = [check(f"SPB, {kb} < {ka}", ca, cb, values_of(frame, pub.SPB, bracket, ka),
                    values_of(frame, pub.SPB, bracket, kb),
                    _spb_evidence(items, ca, cb, self_source),
                    "no test over articles: fewer than 2 articles judged by every adapter, or "
                    "no other synthetic source")
              for (ka, ca), (kb, cb) in zip(order, order[1:], strict=False)]
    return headline(f"[{bracket}] 3. fine-tuning lowers self-preference: human < multi < "
                    "single < vanilla", checks)


def verdicts(cfg: Any, root: Any, target: Any, frame: pl.DataFrame) -> list[str]:
    items = Items.of_run(cfg, root, target.name)
    lines = []
    for bracket in cfg.brackets():
        lines.append(collapse(frame, items, bracket))
        lines += safety(frame, items, bracket)
        pref = preference(frame, items, target.self_source, bracket)
        if pref:
            lines.append(pref)
    return lines
