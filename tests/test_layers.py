"""The package's import structure: no circle, the library never imports the command-line layer,
errors at the bottom, and no recipe loads another recipe."""

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "mathlite"


def imports_of(path: Path) -> set[str]:
    """The mathlite modules a file imports, at its top or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1 or base.startswith("mathlite"):
                base = base.removeprefix("mathlite").lstrip(".")
                if base:
                    out.add(base.split(".")[0])
                else:  # from . import a, b / from mathlite import a, b
                    out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("mathlite."))
    return out


def graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {m: imports_of(PACKAGE / f"{m}.py") & modules - {m} for m in modules}


def test_the_import_graph_has_no_circle():
    g = graph()
    done, path = set(), []

    def visit(m):
        assert m not in path, "import circle: " + " -> ".join(path[path.index(m):] + [m])
        if m in done:
            return
        path.append(m)
        for dep in sorted(g[m]):
            visit(dep)
        path.pop()
        done.add(m)

    for m in sorted(g):
        visit(m)


def test_layers():
    g = graph()
    assert g["errors"] == set()  # the bottom
    assert g["files"] == {"errors"}
    assert [m for m, deps in g.items() if "runs" in deps] == []  # the library never imports the command line
    assert g["synthetic"] & {"data"} == set() and g["problem"] <= {"errors", "answers"}


def test_no_recipe_loads_another_recipe_except_05():
    """Recipes share code through mathlite, not through each other (05 still drives 02 and 04)."""
    for path in sorted((REPO / "recipes").glob("*.py")):
        text = path.read_text()
        loads = "spec_from_file_location" in text or "sys.path" in text
        assert not loads or path.name == "05_multitask.py", path.name
        assert "sys.path" not in text, path.name
