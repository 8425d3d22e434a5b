"""Choosing one answer out of N sampled solutions: voting, re-ranking and SCR.

After Liu et al. 2023, "Improving Large Language Model Fine-tuning for Solving
Math Problems" (arXiv 2310.10047), Tables 3/7 and Fig. 1. For one problem we
have N sampled solutions; each has a final answer (or None when none could be
extracted) and, optionally, an evaluator score (higher = more likely correct).
Solutions whose answers are mathematically equivalent form a *cluster*
(`mathlite.clusters.cluster_answers`).

Every method here is a pure function of (answers, clusters, scores[, params])
and returns a `Selection`: the chosen answer, the index of the chosen sample,
and the evaluator *cost* (how many solutions the evaluator had to score; 0 for
plain voting). Clusters are passed in precomputed, so tests can build them by
hand and the metrics layer can cluster each problem once and reuse the result
for many random subsets.

Methods (paper names in brackets):

    greedy        [Pass@1]      the greedy decode's answer, given separately
    maj1          [Maj1@N]      majority vote: an answer of the largest cluster
    majk_oracle   [MajK@N]      oracle: right if the right answer is in the K largest clusters
    pass_n        [Pass@N]      oracle: right if any of the N samples is right
    rr_all        [RR.All]      the evaluator's highest-scored solution among all N
    rr_majk       [RR.MajK]     Solution-Cluster Re-ranking (SCR): score only the
                                solutions of the K largest clusters, pick the best one
    w_rr          [W-RR]        weighted voting: the cluster with the largest sum of scores
    w_rr_majk     [W-RR.MajK]   weighted voting restricted to the K largest clusters
    maj1_topn     [Maj1.TopN']  majority vote among the N' best-scored solutions

Design decisions (each one is tested in tests/test_select.py):

* Cluster order. Clusters are ranked by size, largest first; ties go to the
  cluster whose first member was sampled earliest (lowest sample index). So
  Maj1 with a 2-2 tie picks the answer that appeared first. This is the same
  order `cluster_answers` returns; we re-rank anyway so hand-built clusters
  in any order give the same result. The same rule decides which clusters make
  the top-K cut when sizes tie at the boundary.
* Representative. A voting method returns the cluster's earliest member; a
  re-ranking method returns the highest-scored member. Score ties go to the
  lowest sample index.
* None answers. A solution without a final answer belongs to no cluster, so
  voting (and SCR, which starts from the clusters) never selects it. RR.All
  scores every solution and may pick one: it then counts as wrong, which is
  exactly what the paper's RR.All would suffer too. If no solution has an
  answer, voting returns `Selection(None, None, 0)`.
* Missing scores. A score of None (or NaN) ranks below every real score when
  picking a maximum, and adds nothing to a weighted vote's sum. Weighted voting
  assumes probability-like scores (>= 0), as the paper's evaluator produces.
* Cost when the top-K clusters reduce to one cluster (K=1, or the samples agree
  on a single answer): there is only one candidate answer, so the evaluator
  cannot change the outcome and SCR does not call it: cost 0, and the answer is
  the majority answer. This is where SCR saves compute; RR.All, W-RR and
  Maj1.TopN' always score all N solutions (cost N).
* Oracles (MajK@N, Pass@N) return a correct selection when one exists, else
  `Selection(None, None, 0)`. A cluster counts as correct if its earliest
  member is graded correct (all members are equivalent answers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

# Default sweeps. K=1 makes RR.Maj1 = Maj1 (the left end of the paper's Fig. 1).
K_VALUES = (1, 2, 3, 4, 5)
TOPN_VALUES = (4, 8)

Answers = Sequence["str | None"]
Clusters = Sequence[Sequence[int]]
Scores = Sequence["float | None"]


@dataclass(frozen=True)
class Selection:
    """One method's choice for one problem.

    answer: the chosen final answer (None: nothing chosen, counts as wrong).
    index:  which sample it came from (None for greedy or when nothing is chosen).
    cost:   how many solutions the evaluator scored to make this choice.
    scored: the indices of those solutions (len == cost), so callers can also
            count the tokens the evaluator had to read.
    """

    answer: str | None
    index: int | None
    cost: int
    scored: tuple[int, ...] = ()


NOTHING = Selection(None, None, 0)


# ---------------------------------------------------------------------------
# Small helpers shared by the methods
# ---------------------------------------------------------------------------

def _rank_key(score) -> float:
    """Score used to pick a maximum: a missing score loses against any real one."""
    if score is None or score != score:  # None or NaN
        return -math.inf
    return float(score)


def _vote_weight(score) -> float:
    """Score used in a weighted vote: a missing score adds nothing."""
    if score is None or score != score:
        return 0.0
    return float(score)


def _best(indices: Sequence[int], scores: Scores) -> int:
    """The highest-scored index; ties go to the lowest index."""
    return min(indices, key=lambda i: (-_rank_key(scores[i]), i))


def _check_positive(name: str, value: int) -> None:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class _Ranked(list):
    """Clusters already in rank order, so callers rank once, not once per method (treat as read-only)."""


def rank_clusters(clusters: Clusters) -> list[list[int]]:
    """Clusters largest first, ties by earliest first member; members sorted, empties dropped."""
    if isinstance(clusters, _Ranked):
        return clusters
    ranked = _Ranked(sorted(c) for c in clusters if len(c))
    ranked.sort(key=lambda c: (-len(c), c[0]))
    return ranked


def clusters_from_labels(labels: Sequence[int]) -> list[list[int]]:
    """Group sample positions by cluster label (-1 or None = no answer), ranked.

    This is what makes subsampling cheap: cluster all N answers once, give each
    sample its cluster's label, and a subset's clusters are just its labels
    grouped again (no re-parsing of answers).
    """
    groups: dict[int, list[int]] = {}
    for pos, label in enumerate(labels):
        if label is not None and label >= 0:
            groups.setdefault(int(label), []).append(pos)
    return rank_clusters(groups.values())


def labels_from_clusters(clusters: Clusters, n: int) -> list[int]:
    """Inverse of `clusters_from_labels`: label per sample, -1 for samples in no cluster."""
    labels = [-1] * n
    for label, cluster in enumerate(clusters):
        for i in cluster:
            if labels[i] != -1:
                raise ValueError(f"sample {i} is in more than one cluster")
            labels[i] = label
    return labels


def clusters_for(answers: Answers) -> list[list[int]]:
    """Cluster answers by mathematical equivalence (thin layer over mathlite.clusters)."""
    # Imported here so the selection methods work (and are testable) on their own.
    from mathlite.clusters import cluster_answers

    return cluster_answers(list(answers))


# ---------------------------------------------------------------------------
# Voting and oracles (no evaluator: cost 0)
# ---------------------------------------------------------------------------

def greedy(answer: str | None) -> Selection:
    """Pass@1: the greedy decode's answer, sampled separately from the N solutions."""
    return Selection(answer, None, 0)


