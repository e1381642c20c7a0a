"""`synth-ray rehearse`'s swaps (synth_ray/rehearse.py): every model for a stand-in of its
role, absent inputs for bundled samples, sizes capped, and nothing else changed without a
recorded swap; the rehearsal's own run directory; the hosted sources' keys checked on their
real names and kept out of the stand-in server's log."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from synth_ray.config import load_config
from synth_ray.engines import standin_server
from synth_ray.rehearse import (
    CAPS,
    STAND_INS,
    holds_real_run,
    rehearsal_config,
    rehearsal_data,
    run_dir_of,
)

PAPER = ["jobs/configs/paper-8b.yaml", "jobs/configs/paper-70b.yaml"]
URL = "http://127.0.0.1:9/v1"


def leaves(data, prefix=""):
    """Every leaf of a config dump as dotted key -> value."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return {prefix: data}
    out = {}
    for k, v in items:
        out.update(leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def rehearse(path: str, tmp_path: Path, gpu: bool = False):
    real = load_config(path, [f"run.dir={tmp_path / 'run'}"])
    data, swaps = rehearsal_data(real, config=path, run_dir=str(tmp_path / "run"),
                                 inputs_dir=tmp_path / "inputs", server_url=URL, gpu=gpu,
                                 address=None)
    return real, rehearsal_config(data, path), swaps


@pytest.mark.parametrize("path", PAPER)
def test_every_change_is_a_recorded_swap(path, tmp_path) -> None:
    real, cfg, swaps = rehearse(path, tmp_path)
    before = leaves(real.model_dump(mode="json"))
    after = leaves(cfg.model_dump(mode="json", exclude={"rehearsal"}))
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    recorded = {s["key"] for s in swaps}
    # a swap of a whole value (None -> a number) shows as its own key
    assert changed == recorded, (changed - recorded, recorded - changed)
    for s in swaps:
        assert before.get(s["key"]) == s["real"] and after.get(s["key"]) == s["stand_in"]
    # and the rehearsal's config.yaml carries them
    assert [w.key for w in cfg.rehearsal.swaps] == [s["key"] for s in swaps]
    assert cfg.rehearsal.config == path


@pytest.mark.parametrize("path", PAPER)
def test_models_become_stand_ins_of_their_role(path, tmp_path) -> None:
    real, cfg, _ = rehearse(path, tmp_path)
    for r, s in zip(real.sources, cfg.sources, strict=True):
        if r.backend == "http":  # same backend, name, key variable, limits; a local URL
            assert (s.backend, s.model, s.http.api_key_env, s.http.qps, s.http.max_retries) \
                == ("http", r.model, r.http.api_key_env, r.http.qps, r.http.max_retries)
            assert s.http.base_url == URL
        else:
            assert s.model == STAND_INS["source"]
            assert (s.tensor_parallel_size, s.replicas, s.accelerator_type) == (1, 1, None)
            assert s.system_turn == r.system_turn  # what the stand-in can honour stays
    for r, t in zip(real.targets, cfg.targets, strict=True):
        assert t.model == STAND_INS["target"]
        assert (t.strategy, t.gradient_checkpointing, t.self_source, t.published) == \
            (r.strategy, r.gradient_checkpointing, r.self_source, r.published)
        assert t.num_workers == 2 and not t.use_gpu
        assert t.engine.tensor_parallel_size == 1
    assert cfg.judge.model == STAND_INS["judge"]
    assert cfg.judge.decoding == real.judge.decoding == "sampled"
    assert cfg.judge.jailbreak_design == "authors" and cfg.split.method == "sklearn"
    assert cfg.conditions == real.conditions and cfg.training.seeds == real.training.seeds
    assert cfg.resources.node_env == ["HF_TOKEN"]  # still checked on every node
    assert cfg.resources.ray_address is None and cfg.resources.accelerator == "cpu"


def test_sizes_are_capped_and_absent_inputs_sampled(tmp_path) -> None:
    real, cfg, _ = rehearse(PAPER[0], tmp_path)
    assert cfg.dataset.path == "tiny://dolly-sample"
    assert cfg.dataset.max_rows == CAPS["dataset.max_rows"]
    assert cfg.generation.sampling.max_tokens == CAPS["generation.sampling.max_tokens"]
    assert cfg.judge.max_articles == CAPS["judge.max_articles"]
    # the real files are absent here: samples in their layouts, read by the real loaders
    for key, name in [("safety_prompts", "refusalbench.json"),
                      ("jailbreak_templates", "jailbreak_prompts.csv"),
                      ("articles", "cnn_dailymail_test_sample.jsonl")]:
        assert getattr(cfg.judge, key) == str(tmp_path / "inputs" / name)
    from synth_ray.runtime.readiness import input_problems

    assert input_problems(cfg) == []


def test_a_present_input_is_used_as_it_is(tmp_path, monkeypatch) -> None:
    # a RefusalBench file in the wrong layout stays, so its loader's refusal stops the run
    bad = tmp_path / "refusalbench.json"
    bad.write_text('["a list, not category -> prompts"]')
    real = load_config(PAPER[0], [f"judge.safety_prompts={bad}"])
    data, swaps = rehearsal_data(real, config=PAPER[0], run_dir=str(tmp_path / "run"),
                                 inputs_dir=tmp_path / "inputs", server_url=URL, gpu=False,
                                 address=None)
    cfg = rehearsal_config(data, PAPER[0])
    assert cfg.judge.safety_prompts == str(bad)
    assert "judge.safety_prompts" not in {s["key"] for s in swaps}
    from synth_ray.runtime.readiness import input_problems

    assert [p.key for p in input_problems(cfg)] == ["judge.safety_prompts"]


def test_the_rehearsal_has_its_own_run_dir(tmp_path) -> None:
    real = load_config(PAPER[0], [])
    assert run_dir_of(real, []) == "runs/paper-8b-rehearsal"
    given = load_config(PAPER[0], [f"run.dir={tmp_path}"])
    assert run_dir_of(given, [f"run.dir={tmp_path}"]) == str(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"run": {"name": "paper-8b"}}))
    assert holds_real_run(str(tmp_path))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"rehearsal": {"config": "x"}}))
    assert not holds_real_run(str(tmp_path))


