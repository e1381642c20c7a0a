"""The report as one self-contained HTML page, rendered from a Jinja2 template
(`report/templates/index.html.j2`): the tables and text of `tables.md` (which stays, for
diffing), every plot embedded as a PNG data URI (the page can be mailed or opened from a
bucket without its folder), and tables sortable by a click on a column header.

`tables.md` is the one source of the content; this module only parses its headings,
paragraphs, lists and pipe tables into blocks for the template, which escapes every text
(then renders its `**bold**` and `code` spans).
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

TEMPLATE = "index.html.j2"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def blocks(md: str) -> list[dict[str, Any]]:
    """Headings, paragraphs and tables of the report's Markdown, in order."""
    out: list[dict[str, Any]] = []
    table: list[str] = []

    def flush() -> None:
        if table:
            head, *rest = table
            out.append({"kind": "table", "head": _cells(head),
                        "rows": [_cells(r) for r in rest if not r.startswith("|---")]})
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("- "):  # a Markdown list: one list for consecutive items
            if not out or out[-1]["kind"] != "list":
                out.append({"kind": "list", "items": []})
            out[-1]["items"].append(line[2:])
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append({"kind": "heading", "level": min(level, 6), "text": line.lstrip("# ")})
        elif line.strip():
            out.append({"kind": "text", "text": line})
    flush()
    return out


def inline(text: str):
    """A line's Markdown emphasis and code as HTML, everything else escaped."""
    from markupsafe import Markup, escape

    html = str(escape(text))
    html = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html)
    html = re.sub(r"`([^`]+)`", r"<code>\1</code>", html)
    return Markup(html)


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render(md: str, images: list[str], plots: Path, title: str) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("synth_ray", "report/templates"),
                      autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined,
                      keep_trailing_newline=True)
    env.filters["inline"] = inline
    figures = [{"name": name, "src": png_data_uri(plots / name)} for name in images]
    return env.get_template(TEMPLATE).render(title=title, blocks=blocks(md), figures=figures)
