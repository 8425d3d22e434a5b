"""Step 4: voting, re-ranking and solution-cluster re-ranking (SCR) on the test samples, with what each costs.

Scores every test sample with the evaluator once (cached), then compares every selection method of
the paper (Tables 3/7, Fig. 1): Pass@1 (greedy), Maj1@N, RR.All, SCR = RR.MajK, W.RR, W.RR.MajK,
Maj1.TopN', the oracles MajK@N and Pass@N, with 95% intervals, accuracy-vs-N curves, breakdowns by
level and subject, and the evaluator cost of each method (share of the N samples it must score).
The free baseline runs next to the trained evaluator: "confidence", the generator's own probability
of each sample, exp(mean token log-probability) (`logprob_mean` in the samples file; the columns are
skipped, with a note, for samples made without it). Paired tests (wins/losses/ties, sign test, bootstrap CI) of every
method against Maj1@N and of SCR against RR.All give the generated "which claims held" text.

    python recipes/04_rerank.py                    # runs/<preset>/samples + runs/<preset>/evaluator
    python recipes/04_rerank.py --preset smoke
    python recipes/04_rerank.py --compare runs/other/report/results.json

Writes runs/<preset>/report/: results.{json,md,csv}, accuracy_vs_n.png, cost_vs_k.png, scores-test.json
(the evaluator's scores), choices-test.jsonl (per problem: each sample's answer, grade, tokens and score
per scorer, and the sample each method chose). `python -m mathlite.report --recompute runs/<preset>/report`
recomputes every number from those two files alone.
Time: seconds for the metrics; scoring costs one evaluator pass over the N x problems test samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

# light imports only: a bad flag or path is reported in seconds (transformers loads after the checks)
from mathlite import report, runs, samples, sampling


@dataclass
class Config:
    samples: str = ""  # default: <run>/samples/samples-test.jsonl
    evaluator: str = ""  # default: <run>/evaluator; "none" = voting (and the confidence baseline) only
    confidence: bool = True  # also re-rank by the generator's confidence (logprob_mean of each sample)
    K_values: tuple[int, ...] = (1, 2, 3, 4, 5)  # SCR keeps the K largest answer clusters
    topn_values: tuple[int, ...] = (4,)  # Maj1.TopN': vote among the N' best-scored samples
    n_draws: int = 32  # random subsets per point of the accuracy-vs-N curves
    n_boot: int = 2000  # bootstrap resamples of the problems for the paired CIs
    batch_size: int = 16  # evaluator batch
    compare: tuple[str, ...] = ()  # other results.json files to show side by side
    name: str = ""  # label of this run in comparisons; default: the run folder
    out: str = ""  # default: <run>/report
    seed: int = 0
    run: str = ""
    preset: str = ""


PRESETS = {"smoke": dict(n_draws=4, n_boot=200), "cpu": dict(), "t4": dict(), "a100": dict(topn_values=(8, 16))}


def evaluator_scores(store: samples.SampleSet, evaluator_dir: Path, cache: Path, batch_size: int) -> samples.ScoreSet:
    """The evaluator's score of every sample, read from the cache when it was made by this evaluator."""
    from mathlite.evaluator import Evaluator

    stamp = runs.read_json(evaluator_dir / "evaluator.json")
    fingerprint = runs.config_hash({"evaluator": stamp, "adapter": sampling.adapter_fingerprint(evaluator_dir)})
    todo = store.all_samples()
    if cache.exists():
        try:
            cached = samples.load_scores(cache)
        except runs.UserError:
            cached = None  # unreadable or an older format: score again and overwrite it
        if cached is not None and cached.fingerprint == fingerprint and all(s.key in cached.scores for s in todo):
            print(f"[04] scores reused from {cache}")
            return cached
    ev = Evaluator.load(evaluator_dir)
    questions = {p.id: p.question for p in store.problems}
    from rich.progress import Progress

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


