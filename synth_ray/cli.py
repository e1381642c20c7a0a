"""`synth-ray STAGE CONFIG [key.sub=value ...]` and `synth-ray run CONFIG` (all stages)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from synth_ray.config import ConfigError, ExperimentConfig
from synth_ray.data.fetch import command as fetch_command
from synth_ray.launch import exits_on, fail, load, run_config
from synth_ray.observe.terminal import setup_logging
from synth_ray.preflight import (
    EXIT_CONFIG,
    EXIT_FAILED,
)
from synth_ray.rehearse import command as rehearse_command
from synth_ray.runtime.pipeline import (
    stage_names,
    stage_table,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="synth-ray: how the diversity of synthetic fine-tuning data changes an LLM.",
)
log = logging.getLogger("synth_ray")


OverridesArg = typer.Argument(None, help="key.sub=value overrides, e.g. run.dir=runs/x")
ForceOpt = typer.Option(False, "--force", help="Redo the stage even if its output is current.")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Ray's, vLLM's and the workers' own "
                          "logs on the terminal too (they always go to the run's log.txt).")


def _run_stages(names: list[str], config: Path, overrides: list[str] | None,
                force: list[str], verbose: bool = False) -> None:
    run_config(load(config, overrides), names, force, verbose)


def _stage_command(name: str, doc: str) -> None:
    def command(
        config: Path = typer.Argument(..., help="Experiment YAML, e.g. jobs/configs/demo.yaml"),
        overrides: list[str] = OverridesArg,
        force: bool = ForceOpt,
        verbose: bool = VerboseOpt,
    ) -> None:
        _run_stages([name], config, overrides, [name] if force else [], verbose)

    command.__doc__ = f"Run stage '{name}': {doc}."
    app.command(name)(command)


for _stage in stage_table():
    _stage_command(_stage.name, _stage.doc)


@app.command("run")
def run_all(
    config: Path = typer.Argument(..., help="Experiment YAML"),
    overrides: list[str] = OverridesArg,
    force: list[str] = typer.Option([], "--force", help="Stage to redo (repeatable)."),
    until: str = typer.Option(None, "--until", help="Last stage to run, e.g. build."),
    verbose: bool = VerboseOpt,
) -> None:
    """Run every stage in order, skipping those whose outputs are current."""
    names = stage_names()
    if until is not None:
        if until not in names:
            fail(f"--until: unknown stage {until!r}; stages: {', '.join(names)}")
        names = names[: names.index(until) + 1]
    _run_stages(names, config, overrides, force, verbose)


@app.command("validate")
def validate(config: Path = typer.Argument(...), overrides: list[str] = OverridesArg) -> None:
    """Check a config (and overrides) and print the resolved YAML; exit 2 naming each key
    whose value cannot work where the run will run: a local run.dir on a cluster, an input
    file that is missing or does not parse (runtime/readiness.py)."""
    from synth_ray.config import dump_config
    from synth_ray.runtime.node_env import required_env
    from synth_ray.runtime.readiness import problems

    cfg = load(config, overrides)
    sys.stdout.write(dump_config(cfg))
    for name, why in required_env(cfg).items():  # where the run runs, not necessarily here
        sys.stderr.write(f"needs on every node: {name} ({why})\n")
    found = problems(cfg)
    for p in found:
        sys.stderr.write(f"error: {p}\n")
    if found:
        raise typer.Exit(EXIT_CONFIG)


# the paper's public inputs, fetched into the files a config names (synth_ray/data/fetch.py)
app.command("fetch-inputs")(fetch_command)
# the config end to end on stand-ins before paying for it (synth_ray/rehearse.py)
app.command("rehearse")(rehearse_command)


@app.command("plan")
def plan(
    config: Path = typer.Argument(..., help="Experiment YAML"),
    overrides: list[str] = OverridesArg,
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    mean_output_tokens: float = typer.Option(
        350.0, "--mean-output-tokens", help="Assumed mean answer length, for token counts."),
) -> None:
    """What the config asks of a cluster (no cluster needed): engines, training runs,
    requests, GPU-hours, API tokens; exit 2 on anything that cannot fit or be placed."""
    from synth_ray.plan import make_plan, summary_lines, to_json
    from synth_ray.runtime.node_env import required_env
    from synth_ray.runtime.readiness import problems

    cfg = load(config, overrides)
    result = make_plan(cfg, mean_output_tokens)
    # a local run.dir on a cluster, a missing input: listed, not failed (plan needs neither)
    result["before_a_run"] = [str(p) for p in problems(cfg)]
    result["node_env"] = required_env(cfg)  # names, never values
    if as_json:
        sys.stdout.write(to_json(result) + "\n")
    else:
        sys.stdout.write("\n".join(summary_lines(result)) + "\n")
    if result["problems"]:
        raise typer.Exit(EXIT_CONFIG)


@app.command("status")
def status(
    run_dir: str = typer.Argument(..., help="A run directory (or its s3:// / gs:// URI)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Where a run stands: each stage's status, rows, error, time, and what the next `run`
    would redo. Reads the run directory only."""
    import json

    from rich.table import Table

    from synth_ray.config.uris import default_mirror, is_uri
    from synth_ray.runtime.status import NotARunDir, age, run_status
    from synth_ray.runtime.storage import Remote

    root = Path(run_dir)
    if is_uri(run_dir):  # read what the bucket holds, in a mirror of its own
        root = default_mirror(run_dir).with_name(default_mirror(run_dir).name + "-status")
        Remote(run_dir, root).pull()
    with exits_on(NotARunDir, ConfigError):
        st = run_status(root)
    if as_json:
        sys.stdout.write(json.dumps(st, indent=2) + "\n")
        return
    table = Table(title=f"run {st['run']!r} in {st['dir']}")
    for col in ("stage", "status", "rows", "wall time", "finished", "next run", "why / error"):
        table.add_column(col)
    for r in st["stages"]:
        table.add_row(r["stage"], r["status"], "" if r["rows"] is None else f"{r['rows']:,}",
                      "" if r["wall_s"] is None else f"{r['wall_s']:.0f} s",
                      age(r["finished"]), r["next_run"], escape(r["error"] or r["why"]))
    Console().print(table)
    if t := st["tracking"]:
        Console().print(f"tracking: {t['backend']} run {t.get('run_id') or t.get('id')}"
                        f"{' at ' + t['uri'] if t.get('uri') else ''}, {t['adapters']} "
                        "adapter run(s)", highlight=False, markup=False)


