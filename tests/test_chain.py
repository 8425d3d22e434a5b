"""The smoke chain end to end (01 -> 05 through run_all.py): every stage leaves what the next one and
the user need, a rerun reuses finished stages, and the numbers are the recorded ones.

Regression values (as torchtune checks a tiny run's loss): recorded from `MATHLITE_THREADS=1 python
recipes/run_all.py --preset smoke` on the CPU model (seeded data order, seeded LoRA init, bf16 weights).
Counts must match exactly. A loss must match within LOSS_TOL (about 2% of it): with another thread count
or CPU the bf16 matmuls sum in another order and move the loss a little, while a change of the data, the
prompt, the loss mask or the initialisation moves it by more.
"""

import json
import subprocess
import sys

import pytest

from conftest import REPO
from mathlite import models, sampling

pytestmark = pytest.mark.slow

LOSS_TOL = 0.02  # absolute, on losses near 1.1
SSFT_LOSS = 1.1240  # mean training loss of the 3 SSFT steps (metrics.json "train_loss"; batches grouped by length)
MULTITASK_LOSS = 1.1295  # of the 2 generator steps after the evaluator stage (batches grouped by length)
CONTROL_LOSS = 1.1269  # of the 2 generator steps of the control (no evaluator stage)


def _json(path):
    return json.loads(path.read_text())


def test_ssft_saves_a_loadable_adapter(smoke_run):
    from peft import PeftModel

    ssft = smoke_run / "ssft"
    manifest = _json(ssft / "manifest.json")
    assert manifest["complete"] and manifest["config"]["preset"] == "smoke"
    assert {"torch", "transformers", "trl", "peft"} <= set(manifest["versions"])
    assert len(manifest["data_fingerprint"]) == 12
    metrics = _json(ssft / "metrics.json")
    assert metrics["steps"] == manifest["config"]["max_steps"] == 3
    assert (metrics["train_examples"], metrics["eval_problems"], metrics["tokens_seen"]) == (24, 4, 1434)
    assert metrics["train_loss"] == pytest.approx(SSFT_LOSS, abs=LOSS_TOL)
    # 3 steps teach the 135M model nothing measurable: 0 of the 4 held-out problems, before and after
    assert (metrics["greedy_before"], metrics["greedy_after"]) == (0.0, 0.0)
    base = models.load_model(models.OFFLINE_MODEL, quant="none")
    model = PeftModel.from_pretrained(base, str(ssft / "adapter"))
    assert any("lora_A" in n for n, _ in model.named_parameters())
    assert not (ssft / "checkpoints").exists()  # the adapter is the artifact; checkpoints are cleaned up


def test_samples_are_graded_and_complete(smoke_run):
    for split in ("train", "test"):
        path = smoke_run / "samples" / f"samples-{split}.jsonl"
        by_id = sampling.read_samples(path)
        assert len(by_id) == 4
        for entry in by_id.values():
            assert entry["greedy"] is not None and [s["k"] for s in entry["samples"]] == [0, 1]
            for rec in [entry["greedy"], *entry["samples"]]:
                sampling.validate_record(rec)
        assert _json(sampling.output_paths(path).meta)["complete"]


def test_evaluator_and_report_files(smoke_run):
    ev = _json(smoke_run / "evaluator" / "evaluator.json")
    assert ev["kind"] == "head" and ev["loss"] == "pointwise"
    assert (smoke_run / "evaluator" / "adapter_model.safetensors").exists()
    report = smoke_run / "report"
    for name in ("results.json", "results.md", "results.csv", "accuracy_vs_n.png", "cost_vs_k.png"):
        assert (report / name).stat().st_size > 0, name
    metrics = _json(smoke_run / "evaluator" / "metrics.json")
    assert (metrics["train_examples"], metrics["val_problems"], metrics["val_solutions"]) == (4, 2, 4)
    res = _json(report / "results.json")
    assert {"greedy", "maj1", "rr_all", "rr_maj1", "w_rr", "pass_n"} <= set(res["methods"])
    assert res["meta"]["N"] == 2 and res["meta"]["n_problems"] == 4
    # none of the 4 x (1 + 2) smoke solutions is right, so every method scores 0 of 4
    assert {m: s["accuracy"] for m, s in res["methods"].items()} == {m: 0.0 for m in res["methods"]}
    assert res["methods"]["rr_all"]["cost_share"] == 1.0 and res["methods"]["maj1"]["cost_share"] == 0.0


def test_report_recomputes_from_its_own_files(smoke_run):
    """04's choices file + results.json alone give the same numbers, with no model and no other file."""
    report = smoke_run / "report"
    choices = [json.loads(line) for line in (report / "choices-test.jsonl").read_text().splitlines()]
    assert len(choices) == 4 and all(len(c["samples"]) == 2 and "evaluator" in c["samples"][0]["scores"] for c in choices)
    proc = subprocess.run([sys.executable, "-m", "mathlite.report", "--recompute", str(report)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_multitask_comparison_and_summary(smoke_run):
    metrics = _json(smoke_run / "multitask" / "metrics.json")
    assert metrics["stage2_generator"]["steps"] == metrics["control_generator"]["steps"] == 2
    assert metrics["stage2_generator"]["train_loss"] == pytest.approx(MULTITASK_LOSS, abs=LOSS_TOL)
    assert metrics["control_generator"]["train_loss"] == pytest.approx(CONTROL_LOSS, abs=LOSS_TOL)
    cols = _json(smoke_run / "multitask" / "comparison.json")["columns"]
    assert set(cols) == {"ssft", "multitask", "control"}
    assert {(label, m, s["n_problems"], s["accuracy"]) for label, c in cols.items() for m, s in c.items()
            if m in ("greedy", "maj1", "pass_n")} == {(label, m, 4, 0.0) for label in cols
                                                        for m in ("greedy", "maj1", "pass_n")}
    summary = _json(smoke_run / "summary.json")
    assert set(summary["seconds"]) == {"01", "02", "03", "04", "05"}
    stages = [row[0] for row in summary["rows"]]
    assert stages == ["01 SSFT", "02 samples (train)", "02 samples (test)", "03 evaluator", "04 report", "05 multitask"]
    results = {row[0]: row[2] for row in summary["rows"]}
    assert results["01 SSFT"] == "greedy 0.0% -> 0.0% on 4 held-out problems"
    assert results["02 samples (test)"] == "4 problems x 2: greedy 0.0%, sample 0.0%, pass@N 0.0%"
    md = (smoke_run / "summary.md").read_text().splitlines()
    assert md[2:4] == ["| stage | time | result |", "| --- | --- | --- |"] and len(md) == 4 + len(stages)


def test_rerun_reuses_finished_stages(smoke_run):
    stamp = (smoke_run / "ssft" / "manifest.json").stat().st_mtime_ns
    proc = subprocess.run([sys.executable, str(REPO / "recipes" / "01_ssft.py"), "--preset", "smoke", "--run", str(smoke_run)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (smoke_run / "ssft" / "manifest.json").stat().st_mtime_ns == stamp  # not trained again
    assert not (smoke_run / "ssft" / "checkpoints").exists()
