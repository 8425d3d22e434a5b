"""Step 5 of the paper: multi-task sequential fine-tuning (Liu et al. 2023, its third fine-tuning strategy).

ONE LoRA adapter is trained in sequence as generator -> evaluator -> generator:

    stage 0  the SSFT adapter of recipe 01 (<run>/ssft/adapter): a generator
    stage 1  that adapter continued as a *verbal* evaluator on the generator's own graded samples of the
             training problems (<run>/samples/samples-train.jsonl, as in recipe 03, initialised from SSFT)
    stage 2  that adapter continued as a generator again: a short SFT on recipe 01's data (`gen2_steps`;
             the paper found a last generator stage of a few hundred steps best)

The final adapter is sampled on the same test problems, with the same sampling settings and the same
per-sample seeds as the SSFT samples of recipe 02, and reported like recipe 04, so that the generators
share ONE table (Pass@1, Maj1@N, Pass@N, re-ranking, 95% CIs). It includes the control the paper lacks:
the SSFT adapter trained for the same `gen2_steps` extra generator steps without the evaluator stage.
Without it, a gain of the multi-task model could simply be "more SFT steps".

    python recipes/05_multitask.py                       # runs/<preset> after recipes 01 and 02
    python recipes/05_multitask.py --preset smoke --run /tmp/runs/smoke
    python recipes/05_multitask.py --gen2_steps 300 --rerank_evaluator run   # re-rank with recipe 03's evaluator
    python recipes/05_multitask.py --loss pairwise --out runs/cpu/multitask-pairwise

Why only the verbal scorer: the verbal evaluator (the paper's "... The above candidate solution is"
-> p(" correct")) is the causal LM itself, with no new parameter, so after every stage the adapter is
a plain CAUSAL_LM LoRA that generates, and the final adapter can also score. The `head` scorer adds
a score layer beside the LM head; it is trained in stage 1 only, stage 2 moves the backbone under it,
and the one adapter could not be both again; `--kind head` is refused with that reason.

The final adapter as evaluator: stage2_generator/ also holds evaluator.json (verbal, stage 1's loss),
so `evaluator.Evaluator.load(<out>/stage2_generator)` and `recipes/04_rerank.py --evaluator
<out>/stage2_generator` take it as they are. By default (`--rerank_evaluator final`) it scores the
samples of all three generators, so the re-ranking rows differ only by generator. Its skill (AUC on
the evaluator's held-out training problems) is measured after each stage, for the control too.

Resuming: every stage writes a manifest (complete=True) when done and is skipped on a rerun with the
same settings; a generator stage interrupted mid-way resumes from its last checkpoint, sampling from
the samples already written. A finished stage with other settings is refused (use --force or --out).

Writes <run>/multitask/: stage1_evaluator/, stage2_generator/, control_generator/ (adapters + manifests),
samples-{ssft,multitask,control}/samples-test.* (ssft: the subset of recipe 02's test samples used here),
report/{ssft,multitask,control}/ (recipe 04's results.{json,md,csv} and plots), comparison.{md,json},
metrics.json, manifest.json.

Time and memory. One model is in memory at a time; GPU memory is at most recipe 01's at the same preset.
  smoke   4 problems x (1 + 2) solutions of 32 tokens, 2 steps per training stage: 44 s on 2 quiet cores
          (measured), < 2.5 GB RAM.
  cpu     135M model: evaluator 40 x 4 examples, 2 x 25 generator steps x 2 examples, 60 test problems x
          (1 + 8) solutions for 2 generators, no re-ranking: 6.4 min on 2 cores (measured; evaluator 1.5 min,
          generators 2 x 0.7, sampling 2 x 1.3, loading and reports the rest), < 3.5 GB RAM. Re-ranking
          with --rerank_evaluator final adds ~5 min. comparison.md's Time table has each run's split.
  t4      1.5B in 4-bit, ~10 GB of GPU memory: an evaluator epoch like recipe 03's, 2 x 200 generator steps,
          twice recipe 02's test sampling (500 x 16) and three times recipe 04's scoring: several hours.
  a100    (24-80 GB cards) 7B in 4-bit, ~20 GB at seq 1024: an evaluator epoch, 2 x 300 generator steps,
          twice recipe 02's test sampling (500 x 64) and three times recipe 04's scoring; sampling dominates.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import re
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mathlite import data, evaluator, models, report, runs, sampling, trainer  # noqa: E402


@dataclass
class Config:
    # stage 1: the evaluator (recipe 03's settings, verbal scorer)
    kind: str = "verbal"  # verbal only: the head scorer cannot share the generator's weights (docstring)
    loss: str = "pointwise"  # pointwise (Eq. 8) | pairwise (Eq. 9)
    evaluator_steps: int = 40  # > 0 overrides evaluator_epochs
    evaluator_epochs: float = 1.0
    evaluator_lr: float = 1e-4
    evaluator_batch_size: int = 8
    evaluator_max_length: int = 512
    max_per_problem: int = 10  # paper: about 10 of the 64 samples of each problem
    keep_uniform: int = 2  # samples kept from problems whose samples are all right or all wrong
    balance: bool = True
    val_fraction: float = 0.2  # training problems held out to measure the evaluator's skill (AUC)
    # stage 2 (and the control): generator SFT on recipe 01's data, batch and length as in 01
    gen2_steps: int = 25  # the same for the multi-task generator and for the control
    gen2_lr: float = 0.0  # 0 = the SSFT run's learning rate
    gen2_batch_size: int = 0  # 0 = the SSFT run's batch size (its grad_accum and max_length are kept)
    control: bool = True  # also train, sample and report the SSFT + gen2_steps control
    # sampling and report: the problems, settings and seeds of <run>/samples/samples-test (recipe 02)
    test_problems: int = 60  # the first K problems of the run's test samples (0 = all of them)
    n: int = 8  # samples per problem (0 = as many as the run's test samples have)
    batch_size: int = 72  # sequences per sampling batch (throughput only)
    rerank_evaluator: str = "final"  # final (the stage-2 adapter, verbal) | run (<run>/evaluator) | none | DIR
    K_values: tuple[int, ...] = (1, 2, 3, 4, 5)  # SCR keeps the K largest answer clusters
    save_steps: int = 25
    log_steps: int = 5
    seed: int = 0
    out: str = ""  # default: <run>/multitask
    run: str = ""
    preset: str = ""
    force: bool = False  # redo every stage (deletes <out>)


PRESETS = {
    "smoke": dict(evaluator_steps=2, evaluator_batch_size=4, evaluator_max_length=192, val_fraction=0.5,
                  gen2_steps=2, gen2_batch_size=2, test_problems=4, n=2, batch_size=16, save_steps=1000, log_steps=1,
                  K_values=(1, 2)),
    # 6.4 min measured on 2 cores (split in the docstring): evaluator 40 x 4 examples (about one
    # epoch of the cpu samples), 2 x 25 generator steps of 2 examples, 12 held-out problems for the skill
    # check, and no re-ranking (scoring 3 x 60 x 8 solutions would add ~5 min; --rerank_evaluator final)
    # gen2_lr: continuing at the SSFT run's 1e-3 with batch 2 undid SSFT (Pass@N 60.0% -> 41.7% multitask /
    # 36.7% control, and the final adapter's evaluator AUC fell to 0.38); at 2e-4: 53.3% / 50.0%, AUC 0.62
    "cpu": dict(evaluator_batch_size=4, gen2_batch_size=2, gen2_lr=2e-4, rerank_evaluator="none"),
    "t4": dict(evaluator_steps=-1, evaluator_batch_size=4, evaluator_max_length=1024, gen2_steps=200,
               test_problems=0, n=0, batch_size=32, save_steps=100, log_steps=20),
    "a100": dict(evaluator_steps=-1, evaluator_batch_size=16, evaluator_max_length=1024, gen2_steps=300,
                 test_problems=0, n=0, batch_size=128, save_steps=100, log_steps=20),
}

HEAD_REFUSED = (
    "--kind head is not supported by multi-task fine-tuning: the head scorer is a new score layer beside the "
    "LM head, trained in the evaluator stage only; the final generator stage then moves the backbone under it, "
    "so one adapter could not serve as both generator and evaluator (the paper's multi-task model is one set of "
    "weights with the verbal template). Use --kind verbal (the default); for a separate head evaluator use "
    "recipe 03 and --rerank_evaluator run"
)
# rows of the comparison table: the ones that do not need an evaluator, then re-ranking and SCR
_COMPARED = re.compile(r"^(greedy|maj1|pass_n|rr_all|w_rr|rr_maj([2-9]|\d\d+))$")


def load_recipe(stem: str):
    """A sibling recipe as a module (its file name starts with a digit, so `import` cannot name it).
    We reuse recipe 02's generator loading and recipe 04's report instead of copying them."""
    name = f"mathlite_recipe_{stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{stem}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # @dataclass looks its module up there while the file executes
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@contextmanager
def clock():
    """Wall and process CPU seconds (all threads). On a busy shared box the wall time says little, and
    the CPU time says more only when torch has no more threads than free cores (idle threads spin)."""
    t = {}
    wall, cpu = time.time(), time.process_time()
    yield t
    t["seconds"] = round(time.time() - wall, 1)
    t["cpu_seconds"] = round(time.process_time() - cpu, 1)


# ---------------------------------------------------------------------------- stage bookkeeping


def free_memory() -> None:
    """Drop the last stage's model before the next one loads: one model in memory at a time."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _plain(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))  # tuples -> lists, as they come back from a manifest


