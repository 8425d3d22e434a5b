"""The lean SFT loss (mathlite.trainer) is the loss TRL and transformers compute, only cheaper:
same value and same gradients as model(**batch).loss on a padded batch with a completion-only
mask; bf16 LoRA on a bf16 base; and the trainer built by recipes/01 logs its metrics."""

from __future__ import annotations

import pytest
import torch

from conftest import load_recipe, offline_model
from mathlite import models, trainer


@pytest.fixture(scope="module")
def smol():
    yield from offline_model(quant="none", for_training=True)


def _batch(tok):
    rows = [("What is 2+3?", " We add: 2+3=5. \\boxed{5}"), ("Compute 7*6, please.", " 7*6=42, so \\boxed{42}")]
    ids, labels = [], []
    for p, c in rows:
        pi, ci = tok(p, add_special_tokens=False).input_ids, tok(c, add_special_tokens=False).input_ids
        ids.append(pi + ci)
        labels.append([-100] * len(pi) + ci)
    width = max(map(len, ids))
    pad = tok.pad_token_id
    return {"input_ids": torch.tensor([x + [pad] * (width - len(x)) for x in ids]),
            "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids]),
            "labels": torch.tensor([x + [-100] * (width - len(x)) for x in labels])}


@pytest.mark.slow
def test_lean_loss_equals_the_models_own_loss(smol):
    model, tok = smol
    peft_model = trainer.lora_model(model, models.lora_config(8, 16, 0.0))
    lora = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert lora and all(p.dtype == torch.bfloat16 for p in lora.values()), "bf16 LoRA on a bf16 base"
    with torch.no_grad():  # LoRA B starts at zero: give it weights so that its gradients differ from A's
        for n, p in lora.items():
            if "lora_B" in n:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    batch = _batch(tok)
    peft_model.train()
    ref = peft_model(**batch, use_cache=False).loss
    ref.backward()
    g_ref = {n: p.grad.float().clone() for n, p in lora.items()}
    peft_model.zero_grad(set_to_none=True)
    loss, n_valid, correct, entropy = trainer._compact_lm_loss(peft_model, dict(batch), with_entropy=True)
    loss.backward()
    assert int(n_valid) == int((batch["labels"][:, 1:] != -100).sum())
    assert 0 <= int(correct) <= int(n_valid) and float(entropy) > 0
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=2e-2)
    for n, p in lora.items():
        g = p.grad.float()
        cos = torch.nn.functional.cosine_similarity(g.flatten(), g_ref[n].flatten(), dim=0)
        assert cos > 0.97, (n, float(cos))
    peft_model.zero_grad(set_to_none=True)
    peft_model.unload()  # the shared model without LoRA again


@pytest.mark.slow
def test_recipe_trainer_trains_and_logs(smol, tmp_path):
    model, tok = smol
    r01 = load_recipe("01_ssft")
    cfg = r01.Config(**{**r01.PRESETS["smoke"], **r01.PRESETS["cpu"]})
    cfg.max_steps, cfg.log_steps = 2, 1
    from mathlite import data

    problems = data.load_problems("synthetic:levels=1-3", "train", limit=8, seed=0)
    records = data.prompt_completion_records(problems, tok, "steps")
    base = models.load_model(models.OFFLINE_MODEL, quant="none", for_training=True)
    sft = r01.sft_trainer(cfg, base, tok, records, tmp_path / "ck")
    assert sft.args.train_sampling_strategy == "group_by_length"
    sft.train()
    logs = [h for h in sft.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:
        assert h["loss"] > 0 and 0 <= h["mean_token_accuracy"] <= 1 and h["entropy"] > 0 and h["num_tokens"] > 0
    assert all(p.dtype == torch.bfloat16 for n, p in sft.model.named_parameters() if p.requires_grad)


@pytest.mark.slow
def test_cpu_preset_checkpointing_trains_the_same_adapter(smol, tmp_path):
    """The cpu preset recomputes the activations of every other layer in the backward pass (01's peak RAM) and
    must train exactly the adapter it trains without, or with every layer checkpointed: same batches, same
    recomputed forward, same LoRA weights."""
    _, tok = smol
    r01 = load_recipe("01_ssft")
    from mathlite import data

    problems = data.load_problems("synthetic:levels=1-3", "train", limit=8, seed=0)
    records = data.prompt_completion_records(problems, tok, "steps")
    assert r01.Config(**{**r01.PRESETS["smoke"], **r01.PRESETS["cpu"]}).gradient_checkpointing == 2
    weights = {}
    for every in (2, 1, 0):
        cfg = r01.Config(**{**r01.PRESETS["smoke"], **r01.PRESETS["cpu"]})
        cfg.max_steps, cfg.log_steps, cfg.gradient_checkpointing = 2, 1, every
        torch.manual_seed(0)
        base = models.load_model(models.OFFLINE_MODEL, quant="none", for_training=True)
        sft = r01.sft_trainer(cfg, base, tok, records, tmp_path / f"ck{every}")
        assert sft.args.gradient_checkpointing is bool(every)
        assert any(isinstance(c, trainer.TrimMemoryCallback) for c in sft.callback_handler.callbacks)
        sft.train()
        layers = sft.model.get_base_model().model.layers
        checkpointed = sum(bool(getattr(layer, "gradient_checkpointing", False)) for layer in layers)
        assert checkpointed == {0: 0, 1: len(layers), 2: len(layers) // 2}[every], (every, checkpointed)
        weights[every] = {n: p.detach().clone() for n, p in sft.model.named_parameters() if p.requires_grad}
    assert weights[2].keys() == weights[0].keys() == weights[1].keys() and weights[0]
    for n, w in weights[0].items():
        assert torch.equal(w, weights[1][n]) and torch.equal(w, weights[2][n]), n


def test_release_free_memory_returns_freed_heap_to_the_os():
    """glibc keeps freed small blocks in the heap; release_free_memory hands them back (Linux/glibc only)."""
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("malloc_trim is glibc's")

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    blocks = [bytearray(b"x" * 50_000) for _ in range(6000)]  # ~300 MB below the mmap threshold
    keep = blocks[-1]
    del blocks
    before = rss_mib()
    trainer.release_free_memory()
    if trainer._libc is False:
        pytest.skip("no malloc_trim in this C library")
    assert rss_mib() < before - 100, (before, rss_mib())
    assert len(keep) == 50_000
