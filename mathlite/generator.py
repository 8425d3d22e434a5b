"""The generator as the recipes use it: load it to sample (recipe 02, recipe 05's generators) and train
it with supervised fine-tuning (recipe 01's SSFT, recipe 05's generator stages)."""

from __future__ import annotations

import gc
from pathlib import Path

import torch

from . import files, models, sampling
from .errors import UserError
from .samples import ModelId


def load_tokenizer(model_name: str):
    try:
        return models.load_tokenizer(model_name)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"{model_name}: cannot load its tokenizer; pass --model a model folder or hub id "
                        f"({first})") from None


def load_generator(model_name: str, adapter: str | None):
    """(model, tokenizer, model id) ready to sample: the base model, with `adapter` on top (merged
    into the weights on CPU, where LoRA's extra matmuls would slow every decode step)."""
    tok = load_tokenizer(model_name)
    model = models.load_model(model_name, quant="auto")
    model_id = model_name
    if adapter:
        try:
            model = models.load_adapter(model, adapter)
        except models.ModelNotFound as e:
            made_for = files.read_json(Path(adapter) / "adapter_config.json").get("base_model_name_or_path")
            raise UserError(f"{e}; pass " + (f"--model {made_for}" if made_for else "the --model it was made for")
                            + " or another --adapter") from None
        model_id = str(ModelId(model_name, sampling.adapter_fingerprint(adapter)))
        if not models.gpu_path():
            model = model.merge_and_unload()
    model.eval()
    models.speed_up_frozen_generate(model)
    return model, tok, model_id


def train_generator(model, tok, records: list[dict], checkpoints: Path, *, tag: str, label: str, peft_config=None,
                    **sft_args):
    """SFT of `model` on prompt/completion `records` (TRL's SFTTrainer, the loss on the solution only),
    resuming from the newest checkpoint under `checkpoints`. `peft_config`: a new LoRA adapter to train
    (SSFT); None when `model` is a PeftModel whose adapter is trained further (recipe 05).
    Returns (the trainer, whose .model is the trained model, the train metrics or {} after a finished
    run's last checkpoint)."""
    from . import sft  # trl loads in seconds: sampling alone does not need it

    trainer = sft.sft_trainer(model, tok, records, checkpoints, label=label, peft_config=peft_config, **sft_args)
    return trainer, sft.train_or_resume(trainer, checkpoints, tag) or {}


def save(model, tok, work: Path, extra_json: dict | None = None) -> Path:
    """Adapter + tokenizer (+ extra JSON files) into the folder `work` (PeftModel.from_pretrained loads it)."""
    models.stable_adapter_config(model)  # the same adapter_config.json on every run
    model.save_pretrained(work)
    tok.save_pretrained(work)
    for name, obj in (extra_json or {}).items():
        files.atomic_write_json(Path(work) / name, obj)
    return Path(work)


def free_memory() -> None:
    """Drop the last step's model before the next one loads: one model in memory at a time."""
    sampling.free_vllm()  # a vLLM engine of a sampling step holds most of the GPU
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
