"""The Colab notebook (notebooks/mathlite_colab.ipynb): valid nbformat-4 JSON, and every command in it
runs a recipe that exists with flags that recipe accepts.

Each `python recipes/XX.py ...` command (code cells, and markdown text) is parsed the way
`mathlite.runs.parse_config` parses argv (`--name value`, `--name=value`, dashes as underscores, a bare
boolean flag, `--debug`), and checked against the recipe's `Config` dataclass fields and `PRESETS` keys,
imported from the recipe file with importlib (its `main` is not run). A value that IPython fills in
(`{RUN}`, `$RUN`) is not type-checked; a literal one is converted to the field's type as the recipe would.
A command whose recipe file does not exist FAILS (it is not skipped).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import typing
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "mathlite_colab.ipynb"

# `python recipes/01_ssft.py ...` anywhere on a line: after `!`, in an `if` block, in markdown text
COMMAND = re.compile(r"(?:^|[\s!;&|(`])python3?\s+(recipes/[\w./-]+\.py)(.*)$")
BASH_SCRIPT = re.compile(r"(?:^|[\s!;&|(`])(?:bash|sh)\s+(scripts/[\w./-]+)")
# shell syntax that ends a command's arguments
SHELL_STOP = {"&&", "||", ";", "|", "&", ">", ">>", "<", "2>&1", "1>&2"}
PLACEHOLDER = re.compile(r"\{[^}]*\}|\$\w+")
CELL_ID = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")
STEPS = ("01_ssft.py", "02_sample.py", "03_evaluator.py", "04_rerank.py", "05_multitask.py")


# ---------------------------------------------------------------------------- reading the notebook


def load_notebook() -> dict:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def cell_text(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def logical_lines(text: str) -> list[str]:
    """Lines with shell continuations (a trailing backslash) joined."""
    return text.replace("\\\n", " ").splitlines()


def find_commands(nb: dict) -> list[tuple[str, str, str]]:
    """(where, recipe path, argument text) of every recipe command in the notebook."""
    found = []
    for i, cell in enumerate(nb["cells"]):
        where = f"cell {i} ({cell.get('id', cell['cell_type'])})"
        for line in logical_lines(cell_text(cell)):
            m = COMMAND.search(line)
            if m:
                found.append((where, m.group(1), m.group(2)))
    return found


def find_scripts(nb: dict) -> list[tuple[str, str]]:
    return [(f"cell {i}", m.group(1)) for i, cell in enumerate(nb["cells"])
            for line in logical_lines(cell_text(cell)) for m in BASH_SCRIPT.finditer(line)]


# ---------------------------------------------------------------------------- the checker


load_recipe = load_script  # a recipe's path relative to the repository root


def split_args(arg_text: str) -> list[str]:
    """The argv of a command: shell words up to a comment, a backtick (markdown) or shell syntax."""
    arg_text = arg_text.split("`")[0]
    lexer = shlex.shlex(arg_text, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    argv = []
    for word in lexer:
        if word in SHELL_STOP or word.startswith((">", "2>", "1>")):
            break
        argv.append(word)
    return argv


def parse_flags(argv: list[str], types: dict[str, typing.Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """(flag, value) pairs and errors, following mathlite.runs.parse_config's rules."""
    pairs, errors = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--debug":
            i += 1
            continue
        if not arg.startswith("--"):
            errors.append(f"unexpected argument {arg!r} (flags are --key value or --key=value)")
            i += 1
            continue
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 >= len(argv) or (argv[i + 1].startswith("--") and types.get(key) is not bool):
                if types.get(key) is bool:
                    value = "true"
                else:
                    errors.append(f"--{key}: missing value")
                    i += 1
                    continue
            else:
                value = argv[i + 1]
                i += 1
        i += 1
        pairs.append((key, value))
    return pairs, errors


