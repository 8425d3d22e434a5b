"""A small LaTeX parser for normalized answers, and what a parsed answer is worth.

:func:`parse_value` turns a normalized answer string (see
:func:`mathlite.answers.normalize_answer`) into a *value*: a scalar expression, a relation,
a chain of inequalities, a tuple or interval, a set, a union, a matrix, or plain text.
Scalars are ASTs of hashable tuples with three interpretations, each cached per node:

- :func:`exact`: the exact rational value of a constant expression (or None);
- :func:`fingerprint`: complex float values at fixed pseudo-random points for the free
  symbols, which reject almost every unequal pair in microseconds;
- :func:`to_sympy`: the sympy expression, built node by node (never ``sympify``/``eval``
  on the input, so untrusted model output cannot execute code).

Every interpretation refuses work that could stall: exact powers, factorials and sums
are size-checked before they are computed (:class:`TooBig`), and long loops call
:func:`mathlite.deadline.tick`. The grading rules (what counts as equal) live in
:mod:`mathlite.answers`.
"""

from __future__ import annotations

import cmath
import math
import re
import zlib
from fractions import Fraction
from functools import lru_cache

import sympy

from mathlite.deadline import tick

__all__ = [
    "MAX_SYMBOLIC_COST", "N_POINTS", "ParseError", "TooBig", "children", "clear_caches", "cost", "exact", "fingerprint",
    "fingerprints_close", "parse_scalar", "parse_value", "sympy_point", "sympy_same", "to_sympy",
]

_COMMAND_RE = re.compile(r"\\[A-Za-z]+")

# --------------------------------------------------------------------------------------
# 1. A small LaTeX parser: normalized string -> AST of nested tuples
# --------------------------------------------------------------------------------------
# AST nodes are hashable tuples, so every later stage can be cached per node:
#   ("num", Fraction)  ("sym", name)  ("const", "pi"|"e"|"i"|"inf")
#   ("add", (terms...))  ("mul", (factors...))  ("neg", x)  ("inv", x)  ("pow", base, exp)
#   ("root", x, n)  ("fn", name, x)  ("log", x, base|None)  ("fact", x)  ("binom", n, k)
#   ("abs", x)  ("floor", x)  ("ceil", x)


class ParseError(Exception):
    """Not an expression we understand: the answer is compared as text."""


class TooBig(Exception):
    """A number too large to compute exactly (e.g. an exponent tower): compare as text."""


_TOKEN_RE = re.compile(r"\s*(?:(\d+(?:\.\d+)?|\.\d+)|(\\[a-zA-Z]+|\\[{}|])|([a-zA-Z])|(\S))")
_FUNCTIONS = {
    "\\sin", "\\cos", "\\tan", "\\cot", "\\sec", "\\csc", "\\arcsin", "\\arccos", "\\arctan",
    "\\sinh", "\\cosh", "\\tanh", "\\exp", "\\ln", "\\log",
}
_GREEK = {
    "\\" + g for g in (
        "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu "
        "nu xi rho sigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Sigma "
        "Upsilon Phi Psi Omega ell"
    ).split()
}
_ATOM_COMMANDS = {"\\frac", "\\sqrt", "\\binom", "\\pi", "\\infty", "\\lfloor", "\\lceil"} | _FUNCTIONS | _GREEK
_MAX_DEPTH = 60


def _tokenize(s: str) -> list[tuple[str, str]]:
    tokens = []
    pos = 0
    n = len(s)
    while pos < n:
        m = _TOKEN_RE.match(s, pos)
        if not m:  # only trailing whitespace is left
            break
        pos = m.end()
        if m.group(1):
            tokens.append(("num", m.group(1)))
        elif m.group(2):
            tokens.append(("cmd", m.group(2)))
        elif m.group(3):
            tokens.append(("let", m.group(3)))
        elif m.group(4):
            tokens.append(("op", m.group(4)))
    return tokens


