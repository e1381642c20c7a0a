from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from synth_ray.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    dump_config,
    load_config,
    validate_config,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "jobs" / "configs").glob("*.yaml"))


def demo_dict(demo_config_path: Path) -> dict:
    return yaml.safe_load(demo_config_path.read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    # the resolved dump is itself a valid config that loads back to the same value
    assert validate_config(yaml.safe_load(dump_config(cfg))) == cfg


def test_shipped_configs_exist() -> None:
    assert {p.name for p in CONFIGS} >= {"demo.yaml", "plumbing.yaml", "paper-8b.yaml",
                                         "paper-70b.yaml"}


def test_paper_defaults() -> None:
    cfg = ExperimentConfig()
    assert (cfg.generation.sampling.temperature, cfg.generation.sampling.top_p) == (0.7, 0.9)
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (16, 32, 0.1)
    assert (cfg.split.seed, cfg.split.test_fraction, cfg.split.num_parts) == (42, 0.1, 4)
    assert cfg.generation.system_prompt == "You are a helpful assistant."
    assert cfg.resources.dashboard_host == "127.0.0.1"


@pytest.mark.parametrize("name", ["paper-8b", "paper-70b"])
def test_the_paper_configs_follow_the_authors_code(name: str) -> None:
    """docs/paper.md's "Matches" table, point by point, in the shipped paper configs."""
    cfg = load_config(REPO / "jobs" / "configs" / f"{name}.yaml")
    assert cfg.split.method == "sklearn" and not cfg.dataset.drop_duplicate_instructions
    assert (cfg.split.seed, cfg.split.test_fraction, cfg.split.num_parts,
            cfg.split.validation_fraction) == (42, 0.1, 4, 0.05)
    mapping = {b: [n.lower() for n in names] for b, names in cfg.conditions.multi_source.items()}
    assert all(cfg.source(n).bracket == b for b, ns in mapping.items() for n in ns)
    assert [m[0].startswith("llama") for m in mapping.values()] == [True] * 3
    assert [x.split("-")[0] for x in mapping["small"][1:]] == ["gemma", "qwen2.5", "falcon3"]
    assert ["mistral" in mapping["medium"][1], "qwen" in mapping["medium"][2],
            "command-r" in mapping["medium"][3]] == [True] * 3
    assert ["gemini" in mapping["large"][1], "gpt-4o" in mapping["large"][2],
            "deepseek" in mapping["large"][3]] == [True] * 3
    j = cfg.judge
    assert (j.jailbreak_design, j.jailbreak_prompts_per_category,
            j.jailbreak_min_votes) == ("authors", 5, 10)
    assert (j.decoding, j.sampling.temperature, j.sampling.top_p,
            j.sampling.max_tokens) == ("sampled", 0.7, 0.9, 2048)
    assert (j.quality_max, j.preference_design, j.max_articles) == (5, "authors", 100)
    t = cfg.training
    assert (t.loss_on, t.eval_every_steps, t.early_stopping_patience) == ("all", 20, 5)
    assert cfg.evaluation.perplexity.end_of_turn and cfg.evaluation.self_bleu.sentences == \
        "punkt"
    assert (cfg.evaluation.perplexity.outlier_rule, cfg.evaluation.perplexity.iqr_k) == (
        "tukey", 1.5)
    assert (cfg.evaluation.self_bleu.individual_samples,
            cfg.evaluation.self_bleu.aggregated_samples,
            cfg.evaluation.self_bleu.draw) == (500, 100, "eligible")
    assert j.summary_max_tokens == 1024  # summaries: up to 1,024 tokens, as the authors
    assert cfg.targets[0].published == cfg.targets[0].name  # the paper's numbers beside
    assert cfg.generation.probe_prompts == 200  # next check (a): a shared probe set
    from synth_ray.report.paper_tables import method_differences

    assert method_differences(cfg) == []  # what the report says of the run's method
    demo = load_config(REPO / "jobs" / "configs" / "demo.yaml")
    assert "`judge.decoding`: constrained (the authors': sampled)" in method_differences(demo)
    smol = load_config(REPO / "jobs" / "configs" / "smol.yaml")  # a forced small judge
    assert "`judge.decoding`: guided (the authors': sampled)" in method_differences(smol)
    assert cfg.tracking.backend == "mlflow"


def test_typo_and_wrong_type_are_reported_together_with_key_paths(demo_config_path) -> None:
    data = demo_dict(demo_config_path)
    data["generation"]["sampling"]["temprature"] = 0.5  # typo
    data["split"]["num_parts"] = "four"  # wrong type
    data["sources"][1]["backend"] = "grpc"  # not allowed
    with pytest.raises(ConfigError) as err:
        validate_config(data)
    problems = err.value.problems
    assert any(p.startswith("generation.sampling.temprature:") for p in problems), problems
    assert any(p.startswith("split.num_parts:") for p in problems), problems
    assert any(p.startswith("sources.1.backend:") for p in problems), problems
    assert len(problems) == 3


def test_cross_references_are_checked(demo_config_path) -> None:
    data = demo_dict(demo_config_path)
    data["conditions"]["single_source"] = {"huge": "small-a"}
    data["conditions"]["multi_source"] = {"small": ["small-a", "small-b", "nope"]}
    data["sources"].append(dict(data["sources"][0]))
    with pytest.raises(ConfigError) as err:
        validate_config(data)
    text = "\n".join(err.value.problems)
    assert "conditions.single_source.huge: unknown bracket" in text
    assert "conditions.multi_source.small: lists 3 sources but split.num_parts is 4" in text
    assert "conditions.multi_source.small.2: unknown source 'nope'" in text
    assert "sources.4.name: duplicate source name 'small-a'" in text


def test_http_source_needs_endpoint(demo_config_path) -> None:
    data = demo_dict(demo_config_path)
    data["sources"][0]["backend"] = "http"
    with pytest.raises(ConfigError, match="sources.0"):
        validate_config(data)


@pytest.mark.parametrize("uri", ["s3://bucket/runs/demo", "gs://b/r/"])
def test_run_dir_in_a_bucket_gets_a_local_mirror(demo_config_path, uri, tmp_path,
                                                 monkeypatch) -> None:
    monkeypatch.setenv("SYNTH_RAY_CACHE", str(tmp_path))
    data = demo_dict(demo_config_path)
    data["run"]["dir"] = uri
    cfg = validate_config(data)
    assert cfg.run.dir == uri.rstrip("/")
    # never the local folder "s3:/bucket/..." that Path() would make of it
    mirror = cfg.run.local_root()
    assert mirror.parent == tmp_path / "runs" and "://" not in str(mirror)
    other = validate_config({**data, "run": {**data["run"], "dir": uri + "x"}})
    assert other.run.local_root() != mirror  # one mirror per URI
    data["run"]["local_dir"] = str(tmp_path / "m")
    assert validate_config(data).run.local_root() == tmp_path / "m"


@pytest.mark.parametrize("uri", ["file:///tmp/r", "hdfs://nn/r", "s3://", "ftp://h/r"])
def test_run_dir_uri_other_than_a_bucket_is_refused(demo_config_path, uri) -> None:
    data = demo_dict(demo_config_path)
    data["run"]["dir"] = uri
    with pytest.raises(ConfigError) as err:
        validate_config(data)
    assert any(p.startswith("run.dir:") and "s3://bucket/prefix" in p
               for p in err.value.problems)


def test_overrides(demo_config_path) -> None:
    cfg = load_config(
        demo_config_path,
        ["run.dir=/tmp/x", "generation.sampling.max_tokens=9", "sources.2.bracket=small",
         "conditions.multi_source.small=[small-d, small-c, small-b, small-a]"],
    )
    assert cfg.run.dir == "/tmp/x"
    assert cfg.generation.sampling.max_tokens == 9
    assert cfg.multi_source_for("small") == ["small-d", "small-c", "small-b", "small-a"]


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("nodot", "key.sub=value"),
        ("sources.9.name=x", "sources.9: no list item"),
        ("run.name.deeper=1", "run.name.deeper: cannot set a key inside a scalar"),
        ("training.learnign_rate=1", "training.learnign_rate:"),
        ("generation.sampling.min_tokens=99", "min_tokens (99) is above max_tokens (48)"),
        ("judge.quality_threshold=7", "judge.quality_threshold: 7 is above"),
        ("judge.max_reason_chars=400", "judge.sampling.max_tokens: 64 cannot hold"),
        ("targets.0.self_source=nobody", "targets.0.self_source: unknown source 'nobody'"),
    ],
)
def test_bad_overrides(demo_config_path, override, fragment) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(demo_config_path, [override])
    assert fragment in str(err.value)


