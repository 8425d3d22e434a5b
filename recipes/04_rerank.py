"""Step 4: voting, re-ranking and solution-cluster re-ranking (SCR) on the test samples, with what each costs.

Scores every test sample with the evaluator once (cached), then compares every selection method of
the paper (Tables 3/7, Fig. 1): Pass@1 (greedy), Maj1@N, RR.All, SCR = RR.MajK, W.RR, W.RR.MajK,
Maj1.TopN', the oracles MajK@N and Pass@N, with 95% intervals, accuracy-vs-N curves, breakdowns by
level and subject, and the evaluator cost of each method (share of the N samples it must score).

    python recipes/04_rerank.py                    # runs/<preset>/samples + runs/<preset>/evaluator
    python recipes/04_rerank.py --preset smoke
    python recipes/04_rerank.py --compare runs/other/report/results.json

Writes runs/<preset>/report/: results.{json,md,csv}, accuracy_vs_n.png, cost_vs_k.png, scores-test.json.
Time: seconds for the metrics; scoring costs one evaluator pass over the N x problems test samples.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# light imports only: a bad flag or path is reported in seconds (transformers loads after the checks)
from mathlite import data, metrics, report, runs, sampling  # noqa: E402


@dataclass
class Config:
    samples: str = ""  # default: <run>/samples/samples-test.jsonl
    evaluator: str = ""  # default: <run>/evaluator; "none" = voting methods only
    K_values: tuple[int, ...] = (1, 2, 3, 4, 5)  # SCR keeps the K largest answer clusters
    topn_values: tuple[int, ...] = (4,)  # Maj1.TopN': vote among the N' best-scored samples
    n_draws: int = 32  # random subsets per point of the accuracy-vs-N curves
    batch_size: int = 16  # evaluator batch
    compare: tuple[str, ...] = ()  # other results.json files to show side by side
    name: str = ""  # label of this run in comparisons; default: the run folder
    out: str = ""  # default: <run>/report
    seed: int = 0
    run: str = ""
    preset: str = ""


PRESETS = {"smoke": dict(n_draws=4), "cpu": dict(), "t4": dict(), "a100": dict(topn_values=(8, 16))}


def scores_for(records, problems_by_id, evaluator_dir: Path, cache: Path, batch_size: int) -> tuple[dict, dict]:
    """Evaluator score of every (id, k) sample, read from the cache when it was made by this evaluator."""
    from mathlite.evaluator import Evaluator

    stamp = runs.read_json(evaluator_dir / "evaluator.json")
    if isinstance(stamp, dict):  # where the evaluator's init adapter was is no part of its weights
        stamp = {k: v for k, v in stamp.items() if k != "init_adapter"}
    fingerprint = runs.config_hash({"evaluator": stamp, "adapter": sampling.adapter_fingerprint(evaluator_dir)})
    if cache.exists():
        try:
            cached = json.loads(cache.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            cached = {}  # unreadable: score again and overwrite it
        if isinstance(cached, dict) and cached.get("fingerprint") == fingerprint and {"scores", "cost"} <= set(cached):
            print(f"[04] scores reused from {cache}")
            return cached["scores"], cached["cost"]
    ev = Evaluator.load(evaluator_dir)
    keys, questions, solutions = [], [], []
    for pid, entry in records.items():
        for s in entry["samples"]:
            keys.append(f"{pid}\t{s['k']}")
            questions.append(problems_by_id[pid].question)
            solutions.append(s["text"])
    from rich.progress import Progress

    scores = {}
    with Progress(*Progress.get_default_columns()) as bar:
        task = bar.add_task("scoring test samples", total=len(keys))
        chunk = batch_size * 4
        for i in range(0, len(keys), chunk):
            for key, v in zip(keys[i:i + chunk], ev.score(questions[i:i + chunk], solutions[i:i + chunk], batch_size)):
                scores[key] = v
            bar.update(task, advance=len(keys[i:i + chunk]))
    cost = {"solutions_scored": ev.n_scored, "tokens_scored": ev.tokens_scored, "kind": ev.kind, "loss": ev.loss}
    runs.atomic_write_json(cache, {"fingerprint": fingerprint, "scores": scores, "cost": cost})
    return scores, cost


def main(argv):
    cfg = runs.parse_config(Config, PRESETS, argv)
    runs.print_config(cfg, "04 re-ranking config")
    samples = Path(cfg.samples or Path(cfg.run) / "samples" / "samples-test.jsonl")
    if not samples.exists():
        raise runs.UserError(f"{samples}: no test samples; run recipes/02_sample.py --run {cfg.run} first")
    evaluator_dir = None if cfg.evaluator.lower() == "none" else Path(cfg.evaluator or Path(cfg.run) / "evaluator")
    if evaluator_dir is not None and not (evaluator_dir / "evaluator.json").exists():
        raise runs.UserError(f"{evaluator_dir}: no evaluator; run recipes/03_evaluator.py --run {cfg.run} "
                             "first, or pass --evaluator none for voting only")
    compared = {}
    for path in cfg.compare:  # read now, not after the scoring
        try:
            compared[path] = report.load_results(path)
        except report.ResultsError as e:
            raise runs.UserError(f"--compare: {e}") from None
    out = Path(cfg.out or Path(cfg.run) / "report")
    paths = sampling.output_paths(samples)
    try:
        problems = {p.id: p for p in sampling.read_problems(paths.problems)}
    except data.DataError as e:
        raise runs.UserError(f"{paths.problems}: {e}") from None
    records = sampling.read_samples(paths.samples)
    rows = sampling.metric_records(samples)
    if not rows or not any(r["samples"] for r in rows):
        raise runs.UserError(f"{samples}: holds no sampled solutions")
    meta_in = runs.read_json(paths.meta)
    if not isinstance(meta_in, dict):
        raise runs.UserError(f"{paths.meta}: not a sampling meta file; is {samples} the output of recipes/02_sample.py?")

    from mathlite import trainer

    trainer.setup_runtime()
    cost = {}
    if evaluator_dir is not None:
        scores, cost = scores_for(records, problems, evaluator_dir, out / "scores-test.json", cfg.batch_size)
        for row in rows:
            ks = [s["k"] for s in records[row["id"]]["samples"]]
            for s, k in zip(row["samples"], ks):
                s["score"] = scores.get(f"{row['id']}\t{k}")

    n = max(len(r["samples"]) for r in rows)
    K = tuple(k for k in cfg.K_values if k >= 1)
    topn = tuple(t for t in cfg.topn_values if 1 <= t <= n)
    prepared = metrics.prepare(rows)
    stats = metrics.summarize(prepared, K_values=K, topn_values=topn)
    breakdowns = {by: metrics.breakdown(prepared, by=by, K_values=K, topn_values=topn) for by in ("level", "subject")}
    curves = metrics.accuracy_curves(prepared, n_draws=cfg.n_draws, seed=cfg.seed, K_values=K, topn_values=topn)
    model = meta_in.get("model", {}).get("name", "?")
    data_name = next(iter({p.source for p in problems.values()}), "?")
    meta = {"name": cfg.name or str(Path(cfg.run).name), "model": model, "data": data_name, "N": n,
            "n_problems": len(rows), "samples": str(samples),
            "evaluator": str(evaluator_dir) if evaluator_dir else None, "evaluator_cost": cost,
            "evaluator_test": metrics.evaluator_quality(rows) if evaluator_dir else None}
    files = report.write_report(out, stats, curves=curves, breakdowns=breakdowns, meta=meta)
    report.print_table(stats, title=report.make_title(meta, stats))
    if meta["evaluator_test"]:
        print("[04] " + report.evaluator_sentence(meta["evaluator_test"]))
    if cfg.compare:
        others = {meta["name"]: stats}
        for path in cfg.compare:
            other_meta, other_stats = compared[path]
            others[str(other_meta.get("name") or Path(path).parent)] = other_stats
        report.print_comparison(others)
    runs.write_manifest(out, cfg, complete=True, stage="report", files={k: str(v) for k, v in files.items()})
    print("[04] wrote " + ", ".join(str(p) for p in files.values()))


if __name__ == "__main__":
    runs.run_main(main)
