"""The dependency direction is one way: `jaxinterp` (the library) <- `models` (the zoo) <- `experiments`."""

import ast
import pathlib
import subprocess
import sys

LIBRARY = pathlib.Path(__file__).resolve().parents[1] / "jaxinterp"


def test_importing_jaxinterp_loads_no_application_code_and_no_heavy_framework():
    code = (
        "import sys, jaxinterp, jaxinterp.dynamics, jaxinterp.data, jaxinterp.cli\n"
        "print(sorted(m for m in ('models', 'experiments', 'flax', 'torch', 'transformer_lens', 'sklearn')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _top_level_imports(path: pathlib.Path) -> list[tuple[str, int]]:
    """Modules imported by `path` outside any function body (what importing it loads)."""
    found = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.module, node.lineno))
    return found


def test_library_modules_import_neither_models_nor_experiments():
    offenders = [
        f"{path.relative_to(LIBRARY.parent)}:{line} imports {name}"
        for path in LIBRARY.rglob("*.py")
        for name, line in _top_level_imports(path)
        if name.split(".")[0] in ("models", "experiments")
    ]
    assert offenders == []


def test_only_the_command_line_reaches_experiments_and_only_lazily():
    mentions = [
        path.relative_to(LIBRARY.parent)
        for path in LIBRARY.rglob("*.py")
        if any(
            isinstance(node, (ast.Import, ast.ImportFrom))
            and any(
                (alias.name if isinstance(node, ast.Import) else (node.module or "")).split(".")[0]
                in ("models", "experiments")
                for alias in node.names
            )
            for node in ast.walk(ast.parse(path.read_text()))
        )
    ]
    assert [str(p) for p in mentions] == ["jaxinterp/cli.py"]
