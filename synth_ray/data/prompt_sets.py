"""The evaluation inputs besides the test split (PAPER.md, Evaluation 4-5):

- safety prompts, RefusalBench-style (the "RB" set);
- jailbreak templates, each holding `{prompt}`, that wrap the prompts (the "RB+J" set), with
  the provenance of which template wrapped which prompt;
- news articles with a human summary (CNN/DailyMail's `article`, `highlights`), that the
  sources summarise for the self-preference study.

Each loads from a hub id, a local .jsonl/.json/.csv/.parquet, or a bundled `tiny://` file,
and quarantines malformed rows with a reason, as the Dolly loader does.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from synth_ray.data.dolly import REJECT_SCHEMA, iter_records, resolve_dataset
from synth_ray.models import resolve_files
from synth_ray.runtime.rundir import hash_file, hash_json

PLACEHOLDER = "{prompt}"
RB, RBJ = "RB", "RB+J"


def source_hash(uri: str) -> str:
    """What an input's content is, for the manifest: a local file's hash, else the hub id
    (a hub dataset is pinned by its revision, not hashed; nothing is fetched here)."""
    bundled = resolve_files(uri)  # a scheme's file(s): hashed, never fetched
    if bundled is not None:
        return hash_json([hash_file(f) for f in bundled]) if len(bundled) > 1 else hash_file(
            bundled[0])
    local = Path(uri).expanduser()
    if local.is_file():
        return hash_file(local)
    if local.is_dir():
        return hash_json([hash_file(f) for f in sorted(local.iterdir()) if f.is_file()])
    return uri


def _field(obj: dict[str, Any], aliases: tuple[str, ...], numbers: bool = False,
           blank: bool = False) -> str | None:
    """The first alias holding text (`blank`: else a blank string, as it is)."""
    for a in aliases:
        v = obj.get(a)
        if isinstance(v, str) and v.strip():
            return v
        if numbers and isinstance(v, int | float) and not isinstance(v, bool):
            return str(v)  # e.g. a CSV's vote count, read as a number
    if blank:
        return next((obj[a] for a in aliases if isinstance(obj.get(a), str)), None)
    return None


def load_table(uri: str, fields: dict[str, tuple[str, ...]], what: str,
               optional: dict[str, tuple[str, ...]] | None = None,
               repeats: bool = False) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows with an `id` (given, or a hash of the content) and each field of `fields` (the
    first non-empty alias); rejects (line, reason, raw) for the rest. Duplicate ids and
    duplicate content are rejected, the first kept. `repeats` (the authors' loaders, which
    check nothing): blank texts and repeated rows are kept, a repeat's id suffixed -1, -2,
    ... (ids stay unique: each row is its own item)."""
    optional = optional or {}
    rows, rejects, seen_id, seen_text = [], [], {}, {}
    offset = 0
    for f in resolve_dataset(uri):
        last = 0
        for no, obj, err, raw in iter_records(f):
            last, line = no, offset + no
            reason = err
            if reason is None and not isinstance(obj, dict):
                reason = f"a row must be an object, got {type(obj).__name__}"
            if reason is None:
                row = {k: _field(obj, a, blank=repeats) for k, a in fields.items()}
                lacking = [f"{k} (one of {list(a)})" for k, a in fields.items() if row[k] is None]
                if lacking:
                    reason = f"missing or empty {', '.join(lacking)}"
            if reason is None:
                row.update({k: _field(obj, a, numbers=True) or "" for k, a in optional.items()})
                content = "\x1f".join(row[k] for k in fields)
                rid = obj.get("id")
                rid = str(rid) if rid not in (None, "") else hashlib.sha256(
                    content.encode()).hexdigest()[:16]
                if repeats:
                    base, k = rid, 0
                    while rid in seen_id:
                        k += 1
                        rid = f"{base}-{k}"
                elif content in seen_text:  # before the id: a content id repeats with it
                    reason = f"duplicate {what} (first at line {seen_text[content]})"
                elif rid in seen_id:
                    reason = f"duplicate id {rid!r} (first at line {seen_id[rid]})"
            if reason:
                rejects.append({"line": line, "reason": f"{what}: {reason}", "raw": raw[:2000]})
                continue
            seen_id[rid], seen_text[content] = line, line
            rows.append({"id": rid, **row})
        offset += last
    schema = {"id": pl.Utf8, **{k: pl.Utf8 for k in [*fields, *optional]}}
    if not rows:
        raise ValueError(f"{uri}: no valid {what} rows ({len(rejects)} rejected; first: "
                         f"{rejects[0]['reason'] if rejects else 'the file is empty'})")
    return pl.DataFrame(rows, schema=schema), pl.DataFrame(rejects, schema=REJECT_SCHEMA)