@app.command("export")
def export(
    run_dir: Path = typer.Argument(..., help="A finished (or partly finished) run directory."),
    out: Path = typer.Argument(..., help="Folder to write the export to."),
    push_to: str = typer.Option(None, "--push", help="Hub organisation or user: upload "
                                "each dataset and adapter as a private repo (network)."),
) -> None:
    """The run's training sets (Hub dataset layout, with cards) and adapters (PEFT, with
    model cards), for `datasets.load_dataset` and `PeftModel.from_pretrained`."""
    from synth_ray.export import export_run, push
    from synth_ray.runtime.status import NotARunDir

    setup_logging()
    with exits_on(NotARunDir, ConfigError):
        done = export_run(run_dir, out)
    log.info("exported %d dataset(s) and %d adapter(s) to %s", len(done["datasets"]),
             len(done["adapters"]), out)
    for note in done["skipped"]:
        log.warning("not exported: %s", note)
    if push_to:
        for repo in push(out, done["run"], push_to):
            log.info("pushed %s", repo)


@app.command("compare")
def compare_runs(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories to set side by side."),
    metric: list[str] = typer.Option([], "--metric", "-m", help="Metric to show (repeatable): "
                                     "perplexity, perplexity_human, lexical_individual, "
                                     "lexical_aggregated, semantic, harm_<set>, quality_<set>, "
                                     "danger_<set>, spb, pro_synthetic. Default: the main ones."),
    out: Path = typer.Option(None, "--out", help="Also write compare.md, .csv and .png here."),
) -> None:
    """Chosen metrics of several runs side by side, labelled by the config keys they differ
    in (e.g. the siblings of a sweep)."""
    from synth_ray.compare import CompareError, compare

    with exits_on(CompareError, ConfigError):
        md = compare(run_dirs, metric or None, out)
    sys.stdout.write(md)


@app.command("sweep")
def sweep(
    config: Path = typer.Argument(..., help="Experiment YAML"),
    axis: str = typer.Argument(..., help="KEY=V1,V2,..., e.g. "
                               "evaluation.sampling.temperature=0.3,0.7,1.0"),
    overrides: list[str] = OverridesArg,
    until: str = typer.Option(None, "--until", help="Last stage each sibling runs."),
    verbose: bool = VerboseOpt,
) -> None:
    """Sibling runs, one per value of KEY, sharing every stage the key leaves unchanged;
    then `compare` over them into <run.dir>-sweep-<key>/."""
    import subprocess

    from synth_ray.compare import CompareError, compare
    from synth_ray.sweep import SweepError, run_sweep

    setup_logging(verbose_=verbose or None)
    try:
        with exits_on(SweepError, ConfigError):
            root, dirs = run_sweep(config, axis, overrides, verbose, until)
    except subprocess.CalledProcessError as e:
        log.error("sweep stopped: %s exited %d; rerun the same command to resume",
                  " ".join(e.cmd[3:]), e.returncode)
        raise typer.Exit(EXIT_FAILED) from None
    try:
        compare(dirs, None, root)
    except CompareError as e:
        log.warning("sweep done in %s, but nothing to compare: %s", root, e)
        return
    log.info("sweep done: %s (compare.md, compare.png)", root)


@app.command("schema")
def schema() -> None:
    """Print the config's JSON schema (for editor completion and checks of YAML files)."""
    import json

    sys.stdout.write(json.dumps(ExperimentConfig.model_json_schema(), indent=2) + "\n")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        sys.stdout.write(f"synth-ray {version('synth-ray')}\n")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """synth-ray: how the diversity of synthetic fine-tuning data changes an LLM."""


@app.command("tiny")
def tiny_models(names: list[str] = typer.Argument(None, help="Models to build (default all)")):
    """Build (or find cached) the embedded tiny models; print their folders. Random-weight
    ones by default; name pre-trained ones (pt-*) to pre-train them (minutes each)."""
    from synth_ray.toy import pretrain, registry, smol, tiny

    setup_logging()
    pre = [n for n in names or [] if n in pretrain.PRETRAINED]
    if pre:  # one Ray Tune grid for all of them
        pretrain.pretrain(pre)
    variants = [n for n in names or [] if smol.variant_corpus(n)]
    if variants:
        smol.train_variants(variants)
    for name in names or sorted(tiny.MODELS):
        print(f"tiny://{name}\t{registry.model(name)}")


if __name__ == "__main__":
    app()
