"""Tracking without a cluster: the default store in the run directory, a rerun continuing
the same MLflow run, a new run for a changed config, a server that is not there (exit 2
before any stage), a run in a bucket refused, and the metric keys of a summary."""

from __future__ import annotations

import json
import socket

import pytest
from typer.testing import CliRunner

from synth_ray.cli import app
from synth_ray.config import ConfigError, load_config
from synth_ray.observe.tracker import flat_numbers
from synth_ray.runtime.status import run_status

runner = CliRunner()


def test_default_store_in_the_run_dir_and_a_rerun_continues_the_run(
        tmp_path, demo_config_path) -> None:
    from mlflow import MlflowClient

    rd = tmp_path / "run"
    args = ["split", str(demo_config_path), f"run.dir={rd}", "tracking.backend=mlflow"]
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    client = MlflowClient(f"sqlite:///{rd / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("synth-ray")
    assert exp.artifact_location.startswith((rd / "mlflow" / "artifacts").resolve().as_uri())
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["split.seed"] == str(load_config(demo_config_path).split.seed)
    manifest = json.loads((rd / "manifest.json").read_text())
    seconds = client.get_metric_history(run.info.run_id, "stage/split/seconds")
    assert len(seconds) == 2  # both runs of the stage, in the one MLflow run
    assert seconds[-1].value == pytest.approx(manifest["stages"]["split"]["wall_s"])
    rows = client.get_metric_history(run.info.run_id, "stage/split/rows")[-1].value
    assert rows == sum(manifest["stages"]["split"]["rows"].values())
    assert run_status(rd)["tracking"]["run_id"] == run.info.run_id
    # another config in the same run directory: its params would clash, so a new run
    assert runner.invoke(app, [*args, "split.seed=7"]).exit_code == 0
    assert len(client.search_runs([exp.experiment_id])) == 2


def test_a_server_that_does_not_answer_stops_the_run_before_any_stage(
        tmp_path, demo_config_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens
    rd = tmp_path / "run"
    r = runner.invoke(app, ["split", str(demo_config_path), f"run.dir={rd}",
                            "tracking.backend=mlflow", f"tracking.uri=http://127.0.0.1:{port}"])
    assert r.exit_code == 2
    assert f"no MLflow server answers at http://127.0.0.1:{port}" in " ".join(r.output.split())
    assert not (rd / "splits").exists()


def test_a_run_in_a_bucket_needs_a_server(demo_config_path) -> None:
    with pytest.raises(ConfigError, match="tracking.uri: a run in a bucket"):
        load_config(demo_config_path, ["run.dir=s3://b/run", "tracking.backend=mlflow"])
    with pytest.raises(ConfigError, match="tracking.wandb_mode"):
        load_config(demo_config_path, ["run.dir=s3://b/run", "tracking.backend=wandb"])
    load_config(demo_config_path, ["run.dir=s3://b/run", "tracking.backend=mlflow",
                                   "tracking.uri=http://mlflow:5000"])
    # a password in the URI would land in config.yaml, tracking.json and the log
    with pytest.raises(ConfigError, match="tracking.uri: .*MLFLOW_TRACKING_PASSWORD"):
        load_config(demo_config_path, ["tracking.uri=https://me:s3cret@mlflow.example:443"])


def test_summary_numbers_get_keys_by_condition_and_pair() -> None:
    summary = {"perplexity": {"outputs": {"summary": {"human": {"mean": 3.5, "n": 12}},
                                          "tests": {"pairs": [{"a": "human", "b": "multi",
                                                               "U": 4.0, "p": 0.5}]}}},
               "diversity": [{"condition": "single (x)", "self_bleu": 41.0, "note": "text"},
                             {"condition": "multi", "self_bleu": float("nan")}],
               "flag": True}
    assert flat_numbers(summary, "score/t") == {
        "score/t/perplexity/outputs/summary/human/mean": 3.5,
        "score/t/perplexity/outputs/summary/human/n": 12.0,
        "score/t/perplexity/outputs/tests/pairs/human-vs-multi/U": 4.0,
        "score/t/perplexity/outputs/tests/pairs/human-vs-multi/p": 0.5,
        "score/t/diversity/single _x_/self_bleu": 41.0,  # MLflow's key characters only
        "score/t/flag": 1.0,
    }


def test_a_tracking_failure_after_a_stage_keeps_the_stage_and_says_so(
        tmp_path, demo_config_path, monkeypatch) -> None:
    from synth_ray.observe.mlflow_tracking import MlflowTracker

    def refuse(self, stage, record):
        raise ConnectionError("tracking server went away")

    monkeypatch.setattr(MlflowTracker, "stage_done", refuse)
    rd = tmp_path / "run"
    r = runner.invoke(app, ["split", str(demo_config_path), f"run.dir={rd}",
                            "tracking.backend=mlflow"])
    assert r.exit_code == 0, r.output
    split = json.loads((rd / "manifest.json").read_text())["stages"]["split"]
    assert split["status"] == "done"
    assert split["tracking_error"] == "ConnectionError: tracking server went away"
    assert "could not record stage split" in " ".join(r.output.split())
