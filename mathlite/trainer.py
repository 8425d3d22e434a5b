"""What the training recipes (01 SSFT, 03 evaluator, 05 multitask) share around the HF Trainer:
a rich progress bar with ETA, one log line per interval (loss, lr, tokens/s, peak memory),
checkpoint discovery for resume, and the CPU/GPU-dependent training arguments."""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from . import models


def release_free_memory() -> None:
    """Hand the heap's freed pages back to the OS (glibc's malloc_trim; nothing elsewhere).

    A CPU training step frees a few hundred MB of activations, and glibc keeps most of them: 01's cpu
    preset without checkpointing peaked at 4.64 GiB untrimmed, 3.33 GiB trimmed after every step, though
    no tensor outlives its step. It costs ~10% of the training speed (bench/results/trim_ab_01.txt)."""
    global _libc
    if torch.cuda.is_available() or not sys.platform.startswith("linux"):
        return
    if _libc is None:
        import ctypes
        import ctypes.util

        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim  # musl has none: AttributeError, handled below
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc = None


class TrimMemoryCallback(TrainerCallback):
    """release_free_memory() after every optimizer step (CPU only; a few ms against a step of seconds)."""

    def on_step_end(self, args, state, control, **kw):
        release_free_memory()


def peak_memory_gib() -> float:
    """Peak GPU memory when on CUDA, else this process's peak resident memory."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return rss_kib / 2**20 if sys.platform != "darwin" else rss_kib / 2**30


class ProgressCallback(TrainerCallback):
    """A rich bar with ETA, and at every logging step a line like
    `step 40/150 | loss 0.612 | lr 1.6e-04 | 312 tok/s | peak 1.9 GiB`."""

    def __init__(self, description: str = "training"):
        self.description = description
        self.progress = None
        self.task = None
        self._t0 = None
        self._tokens0 = 0

    def on_train_begin(self, args, state, control, **kw):
        if not state.is_world_process_zero:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=state.max_steps, completed=state.global_step)
        self._t0 = time.time()
        self._tokens0 = state.num_input_tokens_seen or 0
        self._step0 = state.global_step

    def on_step_end(self, args, state, control, **kw):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kw):
        if self.progress is None or not logs or "loss" not in logs:
            return
        dt = max(time.time() - self._t0, 1e-9)
        tokens = (state.num_input_tokens_seen or 0) - self._tokens0
        parts = [f"step {state.global_step}/{state.max_steps}", f"loss {logs['loss']:.4f}"]
        if "learning_rate" in logs:
            parts.append(f"lr {logs['learning_rate']:.1e}")
        if tokens:
            parts.append(f"{tokens / dt:.0f} tok/s")
        else:
            parts.append(f"{(state.global_step - self._step0) / dt:.2f} step/s")
        parts.append(f"peak {peak_memory_gib():.1f} GiB")
        self.progress.console.print(" | ".join(parts), highlight=False)

    def on_train_end(self, args, state, control, **kw):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete `checkpoint-N` folder, for Trainer's resume_from_checkpoint.
    A checkpoint is complete once trainer_state.json is written (the Trainer writes it last)."""
    out = Path(output_dir)
    if not out.exists():
        return None
    ckpts = []
    for p in out.glob("checkpoint-*"):
        try:
            step = int(p.name.split("-")[-1])
        except ValueError:
            continue
        if (p / "trainer_state.json").exists():
            ckpts.append((step, p))
    return str(max(ckpts)[1]) if ckpts else None


def resume_checkpoint(ckpts: Path, tag: str = "") -> str | None:
    """The newest checkpoint to resume from. The Trainer writes a checkpoint's trainer_state.json
    last but not atomically: one torn by a kill is dropped, and the one before it is used."""
    while (last := last_checkpoint(ckpts)) is not None:
        try:
            json.loads((Path(last) / "trainer_state.json").read_text())
            return last
        except (json.JSONDecodeError, UnicodeDecodeError):
            print(f"{tag} {last}: torn by an interrupted save; resuming from the checkpoint before it")
            shutil.rmtree(last)
    return None


def finished_training(sft, ckpt: str) -> bool:
    """If `ckpt` is the final checkpoint (a run killed after training, e.g. in the greedy check),
    load its adapter weights and trainer state into `sft` and return True. Resuming from it instead
    would train one step too many: transformers' loop checks max_steps only after a step."""
    from peft.utils import load_peft_weights, set_peft_model_state_dict
    from transformers import TrainerState

    state = TrainerState.load_from_json(str(Path(ckpt) / "trainer_state.json"))
    if not 0 < state.max_steps <= state.global_step:
        return False
    set_peft_model_state_dict(sft.model, load_peft_weights(ckpt))
    sft.state = state
    return True


