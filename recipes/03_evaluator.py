"""Step 3: train a solution evaluator on the generator's own graded samples of the training problems.

Two scorers (paper Sec. 3.2): `head`, a scalar score head on the LM with LoRA (our default), and
`verbal`, the paper's "... The above candidate solution is" -> p(correct) / (p(correct) + p(incorrect)).
Two losses (Eq. 8-9): `pointwise` cross-entropy on correctness, `pairwise` margin between a correct and
an incorrect solution of the same problem. Starts from the SSFT adapter, as the paper does.

    python recipes/03_evaluator.py                                # head + pointwise, from runs/<preset>/ssft
    python recipes/03_evaluator.py --kind verbal --loss pairwise --out runs/cpu/evaluator-verbal
    python recipes/03_evaluator.py --init base                    # start from the base model instead

Validation is by problem: AUC and accuracy over every sample of the held-out problems, and re-rank@N vs
majority@N on them as a first signal (the full comparison is recipe 04).
Time: cpu preset ~3 min on 2 cores; a100 (7B 4-bit) ~20 min for 20k examples at seq 1024.
Writes runs/<preset>/evaluator/: adapter (+ score head), evaluator.json, metrics.json, manifest.json.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# light imports only: a bad flag or path is reported in seconds (transformers loads after the checks)
from mathlite import data, evaluator, models, runs, sampling, select  # noqa: E402
from mathlite import samples as sample_store  # noqa: E402
from mathlite.clusters import cluster_answers  # noqa: E402


@dataclass
class Config:
    kind: str = "head"  # head (score head, our default) | verbal (the paper's p(correct) template)
    loss: str = "pointwise"  # pointwise (Eq. 8) | pairwise (Eq. 9)
    init: str = "ssft"  # ssft: start from the generator's adapter (paper) | base | an adapter folder
    samples: str = ""  # default: <run>/samples/samples-train.jsonl
    max_per_problem: int = 10  # paper: about 10 of the 64 samples of each problem
    keep_uniform: int = 2  # samples kept from problems whose samples are all right or all wrong
    balance: bool = True  # as many correct as incorrect per problem
    val_fraction: float = 0.2  # problems held out for validation
    lr: float = 1e-4
    epochs: float = 2.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 8
    max_length: int = 512
    lora_r: int = 16  # used only with --init base (the SSFT adapter keeps its own rank)
    log_steps: int = 5
    seed: int = 0
    out: str = ""  # default: <run>/evaluator
    run: str = ""
    preset: str = ""
    force: bool = False


PRESETS = {
    "smoke": dict(max_steps=2, batch_size=4, max_length=192, val_fraction=0.5, log_steps=1),
    # lr 1e-3 as for the cpu SSFT: a freshly initialised score head trained for 30 steps. Measured on the
    # cpu chain's test samples: within-problem AUC 0.49 at 1e-4, 0.66 at 1e-3 (README, "the cpu preset")
    "cpu": dict(lr=1e-3),
    "t4": dict(max_length=1024, batch_size=4, epochs=1.0, log_steps=20),
    "a100": dict(max_length=1024, batch_size=16, epochs=1.0, log_steps=20),
}


def _replaceable(out: Path) -> bool:
    """May `out` be replaced by a new evaluator? Only if it holds none of the user's other files."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return True
    m = runs.read_manifest(out) or {}
    return out.is_dir() and (m.get("stage") == "evaluator" or (out / evaluator.META_FILE).exists())


