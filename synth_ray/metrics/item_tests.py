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
        if src in si:
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


def spb_difference(pairs_a: pl.DataFrame, pairs_b: pl.DataFrame, self_source: str,
                   human: str = "human", resamples: int = 2000, seed: int = 42
                   ) -> dict[str, float]:
    """SPB of a minus SPB of b, with a paired bootstrap over articles: the point estimate,
    a 95% percentile interval, and the two-sided p."""
    ok_a = pairs_a.filter(pl.col("p_a").is_not_null())
    ok_b = pairs_b.filter(pl.col("p_a").is_not_null())
    articles = sorted(set(ok_a["article_id"]) & set(ok_b["article_id"]))
    if len(articles) < 2:
        raise ValueError("the paired bootstrap needs two or more articles both judged")
    sources = sorted(set(ok_a["source_a"]) | set(ok_a["source_b"]))
    if self_source not in sources or len(set(sources) - {self_source, human}) < 1:
        raise ValueError(f"SPB needs {self_source!r} and another synthetic source; "
                         f"have {sources}")
    sa, ca = _article_matrices(ok_a, articles, sources)
    sb, cb = _article_matrices(ok_b, articles, sources)
    ones = np.ones((1, len(articles)))
    point = float(_spb(ones @ sa, ones @ ca, sources, self_source, human)[0]
                  - _spb(ones @ sb, ones @ cb, sources, self_source, human)[0])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(articles), size=(resamples, len(articles)))
    weights = np.zeros((resamples, len(articles)))
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1.0)
    diff = (_spb(weights @ sa, weights @ ca, sources, self_source, human)
            - _spb(weights @ sb, weights @ cb, sources, self_source, human))
    diff = diff[np.isfinite(diff)]
    tail = min((diff <= 0).mean(), (diff >= 0).mean())
    low, high = np.percentile(diff, [2.5, 97.5])
    return {"difference": point, "ci_low": float(low), "ci_high": float(high),
            "p": float(min(1.0, max(2 * tail, 1 / resamples))), "articles": len(articles)}
