"""The pure parts of generation: row normalisation, HTTP parsing, stall detection."""

from __future__ import annotations

import threading
import time

import polars as pl
import pytest

from synth_ray.engines.answering import StallError, _normalise, _stream
from synth_ray.engines.http import _http_post
from synth_ray.engines.processors import _vllm_post
from synth_ray.engines.store import GEN_SCHEMA

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


def _tiny_tokenizer():
    from synth_ray.engines.tokenizers import engine_tokenizer
    from synth_ray.models import resolve_model

    model = resolve_model("tiny://small-a")
    return model, engine_tokenizer(model)


def test_answers_are_decoded_like_rays_detokenize_stage() -> None:
    """Without Ray's detokenize stage the postprocess keeps the token ids and the driver
    decodes them with the stage's own call: special tokens skipped, a cut multi-byte
    character rendered, not dropped; an all-special answer is empty."""
    _, tok = _tiny_tokenizer()
    ids = tok("Grüße, naïve café — done.", add_special_tokens=False)["input_ids"]
    cut = ids[:-1] + tok.convert_tokens_to_ids(tok.tokenize("é"))[:1]  # half of "é"
    rows = []
    for i, tokens in enumerate((ids + [tok.eos_token_id], cut, [tok.eos_token_id])):
        row = {**CARRIED, "gen_key": f"k{i}", "generated_text": "vLLM's own text",
               "generated_tokens": tokens, "num_input_tokens": 3,
               "num_generated_tokens": len(tokens)}
        rows.append(_vllm_post(row, max_tokens=64, tokens=True))
        assert _vllm_post(row, max_tokens=64)["response"] == "vLLM's own text"  # Ray's stage
    df = _normalise(rows, tok)
    want = tok.batch_decode([ids + [tok.eos_token_id], cut], skip_special_tokens=True)
    assert df["response"].to_list() == [*want, ""]
    assert df["response"][1].endswith("\ufffd")  # the cut character stays visible
    assert df["status"].to_list() == ["ok", "ok", "empty"]
    assert "generated_tokens" not in df.columns


def test_chat_prompts_match_rays_chat_template_stage_and_refuse_long_ones() -> None:
    import asyncio
    import json

    from ray.llm._internal.batch.stages.chat_template_stage import ChatTemplateUDF

    from synth_ray.engines.answering import EngineWindow, chat_prompts

    model, tok = _tiny_tokenizer()
    convs = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}],
             [{"role": "user", "content": "Name a colour."},
              {"role": "assistant", "content": "Blue, or"}],  # continued, not a new turn
             [{"role": "user", "content": "word " * 600}]]
    todo = pl.DataFrame({"gen_key": ["a", "b", "c"], "messages": [json.dumps(c) for c in convs]})
    prompts, refused = chat_prompts(todo, EngineWindow(model, 256))
    assert set(prompts) == {"a", "b"} and set(refused) == {"c"}
    assert "context is 256" in refused["c"]

    udf = ChatTemplateUDF(data_column="__data", expected_input_keys=["messages"], model=model)

    async def ray_prompts():
        batch = [{"messages": c, udf.IDX_IN_BATCH_COLUMN: i} for i, c in enumerate(convs[:2])]
        return [r["prompt"] async for r in udf.udf(batch)]

    assert [prompts["a"], prompts["b"]] == asyncio.run(ray_prompts())
    assert prompts["b"].endswith("Blue, or")


def test_light_stages_run_one_task_per_engine() -> None:
    """The pre- and postprocess map stages around an engine: no CPU asked, and a task pool
    capped at the engine's replicas (unbounded, each block in flight started a worker
    process: docs/benchmarks.md, "Light stages"); one task each side of an HTTP stage."""
    from dataclasses import replace

    import ray
    from ray.data import TaskPoolStrategy

    from synth_ray.config import load_config
    from synth_ray.config.model_sections import HttpSection
    from synth_ray.engines.http import http_processor
    from synth_ray.engines.layout import EngineRun, EngineSpec
    from synth_ray.engines.processors import scoring_processor, vllm_processor

    cfg = load_config("jobs/configs/plumbing.yaml")
    spec = replace(EngineSpec.of_source(cfg.sources[0]), replicas=3)
    # building a vLLM processor starts Ray if none is up: a local instance of the test's
    # own (never one running on this machine), shut down after, so later tests start theirs
    ray.init(address="local", num_cpus=1, include_dashboard=False, configure_logging=False,
             log_to_driver=False)
    try:
        for build in (vllm_processor, scoring_processor):
            p = build(EngineRun.of(cfg), spec)
            for kwargs in (p.preprocess_map_kwargs, p.postprocess_map_kwargs):
                assert kwargs == {"num_cpus": 0, "compute": TaskPoolStrategy(size=3)}, build
        # a generating engine schedules as vLLM's LLM class on a CPU (engines/batching.py),
        # with Ray keeping twice that many rows in flight; a reading one keeps vLLM's own
        made = vllm_processor(EngineRun.of(cfg), spec).config
        assert made.engine_kwargs["max_num_seqs"] == 256
        assert made.max_concurrent_batches * made.batch_size >= 2 * 256
        assert "max_num_seqs" not in scoring_processor(EngineRun.of(cfg), spec).config.engine_kwargs
        p = http_processor(HttpSection(base_url="http://127.0.0.1:9/v1", concurrency=4),
                           "m", cfg.generation.sampling, "source 'x'")
        for kwargs in (p.preprocess_map_kwargs, p.postprocess_map_kwargs):
            assert kwargs == {"num_cpus": 0, "compute": TaskPoolStrategy(size=1)}
    finally:
        ray.shutdown()
