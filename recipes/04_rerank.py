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

from dataclasses import dataclass
from pathlib import Path

# light imports only: a bad flag or path is reported in seconds (transformers loads after the checks)
from mathlite import report, rerank, runs


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


PRESETS = {"smoke": dict(n_draws=4, n_boot=200), "cpu": dict(), "powered": dict(), "t4": dict(), "a100": dict(topn_values=(8, 16))}


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

    from mathlite import trainer

    trainer.setup_runtime()
    settings = rerank.Settings(K_values=cfg.K_values, topn_values=cfg.topn_values, n_draws=cfg.n_draws,
                               n_boot=cfg.n_boot, batch_size=cfg.batch_size, confidence=cfg.confidence, seed=cfg.seed)
    meta, comp, files = rerank.rerank(path, evaluator_dir, out, settings, cfg.name or str(Path(cfg.run).name), cfg)
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
    print("[04] wrote " + ", ".join(str(p) for p in files.values()))


if __name__ == "__main__":
    runs.run_main(main)
