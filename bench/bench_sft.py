"""Benchmark: SFT throughput on the CPU model, padded batches vs packing vs padding-free.

What recipes/01_ssft.py trains (SmolLM2-135M-Instruct, the offline model, bf16 base with a
LoRA r=16 adapter on every linear layer; TRL SFTTrainer on the synthetic prompt/completion
data, loss on the completion only), in three data layouts, each with a fresh model:

  padded        packing=False: each batch of 8 examples padded to its longest (the recipe)
  packing       packing=True, packing_strategy="bfd": examples packed best-fit-decreasing
                into rows of --max-length tokens (8 rows a batch); TRL then trains
                padding-free (position_ids reset at each example, no attention mask)
  padding_free  packing=False, padding_free=True: each batch of 8 examples flattened into
                one row, no padding

Each runs the same number of optimizer steps: --warmup untimed step(s), then --steps timed
ones, batch --batch-size. Examples longer than --max-length are left out (none are truncated).
The default row length is 256, not 01_ssft's 512: a packed batch of 8 x 512 tokens is 4x the
tokens of a padded batch of these ~130-token examples, which alone made the run ~9 min on a
quiet 2-core machine. Measured once at 512 on a loaded machine (bench/results/
sft_cpu_maxlen512.json): packing 0.59x padded, padding-free 1.14x. Throughput is non-padding tokens processed per second of step
wall time (forward, backward, optimizer, data loading), counted from each batch as TRL counts
them (attention_mask sum; for padding-free rows, the row length); also per second of this
process's CPU time, which a neighbour's load on a shared machine disturbs far less (with one
torch thread it is the compute time). Ratios are against padded; the headline uses CPU time.
Packing puts more tokens in a step than padding does, so compare tokens/s, not steps/s.

Padding-free and packing are only right if attention does not cross example boundaries.
TRL documents padding-free for FlashAttention; on CPU the model runs SDPA, where
transformers builds a block-diagonal mask from the position_ids. Before timing, the bench
checks that on this model: the loss of the same 4 examples, padded vs flattened, must agree.
If it does not, or a layout fails, it is recorded as "unsupported: <reason>", not crashed on.

CPU timings on a shared machine are noisy: the load average before and after each run is
stored with the result.

Run:  python bench/bench_sft.py [--steps 6] [--warmup 1] [--batch-size 8] [--max-length 256]
                                [--only padded,packing] [--quick] [--out bench/results/sft_cpu.json]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LAYOUTS = ("padded", "packing", "padding_free")
DEFAULT_OUT = REPO / "bench" / "results" / "sft_cpu.json"


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _sft_config(layout: str, out_dir: str, args):
    from trl import SFTConfig

    from mathlite import trainer

    common = trainer.common_training_args(
        out_dir, lr=2e-4, batch_size=args.batch_size, grad_accum=1, max_steps=args.warmup + args.steps,
        epochs=1.0, seed=0, save_steps=10**9, log_steps=10**9,
    )
    common.update(save_strategy="no", lr_scheduler_type="constant", warmup_steps=0,
                  include_num_input_tokens_seen="no")  # counted below, the same way for every layout
    return SFTConfig(
        **common,
        # TRL refuses max_length with padding-free batches (it cannot truncate them); the
        # records are filtered to fit max_length beforehand, so nothing is truncated anywhere.
        max_length=None if layout == "padding_free" else args.max_length,
        completion_only_loss=True,
        packing=layout == "packing",
        packing_strategy="bfd",
        padding_free=layout == "padding_free",
    )


def _timed_trainer_class():
    from transformers import TrainerCallback
    from trl import SFTTrainer

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self.cpu_times: list[float] = []
            self._t0 = self._c0 = 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._t0, self._c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t0)
            self.cpu_times.append(time.process_time() - self._c0)

    class CountingSFTTrainer(SFTTrainer):
        """Counts, per optimizer step, the real tokens (as TRL does) and all positions."""

        step_tokens: list[int]
        step_positions: list[int]
        step_examples: list[int]

        def training_step(self, model, inputs, *args, **kwargs):
            if "attention_mask" in inputs:
                real = int(inputs["attention_mask"].sum())
            else:  # padding-free: one flattened row per batch, position_ids restart at every example
                real = int(inputs["position_ids"].size(1))
            if "position_ids" in inputs and "attention_mask" not in inputs:
                examples = int((inputs["position_ids"] == 0).sum())
            else:
                examples = int(inputs["input_ids"].size(0))
            self.step_tokens.append(real)
            self.step_positions.append(int(inputs["input_ids"].numel()))
            self.step_examples.append(examples)
            return super().training_step(model, inputs, *args, **kwargs)

    return CountingSFTTrainer, StepTimer


def check_attention_isolation(model, tokenizer, dataset, n: int = 4) -> dict:
    """Loss of the same n examples as a padded batch and as one flattened padding-free row.

    Equal (up to bf16 rounding) iff attention stays within each example. `dataset`: rows of
    input_ids and completion_mask. LoRA B starts at zero, so this is the base model; dropout
    is off (eval mode).
    """
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = [dataset[i] for i in range(min(n, len(dataset)))]
    losses = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for name, padding_free in (("padded", False), ("flattened", True)):
                collate = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=padding_free)
                batch = collate([dict(r) for r in rows])
                # use_cache=False as TRL's compute_loss passes it: with a KV cache, transformers does
                # not look for packed sequences in position_ids, and attention crosses examples
                losses[name] = float(model(**batch, use_cache=False).loss)
    finally:
        model.train(was_training)
    diff = abs(losses["padded"] - losses["flattened"])
    ok = diff <= 0.02 * max(1.0, abs(losses["padded"]))  # bf16 weights: a few parts in a thousand
    return {"examples": len(rows), "loss_padded": losses["padded"], "loss_flattened": losses["flattened"],
            "abs_diff": diff, "ok": ok}


def run_layout(layout: str, records: list[dict], args) -> dict:
    from datasets import Dataset

    from mathlite import models

    CountingSFTTrainer, StepTimer = _timed_trainer_class()
    load0 = _loadavg()
    t_setup = time.perf_counter()
    tok = models.load_tokenizer(models.OFFLINE_MODEL)
    model = models.load_model(models.OFFLINE_MODEL, quant="none", for_training=True)
    with tempfile.TemporaryDirectory(prefix=f"bench_sft_{layout}_") as tmp:
        timer = StepTimer()
        sft = CountingSFTTrainer(
            model=model,
            args=_sft_config(layout, tmp, args),
            train_dataset=Dataset.from_list(records),
            processing_class=tok,
            peft_config=models.lora_config(args.lora_r, 2 * args.lora_r, 0.05),
            callbacks=[timer],
        )
        sft.step_tokens, sft.step_positions, sft.step_examples = [], [], []
        from mathlite import trainer as mtrainer

        mtrainer.drop_printer(sft)
        setup_s = time.perf_counter() - t_setup
        result: dict = {"layout": layout, "padding_free_collator": bool(getattr(sft, "padding_free", False)),
                        "rows_in_dataset": len(sft.train_dataset), "setup_s": round(setup_s, 2)}
        if layout != "padded":
            iso = check_attention_isolation(sft.model, tok, _check_rows(records, tok, args.max_length))
            result["attention_isolation"] = iso
            if not iso["ok"]:
                return {**result, "status": f"unsupported: attention crosses example boundaries on CPU/SDPA "
                                            f"(loss {iso['loss_padded']:.4f} padded vs {iso['loss_flattened']:.4f} "
                                            "flattened)", "loadavg_before": load0, "loadavg_after": _loadavg()}
        train = sft.train()
    n_steps = len(timer.times)
    w = args.warmup
    if n_steps < w + 1 or len(sft.step_tokens) != n_steps:
        raise RuntimeError(f"expected {args.warmup + args.steps} steps with token counts, got {n_steps} timed "
                           f"and {len(sft.step_tokens)} counted (dataset too small?)")
    timed_s = sum(timer.times[w:])
    cpu_s = sum(timer.cpu_times[w:])
    tokens = sum(sft.step_tokens[w:])
    positions = sum(sft.step_positions[w:])
    result.update({
        "status": "ok",
        "steps_timed": n_steps - w,
        "warmup_steps": w,
        "step_s": [round(t, 3) for t in timer.times],
        "step_cpu_s": [round(t, 3) for t in timer.cpu_times],
        "tokens_per_step": sft.step_tokens,
        "positions_per_step": sft.step_positions,
        "examples_per_step": sft.step_examples,
        "timed_s": round(timed_s, 3),
        "tokens": tokens,
        "padding_share": round(1 - tokens / positions, 4) if positions else None,
        "tokens_per_s": tokens / timed_s,
        "cpu_s": round(cpu_s, 3),
        "tokens_per_cpu_s": tokens / cpu_s,
        "examples_per_s": sum(sft.step_examples[w:]) / timed_s,
        "train_loss": float(train.training_loss),
        "loadavg_before": load0,
        "loadavg_after": _loadavg(),
    })
    del sft, model
    gc.collect()
    return result


def _check_rows(records, tok, max_length: int, n: int = 4) -> list[dict]:
    """n training examples: prompt + completion ids, labels -100 on the prompt (loss on the completion)."""
    rows = []
    for r in records[:n]:
        p = tok(r["prompt"], add_special_tokens=False)["input_ids"]
        c = tok(r["completion"], add_special_tokens=False)["input_ids"]
        ids = (p + c)[:max_length]
        rows.append({"input_ids": ids, "labels": ([-100] * len(p) + c)[:max_length]})
    return rows


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    runs = result["layouts"]
    base = runs.get("padded", {})
    base_tps = base.get("tokens_per_s") if base.get("status") == "ok" else None
    t = Table(title=f"SFT throughput, {result['model']} + LoRA r={result['config']['lora_r']} on CPU "
                    f"({result['config']['steps']} timed steps, batch {result['config']['batch_size']}, "
                    f"max_length {result['config']['max_length']})")
    base_cpu = base.get("tokens_per_cpu_s") if base.get("status") == "ok" else None
    for col in ("layout", "status", "tokens/s", "vs padded", "tokens/CPU-s", "vs padded (CPU)", "padding",
                "tokens/step", "s/step"):
        t.add_column(col, justify="left" if col in ("layout", "status") else "right")
    for name in LAYOUTS:
        r = runs.get(name)
        if r is None:
            continue
        if r.get("status") != "ok":
            t.add_row(name, str(r.get("status"))[:70], "-", "-", "-", "-", "-", "-", "-")
            continue
        ratio = f"{r['tokens_per_s'] / base_tps:.2f}x" if base_tps else "n/a"
        ratio_cpu = f"{r['tokens_per_cpu_s'] / base_cpu:.2f}x" if base_cpu else "n/a"
        steps = r["steps_timed"]
        t.add_row(name, "ok", f"{r['tokens_per_s']:.0f}", ratio, f"{r['tokens_per_cpu_s']:.0f}", ratio_cpu,
                  f"{100 * r['padding_share']:.0f}%", f"{r['tokens'] / steps:.0f}", f"{r['timed_s'] / steps:.2f}")
    Console(width=max(110, Console().width)).print(t)
    load = result.get("loadavg_start")
    Console(width=max(110, Console().width)).print(f"load average at start {load} on {result['machine'].get('cpus')} CPUs, torch threads "
                    f"{result['machine'].get('torch_threads_why')}: timings on a shared machine are noisy.",
                    highlight=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6, help="timed optimizer steps per layout (default 6)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    ap.add_argument("--batch-size", type=int, default=8, help="examples (padded, padding_free) or packed rows per step")
    ap.add_argument("--max-length", type=int, default=256,
                    help="packed row length; longer examples are left out (default 256: see the module docstring)")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--train-size", type=int, default=400, help="synthetic training problems (enough for packing)")
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(LAYOUTS)}")
    ap.add_argument("--quick", action="store_true", help="3 timed steps, batch 4, max_length 256 (a smoke run)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (default: $MATHLITE_THREADS, else all usable cores, or 1 when the "
                         "load average exceeds them)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.batch_size, args.max_length = min(args.steps, 3), min(args.batch_size, 4), min(args.max_length, 256)
    layouts = [x.strip() for x in args.only.split(",")] if args.only else list(LAYOUTS)
    bad = [x for x in layouts if x not in LAYOUTS]
    if bad:
        ap.error(f"unknown layout(s) {bad}; choose from {', '.join(LAYOUTS)}")

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    import torch

    from mathlite import data, models, runs, trainer

    trainer.setup_runtime()  # all usable cores, as the recipes
    cores = torch.get_num_threads()
    load = _loadavg()
    threads_note = f"{cores} (all usable cores, as the recipes)"
    if args.threads:
        torch.set_num_threads(args.threads)
        threads_note = f"{args.threads} (--threads)"
    elif os.environ.get("MATHLITE_THREADS"):
        threads_note = f"{cores} (MATHLITE_THREADS)"
    elif cores > 1 and load and load[0] > cores:
        # On an oversubscribed machine, OpenMP threads wait for each other at every op: one
        # forward+backward was measured at 65-75 s with 2 threads vs 12 s with 1 here.
        torch.set_num_threads(1)
        threads_note = f"1 (load average {load[0]} > {cores} cores: several threads would stall each other)"
    t_start = time.perf_counter()
    tok = models.load_tokenizer(models.OFFLINE_MODEL)
    problems = data.load_problems("synthetic", "train", limit=args.train_size, seed=0)
    records = data.prompt_completion_records(problems, tok, "steps")
    lengths = [len(tok(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"]) for r in records]
    fits = [r for r, n in zip(records, lengths) if n <= args.max_length]
    dropped = len(records) - len(fits)
    records = fits
    result = {
        "benchmark": "sft_cpu",
        "model": "SmolLM2-135M-Instruct (offline, bf16)",
        "data": f"synthetic train, {len(records)} prompt/completion records, style steps "
                f"({dropped} longer than max_length left out; mean {sum(lengths) / max(1, len(lengths)):.0f} tokens)",
        "config": {"steps": args.steps, "warmup": args.warmup, "batch_size": args.batch_size,
                   "max_length": args.max_length, "lora_r": args.lora_r, "lora_alpha": 2 * args.lora_r,
                   "quick": args.quick, "packing_strategy": "bfd", "completion_only_loss": True},
        "machine": {**runs.machine(), "torch_threads": torch.get_num_threads(), "torch_threads_why": threads_note},
        "versions": runs.versions(),
        "loadavg_start": _loadavg(),
        "note": "CPU wall-clock timings on a shared machine: noisy; compare ratios from the same run.",
        "layouts": {},
    }
    for layout in layouts:
        print(f"[bench_sft] {layout}: {args.warmup} warmup + {args.steps} timed steps ...", flush=True)
        try:
            r = run_layout(layout, records, args)
        except Exception as e:  # noqa: BLE001 - a layout that fails is recorded, the others still run
            r = {"layout": layout, "status": f"unsupported: {type(e).__name__}: {str(e).splitlines()[0][:300]}",
                 "traceback": traceback.format_exc()[-2000:]}
        result["layouts"][layout] = r
        if r.get("status") == "ok":
            print(f"[bench_sft] {layout}: {r['tokens_per_s']:.0f} tokens/s ({r['tokens']} tokens in {r['timed_s']:.1f} s)",
                  flush=True)
        else:
            print(f"[bench_sft] {layout}: {r['status']}", flush=True)
    base = result["layouts"].get("padded", {})
    ratios, ratios_cpu = {}, {}
    for name, r in result["layouts"].items():
        if r.get("status") == "ok" and base.get("status") == "ok":
            ratios[name] = r["tokens_per_s"] / base["tokens_per_s"]
            ratios_cpu[name] = r["tokens_per_cpu_s"] / base["tokens_per_cpu_s"]
        elif name != "padded":
            ratios[name] = ratios_cpu[name] = r.get("status")
    result["ratios_vs_padded"] = ratios  # wall time
    result["ratios_vs_padded_cpu"] = ratios_cpu  # process CPU time: less sensitive to a neighbour's load
    ok = {n: r["tokens_per_cpu_s"] for n, r in result["layouts"].items() if r.get("status") == "ok"}
    if "padded" in ok and len(ok) > 1:
        best = max((n for n in ok if n != "padded"), key=ok.get)
        result["headline"] = {"name": f"SFT tokens per CPU-second, {best} vs padded", "ratio": ok[best] / ok["padded"],
                              "best_layout": best, "wall_ratio": ratios[best]}
    result["loadavg_end"] = _loadavg()
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    runs.atomic_write_json(args.out, result)
    print_table(result)
    print(f"[bench_sft] wrote {args.out} in {result['total_s']:.0f} s")
    return 0 if all(r.get("status") == "ok" or str(r.get("status", "")).startswith("unsupported")
                    for r in result["layouts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