def begin_stage(out: Path, key: dict) -> dict | None:
    """The manifest of a finished stage made with `key` (skip it), or None after preparing `out`.

    key: everything that decides the stage's result, the fingerprint of its starting adapter included,
    so a retrained upstream stage is never silently combined with an old downstream one. Leftovers of
    an unfinished stage with the same key are kept (checkpoints, samples: they resume); leftovers of
    another key are deleted."""
    key = _plain(key)
    done = runs.stage_done(out)
    if done:
        if done.get("key") == key:
            return done
        was = done.get("key") or {}
        diff = "; ".join(f"{k}: {was.get(k)!r} -> {key.get(k)!r}" for k in sorted(set(was) | set(key))
                         if was.get(k) != key.get(k))
        raise runs.UserError(f"{out}: finished with other settings ({diff[:300]}); pass --force to redo the "
                             "multi-task stages, or --out DIR")
    started = out / "stage_key.json"
    if out.exists() and (not started.exists() or runs.read_json(started) != key):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_json(started, key)
    return None


def finish_stage(out: Path, cfg, key: dict, **extra) -> dict:
    (out / "stage_key.json").unlink(missing_ok=True)
    return runs.write_manifest(out, cfg, complete=True, key=_plain(key), **extra)


def save_adapter(model, tok, out: Path, extra_files: dict | None = None) -> None:
    """Adapter + tokenizer in the stage folder itself (so PeftModel.from_pretrained(<stage folder>) loads
    it), extra JSON files last. The manifest, written after this, is what marks the stage complete."""
    models.stable_adapter_config(model)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    for name, obj in (extra_files or {}).items():
        runs.atomic_write_json(out / name, obj)


