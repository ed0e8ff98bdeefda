"""Imports go one way: ``pipeline`` <- ``tables`` <- ``agents``, never upward, and inside
``pipeline`` the stages keep to their lanes (docs/architecture.md, "Layout"): the ingress
never imports the apply path or the dashboard, the apply path never imports the ingress,
and no production module imports the ``testbed`` (simulator, test and benchmark helpers).

Every module is parsed with ``ast`` rather than imported, so the walk sees every import:
module level, inside functions, under ``if TYPE_CHECKING``, and relative ones (resolved
against the module's package). ``importlib.import_module("...")`` calls with a literal name
count too. The two entry points that may wire everything (``agents/main.py``,
``agents/worker.py``) live in the top layer already, so no exemption is needed; the test
still checks that no other layer imports them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {"pipeline": 0, "tables": 1, "agents": 2}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in the file, at any depth."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return imports_in(path.read_text(encoding="utf-8"), package)


def imports_in(source: str, package: str) -> list[tuple[int, str]]:
    """Imports in ``source``, a module of ``package`` (for resolving relative imports)."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # ``from pipeline import x`` may name a submodule; the layer is the same.
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant | ast.JoinedStr)
        ):
            first = node.args[0]
            literal = (
                first.value
                if isinstance(first, ast.Constant)
                else "".join(
                    str(v.value) for v in first.values if isinstance(v, ast.Constant)
                )  # the literal parts of an f-string name its package
            )
            if isinstance(literal, str):
                found.append((node.lineno, literal))
    return found


def modules() -> list[Path]:
    return sorted(p for layer in LAYERS for p in (ROOT / layer).rglob("*.py"))


# The stages inside ``pipeline``: a module's stage is its sub-package; the modules directly
# in ``pipeline/`` and the providers are the core every stage builds on.
STAGES = {"ingress", "apply", "dashboard", "ops", "backfill", "cli"}
MAY_IMPORT = {
    "core": {"core"},
    "ingress": {"core", "ingress"},
    "dashboard": {"core", "dashboard"},
    "apply": {"core", "dashboard", "apply"},  # the apply transaction adds the counters
    "backfill": {"core", "backfill"},
    "ops": {"core", "dashboard", "apply", "ops"},
    "cli": {"core", "ingress", "dashboard", "apply", "ops", "backfill", "cli"},
}


def stage(module: str) -> str | None:
    """The stage of a ``pipeline`` module (None outside ``pipeline``)."""
    parts = module.split(".")
    if parts[0] != "pipeline":
        return None
    if len(parts) > 1 and parts[1] in STAGES:
        return parts[1]
    return "core"


def test_stages_import_only_what_they_may() -> None:
    violations = []
    for path in modules():
        mine = stage(module_name(path))
        if mine is None:
            continue
        for line, target in imported_names(path):
            theirs = stage(target)
            if target == "pipeline" or theirs is None:
                continue
            if theirs not in MAY_IMPORT[mine]:
                violations.append(f"{path.relative_to(ROOT)}:{line} ({mine}) imports {target}")
    assert not violations, "stage rules broken:\n" + "\n".join(violations)


def test_the_stages_exist() -> None:
    found = {stage(module_name(p)) for p in modules()} - {None}
    assert {"core", "ingress", "apply", "dashboard", "ops", "cli"} <= found


def test_production_never_imports_the_testbed() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in modules()
        for line, target in imported_names(path)
        if target.split(".")[0] == "testbed"
    ]
    assert not offenders, offenders


def test_benchmarks_and_testbed_import_no_test_module() -> None:
    files = sorted((ROOT / "bench").rglob("*.py")) + sorted((ROOT / "testbed").rglob("*.py"))
    assert files
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in files
        for line, target in imports_in(path.read_text(encoding="utf-8"), "bench")
        if target.split(".")[0] == "tests"
    ]
    assert not offenders, offenders


def test_the_walk_sees_every_layer() -> None:
    found = {module_name(p).split(".")[0] for p in modules()}
    assert found == set(LAYERS)
    assert len(modules()) > 20


def test_no_upward_import() -> None:
    violations = []
    for path in modules():
        layer = LAYERS[module_name(path).split(".")[0]]
        for line, target in imported_names(path):
            top = target.split(".")[0]
            if top in LAYERS and LAYERS[top] > layer:
                violations.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not violations, "upward imports:\n" + "\n".join(violations)


def test_only_the_entry_point_imports_the_worker() -> None:
    """``agents.worker`` builds the whole Faust app; only ``agents.main`` may import it, and
    nobody imports ``agents.main`` (the console script calls it). The counter-example to avoid
    is a helper that imports the app just to read config."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in modules()
        for line, target in imported_names(path)
        if target == "agents.main"
        or (target == "agents.worker" and module_name(path) != "agents.main")
    ]
    assert not offenders, offenders


# The walker itself must catch what it claims to catch.
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import agents.worker", "agents.worker"),
        ("from tables import dashboard", "tables"),
        ("def f():\n    from agents.api import x\n", "agents.api"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tables.x\n", "tables.x"),
        ("from ...agents import api", "agents"),
        ("import importlib\nimportlib.import_module('agents.worker')", "agents.worker"),
        ("import importlib\nimportlib.import_module(f'agents.{n}')", "agents."),
    ],
)
def test_walker_finds(source: str, expected: str) -> None:
    # As if the source were a module of pipeline.cli, so "..." climbs to the root.
    assert expected in [target for _, target in imports_in(source, "pipeline.cli")]


def test_walker_resolves_relative_imports() -> None:
    assert imports_in("from .admin import migrate", "pipeline.cli") == [(1, "pipeline.cli.admin")]
    assert imports_in("from .. import errors", "pipeline.cli") == [(1, "pipeline")]


def test_walker_sees_the_known_entry_point_wiring() -> None:
    """A walk that found nothing would pass everything: it must see what is really there."""
    wired = {target for _, target in imported_names(ROOT / "agents" / "main.py")}
    assert "agents.worker" in wired  # a function-level import
    assert "pipeline.cli" in wired
