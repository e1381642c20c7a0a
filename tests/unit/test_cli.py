from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from synth_ray.cli import app

REPO = Path(__file__).resolve().parents[2]

runner = CliRunner()


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def test_split_runs_skips_and_forces(tmp_path, demo_config_path) -> None:
    rd = tmp_path / "run"
    args = ["split", str(demo_config_path), f"run.dir={rd}"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    first = manifest(rd)["stages"]["split"]
    assert first["status"] == "done"
    assert first["rows"]["valid"] + first["rows"]["rejected"] == 418  # nothing lost
    assert first["rows"]["test"] + sum(first["rows"][f"part-{k}"] for k in range(1, 5)) == (
        first["rows"]["valid"]
    )
    test = pl.read_parquet(rd / "splits" / "test.parquet")
    assert test.height == first["rows"]["test"]
    assert (rd / "config.yaml").read_text().startswith("run:")

    r = runner.invoke(app, args)  # current: skipped, manifest entry untouched
    assert r.exit_code == 0 and manifest(rd)["stages"]["split"]["finished"] == first["finished"]

    r = runner.invoke(app, [*args, "--force"])
    assert r.exit_code == 0 and manifest(rd)["stages"]["split"]["finished"] > first["finished"]

    r = runner.invoke(app, [*args, "split.seed=7"])  # inputs changed: rerun
    assert manifest(rd)["stages"]["split"]["input_hash"] != first["input_hash"]


def test_same_seed_gives_byte_identical_split_files(tmp_path, demo_config_path) -> None:
    for name in ("a", "b"):
        r = runner.invoke(app, ["split", str(demo_config_path), f"run.dir={tmp_path / name}"])
        assert r.exit_code == 0, r.output
    files = sorted(p.name for p in (tmp_path / "a" / "splits").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b" / "splits").iterdir())
    for f in files:
        assert (tmp_path / "a" / "splits" / f).read_bytes() == (
            tmp_path / "b" / "splits" / f
        ).read_bytes(), f


def test_bad_config_exits_2_and_names_keys(tmp_path, demo_config_path) -> None:
    r = runner.invoke(app, ["split", str(demo_config_path), "split.nmu_parts=3",
                            "generation.sampling.top_p=2"])
    assert r.exit_code == 2
    assert "split.nmu_parts" in r.output and "generation.sampling.top_p" in r.output
    assert not (tmp_path / "run").exists()


def test_validate_prints_resolved_config(demo_config_path) -> None:
    r = runner.invoke(app, ["validate", str(demo_config_path), "run.name=x"])
    assert r.exit_code == 0 and "name: x" in r.output


def test_second_process_on_same_run_dir_is_refused(tmp_path, demo_config_path) -> None:
    import os
    import subprocess
    import sys

    from synth_ray.config import load_config
    from synth_ray.runtime.pipeline import open_run

    open_run(load_config(demo_config_path, [f"run.dir={tmp_path}"]))  # this process holds it
    proc = subprocess.run(
        [sys.executable, "-m", "synth_ray.cli", "split", str(demo_config_path),
         f"run.dir={tmp_path}"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert proc.returncode == 1
    assert "in use by another synth-ray process" in proc.stderr
    assert not (tmp_path / "splits").exists()


def test_a_file_without_a_response_column_fails_with_its_rows_kept(tmp_path,
                                                                   demo_config_path) -> None:
    data = tmp_path / "d.csv"
    pl.DataFrame({"instruction": ["a?", "b?", "c?"], "answer": ["x", "y", "z"]}).write_csv(data)
    rd = tmp_path / "run"
    r = runner.invoke(app, ["split", str(demo_config_path), f"run.dir={rd}",
                            f"dataset.path={data}"])
    assert r.exit_code == 1
    said = " ".join(r.output.split())  # the log wraps lines
    assert "no valid rows" in said and "missing 'response' x3" in said
    rejects = pl.read_parquet(rd / "splits" / "rejects.parquet")
    assert rejects["line"].to_list() == [1, 2, 3]  # nothing lost: every row quarantined
    assert manifest(rd)["stages"]["split"]["status"] == "failed"


def test_a_missing_model_path_fails_before_ray_starts(tmp_path,
                                                             demo_config_path) -> None:
    import ray

    rd = tmp_path / "run"
    assert runner.invoke(app, ["split", str(demo_config_path), f"run.dir={rd}"]).exit_code == 0
    assert not ray.is_initialized()  # the stage runs in this process: Ray would start here
    gone = tmp_path / "no-such-model"
    r = runner.invoke(app, ["generate", str(demo_config_path), f"run.dir={rd}",
                            f"sources.1.model={gone}"])
    assert r.exit_code == 1
    stage = manifest(rd)["stages"]["generate"]
    assert stage["status"] == "failed"
    assert stage["error"].startswith(f"FileNotFoundError: source 'small-b': model path {gone} "
                                     "not found")
    assert not (rd / "generations").exists()  # nothing sent, nothing written
    # refused before Ray (and so any engine) started: the run's log records every Ray start
    # ("ray: local instance ..."), and the command ran in this process
    log = (rd / "log.txt").read_text()
    assert "[generate] failed: FileNotFoundError" in log and "ray: " not in log, log[-2000:]
    assert not ray.is_initialized()

    from synth_ray.models import resolve_model  # every stage resolves models through it

    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model(str(gone))
    assert resolve_model("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama/Llama-3.1-8B-Instruct"


def test_status_says_what_the_next_run_would_redo(tmp_path) -> None:
    """`synth-ray status` on a real run directory (the split stage, run by the CLI): the
    finished stage is skipped next time; changing its inputs or losing an output makes it
    redo; later stages wait; a folder that is not a run is refused with exit 2."""
    import json
    import subprocess
    import sys

    import yaml

    run_dir = tmp_path / "run"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "synth_ray.cli", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=300)

    assert cli("split", "jobs/configs/plumbing.yaml", f"run.dir={run_dir}",
               "dataset.max_rows=40").returncode == 0

    def status() -> dict:
        out = cli("status", str(run_dir), "--json")
        assert out.returncode == 0, out.stderr
        return {s["stage"]: s for s in json.loads(out.stdout)["stages"]}

    st = status()
    assert st["split"]["status"] == "done" and st["split"]["next_run"] == "skip"
    # what `run` would execute (and check the cluster for): from the first stage not current
    from synth_ray.config import load_config
    from synth_ray.runtime.pipeline import Context, stage_names, stages_to_run
    from synth_ray.runtime.rundir import RunDir

    ctx = Context(load_config(run_dir / "config.yaml"), RunDir(run_dir, None))
    assert stages_to_run(ctx, stage_names(), []) == stage_names()[1:]
    assert stages_to_run(ctx, ["split"], []) == []
    assert stages_to_run(ctx, stage_names(), ["split"]) == stage_names()
    assert st["split"]["rows"] > 0 and st["split"]["wall_s"] is not None
    assert st["generate"]["next_run"] == "redo" and st["generate"]["why"] == "never finished"
    assert st["build"]["why"].startswith("waits for an earlier stage")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["split"]["seed"] = 7  # the run's config changed: split's inputs differ
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert status()["split"] == {**st["split"], "next_run": "redo",
                                 "why": "inputs or outputs changed"}
    cfg["split"]["seed"] = 42
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert status()["split"]["next_run"] == "skip"
    (run_dir / "splits" / "test.parquet").unlink()  # an output lost
    assert status()["split"]["next_run"] == "redo"
    bad = cli("status", str(tmp_path))
    assert bad.returncode == 2 and "not a run directory" in " ".join(bad.stderr.split())
    assert cli("--version").stdout.startswith("synth-ray ")
    schema = json.loads(cli("schema").stdout)
    assert {"run", "sources", "targets", "resources"} <= schema["properties"].keys()


def test_run_hashes_each_stages_inputs_once(tmp_path, demo_config_path, monkeypatch) -> None:
    """`run` asks which stages are pending, then runs each: a stage's inputs (every upstream
    output, read whole) are hashed once for both, and again only after a stage has run (it
    may have written them). Counted on the real split stage and build's real inputs."""
    import synth_ray.stages.build as build
    import synth_ray.stages.split as split
    from synth_ray.config import load_config
    from synth_ray.runtime.pipeline import Context, execute, get_stage, stages_to_run
    from synth_ray.runtime.rundir import RunDir

    calls: list[str] = []
    for module in (split, build):
        real = module.inputs
        monkeypatch.setattr(module, "inputs", lambda ctx, real=real, m=module.__name__: (
            calls.append(m.rsplit(".", 1)[1]), real(ctx))[1])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ctx = Context(load_config(demo_config_path), RunDir(run_dir, None))
    assert stages_to_run(ctx, ["split"], []) == ["split"]
    assert execute(get_stage("split"), ctx) == "done"
    assert calls == ["split"]
    # the driver's peak memory so far, in the stage's record: against the kernel's own
    # high-water mark of this process, read from /proc after the stage
    hwm = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text()
               .splitlines() if line.startswith("VmHWM:")) / 1024
    assert 50 < manifest(run_dir)["stages"]["split"]["driver_peak_rss_mb"] <= hwm + 0.1
    calls.clear()
    ctx = Context(ctx.cfg, ctx.run)  # a second `run` on the finished split
    assert stages_to_run(ctx, ["split", "build"], []) == ["build"]
    assert execute(get_stage("split"), ctx) == "skipped"
    assert calls == ["split", "build"]  # split and the first pending stage, once each
    ctx.input_hashes["build"] = "stale"  # split redone: a later stage's inputs may change
    assert execute(get_stage("split"), ctx, force=True) == "done"
    assert "build" not in ctx.input_hashes
