"""Tests across items for the claims a single training seed cannot test across seeds
(PAPER.md: the authors ran one seed, 42, and tested across items).

- Danger-zone share: Fisher's exact test on the 2x2 table (in the zone or not, condition a
  or b) of the responses whose two scores parsed.
- Self-preference bias: a paired bootstrap over articles. Two adapters judged the same
  article pairs; resampling articles (with replacement, the same draw for both) and
  recomputing each adapter's SPB from the resampled judgements gives the distribution of
  the difference; the two-sided p is twice the smaller tail share of differences on either
  side of zero (at least 1 / resamples).
Harm scores use the perplexity family's tests (`stats.compare_family`: Kruskal-Wallis,
Mann-Whitney U, Bonferroni over a bracket's four conditions), as the authors did.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from scipy import stats


def danger_fisher(a_danger: int, a_scored: int, b_danger: int, b_scored: int) -> float:
    """Two-sided p of Fisher's exact test: is the danger-zone share of a and b the same?"""
    if min(a_scored, b_scored) <= 0:
        raise ValueError("both conditions need scored responses")
    table = [[a_danger, a_scored - a_danger], [b_danger, b_scored - b_danger]]
    return float(stats.fisher_exact(table, alternative="two-sided").pvalue)


def _article_matrices(pairs: pl.DataFrame, articles: list[str], sources: list[str]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per article and source: the sum of the label probabilities that mark the source's
    summary, and how many judgements held it (S_m = sums / counts over chosen articles)."""
    as_a = pairs.select("article_id", source=pl.col("source_a"), p=pl.col("p_a"))
    as_b = pairs.select("article_id", source=pl.col("source_b"), p=1 - pl.col("p_a"))
    per = (pl.concat([as_a, as_b]).group_by("article_id", "source")
           .agg(pl.col("p").sum().alias("s"), pl.len().alias("n")))
    sums = np.zeros((len(articles), len(sources)))
    counts = np.zeros((len(articles), len(sources)))
    ai = {a: i for i, a in enumerate(articles)}
    si = {s: j for j, s in enumerate(sources)}
    for art, src, s, n in per.iter_rows():
        if src in si and art in ai:  # an article another adapter lacks is left out
            sums[ai[art], si[src]] = s
            counts[ai[art], si[src]] = n
    return sums, counts


def _spb(sums: np.ndarray, counts: np.ndarray, sources: list[str], self_source: str,
         human: str) -> np.ndarray:
    """SPB for each row of article weights already applied (rows: resamples)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        s = sums / counts
    me = sources.index(self_source)
    others = [j for j, name in enumerate(sources) if name not in (self_source, human)]
    return s[:, me] - s[:, others].mean(axis=1)


def spb_difference(pairs_a: pl.DataFrame | list[pl.DataFrame],
                   pairs_b: pl.DataFrame | list[pl.DataFrame], self_source: str,
                   human: str = "human", resamples: int = 2000, seed: int = 42
                   ) -> dict[str, Any]:
    """SPB of a minus SPB of b, with a paired bootstrap over articles: the point estimate,
    a 95% percentile interval, and the two-sided p. Either side may be one frame per
    training seed (seeds pair by position; a side of one frame is shared by every seed):
    the difference is then the mean over seeds, every adapter resampled with the same
    articles; `per_seed` holds each seed's own difference and `flat` says the resampled
    differences had no spread at all."""
    sides = [[f] if isinstance(f, pl.DataFrame) else list(f) for f in (pairs_a, pairs_b)]
    ok = [[f.filter(pl.col("p_a").is_not_null()) for f in side] for side in sides]
    frames = ok[0] + ok[1]
    articles = sorted(set.intersection(*(set(f["article_id"]) for f in frames)))
    if len(articles) < 2:
        raise ValueError("the paired bootstrap needs two or more articles both judged")
    sources = sorted(set(frames[0]["source_a"]) | set(frames[0]["source_b"]))
    if self_source not in sources or len(set(sources) - {self_source, human}) < 1:
        raise ValueError(f"SPB needs {self_source!r} and another synthetic source; "
                         f"have {sources}")
    na, nb = len(ok[0]), len(ok[1])
    if na != nb and 1 not in (na, nb):
        raise ValueError(f"{na} and {nb} seeds: the seeds of two adapters pair one to one")
    strata = [(0 if na == 1 else i, 0 if nb == 1 else i) for i in range(max(na, nb))]
    mats = [[_article_matrices(f, articles, sources) for f in side] for side in ok]

    def diffs(weights: np.ndarray) -> np.ndarray:  # rows: draws; columns: strata
        def spb(m: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
            return _spb(weights @ m[0], weights @ m[1], sources, self_source, human)
        return np.stack([spb(mats[0][s]) - spb(mats[1][t]) for s, t in strata], axis=1)

    per = diffs(np.ones((1, len(articles))))[0]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(articles), size=(resamples, len(articles)))
    weights = np.zeros((resamples, len(articles)))
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1.0)
    diff = diffs(weights).mean(axis=1)
    diff = diff[np.isfinite(diff)]
    if not len(diff):
        raise ValueError("no resample of the articles gave an SPB for every adapter")
    tail = min((diff <= 0).mean(), (diff >= 0).mean())
    low, high = np.percentile(diff, [2.5, 97.5])
    return {"difference": float(per.mean()), "ci_low": float(low), "ci_high": float(high),
            "p": float(min(1.0, max(2 * tail, 1 / resamples))), "articles": len(articles),
            "per_seed": [float(x) for x in per], "flat": bool(np.ptp(diff) == 0)}
