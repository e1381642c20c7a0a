"""The package's layout rules (shared/guide/LAYOUT.md, docs/architecture.md), read from the
source with `ast`: every import, including those inside functions and under TYPE_CHECKING, is
an arrow.

- no import circle anywhere in the package (a folder's own modules included);
- config/ imports nothing of synth_ray but config/ and the name modules (models.py,
  prompts.py): a config loads and is checked alone, before anything starts;
- the foundation (config/, runtime/, observe/) imports no folder above it (stages/, engines/,
  train/, metrics/, report/, toy/, ...), only itself, data/ and the name modules;
- a stage is thin: it reads its inputs, calls components and writes its outputs, at most
  STAGE_LINES lines, and imports no other stage (stages share names through design.py, data
  through files);
- no function over FUNCTION_LINES lines, no module over MODULE_LINES lines, no junk drawer;
- metrics/ imports no Ray, no vLLM and nothing else of synth_ray (pure maths);
- only toy/, models.py's registry, cli.py and rehearse.py (whose stand-ins are the embedded
  models and samples) know the toy package, and no other module branches on a `tiny://`
  id (config defaults may name the embedded data, nothing more);
- the stage table, the stage modules, the CLI's verbs and design.py's run-dir folders agree.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "synth_ray"
STAGE_LINES = 150  # split.py, the model of a thin stage, is 66
FUNCTION_LINES = 80
MODULE_LINES = 400
FOUNDATION = ("config", "runtime", "observe")
# what the foundation may import besides itself: the inputs' loaders and the name modules
# (design.py: run-dir names from the config; models.py: the scheme registry; prompts.py)
FOUNDATION_MAY = ("data",)
NAME_MODULES = {"synth_ray.design", "synth_ray.models", "synth_ray.prompts"}
CONFIG_MAY = {"synth_ray.models", "synth_ray.prompts"}
# `synth-ray rehearse` swaps a config's models and absent inputs for the embedded ones
ALLOWED_TOY_NAMERS = {"synth_ray.cli", "synth_ray.models", "synth_ray.rehearse"}
# the config's defaults name the embedded data as plain strings (judge.safety_prompts, ...)
# the config sections name the embedded models and data as defaults (the demo runs on them)
ALLOWED_TINY_STRINGS = {"synth_ray.cli", "synth_ray.models", "synth_ray.config.sections",
                        "synth_ray.config.model_sections", "synth_ray.rehearse"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_package(root: Path) -> dict[str, tuple[ast.Module, bool]]:
    return {module_name(f, root): (ast.parse(f.read_text(), str(f)), f.name == "__init__.py")
            for f in sorted(root.rglob("*.py"))}


def imports_of(module: str, tree: ast.Module, is_package: bool,
               known: set[str]) -> set[str]:
    """Every module `module` imports, anywhere in its body; `from pkg import name` counts as
    `pkg.name` where that is a module."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in known)
    return out


def graph(root: Path) -> dict[str, set[str]]:
    package = read_package(root)
    known = set(package)
    return {m: imports_of(m, tree, is_pkg, known) for m, (tree, is_pkg) in package.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan) of more than one module of the
    synth_ray-internal graph: each is an import circle."""
    inner = {m: {d for d in ds if d in edges and d != m} for m, ds in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in inner[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(inner):
        if v not in index:
            visit(v)
    return found


def in_folder(module: str, name: str) -> bool:
    prefix = f"synth_ray.{name}"
    return module == prefix or module.startswith(prefix + ".")


def top(module: str) -> str:
    """synth_ray.config.load -> config; synth_ray.design -> design."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def import_problems(m: str, d: str) -> list[str]:
    out = []
    if not d.startswith("synth_ray.") or d == m:
        return out
    if top(m) == "config" and top(d) != "config" and d not in CONFIG_MAY:
        out.append(f"{m} (config) imports {d}")
    elif (top(m) in FOUNDATION and top(d) not in (*FOUNDATION, *FOUNDATION_MAY)
          and d not in NAME_MODULES):
        out.append(f"{m} (foundation) imports {d}")
    if in_folder(m, "stages") and in_folder(d, "stages") and d != "synth_ray.stages":
        out.append(f"stage {m} imports stage {d}")
    if in_folder(m, "metrics") and not in_folder(d, "metrics"):
        out.append(f"{m} (metrics, pure maths) imports {d}")
    if in_folder(d, "toy") and not in_folder(m, "toy") and m not in ALLOWED_TOY_NAMERS:
        out.append(f"{m} imports the toy package ({d})")
    return out


def size_problems(m: str, tree: ast.Module, lines: int) -> list[str]:
    out = []
    if lines > MODULE_LINES:
        out.append(f"{m}: {lines} lines, over {MODULE_LINES}")
    if in_folder(m, "stages") and lines > STAGE_LINES:
        out.append(f"stage {m}: {lines} lines, over {STAGE_LINES} (not thin: move the logic "
                   "into a component)")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > FUNCTION_LINES:
                out.append(f"{m}.{node.name} (line {node.lineno}): {length} lines, over "
                           f"{FUNCTION_LINES}")
    return out


