"""`--help` on every recipe, and recipe configs from YAML: what a user sees before running anything."""

import dataclasses
import json
import subprocess
import sys

import pytest
from conftest import REPO, load_recipe

from mathlite import runs

STEMS = ["01_ssft", "02_sample", "03_evaluator", "04_rerank", "05_multitask", "run_all", "export"]

# every recipe's --help in one interpreter (torch is imported once), then which model libraries it loaded
_PROBE = """
import contextlib, io, json, runpy, sys
out = {}
for path in sys.argv[1:]:
    buf = io.StringIO()
    sys.argv = [path, "--help"]
    code = "returned"
    with contextlib.redirect_stdout(buf):
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as e:
            code = e.code
    out[path] = {"code": code, "text": buf.getvalue()}
heavy = [m for m in ("transformers", "trl", "peft", "bitsandbytes", "datasets", "vllm") if m in sys.modules]
print(json.dumps({"help": out, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def helps() -> dict:
    paths = [str(REPO / "recipes" / f"{stem}.py") for stem in STEMS]
    proc = subprocess.run([sys.executable, "-c", _PROBE, *paths], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("stem", STEMS)
def test_help_lists_every_constant(helps, stem):
    """Every field with its type and default, each preset's value, the comment at the top of the
    recipe, and the recipe's own docstring."""
    got = helps["help"][str(REPO / "recipes" / f"{stem}.py")]
    assert got["code"] == 0
    text = got["text"]
    module = load_recipe(stem)
    types_ = runs.field_types(module.Config)
    for f in dataclasses.fields(module.Config):
        assert f"  --{f.name} {runs.type_name(types_[f.name])}  (default: {f.default!r})" in text
    docs = runs.field_docs(module.Config)
    assert docs, "the fields' comments were not found"
    for section, comment in docs.values():
        assert comment in text and section in text
    for preset, values in module.PRESETS.items():
        for key, value in values.items():
            assert f"{preset}: {value!r}" in text, (preset, key)
    assert module.__doc__.strip().splitlines()[0] in text


def test_help_shows_choices_and_comments_as_written(helps):
    ssft = helps["help"][str(REPO / "recipes" / "01_ssft.py")]["text"]
    assert "--style {math,steps,prm800k,both}  (default: 'steps')\n      training targets (paper Table 2)" in ssft
    assert "--quant {auto,4bit,none}" in ssft and "--train_size int | None  (default: 2000)" in ssft
    # a comment block above a field without its own comment is that field's doc
    assert "--data str  (default: 'synthetic:levels=1-3')\n      \"synthetic[:options]\", a MATH folder" in ssft
    multitask = helps["help"][str(REPO / "recipes" / "05_multitask.py")]["text"]
    # comment lines above a field with its own comment head a section
    assert "  # stage 1: the evaluator (recipe 03's settings, verbal scorer)\n  --kind {head,verbal}" in multitask
    assert "--gen2_lr float | None  (default: None)\n      None: the SSFT run's learning rate" in multitask


def test_help_loads_no_model_library(helps):
    """--help answers before transformers, trl, peft or vllm load (and so before any model)."""
    assert helps["heavy"] == []


def test_help_and_bad_flags_from_the_command_line():
    script = str(REPO / "recipes" / "run_all.py")
    proc = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python run_all.py")
    assert "--stages {01,02,03,04,05},..." in proc.stdout
    proc = subprocess.run([sys.executable, script, "--stages", "01,06"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--stages must be one of 01, 02, 03, 04, 05; got '06'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_recipe_config_from_yaml(tmp_path):
    ssft = load_recipe("01_ssft")
    f = tmp_path / "ssft.yaml"
    f.write_text("preset: smoke\nstyle: math   # training targets\nlr: 5e-4\ntrain_size: null\nquant: none\n")
    cfg = runs.parse_config(ssft.Config, ssft.PRESETS, ["--config", str(f), "--lora_r", "4"])
    assert (cfg.preset, cfg.style, cfg.lr, cfg.train_size, cfg.quant) == ("smoke", "math", 5e-4, None, "none")
    assert cfg.max_steps == 3 and cfg.lora_r == 4  # the preset's value, and the flag over the file
    f.write_text("quant: 8bit\n")
    with pytest.raises(runs.UserError, match=r"ssft.yaml: --quant must be one of auto, 4bit, none; got '8bit'"):
        runs.parse_config(ssft.Config, ssft.PRESETS, ["--config", str(f)])


@pytest.mark.parametrize("stem", STEMS)
def test_presets_pass_the_type_checks(stem):
    """Every preset of every recipe builds a config whose values have the declared types."""
    module = load_recipe(stem)
    for preset in module.PRESETS:
        cfg = runs.parse_config(module.Config, module.PRESETS, ["--preset", preset])
        assert cfg.preset == preset
