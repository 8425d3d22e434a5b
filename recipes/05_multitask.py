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

Paired per problem, as recipe 04: multi-task vs SSFT and vs the control, per method, wins / losses /
ties, the exact sign test and a paired bootstrap CI, and "which claims held" lines generated from them.

Resuming: every stage is a mathlite.stage.Stage keyed by its settings and its starting adapter: done
ones are skipped on a rerun, an interrupted generator stage resumes from its last checkpoint, sampling
from the samples already written; a finished stage with other settings is refused (--force or --out).

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

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

# light imports only: --help and the checks answer at once (the steps load transformers and trl)
from mathlite import evaluator, files, generator, multitask, report, rerank, runs
from mathlite.multitask import clock
from mathlite.stage import Stage


@dataclass
class Config:
    # stage 1: the evaluator (recipe 03's settings, verbal scorer)
    kind: evaluator.Kind = "verbal"  # verbal only: the head scorer cannot share the generator's weights (docstring)
    loss: evaluator.Loss = "pointwise"  # pointwise (Eq. 8) | pairwise (Eq. 9)
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
    gen2_lr: float | None = None  # None: the SSFT run's learning rate
    gen2_batch_size: int | None = None  # None: the SSFT run's batch size (its grad_accum and max_length are kept)
    control: bool = True  # also train, sample and report the SSFT + gen2_steps control
    # sampling and report: the problems, settings and seeds of <run>/samples/samples-test (recipe 02)
    test_problems: int = 60  # the first K problems of the run's test samples (0 = all of them)
    n: int = 8  # samples per problem (0 = as many as the run's test samples have)
    batch_size: int = 72  # sequences per sampling batch (throughput only)
    rerank_evaluator: str = "final"  # final (the stage-2 adapter, verbal) | run (<run>/evaluator) | none | DIR
    K_values: tuple[int, ...] = (1, 2, 3, 4, 5)  # SCR keeps the K largest answer clusters
    topn_values: tuple[int, ...] = (4,)  # Maj1.TopN': vote among the N' best-scored samples (as recipe 04)
    n_draws: int = 32  # random subsets per point of the accuracy-vs-N curves (as recipe 04)
    n_boot: int = 2000  # bootstrap resamples of the problems for the paired CIs (as recipe 04)
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
                  K_values=(1, 2), n_draws=4, n_boot=200),
    # 6.4 min measured on 2 cores (split in the docstring): evaluator 40 x 4 examples (about one
    # epoch of the cpu samples), 2 x 25 generator steps of 2 examples, 12 held-out problems for the skill
    # check, and no re-ranking (scoring 3 x 60 x 8 solutions would add ~5 min; --rerank_evaluator final)
    # gen2_lr: continuing at the SSFT run's 1e-3 with batch 2 undid SSFT (Pass@N 60.0% -> 41.7% multitask /
    # 36.7% control, and the final adapter's evaluator AUC fell to 0.38); at 2e-4: 53.3% / 50.0%, AUC 0.62
    "cpu": dict(evaluator_batch_size=4, gen2_batch_size=2, gen2_lr=2e-4, rerank_evaluator="none"),
    "t4": dict(evaluator_steps=-1, evaluator_batch_size=4, evaluator_max_length=1024, gen2_steps=200,
               test_problems=0, n=0, batch_size=32, save_steps=100, log_steps=20),
    "a100": dict(evaluator_steps=-1, evaluator_batch_size=16, evaluator_max_length=1024, gen2_steps=300,
                 test_problems=0, n=0, batch_size=128, save_steps=100, log_steps=20, topn_values=(8, 16)),
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
RERANK_LABEL = {"final": "the multi-task adapter itself (verbal)", "run": "recipe 03's evaluator",
                "none": "none (voting and oracle rows only)"}


