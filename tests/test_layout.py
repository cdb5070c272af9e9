"""The house stays in order: the import graph has no circle and no arrow against the layers of
docs/architecture.md §2, and what the code and docs cite exists.

Imports are read from the sources (ast), every one of them: at module level, inside functions
and under ``if TYPE_CHECKING:``, since each is a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocols", "firmware", "gateway", "sim_hardware", "tmeter")

# Layer -> the layers it may import (besides itself). A module belongs to the longest prefix.
LAYERS: dict[str, set[str]] = {
    "protocols": set(),
    "firmware": {"protocols"},
    "gateway": {"protocols"},
    "sim_hardware.netutil": set(),
    "sim_hardware.simulator": {"protocols", "sim_hardware.netutil"},
    "tmeter.fwtools": {"protocols", "firmware"},
    "sim_hardware.harness": {"protocols", "firmware", "gateway", "sim_hardware.netutil",
                             "sim_hardware.simulator", "tmeter.fwtools"},
    "tmeter": {"protocols", "firmware", "gateway", "sim_hardware.netutil", "sim_hardware.simulator",
               "sim_hardware.harness", "tmeter.fwtools"},
    "sim_hardware": set(),  # the package's own __init__
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            found[module_name(path)] = path
    return found


MODULES = modules()


def imported(name: str, path: Path) -> Iterator[str]:
    """Our modules that ``name`` (at ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule when there is one.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


GRAPH = {name: set(imported(name, path)) for name, path in MODULES.items()}


def layer(name: str) -> str:
    return max((lay for lay in LAYERS if name == lay or name.startswith(lay + ".")), key=len)


def test_every_module_is_in_a_layer() -> None:
    assert all(layer(name) for name in MODULES)


def test_no_import_goes_against_the_layers() -> None:
    wrong = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets
                   if layer(b) != layer(a) and layer(b) not in LAYERS[layer(a)])
    assert not wrong, "imports against docs/architecture.md §2:\n" + "\n".join(wrong)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circle() -> None:
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_layer_check_sees_a_forbidden_arrow() -> None:
    # The arrow the house issue found: the daemon's package sat above the simulator.
    assert layer("sim_hardware.harness.community") not in LAYERS[layer("gateway.daemon")]
    assert layer("tmeter.cli") not in LAYERS[layer("sim_hardware.harness.community")]


# --- what the code cites ---------------------------------------------------------------------

DOC = ROOT / "docs" / "architecture.md"
CITED_PATH = re.compile(r"(?<![\w/.-])((?:firmware|protocols|gateway|sim_hardware|tmeter|tests|bench|deploy|docs)"
                        r"/[\w./-]*\w\.(?:py|md|toml|json|service))\b")
SECTION_CITE = re.compile(r"architecture\.md\s+§\s*(\d+)")


def sources() -> list[Path]:
    tree = [p for pkg in PACKAGES + ("tests", "bench", "deploy", "docs") for p in (ROOT / pkg).rglob("*")
            if p.suffix in (".py", ".md", ".toml", ".service") and "__pycache__" not in p.parts
            and p != Path(__file__).resolve()]
    return sorted(tree + [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"])


def doc_sections() -> set[str]:
    return set(re.findall(r"^## (\d+)\. ", DOC.read_text(), re.M))


def test_the_design_is_in_the_repository() -> None:
    assert DOC.is_file()
    assert doc_sections() >= {str(n) for n in range(1, 13)}


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_citations_name_what_exists(path: Path) -> None:
    text = path.read_text()
    missing = sorted({p for p in CITED_PATH.findall(text) if not (ROOT / p).exists()})
    assert not missing, f"cites files that do not exist: {missing}"
    assert "ARCHITECTURE" not in text, "cites the design outside the repository; cite docs/architecture.md §N"
    sections = doc_sections()
    unknown = sorted(set(SECTION_CITE.findall(text)) - sections)
    assert not unknown, f"cites sections of docs/architecture.md that do not exist: {unknown}"


def test_the_readme_is_one_screen_or_two() -> None:
    assert (ROOT / "README.md").stat().st_size < 12_000