# ---------------------------------------------------------------------------- evaluator skill


def val_set(cfg, train_samples: Path) -> tuple[dict, dict, list[dict], list[dict]]:
    """(problems by id, samples by id, training examples, held-out examples) of the evaluator stage,
    built exactly as recipe 03 builds them (same rules, same seeded split by problem)."""
    paths = sampling.output_paths(train_samples)
    problems = {p.id: p for p in sampling.read_problems(paths.problems)}
    by_id = sampling.read_samples(paths.samples)
    records = [s for e in by_id.values() for s in ([e["greedy"]] if e["greedy"] else []) + e["samples"]]
    examples = evaluator.build_examples(problems, records, cfg.max_per_problem, cfg.balance, cfg.keep_uniform, cfg.seed)
    train_ex, val_ex = evaluator.split_by_problem(examples, cfg.val_fraction, cfg.seed)
    return problems, by_id, train_ex, val_ex


def verbal_skill(ev, problems: dict, by_id: dict, val_ex: list[dict]) -> dict:
    """AUC and accuracy of a verbal evaluator over every sample of the held-out problems (as recipe 03).
    Measured on the generator adapters too: does the evaluator skill survive the last generator stage,
    and does the control (never trained as an evaluator) have any?"""
    val_ids = sorted({e["id"] for e in val_ex})
    pairs = [(pid, s) for pid in val_ids for s in by_id[pid]["samples"]]
    if not pairs:
        return {"val_problems": len(val_ids), "val_solutions": 0}
    scores = ev.score([problems[pid].question for pid, _ in pairs], [s["text"] for _, s in pairs])
    m = evaluator.score_metrics([int(s["correct"]) for _, s in pairs], scores, ev.threshold)
    return {"auc": m["auc"], "accuracy": m["accuracy"], "positive_rate": m["positive_rate"],
            "val_problems": len(val_ids), "val_solutions": len(pairs)}


