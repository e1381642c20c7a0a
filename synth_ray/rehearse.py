"""`synth-ray rehearse CONFIG`: the config as shipped, end to end, with stand-ins.

A paper config is days of GPU time; a wrong key, path, prompt-set layout, grid or judge
setting in it is otherwise found on the cluster, hours in. A rehearsal runs every stage with
the config's own settings (preset, split method, conditions, seeds, prompt-set designs, judge
decoding and design, statistics, tracking, report) and swaps only what a laptop cannot have:

- every model for an embedded stand-in of its role (`STAND_INS`: source, target, judge);
  what the config says about a model that the stand-in can honour stays (system-turn
  folding, decoding mode, the strategy, ZeRO-3, gradient checkpointing, the context rule);
  engine and GPU settings a CPU cannot honour (tensor/pipeline parallel, replicas, GPU
  types) become one CPU replica, and the real ones are in the plan printed first;
- hosted (http) sources keep their backend, rate limits, retries and key variables, and
  are pointed at a real vLLM OpenAI server on 127.0.0.1 serving the source stand-in under
  each hosted model's name and checking each source's own key (`engines/standin_server.py`);
- an input the config names but this machine lacks (a hub dataset, RefusalBench's JSON,
  the jailbreak CSV, the articles) for a bundled sample in the same layout; an input that
  is here is read as it is, by the stages' own loaders;
- sizes capped (`CAPS`: rows, prompts per set, tokens, steps), so paper-8b takes minutes.

Every swap is printed, logged and recorded in the run's config.yaml (`rehearsal`) and
report. The rehearsal writes to its own run directory (`run.dir` as given on the command
line, else the config's with `-rehearsal` appended) and refuses one that holds a real run.
What must hold on the cluster is still checked on the real names: the node variables
(resources.node_env) and every hosted source's key variable must be set, and inputs that are
present must parse in their layout. Exit 0: every stage ran with the config's own settings.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import typer
import yaml

from synth_ray.config import ExperimentConfig, validate_config

log = logging.getLogger("synth_ray")

# one stand-in per role: every vLLM source shares one (one engine start serves them all)
STAND_INS = {"source": "tiny://small-a", "target": "tiny://target", "judge": "tiny://judge"}
# key -> the largest value a rehearsal keeps (a smaller one in the config stays)
CAPS: dict[str, int] = {
    "dataset.max_rows": 80,
    "generation.sampling.max_tokens": 32,
    "generation.probe_prompts": 8,
    "evaluation.sampling.max_tokens": 32,
    "evaluation.semantic_sentences": 100,
    "evaluation.self_bleu.individual_samples": 16,
    "evaluation.self_bleu.aggregated_samples": 8,
    "training.epochs": 1,
    "training.max_steps": 2,
    "training.max_length": 256,
    "training.eval_every_steps": 2,  # one validation and checkpoint, at the end
    "judge.sampling.max_tokens": 40,
    "judge.summary_max_tokens": 24,
    "judge.max_safety_prompts": 6,
    "judge.jailbreak_prompts_per_category": 1,
    "judge.max_articles": 3,
}
TRAIN_WORKERS = 2  # a target's Ray Train workers on a laptop (ZeRO-3 still partitions)
PER_DEVICE_BATCH = 2
INPUT_KEYS = ("judge.safety_prompts", "judge.jailbreak_templates", "judge.articles")


def _walk(data: Any, key: str) -> tuple[Any, str | int]:
    parts = key.split(".")
    for p in parts[:-1]:
        data = data[int(p)] if isinstance(data, list) else data[p]
    last = parts[-1]
    return data, int(last) if isinstance(data, list) else last


def get(data: dict, key: str) -> Any:
    parent, last = _walk(data, key)
    return parent[last] if isinstance(parent, list) else parent.get(last)


class Swaps:
    """The rehearsal's changes to the config's data, each with the value it replaces."""

    def __init__(self, data: dict):
        self.data = data
        self.rows: list[dict[str, Any]] = []

    def set(self, key: str, value: Any, why: str) -> None:
        real = get(self.data, key)
        if real == value:
            return
        parent, last = _walk(self.data, key)
        parent[last] = value
        self.rows.append({"key": key, "real": real, "stand_in": value, "why": why})

    def model(self, prefix: str, model: str, role: str) -> None:
        """A model for its role's stand-in, with what the stand-in does not have."""
        self.set(f"{prefix}.model", model, f"{role} stand-in")
        self.set(f"{prefix}.revision", None, "the stand-in has no revision")
        self.set(f"{prefix}.trust_remote_code", False, "the stand-in is plain Llama")

    def cap(self, key: str, most: int) -> None:
        real = get(self.data, key)
        if real is None or real > most:
            self.set(key, most, "size capped for a rehearsal")