def main(argv):
    cfg = runs.parse_config(Config, PRESETS, argv)
    runs.print_config(cfg, "03 evaluator config")
    if cfg.kind not in evaluator.KINDS or cfg.loss not in evaluator.LOSSES:
        raise runs.UserError(f"--kind must be one of {evaluator.KINDS} and --loss one of {evaluator.LOSSES}")
    out = Path(cfg.out or Path(cfg.run) / "evaluator")
    done = runs.stage_done(out)
    if done and not cfg.force:
        diff = runs.config_diff(done.get("config"), cfg)
        if diff:
            raise runs.UserError(f"{out}: holds an evaluator trained with another config ({'; '.join(diff)}); "
                                 "use --out DIR, or --force to retrain")
        print(f"[03] already finished: {out} (use --force to retrain)")
        return
    if not _replaceable(out):
        raise runs.UserError(f"{out}: exists and holds no evaluator (it would be replaced); pass another --out, or delete it")
    samples = Path(cfg.samples or Path(cfg.run) / "samples" / "samples-train.jsonl")
    if not samples.exists():
        raise runs.UserError(f"{samples}: no train-split samples; run recipes/02_sample.py --run {cfg.run} first")
    ssft = Path(cfg.run) / "ssft"
    init = {"ssft": str(ssft / "adapter"), "base": None}.get(cfg.init, cfg.init)
    if init is not None and not (Path(init) / "adapter_config.json").exists():
        raise runs.UserError(f"{init}: no adapter to start from; run recipes/01_ssft.py first or pass --init base")
    if init is not None and not (Path(init) / "adapter_model.safetensors").exists():
        raise runs.UserError(f"{init}: no adapter_model.safetensors (only safetensors adapters are loaded)")
    paths = sampling.output_paths(samples)
    base = sample_store.load_meta(paths.meta).model.base
    models.resolve_model(base)  # the base model of the samples must still be there

    try:
        problems = {p.id: p for p in sampling.read_problems(paths.problems)}
    except data.DataError as e:
        raise runs.UserError(f"{paths.problems}: {e}") from None
    by_id = sampling.read_samples(paths.samples)
    records = [s for e in by_id.values() for s in ([e["greedy"]] if e["greedy"] else []) + e["samples"]]
    examples = evaluator.build_examples(problems, records, cfg.max_per_problem, cfg.balance, cfg.keep_uniform, cfg.seed)
    train_ex, val_ex = evaluator.split_by_problem(examples, cfg.val_fraction, cfg.seed)
    if cfg.loss == "pairwise":
        train_ex = evaluator.pair_examples(train_ex, cfg.seed)
        val_pairs = evaluator.pair_examples(val_ex, cfg.seed)
    if not train_ex:
        raise runs.UserError(f"{samples}: no training examples for the {cfg.loss} loss "
                             "(pairwise needs problems with both correct and incorrect samples)")
    pos = sum(e.get("label", 1) for e in train_ex) / len(train_ex)
    print(f"[03] {len(train_ex)} training {'pairs' if cfg.loss == 'pairwise' else 'examples'} "
          f"({pos:.0%} correct) from {len({e['id'] for e in train_ex})} problems; base {base}, init {cfg.init}")

    # every check passed. The evaluator is written in full to a work folder next to `out` and put in
    # place by a rename at the end: `out` is never half-written, and a killed run leaves only the work
    # folder, which the rerun starts over.
    from mathlite import trainer

    trainer.setup_runtime()
    work = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    with runs.timer() as t:
        ev = evaluator.train_evaluator(
            base, train_ex, kind=cfg.kind, loss=cfg.loss, init_adapter=init, out_dir=work, lr=cfg.lr,
            epochs=cfg.epochs, max_steps=cfg.max_steps, batch_size=cfg.batch_size, max_length=cfg.max_length,
            lora_r=cfg.lora_r, seed=cfg.seed, val_examples=(val_pairs if cfg.loss == "pairwise" else val_ex) or None,
            callbacks=[trainer.ProgressCallback(f"evaluator ({cfg.kind}, {cfg.loss})")], log_steps=cfg.log_steps,
        )

    # validation: every sample of the held-out problems, not only the capped training examples
    val_ids = sorted({e["id"] for e in val_ex})
    val_samples = [(pid, s) for pid in val_ids for s in by_id[pid]["samples"]]
    scores = ev.score([problems[pid].question for pid, _ in val_samples], [s["text"] for _, s in val_samples])
    m = evaluator.score_metrics([int(s["correct"]) for _, s in val_samples], scores, ev.threshold) if val_samples else {}
    hits = {"maj1": 0, "rr_all": 0}
    start = 0
    for pid in val_ids:
        group = by_id[pid]["samples"]
        answers = [s["answer"] for s in group]
        picks = {"maj1": select.maj1(answers, cluster_answers(answers)),
                 "rr_all": select.rr_all(answers, scores[start:start + len(group)])}
        start += len(group)
        for name, pick in picks.items():
            hits[name] += pick.index is not None and group[pick.index]["correct"]
    maj, rr = hits["maj1"], hits["rr_all"]
    metrics = {**m, "val_problems": len(val_ids), "val_solutions": len(val_samples),
               "maj1_at_n": maj / len(val_ids) if val_ids else None, "rr_all_at_n": rr / len(val_ids) if val_ids else None,
               "train_examples": len(train_ex), "seconds_train": round(t["seconds"], 1),
               "solutions_scored": ev.n_scored, "tokens_scored": ev.tokens_scored}
    runs.atomic_write_json(work / "metrics.json", metrics)
    runs.write_manifest(work, cfg, complete=True, stage="evaluator", base=base, init=init, metrics=metrics,
                        samples=str(samples), timings={"train": round(t["seconds"], 1)})
    shutil.rmtree(work / "checkpoints", ignore_errors=True)  # the Trainer's output_dir; nothing is saved there
    runs.publish_dir(work, out)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"evaluator ({cfg.kind}, {cfg.loss}) on {len(val_ids)} validation problems")
    for col in ("AUC", "accuracy", "Maj1@N", "RR.All@N", "train time"):
        table.add_column(col, justify="right")
    fmt = lambda v: "-" if v is None or v != v else f"{v:.3f}"  # noqa: E731
    table.add_row(fmt(m.get("auc")), fmt(m.get("accuracy")), fmt(metrics["maj1_at_n"]), fmt(metrics["rr_all_at_n"]),
                  f"{t['seconds'] / 60:.1f} min")
    Console().print(table)


if __name__ == "__main__":
    runs.run_main(main)