class _Parser:
    """Recursive descent over the usual precedence levels, with LaTeX's implicit product.

        expr    := term (('+'|'-') term)*
        term    := unary (('\\cdot'|'*'|'/'|'\\div') unary | <implicit> power)*
        unary   := ('-'|'+') unary | power
        power   := postfix ('^' exponent)?
        postfix := atom '!'*
    """

    def __init__(self, s: str):
        self.toks = _tokenize(s)
        self.i = 0
        self.depth = 0
        self.in_abs = 0

    def parse(self):
        node = self.expr()
        if self.i != len(self.toks):
            raise ParseError(f"unexpected {self.peek()!r}")
        return node

    # -- token helpers
    def peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        if self.i >= len(self.toks):
            raise ParseError("unexpected end")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        if self.take()[1] != text:
            raise ParseError(f"expected {text}")

    def starts_atom(self) -> bool:
        kind, text = (self.toks[self.i] if self.i < len(self.toks) else (None, None))
        if kind in ("num", "let"):
            return True
        if kind == "cmd":
            return text in _ATOM_COMMANDS
        if kind == "op":
            return text in ("(", "{") or (text == "|" and not self.in_abs)
        return False

    # -- grammar
    def expr(self):
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise ParseError("nested too deeply")
        terms = [self.term()]
        while self.peek() in ("+", "-"):
            op = self.take()[1]
            t = self.term()
            terms.append(t if op == "+" else ("neg", t))
        self.depth -= 1
        return terms[0] if len(terms) == 1 else ("add", tuple(terms))

    def term(self):
        factors = [self.unary()]
        while True:
            t = self.peek()
            if t in ("*", "\\cdot"):
                self.take()
                factors.append(self.unary())
            elif t in ("/", "\\div"):
                self.take()
                factors.append(("inv", self.unary()))
            elif self.starts_atom():
                mixed = (
                    t == "\\frac"
                    and len(factors) == 1
                    and self.toks[self.i - 1][0] == "num"  # written digits, not `\frac{8}{2}`
                    and _int_literal(factors[0]) is not None
                )
                node = self.power()
                if mixed and node[0] == "num" and 0 < node[1] < 1:
                    # MATH writes mixed numbers as `2\frac{1}{2}` (= 5/2, not 2 * 1/2).
                    whole = _int_literal(factors[0])
                    value = abs(whole) + node[1]
                    factors[0] = ("num", -value if whole < 0 or factors[0][0] == "neg" else value)
                    continue
                factors.append(node)
            else:
                break
        return factors[0] if len(factors) == 1 else ("mul", tuple(factors))

    def unary(self):
        t = self.peek()
        if t == "-":
            self.take()
            return ("neg", self.unary())
        if t == "+":
            self.take()
            return self.unary()
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek() == "^":
            self.take()
            return ("pow", base, self.exponent())
        return base

    def exponent(self):
        # `x^-1` and `x^{...}`; a bare multi-digit exponent `10^10` is read as 10^{10},
        # the intent of plain-text answers (TeX itself would read 10^1 0).
        t = self.peek()
        if t == "-":
            self.take()
            return ("neg", self.exponent())
        if t == "+":
            self.take()
            return self.exponent()
        return self.postfix()

    def postfix(self):
        node = self.atom()
        while self.peek() == "!":
            self.take()
            node = ("fact", node)
        return node

    def group(self):
        """A macro argument: `{expr}` or a single token."""
        if self.peek() == "{":
            self.take()
            self.depth += 1
            node = self.expr()
            self.depth -= 1
            self.expect("}")
            return node
        return self.atom()

    def subscript_name(self) -> str:
        if self.peek() == "{":
            self.take()
            parts = []
            while self.peek() not in ("}", None):
                parts.append(self.take()[1])
            self.expect("}")
            return "".join(parts)
        return self.take()[1]

    def atom(self):
        kind, text = self.take()
        if kind == "num":
            if self.peek() == "_":  # `1011_2`: a base-2 numeral, not a product
                raise ParseError("number base notation")
            return ("num", Fraction(text))
        if kind == "let" or text in _GREEK:
            name = text
            if self.peek() == "_":
                self.take()
                name += "_" + self.subscript_name()
            elif text == "e":
                return ("const", "e")
            elif text == "i":
                return ("const", "i")
            return ("sym", name)
        if text == "\\pi":
            return ("const", "pi")
        if text == "\\infty":
            return ("const", "inf")
        if text == "\\frac":
            num, den = self.group(), self.group()
            if num[0] == "num" and den[0] == "num":
                if den[1] == 0:
                    raise ParseError("division by zero")
                return ("num", num[1] / den[1])
            return ("mul", (num, ("inv", den)))
        if text == "\\sqrt":
            index = ("num", Fraction(2))
            if self.peek() == "[":
                self.take()
                index = self.expr()
                self.expect("]")
            return ("root", self.group(), index)
        if text == "\\binom":
            return ("binom", self.group(), self.group())
        if text in _FUNCTIONS:
            return self.function(text)
        if text in ("\\lfloor", "\\lceil"):
            inner = self.expr()
            self.expect("\\rfloor" if text == "\\lfloor" else "\\rceil")
            return ("floor" if text == "\\lfloor" else "ceil", inner)
        if text in ("(", "[", "{"):
            self.depth += 1
            inner = self.expr()
            self.depth -= 1
            self.expect({"(": ")", "[": "]", "{": "}"}[text])
            return inner
        if text == "|":
            self.in_abs += 1
            inner = self.expr()
            self.in_abs -= 1
            self.expect("|")
            return ("abs", inner)
        raise ParseError(f"unsupported {text!r}")

    def function(self, name: str):
        power = base = None
        if self.peek() == "^":  # \sin^2 x
            self.take()
            power = self.exponent()
        if name == "\\log" and self.peek() == "_":
            self.take()
            kind, text = self.toks[self.i] if self.i < len(self.toks) else (None, None)
            if kind == "num" and len(text) > 1 and "." not in text:
                # `\log_28` (spaces are gone by now) is TeX for log base 2 of 8
                self.toks[self.i] = ("num", text[1:])
                base = ("num", Fraction(text[0]))
            else:
                base = self.group()
        if self.peek() in ("(", "{", "["):
            arg = self.atom()
        else:  # `\sin 2x` is sin(2x); stop at the next function (`\sin x \cos x`)
            factors = [self.power()]
            while self.starts_atom() and self.peek() not in _FUNCTIONS:
                factors.append(self.power())
            arg = factors[0] if len(factors) == 1 else ("mul", tuple(factors))
        if name in ("\\log", "\\ln"):
            node = ("log", arg, base)
        elif name == "\\exp":
            node = ("pow", ("const", "e"), arg)
        else:
            node = ("fn", name[1:], arg)
        if power is not None:
            if power == ("neg", ("num", 1)):
                raise ParseError("ambiguous inverse-function notation")
            node = ("pow", node, power)
        return node