def _engine(sw: Swaps, prefix: str, gpu: bool) -> None:
    """One replica of one device: what a laptop (or one lent GPU) can hold."""
    why = "one replica on this machine (the real layout is in the plan)"
    for k in ("tensor_parallel_size", "pipeline_parallel_size", "replicas"):
        sw.set(f"{prefix}.{k}", 1, why)
    sw.set(f"{prefix}.accelerator_type", None, "GPU type: whatever this machine has")
    if not gpu:
        sw.set(f"{prefix}.gpu_memory_utilization", None, "no GPU here")


def _inputs(sw: Swaps, real: ExperimentConfig, inputs_dir: Path) -> None:
    """Absent inputs -> bundled samples in the real layout; present ones stay as they are."""
    from synth_ray.config.uris import is_uri
    from synth_ray.models import is_scheme_id
    from synth_ray.runtime.readiness import is_hub_id
    from synth_ray.toy.paper_inputs import write_samples

    def here(uri: str) -> bool:  # a bucket or a bundled file is "here" for the loaders
        return is_uri(uri) or is_scheme_id(uri) or Path(uri).expanduser().exists()

    ds = real.dataset.path
    if is_hub_id(ds) or not here(ds):
        sw.set("dataset.path", "tiny://dolly-sample",
               f"{ds} is not on this machine: the bundled Dolly-style sample (categories too)")
        sw.set("dataset.revision", None, "the bundled sample has no revision")
    absent = [k for k in INPUT_KEYS if not here(get(sw.data, k))]
    if absent:
        written = write_samples(inputs_dir)
        for key in absent:
            sw.set(key, str(written[key]), f"{get(sw.data, key)} is not on this machine: "
                   "a bundled sample in its layout (toy/paper_inputs.py)")


