"""Config parsing, atomic writes and manifests: the plumbing every recipe relies on."""

from dataclasses import dataclass

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
