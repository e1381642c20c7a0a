"""The report's verdict tests at the paper's sizes: what a check costs, one seed and several.

Each check is timed on items of the paper's size (the 8B test set's 1,502 prompts per
adapter; harm and perplexity alike), against a baseline run in the same process: scipy's
Mann-Whitney U on the same two sets, the authors' whole test. One seed, synth-ray adds the
bootstrap interval of its effect size; several seeds, the permutation test across the seeds'
items as well. The danger-zone check (exact tests on counts) and the report's whole claims
section for one target (3 brackets, 2 prompt sets: 24 rank checks) are timed too.

Run: .venv/bin/python benchmarks/verdict_tests.py [--items 1502] [--seeds 3]
     .venv/bin/python benchmarks/verdict_tests.py --quick   (seconds: the test suite)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from synth_ray.metrics.claim_tests import proportion_check, rank_check


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1502)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes: the test suite")
    args = ap.parse_args()
    if args.quick:
        args.items, args.seeds = 200, 2
    rng = np.random.default_rng(42)
    # perplexity-like items: positive, skewed, with ties after rounding
    vanilla = list(np.round(rng.lognormal(0.3, 0.2, args.items), 3))
    single = [list(np.round(rng.lognormal(0.32, 0.2, args.items), 3))
              for _ in range(args.seeds)]
    multi = [list(np.round(rng.lognormal(0.35, 0.2, args.items), 3))
             for _ in range(args.seeds)]
    base = timed(lambda: stats.mannwhitneyu(single[0], vanilla, alternative="two-sided"))
    print(f"items per adapter {args.items}, seeds {args.seeds}; baseline scipy Mann-Whitney U "
          f"{base * 1e3:.2f} ms")
    print("| check | seconds | ratio to the baseline |")
    print("|---|---|---|")
    rows = [("one seed: Mann-Whitney U + bootstrap interval",
             lambda: rank_check([single[0]], [vanilla], 6)),
            (f"{args.seeds} seeds vs vanilla: permutation across all sets + interval",
             lambda: rank_check(single, [vanilla], 6)),
            (f"{args.seeds} seeds vs {args.seeds} seeds: permutation within seeds + interval",
             lambda: rank_check(multi, single, 6)),
            (f"danger share, {args.seeds} seeds vs {args.seeds}: exact stratified test",
             lambda: proportion_check([(120, args.items)] * args.seeds,
                                      [(90, args.items)] * args.seeds, 2))]
    cost = {}
    for label, fn in rows:
        cost[label] = timed(fn, 1)
        print(f"| {label} | {cost[label]:.3f} | {cost[label] / base:,.0f}x |", flush=True)
    seeded = cost[rows[1][0]]
    print(f"claims section of one target with {args.seeds} seeds (24 rank checks): "
          f"~{24 * seeded:.0f} s; ratio one seed / seeds per check: "
          f"{cost[rows[0][0]] / seeded:.2f}x")


if __name__ == "__main__":
    main()
