"""Tests of answer clustering: grouping, ordering, ties, missing answers, speed."""

from __future__ import annotations

import random
import time

from mathlite import answers
from mathlite.clusters import answer_key, cluster_answers


def test_numbers_in_different_forms_share_a_key():
    keys = {answer_key(a) for a in ("0.5", ".5", "\\frac{1}{2}", "\\dfrac12", "1/2", "\\frac{2}{4}", "0.50", "\\boxed{0.5}")}
    assert keys == {"num:1/2"}
    assert answer_key("2") == answer_key("2.0") == answer_key("\\frac{4}{2}") == "num:2/1"
    assert answer_key("2") != answer_key("20")
    assert answer_key("\\frac13") != answer_key("0.33")


def test_non_numbers_are_keyed_by_their_normalized_text():
    assert answer_key("x + 1") == "x+1"
    assert answer_key("\\text{(A)}") == answer_key("A") == "A"
    assert answer_key("(1, 2)") == answer_key("\\left(1,2\\right)")
    assert answer_key("num:1/2") != answer_key("0.5")  # a literal "num:" answer cannot collide


def test_missing_answers_have_no_key():
    for a in (None, "", "   ", 5, "$$"):
        assert answer_key(a) is None


def test_basic_grouping_and_order():
    votes = ["0.5", "\\frac12", "2", None, "", "2.0", "\\dfrac{1}{2}", "1/2", "7"]
    assert cluster_answers(votes) == [[0, 1, 6, 7], [2, 5], [8]]


def test_symbolic_merges():
    votes = ["\\sqrt{8}", "x+1", "2\\sqrt{2}", "1+x", "(x+1)", "2.828", "\\sqrt8"]
    # 2.828 is not exactly 2*sqrt(2): its own cluster.
    assert cluster_answers(votes) == [[0, 2, 6], [1, 3, 4], [5]]


def test_structured_answers():
    votes = ["(1,2)", "(2,1)", "(1, 2)", "\\{1,2\\}", "\\{2,1\\}", "2, 1", "[1,2)", "[1,2]"]
    # Sets and solution lists are unordered, so "\{1,2\}", "\{2,1\}" and "2, 1" agree.
    assert cluster_answers(votes) == [[3, 4, 5], [0, 2], [1], [6], [7]]


def test_ties_are_broken_by_first_occurrence():
    assert cluster_answers(["b", "a", "a", "b", "c"]) == [[0, 3], [1, 2], [4]]
    assert cluster_answers(["3", "4", "5"]) == [[0], [1], [2]]
    assert cluster_answers(["5", "4", "4", "5", "5"]) == [[0, 3, 4], [1, 2]]


def test_none_and_empty_are_in_no_cluster():
    assert cluster_answers([]) == []
    assert cluster_answers([None, None, ""]) == []
    assert cluster_answers([None, "1", None, "1.0"]) == [[1, 3]]
    assert cluster_answers([3, "3", b"3"]) == [[1]]  # non-strings are skipped too


def test_every_index_at_most_once_and_clusters_are_internally_equal():
    rng = random.Random(0)
    pool = ["0.5", "\\frac12", "x^2", "x\\cdot x", "(1,2)", "\\{1,2\\}", "2, 1", None, "", "A", "(A)", "B", "\\pi", "3.14"]
    for _ in range(50):
        votes = [rng.choice(pool) for _ in range(rng.randint(0, 20))]
        clusters = cluster_answers(votes)
        flat = [i for c in clusters for i in c]
        assert len(flat) == len(set(flat))
        assert set(flat) == {i for i, v in enumerate(votes) if v}
        sizes = [(-len(c), c[0]) for c in clusters]
        assert sizes == sorted(sizes)
        for c in clusters:
            assert c == sorted(c)
            assert all(answers.is_equiv(votes[c[0]], votes[i]) for i in c)


def _votes_for_problem(p: int, rng: random.Random) -> list[str | None]:
    """64 sampled answers: a few forms of the right answer, some wrong ones, some missing."""
    right = [f"\\frac{{{p}}}{{7}}", f"\\dfrac{{{2 * p}}}{{14}}", f"{p}/7", f"x = \\frac{{{p}}}{{7}}"]
    symbolic = [f"{p}\\sqrt{{2}}", f"\\sqrt{{{2 * p * p}}}", f"{p}x+1", f"1+{p}x"]
    wrong = [str(p + k) for k in range(1, 12)] + [f"{p}\\pi", f"({p}, {p + 1})", f"x^{p % 5 + 2}"]
    pool = right * 4 + symbolic + wrong + [None, ""]
    return [rng.choice(pool) for _ in range(64)]


def test_speed_64_answers_x_100_problems():
    rng = random.Random(0)
    problems = [_votes_for_problem(p, rng) for p in range(1, 101)]
    answers.clear_caches()
    t0 = time.perf_counter()
    results = [cluster_answers(votes) for votes in problems]
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0, f"{elapsed:.2f} s"
    # The four spellings of p/7 always form the biggest cluster.
    for p, (votes, clusters) in enumerate(zip(problems, results), start=1):
        assert {answer_key(votes[i]) for i in clusters[0]} == {answer_key(f"\\frac{{{p}}}{{7}}")}