def _int_literal(node) -> int | None:
    if node[0] == "neg":
        node = node[1]
    if node[0] == "num" and node[1].denominator == 1:
        return int(node[1])
    return None


# --------------------------------------------------------------------------------------
# 2. Three interpretations of an AST: exact rational, float fingerprint, sympy
# --------------------------------------------------------------------------------------

_MAX_EXACT_BITS = 100_000  # ~30,000 digits: instant to compute, and far beyond real answers
_MAX_FACTORIAL = 3000
_MAX_SYMBOLIC_EXPONENT = 1000  # x^{1000} at a rational point: ~3 ms in sympy; x^{10000}: ~0.4 s
MAX_SYMBOLIC_COST = 20_000  # see cost


def _check_power_size(base: Fraction, exp: Fraction) -> None:
    """Refuse base**exp when the exact result would be astronomically large."""
    bits = max(base.numerator.bit_length(), base.denominator.bit_length(), 1)
    if abs(base) != 1 and base != 0 and abs(exp) * bits > _MAX_EXACT_BITS:
        raise TooBig("power")


def _check_exact_size(v: Fraction) -> Fraction:
    """Refuse an exact intermediate result beyond _MAX_EXACT_BITS.

    Sums and products are bounded too, not only powers: each step of a sum of terms
    such as 1/3^{49500} + 1/5^{33000} + ... runs a big-integer gcd that takes time
    quadratic in the size (tens of ms at 100,000 bits, seconds beyond), inside C code
    that no alarm interrupts. The caller also checks the deadline between steps.
    """
    if max(v.numerator.bit_length(), v.denominator.bit_length()) > _MAX_EXACT_BITS:
        raise TooBig("exact value")
    return v


