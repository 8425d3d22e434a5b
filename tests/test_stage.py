"""mathlite.stage (one step's folder: key, done/resume, publish, manifest) and the generators' paired
comparison of recipe 05 (mathlite.multitask.generator_pairs)."""

from dataclasses import dataclass

import pytest

from mathlite import files, metrics, multitask
from mathlite.errors import UserError
from mathlite.stage import Stage


@dataclass
class Cfg:
    lr: float = 1e-3
    seed: int = 0


def test_a_stage_is_done_only_when_finished_with_its_key(tmp_path):
    out = tmp_path / "step"
    st = Stage(out, "step", {"lr": 1e-3, "sizes": (1, 2)})
    assert st.done() is None
    st.begin(Cfg())
    (out / "checkpoint-1").mkdir()
    assert st.done() is None and files.read_manifest(out)["complete"] is False
    # an unfinished attempt with the same key is kept (it resumes) ...
    Stage(out, "step", {"lr": 1e-3, "sizes": [1, 2]}).begin(Cfg())
    assert (out / "checkpoint-1").exists()
    # ... one with another key is deleted
    Stage(out, "step", {"lr": 2e-3, "sizes": [1, 2]}).begin(Cfg())
    assert not (out / "checkpoint-1").exists()
    st = Stage(out, "step", {"lr": 2e-3, "sizes": [1, 2]})
    m = st.finish(Cfg(), metrics={"loss": 0.5})
    assert st.done() == files.read_json(out / "manifest.json") == m
    assert m["stage"] == "step" and m["key"] == {"lr": 2e-3, "sizes": [1, 2]} and m["key_hash"] == st.hash
    assert m["metrics"] == {"loss": 0.5} and m["config"] == {"lr": 1e-3, "seed": 0}
    # finished with other settings: refused with what differs, never silently mixed
    with pytest.raises(UserError, match=r"lr: 0\.002 -> 0\.003.*--force"):
        Stage(out, "step", {"lr": 3e-3, "sizes": [1, 2]}).done()


def test_publish_puts_a_whole_folder_in_place(tmp_path):
    st = Stage(tmp_path / "run", "ssft")
    (tmp_path / "run" / "adapter").mkdir(parents=True)
    (tmp_path / "run" / "adapter" / "old.txt").write_text("old")
    work = st.work_dir("adapter")
    assert work == tmp_path / "run" / ".adapter.tmp" and not work.exists()
    work.mkdir()
    (work / "new.txt").write_text("new")
    assert st.publish(work, "adapter") == tmp_path / "run" / "adapter"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["adapter"]
    assert [p.name for p in (tmp_path / "run" / "adapter").iterdir()] == ["new.txt"]
    # the manifest can travel inside the work folder of the stage folder itself
    st = Stage(tmp_path / "ev", "evaluator", {"k": 1})
    work = st.work_dir()
    work.mkdir()
    st.finish(Cfg(), work=work)
    assert st.done() is None
    st.publish(work)
    assert st.done()["key"] == {"k": 1}


def _chosen(correct_by_method):
    return [{"id": f"p{i}", "correct": {m: v[i] for m, v in correct_by_method.items()}}
            for i in range(len(next(iter(correct_by_method.values()))))]


def test_generator_pairs_count_wins_losses_ties_per_method():
    mt = _chosen({"maj1": [1, 1, 1, 1, 1, 1, 0, 0], "greedy": [1, 0, 0, 0, 0, 0, 0, 0]})
    ssft = _chosen({"maj1": [0, 0, 0, 0, 0, 0, 0, 1], "greedy": [1, 0, 0, 0, 0, 0, 0, 0]})
    control = _chosen({"maj1": [1, 1, 1, 1, 1, 1, 0, 0], "greedy": [0, 0, 0, 0, 0, 0, 0, 1]})
    pairs = multitask.generator_pairs({"ssft": ssft, "multitask": mt, "control": control}, ["greedy", "maj1"],
                                      n_boot=500, seed=0)
    got = {(c.method, c.baseline): (c.wins, c.losses, c.ties, round(c.diff, 3)) for c in pairs}
    assert got == {("multitask:greedy", "ssft:greedy"): (0, 0, 8, 0.0),
                   ("multitask:maj1", "ssft:maj1"): (6, 1, 1, 0.625),
                   ("multitask:greedy", "control:greedy"): (1, 1, 6, 0.0),
                   ("multitask:maj1", "control:maj1"): (0, 0, 8, 0.0)}
    c = next(c for c in pairs if c.method == "multitask:maj1" and c.baseline == "ssft:maj1")
    assert c.p_value == metrics.sign_test(6, 1) == pytest.approx(16 / 128)
    assert c.ci_low <= c.diff <= c.ci_high and c.label == "multitask: Maj1@N"
    text = multitask.pairs_markdown(pairs)
    assert "| multitask: Maj1@N | ssft: Maj1@N | 6 | 1 | 1 | +62.5 |" in text
    assert "**not shown**: The multi-task generator beats the SSFT generator at Maj1@N. " in text


def test_generator_pairs_refuse_reports_of_other_problems():
    a, b = _chosen({"maj1": [1, 0]}), _chosen({"maj1": [1, 0]})
    b[0]["id"] = "other"
    with pytest.raises(ValueError, match="other problems"):
        multitask.generator_pairs({"ssft": a, "multitask": b}, ["maj1"], n_boot=10, seed=0)
