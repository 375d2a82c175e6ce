"""The house's floors: imports only go down, analysis never needs torch, the CLI starts without it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.anyversion

PACKAGE = Path(__file__).parent.parent / "src" / "phasetime"
# What each floor may import from phasetime (its own floor included).
ALLOWED = {
    "core": {"core"},
    "results": {"core", "results"},
    "experiments": {"core", "results", "experiments"},
    "analysis": {"core", "results", "analysis"},
    "cli": {"core", "results", "experiments", "analysis", "cli", "top"},
    "top": {"core", "results", "experiments", "analysis", "top"},
}
MAX_LINES = 330
MAX_FUNCTION_LINES = 70  # "~60": docstrings and comments count here


def floor_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    if parts == ("__main__.py",):
        return "cli"  # python -m phasetime: the command line's other door
    return parts[0] if len(parts) > 1 else "top"


def phasetime_imports(path: Path) -> list[tuple[int, str]]:
    """(line, floor) of every import of a phasetime module in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text())
    module_parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if module_parts[-1] == "__init__":
        module_parts = module_parts[:-1]
    package_parts = module_parts if path.name == "__init__.py" else module_parts[:-1]
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            elif node.module:
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "phasetime":
                found.append((node.lineno, parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "top"))
    return found


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
    assert ("experiments" not in ALLOWED["core"]) and any(t == "core" for _, t in phasetime_imports(PACKAGE / "core" / "probe.py"))
    assert floor_of(core) == "core"


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
