"""Estimators, confidence intervals, the headline table, breakdowns and curves over N."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mathlite.metrics import (
    accuracy_curves,
    bootstrap_ci,
    breakdown,
    default_sizes,
    pass_at_k,
    prepare,
    summarize,
    wilson_ci,
)
from mathlite.select import clusters_from_labels
from mathlite import metrics

HALF = {"1/2", "0.5", "\\frac{1}{2}"}


def exact_clusters(answers):
    labels, ids = [], {}
    for a in answers:
        labels.append(-1 if a is None else ids.setdefault("0.5" if a in HALF else a, len(ids)))
    return clusters_from_labels(labels)


def sample(answer, correct, score, tokens=100):
    return {"answer": answer, "correct": correct, "score": score, "tokens": tokens}


def toy_run():
    """Three problems whose per-method outcomes are easy to work out by hand."""
    return [
        {   # majority right, the evaluator prefers a wrong outlier
            "id": "p1", "level": 1, "subject": "Algebra", "greedy": {"answer": "4", "correct": True},
            "samples": [sample("4", True, 0.2, 10), sample("4", True, 0.3, 20),
                        sample("5", False, 0.9, 30), sample("4", True, 0.1, 40)],
        },
        {   # majority wrong; the evaluator finds the right minority, written two ways
            "id": "p2", "level": 2, "subject": "Algebra", "greedy": {"answer": "3", "correct": False},
            "samples": [sample("3", False, 0.1, 10), sample("1/2", True, 0.8, 10),
                        sample("3", False, 0.2, 10), sample("0.5", True, 0.7, 10)],
        },
        {   # all wrong, one unanswered
            "id": "p3", "level": 2, "subject": "Geometry", "greedy": {"answer": None, "correct": False},
            "samples": [sample("7", False, 0.5, 5), sample(None, False, 0.6, 5),
                        sample("8", False, 0.4, 5), sample("7", False, 0.3, 5)],
        },
    ]


# --------------------------------------------------------------------------- pass@k


def brute_force_pass_at_k(n, c, k):
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(outcomes, k))
    return sum(any(s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration_of_all_subsets():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_edges_and_stability():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 1, 10) == 1.0
    # Binomials like C(10000, 5000) overflow floats; the product form does not.
    assert pass_at_k(10_000, 1, 5_000) == pytest.approx(0.5)
    assert pass_at_k(10_000, 2, 100) == pytest.approx(1 - (9_900 * 9_899) / (10_000 * 9_999))
    for bad in [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


# --------------------------------------------------------------------------- confidence intervals


def test_wilson_ci():
    lo, hi = wilson_ci(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert wilson_ci(0, 10)[0] == 0.0 and wilson_ci(0, 10)[1] > 0  # no zero-width interval at 0%
    assert wilson_ci(10, 10)[1] == 1.0 and wilson_ci(10, 10)[0] < 1
    assert wilson_ci(50, 100, 0.99)[0] < wilson_ci(50, 100, 0.95)[0]  # more confidence, wider
    assert all(math.isnan(x) for x in wilson_ci(0, 0))
    with pytest.raises(ValueError):
        wilson_ci(1, 2, confidence=1.5)


def test_bootstrap_ci():
    assert bootstrap_ci([1.0] * 20) == (1.0, 1.0)
    values = [1] * 30 + [0] * 70
    lo, hi = bootstrap_ci(values, n_boot=2000, seed=1)
    assert lo < 0.3 < hi and lo == pytest.approx(0.21, abs=0.03) and hi == pytest.approx(0.39, abs=0.03)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)  # seeded
    assert all(math.isnan(x) for x in bootstrap_ci([]))


# --------------------------------------------------------------------------- summarize / breakdown


def test_summarize_hand_built():
    stats = summarize(toy_run(), K_values=(1, 2), topn_values=(2,), cluster_fn=exact_clusters)
    # Worked out by hand: p1 | p2 | p3 (p3 is always wrong).
    assert {m: s.n_correct for m, s in stats.items()} == {
        "greedy": 1,       # right | wrong
        "maj1": 1,         # 4 right | 3 and one half tie 2-2, "3" came first: wrong
        "rr_all": 1,       # outlier 5 wrong | 1/2 right
        "rr_maj1": 1,      # = Maj1
        "rr_maj2": 1,      # both clusters kept, same as RR.All
        "w_rr": 1,         # 5 sums 0.9 > 0.6: wrong | one half sums 1.5 > 0.3: right
        "w_rr_maj1": 1,
        "w_rr_maj2": 1,
        "maj1_top2": 2,    # top-2 scores 5 and 4 tie 1-1, 4 came first: right | both halves: right
        "maj2_oracle": 2,
        "pass_n": 2,
    }
    s = stats["rr_maj2"]
    assert s.accuracy == pytest.approx(1 / 3) and s.n_problems == 3 and s.label == "RR.Maj2"
    assert (s.ci_low, s.ci_high) == pytest.approx(wilson_ci(1, 3))
    # Cost: p1 4/4 (2 clusters), p2 4/4, p3 3/4 (the unanswered one is not in a cluster).
    assert s.cost_share == pytest.approx((1 + 1 + 0.75) / 3)
    assert s.tokens_scored == pytest.approx((100 + 40 + 15) / 3)
    assert stats["rr_all"].cost_share == 1.0 and stats["rr_all"].tokens_scored == pytest.approx((100 + 40 + 20) / 3)
    assert stats["maj1"].cost_share == 0 and stats["rr_maj1"].tokens_scored == 0
    assert list(stats)[0] == "greedy" and list(stats)[-1] == "pass_n"


def test_methods_present_depend_on_inputs():
    run = toy_run()
    run[0]["greedy"] = None  # one problem without greedy decode: no greedy row at all
    for p in run:
        for s in p["samples"]:
            s["score"] = None  # no evaluator: no re-ranking rows
    stats = summarize(run, K_values=(2,), cluster_fn=exact_clusters)
    assert list(stats) == ["maj1", "maj2_oracle", "pass_n"]


def test_prepare_is_done_once_and_reused():
    calls = []

    def counting(answers):
        calls.append(answers)
        return exact_clusters(answers)

    problems = prepare(toy_run(), counting)
    assert len(calls) == 3 and problems[1].labels.tolist() == [0, 1, 0, 1]
    summarize(problems)  # no cluster_fn needed: the problems are prepared
    breakdown(problems, "subject")
    assert len(calls) == 3


def test_breakdown_by_level_and_subject():
    by_level = breakdown(toy_run(), "level", K_values=(2,), cluster_fn=exact_clusters)
    assert list(by_level) == [1, 2]
    assert by_level[1]["maj1"].n_problems == 1 and by_level[2]["maj1"].n_problems == 2
    assert by_level[1]["maj1"].accuracy == 1.0 and by_level[2]["maj1"].accuracy == 0.0
    by_subject = breakdown(toy_run(), "subject", cluster_fn=exact_clusters)
    assert list(by_subject) == ["Algebra", "Geometry"]
    with pytest.raises(ValueError):
        breakdown(toy_run(), "family", cluster_fn=exact_clusters)


def test_summarize_through_cluster_answers():
    stats = summarize(toy_run(), K_values=(2,))  # default cluster_fn: mathlite.clusters
    assert stats["rr_maj2"].n_correct == 1 and stats["maj2_oracle"].n_correct == 2


# --------------------------------------------------------------------------- curves


def test_default_sizes():
    assert default_sizes(1) == [1]
    assert default_sizes(8) == [1, 2, 4, 8]
    assert default_sizes(12) == [1, 2, 4, 8, 12]


def test_curves_exact_points():
    run = toy_run()
    curves = accuracy_curves(run, n_draws=10, n_boot=200, K_values=(1, 2), cluster_fn=exact_clusters)
    stats = summarize(run, K_values=(1, 2), cluster_fn=exact_clusters)
    assert curves.sizes == [1, 2, 4] and curves.n_problems == 3
    # n=1: every method returns the one sample (when it has an answer), so accuracy = mean share correct.
    share = np.mean([np.mean([s["correct"] for s in p["samples"]]) for p in run])
    for m in ("maj1", "rr_all", "rr_maj2", "w_rr", "maj1_top4", "pass_n"):
        assert curves.accuracy[m][0] == pytest.approx(share), m
    # n=N: the single subset is the full set, so the curve ends at the headline number.
    for m in curves.methods:
        assert curves.accuracy[m][-1] == pytest.approx(stats[m].accuracy), m
        assert curves.cost_share[m][-1] == pytest.approx(stats[m].cost_share), m
    # Pass@n is the unbiased estimator, and greedy does not depend on n.
    for j, n in enumerate(curves.sizes):
        expected = np.mean([pass_at_k(4, sum(s["correct"] for s in p["samples"]), n) for p in run])
        assert curves.accuracy["pass_n"][j] == pytest.approx(expected)
    assert curves.accuracy["greedy"] == [pytest.approx(1 / 3)] * 3
    for m in curves.methods:
        for lo, a, hi in zip(curves.ci_low[m], curves.accuracy[m], curves.ci_high[m]):
            assert lo - 1e-12 <= a <= hi + 1e-12


def test_curves_random_subsets_are_seeded_and_close_to_exact():
    rng = np.random.default_rng(0)
    run = []
    for j in range(6):
        answers = [str(a) for a in rng.integers(0, 3, size=12)]
        run.append({"id": f"q{j}", "level": 1, "subject": "A", "greedy": None,
                    "samples": [sample(a, a == "0", float(rng.random())) for a in answers]})
    kwargs = dict(sizes=[3], n_boot=100, K_values=(2,), topn_values=(2,), cluster_fn=exact_clusters)
    a = accuracy_curves(run, n_draws=40, seed=1, **kwargs)  # C(12,3)=220 > 40: random subsets
    b = accuracy_curves(run, n_draws=40, seed=1, **kwargs)
    exact = accuracy_curves(run, n_draws=220, seed=1, **kwargs)  # all 220 subsets
    assert a.accuracy == b.accuracy and a.ci_low == b.ci_low
    for m in a.methods:
        assert a.accuracy[m][0] == pytest.approx(exact.accuracy[m][0], abs=0.12), m


def test_curves_reject_bad_sizes():
    with pytest.raises(ValueError):
        accuracy_curves(toy_run(), sizes=[8], cluster_fn=exact_clusters)
    with pytest.raises(ValueError):
        accuracy_curves([{"id": "x", "samples": []}], cluster_fn=exact_clusters)


# --------------------------------------------------------------------------- random runs


answer_st = st.sampled_from(["1/2", "0.5", "2", "3", None])


@st.composite
def runs(draw):
    run = []
    for j in range(draw(st.integers(1, 4))):
        answers = draw(st.lists(answer_st, min_size=4, max_size=6))
        scores = draw(st.lists(st.floats(0, 1), min_size=len(answers), max_size=len(answers)))
        run.append({"id": str(j), "level": 1, "subject": "A", "greedy": {"answer": "2", "correct": False},
                    "samples": [sample(a, a in HALF, s) for a, s in zip(answers, scores)]})
    return run


@settings(max_examples=25, deadline=None)
@given(runs())
def test_pass_n_bounds_everything_and_scr_is_cheaper(run):
    stats = summarize(run, K_values=(1, 2, 3), topn_values=(2,), cluster_fn=exact_clusters)
    for m, s in stats.items():
        if m != "greedy":
            assert s.n_correct <= stats["pass_n"].n_correct, m
        assert 0 <= s.ci_low <= s.accuracy <= s.ci_high <= 1
    for k in (1, 2, 3):
        assert stats[f"rr_maj{k}"].cost_share <= stats["rr_all"].cost_share
        assert stats[f"rr_maj{k}"].tokens_scored <= stats["rr_all"].tokens_scored
    assert stats["rr_maj1"].n_correct == stats["maj1"].n_correct


def test_evaluator_quality_pooled_and_within_problem():
    """A scorer that ranks the easy problem's samples above the hard one's beats chance pooled but has
    no within-problem skill; what re-ranking needs is the within-problem number."""
    c = lambda score: {"correct": True, "score": score}  # noqa: E731
    w = lambda score: {"correct": False, "score": score}  # noqa: E731
    rows = [
        {"id": "easy", "samples": [c(0.8), c(0.82), c(0.84), w(0.9)]},
        {"id": "hard", "samples": [c(0.1), w(0.2), w(0.15), w(0.12)]},
        {"id": "unscored", "samples": [{"correct": True, "score": None}]},
    ]
    q = metrics.evaluator_quality(rows)
    assert q["solutions"] == 8 and q["mixed_problems"] == 2 and q["correct_share"] == 0.5
    assert q["auc"] == pytest.approx(9 / 16)  # the easy problem's 3 right answers beat the hard one's 3 wrong
    assert q["within_problem_auc"] == 0.0  # inside each problem every wrong answer scores highest
    assert metrics.evaluator_quality([{"id": "x", "samples": [{"correct": True}]}]) is None
    one_class = metrics.evaluator_quality([{"id": "x", "samples": [{"correct": True, "score": 0.3}]}])
    assert one_class["auc"] is None and one_class["within_problem_auc"] is None


# ---------------------------------------------------------------------------
# Other scorers (the generator's confidence), per-problem choices, paired tests
# ---------------------------------------------------------------------------

def scored_run():
    """Three problems with an evaluator score and a confidence score per sample (k = 10, 11, 12)."""
    spec = [  # answers, correct, evaluator, confidence
        (["1", "2", "2"], [True, False, False], [0.1, 0.9, 0.2], [0.9, 0.6, 0.5]),
        (["3", "3", None], [True, True, False], [0.2, 0.1, 0.8], [0.7, 0.8, 0.1]),
        (["5", "6", "7"], [False, False, True], [0.3, 0.2, 0.9], [0.8, 0.3, 0.4]),
    ]
    return [{"id": f"p{j}", "level": 1, "subject": "s", "greedy": None,
             "samples": [{"k": 10 + i, "answer": a, "correct": c, "score": e, "scores": {"confidence": f}, "tokens": 10}
                         for i, (a, c, e, f) in enumerate(zip(*row))]}
            for j, row in enumerate(spec)]


def test_confidence_scorer_columns():
    stats = summarize(prepare(scored_run(), exact_clusters), K_values=(1, 2), topn_values=())
    acc = {m: s.n_correct for m, s in stats.items()}
    assert acc["maj1"] == 1 and acc["rr_all"] == 1
    assert acc["rr_all:confidence"] == 2 and acc["rr_maj2:confidence"] == 2 and acc["w_rr:confidence"] == 1
    assert stats["rr_all:confidence"].label == "RR.All (confidence)"
    # SCR by confidence: all 3 scored on p0, none on p1 (one cluster), the top-2 clusters' 2 on p2
    assert stats["rr_maj2:confidence"].cost_share == pytest.approx((1 + 0 + 2 / 3) / 3)
    # the scorer's methods sit before the oracles
    names = list(stats)
    assert names.index("w_rr:confidence") < names.index("maj2_oracle")


def test_choices_name_the_chosen_sample_k():
    ch = metrics.choices(prepare(scored_run(), exact_clusters), K_values=(1, 2), topn_values=())
    assert ch[0]["chosen"]["maj1"] == 11 and ch[0]["chosen"]["rr_all"] == 11 and ch[0]["chosen"]["rr_all:confidence"] == 10
    assert ch[1]["chosen"]["rr_all"] == 12 and ch[1]["correct"]["rr_all"] is False  # the no-answer sample
    assert ch[2]["chosen"]["maj1"] == 10  # 1-1-1 tie: the earliest sample
    assert [c["correct"]["rr_all:confidence"] for c in ch] == [True, True, False]


def test_scorer_quality_per_scorer():
    q = metrics.scorer_quality(scored_run(), "confidence")
    assert q["auc"] == pytest.approx(15.5 / 20) and q["within_problem_auc"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert q["mixed_problems"] == 3 and q["solutions"] == 9
    assert metrics.scorer_quality(scored_run())["auc"] == metrics.evaluator_quality(scored_run())["auc"]


@pytest.mark.parametrize("wins, losses, p", [
    (0, 0, 1.0), (5, 5, 1.0), (3, 0, 0.25), (0, 6, 0.03125), (1, 15, 34 / 65536), (2, 10, 158 / 4096), (7, 2, 0.1796875),
])
def test_sign_test_exact(wins, losses, p):
    assert metrics.sign_test(wins, losses) == pytest.approx(p, rel=1e-12)
    assert metrics.sign_test(losses, wins) == metrics.sign_test(wins, losses)
    scipy_stats = pytest.importorskip("scipy.stats")
    if wins + losses:
        assert metrics.sign_test(wins, losses) == pytest.approx(scipy_stats.binomtest(wins, wins + losses).pvalue)


def test_paired_wins_losses_ties_and_bootstrap():
    a = [True, True, False, False, True, True, True, False]
    b = [False, True, True, False, False, False, True, False]
    counts = metrics._resample_counts(len(a), 1000, np.random.default_rng(3))
    w, l, t, d, lo, hi, p = metrics.paired(a, b, counts)
    assert (w, l, t) == (3, 1, 4) and d == pytest.approx(2 / 8) and p == pytest.approx(0.625)
    # the same seed gives the same interval; the interval is one of the resampled means (k / 8)
    again = metrics.paired(a, b, metrics._resample_counts(len(a), 1000, np.random.default_rng(3)))
    assert again == (w, l, t, d, lo, hi, p)
    assert (8 * lo) == pytest.approx(round(8 * lo)) and lo <= d <= hi
    # no discordant pair: zero-width interval at 0; all wins: at 1
    assert metrics.paired([True, False], [True, False], counts[:, :2] * 0 + 1)[3:6] == (0.0, 0.0, 0.0)
    assert metrics.paired([True] * 3, [False] * 3, metrics._resample_counts(3, 50, np.random.default_rng(0)))[3:6] == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        metrics.paired([True], [True, False], counts)


def test_paired_comparisons_pairs_and_values():
    pc = metrics.paired_comparisons(scored_run(), K_values=(1, 2), topn_values=(), n_boot=500, seed=0)
    pairs = [(c.method, c.baseline) for c in pc]
    assert ("rr_all", "maj1") in pairs and ("rr_maj2", "rr_all") in pairs and ("rr_all", "rr_all:confidence") in pairs
    assert ("rr_maj2:confidence", "rr_all:confidence") in pairs and ("w_rr", "w_rr:confidence") in pairs
    assert ("rr_maj1", "maj1") not in pairs and ("w_rr_maj1", "maj1") not in pairs  # identical to Maj1 by construction
    by = {(c.method, c.baseline): c for c in pc}
    c = by[("rr_all:confidence", "maj1")]
    assert (c.wins, c.losses, c.ties, c.p_value) == (1, 0, 2, 1.0) and c.diff == pytest.approx(1 / 3)
    c = by[("rr_all", "rr_all:confidence")]
    assert (c.wins, c.losses, c.ties) == (1, 2, 0) and c.diff == pytest.approx(-1 / 3)
    assert pc == metrics.paired_comparisons(scored_run(), K_values=(1, 2), topn_values=(), n_boot=500, seed=0)


def test_mean_sd():
    assert metrics.mean_sd([30.0, 35.0, 40.0]) == (35.0, 5.0)
    assert metrics.mean_sd([2.0]) == (2.0, 0.0)