@lru_cache(maxsize=1 << 15)
def exact(node) -> Fraction | None:
    """The exact rational value of a constant expression, or None (symbols, radicals, pi)."""
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind in ("neg", "abs", "inv", "floor", "ceil"):
        v = exact(node[1])
        if v is None:
            return None
        if kind == "neg":
            return -v
        if kind == "abs":
            return abs(v)
        if kind == "floor":
            return Fraction(math.floor(v))
        if kind == "ceil":
            return Fraction(math.ceil(v))
        if v == 0:
            raise ParseError("division by zero")
        return 1 / v
    if kind in ("add", "mul"):
        values = [exact(x) for x in node[1]]  # evaluate all: size guards must run on each
        if any(v is None for v in values):
            return None
        total = Fraction(0 if kind == "add" else 1)
        for v in values:
            tick()
            total = _check_exact_size(total + v if kind == "add" else total * v)
        return total
    if kind == "pow":
        base, exp = exact(node[1]), exact(node[2])
        if base is None or exp is None:
            if exp is not None and abs(exp) > _MAX_SYMBOLIC_EXPONENT:
                raise TooBig("exponent")
            return None
        _check_power_size(base, exp)
        if exp.denominator != 1:
            return None  # irrational in general; sympy decides
        if base == 0 and exp < 0:
            raise ParseError("division by zero")
        return base ** int(exp)
    if kind == "fact":
        v = exact(node[1])
        if v is None or v.denominator != 1 or v < 0:
            return None
        if v > _MAX_FACTORIAL:
            raise TooBig("factorial")
        return Fraction(math.factorial(int(v)))
    if kind == "binom":
        n, k = exact(node[1]), exact(node[2])
        if n is None or k is None or n.denominator != 1 or k.denominator != 1 or n < 0:
            return None
        if n > 100 * _MAX_FACTORIAL:
            raise TooBig("binomial")
        if 0 < k < n:  # log2 C(n, k), estimated before the (uninterruptible) exact computation
            bits = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)
            if bits > _MAX_EXACT_BITS:
                raise TooBig("binomial")
        return Fraction(math.comb(int(n), int(k))) if k >= 0 else Fraction(0)
    if kind == "root":  # evaluate for the size guard; the value itself goes to sympy
        exact(node[1]), exact(node[2])
        return None
    return None


# -- float fingerprint ----------------------------------------------------------------
# Free symbols get the same pseudo-random value in every expression (derived from the
# symbol's name), so fingerprints of different answers are comparable. The values are
# exact rationals in [0.5, 2), so sympy can later substitute the very same points.
N_POINTS = 3


@lru_cache(maxsize=4096)
def _point(name: str, k: int) -> Fraction:
    h = zlib.crc32(f"{k}|{name}".encode())
    return Fraction(50_000 + h % 150_000, 100_000)


_FLOAT_FUNCS = {
    "sin": cmath.sin, "cos": cmath.cos, "tan": cmath.tan, "arcsin": cmath.asin, "arccos": cmath.acos,
    "arctan": cmath.atan, "sinh": cmath.sinh, "cosh": cmath.cosh, "tanh": cmath.tanh,
    "cot": lambda x: 1 / cmath.tan(x), "sec": lambda x: 1 / cmath.cos(x), "csc": lambda x: 1 / cmath.sin(x),
}
_BIG = 1e300


