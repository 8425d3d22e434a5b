"""Dress rehearsal of the GPU presets' code path on CPU (no GPU in CI).

A tiny random-init Qwen2-architecture model (tests/tiny_qwen.py: q/k/v bias, untied embeddings, ChatML
template, eos <|endoftext|> != end of turn <|im_end|>) goes through recipes 01 -> 02 -> 03 -> 04 at the
`a100` preset (its LoRA rank 64 and code path; sizes cut down to a couple of steps) with
MATHLITE_GPU_PATH=1: 4-bit NF4 through bitsandbytes' CPU backend, paged 8-bit AdamW (unpaged on CPU),
gradient checkpointing, completion-only loss. Then the smoke preset under `accelerate launch --cpu`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from tiny_qwen import END_OF_TURN, EOS, build_tiny_qwen

pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.slow


def _recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"rehearsal_{name}", REPO / "recipes" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """The chain 01 -> 04 in this process (so that spies can watch the trainers), once per module."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MATHLITE_GPU_PATH", "1")
    mp.setenv("MATHLITE_THREADS", "1")
    threads = torch.get_num_threads()
    tmp = tmp_path_factory.mktemp("rehearsal")
    model_dir = build_tiny_qwen(tmp / "tiny-qwen2")
    run = tmp / "run"
    seen: dict = {}
    import trl

    orig = trl.SFTTrainer.compute_loss

    def spy(self, model, inputs, *a, **k):
        if "labels" not in seen:
            seen.update(labels=inputs["labels"].detach().clone(), input_ids=inputs["input_ids"].detach().clone(),
                        trainable={n: p.dtype for n, p in model.named_parameters() if p.requires_grad},
                        frozen={n: p.dtype for n, p in model.named_parameters() if not p.requires_grad},
                        checkpointing=getattr(model, "is_gradient_checkpointing", None),
                        optim=self.args.optim, n_gpu=self.args.n_gpu)
        return orig(self, model, inputs, *a, **k)

    mp.setattr(trl.SFTTrainer, "compute_loss", spy)
    try:
        common = ["--preset", "a100", "--run", str(run)]
        _recipe("01_ssft").main(common + ["--model", str(model_dir), "--data", "synthetic:levels=1", "--train_size", "8",
                                          "--eval_size", "2", "--max_steps", "2", "--batch_size", "2",
                                          "--grad_accum", "1", "--max_length", "160", "--max_new_tokens", "4",
                                          "--save_steps", "100", "--log_steps", "1"])
        mp.setattr(trl.SFTTrainer, "compute_loss", orig)
        _recipe("02_sample").main(common + ["--train_problems", "3", "--test_problems", "3", "--n", "2",
                                            "--max_new_tokens", "6", "--batch_size", "8", "--backend", "hf"])
        _recipe("03_evaluator").main(common + ["--max_steps", "2", "--batch_size", "4", "--max_length", "192",
                                               "--val_fraction", "0.34", "--log_steps", "1"])
        _recipe("04_rerank").main(common + ["--topn_values", "2", "--n_draws", "4", "--batch_size", "8"])
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    return {"run": run, "model": model_dir, "seen": seen}


def test_ssft_masks_the_prompt_and_ends_on_eos(rehearsal):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(rehearsal["model"])
    eos = tok.convert_tokens_to_ids(EOS)
    seen = rehearsal["seen"]
    assert seen["checkpointing"] is True and seen["optim"] == "paged_adamw_8bit" and seen["n_gpu"] <= 1
    start = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    for ids, labels in zip(seen["input_ids"].tolist(), seen["labels"].tolist()):
        cut = next(i for i in range(len(ids)) if ids[i : i + len(start)] == start) + len(start)
        assert all(x == -100 for x in labels[:cut]), "a prompt token is in the loss"
        real = [i for i, x in enumerate(labels) if x != -100]
        assert real and real[0] == cut and labels[real[-1]] == eos  # the solution, ending with EOS
        assert all(labels[i] == ids[i] for i in real)


def test_4bit_base_keeps_embeddings_in_compute_dtype(rehearsal):
    """No fp32 upcast of embed_tokens / lm_head (peft's prepare_model_for_kbit_training would do it)."""
    frozen, trainable = rehearsal["seen"]["frozen"], rehearsal["seen"]["trainable"]
    big = {n: d for n, d in frozen.items() if "embed_tokens" in n or "lm_head" in n}
    assert len(big) == 2 and set(big.values()) == {torch.bfloat16}, big
    assert not any(d == torch.float32 for d in frozen.values()), "a frozen base weight was upcast to fp32"
    assert trainable and all("lora_" in n for n in trainable)