def test_apply_overrides_does_not_mutate_input() -> None:
    data = {"run": {"dir": "a"}}
    out = apply_overrides(data, ["run.dir=b"])
    assert data["run"]["dir"] == "a" and out["run"]["dir"] == "b"


def test_missing_file_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_config_is_frozen() -> None:
    cfg = ExperimentConfig()
    with pytest.raises(ValidationError):
        cfg.run.dir = "elsewhere"  # type: ignore[misc]


def test_default_conditions_follow_config_order(demo_config_path) -> None:
    data = demo_dict(demo_config_path)
    data["conditions"] = {"human": True}
    cfg = validate_config(data)
    assert cfg.single_source_for("small") == "small-a"
    assert cfg.multi_source_for("small") == ["small-a", "small-b", "small-c", "small-d"]


# The keys stage input hashes saw in these sections before the engine layout fields came
# (commit 3435d5a): a field added since must stay out of the hash at its default, or every
# finished run would redo its stages after an upgrade.
KEYS_BEFORE = {
    "source": {"backend", "bracket", "engine_kwargs", "http", "model", "name",
               "pipeline_parallel_size", "replicas", "revision", "system_turn",
               "tensor_parallel_size", "trust_remote_code"},
    "target": {"cpu_offload", "cpus_per_worker", "effective_batch_size",
               "gradient_checkpointing", "model", "name", "num_workers",
               "per_device_batch_size", "revision", "self_source", "strategy",
               "trust_remote_code", "use_gpu"},
    "judge": {"articles", "backend", "engine_kwargs", "harm_threshold", "http",
              "jailbreak_templates", "jailbreaks_per_prompt", "max_articles",
              "max_reason_chars", "max_safety_prompts", "model", "quality_max",
              "quality_threshold", "repeat_fraction", "replicas", "revision",
              "safety_prompts", "sampling", "seed", "summary_max_tokens",
              "tensor_parallel_size", "trust_remote_code"},
}


