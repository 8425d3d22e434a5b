"""The synthetic generator: determinism, answer correctness, split hygiene, shape of solutions."""

import json
import math
import re
import subprocess
import sys
from fractions import Fraction
from itertools import product
from pathlib import Path

import pytest

from mathlite import synthetic
from mathlite.data import DataError, ends_with_boxed

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def many():
    # 3,200 problems: every family at every level, many times over.
    return synthetic.generate(3200, seed=11)


# ---------------------------------------------------------------------------- determinism


def test_same_arguments_same_problems():
    a = [p.to_dict() for p in synthetic.generate(300, seed=5, levels=(1, 3, 5))]
    b = [p.to_dict() for p in synthetic.generate(300, seed=5, levels=(1, 3, 5))]
    assert a == b
    assert a != [p.to_dict() for p in synthetic.generate(300, seed=6, levels=(1, 3, 5))]


def test_smaller_n_is_a_prefix():
    big = synthetic.generate(200, seed=2)
    assert [p.to_dict() for p in synthetic.generate(50, seed=2)] == [p.to_dict() for p in big[:50]]


def test_identical_across_processes():
    """No dependence on hash randomisation or global random state: a fresh interpreter
    (different PYTHONHASHSEED) gives byte-identical output."""
    code = (
        "import json, random; random.seed(123); from mathlite import synthetic; "
        "print(json.dumps([p.to_dict() for p in synthetic.generate(150, seed=9)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PYTHONHASHSEED": "4242", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    ).stdout
    assert json.loads(out) == [p.to_dict() for p in synthetic.generate(150, seed=9)]


def test_global_random_state_untouched():
    import random

    random.seed(1)
    expected = random.random()
    random.seed(1)
    synthetic.generate(100, seed=3)
    assert random.random() == expected


# ---------------------------------------------------------------------------- correctness


def _tex_value(tex: str) -> Fraction:
    """An independent reader of the boxed answer forms the generator may emit."""
    s = tex.replace("\\%", "").replace(" ", "")
    m = re.fullmatch(r"(-?)\\d?frac\{(\d+)\}\{(\d+)\}", s)
    if m:
        return Fraction(int(m[2]), int(m[3])) * (-1 if m[1] else 1)
    assert re.fullmatch(r"-?\d+", s), f"unexpected answer form {tex!r}"
    return Fraction(int(s))


def _math_of(question: str) -> list[str]:
    return re.findall(r"(?<!\\)\$(.+?)(?<!\\)\$", question)


def _to_python(tex: str) -> str:
    """LaTeX arithmetic -> a Python expression over exact Fractions (enough for these families)."""
    s = re.sub(r"(\d+)", r"F(\1)", tex)  # every literal exact
    s = re.sub(r"\\frac\{(.+?)\}\{(.+?)\}", r"(\1/\2)", s)
    s = s.replace("\\times", "*").replace("\\cdot", "*").replace("\\div", "/").replace("^", "**")
    s = s.replace("\\left", "").replace("\\right", "")
    return re.sub(r"\)\s*(?=[x(F])", ")*", s)  # implicit products: 3x, 2(x + 1)


def _eval(tex: str, x=None) -> Fraction:
    return eval(_to_python(tex), {"F": Fraction, "x": x})  # noqa: S307 - our own generated text


def recompute(p) -> Fraction:
    """The answer, derived again from the question text alone."""
    q, fam, nums = p.question, p.subject, [int(n) for n in re.findall(r"\d+", p.question)]
    maths = _math_of(q)
    if fam in ("arithmetic", "fractions"):
        return _eval(maths[0])
    if fam == "linear_equation":
        lhs, rhs = maths[1].split("=")
        # Linear in x: f(x) = f(0) + x (f(1) - f(0)); solve f_l(x) = f_r(x).
        d = lambda x: _eval(lhs, x) - _eval(rhs, x)  # noqa: E731
        return -d(Fraction(0)) / (d(Fraction(1)) - d(Fraction(0)))
    if fam == "polynomial":
        f = maths[0].split("=", 1)[1]
        if "g(" in maths[-1]:
            g = maths[1].split("=", 1)[1]
            a = _eval(re.search(r"g\((-?\d+)\)", maths[-1])[1])
            return _eval(f, _eval(g, a))
        arg = re.fullmatch(r"f\((.*)\)", maths[-1])[1]
        return _eval(f, _eval(arg))
    if fam == "gcd_lcm":
        if "sum of" in q:
            return Fraction(math.gcd(*nums) + math.lcm(*nums))
        return Fraction(math.gcd(*nums) if "greatest" in q else math.lcm(*nums))
    if fam == "remainder":
        m = nums[-1]
        if "^" in q:
            return Fraction(pow(nums[0], nums[1], m))
        if "+" in q:
            return Fraction((nums[0] + nums[1]) % m)
        if "\\cdot" in q:
            return Fraction((nums[0] * nums[1]) % m)
        return Fraction(nums[0] % m)
    if fam == "percent":
        if q.startswith("What is"):
            return Fraction(nums[0] * nums[1], 100)
        if q.startswith("What percent"):
            return Fraction(nums[1] * 100, nums[0])
        if "price" in q:
            sign = 1 if "increased" in q else -1
            return nums[0] + sign * Fraction(nums[0] * nums[1], 100)
        first = 1 + Fraction(nums[0], 100) * (1 if q.index("increased") < q.index("decreased") else -1)
        second = 1 + Fraction(nums[1], 100) * (-1 if q.index("increased") < q.index("decreased") else 1)
        return abs(first * second - 1) * 100
    if fam == "probability":
        if "bag" in q:
            return Fraction(nums[0], nums[0] + nums[1])
        if "-sided die " in q:
            sides, k = nums[0], nums[1]
            tests = {"greater than": lambda v: v > k, "at most": lambda v: v <= k, "less than": lambda v: v < k, "at least": lambda v: v >= k}
            kind = next(t for t in tests if f"{t} ${k}$" in q)
            return Fraction(sum(map(tests[kind], range(1, sides + 1))), sides)
        if "coins" in q:
            n = {"Two": 2, "Three": 3, "Four": 4, "Five": 5, "Six": 6}[q.split()[0]]
            return Fraction(sum(sum(c) == nums[0] for c in product((0, 1), repeat=n)), 2**n)
        if "multiple of" in q:
            N, m = nums[1], nums[2]
            return Fraction(sum(v % m == 0 for v in range(1, N + 1)), N)
        if "without replacement" in q:
            r, b = nums[0], nums[1]
            return Fraction(r * (r - 1), (r + b) * (r + b - 1))
        n, s = nums[0], nums[-1]
        tests = {"equal to": lambda t: t == s, "at least": lambda t: t >= s, "at most": lambda t: t <= s}
        kind = next(t for t in tests if f"{t} ${s}$" in q)
        return Fraction(sum(tests[kind](a + b) for a, b in product(range(1, n + 1), repeat=2)), n * n)
    raise AssertionError(f"no checker for family {fam}")


