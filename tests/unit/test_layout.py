"""The package's shape (issue 12): no import cycle, function-local imports included; no module over 800 lines.

Imports under `if TYPE_CHECKING:` are for annotations only and are not counted. An edge goes to what
an import needs: `from pkg import sub` to the submodule, `from pkg import Name` to pkg's __init__ (so
a record kept in a package's __init__, which its submodules import, is a cycle as soon as the
__init__ imports one of them). The pytest plugin's
imports inside its hooks are counted like any other: they must not close a cycle either.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PKG = ROOT / "runner"
MAX_LINES = 800


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["xarch", *parts])


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: set[str]) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` needs the submodule; `from pkg import Name` needs pkg's __init__
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    files = sorted(PKG.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, modules) for p in files}


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycle_counting_function_local_imports() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_over_800_lines() -> None:
    big = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def test_every_verdict_the_code_names_is_in_the_one_vocabulary() -> None:
    """classify, build and pipeline name verdicts as strings: each must be a model.Verdicts member,
    which is where the console's colours, the page's categories and the merge's severities live."""
    import re

    from xarch.model import CELL_VERDICTS, Verdicts

    named = set()
    for p in PKG.rglob("*.py"):
        named |= set(re.findall(r'Verdict\(\s*"([a-z-]+)"', p.read_text()))
        named |= set(re.findall(r'verdict\s*=\s*"([a-z-]+)"', p.read_text()))
    assert named and named <= {str(v) for v in Verdicts}, named - {str(v) for v in Verdicts}
    assert CELL_VERDICTS[0] == "ok" and "build-failed" not in CELL_VERDICTS
    assert Verdicts("missing-loader").category == "format" and Verdicts("build-failed").severity == 2


def test_every_subpackage_of_runner_ships_in_the_wheel() -> None:
    import tomllib
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = set(conf["packages"])
    runner = ROOT / "runner"
    found = {"xarch" + "".join("." + p for p in d.relative_to(runner).parts)
             for d in [runner, *runner.rglob("*")] if (d / "__init__.py").is_file()}
    assert found - shipped == set(), "add these to [tool.setuptools] packages in pyproject.toml"
