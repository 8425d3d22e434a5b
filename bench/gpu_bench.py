"""One-shot GPU benchmark of the recipes' own code paths on a 7B-shaped model with random weights
(no checkpoint, no hub): what the `a100` preset runs, stage by stage.

The model is Qwen2.5-7B's architecture (config written out below, 7.6B parameters) with random
weights, built on the GPU and quantized to NF4 in place, so throughput and memory are those of the
real model; the outputs are noise. The tokenizer is a word-level one over the same vocabulary, built
in code. The shapes are the a100 presets of recipes 01-03, read from the recipe files.
Measurements, in this order, each in its own try/except; the JSON file is rewritten atomically
after each one, so a killed run keeps what it finished:

  ssft_train  recipe 01: models.prepare_kbit_training on the 4-bit base, TRL's SFTTrainer with
              trainer.common_training_args (paged 8-bit AdamW, gradient checkpointing, bf16 or fp16
              by compute capability), one_device, completion-only loss, LoRA at the preset's rank on
              all linear layers, batch x grad_accum x seq_len of the preset (8 x 2 x 1024, r=64).
              Tokens/s over the timed optimizer steps after one warmup step; peak memory.
  decode      recipe 02's decode loop (sampling.HFEngine: shared prefill, per-unit seeds, top-p 0.95,
              temperature 0.9) on the 4-bit base with an unmerged LoRA adapter, the preset's batch of
              128 sequences (2 prompts x 64 samples), 200-token prompts, 256 new tokens: new tokens/s.
  score       recipe 03/04's scorer: score head (fp32) + LoRA on the 4-bit base, attached by
              mathlite.evaluator's code, Evaluator.logits on batches of the preset's size, 512 tokens.

Peak memory is torch.cuda.max_memory_allocated, reset after the model is built and before the
timed part (so it includes the weights).

Run (GPU):  python bench/gpu_bench.py [--budget-s 420]
            -> bench/results/gpu_<device-name-slug>.json
Run (CPU):  python bench/gpu_bench.py --tiny [--out DIR_OR_FILE]
            -> bench/results/gpu_bench_tiny_cpu.json; a 2-layer, hidden-64 model of the same
            architecture and small shapes, with MATHLITE_GPU_PATH=1, to check the code paths
            (tests/test_gpu_bench.py).
See bench/GPU.md for how a session with a lent GPU runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import gc
import math
import os
import platform
import re
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

_T0 = time.monotonic()  # the time budget counts from here (imports included)

import torch

from mathlite import files, models

REPO = Path(__file__).resolve().parents[1]

RESULTS = REPO / "bench" / "results"

# Qwen2.5-7B's config.json (base model), written out so nothing is downloaded.
QWEN25_7B = dict(
    model_type="qwen2",
    architectures=["Qwen2ForCausalLM"],
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=152064,
    hidden_act="silu",
    max_position_embeddings=131072,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    initializer_range=0.02,
    attention_dropout=0.0,
    use_sliding_window=False,
    sliding_window=131072,
    max_window_layers=28,
    tie_word_embeddings=False,
    use_cache=True,
    bos_token_id=151643,
    eos_token_id=151643,
)

# Same architecture (GQA, biases on q/k/v, SwiGLU, untied head), small enough for 2 CPU cores.
TINY = dict(
    QWEN25_7B,
    hidden_size=64,
    intermediate_size=320,  # ~5.3x hidden, as in the 7B
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=1024,
    max_window_layers=2,
    bos_token_id=1023,
    eos_token_id=1023,
)


def recipe_presets() -> dict:
    """The a100 presets of recipes 01-03, read from the recipe files: the bench runs their numbers."""
    import importlib.util

    out = {}
    for name in ("01_ssft", "02_sample", "03_evaluator"):
        spec = importlib.util.spec_from_file_location(f"gpu_bench_{name}", REPO / "recipes" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        out[name] = {**{f.name: f.default for f in __import__("dataclasses").fields(mod.Config)}, **mod.PRESETS["a100"]}
    return out


@dataclass
class Shapes:
    # 01 at the a100 preset: batch, gradient accumulation, sequence length, LoRA rank/alpha, lr
    seq_len: int = 1024
    batch_size: int = 8
    grad_accum: int = 2
    lora_r: int = 64
    lora_alpha: int = 128
    lr: float = 1e-4
    warmup_steps: int = 1  # untimed optimizer steps (CUDA kernels, optimizer state allocation)
    train_steps: int = 3  # timed optimizer steps
    # 02's decode loop: a100 batch of 128 sequences = 2 prompts x 64 samples (shared prefill)
    gen_batch: int = 128
    gen_n: int = 64
    gen_prompt: int = 200
    gen_new: int = 256  # the preset's 768 would not fit the time budget; tokens/s is per decode step
    # 03's scorer (score head on the 4-bit base + LoRA)
    eval_seq: int = 512
    eval_batch: int = 16
    eval_batches: int = 4  # timed, after one warmup batch

    @classmethod
    def from_presets(cls) -> "Shapes":
        p = recipe_presets()
        s, g, e = p["01_ssft"], p["02_sample"], p["03_evaluator"]
        return cls(seq_len=s["max_length"], batch_size=s["batch_size"], grad_accum=s["grad_accum"],
                   lora_r=s["lora_r"], lora_alpha=s["lora_alpha"], lr=s["lr"], gen_batch=g["batch_size"],
                   gen_n=g["n"], eval_batch=e["batch_size"])


TINY_SHAPES = Shapes(seq_len=64, batch_size=2, grad_accum=1, lora_r=8, lora_alpha=16, warmup_steps=1, train_steps=2,
                     gen_batch=4, gen_n=2, gen_prompt=16, gen_new=8, eval_seq=32, eval_batch=4, eval_batches=2)

# name -> seconds a full-size (7B, H100-class) measurement is expected to need, model build included;
# a measurement is skipped when less than this is left of the budget (tiny mode: 1/20 of it).
MEASUREMENTS = {
    "ssft_train": 120,
    "decode": 90,
    "score": 45,
}
RESERVE_S = 10  # kept back for writing results and printing the table
SKIPPED_BUDGET = "skipped: time budget"


# ---------------------------------------------------------------------------- helpers


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def elapsed() -> float:
    return time.monotonic() - _T0


def gib(n: int | float | None) -> float | None:
    return None if n is None else round(n / 2**30, 3)


def bnb_info() -> dict:
    try:
        import bitsandbytes as bnb
    except Exception as e:  # noqa: BLE001 - missing wheel or broken native library
        return {"bitsandbytes": None, "bnb_error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
    info = {"bitsandbytes": bnb.__version__}
    try:
        from bitsandbytes import cextension

        info["bnb_backend"] = getattr(cextension, "BNB_BACKEND", None)
        info["bnb_native_lib"] = type(getattr(cextension, "lib", None)).__name__
    except Exception:  # noqa: BLE001
        pass
    return info


def bnb_has_cuda() -> bool:
    """bitsandbytes loaded its CUDA library (paged optimizers and CUDA 4-bit kernels need it)."""
    if not torch.cuda.is_available():
        return False
    try:
        from bitsandbytes import cextension
    except Exception:  # noqa: BLE001
        return False
    return type(getattr(cextension, "lib", None)).__name__ == "CudaBNBNativeLibrary"


def machine_info() -> dict:
    import peft
    import transformers

    info = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        **bnb_info(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_memory_gib=gib(p.total_memory),
            gpu_capability=f"{p.major}.{p.minor}",
            gpu_count=torch.cuda.device_count(),
            native_bf16=models.cuda_bf16(),  # compute capability >= 8.0
        )
    else:
        info["gpu"] = None
    return info


def device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def reset_peak() -> None:
    free_memory()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def memory_fields(prefix: str = "") -> dict:
    if not torch.cuda.is_available():
        return {f"{prefix}peak_mem_gib": None}
    return {
        f"{prefix}peak_mem_gib": gib(torch.cuda.max_memory_allocated()),
        f"{prefix}peak_reserved_gib": gib(torch.cuda.max_memory_reserved()),
    }


# ---------------------------------------------------------------------------- model building


def make_config(tiny: bool, seq_cls: bool = False):
    from transformers import AutoConfig

    d = dict(TINY if tiny else QWEN25_7B)
    d.pop("architectures")
    if seq_cls:
        # pooling at the last non-pad token needs a pad id for batches > 1 (Qwen pads with <|endoftext|>)
        d.update(num_labels=1, pad_token_id=d["eos_token_id"])
    return AutoConfig.for_model(**d)


def _no_init():
    """transformers' context that skips weight init (its location moved between versions)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return contextlib.nullcontext()
    return no_init_weights()


