"""The package's shape: imports only go down the layers, modules and functions stay small, the
command line parses without torch, ruff is clean, and the service tests skip without their extra."""

from __future__ import annotations

import ast
import fnmatch
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "winclip"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80

MAX_ROOT_MODULES = 12  # the facade, __main__, the model and a few shared leaf utilities

# Lowest first. A module may import modules of its own layer or of a lower one, never of a higher
# one; inside a layer, the import graph has no cycle (test below). A new package must be placed here.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("options", "images", "files", "spreadsheet", "progress", "metrics", "metrics.*"),
    ("method", "method.*"),
    ("backbones", "backbones.*"),
    ("predictions", "model"),
    ("inspection", "inspection.*"),
    ("paper", "paper.*"),
    ("distributed", "distributed.*"),
    ("service", "service.*"),
    ("line", "line.*"),  # the production line: a watched folder, the station's record, MQTT and webhooks
    ("cli", "cli.*", "__main__"),
)
# What the method's equations may import besides the package: no open_clip, no image files, no disk.
METHOD_IMPORTS = {"__future__", "collections", "dataclasses", "functools", "math", "typing", "torch"}


def modules() -> dict[str, Path]:
    """Dotted name (relative to winclip) → file, for every module but the package facade."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            found[".".join(parts)] = path
    return found


def layer(name: str) -> int:
    for i, patterns in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return i
    raise AssertionError(f"winclip.{name} is in no layer: add it to LAYERS in tests/test_layout.py")


def imported(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, winclip-relative module) of every winclip import in a module, wherever it stands."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            if node.module is None:  # from . import x: x may be a module
                out += [(node.lineno, ".".join([*base, a.name])) for a in node.names if a.name != "__version__"]
            elif target:
                out.append((node.lineno, target))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            out += [(node.lineno, n[len("winclip.") :]) for n in names if n and n.startswith("winclip.")]
    return out


def test_every_import_goes_down_the_layers():
    mods = modules()
    assert len(mods) > 30
    upward = []
    for name, path in mods.items():
        for line, target in imported(name, path):
            if target in mods and layer(target) > layer(name):
                upward.append(f"{path.relative_to(ROOT)}:{line}: winclip.{name} imports winclip.{target}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def import_graph() -> dict[str, set[str]]:
    """winclip module → the winclip modules it imports (at the top, inside functions or for type checking)."""
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = set()
        for _, target in imported(name, path):
            while target and target not in mods:  # `from .pkg import name`: the package
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert sum(len(t) for t in graph.values()) > 100  # the graph was really built
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the finder finds one
    assert cycles(graph) == []


def test_the_package_root_holds_the_facade_and_a_few_leaf_utilities():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert "__init__.py" in root and "model.py" in root
    assert len(root) <= MAX_ROOT_MODULES, root


def test_the_method_imports_only_torch_and_the_standard_library():
    mods = modules()
    method = {n: p for n, p in mods.items() if n == "method" or n.startswith("method.")}
    assert len(method) >= 7
    outside = []
    for name, path in method.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                tops = [node.module.split(".")[0]]
            else:
                continue
            outside += [f"winclip.{name}: {top}" for top in tops if top not in METHOD_IMPORTS]
    assert outside == []


def test_nothing_outside_the_command_line_imports_it():
    mods = modules()
    offenders = [
        f"winclip.{name}"
        for name, path in mods.items()
        if layer(name) < layer("cli") and any(t == "cli" or t.startswith("cli.") for _, t in imported(name, path))
    ]
    assert offenders == []


def test_modules_and_functions_stay_small():
    too_long = []
    for name, path in modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"winclip.{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"winclip.{name}.{node.name}: {length} lines")
    assert not too_long, (
        f"over {MAX_MODULE_LINES} lines per module or {MAX_FUNCTION_LINES} per function:\n" + "\n".join(too_long)
    )


def test_the_command_line_parses_without_torch():
    code = (
        "import sys; from winclip.cli import build_parser; build_parser(); "
        "print(sorted({'torch', 'open_clip'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    help_text = subprocess.run([sys.executable, "-m", "winclip", "--help"], capture_output=True, text=True, check=True)
    assert "predict" in help_text.stdout and "eval" in help_text.stdout


@pytest.mark.slow
def test_read_only_commands_and_every_help_answer_without_torch(tmp_path):
    from helpers import without_torch
    from winclip.cli import SUBCOMMANDS, main

    tiny = str(ROOT / "tests" / "tiny-vit.json")
    assert main(["profile", "create", "--object", "bracket", "--out", str(tmp_path / "p"), "--backbone", tiny,
                 "--pretrained", "none", "--device", "cpu"]) == 0  # fmt: skip
    shown = without_torch("profile", "show", str(tmp_path / "p"))
    assert "object: 'bracket'" in shown and "model: tiny-vit" in shown and "digest sha256:" in shown
    where = without_torch("weights", "where", "--backbone", "ViT-B-16-plus-240", "--pretrained", "none")
    assert "random weights" in where
    missing = without_torch("weights", "where", "--cache-dir", str(tmp_path), status=1)  # the default weights
    assert "NOT on this machine" in missing and "open_clip_model.safetensors" in missing
    assert "usage: winclip" in without_torch("--help")
    for name in SUBCOMMANDS:
        assert f"usage: winclip {name}" in without_torch(name, "--help")


@pytest.mark.skipif(
    shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(), reason="ruff is not installed"
)
def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_service_tests_skip_cleanly_without_the_serve_extra(tmp_path):
    blocker = tmp_path / "fastapi"
    blocker.mkdir()
    (blocker / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'fastapi' (blocked)\", name='fastapi')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    service_tests = sorted(str(p) for p in (ROOT / "tests" / "service").glob("test_*.py"))
    assert len(service_tests) >= 4
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-rs", *service_tests],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-3000:]
    assert "error" not in summary and "failed" not in summary and "skipped" in summary, summary
    assert "the service tests need the 'serve' extra" in result.stdout