def check_command(recipe: str, arg_text: str) -> list[str]:
    """Everything wrong with `python <recipe> <arg_text>`; [] when the recipe would accept it."""
    path = ROOT / recipe
    if not path.is_file():
        return [f"{recipe}: no such recipe file in {ROOT}"]
    module = load_recipe(recipe)
    config, presets = getattr(module, "Config", None), getattr(module, "PRESETS", None)
    if config is None or not dataclasses.is_dataclass(config) or not isinstance(presets, dict):
        return [f"{recipe}: has no Config dataclass and PRESETS dict"]
    hints = typing.get_type_hints(config, vars(module))
    types = {f.name: hints[f.name] for f in dataclasses.fields(config)}
    pairs, errors = parse_flags(split_args(arg_text), types)
    from mathlite import runs

    for key, value in pairs:
        if key == "preset":
            if value not in presets:
                errors.append(f"--preset {value!r}: not a preset of {recipe} ({', '.join(presets)})")
            continue
        if key not in types:
            errors.append(f"--{key}: not a field of {recipe}'s Config ({', '.join(types)})")
            continue
        if PLACEHOLDER.search(value):
            continue  # filled in by IPython at run time
        try:
            runs._convert(key, value, types[key])
        except runs.UserError as e:
            errors.append(f"{recipe}: {e}")
    return errors


# ---------------------------------------------------------------------------- the notebook's structure


def test_notebook_is_valid_json():
    assert NOTEBOOK.is_file(), f"{NOTEBOOK} is missing"
    nb = load_notebook()
    assert isinstance(nb, dict)


def test_notebook_is_nbformat4():
    nb = load_notebook()
    assert nb.get("nbformat") == 4
    assert isinstance(nb.get("nbformat_minor"), int)
    assert isinstance(nb.get("metadata"), dict)
    assert isinstance(nb.get("cells"), list) and nb["cells"]
    ids = []
    for i, cell in enumerate(nb["cells"]):
        assert isinstance(cell, dict), f"cell {i}"
        assert cell.get("cell_type") in ("code", "markdown", "raw"), f"cell {i}: cell_type {cell.get('cell_type')!r}"
        src = cell.get("source")
        assert isinstance(src, str) or (isinstance(src, list) and all(isinstance(s, str) for s in src)), \
            f"cell {i}: source must be a string or a list of strings"
        assert isinstance(cell.get("metadata"), dict), f"cell {i}: metadata"
        if cell["cell_type"] == "code":
            assert isinstance(cell.get("outputs"), list), f"cell {i}: a code cell needs outputs"
            ec = cell.get("execution_count", "missing")
            assert ec is None or isinstance(ec, int), f"cell {i}: execution_count {ec!r}"
        else:
            assert "outputs" not in cell and "execution_count" not in cell, f"cell {i}: outputs on a {cell['cell_type']} cell"
        if nb["nbformat_minor"] >= 5:  # 4.5 added cell ids
            assert CELL_ID.match(cell.get("id", "")), f"cell {i}: id {cell.get('id')!r}"
            ids.append(cell["id"])
    assert len(ids) == len(set(ids)), "cell ids must be unique"


def test_notebook_validates_with_nbformat():
    import nbformat
    nbformat.validate(nbformat.reads(NOTEBOOK.read_text(encoding="utf-8"), as_version=4))


def test_code_cells_are_valid_ipython():
    from IPython.core import inputtransformer2 as transformer
    tm = transformer.TransformerManager()
    for i, cell in enumerate(load_notebook()["cells"]):
        if cell["cell_type"] == "code":
            compile(tm.transform_cell(cell_text(cell)), f"cell {i}", "exec")


# ---------------------------------------------------------------------------- the commands in it


def test_every_step_has_a_t4_cell_with_an_estimate_before_it():
    """Each step 01-05 is its own code cell at --preset t4, after a markdown cell labelled as an estimate."""
    cells = load_notebook()["cells"]
    for step in STEPS:
        hits = [i for i, c in enumerate(cells) if c["cell_type"] == "code"
                and any(m and m.group(1) == f"recipes/{step}" and "--preset t4" in line
                        for line in logical_lines(cell_text(c)) for m in [COMMAND.search(line)])]
        assert hits, f"no code cell runs recipes/{step} --preset t4"
        i = hits[0]
        assert i > 0 and cells[i - 1]["cell_type"] == "markdown", f"recipes/{step}: no markdown cell before it"
        assert "ESTIMATE" in cell_text(cells[i - 1]), f"recipes/{step}: its time/memory must be labelled ESTIMATE"


