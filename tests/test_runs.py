"""Config parsing, atomic writes and manifests: the plumbing every recipe relies on."""

import math
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

import pytest

from mathlite import runs


@dataclass
class Cfg:
    lr: float = 1e-4
    steps: int = 10
    name: str = "x"
    force: bool = False
    levels: tuple[int, ...] = (1, 2)
    limit: int | None = None
    run: str = ""
    preset: str = ""


PRESETS = {"cpu": dict(steps=5), "smoke": dict(steps=1, name="tiny")}


def test_defaults_preset_and_overrides():
    cfg = runs.parse_config(Cfg, PRESETS, ["--preset", "smoke", "--lr=3e-4", "--levels", "1,2,3", "--force"])
    assert cfg.steps == 1 and cfg.name == "tiny" and cfg.lr == 3e-4
    assert cfg.levels == (1, 2, 3) and cfg.force is True
    assert cfg.run == "runs/smoke" and cfg.preset == "smoke"
    cfg = runs.parse_config(Cfg, PRESETS, ["--force", "--preset=cpu", "--steps", "7", "--limit", "none"])
    assert cfg.force is True  # a bare boolean flag followed by another flag
    assert cfg.steps == 7 and cfg.limit is None and cfg.run == "runs/cpu"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--stpes", "3"], "did you mean --steps"),
        (["--steps", "three"], "expected int"),
        (["--force", "maybe"], "expected true/false"),
        (["--preset", "huge"], "unknown preset"),
        (["steps=3"], "unexpected argument"),
        (["--lr"], "missing value"),
    ],
)
def test_bad_flags_are_one_line_errors(argv, message):
    with pytest.raises(runs.UserError, match=message) as e:
        runs.parse_config(Cfg, PRESETS, ["--preset", "cpu", *argv])
    assert "\n" not in str(e.value)


