"""Bad input that only shows once the cluster runs: prompts longer than the model's context
(error rows with the engine's reason, the other rows answered, nothing lost) and a request
for more GPUs than the cluster has (a clear error at once, not a wait forever)."""

from __future__ import annotations

import json
import time

import polars as pl
import pytest

from tests.integration.helpers import TARGET, TRAINING, run_cli, small_config, write_datasets

pytestmark = pytest.mark.slow


def test_prompts_longer_than_the_context_become_error_rows(tmp_path) -> None:
    cfg = small_config(
        tmp_path, sources=[{"name": "small-a", "model": "tiny://small-a", "bracket": "small"}],
        conditions={"human": True, "single_source": {"small": "small-a"},
                    "multi_source": {"small": ["small-a"] * 4}, "exclude": ["empty", "error"]})
    run_dir = tmp_path / "run"
    args = (str(cfg), f"run.dir={run_dir}", "generation.max_model_len=128",
            "generation.max_error_fraction=1.0")
    assert run_cli("split", *args).returncode == 0
    proc = run_cli("generate", *args, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    gen = pl.read_parquet(run_dir / "generations" / "small-a.parquet")
    parts = pl.concat([pl.read_parquet(p) for p in (run_dir / "splits").glob("part-*.parquet")])
    assert gen.height == parts.height and gen["id"].n_unique() == gen.height  # none lost
    from transformers import AutoTokenizer

    from synth_ray.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("tiny://small-a"))
    n_prompt = {r["id"]: len(tok.apply_chat_template(json.loads(r["messages"]),
                                                      add_generation_prompt=True,
                                                      return_dict=True)["input_ids"])
                for r in gen.iter_rows(named=True)}
    errors = gen.filter(pl.col("status") == "error")
    assert errors.height > 0 and errors.height < gen.height
    for r in errors.iter_rows(named=True):  # only the long prompts failed, with a reason
        assert n_prompt[r["id"]] >= 128, (r["id"], n_prompt[r["id"]])
        assert f"prompt too long: {n_prompt[r['id']]} tokens" in r["error"], r["error"]
    assert all(n_prompt[i] < 128 for i in gen.filter(pl.col("status") != "error")["id"])
    # the build stage leaves the failed rows out, saying why
    proc = run_cli("build", *args)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((run_dir / "datasets" / "summary.json").read_text())
    assert summary["conditions"]["single-small"]["excluded"].get("error") == errors.height
    print(f"over-long prompts: {errors.height} error rows of {gen.height}, 0 lost")


def test_more_gpus_than_the_cluster_has_fails_at_once(tmp_path) -> None:
    cfg = small_config(tmp_path, targets=[{**TARGET, "use_gpu": True}], training=TRAINING)
    run_dir = tmp_path / "run"
    write_datasets(run_dir, ["human", "single-small", "multi-small"])
    t0 = time.time()
    proc = run_cli("train", str(cfg), f"run.dir={run_dir}", timeout=300)
    text = " ".join(proc.stderr.split())
    # refused before the stage starts (exit 2, as an invalid config), naming the key
    assert proc.returncode == 2, text[-3000:]
    assert "train: targets.0.num_workers needs 2 GPU(s); the cluster has 0" in text
    assert "fixed size" in text  # a local instance never grows
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"] \
        if (run_dir / "manifest.json").exists() else {}
    assert "train" not in stages  # the stage never began
    print(f"impossible resources: refused in {time.time() - t0:.0f}s")
