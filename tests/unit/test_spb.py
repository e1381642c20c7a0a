"""Self-preference bias maths (PAPER.md, Evaluation 5) on hand-computed examples."""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from synth_ray.metrics.spb import (
    a_win_rate,
    both_orders,
    position_bias,
    renormalise,
    self_preference_bias,
    source_scores,
)


def pairs(rows: list[tuple[str, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["source_a", "source_b", "p_a"], orient="row")


def test_source_scores_by_hand() -> None:
    # self vs other, both orders: self wins 0.8 as A and 0.7 as B (p_a = 0.3)
    # self vs human: 0.6 as A, 0.5 as B; other vs human: 0.4 as A, as B p_a=0.5
    df = pairs([("self", "other", 0.8), ("other", "self", 0.3),
                ("self", "human", 0.6), ("human", "self", 0.5),
                ("other", "human", 0.4), ("human", "other", 0.5)])
    s = source_scores(df)
    assert s["self"] == pytest.approx((0.8 + 0.7 + 0.6 + 0.5) / 4)  # 0.65
    assert s["other"] == pytest.approx((0.2 + 0.3 + 0.4 + 0.5) / 4)  # 0.35
    assert s["human"] == pytest.approx((0.4 + 0.5 + 0.6 + 0.5) / 4)  # 0.5
    spb, pro = self_preference_bias(s, "self")
    assert spb == pytest.approx(0.65 - 0.35)
    assert pro == pytest.approx((0.65 + 0.35) / 2 - 0.5)


def test_spb_excludes_human_from_the_others() -> None:
    s = {"self": 0.7, "b": 0.5, "c": 0.3, "human": 0.1}
    spb, pro = self_preference_bias(s, "self")
    assert spb == pytest.approx(0.7 - 0.4)
    assert pro == pytest.approx(0.5 - 0.1)


def test_both_orders_cancel_a_pure_position_bias() -> None:
    """A judge that ignores content and says A with probability q: every source scores 0.5,
    SPB and pro-synthetic bias are 0, and the position bias is q - 0.5."""
    q = 0.83
    df = pairs([(a, b, q) for a, b in both_orders(["self", "x", "y", "human"])])
    s = source_scores(df)
    assert all(v == pytest.approx(0.5) for v in s.values())
    spb, pro = self_preference_bias(s, "self")
    assert spb == pytest.approx(0.0, abs=1e-12) and pro == pytest.approx(0.0, abs=1e-12)
    assert position_bias(df) == pytest.approx(q - 0.5)
    assert a_win_rate(df) == 1.0  # A always wins: all position, no content


def test_one_order_only_would_not_cancel_it() -> None:
    df = pairs([("self", "x", 0.83), ("self", "human", 0.83), ("x", "human", 0.83)])
    s = source_scores(df)
    assert s["self"] > 0.5 > s["human"]  # why every pair goes in both orders


@given(st.floats(-30, 0), st.floats(-30, 0))
def test_renormalise_sums_to_one(a: float, b: float) -> None:
    pa = renormalise(a, b)
    pb = renormalise(b, a)
    assert pa + pb == pytest.approx(1.0)
    assert pa == pytest.approx(math.exp(a) / (math.exp(a) + math.exp(b)))


def test_renormalise_is_stable_for_tiny_probabilities() -> None:
    assert renormalise(-1000.0, -1001.0) == pytest.approx(1 / (1 + math.exp(-1)))


def test_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="self source"):
        self_preference_bias({"a": 0.5, "human": 0.5}, "self")
    with pytest.raises(ValueError, match="itself"):
        source_scores(pairs([("a", "a", 0.5)]))
    with pytest.raises(ValueError, match="lack"):
        source_scores(pl.DataFrame({"source_a": ["a"]}))
    assert both_orders(["a", "b", "c"]) == [("a", "b"), ("b", "a"), ("a", "c"), ("c", "a"),
                                            ("b", "c"), ("c", "b")]