def _checkpoints_some_layers() -> bool:
    """Whether this transformers can checkpoint every n-th decoder layer only (5.x: `every_n_layers`)."""
    import inspect

    from transformers import PreTrainedModel

    enable = getattr(PreTrainedModel, "activation_checkpointing_enable", None) or PreTrainedModel.gradient_checkpointing_enable
    return "every_n_layers" in inspect.signature(enable).parameters


def common_training_args(out_dir: str | Path, *, lr: float, batch_size: int, grad_accum: int, max_steps: int,
                         epochs: float, seed: int, save_steps: int, log_steps: int, warmup_ratio: float = 0.03,
                         gradient_checkpointing: int = 0) -> dict:
    """TrainingArguments fields shared by the recipes; GPU-only options switched on only on GPU.
    MATHLITE_GPU_PATH=1 takes the GPU presets' options (paged 8-bit AdamW, gradient checkpointing)
    on CPU too, so that CI rehearses that path (bitsandbytes' paged optimizer falls back on CPU).
    gradient_checkpointing: on CPU too, recompute the activations of every n-th decoder layer in the
    backward pass (0: none, 1: every layer, 2: every other one; the GPU path always checkpoints every layer)."""
    from .models import cuda_bf16
    from .models import gpu_path as _gpu_path

    on_gpu = torch.cuda.is_available()
    gpu_path = _gpu_path()
    bf16 = cuda_bf16()  # compute capability >= 8.0; a T4 trains in fp16
    every_n = 1 if gpu_path else int(gradient_checkpointing)
    if every_n > 1 and not _checkpoints_some_layers():
        every_n = 1  # transformers < 5 checkpoints all layers or none: the RAM bound holds, at a lower speed
    return dict(
        output_dir=str(out_dir),
        learning_rate=lr,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        max_steps=max_steps if max_steps > 0 else -1,
        num_train_epochs=epochs,
        lr_scheduler_type="cosine",
        warmup_steps=warmup_ratio,  # a float < 1 is a ratio of the total steps
        logging_steps=log_steps,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=2,
        seed=seed,
        data_seed=seed,
        report_to="none",
        disable_tqdm=True,  # ProgressCallback draws the bar
        bf16=bf16,
        fp16=on_gpu and not bf16,  # T4: no bf16
        # paged 8-bit AdamW keeps optimizer state small and spills to CPU memory on spikes (needs CUDA)
        optim="paged_adamw_8bit" if gpu_path else "adamw_torch",
        gradient_checkpointing=bool(every_n),
        gradient_checkpointing_kwargs=({"use_reentrant": False, **({"every_n_layers": every_n} if every_n > 1 else {})}
                                       if every_n else None),
        dataloader_num_workers=0,
        use_cpu=not on_gpu,
        include_num_input_tokens_seen="non_padding",
        save_only_model=False,
    )


def one_device(args):
    """Train on one device per process. On a host with several GPUs and no launcher, transformers
    sets n_gpu to the device count; the Trainer then wants nn.DataParallel (TRL's trainers refuse
    it) and multiplies the batch size. The model sits on one card (models.load_model's
    device_map), so this process uses that one: n_gpu = 1. Under `accelerate launch` (one process
    per GPU) n_gpu is already 1. Returns `args`."""
    if args.n_gpu > 1 and args.world_size == 1:  # reading n_gpu sets up the device first
        print(f"[trainer] {args.n_gpu} GPUs visible: this process trains on {args.device} only; for all of them, "
              "use accelerate launch --num_processes N (or pick one with CUDA_VISIBLE_DEVICES)")
        args._n_gpu = 1
    return args


def quiet_libraries() -> None:
    """Our own bars and log lines replace the libraries' (dataset map bars, weight-loading bars, dict dumps)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def drop_printer(hf_trainer) -> None:
    """With disable_tqdm the Trainer prints every log dict; ProgressCallback already prints one line."""
    from transformers.trainer_callback import PrinterCallback

    hf_trainer.remove_callback(PrinterCallback)


def setup_runtime() -> None:
    """Use every core on CPU (torch defaults to physical cores) and quiet the libraries' own progress output."""
    if not torch.cuda.is_available():
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        # on a CPU shared with other busy processes, 1 thread was measured ~20x faster than 2 (no spin-waits)
        n = int(os.environ.get("MATHLITE_THREADS", n))
        torch.set_num_threads(max(1, n))
    deterministic_runtime()
    quiet_libraries()