NOTEBOOK_COMMANDS = find_commands(load_notebook()) if NOTEBOOK.is_file() else []


def test_notebook_has_recipe_commands():
    assert len(NOTEBOOK_COMMANDS) >= len(STEPS)


@pytest.mark.parametrize(
    "where,recipe,args", NOTEBOOK_COMMANDS,
    ids=[f"{Path(r).name}@{w.split()[1]}" for w, r, _ in NOTEBOOK_COMMANDS],
)
def test_notebook_command_is_valid(where, recipe, args):
    errors = check_command(recipe, args)
    assert not errors, f"{where}: python {recipe}{args}\n  " + "\n  ".join(errors)


def test_bash_scripts_exist():
    for where, script in find_scripts(load_notebook()):
        assert (ROOT / script).is_file(), f"{where}: {script} does not exist"


def test_notebook_installs_only_what_the_recipes_need():
    """requirements.txt and mathlite with --no-deps; never requirements-dev.txt (its ipython>=8 fights
    Colab's pinned IPython, and its test tools are not needed), nor scripts/setup.sh (which installs it)."""
    code = "\n".join(cell_text(c) for c in load_notebook()["cells"] if c["cell_type"] == "code")
    pip = [line.strip() for line in code.splitlines() if re.search(r"\bpip3?\s+install\b", line)]
    assert any(re.search(r"-r\s+requirements\.txt\b", line) for line in pip), pip
    assert any("--no-deps" in line.split() and line.split()[-1] == "." and "-e" in line.split() for line in pip), pip
    assert "requirements-dev" not in code and "scripts/setup.sh" not in code
    dev_only = {"pytest", "hypothesis", "nbformat", "ipython", "math-verify"}
    needed = {re.split(r"[<>=\s#]", line.strip())[0].lower() for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert not needed & dev_only, needed & dev_only


def test_gpu_check_cell_uses_compute_capability():
    """torch.cuda.is_bf16_supported() says True on a T4 (emulated bf16): the check reads the capability."""
    code = "\n".join(cell_text(c) for c in load_notebook()["cells"] if c["cell_type"] == "code")
    assert "is_bf16_supported" not in code and "get_device_capability() >= (8, 0)" in code


# ---------------------------------------------------------------------------- the checker itself


def test_checker_accepts_good_commands():
    assert check_command("recipes/01_ssft.py", ' --preset t4 --run "{RUN}" --train_size 500 --max_steps=200') == []
    assert check_command("recipes/01_ssft.py", " --preset smoke --train-size 3 --debug --force") == []
    assert check_command("recipes/04_rerank.py", " --preset t4 --K_values 1,3 --run $RUN 2>&1 | tee log.txt") == []
    assert check_command("recipes/02_sample.py", " --preset t4 --n 8  # a comment --bogus 1") == []


def test_checker_rejects_a_made_up_flag():
    errors = check_command("recipes/01_ssft.py", " --preset t4 --made_up_flag 3")
    assert len(errors) == 1 and "--made_up_flag" in errors[0]
    (where, recipe, args), = find_commands(
        {"cells": [{"cell_type": "code", "source": ["!python recipes/02_sample.py --preset t4 --temprature 0.5\n"]}]})
    assert recipe == "recipes/02_sample.py" and check_command(recipe, args)


@pytest.mark.parametrize("recipe,args,needle", [
    ("recipes/01_ssft.py", " --preset v100", "--preset 'v100'"),  # not a preset
    ("recipes/01_ssft.py", " --preset t4 --max_steps lots", "expected int"),  # wrong type
    ("recipes/01_ssft.py", " --preset t4 --lr", "missing value"),
    ("recipes/01_ssft.py", " --preset t4 stray", "unexpected argument"),
    ("recipes/01_ssft.py", " --force --preset t4", "expected true/false"),  # parse_config reads '--preset' as the value
    ("recipes/99_missing.py", " --preset t4", "no such recipe"),
])
def test_checker_rejects_bad_commands(recipe, args, needle):
    errors = check_command(recipe, args)
    assert any(needle in e for e in errors), errors
