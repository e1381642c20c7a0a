"""Source independence measures on crafted answers (the integration test checks them against
sacrebleu and sentence-transformers on real probe answers)."""

from __future__ import annotations

import numpy as np
import pytest

from synth_ray.metrics.independence import cross_bleu, paired_cosine, pairwise, vocabulary_jaccard


def test_alike_answers_score_high_and_unlike_low() -> None:
    a = ["the cat sat on the mat today", "a quick brown fox jumps over it"]
    assert cross_bleu(a, a) == pytest.approx(100.0)
    assert cross_bleu(a, ["zzz yyy xxx www vvv", "qqq rrr sss ttt uuu"]) < 5
    assert vocabulary_jaccard(a, a) == 1.0
    assert vocabulary_jaccard(["A b"], ["a c"]) == pytest.approx(1 / 3)  # lower-cased types
    with pytest.raises(ValueError, match="same, non-empty prompts"):
        cross_bleu(a, a[:1])


def test_pairs_use_the_prompts_both_answered() -> None:
    e = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert paired_cosine(e, e * 3) == pytest.approx(1.0)
    assert paired_cosine(e, e[::-1]) == pytest.approx(0.0)
    answers = {"x": {"1": "one two three four", "2": "five six seven"},
               "y": {"2": "five six seven", "3": "nine"}, "z": {"9": "ten"}}
    rows = pairwise(answers, None)
    assert [(r["source_a"], r["source_b"], r["prompts"]) for r in rows] == [("x", "y", 1)]
    assert rows[0]["cross_bleu"] == pytest.approx(100.0)
