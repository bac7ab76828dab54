"""The direction of imports in DESIGN.md holds: no package imports one it may not.

    appliance  ->  inference, perception, bridge, store
    bridge     ->  store
    inference  ->  store
    perception ->  (nothing of ours)
    store      ->  (nothing of ours)

Every import counts: at module level, inside functions, and under `if TYPE_CHECKING:` (a
type-only import still ties the packages together), and `importlib.import_module("...")`
with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ALLOWED: dict[str, frozenset[str]] = {
    "appliance": frozenset({"inference", "perception", "bridge", "store"}),
    "bridge": frozenset({"store"}),
    "inference": frozenset({"store"}),
    "perception": frozenset(),
    "store": frozenset(),
}
OURS = frozenset(ALLOWED)

# Known edges that run against the arrows, each named with the change that removes it. Only
# these exact (file, module) pairs are let through; test_known_violation_is_gone is an xfail
# for each, and XPASSes once the edge is gone: then delete the entry.
KNOWN: frozenset[tuple[str, str]] = frozenset()


def imported_modules(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import anywhere in a module's syntax tree."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # Relative imports cannot leave the top-level package they are in.
                found.append((node.lineno, package))
            elif node.module:
                found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def violations(root: Path) -> list[tuple[str, int, str]]:
    """(file, line, module) for each import of ours that DESIGN.md's arrows do not allow."""
    bad: list[tuple[str, int, str]] = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for line, module in imported_modules(tree, package):
                top = module.split(".")[0]
                if top in OURS and top != package and top not in allowed:
                    bad.append((path.relative_to(root).as_posix(), line, module))
    return bad


def test_imports_follow_the_arrows() -> None:
    """No file imports a package of ours that its own package may not depend on."""
    found = violations(ROOT)
    new = [f"{f}:{line}: imports {m}" for f, line, m in found if (f, m) not in KNOWN]
    assert not new, "imports against DESIGN.md's arrows:\n" + "\n".join(new)


@pytest.mark.parametrize("edge", sorted(KNOWN))
@pytest.mark.xfail(reason="a known violation, allowlisted in KNOWN", strict=False)
def test_known_violation_is_gone(edge: tuple[str, str]) -> None:
    """Each allowlisted edge, until it is fixed (XPASS: remove it from KNOWN)."""
    assert edge not in {(f, m) for f, _, m in violations(ROOT)}


@pytest.mark.parametrize(
    ("package", "source"),
    [
        ("store", "import bridge.config\n"),
        ("perception", "def f() -> None:\n    from store.paths import Layout\n"),
        ("inference", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import bridge\n"),
        ("bridge", "import importlib\nimportlib.import_module('inference.router')\n"),
        ("store", "from appliance import config\n"),
    ],
)
def test_a_new_violation_is_caught(tmp_path: Path, package: str, source: str) -> None:
    """The checker sees imports at module level, in functions, under TYPE_CHECKING."""
    for name in ALLOWED:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / package / "bad.py").write_text(source)
    (tmp_path / "appliance" / "ok.py").write_text("import store\nfrom . import ok\n")
    assert [f for f, _, _ in violations(tmp_path)] == [f"{package}/bad.py"]


def module_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports, anywhere in its file."""
    names: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        tree = ast.parse(path.read_text(), str(path))
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # `from a.b import c` imports a.b, or the module a.b.c if there is one.
                found = [f"{node.module}.{alias.name}" for alias in node.names]
                targets.update(m for m in found if m in names)
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in names and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle found by a depth-first walk (each as the modules around it)."""
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt, path)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [])
    return found


def test_appliance_has_no_import_cycle() -> None:
    """No module of `appliance` imports, even inside a function, one that imports it back:
    the CLI's subcommands register on the root group without importing it, and `jobs` and
    `services` import one way."""
    assert cycles(module_graph(ROOT, "appliance")) == []


def test_a_cycle_is_caught(tmp_path: Path) -> None:
    """A root group that imports its subcommand, which imports the root back: found."""
    (tmp_path / "appliance" / "cli").mkdir(parents=True)
    (tmp_path / "appliance" / "__init__.py").write_text("")
    (tmp_path / "appliance" / "cli" / "__init__.py").write_text(
        "def register():\n    from appliance.cli.jobs import jobs\n"
    )
    (tmp_path / "appliance" / "cli" / "jobs.py").write_text("from appliance.cli import main\n")
    assert cycles(module_graph(tmp_path, "appliance")) == [
        ["appliance.cli", "appliance.cli.jobs", "appliance.cli"]
    ]
