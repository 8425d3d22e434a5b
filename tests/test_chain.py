"""The smoke chain end to end (01 -> 05 through run_all.py): every stage leaves what the next one and
the user need, and a rerun reuses finished stages."""

import json
import subprocess
import sys

import pytest

from conftest import REPO
from mathlite import models, sampling

pytestmark = pytest.mark.slow


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
    assert metrics["steps"] == manifest["config"]["max_steps"]
    assert 0 <= metrics["greedy_before"] <= 1 and 0 <= metrics["greedy_after"] <= 1
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
    res = _json(report / "results.json")
    assert {"greedy", "maj1", "rr_all", "rr_maj1", "w_rr", "pass_n"} <= set(res["methods"])
    assert res["meta"]["N"] == 2 and res["meta"]["n_problems"] == 4
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
    assert (smoke_run / "multitask" / "comparison.md").exists()
    summary = _json(smoke_run / "summary.json")
    assert set(summary["seconds"]) == {"01", "02", "03", "04", "05"}
    assert (smoke_run / "summary.md").read_text().count("|") > 10


def test_rerun_reuses_finished_stages(smoke_run):
    stamp = (smoke_run / "ssft" / "manifest.json").stat().st_mtime_ns
    proc = subprocess.run([sys.executable, str(REPO / "recipes" / "01_ssft.py"), "--preset", "smoke", "--run", str(smoke_run)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "already finished" in proc.stdout
    assert (smoke_run / "ssft" / "manifest.json").stat().st_mtime_ns == stamp
