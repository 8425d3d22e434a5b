"""The package's import structure: no circle, the library never imports the command-line layer,
errors at the bottom, every recipe step is a Stage, and no recipe loads another recipe."""

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


def test_no_recipe_loads_another_recipe():
    """Recipes share code through mathlite, not through each other: no recipe loads a file by path,
    touches sys.path, or names another recipe's file in an import."""
    recipes = sorted((REPO / "recipes").glob("*.py"))
    for path in recipes:
        text = path.read_text()
        assert "spec_from_file_location" not in text and "importlib" not in text, path.name
        assert "sys.path" not in text, path.name
        imported = {a.name for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ImportFrom)}
        assert not imported & {p.stem for p in recipes}, path.name


def test_the_stage_layer():
    """mathlite.stage sits on files and errors only, and every recipe step goes through it."""
    g = graph()
    assert g["stage"] <= {"files", "errors"}
    for name in ("01_ssft.py", "02_sample.py", "03_evaluator.py", "04_rerank.py", "05_multitask.py"):
        text = (REPO / "recipes" / name).read_text()
        assert "write_manifest" not in text and "stage_key" not in text, name
        # a Stage of its own, or the library's report step (mathlite.rerank writes the report's Stage)
        assert "Stage(" in text or "rerank.rerank(" in text, name
    assert "Stage(" in (PACKAGE / "rerank.py").read_text()
