"""`synth-ray fetch-inputs CONFIG`: the paper's public inputs, fetched into the files the
config names, in the layouts its loaders read (docs/cluster.md, section 1b):

- `judge.articles`: CNN/DailyMail's test split from the Hub (`abisee/cnn_dailymail`,
  version 3.0.0), `--articles` of them sampled with seed 42 (the authors sampled 100 with
  pandas from a pickle they did not publish: the same size and seed, not their rows),
  written as JSON lines of id, article, highlights;
- `judge.jailbreak_templates`: the public "ChatGPT jailbreak prompts" table (Name, Prompt,
  Votes, Jailbreak Score, GPT-4) from the Hub (`rubend18/ChatGPT-Jailbreak-Prompts`), as
  published (the authors' filter, Votes > 10 and the placeholder, is the loader's);
- `dataset.path` when it is a hub id (Dolly-15k): its data files, for a cluster without
  the Hub; the override to use them is printed;
- RefusalBench (`judge.safety_prompts`) is not public (PAPER.md): named, never faked.

Each source is a hub dataset id or, with `--source NAME=FOLDER`, a local folder in that
repository's layout (a snapshot copied from elsewhere; the tests use one). Every file is
written next to its target and renamed into place once whole, then read back through the
loader its stage uses; a file that does not load is removed and named."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import typer

from synth_ray.core.config import ConfigError, ExperimentConfig

ARTICLES_REPO, ARTICLES_FILES = "abisee/cnn_dailymail", "3.0.0/*test*.parquet"
JAILBREAK_REPO, JAILBREAK_FILES = "rubend18/ChatGPT-Jailbreak-Prompts", "*.csv"
JAILBREAK_COLUMNS = {"Name", "Prompt", "Votes"}
SOURCES = ("articles", "jailbreaks", "dataset")
NOT_PUBLIC = ("RefusalBench's JSON is not public (PAPER.md: the authors' code loads it, "
              "it was never published): ask the paper's authors, and put it at")


@dataclass
class Fetched:
    name: str  # articles, jailbreaks, dataset, refusalbench
    key: str  # the config key it is for
    path: Path | None  # written (None: nothing written)
    note: str


def _files(source: str, *patterns: str) -> list[Path]:
    """The files of `source` (a local folder in the repository's layout, or a hub dataset
    id, downloaded) that match any of `patterns`, sorted."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(source, repo_type="dataset",
                                            allow_patterns=list(patterns)))
        except Exception as e:  # the hub client raises many types; the message matters
            raise RuntimeError(f"could not fetch {source!r} from the Hugging Face Hub "
                               f"({type(e).__name__}: {e}); without network, copy the "
                               "repository elsewhere and pass --source NAME=FOLDER") from e
    files = sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})
    if not files:
        raise FileNotFoundError(f"{source}: no file matches {' or '.join(patterns)}")
    return files


