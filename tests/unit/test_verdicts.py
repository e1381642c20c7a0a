"""The paper's three claims: a check is decided by its test across items (every seed's items)
and shown as a table row, the tests against scipy on crafted judgements, and the paper
tables' published numbers."""

from __future__ import annotations

import polars as pl
import pytest
from scipy import stats

from synth_ray.config import load_config
from synth_ray.metrics.claim_tests import rank_check
from synth_ray.report import published as pub
from synth_ray.report.paper_tables import SCHEMA, cell, pooled_danger, table
from synth_ray.report.verdicts import HEADER, Items, check, headline, safety
from tests.conftest import CONFIGS


def test_a_check_is_decided_by_its_evidence_never_by_the_seed_spread() -> None:
    """Seeds far apart with error bars apart, but no test across items: shown, untested,
    and the headline counts it neither way."""
    untested = check("c", "multi-x", "single-x", [52.0, 54.0, 53.0], [27.0, 25.0, 29.0], None)
    assert untested.state == "untested" and "not evidence" in untested.why
    assert "not tested" in headline("h", [untested])
    # two seeds of 1.0000001 against vanilla's 1.0, the items without spread: no claim
    flat = rank_check([[1.0000001] * 8, [1.0000001] * 8], [[1.0] * 8])
    c = check("c", "single-x", "vanilla", [1.0000001, 1.0000001], [1.0], flat)
    assert c.state == "none" and "no spread" in c.row()[-1]
    assert check("c", "a", "b", [], [2.0], flat).state == "unmeasured"


def test_headline_words_and_the_checks_table() -> None:
    up = rank_check([[3.0, 4, 5, 6, 7, 8, 9] * 3], [[0.0, 1, 2, 1, 0, 2, 1] * 3])
    down = rank_check([[0.0, 1, 2, 1, 0, 2, 1] * 3], [[3.0, 4, 5, 6, 7, 8, 9] * 3])
    same = rank_check([[1.0, 2, 3]], [[1.0, 2, 3]])

    def c(ev):
        return check("x", "a", "b", [1.0], [1.0], ev)
    assert "**holds**" in headline("h", [c(up), c(up)])
    assert "**partly holds**" in headline("h", [c(up), c(same)])
    assert "**mixed**" in headline("h", [c(up), c(down)])
    assert "**not supported**" in headline("h", [c(same)])
    # each claim's checks are a table: check, values, test, p, effect and interval, seeds
    text = headline("h", [c(up)])
    header, _, row = text.split("\n")[2:5]
    assert header == "| " + " | ".join(HEADER) + " |"
    cells = [x.strip() for x in row.strip("|").split("|")]
    assert cells[2] == "Mann-Whitney U" and float(cells[3]) == pytest.approx(up.p, rel=1e-2)
    assert cells[4].startswith(f"A = P(a > b) {up.effect:.3g} [") and cells[-1] == "holds"


def _judgements() -> pl.DataFrame:
    rows = []
    for cond, harms in (("vanilla", [1, 1, 2, 1, 1, 2, 1, 1, 3, 1]),
                        ("single-s", [5, 4, 5, 5, 3, 5, 4, 5, 5, 4]),
                        ("multi-s", [2, 1, 1, 3, 1, 2, 1, 1, 1, 2]),
                        ("human", [3, 3, 2, 4, 3, 3, 2, 3, 3, 3])):
        for h in harms:
            rows.append({"adapter": cond, "condition": cond, "prompt_set": "RB+J", "harm": h,
                         "quality": 4, "danger": h >= 4})
    return pl.DataFrame(rows)


def _row(text: str, label: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith(f"| {label} |"))
    return [x.strip() for x in line.strip("|").split("|")]


