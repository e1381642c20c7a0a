"""The paper's three claims: what decides a check (seeds where there are seeds, the named test
across items with one seed), the tests against scipy on crafted judgements, and the paper
tables' published numbers."""

from __future__ import annotations

import polars as pl
from scipy import stats

from synth_ray.core.config import load_config
from synth_ray.report import published as pub
from synth_ray.report.paper_tables import SCHEMA, cell, pooled_danger, table
from synth_ray.report.verdicts import check, headline, safety
from tests.conftest import CONFIGS


def test_across_seeds_the_error_bars_must_be_apart() -> None:
    holds = check("c", "multi-x", "single-x", [52.0, 54.0, 53.0], [27.0, 25.0, 29.0], None)
    assert holds.state == "holds" and "seeds 3 / 3" in holds.text
    within = check("c", "multi-x", "single-x", [52.0, 55.0, 49.0], [50.0, 53.0, 47.0],
                   ("t", 1e-9))  # seeds decide: a tiny item p does not override them
    assert within.state == "none" and "within the seed spread" in within.text
    assert check("c", "a", "b", [20.0, 21.0], [40.0, 41.0], None).state == "reversed"
    # the vanilla target has no training seed: its SD counts as 0
    assert check("c", "single-x", "vanilla", [3.0, 3.2, 3.1], [2.0], None).state == "holds"
    # one seed of a trained condition: not a seed test
    one = check("c", "single-x", "vanilla", [3.0], [2.0], None)
    assert one.state == "none" and "one seed, no test across items" in one.text
    # a trained condition with one seed against one with three: the item test decides
    mixed = check("c", "single-x", "multi-x", [3.0], [2.0, 2.1, 1.9], ("t", 0.5))
    assert mixed.state == "none" and "not significant" in mixed.text


def test_one_seed_is_decided_by_the_item_test() -> None:
    assert check("c", "a", "b", [3.0], [2.0], ("MWU", 0.01)).state == "holds"
    assert check("c", "a", "b", [1.0], [2.0], ("MWU", 0.01)).state == "reversed"
    ns = check("c", "a", "b", [3.0], [2.0], ("MWU", 0.2))
    assert ns.state == "none" and "MWU p = 0.2" in ns.text
    assert check("c", "a", "b", [3.0], [2.0], ("MWU", float("nan"))).state == "none"
    assert check("c", "a", "b", [], [2.0], None).state == "unmeasured"


def test_headline_words() -> None:
    def c(state: str):
        return check("x", "a", "b", *{"holds": ([3.0], [1.0]), "reversed": ([1.0], [3.0]),
                                     "none": ([1.0], [1.0])}[state], ("t", 0.001))
    assert "**holds**" in headline("h", [c("holds"), c("holds")])
    assert "**partly holds**" in headline("h", [c("holds"), c("none")])
    assert "**mixed**" in headline("h", [c("holds"), c("reversed")])
    assert "**not supported**" in headline("h", [c("none")])


def test_safety_claim_uses_mann_whitney_and_fisher_as_scipy() -> None:
    rows = []
    for cond, harms in (("vanilla", [1, 1, 2, 1, 1, 2, 1, 1, 3, 1]),
                        ("single-s", [5, 4, 5, 5, 3, 5, 4, 5, 5, 4]),
                        ("multi-s", [2, 1, 1, 3, 1, 2, 1, 1, 1, 2]),
                        ("human", [3, 3, 2, 4, 3, 3, 2, 3, 3, 3])):
        for h in harms:
            rows.append({"condition": cond, "prompt_set": "RB+J", "harm": h, "quality": 4,
                         "danger": h >= 4})
    judgements = pl.DataFrame(rows)
    frame = pl.DataFrame(
        [{"adapter": c, "condition": c, "kind": c.split("-")[0],
          "bracket": c.split("-")[1] if "-" in c else None, "metric": m, "value": v}
         for c in ("vanilla", "single-s", "multi-s", "human")
         for m, v in (("harm_RB+J", judgements.filter(pl.col("condition") == c)["harm"].mean()),
                      ("danger_RB+J", judgements.filter(pl.col("condition") == c)["danger"]
                       .mean()))], schema=SCHEMA)
    [text] = safety(frame, judgements, "s")
    v = [1, 1, 2, 1, 1, 2, 1, 1, 3, 1]
    p_single = min(1.0, 6 * stats.mannwhitneyu([5, 4, 5, 5, 3, 5, 4, 5, 5, 4], v,
                                               alternative="two-sided").pvalue)
    assert "harm, single > vanilla: holds" in text and f"p = {p_single:.3g}" in text
    p_multi = min(1.0, 6 * stats.mannwhitneyu([2, 1, 1, 3, 1, 2, 1, 1, 1, 2], v,
                                              alternative="two-sided").pvalue)
    assert "harm, multi > vanilla: not significant" in text and f"p = {p_multi:.3g}" in text
    fisher = min(1.0, 2 * stats.fisher_exact([[9, 1], [0, 10]]).pvalue)
    assert "danger-zone share, single > vanilla: holds" in text
    assert f"Fisher exact, Bonferroni/2 p = {fisher:.3g}" in text
    assert "**partly holds**" in text


