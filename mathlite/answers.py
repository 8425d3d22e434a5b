"""The answer engine: find the final answer in a solution and grade it against a gold answer.

Every evaluator, the sampler's majority vote and the solution-cluster re-ranker of
Liu et al. (2023) depend on one question: "are these two answers the same?". This
module answers it in three stages, cheapest first:

1. ``extract_answer``: the content of the last ``\\boxed{...}`` (the MATH convention),
   with fallbacks for "The final answer is ..." and GSM8K's ``#### N``.
2. ``normalize_answer``: a MATH-style string clean-up (``\\dfrac`` -> ``\\frac``, units,
   ``\\text{}``, degrees, ``x =`` prefixes, thousands separators, ...). Most equal
   answers are caught here, by plain string equality, in microseconds.
3. A symbolic comparison for the rest. Our own small LaTeX parser (:mod:`mathlite.latex`)
   turns each normalized answer into a *value*: a scalar expression, an equation, a tuple, an interval, a set,
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
   total sympy work of one expression is bounded (``latex.cost``). Refused answers fall back
   to text comparison, so identical monsters are still equal.
2. A cooperative deadline (:mod:`mathlite.deadline`), checked between comparison steps (and between the items of
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
compare case-insensitively; ``a\\pm b`` is the list ``a+b, a-b``. Also accepted:

- a named left side (``\\frac{AB}{CD} = 2``, ``m\\angle ABC = 40``: letters only) against
  the bare value, when the right side has no variables;
- ``A \\approx B``: the exact value A; its rounding B counts only against a gold answer
  that is itself a non-integer number (``6.28``); ``x \\approx 11`` is 11;
- an interval against inequalities on one variable (``(2, 5)`` == ``2 < x < 5``,
  ``(3, \\infty)`` == ``x > 3``), a union against "``x < 1`` or ``x > 2``", and a point
  against one equation per coordinate, in the order of the variable names
  (``(3, -1)`` == ``y = -1, x = 3`` != ``y = 3, x = -1``);
- a multiple-choice letter A-E against the same letter with its option's text
  (``D`` == ``(D) 12``, ``C`` == ``C. x = 42``);
- calculator spellings: ``sqrt(12)``, ``cbrt(x)``, ``abs(x)``, ``pi``, ``oo``, ``2**10``,
  ``sin(x)^2``, ``5.1e-2`` (exact: 51/1000), mixed numbers ``3 1/2``, repeating
  decimals ``0.1\\overline{6}``, and doubled backslashes (``\\\\frac``).

Variables are real. The fixed evaluation points are positive, so a pair holding
``|.|``, an even root or a fractional power is also checked where the variables are
negative: ``|x|`` == ``\\sqrt{x^2}`` but ``|x|`` != ``x`` and ``\\sqrt{x^2}`` != ``x``.

The LaTeX parser builds sympy objects itself and never calls ``eval``/``sympify`` on
the input, so untrusted model output cannot execute code.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

from mathlite import latex
from mathlite.deadline import Timeout, tick, time_limit
from mathlite.latex import (
    MAX_SYMBOLIC_COST,
    N_POINTS,
    ParseError,
    TooBig,
    children,
    cost,
    exact,
    fingerprint,
    fingerprints_close,
    parse_value,
    sympy_point,
    sympy_same,
    to_sympy,
)

__all__ = ["MAX_ANSWER_CHARS", "TIME_BUDGET_S", "clear_caches", "exact_number", "extract_answer", "is_equiv",
           "normalize_answer"]

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
    (r"(?<=\d),\\!\s*(?=\d{3}(?!\d))", ""),  # MATH's thousands separator `20,\!000` (`20,\! 000`)
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
    r"|mathbf|mathsf|mathcal|mathscr|mathfrak|boldsymbol|bm|emph|operatorname|box|Box)\s*(?=\{)"
)
_TEXT_CONJUNCTION_RE = re.compile(r"[\s,]*(?:and|or)?[\s,]*")
# always unwrapped (`\Box{6}`: a model's spelling of a box)
_BOLD_MACROS = {"mathbf", "boldsymbol", "bm", "operatorname", "mathsf", "mathcal", "mathscr", "mathfrak", "box", "Box"}
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
    r"^(?:[A-Z]{2,3}|[a-zA-Z](?:_\{?\w+\}?)?|\\[a-zA-Z]+|[a-zA-Z]\([a-zA-Z]\)|\((?:[a-zA-Z],)+[a-zA-Z]\))(=|\\in(?![a-zA-Z])|\\approx(?![a-zA-Z]))"
)
# A named left side: `\frac{AB}{CD}=2`, `m\angle ABC=40`, `[ABC]=12` (letters, no digits or operators)
_NAME_COMMANDS_RE = re.compile(r"\\(?:frac|angle|measuredangle|overline|triangle|widehat|overarc|arc)(?![a-zA-Z])")
_VALUE_COMMANDS = {
    "\\" + c for c in (
        "frac sqrt binom pi infty cdot times div pm mp circ sin cos tan cot sec csc arcsin arccos arctan sinh cosh "
        "tanh exp ln log lfloor rfloor lceil rceil"
    ).split()
}
_FUNCTION_LHS_RE = re.compile(r"[a-zA-Z](?:\^\{?-1\}?)?\(.+\)")  # f(2), f^{-1}(6), g(f(3))
_NAME_RE = re.compile(r"[A-Za-z{}\[\]_ ]*[A-Za-z][A-Za-z{}\[\]_ ]*")
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
_BRACED_COMMA_RE = re.compile(r"\s*\{\s*,\s*\}\s*")  # `1{,}000`, `1 {,} 000`
_MIXED_NUMBER_RE = re.compile(r"([+-]?\d+) (\d+) ?/ ?(\d+)")
_SCIENTIFIC_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)")
_REPEATING_RE = re.compile(r"(?<![\d.])(-?)(\d*)\.(\d*)\\overline\{(\d{1,30})\}(?![\d.])")  # 0.1\overline{6}
_MAX_SCIENTIFIC_EXPONENT = 100  # `1e999999999` stays text rather than a billion digits
_ARRAY_BEGIN_RE = re.compile(r"\\begin\s*\{\s*array\s*\}\s*(?:\{[^{}]*\})?")
_ARRAY_END_RE = re.compile(r"\\end\s*\{\s*array\s*\}")
_MATRIX_IN_BRACKETS_RE = re.compile(r"^[\[(]\s*(\\begin\{pmatrix\}(?:(?!\\begin\{).)*\\end\{pmatrix\})\s*[\])]$")
_LONE_BACKSLASH_RE = re.compile(r"(?<!\\)\\(?!\\)")
_DOUBLED_COMMAND_RE = re.compile(r"(?<!\\)\\\\[a-zA-Z]")
_BACKSLASH_RUN_RE = re.compile(r"\\+")
# Calculator / CAS spellings: `sqrt(12)`, `2*sqrt(3)`, `abs(x)`, `pi/4`, `sin(x)^2`, `2**10`.
_PLAIN_FUNC_RE = re.compile(
    r"(?<![\\A-Za-z])(sqrt|cbrt|abs|arcsin|arccos|arctan|asin|acos|atan|sinh|cosh|tanh|sin|cos|tan|cot|sec|csc"
    r"|exp|ln|log|pi|oo)(?![A-Za-z])"
)
_PLAIN_ALIASES = {"asin": "arcsin", "acos": "arccos", "atan": "arctan", "oo": "infty"}


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
    s = _undouble_backslashes(s)
    s = _unwrap_outer(s)
    if s.endswith("\\") and not s.endswith("\\\\"):  # a stray trailing `\` (`5\`), not a row break
        s = s[:-1].rstrip()
    if "\\" in s or "$" in s or "%" in s or "<" in s or ">" in s or "!" in s or "~" in s:
        for pattern, repl in _SUBS:
            s = pattern.sub(repl, s)
    if "\\" in s:
        s = _replace_text_macros(s)
        if "array" in s:  # `\begin{array}{cc}...\end{array}`: a matrix
            s = _ARRAY_BEGIN_RE.sub(r"\\begin{pmatrix}", s)
            s = _ARRAY_END_RE.sub(r"\\end{pmatrix}", s)
        if "pmatrix" in s:
            s = _MATRIX_IN_BRACKETS_RE.sub(r"\1", s)  # `\left[\begin{pmatrix}...\end{pmatrix}\right]`
    s = _plain_math(s)
    s = s.strip()
    if s.startswith("\\approx"):  # only the rounded value is given
        s = s[len("\\approx") :]
    s = _PLAIN_UNIT_RE.sub("", s).strip()
    m = _NUMBER_THEN_WORDS_RE.match(s)
    if m and not re.search(r"\b(?:and|or|pi)\b", s):
        s = m.group(1)
    s = re.sub(r"\s+(?:and|or)\s+", ",", s)
    s = re.sub(r"\s*,[\s,]*,\s*", ",", s)  # "6, 8, and 10" left two commas in a row
    # Thousands separators: `1{,}000` always; `1,000` only when the whole answer is one
    # number, so that the tuple `(1,000, 2)` or the list `1, 234` keep their commas.
    if "{" in s and "," in s:
        s = _BRACED_COMMA_RE.sub("", s)
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    m = _MIXED_NUMBER_RE.fullmatch(s)
    if m and 0 < int(m.group(2)) < int(m.group(3)):  # `3 1/2` (a space, before spaces go) = 7/2
        s = f"{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(3)}}}"
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
    if "\\overline" in s:
        s = _REPEATING_RE.sub(_repeating_repl, s)
    m = _SCIENTIFIC_RE.fullmatch(s)
    if m and abs(int(m.group(1))) <= _MAX_SCIENTIFIC_EXPONENT:  # `5.1e-2` -> 0.051
        s = format(Decimal(s), "f")
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


def _undouble_backslashes(s: str) -> str:
    r"""`\\frac{1}{2}` (a raw string written twice) -> `\frac{1}{2}`.

    Only when no backslash stands alone: then every run of them is doubled, and halving
    the runs keeps a matrix's row break `\\` (written `\\\\`) intact.
    """
    if "\\\\" not in s or _LONE_BACKSLASH_RE.search(s) or not _DOUBLED_COMMAND_RE.search(s):
        return s
    runs = _BACKSLASH_RUN_RE.findall(s)
    if any(len(r) % 2 for r in runs):
        return s
    return _BACKSLASH_RUN_RE.sub(lambda m: "\\" * (len(m.group(0)) // 2), s)


def _plain_math(s: str) -> str:
    r"""Calculator / CAS spellings -> LaTeX: `sqrt(12)` -> `\sqrt{12}`, `cbrt(x)` -> `\sqrt[3]{x}`,
    `abs(x)` -> `|x|`, `sin(x)` -> `\sin(x)`, `pi` -> `\pi`, `oo` -> `\infty`, `2**10` -> `2^10`."""
    if "**" in s:
        s = s.replace("**", "^")
    if not _PLAIN_FUNC_RE.search(s):
        return s
    out: list[str] = []
    pos = 0
    for m in _PLAIN_FUNC_RE.finditer(s):
        if m.start() < pos:  # inside an argument already rewritten
            continue
        name = _PLAIN_ALIASES.get(m.group(1), m.group(1))
        out.append(s[pos : m.start()])
        pos = m.end()
        if name in ("sqrt", "cbrt", "abs"):
            j = pos
            while j < len(s) and s[j] == " ":
                j += 1
            close = _matching_paren(s, j) if j < len(s) and s[j] == "(" else None
            if close is None:
                out.append("\\sqrt" if name == "sqrt" else m.group(1))  # `sqrt 3`; a lone word stays
                continue
            inner = _plain_math(s[j + 1 : close])
            out.append({"sqrt": "\\sqrt{%s}", "cbrt": "\\sqrt[3]{%s}", "abs": "|%s|"}[name] % inner)
            pos = close + 1
        else:
            out.append("\\" + name + (" " if s[pos : pos + 1].isalpha() else ""))
    out.append(s[pos:])
    return "".join(out)


def _repeating_repl(m: re.Match) -> str:
    """`0.1\\overline{6}` -> `\\frac{1}{6}`: a repeating decimal as the exact fraction."""
    sign, whole, fixed, period = m.groups()
    value = Fraction(int(whole or 0)) + Fraction(int(fixed or 0), 10 ** len(fixed))
    value += Fraction(int(period), (10 ** len(period) - 1) * 10 ** len(fixed))
    return f"{sign}\\frac{{{value.numerator}}}{{{value.denominator}}}" if value.denominator != 1 else sign + str(value)


def _matching_paren(s: str, i: int) -> int | None:
    """Index of the `)` closing the `(` at s[i]."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "(":
            depth += 1
        elif s[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    return None


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


def _has_variables(s: str) -> bool:
    """Letters, or a command that is not a number, an operation or a function (`\\theta`)."""
    if _VARIABLE_RE.search(_COMMAND_RE.sub(" ", s)):
        return True
    return any(c not in _VALUE_COMMANDS for c in _COMMAND_RE.findall(s))


def _strip_short_lhs(s: str) -> str:
    """`x=5` -> `5`, `f(x)=x^2` -> `x^2`, `(x,y)=(1,2)` -> `(1,2)`, `x\\in[0,1]` -> `[0,1]`,
    `x\\approx 11` -> `11`, `\\frac{AB}{CD}=2` -> `2`, `f(2)=5` -> `5`, `7+2+10=17` -> `17`.

    Only when the left side is a lone variable (or a name such as `AB`, `m\\angle ABC`,
    `\\frac{AB}{CD}`: letters only, whose right side must then be a value) and the
    answer holds no other relation: `x^2+y^2=1` stays an equation, and so does `y=2x+1`,
    whose right side has variables (see below).
    """
    if _RELATION_HINT_RE.search(s):
        return s
    m = _SHORT_LHS_RE.match(s)
    if not m:
        if "=" not in s:
            return s
        sides = s.split("=")
        if not all(sides) or any(_has_variables(side) for side in sides[-1:]):
            return s
        # A computation ending in its value (`7+2+10=19`): the value.
        if not any(_has_variables(side) for side in sides):
            return sides[-1]
        # A named quantity (`\frac{AB}{CD}=2`, `f(2)=5`, `f^{-1}(f^{-1}(6))=1`) set equal to a value.
        if len(sides) == 2 and (
            _NAME_RE.fullmatch(_NAME_COMMANDS_RE.sub(" ", sides[0])) or _FUNCTION_LHS_RE.fullmatch(sides[0])
        ):
            return sides[1]
        return s
    rest = s[m.end() :]
    if m.group(1) != "\\in":
        if s.count("=") != (m.group(1) == "="):  # `x=5`, `x\approx 11`: one relation only
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
# 3. Comparing values
# --------------------------------------------------------------------------------------

def _scalar_equal(a, b) -> bool:
    if a == b:
        return True
    tick()
    ea, eb = exact(a), exact(b)
    if ea is not None and eb is not None:
        return ea == eb
    fa, fb = fingerprint(a), fingerprint(b)
    if fa is not None and fb is not None and not fingerprints_close(fa, fb):
        return False
    magnitude = max([1.0] + [m for _, m in fa or ()] + [m for _, m in fb or ()])
    if cost(a) + cost(b) > MAX_SYMBOLIC_COST:
        raise TooBig("too much symbolic work")
    points = 1 if fa is not None and fb is not None else N_POINTS
    sa, sb = to_sympy(a), to_sympy(b)
    if not sympy_same(sa, sb, magnitude, points):
        return False
    if _sign_sensitive(a) or _sign_sensitive(b):
        # The fixed points are positive, where |x| = x and \sqrt{x^2} = x. Variables are
        # real, so such pairs must also agree where variables are negative:
        # |x| == \sqrt{x^2} != x.
        return _same_where_negative(sa, sb, magnitude)
    return True


@lru_cache(maxsize=1 << 15)
def _sign_sensitive(node) -> bool:
    """Does the node hold |.|, an even root or a fractional power (values that depend on signs)?"""
    kind = node[0]
    if kind == "abs":
        return True
    if kind in ("root", "pow"):
        k = exact(node[2])
        if k is None or (kind == "root" and k % 2 == 0) or (kind == "pow" and k.denominator != 1):
            return True
    return any(_sign_sensitive(c) for c in children(node))


def _same_where_negative(sa, sb, magnitude: float) -> bool:
    """Equal where every variable is negative, and where their signs alternate?
    (|x+y| != x+y shows at the first, |x|+|y| != |x+y| at the second.)"""
    diff = sa - sb
    symbols = sorted(diff.free_symbols, key=lambda s: s.name)
    if not symbols:
        return True
    for signs in ([-1] * len(symbols), [(-1) ** (i + 1) for i in range(len(symbols))]):
        tick()
        d = diff.xreplace({s: sign * sympy_point(s.name, 0) for s, sign in zip(symbols, signs)})
        try:
            v = complex(d.evalf(40))
        except (ArithmeticError, TypeError, ValueError):
            return False
        if not abs(v) <= 1e-30 * max(1.0, magnitude):
            return False
        if len(symbols) == 1:
            break
    return True


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
    fa, fb = fingerprint(da), fingerprint(db)
    if fa is None or fb is None or any(abs(v) < 1e-12 for v, _ in fb):
        return False
    ratios = [va / vb for (va, _), (vb, _) in zip(fa, fb)]
    r0 = ratios[0]
    # A factor beyond 1e12 (or below 1e-12) is refused both ways, so that the comparison
    # stays symmetric: the reversed pair has the inverse factor.
    if not 1e-12 < abs(r0) < 1e12 or any(abs(r - r0) > 1e-7 * abs(r0) for r in ratios):
        return False
    if not symmetric and not (abs(r0.imag) < 1e-12 and r0.real > 0):
        return False  # multiplying an inequality by a negative number flips it
    sa, sb = to_sympy(da), to_sympy(db)
    symbols = sorted((sa.free_symbols | sb.free_symbols), key=lambda s: s.name)
    point = {s: sympy_point(s.name, 0) for s in symbols}
    c = sa.xreplace(point) / sb.xreplace(point)
    return sympy_same(sa, c * sb, max((m for _, m in fa), default=1.0))


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


_INF = ("scalar", ("const", "inf"))
_MINUS_INF = ("scalar", ("neg", ("const", "inf")))


def _as_interval(v):
    """`2<x<5` -> (2, 5), `-1\\le x\\le 3` -> [-1, 3], `x>3` -> (3, \\infty), `x\\le2` -> (-\\infty, 2];
    None unless the variable stands alone in the middle (or on one side)."""
    bracket = {"<": ("(", ")"), "\\le": ("[", "]")}
    if v[0] == "chain":
        ops, operands = v[1], v[2]
        if len(operands) != 3 or not _lone_symbol(operands[1]) or any(op not in bracket for op in ops):
            return None
        lo, _, hi = operands
        return ("seq", bracket[ops[0]][0], bracket[ops[1]][1], (("scalar", lo), ("scalar", hi)))
    if v[0] == "rel" and v[1] in bracket:  # relations are stored with < and \\le only
        _, op, lhs, rhs = v
        if _lone_symbol(lhs) and not _lone_symbol(rhs):
            return ("seq", "(", bracket[op][1], (_MINUS_INF, ("scalar", rhs)))
        if _lone_symbol(rhs) and not _lone_symbol(lhs):
            return ("seq", bracket[op][0], ")", (("scalar", lhs), _INF))
    return None


def _values_equal(a, b) -> bool:
    ka, kb = a[0], b[0]
    if ka == "scalar" and kb == "scalar":
        return _scalar_equal(a[1], b[1])
    if "approx" in (ka, kb):
        if ka == kb:
            return _values_equal(a[1], b[1])
        x, y = (a, b) if ka == "approx" else (b, a)
        # `\\frac{\\sqrt3}{3}\\approx0.577` is its exact value; its rounding counts only against
        # a gold answer that is itself a non-integer number (a rounded value: `6.28`).
        return _values_equal(x[1], y) or (
            y[0] == "scalar" and y[1][0] == "num" and y[1][1].denominator != 1 and _values_equal(x[2], y)
        )
    if kb in ("seq", "union") and ka in ("chain", "rel", "set"):
        return _values_equal(b, a)
    if ka == "union" and kb == "set":
        # `(-\\infty,1)\\cup(2,\\infty)` vs `x<1 \\text{ or } x>2`
        intervals = [_as_interval(v) for v in b[1]]
        return None not in intervals and _match_unordered(a[1], tuple(intervals))
    if ka == "seq" and kb == "set" and a[1:3] == ("(", ")"):
        # `(3, -1)` vs `x=3, y=-1`: a point given as one equation per coordinate, taken in
        # the order of the variables' names (`y=-1, x=3` is the same point, `y=3, x=-1` not)
        rels = sorted(b[1], key=lambda r: str(r[2]) if r[0] == "rel" else "")
        return (
            len(rels) == len(a[3]) > 1
            and all(r[0] == "rel" and r[1] == "=" and _lone_symbol(r[2]) for r in rels)
            and len({r[2] for r in rels}) == len(rels)
            and all(_values_equal(x, ("scalar", r[3])) for x, r in zip(a[3], rels))
        )
    if ka == "seq" and kb in ("chain", "rel"):
        interval = _as_interval(b)
        return interval is not None and _values_equal(a, interval)
    if ka == "rel" and kb == "scalar":
        return _values_equal(b, a)
    if ka == "scalar" and kb == "rel":
        # `5` vs `k=5` (when normalization kept the left side), `2x+1` vs `2x+1=y`; and an
        # identity, a computation written out (`\\frac{(10r^3)(4r^6)}{8r^4}=\\frac{40r^9}{8r^4}`),
        # has the value of its sides.
        _, op, lhs, rhs = b
        return op == "=" and (
            (_lone_symbol(lhs) and _scalar_equal(a[1], rhs))
            or (_lone_symbol(rhs) and _scalar_equal(a[1], lhs))
            or (not _lone_symbol(lhs) and _scalar_equal(a[1], rhs) and _scalar_equal(lhs, rhs))
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
# 4. The public comparison
# --------------------------------------------------------------------------------------

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
    choice = _choice_with_text(a, b)
    if choice is not None:
        return choice, True
    try:
        with time_limit(TIME_BUDGET_S):
            return _values_equal(parse_value(a), parse_value(b)), True
    except Timeout:
        return False, False
    except (TooBig, ParseError, RecursionError):
        return False, True  # not comparable symbolically; as text they already differ
    except Exception:
        # sympy raises a zoo of exception types on odd input; a grader must not crash a
        # 10,000-sample evaluation over one of them. Set MATHLITE_ANSWERS_STRICT=1 to debug.
        if _STRICT:
            raise
        return False, True


_CHOICE_WITH_TEXT_RE = re.compile(r"\(([A-E])\)|([A-E])[.:)](?![\d.])")


def _choice_with_text(a: str, b: str) -> bool | None:
    """`D` vs `(D)12` or `C. x=42` (a multiple-choice letter with its option's text): do the
    letters agree? None when neither side is a lone letter A-E against a lettered option."""
    for letter, other in ((a, b), (b, a)):
        if len(letter) == 1 and letter in "ABCDE":
            m = _CHOICE_WITH_TEXT_RE.match(other)
            if m and m.end() < len(other):
                return (m.group(1) or m.group(2)) == letter
    return None


def exact_number(normalized: str) -> Fraction | None:
    """The exact rational value of a normalized answer that is a plain number, else None.

    Used by :mod:`mathlite.clusters` to give `0.5` and `\\frac{1}{2}` the same key.
    """
    if not normalized or len(normalized) > MAX_ANSWER_CHARS:
        return None
    try:
        with time_limit(TIME_BUDGET_S):  # cluster keys get the same time bound as is_equiv
            value = parse_value(normalized)
            if value[0] != "scalar":
                return None
            return exact(value[1])
    except Timeout:
        return None
    except Exception:  # TooBig, ParseError, RecursionError: no exact value
        if _STRICT:
            raise
        return None


def clear_caches() -> None:
    """Forget every cached result (benchmarks use this to measure cold performance)."""
    _EQUIV_CACHE.clear()
    _normalize.cache_clear()
    latex.clear_caches()