def as_verbal_evaluator(model, tok, base: str, loss: str, cfg, init_adapter: str | None = None):
    """A trained causal-LM adapter (in memory) seen as the verbal evaluator it also is."""
    return evaluator.Evaluator(model, tok, "verbal", loss=loss, base=base, init_adapter=init_adapter,
                               max_length=cfg.evaluator_max_length)


# ---------------------------------------------------------------------------- stages


def stage_evaluator(cfg, ctx: dict) -> dict:
    """Stage 1: the SSFT adapter continued as a verbal evaluator (recipe 03 with kind=verbal)."""
    out = ctx["out"] / "stage1_evaluator"
    key = {"stage": "evaluator", "base": ctx["base"], "init": ctx["ssft_fp"], "samples": ctx["train_id"],
           "kind": cfg.kind, "loss": cfg.loss, "steps": cfg.evaluator_steps, "epochs": cfg.evaluator_epochs,
           "lr": cfg.evaluator_lr, "batch_size": cfg.evaluator_batch_size, "max_length": cfg.evaluator_max_length,
           "max_per_problem": cfg.max_per_problem, "keep_uniform": cfg.keep_uniform, "balance": cfg.balance,
           "val_fraction": cfg.val_fraction, "quant": ctx["quant"], "seed": cfg.seed}
    done = begin_stage(out, key)
    if done:
        print(f"[05] stage 1 (evaluator) already complete: {out}")
        return done["metrics"]
    # train_evaluator saves once, at the end, over whatever an interrupted attempt left
    problems, by_id, train_ex, val_ex = ctx["val"]
    val = val_ex
    if cfg.loss == "pairwise":
        train_ex, val = evaluator.pair_examples(train_ex, cfg.seed), evaluator.pair_examples(val_ex, cfg.seed)
    if not train_ex:
        raise runs.UserError(f"{ctx['train_samples']}: no evaluator training examples for the {cfg.loss} loss "
                             "(pairwise needs problems with both correct and incorrect samples)")
    pos = sum(e.get("label", 1) for e in train_ex) / len(train_ex)
    print(f"[05] stage 1: verbal evaluator ({cfg.loss}) on {len(train_ex)} "
          f"{'pairs' if cfg.loss == 'pairwise' else 'examples'} ({pos:.0%} correct), from the SSFT adapter")
    with clock() as t:
        ev = evaluator.train_evaluator(
            ctx["base"], train_ex, kind="verbal", loss=cfg.loss, init_adapter=ctx["ssft_adapter"], out_dir=out,
            lr=cfg.evaluator_lr, epochs=cfg.evaluator_epochs, max_steps=cfg.evaluator_steps,
            batch_size=cfg.evaluator_batch_size, max_length=cfg.evaluator_max_length, seed=cfg.seed,
            val_examples=val or None, quant=ctx["quant"], log_steps=cfg.log_steps,
            callbacks=[trainer.ProgressCallback(f"stage 1: evaluator ({cfg.loss})")],
        )
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    metrics = {"verbal": verbal_skill(ev, problems, by_id, val_ex), "train_examples": len(train_ex),
               "steps": max((h.get("step", 0) for h in ev.history), default=0), **t}
    del ev
    free_memory()
    finish_stage(out, cfg, key, stage="multitask/evaluator", metrics=metrics, timings=t)
    return metrics


