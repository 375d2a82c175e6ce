"""The house's rooms: imports only go down, no module imports itself through others, analysis never
needs torch, the CLI starts without it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.anyversion

PACKAGE = Path(__file__).parent.parent / "src" / "phasetime"
# What each room may import from phasetime (its own included): the timing core knows no model and
# no engine; each engine adapter (hf: generate(), vllm) sees the core (and hf the sensors it
# samples); the serving client and join see the core and vLLM's step records; results see the core and the sensors' column declarations; the analysis the results;
# the runner everything below it.
ALLOWED = {
    "core": {"core"},
    "sensors": {"core", "sensors"},
    "hf": {"core", "sensors", "hf"},
    "vllm": {"core", "vllm"},
    "serving": {"core", "vllm", "serving"},
    "results": {"core", "sensors", "results"},
    "analysis": {"core", "results", "analysis"},
    "experiments": {"core", "sensors", "hf", "vllm", "serving", "results", "analysis", "experiments"},
    "cli": set(),  # filled below: everything
    "top": {"core", "hf", "results", "experiments", "analysis", "top"},
}
ALLOWED["cli"] = set(ALLOWED) | {"cli"}
MAX_LINES = 330
MAX_FUNCTION_LINES = 70  # "~60": docstrings and comments count here


def floor_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    if parts == ("__main__.py",):
        return "cli"  # python -m phasetime: the command line's other door
    return parts[0] if len(parts) > 1 else "top"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every phasetime module ``path`` imports, anywhere in it (inside
    functions and ``if TYPE_CHECKING:`` too), relative imports resolved; ``from package import
    name`` counts the submodule when ``name`` is one."""
    tree = ast.parse(path.read_text())
    module_parts = module_name(path).split(".")
    package_parts = module_parts if path.name == "__init__.py" else module_parts[:-1]
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found += [(node.lineno, name) for name in dict.fromkeys(names) if name.split(".")[0] == "phasetime"]
    return found


def phasetime_imports(path: Path) -> list[tuple[int, str]]:
    """(line, room) of every import of a phasetime module in ``path``."""
    out = []
    for line, name in imported_modules(path):
        parts = name.split(".")
        out.append((line, parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "top"))
    return out


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_imports_only_go_down() -> None:
    wrong = []
    for path in modules():
        floor = floor_of(path)
        for line, target in phasetime_imports(path):
            if target not in ALLOWED[floor]:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} ({floor}) imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_rule_catches_a_climb(tmp_path: Path) -> None:
    core = PACKAGE / "core" / "clock.py"
    assert ("experiments" not in ALLOWED["core"]) and any(t == "core" for _, t in phasetime_imports(PACKAGE / "hf" / "probe.py"))
    assert floor_of(core) == "core" and floor_of(PACKAGE / "hf" / "probe.py") == "hf"


def import_cycles() -> list[list[str]]:
    """The groups of modules that import each other, directly or through others (Tarjan's
    strongly connected components of the import graph; every import counts, wherever it is)."""
    graph = {module_name(p): {m for _, m in imported_modules(p) if m in MODULES} - {module_name(p)}
             for p in modules()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

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
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_circle_anywhere() -> None:
    assert import_cycles() == []


def test_the_circle_rule_sees_an_import_inside_a_function() -> None:
    """A hand-made pair: a.py imports b at module level, b.py imports a inside a function."""
    found = imported_modules(PACKAGE / "results" / "schema.py")
    assert any(name == "phasetime.sensors.base" for _, name in found)
    lazy = imported_modules(PACKAGE / "experiments" / "running" / "run.py")
    assert any(name == "phasetime.experiments.running.ray_cluster" for _, name in lazy)  # inside make_executor


def test_no_module_or_function_is_too_long() -> None:
    long_modules, long_functions = [], []
    for path in modules():
        text = path.read_text()
        if text.count("\n") > MAX_LINES:
            long_modules.append(f"{path.relative_to(PACKAGE)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {length} lines")
    assert not long_modules and not long_functions, "\n".join(long_modules + long_functions)


def _imported_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('MODULES', ' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.rsplit("MODULES", 1)[1].split())


def test_analysis_and_results_never_import_torch() -> None:
    loaded = _imported_after("import phasetime.analysis, phasetime.results, phasetime.analysis.report")
    assert "torch" not in loaded and "transformers" not in loaded


def test_help_and_version_import_neither_torch_nor_pyarrow() -> None:
    code = ("import sys\nfrom phasetime.cli import main\n"
            "for args in (['--help'], ['--version'], ['run', '--help'], ['run', '--bogus-flag']):\n"
            "    try:\n        main(args)\n    except SystemExit:\n        pass")
    loaded = _imported_after(code)
    assert not {"torch", "transformers", "pyarrow"} & loaded


def test_version() -> None:
    """--version prints the version the package was installed as (pyproject.toml), not only the
    constant it reads itself."""
    from importlib.metadata import version

    out = subprocess.run([sys.executable, "-m", "phasetime.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"phasetime {version('phasetime')}"
    # one place: the changelog's newest entry is the version the package says it is
    import re

    newest = re.search(r"^## (\S+)", (Path(__file__).parents[1] / "CHANGELOG.md").read_text(), re.M)
    assert newest is not None and newest.group(1) == version("phasetime")