def maj1(answers: Answers, clusters: Clusters) -> Selection:
    """Maj1@N: the earliest member of the largest cluster (ties: earliest cluster)."""
    ranked = rank_clusters(clusters)
    if not ranked:
        return NOTHING
    i = ranked[0][0]
    return Selection(answers[i], i, 0)


def majk_oracle(answers: Answers, clusters: Clusters, correct: Sequence[bool], k: int) -> Selection:
    """MajK@N: a correct answer if one of the K largest clusters is correct (oracle)."""
    _check_positive("k", k)
    for cluster in rank_clusters(clusters)[:k]:
        i = cluster[0]
        if correct[i]:
            return Selection(answers[i], i, 0)
    return NOTHING


def pass_n(answers: Answers, correct: Sequence[bool]) -> Selection:
    """Pass@N: the first correct sample if there is one (oracle upper bound)."""
    for i, ok in enumerate(correct):
        if ok:
            return Selection(answers[i], i, 0)
    return NOTHING


# ---------------------------------------------------------------------------
# Re-ranking with the evaluator
# ---------------------------------------------------------------------------

def rr_all(answers: Answers, scores: Scores) -> Selection:
    """RR.All: the highest-scored of all N solutions (may be one without an answer)."""
    n = len(answers)
    if n == 0:
        return NOTHING
    i = _best(range(n), scores)
    return Selection(answers[i], i, n, tuple(range(n)))


