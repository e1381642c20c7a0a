"""Driving an engine pipeline from the driver: stream its rows, write them as shards,
resume, fold, summarise; and fail with a clear message when it stalls."""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from typing import Any

import polars as pl

from synth_ray.config import ExperimentConfig
from synth_ray.engines import EngineSpec, _finish, _py, scoring_processor
from synth_ray.generation_store import GEN_SCHEMA, GenerationStore
from synth_ray.pipeline import Context

log = logging.getLogger("synth_ray")

# Test-only fault injection: the driver SIGKILLs itself after writing this many shards, a
# crash at an exact point of the stream (tests/integration/test_generate.py).
CRASH_ENV = "SYNTH_RAY_TEST_CRASH_AFTER_SHARDS"


def _crash_point(shards_written: int) -> None:
    limit = os.environ.get(CRASH_ENV)
    if limit and shards_written >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


class StallError(RuntimeError):
    pass


def _normalise(records: list[dict[str, Any]]) -> pl.DataFrame:
    """Error rows skip postprocess and keep the raw columns: give them the same shape."""
    rows = []
    for r in records:
        err = r.get("__inference_error__") or ""
        if err:
            r = _finish(r, "", 0, 0, "", None, str(err)[:2000])
        row = {k: _py(r.get(k)) for k in GEN_SCHEMA if k != "messages"}
        rows.append({**row, "messages": r.get("messages_json")})
    return pl.DataFrame(rows, schema=GEN_SCHEMA)


def _stream(ds, batch_rows: int, stall_timeout_s: float):
    """Iterate a dataset's batches; raise StallError if none arrives for stall_timeout_s."""
    q: queue.Queue = queue.Queue(maxsize=2)
    done = object()

    def pump() -> None:
        try:
            for b in ds.iter_batches(batch_size=batch_rows, batch_format="pandas"):
                q.put(b.to_dict("records"))
            q.put(done)
        except BaseException as e:  # hand the error to the consumer
            q.put(e)

    threading.Thread(target=pump, daemon=True, name="generate-stream").start()
    while True:
        try:
            item = q.get(timeout=stall_timeout_s)
        except queue.Empty:
            raise StallError(
                f"no generated rows for {stall_timeout_s:.0f}s (generation.stall_timeout_s): "
                "an engine may be hung (out of memory?) or waiting for resources the cluster "
                "lacks; rows written so far are kept and a rerun resumes"
            ) from None
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def answer(ctx: Context, stage: str, label: str, requests: pl.DataFrame,
           store: GenerationStore, make_processor) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Send the requests without an answer through `make_processor()`'s pipeline, writing
    shards as rows arrive; fold them into the store's final file; summarise."""
    import ray

    cfg = ctx.cfg
    todo = store.pending(requests)
    t0 = time.time()
    log.info("[%s] %s: %d requests, %d already answered, %d to send", stage, label,
             requests.height, requests.height - todo.height, todo.height)
    written = 0
    if todo.height:
        # A block whose requests exhausted their retries must not kill the rest of the
        # work: its rows become error rows at consolidation and are retried on rerun.
        ray.data.DataContext.get_current().max_errored_blocks = -1
        ds = make_processor()(
            ray.data.from_arrow(todo.rename({"messages": "messages_json"}).to_arrow()))
        for batch in _stream(ds, cfg.generation.shard_rows, cfg.generation.stall_timeout_s):
            store.write_shard(_normalise(batch))
            written += len(batch)
            _crash_point(written // cfg.generation.shard_rows)
            log.info("[%s] %s: %d/%d rows (%.1f rows/s)", stage, label, written, todo.height,
                     written / max(time.time() - t0, 1e-9))
    final = store.consolidate(requests)
    wall = time.time() - t0
    counts = dict(final.group_by("status").len().iter_rows())
    fresh = final.filter(pl.col("attempt_time") >= t0)
    summary = {
        "rows": final.height,
        "sent": todo.height,
        "status": counts,
        "prompt_tokens": int(final["prompt_tokens"].sum()),
        "completion_tokens": int(final["completion_tokens"].sum()),
        "tokens_per_s": round(float(fresh["completion_tokens"].sum()) / wall, 2) if wall else 0,
        "wall_s": round(wall, 2),
    }
    log.info("[%s] %s done: %s", stage, label, summary)
    errors = counts.get("error", 0)
    if final.height and errors / final.height > cfg.generation.max_error_fraction:
        sample = final.filter(pl.col("status") == "error")["error"].head(3).to_list()
        raise RuntimeError(
            f"{label}: {errors}/{final.height} rows failed, more than "
            f"generation.max_error_fraction={cfg.generation.max_error_fraction}; "
            f"first errors: {sample}. Answered rows are kept; fix the cause and rerun."
        )
    return final, summary


def score_rows(cfg: ExperimentConfig, spec: EngineSpec, requests: pl.DataFrame) -> pl.DataFrame:
    """Perplexity of every request (score_key, token_ids, start, lora_path) in one engine."""
    import ray

    ray.data.DataContext.get_current().max_errored_blocks = -1
    ds = scoring_processor(cfg, spec)(ray.data.from_arrow(requests.to_arrow()))
    out = []
    for batch in _stream(ds, cfg.generation.shard_rows, cfg.generation.stall_timeout_s):
        for r in batch:
            err = r.get("__inference_error__") or ""
            out.append({"score_key": r["score_key"],
                        "perplexity": None if err else _py(r.get("perplexity")),
                        "n_tokens": 0 if err else int(r.get("n_tokens") or 0),
                        "mean_logprob": None if err else _py(r.get("mean_logprob")),
                        "error": str(err)[:2000]})
    return pl.DataFrame(out, schema={"score_key": pl.Utf8, "perplexity": pl.Float64,
                                     "n_tokens": pl.Int64, "mean_logprob": pl.Float64,
                                     "error": pl.Utf8})
