"""The probe evaluator: a score head on the frozen generator's own hidden states, with the
generator's confidence as an input, trained on many of its graded samples.

Why it exists. At the scale this cookbook runs on a CPU, the LoRA evaluator of recipe 03
(`kind=head` or `verbal`) sees a few hundred examples and ranks a problem's solutions
barely better than chance, while the generator's mean token log-probability, which costs
nothing, does much better (README, "the cpu preset"). An evaluator that cannot beat that
baseline is not the paper's evaluator. The probe keeps the paper's recipe where it matters
(trained on the model's own samples and their correctness labels; within-problem pairwise
loss, the paper's Eq. 9; initialised from the generator, here by reading its states) and
changes what is affordable: the backbone stays frozen, so a training example costs no
forward pass (its features are kept while sampling, `sampling.sample_problems(features=True)`),
and thousands of examples train in seconds.

Features of a sample (standardised with the training samples' mean and sd):
  - hidden: the mean, over the sample's tokens, of the final norm's output (the state the
    logits come from) and of a middle layer's output: 2 x hidden_size numbers;
  - confidence: logprob_mean, logprob_sum, log(tokens), and whether it stopped by itself.

Score: s = a . confidence + w . hidden + b; the evaluator's score is sigmoid(s).
Loss: the mean over problems of the mean over that problem's (right, wrong) pairs of
log(1 + exp(-(s_right - s_wrong))), plus `POINTWISE` x the binary cross-entropy of every
sample (a little calibration, so that W-RR's sums of scores mean something), plus
lambda x |w|^2. Which inputs (confidence only / hidden only / both) and lambda are chosen by
within-problem AUC in a 5-fold cross-validation over the training problems (never by test
problems), then the probe is refit on all of them.

    fit = fit_probe(samples_by_id, features, seed=0)       # chooses and refits
    fit.save("runs/powered/seed0/evaluator")
    probe = Probe.load("runs/powered/seed0/evaluator")
    scores = probe.score(records, features)                 # {(id, k): score in (0, 1)}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .errors import UserError
from .files import atomic_write_json
from .metrics import auc

WEIGHTS_FILE = "probe.safetensors"
META_FILE = "evaluator.json"
INPUTS = ("confidence", "hidden", "both")
LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0)
POINTWISE = 0.1
CONF_NAMES = ("logprob_mean", "logprob_sum", "log_tokens", "stopped")


def confidence_features(rec: Mapping[str, Any]) -> list[float]:
    lm, ls = rec.get("logprob_mean"), rec.get("logprob_sum")
    if lm is None or ls is None:
        raise UserError(f"sample {rec.get('id')!r} k={rec.get('k')}: no logprob_mean/logprob_sum (sampled before "
                        "they were recorded); sample again with recipes/02_sample.py")
    return [float(lm), float(ls), math.log(max(int(rec.get("tokens") or 0), 1)), 1.0 if rec.get("finish") == "eos" else 0.0]


@dataclass
class Table:
    """Samples as arrays: one row per sample, with its problem's index."""

    keys: list[tuple[str, int]]
    problem: np.ndarray  # (n,) int
    y: np.ndarray  # (n,) float 0/1
    conf: np.ndarray  # (n, 4)
    hidden: np.ndarray  # (n, 2 * hidden)


def table(records: Sequence[Mapping[str, Any]], features: Mapping[tuple[str, int], np.ndarray],
          where: str = "samples") -> Table:
    """Records (sample dicts with id, k, correct, logprob_*, tokens, finish) joined with their features."""
    missing = [(r["id"], r["k"]) for r in records if (r["id"], r["k"]) not in features]
    if missing:
        raise UserError(f"{where}: {len(missing)} of {len(records)} samples have no hidden-state features "
                        f"(first: {missing[0]}); sample them again with --features true")
    ids = sorted({r["id"] for r in records})
    index = {pid: i for i, pid in enumerate(ids)}
    keys = [(r["id"], int(r["k"])) for r in records]
    return Table(keys, np.array([index[r["id"]] for r in records]), np.array([float(bool(r.get("correct"))) for r in records]),
                 np.array([confidence_features(r) for r in records], dtype=np.float64),
                 np.stack([np.asarray(features[k], dtype=np.float32).reshape(-1) for k in keys]).astype(np.float64))


