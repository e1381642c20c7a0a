"""N-gram overlap between the sources of a bracket (datasets/source_overlap.parquet): the
pairwise Jaccard overlap of their word-trigram sets, on the parts each source answered.
Does a second source really add n-grams the first one lacks?"""

from __future__ import annotations

import itertools
import re


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def ngram_set(texts: list[str], n: int = 3) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for t in texts:
        w = _words(t)
        out.update(zip(*(w[i:] for i in range(n))))
    return out


def jaccard_pairs(sets: dict[str, set[tuple[str, ...]]]) -> list[tuple[str, str, float]]:
    """(a, b, |a & b| / |a | b|) for every pair of the named sets, in name order; 0.0 where
    both are empty."""
    out = []
    for a, b in itertools.combinations(sorted(sets), 2):
        union = len(sets[a] | sets[b])
        out.append((a, b, len(sets[a] & sets[b]) / union if union else 0.0))
    return out
