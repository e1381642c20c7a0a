from __future__ import annotations

import json
import time

import polars as pl
import yaml

from synth_ray.config import validate_config
from synth_ray.engines.store import (
    GEN_SCHEMA,
    GenerationStore,
    build_requests,
    classify,
    parts_per_source,
)


def cfg_from(demo_config_path, **changes):
    data = yaml.safe_load(demo_config_path.read_text())
    for k, v in changes.items():
        data[k] = v
    return validate_config(data)


def parts_frame(n: int = 6) -> dict[int, pl.DataFrame]:
    return {
        k: pl.DataFrame({"id": [f"{k}-{i}" for i in range(n)],
                         "instruction": [f"q {k} {i}" for i in range(n)],
                         "context": ["" if i % 2 else "ctx" for i in range(n)]})
        for k in (1, 2)
    }


def answer(req: pl.DataFrame, status: str = "ok", text: str = "an answer") -> pl.DataFrame:
    return req.drop("seed").with_columns(
        response=pl.lit(text if status != "error" else ""),
        prompt_tokens=pl.lit(3, pl.Int64), completion_tokens=pl.lit(2, pl.Int64),
        finish_reason=pl.lit("stop"), latency_s=pl.lit(0.1),
        error=pl.lit("boom" if status == "error" else ""), status=pl.lit(status),
        attempt_time=pl.lit(time.time()),
    ).select(list(GEN_SCHEMA)).cast(GEN_SCHEMA)  # fmt: skip


def test_parts_per_source_follows_conditions(demo_config_path) -> None:
    cfg = cfg_from(demo_config_path)
    assert parts_per_source(cfg) == {"small-a": [1, 2, 3, 4], "small-b": [2],
                                     "small-c": [3], "small-d": [4]}


def test_requests_keys_and_messages(demo_config_path) -> None:
    cfg = cfg_from(demo_config_path)
    req = build_requests(cfg, cfg.source("small-a"), parts_frame())
    assert req.height == 12 and req["gen_key"].n_unique() == 12
    msgs = json.loads(req["messages"][0])
    assert msgs[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert msgs[1]["content"] == "q 1 0\n\nCONTEXT:\nctx"
    folded = json.loads(build_requests(cfg, cfg.source("small-d"), parts_frame())["messages"][0])
    assert len(folded) == 1 and folded[0]["content"].startswith("You are a helpful assistant.")
    again = build_requests(cfg, cfg.source("small-a"), parts_frame())
    assert again["gen_key"].to_list() == req["gen_key"].to_list()  # stable
    assert req["seed"].n_unique() == 12
    data = yaml.safe_load(demo_config_path.read_text())
    data["generation"]["sampling"]["temperature"] = 0.1
    other = build_requests(validate_config(data), cfg.source("small-a"), parts_frame())
    assert set(other["gen_key"]).isdisjoint(req["gen_key"])  # new sampling: all new keys


def test_resume_and_consolidate_give_every_row_once(tmp_path, demo_config_path) -> None:
    cfg = cfg_from(demo_config_path)
    req = build_requests(cfg, cfg.source("small-a"), parts_frame())
    store = GenerationStore(tmp_path, "small-a")
    assert store.pending(req).height == 12
    store.write_shard(answer(req.head(5)))
    store.write_shard(answer(req.slice(5, 3), status="error"))
    store.write_shard(answer(req.head(2), text="a repeat"))  # a repeat must not double
    pending = store.pending(req)
    assert pending.height == 7  # 3 errors are retried, 4 never sent
    store.write_shard(answer(pending.head(6)))  # one request stays unanswered
    final = store.consolidate(req)
    assert final.height == 12
    assert sorted(final["gen_key"].to_list()) == sorted(req["gen_key"].to_list())
    assert final["status"].value_counts().sort("status").rows() == [("error", 1), ("ok", 11)]
    assert "batch failed" in final.filter(pl.col("status") == "error")["error"][0]
    assert not store.shards.exists()
    assert store.pending(req).height == 1  # only the failed row is sent again
    assert final.equals(final.sort(["part", "id"]))


def test_classify() -> None:
    assert classify("text", "stop", "") == "ok"
    assert classify("  ", "stop", "") == "empty"
    assert classify("text", "length", "") == "truncated"
    assert classify("", "", "Engine died") == "error"


def test_sources_with_the_same_model_get_their_own_keys(demo_config_path) -> None:
    data = yaml.safe_load(demo_config_path.read_text())
    data["sources"][1]["model"] = data["sources"][0]["model"]  # two names, one model
    cfg = validate_config(data)
    a = build_requests(cfg, cfg.source("small-a"), parts_frame())
    b = build_requests(cfg, cfg.source("small-b"), parts_frame())
    assert set(a["gen_key"]).isdisjoint(b["gen_key"])


def test_requests_with_the_same_content_share_one_answer(tmp_path, demo_config_path) -> None:
    """Two requests with one content key (a judge asked about the same prompt and answer
    for two adapters) are sent once and both get the answer, each under its own id."""
    cfg = cfg_from(demo_config_path)
    req = build_requests(cfg, cfg.source("small-a"), parts_frame())
    twin = req.head(1).with_columns(id=pl.lit("twin"))
    both = pl.concat([req, twin])
    store = GenerationStore(tmp_path, "judge")
    pending = store.pending(both)
    assert pending.height == 13 and pending["gen_key"].n_unique() == 12
    store.write_shard(answer(req))  # sent once per key
    final = store.consolidate(both)
    assert final.height == 13 and (final["status"] == "ok").all()
    first = final.filter(pl.col("id").is_in([req["id"][0], "twin"]))
    assert first.height == 2 and first["gen_key"].n_unique() == 1
    assert first["response"].to_list() == ["an answer", "an answer"]
    assert store.pending(both).height == 0


def test_sources_built_alike_share_one_engine(demo_config_path) -> None:
    """`engine_groups`: one model under two system-turn styles is one engine start; another
    model, or the same one with other engine arguments, is an engine of its own."""
    from synth_ray.engines.generation import engine_groups

    data = yaml.safe_load(demo_config_path.read_text())
    a, b, c, d = data["sources"]
    b["model"] = d["model"] = a["model"]  # d folds its system turn: the same engine still
    d["engine_kwargs"] = {"enable_prefix_caching": False}  # ... but not with other arguments
    cfg = validate_config(data)
    assert engine_groups(cfg, ["small-a", "small-b", "small-c", "small-d"]) == [
        ["small-a", "small-b"], ["small-c"], ["small-d"]]
    d.pop("engine_kwargs")
    cfg = validate_config(data)
    assert engine_groups(cfg, ["small-a", "small-b", "small-c", "small-d"]) == [
        ["small-a", "small-b", "small-d"], ["small-c"]]
    # each keeps its own requests (keys and messages): the fold is small-d's alone
    ra = build_requests(cfg, cfg.source("small-a"), parts_frame())
    rd = build_requests(cfg, cfg.source("small-d"), parts_frame())
    assert set(ra["gen_key"]).isdisjoint(rd["gen_key"])
    assert json.loads(ra["messages"][0])[0]["role"] == "system"
    assert all(m["role"] != "system" for m in json.loads(rd["messages"][0]))
