"""The answer engine: find the final answer in a solution and grade it against a gold answer.

Every evaluator, the sampler's majority vote and the solution-cluster re-ranker of
Liu et al. (2023) depend on one question: "are these two answers the same?". This
module answers it in three stages, cheapest first:

1. ``extract_answer``: the content of the last ``\\boxed{...}`` (the MATH convention),
   with fallbacks for "The final answer is ..." and GSM8K's ``#### N``.
2. ``normalize_answer``: a MATH-style string clean-up (``\\dfrac`` -> ``\\frac``, units,
   ``\\text{}``, degrees, ``x =`` prefixes, thousands separators, ...). Most equal
   answers are caught here, by plain string equality, in microseconds.
3. A symbolic comparison for the rest. Our own small LaTeX parser turns each normalized
   answer into a *value*: a scalar expression, an equation, a tuple, an interval, a set,
   a matrix, or plain text. Scalars are compared by, in order:

   - exact rational arithmetic (``\\frac{1}{2}`` == ``0.5``; ``\\frac{1}{3}`` != ``0.33``);
   - a float "fingerprint": the value at three fixed pseudo-random points for the free
     symbols, which rejects almost every unequal pair without touching sympy;
   - sympy, only for pairs whose fingerprints agree: canonical-form equality, then the
     difference evaluated to 40 significant digits at those points. Decimals are parsed
     as exact rationals, so ``3.14159`` is never equal to ``\\pi``.

Safety: ``is_equiv`` never raises and returns within 1 s, in three layers:

1. Cheap refusals before any work. Answers longer than ``MAX_ANSWER_CHARS`` are compared
   as text; the parser limits nesting depth; exact powers and factorials are size-checked
   before they are computed (``10^{10^{10^{10}}}``, ``2^{2^{2^{2^{100}}}}``, ``100!!!!``);
   irrational powers are checked by their float logarithm (``e^{e^{e^{100}}}``); and the
   total sympy work of one expression is bounded (``_cost``). Refused answers fall back
   to text comparison, so identical monsters are still equal.
2. A cooperative deadline, checked between comparison steps (and between the items of
   a set or tuple). It works in every thread.
3. A ``SIGALRM`` interval timer when called from the main thread (a process-pool worker
   runs its tasks in its main thread too), which also interrupts long sympy calls. Other
   threads cannot receive signals; for them, layer 1 keeps every single sympy call short
   (tens of milliseconds) and layer 2 bounds their sum.

A timer costs microseconds per comparison and only the comparisons that reach the
symbolic stage pay it; a process per call would cost milliseconds, hence this design.
A comparison that runs out of time answers False and is not cached.

Conventions (MATH-style, decided here): tuples and intervals are ordered, sets and bare
comma-separated lists ("1, 2": MATH's "enter all solutions") are not; percent signs,
degree signs, units and ``x =`` prefixes are ignored (so ``50\\%`` == ``50`` != ``0.5``);
``2\\frac{1}{2}`` is a mixed number; ``e`` and ``i`` are Euler's number and the imaginary
unit; ``\\log`` is the natural logarithm; a column vector equals the same tuple; words
compare case-insensitively; ``a\\pm b`` is the list ``a+b, a-b``.

The LaTeX parser builds sympy objects itself and never calls ``eval``/``sympify`` on
the input, so untrusted model output cannot execute code.
"""

from __future__ import annotations

import cmath
import math
import os
import re
import signal
import threading
import time
import zlib
from contextlib import contextmanager
from fractions import Fraction
from functools import lru_cache

import sympy

__all__ = [
    "MAX_ANSWER_CHARS",
    "TIME_BUDGET_S",
    "extract_answer",
    "is_equiv",
    "normalize_answer",
]

# Answers longer than this are compared as stripped text only. Real answers are short
# (the longest MATH gold answer is a few hundred characters); long ones are usually
# runaway generations, and they are where parsers get slow.
MAX_ANSWER_CHARS = 1000
# Wall-clock budget of the symbolic stage of one is_equiv call. The guarantee is 1 s in
# total; the margin covers normalization, parsing and a busy machine.
TIME_BUDGET_S = 0.5
# Set MATHLITE_ANSWERS_STRICT=1 to let unexpected internal errors propagate (debugging).
_STRICT = os.environ.get("MATHLITE_ANSWERS_STRICT") == "1"


# --------------------------------------------------------------------------------------
# 1. Extraction
# --------------------------------------------------------------------------------------

_BOX_KEYWORDS = ("\\boxed", "\\fbox")
_ANSWER_IS_RE = re.compile(r"(?:\bfinal\s+answer|\bthe\s+answer)\s+is\b[ \t]*:?[ \t]*", re.IGNORECASE)
_GSM8K_RE = re.compile(r"####[ \t]*([^\n]*)")
_BARE_BOX_ARG_RE = re.compile(r"[^\s$]+")


def extract_answer(text: str) -> str | None:
    """Return the final answer in ``text``, or None when there is none.

    The last ``\\boxed{...}``/``\\fbox{...}`` wins (MATH convention). An unbalanced last
    box (a generation cut off mid-answer) gives None rather than a guess. Without a box:
    the last "The final answer is X" / "The answer is X" / "#### X", whichever is later.
    """
    if not isinstance(text, str):
        return None
    box = _last_box(text)
    if box is not None:
        return _box_content(text, box)
    best_pos, best = -1, None
    for m in _ANSWER_IS_RE.finditer(text):
        best_pos, best = m.start(), _answer_after(text, m.end())
    for m in _GSM8K_RE.finditer(text):
        if m.start() > best_pos:
            best_pos, best = m.start(), m.group(1).strip()
    return best or None


