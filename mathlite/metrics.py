"""Metrics for sample-and-select: accuracy with CIs, curves over N, breakdowns, evaluator cost.

Input format
------------
A run is a list of per-problem records (one JSON object per line in the
sampler's output), graded already by the sampler:

    {
      "id": "test/algebra/1234",
      "level": 5,                                   # MATH difficulty (any hashable value)
      "subject": "Algebra",
      "greedy": {"answer": "12", "correct": true},  # or None: no greedy decode for this run
      "samples": [                                  # the N sampled solutions, in sampling order
        {"answer": "12",  "correct": true,  "score": 0.93, "tokens": 211},
        {"answer": null,  "correct": false, "score": 0.02, "tokens": 512},  # no final answer
        ...
      ]
    }

`answer` is the extracted final answer (None: none found), `correct` the
sampler's grade against the reference, `score` the evaluator's score (higher =
more likely correct; None if not scored) and `tokens` the solution's length,
which is what the evaluator pays to read it. Evaluator methods are reported
only if at least one sample in the run has a score; "greedy" only if every
problem has a greedy record.

Pipeline
--------
    problems = prepare(records)          # clusters each problem's answers once (the slow part)
    table    = summarize(problems)       # {method: MethodStats}, Wilson 95% CIs
    curves   = accuracy_curves(problems) # expected accuracy vs N, bootstrap 95% CIs
    by_level = breakdown(problems, "level")

Every function also accepts the raw records and prepares them itself.
"""

from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from mathlite.select import (
    K_VALUES,
    TOPN_VALUES,
    Selection,
    clusters_for,
    clusters_from_labels,
    labels_from_clusters,
    method_label,
    method_names,
    run_methods,
)

ClusterFn = Callable[[list], list[list[int]]]


# ---------------------------------------------------------------------------
# Estimators and confidence intervals
# ---------------------------------------------------------------------------

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021).

    pass@k = 1 - C(n-c, k) / C(n, k): the chance that k samples drawn without
    replacement from the n contain a correct one. The binomials overflow for
    large n, so we use the product form 1 - prod_{i=n-c+1}^{n} (1 - k/i).
    """
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset must contain a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_ci(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Unlike the textbook p +- z*sqrt(p(1-p)/n) it stays inside [0, 1] and does
    not collapse to a zero-width interval at 0% or 100%.
    """
    if n <= 0:
        return (math.nan, math.nan)
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0% and 100% the bound is exactly 0 or 1; say so instead of leaving rounding noise.
    lo = 0.0 if successes == 0 else max(0.0, center - half)
    hi = 1.0 if successes == n else min(1.0, center + half)
    return (lo, hi)


