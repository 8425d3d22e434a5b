"""Step 1 of the paper: supervised step-by-step solution fine-tuning (SSFT).

Fine-tunes a base model with LoRA (QLoRA: 4-bit NF4 base on GPU) to write a
step-by-step solution ending in \\boxed{answer}. Loss is on the solution only
(TRL prompt/completion data). Greedy accuracy on a held-out slice is measured
before and after training, so you can see that it learned.

    python recipes/01_ssft.py                       # cpu preset without a GPU, a100/t4 preset with one
    python recipes/01_ssft.py --preset smoke        # < 60 s on CPU; what the tests run
    python recipes/01_ssft.py --style both --lora_r 64 --run runs/both

Needs: cpu preset 3.8 min on 2 CPU cores (measured: 2.6 min of training, 120 steps x batch 8 at ~740 tok/s,
plus two greedy checks; 135M model, synthetic levels 1-3; greedy 5.0% -> 30.0% on 60 held-out problems;
bench/results/cpu_chain/ssft/metrics.json);
t4 ~1.5B model in 4-bit, ~10 GB (estimate); a100 7B model in 4-bit: 5.2 GiB of weights (README, GPU memory)
plus activations and logits, not measured yet.
Writes runs/<preset>/ssft/: adapter/ (PeftModel.from_pretrained loads it), config.json,
metrics.json, manifest.json. Interrupted? Rerun the same command: it resumes from the last checkpoint.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

# light imports only: a bad flag or path is reported in seconds (transformers/trl load after the checks)
from mathlite import data, models, report, runs, sampling
from mathlite.data import SolutionStyle  # a field is named `data`: data.SolutionStyle would read as it
from mathlite.stage import Stage


@dataclass
class Config:
    model: str = models.OFFLINE_MODEL  # hub id, local folder, or the offline 135M model
    # "synthetic[:options]", a MATH folder (paper split), a .jsonl, a hub id. Levels 1-3: in 52 steps a 135M
    # model learns nothing of levels 4-5 (0% greedy when trained on all five), so they only slow the CPU run
    data: str = "synthetic:levels=1-3"
    style: SolutionStyle = "steps"  # training targets (paper Table 2)
    train_size: int | None = 2000  # problems to train on (None = all)
    val_size: int = 0  # problems carved out of the train split (seed 0) and never trained on: 02 samples them as split "val" (powered preset: the evaluator's problems)
    eval_size: int = 60  # held-out problems for the greedy accuracy check (±6 points at 60)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05  # cpu preset: 0 (drawing the dropout masks was ~10% of a CPU step)
    lr: float = 2e-4  # LoRA tolerates a high lr; 1e-4..3e-4 is the usual range
    epochs: float = 1.0
    max_steps: int = 52  # > 0 overrides epochs (cpu preset: 120 steps x batch 8, 3.2-6 min on 2 CPU cores)
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512  # prompt + solution tokens; longer examples are truncated
    group_by_length: bool = True  # batches of similar lengths (seeded): less padding, same data
    # recompute the activations of every n-th decoder layer in the backward pass instead of keeping them (0: none,
    # 1: all, 2: every other layer): less RAM for less speed, the same adapter (README); GPU presets: every layer
    gradient_checkpointing: int = 0
    max_new_tokens: int = 160  # for the before/after greedy check
    quant: models.Quant = "auto"  # 4bit on CUDA (QLoRA), none (bf16) on CPU
    save_steps: int = 25
    log_steps: int = 5
    eval_before: bool = True  # measure the base model too (costs one greedy pass)
    seed: int = 0
    run: str = ""  # run folder; default runs/<preset>
    preset: str = ""
    force: bool = False  # retrain even if a finished adapter exists


PRESETS = {
    "smoke": dict(train_size=24, eval_size=4, max_steps=3, batch_size=4, max_length=256, max_new_tokens=32,
                  lora_r=8, lora_alpha=16, save_steps=2, log_steps=1),
    # lr measured on this preset (greedy on the 60 held-out problems after 52 steps): 2e-4 16.7%, 5e-4 28.3%,
    # 1e-3 30.0%. A short run on a small model wants a high LoRA lr; the GPU presets keep 2e-4 / 1e-4.
    "cpu": dict(lr=1e-3, lora_dropout=0.0, max_steps=120, gradient_checkpointing=2),
    # the powered chain (run_all --preset powered, 3 seeds): the cpu SSFT once per seed; the base model's
    # greedy score is the same for every seed, so it is not measured again
    # 500 test problems (the synthetic test split has 200 unless told), and 200 train problems kept out of SSFT for
    # the evaluator: a probe trained on the SSFT's own training problems did not carry over to new ones (README)
    "powered": dict(data="synthetic:levels=1-3,n_train=2200,n_test=500", val_size=200, lr=1e-3, lora_dropout=0.0,
                    max_steps=120, eval_before=False, gradient_checkpointing=2),
    "t4": dict(model="Qwen/Qwen2.5-1.5B", data="math-paper", style="math", train_size=None, eval_size=100,
               max_steps=-1, epochs=2.0, batch_size=4, grad_accum=4, max_length=1024, max_new_tokens=512,
               lora_r=16, lora_alpha=32, save_steps=200, log_steps=20),
    "a100": dict(model="Qwen/Qwen2.5-7B", data="math-paper", style="math", train_size=None, eval_size=200,
                 max_steps=-1, epochs=3.0, batch_size=8, grad_accum=2, max_length=1024, max_new_tokens=768,
                 lora_r=64, lora_alpha=128, lr=1e-4, save_steps=200, log_steps=20),
}


def greedy_check(model, tok, problems, cfg, label: str) -> float:
    summary = sampling.greedy_accuracy(model, tok, problems, max_new_tokens=cfg.max_new_tokens,
                                       batch_size=max(cfg.batch_size, 8), desc=f"greedy ({label})")
    print(f"[01] greedy accuracy {label}: {summary['accuracy']:.1%} on {len(problems)} held-out problems "
          f"({summary['seconds']:.0f} s)")
    return summary["accuracy"]


def sft_args(cfg) -> dict:
    """mathlite.sft.sft_trainer's settings from this recipe's config: one place for main and the benchmark."""
    return dict(label="SSFT", lr=cfg.lr, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                max_steps=cfg.max_steps, epochs=cfg.epochs, seed=cfg.seed, save_steps=cfg.save_steps,
                log_steps=cfg.log_steps, max_length=cfg.max_length,
                peft_config=models.lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout),
                group_by_length=cfg.group_by_length, gradient_checkpointing=cfg.gradient_checkpointing)


def sft_trainer(cfg, model, tok, records, ckpt_dir, callbacks=()):
    """This recipe's trainer (bench/bench_throughput.py times this very object): TRL's SFTTrainer as
    mathlite.sft builds it (lean loss on CPU, bf16 LoRA on a bf16 base, batches grouped by length)."""
    from mathlite import sft as sft_lib

    return sft_lib.sft_trainer(model, tok, records, ckpt_dir, callbacks=callbacks, **sft_args(cfg))


def main(argv):
    cfg = runs.parse_config(Config, PRESETS, argv)
    runs.print_config(cfg, "01 SSFT config")
    out = Path(cfg.run) / "ssft"
    if runs.check_resume(out, cfg, "SSFT run", "[01]", resumable=True):
        return
    models.resolve_model(cfg.model)  # a misspelt --model fails here, before any data or weights load

    train = data.load_problems(cfg.data, "train", limit=cfg.train_size or None, seed=cfg.seed, val_size=cfg.val_size,
                               val_seed=0)
    held_out = data.load_problems(cfg.data, "test", limit=cfg.eval_size, seed=cfg.seed)
    if not train:
        raise runs.UserError(f"{cfg.data}: the train split is empty")
    with runs.as_user_error(f"{cfg.model}: cannot load its tokenizer; pass --model a model folder or hub id",
                            OSError, ValueError):
        tok = models.load_tokenizer(cfg.model)
    records = data.prompt_completion_records(train, tok, cfg.style)
    print(f"[01] {len(records)} training examples from {len(train)} problems ({cfg.data}, style {cfg.style}); "
          f"{len(held_out)} held-out problems")
    seen = {p.question for p in train} & {p.question for p in held_out}
    if seen:  # e.g. one .jsonl file passed as --data: it is both splits
        print(f"[01] warning: {len(seen)} of the {len(held_out)} 'held-out' problems are also training problems "
              f"({cfg.data} has no separate test split), so the greedy check measures recall, not generalisation")

    # every check passed: from here on the run writes to its folder. Imported here, not at the top:
    # they load transformers and trl (seconds), which --help and the checks above do not need
    from mathlite import generator, trainer

    if cfg.force and out.exists():
        shutil.rmtree(out)
    # unfinished (complete=False) until the end: a rerun resumes only with the same config
    st = Stage(out, "ssft", {k: v for k, v in runs.config_dict(cfg).items() if k not in runs.LOCATION_KEYS})
    st.begin(cfg, seed=cfg.seed)
    trainer.setup_runtime()

    model = models.load_model(cfg.model, quant=cfg.quant, for_training=True)
    metrics = {"train_problems": len(train), "train_examples": len(records), "eval_problems": len(held_out),
               "eval_problems_also_trained_on": len(seen)}
    with runs.timer() as t_before:
        if cfg.eval_before and held_out:
            metrics["greedy_before"] = greedy_check(model, tok, held_out, cfg, "before")
            trainer.release_free_memory()  # the decode's KV caches, before training's own peak
    metrics["seconds_eval_before"] = t_before["seconds"]

    with runs.timer() as t_train:
        sft, result = generator.train_generator(model, tok, records, out / "checkpoints", tag="[01]", **sft_args(cfg))
        metrics.update({k: v for k, v in result.items() if isinstance(v, (int, float))})
    metrics["seconds_train"] = t_train["seconds"]
    metrics["steps"] = sft.state.global_step
    metrics["tokens_seen"] = int(sft.state.num_input_tokens_seen or 0)
    # the adapter is written in full beside its place, then renamed: no adapter/ or a complete one
    st.publish(generator.save(sft.model, tok, st.work_dir("adapter")), "adapter")

    with runs.timer() as t_after:
        if held_out:
            model = sft.model
            model.eval()
            if not models.has_cuda() and hasattr(model.get_base_model(), "set_attn_implementation"):
                model.get_base_model().set_attn_implementation("sdpa")  # faster than eager for decoding
            metrics["greedy_after"] = greedy_check(model, tok, held_out, cfg, "after")
    metrics["seconds_eval_after"] = t_after["seconds"]
    runs.atomic_write_json(out / "config.json", runs.config_dict(cfg))
    runs.atomic_write_json(out / "metrics.json", metrics)
    st.finish(cfg, seed=cfg.seed, metrics=metrics, data_fingerprint=data.fingerprint(train),
              eval_fingerprint=data.fingerprint(held_out),
              timings={k: v for k, v in metrics.items() if k.startswith("seconds")})
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the adapter is what later stages read
    before = metrics.get("greedy_before")
    print(f"[01] done in {t_train['seconds'] / 60:.1f} min of training: greedy "
          + (f"{before:.1%} -> " if before is not None else "")
          + f"{report.fmt(metrics.get('greedy_after'), '.1%')}; adapter in {out / 'adapter'}")


if __name__ == "__main__":
    runs.run_main(main)
