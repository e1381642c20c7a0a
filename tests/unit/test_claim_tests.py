"""The verdicts' one rule (metrics/claim_tests.py), each number against an independent
computation: scipy's Mann-Whitney U and bootstrap, permutation p-values by enumerating every
labelling of small sets, the stratified exact test by enumerating every table, Newcombe's
interval by statsmodels; and the rule's refusals on hand-made values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from synth_ray.metrics import claim_tests as ct
from synth_ray.metrics.item_tests import spb_difference
from tests.unit.test_item_tests import judged


def test_one_seed_is_the_authors_mann_whitney_with_its_own_statistic_as_effect() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.4, 1, 60).round(1), rng.normal(0, 1, 70).round(1)  # with ties
    ev = ct.rank_check([list(a)], [list(b)], family=6)
    mw = stats.mannwhitneyu(a, b, alternative="two-sided")
    assert ev.p == pytest.approx(min(1.0, 6 * mw.pvalue), rel=1e-12)
    assert ev.effect == pytest.approx(mw.statistic / (len(a) * len(b)), rel=1e-12)
    assert ev.test == "Mann-Whitney U, Bonferroni/6" and ev.seed_effects == ()
    # the interval: scipy's percentile bootstrap of the same statistic, items resampled
    # within each sample (other draws, so only close)
    ref = stats.bootstrap((a, b), lambda x, y: ct.superiority(x, y), vectorized=False,
                          n_resamples=2000, method="percentile",
                          random_state=np.random.default_rng(0)).confidence_interval
    assert ev.low == pytest.approx(ref.low, abs=0.02)
    assert ev.high == pytest.approx(ref.high, abs=0.02)
    assert ev.low < ev.effect < ev.high


def test_u_of_every_pair_in_one_labelling_is_scipys() -> None:
    rng = np.random.default_rng(1)
    sets = [rng.integers(0, 6, n).astype(float) for n in (7, 9, 5)]  # many ties
    vals = np.concatenate(sets)
    labs = np.concatenate([np.full(len(s), k) for k, s in enumerate(sets)])
    order = np.argsort(vals, kind="stable")
    pairs = [(0, 2), (1, 2), (2, 0)]
    got = ct._pair_us(vals[order], labs[order][None, :], pairs)[0]
    for (i, j), u in zip(pairs, got, strict=True):
        assert u == pytest.approx(stats.mannwhitneyu(sets[i], sets[j]).statistic)


def _enumerated_p(blocks: list[list[np.ndarray]], stat) -> float:
    """Two-sided p of `stat` over every relabelling of each block (its sets' sizes kept)."""
    def splits(items: tuple[int, ...], sizes: list[int]):
        if not sizes:
            yield []
            return
        for first in itertools.combinations(items, sizes[0]):
            rest = tuple(i for i in items if i not in first)
            for tail in splits(rest, sizes[1:]):
                yield [list(first), *tail]

    def labellings(block):
        pooled = np.concatenate(block)
        return [[pooled[idx] for idx in split]
                for split in splits(tuple(range(len(pooled))), [len(s) for s in block])]
    seen = stat(blocks)
    values = [stat(list(combo)) for combo in itertools.product(*map(labellings, blocks))]
    return float(np.mean([abs(v - 0.5) >= abs(seen - 0.5) - 1e-12 for v in values]))


def test_permutation_within_seeds_matches_every_relabelling() -> None:
    a = [np.array([3.0, 4.0, 5.0]), np.array([2.0, 6.0, 7.0])]
    b = [np.array([1.0, 2.5, 3.5]), np.array([0.0, 1.0, 2.0])]
    exact = _enumerated_p([[a[0], b[0]], [a[1], b[1]]],
                          lambda bl: np.mean([ct.superiority(x, y) for x, y in bl]))
    ev = ct.rank_check([list(x) for x in a], [list(y) for y in b])
    assert ev.p == pytest.approx(exact, abs=0.025)
    assert "labels within seeds" in ev.test
    assert ev.seed_effects == (ct.superiority(a[0], b[0]), ct.superiority(a[1], b[1]))


def test_permutation_with_a_shared_vanilla_matches_every_relabelling() -> None:
    a = [np.array([3.0, 4.0, 5.0]), np.array([2.0, 6.0, 4.5])]
    v = np.array([1.0, 2.5, 3.5])
    exact = _enumerated_p([[a[0], a[1], v]],
                          lambda bl: np.mean([ct.superiority(x, bl[0][2])
                                              for x in bl[0][:2]]))
    ev = ct.rank_check([list(x) for x in a], [list(v)])
    assert ev.p == pytest.approx(exact, abs=0.025)
    assert "vanilla shared" in ev.test


def _stratified_by_enumeration(tables) -> float:
    """Every K-tuple of tables with the strata's margins, its probability the product of
    hypergeometric probabilities written out with math.comb."""
    ranges, probs = [], []
    for xa, na, xb, nb in tables:
        t = xa + xb
        ks = range(max(0, t - nb), min(na, t) + 1)
        ranges.append(list(ks))
        probs.append({k: math.comb(na, k) * math.comb(nb, t - k) / math.comb(na + nb, t)
                      for k in ks})
    law: dict[int, float] = {}
    for combo in itertools.product(*ranges):
        p = math.prod(probs[i][k] for i, k in enumerate(combo))
        law[sum(combo)] = law.get(sum(combo), 0.0) + p
    seen = law[sum(x for x, *_ in tables)]
    return sum(p for p in law.values() if p <= seen * (1 + 1e-7))


@pytest.mark.parametrize("tables", [[(5, 12, 1, 10), (4, 9, 2, 11)],
                                    [(0, 8, 3, 8), (1, 10, 1, 10), (2, 7, 0, 9)],
                                    [(3, 10, 3, 10)]])
def test_stratified_exact_test_is_the_enumerated_law(tables) -> None:
    p, _ = ct.stratified_exact_p(tables)
    assert p == pytest.approx(_stratified_by_enumeration(tables), rel=1e-9)
    if len(tables) == 1:
        (xa, na, xb, nb), = tables
        assert p == pytest.approx(stats.fisher_exact([[xa, na - xa], [xb, nb - xb]]).pvalue)


def test_proportion_interval_is_newcombes() -> None:
    from statsmodels.stats.proportion import confint_proportions_2indep

    ev = ct.proportion_check([(56, 70)], [(48, 80)])
    low, high = confint_proportions_2indep(56, 70, 48, 80, method="newcomb", compare="diff")
    assert (ev.low, ev.high) == pytest.approx((low, high), rel=1e-9)
    assert ev.effect == pytest.approx(56 / 70 - 48 / 80)
    assert ev.p == pytest.approx(stats.fisher_exact([[56, 14], [48, 32]]).pvalue)
    # two seeds against the vanilla target: the pooled table, exact under the null
    ev = ct.proportion_check([(30, 40), (26, 30)], [(48, 80)])
    assert ev.p == pytest.approx(stats.fisher_exact([[56, 14], [48, 32]]).pvalue)
    assert ev.seed_effects == pytest.approx((30 / 40 - 0.6, 26 / 30 - 0.6))


def test_zero_spread_and_a_tiny_difference_is_never_evidence() -> None:
    """Two seeds of 1.0000001 against vanilla's 1.0, every item alike: no test, no claim;
    one seed the same. A danger share of 1/10 in both seeds against vanilla's 0/10 is
    Fisher's p = 1, not an effect."""
    for seeds in (1, 2):
        ev = ct.rank_check([[1.0000001] * 20] * seeds, [[1.0] * 20])
        assert ev.state()[0] == "none" and "no spread" in ev.state()[1]
    ev = ct.proportion_check([(1, 10), (1, 10)], [(0, 10)], family=2)
    assert ev.state() == ("none", "not significant") and ev.p == 1.0
    ev = ct.proportion_check([(0, 10), (0, 10)], [(0, 10)])
    assert ev.state()[0] == "none"


def test_direction_is_the_tests_own_statistic_not_the_mean() -> None:
    """a's mean is lower than b's (b has a block of 10s), yet a beats two thirds of b's
    items: the rank test is significant and says a is higher, so the check holds; it can
    never read the other way."""
    a = [1.0] * 50 + [2.0] * 10
    b = [0.0] * 40 + [10.0] * 20
    assert np.mean(a) < np.mean(b)
    ev = ct.rank_check([a], [b])
    assert ev.p < 0.05 and ev.effect > 0.5
    assert ev.state() == ("holds", "significant")
    assert ct.rank_check([b], [a]).state() == ("reversed", "significant")


def test_seeds_that_disagree_are_no_verdict() -> None:
    rng = np.random.default_rng(5)
    up = list(rng.normal(1.0, 1, 300))
    down = list(rng.normal(-0.2, 1, 300))
    base = [list(rng.normal(0, 1, 300)), list(rng.normal(0, 1, 300))]
    ev = ct.rank_check([up, down], base)
    assert ev.p < 0.05  # pooled, the first seed carries it
    assert ev.seed_effects[0] > 0.5 > ev.seed_effects[1]
    assert ev.state() == ("none", "the seeds disagree in sign")
    agree = ct.rank_check([up, list(rng.normal(1.0, 1, 300))], base)
    assert agree.state() == ("holds", "significant")


def test_seeds_of_two_trained_conditions_pair_one_to_one() -> None:
    with pytest.raises(ValueError, match="pair one to one"):
        ct.rank_check([[1.0, 2.0]] * 3, [[1.0, 2.0]] * 2)


def test_spb_over_seeds_is_the_mean_of_each_seeds_paired_difference() -> None:
    van = judged("vanilla", 12, 0.1, seed=1)
    seeds = [judged(f"single-s-seed{k}", 12, 0.0, seed=10 + k) for k in (1, 2)]
    got = spb_difference([van], seeds, "self", resamples=400)
    alone = [spb_difference(van, s, "self", resamples=400)["difference"] for s in seeds]
    assert got["per_seed"] == pytest.approx(alone, rel=1e-12)
    assert got["difference"] == pytest.approx(np.mean(alone), rel=1e-12)
    assert got["ci_low"] < got["difference"] < got["ci_high"] and not got["flat"]


def test_spb_over_adapters_that_judged_other_articles() -> None:
    """An adapter whose pairs on some articles all failed (no p_a) judged fewer articles:
    the bootstrap runs over the articles every adapter judged, no error."""
    van = judged("vanilla", 12, 0.1, seed=1)
    single = judged("single-s", 12, 0.0, seed=2).filter(
        ~pl.col("article_id").is_in(["art-10", "art-11"]))
    got = spb_difference(van, single, "self", resamples=300)
    assert got["articles"] == 10
    same = spb_difference(van.filter(pl.col("article_id").is_in(single["article_id"])),
                          single, "self", resamples=300)
    assert got["difference"] == pytest.approx(same["difference"], rel=1e-12)
