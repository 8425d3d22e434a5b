"""Benchmark: what solution-cluster re-ranking (SCR, RR.MajK) saves against RR.All.

RR.All has the evaluator score all N sampled solutions of a problem; RR.MajK (SCR, Liu et
al. 2023) scores only the solutions in the K largest answer clusters, and none at all when
those K clusters are a single one. For each method this prints the accuracy (Wilson 95%
CI), the share of the N solutions the evaluator scored, the tokens it read, and the cost
ratio RR.All / RR.MajK, all from mathlite.metrics.summarize (the numbers of
recipes/04_rerank.py).

Two sources:

  --report DIR   a real run: DIR/results.json written by recipes/04_rerank.py. When
                 DIR/choices-test.jsonl is there (or the samples file named in its meta and
                 DIR/scores-test.json, the evaluator's scores), the table is recomputed from
                 the samples and scores for K = 1..5; otherwise the stored per-method numbers
                 are shown.
  (default)      SIMULATED problems, stated as such in the output and the JSON: --problems
                 problems (500) x --n samples (64). Each problem has 1 + Poisson(4) distinct
                 candidate answers with probabilities drawn from a Dirichlet; the right
                 answer's weight is boosted by a per-problem skill, so the majority is often,
                 not always, right (and on some problems no candidate is right). 5% of
                 samples have no final answer. Answers are real strings in varying spellings
                 (`7`, `7.0`, `\\frac{14}{2}`), so the clustering runs for real. Evaluator
                 scores are logistic(N(+-d/2, 1) + problem offset): correlated with
                 correctness with ROC-AUC ~ Phi(d/sqrt 2) (d = --separation, 1.0: ~0.76).
                 Solution lengths are log-normal around 250 tokens.

Run:  python bench/bench_scr_cost.py [--problems 500] [--n 64] [--seed 0] [--quick]
      python bench/bench_scr_cost.py --report runs/cpu/report
      -> bench/results/scr_cost.json
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from mathlite import metrics, report, runs

REPO = Path(__file__).resolve().parents[1]

K_VALUES = (1, 2, 3, 4, 5)
DEFAULT_OUT = REPO / "bench" / "results" / "scr_cost.json"


# --------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------

def _spellings(value: int, rng: np.random.Generator) -> str:
    """One of several spellings of an integer answer (all in one cluster)."""
    k = rng.integers(0, 5)
    if k == 0:
        return f"{value}.0"
    if k == 1:
        return f"\\frac{{{2 * value}}}{{2}}"
    if k == 2:
        return f"\\boxed{{{value}}}"
    return str(value)


def simulate(n_problems: int, n_samples: int, seed: int, separation: float, alpha: float) -> list[dict]:
    """Per-problem records in mathlite.metrics' input format (see the module docstring)."""
    rng = np.random.default_rng(seed)
    records = []
    for p in range(n_problems):
        m = 1 + int(rng.poisson(4))  # distinct candidate answers
        skill = rng.gamma(2.0, 1.5)  # how strongly the model prefers the right answer
        solvable = rng.random() < 0.85  # else no candidate is right
        weights = np.full(m, alpha)
        if solvable:
            weights[0] += skill
        probs = rng.dirichlet(weights)
        values = rng.choice(np.arange(2, 10_000), size=m, replace=False)  # candidate 0 is the gold answer
        offset = rng.normal(0.0, 0.5)  # a problem-level bias of the evaluator
        samples = []
        for _ in range(n_samples):
            if rng.random() < 0.05:
                answer, correct = None, False
            else:
                j = int(rng.choice(m, p=probs))
                answer, correct = _spellings(int(values[j]), rng), bool(solvable and j == 0)
            logit = rng.normal(separation / 2 if correct else -separation / 2, 1.0) + offset
            samples.append({"answer": answer, "correct": correct, "score": float(1 / (1 + math.exp(-logit))),
                            "tokens": int(rng.lognormal(math.log(250), 0.35))})
        records.append({"id": f"sim/{p}", "level": 1 + p % 5, "subject": "simulated", "greedy": None,
                        "samples": samples})
    return records


