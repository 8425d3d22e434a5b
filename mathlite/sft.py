"""Supervised fine-tuning of a generator with TRL's SFTTrainer, as recipe 01 (SSFT) and recipe 05's
generator stages run it: prompt/completion records, the loss on the solution only, our progress bar,
and resuming from the newest checkpoint of an interrupted run."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from transformers import set_seed
from trl import SFTConfig, SFTTrainer  # noqa: F401  (the type sft_trainer returns)

from . import models, trainer


def sft_trainer(model, tok, records: list[dict], checkpoints: str | Path, *, label: str, lr: float, batch_size: int,
                grad_accum: int, max_steps: int, epochs: float, seed: int, save_steps: int, log_steps: int,
                max_length: int, peft_config=None, group_by_length: bool = True, gradient_checkpointing: int = 0,
                callbacks=()) -> SFTTrainer:
    """An SFTTrainer over `records` (data.prompt_completion_records) writing checkpoints to `checkpoints`.
    peft_config: a new LoRA adapter to train (recipe 01); None when `model` is a PeftModel already,
    whose adapter is trained as it is (recipe 05).

    On CPU the loss is mathlite.trainer's lean loss (the LM head only on the solution tokens, no
    full-vocabulary metrics at every step), the LoRA weights are bf16 on a bf16 base and attention is
    eager for training; batches are grouped by length (seeded) everywhere (bench/bench_throughput.py).
    gradient_checkpointing: on CPU too, every n-th decoder layer recomputes its activations in the
    backward pass (0: none; the GPU path checkpoints every layer); the freed heap is handed back to the
    OS after every CPU step either way (trainer.TrimMemoryCallback)."""
    # transformers 5 names it train_sampling_strategy; 4.x has the boolean group_by_length
    if "train_sampling_strategy" in SFTConfig.__dataclass_fields__:
        grouping = {"train_sampling_strategy": "group_by_length" if group_by_length else "random"}
    else:
        grouping = {"group_by_length": group_by_length}
    args = trainer.one_device(SFTConfig(
        **trainer.common_training_args(checkpoints, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                                       max_steps=max_steps, epochs=epochs, seed=seed, save_steps=save_steps,
                                       log_steps=log_steps, gradient_checkpointing=gradient_checkpointing),
        max_length=max_length,
        completion_only_loss=True,  # the loss is on the solution, not on the problem statement
        packing=False,
        **grouping,
    ))
    if not models.has_cuda() and hasattr(model, "set_attn_implementation"):
        # measured on the cpu preset's ~130-token rows: eager attention trains faster per CPU-second than
        # SDPA, whose CPU backward dominated (bench/bench_throughput.py); generation goes back to SDPA
        model.set_attn_implementation("eager")
    if peft_config is not None:
        # the new adapter's LoRA A matrices are drawn here, before the Trainer seeds anything: seed them, or
        # every process starts from other weights (torch's initial seed differs from process to process)
        set_seed(seed)
        model, peft_config = trainer.sft_model(model, peft_config)
    sft = trainer.lean_sft_trainer_class()(model=model, args=args, train_dataset=Dataset.from_list(records),
                                           processing_class=tok, peft_config=peft_config,
                                           callbacks=[trainer.ProgressCallback(label), trainer.TrimMemoryCallback(),
                                                      *callbacks])
    trainer.drop_printer(sft)
    models.settle_trainable_dtypes(sft.model)  # after TRL's bf16 cast of a 4-bit model's LoRA (fp32 on a T4)
    return sft


def train_or_resume(sft: SFTTrainer, checkpoints: str | Path, tag: str) -> dict | None:
    """Train, resuming from the newest checkpoint under `checkpoints` if there is one. Returns the
    Trainer's train metrics, or None when that checkpoint is the final one (a run killed after
    training): its adapter is loaded as it is, without the extra step a resume would train."""
    ckpt = trainer.resume_checkpoint(Path(checkpoints), tag)
    if ckpt and trainer.finished_training(sft, ckpt):
        print(f"{tag} training had finished before the interruption: the adapter of {ckpt} is used as it is")
        return None
    return sft.train(resume_from_checkpoint=ckpt).metrics