def rule_violations(root: Path) -> list[str]:
    """Every broken layout rule of the package under `root`, one line each."""
    edges = graph(root)
    package = read_package(root)
    problems = [f"import circle: {' -> '.join(c)}" for c in circles(edges)]
    for m, deps in sorted(edges.items()):
        for d in sorted(deps):
            problems += import_problems(m, d)
            if in_folder(m, "metrics") and d.split(".")[0] in ("ray", "vllm"):
                problems.append(f"{m} (metrics, pure maths) imports {d}")
    for m, (tree, _) in sorted(package.items()):
        path = root.parent.joinpath(*m.split("."))
        source = (path / "__init__.py" if path.is_dir() else path.with_suffix(".py"))
        problems += size_problems(m, tree, len(source.read_text().splitlines()))
        if in_folder(m, "toy") or m in ALLOWED_TINY_STRINGS:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and "tiny://" in node.value and not _is_docstring(tree, node)):
                problems.append(f"{m} line {node.lineno} names a tiny:// id: "
                                f"{node.value[:40]!r} (resolve ids through synth_ray.models)")
    return problems


def _is_docstring(tree: ast.Module, node: ast.Constant) -> bool:
    for owner in ast.walk(tree):
        if isinstance(owner, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = owner.body
            if (body and isinstance(body[0], ast.Expr)
                    and body[0].value is node):
                return True
    return False


def test_the_package_keeps_its_layout_rules() -> None:
    assert rule_violations(PACKAGE) == []


# Each rule, broken on purpose in a copy of the package: the check must see it.
LONG_BODY = "".join(f"    x{i} = {i}\n" for i in range(FUNCTION_LINES))
MANY_LINES = "".join(f"X{i} = {i}\n" for i in range(STAGE_LINES))
BREAKS = {
    "circle-across": ("synth_ray/design.py",
                      "def f():\n    from synth_ray.stages.split import run\n",
                      "import circle"),
    "circle-within": ("synth_ray/config/errors.py",
                      "def f():\n    from synth_ray.config.load import load_config\n",
                      "import circle"),
    "config-alone": ("synth_ray/config/sections.py",
                     "def f():\n    from synth_ray.runtime import rundir\n",
                     "(config) imports synth_ray.runtime.rundir"),
    "foundation": ("synth_ray/runtime/cluster.py",
                   "def f():\n    from synth_ray.engines import store\n",
                   "(foundation) imports synth_ray.engines.store"),
    "stage": ("synth_ray/stages/split.py",
              "def f():\n    from synth_ray.stages.respond import run\n",
              "stage synth_ray.stages.split imports stage synth_ray.stages.respond"),
    "stage-thin": ("synth_ray/stages/split.py", MANY_LINES,
                   "stage synth_ray.stages.split: "),
    "function": ("synth_ray/design.py", "def f():\n" + LONG_BODY, "synth_ray.design.f (line"),
    "module": ("synth_ray/design.py", MANY_LINES * 3, "synth_ray.design: "),
    "metrics-ray": ("synth_ray/metrics/stats.py", "def f():\n    import ray\n",
                    "(metrics, pure maths) imports ray"),
    "metrics-synth": ("synth_ray/metrics/spb.py", "from synth_ray.prompts import LABELS\n",
                      "(metrics, pure maths) imports synth_ray.prompts"),
    "toy-import": ("synth_ray/engines/answering.py",
                   "from synth_ray.toy import tiny\n", "imports the toy package"),
    "tiny-string": ("synth_ray/stages/split.py",
                    "def f(m):\n    return m.startswith('tiny://')\n", "names a tiny:// id"),
}


@pytest.mark.parametrize("rule", sorted(BREAKS))
def test_each_rule_fails_when_broken(rule: str, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "synth_ray"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "sample"))
    path, code, expected = BREAKS[rule]
    target = tmp_path / path
    target.write_text(target.read_text() + "\n\n" + code)
    problems = rule_violations(copy)
    assert any(expected in p for p in problems), problems


def test_stage_table_modules_verbs_and_folders_agree() -> None:
    import importlib

    from typer.testing import CliRunner

    from synth_ray.cli import app
    from synth_ray.design import STAGE_FOLDERS
    from synth_ray.runtime.pipeline import stage_names, stage_table

    modules = sorted(p.stem for p in (PACKAGE / "stages").glob("*.py") if p.stem != "__init__")
    assert sorted(stage_names()) == modules
    for stage in stage_table():
        impl = importlib.import_module(stage.module)
        assert callable(impl.inputs) and callable(impl.run), stage.name
    assert list(STAGE_FOLDERS) == stage_names()
    owned = [f for fs in STAGE_FOLDERS.values() for f in fs]
    assert len(owned) == len(set(owned)), "two stages share a run-dir folder"
    help_text = CliRunner().invoke(app, ["--help"], terminal_width=200).output
    where = [help_text.find(f" {n} ") for n in stage_names()]
    assert all(w >= 0 for w in where) and where == sorted(where), help_text


def test_no_module_is_a_junk_drawer() -> None:
    for f in PACKAGE.rglob("*.py"):
        assert f.stem not in ("utils", "helpers", "misc", "common"), f