def _last_box(text: str) -> int | None:
    """Index just after the last ``\\boxed``/``\\fbox`` keyword (not ``\\boxedx``)."""
    best = None
    for kw in _BOX_KEYWORDS:
        end = len(text)
        while True:
            i = text.rfind(kw, 0, end)
            if i < 0:
                break
            after = i + len(kw)
            if after >= len(text) or not text[after].isalpha():
                if best is None or after > best:
                    best = after
                break
            end = i
    return best


def _box_content(text: str, i: int) -> str | None:
    n = len(text)
    while i < n and text[i] in " \t":
        i += 1
    if i >= n:
        return None
    if text[i] != "{":
        # `\boxed 5` (TeX accepts a single token without braces): take up to a space or `$`.
        m = _BARE_BOX_ARG_RE.match(text, i)
        return m.group(0) if m else None
    end = _matching_brace(text, i)
    if end is None:
        return None
    content = text[i + 1 : end].strip()
    return content or None


def _matching_brace(s: str, i: int) -> int | None:
    """Index of the `}` closing the `{` at s[i]; escaped `\\{`/`\\}` do not count."""
    depth = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _answer_after(text: str, i: int) -> str | None:
    """The answer that follows "the answer is": a `$...$` span, else the rest of the sentence."""
    rest = text[i : i + 2 * MAX_ANSWER_CHARS]
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if rest.startswith(left):
            end = rest.find(right, len(left))
            if end > 0:
                return rest[len(left) : end].strip() or None
            rest = rest[len(left) :]
            break
    line = rest.split("\n", 1)[0]
    # A sentence ends at a period followed by a space (or the end), not at `3.5`.
    m = re.search(r"\.(?:\s|$)", line)
    if m:
        line = line[: m.start()]
    return line.strip().rstrip("$").strip() or None


# --------------------------------------------------------------------------------------
# 2. Normalization
# --------------------------------------------------------------------------------------

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ", "\u00f7": "\\div ",
    "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u221a": "\\sqrt", "\u2264": "\\le ", "\u2265": "\\ge ",
    "\u2260": "\\ne ", "\u222a": "\\cup ", "\u00b0": "", "\u00a0": " ", "\u2009": " ",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))

# (pattern, replacement) applied in order. Order matters: e.g. `\left\{` must become `\{`
# before braces are counted, and `^{\circ}` must go before `\circ`.
_SUBS = [(re.compile(p), r) for p, r in [
    (r"\\[dtc]frac(?![a-zA-Z])", r"\\frac"),
    (r"\\[dt]binom(?![a-zA-Z])", r"\\binom"),
    (r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])\.?", ""),
    (r"\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits|mathstrut)(?![a-zA-Z])", ""),
    (r"(?<=\d),\\!(?=\d{3}(?!\d))", ""),  # MATH's thousands separator `20,\!000`
    (r"(?<!\\)\\!", ""),
    (r"(?<!\\)\\[,;: ]|~|\\q?quad(?![a-zA-Z])", " "),
    (r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![a-zA-Z])|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])", ""),
    (r"\\%|%", ""),
    (r"\\\$|\$", ""),
    (r"\\lbrace(?![a-zA-Z])", r"\\{"),
    (r"\\rbrace(?![a-zA-Z])", r"\\}"),
    (r"\\langle(?![a-zA-Z])", "("),
    (r"\\rangle(?![a-zA-Z])", ")"),
    (r"\\leqslant|\\leq(?![a-zA-Z])|<=", r"\\le "),
    (r"\\geqslant|\\geq(?![a-zA-Z])|>=", r"\\ge "),
    (r"\\neq(?![a-zA-Z])", r"\\ne "),
    (r"\\lt(?![a-zA-Z])", "<"),
    (r"\\gt(?![a-zA-Z])", ">"),
    (r"\\varnothing(?![a-zA-Z])|\\\{\s*\\\}", r"\\emptyset "),
    (r"\\infinity(?![a-zA-Z])|\\inf(?![a-zA-Z])", r"\\infty "),
    (r"\\mathbb\s*\{\s*R\s*\}|\\mathbb\s*R(?![a-zA-Z])", r"(-\\infty,\\infty)"),
    (r"\\(?:cdots|dots|dotsc|dotsb)(?![a-zA-Z])", r"\\ldots "),
    (r"\\(begin|end)\s*\{\s*[bBvVp]?matrix\s*\}", r"\\\1{pmatrix}"),
    (r"\\(?:cdot|times)(?![a-zA-Z])", r"\\cdot "),
]]

# `\text{...}`-like macros. Their words are units or prose after a value ("5\text{ cm}"),
# or the whole answer ("\text{Monday}", "\text{(A)}").
_TEXT_MACRO_RE = re.compile(
    r"\\(text|textrm|textnormal|textup|textsf|texttt|textit|textbf|mbox|hbox|mathrm|mathit"
    r"|mathbf|mathsf|boldsymbol|bm|emph|operatorname)\s*(?=\{)"
)
_TEXT_CONJUNCTION_RE = re.compile(r"[\s,]*(?:and|or)?[\s,]*")
_BOLD_MACROS = {"mathbf", "boldsymbol", "bm", "operatorname", "mathsf"}  # always unwrapped
_WORDS_RE = re.compile(r"[A-Za-z][A-Za-z .'\-]*")
_UNIT_POWER_RE = re.compile(r"\s*\^\s*(?:\{\s*[23]\s*\}|[23])")