def from_report(report_dir: Path) -> tuple[dict, dict]:
    """(method stats as dicts, source description) of a recipes/04_rerank.py report folder."""
    results = report_dir / "results.json" if report_dir.is_dir() else report_dir
    doc = runs.read_json(results)
    if not isinstance(doc, dict) or not isinstance(doc.get("methods"), dict):
        raise runs.UserError(f"{results}: not a results.json of recipes/04_rerank.py (no 'methods')")
    meta = doc.get("meta") or {}
    samples_path = Path(meta["samples"]) if meta.get("samples") else None
    scores_file = results.parent / "scores-test.json"
    choices_file = results.parent / str(meta.get("choices") or "choices-test.jsonl")
    rows = source = None
    if choices_file.exists():  # per problem: answers, grades, tokens and the evaluator's scores
        from mathlite import report, samples

        rows = [{**r, "samples": [{**s, "scores": {}} for s in r["samples"]]}  # the evaluator's scores only
                for r in report.rows_from_choices(samples.load_choices(choices_file))]
        source = {"choices": str(choices_file)}
    elif samples_path is not None and samples_path.exists() and scores_file.exists():
        from mathlite import samples

        scores = samples.load_scores(scores_file)
        rows = samples.load(samples_path).metric_rows({scores.scorer: scores}, primary=scores.scorer)
        source = {"samples": str(samples_path), "scores": str(scores_file)}
    if rows is not None:
        stats = metrics.summarize(rows, K_values=K_VALUES, topn_values=())
        return ({m: s.to_dict() for m, s in stats.items()},
                {"kind": "report, recomputed from samples and scores", "results": str(results), **source,
                 "n_problems": len(rows), "N": max((len(r["samples"]) for r in rows), default=0),
                 "model": meta.get("model")})
    return (doc["methods"], {"kind": "report, stored per-method numbers", "results": str(results),
                             "n_problems": meta.get("n_problems"), "N": meta.get("N"), "model": meta.get("model")})


# --------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------

def cost_table(methods: dict) -> dict:
    """RR.All vs RR.MajK: accuracy, cost share, tokens, cost ratio."""
    if "rr_all" not in methods:
        raise runs.UserError("no evaluator scores in this run: RR.All / RR.MajK need scored samples")
    base = methods["rr_all"]
    rows = {}
    names = ["maj1", "rr_all"] + sorted((m for m in methods if m.startswith("rr_maj")), key=lambda m: int(m[6:]))
    for m in names:
        s = methods.get(m)
        if s is None:
            continue
        share = s.get("cost_share")
        rows[m] = {
            "label": s.get("label", m),
            "accuracy": s.get("accuracy"), "ci_low": s.get("ci_low"), "ci_high": s.get("ci_high"),
            "cost_share": share, "tokens_scored": s.get("tokens_scored"),
            # how many times more RR.All scores than this method (inf when this scores nothing)
            "cost_ratio_all_over_this": (base["cost_share"] / share) if share else math.inf,
            "cost_vs_rr_all": (share / base["cost_share"]) if base.get("cost_share") else None,
            "accuracy_minus_rr_all": (s["accuracy"] - base["accuracy"]) if s.get("accuracy") is not None else None,
        }
    return rows


def headline(rows: dict) -> dict:
    """The cheapest RR.MajK (K >= 2) whose accuracy is within 1 point of the best RR.MajK/RR.All."""
    cands = {m: r for m, r in rows.items() if m.startswith("rr_maj") and m != "rr_maj1"}
    if not cands:
        return {}
    best_acc = max(r["accuracy"] for m, r in rows.items() if m.startswith("rr_"))
    good = [m for m, r in cands.items() if r["accuracy"] >= best_acc - 0.01] or list(cands)
    pick = min(good, key=lambda m: (rows[m]["cost_share"], -rows[m]["accuracy"]))
    r = rows[pick]
    return {"name": f"evaluator cost, RR.All / {r['label']}", "ratio": r["cost_ratio_all_over_this"],
            "method": pick, "accuracy": r["accuracy"], "rr_all_accuracy": rows["rr_all"]["accuracy"],
            "cost_share": r["cost_share"], "rr_all_cost_share": rows["rr_all"]["cost_share"]}


