"""Stage `split`: load the dataset, quarantine bad rows, write the test set and the parts.

Outputs (run directory): splits/test.parquet, splits/part-<k>.parquet (k = 1..num_parts),
splits/rejects.parquet (line, reason, raw) for every row that was not used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from synth_ray.data.dolly import load_dataset, resolve_dataset, sklearn_split, split_rows
from synth_ray.design import SPLIT_REJECTS, TEST_PATH, part_path
from synth_ray.models import is_scheme_id
from synth_ray.runtime.pipeline import Context, StageOutput
from synth_ray.runtime.rundir import hash_file, write_parquet

log = logging.getLogger("synth_ray")


def inputs(ctx: Context) -> dict[str, Any]:
    ds = ctx.cfg.dataset
    desc: dict[str, Any] = {"dataset": ds.model_dump(), "split": ctx.cfg.split.hashed()}
    local = is_scheme_id(ds.path) or Path(ds.path).expanduser().exists()
    if local:  # a hub dataset is pinned by its revision; a file by its bytes
        desc["files"] = [hash_file(f) for f in resolve_dataset(ds.path)]
    return desc


def run(ctx: Context) -> StageOutput:
    ds, sp = ctx.cfg.dataset, ctx.cfg.split
    loaded = load_dataset(ds.path, ds.revision, ds.drop_duplicate_instructions, ds.max_rows,
                          ds.max_chars)
    for note in loaded.notes:
        log.info("[split] %s", note)
    if loaded.rejects.height:
        reasons = loaded.rejects.group_by("reason").len().sort("len", descending=True)
        log.warning(
            "[split] %d row(s) quarantined in %s; top reasons: %s",
            loaded.rejects.height,
            ctx.run.path(SPLIT_REJECTS),
            "; ".join(f"{r} x{n}" for r, n in reasons.head(5).iter_rows()),
        )
    write_parquet(loaded.rejects, ctx.run.path(SPLIT_REJECTS))
    if loaded.rows.height == 0:  # e.g. a file without a 'response' column: say so, at once
        top = loaded.rejects.group_by("reason").len().sort("len", descending=True)
        why = "; ".join(f"{r} x{n}" for r, n in top.head(3).iter_rows()) or "the file is empty"
        raise ValueError(f"no valid rows in {loaded.origin} ({why}); every row is in "
                         f"{ctx.run.path(SPLIT_REJECTS)}")
    splitter = sklearn_split if sp.method == "sklearn" else split_rows
    test, parts = splitter(loaded.rows, sp.seed, sp.test_fraction, sp.num_parts, sp.stratify_by)
    write_parquet(test, ctx.run.path(TEST_PATH))
    outputs = [TEST_PATH, SPLIT_REJECTS]
    for k, part in enumerate(parts, start=1):
        write_parquet(part, ctx.run.path(part_path(k)))
        outputs.append(part_path(k))
    rows = {"valid": loaded.rows.height, "rejected": loaded.rejects.height, "test": test.height}
    rows.update({f"part-{k}": p.height for k, p in enumerate(parts, start=1)})
    sizes = "/".join(str(p.height) for p in parts)
    return StageOutput(
        outputs,
        rows,
        f"{loaded.rows.height} rows from {loaded.origin} ({loaded.rejects.height} rejected) "
        f"-> test {test.height}, parts {sizes}",
    )
