"""Selection methods on hand-built problems, plus invariants checked over random problems."""


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mathlite.select import (
    NOTHING,
    Selection,
    clusters_from_labels,
    evaluate_problem,
    greedy,
    labels_from_clusters,
    maj1,
    maj1_topn,
    majk_oracle,
    method_label,
    method_names,
    pass_n,
    rank_clusters,
    rr_all,
    rr_majk,
    run_methods,
    w_rr,
    w_rr_majk,
)

# A tiny stand-in for answer equivalence: these strings all mean one half.
HALF = {"1/2", "0.5", "\\frac{1}{2}", "\\dfrac12"}


def canon(answer):
    return "0.5" if answer in HALF else answer


def exact_clusters(answers):
    """Cluster by canonical string, in cluster_answers' order (size, then first occurrence)."""
    labels, ids = [], {}
    for a in answers:
        labels.append(-1 if a is None else ids.setdefault(canon(a), len(ids)))
    return clusters_from_labels(labels)


def cluster_of(clusters, index):
    return next((i for i, c in enumerate(clusters) if index in c), None)


# --------------------------------------------------------------------------- clusters


def test_rank_clusters_orders_by_size_then_first_occurrence():
    assert rank_clusters([[5], [3, 1], [], [0, 4], [2]]) == [[0, 4], [1, 3], [2], [5]]


def test_labels_roundtrip():
    clusters = [[0, 3], [1], [4]]
    labels = labels_from_clusters(clusters, 6)
    assert labels == [0, 1, -1, 0, 2, -1]
    assert clusters_from_labels(labels) == clusters
    with pytest.raises(ValueError):
        labels_from_clusters([[0], [0]], 1)


# --------------------------------------------------------------------------- voting and oracles


def test_greedy_is_given_separately():
    assert greedy("7") == Selection("7", None, 0)


def test_maj1_picks_largest_cluster_earliest_member():
    answers = ["3", "1/2", "0.5", "3", "\\frac{1}{2}"]
    clusters = exact_clusters(answers)  # {1/2, 0.5, \frac12} beats {3, 3}
    assert maj1(answers, clusters) == Selection("1/2", 1, 0)


def test_maj1_tie_goes_to_earliest_first_occurrence():
    answers = ["4", "7", "7", "4"]
    assert maj1(answers, exact_clusters(answers)).answer == "4"
    # Hand-built clusters in any order give the same answer: the function ranks them itself.
    assert maj1(answers, [[1, 2], [0, 3]]).index == 0


def test_maj1_never_selects_none_answers():
    answers = [None, None, None, "2"]
    assert maj1(answers, exact_clusters(answers)) == Selection("2", 3, 0)
    assert maj1([None, None], exact_clusters([None, None])) == NOTHING
    assert maj1([], []) == NOTHING


def test_majk_oracle():
    answers = ["5", "5", "5", "6", "6", "7"]
    clusters = exact_clusters(answers)
    correct = [a == "6" for a in answers]
    assert majk_oracle(answers, clusters, correct, 1) == NOTHING
    assert majk_oracle(answers, clusters, correct, 2) == Selection("6", 3, 0)
    assert majk_oracle(answers, clusters, correct, 99).index == 3  # K > number of clusters
    assert majk_oracle(answers, clusters, [False] * 6, 99) == NOTHING


def test_pass_n():
    assert pass_n(["1", "2", "3"], [False, False, True]) == Selection("3", 2, 0)
    assert pass_n(["1", "2"], [False, False]) == NOTHING


# --------------------------------------------------------------------------- re-ranking


def test_rr_all_highest_score_lowest_index_on_ties():
    answers = ["1", "2", "3", "4"]
    sel = rr_all(answers, [0.2, 0.9, 0.9, 0.1])
    assert sel == Selection("2", 1, 4, (0, 1, 2, 3))


