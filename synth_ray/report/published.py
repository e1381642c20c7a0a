"""The paper's published numbers (Schaffelder & Gatt, arXiv 2511.01490; PAPER.md, "Numbers to
reproduce"), shown beside a run's own when a target sets `published:`.

Keys: metric -> bracket -> condition kind (vanilla, single, multi, human) -> value. The
paper gives the lexical diversity, harm and self-preference numbers of the 8B target once
per condition without naming a bracket; they are shown beside the small bracket, whose
perplexity row they accompany in PAPER.md, and the report says so. A metric the paper does
not publish for a target is absent: the report shows "-" there, never a guess.
"""

from __future__ import annotations

from typing import Any

# metric keys (the paper tables' rows); values in the paper's units
PERPLEXITY = "perplexity"
LEXICAL_INDIVIDUAL = "lexical_individual"
LEXICAL_AGGREGATED = "lexical_aggregated"
HARM_RB = "harm_RB"
HARM_RBJ = "harm_RB+J"
SPB = "spb"
DANGER_SINGLE_SMALL = 0.363  # "single-source small data put 36.3% of the 8B target's outputs
# in the zone" (prompt set not stated): quoted beside the danger-zone table, not differenced

_8B_SMALL = {
    PERPLEXITY: {"vanilla": 1.30, "single": 1.26, "multi": 1.38, "human": 2.68},
    LEXICAL_INDIVIDUAL: {"vanilla": 74.71, "single": 73.07, "multi": 75.92, "human": 77.82},
    LEXICAL_AGGREGATED: {"vanilla": 57.11, "single": 53.74, "multi": 56.58, "human": 46.00},
    HARM_RB: {"vanilla": 1.18, "single": 1.27, "multi": 1.21, "human": 3.11},
    HARM_RBJ: {"vanilla": 2.46, "single": 3.54, "multi": 3.31, "human": 3.24},
    SPB: {"vanilla": 0.258, "single": 0.193, "multi": 0.159, "human": -0.013},
}

PUBLISHED: dict[str, dict[str, dict[str, dict[str, float]]]] = {
    "llama-3.1-8b": {m: {"small": v} for m, v in _8B_SMALL.items()},
    "llama-3.1-70b": {
        PERPLEXITY: {
            "small": {"vanilla": 1.20, "single": 1.27, "multi": 1.38, "human": 2.41},
            "medium": {"vanilla": 1.20, "single": 1.15, "multi": 1.26, "human": 2.41},
            "large": {"vanilla": 1.20, "single": 1.17, "multi": 1.42, "human": 2.41},
        },
        # the human-trained 70B adapter's SPB, 0.060, is in the paper's text (not in
        # PAPER.md's table): like vanilla's, one number whatever the bracket
        SPB: {b: {"vanilla": 0.238, "human": 0.060} for b in ("small", "medium", "large")},
    },
}

NOTE = ("Published: PAPER.md's numbers for the paper's target; the 8B target's diversity, "
        "harm and self-preference numbers are given once per condition and shown beside the "
        "small bracket. Δ = run - published.")


def published(target: str | None, metric: str, bracket: str, kind: str) -> float | None:
    """The paper's number, or None where it published none for this cell."""
    if target is None:
        return None
    got: Any = PUBLISHED.get(target, {}).get(metric, {}).get(bracket, {}).get(kind)
    return float(got) if got is not None else None
