"""What a run needs beyond a valid config, checked before anything starts (`validate`,
`run`, `ray job submit ... jobs/pipeline.py`; `plan` lists it without failing):

- **One disk is not assumed.** A run that joins a cluster (`resources.ray_address`, or a
  driver inside `ray job submit`) has training workers and engines on other nodes, which
  cannot read a folder on the head: `run.dir` must be a bucket URI, or the config declares
  that its local paths are on a mount every node shares (`run.shared_mount: true`, then
  checked on every node once Ray is up: runtime/node_files.py). The same holds for a local
  model path (a source's, a target's, the judge's, the embedding model's).
  `resources.accelerator` must be explicit there: an autoscaling cluster has no GPUs until
  the first GPU request, so `auto` could pick CPU.
- **Every input the config names exists and parses** in its expected layout (safety
  prompts, jailbreak templates, articles), read by the loaders the stages use, so a
  missing RefusalBench file fails in seconds, not at `respond` after all the training.
  The dataset is found here and parsed by `split`, the first stage, which keeps each bad
  row with its reason. A hub id is read from the Hub by its stage (nothing is fetched).

Each problem names the config key, so the fix is one override away.
"""

from __future__ import annotations

from dataclasses import dataclass

from synth_ray.config import ExperimentConfig
from synth_ray.config.uris import is_uri, local_path
from synth_ray.runtime.cluster import joins_cluster


@dataclass(frozen=True)
class Problem:
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def cluster_problems(cfg: ExperimentConfig) -> list[Problem]:
    how = joins_cluster(cfg.resources)
    if how is None:
        return []
    out = []
    if not is_uri(cfg.run.dir) and not cfg.run.shared_mount:
        out.append(Problem("run.dir", (
            f"{cfg.run.dir!r} is a folder on this machine, and the run joins a cluster "
            f"({how}): training workers and engines on other nodes can neither read its "
            "datasets nor write adapters the driver sees. Give a bucket "
            "(run.dir=s3://BUCKET/PREFIX or gs://...), or, for a folder every node mounts "
            "(NFS, EFS, Filestore), set run.shared_mount=true")))
    if not cfg.run.shared_mount:
        from synth_ray.runtime.node_files import worker_paths

        out += [Problem(key, f"{path!r} is a path on this machine, and the run joins a "
                        f"cluster ({how}): engines, training workers and score tasks on "
                        "other nodes load it. Give a hub id, or set run.shared_mount=true if "
                        "every node mounts it") for key, path in worker_paths(cfg)]
    if cfg.resources.accelerator == "auto":
        out.append(Problem("resources.accelerator", (
            f"auto, and the run joins a cluster ({how}): say cuda or cpu. An autoscaling "
            "cluster shows no GPUs until the first GPU request, so auto could put every "
            "engine on CPUs")))
    return out


def _inputs(cfg: ExperimentConfig) -> list[tuple[str, str, object]]:
    """(key, uri, read) for every input file the config names; `read` loads it as the
    stage that uses it does."""
    from synth_ray.data.dolly import resolve_dataset
    from synth_ray.data.prompt_sets import (
        load_articles,
        load_authors_templates,
        load_jailbreak_templates,
        load_safety_prompts,
    )

    judge = cfg.judge
    dataset = cfg.dataset
    # the dataset: found, not parsed here; `split`, the first stage, reads it seconds in and
    # quarantines each bad row with its reason (splits/rejects.parquet), which a refusal
    # here would not keep
    out = [("dataset.path", dataset.path, lambda: resolve_dataset(dataset.path, dataset.revision)),
           ("judge.safety_prompts", judge.safety_prompts,
            lambda: load_safety_prompts(judge.safety_prompts))]
    if judge.jailbreak_design == "authors":
        out.append(("judge.jailbreak_templates", judge.jailbreak_templates,
                    lambda: load_authors_templates(judge.jailbreak_templates,
                                                   judge.jailbreak_min_votes)))
    elif judge.jailbreaks_per_prompt:
        out.append(("judge.jailbreak_templates", judge.jailbreak_templates,
                    lambda: load_jailbreak_templates(judge.jailbreak_templates)))
    out.append(("judge.articles", judge.articles, lambda: load_articles(judge.articles)))
    return out


def is_hub_id(uri: str) -> bool:
    """A Hugging Face Hub dataset id ("databricks/databricks-dolly-15k"): not a local path,
    a file name, a bundled SCHEME://NAME or a bucket URI."""
    from synth_ray.data.dolly import LOCAL_SUFFIXES

    return not (local_path(uri) or "://" in uri or uri.endswith(LOCAL_SUFFIXES))


def input_problems(cfg: ExperimentConfig) -> list[Problem]:
    """Each local or bundled input read through its loader; what fails, with the reason."""
    from synth_ray.data.dolly import LOCAL_SUFFIXES
    from synth_ray.models import is_scheme_id

    out = []
    for key, uri, read in _inputs(cfg):
        # read here: a path on this machine, a bundled one, a file (in a bucket too); a hub
        # id or a bucket folder is its stage's to read
        if not (local_path(uri) or is_scheme_id(uri) or uri.endswith(LOCAL_SUFFIXES)):
            continue
        try:
            got = read()
        except Exception as e:  # noqa: BLE001 - every reason is reported, with its key
            out.append(Problem(key, f"{uri}: {type(e).__name__}: {e}"))
            continue
        # a prompt set's loader returns (rows, rejects); a filter may leave no rows
        if isinstance(got, tuple) and got[0].height == 0:
            out.append(Problem(key, f"{uri}: no usable rows after the checks"))
    return out


def problems(cfg: ExperimentConfig) -> list[Problem]:
    return [*cluster_problems(cfg), *input_problems(cfg)]