def test_rr_all_may_pick_a_solution_without_answer():
    # Documented choice: RR.All scores everything, so an unanswered solution can win (and is wrong).
    sel = rr_all(["1", None], [0.1, 0.8])
    assert sel.index == 1 and sel.answer is None and sel.cost == 2


def test_missing_scores_lose():
    assert rr_all(["1", "2", "3"], [None, float("nan"), -5.0]).index == 2
    assert rr_all(["1", "2"], [None, None]).index == 0  # nothing scored: lowest index


def test_rr_majk_scores_only_top_k_clusters():
    answers = ["5", "5", "5", "6", "6", "7"]
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.99]  # the outlier "7" has the best score
    clusters = exact_clusters(answers)
    sel = rr_majk(answers, clusters, scores, 2)
    assert sel == Selection("6", 4, 5, (0, 1, 2, 3, 4))  # "7" is never scored
    assert rr_majk(answers, clusters, scores, 3).index == 5  # K = #clusters: like RR.All
    assert rr_majk(answers, clusters, scores, 10) == rr_all(answers, scores)  # K > #clusters


def test_rr_majk_costs_nothing_when_one_cluster_is_left():
    answers = ["5", "5", "6"]
    scores = [0.1, 0.2, 0.9]
    clusters = exact_clusters(answers)
    assert rr_majk(answers, clusters, scores, 1) == Selection("5", 0, 0)  # K=1 is Maj1
    unanimous = ["1/2", "0.5", None]
    sel = rr_majk(unanimous, exact_clusters(unanimous), [0.1, 0.2, 0.9], 3)
    assert sel == Selection("1/2", 0, 0)  # one cluster among the top 3: no evaluator call
    assert rr_majk([None, None], [], [0.5, 0.5], 2) == NOTHING


def test_rr_majk_skips_unanswered_solutions_even_if_best_scored():
    answers = ["1", None, "2"]
    sel = rr_majk(answers, exact_clusters(answers), [0.1, 0.99, 0.5], 5)
    assert sel.index == 2 and sel.cost == 2


def test_rr_majk_tie_at_the_k_boundary_keeps_earlier_cluster():
    answers = ["a", "b", "c", "b", "c", "a"]  # three clusters of two; "a" and "b" appear first
    sel = rr_majk(answers, exact_clusters(answers), [0, 0, 1.0, 0, 0, 0.5], 2)
    assert sel.answer == "a" and sel.cost == 4  # "c" is cut despite its top score


def test_w_rr_sum_of_scores_beats_size():
    answers = ["5", "5", "5", "6", "6"]
    scores = [0.1, 0.1, 0.1, 0.4, 0.3]
    sel = w_rr(answers, exact_clusters(answers), scores)
    assert sel == Selection("6", 3, 5, (0, 1, 2, 3, 4))  # 0.7 > 0.3; best member of the winner


def test_w_rr_tie_goes_to_larger_then_earlier_cluster_and_none_scores_add_nothing():
    answers = ["5", "6", "6", None]
    assert w_rr(answers, exact_clusters(answers), [0.5, 0.25, 0.25, 0.9]).answer == "6"
    assert w_rr(["5", "6"], [[0], [1]], [0.5, 0.5]).answer == "5"
    assert w_rr(["5", "6", "6"], [[0], [1, 2]], [0.5, None, 0.4]).answer == "5"
    assert w_rr([None], [], [1.0]) == Selection(None, None, 1, (0,))


def test_w_rr_majk():
    answers = ["5", "5", "5", "6", "6", "7"]
    scores = [0.1, 0.1, 0.1, 0.2, 0.2, 0.9]
    clusters = exact_clusters(answers)
    assert w_rr_majk(answers, clusters, scores, 2) == Selection("6", 3, 5, (0, 1, 2, 3, 4))
    assert w_rr_majk(answers, clusters, scores, 3).answer == "7"
    assert w_rr_majk(answers, clusters, scores, 1) == Selection("5", 0, 0)


