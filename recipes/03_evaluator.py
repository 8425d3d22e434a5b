"""Step 3: train a solution evaluator on the generator's own graded samples of the training problems.

Two scorers (paper Sec. 3.2): `head`, a scalar score head on the LM with LoRA (our default), and
`verbal`, the paper's "... The above candidate solution is" -> p(correct) / (p(correct) + p(incorrect)).
Two losses (Eq. 8-9): `pointwise` cross-entropy on correctness, `pairwise` margin between a correct and
an incorrect solution of the same problem. Starts from the SSFT adapter, as the paper does.

    python recipes/03_evaluator.py                                # head + pointwise, from runs/<preset>/ssft
    python recipes/03_evaluator.py --kind verbal --loss pairwise --out runs/cpu/evaluator-verbal
    python recipes/03_evaluator.py --init base                    # start from the base model instead
    python recipes/03_evaluator.py --kind probe --split val       # the powered preset's evaluator (below)

A third kind, `probe` (mathlite/probe.py), is what a CPU can train on thousands of samples: a linear
score head on the frozen generator's own hidden states (kept while sampling: 02 --features true) plus
its confidence (mean and summed token log-prob, length), with the within-problem pairwise loss;
which inputs and how much L2 are chosen by 5-fold cross-validation over the training problems. It
trains in about a minute and scores without a model. `--split val` trains it on the problems the SSFT
run kept out of training (01 --val_size).

Validation is by problem: AUC and accuracy over every sample of the held-out problems, and re-rank@N vs
majority@N on them as a first signal (the full comparison is recipe 04).
Time: cpu preset ~2 min on 2 cores; powered (probe) 20 s; a100 (7B 4-bit) ~20 min for 20k examples at seq 1024.
Writes runs/<preset>/evaluator/: adapter (+ score head), evaluator.json, metrics.json, manifest.json.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.table import Table

# light imports only: a bad flag or path is reported in seconds (transformers loads after the checks)
from mathlite import evaluator, models, report, runs, sampling, select
from mathlite import samples as sample_store
from mathlite.clusters import cluster_answers
from mathlite.stage import Stage


@dataclass
class Config:
    kind: Literal["head", "verbal", "probe"] = "head"  # head (score head, our default) | verbal (the paper's p(correct) template) | probe (frozen generator's hidden states + its confidence; needs 02 --features true)
    loss: evaluator.Loss = "pointwise"  # pointwise (Eq. 8) | pairwise (Eq. 9)
    init: str = "ssft"  # ssft: start from the generator's adapter (paper) | base | an adapter folder
    samples: str = ""  # default: <run>/samples/samples-<split>.jsonl
    split: Literal["train", "val"] = "train"  # whose samples train it: train, or val (problems the SSFT run never trained on)
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
    "powered": dict(kind="probe", split="val"),
    "t4": dict(max_length=1024, batch_size=4, epochs=1.0, log_steps=20),
    "a100": dict(max_length=1024, batch_size=16, epochs=1.0, log_steps=20),
}


def _replaceable(out: Path) -> bool:
    """May `out` be replaced by a new evaluator? Only if it holds none of the user's other files."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return True
    m = runs.read_manifest(out) or {}
    return out.is_dir() and (m.get("stage") == "evaluator" or (out / evaluator.META_FILE).exists())


def train_probe(cfg: Config, out: Path, samples: Path) -> None:
    """--kind probe: a score head on the generator's own hidden states (kept by 02 --features true) and its
    confidence, trained with the within-problem pairwise loss on every sampled solution; inputs and L2
    strength chosen on held-out training problems (mathlite/probe.py)."""
    from mathlite import probe

    store = sample_store.load(samples)
    records = [s.to_dict() for s in store.all_samples() if s.k >= 0]
    t = probe.table(records, sample_store.load_features(samples), where=str(samples))
    print(f"[03] probe: {len(records)} solutions of {len(set(t.problem.tolist()))} problems, "
          f"{t.hidden.shape[1]} hidden + {t.conf.shape[1]} confidence inputs")
    st = Stage(out, "evaluator", {k: v for k, v in runs.config_dict(cfg).items() if k not in runs.LOCATION_KEYS})
    work = st.work_dir()
    with runs.timer() as tm:
        fit, rows = probe.fit_probe(t, seed=cfg.seed)
    fit.info["samples"] = str(samples)
    fit.save(work)
    info = fit.info
    metrics = {"kind": "probe", "loss": "pairwise", "inputs": fit.inputs, "lambda": fit.lam, "auc": info["val_auc"],
               "within_problem_auc": info["val_within_problem_auc"],
               "confidence_within_problem_auc": info["val_confidence_within_problem_auc"],
               "val_problems": info["val_problems"], "val_solutions": info["val_solutions"],
               "train_examples": info["all_solutions"], "seconds_train": round(tm["seconds"], 1), "selection": rows}
    runs.atomic_write_json(work / "metrics.json", metrics)
    st.finish(cfg, work=work, metrics=metrics, samples=str(samples), timings={"train": round(tm["seconds"], 1)})
    st.publish(work)
    table = Table(title=f"probe evaluator: within-problem AUC, cross-validated over {info['val_problems']} training problems "
                        f"({info['val_mixed_problems']} with right and wrong samples)")
    for col in ("inputs", "lambda", "within-problem AUC", "pooled AUC", ""):
        table.add_column(col, justify="right")
    fmt = report.fmt
    for r in rows:
        chosen = r["inputs"] == fit.inputs and (r["lambda"] or None) == (fit.lam if fit.inputs != "confidence" else None)
        table.add_row(r["inputs"], fmt(r["lambda"], ".0e"), fmt(r["val_within_problem_auc"]), fmt(r["val_auc"]),
                      "chosen" if chosen else "")
    table.add_row("generator confidence", "", fmt(info["val_confidence_within_problem_auc"]), "", "baseline")
    Console().print(table)