def test_inside_a_job_the_rehearsal_keeps_the_cluster(tmp_path, monkeypatch) -> None:
    """A local rehearsal's Ray instance cannot grow; inside `ray job submit` the cluster's
    autoscaling stays as the config says. Either way tracking goes to an experiment of its
    own."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    real, local, _ = rehearse(PAPER[0], tmp_path)
    assert real.resources.autoscaling and not local.resources.autoscaling
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    _, job, swaps = rehearse(PAPER[0], tmp_path)
    assert job.resources.autoscaling
    assert "resources.autoscaling" not in {s["key"] for s in swaps}
    assert job.tracking.experiment == local.tracking.experiment \
        == f"{real.tracking.experiment}-rehearsal"


def test_on_a_cluster_the_stand_in_server_listens_where_the_workers_reach_it() -> None:
    real = load_config(PAPER[0], [])
    args = standin_server.server_args(real, "/m", {}, gpu=False, port=1, host="10.0.0.7")
    assert args[args.index("--host") + 1] == "10.0.0.7"
    assert standin_server.base_url(1, "10.0.0.7") == "http://10.0.0.7:1/v1"


def test_hosted_keys_are_read_on_their_real_names(monkeypatch) -> None:
    real = load_config(PAPER[0], [])
    for env in ("TOGETHER_API_KEY", "DEEPSEEK_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.setenv(env, f"value-of-{env}")
    keys = standin_server.hosted_keys(real)
    assert keys == {env: f"value-of-{env}" for env in ("TOGETHER_API_KEY", "DEEPSEEK_API_KEY",
                                                         "OPENAI_API_KEY", "GEMINI_API_KEY")}
    args = standin_server.server_args(real, "/m", keys, gpu=False, port=1)
    names = args[args.index("--served-model-name") + 1: args.index("--host")]
    assert names == [s.model for s in real.sources if s.backend == "http"]
    assert args[args.index("--api-key") + 1:] == list(keys.values())


SECRETS = {"HF_TOKEN": "hf-x", "TOGETHER_API_KEY": "t", "DEEPSEEK_API_KEY": "d",
           "OPENAI_API_KEY": "o", "GEMINI_API_KEY": "g"}


def refused(tmp_path, monkeypatch, *args: str, unset: str | None = None):
    """`synth-ray rehearse paper-8b ...` in this process; it must stop before any stage
    (no Ray, no server: nothing under the run dir but the input samples)."""
    from typer.testing import CliRunner

    from synth_ray.cli import app

    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    if unset:
        monkeypatch.delenv(unset)
    run = tmp_path / "run"
    got = CliRunner().invoke(app, ["rehearse", PAPER[0], f"run.dir={run}", *args])
    assert not (run / "manifest.json").exists() and not (run / "rehearsal_server.log").exists()
    # rich wraps lines at its width, long paths too: compared without whitespace
    return got.exit_code, "".join(got.output.split())


def says(out: str, text: str) -> bool:
    return "".join(text.split()) in out


def test_a_missing_secret_stops_the_rehearsal(tmp_path, monkeypatch) -> None:
    code, out = refused(tmp_path, monkeypatch, unset="OPENAI_API_KEY")
    assert code == 2
    assert says(out, "sources.10.http.api_key_env (gpt-4o): environment variable OPENAI_API_KEY")
    code, out = refused(tmp_path, monkeypatch, unset="HF_TOKEN")
    assert code == 2 and says(out, "resources.node_env: environment variable HF_TOKEN")


def test_a_prompt_set_in_the_wrong_layout_stops_the_rehearsal(tmp_path, monkeypatch) -> None:
    bad = tmp_path / "refusalbench.json"
    bad.write_text('["a list, not category -> prompts"]')
    code, out = refused(tmp_path, monkeypatch, f"judge.safety_prompts={bad}")
    assert code == 2 and says(out, f"judge.safety_prompts: {bad}")


def test_a_local_run_dir_on_a_cluster_stops_the_rehearsal(tmp_path, monkeypatch) -> None:
    # --address joins a cluster: its nodes cannot see a folder on this machine
    code, out = refused(tmp_path, monkeypatch, "--address", "127.0.0.1:1")
    assert code == 2 and says(out, f"run.dir: '{tmp_path / 'run'}' is a folder on this machine")


def test_a_real_runs_directory_is_refused(tmp_path, monkeypatch) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("run: {name: paper-8b}\n")
    code, out = refused(tmp_path, monkeypatch)
    assert code == 2 and says(out, "holds a run that is not a rehearsal")


def test_the_server_log_holds_no_key(tmp_path) -> None:
    log = tmp_path / "server.log"
    stream = io.StringIO("non-default args: {'api_key': ['sk-1', 'sk-22']}\nready\n")
    standin_server._redacting_copy(stream, log, ["sk-1", "sk-22"])
    text = log.read_text()
    assert "sk-1" not in text and "sk-22" not in text and "ready" in text


def test_a_role_takes_another_stand_in(tmp_path, monkeypatch) -> None:
    real = load_config(PAPER[0], [])
    data, _ = rehearsal_data(real, config=PAPER[0], run_dir=str(tmp_path), inputs_dir=tmp_path,
                             server_url=URL, gpu=True, address=None, train_workers=1,
                             stand_ins={"target": "tiny://smollm2-135m-instruct"})
    cfg = rehearsal_config(data, PAPER[0])
    assert cfg.targets[0].model == "tiny://smollm2-135m-instruct"
    assert cfg.judge.model == STAND_INS["judge"]
    # on a GPU: the engines stay on cuda, a training worker per GPU
    assert cfg.resources.accelerator == "cuda" and cfg.targets[0].use_gpu
    assert cfg.targets[0].num_workers == 1
    code, out = refused(tmp_path, monkeypatch, "--stand-in", "teacher=tiny://judge")
    assert code == 2 and says(out, "--stand-in takes ROLE=MODEL")
    code, out = refused(tmp_path, monkeypatch, "--accelerator", "tpu")
    assert code == 2 and says(out, "--accelerator takes cuda or cpu; got tpu")
