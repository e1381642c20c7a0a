from __future__ import annotations

import itertools

import numpy as np
import pytest

from synth_ray.metrics.diversity import mean_pairwise_cosine_distance, semantic_diversity


def test_closed_form_equals_pairwise_loop() -> None:
    x = np.random.default_rng(0).normal(size=(30, 8))
    sims = [np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)
            for a, b in itertools.combinations(x, 2)]
    assert mean_pairwise_cosine_distance(x) == pytest.approx(1 - np.mean(sims), abs=1e-12)
    with pytest.raises(ValueError):
        mean_pairwise_cosine_distance(x[:1])


def test_bundled_model_works_offline_and_ranks_diversity() -> None:
    same = ["The cat sat on the mat."] * 3 + ["A cat was sitting on the mat."]
    varied = ["The cat sat on the mat.", "Stock markets fell sharply today.",
              "Photosynthesis turns light into chemical energy.", "I love jazz music."]
    low, high = semantic_diversity(same), semantic_diversity(varied)
    assert 0 <= low < 0.1 < high <= 1.2