def test_maj1_topn():
    answers = ["5", "5", "5", "6", "6"]
    scores = [0.1, 0.2, 0.3, 0.8, 0.9]
    clusters = exact_clusters(answers)
    assert maj1_topn(answers, clusters, scores, 2) == Selection("6", 3, 5, (0, 1, 2, 3, 4))
    assert maj1_topn(answers, clusters, scores, 3).answer == "6"  # 2 of the top 3 say "6"
    assert maj1_topn(answers, clusters, scores, 5).answer == maj1(answers, clusters).answer
    assert maj1_topn(["1", None], [[0]], [0.1, 0.9], 1) == Selection(None, None, 2, (0, 1))


@pytest.mark.parametrize("fn", [lambda k: rr_majk(["1"], [[0]], [1.0], k),
                                lambda k: w_rr_majk(["1"], [[0]], [1.0], k),
                                lambda k: majk_oracle(["1"], [[0]], [True], k),
                                lambda k: maj1_topn(["1"], [[0]], [1.0], k)])
def test_k_must_be_positive(fn):
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError):
            fn(bad)


# --------------------------------------------------------------------------- all methods / evaluate_problem


def test_method_names_and_labels():
    names = method_names((1, 3), (4,))
    assert names == ["greedy", "maj1", "rr_all", "rr_maj1", "rr_maj3", "w_rr", "w_rr_maj1", "w_rr_maj3",
                     "maj1_top4", "maj3_oracle", "pass_n"]
    assert method_names((1, 3), (4,), greedy=False, scores=False) == ["maj1", "maj3_oracle", "pass_n"]
    labels = [method_label(n) for n in names]
    assert labels == ["Pass@1 (greedy)", "Maj1@N", "RR.All", "RR.Maj1", "RR.Maj3", "W-RR", "W-RR.Maj1",
                      "W-RR.Maj3", "Maj1.Top4", "Maj3@N (oracle)", "Pass@N (oracle)"]


def test_evaluate_problem_hand_built():
    # Majority says 3 (wrong); the evaluator likes one half, written three ways (right).
    answers = ["3", "1/2", "3", "0.5", "3", None, "\\frac{1}{2}"]
    correct = [canon(a) == "0.5" for a in answers]
    scores = [0.2, 0.7, 0.1, 0.9, 0.3, 0.95, 0.6]
    clusters = [[0, 2, 4], [1, 3, 6]]
    res = evaluate_problem(answers, correct, scores, greedy_correct=False, clusters=clusters, K_values=(1, 2),
                           topn_values=(3,))
    assert res == {
        "greedy": (False, 0),
        "maj1": (False, 0),
        "rr_all": (False, 7),  # the unanswered solution has the top score
        "rr_maj1": (False, 0),
        "rr_maj2": (True, 6),
        "w_rr": (True, 7),
        "w_rr_maj1": (False, 0),
        "w_rr_maj2": (True, 6),
        "maj1_top3": (True, 7),  # top 3 scores: None, 0.5, 1/2 -> one half wins
        "maj2_oracle": (True, 0),
        "pass_n": (True, 0),
    }
    no_scores = evaluate_problem(answers, correct, None, None, clusters=clusters, K_values=(2,))
    assert list(no_scores) == ["maj1", "maj2_oracle", "pass_n"]
    with pytest.raises(ValueError):
        evaluate_problem(answers, correct[:-1], scores, None, clusters=clusters)


def test_evaluate_problem_clusters_with_cluster_fn():
    answers = ["1/2", "2", "0.5"]
    res = evaluate_problem(answers, [True, False, True], [0.1, 0.9, 0.2], True, cluster_fn=exact_clusters)
    assert res["maj1"] == (True, 0) and res["rr_all"] == (False, 3) and res["rr_maj1"] == (True, 0)


def test_evaluate_problem_through_cluster_answers():
    answers = ["\\frac{1}{2}", "7", "0.5", None, "7", "1/2"]
    correct = [True, False, True, False, False, True]
    res = evaluate_problem(answers, correct, [0.3, 0.9, 0.2, 0.1, 0.8, 0.4], greedy_correct=None, K_values=(1, 2))
    assert res["maj1"] == (True, 0)  # the three halves form one cluster and outvote the two 7s
    assert res["rr_maj2"] == (False, 5) and res["rr_maj1"] == (True, 0)