def _resample_counts(n_rows: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap resamples of n_rows problems, each as counts (how often each problem was drawn).

    Means over a resample are then `counts @ values / n_rows`: one matrix product
    for all resamples, without materializing n_boot copies of the data, and
    every column of `values` (method, sample size) sees the same resamples.
    """
    return rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=n_boot)


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI for the mean of per-problem values (e.g. 0/1 correctness)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return (math.nan, math.nan)
    _z(confidence)  # validates confidence
    means = _resample_counts(v.size, n_boot, np.random.default_rng(seed)) @ v / v.size
    alpha = 1 - confidence
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


# ---------------------------------------------------------------------------
# Preparing problems: cluster once, keep arrays
# ---------------------------------------------------------------------------

@dataclass
class PreparedProblem:
    """One problem's samples as arrays, with its answers clustered once."""

    id: str
    level: Any
    subject: Any
    answers: list
    correct: np.ndarray  # bool, per sample
    scores: list  # float | None per sample
    tokens: np.ndarray  # int, per sample
    labels: np.ndarray  # cluster id per sample, -1 = no answer
    greedy_correct: bool | None
    ks: list = field(default_factory=list)  # each sample's k in the samples file (default: its position)
    other_scores: dict = field(default_factory=dict)  # {scorer name: [float | None per sample]}: other scorers

    @property
    def n(self) -> int:
        return len(self.answers)


def prepare(records: Iterable[dict | PreparedProblem], cluster_fn: ClusterFn | None = None) -> list[PreparedProblem]:
    """Turn input records into `PreparedProblem`s, clustering each problem's answers once.

    `cluster_fn(answers) -> clusters` defaults to mathlite.clusters.cluster_answers.
    Records that are already `PreparedProblem`s pass through unchanged.
    """
    cluster_fn = cluster_fn or clusters_for
    out = []
    for rec in records:
        if isinstance(rec, PreparedProblem):
            out.append(rec)
            continue
        samples = rec.get("samples") or []
        answers = [s.get("answer") for s in samples]
        greedy = rec.get("greedy")
        names = sorted({name for s in samples for name in (s.get("scores") or {})})
        out.append(PreparedProblem(
            id=str(rec.get("id", len(out))),
            level=rec.get("level"),
            subject=rec.get("subject"),
            answers=answers,
            correct=np.array([bool(s.get("correct")) for s in samples], dtype=bool),
            scores=[s.get("score") for s in samples],
            tokens=np.array([int(s.get("tokens") or 0) for s in samples], dtype=np.int64),
            labels=np.array(labels_from_clusters(cluster_fn(answers), len(answers)) if answers else [],
                            dtype=np.int64),
            greedy_correct=None if greedy is None else bool(greedy.get("correct")),
            ks=[s.get("k", i) for i, s in enumerate(samples)],
            other_scores={name: [(s.get("scores") or {}).get(name) for s in samples] for name in names},
        ))
    return out


# Methods offered for every other scorer (e.g. the generator's confidence), next to the evaluator's.
SCORER_METHODS = ("rr_all", "rr_maj", "w_rr")


def scorer_method(method: str, scorer: str) -> str:
    """"rr_all" + "confidence" -> "rr_all:confidence": a method run with another scorer's scores."""
    return f"{method}:{scorer}"


def split_method(name: str) -> tuple[str, str | None]:
    """Inverse of scorer_method: ("rr_all", "confidence"), or (name, None) for the primary scorer."""
    base, _, scorer = name.partition(":")
    return base, scorer or None


def full_label(name: str) -> str:
    """The paper's name of a method key, with the scorer when it is not the trained evaluator."""
    base, scorer = split_method(name)
    return method_label(base) if scorer is None else f"{method_label(base)} ({scorer})"


def scorer_names(problems: Iterable[PreparedProblem]) -> list[str]:
    return sorted({name for p in problems for name, v in p.other_scores.items() if any(x is not None for x in v)})


def _methods_for(problems: list[PreparedProblem], K_values, topn_values) -> list[str]:
    has_scores = any(s is not None for p in problems for s in p.scores)
    has_greedy = bool(problems) and all(p.greedy_correct is not None for p in problems)
    names = method_names(K_values, topn_values, greedy=has_greedy, scores=has_scores)
    first_oracle = next((i for i, m in enumerate(names) if m.endswith("_oracle") or m == "pass_n"), len(names))
    ks = sorted(set(int(k) for k in K_values))
    extra = [scorer_method(m, name) for name in scorer_names(problems)
             for m in ["rr_all"] + [f"rr_maj{k}" for k in ks] + ["w_rr"]]
    return names[:first_oracle] + extra + names[first_oracle:]


def _select(p: PreparedProblem, subset: np.ndarray | None, methods: list[str], K_values,
            topn_values) -> dict[str, Selection]:
    """Each sample method's Selection (indices into the subset) on all samples or a subset."""
    idx = range(p.n) if subset is None else subset.tolist()
    answers = [p.answers[i] for i in idx]
    # The evaluator methods are in `methods` only when the run has scores (see _methods_for).
    scores = [p.scores[i] for i in idx] if "rr_all" in methods else None
    correct = p.correct[idx].tolist()
    clusters = clusters_from_labels(p.labels[idx].tolist())
    out = dict(run_methods(answers, clusters, scores, correct, K_values, topn_values))
    for name, values in p.other_scores.items():
        wanted = [m for m in methods if split_method(m)[1] == name]
        if wanted:
            sel = run_methods(answers, clusters, [values[i] for i in idx], None, K_values, ())
            out.update({m: sel[split_method(m)[0]] for m in wanted})
    return {m: out[m] for m in methods if m in out}


def _evaluate(p: PreparedProblem, subset: np.ndarray | None, methods: list[str], K_values, topn_values,
              count_tokens: bool = True) -> dict[str, tuple[bool, int, int]]:
    """(correct, samples scored, tokens scored) per method, on all samples or a subset."""
    idx = range(p.n) if subset is None else subset.tolist()
    correct = p.correct[idx].tolist()
    tokens = p.tokens[idx].tolist()
    out = {}
    if "greedy" in methods:
        out["greedy"] = (bool(p.greedy_correct), 0, 0)
    for name, sel in _select(p, subset, methods, K_values, topn_values).items():
        ok = sel.index is not None and correct[sel.index]
        scored_tokens = sum(tokens[i] for i in sel.scored) if count_tokens else 0
        out[name] = (ok, sel.cost, scored_tokens)
    return out


# ---------------------------------------------------------------------------
# The headline table
# ---------------------------------------------------------------------------

@dataclass
class MethodStats:
    """One method's result over a set of problems."""

    method: str
    label: str
    accuracy: float
    ci_low: float
    ci_high: float
    n_problems: int
    n_correct: int
    cost_share: float  # mean share of each problem's N samples the evaluator scored
    tokens_scored: float  # mean tokens the evaluator read per problem

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(problems: Iterable[dict | PreparedProblem], K_values: Sequence[int] = K_VALUES,
              topn_values: Sequence[int] = TOPN_VALUES, confidence: float = 0.95,
              cluster_fn: ClusterFn | None = None) -> dict[str, MethodStats]:
    """Accuracy (Wilson CI) and evaluator cost of every method on all N samples."""
    problems = prepare(problems, cluster_fn)
    methods = _methods_for(problems, K_values, topn_values)
    correct = {m: 0 for m in methods}
    share = {m: 0.0 for m in methods}
    tokens = {m: 0 for m in methods}
    for p in problems:
        for m, (ok, cost, tok) in _evaluate(p, None, methods, K_values, topn_values).items():
            correct[m] += ok
            share[m] += cost / p.n if p.n else 0.0
            tokens[m] += tok
    n = len(problems)
    stats = {}
    for m in methods:
        lo, hi = wilson_ci(correct[m], n, confidence)
        stats[m] = MethodStats(
            method=m, label=full_label(m),
            accuracy=correct[m] / n if n else math.nan, ci_low=lo, ci_high=hi,
            n_problems=n, n_correct=correct[m],
            cost_share=share[m] / n if n else math.nan,
            tokens_scored=tokens[m] / n if n else math.nan,
        )
    return stats


def breakdown(problems: Iterable[dict | PreparedProblem], by: str = "level",
              **kwargs) -> dict[Any, dict[str, MethodStats]]:
    """`summarize` per value of a record field ("level" or "subject"), groups sorted."""
    if by not in ("level", "subject"):
        raise ValueError(f"breakdown by 'level' or 'subject', got {by!r}")
    problems = prepare(problems, kwargs.pop("cluster_fn", None))
    groups: dict[Any, list[PreparedProblem]] = {}
    for p in problems:
        groups.setdefault(getattr(p, by), []).append(p)
    # Levels may be ints or strings ("Level 5"); sort numbers numerically, then the rest by text.
    order = sorted(groups, key=lambda g: (not isinstance(g, (int, float)), g if isinstance(g, (int, float)) else str(g)))
    return {g: summarize(groups[g], **kwargs) for g in order}


# ---------------------------------------------------------------------------
# Curves: expected accuracy at a smaller N, by subsampling the N drawn samples
# ---------------------------------------------------------------------------

@dataclass
class Curves:
    """Expected accuracy (and evaluator cost) of each method at sample sizes `sizes`.

    accuracy[m][j] is the mean over problems of the expected correctness of
    method m when only sizes[j] of the samples had been drawn; ci_low/ci_high
    are a percentile bootstrap over problems.
    """

    sizes: list[int]
    methods: list[str]
    accuracy: dict[str, list[float]]
    ci_low: dict[str, list[float]]
    ci_high: dict[str, list[float]]
    cost_share: dict[str, list[float]]
    n_problems: int
    n_draws: int
    confidence: float = 0.95
    labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def default_sizes(n_max: int) -> list[int]:
    """1, 2, 4, ... up to n_max, plus n_max itself if it is not a power of two."""
    sizes = [1 << i for i in range(n_max.bit_length()) if (1 << i) <= n_max]
    return sizes if not sizes or sizes[-1] == n_max else sizes + [n_max]


def _subsets(n: int, size: int, n_draws: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Subsets of `size` out of n samples, each sorted (so "earliest sample" still breaks ties).

    When there are at most n_draws distinct subsets we take all of them: the
    expectation is then exact instead of a Monte-Carlo estimate (always the case
    for size = n, which gives exactly the full-N result).
    """
    if math.comb(n, size) <= n_draws:
        return [np.array(c) for c in itertools.combinations(range(n), size)]
    return [np.sort(rng.choice(n, size, replace=False)) for _ in range(n_draws)]


def accuracy_curves(problems: Iterable[dict | PreparedProblem], sizes: Sequence[int] | None = None,
                    n_draws: int = 32, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
                    K_values: Sequence[int] = K_VALUES, topn_values: Sequence[int] = TOPN_VALUES,
                    cluster_fn: ClusterFn | None = None) -> Curves:
    """Accuracy vs number of samples N for every method, by repeated random subsampling.

    For each problem and size n we draw `n_draws` random n-subsets of its
    samples (without replacement), regroup their precomputed cluster labels and
    run every method: the mean over draws estimates the expected accuracy with
    n samples. Pass@N uses the exact `pass_at_k` instead. A problem's draws
    depend only on `seed` and its id, so a subset of problems (a breakdown)
    sees the same draws.
    """
    _z(confidence)  # fail early on a bad confidence, before the slow part
    problems = prepare(problems, cluster_fn)
    if not problems:
        raise ValueError("no problems")
    if min(p.n for p in problems) == 0:
        empty = next(p.id for p in problems if p.n == 0)
        raise ValueError(f"problem {empty} has no samples: curves need at least one per problem")
    n_min = min(p.n for p in problems)
    sizes = list(sizes) if sizes is not None else default_sizes(n_min)
    if not sizes or min(sizes) < 1 or max(sizes) > n_min:
        raise ValueError(f"sizes must lie in 1..{n_min} (the fewest samples of any problem), got {sizes}")
    methods = _methods_for(problems, K_values, topn_values)

    # acc[m][problem, size] = expected correctness; cost likewise as a share of n.
    acc = {m: np.zeros((len(problems), len(sizes))) for m in methods}
    cost = {m: np.zeros((len(problems), len(sizes))) for m in methods}
    for pi, p in enumerate(problems):
        rng = np.random.default_rng([seed, zlib.crc32(p.id.encode())])
        for si, n in enumerate(sizes):
            subsets = _subsets(p.n, n, n_draws, rng)
            for subset in subsets:
                for m, (ok, c, _) in _evaluate(p, subset, methods, K_values, topn_values, count_tokens=False).items():
                    acc[m][pi, si] += ok
                    cost[m][pi, si] += c / n
            for m in methods:
                acc[m][pi, si] /= len(subsets)
                cost[m][pi, si] /= len(subsets)
            if "pass_n" in acc:
                acc["pass_n"][pi, si] = pass_at_k(p.n, int(p.correct.sum()), n)

    # One set of bootstrap resamples for all methods and sizes: CIs are paired.
    counts = _resample_counts(len(problems), n_boot, np.random.default_rng(seed))
    alpha = 1 - confidence
    out = Curves(sizes=sizes, methods=methods, accuracy={}, ci_low={}, ci_high={}, cost_share={},
                 n_problems=len(problems), n_draws=n_draws, confidence=confidence,
                 labels={m: full_label(m) for m in methods})
    for m in methods:
        means = counts @ acc[m] / len(problems)
        lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2], axis=0)
        out.accuracy[m] = acc[m].mean(axis=0).tolist()
        out.ci_low[m], out.ci_high[m] = lo.tolist(), hi.tolist()
        out.cost_share[m] = cost[m].mean(axis=0).tolist()
    return out


def auc(labels: Sequence[int | bool], scores: Sequence[float]) -> float:
    """ROC AUC from ranks (Mann-Whitney U): the chance that a random correct solution scores
    above a random incorrect one, ties counting one half. NaN when only one class is present."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape:
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    if np.isnan(s).any():
        raise ValueError("auc: scores contain NaN")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # 1-based ranks, tied scores sharing the average of the ranks they span
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    ranks = ((last - counts + 1 + last) / 2.0)[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def evaluator_quality(rows: Sequence[dict]) -> dict[str, Any] | None:
    """How well the evaluator's scores separate right from wrong on these (test) samples.

    auc: over all scored solutions (pooled across problems); within_problem_auc: the mean AUC over
    the problems that have both right and wrong samples, which is what re-ranking inside a problem
    depends on (a scorer can rank easy problems above hard ones and still not help). None when no
    sample carries a score; an AUC is None when it is undefined (one class only)."""
    pooled_y, pooled_s, per_problem = [], [], []
    for row in rows:
        pairs = [(bool(s["correct"]), float(s["score"])) for s in row["samples"] if s.get("score") is not None]
        if not pairs:
            continue
        ys, ss = zip(*pairs)
        pooled_y += ys
        pooled_s += ss
        if any(ys) and not all(ys):
            per_problem.append(auc(ys, ss))
    if not pooled_s:
        return None
    overall = auc(pooled_y, pooled_s)
    return {
        "solutions": len(pooled_s), "correct_share": sum(pooled_y) / len(pooled_y),
        "auc": None if math.isnan(overall) else overall,
        "within_problem_auc": float(np.mean(per_problem)) if per_problem else None,
        "mixed_problems": len(per_problem),
    }


# ---------------------------------------------------------------------------
# Per-problem choices and paired comparisons
# ---------------------------------------------------------------------------

def choices(problems: Iterable[dict | PreparedProblem], K_values: Sequence[int] = K_VALUES,
            topn_values: Sequence[int] = TOPN_VALUES, cluster_fn: ClusterFn | None = None) -> list[dict[str, Any]]:
    """Per problem: which sample each method chose (its k, None: nothing chosen) and whether that is correct.

    [{"id", "chosen": {method: k | None}, "correct": {method: bool}}, ...] in problem order; greedy
    appears only in "correct" (it is not one of the N samples).
    """
    problems = prepare(problems, cluster_fn)
    methods = _methods_for(problems, K_values, topn_values)
    out = []
    for p in problems:
        sel = _select(p, None, methods, K_values, topn_values)
        correct = {m: bool(s.index is not None and p.correct[s.index]) for m, s in sel.items()}
        if "greedy" in methods:
            correct = {"greedy": bool(p.greedy_correct), **correct}
        out.append({"id": p.id, "chosen": {m: None if s.index is None else p.ks[s.index] for m, s in sel.items()},
                    "correct": correct})
    return out


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test (McNemar's exact test on the discordant pairs): the chance, if both
    methods were equally good, of a split at least this uneven. Ties carry no information. 1.0 with no pairs."""
    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2 ** n)


@dataclass
class PairedStats:
    """`method` against `baseline` on the same problems: per-problem wins / losses / ties, the accuracy
    difference (method - baseline) with a paired bootstrap CI, and the exact sign-test p-value."""

    method: str
    baseline: str
    label: str
    baseline_label: str
    wins: int  # problems the method gets right and the baseline wrong
    losses: int
    ties: int
    n_problems: int
    diff: float
    ci_low: float
    ci_high: float
    p_value: float

    def to_dict(self) -> dict:
        return asdict(self)


def paired(a: Sequence[bool], b: Sequence[bool], counts: np.ndarray, confidence: float = 0.95) -> tuple:
    """(wins, losses, ties, diff, ci_low, ci_high, p) of correctness vectors a vs b over the same
    problems; `counts` are the bootstrap resamples of problems (`_resample_counts`), shared by all pairs."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired: need two equal, non-empty correctness vectors (got {a.size} and {b.size})")
    wins, losses = int((a & ~b).sum()), int((~a & b).sum())
    d = a.astype(float) - b.astype(float)
    alpha = 1 - confidence
    lo, hi = np.quantile(counts @ d / d.size, [alpha / 2, 1 - alpha / 2])
    return wins, losses, a.size - wins - losses, float(d.mean()), float(lo), float(hi), sign_test(wins, losses)


def comparison_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """The comparisons the report makes: every deployable method against Maj1@N; SCR (RR.MajK, K >= 2)
    against RR.All of the same scorer; and the trained evaluator against each other scorer."""
    ms = set(methods)
    deployable = [m for m in methods if not (m.endswith("_oracle") or m in ("pass_n", "maj1"))]
    # RR.Maj1 and W-RR.Maj1 are Maj1@N itself (one cluster: nothing to re-rank)
    pairs = [(m, "maj1") for m in deployable if "maj1" in ms and split_method(m)[0] not in ("rr_maj1", "w_rr_maj1")]
    for m in deployable:
        base, scorer = split_method(m)
        if base.startswith("rr_maj") and base != "rr_maj1":
            ref = "rr_all" if scorer is None else scorer_method("rr_all", scorer)
            if ref in ms:
                pairs.append((m, ref))
    for m in methods:
        base, scorer = split_method(m)
        if scorer is not None and base in ("rr_all", "w_rr") and base in ms:
            pairs.append((base, m))
    return pairs


def paired_comparisons(problems: Iterable[dict | PreparedProblem], K_values: Sequence[int] = K_VALUES,
                       topn_values: Sequence[int] = TOPN_VALUES, n_boot: int = 2000, seed: int = 0,
                       confidence: float = 0.95, cluster_fn: ClusterFn | None = None,
                       chosen: Sequence[dict] | None = None) -> list[PairedStats]:
    """`paired` for every pair of `comparison_pairs`, all on one seeded set of bootstrap resamples.

    `chosen`: `choices(problems)` when already computed (saves a second pass)."""
    problems = prepare(problems, cluster_fn)
    if not problems:
        return []
    chosen = chosen if chosen is not None else choices(problems, K_values, topn_values)
    methods = [m for m in _methods_for(problems, K_values, topn_values)]
    vectors = {m: [c["correct"][m] for c in chosen] for m in methods}
    counts = _resample_counts(len(problems), n_boot, np.random.default_rng(seed))
    out = []
    for m, ref in comparison_pairs(methods):
        w, l, t, d, lo, hi, p = paired(vectors[m], vectors[ref], counts, confidence)
        out.append(PairedStats(m, ref, full_label(m), full_label(ref), w, l, t, len(problems), d, lo, hi, p))
    return out


def scorer_quality(rows: Sequence[dict], scorer: str | None = None) -> dict[str, Any] | None:
    """`evaluator_quality` of another scorer (its scores in each sample's "scores"); None: the primary."""
    if scorer is None:
        return evaluator_quality(rows)
    return evaluator_quality([{"samples": [{"correct": s["correct"], "score": (s.get("scores") or {}).get(scorer)}
                                           for s in r["samples"]]} for r in rows])


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value) across seeds."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return (math.nan, math.nan)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0
