"""Driving an engine pipeline from the driver: stream its rows, write them as shards,
resume, fold, summarise; and fail with a clear message when it stalls."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from synth_ray.config import GenerationSection
from synth_ray.engines import processors
from synth_ray.engines.layout import EngineRun, EngineSpec
from synth_ray.engines.processors import (
    _finish,
    _py,
    decode_rows,
    label_processor,
    scoring_processor,
)
from synth_ray.engines.store import GEN_SCHEMA, GenerationStore
from synth_ray.engines.tokenizers import chat_prompt, engine_context, engine_tokenizer
from synth_ray.models import resolve_model
from synth_ray.observe.progress import track
from synth_ray.observe.terminal import quiet_libraries
from synth_ray.runtime.pipeline import Context

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


def _normalise(records: list[dict[str, Any]], tokenizer=None) -> pl.DataFrame:
    """Error rows skip postprocess and keep the raw columns: give them the same shape.
    `tokenizer`: decode the answers that arrive as token ids (engines.decode_rows)."""
    if tokenizer is not None:
        records = decode_rows(records, tokenizer)
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
    quiet_libraries()  # Ray Data imported by now: its bars off, its loggers to the log file
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
    finals, summary = answer_many(ctx, stage, label, [(requests, store)], make_processor)
    return finals[0], summary


@dataclass(frozen=True)
class EngineWindow:
    """A vLLM engine's context window, for checking prompts before they are sent."""

    model: str  # a resolved model folder or hub id (its tokenizer and chat template)
    max_model_len: int
    trust_remote_code: bool = False

    @classmethod
    def of(cls, generation: GenerationSection, spec: EngineSpec) -> EngineWindow:
        model = resolve_model(spec.model)
        return cls(model, engine_context(generation.max_model_len, spec.engine_kwargs,
                                         model, spec.trust_remote_code),
                   spec.trust_remote_code)


def chat_prompts(todo: pl.DataFrame, window: EngineWindow,
                 key: str = "gen_key") -> tuple[dict[str, str], dict[str, str]]:
    """The engine's prompt text of every request (`messages`), and key -> error for those
    with no room left in the engine's context. vLLM refuses those row by row, but a batch
    that mixes refused and answered rows trips Ray Data's block concatenation (ray 2.60)
    and loses the whole batch, so they never go."""
    tok = engine_tokenizer(window.model, window.trust_remote_code)
    prompts, refused = {}, {}
    for k, msgs in todo.select(key, "messages").iter_rows():
        text = chat_prompt(tok, json.loads(msgs))
        n = len(tok(text)["input_ids"])  # as the engine tokenizes it
        if n >= window.max_model_len:
            refused[k] = (f"prompt too long: {n} tokens with the chat template, the engine's "
                          f"context is {window.max_model_len} (generation.max_model_len); "
                          "nothing was generated")
        else:
            prompts[k] = text
    return prompts, refused


def _unanswered(jobs: list[tuple[pl.DataFrame, GenerationStore]]
                ) -> tuple[list[pl.DataFrame], pl.DataFrame, dict[str, list[int]]]:
    """Each job's requests without an answer, all of them once by content key, and which
    jobs asked for each key. The driver holds the requests' text once where it can: at the
    paper's size the judge alone sends ~100,000 prompts of a few KB, and every copy (a
    concat, a dedup, a dict of prompts, the messages sent through Ray and back) costs the
    driver that much again (docs/benchmarks.md, "How the cost grows")."""
    todos = [store.pending(req) for req, store in jobs]
    todo = todos[0] if len(todos) == 1 else pl.concat(todos)
    if todo["gen_key"].is_duplicated().any():
        todo = todo.unique("gen_key", keep="first", maintain_order=True)
    route: dict[str, list[int]] = {}
    for i, t in enumerate(todos):
        for k in t["gen_key"]:
            route.setdefault(k, []).append(i)
    return todos, todo, route


