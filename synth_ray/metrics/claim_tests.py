"""The one rule behind every verdict of the report (report/verdicts.py): a check "a is higher
than b" is decided by a test across items that uses every seed's items, and its direction
comes from the same statistic as the test.

Sets and strata. Each side of a check is one set of items per training seed; the vanilla
target has no seed and is one set. Two seeded sides pair by seed (stratum s: a's seed s and
b's seed s; strata independent). A side with one set (vanilla) is shared by every stratum.

- **Rank measures** (perplexity, harm, individual lexical diversity). Effect: the
  probability of superiority A = P(X_a > X_b) + P(X_a = X_b) / 2 (Vargha and Delaney; the
  Mann-Whitney U over n_a n_b), averaged over strata; 0.5 is no difference. Test: one
  stratum, scipy's two-sided Mann-Whitney U (the authors' test); several, a permutation
  test of the averaged A: the labels permuted within each stratum where the strata are
  independent, or across all of the check's sets where one side is shared (exact under the
  null that the condition changes nothing, whatever the seed). Interval: percentile
  bootstrap, items resampled within each set (a shared set once per draw).
- **Proportions** (the danger-zone share). Effect: the difference of the pooled shares.
  Test: Fisher's exact test on the pooled 2x2 table (one stratum, or a shared side: exact
  under the same null), or, for two seeded sides, the exact stratified test conditional
  on each stratum's margins (Birch's: a's count summed over strata against the
  convolution of the strata's hypergeometric laws). Interval: Newcombe's hybrid score
  interval of the pooled difference.
- **Paired article measures** (self-preference bias): `item_tests.spb_difference`, a
  paired permutation over the articles every adapter judged (p), a paired bootstrap over
  them (interval).

A check holds (or is reversed) only when the corrected p < alpha, the test's statistic, the
effect and every seed's own effect point the same way; items without any spread on either
side are never evidence (nothing to test against), nor is a family p of nan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

ALPHA = 0.05
RESAMPLES = 2000  # permutations and bootstrap draws: p down to 1/2001
CHUNK = 200  # rows of permutations or draws held at once (memory: CHUNK x items)


@dataclass(frozen=True)
class Evidence:
    """What a check's test found: p after the family's correction, the effect with its 95%
    interval (`null`: the effect's value for no difference), each seed's own effect, and the
    sign of the test's own statistic (+1: a higher)."""

    test: str
    p: float
    effect_name: str
    effect: float
    low: float
    high: float
    null: float
    direction: int
    seed_effects: tuple[float, ...] = field(default_factory=tuple)
    flat: bool = False  # no spread among the items on either side

    def state(self) -> tuple[str, str]:
        """holds / reversed / none, and why, by the module's rule."""
        if self.flat:
            return "none", "no spread among the items on either side: nothing to test"
        if not self.p < ALPHA:  # nan is no evidence
            return "none", "not significant"
        side = np.sign(self.effect - self.null)
        if self.direction == 0 or side != self.direction:
            return "none", "the effect and the test point different ways"
        if any(np.sign(e - self.null) != side for e in self.seed_effects):
            return "none", "the seeds disagree in sign"
        return ("holds" if side > 0 else "reversed"), "significant"


def _strata(a: list[np.ndarray], b: list[np.ndarray]) -> list[tuple[int, int]]:
    """(a set, b set) per stratum: seeds pair by position; a one-set side is shared."""
    if len(a) == len(b):
        return [(i, i) for i in range(len(a))]
    if len(a) == 1 or len(b) == 1:
        return [(0 if len(a) == 1 else i, 0 if len(b) == 1 else i)
                for i in range(max(len(a), len(b)))]
    raise ValueError(f"{len(a)} and {len(b)} seeds: the seeds of two trained conditions pair "
                     "one to one")


def superiority(a: np.ndarray, b: np.ndarray) -> float:
    """P(X_a > X_b) + P(X_a = X_b) / 2 over every pair of items."""
    b = np.sort(b)
    lo, hi = np.searchsorted(b, a, "left"), np.searchsorted(b, a, "right")
    return float((lo + 0.5 * (hi - lo)).sum() / (len(a) * len(b)))


def _pair_us(values: np.ndarray, labels: np.ndarray, pairs: list[tuple[int, int]]
             ) -> np.ndarray:
    """U of label i over label j for each pair, for each row of `labels` (rows: one
    labelling of `values`, which are sorted): per tie group, the j items below it plus half
    those in it, summed over the i items."""
    new = np.r_[True, values[1:] != values[:-1]]
    starts, group = np.flatnonzero(new), np.cumsum(new) - 1
    out = np.empty((labels.shape[0], len(pairs)))
    credit: dict[int, np.ndarray] = {}  # per j: what an item at each place scores over j's
    for k, (i, j) in enumerate(pairs):
        if j not in credit:
            cj = np.add.reduceat((labels == j).astype(float), starts, axis=1)
            credit[j] = (np.cumsum(cj, axis=1) - 0.5 * cj)[:, group]
        out[:, k] = np.where(labels == i, credit[j], 0.0).sum(axis=1)
    return out


def _permutation_p(sets: list[np.ndarray], strata: list[tuple[int, int]], n_a: int,
                   observed: float, shared: bool, rng: np.random.Generator) -> float:
    """Two-sided p of the mean A over strata: labels permuted within independent strata, or
    across every set where one side is `shared` by every stratum."""
    b_ids = [n_a + t for _, t in strata]
    pairs = [(s, t) for (s, _), t in zip(strata, b_ids, strict=True)]
    blocks = [list(range(len(sets)))] if shared else [[s, t] for s, t in pairs]
    sizes = np.array([len(sets[s]) * len(sets[t]) for s, t in pairs], dtype=float)
    extreme, done = 0, 0
    while done < RESAMPLES:
        rows = min(CHUNK, RESAMPLES - done)
        total = np.zeros(rows)
        for block in blocks:
            vals = np.concatenate([sets[g] for g in block])
            labs = np.concatenate([np.full(len(sets[g]), g) for g in block])
            order = np.argsort(vals, kind="stable")
            perm = rng.permuted(np.tile(labs, (rows, 1)), axis=1)[:, order]
            mine = [k for k, (s, t) in enumerate(pairs) if s in block and t in block]
            us = _pair_us(vals[order], perm, [pairs[k] for k in mine])
            total += (us / sizes[mine]).sum(axis=1)
        extreme += int((np.abs(total / len(pairs) - 0.5) >= abs(observed - 0.5) - 1e-12).sum())
        done += rows
    return (1 + extreme) / (1 + RESAMPLES)


def _bootstrap_interval(a: list[np.ndarray], b: list[np.ndarray],
                        strata: list[tuple[int, int]], rng: np.random.Generator
                        ) -> tuple[float, float]:
    """95% percentile interval of the mean A, items resampled within each set."""
    draws = []
    done = 0
    while done < RESAMPLES:
        rows = min(CHUNK, RESAMPLES - done)
        ra = [x[rng.integers(0, len(x), (rows, len(x)))] for x in a]
        rb = [x[rng.integers(0, len(x), (rows, len(x)))] for x in b]
        total = np.zeros(rows)
        for s, t in strata:
            both = np.concatenate([ra[s], rb[t]], axis=1)
            ranks = stats.rankdata(both, axis=1)
            n = ra[s].shape[1]
            total += (ranks[:, :n].sum(axis=1) - n * (n + 1) / 2) / (n * rb[t].shape[1])
        draws.append(total / len(strata))
        done += rows
    low, high = np.percentile(np.concatenate(draws), [2.5, 97.5])
    return float(low), float(high)


def rank_check(a: list[list[float]], b: list[list[float]], family: int = 1,
               seed: int = 42) -> Evidence:
    """Is a higher than b? Items per seed on each side (one list: no seeds), p Bonferroni-
    corrected over `family` checks."""
    sa = [np.asarray(x, dtype=float) for x in a]
    sb = [np.asarray(x, dtype=float) for x in b]
    sa, sb = [x[np.isfinite(x)] for x in sa], [x[np.isfinite(x)] for x in sb]
    if not sa or not sb or min(len(x) for x in sa + sb) == 0:
        raise ValueError("every set of a check needs items")
    strata = _strata(sa, sb)
    per = tuple(superiority(sa[s], sb[t]) for s, t in strata)
    effect = float(np.mean(per))
    rng = np.random.default_rng(seed)
    flat = all(np.ptp(x) == 0 for x in sa + sb)
    if len(strata) == 1:
        test = "Mann-Whitney U"
        p_raw = float(stats.mannwhitneyu(sa[0], sb[0], alternative="two-sided").pvalue)
    else:
        shared = len(sa) == 1 or len(sb) == 1
        test = (f"permutation, {len(strata)} seeds, "
                + ("labels across all sets (vanilla shared)" if shared
                   else "labels within seeds"))
        p_raw = _permutation_p(sa + sb, strata, len(sa), effect, shared, rng)
    low, high = _bootstrap_interval(sa, sb, strata, rng)
    if family > 1:
        test += f", Bonferroni/{family}"
    return Evidence(test, min(1.0, p_raw * family) if p_raw == p_raw else p_raw,
                    "A = P(a > b)", effect, low, high, 0.5, int(np.sign(effect - 0.5)),
                    per if len(strata) > 1 else (), flat)


def _newcombe(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) of x1/n1 - x2/n2, from the two
    Wilson intervals (scipy's)."""
    w1 = stats.binomtest(x1, n1).proportion_ci(0.95, method="wilson")
    w2 = stats.binomtest(x2, n2).proportion_ci(0.95, method="wilson")
    p1, p2 = x1 / n1, x2 / n2
    d = p1 - p2
    return (d - float(np.hypot(p1 - w1.low, w2.high - p2)),
            d + float(np.hypot(w1.high - p1, p2 - w2.low)))


def stratified_exact_p(tables: list[tuple[int, int, int, int]]) -> tuple[float, int]:
    """Exact test of no association in K independent 2x2 tables (a_events, a_n, b_events,
    b_n), conditional on every table's margins: the law of a's events summed over tables is
    the convolution of hypergeometric laws; two-sided p sums the outcomes no likelier than
    the one observed. Returns (p, sign of observed - expected)."""
    law = np.array([1.0])
    offset, observed, expected = 0, 0, 0.0
    for xa, na, xb, nb in tables:
        events = xa + xb
        lo, hi = max(0, events - nb), min(na, events)
        pmf = stats.hypergeom.pmf(np.arange(lo, hi + 1), na + nb, events, na)
        law = np.convolve(law, pmf)
        offset += lo
        observed += xa
        expected += na * events / (na + nb)
    p_obs = law[observed - offset]
    p = float(law[law <= p_obs * (1 + 1e-7)].sum())
    return min(1.0, p), int(np.sign(round(observed - expected, 9)))


def proportion_check(a: list[tuple[int, int]], b: list[tuple[int, int]],
                     family: int = 1) -> Evidence:
    """Is a's share higher than b's? (events, items) per seed on each side."""
    if not a or not b or min(n for _, n in a + b) <= 0:
        raise ValueError("every set of a check needs items")
    strata = _strata(a, b)  # type: ignore[arg-type]
    xa, na = sum(x for x, _ in a), sum(n for _, n in a)
    xb, nb = sum(x for x, _ in b), sum(n for _, n in b)
    per = tuple(a[s][0] / a[s][1] - b[t][0] / b[t][1] for s, t in strata)
    if len(a) == len(b) and len(strata) > 1:
        p_raw, direction = stratified_exact_p([(*a[s], *b[t]) for s, t in strata])
        test = f"exact stratified test, {len(strata)} seeds"
    else:  # one stratum, or one side shared by every seed: the pooled table
        p_raw = float(stats.fisher_exact([[xa, na - xa], [xb, nb - xb]]).pvalue)
        direction = int(np.sign(round(xa / na - xb / nb, 12)))
        test = "Fisher exact" + (f", {len(strata)} seeds pooled" if len(strata) > 1 else "")
    if family > 1:
        test += f", Bonferroni/{family}"
    low, high = _newcombe(xa, na, xb, nb)
    flat = all(x in (0, n) for x, n in a + b) and len({x / n for x, n in a + b}) == 1
    return Evidence(test, min(1.0, p_raw * family), "share a - b", xa / na - xb / nb, low,
                    high, 0.0, direction, per if len(strata) > 1 else (), flat)


def describe(ev: Evidence) -> str:
    """The check's numbers on one line: test, p, effect and its interval, seeds."""
    text = (f"{ev.test}: p = {ev.p:.3g}; {ev.effect_name} {ev.effect:.3g} "
            f"[{ev.low:.3g}, {ev.high:.3g}]")
    if ev.seed_effects:
        text += "; per seed " + ", ".join(f"{e:.3g}" for e in ev.seed_effects)
    return text

