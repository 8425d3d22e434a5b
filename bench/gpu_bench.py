"""One-shot GPU benchmark: QLoRA vs bf16 LoRA training, 4-bit sampling and 4-bit evaluator
scoring, on a 7B-shaped model with random weights (no checkpoint, no hub).

The model is Qwen2.5-7B's architecture (config written out below, 7.6B parameters) with
random weights, so throughput and memory are those of the real model; the outputs are noise.
Measurements, in this order, each in its own try/except; the JSON file is rewritten
atomically after each one, so a killed run keeps what it finished:

  qlora_train         4-bit NF4 (double quant, bf16 compute) base + LoRA r=16 all-linear,
                      prepare_model_for_kbit_training, gradient checkpointing
                      (use_reentrant=False), paged 8-bit AdamW (torch AdamW where bitsandbytes
                      has no CUDA), bf16 autocast: what recipes/01_ssft.py runs on a GPU.
                      Random token batches of --batch-size x --seq-len (default 4 x 1024),
                      loss on every token. Tokens/s over --train-steps steps after warmup.
  bf16_lora_train     the same with a bf16 base (no quantization); the ratio to qlora_train
                      (speed and peak memory) is printed and stored under "summary".
  generate_4bit       `generate` on the 4-bit model: 32 sequences, 200-token prompts,
                      256 new tokens, top-p 0.95 / temperature 0.9; min_new_tokens =
                      max_new_tokens so random weights cannot stop early (count is exact).
  evaluator_4bit      4-bit AutoModelForSequenceClassification (num_labels=1) + LoRA
                      (inference mode), scoring batches of 512-token sequences: solutions/s.
  generate_4bit_lora  generate_4bit with an (unmerged) LoRA adapter attached, as
                      mathlite samples from an SSFT adapter on a 4-bit base.

Peak memory is torch.cuda.max_memory_allocated, reset after each model is built (so it
includes the weights, not the transient bf16 copy made while quantizing).

Run (GPU):  python bench/gpu_bench.py [--budget-s 420] [--batch-size 4]
            -> bench/results/gpu_<device-name-slug>.json
Run (CPU):  python bench/gpu_bench.py --tiny [--out DIR_OR_FILE]
            -> bench/results/gpu_bench_tiny_cpu.json; a 2-layer, hidden-64 model of the same
            architecture and small shapes, to check the code paths (tests/test_gpu_bench.py).
See bench/GPU.md for how a session with a lent GPU runs it.
"""

from __future__ import annotations

import argparse
import contextlib
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


@dataclass
class Shapes:
    seq_len: int = 1024  # training sequence length
    batch_size: int = 4  # training sequences per step
    warmup_steps: int = 2  # untimed (CUDA kernels, optimizer state allocation)
    train_steps: int = 4  # timed
    gen_batch: int = 32
    gen_prompt: int = 200
    gen_new: int = 256
    eval_seq: int = 512
    eval_batch: int = 16  # Evaluator.score's default batch size
    eval_warmup: int = 1
    eval_batches: int = 4  # timed
    lora_r: int = 16


TINY_SHAPES = Shapes(seq_len=64, batch_size=2, warmup_steps=1, train_steps=2, gen_batch=4, gen_prompt=16,
                     gen_new=8, eval_seq=32, eval_batch=4, eval_warmup=1, eval_batches=2)

# name -> seconds a full-size (7B, H100) measurement is expected to need, model build included;
# a measurement is skipped when less than this is left of the budget (tiny mode: 1/20 of it).
MEASUREMENTS = {
    "qlora_train": 75,
    "bf16_lora_train": 50,
    "generate_4bit": 60,
    "evaluator_4bit": 40,
    "generate_4bit_lora": 70,
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
            bf16_supported=torch.cuda.is_bf16_supported(),
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


def _autocast():
    dev = device()
    return torch.autocast(device_type=dev.type, dtype=models.compute_dtype())


def _optimizer(params):
    if bnb_has_cuda():
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=2e-4), "paged_adamw_8bit"
    return torch.optim.AdamW(params, lr=2e-4), "adamw_torch"


