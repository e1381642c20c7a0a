"""Regenerate synth_ray/toy/sample/dolly_sample.jsonl from text every CPython carries.

The rows follow Dolly-15k's schema and categories. Their human text (contexts and responses)
is the Python reference manual (`pydoc_data.topics`) and standard-library docstrings, written
by the CPython authors under the PSF licence; the instructions are ours. Deterministic: the
same Python version gives the same file. Run: `python scripts/make_sample.py`.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pydoc_data.topics as topics
import random
import re
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "synth_ray" / "toy" / "sample"
OUT = SAMPLE / "dolly_sample.jsonl"
ARTICLES = SAMPLE / "articles.jsonl"
N_ARTICLES = 12
MODULES = [
    "abc", "argparse", "array", "base64", "bisect", "calendar", "collections", "colorsys",
    "contextlib", "copy", "csv", "datetime", "decimal", "difflib", "enum", "fnmatch",
    "fractions", "functools", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "json",
    "itertools", "keyword", "linecache", "locale", "logging", "math", "mimetypes", "operator",
    "os", "pathlib", "pickle", "pprint", "queue", "random", "re", "secrets", "shlex", "shutil",
    "statistics", "string", "struct", "subprocess", "tempfile", "textwrap", "threading",
    "time", "timeit", "tokenize", "traceback", "typing", "unicodedata", "uuid", "warnings",
    "weakref", "zipfile", "zlib",
]  # fmt: skip


def paragraphs(text: str) -> list[str]:
    """Prose paragraphs: no code blocks, no headings, no grammar rules."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip().splitlines()
        if not lines or lines[0].startswith((" ", "*", ">>>")) or "::=" in block:
            continue
        if set(lines[-1].strip()) <= set("*=-"):
            continue
        para = " ".join(line.strip() for line in lines)
        if len(para.split()) >= 12 and not para.startswith(("Note:", "See also", "Changed in")):
            out.append(para)
    return out


def first_sentences(text: str, n: int = 1) -> str:
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z\"(])", text)
    return " ".join(parts[:n]).strip()


def topic_title(key: str, text: str) -> str:
    return text.strip().splitlines()[0].strip().replace('"', "")


def doc_first_paragraph(obj) -> str | None:
    doc = inspect.getdoc(obj)
    if not doc:
        return None
    para = paragraphs(doc)
    return para[0] if para else None


def public_callables(mod) -> list[tuple[str, object]]:
    names = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
    out = []
    for n in sorted(set(names)):
        obj = getattr(mod, n, None)
        if (inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.isclass(obj)) and (
            getattr(obj, "__module__", "") or ""
        ).split(".")[0] in (mod.__name__, "_" + mod.__name__):
            out.append((n, obj))
    return out


def rows() -> list[dict[str, str]]:
    rng = random.Random(42)
    out: list[dict[str, str]] = []
    for key in sorted(topics.topics):
        text = topics.topics[key]
        title = topic_title(key, text)
        paras = paragraphs(text)
        if len(paras) >= 3:
            ctx = "\n\n".join(paras[:3])
            out.append({
                "instruction": f"Summarize this passage from the Python reference manual on "
                f"{title}.",
                "context": ctx,
                "response": first_sentences(paras[0], 2) + " " + first_sentences(paras[1]),
                "category": "summarization",
            })
        if len(paras) >= 2:
            out.append({
                "instruction": f"Based on the passage, what does the manual say about {title}?",
                "context": paras[1],
                "response": first_sentences(paras[1], 2),
                "category": "closed_qa",
            })
        if paras:
            out.append({
                "instruction": f"Explain {title} in Python to someone who is new to the language.",
                "context": "",
                "response": paras[0],
                "category": "general_qa",
            })
    for name in MODULES:
        mod = importlib.import_module(name)
        about = doc_first_paragraph(mod)
        members = public_callables(mod)
        if about:
            out.append({
                "instruction": f"What is the Python module {name} used for?",
                "context": "",
                "response": about,
                "category": "open_qa",
            })
        funcs = [n for n, o in members if not inspect.isclass(o)]
        if len(funcs) >= 3:
            pick = sorted(rng.sample(funcs, min(6, len(funcs))))
            out.append({
                "instruction": f"Name some functions that Python's {name} module provides.",
                "context": "",
                "response": "\n".join(f"- {name}.{f}" for f in pick),
                "category": "brainstorming",
            })
        for member, obj in members[:6]:
            doc = doc_first_paragraph(obj)
            if not doc:
                continue
            kind = "a class" if inspect.isclass(obj) else "a function"
            out.append({
                "instruction": f"In Python's {name} module, is {member} a class or a function?",
                "context": "",
                "response": f"{name}.{member} is {kind}. {first_sentences(doc)}",
                "category": "classification",
            })
            out.append({
                "instruction": f"From the documentation below, extract what {name}.{member} "
                "returns or does, in one sentence.",
                "context": doc,
                "response": first_sentences(doc),
                "category": "information_extraction",
            })
            break
        if about and len(about.split()) > 25:
            out.append({
                "instruction": f"Write a short, friendly note that introduces the {name} module "
                "to a colleague.",
                "context": "",
                "response": f"Have you met {name}? {about}",
                "category": "creative_writing",
            })
    return out


def articles() -> list[dict[str, str]]:
    """CNN/DailyMail-shaped rows (id, article, highlights) for the self-preference study:
    the article is a reference-manual section of at least four prose paragraphs (trimmed to
    about 1,200 characters); its "highlights", the human summary, are the first sentences of
    its first three paragraphs, as CNN/DailyMail's are the story's lead points."""
    out = []
    for key in sorted(topics.topics):
        paras = paragraphs(topics.topics[key])
        if len(paras) < 4:
            continue
        body = []
        for p in paras:
            if sum(len(b) for b in body) + len(p) > 1200 and len(body) >= 3:
                break
            body.append(p)
        highlights = " ".join(first_sentences(p) for p in paras[:3])
        out.append({"id": f"article-{key}", "article": "\n\n".join(body),
                    "highlights": highlights})
    step = max(1, len(out) // N_ARTICLES)
    return out[::step][:N_ARTICLES]


def main() -> None:
    arts = articles()
    with open(ARTICLES, "w", encoding="utf-8") as f:
        for r in arts:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(arts)} articles to {ARTICLES}")
    data = rows()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        for r in data:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    cats: dict[str, int] = {}
    for r in data:
        cats[r["category"]] = cats.get(r["category"], 0) + 1
    print(f"wrote {len(data)} rows to {OUT} (Python {sys.version.split()[0]}): {cats}")


if __name__ == "__main__":
    main()