def _num(node, k: int, scale: list) -> complex:
    """Float value at point k. scale[0] tracks the largest magnitude summed (for tolerances)."""
    kind = node[0]
    if kind == "num":
        return complex(float(node[1]))
    if kind == "sym":
        return complex(float(_point(node[1], k)))
    if kind == "const":
        return {"pi": complex(math.pi), "e": complex(math.e), "i": 1j, "inf": complex(math.inf)}[node[1]]
    if kind == "add":
        total = 0j
        for x in node[1]:
            v = _num(x, k, scale)
            scale[0] = max(scale[0], abs(v))
            total += v
        return total
    if kind == "mul":
        product = 1 + 0j
        for x in node[1]:
            product *= _num(x, k, scale)
        return _finite(product)
    if kind == "neg":
        return 0j - _num(node[1], k, scale)  # not -v: -(1+0j) has imag -0.0, below sqrt's branch cut
    if kind == "inv":
        return 1 / _num(node[1], k, scale)
    if kind == "pow":
        b, e = _num(node[1], k, scale), _num(node[2], k, scale)
        if e.imag == 0 and e.real.is_integer() and abs(e.real) <= 64:
            return _finite(b ** int(e.real))  # exact-ish repeated multiplication
        if b == 0:
            if e.real > 0:
                return 0j
            raise ZeroDivisionError
        return _finite(cmath.exp(e * cmath.log(b + 0j)))
    if kind == "root":
        x, n = _num(node[1], k, scale) + 0j, _num(node[2], k, scale)  # + 0j turns -0.0 into 0.0
        if x.imag == 0 and x.real < 0 and n.imag == 0 and n.real % 2 == 1:
            return -((-x.real) ** (1 / n.real)) + 0j  # real odd root: cbrt(-8) = -2
        return cmath.sqrt(x) if n == 2 else (cmath.exp(cmath.log(x) / n) if x != 0 else 0j)
    if kind == "fn":
        return _finite(_FLOAT_FUNCS[node[1]](_num(node[2], k, scale)))
    if kind == "log":
        x = cmath.log(_num(node[1], k, scale) + 0j)
        return x if node[2] is None else x / cmath.log(_num(node[2], k, scale) + 0j)
    if kind == "abs":
        return complex(abs(_num(node[1], k, scale)))
    if kind in ("floor", "ceil", "fact", "binom"):
        x = _num(node[1], k, scale)
        if abs(x.imag) > 1e-12:
            raise ValueError("not real")
        if kind == "floor":
            return complex(math.floor(x.real))
        if kind == "ceil":
            return complex(math.ceil(x.real))
        if kind == "fact":
            return complex(math.gamma(x.real + 1))
        kk = _num(node[2], k, scale).real
        return complex(math.gamma(x.real + 1) / (math.gamma(kk + 1) * math.gamma(x.real - kk + 1)))
    raise ValueError(kind)


def _finite(z: complex) -> complex:
    if abs(z) > _BIG:
        raise OverflowError
    return z


@lru_cache(maxsize=1 << 15)
def fingerprint(node) -> tuple | None:
    """((value, scale), ...) at the fixed points, or None when it cannot be evaluated."""
    out = []
    try:
        for k in range(N_POINTS):
            scale = [0.0]
            v = _num(node, k, scale)
            if not (math.isfinite(v.real) and math.isfinite(v.imag)):
                return None
            out.append((v, max(scale[0], abs(v))))
    except (ArithmeticError, ValueError, TypeError):
        return None
    return tuple(out)


def fingerprints_close(fa: tuple, fb: tuple) -> bool:
    # Loose on purpose: this only has to reject clearly different values; sympy confirms
    # the close ones at 40 digits. The tolerance follows the size of the summed terms, so
    # cancellation in floating point cannot reject a true identity.
    for (a, sa), (b, sb) in zip(fa, fb):
        if abs(a - b) > 1e-7 * max(1.0, sa, sb):
            return False
    return True


# -- sympy ---------------------------------------------------------------------------
_SYMPY_FUNCS = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot, "sec": sympy.sec,
    "csc": sympy.csc, "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan,
    "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh,
}
_SYMPY_CONSTS = {"pi": sympy.pi, "e": sympy.E, "i": sympy.I, "inf": sympy.oo}


