"""The pure parts of generation: row normalisation, HTTP parsing, stall detection."""

from __future__ import annotations

import threading
import time

import polars as pl
import pytest

from synth_ray.answering import StallError, _normalise, _stream
from synth_ray.engines import _http_post, _vllm_post
from synth_ray.generation_store import GEN_SCHEMA

CARRIED = {"id": "r1", "part": 2, "gen_key": "k1", "source": "s", "bracket": "b",
           "backend": "vllm", "model_id": "m", "revision": None, "sampling": "{}",
           "messages_json": '[{"role": "user", "content": "hi"}]'}


def test_vllm_post_sets_finish_reason_from_token_count() -> None:
    row = {**CARRIED, "generated_text": "hello", "num_input_tokens": 7,
           "num_generated_tokens": 16, "time_taken_llm": 0.5}
    out = _vllm_post(row, max_tokens=16)
    assert (out["finish_reason"], out["status"], out["prompt_tokens"]) == ("length", "truncated",
                                                                            7)
    out = _vllm_post({**row, "num_generated_tokens": 3}, max_tokens=16)
    assert (out["finish_reason"], out["status"]) == ("stop", "ok")


def test_http_post_parses_answers_and_keeps_errors_as_rows() -> None:
    ok = _http_post({**CARRIED, "sent_at": time.time() - 1, "http_response": {
        "choices": [{"message": {"content": "Paris."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2}}})
    assert (ok["response"], ok["status"], ok["completion_tokens"]) == ("Paris.", "ok", 2)
    assert ok["latency_s"] >= 1
    bad = _http_post({**CARRIED, "http_response": {"error": {"message": "overloaded"}}})
    assert bad["status"] == "error" and "overloaded" in bad["error"] and bad["response"] == ""


def test_normalise_gives_error_rows_the_same_shape() -> None:
    good = _vllm_post({**CARRIED, "generated_text": "x", "num_input_tokens": 1,
                       "num_generated_tokens": 1, "time_taken_llm": 0.1}, max_tokens=8)
    error = {**CARRIED, "id": "r2", "gen_key": "k2", "__inference_error__": "ValueError: too long",
             "messages": [{"role": "user", "content": "hi"}], "generated_text": None}
    df = _normalise([good, error])
    assert df.schema == pl.Schema(GEN_SCHEMA)
    assert df["status"].to_list() == ["ok", "error"]
    assert df["error"][1] == "ValueError: too long"
    assert df["messages"].to_list() == [CARRIED["messages_json"]] * 2


class HangingDataset:
    """Yields one batch, then hangs like an engine stuck on out-of-memory."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def iter_batches(self, batch_size, batch_format):
        import pandas as pd

        yield pd.DataFrame([CARRIED])
        self.release.wait(30)


def test_stalled_stream_fails_with_a_clear_message() -> None:
    ds = HangingDataset()
    it = _stream(ds, 4, stall_timeout_s=0.5)
    assert len(next(it)) == 1
    t0 = time.time()
    with pytest.raises(StallError, match="stall_timeout_s"):
        next(it)
    assert time.time() - t0 < 5
    ds.release.set()
