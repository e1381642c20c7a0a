"""The experiment's design, derived from the config alone: the names more than one stage
needs (conditions, which source answers which part, the adapter grid, which sources write
summaries) and where every stage's outputs live in the run directory.

Pure: no I/O, no Ray. Stages share names through this module and data through run files,
never by importing each other (PAPER.md's words: source, bracket, condition, target,
adapter).
"""

from __future__ import annotations

from synth_ray.config import ExperimentConfig

HUMAN = "human"  # the condition trained on the dataset's own responses
VANILLA = "vanilla"  # the target without fine-tuning, served as an all-zero adapter

# -- conditions and adapters ----------------------------------------------------------------


def condition_names(cfg: ExperimentConfig) -> list[str]:
    """human (if on), then single-<bracket> and multi-<bracket> per bracket, config order."""
    names = [HUMAN] if cfg.conditions.human else []
    for bracket in cfg.brackets():
        names += [f"single-{bracket}", f"multi-{bracket}"]
    return names


def part_sources(cfg: ExperimentConfig, condition: str) -> dict[int, str]:
    """Which source answers each part under a synthetic condition: the bracket's single
    source every part, or the k-th source of the bracket's multi-source list part k."""
    kind, bracket = condition.split("-", 1)
    if kind == "single":
        return dict.fromkeys(range(1, cfg.split.num_parts + 1), cfg.single_source_for(bracket))
    return dict(enumerate(cfg.multi_source_for(bracket), start=1))


def adapter_name(cfg: ExperimentConfig, condition: str, seed: int) -> str:
    return condition if len(cfg.training.seeds) == 1 else f"{condition}-seed{seed}"


def adapter_grid(cfg: ExperimentConfig) -> list[tuple[str, int, str]]:
    """(condition, seed, adapter name) of every adapter a target gets."""
    return [(c, s, adapter_name(cfg, c, s))
            for c in condition_names(cfg) for s in cfg.training.seeds]


def adapter_conditions(cfg: ExperimentConfig) -> dict[str, str]:
    """Adapter name -> its condition, the vanilla target its own."""
    return {VANILLA: VANILLA, **{n: c for c, _, n in adapter_grid(cfg)}}


def summary_sources(cfg: ExperimentConfig) -> list[str]:
    """Sources that write summaries: every source of a bracket that holds some target's
    self source (PAPER.md, Evaluation 5: its own family and the other sources of its
    bracket), in config order."""
    brackets = {cfg.source(t.self_source).bracket for t in cfg.targets if t.self_source}
    return [s.name for s in cfg.sources if s.bracket in brackets]


# -- the run directory: one folder per stage ------------------------------------------------

# stage -> the folders it writes (relative to the run directory); no two stages share one
STAGE_FOLDERS = {
    "split": ("splits",),
    "generate": ("generations", "summaries", "probe"),
    "build": ("datasets",),
    "train": ("adapters", "ray_train", "ray_tune"),
    "respond": ("responses",),
    "score": ("eval",),
    "judge": ("judge",),
    "report": ("report",),
}

# split
TEST_PATH = "splits/test.parquet"
SPLIT_REJECTS = "splits/rejects.parquet"


def part_path(k: int) -> str:
    return f"splits/part-{k}.parquet"


# generate
ARTICLES = "summaries/articles.parquet"
ARTICLE_REJECTS = "summaries/rejects.parquet"


def generation_path(source: str) -> str:
    return f"generations/{source}.parquet"


def summary_path(source: str) -> str:
    return f"summaries/{source}.parquet"


# the shared probe set every source answers (generation.probe_prompts), and the answers
PROBE_SET = "probe/prompts.parquet"


def probe_path(source: str) -> str:
    return f"probe/{source}.parquet"


# build
DATASETS_SUMMARY = "datasets/summary.json"
SOURCE_OVERLAP = "datasets/source_overlap.parquet"
SOURCE_INDEPENDENCE = "datasets/source_independence.parquet"


def dataset_path(condition: str) -> str:
    return f"datasets/{condition}.parquet"


# train
def adapter_dir(target: str, adapter: str) -> str:
    return f"adapters/{target}/{adapter}"


# respond
SAFETY_SET = "responses/safety_set.parquet"
SAFETY_REJECTS = "responses/safety_rejects.parquet"


def responses_path(target: str, prompt_set: str = "test") -> str:
    """`test`: the held-out instructions; `safety`: the RB and RB+J prompts."""
    return f"responses/{target}/{prompt_set}.parquet"


# score: perplexity.parquet, diversity.parquet, SELF_BLEU_ITEMS, summary.json per target
SELF_BLEU_ITEMS = "self_bleu_individual.parquet"  # each drawn response's own Self-BLEU
SEMANTIC_ITEMS = "semantic_distances.parquet"  # `semantic: authors`: the sampled distances
def score_dir(target: str) -> str:
    return f"eval/{target}"


# judge: judgements, danger zone, judge summary, self-preference pairs and table per target
def judge_dir(target: str) -> str:
    return f"judge/{target}"


# report
REPORT_DIR = "report"