def test_atomic_json_and_manifest(tmp_path):
    runs.atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert runs.read_json(tmp_path / "a.json") == {"x": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    cfg = runs.parse_config(Cfg, PRESETS, ["--preset", "cpu"])
    assert runs.stage_done(tmp_path) is None
    runs.write_manifest(tmp_path, cfg, complete=False)
    assert runs.stage_done(tmp_path) is None  # an unfinished stage is not done
    runs.write_manifest(tmp_path, cfg, complete=True, seed=0)
    m = runs.stage_done(tmp_path)
    assert m["config"]["steps"] == 5 and "torch" in m["versions"] and m["machine"]["cpus"] >= 1


def test_read_json_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(runs.UserError, match="bad.json: not valid JSON"):
        runs.read_json(bad)
    with pytest.raises(runs.UserError, match="missing.json: file not found"):
        runs.read_json(tmp_path / "missing.json")


# ---------------------------------------------------------------------------- files


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_honour_the_umask(tmp_path, umask):
    """A written file gets the mode open() would give it (0666 minus the umask), not mkstemp's 0600."""
    from mathlite import files

    old = os.umask(umask)
    try:
        files.atomic_write_json(tmp_path / "a.json", {"x": 1})
        files.atomic_write(tmp_path / "b.bin", lambda p: p.write_bytes(b"1"))
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    assert {stat.S_IMODE((tmp_path / n).stat().st_mode) for n in ("a.json", "b.bin", "plain.txt")} == {want}


def test_number_formatter_is_nan_safe():
    from mathlite.report import fmt

    assert fmt(0.25) == "0.250" and fmt(0.25, ".1%") == "25.0%" and fmt(0.25, ".1f", scale=100) == "25.0"
    assert fmt(None) == fmt(float("nan")) == "-" and fmt(math.nan, missing="n/a") == "n/a"


# ---------------------------------------------------------------------------- types, YAML, --help


@dataclass
class Typed:
    style: Literal["math", "steps"] = "steps"  # training targets
    # a comment line above a field without its own comment is its doc
    levels: tuple[Literal[1, 2, 3], ...] = (1, 2)
    gen2_lr: float | None = None  # None: the SSFT run's learning rate
    steps: int = 3
    force: bool = False
    run: str = ""
    preset: str = ""


TYPED_PRESETS = {"cpu": dict(), "smoke": dict(steps=1), "bad": dict(style="prose")}


def test_literal_choices_are_checked_in_one_place():
    cfg = runs.parse_config(Typed, TYPED_PRESETS, ["--preset", "cpu", "--style", "math", "--levels", "1,3"])
    assert cfg.style == "math" and cfg.levels == (1, 3)
    with pytest.raises(runs.UserError, match=r"--style must be one of math, steps; got 'prose'"):
        runs.parse_config(Typed, TYPED_PRESETS, ["--preset", "cpu", "--style", "prose"])
    # a Literal of ints: the text names one of the choices
    with pytest.raises(runs.UserError, match="--levels must be one of 1, 2, 3; got 'x'"):
        runs.parse_config(Typed, TYPED_PRESETS, ["--preset", "cpu", "--levels", "1,x"])
    with pytest.raises(runs.UserError, match="--levels must be one of 1, 2, 3; got '4'"):
        runs.parse_config(Typed, TYPED_PRESETS, ["--preset", "cpu", "--levels", "4"])
    # a preset is checked like a flag: a typo in a recipe's PRESETS fails at once, naming the field
    with pytest.raises(runs.UserError, match="--style must be one of"):
        runs.parse_config(Typed, TYPED_PRESETS, ["--preset", "bad"])


def test_optional_fields_take_none_and_numbers():
    assert runs.parse_config(Typed, TYPED_PRESETS, ["--preset", "cpu"]).gen2_lr is None
    assert runs.parse_config(Typed, TYPED_PRESETS, ["--preset", "cpu", "--gen2_lr", "2e-4"]).gen2_lr == 2e-4
    assert runs.parse_config(Typed, TYPED_PRESETS, ["--preset", "cpu", "--gen2_lr", "none"]).gen2_lr is None


def test_yaml_config_between_preset_and_flags(tmp_path):
    f = tmp_path / "my.yaml"
    f.write_text("preset: smoke\nstyle: math\ngen2_lr: 1e-3   # YAML reads this as a string\nlevels: [1, 3]\n")
    cfg = runs.parse_config(Typed, TYPED_PRESETS, ["--config", str(f)])
    assert (cfg.preset, cfg.steps, cfg.style, cfg.gen2_lr, cfg.levels) == ("smoke", 1, "math", 1e-3, (1, 3))
    cfg = runs.parse_config(Typed, TYPED_PRESETS, ["--config", str(f), "--style", "steps", "--preset", "cpu"])
    assert (cfg.preset, cfg.steps, cfg.style) == ("cpu", 3, "steps")  # flags win over the file


@pytest.mark.parametrize("text, message", [
    ("stlye: math\n", r"my.yaml: unknown flag --stlye \(did you mean --style\?\)"),
    ("style: prose\n", "my.yaml: --style must be one of math, steps"),
    ("steps: 2.5\n", "my.yaml: --steps: expected int, got 2.5"),
    ("force: 1\n", "my.yaml: --force: expected bool"),
    ("- a\n- b\n", "my.yaml: expected `key: value` lines, got a list"),
    ("style: [\n", r"my.yaml: not valid YAML \(line 2\)"),
])
def test_bad_yaml_configs_are_one_line_errors(tmp_path, text, message):
    f = tmp_path / "my.yaml"
    f.write_text(text)
    with pytest.raises(runs.UserError, match=message) as e:
        runs.parse_config(Typed, TYPED_PRESETS, ["--preset", "cpu", "--config", str(f)])
    assert "\n" not in str(e.value)
    with pytest.raises(runs.UserError, match="missing.yaml: config file not found"):
        runs.parse_config(Typed, TYPED_PRESETS, ["--config", str(tmp_path / "missing.yaml")])


def test_help_lists_every_field_with_type_default_presets_and_comment(capsys):
    with pytest.raises(SystemExit) as e:
        runs.parse_config(Typed, TYPED_PRESETS, ["--steps", "oops", "--help"])  # --help wins over a bad flag
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--style {math,steps}  (default: 'steps')\n      training targets\n      presets: bad: 'prose'" in out
    assert "--levels {1,2,3},...  (default: (1, 2))\n      a comment line above a field without its own comment" in out
    assert "--gen2_lr float | None  (default: None)\n      None: the SSFT run's learning rate" in out
    assert "--steps int  (default: 3)\n      presets: smoke: 1; bad" not in out  # only presets that set it
    assert "--steps int  (default: 3)\n      presets: smoke: 1\n" in out
    assert "presets: cpu, smoke, bad" in out and "--config FILE.yaml" in out


def test_check_resume(tmp_path, capsys):
    cfg = runs.parse_config(Cfg, PRESETS, ["--preset", "cpu"])
    out = tmp_path / "stage"
    assert runs.check_resume(out, cfg, "thing", "[t]") is False  # nothing there
    runs.write_manifest(out, cfg, complete=True)
    assert runs.check_resume(out, cfg, "thing", "[t]") is True  # this very work, finished
    moved = runs.parse_config(Cfg, PRESETS, ["--preset", "cpu", "--run", "elsewhere"])
    assert runs.check_resume(out, moved, "thing", "[t]") is True  # where it lives is not part of the work
    other = runs.parse_config(Cfg, PRESETS, ["--preset", "cpu", "--steps", "9"])
    with pytest.raises(runs.UserError, match=r"holds a finished thing with another config \(steps: 5 -> 9\)"):
        runs.check_resume(out, other, "thing", "[t]")
    assert runs.check_resume(out, runs.parse_config(Cfg, PRESETS, ["--preset", "cpu", "--steps", "9", "--force"]),
                             "thing", "[t]") is False
    runs.write_manifest(out, cfg, complete=False)
    (out / "checkpoints").mkdir()
    with pytest.raises(runs.UserError, match="holds an unfinished thing with another config"):
        runs.check_resume(out, other, "thing", "[t]", resumable=True)
    assert runs.check_resume(out, other, "thing", "[t]") is False  # not resumable: it starts over


def test_importing_runs_changes_no_global_state():
    """The bitsandbytes log level is set by run_main (quiet_library_warnings), not by importing mathlite."""
    code = ("import logging; import mathlite.runs, mathlite.sampling, mathlite.evaluator; "
            "print(logging.getLogger('bitsandbytes').level)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "0", proc.stderr[-2000:]


def test_machine_names_the_cpu_and_its_bf16_instructions():
    """Benchmarks record which CPU measured them: bf16 rates differ ~2x between AMX and AVX512-BF16 machines."""
    from mathlite import files

    info = files.machine()
    assert info["cpus"] >= 1 and info["cpu"]
    if sys.platform.startswith("linux"):
        flags = open("/proc/cpuinfo").read()
        assert ("amx_bf16" in info["cpu_bf16"]) == (" amx_bf16" in flags)
        assert set(info["cpu_bf16"]) <= {"amx_bf16", "avx512_bf16"}
