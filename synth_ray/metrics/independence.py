"""Source independence on a shared probe set (the paper's next check (a)): how alike two
sources answer the *same* prompts. The paper compared sources on the different parts each
answered; here every source answers one probe set, so a similarity is a property of the
sources, not of the prompts they happened to get.

Per pair of sources, over the prompts both answered:
- cross-source BLEU: sacrebleu sentence BLEU (max order 3, effective order, 13a, exp
  smoothing: the Self-BLEU settings) of one source's answer against the other's, averaged
  over both directions and the prompts (0-100; higher = more alike);
- embedding cosine: cosine similarity of the two answers' sentence embeddings, averaged;
- vocabulary overlap: Jaccard of the two sources' word types over all their probe answers
  (lower-cased whitespace words, as `heaps.py`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from synth_ray.metrics.self_bleu import MAX_ORDER, _bleu


def cross_bleu(a: list[str], b: list[str], max_order: int = MAX_ORDER) -> float:
    """Mean over prompts of (BLEU(a_i | b_i) + BLEU(b_i | a_i)) / 2."""
    if len(a) != len(b) or not a:
        raise ValueError("cross-source BLEU needs answers to the same, non-empty prompts")
    bleu = _bleu(max_order)
    return float(np.mean([(bleu.sentence_score(x, [y]).score
                           + bleu.sentence_score(y, [x]).score) / 2 for x, y in zip(a, b,
                                                                                     strict=True)]))


def vocabulary_jaccard(a: list[str], b: list[str]) -> float:
    va = {w for t in a for w in t.lower().split()}
    vb = {w for t in b for w in t.lower().split()}
    union = va | vb
    return len(va & vb) / len(union) if union else float("nan")


def paired_cosine(ea: np.ndarray, eb: np.ndarray) -> float:
    """Mean cosine similarity of row i of ea with row i of eb."""
    ea = ea / np.linalg.norm(ea, axis=1, keepdims=True)
    eb = eb / np.linalg.norm(eb, axis=1, keepdims=True)
    return float(np.mean(np.sum(ea * eb, axis=1)))


def pairwise(answers: dict[str, dict[str, str]],
             embed: Callable[[list[str]], np.ndarray] | None) -> list[dict]:
    """answers: source -> {prompt id -> answer}. One row per unordered pair of sources, on
    the prompts both answered."""
    rows = []
    for x, y in itertools.combinations(sorted(answers), 2):
        ids = sorted(set(answers[x]) & set(answers[y]))
        if not ids:
            continue
        a = [answers[x][i] for i in ids]
        b = [answers[y][i] for i in ids]
        rows.append({"source_a": x, "source_b": y, "prompts": len(ids),
                     "cross_bleu": cross_bleu(a, b),
                     "embedding_cosine": paired_cosine(embed(a), embed(b)) if embed
                     else float("nan"),
                     "vocabulary_jaccard": vocabulary_jaccard(a, b)})
    return rows