def stage_generator(cfg, ctx: dict, name: str, init_adapter: Path, init_fp: str, loss: str | None) -> dict:
    """Stage 2 (and the control): `init_adapter` continued as a generator for gen2_steps of SFT on
    recipe 01's data, batch, length and quantization. The two calls differ only in init_adapter.

    loss: the evaluator loss the adapter was trained with (stage 2), recorded in evaluator.json so the
    final adapter loads as a verbal evaluator; None for the control, which never was one."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    out = ctx["out"] / name
    ssft = ctx["ssft_cfg"]
    lr = cfg.gen2_lr or ssft["lr"]
    batch_size = cfg.gen2_batch_size or ssft["batch_size"]
    key = {"stage": "generator", "base": ctx["base"], "init": init_fp, "steps": cfg.gen2_steps, "lr": lr,
           "batch_size": batch_size,
           **{k: ssft.get(k) for k in ("data", "style", "train_size", "grad_accum", "max_length")},
           "quant": ctx["quant"], "seed": cfg.seed}
    done = begin_stage(out, key)
    if done:
        print(f"[05] {name} already complete: {out}")
        return done["metrics"]
    tok = ctx["tok"]
    records = ctx["records"]()
    print(f"[05] {name}: {cfg.gen2_steps} SFT steps from {init_adapter} on {len(records)} examples "
          f"({ssft['data']}, style {ssft['style']}), lr {lr:g}")
    model = models.load_model(ctx["base"], quant=ctx["quant"], for_training=True)
    model = models.load_adapter(model, init_adapter, trainable=True)
    problems, by_id, _, val_ex = ctx["val"]
    args = SFTConfig(
        **trainer.common_training_args(out / "checkpoints", lr=lr, batch_size=batch_size,
                                       grad_accum=ssft["grad_accum"], max_steps=cfg.gen2_steps, epochs=1.0,
                                       seed=cfg.seed, save_steps=cfg.save_steps, log_steps=cfg.log_steps),
        max_length=ssft["max_length"],
        completion_only_loss=True,  # as in recipe 01: the loss is on the solution only
        packing=False,
    )
    # a PeftModel and no peft_config: TRL trains the adapter it is given instead of making a new one
    sft = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(records), processing_class=tok,
                     callbacks=[trainer.ProgressCallback(name)])
    trainer.drop_printer(sft)
    ckpt = trainer.resume_checkpoint(out / "checkpoints", "[05]")
    with clock() as t:
        if ckpt and trainer.finished_training(sft, ckpt):  # killed after training: no extra step
            print(f"[05] {name}: training had finished before the interruption; using {ckpt} as it is")
            train_loss = None
        else:
            train_loss = sft.train(resume_from_checkpoint=ckpt).metrics.get("train_loss")
    model = sft.model
    model.eval()
    ev = as_verbal_evaluator(model, tok, ctx["base"], loss, cfg, init_adapter=str(init_adapter))
    extra = {evaluator.META_FILE: ev.meta()} if loss is not None else {}
    save_adapter(model, tok, out, extra)
    metrics = {"verbal": verbal_skill(ev, problems, by_id, val_ex), "steps": sft.state.global_step,
               "train_loss": train_loss, **t}
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    finish_stage(out, cfg, key, stage=f"multitask/{name}", init_adapter=str(init_adapter), metrics=metrics, timings=t)
    del sft, model, ev
    free_memory()
    return metrics


def stage_samples(cfg, ctx: dict, label: str, adapter: Path) -> dict:
    """The test samples of one generator, exactly as recipe 02 makes them (its generator loading,
    the run's sampling config, problems and per-sample seeds)."""
    out = ctx["out"] / f"samples-{label}"
    fp = sampling.adapter_fingerprint(adapter)
    key = {"stage": "samples", "adapter": fp, "config": dataclasses.asdict(ctx["scfg"]), "problems": ctx["problems_fp"]}
    done = begin_stage(out, key)
    if done:
        print(f"[05] samples of the {label} generator already complete: {out}")
        return {**done["summary"], **done["timings"]}
    shutil.rmtree(ctx["out"] / "report" / label, ignore_errors=True)  # its scores belong to the old samples
    model, tok, model_id = ctx["recipe02"].load_generator(ctx["base"], str(adapter))
    with clock() as t:
        summary = sampling.sample_problems(model, tok, ctx["problems"], out / "samples-test.jsonl", ctx["scfg"],
                                           model_id=model_id, adapter=str(adapter), batch_size=cfg.batch_size,
                                           desc=f"sampling test ({label})")
    sampling.print_summary(summary, title=f"{label}: {len(ctx['problems'])} problems x (greedy + {ctx['scfg'].n})")
    runs.atomic_write_json(out / "summary.json", summary)
    finish_stage(out, cfg, key, stage=f"multitask/samples-{label}", model=model_id, adapter=str(adapter),
                 summary=summary, timings=t)
    del model
    free_memory()
    return {**summary, **t}


def ssft_samples(ctx: dict) -> Path:
    """The SSFT row: recipe 02's test samples restricted to the problems and the first n samples used
    here. Sample k of a problem has the same seed whatever N was, so the first n of N samples are
    draws of an n-sample run; the three generators even share their random numbers per sample."""
    out = ctx["out"] / "samples-ssft"
    src = sampling.output_paths(ctx["test_samples"])
    dst = sampling.output_paths(out / "samples-test.jsonl")
    ids = [p.id for p in ctx["problems"]]
    by_id = sampling.read_samples(src.samples)
    missing = [i for i in ids if i not in by_id or len(by_id[i]["samples"]) < ctx["scfg"].n]
    if missing:
        raise runs.UserError(f"{src.samples}: fewer than {ctx['scfg'].n} samples for {len(missing)} of the chosen "
                             f"problems (e.g. {missing[0]}); rerun recipe 02 to finish it, or lower --n")
    lines = []
    for pid in ids:
        entry = by_id[pid]
        recs = ([entry["greedy"]] if entry["greedy"] else []) + entry["samples"][: ctx["scfg"].n]
        lines += [json.dumps(r, ensure_ascii=False) for r in recs]
    text = "\n".join(lines) + "\n"
    if not dst.samples.exists() or dst.samples.read_text() != text:
        shutil.rmtree(ctx["out"] / "report" / "ssft", ignore_errors=True)
        runs.atomic_write_text(dst.problems, "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n"
                                                     for p in ctx["problems"]))
        runs.atomic_write_text(dst.samples, text)
        meta = runs.read_json(src.meta)
        meta["config"]["n"] = ctx["scfg"].n
        meta.update(subset_of=str(src.samples), subset={"problems": len(ids), "n": ctx["scfg"].n},
                    summary=sampling.summarize(sampling.read_samples(dst.samples), ids, ctx["scfg"]))
        runs.atomic_write_json(dst.meta, meta)
    return dst.samples


