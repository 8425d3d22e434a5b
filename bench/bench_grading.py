"""Benchmark: mathlite's answer grader against Math-Verify, on the same labelled pairs.

Workload: the gold answers of the MATH test split (a random sample of the pairs, 4,000
by default), each paired with rewrites whose label is known by construction:

- equal rewrites: `\\frac` -> `\\dfrac`, `a/b`, fraction <-> terminating decimal, radicals
  (`2\\sqrt{3}` <-> `\\sqrt{12}`), reordered sums and products, reordered solution lists
  and sets, swapped equation sides, `\\text{ units}`, `^\\circ`, an `x =` prefix, thousands
  separators, extra spaces, `\\left( \\right)`, `bmatrix`, `(A)` -> `A`;
- unequal rewrites: n -> n+1 and n -> 10n, a non-terminating fraction -> its 2-digit
  decimal, `k\\sqrt{m}` -> `\\sqrt{km}`, a dropped `\\pi`, swapped tuple entries, a flipped
  interval bracket, swapped matrix entries, a dropped solution, g -> -(g) and g -> g+1,
  one digit changed, another multiple-choice letter, another equation constant.

Both graders see exactly the same (gold, prediction) strings, in one process, on
alternating chunks (so that a shared machine's background load hits both alike).
Throughput is pairs per second of wall time and of this process's CPU time. mathlite's
caches are cleared once before the timed run; within the run a gold answer shared by
several pairs is normalized once, as in a real evaluation. A stricter number clears the
caches before every pair. Accuracy is the share of pairs whose verdict matches the label.
The clustering line times cluster_answers on 64 answers x 500 problems drawn from the
same rewrites.

Run:  python bench/bench_grading.py [--limit N] [--max-pairs N] [--out bench/results/grading.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import time
from collections import Counter, defaultdict
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from mathlite import answers
from mathlite.answers import extract_answer, is_equiv
from mathlite.clusters import cluster_answers

DATA = REPO.parent / "shared" / "data" / "math" / "test.jsonl"


# --------------------------------------------------------------------------------------
# Labelled pairs
# --------------------------------------------------------------------------------------

_INT_RE = re.compile(r"-?\d+")
_FRAC_RE = re.compile(r"(-?)\\frac\{(\d+)\}\{(\d+)\}")
_DEC_RE = re.compile(r"-?\d*\.\d+")


def _terminating_decimal(q: Fraction) -> str | None:
    den = q.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den != 1:
        return None
    digits = 0
    while (q * 10**digits).denominator != 1:
        digits += 1
    return f"{float(q):.{digits}f}" if digits <= 12 else None


def _top_level_split(s: str, seps: str) -> list[tuple[str, str]] | None:
    """[(sign, term), ...] split at depth-0 separators; None if it looks risky."""
    out, depth, start, sign = [], 0, 0, ""
    for i, c in enumerate(s):
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif depth == 0 and c in seps and i > 0:
            prev = s[i - 1]
            if not (prev.isalnum() or prev in ")}"):
                return None
            out.append((sign, s[start:i]))
            sign, start = c, i + 1
    out.append((sign, s[start:]))
    return out


def _is_scalar_like(g: str) -> bool:
    return not any(t in g for t in (",", "=", "<", ">", "\\le", "\\ge", "\\cup", "\\pm", "\\begin", "\\text", "_"))


_THOUSANDS_GOLD_RE = re.compile(r"(?:\\\$)?-?\d{1,3}(?:,(?:\\!)?\d{3})+(?:\.\d+)?")
_RADICAL_RE = re.compile(r"(\d*)\\sqrt\{(\d+)\}")


def _square_free(m: int) -> tuple[int, int]:
    """m = k^2 * r with r square-free."""
    k, r, p = 1, m, 2
    while p * p <= r:
        while r % (p * p) == 0:
            r //= p * p
            k *= p
        p += 1
    return k, r


def equal_rewrites(g: str) -> list[tuple[str, str]]:
    out = []
    # `15,\!000` is a number, not a list; and added spaces must not split `{,}` or `\,`
    thousands = _THOUSANDS_GOLD_RE.fullmatch(g) is not None or "{,}" in g or "\\!" in g
    g = g.rstrip(".").rstrip()  # a few gold answers end with a full stop
    m = _RADICAL_RE.fullmatch(g)
    if m:
        k, n = int(m.group(1) or 1), int(m.group(2))
        kk, r = _square_free(n)
        if k > 1:
            out.append(("radical", f"\\sqrt{{{k * k * n}}}"))
        elif kk > 1:
            out.append(("radical", f"{kk}\\sqrt{{{r}}}"))
    m = re.fullmatch(r"(\d+)\\pi", g)
    if m:
        out.append(("reordered product", f"\\pi \\cdot {m.group(1)}"))
    m = re.fullmatch(r"\\frac\{(\d+)\\sqrt\{(\d+)\}\}\{(\d+)\}", g)
    if m:
        out.append(("radical", f"\\frac{{{m.group(1)}}}{{{m.group(3)}}}\\sqrt{{{m.group(2)}}}"))
    m = re.fullmatch(r"-\\frac\{(\d+)\}\{(\d+)\}", g)
    if m:
        out.append(("sign inside", f"\\frac{{-{m.group(1)}}}{{{m.group(2)}}}"))
    m = re.fullmatch(r"\\frac\{(\d+)\}\{(\d+)\}", g)
    if m:
        out.append(("slash", f"{m.group(1)}/{m.group(2)}"))
    m = re.fullmatch(r"([a-z])\s*=\s*(.+)", g)
    if m and "=" not in m.group(2) and "," not in m.group(2):
        out.append(("swapped sides", f"{m.group(2)} = {m.group(1)}"))
    if "pmatrix" in g:
        out.append(("bmatrix", g.replace("pmatrix", "bmatrix")))
    if re.fullmatch(r"-?\d+", g) and 0 < int(g) < 360:
        out.append(("degrees", g + "^\\circ"))
    letter = re.fullmatch(r"\\text\{\(([A-E])\)\}|\(([A-E])\)", g)
    if letter:
        out.append(("letter", next(x for x in letter.groups() if x)))
    if "\\frac" in g:
        out.append(("dfrac", g.replace("\\frac", "\\dfrac")))
    m = _FRAC_RE.fullmatch(g)
    if m:
        dec = _terminating_decimal(Fraction(int(m.group(2)), int(m.group(3))))
        if dec:
            out.append(("frac->decimal", m.group(1) + dec))
    if _DEC_RE.fullmatch(g):
        q = Fraction(g)
        out.append(("decimal->frac", f"{'-' if q < 0 else ''}\\frac{{{abs(q.numerator)}}}{{{q.denominator}}}"))
    if _INT_RE.fullmatch(g):
        out.append(("units", g + "\\text{ units}"))
        if abs(int(g)) >= 1000:
            out.append(("thousands", f"{int(g):,}".replace(",", "{,}")))
    if _is_scalar_like(g) and "=" not in g:
        out.append(("x=", "x = " + g))
        terms = _top_level_split(g.replace(" ", ""), "+-")
        if terms and len(terms) >= 2 and all(t for _, t in terms):
            rotated = terms[1:] + terms[:1]
            s = "".join(("-" if sign == "-" else "+") + t for sign, t in rotated)
            out.append(("reordered sum", s.lstrip("+")))
    if "," in g and not thousands and not g.startswith(("(", "[", "\\begin", "\\{")) and "\\text" not in g:
        parts = _top_level_split(g, ",")
        if parts and len(parts) >= 2:
            out.append(("reordered list", ", ".join(t.strip() for _, t in reversed(parts))))
    if g.startswith("\\{") and g.endswith("\\}"):
        parts = _top_level_split(g[2:-2], ",")
        if parts and len(parts) >= 2:
            out.append(("reordered set", "\\{" + ",".join(t for _, t in reversed(parts)) + "\\}"))
    if g.startswith("(") and g.endswith(")") and "," in g:
        out.append(("\\left(", "\\left" + g[:-1] + "\\right)"))
    spaced = re.sub(r"(?<![\\{])([+=,])(?![}\\])", r" \1 ", g)
    if spaced != g and not thousands:
        out.append(("spaces", spaced))
    return out


def unequal_rewrites(g: str, rng: random.Random) -> list[tuple[str, str]]:
    out = []
    thousands = _THOUSANDS_GOLD_RE.fullmatch(g) is not None
    if _INT_RE.fullmatch(g):
        n = int(g)
        out.append(("n+1", str(n + 1)))
        if n != 0:
            out.append(("10n", str(10 * n)))
    m = _FRAC_RE.fullmatch(g)
    if m:
        q = Fraction(int(m.group(2)), int(m.group(3)))
        if _terminating_decimal(q) is None:
            out.append(("2-digit decimal", f"{'-' if m.group(1) else ''}{float(q):.2f}"))
    if g.startswith("(") and g.endswith(")") and "," in g:
        parts = _top_level_split(g[1:-1], ",")
        if parts and len(parts) >= 2 and parts[0][1].strip() != parts[1][1].strip():
            items = [t for _, t in parts]
            items[0], items[1] = items[1], items[0]
            out.append(("swapped tuple", "(" + ",".join(items) + ")"))
    if re.fullmatch(r"[\[(].*,.*[\])]", g) and "\\infty" in g or re.fullmatch(r"\[.*,.*[\])]", g):
        flipped = ("(" if g[0] == "[" else "[") + g[1:]
        if not flipped.startswith("[-\\infty"):
            out.append(("flipped bracket", flipped))
    if _is_scalar_like(g) and g not in ("0", "\\infty") and "\\infty" not in g:
        out.append(("negated", f"-({g})"))
        out.append(("plus one", f"{g}+1"))
        digits = [i for i, c in enumerate(g) if c.isdigit()]
        if digits and not _INT_RE.fullmatch(g):
            i = rng.choice(digits)
            out.append(("digit changed", g[:i] + str((int(g[i]) + 1) % 10) + g[i + 1 :]))
    m = _RADICAL_RE.fullmatch(g)
    if m and int(m.group(1) or 1) > 1:
        out.append(("radical", f"\\sqrt{{{int(m.group(1)) * int(m.group(2))}}}"))
    m = re.fullmatch(r"(\d+)\\pi", g)
    if m:
        out.append(("dropped pi", m.group(1)))
    m = re.fullmatch(r"([a-z])\s*=\s*(.*[^=]+)([+-])\s*(\d+)", g)
    if m:
        out.append(("equation constant", f"{m.group(1)}={m.group(2)}{'-' if m.group(3) == '+' else '+'}{m.group(4)}"))
    if "," in g and not thousands and not g.startswith(("(", "[", "\\begin")) and "\\text" not in g:
        parts = _top_level_split(g.replace("\\{", "").replace("\\}", ""), ",")
        if parts and len(parts) >= 2:
            out.append(("dropped solution", ", ".join(t.strip() for _, t in parts[1:])))
    m = re.fullmatch(r"\\begin\{pmatrix\}(.*)\\end\{pmatrix\}", g)
    if m:
        cells = re.split(r"(\\\\|&)", m.group(1))
        values = [c for c in cells[::2]]
        if len(values) >= 2 and values[0].strip() != values[-1].strip():
            values[0], values[-1] = values[-1], values[0]
            cells[::2] = values
            out.append(("matrix entries swapped", "\\begin{pmatrix}" + "".join(cells) + "\\end{pmatrix}"))
    letter = re.fullmatch(r"\\text\{\(([A-E])\)\}|\(([A-E])\)|([A-E])", g)
    if letter:
        c = next(x for x in letter.groups() if x)
        out.append(("other letter", "ABCDE"[("ABCDE".index(c) + 1) % 5]))
    return out


def build_pairs(limit: int | None, seed: int = 0) -> list[tuple[str, str, bool, str]]:
    rng = random.Random(seed)
    rows = [json.loads(line) for line in DATA.open()]
    if limit:
        rows = rows[:limit]
    pairs, seen = [], set()
    for row in rows:
        gold = extract_answer(row["solution"])
        if not gold:
            continue
        for label, rewrites in ((True, equal_rewrites(gold)), (False, unequal_rewrites(gold, rng))):
            for kind, pred in rewrites:
                if (gold, pred) not in seen:
                    seen.add((gold, pred))
                    pairs.append((gold, pred, label, kind))
    rng.shuffle(pairs)
    return pairs


# --------------------------------------------------------------------------------------
# Graders
# --------------------------------------------------------------------------------------

def grade_mathlite(pairs, cold_per_pair: bool = False) -> list[bool]:
    verdicts = []
    for gold, pred, _, _ in pairs:
        if cold_per_pair:
            answers.clear_caches()
        verdicts.append(is_equiv(pred, gold))
    return verdicts


def grade_math_verify(pairs) -> list[bool]:
    from math_verify import parse, verify

    verdicts = []
    for gold, pred, _, _ in pairs:
        try:
            verdicts.append(bool(verify(parse(f"${gold}$"), parse(f"${pred}$"))))
        except Exception:
            verdicts.append(False)
    return verdicts


def timed_interleaved(pairs, graders: dict, chunk: int = 250) -> dict:
    """Run the graders on alternating chunks of the same pairs.

    The machine may be shared: interleaving exposes every grader to the same background
    load, and CPU time (this process only; both graders run in-process, Math-Verify's
    timeouts are signals) is reported next to wall time.
    """
    out = {name: {"verdicts": [], "wall_s": 0.0, "cpu_s": 0.0} for name in graders}
    for start in range(0, len(pairs), chunk):
        block = pairs[start : start + chunk]
        for name, grade in graders.items():
            w0, c0 = time.perf_counter(), time.process_time()
            out[name]["verdicts"] += grade(block)
            out[name]["wall_s"] += time.perf_counter() - w0
            out[name]["cpu_s"] += time.process_time() - c0
    return out


def accuracy(verdicts, pairs) -> float:
    return sum(v == p[2] for v, p in zip(verdicts, pairs)) / len(pairs)


def clustering_workload(pairs, n_problems: int, k: int, rng: random.Random):
    """64 sampled answers per problem, drawn from a gold answer's rewrites (like a sampler's votes)."""
    by_gold = defaultdict(list)
    for gold, pred, _, _ in pairs:
        by_gold[gold].append(pred)
    golds = [g for g in by_gold if len(by_gold[g]) >= 2][:n_problems]
    return [[rng.choice(by_gold[g] + [g, g, None]) for _ in range(k)] for g in golds]


def machine_info() -> dict:
    import math_verify
    import sympy

    try:
        from importlib.metadata import version

        mv_version = version("math-verify")
    except Exception:
        mv_version = getattr(math_verify, "__version__", "?")
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "sympy": sympy.__version__,
        "math_verify": mv_version,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N MATH test problems")
    ap.add_argument("--max-pairs", type=int, default=4000, help="a random sample of this many pairs")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "grading.json")
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 100))
    pairs = build_pairs(args.limit)[: args.max_pairs]  # build_pairs shuffles
    console.print(f"{len(pairs)} labelled pairs ({sum(p[2] for p in pairs)} equal) from {DATA.name}")

    # Warm up imports and sympy's own lazily built tables for both graders, outside the timing.
    grade_mathlite(pairs[:50])
    grade_math_verify(pairs[:50])

    answers.clear_caches()  # cold start; within the run a gold shared by several pairs is cached
    runs = timed_interleaved(pairs, {"mathlite": grade_mathlite, "math_verify": grade_math_verify})
    sub = pairs[: min(len(pairs), 1000)]
    cold = timed_interleaved(sub, {"mathlite_cold": lambda b: grade_mathlite(b, cold_per_pair=True)})
    ml, mv, ml_cold = runs["mathlite"], runs["math_verify"], cold["mathlite_cold"]
    ml_verdicts, mv_verdicts = ml["verdicts"], mv["verdicts"]
    for r, n in ((ml, len(pairs)), (mv, len(pairs)), (ml_cold, len(sub))):
        r["pairs_per_s"] = n / r["wall_s"]
        r["pairs_per_cpu_s"] = n / r["cpu_s"]
    ml_acc, mv_acc = accuracy(ml_verdicts, pairs), accuracy(mv_verdicts, pairs)
    ratio_cpu = ml["pairs_per_cpu_s"] / mv["pairs_per_cpu_s"]
    ratio_wall = ml["pairs_per_s"] / mv["pairs_per_s"]

    table = Table(title="Answer grading: mathlite vs Math-Verify (same pairs, same process, interleaved)")
    for col in ("grader", "pairs/s (wall)", "pairs/s (CPU)", "accuracy", "false +", "false -"):
        table.add_column(col, justify="right" if col != "grader" else "left")
    for name, r in (("mathlite", ml), ("Math-Verify", mv)):
        verdicts = r["verdicts"]
        fp = sum(v and not p[2] for v, p in zip(verdicts, pairs))
        fn = sum((not v) and p[2] for v, p in zip(verdicts, pairs))
        table.add_row(name, f"{r['pairs_per_s']:,.0f}", f"{r['pairs_per_cpu_s']:,.0f}",
                      f"{accuracy(verdicts, pairs):.2%}", str(fp), str(fn))
    table.add_row("mathlite, cold caches per pair", f"{ml_cold['pairs_per_s']:,.0f}",
                  f"{ml_cold['pairs_per_cpu_s']:,.0f}", "", "", "")
    console.print(table)
    console.print(f"throughput ratio mathlite / Math-Verify: [bold]{ratio_cpu:.0f}x[/bold] by CPU time, "
                  f"{ratio_wall:.0f}x by wall time (caches cleared per pair: "
                  f"{ml_cold['pairs_per_cpu_s'] / mv['pairs_per_cpu_s']:.0f}x by CPU time)")

    per_kind = Table(title="Accuracy by rewrite")
    for col in ("rewrite", "label", "pairs", "mathlite", "Math-Verify"):
        per_kind.add_column(col)
    kinds = defaultdict(list)
    for i, p in enumerate(pairs):
        kinds[(p[3], p[2])].append(i)
    by_kind = {}
    for (kind, label), idx in sorted(kinds.items(), key=lambda kv: (not kv[0][1], kv[0][0])):
        a = sum(ml_verdicts[i] == label for i in idx) / len(idx)
        b = sum(mv_verdicts[i] == label for i in idx) / len(idx)
        by_kind[f"{kind} ({'equal' if label else 'unequal'})"] = {"pairs": len(idx), "mathlite": a, "math_verify": b}
        per_kind.add_row(kind, "equal" if label else "unequal", str(len(idx)), f"{a:.1%}", f"{b:.1%}")
    console.print(per_kind)

    # Disagreements, for the curious (and for finding bugs in either grader).
    disagreements = [
        {"gold": p[0], "pred": p[1], "label": p[2], "kind": p[3], "mathlite": a, "math_verify": b}
        for p, a, b in zip(pairs, ml_verdicts, mv_verdicts)
        if a != p[2] or b != p[2]
    ]

    # Clustering: 64 answers x up to 500 problems.
    rng = random.Random(1)
    problems = clustering_workload(pairs, 500, 64, rng)
    answers.clear_caches()
    t0 = time.perf_counter()
    for votes in problems:
        cluster_answers(votes)
    cluster_s = time.perf_counter() - t0
    console.print(f"cluster_answers: {len(problems)} problems x 64 answers in {cluster_s:.2f} s")

    result = {
        "machine": machine_info(),
        "pairs": len(pairs),
        "equal_pairs": sum(p[2] for p in pairs),
        "mathlite": {"wall_s": ml["wall_s"], "cpu_s": ml["cpu_s"], "pairs_per_s": ml["pairs_per_s"],
                     "pairs_per_cpu_s": ml["pairs_per_cpu_s"], "accuracy": ml_acc,
                     "caches_cleared_per_pair": {"pairs": len(sub), "pairs_per_s": ml_cold["pairs_per_s"],
                                                 "pairs_per_cpu_s": ml_cold["pairs_per_cpu_s"]}},
        "math_verify": {"wall_s": mv["wall_s"], "cpu_s": mv["cpu_s"], "pairs_per_s": mv["pairs_per_s"],
                        "pairs_per_cpu_s": mv["pairs_per_cpu_s"], "accuracy": mv_acc,
                        "call": "verify(parse(f'${gold}$'), parse(f'${pred}$'))"},
        "throughput_ratio_cpu": ratio_cpu,
        "throughput_ratio_wall": ratio_wall,
        "throughput_ratio_cpu_caches_cleared_per_pair": ml_cold["pairs_per_cpu_s"] / mv["pairs_per_cpu_s"],
        "by_rewrite": by_kind,
        "clustering": {"problems": len(problems), "answers_per_problem": 64, "seconds": cluster_s},
        "disagreements_with_label": disagreements[:200],
        "disagreement_counts": dict(Counter(
            ("mathlite wrong" if d["mathlite"] != d["label"] else "") + (" math_verify wrong" if d["math_verify"] != d["label"] else "")
            for d in disagreements
        )),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    console.print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
