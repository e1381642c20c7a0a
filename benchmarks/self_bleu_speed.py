"""Self-BLEU-3: synth-ray's exact leave-one-out algorithm against naive sacrebleu.

Real English sentences (the Python reference manual that CPython carries, and the bundled
sample), the same list for both; both results are printed and must agree to 1e-9.
Baseline: `sacrebleu.BLEU(max_ngram_order=3, effective_order=True).sentence_score` of every
sentence against all others, in the same process.

Run: .venv/bin/python benchmarks/self_bleu_speed.py [--sizes 250 500 1000 2000]
     .venv/bin/python benchmarks/self_bleu_speed.py --quick   (seconds: the test suite)
"""

from __future__ import annotations

import argparse
import pydoc_data.topics as topics
import random
import time

from synth_ray.metrics.self_bleu import naive_self_bleu, self_bleu, split_sentences


def corpus() -> list[str]:
    sents = [s for text in topics.topics.values() for s in split_sentences(text)]
    return sorted(set(sents))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000, 2000])
    ap.add_argument("--big", type=int, default=15_000)
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, seconds: the test suite runs every benchmark so")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.big = [50, 100], 200
    sents = corpus()
    random.Random(42).shuffle(sents)
    print(f"{len(sents)} distinct sentences from pydoc_data.topics")
    print("| N | naive sacrebleu (s) | synth-ray (s) | speed-up | |difference| |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        x = sents[:n]
        t = time.perf_counter()
        fast = self_bleu(x)
        t_fast = time.perf_counter() - t
        t = time.perf_counter()
        slow = naive_self_bleu(x)
        t_slow = time.perf_counter() - t
        print(f"| {n:,} | {t_slow:.2f} | {t_fast:.4f} | {t_slow / t_fast:,.0f}x | "
              f"{abs(fast - slow):.1e} |", flush=True)
    # The aggregated mode at Dolly scale: more sentences than the manual has, so sentences
    # are drawn with replacement and their words shuffled (real vocabulary, new n-grams).
    rng = random.Random(7)
    big = []
    while len(big) < args.big:
        w = rng.choice(sents).split()
        rng.shuffle(w)
        big.append(" ".join(w))
    t = time.perf_counter()
    score = self_bleu(big)
    naive_h = t_slow * (args.big / n) ** 2 / 3600  # O(N^2) from the largest timed N
    print(f"\naggregated Self-BLEU-3 on {args.big:,} sentences: {score:.3f} in "
          f"{time.perf_counter() - t:.2f} s (naive: about {naive_h:.1f} h)")


if __name__ == "__main__":
    main()