def _random_ids(batch: int, length: int, vocab: int, seed: int, avoid: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    hi = vocab - 1 if avoid == vocab - 1 else vocab
    ids = torch.randint(0, hi, (batch, length), generator=g)
    if avoid is not None and avoid < hi:
        ids[ids == avoid] = (avoid + 1) % hi
    return ids.to(device())


def measure_train(cfg, shapes: Shapes, budget: Budget, quant: str) -> dict:
    from peft import get_peft_model, prepare_model_for_kbit_training

    model, info = build_model(cfg, quant)
    gc_kwargs = {"use_reentrant": False}
    if quant == "4bit":
        # exactly what models.load_model(quant="4bit", for_training=True) does after loading
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                gradient_checkpointing_kwargs=gc_kwargs)
        models.disable_bnb_cpu_repack(model)
    else:
        # the Trainer's gradient_checkpointing=True on a bf16 base (models.load_model(quant="none"))
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    model.config.use_cache = False
    model = get_peft_model(model, models.lora_config(r=shapes.lora_r, alpha=2 * shapes.lora_r))
    trainable = [p for p in model.parameters() if p.requires_grad]
    info["trainable_params_m"] = round(sum(p.numel() for p in trainable) / 1e6, 3)
    info["lora_layers"] = sum(1 for n, _ in model.named_modules() if n.endswith(".lora_A"))
    opt, info["optimizer"] = _optimizer(trainable)
    model.train()
    ids = _random_ids(shapes.batch_size, shapes.seq_len, cfg.vocab_size, seed=1)
    mask = torch.ones_like(ids)
    reset_peak()

    def step() -> float:
        with _autocast():
            loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    losses, times = [], []
    for i in range(shapes.warmup_steps + shapes.train_steps):
        if budget.expired():
            info["stopped"] = f"time budget after {i} steps"
            break
        sync()
        t = time.monotonic()
        losses.append(step())
        sync()
        times.append(time.monotonic() - t)
    timed = times[shapes.warmup_steps:]
    tokens = shapes.batch_size * shapes.seq_len
    info.update(
        batch_size=shapes.batch_size,
        seq_len=shapes.seq_len,
        steps_timed=len(timed),
        step_s=[round(x, 3) for x in times],
        loss=[round(x, 4) for x in losses],
        **memory_fields(),
    )
    if not all(math.isfinite(x) for x in losses):
        raise RuntimeError(f"non-finite loss {losses}")
    # every LoRA B must have moved: catches a broken base path (e.g. the bnb CPU repack trap)
    if losses:
        frozen_b = [n for n, p in model.named_parameters() if "lora_B" in n and p.requires_grad and not p.detach().abs().sum() > 0]
        info["lora_b_updated"] = not frozen_b
        if frozen_b:
            raise RuntimeError(f"{len(frozen_b)} LoRA B matrices did not move after {len(losses)} steps: {frozen_b[:3]}")
    if timed:
        info["tokens_per_s"] = round(tokens * len(timed) / sum(timed), 2)
        info["sequences_per_s"] = round(shapes.batch_size * len(timed) / sum(timed), 3)
        info["status"] = "ok"
    else:
        info["status"] = "partial: no timed step (" + info.get("stopped", "warmup only") + ")"
    del model, opt
    return info


def measure_generate(cfg, shapes: Shapes, budget: Budget, with_lora: bool) -> dict:
    model, info = build_model(cfg, "4bit")
    if with_lora:
        from peft import get_peft_model

        lcfg = models.lora_config(r=shapes.lora_r, alpha=2 * shapes.lora_r)
        lcfg.inference_mode = True
        model = get_peft_model(model, lcfg)
        info["lora_r"] = shapes.lora_r
    model.eval()
    eos = cfg.eos_token_id
    prompt = _random_ids(shapes.gen_batch, shapes.gen_prompt, cfg.vocab_size, seed=2, avoid=eos)
    mask = torch.ones_like(prompt)
    kwargs = dict(attention_mask=mask, do_sample=True, temperature=0.9, top_p=0.95, top_k=0,
                  eos_token_id=eos, pad_token_id=eos)
    reset_peak()
    with torch.inference_mode():
        sync()
        t = time.monotonic()
        model.generate(prompt, max_new_tokens=4, min_new_tokens=4, **kwargs)  # warmup
        sync()
        info["warmup_s"] = round(time.monotonic() - t, 3)
        max_time = max(budget.left() - RESERVE_S, 1.0)
        sync()
        t = time.monotonic()
        out = model.generate(prompt, max_new_tokens=shapes.gen_new, min_new_tokens=shapes.gen_new,
                             max_time=max_time, **kwargs)
        sync()
        dt = time.monotonic() - t
    new = out.shape[1] - shapes.gen_prompt
    info.update(
        batch=shapes.gen_batch,
        prompt_tokens=shapes.gen_prompt,
        new_tokens_requested=shapes.gen_new,
        new_tokens=new,
        seconds=round(dt, 3),
        new_tokens_per_s=round(shapes.gen_batch * new / dt, 2),
        ms_per_step=round(1000 * dt / max(new, 1), 2),
        **memory_fields(),
    )
    info["status"] = "ok" if new == shapes.gen_new else f"partial: {new}/{shapes.gen_new} new tokens (max_time)"
    del model, out
    return info


