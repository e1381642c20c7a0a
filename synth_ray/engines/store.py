"""What a source must answer, and where its answers go: requests, shards, resume.

Pure polars; no Ray. Each request is keyed by a content hash of (model, revision, sampling,
messages) so a rerun with the same settings reuses every answered row, and a change of
model or sampling invalidates exactly the rows it touches. Generation appends shards
(`generations/<source>/shard-*.parquet`, each written atomically); `consolidate` folds them
into `generations/<source>.parquet` with every requested row exactly once.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import polars as pl

from synth_ray.config import ExperimentConfig, SourceSection
from synth_ray.prompts import chat_messages
from synth_ray.runtime.rundir import hash_json, write_parquet

# Columns of a generation row, in order. `status` is ok | empty | truncated | error;
# only ok rows go into training sets.
GEN_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.Utf8,
    "part": pl.Int32,
    "gen_key": pl.Utf8,
    "source": pl.Utf8,
    "bracket": pl.Utf8,
    "backend": pl.Utf8,
    "model_id": pl.Utf8,
    "revision": pl.Utf8,
    "sampling": pl.Utf8,
    "messages": pl.Utf8,
    "response": pl.Utf8,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "finish_reason": pl.Utf8,
    "latency_s": pl.Float64,
    "error": pl.Utf8,
    "status": pl.Utf8,
    "attempt_time": pl.Float64,
}
STATUS_OK = "ok"
# A request: the provenance columns of GEN_SCHEMA plus its sampling seed.
REQUEST_SCHEMA: dict[str, pl.DataType] = {
    **{k: GEN_SCHEMA[k] for k in ("id", "part", "gen_key", "source", "bracket", "backend",
                                  "model_id", "revision", "sampling", "messages")},
    "seed": pl.Int64,
}


def parts_per_source(cfg: ExperimentConfig) -> dict[str, list[int]]:
    """Which training parts each source must answer, from the conditions (PAPER.md):
    the single-source model answers every part; in multi-source, part k is answered by
    the k-th listed source. A source needed by both answers the union, once."""
    need: dict[str, set[int]] = {}
    for bracket in cfg.brackets():
        single = cfg.single_source_for(bracket)
        need.setdefault(single, set()).update(range(1, cfg.split.num_parts + 1))
        for k, src in enumerate(cfg.multi_source_for(bracket), start=1):
            need.setdefault(src, set()).add(k)
    return {s.name: sorted(need[s.name]) for s in cfg.sources if s.name in need}


def gen_key(source: str, model: str, revision: str | None, sampling: dict,
            messages: list[dict]) -> str:
    """Content key of one request. The source's name is part of it: two sources (or two
    adapters) may serve the same weights, and each must still answer every row."""
    return hash_json({"source": source, "model": model, "revision": revision,
                      "sampling": sampling, "messages": messages})


def row_seed(key: str, base: int | None) -> int | None:
    """A per-request seed: reproducible, and different for every prompt."""
    return None if base is None else (int(key[:8], 16) + base) % (2**31 - 1)


def request_row(row_id: str, part: int, *, source: str, key_model: str, model_id: str,
                revision: str | None, bracket: str | None, backend: str, sampling: dict,
                messages: list[dict]) -> dict:
    """One request in REQUEST_SCHEMA. `key_model` is what the answer depends on (for an
    adapter: base model + adapter weights), `model_id` what the provenance names."""
    key = gen_key(source, key_model, revision, sampling, messages)
    return {"id": row_id, "part": part, "gen_key": key, "source": source, "bracket": bracket,
            "backend": backend, "model_id": model_id, "revision": revision,
            "sampling": json.dumps(sampling, sort_keys=True),
            "messages": json.dumps(messages, ensure_ascii=False),
            "seed": row_seed(key, sampling["seed"])}


def source_row(row_id: str, part: int, source: SourceSection, sampling: dict,
               messages: list[dict]) -> dict:
    """A request that `source` answers with its own model."""
    return request_row(row_id, part, source=source.name, key_model=source.model,
                       model_id=source.model, revision=source.revision, bracket=source.bracket,
                       backend=source.backend, sampling=sampling, messages=messages)


def build_requests(
    cfg: ExperimentConfig, source: SourceSection, parts: dict[int, pl.DataFrame]
) -> pl.DataFrame:
    """One request per row of the parts this source answers."""
    sampling = cfg.generation.sampling.model_dump()
    rows = [
        source_row(r["id"], k, source, sampling,
                   chat_messages(r["instruction"], r["context"], cfg.generation.system_prompt,
                                 source.system_turn))
        for k in sorted(parts) for r in parts[k].iter_rows(named=True)
    ]
    return pl.DataFrame(rows, schema=REQUEST_SCHEMA)


def classify(response: str, finish_reason: str, error: str) -> str:
    if error:
        return "error"
    if not response.strip():
        return "empty"
    if finish_reason == "length":
        return "truncated"
    return STATUS_OK


class GenerationStore:
    """Shards and the final file of one set of answers: `<folder>/<name>.parquet`."""

    def __init__(self, folder: Path, name: str):
        self.final = folder / f"{name}.parquet"
        self.shards = folder / name

    def _frames(self) -> list[pl.DataFrame]:
        files = sorted(self.shards.glob("shard-*.parquet")) if self.shards.exists() else []
        if self.final.exists():
            files.insert(0, self.final)
        return [pl.read_parquet(f).select(list(GEN_SCHEMA)) for f in files]

    def answered(self) -> pl.DataFrame:
        """Every row written so far, shards included (may hold repeats and errors)."""
        frames = self._frames()
        return pl.concat(frames) if frames else pl.DataFrame(schema=GEN_SCHEMA)

    def pending(self, requests: pl.DataFrame) -> pl.DataFrame:
        """Requests with no usable answer yet. Error rows count as unanswered: retried."""
        done = self.answered().filter(pl.col("status") != "error").select("gen_key").unique()
        if not done.height:  # a fresh store: the requests themselves, not a copy
            return requests
        return requests.join(done, on="gen_key", how="anti")

    def write_shard(self, rows: pl.DataFrame) -> Path:
        path = self.shards / f"shard-{time.time_ns()}.parquet"
        write_parquet(rows.select(list(GEN_SCHEMA)).cast(GEN_SCHEMA), path)
        return path

    def consolidate(self, requests: pl.DataFrame) -> pl.DataFrame:
        """Fold shards into the final file: exactly one row per request, the best answer
        (a non-error one, else the latest error); a request never answered becomes an
        error row, so no row goes missing silently. Requests with the same content key
        (e.g. a judge asked twice about the same prompt and answer) share one answer,
        each under its own id."""
        rows = self.answered()
        best = (
            rows.with_columns((pl.col("status") == "error").alias("_err"))
            .sort(["_err", "attempt_time"], descending=[False, True])
            .unique(subset=["gen_key"], keep="first", maintain_order=True)
            .drop("_err", "id", "part")
        )
        wanted = requests.select("gen_key", "id", "part").unique(maintain_order=True)
        got = wanted.join(best, on="gen_key", how="inner").select(list(GEN_SCHEMA))
        missing = requests.join(best.select("gen_key"), on="gen_key", how="anti").unique(
            ["gen_key", "id", "part"], maintain_order=True)
        if missing.height:
            filler = missing.drop("seed").with_columns(
                response=pl.lit(""), prompt_tokens=pl.lit(0, pl.Int64),
                completion_tokens=pl.lit(0, pl.Int64), finish_reason=pl.lit(""),
                latency_s=pl.lit(None, pl.Float64),
                error=pl.lit("no result: its batch failed (e.g. retries exhausted); see the log"),
                status=pl.lit("error"), attempt_time=pl.lit(time.time()),
            ).select(list(GEN_SCHEMA)).cast(GEN_SCHEMA)  # fmt: skip
            got = pl.concat([got.cast(GEN_SCHEMA), filler])
        final = got.sort(["part", "id"])
        write_parquet(final, self.final)
        shutil.rmtree(self.shards, ignore_errors=True)
        return final