def test_adapter_trained_loads_and_merges(rehearsal):
    from peft import PeftModel
    from safetensors.torch import load_file

    from mathlite import models

    adapter = rehearsal["run"] / "ssft" / "adapter"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["r"] == 64  # the a100 preset's rank
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert len(b) == 7 * 2 and all(v.abs().sum() > 0 for v in b.values()), "a LoRA B matrix did not move"
    from mathlite.sampling import check_vllm_adapter

    assert check_vllm_adapter(adapter) == 64  # what vLLM's loader needs of it, checked from the tensors
    q4 = PeftModel.from_pretrained(models.load_model(str(rehearsal["model"]), quant="4bit"), str(adapter))
    assert getattr(q4, "is_loaded_in_4bit", False) or q4.base_model.model.is_loaded_in_4bit
    base = models.load_model(str(rehearsal["model"]), quant="none")
    ids = torch.tensor([[5, 17, 300, 41]])
    lora = PeftModel.from_pretrained(base, str(adapter))
    with torch.no_grad():
        before = lora(input_ids=ids).logits.float()
        merged = lora.merge_and_unload()
        after = merged(input_ids=ids).logits.float()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert torch.allclose(before, after, atol=0.1, rtol=0.05)


def test_samples_record_backend_and_precision(rehearsal):
    meta = json.loads((rehearsal["run"] / "samples" / "samples-test.meta.json").read_text())
    assert meta["backend"] == "hf" and meta["base_precision"] == "nf4" and meta["model"]["weights"] == "nf4"
    assert (rehearsal["run"] / "report" / "results.json").exists()


def test_sampling_stops_at_end_of_turn(rehearsal):
    """A model that ends its turn at once (<|im_end|> made the top token) stops there, though EOS is <|endoftext|>."""
    from transformers import AutoTokenizer

    from mathlite import models, sampling
    from mathlite.data import Problem

    tok = AutoTokenizer.from_pretrained(rehearsal["model"])
    eot = tok.convert_tokens_to_ids(END_OF_TURN)
    assert sampling.end_of_turn_ids(tok) == {eot} and eot != tok.eos_token_id
    model = models.load_model(str(rehearsal["model"]), quant="4bit")
    model.lm_head.register_forward_hook(lambda m, a, out: out.index_add(
        -1, torch.tensor([eot]), torch.full((*out.shape[:-1], 1), 1e4, dtype=out.dtype)))
    problems = [Problem("p0", "What is 1+1?", "", "2", 1, "test", "test")]
    summary = sampling.greedy_accuracy(model, tok, problems, max_new_tokens=8, progress=False)
    rec = summary["records"][0]
    assert rec["finish"] == "eos" and rec["tokens"] == 1 and rec["text"] == ""


def test_score_head_stays_fp32_under_trl_reward_trainer(rehearsal, tmp_path, monkeypatch):
    """TRL's RewardTrainer casts a 4-bit model's trainable weights to bf16; the score head goes back to fp32."""
    import trl

    from mathlite import evaluator

    monkeypatch.setenv("MATHLITE_GPU_PATH", "1")
    monkeypatch.setenv("MATHLITE_THREADS", "1")
    seen = {}
    orig = trl.RewardTrainer.compute_loss

    def spy(self, model, inputs, *a, **k):
        seen.setdefault("dtypes", {n: p.dtype for n, p in model.named_parameters() if p.requires_grad})
        return orig(self, model, inputs, *a, **k)

    monkeypatch.setattr(trl.RewardTrainer, "compute_loss", spy)
    examples = [{"id": f"p{i // 2}", "question": f"What is {i}+1?", "solution": f"It is \\boxed{{{i + i % 2}}}.",
                 "label": i % 2} for i in range(8)]
    threads = torch.get_num_threads()
    try:
        ev = evaluator.train_evaluator(str(rehearsal["model"]), evaluator.pair_examples(examples), kind="head",
                                       loss="pairwise", init_adapter=rehearsal["run"] / "ssft" / "adapter",
                                       out_dir=tmp_path / "ev", max_steps=1, batch_size=4, max_length=64, quant="4bit")
    finally:
        torch.set_num_threads(threads)
    head = {n: d for n, d in seen["dtypes"].items() if ".score." in n}
    assert head and set(head.values()) == {torch.float32}, head
    lora = {d for n, d in seen["dtypes"].items() if "lora_" in n}
    assert lora == {torch.bfloat16}  # TRL's QLoRA choice on a bf16 compute dtype, kept
    assert all(0 < s < 1 for s in ev.score(["What is 1+1?"], ["It is \\boxed{2}."]))


def test_smoke_preset_under_accelerate_launch(tmp_path):
    env = {**os.environ, "MATHLITE_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu",
           str(REPO / "recipes" / "01_ssft.py"), "--preset", "smoke", "--run", str(tmp_path / "run"),
           "--max_steps", "1", "--eval_before", "false", "--eval_size", "1", "--train_size", "4", "--max_new_tokens", "4",
           "--batch_size", "2", "--max_length", "128"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "ssft" / "metrics.json").read_text())
    assert metrics["steps"] == 1 and (tmp_path / "run" / "ssft" / "adapter" / "adapter_model.safetensors").exists()
