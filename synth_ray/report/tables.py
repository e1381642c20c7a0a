"""What every report section shares: Markdown tables, the paper's order of conditions, and
reading a run file that may not exist yet (its stage has not run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# the paper's tables list conditions in this order; seeds and brackets follow by name
CONDITION_ORDER = ["vanilla", "single", "multi", "human", "human-reference"]


def condition_order(name: str) -> tuple[int, str]:
    """Sort key: vanilla, single-*, multi-*, human, the human reference, then anything else."""
    name_only = name.split(" ", 1)[0]  # "vanilla (small)": vanilla of a bracket's family
    head = name_only.split("-", 1)[0] if name_only != "human-reference" else name_only
    return (CONDITION_ORDER.index(head) if head in CONDITION_ORDER else 9, name)


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if v != v else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def read_json(path: Path) -> Any:
    """The file's JSON, or None where it does not exist (yet)."""
    return json.loads(path.read_text()) if path.exists() else None
