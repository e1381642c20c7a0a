"""Tests across items for the claims a single training seed cannot test across seeds
(PAPER.md: the authors ran one seed, 42, and tested across items).

- Danger-zone share: Fisher's exact test on the 2x2 table (in the zone or not, condition a
  or b) of the responses whose two scores parsed.
- Self-preference bias: two adapters judged the same article pairs. The p is a paired
  permutation test over articles: under "the adapters judge alike", which adapter an
  article's judgements belong to is exchangeable, so every relabelling (each article's
  two sets of judgements swapped or not, the same article swaps for every seed) gives the
  null distribution of the SPB difference; two-sided, every relabelling enumerated up to
  `resamples` of them (2^articles), else `resamples` drawn ((1 + hits) / (1 + draws)).
  With 4 articles the smallest p is 2/16: a handful of articles cannot decide a claim.
  The interval is a paired bootstrap over articles (resampled with replacement, the same
  draw for both), its 2.5 and 97.5 percentiles. (A bootstrap p over few articles reached
  its floor whenever every article leaned the same way, however slightly: smol.yaml's 4
  articles read as p 0.0005.)
Harm scores use the perplexity family's tests (`stats.compare_family`: Kruskal-Wallis,
Mann-Whitney U, Bonferroni over a bracket's four conditions), as the authors did.
"""

from __future__ import annotations

import itertools
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
    """SPB of a minus SPB of b: the point estimate, a 95% paired-bootstrap interval over
    articles, the two-sided p of the paired permutation over articles. Either side may be
    one frame per training seed (seeds pair by position; a side of one frame is shared by
    every seed): the difference is then the mean over seeds, every adapter resampled (and
    relabelled) with the same articles; `per_seed` holds each seed's own difference and
    `flat` says the resampled differences had no spread at all."""
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
    low, high = np.percentile(diff, [2.5, 97.5])
    p, relabellings, exact = _relabelled_p(mats, strata, len(articles), float(per.mean()),
                                           sources, self_source, human, resamples, rng)
    return {"difference": float(per.mean()), "ci_low": float(low), "ci_high": float(high),
            "p": p, "relabellings": relabellings, "exact": exact, "articles": len(articles),
            "per_seed": [float(x) for x in per], "flat": bool(np.ptp(diff) == 0)}


def _relabelled_p(mats, strata, n: int, observed: float, sources: list[str],
                  self_source: str, human: str, resamples: int, rng) -> tuple[float, int, bool]:
    """Two-sided p of the paired permutation over articles: each relabelling swaps the two
    adapters' judgements of the articles it marks (in every seed's pair alike)."""
    exact = 2 ** n <= resamples
    if exact:
        swap = np.array(list(itertools.product((0.0, 1.0), repeat=n)))
    else:
        swap = rng.integers(0, 2, size=(resamples, n)).astype(float)
    keep = 1.0 - swap
    cols = []
    for s, t in strata:
        (a_sum, a_n), (b_sum, b_n) = mats[0][s], mats[1][t]
        spb_a = _spb(keep @ a_sum + swap @ b_sum, keep @ a_n + swap @ b_n, sources,
                     self_source, human)
        spb_b = _spb(keep @ b_sum + swap @ a_sum, keep @ b_n + swap @ a_n, sources,
                     self_source, human)
        cols.append(spb_a - spb_b)
    null = np.stack(cols, axis=1).mean(axis=1)
    null = null[np.isfinite(null)]
    # ties count as extreme (1e-12: the same sums reached in another order)
    hits = int((np.abs(null) >= abs(observed) - 1e-12).sum())
    p = hits / len(null) if exact else (1 + hits) / (1 + len(null))
    return float(min(1.0, p)), len(null), exact