@lru_cache(maxsize=1 << 15)
def to_sympy(node) -> sympy.Expr:
    """Build the sympy expression ourselves (no string parsing), refusing huge numbers first."""
    kind = node[0]
    if kind == "num":
        return sympy.Rational(node[1].numerator, node[1].denominator)
    if kind == "sym":
        return sympy.Symbol(node[1])
    if kind == "const":
        return _SYMPY_CONSTS[node[1]]
    if kind == "add":
        return sympy.Add(*[to_sympy(x) for x in node[1]])
    if kind == "mul":
        return sympy.Mul(*[to_sympy(x) for x in node[1]])
    if kind == "neg":
        return -to_sympy(node[1])
    if kind == "inv":
        return 1 / to_sympy(node[1])
    if kind == "pow":
        value = exact(node)  # runs the size guards on towers like 10^{10^{10}}
        if value is not None:
            return sympy.Rational(value.numerator, value.denominator)
        exp_exact = exact(node[2])
        if exp_exact is not None and (
            abs(exp_exact) > _MAX_SYMBOLIC_EXPONENT or exp_exact.denominator > _MAX_SYMBOLIC_EXPONENT
        ):
            raise TooBig("exponent")
        _check_magnitude(node[1], node[2])
        return sympy.Pow(to_sympy(node[1]), to_sympy(node[2]))
    if kind == "root":
        x, n = to_sympy(node[1]), to_sympy(node[2])
        exact(node)  # size guard
        if n == 2:
            return sympy.sqrt(x)
        if x.is_number and x.is_negative and n.is_integer and n.is_odd:
            return -sympy.root(-x, n)  # the real cube root of a negative number
        return sympy.root(x, n)
    if kind == "fn":
        # sin(10^{30000}) needs 30,000 digits of pi: refuse arguments beyond any real answer.
        try:
            if abs(_num(node[2], 0, [0.0])) > 1e9:
                raise TooBig("trigonometric argument")
        except (ArithmeticError, ValueError, TypeError):
            raise TooBig("trigonometric argument") from None
        return _SYMPY_FUNCS[node[1]](to_sympy(node[2]))
    if kind == "log":
        x = to_sympy(node[1])
        return sympy.log(x) if node[2] is None else sympy.log(x, to_sympy(node[2]))
    if kind == "abs":
        return sympy.Abs(to_sympy(node[1]))
    if kind in ("floor", "ceil"):
        return (sympy.floor if kind == "floor" else sympy.ceiling)(to_sympy(node[1]))
    if kind in ("fact", "binom"):
        value = exact(node)  # refuses 100!!!! before sympy tries
        if value is not None:
            return sympy.Integer(int(value))
        if kind == "fact":
            return sympy.factorial(to_sympy(node[1]))
        return sympy.binomial(to_sympy(node[1]), to_sympy(node[2]))
    raise ParseError(kind)


_MAX_LOG_MAGNITUDE = 1e5  # |base^exp| up to e^100000: mpmath copes; e^{e^{e^{100}}} it does not


def _check_magnitude(base, exp) -> None:
    """Refuse irrational powers whose size alone would stall mpmath (e^{e^{e^{100}}}).

    Exact powers are guarded by _check_power_size; this estimates log|base^exp| in floats
    at the first fingerprint point (a float overflow on the way means: far too big).
    """
    try:
        b, e = _num(base, 0, [0.0]), _num(exp, 0, [0.0])
        log_b = abs(cmath.log(b)) if b != 0 else 0.0
    except (ArithmeticError, ValueError, TypeError):
        raise TooBig("magnitude") from None
    if abs(e) * max(1.0, log_b) > _MAX_LOG_MAGNITUDE:
        raise TooBig("magnitude")


def children(node):
    for part in node[1:]:
        if isinstance(part, tuple):
            if part and isinstance(part[0], tuple):  # the term list of "add"/"mul"
                yield from part
            elif part and isinstance(part[0], str):
                yield part


