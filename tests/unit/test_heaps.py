"""Heaps' law fit on token streams whose vocabulary growth is known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synth_ray.metrics.heaps import heaps_law, vocabulary_growth


def stream(k: float, beta: float, n: int) -> list[str]:
    """Tokens whose vocabulary after i tokens is round(k * i^beta): a new word exactly
    when that number rises, an old one otherwise."""
    words, vocab = [], 0
    for i in range(1, n + 1):
        if round(k * i ** beta) > vocab:
            vocab += 1
            words.append(f"w{vocab}")
        else:
            words.append(f"w{1 + (i % vocab)}")
    return words


@pytest.mark.parametrize(("k", "beta"), [(1.0, 0.5), (3.0, 0.7), (10.0, 0.4)])
def test_fit_recovers_k_and_beta(k: float, beta: float) -> None:
    words = stream(k, beta, 50_000)
    texts = [" ".join(words[i:i + 37]) for i in range(0, len(words), 37)]  # any chunking
    got = heaps_law(texts, step=1000)
    assert got["tokens"] == 50_000 and got["points"] == 50
    assert got["beta"] == pytest.approx(beta, abs=0.01)
    assert got["K"] == pytest.approx(k, rel=0.05)
    # the same line as numpy's least squares on the counted points
    n, v = zip(*vocabulary_growth(texts, 1000))
    slope, intercept = np.polyfit(np.log(n), np.log(v), 1)
    assert got["beta"] == pytest.approx(slope) and got["K"] == pytest.approx(math.exp(intercept))


def test_counts_every_step_and_the_end() -> None:
    assert vocabulary_growth(["A a b", "c A"], step=2) == [(2, 1), (4, 3), (5, 3)]
    assert math.isnan(heaps_law(["few words"], step=1000)["beta"])