# Plain (non-\text) unit words stripped from the end of an answer. Multi-letter only:
# a single letter after a number ("5m") is more often a variable than metres.
_UNITS = (
    r"units?|sq\.?|square|cubic|cm|centimeters?|mm|millimeters?|km|kilometers?|meters?|metres?|"
    r"in\.?|inch(?:es)?|ft|feet|foot|yards?|yd|miles?|mph|kph|hours?|hrs?|minutes?|mins?|"
    r"seconds?|secs?|days?|weeks?|months?|years?|dollars?|cents?|degrees?|radians?|pounds?|"
    r"lbs?|ounces?|oz|grams?|kg|kilograms?|liters?|litres?|ml|gallons?|quarts?|pints?|cups?"
)
_PLAIN_UNIT_RE = re.compile(
    rf"(?:(?<=[\d}}).\]])\s*|\s+)(?:(?:square|sq\.?|cubic)\s+)?(?:{_UNITS})(?![A-Za-z])"
    rf"(?:\s*\^\s*\{{?[23]\}}?)?\.?\s*$"
)
# "12 apples": a plain number followed only by words -> the number.
_NUMBER_THEN_WORDS_RE = re.compile(r"^([+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+))\s+[A-Za-z]{2,}[A-Za-z\s.'\-]*$")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_SPACES_RE = re.compile(r"(\\[a-zA-Z]+)?\s+")
_SHORT_LHS_RE = re.compile(
    r"^(?:[A-Z]{2,3}|[a-zA-Z](?:_\{?\w+\}?)?|\\[a-zA-Z]+|[a-zA-Z]\([a-zA-Z]\)|\((?:[a-zA-Z],)+[a-zA-Z]\))(=|\\in(?![a-zA-Z]))"
)
_RELATION_HINT_RE = re.compile(r"<|>|\\le(?![a-zA-Z])|\\ge(?![a-zA-Z])|\\ne(?![a-zA-Z])")
_VARIABLE_RE = re.compile(r"(?<![A-Za-z])[A-Za-z]{1,2}(?![A-Za-z])")
_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_BRACED_SUBSCRIPT_RE = re.compile(r"_\{([A-Za-z0-9])\}")
_LEADING_ZEROS_RE = re.compile(r"(?<![\d.])0+(?=\d)")
_BARE_DECIMAL_RE = re.compile(r"(?<!\d)\.(?=\d)")
_PLAIN_NUMBER_RE = re.compile(r"([+-]?)(\d+)(?:\.(\d*))?")
_INT_SLASH_RE = re.compile(r"(-?)(\d+)/(\d+)")
_CHOICE_RE = re.compile(r"\(([A-Z])\)")
_FIX_ARGS_RE = re.compile(r"\\(frac|binom|sqrt)(?![a-zA-Z])")


def normalize_answer(s: str) -> str:
    """MATH-style normalization of one answer string ("" for non-strings).

    Strings longer than ``MAX_ANSWER_CHARS`` are only stripped: they are compared as text.
    """
    if not isinstance(s, str):
        return ""
    s = s.strip()
    if len(s) > MAX_ANSWER_CHARS:
        return s
    try:
        return _normalize(s)
    except RecursionError:  # pathological nesting in a \text{} or \frac argument
        return s


@lru_cache(maxsize=1 << 16)
def _normalize(s: str) -> str:
    s = _UNICODE_RE.sub(lambda m: _UNICODE[m.group(0)], s)
    s = " ".join(s.split())  # newlines, tabs, runs of spaces -> one space
    s = _unwrap_outer(s)
    if "\\" in s or "$" in s or "%" in s or "<" in s or ">" in s or "!" in s or "~" in s:
        for pattern, repl in _SUBS:
            s = pattern.sub(repl, s)
    if "\\" in s:
        s = _replace_text_macros(s)
    s = s.strip()
    if s.startswith("\\approx"):
        s = s[len("\\approx") :]
    s = _PLAIN_UNIT_RE.sub("", s).strip()
    m = _NUMBER_THEN_WORDS_RE.match(s)
    if m and not re.search(r"\b(?:and|or|pi)\b", s):
        s = m.group(1)
    s = re.sub(r"\s+(?:and|or)\s+", ",", s)
    s = re.sub(r"\s*,[\s,]*,\s*", ",", s)  # "6, 8, and 10" left two commas in a row
    # Thousands separators: `1{,}000` always; `1,000` only when the whole answer is one
    # number, so that the tuple `(1,000, 2)` or the list `1, 234` keep their commas.
    s = s.replace("{,}", "")
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    # Spaces carry no meaning, except between letters and commands (see _space_repl).
    s = _SPACES_RE.sub(_space_repl, s)
    s = s.rstrip(".").strip()
    if s.endswith("\\\\"):
        s = s[:-2]
    s = _strip_outer_braces(s)
    s = _BRACED_SUBSCRIPT_RE.sub(r"_\1", s)  # `1011_{2}` -> `1011_2`
    s = _strip_short_lhs(s)
    s = _fix_macro_args(s)
    s = _LEADING_ZEROS_RE.sub("", s)
    s = _BARE_DECIMAL_RE.sub("0.", s)
    m = _PLAIN_NUMBER_RE.fullmatch(s)
    if m:  # canonical plain number: -0 -> 0, 2.50 -> 2.5, 3.0 -> 3, +5 -> 5
        sign, whole, frac = m.group(1), m.group(2).lstrip("0") or "0", (m.group(3) or "").rstrip("0")
        s = whole + ("." + frac if frac else "")
        if sign == "-" and s != "0":
            s = "-" + s
    m = _INT_SLASH_RE.fullmatch(s)
    if m:
        s = f"{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(3)}}}"
    m = _CHOICE_RE.fullmatch(s)
    if m:  # multiple choice: "(A)" == "A"
        s = m.group(1)
    # Thousands separators are gone by now, so every comma separates items. Writing them
    # as ", " keeps the result unambiguous: normalizing "81, 256" twice must not give 81256.
    return s.replace(",", ", ")


def _space_repl(m: re.Match) -> str:
    cmd = m.group(1) or ""
    nxt = m.string[m.end() : m.end() + 1]
    prev = m.string[m.start() - 1 : m.start()] if m.start() else ""
    # Keep one space between a command or a letter and a following letter: `\pi r` must not
    # become `\pir`, and `a x y` (a product) must not look like the word `axy`.
    return cmd + " " if nxt.isalpha() and (cmd or prev.isalpha()) else cmd