@lru_cache(maxsize=1 << 15)
def cost(node) -> int:
    """A rough bound on sympy's work for a node: its size plus the sizes of exact powers.

    A single sympy call cannot be interrupted outside the main thread (no SIGALRM there),
    so the total work of one call must be bounded before it starts: forty terms like
    (x+1)^{1000} are fine, a hundred are refused and compared as text.
    """
    total = 1 + sum(cost(child) for child in children(node))
    if node[0] in ("pow", "fact", "binom"):
        # the exponent of a power; the argument of a factorial; both arguments of a
        # binomial (sympy expands \binom{x}{150000} or \binom{-5}{10^5} for minutes)
        for part in (node[2],) if node[0] == "pow" else node[1:]:
            v = exact(part)
            if v is not None:
                total += min(int(abs(v)), 10 * MAX_SYMBOLIC_COST)
    return total


_INFINITIES = (sympy.oo, -sympy.oo, sympy.zoo, sympy.nan)


def sympy_same(sa: sympy.Expr, sb: sympy.Expr, magnitude: float, points: int = N_POINTS) -> bool:
    """Exact check with sympy: canonical forms, else the difference at 40 digits.

    ``points``: at how many of the fixed points to evaluate. One is enough after the float
    fingerprints agreed at all of them: sympy's job is then precision, not more points.
    """
    if sa == sb:
        return True
    if sa.has(*_INFINITIES) or sb.has(*_INFINITIES):
        return False  # oo only ever equals oo, and that was the canonical-form check
    diff = sa - sb
    if diff == 0:
        return True
    symbols = sorted(diff.free_symbols, key=lambda s: s.name)
    for k in range(points if symbols else 1):
        tick()
        d = diff.xreplace({s: sympy_point(s.name, k) for s in symbols}) if symbols else diff
        if d == 0:
            continue
        try:  # mpmath gives up on monsters such as e^{e^{e^{e^{10}}}} with OverflowError
            v = complex(d.evalf(40))
        except (ArithmeticError, TypeError, ValueError):
            return False
        if not abs(v) <= 1e-30 * max(1.0, magnitude):
            return False
    return True


@lru_cache(maxsize=4096)
def sympy_point(name: str, k: int) -> sympy.Rational:
    p = _point(name, k)
    return sympy.Rational(p.numerator, p.denominator)


# --------------------------------------------------------------------------------------
# 3. Values: what kind of answer is this (number, tuple, interval, set, equation, ...)?
# --------------------------------------------------------------------------------------
# ("scalar", ast)  ("rel", op, lhs, rhs)  ("chain", ops, operands)  ("seq", open, close, items)
# ("set", items)  ("union", items)  ("matrix", rows)  ("approx", value, rounded value)  ("text", string)

_RELATIONS = ("\\le", "\\ge", "\\ne", "=", "<", ">")
_FLIP = {">": "<", "\\ge": "\\le"}
_OPEN, _CLOSE = "([{", ")]}"


def _split_top(s: str, seps: tuple[str, ...]) -> tuple[list[str], list[str]] | None:
    """Split at separators outside brackets; None if the brackets do not balance.

    Brackets are counted regardless of their kind, so the half-open interval `[1,2)`
    balances. `\\{`/`\\}` count as brackets too.
    """
    parts, found = [], []
    depth = 0
    start = i = 0
    n = len(s)
    while i < n:
        c = s[i]
        step = 1
        if s.startswith("\\{", i):
            depth, step = depth + 1, 2
        elif s.startswith("\\}", i):
            depth, step = depth - 1, 2
        elif c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif depth == 0:
            for sep in seps:
                # `\le` must not match the start of another command such as `\left`
                if s.startswith(sep, i) and not (sep[0] == "\\" and s[i + len(sep) : i + len(sep) + 1].isalpha()):
                    parts.append(s[start:i])
                    found.append(sep)
                    step = len(sep)
                    start = i + step
                    break
        if depth < 0:
            return None
        i += step
    if depth != 0:
        return None
    parts.append(s[start:])
    return parts, found


def _wrapped(s: str, left: str, right: str) -> bool:
    """Does the bracket at the start of s close at its very end?"""
    if not (s.startswith(left) and s.endswith(right)) or len(s) < len(left) + len(right):
        return False
    split = _split_top(s[len(left) : len(s) - len(right)], ())
    return split is not None


_MATRIX_RE = re.compile(r"\\begin\{pmatrix\}(.*)\\end\{pmatrix\}", re.DOTALL)
_LETTER_RUN_RE = re.compile(r"[A-Za-z]{3,}")


