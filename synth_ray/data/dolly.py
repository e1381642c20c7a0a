"""Dolly-style datasets: loading, row checks with quarantine, and the paper's seeded splits.

A Dolly row has instruction, context, response, category (PAPER.md, Data). Malformed rows
are never dropped silently: each goes to a rejects table with its line number and a reason,
and the run goes on with the rest.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from synth_ray.models import resolve_files

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")

ROW_SCHEMA = {
    "id": pl.Utf8,
    "instruction": pl.Utf8,
    "context": pl.Utf8,
    "response": pl.Utf8,
    "category": pl.Utf8,
    "line": pl.Int64,
}
REJECT_SCHEMA = {"line": pl.Int64, "reason": pl.Utf8, "raw": pl.Utf8}


@dataclass
class LoadResult:
    rows: pl.DataFrame
    rejects: pl.DataFrame
    origin: str
    notes: list[str] = field(default_factory=list)


def row_id(instruction: str, context: str) -> str:
    """Stable id from content, so ids survive reordering of the source file."""
    return hashlib.sha1(f"{instruction}\x00{context}".encode()).hexdigest()[:16]


# The fields synth-ray reads; any other column of a dataset is ignored (and said so).
FIELDS = ("id", "instruction", "context", "response", "category")


def check_row(obj: Any, max_chars: int | None = None) -> tuple[dict[str, str] | None,
                                                                 str | None]:
    """Return (clean row, None) or (None, reason). Pure; used by every loader."""
    if not isinstance(obj, dict):
        return None, f"row is a {type(obj).__name__}, not an object"
    clean: dict[str, str] = {}
    for key in ("instruction", "response"):
        v = obj.get(key)
        if v is None:
            return None, f"missing {key!r}"
        if not isinstance(v, str):
            return None, f"{key!r} is {type(v).__name__}, not a string"
        if not v.strip():
            return None, f"empty {key!r}"
        clean[key] = v.strip()
    for key, default in (("context", ""), ("category", "unknown")):
        v = obj.get(key)
        if v is None:
            v = default
        if not isinstance(v, str):
            return None, f"{key!r} is {type(v).__name__}, not a string"
        clean[key] = v.strip() or default
    if max_chars is not None:
        for key in ("instruction", "context", "response"):
            if len(clean[key]) > max_chars:
                return None, (f"{key!r} is {len(clean[key]):,} characters, over "
                              f"dataset.max_chars ({max_chars:,})")
    ident = obj.get("id")
    if ident is not None and not isinstance(ident, (str, int)):
        return None, f"'id' is {type(ident).__name__}, not a string or integer"
    if ident is None:
        ident = row_id(clean["instruction"], clean["context"])
    clean["id"] = str(ident)
    return clean, None


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any, str | None, str]]:
    """Yield (line_no, object or None, parse error or None, raw text) for each non-blank line."""
    with open(path, "rb") as f:
        for no, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield no, None, f"not UTF-8 ({e.reason} at byte {e.start})", raw.decode(
                    "utf-8", "replace"
                )
                continue
            if not text.strip():
                continue
            try:
                yield no, json.loads(text), None, text
            except json.JSONDecodeError as e:
                yield no, None, f"bad JSON: {e.msg} (column {e.colno})", text


def iter_records(path: Path) -> Iterator[tuple[int, Any, str | None, str]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _iter_jsonl(path)
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError(f"{path}: a .json dataset must hold a list of rows")
        for no, obj in enumerate(data, start=1):
            yield no, obj, None, json.dumps(obj, default=str)[:2000]
    elif suffix in (".parquet", ".csv"):
        # CSV: every column as text; line numbers count data rows (the header is line 0).
        frame = (pl.read_parquet(path) if suffix == ".parquet"
                 else pl.read_csv(path, infer_schema=False))
        for no, obj in enumerate(frame.iter_rows(named=True), start=1):
            yield no, obj, None, json.dumps(obj, default=str)[:2000]
    else:
        raise ValueError(f"{path}: unsupported dataset file type {suffix!r}; use {LOCAL_SUFFIXES}")


def check_records(
    records: Iterable[tuple[int, Any, str | None, str]],
    drop_duplicate_instructions: bool = True,
    max_chars: int | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split records into clean rows and rejects (line, reason, raw)."""
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    first_instruction: dict[str, int] = {}
    first_id: dict[str, int] = {}
    for no, obj, err, raw in records:
        clean, reason = (None, err) if err else check_row(obj, max_chars)
        if clean is not None:
            if drop_duplicate_instructions and clean["instruction"] in first_instruction:
                first = first_instruction[clean["instruction"]]
                reason = f"duplicate instruction (first kept at line {first})"
            elif clean["id"] in first_id and obj.get("id") is None:
                # duplicates kept (the authors' split) in a file without ids (Dolly): the
                # id made from the content repeats; the n-th repeat gets "-n"
                k = 1
                while f"{clean['id']}-{k}" in first_id:
                    k += 1
                clean["id"] = f"{clean['id']}-{k}"
            elif clean["id"] in first_id:
                reason = f"duplicate id {clean['id']!r} (first at line {first_id[clean['id']]})"
        if reason:
            rejects.append({"line": no, "reason": reason, "raw": raw[:2000]})
            continue
        first_id[clean["id"]] = no
        first_instruction.setdefault(clean["instruction"], no)
        rows.append({**clean, "line": no})
    return (
        pl.DataFrame(rows, schema=ROW_SCHEMA),
        pl.DataFrame(rejects, schema=REJECT_SCHEMA),
    )