# --------------------------------------------------------------------------- invariants over random problems

# Answers from a small pool (with three spellings of one half and None) so that clusters, ties and
# unanswered solutions are common; scores from a coarse grid so that score ties are common too.
answer_st = st.sampled_from(["1/2", "0.5", "\\frac{1}{2}", "2", "3", "4", None])
score_st = st.one_of(st.none(), st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]))


@st.composite
def problems(draw, allow_none=True):
    n = draw(st.integers(1, 10))
    answers = draw(st.lists(answer_st if allow_none else answer_st.filter(bool), min_size=n, max_size=n))
    scores = draw(st.lists(score_st, min_size=n, max_size=n))
    gold = draw(st.sampled_from(["0.5", "2", "3"]))
    correct = [a is not None and canon(a) == gold for a in answers]
    return answers, exact_clusters(answers), scores, correct


@settings(max_examples=150, deadline=None)
@given(problems(), st.integers(1, 8))
def test_invariants(problem, k):
    answers, clusters, scores, correct = problem
    n = len(answers)
    sels = run_methods(answers, clusters, scores, correct, K_values=(1, k), topn_values=(n,))

    def right(sel):
        return sel.index is not None and correct[sel.index]

    def cluster(sel):
        return cluster_of(clusters, sel.index)

    # RR.MajK with K=1 is majority voting, answer-wise (and free).
    assert cluster(sels["rr_maj1"]) == cluster(sels["maj1"]) and sels["rr_maj1"].cost == 0
    # Maj1.TopN with N' = N is Maj1.
    assert sels[f"maj1_top{n}"].index == sels["maj1"].index
    # SCR never costs more than RR.All, and costs exactly what it scored.
    for name, sel in sels.items():
        assert sel.cost == len(sel.scored)
        if name.startswith(("rr_maj", "w_rr_maj")):
            assert sel.cost <= sels["rr_all"].cost
    # Pass@N bounds every method; MajK@N bounds the methods that only look at the top K clusters.
    for name, sel in sels.items():
        assert right(sels["pass_n"]) >= right(sel), name
    if k > 1:
        for name in (f"rr_maj{k}", f"w_rr_maj{k}", "maj1"):
            assert right(sels[f"maj{k}_oracle"]) >= right(sels[name]), name
    # Voting never selects an unanswered solution.
    for name in ("maj1", f"rr_maj{k}", "w_rr", f"w_rr_maj{k}", f"maj1_top{n}"):
        assert sels[name].index is None or answers[sels[name].index] is not None


@settings(max_examples=150, deadline=None)
@given(problems(allow_none=False))
def test_rr_majk_with_all_clusters_is_rr_all(problem):
    answers, clusters, scores, _ = problem
    k = max(len(clusters), 1)
    for kk in (k, k + 3):
        assert cluster_of(clusters, rr_majk(answers, clusters, scores, kk).index) == \
            cluster_of(clusters, rr_all(answers, scores).index)
        assert cluster_of(clusters, w_rr_majk(answers, clusters, scores, kk).index) == \
            cluster_of(clusters, w_rr(answers, clusters, scores).index)


@settings(max_examples=100, deadline=None)
@given(problems())
def test_rr_majk_with_all_clusters_is_rr_all_over_answered_solutions(problem):
    # With unanswered solutions in play, SCR over all clusters = RR.All restricted to answered ones.
    answers, clusters, scores, _ = problem
    answered = [i for i, a in enumerate(answers) if a is not None]
    sel = rr_majk(answers, clusters, scores, len(clusters) + 1)
    if len(clusters) >= 2:
        best = rr_all([answers[i] for i in answered], [scores[i] for i in answered])
        assert sel.index == answered[best.index]