def main(argv):
    cfg = runs.parse_config(Config, PRESETS, argv)
    runs.print_config(cfg, "05 multi-task config")
    if cfg.kind == "head":
        raise runs.UserError(HEAD_REFUSED)
    if cfg.gen2_steps < 1:
        raise runs.UserError("--gen2_steps must be >= 1")
    run = Path(cfg.run)
    out = Path(cfg.out or run / "multitask")
    rerank_dir = {"final": str(out / "stage2_generator"), "run": str(run / "evaluator")}.get(
        cfg.rerank_evaluator, cfg.rerank_evaluator)
    if rerank_dir.lower() != "none" and cfg.rerank_evaluator != "final" and \
            not (Path(rerank_dir) / evaluator.META_FILE).exists():  # "final" is made below
        raise runs.UserError(f"{rerank_dir}: no evaluator here; run recipes/03_evaluator.py, or pass "
                             "--rerank_evaluator final (the multi-task adapter) or none")
    x = multitask.inputs(cfg, run, out)
    if cfg.force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    from mathlite import trainer

    trainer.setup_runtime()

    with clock() as t_all:
        # the paper's three steps on one adapter, and the control: SSFT + the same generator steps
        m1 = multitask.train_evaluator(cfg, x)
        m2 = multitask.train_generator(cfg, x, "stage2_generator", out / "stage1_evaluator", cfg.loss)
        mc = multitask.train_generator(cfg, x, "control_generator", x.ssft_adapter, None) if cfg.control else None
        # every generator sampled as recipe 02 sampled SSFT: same problems, settings and seeds
        s_mt = multitask.sample(cfg, x, "multitask", out / "stage2_generator")
        s_ct = multitask.sample(cfg, x, "control", out / "control_generator") if cfg.control else None
        generator.free_memory()  # and the vLLM engine, if any: scoring comes next
        samples = {"ssft": multitask.ssft_samples(x), "multitask": out / "samples-multitask" / "samples-test.jsonl"}
        if cfg.control:
            samples["control"] = out / "samples-control" / "samples-test.jsonl"
        # recipe 04's report on each generator's samples, then the generators against each other
        settings = rerank.Settings(K_values=cfg.K_values, topn_values=cfg.topn_values, n_draws=cfg.n_draws,
                                   n_boot=cfg.n_boot, seed=cfg.seed)
        evaluator_dir = None if rerank_dir.lower() == "none" else Path(rerank_dir)
        reports = {label: rerank.rerank(path, evaluator_dir, out / "report" / label, settings, label, cfg, "[05]")[1]
                   for label, path in samples.items()}

    columns = {label: {m: s for m, s in comp.stats.items() if _COMPARED.match(m)} for label, comp in reports.items()}
    pairs = multitask.generator_pairs({label: comp.chosen for label, comp in reports.items()},
                                      list(columns["multitask"]), n_boot=cfg.n_boot, seed=cfg.seed)
    skill = {"stage1_steps": m1.get("steps"), "rows": {
        "after stage 1 (evaluator)": m1.get("verbal", {}),
        "after stage 2 (multitask, final)": m2.get("verbal", {}),
        **({"control (never trained as an evaluator)": mc.get("verbal", {})} if mc else {})}}
    timings = {"stage 1 evaluator": m1, "stage 2 generator": m2, "control generator": mc,
               "sampling multitask": s_mt, "sampling control": s_ct}
    timings = {k: {"seconds": v.get("seconds"), "cpu_seconds": v.get("cpu_seconds")} for k, v in timings.items() if v}
    timings["this invocation"] = t_all

    report.print_comparison(columns, title=f"Accuracy (%) [95% CI]: SSFT vs multi-task vs control "
                                           f"({len(x.problems)} problems, N={x.scfg.n})")
    text = multitask.comparison_text(cfg, x, columns, skill, timings, pairs, RERANK_LABEL.get(
        cfg.rerank_evaluator.lower(), rerank_dir), files.read_json(run / "ssft" / "metrics.json").get("steps", "?"))
    print("\n".join(multitask.claim_lines(pairs)))
    runs.atomic_write_text(out / "comparison.md", text)
    runs.atomic_write_json(out / "comparison.json", {
        "columns": {label: {m: s.to_dict() for m, s in stats.items()} for label, stats in columns.items()},
        "paired": [c.to_dict() for c in pairs], "verbal_skill": skill, "timings": timings})
    runs.atomic_write_json(out / "metrics.json", {
        "stage1_evaluator": m1, "stage2_generator": m2, "control_generator": mc,
        "samples": {"multitask": s_mt, "control": s_ct}, "verbal_skill": skill})
    Stage(out, "multitask").finish(cfg, base=x.base, rerank_evaluator=rerank_dir,
                                   final_adapter=str(out / "stage2_generator"), timings=timings)
    print(f"[05] wrote {out / 'comparison.md'}; final adapter (generator and verbal evaluator): "
          f"{out / 'stage2_generator'}")


if __name__ == "__main__":
    runs.run_main(main)