def rr_majk(answers: Answers, clusters: Clusters, scores: Scores, k: int) -> Selection:
    """RR.MajK (SCR): re-rank only the solutions of the K largest clusters.

    With one cluster left there is nothing to re-rank: no evaluator call, cost 0.
    """
    _check_positive("k", k)
    top = rank_clusters(clusters)[:k]
    if not top:
        return NOTHING
    if len(top) == 1:
        i = top[0][0]
        return Selection(answers[i], i, 0)
    candidates = sorted(i for cluster in top for i in cluster)
    i = _best(candidates, scores)
    return Selection(answers[i], i, len(candidates), tuple(candidates))


def _weighted_vote(ranked: list[list[int]], scores: Scores) -> int:
    # max() keeps the first of equal sums, i.e. the larger / earlier cluster.
    winner = max(ranked, key=lambda c: sum(_vote_weight(scores[i]) for i in c))
    return _best(winner, scores)


def w_rr(answers: Answers, clusters: Clusters, scores: Scores) -> Selection:
    """W-RR: the cluster with the largest sum of scores; its best-scored member. Cost N."""
    n = len(answers)
    ranked = rank_clusters(clusters)
    everything = tuple(range(n))
    if not ranked:
        return Selection(None, None, n, everything)
    i = _weighted_vote(ranked, scores)
    return Selection(answers[i], i, n, everything)


def w_rr_majk(answers: Answers, clusters: Clusters, scores: Scores, k: int) -> Selection:
    """W-RR.MajK: weighted vote among the K largest clusters (cost 0 if only one)."""
    _check_positive("k", k)
    top = rank_clusters(clusters)[:k]
    if not top:
        return NOTHING
    if len(top) == 1:
        i = top[0][0]
        return Selection(answers[i], i, 0)
    candidates = tuple(sorted(i for cluster in top for i in cluster))
    i = _weighted_vote(top, scores)
    return Selection(answers[i], i, len(candidates), candidates)


def maj1_topn(answers: Answers, clusters: Clusters, scores: Scores, n_top: int) -> Selection:
    """Maj1.TopN': majority vote among the N' best-scored solutions. Cost N.

    Same tie rules as Maj1, so with N' >= N it is exactly Maj1 (but pays for scoring).
    """
    _check_positive("n_top", n_top)
    n = len(answers)
    best_first = sorted(range(n), key=lambda i: (-_rank_key(scores[i]), i))
    keep = set(best_first[:n_top])
    chosen = maj1(answers, [[i for i in c if i in keep] for c in clusters])
    return Selection(chosen.answer, chosen.index, n, tuple(range(n)))


# ---------------------------------------------------------------------------
# All methods at once, and per-problem evaluation
# ---------------------------------------------------------------------------

def _sweep(values: Sequence[int], name: str) -> list[int]:
    for v in values:
        _check_positive(name, v)
    return sorted(set(int(v) for v in values))


def method_names(K_values: Sequence[int] = K_VALUES, topn_values: Sequence[int] = TOPN_VALUES,
                 *, greedy: bool = True, scores: bool = True, oracles: bool = True) -> list[str]:
    """Method keys in report order: baselines, evaluator methods, then oracle upper bounds.

    MajK@N with K=1 is Maj1@N itself, so the oracle sweep skips K=1.
    """
    ks, tops = _sweep(K_values, "K"), _sweep(topn_values, "N'")
    names = (["greedy"] if greedy else []) + ["maj1"]
    if scores:
        names += ["rr_all"] + [f"rr_maj{k}" for k in ks]
        names += ["w_rr"] + [f"w_rr_maj{k}" for k in ks]
        names += [f"maj1_top{t}" for t in tops]
    if oracles:
        names += [f"maj{k}_oracle" for k in ks if k > 1] + ["pass_n"]
    return names