def measure_evaluator(cfg, shapes: Shapes, budget: Budget) -> dict:
    from peft import get_peft_model

    model, info = build_model(cfg, "4bit", seq_cls=True)
    lcfg = models.lora_config(r=shapes.lora_r, alpha=2 * shapes.lora_r, task="seq_cls")
    lcfg.inference_mode = True
    model = get_peft_model(model, lcfg)
    model.eval()
    ids = _random_ids(shapes.eval_batch, shapes.eval_seq, cfg.vocab_size, seed=3, avoid=cfg.pad_token_id)
    mask = torch.ones_like(ids)
    reset_peak()
    times = []
    with torch.inference_mode():
        for i in range(shapes.eval_warmup + shapes.eval_batches):
            if budget.expired():
                info["stopped"] = f"time budget after {i} batches"
                break
            sync()
            t = time.monotonic()
            z = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.squeeze(-1).float()
            sync()
            times.append(time.monotonic() - t)
            if z.shape != (shapes.eval_batch,) or not torch.isfinite(z).all():
                raise RuntimeError(f"bad scores: shape {tuple(z.shape)}, finite {bool(torch.isfinite(z).all())}")
    timed = times[shapes.eval_warmup:]
    info.update(
        batch=shapes.eval_batch,
        seq_len=shapes.eval_seq,
        batches_timed=len(timed),
        batch_s=[round(x, 4) for x in times],
        **memory_fields(),
    )
    if timed:
        info["solutions_per_s"] = round(shapes.eval_batch * len(timed) / sum(timed), 2)
        info["tokens_per_s"] = round(shapes.eval_batch * shapes.eval_seq * len(timed) / sum(timed), 1)
        info["status"] = "ok"
    else:
        info["status"] = "partial: no timed batch"
    del model
    return info


# ---------------------------------------------------------------------------- driver


def summarize(meas: dict) -> dict:
    q, b = meas.get("qlora_train", {}), meas.get("bf16_lora_train", {})
    out = {}
    if q.get("tokens_per_s") and b.get("tokens_per_s"):
        out["qlora_over_bf16_tokens_per_s"] = round(q["tokens_per_s"] / b["tokens_per_s"], 3)
    if q.get("peak_mem_gib") and b.get("peak_mem_gib"):
        out["qlora_over_bf16_peak_mem"] = round(q["peak_mem_gib"] / b["peak_mem_gib"], 3)
    g, gl = meas.get("generate_4bit", {}), meas.get("generate_4bit_lora", {})
    if g.get("new_tokens_per_s") and gl.get("new_tokens_per_s"):
        out["generate_lora_over_plain"] = round(gl["new_tokens_per_s"] / g["new_tokens_per_s"], 3)
    return out


def _fmt(v, unit: str = "") -> str:
    return "-" if v is None else f"{v:,.1f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def print_table(result: dict) -> None:
    rows = []
    for name, m in result["measurements"].items():
        thr = (
            _fmt(m.get("tokens_per_s"), " tok/s") if "train" in name
            else _fmt(m.get("new_tokens_per_s"), " new tok/s") if name.startswith("generate")
            else _fmt(m.get("solutions_per_s"), " sol/s")
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
    if "qlora_over_bf16_tokens_per_s" in summary:
        print(f"QLoRA / bf16 LoRA: {summary['qlora_over_bf16_tokens_per_s']:.2f}x tokens/s", end="")
        if "qlora_over_bf16_peak_mem" in summary:
            print(f", {summary['qlora_over_bf16_peak_mem']:.2f}x peak memory", end="")
        print()
    if "generate_lora_over_plain" in summary:
        print(f"generate with LoRA / without: {summary['generate_lora_over_plain']:.2f}x new tokens/s")
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
    shapes = TINY_SHAPES if args.tiny else Shapes()
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
        "settings": {**asdict(shapes), "lora_alpha": 2 * shapes.lora_r, "lora_targets": "all-linear",
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
            if name == "qlora_train":
                m = measure_train(cfg, shapes, budget, "4bit")
            elif name == "bf16_lora_train":
                m = measure_train(cfg, shapes, budget, "bf16")
            elif name == "generate_4bit":
                m = measure_generate(cfg, shapes, budget, with_lora=False)
            elif name == "generate_4bit_lora":
                m = measure_generate(cfg, shapes, budget, with_lora=True)
            else:
                m = measure_evaluator(make_config(args.tiny, seq_cls=True), shapes, budget)
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
    print_table(result)
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="2-layer hidden-64 model and small shapes (CPU check)")
    p.add_argument("--budget-s", type=float, default=420.0, help="total time guard, imports included (default 420)")
    p.add_argument("--out", help="result file (.json) or folder; default bench/results/gpu_<device>.json")
    p.add_argument("--only", help=f"comma-separated subset of {','.join(MEASUREMENTS)}")
    p.add_argument("--batch-size", type=int, help="training sequences per step (default 4)")
    p.add_argument("--seq-len", type=int, help="training sequence length (default 1024)")
    p.add_argument("--train-steps", type=int, help="timed training steps after warmup (default 4)")
    p.add_argument("--gen-batch", type=int, help="sequences per generate call (default 32)")
    p.add_argument("--eval-batch", type=int, help="evaluator sequences per forward (default 16)")
    p.add_argument("--lora-r", type=int, help="LoRA rank (default 16; alpha = 2r)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    result = run(parse_args(argv))
    bad = [n for n, m in result["measurements"].items() if str(m.get("status", "")).startswith("error")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
