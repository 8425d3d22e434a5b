"""How far can a probe on the 135M generator's hidden states go? Diagnostics for the powered preset.

    python bench/probe_diagnostics.py runs/powered/seed0 runs/powered/seed1 runs/powered/seed2

For each run folder (made by `recipes/run_all.py --preset powered`: samples with their hidden-state
features), on the TEST samples, after the fact (nothing here chose anything in the recipes):

- `trained`: the within-problem AUC of the probe recipe 03 trained (on the val split) and of the
  generator's confidence (mean token log-prob), as recipe 04 reported them;
- `test_cv`: a probe fit by 5-fold cross-validation over the test problems themselves, for each
  input set and L2 strength: an optimistic ceiling of what these features hold for problems like
  the test problems (the best of the grid is picked by looking at test: a ceiling, not a result);
- `learning_curve`: probes (inputs "both", L2 0.1) trained on 25..400 test problems and scored on
  100 other test problems (3 random splits): does more training data move the AUC?

Writes bench/results/powered/probe_diagnostics.json. The features are not committed (about 20 MB
per seed), so this needs the run folders; everything else in the README recomputes from
bench/results/powered/ alone.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from mathlite import probe, samples

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "powered" / "probe_diagnostics.json"


def _test_table(run: Path) -> probe.Table:
    path = run / "samples" / "samples-test.jsonl"
    store = samples.load(path)
    recs = [s.to_dict() for s in store.all_samples() if s.k >= 0]
    return probe.table(recs, samples.load_features(path), where=str(path))


def _cv(t: probe.Table, inputs: str, lam: float) -> float:
    return probe.within_problem_auc(t.problem, t.y, probe.out_of_fold(t, inputs, lam))[0]


def _curve(t: probe.Table, sizes=(25, 50, 100, 200, 400), repeats: int = 3, held_n: int = 100) -> list[dict]:
    problems = np.unique(t.problem)
    rows = []
    for size in sizes:
        if size + held_n > len(problems):
            continue
        aucs, conf = [], []
        for r in range(repeats):
            perm = np.random.default_rng(100 + r).permutation(problems)
            held, train = set(perm[:held_n].tolist()), set(perm[held_n:held_n + size].tolist())
            mh = np.array([p in held for p in t.problem])
            mt = np.array([p in train for p in t.problem])
            th, tt = probe._subset(t, mh), probe._subset(t, mt)
            fit = probe._fit(tt, "both", 0.1)
            aucs.append(probe.within_problem_auc(th.problem, th.y, fit.logits(th))[0])
            conf.append(probe.within_problem_auc(th.problem, th.y, th.conf[:, 0])[0])
        rows.append({"train_problems": size, "train_solutions_approx": int(size * len(t.y) / len(problems)),
                     "held_out_problems": held_n, "probe_auc": aucs, "probe_auc_mean": float(np.mean(aucs)),
                     "confidence_auc_mean": float(np.mean(conf))})
        print(f"  curve {size:4d} problems: probe {np.mean(aucs):.3f}, confidence {np.mean(conf):.3f}", flush=True)
    return rows


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    out: dict = {"runs": {}, "note": __doc__.strip().splitlines()[0]}
    t0 = time.time()
    for run in map(Path, argv):
        print(f"[diag] {run}", flush=True)
        t = _test_table(run)
        res = json.loads((run / "report" / "results.json").read_text())
        trained = {k: res["scorers"][k]["within_problem_auc"] for k in res["scorers"]}
        grid = []
        for inputs in probe.INPUTS:
            for lam in (probe.LAMBDAS if inputs != "confidence" else probe.LAMBDAS[:1]):
                a = _cv(t, inputs, lam)
                grid.append({"inputs": inputs, "lambda": lam if inputs != "confidence" else None, "test_cv_within_problem_auc": a})
                print(f"  test-CV {inputs} {lam}: {a:.3f}", flush=True)
        out["runs"][run.name] = {"test_solutions": len(t.y), "test_problems": int(len(np.unique(t.problem))),
                                 "mixed_problems": probe.within_problem_auc(t.problem, t.y, t.conf[:, 0])[1],
                                 "trained": trained, "test_cv": grid,
                                 "test_cv_best": max(g["test_cv_within_problem_auc"] for g in grid),
                                 "learning_curve": _curve(t)}
    out["seconds"] = round(time.time() - t0, 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"[diag] wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
