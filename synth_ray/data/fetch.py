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
written beside its place under a pending name, read back through the loader its stage
uses, and renamed into place only when all loaded: a fetch that does not load replaces
nothing and leaves nothing."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import typer

from synth_ray.config import ConfigError, ExperimentConfig

ARTICLES_REPO, ARTICLES_FILES = "abisee/cnn_dailymail", "3.0.0/*test*.parquet"
JAILBREAK_REPO, JAILBREAK_FILES = "rubend18/ChatGPT-Jailbreak-Prompts", "*.csv"
JAILBREAK_COLUMNS = {"Name", "Prompt", "Votes"}
SOURCES = ("articles", "jailbreaks", "dataset")
NOT_PUBLIC = ("RefusalBench's JSON is not public (PAPER.md: the authors' code loads it, "
              "it was never published): ask the paper's authors, and put it at")


@dataclass
class Fetched:
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


def fetch_articles(source: str, tmp: Path, n: int, seed: int = 42) -> str:
    import polars as pl

    table = pl.concat([pl.read_parquet(f, columns=["id", "article", "highlights"])
                       for f in _files(source, ARTICLES_FILES)])
    sample = table.sample(n=min(n, table.height), seed=seed, shuffle=True)
    sample.write_ndjson(tmp)
    return f"{sample.height} of {table.height:,} test articles (seed {seed})"


def fetch_jailbreaks(source: str, tmp: Path) -> str:
    import polars as pl

    for f in _files(source, JAILBREAK_FILES):
        head = pl.read_csv(f, n_rows=1, infer_schema=False)
        if JAILBREAK_COLUMNS <= set(head.columns):
            shutil.copyfile(f, tmp)
            return f"{f.name} ({pl.read_csv(f, infer_schema=False).height} prompts)"
    raise ValueError(f"{source}: no CSV with the columns {sorted(JAILBREAK_COLUMNS)}")


def fetch_dataset(source: str, revision: str | None, tmp: Path) -> str:
    """A hub dataset's data files (data/dolly.py's own download, at the config's revision),
    or a local copy's."""
    from synth_ray.data.dolly import LOCAL_SUFFIXES, hub_files

    files = (_files(source, *(f"**/*{s}" for s in LOCAL_SUFFIXES)) if Path(source).is_dir()
             else hub_files(source, revision))
    tmp.mkdir()
    for f in files:
        shutil.copyfile(f, tmp / f.name)
    return f"{len(files)} file(s)"


def _dest(configured: str, default: Path) -> Path | None:
    """Where a configured input goes: its own local path (the paper configs: data/...), or
    `default` when it is bundled (tiny://); None for a bucket URI (fetch, then upload)."""
    from synth_ray.config.uris import is_uri
    from synth_ray.models import is_scheme_id

    if is_scheme_id(configured):
        return default
    return None if is_uri(configured) else Path(configured).expanduser()


def _pending(dest: Path) -> Path:
    """The name an input is written under until it has been read back: beside its place,
    with its suffix (the loaders read by suffix)."""
    return dest.with_name(f".{dest.stem}.fetching{dest.suffix}")


def fetch_inputs(cfg: ExperimentConfig, to: Path, sources: dict[str, str],
                 articles: int = 100) -> list[Fetched]:
    """Fetch what is public; returns what was written and what was not, with why. Every
    file is written under a pending name, read back through the loader its stage uses,
    and only then renamed into place: a fetch that does not load replaces nothing."""
    from synth_ray.runtime.readiness import input_problems, is_hub_id

    judge = cfg.judge
    # (key, where it goes, how): an input file goes where the config names it (bundled:
    # under `to`); a hub dataset into a folder under `to`, for dataset.path
    jobs = [("judge.articles", _dest(judge.articles, to / "cnn_dailymail_test_sample.jsonl"),
             lambda t: fetch_articles(sources.get("articles", ARTICLES_REPO), t, articles)),
            ("judge.jailbreak_templates",
             _dest(judge.jailbreak_templates, to / "jailbreak_prompts.csv"),
             lambda t: fetch_jailbreaks(sources.get("jailbreaks", JAILBREAK_REPO), t))]
    if is_hub_id(cfg.dataset.path):
        jobs.append(("dataset.path", to / cfg.dataset.path.replace("/", "--"),
                     lambda t: fetch_dataset(sources.get("dataset", cfg.dataset.path),
                                             cfg.dataset.revision, t)))
    out, pending = [], {}
    try:
        for key, dest, run in jobs:
            if dest is None:
                out.append(Fetched(key, None, "the config names a bucket URI: fetch to a "
                                   "folder (--to, and the key set to a path there), then "
                                   "upload it"))
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            pending[key] = (_pending(dest), dest)
            _remove(pending[key][0])  # a fetch killed before
            note = run(pending[key][0])
            if key == "dataset.path":  # the stage reads the Hub unless the config says so
                note += f"; run with dataset.path={dest}"
            out.append(Fetched(key, dest, note))
        # read back as the stages read them, the config pointing at the pending files
        at = {k: str(tmp) for k, (tmp, _) in pending.items()}
        judge = cfg.judge.model_copy(update={k.split(".", 1)[1]: v for k, v in at.items()
                                             if k.startswith("judge.")})
        dataset = cfg.dataset.model_copy(update={"path": at.get("dataset.path",
                                                                 cfg.dataset.path)})
        check = cfg.model_copy(update={"judge": judge, "dataset": dataset})
        bad = [p for p in input_problems(check) if p.key in pending]
        if bad:
            raise ValueError("what was fetched does not load, nothing replaced: "
                             + "; ".join(str(p) for p in bad))
        for tmp, dest in pending.values():
            _remove(dest)
            os.replace(tmp, dest)
    finally:
        for tmp, _ in pending.values():
            _remove(tmp)
    out.append(Fetched("judge.safety_prompts", None, f"{NOT_PUBLIC} {judge.safety_prompts}"))
    return out


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


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

    from polars.exceptions import PolarsError

    from synth_ray.config import load_config
    from synth_ray.preflight import EXIT_CONFIG

    try:
        cfg = load_config(config, overrides or [])
        bad = [s for s in source if s.split("=", 1)[0] not in SOURCES or "=" not in s]
        if bad:
            raise ValueError(f"--source {bad[0]!r}: give NAME=FOLDER, NAME one of {SOURCES}")
        pairs = dict(s.split("=", 1) for s in source)
        for f in fetch_inputs(cfg, to, pairs, articles):
            print(f"{f.key}: {f.path or 'not fetched'}: {f.note}")
    except (ConfigError, OSError, ValueError, RuntimeError, PolarsError) as e:
        sys.stderr.write(f"error: {e}\n")
        raise typer.Exit(EXIT_CONFIG) from None
