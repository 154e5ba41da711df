"""Data flows forward: no module imports a later stage.

Order: shared -> corpus -> tokenizer -> pretrain -> posttrain -> tool_use -> synthetic -> evals -> reports -> serving
-> app.
Every import in every module (module level or inside a function: a lazy import is still a dependency) is parsed with
``ast``; an import of a module in a later layer fails the test with the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline_assets", "resources")
LAYERS = ("shared", "corpus", "tokenizer", "pretrain", "posttrain", "tool_use", "synthetic", "evals", "reports",
          "serving", "app")
# Modules that wire the stages together (Definitions, automation, the CLI and chat): nothing imports them.
APP_MODULES = {"definitions", "automation", "cli", "daemon", "chat"}
# Resources of one stage belong to its layer; the rest (storage, settings, the launcher with its engines) are shared.
RESOURCE_LAYERS = {"resources.sources": "corpus"}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "resources":
        return RESOURCE_LAYERS.get(".".join(parts[:2]), "shared")
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    if len(parts) > 1 and parts[1] in APP_MODULES:
        return "app"
    return "shared"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] in PACKAGES]


def backward_imports() -> list[str]:
    problems = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            here = layer_of(module_name(path))
            for line, name in imports_of(path):
                there = layer_of(name)
                if LAYERS.index(there) > LAYERS.index(here):
                    problems.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {name} ({there})")
    return problems


def test_no_module_imports_a_later_stage():
    problems = backward_imports()
    assert not problems, "imports against the data flow:\n" + "\n".join(problems)


def test_layer_of_names_the_stage_folders():
    assert layer_of("pipeline_assets.tasks.arithmetic") == "shared"
    assert layer_of("pipeline_assets.posttrain.sft") == "posttrain"
    assert layer_of("pipeline_assets.cli") == "app"
    assert layer_of("resources.storage") == "shared"


def test_the_checker_sees_a_backward_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from pipeline_assets.evals.benchmarks import is_refusal\n")
    assert imports_of(bad) == [(2, "pipeline_assets.evals.benchmarks")]


def test_definitions_load_without_the_ml_libraries():
    """Every Dagster run process, the forkserver of each run's steps, the code server and ``dg check defs`` import
    the definitions: the stages' libraries are imported by the steps that use them (8.7 s -> 1.6 s per process)."""
    import subprocess
    import sys

    heavy = ("torch", "transformers", "trl", "peft", "spacy", "matplotlib", "fasttext")
    code = ("import sys, pipeline_assets.definitions; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