def _unwrap_outer(s: str) -> str:
    """Drop math delimiters or a box around the whole answer: `$x$`, `\\(x\\)`, `\\boxed{x}`."""
    for _ in range(10):
        t = s.strip()
        if len(t) >= 4 and t.startswith("$$") and t.endswith("$$"):
            t = t[2:-2]
        elif len(t) >= 2 and t[0] == "$" and t[-1] == "$" and t[-2:] != "\\$":
            t = t[1:-1]
        elif t.startswith(("\\(", "\\[")) and t.endswith(("\\)", "\\]")):
            t = t[2:-2]
        elif t.startswith(_BOX_KEYWORDS) and t.endswith("}"):
            j = _last_box(t)
            if j is None or j != len("\\boxed" if t.startswith("\\boxed") else "\\fbox"):
                break  # another box later in the string: not a single wrapped answer
            while j < len(t) and t[j] == " ":
                j += 1
            if j >= len(t) or t[j] != "{" or _matching_brace(t, j) != len(t) - 1:
                break
            t = t[j + 1 : -1]
        else:
            break
        s = t
    return s.strip()


def _replace_text_macros(s: str) -> str:
    """Unwrap `\\text{...}`-like macros, dropping unit words that follow a value."""
    out: list[str] = []
    pos = 0
    while True:
        m = _TEXT_MACRO_RE.search(s, pos)
        if not m:
            break
        end = _matching_brace(s, m.end())
        if end is None:
            break
        raw = s[m.end() + 1 : end]
        if "\\" in raw:
            raw = _replace_text_macros(raw)  # \text{\textbf{(A)}}
        content = raw.strip()
        out.append(s[pos : m.start()])
        before = "".join(out).rstrip()
        pos = end + 1
        if _TEXT_CONJUNCTION_RE.fullmatch(content.lower()) and content.strip(" ,"):  # "\text{, and }"
            out.append(",")
            continue
        is_words = _WORDS_RE.fullmatch(content) is not None
        # Words after a value are units or prose ("5\text{ cm}", "3\mbox{ inches}"). A single
        # letter glued to the value ("4\mathrm{i}") is kept: it is probably a symbol.
        if (
            m.group(1) not in _BOLD_MACROS
            and is_words
            and before
            and (before[-1].isalnum() or before[-1] in "})].")  # after a value, not after "x ="
            and (len(content) >= 2 or raw.startswith(" "))
        ):
            u = _UNIT_POWER_RE.match(s, pos)  # the ^2 of "\text{cm}^2" belongs to the unit
            if u:
                pos = u.end()
            out.append(" ")
            continue
        out.append(raw)
    out.append(s[pos:])
    return "".join(out)


def _strip_outer_braces(s: str) -> str:
    while len(s) >= 2 and s[0] == "{" and _matching_brace(s, 0) == len(s) - 1:
        s = s[1:-1]
    return s


def _strip_short_lhs(s: str) -> str:
    """`x=5` -> `5`, `f(x)=x^2` -> `x^2`, `(x,y)=(1,2)` -> `(1,2)`, `x\\in[0,1]` -> `[0,1]`.

    Only when the left side is a lone variable (or a segment name such as `AB`) and the
    answer holds no other relation: `x^2+y^2=1` stays an equation, and so does `y=2x+1`,
    whose right side has variables (see below).
    """
    m = _SHORT_LHS_RE.match(s)
    if not m or _RELATION_HINT_RE.search(s):
        return s
    rest = s[m.end() :]
    if m.group(1) == "=":
        if s.count("=") != 1:
            return s
        lhs = s[: m.start(1)]
        # `y=2x+1` stays an equation, so that it can still match `2y=4x+2`; the comparison
        # treats `y=2x+1` and `2x+1` as equal anyway. Function notation `f(x)=` is dropped.
        if "(" not in lhs and _VARIABLE_RE.search(_COMMAND_RE.sub(" ", rest)):
            return s  # (`x=Saturday` has words, not variables, on the right: it is stripped)
    return rest if rest else s


def _fix_macro_args(s: str) -> str:
    r"""Brace single-token arguments: `\frac12` -> `\frac{1}{2}`, `\sqrt2` -> `\sqrt{2}`."""
    if "\\frac" not in s and "\\sqrt" not in s and "\\binom" not in s:
        return s
    try:
        return _fix_macro_args_rec(s)
    except RecursionError:  # absurdly deep nesting: leave it, it will be compared as text
        return s


def _fix_macro_args_rec(s: str) -> str:
    out: list[str] = []
    pos = 0
    for m in _FIX_ARGS_RE.finditer(s):
        if m.start() < pos:  # inside an argument we already copied
            continue
        out.append(s[pos : m.end()])
        j = m.end()
        if m.group(1) == "sqrt" and j < len(s) and s[j] == "[":
            close = s.find("]", j)
            if close < 0:
                pos = j
                continue
            out.append(s[j : close + 1])
            j = close + 1
        for _ in range(1 if m.group(1) == "sqrt" else 2):
            arg, j = _read_arg(s, j)
            if arg is None:
                break
            out.append(arg)
        pos = j
    out.append(s[pos:])
    return "".join(out)


def _read_arg(s: str, j: int) -> tuple[str | None, int]:
    """One macro argument at s[j]: `{group}` (fixed recursively), `\\cmd`, or one character."""
    if j >= len(s):
        return None, j
    if s[j] == "{":
        end = _matching_brace(s, j)
        if end is None:
            return None, j
        return "{" + _fix_macro_args_rec(s[j + 1 : end]) + "}", end + 1
    if s[j] == "\\":
        m = re.match(r"\\[a-zA-Z]+", s[j:])
        if not m:
            return None, j
        return "{" + m.group(0) + "}", j + m.end()
    if s[j] in "}^_)]":
        return None, j
    return "{" + s[j] + "}", j + 1