def test_every_answer_is_right(many):
    from mathlite.answers import extract_answer, is_equiv

    for p in many:
        truth = recompute(p)
        assert _tex_value(p.answer) == truth, (p.id, p.question, p.answer, truth)
        assert Fraction(p.extra["value"]) == truth, p.id
        for style, sol in p.extra["styles"].items():
            box = extract_answer(sol)
            assert box is not None and is_equiv(box, p.answer), (p.id, style, sol)


def test_all_families_and_levels_covered(many):
    assert {(p.subject, p.level) for p in many} == set(product(synthetic.FAMILIES, synthetic.LEVELS))
    assert len(synthetic.FAMILIES) >= 7


def test_answers_come_in_varied_latex_forms(many):
    answers = [p.answer for p in many]
    assert any(a.startswith("\\frac") for a in answers)
    assert any(a.startswith("\\dfrac") for a in answers)
    assert any(a.startswith("-\\frac") or a.startswith("-\\dfrac") for a in answers)
    assert any(a.endswith("\\%") for a in answers)
    assert any(re.fullmatch(r"-\d+", a) for a in answers) and any(re.fullmatch(r"\d+", a) for a in answers)


# ---------------------------------------------------------------------------- shape of problems and solutions


def test_problem_fields(many):
    p = many[0]
    assert p.source == "synthetic" and p.subject in synthetic.FAMILIES
    assert re.fullmatch(rf"synthetic/{p.subject}/11-0", p.id)
    assert len({p.id for p in many}) == len(many)
    assert [p.level for p in many[:10]] == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]


def test_solutions_end_in_box_and_steps_are_lines(many):
    for p in many:
        steps, terse = p.extra["styles"]["steps"], p.extra["styles"]["terse"]
        assert p.solution == steps  # the default style
        assert steps.endswith(f"The answer is $\\boxed{{{p.answer}}}$")
        assert ends_with_boxed(terse, p.answer) and ends_with_boxed(steps, p.answer)
        assert "\n" not in terse
        assert all(line.strip() for line in steps.split("\n"))


def test_easy_levels_are_easy(many):
    easy = [p for p in many if p.level <= 2]
    # Short and regular, for a 135M model: at most 4 lines / 160 characters (~75 tokens).
    assert max(len(p.solution) for p in easy) <= 160
    assert max(p.solution.count("\n") for p in easy) <= 3
    level1 = [p for p in many if p.level == 1 and p.subject == "arithmetic"]
    assert all(re.fullmatch(r"What is \$\d+ (\+|-|\\times) \d+\$\?", p.question) for p in level1)
    assert all(p.solution.count("\n") == 1 for p in level1)


def test_terse_style_and_filters():
    ps = synthetic.generate(40, seed=1, levels=(2, 4), families=["fractions", "percent"], style="terse")
    assert {p.level for p in ps} == {2, 4} and {p.subject for p in ps} == {"fractions", "percent"}
    assert all(p.solution == p.extra["styles"]["terse"] for p in ps)


def test_unique_questions_within_a_set():
    ps = synthetic.generate(500, seed=0, levels=(1,))
    assert len({p.question for p in ps}) == len(ps)


@pytest.mark.parametrize("kw", [{"levels": (0,)}, {"levels": ()}, {"families": ["calculus"]}, {"style": "essay"}])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        synthetic.generate(5, **kw)


# ---------------------------------------------------------------------------- train/test split


def test_split_has_no_question_overlap():
    train, test = synthetic.train_test_split(1500, 300, seed=4)
    assert len(train) == 1500 and len(test) == 300
    assert not {p.question for p in train} & {p.question for p in test}
    assert not {p.id for p in train} & {p.id for p in test}
    assert all("/test4-" in p.id for p in test)


def test_test_set_does_not_depend_on_train_size():
    _, t1 = synthetic.train_test_split(100, 50, seed=4)
    _, t2 = synthetic.train_test_split(700, 50, seed=4)
    assert [p.to_dict() for p in t1] == [p.to_dict() for p in t2]


def test_split_fails_clearly_when_question_space_is_exhausted():
    # level-1 percent has ~210 distinct questions: a 1,000-problem test set leaves none for train
    with pytest.raises(DataError, match="ran out of new questions"):
        synthetic.train_test_split(50, 1000, seed=0, levels=(1,), families=["percent"])