def rehearsal_data(real: ExperimentConfig, *, config: str, run_dir: str, inputs_dir: Path,
                   server_url: str | None, gpu: bool, address: str | None,
                   stand_ins: dict[str, str] | None = None,
                   train_workers: int = TRAIN_WORKERS) -> tuple[dict, list[dict]]:
    """The rehearsal's config data and its swaps (each: key, real, stand_in, why);
    `stand_ins` over STAND_INS (role -> model), `train_workers` a target's most workers."""
    models = {**STAND_INS, **(stand_ins or {})}
    data = real.model_dump(mode="json")
    sw = Swaps(data)
    sw.set("run.name", f"{real.run.name}-rehearsal", "a rehearsal is its own run")
    sw.set("run.dir", run_dir, "a rehearsal never touches the real run's directory")
    sw.set("tracking.experiment", f"{real.tracking.experiment}-rehearsal",
           "a rehearsal's tracking runs stay out of the real experiment")
    for i, s in enumerate(real.sources):
        if s.backend == "http":  # the model name stays: the server answers to it
            sw.set(f"sources.{i}.http.base_url", server_url, "a vLLM OpenAI server beside "
                   "the driver serving the source stand-in under this model's name")
            continue
        sw.model(f"sources.{i}", models["source"], "source")
        _engine(sw, f"sources.{i}", gpu)
    for i, t in enumerate(real.targets):
        pre = f"targets.{i}"
        sw.model(pre, models["target"], "target")
        workers = min(t.num_workers, train_workers)
        sw.set(f"{pre}.num_workers", workers, f"{train_workers} worker(s) at most here")
        if not gpu:
            sw.set(f"{pre}.use_gpu", False, "no GPU here: gloo on CPU")
        sw.set(f"{pre}.accelerator_type", None, "GPU type: whatever this machine has")
        accum = max(1, t.effective_batch_size // (t.num_workers * t.per_device_batch_size))
        per_device = min(t.per_device_batch_size, PER_DEVICE_BATCH)
        sw.set(f"{pre}.per_device_batch_size", per_device, "size capped for a rehearsal")
        # gradient accumulation kept (at most 2 steps): the effective batch's arithmetic runs
        sw.set(f"{pre}.effective_batch_size", workers * per_device * min(accum, 2),
               "workers x per-device batch x accumulation (at most 2) here")
        if t.cpus_per_worker is not None and not gpu:
            sw.set(f"{pre}.cpus_per_worker", 1, "one CPU per worker here")
        _engine(sw, f"{pre}.engine", gpu)
    from synth_ray.design import adapter_grid

    sw.set("training.adapters_per_run", max(real.training.adapters_per_run,
                                            len(adapter_grid(real))),
           "every adapter in one Ray Train run: one start-up on a laptop")
    sw.model("judge", models["judge"], "judge")
    _engine(sw, "judge", gpu)
    _inputs(sw, real, inputs_dir)
    for key, most in CAPS.items():
        sw.cap(key, most)
    if not gpu:
        if real.training.dtype != "float32":
            sw.set("training.dtype", "float32", "CPU training: fp32")
        sw.set("resources.accelerator", "cpu", "no GPU here: vLLM-cpu")
        sw.set("resources.num_gpus", None, "no GPU here")
    sw.set("resources.accelerator_type", None, "GPU type: whatever this machine has")
    sw.set("resources.ray_address", address,
           "a local Ray instance" if address is None else "the cluster given by --address")
    if address is None and not os.environ.get("RAY_ADDRESS"):  # not inside ray job submit
        sw.set("resources.autoscaling", False, "a local Ray instance does not grow")
    data["rehearsal"] = {"config": config, "swaps": sw.rows}
    return data, sw.rows


def rehearsal_config(data: dict, config: str) -> ExperimentConfig:
    return validate_config(data, f"{config} (rehearsal)")


def run_dir_of(real: ExperimentConfig, overrides: list[str]) -> str:
    """run.dir as given on the command line (the user chose it for the rehearsal), else the
    config's with -rehearsal appended."""
    if any(o.split("=", 1)[0].strip() == "run.dir" for o in overrides):
        return real.run.dir
    return real.run.dir.rstrip("/") + "-rehearsal"


def holds_real_run(run_dir: str) -> bool:
    """A run directory (local) whose config.yaml is not a rehearsal's."""
    from synth_ray.config.uris import is_uri

    cfg = Path(run_dir) / "config.yaml"
    if is_uri(run_dir) or not cfg.is_file():
        return False
    return not (yaml.safe_load(cfg.read_text()) or {}).get("rehearsal")


def swap_lines(rows: list[dict]) -> list[str]:
    return [f"{r['key']}: {r['real']!r} -> {r['stand_in']!r} ({r['why']})" for r in rows]


def _node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def missing_env(real) -> list[str]:
    """What the real run needs on every node, missing here: the node variables and each
    hosted source's key, on their real names (on a cluster, `run` checks each node)."""
    from synth_ray.runtime.node_env import missing_here, required_env

    needed = required_env(real)
    return [f"{needed[n]}: environment variable {n} is not set; the real run needs it on "
            "every node" for n in missing_here(list(needed))]


def local_dir(run_dir: str) -> Path:
    """Where the samples the driver reads (and the stand-in server's log) go: the
    rehearsal's run dir, or, for a bucket, beside the driver's mirror of it (the same path
    for every rehearsal into that bucket, so paper-70b's finds paper-8b's stages current)."""
    from synth_ray.config.uris import default_mirror, is_uri

    if not is_uri(run_dir):
        return Path(run_dir)
    return default_mirror(run_dir).with_name(default_mirror(run_dir).name + "-rehearsal")


def _options(stand_in: list[str], accelerator: str | None) -> tuple[dict[str, str], bool, int]:
    """--stand-in ROLE=MODEL as a dict, whether the stand-ins run on GPUs, and how many
    training workers each target gets."""
    from synth_ray.launch import fail

    chosen = dict(x.split("=", 1) for x in stand_in if "=" in x)
    if len(chosen) != len(stand_in) or set(chosen) - set(STAND_INS):
        fail(f"--stand-in takes ROLE=MODEL, ROLE one of {', '.join(STAND_INS)}; got {stand_in}")
    if accelerator not in (None, "cuda", "cpu"):
        fail(f"--accelerator takes cuda or cpu; got {accelerator}")
    gpus = _gpus()
    gpu = accelerator == "cuda" if accelerator else gpus > 0
    # on this machine's GPUs: a worker per GPU (2 at most); on a cluster's or on CPU: 2
    return chosen, gpu, min(TRAIN_WORKERS, gpus) if gpu and gpus else TRAIN_WORKERS


def command(
    config: Path = typer.Argument(..., help="The experiment YAML to rehearse, as shipped"),
    overrides: list[str] = typer.Argument(None, help="key.sub=value overrides (as for run)"),
    address: str = typer.Option(None, "--address", help="Rehearse on this Ray cluster "
                                "(default: a local Ray instance)"),
    stand_in: list[str] = typer.Option([], "--stand-in", help="ROLE=MODEL: another "
                                       "stand-in for a role (source, target, judge), e.g. "
                                       "target=tiny://smollm2-135m-instruct (repeatable)"),
    accelerator: str = typer.Option(None, "--accelerator", help="cuda or cpu: where the "
                                    "stand-ins run (default: cuda if this machine has a "
                                    "GPU); on a cluster whose head has none, say cuda"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Ray's, vLLM's and the "
                                 "workers' own logs on the terminal too"),
) -> None:
    """Run the config end to end with stand-in models, sample inputs and capped sizes, every
    swap printed and recorded; exit 0 when every stage ran with the config's own settings."""
    from synth_ray.config import ConfigError
    from synth_ray.engines.standin_server import (
        base_url,
        free_port,
        hosted,
        hosted_keys,
        stand_in_server,
    )
    from synth_ray.launch import console, exits_on, fail, load, run_config
    from synth_ray.observe.terminal import setup_logging
    from synth_ray.plan import make_plan, summary_lines
    from synth_ray.preflight import refuse
    from synth_ray.runtime.pipeline import stage_names
    from synth_ray.runtime.readiness import problems

    overrides = overrides or []
    real = load(config, overrides)
    setup_logging(verbose_=verbose or None)
    console.print(f"[bold]rehearsal of {config}[/bold]: the real run's plan")
    for line in summary_lines(make_plan(real)):
        console.print("  " + line, highlight=False, markup=False)
    run_dir = run_dir_of(real, overrides)
    if holds_real_run(run_dir):
        fail(f"run.dir={run_dir} holds a run that is not a rehearsal; give the rehearsal "
             "its own run.dir")
    # a rehearsal on a cluster (--address, or inside `ray job submit`): `run` checks each node
    on_cluster = bool(address or os.environ.get("RAY_ADDRESS"))
    if not on_cluster:
        refuse(missing_env(real))
    local = local_dir(run_dir)
    chosen, gpu, workers = _options(stand_in, accelerator)

    # the hosted sources' server: where the HTTP stage's tasks reach it (on a cluster, the
    # worker nodes: this node's address)
    host = _node_ip() if on_cluster else "127.0.0.1"
    port = free_port(host)
    data, rows = rehearsal_data(real, config=str(config), run_dir=run_dir,
                                inputs_dir=local / "inputs",
                                server_url=base_url(port, host) if hosted(real) else None,
                                gpu=gpu,
                                address=address, stand_ins=chosen, train_workers=workers)
    with exits_on(ConfigError, prefix="the rehearsal's config: "):
        cfg = rehearsal_config(data, str(config))
    # the rehearsal's own readiness (a local run.dir with --address, an input present in a
    # wrong layout) before the hosted stand-in's server starts
    refuse(problems(cfg))
    console.print(f"[bold]{len(rows)} swaps[/bold] (also in {run_dir}/config.yaml, "
                  "key rehearsal, and the report):")
    for line in swap_lines(rows):
        console.print("  " + line, highlight=False, markup=False)

    def log_swaps() -> None:  # into the run's own log, once it is open
        for line in swap_lines(rows):
            log.info("[rehearse] %s", line)

    source = {**STAND_INS, **chosen}["source"]
    with stand_in_server(real, hosted_keys(real), source, gpu, local, port, host):
        run_config(cfg, stage_names(), [], verbose, before=log_swaps)
