"""The answer engine on real data: every MATH and GSM8K gold solution.

The data sets live next to the checkout in ../shared/data (see its README); the tests
skip when it is absent.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest
import sympy

from mathlite import answers, latex
from mathlite.answers import extract_answer, is_equiv, normalize_answer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MATH_DIR = DATA / "math"
GSM8K_DIR = DATA / "gsm8k"

# Gold solutions whose final box is empty in the data set itself: "$\boxed{}$". Both are
# multiple-choice problems whose answer letter was lost when the solutions were written
# (the problem text lists choices (A)-(E)); there is no answer to extract.
MATH_WITHOUT_ANSWER = {
    "train/number_theory/7115.json",  # "Therefore there are $\boxed{}$ primes in that range."
    "train/number_theory/7117.json",  # "so the answer is $\boxed{}$."
}


@lru_cache(maxsize=None)
def _rows(directory: Path, split: str) -> tuple[dict, ...]:
    path = directory / f"{split}.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not found (offline data lives in ../shared/data)")
    with path.open() as f:
        return tuple(json.loads(line) for line in f)


def _math_rows() -> list[dict]:
    return [r for split in ("test", "train") for r in _rows(MATH_DIR, split)]


@lru_cache(maxsize=None)
def _math_answers() -> dict[str, str | None]:
    return {r["unique_id"]: extract_answer(r["solution"]) for r in _math_rows()}


def test_math_every_gold_solution_has_an_answer():
    extracted = _math_answers()
    assert len(extracted) == 12_500
    missing = {uid for uid, a in extracted.items() if not a}
    assert missing == MATH_WITHOUT_ANSWER


def test_math_gold_answers_equal_themselves():
    not_equal = [uid for uid, a in _math_answers().items() if a and not is_equiv(a, a)]
    assert not_equal == []


def test_math_gold_answers_normalize_idempotently():
    # Clusters and caches key on normalized strings, so normalizing twice must change nothing.
    unstable = [a for a in _math_answers().values() if a and normalize_answer(normalize_answer(a)) != normalize_answer(a)]
    assert unstable == []


def test_math_gold_answers_are_understood_symbolically():
    """Coverage of the parser: the share of gold answers that become a structured value.

    The rest are compared as text; they are mostly words ("\\text{Monday}", "odd") and
    base-n numerals ("1011_2"), which are text on purpose.
    """
    kinds = Counter(latex.parse_value(normalize_answer(a))[0] for a in _math_answers().values() if a)
    total = sum(kinds.values())
    assert kinds["text"] / total < 0.02, kinds
    assert kinds["scalar"] > 11_000 and kinds["seq"] > 300 and kinds["matrix"] > 100 and kinds["union"] > 50


class _Skip(Exception):
    pass


def _render(value) -> str:
    """Print a parsed answer back to LaTeX through sympy: same value, different text."""
    kind = value[0]
    if kind == "scalar":
        try:
            expr = latex.to_sympy(value[1])
        except latex.TooBig:
            raise _Skip from None
        if expr.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan):
            raise _Skip
        return sympy.latex(expr)
    if kind == "seq":  # tuples and intervals keep their order and brackets
        return "\\left" + value[1] + ", ".join(map(_render, value[3])) + "\\right" + value[2]
    if kind == "set":  # sets and solution lists are unordered: print them reversed
        return "\\{" + ", ".join(map(_render, reversed(value[1]))) + "\\}"
    if kind == "union":
        return " \\cup ".join(map(_render, reversed(value[1])))
    if kind == "matrix":
        return "\\begin{bmatrix}" + " \\\\ ".join(" & ".join(map(_render, row)) for row in value[1]) + "\\end{bmatrix}"
    raise _Skip


def test_math_symbolic_self_check_on_a_sample():
    """Run the full symbolic path on gold answers, bypassing the identical-string shortcut.

    Each sampled answer is parsed and printed again through sympy's own LaTeX printer
    (different spacing, `\\left(`...`\\right)`, reordered terms, moved `\\frac`s, sets
    reversed); the result must still equal the original, and adding 1 must break that.
    Infinite values and text answers are skipped.
    """
    rng = random.Random(0)
    golds = sorted({a for a in _math_answers().values() if a})
    checked = Counter()
    for a in rng.sample(golds, 2500):
        value = latex.parse_value(normalize_answer(a))
        try:
            printed = _render(value)
        except _Skip:
            continue
        if len(printed) > answers.MAX_ANSWER_CHARS or normalize_answer(printed) == normalize_answer(a):
            continue  # only pairs that really reach the symbolic comparison
        assert is_equiv(printed, a), (a, printed)
        if value[0] == "scalar":
            assert not is_equiv(printed + "+1", a), (a, printed)
        checked[value[0]] += 1
    assert checked["scalar"] > 300 and checked["set"] > 40 and checked["matrix"] > 10, checked
    assert checked["seq"] + checked["union"] > 5, checked


def test_math_spacing_and_macro_variants_are_equal():
    """Cheap variants that normalization must undo, on every gold answer."""
    failures = []
    for a in _math_answers().values():
        if not a:
            continue
        variants = [" " + a.replace("+", " + ").replace("=", " = ") + " ", a.replace("\\frac", "\\dfrac"), f"${a}$"]
        for v in variants:
            if not is_equiv(v, a):
                failures.append((a, v))
    assert failures == []


# --------------------------------------------------------------------------------------
# GSM8K
# --------------------------------------------------------------------------------------

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$")


@pytest.mark.parametrize("split, n_rows", [("test", 1319), ("train", 7473)])
def test_gsm8k_every_answer_is_extracted(split, n_rows):
    rows = _rows(GSM8K_DIR, split)
    assert len(rows) == n_rows
    for row in rows:
        expected = _GSM8K_FINAL.search(row["answer"]).group(1)
        got = extract_answer(row["answer"])
        assert got == expected, row["answer"][-80:]
        assert is_equiv(got, got)
        # GSM8K answers are integers, some with thousands separators ("1,000").
        value = normalize_answer(got)
        assert re.fullmatch(r"-?\d+(\.\d+)?", value), got
        assert is_equiv(got, value)
        assert not is_equiv(got, str(int(float(value)) + 1))
