"""The Ray-free parts of training: example encoding, batching, step plan, adapter checks."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer

from synth_ray.config import ExperimentConfig, TargetSection
from synth_ray.toy import tiny
from synth_ray.train.data import IGNORE, collate, encode_example
from synth_ray.train.deepspeed import zero3_config
from synth_ray.train.loop import mfu, plan_steps
from synth_ray.train.lora import AdapterError, check_adapter


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(tiny.tokenizer_path())


def test_response_only_labels(tok) -> None:
    ex = encode_example(tok, "Name a colour.", "", "Red.", "You are a helpful assistant.", 512)
    prompt = tok.apply_chat_template(
        [{"role": "system", "content": "You are a helpful assistant."},
         {"role": "user", "content": "Name a colour."}], tokenize=False,
        add_generation_prompt=True)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert ex["labels"][:n_prompt] == [IGNORE] * n_prompt
    answer = ex["labels"][n_prompt:]
    assert tok.decode(answer) == "Red.<|eot_id|>"  # the model learns to end its turn
    assert ex["input_ids"][n_prompt:] == answer
    whole = encode_example(tok, "Name a colour.", "", "Red.", "You are a helpful assistant.",
                           512, loss_on="all")
    assert whole["labels"] == whole["input_ids"] == ex["input_ids"]


def test_truncation_and_collate(tok) -> None:
    ex = encode_example(tok, "word " * 50, "", "answer " * 50, None, 40)
    assert len(ex["input_ids"]) == len(ex["labels"]) == 40
    short = encode_example(tok, "Hi", "", "Yo", None, 40)
    batch = collate([ex, short], pad_id=tok.pad_token_id)
    assert batch["input_ids"].shape == (2, 40)
    n = len(short["input_ids"])
    assert batch["attention_mask"][1].tolist() == [1] * n + [0] * (40 - n)
    assert (batch["labels"][1, n:] == IGNORE).all()


def test_plan_steps_matches_effective_batch() -> None:
    # 13,509 rows, 8 workers x 8 per device, effective 64 -> accum 1, 212 steps an epoch
    p = plan_steps(13_509, 8, 8, 1, 3, 0.03)
    assert (p.micro_per_epoch, p.steps_per_epoch, p.total_steps, p.warmup_steps) == (
        212, 212, 636, 19)
    p = plan_steps(100, 4, 1, 4, 1, 0.0)  # 25 micro-batches, 4 per step -> 7 steps
    assert (p.micro_per_epoch, p.steps_per_epoch) == (25, 7)
    # epochs as a fraction round up per epoch (pre-training asked 200, got 201-202);
    # max_steps is exact and the warm-up follows it
    assert plan_steps(3_500, 16, 1, 1, 200 * 16 / 3_500, 0.05).total_steps == 201
    p = plan_steps(3_500, 16, 1, 1, 1, 0.05, max_steps=200)
    assert (p.total_steps, p.warmup_steps, p.steps_per_epoch) == (200, 10, 219)


def test_mfu_formula() -> None:
    # 8B params at 1,000 tok/s on a 989 TFLOP/s card: 4 * 8e9 * 1e3 / 989e12
    assert mfu(1000.0, 8_000_000_000, 989e12) == pytest.approx(0.032356, rel=1e-4)
    assert mfu(1000.0, 10, None) is None


def _adapter(tmp_path, tensors) -> str:
    tmp_path.mkdir(parents=True)
    save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 2}))
    return str(tmp_path)


def test_check_adapter_catches_empty_and_zero(tmp_path) -> None:
    a = torch.randn(2, 8)
    good = {"x.lora_A.weight": a, "x.lora_B.weight": torch.randn(8, 2)}
    assert check_adapter(_adapter(tmp_path / "ok", good))["tensors"] == 2
    with pytest.raises(AdapterError, match="empty tensor"):
        check_adapter(_adapter(tmp_path / "empty", {**good, "x.lora_B.weight": torch.empty(0)}))
    with pytest.raises(AdapterError, match="all zero"):
        check_adapter(_adapter(tmp_path / "untrained",
                               {**good, "x.lora_B.weight": torch.zeros(8, 2)}))
    with pytest.raises(AdapterError, match="no adapter_model"):
        check_adapter(tmp_path / "missing")


def test_zero3_config_from_sections() -> None:
    cfg = ExperimentConfig()
    target = TargetSection(name="t", model="m", strategy="deepspeed", num_workers=16,
                           per_device_batch_size=1, effective_batch_size=128, cpu_offload=True)
    ds = zero3_config(cfg.training, target, accum=8)
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * 16 == 128
    assert ds["bf16"]["enabled"] and ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


def test_autocast_runs_forward_in_bfloat16_and_keeps_fp32_weights() -> None:
    from synth_ray.train.loop import mixed_precision

    layer = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8)
    with mixed_precision("cpu", "bfloat16")():
        y = layer(x)
    assert y.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    # the same numbers as a bf16 matmul computed by hand, not the fp32 ones
    ref = torch.nn.functional.linear(x.bfloat16(), layer.weight.bfloat16(),
                                     layer.bias.bfloat16())
    torch.testing.assert_close(y, ref)
    with mixed_precision("cpu", "none")():
        assert layer(x).dtype == torch.float32


def test_autocast_is_refused_with_deepspeed() -> None:
    from synth_ray.config.checks import cross_reference_problems

    data = {"sources": [], "conditions": {"human": True}, "training": {"autocast": "bfloat16"},
            "targets": [{"name": "t", "model": "tiny://target", "strategy": "deepspeed"}]}
    problems = cross_reference_problems(ExperimentConfig.model_validate(data))
    assert any("training.autocast" in p and "DeepSpeed" in p for p in problems)


def test_train_runs_chunk_each_targets_grid_in_order() -> None:
    from synth_ray.train.jobs import train_runs

    def job(target: str, name: str) -> dict:
        return {"target": target, "run_name": f"{target}--{name}", "storage": "s", "config": {}}

    cfg = ExperimentConfig.model_validate({
        "sources": [], "conditions": {"human": True}, "training": {"adapters_per_run": 2},
        "targets": [{"name": "a", "model": "m"}, {"name": "b", "model": "m"}]})
    jobs = [job("a", f"c{i}") for i in range(5)] + [job("b", "c0")]
    runs = train_runs(cfg, jobs)
    # never two targets in one run (each has its own workers); names fixed by the grid
    assert [r["run_name"] for r in runs] == ["a--c0--2-adapters", "a--c2--2-adapters", "a--c4",
                                               "b--c0"]
    assert [[j["run_name"] for j in r["jobs"]] for r in runs] == [
        ["a--c0", "a--c1"], ["a--c2", "a--c3"], ["a--c4"], ["b--c0"]]
    assert [r["target"] for r in runs] == ["a", "a", "a", "b"]


def test_a_finished_adapter_of_other_settings_is_trained_again(tmp_path) -> None:
    """The job hash follows what an adapter learns from (not how it is scheduled); an
    adapter saved with another hash is not done, and its Ray Train run gets another name."""
    from synth_ray.train.driver import done, train_run
    from synth_ray.train.jobs import job_hash

    def cfg(**training) -> ExperimentConfig:
        return ExperimentConfig.model_validate({
            "sources": [], "conditions": {"human": True}, "training": training,
            "targets": [{"name": "a", "model": "m"}]})

    data = tmp_path / "human.parquet"
    data.write_bytes(b"rows")
    base = cfg()

    def h(c: ExperimentConfig, seed: int = 1) -> str:
        return job_hash(c, c.targets[0], "human", seed, data)

    assert h(cfg(parallel_trials=3, adapters_per_run=4, poll_interval_s=9)) == h(base)
    assert h(cfg(learning_rate=1e-4)) != h(base) and h(base, seed=2) != h(base)
    before = h(base)
    data.write_bytes(b"other rows")
    assert h(base) != before  # another training set
    out = _adapter(tmp_path / "adapter", {"x.lora_A.weight": torch.randn(2, 8),
                                          "x.lora_B.weight": torch.randn(8, 2)})
    (tmp_path / "adapter" / "training_summary.json").write_text(json.dumps({"job_hash": "x1"}))
    assert done({"output": out, "job_hash": "x1"})
    assert not done({"output": out, "job_hash": "x2"})
    (tmp_path / "adapter" / "training_summary.json").write_text("{}")  # saved before hashes
    assert done({"output": out, "job_hash": "x2"})

    def run(hash_: str) -> str:
        return train_run([{"run_name": "a--human", "storage": "s", "target": "a", "config": {},
                           "job_hash": hash_}])["run_name"]
    assert run("x1").startswith("a--human--") and run("x1") != run("x2")