def within_problem_auc(problem: np.ndarray, y: np.ndarray, s: np.ndarray) -> tuple[float | None, int]:
    """Mean AUC over the problems with both right and wrong samples (and how many there are)."""
    vals = []
    for p in np.unique(problem):
        m = problem == p
        if 0 < y[m].sum() < m.sum():
            vals.append(auc(y[m], s[m]))
    return (float(np.mean(vals)) if vals else None), len(vals)


@dataclass
class Probe:
    inputs: str
    lam: float
    a: np.ndarray  # (4,) weights on standardised confidence (zeros when inputs == "hidden")
    w: np.ndarray  # (2 * hidden,) weights on standardised hidden (zeros when inputs == "confidence")
    b: float
    mu_c: np.ndarray
    sd_c: np.ndarray
    mu_h: np.ndarray
    sd_h: np.ndarray
    info: dict = field(default_factory=dict)

    def logits(self, t: Table) -> np.ndarray:
        zc = (t.conf - self.mu_c) / self.sd_c
        zh = (t.hidden - self.mu_h) / self.sd_h
        return zc @ self.a + zh @ self.w + self.b

    def scores(self, t: Table) -> dict[tuple[str, int], float]:
        s = 1.0 / (1.0 + np.exp(-self.logits(t)))
        return {k: float(v) for k, v in zip(t.keys, s)}

    def save(self, out: str | Path) -> Path:
        from safetensors.numpy import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.ascontiguousarray(getattr(self, k), dtype=np.float64) for k in ("a", "w", "mu_c", "sd_c", "mu_h", "sd_h")}
        tmp = out / (WEIGHTS_FILE + ".tmp")
        save_file(arrays, str(tmp))
        tmp.replace(out / WEIGHTS_FILE)
        atomic_write_json(out / META_FILE, {"kind": "probe", "loss": "pairwise", "inputs": self.inputs, "lambda": self.lam,
                                            "b": self.b, "pointwise_weight": POINTWISE, "confidence_inputs": list(CONF_NAMES),
                                            "hidden_size": int(len(self.w)), **self.info})
        return out / WEIGHTS_FILE

    @classmethod
    def load(cls, folder: str | Path) -> "Probe":
        from safetensors.numpy import load_file

        folder = Path(folder)
        try:
            meta = json.loads((folder / META_FILE).read_text())
            arr = load_file(str(folder / WEIGHTS_FILE))
        except (OSError, ValueError) as e:
            raise UserError(f"{folder}: not a probe evaluator ({type(e).__name__}: {e})") from None
        info = {k: v for k, v in meta.items() if k not in ("kind", "loss", "inputs", "lambda", "b")}
        return cls(meta["inputs"], float(meta["lambda"]), arr["a"], arr["w"], float(meta["b"]), arr["mu_c"], arr["sd_c"],
                   arr["mu_h"], arr["sd_h"], info)


def is_probe(folder: str | Path) -> bool:
    try:
        return json.loads((Path(folder) / META_FILE).read_text()).get("kind") == "probe"
    except (OSError, ValueError, AttributeError):
        return False


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = x.mean(0)
    sd = x.std(0)
    return mu, np.where(sd > 1e-8, sd, 1.0)