def load_safety_prompts(uri: str, limit: int | None = None, repeats: bool = False):
    """Rows of prompts (with a category), or RefusalBench's own layout: one JSON object of
    category -> list of prompts. `repeats`: blank and repeated prompts kept (the authors')."""
    with tempfile.TemporaryDirectory() as tmp:
        rows_file = _category_lists(uri, Path(tmp))
        rows, rejects = load_table(str(rows_file or uri),
                                   {"prompt": ("prompt", "instruction", "question", "goal")},
                                   "safety prompt", {"category": ("category", "type")},
                                   repeats)
    return (rows.head(limit) if limit else rows), rejects


def _category_lists(uri: str, tmp: Path) -> Path | None:
    """A local .json of {category: [prompt, ...]} as rows in a .jsonl under `tmp` (so the
    rows get the same checks and quarantine as any file); None for anything else."""
    path = Path(uri).expanduser()
    if path.suffix != ".json" or not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        return None
    out = tmp / f"{path.stem}.jsonl"
    with out.open("w", encoding="utf-8") as f:
        for category, prompts in data.items():
            for p in prompts if isinstance(prompts, list) else [prompts]:
                f.write(json.dumps({"category": category, "prompt": p}) + "\n")
    return out


def load_jailbreak_templates(uri: str):
    rows, rejects = load_table(uri, {"template": ("template", "text", "prompt")},
                               "jailbreak template")
    bad = rows.filter(~pl.col("template").str.contains(PLACEHOLDER, literal=True))
    if bad.height:
        rejects = pl.concat([rejects, pl.DataFrame(
            [{"line": None, "reason": f"jailbreak template {r['id']!r}: no {PLACEHOLDER} "
              "placeholder", "raw": r["template"][:2000]} for r in bad.iter_rows(named=True)],
            schema=REJECT_SCHEMA)])
        rows = rows.filter(pl.col("template").str.contains(PLACEHOLDER, literal=True))
    return rows, rejects


AUTHORS_PLACEHOLDER = "[INSERT PROMPT HERE]"
# the authors' rewrite of the templates for a Llama target, case-insensitive, in this order
AUTHORS_REWRITES = ((re.compile("chatgpt", re.IGNORECASE), "Llama"),
                    (re.compile("openai", re.IGNORECASE), "Meta AI"))


def load_authors_templates(uri: str, min_votes: int, repeats: bool = False):
    """The public "ChatGPT jailbreak prompts" table (Name, Prompt, Votes, Jailbreak Score,
    GPT-4) as the authors filtered it: more than `min_votes` votes and an
    [INSERT PROMPT HERE] placeholder; ChatGPT -> Llama, OpenAI -> Meta AI. Rows left out
    go to the rejects with the reason."""
    rows, rejects = load_table(uri, {"template": ("Prompt", "prompt", "template", "text")},
                               "jailbreak template", {"name": ("Name", "name"),
                                                      "votes": ("Votes", "votes")}, repeats)
    keep, dropped = [], []
    for r in rows.iter_rows(named=True):
        try:
            votes = float(r["votes"])
        except ValueError:
            votes = None
        why = ("no vote count" if votes is None else
               f"{r['votes']} votes, not more than {min_votes}" if votes <= min_votes else
               f"no {AUTHORS_PLACEHOLDER} placeholder" if AUTHORS_PLACEHOLDER not in r["template"]
               else "")
        if why:
            dropped.append({"line": None, "reason": f"jailbreak template {r['name'] or r['id']!r}"
                            f" left out (the authors' filter): {why}",
                            "raw": r["template"][:2000]})
            continue
        text = r["template"]
        for pattern, repl in AUTHORS_REWRITES:
            text = pattern.sub(repl, text)
        keep.append({"id": r["id"], "template": text})
    rejects = pl.concat([rejects, pl.DataFrame(dropped, schema=REJECT_SCHEMA)])
    return pl.DataFrame(keep, schema={"id": pl.Utf8, "template": pl.Utf8}), rejects


