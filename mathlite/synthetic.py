"""Offline MATH-style problems with exactly known answers.

Why synthetic data at all? The CPU preset must show the whole pipeline (SSFT ->
sampling -> evaluator -> re-ranking) working in minutes, offline, on a 135M
model. Real MATH problems are far beyond such a model; these families start at
"What is 7 + 5?" (level 1) and grow to multi-step problems (level 5), so the
easy levels are learnable in ~50 LoRA steps while the hard ones still leave
room for re-ranking to help.

Design rules, each for a reason:

- Every family computes its answer with `fractions.Fraction` from the same
  random parameters it prints, so answers are exact (no float rounding) and the
  solution's arithmetic is correct by construction.
- Randomness comes only from a `random.Random` passed in (never the global
  generator), so `generate(n, seed, levels)` gives identical output in every
  run and `generate(10, s)` is a prefix of `generate(100, s)`.
- Boxed answers come in the varied LaTeX forms real data has (`\\frac{3}{4}`,
  `\\dfrac{3}{4}`, `-\\frac{1}{2}`, integers, `25\\%`), so answer extraction and
  equivalence are exercised, while the solutions stay short and regular
  (levels 1-2 are a line or two) for a small model to imitate.
- Each problem carries two solutions: `terse` (MATH-like: one or two
  sentences, answer boxed inline) and `steps` (one step per line, then a final
  "The answer is $\\boxed{...}$" line).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterable, Sequence

from .errors import DataError
from .problem import Problem

LEVELS = (1, 2, 3, 4, 5)
STYLES = ("steps", "terse")


@dataclass
class _Item:
    """What a family generator returns for one problem (before it becomes a Problem)."""

    question: str
    steps: list[str]  # one step per line; the final answer line is added by _finish
    terse: str  # ends with the boxed answer
    answer: str  # LaTeX of the boxed answer
    value: Fraction  # the exact value (a percent answer "25\%" has value 25)


# ---------------------------------------------------------------------------- LaTeX helpers


def _frac(x: Fraction, rng: random.Random | None = None) -> str:
    """LaTeX of an exact number: `7`, `-\\frac{1}{2}`; with an rng, sometimes `\\dfrac`
    (only used for the boxed answer, so that the solution text itself stays regular)."""
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    cmd = "\\dfrac" if rng is not None and rng.random() < 0.3 else "\\frac"
    sign = "-" if x < 0 else ""
    return f"{sign}{cmd}{{{abs(x.numerator)}}}{{{x.denominator}}}"


def _par(x: Fraction | int) -> str:
    """A number as an operand: negatives and fractions in parentheses, e.g. `(-4)`."""
    s = _frac(Fraction(x))
    return f"({s})" if x < 0 else s


def _plus(a: str, b: Fraction | int) -> str:
    """`a + b` or `a - |b|`, so that no `+ -3` ever appears."""
    b = Fraction(b)
    return f"{a} - {_frac(-b)}" if b < 0 else f"{a} + {_frac(b)}"


def _linear(a: int, b: int, var: str = "x") -> str:
    """`ax + b` with the usual conventions: `x`, `-x`, no `+ 0`."""
    head = var if a == 1 else f"-{var}" if a == -1 else f"{a}{var}"
    return head if b == 0 else _plus(head, b)


def _poly(coeffs: Sequence[int], var: str = "x") -> str:
    """LaTeX of a polynomial from coefficients, highest degree first: [2, -3, 1] -> 2x^2 - 3x + 1."""
    deg = len(coeffs) - 1
    out = ""
    for k, c in enumerate(coeffs):
        p = deg - k
        if c == 0:
            continue
        mono = "" if p == 0 else var if p == 1 else f"{var}^{p}"
        mag = abs(c)
        body = str(mag) if p == 0 else (mono if mag == 1 else f"{mag}{mono}")
        if not out:
            out = ("-" if c < 0 else "") + body
        else:
            out += (" - " if c < 0 else " + ") + body
    return out or "0"


def _poly_at(coeffs: Sequence[int], v: Fraction) -> str:
    """The substitution line: f(v) written out term by term, e.g. `2(3)^2 - 3(3) + 1`."""
    deg = len(coeffs) - 1
    v = Fraction(v)
    # Non-negative integers go in bare (`2 \\cdot 3^2`); negatives and fractions need brackets.
    val = f"\\left({_frac(v)}\\right)" if v.denominator != 1 else _par(v)
    out = ""
    for k, c in enumerate(coeffs):
        p = deg - k
        if c == 0:
            continue
        mono = "" if p == 0 else val if p == 1 else f"{val}^{p}"
        mag = abs(c)
        body = str(mag) if p == 0 else (mono if mag == 1 else f"{mag} \\cdot {mono}")
        out += (("-" if c < 0 else "") if not out else (" - " if c < 0 else " + ")) + body
    return out or "0"


def _eval_poly(coeffs: Sequence[int], v: Fraction) -> Fraction:
    acc = Fraction(0)
    for c in coeffs:
        acc = acc * v + c
    return acc


def _factor(n: int) -> dict[int, int]:
    f, p = {}, 2
    while p * p <= n:
        while n % p == 0:
            f[p] = f.get(p, 0) + 1
            n //= p
        p += 1
    if n > 1:
        f[n] = f.get(n, 0) + 1
    return f


def _factor_tex(f: dict[int, int]) -> str:
    return " \\cdot ".join(f"{p}^{e}" if e > 1 else str(p) for p, e in sorted(f.items())) or "1"


def _lcm(*xs: int) -> int:
    out = 1
    for x in xs:
        out = out * x // math.gcd(out, x)
    return out


def _nonzero(rng: random.Random, lo: int, hi: int) -> int:
    while True:
        x = rng.randint(lo, hi)
        if x != 0:
            return x


# ---------------------------------------------------------------------------- families
# Each family: (rng, level) -> _Item. Level 1 is one small step; level 5 chains several.


def _arithmetic(rng: random.Random, level: int) -> _Item:
    if level == 1:
        op = rng.choice("+-*")
        if op == "+":
            a, b = rng.randint(1, 20), rng.randint(1, 20)
            v, expr = a + b, f"{a} + {b}"
        elif op == "-":
            a = rng.randint(2, 20)
            b = rng.randint(1, a)
            v, expr = a - b, f"{a} - {b}"
        else:
            a, b = rng.randint(2, 9), rng.randint(2, 9)
            v, expr = a * b, f"{a} \\times {b}"
        return _Item(f"What is ${expr}$?", [f"${expr} = {v}$"], f"${expr} = \\boxed{{{v}}}$", str(v), Fraction(v))
    if level == 2:
        if rng.random() < 0.5:  # a + b - c
            a, b = rng.randint(5, 30), rng.randint(2, 20)
            c = rng.randint(1, a + b)
            s = a + b
            steps = [f"${a} + {b} = {s}$", f"${s} - {c} = {s - c}$"]
            expr, v = f"{a} + {b} - {c}", s - c
        else:  # a * b + c
            a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 20)
            p = a * b
            steps = [f"${a} \\times {b} = {p}$", f"${p} + {c} = {p + c}$"]
            expr, v = f"{a} \\times {b} + {c}", p + c
        return _Item(f"What is ${expr}$?", steps, f"${expr} = \\boxed{{{v}}}$", str(v), Fraction(v))
    if level == 3:  # a * (b - c) + d
        a, d = rng.randint(2, 9), rng.randint(1, 20)
        c = rng.randint(1, 15)
        b = c + rng.randint(1, 12)
        inner = b - c
        v = a * inner + d
        expr = f"{a} \\cdot ({b} - {c}) + {d}"
        steps = [f"${b} - {c} = {inner}$", f"${a} \\cdot {inner} = {a * inner}$", f"${a * inner} + {d} = {v}$"]
        terse = f"${expr} = {a} \\cdot {inner} + {d} = \\boxed{{{v}}}$"
        return _Item(f"Compute ${expr}$.", steps, terse, str(v), Fraction(v))
    if level == 4:  # (-a) * b + c / d, with d dividing c
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        d = rng.randint(2, 9)
        q = rng.randint(2, 12)
        c = d * q
        p = -a * b
        v = p + q
        expr = f"(-{a}) \\cdot {b} + {c} \\div {d}"
        steps = [f"$(-{a}) \\cdot {b} = {p}$", f"${c} \\div {d} = {q}$", f"${_plus(str(p), q)} = {v}$"]
        terse = f"${expr} = {_plus(str(p), q)} = \\boxed{{{v}}}$"
        return _Item(f"Compute ${expr}$.", steps, terse, str(v), Fraction(v))
    # level 5: a^e - b * (c - d)^2 / f, with f dividing b so every step is an integer
    a, e = rng.choice([(2, 3), (2, 4), (2, 5), (2, 6), (3, 2), (3, 3), (3, 4), (4, 2), (4, 3), (5, 2), (5, 3)])
    f = rng.randint(2, 5)
    b = f * rng.randint(1, 4)
    c = rng.randint(1, 9)
    d = rng.choice([k for k in range(0, 16) if k != c])  # c - d may be negative, d itself never is
    x = c - d
    sq = x * x
    prod = b * sq
    quo = prod // f
    power = a**e
    v = power - quo
    expr = f"{a}^{e} - {b} \\cdot ({c} - {d})^2 \\div {f}"
    steps = [
        f"${c} - {d} = {x}$",
        f"${_par(x)}^2 = {sq}$",
        f"${b} \\cdot {sq} = {prod}$",
        f"${prod} \\div {f} = {quo}$",
        f"${a}^{e} = {power}$",
        f"${power} - {quo} = {v}$",
    ]
    terse = f"${expr} = {power} - {b} \\cdot {sq} \\div {f} = {power} - {quo} = \\boxed{{{v}}}$"
    return _Item(f"Compute ${expr}$.", steps, terse, str(v), Fraction(v))


def _linear_eq(rng: random.Random, level: int) -> _Item:
    q = "Solve for $x$: ${}$."
    if level == 1:  # x + a = b
        a, x = rng.randint(1, 20), rng.randint(1, 20)
        if rng.random() < 0.5:
            eq, work = f"x + {a} = {x + a}", f"{x + a} - {a}"
        else:
            eq, work = f"x - {a} = {x - a}", _plus(str(x - a), a)
        return _Item(q.format(eq), [f"$x = {work} = {x}$"], f"$x = {work} = \\boxed{{{x}}}$", str(x), Fraction(x))
    if level == 2:  # a x = b (the answer may be a fraction)
        a = rng.randint(2, 9)
        b = _nonzero(rng, -20, 30)
        x = Fraction(b, a)
        ans = _frac(x, rng)
        eq = f"{a}x = {b}"
        steps = [f"Divide both sides by ${a}$: $x = {_frac(x)}$"]
        return _Item(q.format(eq), steps, f"Dividing by ${a}$ gives $x = \\boxed{{{ans}}}$", ans, x)
    if level == 3:  # a x + b = c
        a = rng.randint(2, 9)
        b = _nonzero(rng, -15, 15)
        c = rng.randint(-15, 20)
        x = Fraction(c - b, a)
        ans = _frac(x, rng)
        eq = f"{_linear(a, b)} = {c}"
        move = f"Subtract ${b}$ from" if b > 0 else f"Add ${-b}$ to"
        steps = [f"{move} both sides: ${a}x = {c - b}$", f"Divide by ${a}$: $x = {_frac(x)}$"]
        terse = f"{move} both sides to get ${a}x = {c - b}$, so $x = \\boxed{{{ans}}}$"
        return _Item(q.format(eq), steps, terse, ans, x)
    if level == 4:  # a x + b = c x + d
        a, c = rng.randint(2, 12), rng.randint(1, 11)
        while c == a:
            c = rng.randint(1, 11)
        b, d = _nonzero(rng, -15, 15), _nonzero(rng, -15, 15)
        k, r = a - c, d - b
        x = Fraction(r, k)
        ans = _frac(x, rng)
        eq = f"{_linear(a, b)} = {_linear(c, d)}"
        steps = [f"Collect $x$ on the left: ${_linear(k, 0)} = {r}$", f"$x = {_frac(x)}$"]
        terse = f"Collecting terms gives ${_linear(k, 0)} = {r}$, so $x = \\boxed{{{ans}}}$"
        return _Item(q.format(eq), steps, terse, ans, x)
    # level 5: a(x + b) = c(x - d) + e
    a, c = rng.randint(2, 9), rng.randint(2, 9)
    while c == a:
        c = rng.randint(2, 9)
    b, d, e = rng.randint(1, 9), rng.randint(1, 9), _nonzero(rng, -12, 12)
    k, r = a - c, -c * d + e - a * b
    x = Fraction(r, k)
    ans = _frac(x, rng)
    eq = f"{a}(x + {b}) = {c}(x - {d}) {'+' if e > 0 else '-'} {abs(e)}"
    steps = [
        f"Expand: ${_linear(a, a * b)} = {_linear(c, -c * d + e)}$",
        f"Collect terms: ${_linear(k, 0)} = {r}$",
        f"$x = {_frac(x)}$",
    ]
    terse = f"Expanding gives ${_linear(a, a * b)} = {_linear(c, -c * d + e)}$, so ${_linear(k, 0)} = {r}$ and $x = \\boxed{{{ans}}}$"
    return _Item(q.format(eq), steps, terse, ans, x)


def _fractions(rng: random.Random, level: int) -> _Item:
    tail = " Express your answer in simplest form."

    def fr(p: int, q: int) -> str:
        return f"\\frac{{{p}}}{{{q}}}"

    def reduce_step(num: int, den: int) -> str:
        """`\\frac{4}{6} = \\frac{2}{3}`, or just `\\frac{5}{6}` when already reduced."""
        x = Fraction(num, den)
        raw = fr(num, den) if num >= 0 else f"-{fr(-num, den)}"
        return raw if (x.numerator, x.denominator) == (num, den) else f"{raw} = {_frac(x)}"

    if level == 1:  # same denominator
        d = rng.randint(3, 12)
        a, b = rng.randint(1, d - 1), rng.randint(1, d - 1)
        x = Fraction(a + b, d)
        ans = _frac(x, rng)
        expr = f"{fr(a, d)} + {fr(b, d)}"
        line = f"{expr} = {reduce_step(a + b, d)}"
        return _Item(f"What is ${expr}$?{tail}", [f"${line}$"], f"${expr} = \\boxed{{{ans}}}$", ans, x)
    if level == 2:  # one denominator a multiple of the other
        d1 = rng.randint(2, 6)
        d2 = d1 * rng.randint(2, 4)
        a, b = rng.randint(1, d1 - 1), rng.randint(1, d2 - 1)
        m = d2 // d1
        x = Fraction(a, d1) + Fraction(b, d2)
        ans = _frac(x, rng)
        expr = f"{fr(a, d1)} + {fr(b, d2)}"
        steps = [f"${fr(a, d1)} = {fr(a * m, d2)}$", f"${fr(a * m, d2)} + {fr(b, d2)} = {reduce_step(a * m + b, d2)}$"]
        terse = f"${expr} = {fr(a * m, d2)} + {fr(b, d2)} = \\boxed{{{ans}}}$"
        return _Item(f"What is ${expr}$?{tail}", steps, terse, ans, x)
    if level in (3, 4):  # two (level 3) or three (level 4, with a subtraction) fractions
        count = 2 if level == 3 else 3
        dens = [rng.randint(2, 9) for _ in range(count)]
        while len(set(dens)) < 2:
            dens = [rng.randint(2, 9) for _ in range(count)]
        nums = [rng.randint(1, d - 1) if d > 1 else 1 for d in dens]
        signs = [1] + [1 if level == 3 else rng.choice([1, -1]) for _ in range(count - 1)]
        if level == 4 and all(s == 1 for s in signs):
            signs[-1] = -1
        L = _lcm(*dens)
        x = sum((s * Fraction(n, d) for s, n, d in zip(signs, nums, dens)), Fraction(0))
        ans = _frac(x, rng)
        expr = fr(nums[0], dens[0]) + "".join(
            f" {'+' if s > 0 else '-'} {fr(n, d)}" for s, n, d in zip(signs[1:], nums[1:], dens[1:])
        )
        scaled = [n * (L // d) for n, d in zip(nums, dens)]
        common = fr(scaled[0], L) + "".join(f" {'+' if s > 0 else '-'} {fr(n, L)}" for s, n in zip(signs[1:], scaled[1:]))
        total = sum(s * n for s, n in zip(signs, scaled))
        steps = [f"The common denominator is ${L}$: ${common}$", f"$= {reduce_step(total, L)}$"]
        terse = f"With the common denominator ${L}$, ${expr} = {common} = \\boxed{{{ans}}}$"
        return _Item(f"What is ${expr}$?{tail}", steps, terse, ans, x)
    # level 5: a/b * c/d - e/f
    b, d, f = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 9)
    a, c, e = rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, f - 1)
    prod = Fraction(a * c, b * d)
    x = prod - Fraction(e, f)
    ans = _frac(x, rng)
    expr = f"{fr(a, b)} \\cdot {fr(c, d)} - {fr(e, f)}"
    L = _lcm(prod.denominator, f)
    p1, p2 = prod.numerator * (L // prod.denominator), e * (L // f)
    steps = [
        f"${fr(a, b)} \\cdot {fr(c, d)} = {reduce_step(a * c, b * d)}$",
        f"${_frac(prod)} - {fr(e, f)} = {fr(p1, L)} - {fr(p2, L)}$",
        f"$= {reduce_step(p1 - p2, L)}$",
    ]
    terse = f"${expr} = {_frac(prod)} - {fr(e, f)} = \\boxed{{{ans}}}$"
    return _Item(f"What is ${expr}$?{tail}", steps, terse, ans, x)


def _percent(rng: random.Random, level: int) -> _Item:
    if level in (1, 2):  # p% of a base chosen so that the result is a whole number
        p = rng.choice([10, 50, 20, 25]) if level == 1 else rng.choice(range(5, 100, 5))
        step = 100 // math.gcd(p, 100)  # base must be a multiple of this
        base = step * rng.randint(1, 200 // step if level == 1 else 400 // step)
        v = Fraction(p * base, 100)
        line = f"$\\frac{{{p}}}{{100}} \\cdot {base} = {v}$"
        q = f"What is ${p}\\%$ of ${base}$?"
        return _Item(q, [line], f"${p}\\%$ of ${base}$ is $\\frac{{{p}}}{{100}} \\cdot {base} = \\boxed{{{v}}}$", str(v), v)
    if level == 3:  # what percent of b is a
        p = rng.choice(range(5, 200, 5))
        step = 100 // math.gcd(p, 100)
        b = step * rng.randint(1, 20)
        a = p * b // 100
        x = Fraction(a, b)
        ans = f"{p}\\%"
        ratio = f"\\frac{{{a}}}{{{b}}}" + ("" if (x.numerator, x.denominator) == (a, b) else f" = {_frac(x)}")
        steps = [f"${ratio}$", f"${_frac(x)} \\cdot 100\\% = {p}\\%$"]
        terse = f"Since ${ratio}$, it is ${_frac(x)} \\cdot 100\\% = \\boxed{{{p}\\%}}$"
        return _Item(f"What percent of ${b}$ is ${a}$?", steps, terse, ans, Fraction(p))
    if level == 4:  # a price changes by p%
        item = rng.choice(["shirt", "book", "lamp", "bike", "ticket"])
        up = rng.random() < 0.5
        p = rng.choice(range(5, 60, 5))
        step = 100 // math.gcd(p, 100)
        base = step * rng.randint(1, 300 // step)
        change = p * base // 100
        v = base + change if up else base - change
        word = "increased" if up else "decreased"
        q = f"A {item} costs $\\${base}$. Its price is {word} by ${p}\\%$. What is the new price, in dollars?"
        steps = [f"${p}\\%$ of ${base}$ is $\\frac{{{p}}}{{100}} \\cdot {base} = {change}$", f"${base} {'+' if up else '-'} {change} = {v}$"]
        terse = f"The price changes by $\\frac{{{p}}}{{100}} \\cdot {base} = {change}$ dollars, so the new price is ${base} {'+' if up else '-'} {change} = \\boxed{{{v}}}$"
        return _Item(q, steps, terse, str(v), Fraction(v))
    # level 5: two successive changes; ask for the overall percent change
    while True:
        p, r = rng.choice(range(5, 100, 5)), rng.choice(range(5, 100, 5))
        first_up = rng.random() < 0.5
        f1 = Fraction(100 + p, 100) if first_up else Fraction(100 - p, 100)
        f2 = Fraction(100 - r, 100) if first_up else Fraction(100 + r, 100)
        total = f1 * f2
        change = (total - 1) * 100
        if change != 0 and change.denominator == 1:
            break
    w1, w2 = ("increased", "decreased") if first_up else ("decreased", "increased")
    overall = "increased" if change > 0 else "decreased"
    mag = abs(change)
    q = (f"A number is {w1} by ${p}\\%$, and the result is then {w2} by ${r}\\%$. "
         f"By what percent has the original number {overall}?")
    steps = [
        f"The two changes multiply the number by ${_frac(f1)} \\cdot {_frac(f2)} = {_frac(total)}$",
        f"${_frac(total)}$ is a {'gain' if change > 0 else 'loss'} of ${mag}\\%$",
    ]
    terse = f"The number is multiplied by ${_frac(f1)} \\cdot {_frac(f2)} = {_frac(total)}$, so it has {overall} by $\\boxed{{{mag}\\%}}$"
    return _Item(q, steps, terse, f"{mag}\\%", mag)


def _gcd_lcm(rng: random.Random, level: int) -> _Item:
    def fac_line(n: int) -> str:
        f = _factor(n)
        return f"${n}$ is prime" if f == {n: 1} else f"${n} = {_factor_tex(f)}$"

    def from_factors(fs: dict[int, int], n: int) -> str:
        """`2^2 \\cdot 3 = 12`, or just `12` when the factorization is the number itself."""
        tex = _factor_tex(fs)
        return tex if tex == str(n) else f"{tex} = {n}"

    if level in (1, 3):  # gcd: small numbers, then larger ones built around a shared factor
        if level == 1:
            a, b = rng.sample(range(2, 21), 2)
        else:
            g = rng.choice([2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 15])
            a, b = g * rng.randint(2, 13), g * rng.randint(2, 13)
            while a == b:
                b = g * rng.randint(2, 13)
        g = math.gcd(a, b)
        fa, fb = _factor(a), _factor(b)
        common = {p: min(e, fb[p]) for p, e in fa.items() if p in fb}
        last = f"$\\gcd({a}, {b}) = {from_factors(common, g)}$" if common else f"No common prime factor, so $\\gcd({a}, {b}) = 1$"
        q = f"What is the greatest common divisor of ${a}$ and ${b}$?"
        terse = f"Since {fac_line(a)} and {fac_line(b)}, the greatest common divisor is $\\boxed{{{g}}}$"
        return _Item(q, [fac_line(a), fac_line(b), last], terse, str(g), Fraction(g))
    if level in (2, 4):  # lcm of two small numbers, then of three
        k = 2 if level == 2 else 3
        nums = sorted(rng.sample(range(2, 17 if level == 2 else 25), k))
        L = _lcm(*nums)
        fs = [_factor(n) for n in nums]
        top: dict[int, int] = {}
        for f in fs:
            for p, e in f.items():
                top[p] = max(top.get(p, 0), e)
        listed = ", ".join(f"${n}$" for n in nums[:-1]) + f"{',' if k > 2 else ''} and ${nums[-1]}$"
        q = f"What is the least common multiple of {listed}?"
        steps = [fac_line(n) for n in nums] + [f"$\\operatorname{{lcm}} = {from_factors(top, L)}$"]
        terse = f"Taking the highest power of each prime, the least common multiple is ${from_factors(top, L).split(' = ')[0]} = \\boxed{{{L}}}$"
        return _Item(q, steps, terse, str(L), Fraction(L))
    # level 5: gcd + lcm of two numbers with a shared factor
    g0 = rng.choice([2, 3, 4, 5, 6])
    a, b = g0 * rng.randint(2, 12), g0 * rng.randint(2, 12)
    while a == b:
        b = g0 * rng.randint(2, 12)
    g, L = math.gcd(a, b), _lcm(a, b)
    q = f"What is the sum of the greatest common divisor and the least common multiple of ${a}$ and ${b}$?"
    steps = [fac_line(a), fac_line(b), f"$\\gcd({a}, {b}) = {g}$", f"$\\operatorname{{lcm}}({a}, {b}) = {L}$", f"${g} + {L} = {g + L}$"]
    terse = f"Since {fac_line(a)} and {fac_line(b)}, the gcd is ${g}$ and the lcm is ${L}$, so the sum is $\\boxed{{{g + L}}}$"
    return _Item(q, steps, terse, str(g + L), Fraction(g + L))


def _polynomial(rng: random.Random, level: int) -> _Item:
    if level == 1:  # f(x) = x + a at a small positive integer
        coeffs = [1, _nonzero(rng, -9, 12)]
        v = Fraction(rng.randint(0, 12))
    elif level == 2:  # f(x) = ax + b at a possibly negative integer
        coeffs = [rng.choice([-3, -2, 2, 3, 4, 5]), _nonzero(rng, -12, 12)]
        v = Fraction(rng.randint(-6, 9))
    elif level == 3:  # quadratic
        coeffs = [rng.choice([1, 2, 3, -1, -2]), rng.randint(-6, 6), _nonzero(rng, -9, 9)]
        v = Fraction(_nonzero(rng, -4, 5))
    elif level == 4:  # f(g(a)) with linear g, quadratic f
        f = [rng.choice([1, 2, -1]), rng.randint(-5, 5), rng.randint(-9, 9)]
        g = [rng.choice([2, 3, -2, 1]), _nonzero(rng, -6, 6)]
        a = Fraction(_nonzero(rng, -3, 4))
        ga = _eval_poly(g, a)
        x = _eval_poly(f, ga)
        q = f"Let $f(x) = {_poly(f)}$ and $g(x) = {_poly(g)}$. What is $f(g({_frac(a)}))$?"
        steps = [f"$g({_frac(a)}) = {_poly_at(g, a)} = {_frac(ga)}$", f"$f({_frac(ga)}) = {_poly_at(f, ga)} = {_frac(x)}$"]
        terse = f"First $g({_frac(a)}) = {_frac(ga)}$, then $f({_frac(ga)}) = {_poly_at(f, ga)} = \\boxed{{{_frac(x)}}}$"
        return _Item(q, steps, terse, _frac(x), x)
    else:  # level 5: quadratic at a fraction
        coeffs = [rng.choice([2, 3, 4, -2, 6]), rng.randint(-5, 5), _nonzero(rng, -6, 6)]
        v = Fraction(rng.choice([1, -1, 3, -3, 2, 5]), rng.choice([2, 3, 4]))
    x = _eval_poly(coeffs, v)
    ans = _frac(x, rng)
    q = f"If $f(x) = {_poly(coeffs)}$, what is $f({_frac(v)})$?"
    if level <= 2:
        steps = [f"$f({_frac(v)}) = {_poly_at(coeffs, v)} = {_frac(x)}$"]
    else:
        terms = [c * v ** (len(coeffs) - 1 - k) for k, c in enumerate(coeffs) if c != 0]
        each = _frac(terms[0]) + "".join(f" {'-' if t < 0 else '+'} {_frac(abs(t))}" for t in terms[1:])
        steps = [f"$f({_frac(v)}) = {_poly_at(coeffs, v)}$", f"$= {each}$", f"$= {_frac(x)}$"]
    terse = f"$f({_frac(v)}) = {_poly_at(coeffs, v)} = \\boxed{{{ans}}}$"
    return _Item(q, steps, terse, ans, x)


def _p_line(good: int, total: int) -> str:
    """`$P = \\frac{4}{6} = \\frac{2}{3}$`, without the second part when nothing cancels."""
    x = Fraction(good, total)
    reduced = "" if x.denominator == total else f" = {_frac(x)}"
    return f"$P = \\frac{{{good}}}{{{total}}}{reduced}$"


def _probability(rng: random.Random, level: int) -> _Item:
    tail = " Express your answer as a common fraction."
    if level == 1:  # one draw from a bag
        c1, c2 = rng.sample(["red", "blue", "green", "white", "black"], 2)
        r, b = rng.randint(1, 12), rng.randint(1, 12)
        x = Fraction(r, r + b)
        ans = _frac(x, rng)
        q = f"A bag has ${r}$ {c1} marbles and ${b}$ {c2} marbles. One marble is drawn at random. What is the probability that it is {c1}?{tail}"
        steps = [f"There are ${r} + {b} = {r + b}$ marbles and ${r}$ are {c1}", _p_line(r, r + b)]
        return _Item(q, steps, f"${r}$ of the ${r + b}$ marbles are {c1}, so the probability is $\\boxed{{{ans}}}$", ans, x)
    if level == 2:  # a fair die
        sides = rng.choice([4, 6, 8, 10, 12, 20])
        k = rng.randint(1, sides - 1)
        kind = rng.choice(["greater than", "at most", "less than", "at least"])
        good = {"greater than": sides - k, "at most": k, "less than": k - 1, "at least": sides - k + 1}[kind]
        if good == 0:
            kind, good = "at most", k
        x = Fraction(good, sides)
        ans = _frac(x, rng)
        what = f"{kind} ${k}$"
        q = f"A fair {sides}-sided die is rolled. What is the probability of rolling a number {what}?{tail}"
        steps = [f"${good}$ of the ${sides}$ outcomes are {what}", _p_line(good, sides)]
        return _Item(q, steps, f"${good}$ of the ${sides}$ equally likely outcomes work, so the probability is $\\boxed{{{ans}}}$", ans, x)
    if level == 3:
        if rng.random() < 0.5:  # exactly k heads (or tails) among n coins
            n = rng.randint(2, 6)
            k = rng.randint(0, n)
            face = rng.choice(["heads", "tails"])
            ways = math.comb(n, k)
            x = Fraction(ways, 2**n)
            ans = _frac(x, rng)
            number = {2: "Two", 3: "Three", 4: "Four", 5: "Five", 6: "Six"}[n]
            q = f"{number} fair coins are flipped. What is the probability of getting exactly ${k}$ {face}?{tail}"
            steps = [f"There are $2^{n} = {2**n}$ outcomes", f"$\\binom{{{n}}}{{{k}}} = {ways}$ of them have ${k}$ {face}", _p_line(ways, 2**n)]
            terse = f"Of the $2^{n} = {2**n}$ outcomes, $\\binom{{{n}}}{{{k}}} = {ways}$ have ${k}$ {face}, so the probability is $\\boxed{{{ans}}}$"
            return _Item(q, steps, terse, ans, x)
        # a random integer from 1 to N is a multiple of m
        N, m = rng.randint(10, 100), rng.randint(2, 9)
        good = N // m
        x = Fraction(good, N)
        ans = _frac(x, rng)
        q = f"An integer is chosen at random from $1$ to ${N}$, inclusive. What is the probability that it is a multiple of ${m}$?{tail}"
        listed = ", ".join(str(m * j) for j in range(1, good + 1)) if good <= 3 else f"{m}, {2 * m}, \\ldots, {good * m}"
        steps = [f"The multiples of ${m}$ up to ${N}$ are ${listed}$: ${good}$ {'number' if good == 1 else 'numbers'}", _p_line(good, N)]
        terse = f"There are $\\lfloor {N}/{m} \\rfloor = {good}$ multiples of ${m}$ among ${N}$ numbers, so the probability is $\\boxed{{{ans}}}$"
        return _Item(q, steps, terse, ans, x)
    if level == 4:  # two draws without replacement, both of one colour
        c1, c2 = rng.sample(["red", "blue", "green", "white", "black"], 2)
        r, b = rng.randint(2, 12), rng.randint(1, 12)
        t = r + b
        x = Fraction(r, t) * Fraction(r - 1, t - 1)
        ans = _frac(x, rng)
        q = f"A box contains ${r}$ {c1} balls and ${b}$ {c2} balls. Two balls are drawn at random without replacement. What is the probability that both are {c1}?{tail}"
        steps = [f"First {c1}: $\\frac{{{r}}}{{{t}}}$", f"Second {c1}: $\\frac{{{r - 1}}}{{{t - 1}}}$", f"$P = \\frac{{{r}}}{{{t}}} \\cdot \\frac{{{r - 1}}}{{{t - 1}}} = {_frac(x)}$"]
        terse = f"The probability is $\\frac{{{r}}}{{{t}}} \\cdot \\frac{{{r - 1}}}{{{t - 1}}} = \\boxed{{{ans}}}$"
        return _Item(q, steps, terse, ans, x)
    # level 5: the sum of two n-sided dice is s (at least s, at most s)
    n = rng.choice([4, 6, 8, 10, 12])
    counts = {t: n - abs(t - (n + 1)) for t in range(2, 2 * n + 1)}  # pairs with each sum
    s = rng.randint(3, 2 * n - 1)
    kind = rng.choice(["equal to", "at least", "at most"])
    sums = [s] if kind == "equal to" else range(s, 2 * n + 1) if kind == "at least" else range(2, s + 1)
    good = sum(counts[t] for t in sums)
    if len(sums) <= 4:
        how = "Pairs with sum " + ", ".join(f"${t}$: ${counts[t]}$" for t in sums) + (f"; ${good}$ in all" if len(sums) > 1 else "")
    else:  # many sums: count the complement instead
        rest = [t for t in counts if t not in sums]
        how = "Pairs with sum " + ", ".join(f"${t}$: ${counts[t]}$" for t in rest) + f"; so ${n * n} - {n * n - good} = {good}$ pairs remain"
    x = Fraction(good, n * n)
    ans = _frac(x, rng)
    what = f"{kind} ${s}$"
    q = f"Two fair {n}-sided dice are rolled. What is the probability that the sum of the numbers rolled is {what}?{tail}"
    steps = [f"There are ${n} \\cdot {n} = {n * n}$ outcomes", how, _p_line(good, n * n)]
    terse = f"Of the ${n * n}$ equally likely outcomes, ${good}$ have a sum {what}, so the probability is $\\boxed{{{ans}}}$"
    return _Item(q, steps, terse, ans, x)


def _remainder(rng: random.Random, level: int) -> _Item:
    if level <= 2:  # remainder of a small number
        m = rng.randint(2, 9) if level == 1 else rng.randint(3, 12)
        n = rng.randint(m + 1, 50 if level == 1 else 200)
        qt, r = divmod(n, m)
        q = f"What is the remainder when ${n}$ is divided by ${m}$?"
        return _Item(q, [f"${n} = {m} \\cdot {qt} + {r}$"], f"Since ${n} = {m} \\cdot {qt} + {r}$, the remainder is $\\boxed{{{r}}}$", str(r), Fraction(r))
    if level == 3:  # remainder of a sum
        m = rng.randint(3, 12)
        a, b = rng.randint(20, 500), rng.randint(20, 500)
        ra, rb = a % m, b % m
        r = (a + b) % m
        q = f"What is the remainder when ${a} + {b}$ is divided by ${m}$?"
        steps = [f"${a} \\equiv {ra} \\pmod{{{m}}}$", f"${b} \\equiv {rb} \\pmod{{{m}}}$", f"${ra} + {rb} = {ra + rb} \\equiv {r} \\pmod{{{m}}}$"]
        terse = f"Modulo ${m}$, ${a} + {b} \\equiv {ra} + {rb} \\equiv \\boxed{{{r}}}$"
        return _Item(q, steps, terse, str(r), Fraction(r))
    if level == 4:  # remainder of a product
        m = rng.randint(3, 13)
        a, b = rng.randint(20, 300), rng.randint(20, 300)
        ra, rb = a % m, b % m
        r = (a * b) % m
        q = f"What is the remainder when ${a} \\cdot {b}$ is divided by ${m}$?"
        steps = [f"${a} \\equiv {ra}$ and ${b} \\equiv {rb} \\pmod{{{m}}}$", f"${ra} \\cdot {rb} = {ra * rb} \\equiv {r} \\pmod{{{m}}}$"]
        terse = f"Modulo ${m}$, ${a} \\cdot {b} \\equiv {ra} \\cdot {rb} = {ra * rb} \\equiv \\boxed{{{r}}}$"
        return _Item(q, steps, terse, str(r), Fraction(r))
    # level 5: remainder of a power, found by the cycle of powers
    m = rng.choice([3, 4, 5, 7, 9, 10, 11])
    a = rng.randint(2, 12)
    while a % m == 1 or math.gcd(a, m) != 1:  # coprime, so the powers cycle back to 1
        a = rng.randint(2, 12)
    e = rng.randint(10, 60)
    cycle = [1]
    while True:
        nxt = cycle[-1] * a % m
        if nxt == 1:
            break
        cycle.append(nxt)
    period = len(cycle)
    r = pow(a, e, m)
    q_, rest = divmod(e, period)
    q = f"What is the remainder when ${a}^{{{e}}}$ is divided by ${m}$?"
    powers = ", ".join(f"{a}^{k} \\equiv {pow(a, k, m)}" for k in range(1, period + 1))
    # a^period = 1 (mod m), so only the exponent's remainder mod period matters.
    if rest:
        reduce = f"${e} = {period} \\cdot {q_} + {rest}$, so ${a}^{{{e}}} \\equiv {a}^{{{rest}}} \\equiv {r} \\pmod{{{m}}}$"
    else:
        reduce = f"${e} = {period} \\cdot {q_}$, so ${a}^{{{e}}} = ({a}^{{{period}}})^{{{q_}}} \\equiv 1 \\pmod{{{m}}}$"
    steps = [f"Modulo ${m}$: ${powers}$", f"The powers repeat every ${period}$", reduce]
    terse = f"The powers of ${a}$ modulo ${m}$ repeat every ${period}$. {reduce[0].upper()}{reduce[1:]}, so the remainder is $\\boxed{{{r}}}$"
    return _Item(q, steps, terse, str(r), Fraction(r))


FAMILIES: dict[str, Callable[[random.Random, int], _Item]] = {
    "arithmetic": _arithmetic,
    "linear_equation": _linear_eq,
    "fractions": _fractions,
    "percent": _percent,
    "gcd_lcm": _gcd_lcm,
    "polynomial": _polynomial,
    "probability": _probability,
    "remainder": _remainder,
}


# ---------------------------------------------------------------------------- public API


def _finish(item: _Item) -> dict[str, str]:
    """Both solution styles for an item, each ending with the boxed answer."""
    steps = "\n".join(item.steps + [f"The answer is $\\boxed{{{item.answer}}}$"])
    terse = item.terse if item.terse.rstrip("$").endswith(f"\\boxed{{{item.answer}}}") else f"{item.terse}. The answer is $\\boxed{{{item.answer}}}$"
    return {"steps": steps, "terse": terse}


def _check_args(levels: Iterable[int], families: Iterable[str] | None, style: str) -> tuple[tuple[int, ...], list[str]]:
    levels = tuple(levels)
    if not levels or any(lv not in LEVELS for lv in levels):
        raise ValueError(f"levels must be a non-empty subset of {LEVELS}, got {levels}")
    fams = list(FAMILIES) if families is None else list(families)
    unknown = [f for f in fams if f not in FAMILIES]
    if unknown or not fams:
        raise ValueError(f"unknown synthetic families {unknown}; choose from {', '.join(FAMILIES)}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    return levels, fams


def _generate(n: int, rng: random.Random, tag: str, levels, fams, style: str, exclude: frozenset[str] = frozenset()) -> list[Problem]:
    out: list[Problem] = []
    seen: set[str] = set()
    for i in range(n):
        # Levels cycle so that every level is equally represented; the family is random.
        level = levels[i % len(levels)]
        fam = fams[rng.randrange(len(fams))]
        # Prefer unseen questions; a small question space (one family at level 1, huge n)
        # may run out, and then a repeat inside this set is accepted -- but never a
        # question from `exclude`: that is what keeps a train/test split disjoint.
        for attempt in range(1000):
            item = FAMILIES[fam](rng, level)
            if item.question not in exclude and (item.question not in seen or attempt >= 50):
                break
        else:
            raise DataError(f"synthetic: ran out of new questions for family {fam} level {level}; ask for fewer problems or more levels")
        seen.add(item.question)
        sols = _finish(item)
        v = item.value
        out.append(
            Problem(
                id=f"synthetic/{fam}/{tag}-{i}",
                question=item.question,
                solution=sols[style],
                answer=item.answer,
                level=level,
                subject=fam,
                source="synthetic",
                extra={"styles": sols, "value": f"{v.numerator}/{v.denominator}" if v.denominator != 1 else str(v.numerator)},
            )
        )
    return out


def generate(
    n: int,
    seed: int = 0,
    levels: Iterable[int] = LEVELS,
    families: Iterable[str] | None = None,
    style: str = "steps",
    exclude: Iterable[str] = (),
) -> list[Problem]:
    """`n` synthetic problems, deterministic in (n, seed, levels, families, style).

    Levels cycle 1, 2, ..., so each is equally represented; families are drawn at
    random. `style` picks `Problem.solution` ("steps": one step per line, or
    "terse"); both are kept in `problem.extra["styles"]`, and the exact answer
    value in `problem.extra["value"]` (e.g. "7/3"; a percent answer "25\\%" has "25").
    Questions in `exclude` are never produced (e.g. to keep examples out of a test set).
    """
    levels, fams = _check_args(levels, families, style)
    return _generate(n, random.Random(seed), str(seed), levels, fams, style, exclude=frozenset(exclude))


def train_test_split(
    n_train: int, n_test: int, seed: int = 0, levels: Iterable[int] = LEVELS, families: Iterable[str] | None = None, style: str = "steps"
) -> tuple[list[Problem], list[Problem]]:
    """A train and a test set that share no question.

    The test set is drawn first from its own stream, so it does not change when
    n_train changes (compare runs of different training sizes on the same test).
    Train ids look like `synthetic/<family>/<seed>-<i>`, test ids `.../test<seed>-<i>`.
    """
    levels, fams = _check_args(levels, families, style)
    test = _generate(n_test, random.Random(f"{seed}/test"), f"test{seed}", levels, fams, style)
    train = _generate(n_train, random.Random(seed), str(seed), levels, fams, style, exclude=frozenset(p.question for p in test))
    return train, test
