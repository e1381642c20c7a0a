"""`synth-ray sweep CONFIG KEY=V1,V2,...`: sibling runs that differ in one config key (the
paper's temperature ablation: `evaluation.sampling.temperature=0.3,0.7,1.0`), sharing
whatever the key does not change, then `synth-ray compare` over them.

The siblings live in `<run.dir>-sweep-<leaf>/<leaf>-<value>`. Each starts as a copy of the
finished stages of the base run (`run.dir`, if it has run) or of the first sibling: the
split, generations, training sets, adapters... A stage whose inputs the key does not touch is
then current and skipped (the usual input-hash rule); the first stage the key changes and
every later one run again. Copies, not links: a sibling that retrains an adapter must never
write into the base run's files. Ray Train's checkpoints, the report, the log and the
tracking records are not copied: they belong to the run that made them.

Each sibling runs as its own `synth-ray run` process (its own lock, log and tracking run); a
failed sibling stops the sweep, and a rerun of the same command resumes it (siblings that
finished are current and skip every stage).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

from synth_ray.config import ExperimentConfig
from synth_ray.config.uris import is_uri
from synth_ray.design import STAGE_FOLDERS

log = logging.getLogger("synth_ray")
NOT_SHARED = ("ray_train", "ray_tune", "report")
MANIFEST = "manifest.json"


class SweepError(ValueError):
    """A sweep that cannot run as asked (a key=values argument, a run.dir in a bucket)."""


def parse_axis(arg: str) -> tuple[str, list[str]]:
    key, sep, values = arg.partition("=")
    vals = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key or len(vals) < 2:
        raise SweepError(f"{arg!r}: expected KEY=V1,V2[,...] with two or more values")
    if key.startswith("run."):
        raise SweepError(f"{key}: the sweep sets run.dir and run.name itself")
    if len(set(vals)) < len(vals):
        raise SweepError(f"{arg!r}: a value is repeated")
    return key, vals


def siblings(cfg: ExperimentConfig, key: str, values: list[str]) -> tuple[Path, list[Path]]:
    if is_uri(cfg.run.dir):
        raise SweepError(f"run.dir {cfg.run.dir}: a sweep copies finished stages between "
                         "sibling run directories on this file system; use a local run.dir "
                         "(or a shared file system mounted on every node)")
    leaf = key.rsplit(".", 1)[-1]
    root = Path(f"{cfg.run.dir.rstrip('/')}-sweep-{leaf}")
    return root, [root / f"{leaf}-{v.replace('/', '_')}" for v in values]


def seed_from(src: Path, dst: Path) -> bool:
    """Copy src's finished stage folders and manifest into a new sibling dst. False (and
    nothing copied) when dst has started already or src has no finished stage."""
    if (dst / MANIFEST).exists() or not (src / MANIFEST).exists():
        return False
    tmp = dst.with_name(f".{dst.name}.seeding")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for folders in STAGE_FOLDERS.values():
        for folder in folders:
            if folder not in NOT_SHARED and (src / folder).is_dir():
                shutil.copytree(src / folder, tmp / folder, symlinks=True)
    shutil.copy2(src / MANIFEST, tmp / MANIFEST)  # last: it says what is finished
    shutil.rmtree(dst, ignore_errors=True)  # an empty or half-made sibling
    tmp.rename(dst)
    return True


def run_sweep(config: Path, axis: str, overrides: list[str], verbose: bool = False,
              until: str | None = None) -> tuple[Path, list[Path]]:
    """Run every sibling in turn; returns (sweep folder, sibling run dirs). Raises
    CalledProcessError naming the sibling that failed."""
    from synth_ray.config import load_config

    key, values = parse_axis(axis)
    cfg = load_config(config, overrides)
    load_config(config, [*overrides, f"{key}={values[0]}"])  # the key exists, the value fits
    root, dirs = siblings(cfg, key, values)
    base = Path(cfg.run.dir)
    for value, d in zip(values, dirs, strict=True):
        source = base if (base / MANIFEST).exists() else dirs[0]
        if d != source and seed_from(source, d):
            log.info("[sweep] %s: started from the finished stages of %s", d, source)
        cmd = [sys.executable, "-m", "synth_ray.cli", "run", str(config), *overrides,
               f"{key}={value}", f"run.dir={d}", f"run.name={cfg.run.name}-{d.name}"]
        if verbose:
            cmd.append("--verbose")
        if until:
            cmd += ["--until", until]
        log.info("[sweep] %s=%s in %s", key, value, d)
        subprocess.run(cmd, check=True)
    return root, dirs
