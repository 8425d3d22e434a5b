"""bench/gpu_bench.py in --tiny mode on CPU: every measurement's code path (random-weight 4-bit
conversion, QLoRA and bf16 LoRA steps, generate, the seq-cls evaluator), the JSON it writes,
failure isolation and the time budget. The real run needs a GPU (bench/GPU.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_bench.py"
ALL = ["qlora_train", "bf16_lora_train", "generate_4bit", "evaluator_4bit", "generate_4bit_lora"]

pytest.importorskip("bitsandbytes")
pytest.importorskip("peft")


def _load_module():
    return load_script("bench/gpu_bench.py")


@pytest.mark.slow
def test_tiny_run_measures_everything(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    path = tmp_path / "gpu_bench_tiny_cpu.json"
    r = json.loads(path.read_text())
    assert r["tiny"] is True
    for key in ("torch", "transformers", "peft", "bitsandbytes"):
        assert r["machine"][key], key
    m = r["measurements"]
    assert list(m) == ALL
    assert all(v["status"] == "ok" for v in m.values()), {k: v["status"] for k, v in m.items()}

    for name in ("qlora_train", "bf16_lora_train"):
        t = m[name]
        assert t["tokens_per_s"] > 0 and t["steps_timed"] >= 1
        assert t["lora_b_updated"] is True  # gradients reached every LoRA layer
        assert t["lora_layers"] == 7 * r["model"]["num_hidden_layers"]  # all-linear, lm_head excluded
    # 4-bit: every linear of every decoder layer quantized (7 per layer), heads kept
    assert m["qlora_train"]["linear4bit_layers"] == 7 * r["model"]["num_hidden_layers"]
    assert "linear4bit_layers" not in m["bf16_lora_train"]
    for name in ("generate_4bit", "generate_4bit_lora"):
        g = m[name]
        assert g["new_tokens"] == g["new_tokens_requested"]  # exact count: EOS cannot stop it early
        assert g["new_tokens_per_s"] > 0
    assert m["evaluator_4bit"]["solutions_per_s"] > 0
    assert r["summary"]["qlora_over_bf16_tokens_per_s"] > 0
    assert "QLoRA / bf16 LoRA" in proc.stdout and "measurement" in proc.stdout  # the table


def test_failure_is_isolated_and_budget_skips(tmp_path, monkeypatch):
    gb = _load_module()
    threads = torch.get_num_threads()

    def boom(*a, **k):
        raise RuntimeError("simulated CUDA out of memory")

    monkeypatch.setattr(gb, "measure_generate", boom)
    try:
        r = gb.run(gb.parse_args(["--tiny", "--out", str(tmp_path / "a.json"), "--only", "generate_4bit,evaluator_4bit"]))
        saved = json.loads((tmp_path / "a.json").read_text())
        assert saved["measurements"]["generate_4bit"]["status"].startswith("error: RuntimeError: simulated")
        assert "traceback_tail" in saved["measurements"]["generate_4bit"]
        assert saved["measurements"]["evaluator_4bit"]["status"] == "ok"
        assert r["measurements"] == saved["measurements"]

        gb.run(gb.parse_args(["--tiny", "--out", str(tmp_path / "b.json"), "--budget-s", "0"]))
        skipped = json.loads((tmp_path / "b.json").read_text())["measurements"]
        assert list(skipped) == ALL
        assert all(v["status"] == "skipped: time budget" for v in skipped.values())
    finally:
        torch.set_num_threads(threads)


def test_refuses_full_size_without_gpu_and_unknown_names(tmp_path):
    gb = _load_module()
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            gb.run(gb.parse_args(["--out", str(tmp_path)]))
    with pytest.raises(SystemExit, match="unknown measurement"):
        gb.run(gb.parse_args(["--tiny", "--out", str(tmp_path), "--only", "nope"]))
    assert gb.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