def print_table(rows: dict, title: str, caption: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def pct(x, d=1):
        return report.fmt(x, f".{d}f", "n/a", 100)

    t = Table(title=title, caption=caption)
    for col in ("Method", "Accuracy %", "95% CI", "Scored (% of N)", "Tokens scored/problem", "RR.All cost / this",
                "Acc. vs RR.All"):
        t.add_column(col, justify="left" if col == "Method" else "right")
    for m, r in rows.items():
        ratio = r["cost_ratio_all_over_this"]
        t.add_row(r["label"], pct(r["accuracy"]), f"[{pct(r['ci_low'])}, {pct(r['ci_high'])}]", pct(r["cost_share"]),
                  "n/a" if r["tokens_scored"] is None else f"{r['tokens_scored']:,.0f}",
                  "no scoring" if ratio == math.inf else f"{ratio:.2f}x",
                  "n/a" if r["accuracy_minus_rr_all"] is None else f"{100 * r['accuracy_minus_rr_all']:+.1f}")
    Console(width=max(120, Console().width)).print(t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", type=Path, help="a recipes/04_rerank.py report folder (or its results.json)")
    ap.add_argument("--problems", type=int, default=500, help="simulated problems (default 500)")
    ap.add_argument("--n", type=int, default=64, help="simulated samples per problem (default 64)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--separation", type=float, default=1.0, help="evaluator logit gap correct vs wrong (default 1.0)")
    ap.add_argument("--alpha", type=float, default=0.7, help="Dirichlet concentration of the answer distribution")
    ap.add_argument("--quick", action="store_true", help="simulate 100 problems x 32 samples")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.quick:
        args.problems, args.n = min(args.problems, 100), min(args.n, 32)

    t0 = time.perf_counter()
    try:
        if args.report:
            methods, source = from_report(args.report)
            simulated = False
        else:
            records = simulate(args.problems, args.n, args.seed, args.separation, args.alpha)
            t_sim = time.perf_counter() - t0
            stats = metrics.summarize(records, K_values=K_VALUES, topn_values=())
            methods = {m: s.to_dict() for m, s in stats.items()}
            source = {"kind": "SIMULATED", "n_problems": args.problems, "N": args.n, "seed": args.seed,
                      "separation": args.separation, "dirichlet_alpha": args.alpha,
                      "simulate_s": round(t_sim, 2),
                      "description": "simulated problems, not model outputs: answer distributions from a Dirichlet "
                                     "with a boosted right answer, 15% unsolvable, 5% missing answers, evaluator "
                                     "scores logistic(N(+-separation/2, 1) + problem offset)"}
            simulated = True
        rows = cost_table(methods)
    except runs.UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    head = headline(rows)
    result = {
        "benchmark": "scr_cost",
        "simulated": simulated,
        "source": source,
        "K_values": list(K_VALUES),
        "methods": rows,
        "headline": head,
        "seconds": round(time.perf_counter() - t0, 2),
        "machine": runs.machine(),
        "versions": runs.versions(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if simulated:
        title = f"SIMULATED: {args.problems} problems x N={args.n} (not model outputs)"
    else:
        title = f"{source.get('model') or 'run'}: {source.get('n_problems')} problems x N={source.get('N')} ({source['kind']})"
    print_table(rows, "SCR evaluator cost vs RR.All -- " + title,
                "Scored = share of the N solutions the evaluator reads; RR.MajK scores nothing when its top-K "
                "clusters are one cluster.")
    if head:
        print(f"headline: {head['name']} = {head['ratio']:.2f}x fewer solutions scored "
              f"({100 * head['cost_share']:.1f}% vs {100 * head['rr_all_cost_share']:.0f}% of N), accuracy "
              f"{100 * head['accuracy']:.1f}% vs {100 * head['rr_all_accuracy']:.1f}%"
              + (" [SIMULATED]" if simulated else ""))
    runs.atomic_write_json(args.out, result)
    print(f"[bench_scr_cost] wrote {args.out} in {result['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
