"""The package's architecture, checked from the source with ``ast`` (nothing is imported).

Every module under ``stackft/`` and ``kernels/`` (installed as ``stackft.kernels``) and ``csrc/``
(``stackft.csrc``) is parsed; every import in it -- at module level, inside functions, under
``if TYPE_CHECKING:``, and ``importlib.import_module("<literal>")`` -- is resolved to a module of the
package. Then:

(a) no import cycle among modules; ``from stackft.training import x`` in a submodule of
    ``stackft.training`` is an edge to the package (its ``__init__``);
(b) ``stackft.cli`` and ``argparse`` are imported only inside ``stackft/cli`` (and the
    ``python -m stackft`` entry point ``stackft/__main__.py``, which is the CLI);
(c) imports go downward only, by layer rank:
    cli 5 -> studies 4 -> training 3 -> {cache, modeling} 2 -> data 1 -> leaves 0
    (config, tasks, run_dir, distributed, _ext, _compat, stackft.kernels, stackft.csrc).

Lazy re-exports are not dependencies of the module that holds them: ``stackft/__init__.py``,
``stackft/_compat.py`` and imports inside a module-level function named ``__getattr__``
(deprecated names, e.g. in ``stackft/tasks.py``) are left out of (a) and (c).

Known violations in library code are listed in ``KNOWN`` with the reason; each is its own
``xfail(strict=True)`` case, so the rule stays enforced for every other module and the entry
must be removed once the library is fixed.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import REPO

# source folder -> the package name it is installed as
ROOTS = {"stackft": "stackft", "kernels": "stackft.kernels", "csrc": "stackft.csrc"}

RANK = {"cli": 5, "studies": 4, "training": 3, "cache": 2, "modeling": 2, "data": 1}
LEAVES = {"config", "tasks", "run_dir", "distributed", "_ext", "_compat", "_fs", "kernels", "csrc"}
ENTRY_POINTS = {"stackft.__main__"}  # ``python -m stackft``: part of the command line
LAZY_REEXPORT_MODULES = {"stackft", "stackft._compat"}

# (rule, importer, imported) -> why it is there. Each is an xfail(strict=True) case of its rule.
KNOWN: dict[tuple[str, str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str  # a stackft module, or a top-level third-party/stdlib module name
    file: str
    line: int
    lazy: bool  # a lazy re-export (see the module docstring)

    def where(self) -> str:
        return f"{self.src} -> {self.dst} ({self.file}:{self.line})"


def module_files() -> dict[str, Path]:
    mods = {}
    for folder, pkg in ROOTS.items():
        root = REPO / folder
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if any(not p.isidentifier() for p in parts):
                continue
            mods[".".join([pkg, *parts])] = path
    return mods


MODULES = module_files()


def is_package(mod: str) -> bool:
    return MODULES[mod].name == "__init__.py"


def resolve(name: str) -> str | None:
    """The stackft module ``name`` names: itself, or an old (0.1) path mapped like stackft._compat does."""
    if name in MODULES:
        return name
    if name.startswith("stackft."):
        sys.path.insert(0, str(REPO))
        try:
            from stackft._compat import new_name  # a leaf module without imports of its own
        finally:
            sys.path.pop(0)
        new = new_name(name)
        if new in MODULES:
            return new
    return None


def _imports(tree: ast.Module):
    """(node, inside a module-level __getattr__) for every import node and import_module("...") call."""
    lazy_funcs = {id(n) for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.name == "__getattr__"}

    def walk(node, lazy):
        for child in ast.iter_child_nodes(node):
            child_lazy = lazy or id(child) in lazy_funcs
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, child_lazy
            elif (isinstance(child, ast.Call) and child.args and isinstance(child.args[0], ast.Constant)
                  and isinstance(child.args[0].value, str)
                  and (getattr(child.func, "attr", None) == "import_module"
                       or getattr(child.func, "id", None) == "import_module")):
                yield child, child_lazy
            yield from walk(child, child_lazy)

    yield from walk(tree, False)


def edges_of(mod: str) -> list[Edge]:
    path = MODULES[mod]
    file = str(path.relative_to(REPO))
    tree = ast.parse(path.read_text(), filename=file)
    package = mod if is_package(mod) else mod.rpartition(".")[0]
    out = []

    def add(target: str, node, lazy: bool):
        dst = resolve(target) or (target.split(".")[0] if not target.startswith("stackft") else target)
        out.append(Edge(mod, dst, file, node.lineno, lazy or mod in LAZY_REEXPORT_MODULES))

    for node, lazy in _imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, lazy)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:  # ``from pkg import submodule`` imports the submodule
                sub = f"{target}.{alias.name}"
                if resolve(sub):
                    add(sub, node, lazy)
                else:
                    add(target, node, lazy)
        else:  # importlib.import_module("literal")
            add(node.args[0].value, node, lazy)
    return out


EDGES = [e for mod in MODULES for e in edges_of(mod)]


def internal(e: Edge) -> bool:
    return e.dst in MODULES and e.dst != e.src


def rank(mod: str) -> int:
    if mod in ENTRY_POINTS:
        return RANK["cli"]
    parts = mod.split(".")
    if len(parts) == 1:
        return 0
    top = parts[1]
    if top in RANK:
        return RANK[top]
    assert top in LEAVES, f"{mod}: top-level module {top!r} has no layer; add it to RANK or LEAVES in {__file__}"
    return 0


def in_cli(mod: str) -> bool:
    return mod == "stackft.cli" or mod.startswith("stackft.cli.") or mod in ENTRY_POINTS


# --------------------------------------------------------------------------- the rules


def cycles(edges: list[Edge] | None = None) -> list[list[Edge]]:
    """One shortest cycle per strongly connected component with more than one module (Tarjan)."""
    graph: dict[str, dict[str, Edge]] = {m: {} for m in MODULES}
    for e in EDGES if edges is None else edges:
        if internal(e) and not e.lazy:
            graph[e.src].setdefault(e.dst, e)
    index, low, on, stack, comps, counter = {}, {}, set(), [], [], [0]

    def strong(v):  # iterative Tarjan: the graph is small, but recursion depth is not ours to spend
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.add(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            strong(v)

    found = []
    for comp in comps:  # the shortest cycle through the component's first module (BFS)
        start = min(comp)
        prev, frontier = {start: None}, [start]
        while frontier:
            nxt = []
            for u in frontier:
                for w, e in sorted(graph[u].items()):
                    if w == start:
                        chain, x = [e], u
                        while prev[x] is not None:
                            chain.append(prev[x])
                            x = prev[x].src
                        found.append(chain[::-1])
                        frontier, nxt = [], []
                        break
                    if w in comp and w not in prev:
                        prev[w] = e
                        nxt.append(w)
                else:
                    continue
                break
            frontier = nxt
    return found


def violations(rule: str, edges: list[Edge] | None = None) -> list[Edge]:
    edges = EDGES if edges is None else edges
    if rule == "cli":
        return [e for e in edges if not in_cli(e.src)
                and (e.dst == "argparse" or e.dst == "stackft.cli" or e.dst.startswith("stackft.cli."))]
    if rule == "upward":
        return [e for e in edges if internal(e) and not e.lazy and rank(e.dst) > rank(e.src)]
    raise ValueError(rule)


def _cases(rule):
    known = [k for k in KNOWN if k[0] == rule]
    return [pytest.param(None, id="all-other-modules")] + [
        pytest.param(k, id=f"known:{k[1]}->{k[2]}", marks=pytest.mark.xfail(strict=True, reason=KNOWN[k]))
        for k in known]


def _select(found: list[Edge], rule: str, case) -> list[Edge]:
    key = lambda e: (rule, e.src, e.dst)  # noqa: E731
    if case is None:
        return [e for e in found if key(e) not in KNOWN]
    return [e for e in found if key(e) == case]


# --------------------------------------------------------------------------- tests


def test_the_walk_sees_the_package():
    assert {"stackft", "stackft.cli", "stackft.training.trainer", "stackft.kernels", "stackft.kernels.ops.mp_matching",
            "stackft.csrc"} <= set(MODULES)
    # a function-level import is seen: the CLI imports the trainer inside its command function
    assert any(e.src.startswith("stackft.cli") and e.dst == "stackft.training.trainer" for e in EDGES)
    for mod in MODULES:
        rank(mod)  # every module has a layer


def test_the_rules_catch_what_they_forbid():
    """The checks on made-up edges (the real graph may be clean)."""
    e = lambda s, d, lazy=False: Edge(s, d, "x.py", 1, lazy)  # noqa: E731
    loop = [e("stackft.data.pipeline", "stackft.training.trainer"), e("stackft.training.trainer", "stackft.training"),
            e("stackft.training", "stackft.data.pipeline")]
    (found,) = cycles(loop)
    assert {x.src for x in found} == {"stackft.data.pipeline", "stackft.training.trainer", "stackft.training"}
    assert cycles([*loop[:2], e("stackft.training", "stackft.data.pipeline", lazy=True)]) == []
    assert [x.src for x in violations("upward", loop)] == ["stackft.data.pipeline"]
    assert violations("upward", [e("stackft.training.trainer", "stackft.cache.format"),
                                 e("stackft.tasks", "stackft.data.pipeline", lazy=True)]) == []
    bad = [e("stackft.studies.runner", "argparse"), e("stackft.config", "stackft.cli.args"),
           e("stackft.cli.train", "argparse"), e("stackft.__main__", "stackft.cli")]
    assert [x.src for x in violations("cli", bad)] == ["stackft.studies.runner", "stackft.config"]


def test_no_import_cycles():
    found = cycles()
    assert not found, "import cycles:\n" + "\n".join(
        "  " + " -> ".join([c[0].src] + [e.dst for e in c]) + "\n" + "".join(f"      {e.where()}\n" for e in c)
        for c in found)


@pytest.mark.parametrize("case", _cases("cli"))
def test_cli_and_argparse_only_inside_stackft_cli(case):
    bad = _select(violations("cli"), "cli", case)
    assert not bad, "stackft.cli / argparse imported outside stackft/cli:\n" + "\n".join(
        f"  {e.where()}" for e in bad)


@pytest.mark.parametrize("case", _cases("upward"))
def test_imports_go_downward_by_layer(case):
    bad = _select(violations("upward"), "upward", case)
    assert not bad, "upward imports (importer rank < imported rank):\n" + "\n".join(
        f"  {e.where()}  [rank {rank(e.src)} -> {rank(e.dst)}]" for e in bad)


def test_known_violations_name_existing_modules():
    for rule, src, dst in KNOWN:
        assert rule in ("cli", "upward") and src in MODULES, (rule, src, dst)


# --------------------------------------------------------------------------- packaging


def test_pyproject_packages_list_every_package_folder():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    on_disk = {m for m in MODULES if is_package(m)}
    assert listed == on_disk, f"missing from pyproject: {sorted(on_disk - listed)}; listed but no __init__.py: " \
                              f"{sorted(listed - on_disk)}"
    assert {cfg["package-dir"][pkg] for pkg in ("stackft", "stackft.kernels", "stackft.csrc")} == set(ROOTS)