def report_one(cfg, ctx: dict, label: str, samples: Path, evaluator_dir: str):
    """Recipe 04 on one generator's samples (its scores are cached per evaluator in the report folder)."""
    out = ctx["out"] / "report" / label
    argv = ["--preset", cfg.preset, "--run", cfg.run, "--samples", str(samples), "--evaluator", evaluator_dir,
            "--out", str(out), "--name", label, "--K_values", ",".join(map(str, cfg.K_values))]
    ctx["recipe04"].main(argv)
    return report.load_results(out / "results.json")


# ---------------------------------------------------------------------------- comparison


def _fmt(v) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


def comparison_text(cfg, ctx: dict, columns: dict, skill: dict, timings: dict) -> str:
    """comparison.md: the one table, the evaluator-skill table, and what the run was."""
    any_stats = next(iter(columns.values()))
    n_problems = next(iter(any_stats.values())).n_problems
    ssft = ctx["ssft_cfg"]
    text = (f"# Multi-task sequential fine-tuning vs SSFT vs the control\n\n"
            f"{ctx['base']} on {ssft['data']} ({n_problems} test problems, N={ctx['scfg'].n}, "
            f"T={ctx['scfg'].temperature}, top-p {ctx['scfg'].top_p}, {ctx['scfg'].max_new_tokens} new tokens); "
            f"preset {cfg.preset}.\n\n"
            f"- **ssft**: the SSFT adapter of recipe 01 ({ctx['ssft_steps']} steps), recipe 02's samples\n"
            f"- **multitask**: SSFT -> verbal evaluator ({cfg.loss}, {skill.get('stage1_steps', '?')} steps on "
            f"{ctx['train_samples'].name}) -> generator ({cfg.gen2_steps} SFT steps)\n")
    if "control" in columns:
        text += f"- **control**: SSFT -> generator ({cfg.gen2_steps} SFT steps), no evaluator stage\n"
    text += (f"\nRe-ranking evaluator: {ctx['rerank_label']}. All generators are sampled with the same seed per "
             "(problem, sample), so their differences come from the models, not from the draws.\n\n"
             "## Accuracy (%) [95% Wilson CI]\n\n" + report.comparison_markdown(columns) +
             f"\nWith {n_problems} problems an interval spans about "
             f"±{100 * 1.96 * 0.5 / max(n_problems, 1) ** 0.5:.0f} "
             "points at 50% accuracy: differences inside the intervals are not evidence.\n")
    rows = [[name, _fmt(m.get("auc")), _fmt(m.get("accuracy")), str(m.get("val_solutions", "-")),
             _fmt(m.get("positive_rate"))] for name, m in skill["rows"].items()]
    text += ("\n## The adapters as verbal evaluators (held-out training problems)\n\n"
             "AUC: chance that a correct solution scores above an incorrect one (0.5 = no skill; "
             "'-' when the held-out samples are all right or all wrong). Accuracy: verdicts right at "
             "p(correct) >= 0.5 (the median score after a pairwise loss).\n\n"
             + report.markdown_table(["Adapter", "AUC", "accuracy", "solutions", "share correct"], rows))
    text += "\n## Time\n\n" + report.markdown_table(
        ["Stage", "wall s", "CPU s"], [[k, str(v.get("seconds", "-")), str(v.get("cpu_seconds", "-"))]
                                      for k, v in timings.items()])
    return text