def test_safety_claim_uses_mann_whitney_and_fisher_as_scipy() -> None:
    judgements = _judgements()
    frame = pl.DataFrame(
        [{"adapter": c, "condition": c, "kind": c.split("-")[0],
          "bracket": c.split("-")[1] if "-" in c else None, "metric": m, "value": v}
         for c in ("vanilla", "single-s", "multi-s", "human")
         for m, v in (("harm_RB+J", judgements.filter(pl.col("condition") == c)["harm"].mean()),
                      ("danger_RB+J", judgements.filter(pl.col("condition") == c)["danger"]
                       .mean()))], schema=SCHEMA)
    items = Items({c: [c] for c in ("vanilla", "single-s", "multi-s", "human")},
                  judgements=judgements)
    [text] = safety(frame, items, "s")
    v = [1, 1, 2, 1, 1, 2, 1, 1, 3, 1]
    p_single = min(1.0, 6 * stats.mannwhitneyu([5, 4, 5, 5, 3, 5, 4, 5, 5, 4], v,
                                               alternative="two-sided").pvalue)
    row = _row(text, "harm, single > vanilla")
    assert row[2:4] == ["Mann-Whitney U, Bonferroni/6", f"{p_single:.3g}"] and row[-1] == "holds"
    p_multi = min(1.0, 6 * stats.mannwhitneyu([2, 1, 1, 3, 1, 2, 1, 1, 1, 2], v,
                                              alternative="two-sided").pvalue)
    row = _row(text, "harm, multi > vanilla")
    assert row[3] == f"{p_multi:.3g}" and row[-1] == "none: not significant"
    fisher = min(1.0, 2 * stats.fisher_exact([[9, 1], [0, 10]]).pvalue)
    row = _row(text, "danger-zone share, single > vanilla")
    assert row[2:4] == ["Fisher exact, Bonferroni/2", f"{fisher:.3g}"] and row[-1] == "holds"
    assert row[4].startswith("share a - b 0.9 [")
    assert "**partly holds**" in text


def test_safety_with_seeds_tests_every_seeds_items() -> None:
    """Two seeds per trained condition: the harm check permutes across vanilla's and both
    seeds' items, the danger check pools the seeds against vanilla; each seed's effect is
    in the table."""
    base = _judgements().filter(pl.col("condition").is_in(["vanilla", "single-s"]))
    seeded = pl.concat([base.filter(pl.col("condition") == "vanilla")] + [
        base.filter(pl.col("condition") == "single-s").with_columns(
            adapter=pl.lit(f"single-s-seed{k}")) for k in (1, 2)])
    items = Items({"vanilla": ["vanilla"], "single-s": ["single-s-seed1", "single-s-seed2"]},
                  judgements=seeded)
    frame = pl.DataFrame([{"adapter": a, "condition": c, "kind": c.split("-")[0],
                           "bracket": "s" if "-" in c else None, "metric": m,
                           "value": 0.5} for a, c in (("vanilla", "vanilla"),
                                                      ("single-s-seed1", "single-s"),
                                                      ("single-s-seed2", "single-s"))
                          for m in ("harm_RB+J", "danger_RB+J")],
                         schema=SCHEMA)
    [text] = safety(frame, items, "s")
    row = _row(text, "harm, single > vanilla")
    assert row[2].startswith("permutation, 2 seeds, labels across all sets (vanilla shared)")
    u = stats.mannwhitneyu([5, 4, 5, 5, 3, 5, 4, 5, 5, 4], [1, 1, 2, 1, 1, 2, 1, 1, 3, 1])
    assert row[5] == f"{u.statistic / 100:.3g}, {u.statistic / 100:.3g}" and row[-1] == "holds"
    row = _row(text, "danger-zone share, single > vanilla")
    assert row[2] == "Fisher exact, 2 seeds pooled, Bonferroni/2"
    assert row[3] == f"{min(1.0, 2 * stats.fisher_exact([[18, 2], [0, 10]]).pvalue):.3g}"


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
    # the 70B target's published SPB: vanilla 0.238 and the human-trained adapter's 0.060,
    # in every bracket's row (neither depends on a bracket); none for its synthetic ones
    for b in ("small", "medium", "large"):
        assert pub.published("llama-3.1-70b", pub.SPB, b, "human") == 0.060
        assert pub.published("llama-3.1-70b", pub.SPB, b, "vanilla") == 0.238
        assert pub.published("llama-3.1-70b", pub.SPB, b, "single") is None


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
    """A bootstrap over one article says nothing: the check is shown, untested."""
    from synth_ray.report.verdicts import preference

    pairs = pl.DataFrame({"adapter": ["vanilla", "single-s"] * 2, "article_id": ["a"] * 4,
                          "source_a": ["me", "me", "other", "other"],
                          "source_b": ["other", "other", "me", "me"],
                          "p_a": [0.7, 0.6, 0.3, 0.4]})
    frame = pl.DataFrame([{"adapter": c, "condition": c, "kind": c.split("-")[0],
                           "bracket": "s" if "-" in c else None, "metric": pub.SPB, "value": v}
                          for c, v in (("vanilla", 0.2), ("single-s", 0.1))], schema=SCHEMA)
    items = Items({"vanilla": ["vanilla"], "single-s": ["single-s"]}, pairs=pairs)
    text = preference(frame, items, "me", "s")
    assert _row(text, "SPB, single < vanilla")[-1].startswith(
        "untested: no test over articles: fewer than 2 articles")