# --------------------------------------------------------------------------------------
# 3a. A small LaTeX parser: normalized string -> AST of nested tuples
# --------------------------------------------------------------------------------------
# AST nodes are hashable tuples, so every later stage can be cached per node:
#   ("num", Fraction)  ("sym", name)  ("const", "pi"|"e"|"i"|"inf")
#   ("add", (terms...))  ("mul", (factors...))  ("neg", x)  ("inv", x)  ("pow", base, exp)
#   ("root", x, n)  ("fn", name, x)  ("log", x, base|None)  ("fact", x)  ("binom", n, k)
#   ("abs", x)  ("floor", x)  ("ceil", x)


class _ParseError(Exception):
    """Not an expression we understand: the answer is compared as text."""


class _TooBig(Exception):
    """A number too large to compute exactly (e.g. an exponent tower): compare as text."""


class _Timeout(BaseException):
    """The time budget of one comparison ran out.

    A BaseException, like KeyboardInterrupt, so that the `except Exception:` blocks inside
    sympy cannot swallow it when the alarm fires in the middle of their code.
    """


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
            raise _ParseError(f"unexpected {self.peek()!r}")
        return node

    # -- token helpers
    def peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        if self.i >= len(self.toks):
            raise _ParseError("unexpected end")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        if self.take()[1] != text:
            raise _ParseError(f"expected {text}")

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
            raise _ParseError("nested too deeply")
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
                raise _ParseError("number base notation")
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
                    raise _ParseError("division by zero")
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
        raise _ParseError(f"unsupported {text!r}")

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
                raise _ParseError("ambiguous inverse-function notation")
            node = ("pow", node, power)
        return node


def _int_literal(node) -> int | None:
    if node[0] == "neg":
        node = node[1]
    if node[0] == "num" and node[1].denominator == 1:
        return int(node[1])
    return None


# --------------------------------------------------------------------------------------
# 3b. Three interpretations of an AST: exact rational, float fingerprint, sympy
# --------------------------------------------------------------------------------------

_MAX_EXACT_BITS = 100_000  # ~30,000 digits: instant to compute, and far beyond real answers
_MAX_FACTORIAL = 3000
_MAX_SYMBOLIC_EXPONENT = 1000  # x^{1000} at a rational point: ~3 ms in sympy; x^{10000}: ~0.4 s
_MAX_SYMBOLIC_COST = 20_000  # see _cost


def _check_power_size(base: Fraction, exp: Fraction) -> None:
    """Refuse base**exp when the exact result would be astronomically large."""
    bits = max(base.numerator.bit_length(), base.denominator.bit_length(), 1)
    if abs(base) != 1 and base != 0 and abs(exp) * bits > _MAX_EXACT_BITS:
        raise _TooBig("power")


def _check_exact_size(v: Fraction) -> Fraction:
    """Refuse an exact intermediate result beyond _MAX_EXACT_BITS.

    Sums and products are bounded too, not only powers: each step of a sum of terms
    such as 1/3^{49500} + 1/5^{33000} + ... runs a big-integer gcd that takes time
    quadratic in the size (tens of ms at 100,000 bits, seconds beyond), inside C code
    that no alarm interrupts. The caller also checks the deadline between steps.
    """
    if max(v.numerator.bit_length(), v.denominator.bit_length()) > _MAX_EXACT_BITS:
        raise _TooBig("exact value")
    return v


@lru_cache(maxsize=1 << 15)
def _exact(node) -> Fraction | None:
    """The exact rational value of a constant expression, or None (symbols, radicals, pi)."""
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind in ("neg", "abs", "inv", "floor", "ceil"):
        v = _exact(node[1])
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
            raise _ParseError("division by zero")
        return 1 / v
    if kind in ("add", "mul"):
        values = [_exact(x) for x in node[1]]  # evaluate all: size guards must run on each
        if any(v is None for v in values):
            return None
        total = Fraction(0 if kind == "add" else 1)
        for v in values:
            _tick()
            total = _check_exact_size(total + v if kind == "add" else total * v)
        return total
    if kind == "pow":
        base, exp = _exact(node[1]), _exact(node[2])
        if base is None or exp is None:
            if exp is not None and abs(exp) > _MAX_SYMBOLIC_EXPONENT:
                raise _TooBig("exponent")
            return None
        _check_power_size(base, exp)
        if exp.denominator != 1:
            return None  # irrational in general; sympy decides
        if base == 0 and exp < 0:
            raise _ParseError("division by zero")
        return base ** int(exp)
    if kind == "fact":
        v = _exact(node[1])
        if v is None or v.denominator != 1 or v < 0:
            return None
        if v > _MAX_FACTORIAL:
            raise _TooBig("factorial")
        return Fraction(math.factorial(int(v)))
    if kind == "binom":
        n, k = _exact(node[1]), _exact(node[2])
        if n is None or k is None or n.denominator != 1 or k.denominator != 1 or n < 0:
            return None
        if n > 100 * _MAX_FACTORIAL:
            raise _TooBig("binomial")
        if 0 < k < n:  # log2 C(n, k), estimated before the (uninterruptible) exact computation
            bits = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)
            if bits > _MAX_EXACT_BITS:
                raise _TooBig("binomial")
        return Fraction(math.comb(int(n), int(k))) if k >= 0 else Fraction(0)
    if kind == "root":  # evaluate for the size guard; the value itself goes to sympy
        _exact(node[1]), _exact(node[2])
        return None
    return None


# -- float fingerprint ----------------------------------------------------------------
# Free symbols get the same pseudo-random value in every expression (derived from the
# symbol's name), so fingerprints of different answers are comparable. The values are
# exact rationals in [0.5, 2), so sympy can later substitute the very same points.
_N_POINTS = 3


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
def _fingerprint(node) -> tuple | None:
    """((value, scale), ...) at the fixed points, or None when it cannot be evaluated."""
    out = []
    try:
        for k in range(_N_POINTS):
            scale = [0.0]
            v = _num(node, k, scale)
            if not (math.isfinite(v.real) and math.isfinite(v.imag)):
                return None
            out.append((v, max(scale[0], abs(v))))
    except (ArithmeticError, ValueError, TypeError):
        return None
    return tuple(out)


