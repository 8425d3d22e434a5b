"""Re-ranking one generator's test samples (recipe 04, and recipe 05 for each of its generators):
score every sample once per scorer (the trained evaluator, cached; the generator's own confidence,
free), compute every selection method of the paper with its paired tests, and write the report."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from . import files, report, samples, sampling
from .errors import UserError
from .stage import Stage


def evaluator_scores(store: samples.SampleSet, evaluator_dir: Path, cache: Path, batch_size: int,
                     tag: str = "[04]") -> samples.ScoreSet:
    """The evaluator's score of every sample, read from the cache when it was made by this evaluator."""
    from . import probe

    if probe.is_probe(evaluator_dir):  # no model: scored from the features in a second; kept for the record
        result = probe_scores(store, evaluator_dir, tag)
        samples.save_scores(cache, result)
        return result
    from .evaluator import Evaluator  # transformers and peft: only when something is to be scored

    stamp = files.read_json(evaluator_dir / "evaluator.json")
    if isinstance(stamp, dict):  # where the evaluator's init adapter was is no part of its weights
        stamp = {k: v for k, v in stamp.items() if k != "init_adapter"}
    fingerprint = files.config_hash({"evaluator": stamp, "adapter": sampling.adapter_fingerprint(evaluator_dir)})
    todo = store.all_samples()
    if cache.exists():
        try:
            cached = samples.load_scores(cache)
        except UserError:
            cached = None  # unreadable or an older format: score again and overwrite it
        if cached is not None and cached.fingerprint == fingerprint and all(s.key in cached.scores for s in todo):
            print(f"{tag} scores reused from {cache}")
            return cached
    ev = Evaluator.load(evaluator_dir)
    questions = {p.id: p.question for p in store.problems}
    scores = {}
    with Progress(*Progress.get_default_columns()) as bar:
        task = bar.add_task("scoring test samples", total=len(todo))
        chunk = batch_size * 4
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            values = ev.score([questions[s.id] for s in part], [s.text for s in part], batch_size)
            scores.update({s.key: float(v) for s, v in zip(part, values, strict=True)})
            bar.update(task, advance=len(part))
    cost = {"solutions_scored": ev.n_scored, "tokens_scored": ev.tokens_scored, "kind": ev.kind, "loss": ev.loss}
    result = samples.ScoreSet(report.PRIMARY, scores, fingerprint, cost)
    samples.save_scores(cache, result)
    return result


def probe_scores(store: samples.SampleSet, evaluator_dir: Path, tag: str = "[04]") -> samples.ScoreSet:
    """A probe evaluator's scores, from the hidden-state features kept next to the samples (no model)."""
    from . import probe

    p = probe.Probe.load(evaluator_dir)
    every = store.all_samples()
    t = probe.table([s.to_dict() for s in every], samples.load_features(store.paths.samples), where=str(store.paths.samples))
    scores = p.scores(t)
    fingerprint = files.config_hash({"probe": files.read_json(evaluator_dir / probe.META_FILE),
                                     "weights": hashlib.sha256((evaluator_dir / probe.WEIGHTS_FILE).read_bytes()).hexdigest()})
    print(f"{tag} probe evaluator ({p.inputs}, lambda {p.lam:g}) scored {len(scores)} samples from their features")
    return samples.ScoreSet(report.PRIMARY, scores, fingerprint,
                            {"solutions_scored": len(scores), "tokens_scored": 0, "kind": "probe", "loss": "pairwise"})


def confidence_scores(store: samples.SampleSet, tag: str = "[04]") -> samples.ScoreSet | None:
    """The generator's confidence in each sample (from its mean token log-probability), when recorded."""
    every = store.all_samples()
    # exp(mean token log-prob): the geometric-mean token probability, in (0, 1] like the evaluator's scores,
    # so W-RR's sums of scores mean the same; re-ranking and AUC only see its order (that of logprob_mean)
    conf = samples.ScoreSet.from_samples("confidence", every,
                                         lambda s: None if s.logprob_mean is None else math.exp(s.logprob_mean))
    if not conf.scores:
        print(f"{tag} confidence baseline skipped: these samples carry no logprob_mean "
              "(sampled before it was recorded; rerun recipes/02_sample.py into a new folder to get it)")
        return None
    if len(conf.scores) < len(every):
        print(f"{tag} confidence baseline: {len(every) - len(conf.scores)} of {len(every)} samples lack "
              "logprob_mean; they rank last")
    return conf


@dataclass
class Settings:
    """How a report is computed (recipe 04's constants)."""

    K_values: tuple[int, ...] = (1, 2, 3, 4, 5)
    topn_values: tuple[int, ...] = (4,)
    n_draws: int = 32
    n_boot: int = 2000
    batch_size: int = 16
    confidence: bool = True
    seed: int = 0


def rerank(path: Path, evaluator_dir: Path | None, out: Path, settings: Settings, name: str, cfg,
           tag: str = "[04]") -> tuple[dict, report.Computed, dict[str, Path]]:
    """Recipe 04 on the samples file `path`: scores (the evaluator's cached in `out`), every method and
    paired test, the report files in `out` and its manifest (`cfg`: the config of the recipe that asked).
    Returns (the report's meta, the computation, its files)."""
    store = samples.load(path)  # problems, samples and meta: each file read once
    if not any(g.samples for g in store.groups.values()):
        raise UserError(f"{path}: holds no sampled solutions")
    scorers: dict[str, samples.ScoreSet] = {}
    if evaluator_dir is not None:
        scorers[report.PRIMARY] = evaluator_scores(store, evaluator_dir, out / "scores-test.json",
                                                   settings.batch_size, tag)
    conf = confidence_scores(store, tag) if settings.confidence else None
    if conf is not None:
        scorers[conf.scorer] = conf
    rows = store.metric_rows(scorers, primary=report.PRIMARY)

    n = max(len(r["samples"]) for r in rows)
    K = tuple(k for k in settings.K_values if k >= 1)
    topn = tuple(t for t in settings.topn_values if 1 <= t <= n)
    comp = report.compute(rows, K_values=K, topn_values=topn, n_draws=settings.n_draws, seed=settings.seed,
                          n_boot=settings.n_boot)
    ev = scorers.get(report.PRIMARY)
    meta = {"name": name, "model": str(store.meta.model),
            "data": next(iter({p.source for p in store.problems}), "?"), "N": n, "n_problems": len(rows),
            "samples": str(path), "evaluator": str(evaluator_dir) if evaluator_dir else None,
            "evaluator_cost": dict(ev.cost) if ev else {}, "evaluator_test": comp.scorers.get(report.PRIMARY),
            "settings": comp.settings}
    files_ = report.write_report(out, comp.stats, curves=comp.curves, breakdowns=comp.breakdowns, meta=meta,
                                 paired=comp.paired, scorers=comp.scorers,
                                 choices=report.choice_records(rows, comp.chosen))
    # the key names the inputs by content, not by where they lie: the same samples and evaluator in another
    # run folder give the same manifest
    key = {"samples": hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16],
           "evaluator": ev.fingerprint if ev else None, **comp.settings}
    Stage(out, "report", key).finish(
        cfg, files={k: str(v) for k, v in files_.items()})
    return meta, comp, files_