def build_bf16(cfg, seq_cls: bool = False, seed: int = 0):
    """A bf16 model from `cfg` built directly on the device, weights drawn here: normal(0,
    initializer_range) for matrices, ones for norms, zeros for biases. HF's own init is
    skipped (on a CPU it would take minutes for 7B; here the draw runs on the GPU)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    dev = device()
    dtype = models.compute_dtype()
    cls = AutoModelForSequenceClassification if seq_cls else AutoModelForCausalLM
    with dev, _no_init():
        model = cls.from_config(cfg, dtype=dtype)
    if any(p.device != dev for p in model.parameters()):
        model.to(dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    std = getattr(cfg, "initializer_range", 0.02)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, std, generator=gen)
            elif "norm" in name:
                p.fill_(1.0)
            else:
                p.zero_()
    # the rotary buffers are computed in __init__ (not by the skipped init); check they are sane
    for name, b in model.named_buffers():
        if b.is_floating_point() and not torch.isfinite(b).all():
            raise RuntimeError(f"buffer {name} is not finite after building with init skipped")
    return model


def quantize_4bit_(model, skip: tuple[str, ...] = ("lm_head", "score")) -> int:
    """Replace every nn.Linear (except the heads) by a bitsandbytes NF4 Linear4bit (double
    quantization, compute dtype = models.compute_dtype()) built from its current weights, one
    layer at a time so the bf16 copy is freed as we go. Then marks the model the way
    transformers' bnb loader does, so PEFT wraps the layers with its 4-bit LoRA layers.
    Returns the number of layers replaced."""
    import bitsandbytes as bnb

    dev = device()
    cdtype = models.compute_dtype()
    targets = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and not isinstance(m, bnb.nn.Linear4bit) and name.split(".")[-1] not in skip
    ]
    for name, old in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        with torch.device("meta"):  # no allocation for the placeholder weight
            new = bnb.nn.Linear4bit(
                old.in_features,
                old.out_features,
                bias=old.bias is not None,
                compute_dtype=cdtype,
                compress_statistics=True,
                quant_type="nf4",
            )
        w = bnb.nn.Params4bit(
            old.weight.data, requires_grad=False, quant_type="nf4", compress_statistics=True, module=new
        )
        new.weight = w.to(dev)  # .to() quantizes (bnb_quantized is False) and sets new.quant_state
        if old.bias is not None:
            new.bias = torch.nn.Parameter(old.bias.data, requires_grad=False)
        setattr(parent, child, new)
        old.weight = None
        del old, w
    # what transformers' Bnb4BitHfQuantizer sets on a loaded model
    model.is_loaded_in_4bit = True
    model.is_quantized = True
    model.quantization_method = "bitsandbytes"
    from transformers import BitsAndBytesConfig
    from transformers.quantizers.quantizer_bnb_4bit import Bnb4BitHfQuantizer

    qcfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=cdtype)
    model.hf_quantizer = Bnb4BitHfQuantizer(qcfg)  # the Trainer asks it whether the model can train
    model.config.quantization_config = qcfg
    models.disable_bnb_cpu_repack(model)
    free_memory()
    return len(targets)


def build_model(cfg, quant: str, seq_cls: bool = False) -> tuple[object, dict]:
    t = time.monotonic()
    model = build_bf16(cfg, seq_cls=seq_cls)
    n_params = sum(p.numel() for p in model.parameters())
    info = {"params_b": round(n_params / 1e9, 4)}
    if quant == "4bit":
        info["linear4bit_layers"] = quantize_4bit_(model)
    elif quant != "bf16":
        raise ValueError(quant)
    sync()
    info["build_s"] = round(time.monotonic() - t, 2)
    if torch.cuda.is_available():
        free_memory()
        info["weights_mem_gib"] = gib(torch.cuda.memory_allocated())
    info["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    return model, info


# ---------------------------------------------------------------------------- measurements


class Budget:
    def __init__(self, total_s: float, tiny: bool):
        self.total_s = total_s
        self.scale = 0.05 if tiny else 1.0

    def left(self) -> float:
        return self.total_s - elapsed()

    def allows(self, name: str) -> bool:
        return self.left() - RESERVE_S >= MEASUREMENTS[name] * self.scale

    def expired(self) -> bool:
        return self.left() < RESERVE_S


def synthetic_tokenizer(cfg):
    """A word-level tokenizer over the config's whole vocabulary, built in code (nothing to download):
    token i is "t<i>", except the EOS ("<|endoftext|>", also pad), Qwen's end of turn "<|im_end|>" two
    ids above it when it fits, and "correct" / "incorrect" (the verbal scorer's verdict words)."""
    from tokenizers import Tokenizer, models as tmodels, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    v, eos = cfg.vocab_size, cfg.eos_token_id
    names = {i: f"t{i}" for i in range(v)}
    eot = eos + 2 if eos + 2 < v else eos - 1
    names.update({eos: "<|endoftext|>", eot: "<|im_end|>", 10: "correct", 11: "incorrect"})
    core = Tokenizer(tmodels.WordLevel({n: i for i, n in names.items()}, unk_token="t0"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=["<|im_end|>"])
    return tok


def _random_lists(n: int, length: int, vocab: int, seed: int, avoid: set[int]) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, vocab - 3, (n, length), generator=g)  # clear of the special ids
    for a in avoid:
        ids[ids == a] = 99
    return ids.tolist()


class _StepTimer:
    """Trainer callback: wall time of every optimizer step (CUDA synchronised), and a stop at the budget."""

    def __init__(self, budget):
        from transformers import TrainerCallback

        self.budget, self.times, self._t = budget, [], None
        parent = self

        class CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                sync()
                parent._t = time.monotonic()

            def on_step_end(self, args, state, control, **kw):
                sync()
                parent.times.append(time.monotonic() - parent._t)
                if parent.budget.expired():
                    control.should_training_stop = True

        self.callback = CB()


def measure_ssft(cfg, shapes: Shapes, budget: Budget) -> dict:
    """Recipe 01's training path on the 4-bit base: models.prepare_kbit_training, TRL's SFTTrainer
    with trainer.common_training_args (paged 8-bit AdamW, gradient checkpointing, bf16/fp16 by
    card), one_device, completion-only loss, models.lora_config at the preset's rank, and
    settle_trainable_dtypes. Rows are random tokens, a quarter prompt (masked) and the rest completion."""
    import tempfile

    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from mathlite import trainer as mt

    model, info = build_model(cfg, "4bit")
    models.prepare_kbit_training(model)
    tok = synthetic_tokenizer(cfg)
    steps = shapes.warmup_steps + shapes.train_steps
    n_rows = shapes.batch_size * shapes.grad_accum * steps
    p = shapes.seq_len // 4
    rows = [{"input_ids": ids + [cfg.eos_token_id], "completion_mask": [0] * p + [1] * (shapes.seq_len - p)}
            for ids in _random_lists(n_rows, shapes.seq_len - 1, cfg.vocab_size, 1, {cfg.eos_token_id})]
    timer = _StepTimer(budget)
    with tempfile.TemporaryDirectory() as out:
        fields = mt.common_training_args(out, lr=shapes.lr, batch_size=shapes.batch_size, grad_accum=shapes.grad_accum,
                                         max_steps=steps, epochs=1.0, seed=0, save_steps=10**9, log_steps=10**9)
        fields.update(save_strategy="no", warmup_steps=0)
        args = mt.one_device(SFTConfig(**fields, max_length=shapes.seq_len, completion_only_loss=True, packing=False))
        sft = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=models.lora_config(shapes.lora_r, shapes.lora_alpha), callbacks=[timer.callback])
        mt.drop_printer(sft)
        dtypes = models.settle_trainable_dtypes(sft.model)
        reset_peak()
        result = sft.train()
    lora_b = [p for n, p in sft.model.named_parameters() if "lora_B" in n]
    info.update(
        optimizer=args.optim, gradient_checkpointing=args.gradient_checkpointing, bf16=args.bf16, fp16=args.fp16,
        trainable_dtypes=dtypes, lora_layers=sum(1 for n, _ in sft.model.named_modules() if n.endswith(".lora_A")),
        trainable_params_m=round(sum(p.numel() for p in sft.model.parameters() if p.requires_grad) / 1e6, 3),
        batch_size=shapes.batch_size, grad_accum=shapes.grad_accum, seq_len=shapes.seq_len,
        lora_r=shapes.lora_r, step_s=[round(x, 3) for x in timer.times], train_loss=result.metrics.get("train_loss"),
        lora_b_updated=bool(lora_b) and all(p.detach().abs().sum() > 0 for p in lora_b),
        peak_rss_gib=round(_rss_gib(), 3), **memory_fields(),
    )
    if not info["lora_b_updated"]:
        raise RuntimeError("a LoRA B matrix did not move: the 4-bit base path is broken")
    timed = timer.times[shapes.warmup_steps:]
    info["steps_timed"] = len(timed)
    if timed:
        tokens = shapes.batch_size * shapes.grad_accum * shapes.seq_len
        info["tokens_per_s"] = round(tokens * len(timed) / sum(timed), 2)
        info["status"] = "ok"
    else:
        info["status"] = "partial: no timed step"
    del sft, model
    return info