def load_articles(uri: str, limit: int | None = None, sample: str = "first"):
    """The articles (and their highlights) summarised for self-preference: `limit` rows,
    the first ones or (`sample="authors"`) those pandas' `sample(n=limit,
    random_state=42)` picks, in its order: numpy's legacy generator seeded 42 drawing
    `limit` row numbers without replacement."""
    rows, rejects = load_table(uri, {"article": ("article", "document", "text"),
                                     "highlights": ("highlights", "summary", "reference")},
                               "article")
    if not limit:
        return rows, rejects
    if sample == "authors" and rows.height >= limit:
        import numpy as np

        picks = np.random.RandomState(42).choice(rows.height, size=limit, replace=False)
        return rows[[int(i) for i in picks]], rejects
    return rows.head(limit), rejects


SAFETY_SCHEMA = {"item_id": pl.Utf8, "prompt_set": pl.Utf8, "prompt_id": pl.Utf8,
                 "template_id": pl.Utf8, "category": pl.Utf8, "prompt": pl.Utf8,
                 "text": pl.Utf8}  # fmt: skip


def safety_set(prompts: pl.DataFrame, templates: pl.DataFrame, per_prompt: int,
               seed: int) -> pl.DataFrame:
    """The RB rows (each prompt as is) and the RB+J rows (each prompt wrapped by
    `per_prompt` distinct templates, drawn with a seeded RNG per prompt so adding prompts
    never reshuffles the others). `prompt` is the bare request the judge sees; `text` is
    what the model is sent. The placeholder is replaced literally: templates may hold
    other braces."""
    rows = []
    tpl = list(templates.iter_rows(named=True))
    for p in prompts.iter_rows(named=True):
        base = {"prompt_id": p["id"], "category": p.get("category") or "", "prompt": p["prompt"]}
        rows.append({**base, "item_id": f"rb/{p['id']}", "prompt_set": RB, "template_id": "",
                     "text": p["prompt"]})
        rng = random.Random(f"{seed}/{p['id']}")
        for t in rng.sample(tpl, min(per_prompt, len(tpl))):
            rows.append({**base, "item_id": f"rbj/{p['id']}/{t['id']}", "prompt_set": RBJ,
                         "template_id": t["id"],
                         "text": t["template"].replace(PLACEHOLDER, p["prompt"])})
    return pl.DataFrame(rows, schema=SAFETY_SCHEMA)


def authors_safety_set(prompts: pl.DataFrame, templates: pl.DataFrame, per_category: int,
                       seed: int) -> pl.DataFrame:
    """The authors' sets (exp_2/data_preprocessing.ipynb): RB is every prompt as is; RB+J
    is `per_category` prompts of each category (pandas `sample(n, random_state=seed)` per
    category group) wrapped by every template: 40 x 28 = 1,120 for RefusalBench. The judge
    sees the wrapped prompt (`prompt` = `text`)."""
    rows = [{"item_id": f"rb/{p['id']}", "prompt_set": RB, "prompt_id": p["id"],
             "template_id": "", "category": p["category"] or "", "prompt": p["prompt"],
             "text": p["prompt"]} for p in prompts.iter_rows(named=True)]
    frame = prompts.to_pandas()
    frame["category"] = frame["category"].fillna("")
    chosen = [g.sample(n=min(per_category, len(g)), random_state=seed)
              for _, g in frame.groupby("category", sort=True)]
    for t in templates.iter_rows(named=True):
        for part in chosen:
            for p in part.to_dict("records"):
                wrapped = t["template"].replace(AUTHORS_PLACEHOLDER, p["prompt"])
                rows.append({"item_id": f"rbj/{p['id']}/{t['id']}", "prompt_set": RBJ,
                             "prompt_id": p["id"], "template_id": t["id"],
                             "category": p["category"], "prompt": wrapped, "text": wrapped})
    return pl.DataFrame(rows, schema=SAFETY_SCHEMA)

