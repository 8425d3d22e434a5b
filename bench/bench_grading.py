"""Benchmark: mathlite's answer grader against Math-Verify, on labelled (gold, prediction) pairs.

Four sets, each reported on its own (agreement with the labels, false accepts, false
rejects, throughput), both graders on exactly the same strings in one process:

(a) model_outputs: final answers of real sampled solutions (SmolLM2-135M-Instruct, 4-shot,
    on 100 MATH500 problems; see `--build-model-outputs`) against the gold answer. Every
    pair on which the graders (this one, its previous version, Math-Verify) did not all
    agree was labelled by hand (`label_source: "hand"`, with a note); the others carry the
    graders' common verdict (`"graders agree"`), so they cannot separate the two graders.
    bench/grading_cases/model_outputs.jsonl.
(b) adversarial: cases written by hand for this project, per category of answer form
    (thousands separators, named left sides, approximations, LaTeX variants, plain-text
    CAS answers, intervals vs inequalities, multiple choice, mixed numbers), each with
    near misses that must stay unequal. bench/grading_cases/adversarial.jsonl. The engine
    was developed against these cases, so they show that the categories are handled, not
    how well the engine generalises.
(b2) unseen: general cases (numbers, radicals, expressions, complex numbers, tuples,
    sets, intervals, equations, text, units, choices, trigonometry) written by hand after
    the engine was frozen and measured once, without changing the engine for them.
    bench/grading_cases/unseen.jsonl.
(c) rewrites: rule-generated rewrites of MATH test gold answers (`\\frac` -> `\\dfrac`,
    `x =` prefixes, reordered lists, one digit changed, ...), labelled by construction.
    They were written alongside our normaliser, so our score on them is circular: a
    regression and throughput set only, not evidence of accuracy.

Timing: the graders run on alternating chunks of the same pairs (a shared machine's
background load hits both alike); throughput is pairs per second of wall time and of this
process's CPU time. mathlite's caches are cleared before each set; within a set a gold
answer shared by several pairs is normalized once, as in a real evaluation. A stricter
number clears the caches before every pair. The clustering line times cluster_answers on
64 answers x 500 problems drawn from the rewrites.

Run:  python bench/bench_grading.py [--max-pairs N] [--out bench/results/grading.json]
      python bench/bench_grading.py --build-model-outputs runs/x/samples/samples-test.jsonl
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
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from mathlite import answers
from mathlite.answers import extract_answer, is_equiv
from mathlite.clusters import cluster_answers

DATA = REPO.parent / "shared" / "data" / "math" / "test.jsonl"
CASES = REPO / "bench" / "grading_cases"


# --------------------------------------------------------------------------------------
# Set (c): rule-generated rewrites of MATH gold answers (regression and throughput only)
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


def build_rewrites(limit: int | None, seed: int = 0) -> list[tuple[str, str, bool, str]]:
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
# Sets (a) and (b): labelled case files
# --------------------------------------------------------------------------------------

def load_cases(path: Path) -> list[tuple[str, str, bool, str]]:
    """(gold, pred, label, category) from a JSONL case file; a bad line is a one-line error."""
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            gold, pred, label = r["gold"], r["pred"], r["label"]
            if not (isinstance(gold, str) and isinstance(pred, str) and isinstance(label, bool)):
                raise ValueError("gold and pred must be strings, label true or false (label it by hand)")
        except (ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"{path}:{n}: bad case ({e})") from None
        pairs.append((gold, pred, label, r.get("category") or r.get("label_source", "")))
    return pairs


_DOLLAR_SPAN_RE = re.compile(r"\$([^$]+)\$")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


def final_answer(text: str) -> tuple[str | None, str]:
    """The final answer of a sampled solution: the box (or "The answer is"), else the last
    `$...$` span, else the last number. The fallbacks only serve to collect more real
    answer strings from a small model that rarely boxes its answer."""
    a = extract_answer(text)
    if a:
        return a, "box"
    spans = _DOLLAR_SPAN_RE.findall(text)
    if spans and spans[-1].strip():
        return spans[-1].strip(), "last $...$"
    nums = _NUMBER_RE.findall(text)
    if nums:
        return nums[-1], "last number"
    return None, ""


def build_model_outputs(samples: Path, out: Path) -> None:
    """Write set (a)'s candidate file from a samples file of recipes/02_sample.py.

    Each distinct (gold, final answer) pair once. Pairs on which mathlite and Math-Verify
    agree get that verdict (`label_source: "graders agree"`); the others get
    `label_source: "to label"` and must be labelled by hand before the file is used.
    """
    problems = {}
    problems_path = samples.with_name(samples.name.replace(".jsonl", ".problems.jsonl"))
    for line in problems_path.read_text().splitlines():
        p = json.loads(line)
        problems[p["id"]] = p["answer"]
    rows, seen = [], set()
    for line in samples.read_text().splitlines():
        r = json.loads(line)
        pred, how = final_answer(r["text"])
        gold = problems.get(r["id"])
        if not pred or not gold or (gold, pred) in seen:
            continue
        seen.add((gold, pred))
        ours, theirs = is_equiv(pred, gold), grade_math_verify([(gold, pred, None, None)])[0]
        rows.append({"id": r["id"], "k": r["k"], "extracted_by": how, "gold": gold, "pred": pred,
                     "label": ours if ours == theirs else None,
                     "label_source": "graders agree" if ours == theirs else "to label"})
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {out}: {len(rows)} pairs, {sum(r['label'] is None for r in rows)} to label by hand")


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


def scores(verdicts, pairs) -> dict:
    n = len(pairs)
    return {
        "agreement": sum(v == p[2] for v, p in zip(verdicts, pairs)) / n,
        "false_accepts": sum(v and not p[2] for v, p in zip(verdicts, pairs)),
        "false_rejects": sum((not v) and p[2] for v, p in zip(verdicts, pairs)),
    }


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
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def run_set(name: str, pairs, console) -> dict:
    answers.clear_caches()
    runs = timed_interleaved(pairs, {"mathlite": grade_mathlite, "math_verify": grade_math_verify})
    result = {"pairs": len(pairs), "equal_pairs": sum(p[2] for p in pairs)}
    for grader, r in runs.items():
        result[grader] = {**scores(r["verdicts"], pairs), "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
                          "pairs_per_s": len(pairs) / r["wall_s"], "pairs_per_cpu_s": len(pairs) / r["cpu_s"]}
    result["throughput_ratio_cpu"] = result["mathlite"]["pairs_per_cpu_s"] / result["math_verify"]["pairs_per_cpu_s"]
    result["throughput_ratio_wall"] = result["mathlite"]["pairs_per_s"] / result["math_verify"]["pairs_per_s"]
    ml, mv = runs["mathlite"]["verdicts"], runs["math_verify"]["verdicts"]
    result["graders_disagree"] = [
        {"gold": p[0], "pred": p[1], "label": p[2], "category": p[3], "mathlite": a, "math_verify": b}
        for p, a, b in zip(pairs, ml, mv) if a != b
    ]
    result["both_wrong"] = [
        {"gold": p[0], "pred": p[1], "label": p[2], "category": p[3]}
        for p, a, b in zip(pairs, ml, mv) if a == b != p[2]
    ]
    by_cat = defaultdict(list)
    for i, p in enumerate(pairs):
        by_cat[p[3]].append(i)
    result["by_category"] = {
        c: {"pairs": len(idx), "mathlite": sum(ml[i] == pairs[i][2] for i in idx) / len(idx),
            "math_verify": sum(mv[i] == pairs[i][2] for i in idx) / len(idx)}
        for c, idx in sorted(by_cat.items())
    }
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-pairs", type=int, default=2000, help="rewrites set (c): a random sample of this many pairs")
    ap.add_argument("--limit", type=int, default=None, help="rewrites set (c): only the first N MATH test problems")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "grading.json")
    ap.add_argument("--build-model-outputs", type=Path, metavar="SAMPLES_JSONL",
                    help="write set (a)'s candidate case file from a samples file, then stop")
    args = ap.parse_args(argv)

    if args.build_model_outputs:
        if not args.build_model_outputs.is_file():
            raise SystemExit(f"{args.build_model_outputs}: no such samples file")
        build_model_outputs(args.build_model_outputs, CASES / "model_outputs.jsonl")
        return {}

    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 110))
    sets = {
        "model_outputs": load_cases(CASES / "model_outputs.jsonl"),
        "adversarial": load_cases(CASES / "adversarial.jsonl"),
        "unseen": load_cases(CASES / "unseen.jsonl"),
        "rewrites": build_rewrites(args.limit)[: args.max_pairs],  # build_rewrites shuffles
    }
    # Warm up imports and sympy's own lazily built tables for both graders, outside the timing.
    warm = sets["rewrites"][:50]
    grade_mathlite(warm)
    grade_math_verify(warm)

    results = {name: run_set(name, pairs, console) for name, pairs in sets.items()}
    sub = sets["rewrites"][:1000]
    answers.clear_caches()
    cold = timed_interleaved(sub, {"cold": lambda b: grade_mathlite(b, cold_per_pair=True)})["cold"]

    table = Table(title="Answer grading: mathlite vs Math-Verify (same pairs, same process, interleaved)")
    for col in ("set", "pairs", "grader", "agreement", "false accepts", "false rejects", "pairs/CPU-s", "ratio"):
        table.add_column(col, justify="left" if col in ("set", "grader") else "right")
    for name, r in results.items():
        for grader, label in (("mathlite", "mathlite"), ("math_verify", "Math-Verify")):
            g = r[grader]
            table.add_row(name if grader == "mathlite" else "", str(r["pairs"]) if grader == "mathlite" else "", label,
                          f"{g['agreement']:.1%}", str(g["false_accepts"]), str(g["false_rejects"]),
                          f"{g['pairs_per_cpu_s']:,.0f}", f"{r['throughput_ratio_cpu']:.0f}x" if grader == "mathlite" else "")
    console.print(table)
    console.print("(c) rewrites were generated by rules written with our normaliser: regression and throughput only.")

    # Headline: the hand-labelled sets (a), (b), (b2), and throughput over every pair of every set.
    labelled = ["model_outputs", "adversarial", "unseen"]
    n_lab = sum(results[n]["pairs"] for n in labelled)
    total = {g: {k: sum(results[n][g][k] for n in results) for k in ("wall_s", "cpu_s")} for g in ("mathlite", "math_verify")}
    n_all = sum(r["pairs"] for r in results.values())
    head = {}
    for g in ("mathlite", "math_verify"):
        head[g] = {
            "agreement_labelled_sets": sum(results[n][g]["agreement"] * results[n]["pairs"] for n in labelled) / n_lab,
            "false_accepts_labelled_sets": sum(results[n][g]["false_accepts"] for n in labelled),
            "false_rejects_labelled_sets": sum(results[n][g]["false_rejects"] for n in labelled),
            "pairs_per_cpu_s_all_sets": n_all / total[g]["cpu_s"],
            "pairs_per_s_all_sets": n_all / total[g]["wall_s"],
        }
        head[g]["accuracy"] = head[g]["agreement_labelled_sets"]  # the key bench/run_all.py reads
    ratio_cpu = head["mathlite"]["pairs_per_cpu_s_all_sets"] / head["math_verify"]["pairs_per_cpu_s_all_sets"]
    ratio_wall = head["mathlite"]["pairs_per_s_all_sets"] / head["math_verify"]["pairs_per_s_all_sets"]
    cold_rate = len(sub) / cold["cpu_s"]
    console.print(f"labelled sets (a)+(b)+(b2), {n_lab} pairs: agreement mathlite {head['mathlite']['accuracy']:.1%} vs "
                  f"Math-Verify {head['math_verify']['accuracy']:.1%}; throughput over all {n_all} pairs: "
                  f"[bold]{ratio_cpu:.0f}x[/bold] by CPU time, {ratio_wall:.0f}x by wall time "
                  f"(caches cleared before every pair: {cold_rate / results['rewrites']['math_verify']['pairs_per_cpu_s']:.0f}x "
                  f"on the rewrites)")

    # Clustering: 64 answers x up to 500 problems.
    rng = random.Random(1)
    problems = clustering_workload(sets["rewrites"], 500, 64, rng)
    answers.clear_caches()
    t0 = time.perf_counter()
    for votes in problems:
        cluster_answers(votes)
    cluster_s = time.perf_counter() - t0
    console.print(f"cluster_answers: {len(problems)} problems x 64 answers in {cluster_s:.2f} s")

    result = {
        "machine": machine_info(),
        "command": "python bench/bench_grading.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "pairs": n_lab,
        "mathlite": head["mathlite"],
        "math_verify": {**head["math_verify"], "call": "verify(parse(f'${gold}$'), parse(f'${pred}$'))"},
        "throughput_ratio_cpu": ratio_cpu,
        "throughput_ratio_wall": ratio_wall,
        "mathlite_caches_cleared_per_pair": {"pairs": len(sub), "pairs_per_cpu_s": cold_rate,
                                             "ratio_cpu_vs_math_verify_on_rewrites":
                                                 cold_rate / results["rewrites"]["math_verify"]["pairs_per_cpu_s"]},
        "sets": results,
        "clustering": {"problems": len(problems), "answers_per_problem": 64, "seconds": cluster_s},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    console.print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
