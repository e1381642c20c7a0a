"""Tests across items (one training seed): Fisher's exact test on danger-zone counts, and an
SPB difference's paired permutation over articles (p) and paired bootstrap (interval), each
against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from synth_ray.metrics.item_tests import danger_fisher, spb_difference

SOURCES = ["self", "other-1", "other-2", "human"]


def fisher_by_enumeration(a: int, na: int, b: int, nb: int) -> float:
    """Two-sided Fisher p from the hypergeometric law written out: the probability of every
    table with the same margins that is no more likely than the one seen."""
    total, hits = na + nb, a + b

    def prob(k: int) -> float:
        return math.comb(na, k) * math.comb(nb, hits - k) / math.comb(total, hits)

    seen = prob(a)
    lo, hi = max(0, hits - nb), min(na, hits)
    return sum(prob(k) for k in range(lo, hi + 1) if prob(k) <= seen * (1 + 1e-7))


@pytest.mark.parametrize("counts", [(12, 40, 3, 40), (0, 25, 0, 30), (7, 9, 2, 11),
                                    (30, 200, 41, 180)])
def test_danger_fisher_is_the_hypergeometric_tail(counts) -> None:
    assert danger_fisher(*counts) == pytest.approx(fisher_by_enumeration(*counts), rel=1e-9)


def test_danger_fisher_refuses_empty_conditions() -> None:
    with pytest.raises(ValueError, match="scored responses"):
        danger_fisher(0, 0, 3, 10)


def judged(adapter: str, articles: int, self_pull: float, seed: int) -> pl.DataFrame:
    """Every pair of 4 sources in both orders per article; p_a noisy around 0.5 plus
    `self_pull` towards the self source's summary."""
    rng = np.random.default_rng(seed)
    rows = []
    for art in range(articles):
        for a, b in ((a, b) for a in SOURCES for b in SOURCES if a != b):  # both orders
            p = 0.5 + rng.normal(0, 0.1) + (self_pull if a == "self" else
                                             -self_pull if b == "self" else 0.0)
            rows.append({"adapter": adapter, "article_id": f"art-{art}", "source_a": a,
                         "source_b": b, "p_a": float(min(max(p, 0.01), 0.99))})
    return pl.DataFrame(rows)


def spb_by_hand(rows: list[dict]) -> float:
    """PAPER.md's SPB written out in plain Python, independent of spb.py: S_m is the mean
    probability of the label marking m's summary over every judgement holding m; SPB is
    S_self minus the mean S of the other synthetic sources (human left out)."""
    won: dict[str, list[float]] = {}
    for r in rows:
        won.setdefault(r["source_a"], []).append(r["p_a"])
        won.setdefault(r["source_b"], []).append(1 - r["p_a"])
    s = {m: sum(v) / len(v) for m, v in won.items()}
    return s["self"] - (s["other-1"] + s["other-2"]) / 2


def test_spb_difference_matches_a_hand_computation_and_a_plain_bootstrap() -> None:
    a, b = judged("a", 12, 0.15, 1), judged("b", 12, 0.0, 2)
    got = spb_difference(a, b, "self", resamples=300, seed=7)
    want = spb_by_hand(a.to_dicts()) - spb_by_hand(b.to_dicts())
    assert got["difference"] == pytest.approx(want, abs=1e-12)
    # the same article draws, recomputed the slow way: each resample's articles (with
    # repeats) gathered row by row, SPB by hand
    rng = np.random.default_rng(7)
    draws = rng.integers(0, 12, size=(300, 12))
    arts = sorted(set(a["article_id"]))
    by_art = {side: {art: [r for r in df.to_dicts() if r["article_id"] == art] for art in arts}
              for side, df in (("a", a), ("b", b))}
    slow = []
    for row in draws:
        slow.append(spb_by_hand([r for i in row for r in by_art["a"][arts[i]]])
                    - spb_by_hand([r for i in row for r in by_art["b"][arts[i]]]))
    slow = np.array(slow)
    assert got["ci_low"] == pytest.approx(np.percentile(slow, 2.5), abs=1e-12)
    assert got["ci_high"] == pytest.approx(np.percentile(slow, 97.5), abs=1e-12)
    assert not got["exact"] and got["relabellings"] == 300  # 2^12 > 300: drawn
    assert got["p"] < 0.01  # a pull of 0.15 towards self over 12 articles is clear


def relabelled_by_hand(a: pl.DataFrame, b: pl.DataFrame) -> float:
    """Every relabelling written out: for each subset of articles, those articles' rows of
    a and b exchanged (the adapter column left as it is), SPB by hand on each side; the
    share of relabellings whose |difference| reaches the observed one."""
    arts = sorted(set(a["article_id"]))
    rows = {side: {art: [r for r in df.to_dicts() if r["article_id"] == art] for art in arts}
            for side, df in (("a", a), ("b", b))}
    diffs = []
    for mask in range(2 ** len(arts)):
        side_a, side_b = [], []
        for i, art in enumerate(arts):
            swapped = mask >> i & 1
            side_a += rows["b" if swapped else "a"][art]
            side_b += rows["a" if swapped else "b"][art]
        diffs.append(spb_by_hand(side_a) - spb_by_hand(side_b))
    observed = diffs[0]  # mask 0: nothing swapped
    return sum(abs(d) >= abs(observed) - 1e-12 for d in diffs) / len(diffs)


def test_spb_p_is_the_paired_permutation_over_articles() -> None:
    a, b = judged("a", 6, 0.08, 11), judged("b", 6, 0.0, 12)
    got = spb_difference(a, b, "self", resamples=2000)
    assert got["exact"] and got["relabellings"] == 64
    assert got["p"] == pytest.approx(relabelled_by_hand(a, b), abs=1e-12)


def test_a_handful_of_articles_cannot_decide() -> None:
    # 4 articles, every one pulled hard towards self: the bootstrap's p fell to its floor
    # (1 / resamples); the permutation's smallest two-sided p with 4 articles is 2 / 16
    a, b = judged("a", 4, 0.3, 21), judged("b", 4, 0.0, 22)
    got = spb_difference(a, b, "self", resamples=2000)
    assert got["difference"] > 0.2 and got["ci_low"] > 0
    assert got["p"] == pytest.approx(2 / 16)


def test_spb_difference_finds_nothing_between_alike_adapters() -> None:
    a, b = judged("a", 10, 0.0, 3), judged("b", 10, 0.0, 4)
    assert spb_difference(a, b, "self", resamples=500)["p"] > 0.05
    with pytest.raises(ValueError, match="two or more articles"):
        spb_difference(a.filter(pl.col("article_id") == "art-0"), b, "self")
