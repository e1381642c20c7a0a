"""The package's layout rules (shared/guide/LAYOUT.md), read from the source with `ast`:
every import, including those inside functions and under TYPE_CHECKING, is an arrow.

- no import loop between modules of different folders;
- core/ imports nothing from stages/, engines/, train/, metrics/, report/ or toy/;
- a stage imports no other stage (stages share names through design.py, data through files);
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
# `synth-ray rehearse` swaps a config's models and absent inputs for the embedded ones
ALLOWED_TOY_NAMERS = {"synth_ray.cli", "synth_ray.models", "synth_ray.rehearse"}
# the config's defaults name the embedded data as plain strings (judge.safety_prompts, ...)
# the config sections name the embedded models and data as defaults (the demo runs on them)
ALLOWED_TINY_STRINGS = {"synth_ray.cli", "synth_ray.models", "synth_ray.core.sections",
                        "synth_ray.core.model_sections", "synth_ray.rehearse"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def folder(module: str) -> str:
    """synth_ray.core.config -> synth_ray.core; synth_ray.design -> synth_ray."""
    return module.rsplit(".", 1)[0]


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


def loops_across_folders(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan) of the synth_ray-internal graph that span more
    than one folder."""
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
            if len({folder(m) for m in comp}) > 1:
                found.append(sorted(comp))

    for v in sorted(inner):
        if v not in index:
            visit(v)
    return found


def in_folder(module: str, name: str) -> bool:
    prefix = f"synth_ray.{name}"
    return module == prefix or module.startswith(prefix + ".")


def rule_violations(root: Path) -> list[str]:
    """Every broken layout rule of the package under `root`, one line each."""
    edges = graph(root)
    package = read_package(root)
    problems = [f"import loop across folders: {' -> '.join(c)}"
                for c in loops_across_folders(edges)]
    for m, deps in sorted(edges.items()):
        for d in sorted(deps):
            if in_folder(m, "core") and any(in_folder(d, f) for f in
                                            ("stages", "engines", "train", "metrics",
                                             "report", "toy")):
                problems.append(f"{m} (core) imports {d}")
            if (in_folder(m, "stages") and in_folder(d, "stages") and d != m
                    and d != "synth_ray.stages"):
                problems.append(f"stage {m} imports stage {d}")
            if in_folder(m, "metrics") and (
                    d.split(".")[0] in ("ray", "vllm")
                    or (d.startswith("synth_ray") and not in_folder(d, "metrics"))):
                problems.append(f"{m} (metrics, pure maths) imports {d}")
            if (in_folder(d, "toy") and not in_folder(m, "toy")
                    and m not in ALLOWED_TOY_NAMERS):
                problems.append(f"{m} imports the toy package ({d})")
    for m, (tree, _) in sorted(package.items()):
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
BREAKS = {
    "loop": ("synth_ray/core/rundir.py", "from synth_ray.design import VANILLA\n",
             "import loop across folders"),
    "core": ("synth_ray/core/cluster.py", "def f():\n    from synth_ray.engines import store\n",
             "(core) imports synth_ray.engines.store"),
    "stage": ("synth_ray/stages/score.py",
              "def f():\n    from synth_ray.stages.respond import run\n",
              "stage synth_ray.stages.score imports stage synth_ray.stages.respond"),
    "metrics-ray": ("synth_ray/metrics/stats.py", "def f():\n    import ray\n",
                    "(metrics, pure maths) imports ray"),
    "metrics-synth": ("synth_ray/metrics/spb.py", "from synth_ray.prompts import LABELS\n",
                      "(metrics, pure maths) imports synth_ray.prompts"),
    "toy-import": ("synth_ray/engines/answering.py",
                   "from synth_ray.toy import tiny\n", "imports the toy package"),
    "tiny-string": ("synth_ray/stages/generate.py",
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
    from synth_ray.core.pipeline import stage_names, stage_table
    from synth_ray.design import STAGE_FOLDERS

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


def test_no_module_is_long_or_a_junk_drawer() -> None:
    for f in PACKAGE.rglob("*.py"):
        assert f.stem not in ("utils", "helpers", "misc", "common"), f
        lines = len(f.read_text().splitlines())
        assert lines <= 400, f"{f.relative_to(PACKAGE.parent)}: {lines} lines"
