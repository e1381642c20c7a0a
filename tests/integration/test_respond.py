"""The respond stage on CPU: the adapters trained by the grid (conftest's grid_run, 3
conditions) and the vanilla target answer the test set and the safety prompts from one vLLM
engine, each adapter really applied (greedy answers equal transformers + PEFT)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from .helpers import grid_model

pytestmark = pytest.mark.slow


def test_one_engine_answers_for_every_adapter_and_applies_it(evaluated) -> None:
    _, run_dir = evaluated
    resp = pl.read_parquet(run_dir / "responses" / "tiny-target" / "test.parquet")
    counts = dict(resp.group_by("source").len().iter_rows())
    assert counts == {"vanilla": 12, "human": 12, "single-small": 12, "multi-small": 12}
    assert (resp["error"] == "").all()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    # the same engine pass answered the 12 safety prompts (6 RB + 6 RB+J) per adapter
    safety = pl.read_parquet(run_dir / "responses" / "tiny-target" / "safety.parquet")
    assert dict(safety.group_by("source").len().iter_rows()) == {a: 12 for a in counts}
    assert manifest["stages"]["respond"]["targets"]["tiny-target"]["rows"] == 48 + 48
    for adapter in ("multi-small", None):  # None: the vanilla rows, via the zero adapter
        model, tok = grid_model(run_dir, adapter)
        rows = resp.filter(pl.col("source") == (adapter or "vanilla")).head(4)
        for r in rows.iter_rows(named=True):
            prompt = tok.apply_chat_template(json.loads(r["messages"]), tokenize=False,
                                             add_generation_prompt=True)
            ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
            out = model.generate(ids, max_new_tokens=8, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
            assert tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True) == \
                r["response"], (adapter, r["id"])