def test_paper_tables_show_the_published_number_and_the_difference() -> None:
    cfg = load_config(CONFIGS / "paper-8b.yaml")
    assert [t.published for t in cfg.targets] == ["llama-3.1-8b"]
    assert [t.published for t in load_config(CONFIGS / "paper-70b.yaml").targets] == [
        "llama-3.1-70b"]
    assert cell([1.31, 1.35], 1.26).startswith("1.33 ± 0.028 (paper 1.26, Δ +0.07)")
    assert cell([], 2.68) == "- (paper 2.68)"
    frame = pl.DataFrame([{"adapter": "multi-medium", "condition": "multi-medium",
                           "kind": "multi", "bracket": "medium", "metric": pub.PERPLEXITY,
                           "value": 1.30}], schema=SCHEMA)
    md = table(frame, ["small", "medium"], [(pub.PERPLEXITY, "ppl")], "llama-3.1-70b")
    row = next(line for line in md.splitlines() if line.startswith("| medium"))
    assert "1.3 (paper 1.26, Δ +0.04)" in row and "- (paper 1.2)" in row
    assert "small" not in md  # no value in that bracket: no row


def test_danger_zone_pooled_over_brackets(tmp_path) -> None:
    base = tmp_path / "judge" / "t"
    base.mkdir(parents=True)
    pl.DataFrame({"condition": ["single-small", "single-medium", "multi-small",
                                "multi-medium", "vanilla"],
                  "adapter": ["single-small", "single-medium", "multi-small",
                              "multi-medium", "vanilla"],
                  "prompt_set": ["RB"] * 5, "danger": [3, 1, 0, 2, 9],
                  "scored": [10, 30, 20, 20, 10]}).write_parquet(base / "danger_zone.parquet")
    md = pooled_danger(tmp_path, "t")
    assert "| single | RB | 4 | 40 | 0.1 | 2 |" in md and "| multi | RB | 2 | 40 | 0.05 | 2 |" in md
    assert "vanilla" not in md


def test_self_preference_with_one_article_has_no_item_test() -> None:
    """A bootstrap over one article says nothing: the check falls back to the direction."""
    from synth_ray.report.verdicts import preference

    pairs = pl.DataFrame({"adapter": ["vanilla", "single-s"] * 2, "article_id": ["a"] * 4,
                          "source_a": ["me", "me", "other", "other"],
                          "source_b": ["other", "other", "me", "me"],
                          "p_a": [0.7, 0.6, 0.3, 0.4]})
    frame = pl.DataFrame([{"adapter": c, "condition": c, "kind": c.split("-")[0],
                           "bracket": "s" if "-" in c else None, "metric": pub.SPB, "value": v}
                          for c, v in (("vanilla", 0.2), ("single-s", 0.1))], schema=SCHEMA)
    text = preference(frame, pairs, "me", {"vanilla": "vanilla", "single-s": "single-s"}, "s")
    assert "SPB, single < vanilla: one seed, no test across items" in text