@lru_cache(maxsize=1 << 15)
def parse_value(s: str, top: bool = True):
    text = ("text", s.casefold())
    if not s:
        return text
    m = _MATRIX_RE.fullmatch(s)
    if m:
        rows = [r for r in re.split(r"\\\\", m.group(1)) if r.strip()]
        cells = tuple(tuple(parse_value(c.strip(), False) for c in r.split("&")) for r in rows)
        if cells and len({len(r) for r in cells}) == 1:
            return ("matrix", cells)
        return text
    if top and "\\approx" in s:
        # `\frac{\sqrt3}{3}\approx0.577`: an exact value and its rounding
        split = _split_top(s, ("\\approx",))
        if split is not None and len(split[0]) == 2 and all(p.strip() for p in split[0]):
            exact_part, rounded = (parse_value(p.strip(), False) for p in split[0])
            return ("approx", exact_part, rounded)
        return text
    if top and s.count("\\pm") == 1 and "\\mp" not in s:
        # `1\pm\sqrt2` is the solution list `1+\sqrt2, 1-\sqrt2`.
        return ("set", (parse_value(s.replace("\\pm", "+"), False), parse_value(s.replace("\\pm", "-"), False)))
    split = _split_top(s, (",",))
    if split is None:
        return text
    if len(split[0]) > 1:
        if not top or any(not p.strip() for p in split[0]):
            return text
        # A bare comma-separated list is a list of solutions ("1, 2"), as MATH asks for with
        # "enter all the solutions, separated by commas": order does not matter.
        return ("set", tuple(parse_value(p.strip(), False) for p in split[0]))
    split = _split_top(s, ("\\cup",))
    if split is not None and len(split[0]) > 1:
        items = tuple(parse_value(p.strip(), False) for p in split[0])
        if all(v[0] in ("seq", "set") for v in items):
            return ("union", items)
        return text
    if s == "\\emptyset":
        return ("set", ())
    if _wrapped(s, "\\{", "\\}"):
        inner = _split_top(s[2:-2], (",",))
        if inner is None:
            return text
        return ("set", tuple(parse_value(p.strip(), False) for p in inner[0] if p.strip()))
    if s[0] in "([" and s[-1] in ")]" and _wrapped(s, s[0], s[-1]):
        inner = _split_top(s[1:-1], (",",))
        if inner is not None and len(inner[0]) > 1:
            # Tuples and intervals alike: ordered items with their brackets, so `(1,2)` !=
            # `(2,1)` and `[1,2)` != `[1,2]`.
            return ("seq", s[0], s[-1], tuple(parse_value(p.strip(), False) for p in inner[0]))
    split = _split_top(s, _RELATIONS)
    if split is not None and len(split[0]) > 1:
        parts, ops = split
        try:
            asts = [parse_scalar(p) for p in parts]
        except ParseError:
            return text
        if len(asts) == 2:
            lhs, rhs = asts
            if ops[0] in _FLIP:
                return ("rel", _FLIP[ops[0]], rhs, lhs)
            return ("rel", ops[0], lhs, rhs)
        if all(op in _FLIP for op in ops):  # 3 > x > 1  ->  1 < x < 3
            return ("chain", tuple(_FLIP[o] for o in reversed(ops)), tuple(reversed(asts)))
        return ("chain", tuple(ops), tuple(asts))
    try:
        return ("scalar", parse_scalar(s))
    except ParseError:
        return text


def parse_scalar(s: str):
    # Three letters in a row are words ("Monday", "odd"), not a product of variables:
    # as a product, "listen" would equal "silent".
    if not s or _LETTER_RUN_RE.search(_COMMAND_RE.sub(" ", s)):
        raise ParseError("words")
    try:
        return _Parser(s).parse()
    except (ArithmeticError, ValueError, RecursionError) as e:
        raise ParseError(str(e)) from None


def clear_caches() -> None:
    """Forget every cached parse and interpretation."""
    for f in (parse_value, exact, fingerprint, to_sympy, cost):
        f.cache_clear()