def test_fields_added_later_change_no_stage_hash_until_set() -> None:
    """Stage input hashes see a section without the fields added after runs were made
    (engine layout, plan sizes) while those hold their defaults: upgrading redoes nothing
    finished; a field that is set counts."""
    cfg = load_config(REPO / "jobs" / "configs" / "plumbing.yaml")
    assert set(cfg.sources[0].hashed()) == KEYS_BEFORE["source"]
    assert set(cfg.targets[0].hashed()) == KEYS_BEFORE["target"]
    assert set(cfg.judge.hashed()) == KEYS_BEFORE["judge"]
    full = cfg.sources[0].model_dump(mode="json")
    assert cfg.sources[0].hashed() == {k: full[k] for k in KEYS_BEFORE["source"]}
    longer = cfg.sources[0].model_copy(update={"max_model_len": 2048})
    assert longer.hashed()["max_model_len"] == 2048
    wide = load_config(REPO / "jobs" / "configs" / "paper-70b.yaml").targets[0]
    assert wide.hashed()["engine"]["tensor_parallel_size"] == 4


# The shipped configs' section hashes (what each stage's input hash is made of) as runs made
# before config/hash_keys.py replaced the hand-kept ADDED_FIELDS lists (6c885e5) saw them.
SHIPPED_SECTION_HASHES = {
    "demo.yaml": "2c7f860a497737d1",
    "paper-70b.yaml": "bce08b4f1c18d65d",
    "paper-8b.yaml": "1fa06d24dbcf9630",
    "plumbing.yaml": "6039cd206c9fe31c",
    "smol.yaml": "159da4e1530e6240",
}


