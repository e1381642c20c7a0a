"""Summary statistics and significance tests for per-sample metrics (PAPER.md, Evaluation 2).

Pure functions: numbers in, numbers out. The outlier rule for the reported mean is not
published; the default here is Tukey's fences (drop values outside [Q1 - k*IQR, Q3 + k*IQR],
k = 1.5), and the median is reported beside it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats


def tukey_mask(values: Sequence[float], k: float = 1.5) -> np.ndarray:
    """True for the values inside Tukey's fences."""
    x = np.asarray(values, dtype=float)
    q1, q3 = np.percentile(x, [25, 75])
    iqr = q3 - q1
    return (x >= q1 - k * iqr) & (x <= q3 + k * iqr)


def bootstrap_ci(values: Sequence[float], level: float = 0.95, resamples: int = 2000,
                 seed: int = 42) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (scipy.stats.bootstrap)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return (float("nan"), float("nan"))
    res = stats.bootstrap((x,), np.mean, confidence_level=level, n_resamples=resamples,
                          method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarize(values: Sequence[float], outlier_rule: str = "tukey", k: float = 1.5,
              seed: int = 42) -> dict[str, float]:
    """Mean (outliers removed by the rule), its bootstrap CI, median, and counts."""
    x = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if len(x) == 0:
        return {"n": 0, "n_kept": 0, "mean": float("nan"), "median": float("nan"),
                "ci_low": float("nan"), "ci_high": float("nan")}
    kept = x[tukey_mask(x, k)] if outlier_rule == "tukey" else x
    low, high = bootstrap_ci(kept, seed=seed)
    return {"n": int(len(x)), "n_kept": int(len(kept)), "mean": float(kept.mean()),
            "median": float(np.median(x)), "ci_low": low, "ci_high": high}


def compare_groups(groups: Mapping[str, Sequence[float]]) -> dict:
    """Kruskal-Wallis across all groups, then pairwise two-sided Mann-Whitney U with a
    Bonferroni correction (p multiplied by the number of pairs, capped at 1)."""
    names = [g for g in groups if len(groups[g]) > 0]
    out: dict = {"kruskal": None, "pairs": []}
    if len(names) < 2:
        return out
    h, p = stats.kruskal(*[np.asarray(groups[g], dtype=float) for g in names])
    out["kruskal"] = {"H": float(h), "p": float(p)}
    pairs = list(itertools.combinations(names, 2))
    for a, b in pairs:
        u, p_raw = stats.mannwhitneyu(groups[a], groups[b], alternative="two-sided")
        out["pairs"].append({"a": a, "b": b, "U": float(u), "p": float(p_raw),
                             "p_bonferroni": float(min(1.0, p_raw * len(pairs)))})
    return out


def compare_family(groups: Mapping[str, Sequence[float]], family: Sequence[str]) -> dict:
    """The authors' tests for one bracket: its conditions only (vanilla, single, multi,
    human: 6 pairs, so Bonferroni alpha 0.05/6), with Levene's test (median-centred) of
    equal spread beside Kruskal-Wallis and the pairwise Mann-Whitney U."""
    mine = {g: groups[g] for g in family if len(groups.get(g, ())) > 0}
    out = {"conditions": list(mine), **compare_groups(mine), "levene": None}
    if len(mine) >= 2:
        w, p = stats.levene(*[np.asarray(v, dtype=float) for v in mine.values()],
                            center="median")
        out["levene"] = {"W": float(w), "p": float(p)}
    return out