def _rss_gib() -> float:
    from mathlite.trainer import peak_memory_gib

    if torch.cuda.is_available():
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return peak_memory_gib()


def measure_decode(cfg, shapes: Shapes, budget: Budget) -> dict:
    """Recipe 02's decode loop (sampling.HFEngine: shared prefill, per-unit seeds, top-p 0.95 /
    temperature 0.9) on the 4-bit base with an unmerged LoRA adapter at the preset's rank, as 02
    loads an SSFT adapter on a GPU. gen_batch sequences = gen_batch / gen_n prompts x gen_n samples."""
    from peft import get_peft_model

    from mathlite import sampling

    model, info = build_model(cfg, "4bit")
    lcfg = models.lora_config(shapes.lora_r, shapes.lora_alpha)
    lcfg.inference_mode = True
    model = get_peft_model(model, lcfg)
    tok = synthetic_tokenizer(cfg)
    n_prompts = max(1, shapes.gen_batch // shapes.gen_n)
    prompts = _random_lists(n_prompts, shapes.gen_prompt, cfg.vocab_size, 2, {cfg.eos_token_id})
    units = [sampling.Unit((f"p{i}", k), tuple(prompts[i]), sampling.unit_seed(0, f"p{i}", k))
             for i in range(n_prompts) for k in range(shapes.gen_n)][: shapes.gen_batch]

    def engine(new):
        return sampling.HFEngine(model, tok, sampling.SamplingConfig(n=shapes.gen_n, max_new_tokens=new, stop=()),
                                 batch_size=shapes.gen_batch)

    engine(2).run(units[:2])  # warmup
    reset_peak()
    sync()
    t = time.monotonic()
    gens = engine(shapes.gen_new).run(units)
    sync()
    dt = time.monotonic() - t
    new = sum(g.tokens for g in gens)
    info.update(batch=len(units), prompts=n_prompts, prompt_tokens=shapes.gen_prompt, max_new_tokens=shapes.gen_new,
                lora_r=shapes.lora_r, new_tokens=new, seconds=round(dt, 3), new_tokens_per_s=round(new / dt, 2),
                stopped_early=sum(g.finish == "eos" for g in gens), peak_rss_gib=round(_rss_gib(), 3), **memory_fields())
    info["status"] = "ok"
    del model
    return info


def measure_score(cfg, shapes: Shapes, budget: Budget) -> dict:
    """Recipe 03/04's scorer: a score head (fp32) on the 4-bit base + LoRA, attached by the
    evaluator's own code, scoring through Evaluator.logits in batches of the preset's size."""
    from mathlite import evaluator

    model, info = build_model(cfg, "4bit", seq_cls=True)
    model = evaluator._attach_lora(model, models.lora_config(shapes.lora_r, shapes.lora_alpha, task="seq_cls"), "head",
                                   None, trainable=False, new_head=True)
    tok = synthetic_tokenizer(cfg)
    ev = evaluator.Evaluator(model, tok, "head", max_length=shapes.eval_seq)
    encoded = _random_lists(shapes.eval_batch * (shapes.eval_batches + 1), shapes.eval_seq, cfg.vocab_size, 3,
                            {cfg.eos_token_id})
    ev.logits(encoded[: shapes.eval_batch], batch_size=shapes.eval_batch)  # warmup
    reset_peak()
    sync()
    t = time.monotonic()
    z = ev.logits(encoded[shapes.eval_batch:], batch_size=shapes.eval_batch)
    sync()
    dt = time.monotonic() - t
    if not all(math.isfinite(v) for v in z):
        raise RuntimeError("non-finite scores")
    n = len(z)
    head = [p.dtype for name, p in model.named_parameters() if ".score." in name and "modules_to_save" in name]
    info.update(batch=shapes.eval_batch, seq_len=shapes.eval_seq, solutions=n, seconds=round(dt, 3),
                solutions_per_s=round(n / dt, 2), tokens_per_s=round(n * shapes.eval_seq / dt, 1),
                score_head_dtype=str(head[0]).removeprefix("torch.") if head else None,
                peak_rss_gib=round(_rss_gib(), 3), **memory_fields())
    info["status"] = "ok"
    del model, ev
    return info


# ---------------------------------------------------------------------------- driver


def summarize(meas: dict) -> dict:
    """Per stage: throughput and peak memory, one line each."""
    keys = {"ssft_train": "tokens_per_s", "decode": "new_tokens_per_s", "score": "tokens_per_s"}
    return {name: {"tokens_per_s": m.get(keys[name]), "peak_mem_gib": m.get("peak_mem_gib")}
            for name, m in meas.items() if name in keys and m.get(keys[name])}


def _fmt(v, unit: str = "") -> str:
    return "-" if v is None else f"{v:,.1f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def print_table(result: dict) -> None:
    rows = []
    for name, m in result["measurements"].items():
        thr = (
            _fmt(m.get("tokens_per_s"), " tok/s") if name == "ssft_train"
            else _fmt(m.get("new_tokens_per_s"), " new tok/s") if name == "decode"
            else _fmt(m.get("tokens_per_s"), " tok/s")
        )
        status = str(m.get("status", "?"))
        if status.startswith("error"):
            status = status[:70]
        rows.append((name, status, thr, _fmt(m.get("peak_mem_gib"), " GiB"), _fmt(m.get("seconds_total"), " s")))
    mi = result["machine"]
    title = (f"gpu_bench on {mi.get('gpu') or 'CPU'} ({'tiny model' if result['tiny'] else '7B-shaped, random weights'}); "
             f"torch {mi['torch']}, transformers {mi['transformers']}, peft {mi['peft']}, bnb {mi.get('bitsandbytes')}")
    summary = result.get("summary", {})
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for col in ("measurement", "status", "throughput", "peak mem", "time"):
            table.add_column(col, justify="right" if col in ("throughput", "peak mem", "time") else "left")
        for r in rows:
            table.add_row(*r)
        console = Console(width=max(120, Console().width))
        console.print(table)
    except ImportError:
        print(title)
        for r in rows:
            print("  " + " | ".join(r))
    print(f"results: {result['path']}")


def default_out(tiny: bool) -> Path:
    if tiny:
        name = "gpu_bench_tiny_cpu.json" if not torch.cuda.is_available() else f"gpu_bench_tiny_{slug(torch.cuda.get_device_name(0))}.json"
    else:
        name = f"gpu_{slug(torch.cuda.get_device_name(0))}.json"
    return RESULTS / name


def resolve_out(out: str | None, tiny: bool) -> Path:
    if not out:
        return default_out(tiny)
    p = Path(out)
    return p if p.suffix == ".json" else p / default_out(tiny).name


def run(args) -> dict:
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("gpu_bench: no CUDA device; the 7B-shaped model needs a GPU (use --tiny to check the code on CPU)")
    if not torch.cuda.is_available():
        # tiny mode checks code paths, not CPU speed: on a small shared VM, several intra-op
        # threads on this model were measured 10-50x slower per op than one (thread contention)
        torch.set_num_threads(1)
    from mathlite import trainer as _mt

    _mt.quiet_libraries()
    shapes = dataclasses.replace(TINY_SHAPES) if args.tiny else Shapes.from_presets()
    for field in ("batch_size", "seq_len", "train_steps", "gen_batch", "eval_batch", "lora_r"):
        v = getattr(args, field, None)
        if v is not None:
            setattr(shapes, field, v)
    names = list(MEASUREMENTS) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown:
        raise SystemExit(f"gpu_bench: unknown measurement(s) {unknown}; choose from {list(MEASUREMENTS)}")
    path = resolve_out(args.out, args.tiny)
    budget = Budget(args.budget_s, args.tiny)
    cfg = make_config(args.tiny)
    result = {
        "schema": 1,
        "script": "bench/gpu_bench.py",
        "tiny": bool(args.tiny),
        "started": now_iso(),
        "budget_s": args.budget_s,
        "machine": machine_info(),
        "model": {k: v for k, v in (TINY if args.tiny else QWEN25_7B).items() if k != "architectures"},
        "settings": {**asdict(shapes), "lora_targets": "all-linear", "code_path": "recipes 01 (SFTTrainer), 02 (HFEngine), 03 (Evaluator)",
                     "quant": "nf4, double quant, compute " + str(models.compute_dtype()).replace("torch.", ""),
                     "gradient_checkpointing": "use_reentrant=False", "weights": "random (no checkpoint)"},
        "measurements": {},
        "summary": {},
        "path": str(path),
    }
    print(f"[gpu_bench] {result['machine'].get('gpu') or 'CPU'}; writing {path}", flush=True)

    def save():
        result["updated"] = now_iso()
        result["elapsed_s"] = round(elapsed(), 1)
        result["summary"] = summarize(result["measurements"])
        files.atomic_write_json(path, result)

    save()
    # on CPU, the GPU presets' training options (paged AdamW, checkpointing) through MATHLITE_GPU_PATH
    old_env = os.environ.get("MATHLITE_GPU_PATH")
    if not torch.cuda.is_available():
        os.environ["MATHLITE_GPU_PATH"] = "1"
    try:
        _measure_all(names, result, args, cfg, shapes, budget, save)
    finally:
        if old_env is None:
            os.environ.pop("MATHLITE_GPU_PATH", None)
        else:
            os.environ["MATHLITE_GPU_PATH"] = old_env
    print_table(result)
    return result


def _measure_all(names, result, args, cfg, shapes, budget, save) -> None:
    for name in names:
        if not budget.allows(name):
            result["measurements"][name] = {"status": SKIPPED_BUDGET, "left_s": round(budget.left(), 1)}
            print(f"[gpu_bench] {name}: {SKIPPED_BUDGET} ({budget.left():.0f} s left)", flush=True)
            save()
            continue
        result["measurements"][name] = {"status": "running", "started_at_s": round(elapsed(), 1)}
        save()  # a run killed mid-measurement shows which one it was in
        print(f"[gpu_bench] {name} ...", flush=True)
        t = time.monotonic()
        try:
            if name == "ssft_train":
                m = measure_ssft(cfg, shapes, budget)
            elif name == "decode":
                m = measure_decode(cfg, shapes, budget)
            else:
                m = measure_score(make_config(args.tiny, seq_cls=True), shapes, budget)
        except BaseException as e:  # noqa: BLE001 - one failure must not lose the rest
            if isinstance(e, KeyboardInterrupt):
                result["measurements"][name] = {"status": "error: interrupted"}
                save()
                raise
            tb = traceback.format_exc()
            print(tb, file=sys.stderr, flush=True)
            m = {
                "status": f"error: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}",
                "traceback_tail": tb[-3000:],
                **memory_fields(),
            }
            if torch.cuda.is_available():
                m["allocated_at_error_gib"] = gib(torch.cuda.memory_allocated())
            del e
        m["seconds_total"] = round(time.monotonic() - t, 2)
        result["measurements"][name] = m
        free_memory()  # the model was local to the measurement (and to the traceback, now gone)
        save()
        print(f"[gpu_bench] {name}: {m['status']} ({m['seconds_total']} s)", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="2-layer hidden-64 model and small shapes (CPU check)")
    p.add_argument("--budget-s", type=float, default=420.0, help="total time guard, imports included (default 420)")
    p.add_argument("--out", help="result file (.json) or folder; default bench/results/gpu_<device>.json")
    p.add_argument("--only", help=f"comma-separated subset of {','.join(MEASUREMENTS)}")
    p.add_argument("--batch-size", type=int, help="training sequences per micro-batch (default: recipe 01's a100 preset)")
    p.add_argument("--seq-len", type=int, help="training sequence length (default 1024)")
    p.add_argument("--train-steps", type=int, help="timed optimizer steps after one warmup step (default 3)")
    p.add_argument("--gen-batch", type=int, help="sequences per decode batch (default: recipe 02's a100 preset)")
    p.add_argument("--eval-batch", type=int, help="scorer sequences per forward (default: recipe 03's a100 preset)")
    p.add_argument("--lora-r", type=int, help="LoRA rank (default: recipe 01's a100 preset)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    result = run(parse_args(argv))
    bad = [n for n, m in result["measurements"].items() if str(m.get("status", "")).startswith("error")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
