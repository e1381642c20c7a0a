"""`synth-ray export` of the trained grid: the training sets load with `datasets`, the
adapters with PEFT (weights as trained), each with its card; `--push`'s calls to the Hub."""

from __future__ import annotations

import json
import subprocess
import sys

import polars as pl
import pytest
import torch
import yaml

from synth_ray import models
from synth_ray.config import load_config
from synth_ray.export import push

from .helpers import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(grid_run, tmp_path_factory):
    _, run_dir = grid_run
    out = tmp_path_factory.mktemp("export") / "out"
    proc = subprocess.run([sys.executable, "-m", "synth_ray.cli", "export", str(run_dir),
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, out


def card(path) -> tuple[dict, str]:
    _, meta, body = path.read_text().split("---\n", 2)
    return yaml.safe_load(meta), body


def test_training_sets_load_with_datasets_as_the_chats_trained_on(exported, tmp_path) -> None:
    from datasets import load_dataset

    run_dir, out = exported
    cfg = load_config(run_dir / "config.yaml")
    for condition in ("human", "single-small", "multi-small"):
        src = pl.read_parquet(run_dir / "datasets" / f"{condition}.parquet")
        # a cache of its own: `datasets` keys a local folder's cache by its relative data
        # file patterns, so another folder of the same name loaded before would be served
        ds = load_dataset(str(out / "datasets" / condition), cache_dir=str(tmp_path / "hf"))
        for split in ("train", "validation"):
            want = src.filter(pl.col("split") == split)
            got = ds[split]
            assert got.num_rows == want.height > 0
            assert got["id"] == want["id"].to_list()
            first, row = got[0]["messages"], want.row(0, named=True)
            assert [m["role"] for m in first] == ["system", "user", "assistant"]
            assert first[0]["content"] == cfg.generation.system_prompt
            assert first[1]["content"].startswith(row["instruction"])
            assert first[2]["content"] == row["response"]
        meta, body = card(out / "datasets" / condition / "README.md")
        assert {s["split"] for s in meta["configs"][0]["data_files"]} == {"train", "validation"}
        assert condition in meta["tags"] and f"`{condition}`" in body
    _, body = card(out / "datasets" / "multi-small" / "README.md")
    assert '"part 2": "small-b"' in body  # which source answered which part


def test_adapters_load_with_peft_as_trained(exported) -> None:
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    run_dir, out = exported
    folder = out / "adapters" / "tiny-target" / "multi-small"
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(models.resolve_model("tiny://target")), folder)
    trained = load_file(str(run_dir / "adapters" / "tiny-target" / "multi-small" /
                            "adapter_model.safetensors"))
    params = dict(model.named_parameters())
    for k, t in trained.items():
        assert torch.equal(params[k.replace(".weight", ".default.weight")].detach(), t)
    meta, body = card(folder / "README.md")
    assert meta["base_model"] == "tiny://target" and meta["library_name"] == "peft"
    summary = json.loads((folder / "training_summary.json").read_text())
    assert f"{summary['steps']} optimizer steps" in body
    assert sorted(p.name for p in (out / "adapters" / "tiny-target").iterdir()) == [
        "human", "multi-small", "single-small"]


def test_push_creates_a_private_repo_per_dataset_and_adapter(exported) -> None:
    """The Hub is not reachable here: the calls `--push` makes, on an autospec of the real
    `huggingface_hub.HfApi`, so a call its methods do not accept (a wrong or missing
    argument) fails as it would against the Hub."""
    from unittest import mock

    from huggingface_hub import HfApi

    _, out = exported
    api = mock.create_autospec(HfApi, instance=True)
    repos = push(out, "run", "my-org", api=api)
    assert repos == ["my-org/run-human", "my-org/run-multi-small", "my-org/run-single-small",
                     "my-org/run-tiny-target-human", "my-org/run-tiny-target-multi-small",
                     "my-org/run-tiny-target-single-small"]
    calls = api.method_calls
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"] * 6
    for (_, args, kw), repo in zip(calls[::2], repos):
        kind = "model" if "target" in repo else "dataset"
        assert (args, kw) == ((repo,), {"repo_type": kind, "private": True, "exist_ok": True})
    uploads = {c.kwargs["repo_id"]: c.kwargs for c in calls[1::2]}
    assert uploads["my-org/run-human"]["folder_path"] == str(out / "datasets" / "human")
    assert uploads["my-org/run-human"]["repo_type"] == "dataset"
    assert uploads["my-org/run-tiny-target-human"]["repo_type"] == "model"
    assert uploads["my-org/run-tiny-target-human"]["folder_path"] == str(
        out / "adapters" / "tiny-target" / "human")
