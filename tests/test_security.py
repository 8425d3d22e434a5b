"""No untrusted code: mathlite and the recipes never run code that comes with a model, an adapter, a
data set or a model's output. Checked on the source (AST, so comments and strings do not count):

- `trust_remote_code` is never switched on (only a user could ask for it; no recipe flag does);
- weights are read as safetensors: no pickle (pickle, dill, joblib, marshal, shelve), no `torch.load`
  without `weights_only=True`, no `numpy.load(allow_pickle=True)`, no `use_safetensors=False` or
  `safe_serialization=False`;
- no eval/exec, and no sympy `sympify`/`parse_expr` (they eval strings) on answers a model wrote.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(REPO / "mathlite").rglob("*.py"), *(REPO / "recipes").rglob("*.py")])
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "marshal", "shelve", "cloudpickle"}


def _name(func: ast.AST) -> str:
    """Dotted name of a call target: torch.load -> "torch.load", eval -> "eval"."""
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        inner = _name(func.value)
        return f"{inner}.{func.attr}" if inner else func.attr
    return ""


def _const(node: ast.AST | None):
    return node.value if isinstance(node, ast.Constant) else ...


def findings(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(root)
    out = []

    def bad(node, what):
        out.append(f"{rel}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLE_MODULES:
                    bad(node, f"imports {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in PICKLE_MODULES:
                bad(node, f"imports from {node.module}")
            for alias in node.names:
                if alias.name in ("sympify", "parse_expr"):
                    bad(node, f"imports {alias.name} (it evals strings)")
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if _const(k) == "trust_remote_code" and _const(v) is not False:
                    bad(node, "trust_remote_code in a dict is not the constant False")
        elif isinstance(node, ast.Call):
            name = _name(node.func)
            last = name.rsplit(".", 1)[-1]
            kw = {k.arg: k.value for k in node.keywords if k.arg}
            if "trust_remote_code" in kw and _const(kw["trust_remote_code"]) is not False:
                bad(node, f"{name}(trust_remote_code=...) is not the constant False")
            if name in ("eval", "exec"):
                bad(node, f"calls {name}()")
            if last in ("sympify", "parse_expr"):
                bad(node, f"calls {name}() (it evals strings)")
            if last == "load" and name.split(".")[0] in ("torch",) and _const(kw.get("weights_only")) is not True:
                bad(node, "torch.load without weights_only=True")
            if last == "load" and name.split(".")[0] in ("np", "numpy") and _const(kw.get("allow_pickle")) is True:
                bad(node, "numpy.load(allow_pickle=True)")
            if _const(kw.get("use_safetensors")) is False or _const(kw.get("safe_serialization")) is False:
                bad(node, f"{name}() without safetensors")
            if last == "unsafe_load" or (last == "load" and name.split(".")[0] == "yaml" and "Loader" in kw
                                         and _name(kw["Loader"]).rsplit(".", 1)[-1] not in ("SafeLoader", "CSafeLoader")):
                bad(node, "yaml load with an unsafe Loader")
    return out


def test_sources_are_found():
    names = {p.name for p in SOURCES}
    assert {"models.py", "runs.py", "01_ssft.py", "04_rerank.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_untrusted_code(path):
    assert findings(path) == []


def test_the_scanner_catches_what_it_should(tmp_path):
    """The scan itself: each forbidden pattern is found, and the allowed forms are not."""
    bad = tmp_path / "mathlite" / "bad.py"
    bad.parent.mkdir()
    bad.write_text(
        "import pickle\n"
        "import torch\n"
        "from sympy import sympify\n"
        "from transformers import AutoModel\n"
        "m = AutoModel.from_pretrained('x', trust_remote_code=True)\n"
        "kw = {'trust_remote_code': True}\n"
        "state = torch.load('w.bin')\n"
        "state = torch.load('w.bin', weights_only=False)\n"
        "v = eval('1+1')\n"
        "m.save_pretrained('y', safe_serialization=False)\n"
    )
    good = tmp_path / "mathlite" / "good.py"
    good.write_text(
        "import torch\n"
        "from transformers import AutoModel\n"
        "m = AutoModel.from_pretrained('x', trust_remote_code=False)\n"
        "kw = {'dtype': None, 'trust_remote_code': False}\n"
        "state = torch.load('w.pt', weights_only=True)\n"
        "m.eval()  # a method, not the builtin\n"
        "# trust_remote_code=True in a comment is no call\n"
    )
    found = findings(bad, root=tmp_path)
    assert findings(good, root=tmp_path) == []
    joined = "\n".join(found)
    for line in (1, 3, 5, 6, 7, 8, 9, 10):
        assert f"bad.py:{line}:" in joined, f"line {line} not flagged:\n{joined}"