def main(argv):
    cfg = runs.parse_config(Config, PRESETS, argv)
    runs.print_config(cfg, "03 evaluator config")
    out = Path(cfg.out or Path(cfg.run) / "evaluator")
    if runs.check_resume(out, cfg, "evaluator", "[03]", new_place="use --out DIR"):
        return
    if not _replaceable(out):
        raise runs.UserError(f"{out}: exists and holds no evaluator (it would be replaced); pass another --out, or delete it")
    samples = Path(cfg.samples or Path(cfg.run) / "samples" / f"samples-{cfg.split}.jsonl")
    if not samples.exists():
        raise runs.UserError(f"{samples}: no {cfg.split}-split samples; run recipes/02_sample.py --run {cfg.run} first")
    if cfg.kind == "probe":
        return train_probe(cfg, out, samples)
    ssft = Path(cfg.run) / "ssft"
    init = {"ssft": str(ssft / "adapter"), "base": None}.get(cfg.init, cfg.init)
    if init is not None and not (Path(init) / "adapter_config.json").exists():
        raise runs.UserError(f"{init}: no adapter to start from; run recipes/01_ssft.py first or pass --init base")
    if init is not None and not (Path(init) / "adapter_model.safetensors").exists():
        raise runs.UserError(f"{init}: no adapter_model.safetensors (only safetensors adapters are loaded)")
    paths = sampling.output_paths(samples)
    base = sample_store.load_meta(paths.meta).model.base
    models.resolve_model(base)  # the base model of the samples must still be there

    prepared = evaluator.training_data(samples, max_per_problem=cfg.max_per_problem, balance=cfg.balance,
                                       keep_uniform=cfg.keep_uniform, val_fraction=cfg.val_fraction, seed=cfg.seed)
    by_id, val_ex = prepared.by_id, prepared.val
    train_rows, val_rows = prepared.for_loss(cfg.loss, cfg.seed, samples)
    print(f"[03] training examples: {evaluator.describe_rows(train_rows, cfg.loss)} from "
          f"{len({e['id'] for e in train_rows})} problems; base {base}, init {cfg.init}")

    # every check passed. The evaluator is written in full to a work folder next to `out` and put in
    # place by a rename at the end: `out` is never half-written, and a killed run leaves only the work
    # folder, which the rerun starts over.
    from mathlite import trainer  # here, not at the top: it loads transformers (seconds), after the checks

    trainer.setup_runtime()
    st = Stage(out, "evaluator", {k: v for k, v in runs.config_dict(cfg).items() if k not in runs.LOCATION_KEYS})
    work = st.work_dir()
    with runs.timer() as t:
        ev = evaluator.train_evaluator(
            base, train_rows, kind=cfg.kind, loss=cfg.loss, init_adapter=init, out_dir=work, lr=cfg.lr,
            epochs=cfg.epochs, max_steps=cfg.max_steps, batch_size=cfg.batch_size, max_length=cfg.max_length,
            lora_r=cfg.lora_r, seed=cfg.seed, val_examples=val_rows or None,
            callbacks=[trainer.ProgressCallback(f"evaluator ({cfg.kind}, {cfg.loss})")], log_steps=cfg.log_steps,
        )

    # validation: every sample of the held-out problems, not only the capped training examples
    val_samples, scores, m = evaluator.held_out_scores(ev, prepared)
    val_ids = sorted({e["id"] for e in val_ex})
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
               "train_examples": len(train_rows), "seconds_train": round(t["seconds"], 1),
               "solutions_scored": ev.n_scored, "tokens_scored": ev.tokens_scored}
    runs.atomic_write_json(work / "metrics.json", metrics)
    st.finish(cfg, work=work, base=base, init=init, metrics=metrics, samples=str(samples),
              timings={"train": round(t["seconds"], 1)})
    shutil.rmtree(work / "checkpoints", ignore_errors=True)  # the Trainer's output_dir; nothing is saved there
    st.publish(work)
    table = Table(title=f"evaluator ({cfg.kind}, {cfg.loss}) on {len(val_ids)} validation problems")
    for col in ("AUC", "accuracy", "Maj1@N", "RR.All@N", "train time"):
        table.add_column(col, justify="right")
    fmt = report.fmt
    table.add_row(fmt(m.get("auc")), fmt(m.get("accuracy")), fmt(metrics["maj1_at_n"]), fmt(metrics["rr_all_at_n"]),
                  f"{t['seconds'] / 60:.1f} min")
    Console().print(table)


if __name__ == "__main__":
    runs.run_main(main)