def lora_model(model, peft_config):
    """`get_peft_model` with the LoRA weights in the base model's dtype (bf16 on a bf16 base).

    peft's default upcasts the adapter to fp32; on a bf16 base every LoRA matmul then casts
    its input and output between fp32 and bf16, and fp32 matmuls skip the CPU's bf16 units
    (AMX: ~8x the fp32 rate). TRL already makes QLoRA adapters bf16; this does the same for
    a bf16 base. A 4-bit base keeps peft's default and TRL's own cast."""
    from peft import get_peft_model

    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    return get_peft_model(model, peft_config, autocast_adapter_dtype=quantized)


def sft_model(model, peft_config):
    """(model, peft_config) to hand to SFTTrainer: a bf16 base gets its bf16 LoRA adapter here
    (`lora_model`); a quantized base is left to TRL, which builds the adapter and casts it to bf16."""
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        return model, peft_config
    return lora_model(model, peft_config), None


def _compact_lm_loss(model, inputs: dict, num_items_in_batch=None, with_entropy: bool = False):
    """(loss, n_valid, n_correct, entropy_sum or None) of a causal LM batch.

    Runs the backbone, then the LM head only on the positions that have a next-token label
    (the completion: the prompt and padding are never projected onto the vocabulary), in the
    model's dtype; the log-softmax is taken in fp32 on those rows only. TRL's fused head on a
    device without Triton scores every position, prompt and padding included, and upcasts.
    """

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(base, base.base_model_prefix)
    labels = inputs["labels"]
    kwargs = {k: v for k, v in inputs.items() if k != "labels"}
    kwargs["use_cache"] = False
    hidden = backbone(**kwargs).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    mask = targets != -100
    logits = base.get_output_embeddings()(hidden[mask]).float()
    tgt = targets[mask]
    logp = logits.log_softmax(-1)
    nll = -logp.gather(-1, tgt.unsqueeze(-1)).sum()
    n_valid = mask.sum()
    denom = n_valid if num_items_in_batch is None else num_items_in_batch
    loss = nll / torch.as_tensor(denom, device=nll.device).clamp(min=1)
    with torch.no_grad():
        correct = (logits.argmax(-1) == tgt).sum()
        entropy = -(logp.exp() * logp).sum() if with_entropy else None
    return loss, n_valid, correct, entropy


def lean_sft_trainer_class():
    """TRL's SFTTrainer with a lean loss on CPU (see `_compact_lm_loss`): same data handling,
    collator, completion-only loss, checkpoints and logs. Token accuracy is logged at every
    step (an argmax over the completion rows); entropy, which needs a second full-vocabulary
    pass, only at the logging steps. On CUDA it is TRL's SFTTrainer unchanged."""
    from trl import SFTTrainer

    class LeanSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # evaluation with logits, and CUDA: TRL's own path. On CUDA TRL's fused head is a Triton kernel
            # that already skips unlabelled positions and never holds the [tokens, vocab] logits, which for
            # a 150k vocabulary at 8 x 1024 tokens would be ~5 GB in fp32; the lean loss is for the CPU
            # MATHLITE_GPU_PATH=1 rehearses the GPU presets on CPU, so it takes TRL's path too
            if return_outputs or not self.model.training or inputs["input_ids"].is_cuda or models.gpu_path():
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            step = self.state.global_step + 1
            log_now = self.args.logging_steps and step % max(1, int(self.args.logging_steps)) == 0
            loss, n_valid, correct, entropy = _compact_lm_loss(model, inputs, num_items_in_batch, with_entropy=log_now)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            n = max(int(n_valid), 1)
            metrics = self._metrics["train"]
            metrics["mean_token_accuracy"].append(int(correct) / n)
            if entropy is not None:
                metrics["entropy"].append(float(entropy) / n)
            if "attention_mask" in inputs:
                self._total_train_tokens += int(inputs["attention_mask"].sum())
            else:
                self._total_train_tokens += int(inputs["position_ids"].size(1))
            metrics["num_tokens"] = [self._total_train_tokens]
            return loss

    return LeanSFTTrainer


def deterministic_runtime() -> None:
    """Same command, same numbers. On CPU torch's kernels were measured repeatable at a fixed thread
    count (even with other processes competing for the cores), so nothing changes there. On CUDA,
    cuBLAS split-K and atomic-add kernels are not: ask for the deterministic ones (a warning, not an
    error, where torch has none) and for the cuBLAS workspace they need; no cuDNN autotuning."""
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False  # no NaN fill of every empty tensor
