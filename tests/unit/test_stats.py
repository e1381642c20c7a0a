from __future__ import annotations

import numpy as np
import pytest

from synth_ray.metrics.stats import bootstrap_ci, compare_groups, summarize, tukey_mask


def test_tukey_fences_by_hand() -> None:
    x = [1, 2, 3, 4, 5, 100]
    q1, q3 = np.percentile(x, [25, 75])
    assert (q1, q3) == (2.25, 4.75)  # fences -1.5 and 8.5: only 100 is out
    assert tukey_mask(x).tolist() == [True] * 5 + [False]
    s = summarize(x)
    assert (s["n"], s["n_kept"], s["mean"], s["median"]) == (6, 5, 3.0, 3.5)
    assert s["ci_low"] <= 3.0 <= s["ci_high"]
    assert summarize(x, outlier_rule="none")["mean"] == pytest.approx(115 / 6)


def test_bootstrap_ci_covers_known_mean() -> None:
    rng = np.random.default_rng(0)
    lo, hi = bootstrap_ci(rng.normal(10, 1, 400))
    assert lo < 10 < hi and hi - lo < 0.4  # ~ +-1.96 * 1/20


def test_compare_groups_corrects_for_pairs() -> None:
    rng = np.random.default_rng(1)
    groups = {"a": rng.normal(0, 1, 60), "b": rng.normal(0, 1, 60), "c": rng.normal(3, 1, 60)}
    res = compare_groups(groups)
    assert res["kruskal"]["p"] < 1e-10
    by_pair = {(p["a"], p["b"]): p for p in res["pairs"]}
    assert set(by_pair) == {("a", "b"), ("a", "c"), ("b", "c")}
    for p in res["pairs"]:
        assert p["p_bonferroni"] == pytest.approx(min(1.0, 3 * p["p"]))
    assert by_pair[("a", "c")]["p_bonferroni"] < 1e-10 and by_pair[("a", "b")]["p"] > 0.01
    assert compare_groups({"only": [1.0, 2.0]})["kruskal"] is None


def test_a_brackets_family_is_its_four_conditions() -> None:
    """The authors' tests per bracket: vanilla, single, multi, human; Bonferroni over those
    6 pairs even when the target has more conditions; Levene median-centred (scipy)."""
    import itertools

    import numpy as np
    from scipy import stats

    from synth_ray.metrics.stats import compare_family

    rng = np.random.default_rng(3)
    groups = {c: list(rng.lognormal(1 + 0.1 * i, 0.3 + 0.05 * i, 40))
              for i, c in enumerate(["vanilla", "human", "single-small", "multi-small",
                                     "single-large", "multi-large"])}
    fam = ["vanilla", "single-small", "multi-small", "human"]
    out = compare_family(groups, fam)
    assert out["conditions"] == fam
    want_pairs = set(itertools.combinations(fam, 2))
    assert {(p["a"], p["b"]) for p in out["pairs"]} == want_pairs
    for p in out["pairs"]:
        raw = stats.mannwhitneyu(groups[p["a"]], groups[p["b"]], alternative="two-sided").pvalue
        assert p["p_bonferroni"] == min(1.0, raw * 6)
    w = stats.levene(*[groups[c] for c in fam], center="median")
    assert out["levene"] == {"W": w.statistic, "p": w.pvalue}
    assert out["kruskal"]["H"] == stats.kruskal(*[groups[c] for c in fam]).statistic