def hub_files(repo_id: str, revision: str | None) -> list[Path]:
    """Download a dataset repo's data files from the Hugging Face Hub (needs network)."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id,
            repo_type="dataset",
            revision=revision,
            allow_patterns=[f"*{s}" for s in LOCAL_SUFFIXES],
        )
    except Exception as e:  # the hub client raises many types; the message is what matters
        raise RuntimeError(
            f"could not fetch dataset {repo_id!r} from the Hugging Face Hub "
            f"({type(e).__name__}: {e}). Without network, download it elsewhere and set "
            "dataset.path to the local .jsonl/.parquet file."
        ) from e
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in LOCAL_SUFFIXES)
    if not files:
        raise RuntimeError(f"dataset {repo_id!r} holds no {LOCAL_SUFFIXES} files")
    return files


def resolve_dataset(path: str, revision: str | None = None) -> list[Path]:
    files = resolve_files(path)  # SCHEME://NAME (tiny://dolly-sample): its provider's file(s)
    if files is not None:
        return files
    local = Path(path).expanduser()
    if local.exists():
        if local.is_dir():
            files = sorted(p for p in local.iterdir() if p.suffix.lower() in LOCAL_SUFFIXES)
            if not files:
                raise ValueError(f"{local}: folder holds no {LOCAL_SUFFIXES} files")
            return files
        return [local]
    if path.endswith(LOCAL_SUFFIXES) or path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"dataset file {path!r} does not exist")
    return hub_files(path, revision)


def load_dataset(
    path: str,
    revision: str | None = None,
    drop_duplicate_instructions: bool = True,
    max_rows: int | None = None,
    max_chars: int | None = None,
) -> LoadResult:
    files = resolve_dataset(path, revision)
    extra: dict[str, int] = {}

    def records() -> Iterator[tuple[int, Any, str | None, str]]:
        # Line numbers are global across files so a reject points at one place.
        offset = 0
        for f in files:
            last = 0
            for no, obj, err, raw in iter_records(f):
                last = no
                if isinstance(obj, dict):
                    for key in obj.keys() - set(FIELDS):
                        extra[key] = extra.get(key, 0) + 1
                yield offset + no, obj, err, raw
            offset += last

    rows, rejects = check_records(records(), drop_duplicate_instructions, max_chars)
    notes = []
    if extra:
        notes.append("ignored column(s) synth-ray does not read: " + ", ".join(
            f"{k!r} ({n} rows)" for k, n in sorted(extra.items())))
    if max_rows is not None and rows.height > max_rows:
        notes.append(f"kept the first {max_rows} of {rows.height} valid rows (dataset.max_rows)")
        rows = rows.head(max_rows)
    return LoadResult(rows, rejects, ", ".join(str(f) for f in files), notes)


# -- splits ------------------------------------------------------------------------------


def _largest_remainder(counts: dict[str, int], total: int) -> dict[str, int]:
    """Allocate `total` across strata in proportion to `counts` (Hamilton's method)."""
    n = sum(counts.values())
    quotas = {k: total * c / n for k, c in counts.items()}
    alloc = {k: math.floor(q) for k, q in quotas.items()}
    left = total - sum(alloc.values())
    # Ties broken by stratum name so the result never depends on dict order.
    for k in sorted(quotas, key=lambda k: (-(quotas[k] - alloc[k]), k))[:left]:
        alloc[k] += 1
    return alloc


def stratum_column(rows: pl.DataFrame, stratify_by: str | None) -> str | None:
    """The column both splitters stratify by (None: no strata); a missing one is an error."""
    if stratify_by and stratify_by not in rows.columns:
        raise ValueError(f"split.stratify_by: no column {stratify_by!r} in the dataset")
    return stratify_by or None


def split_rows(
    rows: pl.DataFrame,
    seed: int = 42,
    test_fraction: float = 0.1,
    num_parts: int = 4,
    stratify_by: str | None = "category",
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Held-out test set (ceil(n * test_fraction) rows) and `num_parts` near-equal parts.

    Both are stratified by `stratify_by`: the test share of each stratum is allocated by
    largest remainder; the rest is shuffled within strata, laid out stratum after stratum,
    and dealt round-robin, so every part gets each stratum in proportion. For Dolly-15k
    (15,011 rows) this gives 1,502 test rows and parts of 3,377/3,377/3,377/3,378 (PAPER.md).
    """
    n = rows.height
    n_test = math.ceil(n * test_fraction)
    if n - n_test < num_parts:
        raise ValueError(f"{n} rows cannot make a test set of {n_test} and {num_parts} parts")
    rng = np.random.default_rng(seed)
    key = stratum_column(rows, stratify_by)
    strata = rows[key].to_list() if key else ["all"] * n
    by_stratum: dict[str, list[int]] = {}
    for i, s in enumerate(strata):
        by_stratum.setdefault(s, []).append(i)
    alloc = _largest_remainder({k: len(v) for k, v in by_stratum.items()}, n_test)
    test_idx: list[int] = []
    train_idx: list[int] = []
    for name in sorted(by_stratum):
        members = np.array(by_stratum[name])
        perm = members[rng.permutation(len(members))]
        test_idx.extend(perm[: alloc[name]].tolist())
        train_idx.extend(perm[alloc[name] :].tolist())
    # Deal from the end so that the extra rows of an uneven split land on the last parts,
    # as in the paper's 3,377/3,377/3,377/3,378.
    parts_idx: list[list[int]] = [[] for _ in range(num_parts)]
    for j, i in enumerate(reversed(train_idx)):
        parts_idx[num_parts - 1 - (j % num_parts)].append(i)
    test = rows[sorted(test_idx)].with_columns(pl.lit(0, pl.Int32).alias("part"))
    parts = [
        rows[sorted(idx)].with_columns(pl.lit(p + 1, pl.Int32).alias("part"))
        for p, idx in enumerate(parts_idx)
    ]
    return test, parts


def validation_mask(ids: list[str], fraction: float, seed: int) -> np.ndarray:
    """True for the rows held out for validation, as Hugging Face `datasets`'
    `train_test_split(test_size=fraction, seed=seed)` picks them (the authors' fine-tuning
    scripts): ceil(n * fraction) rows, the first of numpy's `default_rng(seed)` permutation
    (676 of 13,509 at 5%, where rounding gave 675)."""
    n = len(ids)
    k = 0 if fraction <= 0 else math.ceil(fraction * n)  # datasets: ceil(test_size * n)
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:k]] = True
    return mask


def sklearn_split(
    rows: pl.DataFrame,
    seed: int = 42,
    test_fraction: float = 0.1,
    num_parts: int = 4,
    stratify_by: str | None = "category",
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """The authors' split (`data_generation/data_cleaning.ipynb`): scikit-learn's
    `train_test_split(test_size=test_fraction, stratify=category, random_state=seed)`, then
    each training half split 50/50 again (stratified, the same seed) until `num_parts`
    parts: train -> (1+2, 3+4) -> 1, 2, 3, 4. Rows keep sklearn's order."""
    from sklearn.model_selection import train_test_split

    key = stratum_column(rows, stratify_by)

    def halve(idx: list[int], size: float) -> tuple[list[int], list[int]]:
        strata = rows[key].gather(idx).to_list() if key else None
        a, b = train_test_split(idx, test_size=size, random_state=seed, stratify=strata)
        return list(a), list(b)

    train_idx, test_idx = halve(list(range(rows.height)), test_fraction)
    groups = [train_idx]
    while len(groups) < num_parts:
        groups = [half for g in groups for half in halve(g, 0.5)]
    test = rows[test_idx].with_columns(pl.lit(0, pl.Int32).alias("part"))
    parts = [rows[g].with_columns(pl.lit(k, pl.Int32).alias("part"))
             for k, g in enumerate(groups, start=1)]
    return test, parts