def answer_many(ctx: Context, stage: str, label: str,
                jobs: list[tuple[pl.DataFrame, GenerationStore]],
                make_processor, window: EngineWindow | None = None,
                ) -> tuple[list[pl.DataFrame], dict[str, Any]]:
    """`answer` for several (requests, store) pairs through ONE pipeline (one engine start):
    each streamed row goes to the store(s) that asked for its key. With `window`, prompts
    that cannot fit the engine's context become error rows without being sent."""

    cfg = ctx.cfg
    todos, todo, route = _unanswered(jobs)
    total = sum(req.height for req, _ in jobs)
    t0 = time.time()
    log.info("[%s] %s: %d requests, %d already answered, %d to send", stage, label,
             total, total - sum(t.height for t in todos), todo.height)

    def write(rows: pl.DataFrame) -> None:
        if rows["messages"].is_null().any():  # sent without them (below): the driver's
            theirs = todo.filter(pl.col("gen_key").is_in(rows["gen_key"].implode()))
            rows = rows.drop("messages").join(theirs.select("gen_key", "messages"),
                                              on="gen_key", how="left")
        for i, (_, store) in enumerate(jobs):
            mine = rows.filter(pl.col("gen_key").is_in(
                [k for k in rows["gen_key"] if i in route.get(k, ())]))
            if mine.height:
                store.write_shard(mine)

    tokenizer = None if window is None else engine_tokenizer(window.model,
                                                             window.trust_remote_code)
    if window is not None and todo.height:
        prompts, refused = chat_prompts(todo, window)
        todo = todo.with_columns(prompt=pl.col("gen_key").replace_strict(
            prompts, default=None, return_dtype=pl.Utf8))
        del prompts  # in the column now
        if refused:
            log.warning("[%s] %s: %d prompt(s) too long for the context of %d tokens: "
                        "error rows, not sent", stage, label, len(refused),
                        window.max_model_len)
            bad = todo.filter(pl.col("gen_key").is_in(list(refused)))
            write(_normalise([{**r, "messages_json": r["messages"],
                               "__inference_error__": refused[r["gen_key"]]}
                              for r in bad.iter_rows(named=True)]))
            todo = todo.filter(~pl.col("gen_key").is_in(list(refused)))
    # An engine given the templated prompt needs no messages (unless Ray's own chat template
    # stage is on): they stay here, and `write` puts them back on each answer
    send = todo.drop("messages") if window is not None and not processors.RAY_TEXT_STAGES else todo
    with track(stage, label, todo.height) as bar:
        _, resent = _send(cfg.generation, send, make_processor, tokenizer, write, bar, stage,
                          label)
    finals = [store.consolidate(req) for req, store in jobs]
    final = pl.concat(finals)
    wall = time.time() - t0
    counts = dict(final.group_by("status").len().iter_rows())
    fresh = final.filter(pl.col("attempt_time") >= t0)
    summary = {
        "rows": final.height,
        "sent": todo.height,
        "resent": resent,
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
    return finals, summary


def _send(gen: GenerationSection, send: pl.DataFrame, make_processor, tokenizer, write,
          bar, stage: str, label: str) -> tuple[int, int]:
    """Stream `send` through fresh pipelines until every row came back (or the retries of
    lost blocks ran out). Returns (rows written, rows sent again)."""
    import ray

    written, resent = 0, 0
    seen: set[str] = set()
    for attempt in range(gen.block_retries + 1):
        if not send.height:
            break
        if attempt:
            # Ray's stages fail a whole block when one request runs out of retries (or an
            # engine gives up on it): its rows, answered or not, arrive nowhere. Send those
            # rows again, a bounded number of times; what is still missing then becomes
            # error rows at consolidation and is retried by a rerun.
            log.warning("[%s] %s: %d row(s) lost with a failed block; sending them again "
                        "(pass %d of %d, generation.block_retries)", stage, label,
                        send.height, attempt + 1, gen.block_retries + 1)
            resent += send.height
            bar.set_total(bar.total + send.height)
        # A failed block must not kill the rest of the work (see above).
        ray.data.DataContext.get_current().max_errored_blocks = -1
        # One block per processor batch: a failed batch then costs its own rows only,
        # not every row that shared a block with it.
        processor = make_processor()
        n = processor.config.batch_size
        table = send.rename({"messages": "messages_json"}, strict=False).to_arrow()
        ds = processor(ray.data.from_arrow(
            [table.slice(i, n) for i in range(0, table.num_rows, n)]))
        for batch in _stream(ds, gen.shard_rows, gen.stall_timeout_s):
            rows = _normalise(batch, tokenizer)
            write(rows)
            seen.update(rows["gen_key"])
            written += len(batch)
            _crash_point(written // gen.shard_rows)
            bar.update(written)
        send = send.filter(~pl.col("gen_key").is_in(list(seen)))
    return written, resent


SCORE_SCHEMA = {"score_key": pl.Utf8, "perplexity": pl.Float64, "n_tokens": pl.Int64,
                "mean_logprob": pl.Float64, "error": pl.Utf8}
LABEL_SCHEMA = {"pair_key": pl.Utf8, "logprob_a": pl.Float64, "logprob_b": pl.Float64,
                "p_a": pl.Float64, "error": pl.Utf8}


def read_rows(gen: GenerationSection, processor, requests: pl.DataFrame,
              schema: dict[str, pl.DataType], stage: str, label: str) -> pl.DataFrame:
    """Run requests through a reading processor (log-probs, not text) and collect its rows
    in `schema`, whose first column is the row key. A failed row keeps its key and error."""
    import ray

    key = next(iter(schema))
    ray.data.DataContext.get_current().max_errored_blocks = -1
    ds = processor(ray.data.from_arrow(requests.to_arrow()))
    out = []
    with track(stage, label, requests.height) as bar:
        for batch in _stream(ds, gen.shard_rows, gen.stall_timeout_s):
            out += [_read_row(r, schema, key) for r in batch]
            bar.update(len(out))
    return pl.DataFrame(out, schema=schema)


def _read_row(r: dict[str, Any], schema: dict[str, pl.DataType], key: str) -> dict[str, Any]:
    err = r.get("__inference_error__") or ""
    row = {k: None if err else _py(r.get(k)) for k in schema}
    row.update({key: r[key], "error": str(err)[:2000] if err else (r.get("error") or "")})
    return row


def score_rows(run: EngineRun, spec: EngineSpec, requests: pl.DataFrame) -> pl.DataFrame:
    """Perplexity of every request (score_key, token_ids, start, lora_path) in one engine."""
    rows = read_rows(run.generation, scoring_processor(run, spec), requests, SCORE_SCHEMA,
                     "score",
                     f"perplexity ({Path(spec.model).name})")
    return rows.with_columns(pl.col("n_tokens").fill_null(0))


def label_rows(run: EngineRun, spec: EngineSpec, requests: pl.DataFrame,
               label_ids: list[int], sampling: dict[str, float] | None = None) -> pl.DataFrame:
    """Renormalised first-token label probability p_a of every pairwise request
    (pair_key, prompt: the templated text, messages_json, lora_path) in one engine."""
    return read_rows(run.generation, label_processor(run, spec, label_ids, sampling), requests,
                     LABEL_SCHEMA,
                     "judge", f"self-preference labels ({Path(spec.model).name})")
