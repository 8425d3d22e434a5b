"""Recipe 05 (multi-task sequential fine-tuning) and the export, on the smoke presets.

The slow tests read the session's smoke chain (conftest's `smoke_run`: recipes 01 -> 05 through
run_all.py, as a user runs them), so the chain is built once for this module and tests/test_chain.py.
What is checked is mechanics (every stage finishes, resumes, and hands the next one an adapter of the
right kind; the export is exact), not accuracy: the smoke models are far too small and short-trained.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_recipe

from mathlite import runs

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"


_load = load_recipe


def _recipe(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MATHLITE_THREADS": "1"}  # as the other recipe tests
    proc = subprocess.run([sys.executable, str(RECIPES / script), *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=900)
    if check:
        assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


# ---------------------------------------------------------------------------- fast: refusals


def test_head_scorer_is_refused_with_the_reason(tmp_path):
    mt = _load("05_multitask")
    with pytest.raises(runs.UserError) as e:
        mt.main(["--preset", "smoke", "--kind", "head", "--run", str(tmp_path)])
    msg = str(e.value)
    assert "--kind verbal" in msg and "one adapter" in msg and "\n" not in msg


def _fake_adapter(folder: Path, **conf) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "task_type": "CAUSAL_LM", **conf}))
    return folder


def test_export_refuses_push_without_token_and_score_heads(tmp_path, monkeypatch):
    ex = _load("export")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    gen = _fake_adapter(tmp_path / "gen")
    with pytest.raises(runs.UserError, match="HF_TOKEN"):
        ex.main(["--preset", "smoke", "--run", str(tmp_path), "--adapter", str(gen), "--model", "x/y",
                 "--push_to_hub", "me/model"])
    head = _fake_adapter(tmp_path / "head", task_type="SEQ_CLS", modules_to_save=["score"])
    with pytest.raises(runs.UserError, match="score-head"):
        ex.main(["--preset", "smoke", "--run", str(tmp_path), "--adapter", str(head), "--model", "x/y"])


# ---------------------------------------------------------------------------- slow: the smoke chain


@pytest.fixture(scope="module")
def multitask(smoke_run) -> Path:
    out = smoke_run / "multitask"
    assert runs.stage_done(out), "the session's smoke chain did not finish recipe 05"
    return out


def _generates(adapter: Path) -> list[int]:
    """Greedy continuation of one prompt by base + adapter loaded the plain PEFT way."""
    import torch

    from mathlite import data, models

    tok = models.load_tokenizer(models.OFFLINE_MODEL)
    model = models.load_adapter(models.load_model(models.OFFLINE_MODEL, quant="none"), adapter)
    assert type(model).__name__ == "PeftModelForCausalLM"
    ids = tok(data.build_prompt(tok, "What is 7 + 5?"), return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    return out[0, ids.input_ids.shape[1]:].tolist()


@pytest.mark.slow
def test_multitask_smoke_end_to_end_and_resume(smoke_run, multitask):
    for stage in ("stage1_evaluator", "stage2_generator", "control_generator", "samples-multitask", "samples-control"):
        assert runs.stage_done(multitask / stage), stage
    assert runs.stage_done(multitask)["config"]["preset"] == "smoke"
    # one table, three generators, the paper's headline rows with intervals
    text = (multitask / "comparison.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| Method"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Method", "ssft", "multitask", "control"]
    for row in ("Pass@1 (greedy)", "Maj1@N", "Pass@N (oracle)", "RR.All"):
        assert f"| {row} |" in text
    cols = json.loads((multitask / "comparison.json").read_text())["columns"]
    assert set(cols) == {"ssft", "multitask", "control"}
    assert all(c["maj1"]["n_problems"] == 4 and c["maj1"]["ci_high"] > c["maj1"]["ci_low"] for c in cols.values())
    # the same problems and the same number of samples for every generator
    from mathlite import sampling

    shapes = {}
    for label in ("ssft", "multitask", "control"):
        by_id = sampling.read_samples(multitask / f"samples-{label}" / "samples-test.jsonl")
        shapes[label] = {pid: (e["greedy"] is not None, len(e["samples"])) for pid, e in by_id.items()}
    assert shapes["ssft"] == shapes["multitask"] == shapes["control"]
    assert set(shapes["ssft"].values()) == {(True, 2)}

    # paired per problem: each (multitask vs ssft / control, method) count recomputed from the choices files
    from mathlite import metrics, samples

    chosen = {label: {c["id"]: c["correct"] for c in samples.load_choices(multitask / "report" / label /
                                                                          "choices-test.jsonl")}
              for label in ("ssft", "multitask", "control")}
    paired = json.loads((multitask / "comparison.json").read_text())["paired"]
    assert {(c["method"], c["baseline"]) for c in paired} == {
        (f"multitask:{m}", f"{b}:{m}") for b in ("ssft", "control") for m in cols["multitask"]}
    for c in paired:
        (a, m), (b, _) = c["method"].split(":"), c["baseline"].split(":")
        right = [(chosen[a][pid][m], chosen[b][pid][m]) for pid in chosen[a]]
        wins, losses = sum(x and not y for x, y in right), sum(y and not x for x, y in right)
        assert (c["wins"], c["losses"], c["ties"]) == (wins, losses, 4 - wins - losses)
        assert c["p_value"] == metrics.sign_test(wins, losses) and c["ci_low"] <= c["diff"] <= c["ci_high"]
    assert "## Which claims held here" in text and "The multi-task generator beats the SSFT generator at Maj1@N" in text

    # a rerun skips every finished stage (no training, no sampling: no stage folder is rewritten)
    # and rebuilds the same table
    stages = ("stage1_evaluator", "stage2_generator", "control_generator", "samples-multitask", "samples-control")
    stamps = {s: {p.name: p.stat().st_mtime_ns for p in (multitask / s).iterdir()} for s in stages}
    proc = _recipe("05_multitask.py", "--preset", "smoke", "--run", str(smoke_run))
    assert {s: {p.name: p.stat().st_mtime_ns for p in (multitask / s).iterdir()} for s in stages} == stamps
    assert json.loads((multitask / "comparison.json").read_text())["columns"] == cols
    # a finished stage is never silently mixed with other settings
    proc = _recipe("05_multitask.py", "--preset", "smoke", "--run", str(smoke_run), "--gen2_steps", "3", check=False)
    assert proc.returncode == 2 and "stage2_generator" in proc.stderr and "--force" in proc.stderr


@pytest.mark.slow
def test_after_the_evaluator_stage_the_adapter_is_still_a_generator(smoke_run, multitask):
    stage1 = multitask / "stage1_evaluator"
    conf = json.loads((stage1 / "adapter_config.json").read_text())
    assert conf["task_type"] == "CAUSAL_LM" and not conf.get("modules_to_save")  # no new parameters
    assert json.loads((stage1 / "evaluator.json").read_text())["kind"] == "verbal"
    # it trained: its LoRA weights moved away from the SSFT adapter's, same tensors otherwise
    from safetensors.torch import load_file

    ssft, ev = load_file(str(smoke_run / "ssft" / "adapter" / "adapter_model.safetensors")), load_file(
        str(stage1 / "adapter_model.safetensors"))
    assert ssft.keys() == ev.keys()
    assert any(not (ssft[k].float() == ev[k].float()).all() for k in ssft)
    assert len(_generates(stage1)) > 0


@pytest.mark.slow
def test_final_adapter_is_both_generator_and_verbal_evaluator(multitask):
    final = multitask / "stage2_generator"
    assert len(_generates(final)) > 0
    from mathlite.evaluator import Evaluator

    ev = Evaluator.load(final)
    assert ev.kind == "verbal"
    scores = ev.score(["What is 7 + 5?"] * 2, ["7 + 5 = 12. The answer is $\\boxed{12}$.",
                                                "7 + 5 = 13. The answer is $\\boxed{13}$."])
    assert all(0.0 < s < 1.0 for s in scores)
    # the report scored the test samples with it (recipe 04's cache names its kind)
    cache = json.loads((multitask / "report" / "multitask" / "scores-test.json").read_text())
    assert cache["cost"]["kind"] == "verbal" and cache["scores"]


@pytest.mark.slow
def test_export_merged_model_matches_base_plus_adapter(smoke_run, multitask, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from mathlite import data, export, models

    out = tmp_path / "merged"
    # the recipe, in process: fp32, so the merge adds no rounding of its own
    _load("export").main(["--preset", "smoke", "--run", str(smoke_run), "--dtype", "fp32", "--out", str(out)])
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in out.iterdir()}
    assert not list(out.parent.glob("merged.tmp"))
    merged = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    reference = models.load_adapter(export.load_unquantized_base(models.OFFLINE_MODEL, "fp32"),
                                    multitask / "stage2_generator")
    tok = models.load_tokenizer(str(out))
    for q in ("What is 7 + 5?", "Solve for $x$: $2x + 3 = 11$.", "What is the remainder when 17 is divided by 5?"):
        ids = tok(data.build_prompt(tok, q), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            a = merged.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
            b = reference.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
        assert a.tolist() == b.tolist(), q

    # the card reports what the run measured for this adapter, read from its report
    card = (out / "README.md").read_text()
    results = json.loads((multitask / "report" / "multitask" / "results.json").read_text())["methods"]
    g = results["greedy"]
    assert f"| {g['label']} | {100 * g['accuracy']:.1f} | [{100 * g['ci_low']:.1f}, {100 * g['ci_high']:.1f}] |" in card
    assert "samples-multitask/samples-test.jsonl" in card and "float32 weights" in card and "Not measured" not in card
