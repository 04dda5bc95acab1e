"""The package keeps the pipeline's shape: each folder imports only from the folders before it.

    base (errors, schema, console_text) < images < plan < lab < run < reports < cli

Every module's imports are read with `ast`. An upward import fails, and so
does an import inside a function (it hides an arrow instead of removing it);
a lazily imported heavy optional dependency is the one exception, and must
say why in a comment on the line before it.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "xenlab"
LAYERS = ("base", "images", "plan", "lab", "run", "reports", "cli")
BASE_MODULES = {"errors", "schema", "console_text", "__init__"}
MAX_LINES = 400


def layer_of(module: str) -> str:
    """'xenlab.plan.dtb' -> 'plan'; 'xenlab.errors' -> 'base'; 'xenlab.cli' -> 'cli'."""
    parts = module.split(".")
    assert parts[0] == "xenlab", module
    if len(parts) == 1 or parts[1] in BASE_MODULES:
        return "base"
    return parts[1]


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path):
    """(imported xenlab module, line, inside a function, comment on the line before)."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inner = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from . import x` names modules; `from .x import y` names x.
            names = [f"{prefix}.{a.name}" for a in node.names] if node.module is None else [prefix]
        else:
            continue
        before = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
        for name in names:
            yield name, node.lineno, id(node) in inner, before


def violations(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        here = module_name(path, root)
        mine = LAYERS.index(layer_of(here))
        for name, line, in_function, before in imports(path, root):
            where = f"{path.relative_to(root.parent)}:{line}"
            if in_function and not before.startswith("#"):
                found.append(f"{where}: import of {name} inside a function")
            if not name.startswith("xenlab"):
                continue
            theirs = LAYERS.index(layer_of(name))
            if theirs > mine:
                found.append(f"{where}: {here} ({LAYERS[mine]}) imports {name} ({LAYERS[theirs]})")
    return found


def test_no_upward_or_hidden_imports():
    assert violations(PACKAGE) == []


def test_reports_read_records_never_the_runner_or_the_lab():
    bad = [f"{p.name}: {name}" for p in (PACKAGE / "reports").rglob("*.py")
           for name, *_ in imports(p, PACKAGE)
           if name.startswith(("xenlab.lab", "xenlab.run.runner", "xenlab.run.plugin",
                               "xenlab.run.health"))]
    assert bad == []


def test_the_layer_test_catches_an_upward_import(tmp_path):
    """Proof that the test can fail: `from ..run import x` inside xenlab/plan/."""
    copy = tmp_path / "xenlab"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert violations(copy) == []
    doctor = copy / "plan" / "doctor.py"
    doctor.write_text(doctor.read_text() + "\nfrom ..run import record\n")
    found = violations(copy)
    assert len(found) == 1 and "xenlab.plan.doctor (plan) imports xenlab.run (run)" in found[0]


def test_the_layer_test_catches_an_import_hidden_in_a_function(tmp_path):
    copy = tmp_path / "xenlab"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    dtb = copy / "plan" / "dtb.py"
    dtb.write_text(dtb.read_text() + "\n\ndef later():\n    from ..images import cache\n")
    found = violations(copy)
    assert len(found) == 1 and "import of xenlab.images inside a function" in found[0]


def test_modules_stay_small_or_say_their_one_job():
    """Over MAX_LINES a module must be a single job, which its first docstring line names."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        n = len(path.read_text().splitlines())
        if n > MAX_LINES:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            long.append((path.relative_to(REPO).as_posix(), n, doc.splitlines()[0] if doc else ""))
    # Each entry is reviewed: a module listed here is one job, said in its first line.
    assert all(first for _, _, first in long), long
    assert [p for p, _, _ in long] == [], long


def test_the_package_imports_without_cycles():
    """Every module imports on its own, in a fresh interpreter (a cycle would fail one)."""
    modules = sorted(module_name(p, PACKAGE) for p in PACKAGE.rglob("*.py"))
    code = "import importlib, sys\nimportlib.import_module(sys.argv[1])\n"
    procs = {m: subprocess.Popen([sys.executable, "-c", code, m], cwd=REPO, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for m in modules}
    failed = {m: p.communicate()[0][-2000:] for m, p in procs.items() if p.wait() != 0}
    assert failed == {}


@pytest.mark.parametrize("module,layer", [("xenlab.errors", "base"), ("xenlab.images.cache", "images"),
                                          ("xenlab.lab.strategy", "lab"), ("xenlab.cli", "cli")])
def test_layer_names(module, layer):
    assert layer_of(module) == layer