def _fingerprints_close(fa: tuple, fb: tuple) -> bool:
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
def _to_sympy(node) -> sympy.Expr:
    """Build the sympy expression ourselves (no string parsing), refusing huge numbers first."""
    kind = node[0]
    if kind == "num":
        return sympy.Rational(node[1].numerator, node[1].denominator)
    if kind == "sym":
        return sympy.Symbol(node[1])
    if kind == "const":
        return _SYMPY_CONSTS[node[1]]
    if kind == "add":
        return sympy.Add(*[_to_sympy(x) for x in node[1]])
    if kind == "mul":
        return sympy.Mul(*[_to_sympy(x) for x in node[1]])
    if kind == "neg":
        return -_to_sympy(node[1])
    if kind == "inv":
        return 1 / _to_sympy(node[1])
    if kind == "pow":
        exact = _exact(node)  # runs the size guards on towers like 10^{10^{10}}
        if exact is not None:
            return sympy.Rational(exact.numerator, exact.denominator)
        exp_exact = _exact(node[2])
        if exp_exact is not None and (
            abs(exp_exact) > _MAX_SYMBOLIC_EXPONENT or exp_exact.denominator > _MAX_SYMBOLIC_EXPONENT
        ):
            raise _TooBig("exponent")
        _check_magnitude(node[1], node[2])
        return sympy.Pow(_to_sympy(node[1]), _to_sympy(node[2]))
    if kind == "root":
        x, n = _to_sympy(node[1]), _to_sympy(node[2])
        _exact(node)  # size guard
        if n == 2:
            return sympy.sqrt(x)
        if x.is_number and x.is_negative and n.is_integer and n.is_odd:
            return -sympy.root(-x, n)  # the real cube root of a negative number
        return sympy.root(x, n)
    if kind == "fn":
        # sin(10^{30000}) needs 30,000 digits of pi: refuse arguments beyond any real answer.
        try:
            if abs(_num(node[2], 0, [0.0])) > 1e9:
                raise _TooBig("trigonometric argument")
        except (ArithmeticError, ValueError, TypeError):
            raise _TooBig("trigonometric argument") from None
        return _SYMPY_FUNCS[node[1]](_to_sympy(node[2]))
    if kind == "log":
        x = _to_sympy(node[1])
        return sympy.log(x) if node[2] is None else sympy.log(x, _to_sympy(node[2]))
    if kind == "abs":
        return sympy.Abs(_to_sympy(node[1]))
    if kind in ("floor", "ceil"):
        return (sympy.floor if kind == "floor" else sympy.ceiling)(_to_sympy(node[1]))
    if kind in ("fact", "binom"):
        exact = _exact(node)  # refuses 100!!!! before sympy tries
        if exact is not None:
            return sympy.Integer(int(exact))
        if kind == "fact":
            return sympy.factorial(_to_sympy(node[1]))
        return sympy.binomial(_to_sympy(node[1]), _to_sympy(node[2]))
    raise _ParseError(kind)


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
        raise _TooBig("magnitude") from None
    if abs(e) * max(1.0, log_b) > _MAX_LOG_MAGNITUDE:
        raise _TooBig("magnitude")


def _children(node):
    for part in node[1:]:
        if isinstance(part, tuple):
            if part and isinstance(part[0], tuple):  # the term list of "add"/"mul"
                yield from part
            elif part and isinstance(part[0], str):
                yield part


@lru_cache(maxsize=1 << 15)
def _cost(node) -> int:
    """A rough bound on sympy's work for a node: its size plus the sizes of exact powers.

    A single sympy call cannot be interrupted outside the main thread (no SIGALRM there),
    so the total work of one call must be bounded before it starts: forty terms like
    (x+1)^{1000} are fine, a hundred are refused and compared as text.
    """
    cost = 1 + sum(_cost(child) for child in _children(node))
    if node[0] in ("pow", "fact", "binom"):
        # the exponent of a power; the argument of a factorial; both arguments of a
        # binomial (sympy expands \binom{x}{150000} or \binom{-5}{10^5} for minutes)
        for part in (node[2],) if node[0] == "pow" else node[1:]:
            v = _exact(part)
            if v is not None:
                cost += min(int(abs(v)), 10 * _MAX_SYMBOLIC_COST)
    return cost


_INFINITIES = (sympy.oo, -sympy.oo, sympy.zoo, sympy.nan)


def _sympy_same(sa: sympy.Expr, sb: sympy.Expr, magnitude: float, points: int = _N_POINTS) -> bool:
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
        _tick()
        d = diff.xreplace({s: _sympy_point(s.name, k) for s in symbols}) if symbols else diff
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
def _sympy_point(name: str, k: int) -> sympy.Rational:
    p = _point(name, k)
    return sympy.Rational(p.numerator, p.denominator)