def section_hashes(cfg) -> dict:
    from synth_ray.config import Section

    out = {}
    for name in type(cfg).model_fields:
        value = getattr(cfg, name)
        if isinstance(value, Section):
            out[name] = value.hashed()
        elif isinstance(value, list) and value and isinstance(value[0], Section):
            out[name] = [v.hashed() for v in value]
    return out


@pytest.mark.parametrize("name", sorted(SHIPPED_SECTION_HASHES))
def test_shipped_configs_keep_their_stage_hashes(name: str) -> None:
    from synth_ray.runtime.rundir import hash_json

    cfg = load_config(REPO / "jobs" / "configs" / name)
    assert hash_json(section_hashes(cfg)) == SHIPPED_SECTION_HASHES[name]


def test_a_field_added_later_needs_no_list_to_keep_old_hashes() -> None:
    """A field that hash_keys.py does not know (any field added from now on) is out of the
    hash at its default and in it when set; a known field counts even at its default."""
    from pydantic import Field

    from synth_ray.config import SplitSection as Released

    class SplitSection(Released):  # the same name (hash_keys.py's key): a newer version
        new_knob: int = Field(3)

    assert SplitSection().hashed() == Released().hashed()
    assert SplitSection(new_knob=4).hashed()["new_knob"] == 4
    assert "seed" in SplitSection().hashed()  # known: hashed at its default too


def test_the_paper_preset_fills_what_a_config_leaves_unset(demo_config_path) -> None:
    """`preset: paper` brings the authors' method; the config's own keys and overrides win;
    the resolved config (run dir's config.yaml) reloads to itself."""
    from synth_ray.config import dump_config
    from synth_ray.report.paper_tables import method_differences

    data = demo_dict(demo_config_path)
    data["preset"] = "paper"
    data.pop("training")  # the config's own training section would win over the preset
    del data["evaluation"]["self_bleu"]
    data["conditions"].pop("exclude")  # the demo's own would win too
    data["split"]["test_fraction"] = 0.2
    cfg = validate_config(data)
    assert (cfg.split.method, cfg.training.loss_on, cfg.training.seeds) == ("sklearn", "all", [42])
    assert (cfg.judge.decoding, cfg.evaluation.self_bleu.draw) == ("sampled", "eligible")
    assert cfg.split.test_fraction == 0.2  # the config sets it: the config wins
    assert cfg.judge.max_articles == 6 and cfg.generation.probe_prompts == 200
    assert method_differences(cfg) == []
    # every answer trains (truncated, empty), with the authors' training system prompt,
    # while the targets answer and are scored with the evaluation one
    assert cfg.conditions.exclude == ["error"]
    assert cfg.training_system_prompt() == "You are a helpful AI assistant."
    assert cfg.generation.system_prompt == "You are a helpful assistant."
    plain = validate_config(demo_dict(demo_config_path))
    assert plain.training.system_prompt is None
    assert plain.training_system_prompt() == plain.generation.system_prompt
    assert "`training.system_prompt`: None" in " ".join(method_differences(plain))
    # the new keys at their defaults leave old runs' hashes alone
    assert "system_prompt" not in plain.training.hashed()
    assert not {"semantic", "semantic_sentences"} & set(plain.evaluation.hashed())
    assert not {"article_sample", "safety_rows"} & set(plain.judge.hashed())
    assert "semantic" in cfg.evaluation.hashed()  # set by the preset: it is hashed
    again = validate_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg
    data["preset"] = "papr"
    with pytest.raises(ConfigError, match="preset"):
        validate_config(data)