def method_label(name: str) -> str:
    """The paper's name for a method key ("rr_maj5" -> "RR.Maj5")."""
    fixed = {"greedy": "Pass@1 (greedy)", "maj1": "Maj1@N", "pass_n": "Pass@N (oracle)",
             "rr_all": "RR.All", "w_rr": "W-RR"}
    if name in fixed:
        return fixed[name]
    for prefix, template in (("w_rr_maj", "W-RR.Maj{}"), ("rr_maj", "RR.Maj{}"), ("maj1_top", "Maj1.Top{}")):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return template.format(name[len(prefix):])
    if name.startswith("maj") and name.endswith("_oracle"):
        return f"Maj{name[3:-len('_oracle')]}@N (oracle)"
    return name


def run_methods(answers: Answers, clusters: Clusters, scores: Scores | None = None,
                correct: Sequence[bool] | None = None, K_values: Sequence[int] = K_VALUES,
                topn_values: Sequence[int] = TOPN_VALUES) -> dict[str, Selection]:
    """Every sample-based method on one problem, keyed as in `method_names` (no greedy).

    Evaluator methods need `scores`, oracles need `correct`; each group is left
    out when its input is None.
    """
    ranked = rank_clusters(clusters)  # rank once; the methods see it is ranked and reuse it
    out: dict[str, Selection] = {}
    for name in method_names(K_values, topn_values, greedy=False,
                             scores=scores is not None, oracles=correct is not None):
        if name == "maj1":
            out[name] = maj1(answers, ranked)
        elif name == "rr_all":
            out[name] = rr_all(answers, scores)
        elif name == "w_rr":
            out[name] = w_rr(answers, ranked, scores)
        elif name == "pass_n":
            out[name] = pass_n(answers, correct)
        elif name.startswith("w_rr_maj"):
            out[name] = w_rr_majk(answers, ranked, scores, int(name[len("w_rr_maj"):]))
        elif name.startswith("rr_maj"):
            out[name] = rr_majk(answers, ranked, scores, int(name[len("rr_maj"):]))
        elif name.startswith("maj1_top"):
            out[name] = maj1_topn(answers, ranked, scores, int(name[len("maj1_top"):]))
        elif name.endswith("_oracle"):
            out[name] = majk_oracle(answers, ranked, correct, int(name[3:-len("_oracle")]))
        else:  # pragma: no cover - method_names and this dispatch must agree
            raise AssertionError(name)
    return out


def evaluate_problem(answers: Answers, correct: Sequence[bool], scores: Scores | None,
                     greedy_correct: bool | None, clusters: Clusters | None = None,
                     K_values: Sequence[int] = K_VALUES, topn_values: Sequence[int] = TOPN_VALUES,
                     cluster_fn: Callable[[list], list[list[int]]] | None = None,
                     ) -> dict[str, tuple[bool, int]]:
    """(correct, evaluator cost) per method for one problem.

    `correct[i]` is the sampler's grade of sample i; a method is right when the
    sample it chose is graded right. `greedy_correct=None` means no greedy
    decode (no "greedy" key); `scores=None` leaves out the evaluator methods.
    Clusters are computed with `cluster_fn` (default: mathlite.clusters) when
    not given.
    """
    if len(correct) != len(answers) or (scores is not None and len(scores) != len(answers)):
        raise ValueError("answers, correct and scores must have one entry per sample")
    if clusters is None:
        clusters = (cluster_fn or clusters_for)(list(answers))
    result: dict[str, tuple[bool, int]] = {}
    if greedy_correct is not None:
        result["greedy"] = (bool(greedy_correct), 0)
    for name, sel in run_methods(answers, clusters, scores, correct, K_values, topn_values).items():
        result[name] = (sel.index is not None and bool(correct[sel.index]), sel.cost)
    return result