# ---------------------------------------------------------------------------- main


def main(argv):
    cfg = runs.parse_config(Config, PRESETS, argv)
    runs.print_config(cfg, "05 multi-task config")
    if cfg.kind == "head":
        raise runs.UserError(HEAD_REFUSED)
    if cfg.kind not in evaluator.KINDS or cfg.loss not in evaluator.LOSSES:
        raise runs.UserError(f"--kind must be verbal and --loss one of {evaluator.LOSSES}")
    if cfg.gen2_steps < 1:
        raise runs.UserError("--gen2_steps must be >= 1")
    run = Path(cfg.run)
    out = Path(cfg.out or run / "multitask")
    ssft_dir, samples_dir = run / "ssft", run / "samples"
    if not runs.stage_done(ssft_dir) or not (ssft_dir / "adapter" / "adapter_config.json").exists():
        raise runs.UserError(f"{ssft_dir}: no finished SSFT run; run recipes/01_ssft.py --run {cfg.run} first")
    train_samples, test_samples = samples_dir / "samples-train.jsonl", samples_dir / "samples-test.jsonl"
    for f in (train_samples, test_samples):
        if not sampling.output_paths(f).meta.exists():
            raise runs.UserError(f"{f}: missing; run recipes/02_sample.py --run {cfg.run} (both splits) first")
    train_meta, test_meta = (runs.read_json(sampling.output_paths(f).meta) for f in (train_samples, test_samples))
    ssft_fp = sampling.adapter_fingerprint(ssft_dir / "adapter")
    for f, meta in ((train_samples, train_meta), (test_samples, test_meta)):
        if not meta.get("complete"):
            raise runs.UserError(f"{f}: unfinished; rerun recipes/02_sample.py --run {cfg.run} to complete it")
        # the evaluator learns from the SSFT generator's own samples, and the SSFT row must be that generator
        if not str(meta.get("model", {}).get("name", "")).endswith(f"+lora:{ssft_fp}"):
            raise runs.UserError(f"{f}: not sampled from {ssft_dir / 'adapter'} (made by "
                                 f"{meta.get('model', {}).get('name')}); rerun recipes/02_sample.py --run {cfg.run}")
    if cfg.force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    trainer.setup_runtime()

    ssft_cfg = runs.read_json(ssft_dir / "config.json")
    base = ssft_cfg["model"]
    # the problems and sampling settings of recipe 02's test samples, so that the SSFT row is comparable
    all_problems = sampling.read_problems(sampling.output_paths(test_samples).problems)
    if cfg.test_problems > len(all_problems):
        raise runs.UserError(f"--test_problems {cfg.test_problems}: {test_samples} has {len(all_problems)} problems "
                             "(pass a smaller number, or 0 for all)")
    problems = all_problems[: cfg.test_problems or None]
    run_n = test_meta["config"]["n"]
    if cfg.n > run_n:
        raise runs.UserError(f"--n {cfg.n}: the run's test samples have {run_n} per problem (pass <= {run_n}, or 0)")
    scfg = sampling.SamplingConfig(**{**test_meta["config"], "n": cfg.n or run_n})
    rerank = {"final": str(out / "stage2_generator"), "run": str(run / "evaluator")}.get(cfg.rerank_evaluator,
                                                                                         cfg.rerank_evaluator)
    needs_file = rerank.lower() != "none" and cfg.rerank_evaluator != "final"  # "final" is made below
    if needs_file and not (Path(rerank) / evaluator.META_FILE).exists():
        raise runs.UserError(f"{rerank}: no evaluator here; run recipes/03_evaluator.py, or pass "
                             "--rerank_evaluator final (the multi-task adapter) or none")
    with runs.as_user_error(f"{base}: cannot load the tokenizer of the SSFT run's model "
                            f"(from {ssft_dir / 'config.json'})", OSError, ValueError):
        tok = models.load_tokenizer(base)
    val = val_set(cfg, train_samples)
    ctx = {
        "out": out, "base": base, "quant": ssft_cfg.get("quant", "auto"), "ssft_cfg": ssft_cfg, "tok": tok,
        "ssft_adapter": str(ssft_dir / "adapter"), "ssft_fp": ssft_fp,
        "train_samples": train_samples, "test_samples": test_samples,
        # what the evaluator stage trains on: the sampling config, the problems and how many samples
        "train_id": {"config": train_meta.get("config_hash"), "problems": data.fingerprint(val[0].values()),
                     "records": sum(len(e["samples"]) + (e["greedy"] is not None) for e in val[1].values())},
        "problems": problems, "problems_fp": data.fingerprint(problems), "scfg": scfg,
        "val": val,
        # recipe 01's training records, built only if a generator stage has to run
        "records": functools.cache(lambda: data.prompt_completion_records(
            data.load_problems(ssft_cfg["data"], "train", limit=ssft_cfg["train_size"] or None,
                               seed=ssft_cfg["seed"]), tok, ssft_cfg["style"])),
        "ssft_steps": runs.read_json(ssft_dir / "metrics.json").get("steps", "?"),
        "recipe02": load_recipe("02_sample"), "recipe04": load_recipe("04_rerank"),
        "rerank_label": {"final": "the multi-task adapter itself (verbal)", "run": "recipe 03's evaluator",
                         "none": "none (voting and oracle rows only)"}.get(cfg.rerank_evaluator.lower(), rerank),
    }

    with clock() as t_all:
        m1 = stage_evaluator(cfg, ctx)
        stage1 = out / "stage1_evaluator"
        m2 = stage_generator(cfg, ctx, "stage2_generator", stage1, sampling.adapter_fingerprint(stage1), cfg.loss)
        mc = stage_generator(cfg, ctx, "control_generator", ssft_dir / "adapter", ctx["ssft_fp"], None) \
            if cfg.control else None
        s_mt = stage_samples(cfg, ctx, "multitask", out / "stage2_generator")
        s_ct = stage_samples(cfg, ctx, "control", out / "control_generator") if cfg.control else None
        samples = {"ssft": ssft_samples(ctx), "multitask": out / "samples-multitask" / "samples-test.jsonl"}
        if cfg.control:
            samples["control"] = out / "samples-control" / "samples-test.jsonl"
        results = {label: report_one(cfg, ctx, label, path, rerank) for label, path in samples.items()}

    columns = {label: {m: s for m, s in stats.items() if _COMPARED.match(m)} for label, (_, stats) in results.items()}
    skill = {"stage1_steps": m1.get("steps"), "rows": {
        "after stage 1 (evaluator)": m1.get("verbal", {}),
        "after stage 2 (multitask, final)": m2.get("verbal", {}),
    }}
    if mc:
        skill["rows"]["control (never trained as an evaluator)"] = mc.get("verbal", {})
    timings = {"stage 1 evaluator": m1, "stage 2 generator": m2}
    if mc:
        timings["control generator"] = mc
    timings.update({f"sampling {k}": v for k, v in (("multitask", s_mt), ("control", s_ct)) if v})
    timings = {k: {"seconds": v.get("seconds"), "cpu_seconds": v.get("cpu_seconds")} for k, v in timings.items()}
    timings["this invocation"] = t_all

    report.print_comparison(columns, title=f"Accuracy (%) [95% CI]: SSFT vs multi-task vs control "
                                           f"({len(problems)} problems, N={scfg.n})")
    runs.atomic_write_text(out / "comparison.md", comparison_text(cfg, ctx, columns, skill, timings))
    runs.atomic_write_json(out / "comparison.json", {
        "columns": {label: {m: s.to_dict() for m, s in stats.items()} for label, stats in columns.items()},
        "verbal_skill": skill, "timings": timings,
    })
    metrics = {"stage1_evaluator": m1, "stage2_generator": m2, "control_generator": mc,
               "samples": {"multitask": s_mt, "control": s_ct}, "verbal_skill": skill}
    runs.atomic_write_json(out / "metrics.json", metrics)
    runs.write_manifest(out, cfg, complete=True, stage="multitask", base=base, rerank_evaluator=rerank,
                        final_adapter=str(out / "stage2_generator"), timings=timings)
    print(f"[05] wrote {out / 'comparison.md'}; final adapter (generator and verbal evaluator): "
          f"{out / 'stage2_generator'}")


if __name__ == "__main__":
    runs.run_main(main)