# --------------------------------------------------------------------------------------
# 3c. Values: what kind of answer is this (number, tuple, interval, set, equation, ...)?
# --------------------------------------------------------------------------------------
# ("scalar", ast)  ("rel", op, lhs, rhs)  ("chain", ops, operands)  ("seq", open, close, items)
# ("set", items)  ("union", items)  ("matrix", rows)  ("text", string)

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
def _parse_value(s: str, top: bool = True):
    text = ("text", s.casefold())
    if not s:
        return text
    m = _MATRIX_RE.fullmatch(s)
    if m:
        rows = [r for r in re.split(r"\\\\", m.group(1)) if r.strip()]
        cells = tuple(tuple(_parse_value(c.strip(), False) for c in r.split("&")) for r in rows)
        if cells and len({len(r) for r in cells}) == 1:
            return ("matrix", cells)
        return text
    if top and s.count("\\pm") == 1 and "\\mp" not in s:
        # `1\pm\sqrt2` is the solution list `1+\sqrt2, 1-\sqrt2`.
        return ("set", (_parse_value(s.replace("\\pm", "+"), False), _parse_value(s.replace("\\pm", "-"), False)))
    split = _split_top(s, (",",))
    if split is None:
        return text
    if len(split[0]) > 1:
        if not top or any(not p.strip() for p in split[0]):
            return text
        # A bare comma-separated list is a list of solutions ("1, 2"), as MATH asks for with
        # "enter all the solutions, separated by commas": order does not matter.
        return ("set", tuple(_parse_value(p.strip(), False) for p in split[0]))
    split = _split_top(s, ("\\cup",))
    if split is not None and len(split[0]) > 1:
        items = tuple(_parse_value(p.strip(), False) for p in split[0])
        if all(v[0] in ("seq", "set") for v in items):
            return ("union", items)
        return text
    if s == "\\emptyset":
        return ("set", ())
    if _wrapped(s, "\\{", "\\}"):
        inner = _split_top(s[2:-2], (",",))
        if inner is None:
            return text
        return ("set", tuple(_parse_value(p.strip(), False) for p in inner[0] if p.strip()))
    if s[0] in "([" and s[-1] in ")]" and _wrapped(s, s[0], s[-1]):
        inner = _split_top(s[1:-1], (",",))
        if inner is not None and len(inner[0]) > 1:
            # Tuples and intervals alike: ordered items with their brackets, so `(1,2)` !=
            # `(2,1)` and `[1,2)` != `[1,2]`.
            return ("seq", s[0], s[-1], tuple(_parse_value(p.strip(), False) for p in inner[0]))
    split = _split_top(s, _RELATIONS)
    if split is not None and len(split[0]) > 1:
        parts, ops = split
        try:
            asts = [_parse_scalar(p) for p in parts]
        except _ParseError:
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
        return ("scalar", _parse_scalar(s))
    except _ParseError:
        return text


def _parse_scalar(s: str):
    # Three letters in a row are words ("Monday", "odd"), not a product of variables:
    # as a product, "listen" would equal "silent".
    if not s or _LETTER_RUN_RE.search(_COMMAND_RE.sub(" ", s)):
        raise _ParseError("words")
    try:
        return _Parser(s).parse()
    except (ArithmeticError, ValueError, RecursionError) as e:
        raise _ParseError(str(e)) from None


# --------------------------------------------------------------------------------------
# 3d. Comparing values
# --------------------------------------------------------------------------------------

def _scalar_equal(a, b) -> bool:
    if a == b:
        return True
    _tick()
    ea, eb = _exact(a), _exact(b)
    if ea is not None and eb is not None:
        return ea == eb
    fa, fb = _fingerprint(a), _fingerprint(b)
    if fa is not None and fb is not None and not _fingerprints_close(fa, fb):
        return False
    magnitude = max([1.0] + [m for _, m in fa or ()] + [m for _, m in fb or ()])
    if _cost(a) + _cost(b) > _MAX_SYMBOLIC_COST:
        raise _TooBig("too much symbolic work")
    points = 1 if fa is not None and fb is not None else _N_POINTS
    return _sympy_same(_to_sympy(a), _to_sympy(b), magnitude, points)


def _lone_symbol(node) -> bool:
    return node[0] == "sym"


def _relation_equal(a, b) -> bool:
    _, op, la, ra = a
    _, op2, lb, rb = b
    if op != op2:
        return False
    da, db = ("add", (la, ("neg", ra))), ("add", (lb, ("neg", rb)))
    if _scalar_equal(da, db):
        return True
    symmetric = op in ("=", "\\ne")
    if symmetric and _scalar_equal(da, ("neg", db)):
        return True
    # Equations that differ by a constant factor are the same: 2y = 4x + 2 and y = 2x + 1.
    fa, fb = _fingerprint(da), _fingerprint(db)
    if fa is None or fb is None or any(abs(v) < 1e-12 for v, _ in fb):
        return False
    ratios = [va / vb for (va, _), (vb, _) in zip(fa, fb)]
    r0 = ratios[0]
    if abs(r0) < 1e-12 or any(abs(r - r0) > 1e-7 * max(1.0, abs(r0)) for r in ratios):
        return False
    if not symmetric and not (abs(r0.imag) < 1e-12 and r0.real > 0):
        return False  # multiplying an inequality by a negative number flips it
    sa, sb = _to_sympy(da), _to_sympy(db)
    symbols = sorted((sa.free_symbols | sb.free_symbols), key=lambda s: s.name)
    point = {s: _sympy_point(s.name, 0) for s in symbols}
    c = sa.xreplace(point) / sb.xreplace(point)
    return _sympy_same(sa, c * sb, max((m for _, m in fa), default=1.0))


def _match_unordered(xs, ys) -> bool:
    if len(xs) != len(ys):
        return False
    remaining = list(ys)
    for x in xs:
        for j, y in enumerate(remaining):
            if _values_equal(x, y):
                del remaining[j]
                break
        else:
            return False
    return True


