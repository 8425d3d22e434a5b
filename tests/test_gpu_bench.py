"""bench/gpu_bench.py in --tiny mode on CPU: every measurement's code path (random-weight 4-bit
conversion, recipe 01's SFTTrainer path, recipe 02's decode loop, recipe 03's scorer), the JSON it
writes, failure isolation and the time budget. The real run needs a GPU (bench/GPU.md)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_bench.py"
ALL = ["ssft_train", "decode", "score"]

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
    layers = r["model"]["num_hidden_layers"]
    t = m["ssft_train"]
    # the recipe's trainer options on the GPU path (paged AdamW falls back to unpaged on CPU)
    assert t["optimizer"] == "paged_adamw_8bit" and t["gradient_checkpointing"] is True
    assert t["tokens_per_s"] > 0 and t["steps_timed"] >= 1 and t["lora_b_updated"] is True
    assert t["lora_layers"] == 7 * layers and t["linear4bit_layers"] == 7 * layers  # all-linear, heads kept
    d = m["decode"]
    assert d["new_tokens"] > 0 and d["new_tokens_per_s"] > 0 and d["batch"] == 4 and d["prompts"] == 2
    assert m["score"]["tokens_per_s"] > 0 and m["score"]["score_head_dtype"] == "float32"
    assert set(r["summary"]) == set(ALL)
    assert "measurement" in proc.stdout  # the table


def test_full_size_shapes_are_the_recipes_a100_presets():
    gb = _load_module()
    s = gb.Shapes.from_presets()
    assert (s.batch_size, s.grad_accum, s.seq_len, s.lora_r, s.lora_alpha) == (8, 2, 1024, 64, 128)
    assert (s.gen_batch, s.gen_n, s.eval_batch) == (128, 64, 16)


def test_failure_is_isolated_and_budget_skips(tmp_path, monkeypatch):
    gb = _load_module()
    threads = torch.get_num_threads()
    before = os.environ.get("MATHLITE_GPU_PATH")

    def boom(*a, **k):
        raise RuntimeError("simulated CUDA out of memory")

    monkeypatch.setattr(gb, "measure_decode", boom)
    try:
        r = gb.run(gb.parse_args(["--tiny", "--out", str(tmp_path / "a.json"), "--only", "decode,score"]))
        saved = json.loads((tmp_path / "a.json").read_text())
        assert saved["measurements"]["decode"]["status"].startswith("error: RuntimeError: simulated")
        assert "traceback_tail" in saved["measurements"]["decode"]
        assert saved["measurements"]["score"]["status"] == "ok"
        assert r["measurements"] == saved["measurements"]
        assert os.environ.get("MATHLITE_GPU_PATH") == before  # the CPU rehearsal switch is put back

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