def _write_atomic(dest: Path, write) -> None:
    """`write(tmp_path)`, then renamed onto `dest`: never a half-written input."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch_articles(source: str, dest: Path, n: int, seed: int = 42) -> str:
    import polars as pl

    table = pl.concat([pl.read_parquet(f, columns=["id", "article", "highlights"])
                       for f in _files(source, ARTICLES_FILES)])
    sample = table.sample(n=min(n, table.height), seed=seed, shuffle=True)
    _write_atomic(dest, lambda tmp: sample.write_ndjson(tmp))
    return f"{sample.height} of {table.height:,} test articles (seed {seed})"


def fetch_jailbreaks(source: str, dest: Path) -> str:
    import polars as pl

    for f in _files(source, JAILBREAK_FILES):
        head = pl.read_csv(f, n_rows=1, infer_schema=False)
        if JAILBREAK_COLUMNS <= set(head.columns):
            _write_atomic(dest, lambda tmp, f=f: shutil.copyfile(f, tmp))
            return f"{f.name} ({pl.read_csv(f, infer_schema=False).height} prompts)"
    raise ValueError(f"{source}: no CSV with the columns {sorted(JAILBREAK_COLUMNS)}")


def fetch_dataset(source: str, folder: Path) -> str:
    from synth_ray.data.dolly import LOCAL_SUFFIXES

    files = _files(source, *(f"**/*{s}" for s in LOCAL_SUFFIXES))
    for f in files:
        _write_atomic(folder / f.name, lambda tmp, f=f: shutil.copyfile(f, tmp))
    return f"{len(files)} file(s); run with dataset.path={folder}"


def _hub_id(path: str) -> bool:
    from synth_ray.core.readiness import local_path
    from synth_ray.data.dolly import LOCAL_SUFFIXES
    from synth_ray.models import is_scheme_id

    return not (local_path(path) or is_scheme_id(path) or path.endswith(LOCAL_SUFFIXES))


def _dest(configured: str, default: Path) -> Path | None:
    """Where a configured input goes: its own local path (the paper configs: data/...), or
    `default` when it is bundled (tiny://); None for a bucket URI (fetch, then upload)."""
    from synth_ray.core.storage import is_uri
    from synth_ray.models import is_scheme_id

    if is_uri(configured):
        return None
    return default if is_scheme_id(configured) else Path(configured).expanduser()


def fetch_inputs(cfg: ExperimentConfig, to: Path, sources: dict[str, str],
                 articles: int = 100) -> list[Fetched]:
    """Fetch what is public; returns what was written and what was not, with why."""
    from synth_ray.core.readiness import input_problems

    j, out = cfg.judge, []
    jobs = [("articles", "judge.articles", j.articles, to / "cnn_dailymail_test_sample.jsonl",
             lambda d: fetch_articles(sources.get("articles", ARTICLES_REPO), d, articles)),
            ("jailbreaks", "judge.jailbreak_templates", j.jailbreak_templates,
             to / "jailbreak_prompts.csv",
             lambda d: fetch_jailbreaks(sources.get("jailbreaks", JAILBREAK_REPO), d))]
    for name, key, configured, default, run in jobs:
        dest = _dest(configured, default)
        if dest is None:
            out.append(Fetched(name, key, None, f"{configured} is a bucket URI: fetch to a "
                               "folder (--to) and upload it there"))
            continue
        out.append(Fetched(name, key, dest, run(dest)))
    if _hub_id(cfg.dataset.path):
        folder = to / cfg.dataset.path.replace("/", "--")
        out.append(Fetched("dataset", "dataset.path", folder,
                           fetch_dataset(sources.get("dataset", cfg.dataset.path), folder)))
    out.append(Fetched("refusalbench", "judge.safety_prompts", None,
                       f"{NOT_PUBLIC} {j.safety_prompts}"))
    # read back as the stages read them, with the config pointing at what was written
    written = {f.key: str(f.path) for f in out if f.path is not None}
    judge = cfg.judge.model_copy(update={k.split(".", 1)[1]: v for k, v in written.items()
                                         if k.startswith("judge.")})
    dataset = cfg.dataset.model_copy(update={"path": written.get("dataset.path",
                                                                  cfg.dataset.path)})
    check = cfg.model_copy(update={"judge": judge, "dataset": dataset})
    for p in input_problems(check):
        hit = next((f for f in out if f.key == p.key and f.path is not None), None)
        if hit is not None:
            if hit.path.is_file():
                hit.path.unlink()
            raise ValueError(f"{p.key}: what was fetched does not load, removed: {p}")
    return out


def command(
    config: Path = typer.Argument(...),
    overrides: list[str] = typer.Argument(None, help="key.sub=value overrides"),
    to: Path = typer.Option(Path("data"), help="Folder for inputs the config does not place"),
    source: list[str] = typer.Option([], help="NAME=FOLDER: a local copy of the hub "
                                     "repository (articles, jailbreaks, dataset)"),
    articles: int = typer.Option(100, help="Articles to sample (the authors': 100)"),
) -> None:
    """Fetch the paper's public inputs into the files the config names: CNN/DailyMail
    articles, the jailbreak prompts, the dataset; exit 2 naming what did not fetch or
    load. RefusalBench is not public: named, not fetched."""
    import sys

    from synth_ray.core.config import load_config

    try:
        cfg = load_config(config, overrides or [])
        bad = [s for s in source if s.split("=", 1)[0] not in SOURCES or "=" not in s]
        if bad:
            raise ValueError(f"--source {bad[0]!r}: give NAME=FOLDER, NAME one of {SOURCES}")
        pairs = dict(s.split("=", 1) for s in source)
        for f in fetch_inputs(cfg, to, pairs, articles):
            print(f"{f.key}: {f.path or 'not fetched'}: {f.note}")
    except (ConfigError, OSError, ValueError, RuntimeError) as e:
        sys.stderr.write(f"error: {e}\n")
        raise typer.Exit(2) from None
