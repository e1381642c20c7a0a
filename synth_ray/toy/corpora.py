"""Real text cut into paragraphs: the corpora of the tiny pre-trained family
(`synth_ray/toy/pretrain.py`) and of the demo's prompts.

The text must not move when the machine's packages do: a corpus that changed would change
the corpus key and re-pre-train every toy model (minutes) after any `pip install`. So each
corpus is the standard library's own text (fixed by the Python version) or text shipped with
the project:

- `reference`: the Python language reference and library topics (`pydoc_data.topics`).
- `docstrings`: docstrings of the standard library's modules, classes and functions, read
  with `ast` (nothing is imported).
- `licenses`: licence texts, shipped as `sample/licenses.txt` (Debian's common licences and
  the licence files of the packages the project installs, gathered once; sample/README.md).

A paragraph becomes a Dolly-style row: its first sentence is the instruction, the rest the
response (the "human" answer). About one paragraph in ten (by a hash of its text, so the
choice never depends on file order) is held out of pre-training for the demo's prompts.
"""

from __future__ import annotations

import ast
import hashlib
import re
import sysconfig
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

MIN_CHARS, MAX_CHARS = 120, 1200
_SENTENCE_END = re.compile(r"(?<=[a-z0-9\)][.?!])\s+(?=[A-Z])")
_PROSE = re.compile(r"[A-Za-z ]")
_SYMBOLS = re.compile(r"[=(){}\[\]<>_*#|\\/@$%^~`]")


def paragraphs(text: str) -> Iterator[str]:
    """Prose paragraphs of a text: blank-line separated blocks whose lines share one indent,
    joined into one line. Code, grammar rules, tables and lists (nested indents, many
    symbols, no full stop at the end) are left out."""
    for block in re.split(r"\n\s*\n", text):
        lines = textwrap.dedent(block.expandtabs()).strip("\n").splitlines()
        if not lines or any(line.lstrip().startswith((">>>", "|", "=", "+", "$ "))
                            for line in lines):
            continue
        para = " ".join(line.strip() for line in lines)
        if not (MIN_CHARS <= len(para) <= MAX_CHARS) or not para.endswith("."):
            continue
        if (len(_PROSE.findall(para)) < 0.75 * len(para)
                or len(_SYMBOLS.findall(para)) > 0.04 * len(para)):
            continue
        yield re.sub(r"\s+", " ", para)


def split_paragraph(para: str) -> tuple[str, str] | None:
    """(first sentence, the rest), or None when the paragraph has no clean first sentence."""
    parts = _SENTENCE_END.split(para, maxsplit=1)
    if len(parts) != 2:
        return None
    first, rest = parts[0].strip(), parts[1].strip()
    if not (20 <= len(first) <= 240) or len(rest) < 60:
        return None
    return first, rest


def _reference() -> Iterator[str]:
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield topics[key]


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "lib2to3", "__phello__"}
    return sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))


def _docstrings() -> Iterator[str]:
    for path in _stdlib_files():
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef |
                          ast.AsyncFunctionDef):
                doc = ast.get_docstring(node, clean=True)
                if doc:
                    yield doc


LICENSES = Path(__file__).parent / "sample" / "licenses.txt"


def _licenses() -> Iterator[str]:
    yield LICENSES.read_text(encoding="utf-8")


CORPORA: dict[str, Callable[[], Iterator[str]]] = {
    "reference": _reference,
    "docstrings": _docstrings,
    "licenses": _licenses,
}


def _other_blocks(text: str) -> Iterator[str]:
    """Every other block of a text (code, lists, grammar, short notes), dedented: real text
    of the corpus for pre-training, never a prompt."""
    for block in re.split(r"\n\s*\n", text):
        block = textwrap.dedent(block.expandtabs()).strip()
        if 60 <= len(block) <= MAX_CHARS and "\n" in block:
            yield block


def corpus_rows(name: str, limit: int = 6000) -> list[dict[str, object]]:
    """Distinct blocks of one corpus as rows with `instruction`, `response`, `category` (the
    corpus) and `prose`, at most `limit` in reading order. A prose paragraph splits after its
    first sentence (only these can be prompts); any other block after its first line."""
    seen: set[str] = set()
    rows: list[dict[str, object]] = []
    for text in CORPORA[name]():
        prose = list(paragraphs(text))
        for para in prose:
            split = split_paragraph(para)
            if split and para not in seen:
                seen.add(para)
                rows.append({"instruction": split[0], "response": split[1], "category": name,
                             "prose": True})
        for block in _other_blocks(text):
            head, rest = block.split("\n", 1)
            flat = re.sub(r"\s+", " ", block)  # a prose paragraph is already a row
            if flat not in seen and len(head.strip()) >= 8 and len(rest.strip()) >= 40:
                seen.add(flat)
                rows.append({"instruction": head.strip(), "response": rest.strip(),
                             "category": name, "prose": False})
        if len(rows) >= limit:
            return rows[:limit]
    return rows


def rank(row: dict[str, object]) -> str:
    """A row's place in a draw that never depends on file order: a hash of its text."""
    return hashlib.sha1(f"{row['instruction']}\x00{row['response']}".encode()).hexdigest()