def _values_equal(a, b) -> bool:
    ka, kb = a[0], b[0]
    if ka == "scalar" and kb == "scalar":
        return _scalar_equal(a[1], b[1])
    if ka == "rel" and kb == "scalar":
        return _values_equal(b, a)
    if ka == "scalar" and kb == "rel":
        # `5` vs `k=5` (when normalization kept the left side), `2x+1` vs `2x+1=y`.
        _, op, lhs, rhs = b
        return op == "=" and (
            (_lone_symbol(lhs) and _scalar_equal(a[1], rhs)) or (_lone_symbol(rhs) and _scalar_equal(a[1], lhs))
        )
    if ka == "rel" and kb == "rel":
        return _relation_equal(a, b)
    if ka == "chain" and kb == "chain":
        return a[1] == b[1] and len(a[2]) == len(b[2]) and all(map(_scalar_equal, a[2], b[2]))
    if ka == "seq" and kb == "seq":
        return a[1:3] == b[1:3] and len(a[3]) == len(b[3]) and all(map(_values_equal, a[3], b[3]))
    if ka in ("set", "union") and ka == kb:
        return _match_unordered(a[1], b[1])
    if ka == "matrix" and kb == "matrix":
        return len(a[1]) == len(b[1]) and all(
            len(r) == len(q) and all(map(_values_equal, r, q)) for r, q in zip(a[1], b[1])
        )
    if {ka, kb} == {"matrix", "seq"}:
        # A column or row vector written as a tuple: pmatrix(1, 2) == (1, 2).
        m, q = (a, b) if ka == "matrix" else (b, a)
        flat = [c for row in m[1] for c in row]
        vector = len(m[1]) == 1 or all(len(r) == 1 for r in m[1])
        return vector and q[1:3] == ("(", ")") and len(flat) == len(q[3]) and all(map(_values_equal, flat, q[3]))
    if ka == "text" and kb == "text":
        return a[1] == b[1]
    return False


# --------------------------------------------------------------------------------------
# 4. The time guard and the public comparison
# --------------------------------------------------------------------------------------

_local = threading.local()
_HAS_ITIMER = hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM")


class _Alarm:
    armed = False


def _on_alarm(signum, frame):
    # Raise only while our timer is armed: a late signal must never escape into the caller.
    if _Alarm.armed:
        _Alarm.armed = False
        raise _Timeout


def _tick() -> None:
    """Cooperative deadline check, the guard that works in every thread."""
    deadline = getattr(_local, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise _Timeout


@contextmanager
def _time_limit(seconds: float):
    outer_deadline = getattr(_local, "deadline", None)
    _local.deadline = time.monotonic() + seconds
    previous = None
    use_signal = (
        _HAS_ITIMER
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0.0  # someone else's timer: leave it
        and signal.getsignal(signal.SIGALRM) is not None  # a handler set outside Python
    )
    if use_signal:
        try:
            previous = signal.signal(signal.SIGALRM, _on_alarm)
        except (ValueError, OSError):
            use_signal = False
    if use_signal:
        _Alarm.armed = True
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        _local.deadline = outer_deadline
        if use_signal:
            while True:  # the alarm may fire while we disarm it; it then raises here once
                try:
                    _Alarm.armed = False
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    signal.signal(signal.SIGALRM, previous)
                    break
                except _Timeout:
                    continue


_EQUIV_CACHE: dict[tuple[str, str], bool] = {}
_EQUIV_CACHE_MAX = 1 << 17


def is_equiv(pred: str, gold: str) -> bool:
    """Are two answers the same under the MATH conventions? Never raises, bounded time.

    Non-strings and empty answers are never equal to anything.
    """
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    p, g = pred.strip(), gold.strip()
    if len(p) > MAX_ANSWER_CHARS or len(g) > MAX_ANSWER_CHARS:  # measured as normalize_answer does
        return bool(p) and p == g
    try:
        a, b = normalize_answer(pred), normalize_answer(gold)
    except Exception:
        if _STRICT:
            raise
        return pred.strip() == gold.strip() and bool(pred.strip())
    if not a or not b:
        return False
    return a == b or _equiv_normalized(a, b)


def _equiv_normalized(a: str, b: str) -> bool:
    """is_equiv for two already normalized answers, cached per unordered pair."""
    if a == b:
        return True
    if len(a) > MAX_ANSWER_CHARS or len(b) > MAX_ANSWER_CHARS:
        return False  # long answers are compared as text (also when cluster_answers calls this)
    key = (a, b) if a < b else (b, a)
    hit = _EQUIV_CACHE.get(key)
    if hit is not None:
        return hit
    result, cacheable = _compare(*key)
    if cacheable:  # a timeout depends on the machine's load, so it is not remembered
        if len(_EQUIV_CACHE) >= _EQUIV_CACHE_MAX:
            _EQUIV_CACHE.clear()
        _EQUIV_CACHE[key] = result
    return result


def _compare(a: str, b: str) -> tuple[bool, bool]:
    """(equal?, cacheable?) for two different normalized strings."""
    try:
        with _time_limit(TIME_BUDGET_S):
            return _values_equal(_parse_value(a), _parse_value(b)), True
    except _Timeout:
        return False, False
    except (_TooBig, _ParseError, RecursionError):
        return False, True  # not comparable symbolically; as text they already differ
    except Exception:
        # sympy raises a zoo of exception types on odd input; a grader must not crash a
        # 10,000-sample evaluation over one of them. Set MATHLITE_ANSWERS_STRICT=1 to debug.
        if _STRICT:
            raise
        return False, True


def exact_number(normalized: str) -> Fraction | None:
    """The exact rational value of a normalized answer that is a plain number, else None.

    Used by :mod:`mathlite.clusters` to give `0.5` and `\\frac{1}{2}` the same key.
    """
    if not normalized or len(normalized) > MAX_ANSWER_CHARS:
        return None
    try:
        with _time_limit(TIME_BUDGET_S):  # cluster keys get the same time bound as is_equiv
            value = _parse_value(normalized)
            if value[0] != "scalar":
                return None
            return _exact(value[1])
    except _Timeout:
        return None
    except Exception:  # _TooBig, _ParseError, RecursionError: no exact value
        if _STRICT:
            raise
        return None


def clear_caches() -> None:
    """Forget every cached result (benchmarks use this to measure cold performance)."""
    _EQUIV_CACHE.clear()
    for f in (_normalize, _parse_value, _exact, _fingerprint, _to_sympy):
        f.cache_clear()