def _pairs(problem: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(right index, wrong index, weight) of every within-problem pair; each problem weighs 1 in all."""
    ri, wi, wt = [], [], []
    for p in np.unique(problem):
        idx = np.flatnonzero(problem == p)
        right, wrong = idx[y[idx] == 1], idx[y[idx] == 0]
        if len(right) and len(wrong):
            rr, ww = np.meshgrid(right, wrong, indexing="ij")
            ri.append(rr.ravel())
            wi.append(ww.ravel())
            wt.append(np.full(rr.size, 1.0 / rr.size))
    if not ri:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.float64)
    return (torch.from_numpy(np.concatenate(ri)), torch.from_numpy(np.concatenate(wi)),
            torch.from_numpy(np.concatenate(wt)) / len(ri))


def _fit(t: Table, inputs: str, lam: float) -> Probe:
    """Full-batch L-BFGS in float64 (a convex problem): deterministic for given data."""
    mu_c, sd_c = _standardise(t.conf)
    mu_h, sd_h = _standardise(t.hidden)
    zc = torch.from_numpy((t.conf - mu_c) / sd_c)
    zh = torch.from_numpy((t.hidden - mu_h) / sd_h)
    use_c, use_h = inputs in ("confidence", "both"), inputs in ("hidden", "both")
    a = torch.zeros(zc.shape[1], dtype=torch.float64, requires_grad=use_c)
    w = torch.zeros(zh.shape[1], dtype=torch.float64, requires_grad=use_h)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    y = torch.from_numpy(t.y)
    ri, wi, wt = _pairs(t.problem, t.y)
    params = [p for p in (a, w, b) if p.requires_grad]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=200, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def loss_fn():
        opt.zero_grad()
        s = zc @ a + zh @ w + b
        pair = (torch.nn.functional.softplus(-(s[ri] - s[wi])) * wt).sum() if len(ri) else s.new_zeros(())
        point = torch.nn.functional.binary_cross_entropy_with_logits(s, y)
        loss = pair + POINTWISE * point + lam * (w * w).sum() + 1e-4 * (a * a).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(loss_fn)
    return Probe(inputs, lam, a.detach().numpy().copy(), w.detach().numpy().copy(), float(b.detach()),
                 mu_c, sd_c, mu_h, sd_h)


def _subset(t: Table, m: np.ndarray) -> Table:
    return Table([k for k, keep in zip(t.keys, m) if keep], t.problem[m], t.y[m], t.conf[m], t.hidden[m])


def out_of_fold(t: Table, inputs: str, lam: float, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Each sample's score from a probe fit without its problem: the problems are dealt into `folds`
    seeded folds, and each fold is scored by a probe fit on the others (a fold whose complement is
    all right or all wrong scores 0)."""
    problems = np.unique(t.problem)
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(rng.permutation(problems).tolist(), np.arange(len(problems)) % max(2, folds)))
    fold = np.array([fold_of[p] for p in t.problem.tolist()])
    oof = np.zeros(len(t.y))
    for f in np.unique(fold):
        held = fold == f
        if t.y[~held].min() == t.y[~held].max():
            continue
        oof[held] = _fit(_subset(t, ~held), inputs, lam).logits(_subset(t, held))
    return oof


def fit_probe(t: Table, folds: int = 5, seed: int = 0, inputs: Sequence[str] = INPUTS,
              lambdas: Sequence[float] = LAMBDAS) -> tuple[Probe, list[dict]]:
    """Choose inputs and lambda by cross-validation over the training problems, then refit on all.

    The problems are dealt into `folds` seeded folds; each setting is fit on all folds but one and
    scores the held-out one, so every training problem is a validation problem once (a few dozen
    held-out problems were too few to choose by: their AUCs moved by +-0.05 between splits). The
    setting with the best mean within-problem AUC over all held-out problems wins (ties: the
    stronger L2). Returns the refit probe and one row per setting, with the generator
    confidence's AUC on the same problems."""
    problems = np.unique(t.problem)
    if t.y.min() == t.y.max():
        raise UserError("the training samples are all right or all wrong: nothing to learn a ranking from")
    base_auc, mixed = within_problem_auc(t.problem, t.y, t.conf[:, 0])
    rows = []
    for inp in inputs:
        for lam in (lambdas if inp != "confidence" else lambdas[:1]):
            oof = out_of_fold(t, inp, lam, folds, seed)
            wauc, _ = within_problem_auc(t.problem, t.y, oof)
            rows.append({"inputs": inp, "lambda": lam if inp != "confidence" else None, "val_within_problem_auc": wauc,
                         "val_auc": auc(t.y, oof)})
    scored = [r for r in rows if r["val_within_problem_auc"] is not None]
    if not scored:
        raise UserError("no training problem has both right and wrong samples: sample more problems or more per problem")
    best = max(scored, key=lambda r: (r["val_within_problem_auc"], r["lambda"] or 0))
    final = _fit(t, best["inputs"], best["lambda"] or LAMBDAS[0])
    final.info = {"chosen_by": f"within-problem AUC, {max(2, folds)}-fold cross-validation over the training problems",
                  "val_problems": int(len(problems)), "val_mixed_problems": mixed, "val_solutions": len(t.keys),
                  "all_solutions": len(t.keys), "all_problems": int(len(problems)), "seed": seed,
                  "val_within_problem_auc": best["val_within_problem_auc"], "val_auc": best["val_auc"],
                  "val_confidence_within_problem_auc": base_auc}
    return final, rows
