"""Heaps' law (the authors' code): vocabulary V grows with tokens N as V = K * N^beta.

The responses of a condition are read in order as one token stream (lower-cased, split at
whitespace), V is counted every `step` tokens (the authors: every 1,000), and K and beta are
the least-squares line through (log N, log V). A smaller beta: new words come more slowly,
a sign of a collapsing distribution.
"""

from __future__ import annotations

import math

from scipy import stats


def vocabulary_growth(texts: list[str], step: int = 1000) -> list[tuple[int, int]]:
    """(N, V) every `step` tokens, and at the end."""
    seen: set[str] = set()
    points, n = [], 0
    for text in texts:
        for word in text.lower().split():
            seen.add(word)
            n += 1
            if n % step == 0:
                points.append((n, len(seen)))
    if n and n % step:
        points.append((n, len(seen)))
    return points


def heaps_law(texts: list[str], step: int = 1000) -> dict[str, float]:
    """{"K", "beta", "tokens", "points"}; NaNs where fewer than 2 points."""
    points = vocabulary_growth(texts, step)
    n_tokens = points[-1][0] if points else 0
    if len(points) < 2:
        return {"K": math.nan, "beta": math.nan, "tokens": n_tokens, "points": len(points)}
    fit = stats.linregress([math.log(n) for n, _ in points], [math.log(v) for _, v in points])
    return {"K": math.exp(fit.intercept), "beta": float(fit.slope), "tokens": n_tokens,
            "points": len(points)}