def confidence_scores(store: samples.SampleSet) -> samples.ScoreSet | None:
    """The generator's confidence in each sample (from its mean token log-probability), when recorded."""
    every = store.all_samples()
    # exp(mean token log-prob): the geometric-mean token probability, in (0, 1] like the evaluator's scores,
    # so W-RR's sums of scores mean the same; re-ranking and AUC only see its order (that of logprob_mean)
    conf = samples.ScoreSet.from_samples("confidence", every,
                                         lambda s: None if s.logprob_mean is None else math.exp(s.logprob_mean))
    if not conf.scores:
        print("[04] confidence baseline skipped: these samples carry no logprob_mean "
              "(sampled before it was recorded; rerun recipes/02_sample.py into a new folder to get it)")
        return None
    if len(conf.scores) < len(every):
        print(f"[04] confidence baseline: {len(every) - len(conf.scores)} of {len(every)} samples lack "
              "logprob_mean; they rank last")
    return conf


def main(argv):
    cfg = runs.parse_config(Config, PRESETS, argv)
    runs.print_config(cfg, "04 re-ranking config")
    path = Path(cfg.samples or Path(cfg.run) / "samples" / "samples-test.jsonl")
    if not path.exists():
        raise runs.UserError(f"{path}: no test samples; run recipes/02_sample.py --run {cfg.run} first")
    evaluator_dir = None if cfg.evaluator.lower() == "none" else Path(cfg.evaluator or Path(cfg.run) / "evaluator")
    if evaluator_dir is not None and not (evaluator_dir / "evaluator.json").exists():
        raise runs.UserError(f"{evaluator_dir}: no evaluator; run recipes/03_evaluator.py --run {cfg.run} "
                             "first, or pass --evaluator none for voting only")
    compared = {}
    for other in cfg.compare:  # read now, not after the scoring
        try:
            compared[other] = report.load_results(other)
        except report.ResultsError as e:
            raise runs.UserError(f"--compare: {e}") from None
    out = Path(cfg.out or Path(cfg.run) / "report")
    store = samples.load(path)  # problems, samples and meta: each file read once
    if not any(g.samples for g in store.groups.values()):
        raise runs.UserError(f"{path}: holds no sampled solutions")

    from mathlite import trainer

    trainer.setup_runtime()
    scorers: dict[str, samples.ScoreSet] = {}
    if evaluator_dir is not None:
        scorers[report.PRIMARY] = evaluator_scores(store, evaluator_dir, out / "scores-test.json", cfg.batch_size)
    conf = confidence_scores(store) if cfg.confidence else None
    if conf is not None:
        scorers[conf.scorer] = conf
    rows = store.metric_rows(scorers, primary=report.PRIMARY)

    n = max(len(r["samples"]) for r in rows)
    K = tuple(k for k in cfg.K_values if k >= 1)
    topn = tuple(t for t in cfg.topn_values if 1 <= t <= n)
    comp = report.compute(rows, K_values=K, topn_values=topn, n_draws=cfg.n_draws, seed=cfg.seed, n_boot=cfg.n_boot)
    ev = scorers.get(report.PRIMARY)
    meta = {"name": cfg.name or str(Path(cfg.run).name), "model": str(store.meta.model),
            "data": next(iter({p.source for p in store.problems}), "?"), "N": n, "n_problems": len(rows),
            "samples": str(path), "evaluator": str(evaluator_dir) if evaluator_dir else None,
            "evaluator_cost": dict(ev.cost) if ev else {}, "evaluator_test": comp.scorers.get(report.PRIMARY),
            "settings": comp.settings}
    files = report.write_report(out, comp.stats, curves=comp.curves, breakdowns=comp.breakdowns, meta=meta,
                                paired=comp.paired, scorers=comp.scorers,
                                choices=report.choice_records(rows, comp.chosen))
    report.print_table(comp.stats, title=report.make_title(meta, comp.stats))
    for name, q in comp.scorers.items():
        print("[04] " + report.scorer_line(name, q))
    claims = report.claims_markdown(comp.paired, comp.stats, comp.scorers)
    if claims:
        print(claims.split("\n\n", 2)[-1].rstrip())
    if cfg.compare:
        others = {meta["name"]: comp.stats}
        for other in cfg.compare:
            other_meta, other_stats = compared[other]
            others[str(other_meta.get("name") or Path(other).parent)] = other_stats
        report.print_comparison(others)
    runs.write_manifest(out, cfg, complete=True, stage="report", files={k: str(v) for k, v in files.items()})
    print("[04] wrote " + ", ".join(str(p) for p in files.values()))


if __name__ == "__main__":
    runs.run_main(main)
