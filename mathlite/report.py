"""Reporting: a rich table in the terminal, results.{json,md,csv} and PNG figures.

    stats  = metrics.summarize(problems)
    curves = metrics.accuracy_curves(problems)
    meta   = {"model": "SmolLM2-135M + LoRA", "data": "MATH test500", "N": 16}
    print_table(stats, title=make_title(meta, stats))
    write_report("runs/cpu/report", stats, curves=curves,
                 breakdowns={"level": metrics.breakdown(problems, "level")}, meta=meta)

Figures (drawn with matplotlib's Agg canvas directly, so importing this module
never changes the backend of a notebook that uses pyplot):

    accuracy_vs_n.png   expected accuracy vs number of samples N, one line per method, CI bands
    cost_vs_k.png       the paper's Fig. 1: accuracy (left) and evaluator cost (right) of
                        RR.MajK vs K, with Maj1 (K=1) and RR.All (K=all) as the two ends

Several runs side by side (one column per run, then mean +- sd across them, e.g. seeds):
`comparison_markdown`, `print_comparison`, or from the command line:

    python -m mathlite.report runs/a/report/results.json runs/b/report/results.json

Paired statistics (`metrics.paired_comparisons`): every method against Maj1@N, SCR against
RR.All, the trained evaluator against each other scorer; wins / losses / ties per problem, the
exact sign-test p-value and a seeded paired-bootstrap CI of the difference. `claims_markdown`
turns them into the "which of the paper's claims held" text: generated, never hand-written.

Everything a report says can be recomputed without a model or any recipe state from the
report folder's results.json and choices-test.jsonl (per problem: answers, correctness,
tokens, every scorer's scores, and what each method chose):

    python -m mathlite.report --recompute runs/cpu/report [--out DIR]

It exits 1 unless every number comes out identical.

Every file is written atomically (temporary file in the same folder, then
os.replace), so a crash never leaves a half-written results file behind.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from rich.console import Console
from rich.table import Table

from mathlite import metrics
from mathlite.errors import ResultsError, UserError
from mathlite.files import atomic_write, atomic_write_json
from mathlite.metrics import Curves, MethodStats, PairedStats
from mathlite.metrics import full_label as method_label

Stats = Mapping[str, MethodStats]


# ---------------------------------------------------------------------------
# Formatting helpers
# ---------------------------------------------------------------------------

def fmt(x: float | None, spec: str = ".3f", missing: str = "-", scale: float = 1) -> str:
    """`x` (times `scale`) formatted with `spec`; `missing` for None and NaN. The one number
    formatter of the tables, summaries and model cards."""
    return missing if x is None or x != x else format(x * scale, spec)


def _pct(x: float | None, digits: int = 1) -> str:
    return fmt(x, f".{digits}f", "n/a", 100)


def _ci(s: MethodStats) -> str:
    return f"[{_pct(s.ci_low)}, {_pct(s.ci_high)}]"


def _tokens(x: float) -> str:
    return fmt(x, ",.0f", "n/a")


def make_title(meta: Mapping[str, Any] | None = None, stats: Stats | None = None) -> str:
    """"<model> on <data>, N=<N>, <P> problems" from whatever the run's metadata has."""
    meta = dict(meta or {})
    n_problems = meta.get("n_problems")
    if n_problems is None and stats:
        n_problems = next(iter(stats.values())).n_problems
    parts = [f"{meta.get('model', 'model ?')} on {meta.get('data', 'data ?')}"]
    if meta.get("N") is not None:
        parts.append(f"N={meta['N']}")
    if n_problems is not None:
        parts.append(f"{n_problems} problems")
    return ", ".join(parts)


HEADER = ["Method", "Accuracy (%)", "95% CI", "Eval cost (% of N)", "Tokens scored / problem"]


def _row(s: MethodStats) -> list[str]:
    return [s.label, _pct(s.accuracy), _ci(s), _pct(s.cost_share, 0), _tokens(s.tokens_scored)]


# ---------------------------------------------------------------------------
# Terminal output
# ---------------------------------------------------------------------------

def print_table(stats: Stats, title: str | None = None, console=None) -> None:
    """The headline table: method, accuracy, 95% CI, evaluator cost, tokens scored."""
    console = console or Console()
    table = Table(title=title)
    for i, name in enumerate(HEADER):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for s in stats.values():
        # Oracle rows are upper bounds, not methods you can deploy: dim them.
        table.add_row(*_row(s), style="dim" if "oracle" in s.label else None)
    console.print(table)


def comparison_rows(runs: Mapping[str, Stats]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a side-by-side table: one row per method, one column per run."""
    methods: list[str] = []
    for stats in runs.values():
        methods += [m for m in stats if m not in methods]
    header = ["Method"] + list(runs)
    rows = []
    for m in methods:
        cells = []
        for stats in runs.values():
            s = stats.get(m)
            cells.append("-" if s is None else f"{_pct(s.accuracy)} {_ci(s)}")
        rows.append([method_label(m)] + cells)
    return header, rows


def print_comparison(runs: Mapping[str, Stats], title: str | None = None, console=None) -> None:
    console = console or Console()
    header, rows = comparison_rows(runs)
    table = Table(title=title or "Accuracy (%) [95% CI] per run")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*row)
    console.print(table)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

def _write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _json_safe(obj: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def comparison_markdown(runs: Mapping[str, Stats]) -> str:
    return markdown_table(*comparison_rows(runs))


def evaluator_sentence(q: Mapping[str, Any]) -> str:
    """One line on the evaluator's separation of right and wrong test samples (metrics.evaluator_quality)."""
    return (f"Evaluator on these test samples: AUC {fmt(q.get('auc'))} over {q['solutions']} solutions "
            f"({100 * q['correct_share']:.1f}% correct); within-problem AUC {fmt(q.get('within_problem_auc'))} "
            f"(mean over the {q['mixed_problems']} problems with both right and wrong samples; 0.5 = no skill).")


def scorer_line(name: str, q: Mapping[str, Any] | None) -> str:
    """One AUC line per scorer (the trained evaluator or another one, e.g. the generator's confidence)."""
    if not q:
        return f"{name}: no scores"
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    return (f"{name}: pooled AUC {f(q.get('auc'))} over {q['solutions']} solutions ({100 * q['correct_share']:.1f}% "
            f"correct); within-problem AUC {f(q.get('within_problem_auc'))} (mean over the {q['mixed_problems']} "
            "problems with right and wrong samples)")


PAIRED_HEADER = ["Method", "vs", "Wins", "Losses", "Ties", "Diff (points)", "95% CI (paired bootstrap)", "Sign test p"]


def _p(p: float) -> str:
    return "n/a" if p != p else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def paired_rows(paired: Sequence[PairedStats]) -> list[list[str]]:
    return [[c.label, c.baseline_label, str(c.wins), str(c.losses), str(c.ties), f"{100 * c.diff:+.1f}",
             f"[{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]", _p(c.p_value)] for c in paired]


ALPHA = 0.05

# The paper's claims, as (method, baseline) pairs of metrics.comparison_pairs; {s} is the scorer suffix.
CLAIMS = (
    ("rr_all", "maj1", "Re-ranking all N solutions with {who} beats majority voting"),
    ("w_rr", "maj1", "Weighted re-ranking (W-RR) with {who} beats majority voting"),
    ("rr_maj{k}", "maj1", "Solution-cluster re-ranking (SCR, K={k}) with {who} beats majority voting"),
    ("rr_maj{k}", "rr_all", "SCR (K={k}) with {who} is at least as accurate as re-ranking all solutions (RR.All)"),
)


def verdict(c: PairedStats, alpha: float = ALPHA) -> str:
    """held: significantly better; reversed: significantly worse; else not shown (two-sided sign test)."""
    if c.p_value < alpha and c.diff > 0:
        return "held"
    if c.p_value < alpha and c.diff < 0:
        return "reversed"
    return "not shown"


def _evidence(c: PairedStats) -> str:
    return (f"{c.label} vs {c.baseline_label}: {c.wins} wins, {c.losses} losses, {c.ties} ties; "
            f"{100 * c.diff:+.1f} points, 95% CI [{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]; "
            f"sign test p = {_p(c.p_value)}")


def claims_markdown(paired: Sequence[PairedStats], stats: Stats | None = None,
                    scorers: Mapping[str, Any] | None = None, alpha: float = ALPHA) -> str:
    """The "which of the paper's claims held" text, generated from the paired tests.

    A claim "held" when its sign test gives p < alpha in its direction, is "reversed" when
    p < alpha against it, and is "not shown" otherwise (at this number of problems)."""
    by_pair = {(c.method, c.baseline): c for c in paired}
    stats = stats or {}
    lines = []
    scorer_names = sorted({metrics.split_method(c.method)[1] for c in paired} - {None})
    for scorer in [None] + scorer_names:
        who = "the trained evaluator" if scorer is None else f"the {scorer} scorer"
        tag = (lambda m: m) if scorer is None else (lambda m: metrics.scorer_method(m, scorer))
        for method, base, text in CLAIMS:
            ks = sorted({int(metrics.split_method(m)[0][len("rr_maj"):]) for m, _ in by_pair
                         if metrics.split_method(m)[0].startswith("rr_maj") and metrics.split_method(m)[1] == scorer}) \
                if "{k}" in method else [None]
            for k in ks:
                m = tag(method.format(k=k))
                b = base if base == "maj1" else tag(base)
                c = by_pair.get((m, b))
                if c is None:
                    continue
                cost = ""
                if m in stats and b in stats and base == "rr_all":
                    cost = f"; scoring cost {100 * stats[m].cost_share:.0f}% vs {100 * stats[b].cost_share:.0f}% of N"
                lines.append(f"- **{verdict(c, alpha)}**: {text.format(who=who, k=k)}. {_evidence(c)}{cost}.")
    for scorer in scorer_names:
        for base in ("rr_all", "w_rr"):
            c = by_pair.get((base, metrics.scorer_method(base, scorer)))
            if c is None:
                continue
            auc = ""
            if scorers and scorers.get("evaluator") and scorers.get(scorer):
                f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
                auc = (f"; within-problem AUC {f(scorers['evaluator'].get('within_problem_auc'))} (evaluator) vs "
                       f"{f(scorers[scorer].get('within_problem_auc'))} ({scorer})")
            lines.append(f"- **{verdict(c, alpha)}**: The trained evaluator beats the generator's {scorer} "
                         f"as a re-ranker ({method_label(base)}). {_evidence(c)}{auc}.")
    if not lines:
        return ""
    return (f"## Which of the paper's claims held here\n\nGenerated from the paired tests above: **held** = "
            f"better with two-sided sign test p < {alpha}; **reversed** = worse with p < {alpha}; "
            "**not shown** = no significant difference at this number of problems.\n\n" + "\n".join(lines) + "\n")


RULES = """## Rules behind the numbers

- **Correct**: a method is right on a problem when the sample it chose is graded correct (greedy: the
  greedy solution). Accuracy CIs are Wilson 95% intervals over problems.
- **Clusters**: answers are grouped by mathematical equivalence; a solution without an answer is in no
  cluster. Clusters rank by size, ties by the earliest sample (lowest index k) in the cluster.
- **Maj1@N**: the largest cluster; a tie in size goes to the cluster whose first member was sampled
  earliest; the answer is that earliest member.
- **RR.All**: the highest-scored of all N solutions (it may pick one without an answer, which counts as
  wrong); equal scores go to the lowest sample index; a missing score ranks below every real score.
- **SCR (RR.MajK)**: the highest-scored solution among the K largest clusters (the K-th place decided by
  the cluster rule above); equal scores go to the lowest sample index.
- **W-RR (and W-RR.MajK)**: the cluster with the largest sum of scores (equal sums: the larger, then
  earlier cluster), then its highest-scored member.
- **Maj1.TopN'**: majority vote among the N' best-scored solutions; equal scores at the cut go to the
  lowest sample index, and the vote's ties are broken as in Maj1@N (by sample index, not by score).
- **Cost**: the share of the N solutions the evaluator must score. RR.All, W-RR and Maj1.TopN' score all
  N. SCR scores the members of the K largest clusters, and counts **0** when those clusters collapse to
  one answer (K=1, or all answers agree): with one candidate the evaluator cannot change the outcome,
  so it is not called.
- **Other scorers** run the same RR.All / SCR / W-RR rules with their scores instead of the trained
  evaluator's. "confidence" is the generator's own geometric-mean token probability of the solution,
  exp(mean token log-probability): free, no training.
- **Paired tests**: on the same problems, wins = the method right and the baseline wrong, losses the
  reverse, ties the rest. p is the exact two-sided sign test (McNemar's exact test) on wins vs losses;
  the CI is a percentile bootstrap of the accuracy difference over problems (resamples seeded, shared
  by all comparisons).
"""


def results_markdown(stats: Stats, title: str,
                     breakdowns: Mapping[str, Mapping[Any, Stats]] | None = None,
                     evaluator_test: Mapping[str, Any] | None = None,
                     paired: Sequence[PairedStats] | None = None,
                     scorers: Mapping[str, Any] | None = None) -> str:
    """The headline table, AUC per scorer, paired tests, the claims, then per level/subject accuracy
    (methods as rows, groups as columns) and the rules footer."""
    text = f"# {title}\n\n" + markdown_table(HEADER, [_row(s) for s in stats.values()])
    text += ("\nAccuracy: share of problems whose selected answer is correct (Wilson 95% CI). "
             "Eval cost: share of the N samples the evaluator had to score.\n")
    if evaluator_test and not scorers:
        text += "\n" + evaluator_sentence(evaluator_test) + "\n"
    if scorers:
        text += "\n## Scorers on these test samples (AUC 0.5 = no skill)\n\n" + "".join(
            f"- {scorer_line(name, q)}\n" for name, q in scorers.items())
    if paired:
        text += ("\n## Paired comparisons (same problems)\n\n"
                 + markdown_table(PAIRED_HEADER, paired_rows(paired)))
        text += "\n" + claims_markdown(paired, stats, scorers)
    for by, groups in (breakdowns or {}).items():
        header = ["Method"] + [f"{by} {g} (n={next(iter(s.values())).n_problems})" if s else f"{by} {g}"
                               for g, s in groups.items()]
        methods = list(stats)
        rows = [[method_label(m)] + [_pct(s[m].accuracy) if m in s else "-" for s in groups.values()]
                for m in methods]
        text += f"\n## Accuracy (%) by {by}\n\n" + markdown_table(header, rows)
    if paired is not None:
        text += "\n" + RULES
    return text


CSV_FIELDS = ["group", "method", "label", "accuracy", "ci_low", "ci_high", "n_problems",
              "n_correct", "cost_share", "tokens_scored"]


def results_csv(stats: Stats, breakdowns: Mapping[str, Mapping[Any, Stats]] | None = None) -> str:
    """Long format: one row per (group, method); group "all" is the headline table."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    tables = [("all", stats)] + [(f"{by}={g}", s) for by, groups in (breakdowns or {}).items()
                                 for g, s in groups.items()]
    for group, table in tables:
        for s in table.values():
            writer.writerow({"group": group, **s.to_dict()})
    return buf.getvalue()


def load_results(path: str | Path) -> tuple[dict, dict[str, MethodStats]]:
    """(meta, {method: MethodStats}) from a results.json written by `write_report`.
    Raises ResultsError (one line naming the file) for a missing, unreadable or foreign file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file (recipe 04 writes <run>/report/results.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("methods"), dict):
        raise ResultsError(f"{path}: not a recipe-04 results file (no 'methods' table)")
    nan = float("nan")
    try:
        stats = {m: MethodStats(**{k: (nan if v is None else v) for k, v in d.items()})
                 for m, d in data["methods"].items()}
    except (TypeError, AttributeError) as e:
        raise ResultsError(f"{path}: malformed 'methods' entry ({e})") from None
    meta = data.get("meta")
    return meta if isinstance(meta, dict) else {}, stats


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------

def _figure(width: float, height: float, ncols: int = 1):
    # A bare Figure with an Agg canvas: no pyplot, no global state, works headless.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols)


def _save(fig, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=130))


DEFAULT_CURVE_METHODS = re.compile(r"^(greedy|maj1|rr_all|rr_maj\d+|w_rr|pass_n)$")


def plot_accuracy_vs_n(curves: Curves, path: str | Path, title: str,
                       methods: Sequence[str] | None = None) -> Path:
    """Expected accuracy vs N (log2 axis), one line per method with its bootstrap CI band."""
    if methods is None:
        # All methods at once is unreadable; the default keeps the ones the paper plots.
        methods = [m for m in curves.methods if DEFAULT_CURVE_METHODS.match(m) and m != "rr_maj1"]
    fig, ax = _figure(9.0, 4.8)
    x = curves.sizes
    for m in methods:
        acc = [100 * a for a in curves.accuracy[m]]
        style = ":" if m == "pass_n" else "--" if m == "greedy" else "-"
        line, = ax.plot(x, acc, style, marker="o", ms=3, label=method_label(m))
        ax.fill_between(x, [100 * a for a in curves.ci_low[m]], [100 * a for a in curves.ci_high[m]],
                        color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(n) for n in x])
    ax.set_xlabel("N (samples per problem)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: the bands stay visible
    ax.set_title(f"{title}\nexpected accuracy over {curves.n_draws} random subsets per N, "
                 f"{int(100 * curves.confidence)}% bootstrap CI", fontsize=10)
    return _save(fig, path)


def _k_of(name: str, prefix: str) -> int | None:
    rest = name[len(prefix):] if name.startswith(prefix) else ""
    return int(rest) if rest.isdigit() else None


def plot_cost_vs_k(stats: Stats, path: str | Path, title: str) -> Path:
    """The paper's Fig. 1: accuracy and evaluator cost of RR.MajK as K grows.

    K=1 is majority voting (no evaluator call); the last point, "all", is RR.All.
    """
    ks = sorted(k for m in stats if (k := _k_of(m, "rr_maj")) is not None)
    if not ks:
        raise ValueError("no RR.MajK results to plot (run summarize with scores and K_values)")
    names = [f"rr_maj{k}" for k in ks] + (["rr_all"] if "rr_all" in stats else [])
    ticks = [str(k) for k in ks] + (["all"] if "rr_all" in stats else [])
    x = list(range(len(names)))
    fig, (left, right) = _figure(10, 4.2, ncols=2)

    acc = [100 * stats[m].accuracy for m in names]
    err = [[100 * (stats[m].accuracy - stats[m].ci_low) for m in names],
           [100 * (stats[m].ci_high - stats[m].accuracy) for m in names]]
    left.errorbar(x, acc, yerr=err, marker="o", capsize=3, label="RR.MajK (SCR)")
    if all(f"w_rr_maj{k}" in stats for k in ks):
        w_names = [f"w_rr_maj{k}" for k in ks] + (["w_rr"] if "w_rr" in stats else [])
        if len(w_names) == len(x):
            left.plot(x, [100 * stats[m].accuracy for m in w_names], "s--", ms=4, label="W-RR.MajK")
    # MajK@N is the ceiling of RR.MajK: the best the evaluator could do among K clusters (K=1: Maj1).
    oracle = [(i, "maj1" if k == 1 else f"maj{k}_oracle") for i, k in enumerate(ks)
              if (k == 1 and "maj1" in stats) or f"maj{k}_oracle" in stats]
    if oracle:
        left.plot([i for i, _ in oracle], [100 * stats[m].accuracy for _, m in oracle], ":", color="gray",
                  label="MajK@N (oracle)")
    for ref, style in (("maj1", "--"), ("rr_all", "-.")):
        if ref in stats:
            left.axhline(100 * stats[ref].accuracy, ls=style, color="gray", lw=1, label=method_label(ref))
    left.set_xticks(x, ticks)
    left.set_xlabel("K (largest clusters kept)")
    left.set_ylabel("accuracy (%)")
    left.set_title("accuracy")
    left.grid(alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    first = labels.index("RR.MajK (SCR)")  # matplotlib lists error bars last; SCR is the point
    order = [first] + [i for i in range(len(labels)) if i != first]
    left.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=8)

    right.bar(x, [100 * stats[m].cost_share for m in names], color="tab:orange")
    right.set_xticks(x, ticks)
    right.set_xlabel("K (largest clusters kept)")
    right.set_ylabel("solutions scored by the evaluator (% of N)")
    right.set_ylim(0, 105)
    right.set_title("evaluator cost")
    right.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Solution-cluster re-ranking: {title}", fontsize=11)
    return _save(fig, path)


# ---------------------------------------------------------------------------
# Everything at once
# ---------------------------------------------------------------------------

def results_doc(stats: Stats, *, curves: Curves | None = None,
                breakdowns: Mapping[str, Mapping[Any, Stats]] | None = None,
                meta: Mapping[str, Any] | None = None, paired: Sequence[PairedStats] | None = None,
                scorers: Mapping[str, Any] | None = None) -> dict:
    """The content of results.json, as it reads back from the file (JSON-safe: NaN is null)."""
    doc = {
        "meta": dict(meta or {}),
        "methods": {m: s.to_dict() for m, s in stats.items()},
        "breakdowns": {by: {str(g): {m: s.to_dict() for m, s in table.items()} for g, table in groups.items()}
                       for by, groups in (breakdowns or {}).items()},
        "curves": curves.to_dict() if curves is not None else None,
        "paired": None if paired is None else [c.to_dict() for c in paired],
        "scorers": None if scorers is None else dict(scorers),
    }
    return json.loads(json.dumps(_json_safe(doc), default=str))


def write_report(out_dir: str | Path, stats: Stats, *, curves: Curves | None = None,
                 breakdowns: Mapping[str, Mapping[Any, Stats]] | None = None,
                 meta: Mapping[str, Any] | None = None, paired: Sequence[PairedStats] | None = None,
                 scorers: Mapping[str, Any] | None = None,
                 choices: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Path]:
    """Write results.json/.md/.csv, the figures and (given `choices`) choices-test.jsonl into out_dir;
    returns {name: path}."""
    out_dir = Path(out_dir)
    title = make_title(meta, stats)
    meta = dict(meta or {})
    if choices is not None:
        meta["choices"] = CHOICES_FILE
    doc = results_doc(stats, curves=curves, breakdowns=breakdowns, meta=meta, paired=paired, scorers=scorers)
    paths = {
        "json": _write_text(out_dir / "results.json", json.dumps(doc, indent=2) + "\n"),
        "md": _write_text(out_dir / "results.md", results_markdown(stats, title, breakdowns, meta.get("evaluator_test"),
                                                                   paired, scorers)),
        "csv": _write_text(out_dir / "results.csv", results_csv(stats, breakdowns)),
    }
    if choices is not None:
        from mathlite import samples

        samples.save_choices(out_dir / CHOICES_FILE, choices)
        paths["choices"] = out_dir / CHOICES_FILE
    if curves is not None:
        paths["accuracy_vs_n"] = plot_accuracy_vs_n(curves, out_dir / "accuracy_vs_n.png", title)
    if any(_k_of(m, "rr_maj") is not None for m in stats):
        paths["cost_vs_k"] = plot_cost_vs_k(stats, out_dir / "cost_vs_k.png", title)
    return paths


# ---------------------------------------------------------------------------
# The whole computation, from per-problem rows, and back from the files
# ---------------------------------------------------------------------------

CHOICES_FILE = "choices-test.jsonl"
PRIMARY = "evaluator"  # the trained evaluator's scores: the unsuffixed RR.All / SCR / W-RR methods


@dataclass
class Computed:
    """Everything a report shows, computed from per-problem rows (metrics' input format)."""

    stats: dict
    breakdowns: dict
    curves: Curves | None
    paired: list
    scorers: dict
    chosen: list
    settings: dict


def compute(rows: Sequence[dict], *, K_values: Sequence[int], topn_values: Sequence[int], n_draws: int = 32,
            seed: int = 0, n_boot: int = 2000) -> Computed:
    """Table, breakdowns, curves, per-problem choices, paired tests and AUC per scorer of a run."""
    K, topn = tuple(int(k) for k in K_values), tuple(int(t) for t in topn_values)
    prepared = metrics.prepare(rows)
    stats = metrics.summarize(prepared, K_values=K, topn_values=topn)
    breakdowns = {by: metrics.breakdown(prepared, by=by, K_values=K, topn_values=topn) for by in ("level", "subject")}
    curves = metrics.accuracy_curves(prepared, n_draws=n_draws, seed=seed, K_values=K, topn_values=topn)
    chosen = metrics.choices(prepared, K, topn)
    paired = metrics.paired_comparisons(prepared, K, topn, n_boot=n_boot, seed=seed, chosen=chosen)
    scorers = {}
    if any(s.get("score") is not None for r in rows for s in r["samples"]):
        scorers[PRIMARY] = metrics.scorer_quality(rows)
    for name in metrics.scorer_names(prepared):
        scorers[name] = metrics.scorer_quality(rows, name)
    settings = {"K_values": list(K), "topn_values": list(topn), "n_draws": n_draws, "seed": seed, "n_boot": n_boot}
    return Computed(stats, breakdowns, curves, paired, scorers, chosen, settings)


def choice_records(rows: Sequence[dict], chosen: Sequence[dict]) -> list[dict]:
    """The choices file's records: per problem its samples (k, answer, correct, tokens, score per scorer),
    the greedy solution's grade, and which sample (k) each method chose and whether that was right."""
    has_primary = any(s.get("score") is not None for r in rows for s in r["samples"])
    out = []
    for row, c in zip(rows, chosen, strict=True):
        if row["id"] != c["id"]:
            raise ValueError(f"choice_records: rows and choices disagree ({row['id']} vs {c['id']})")
        greedy = row.get("greedy")
        out.append({
            "id": row["id"], "level": row.get("level"), "subject": row.get("subject"),
            "greedy_correct": None if greedy is None else bool(greedy["correct"]),
            "samples": [{"k": s.get("k", i), "answer": s["answer"], "correct": bool(s["correct"]),
                         "tokens": int(s.get("tokens") or 0),
                         "scores": {**({PRIMARY: s.get("score")} if has_primary else {}), **(s.get("scores") or {})}}
                        for i, s in enumerate(row["samples"])],
            "chosen": c["chosen"], "correct": c["correct"],
        })
    return out


def rows_from_choices(records: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Inverse of choice_records: metrics' input rows (the trained evaluator's score as "score")."""
    rows = []
    for r in records:
        rows.append({
            "id": r["id"], "level": r.get("level"), "subject": r.get("subject"),
            "greedy": None if r.get("greedy_correct") is None else {"correct": r["greedy_correct"]},
            "samples": [{"k": s["k"], "answer": s.get("answer"), "correct": s["correct"], "tokens": s.get("tokens", 0),
                         "score": (s.get("scores") or {}).get(PRIMARY),
                         "scores": {n: v for n, v in (s.get("scores") or {}).items() if n != PRIMARY}}
                        for s in r["samples"]],
        })
    return rows


COMPARED = ("methods", "breakdowns", "curves", "paired", "scorers")


def recompute(folder: str | Path, out: str | Path | None = None) -> tuple[Computed, list[str]]:
    """Recompute a report folder's numbers from its results.json settings and its choices file alone
    (no model, no samples texts, no recipe state). Returns (the computation, what differs from the
    stored results: [] when every number is identical). With `out`, writes the recomputed report there."""
    from mathlite import samples

    folder = Path(folder)
    results = folder / "results.json"
    load_results(results)  # one-line errors for a missing or foreign file
    stored = json.loads(results.read_text())
    meta = stored.get("meta") or {}
    settings = meta.get("settings")
    if not isinstance(settings, dict) or "choices" not in meta:
        raise ResultsError(f"{results}: no settings or choices file recorded (written by an older recipe 04; rerun it)")
    records = samples.load_choices(folder / meta["choices"])
    rows = rows_from_choices(records)
    try:
        comp = compute(rows, K_values=settings["K_values"], topn_values=settings["topn_values"],
                       n_draws=settings["n_draws"], seed=settings["seed"], n_boot=settings["n_boot"])
    except KeyError as e:
        raise ResultsError(f"{results}: settings lack {e}") from None
    doc = results_doc(comp.stats, curves=comp.curves, breakdowns=comp.breakdowns, meta=meta, paired=comp.paired,
                      scorers=comp.scorers)
    diffs = [key for key in COMPARED if doc.get(key) != stored.get(key)]
    bad = [r["id"] for r, c in zip(records, comp.chosen) if r.get("chosen") != c["chosen"] or r.get("correct") != c["correct"]]
    if bad:
        diffs.append(f"choices of {len(bad)} problems (e.g. {bad[0]})")
    if out is not None:
        write_report(out, comp.stats, curves=comp.curves, breakdowns=comp.breakdowns, meta=meta, paired=comp.paired,
                     scorers=comp.scorers, choices=choice_records(rows, comp.chosen))
    return comp, diffs


# ---------------------------------------------------------------------------
# Several runs (seeds): mean +- sd
# ---------------------------------------------------------------------------

def across_runs_rows(runs: Mapping[str, Stats], paired: Mapping[str, Sequence[Mapping[str, Any]]] | None = None
                     ) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per method, accuracy mean +- sd across runs (e.g. seeds), and the mean +- sd of
    its paired difference to Maj1@N with how many runs found it significant either way."""
    methods: list[str] = []
    for stats in runs.values():
        methods += [m for m in stats if m not in methods]
    header = ["Method", "Runs", "Accuracy (%) mean +- sd", "vs Maj1@N (points) mean +- sd", "p < 0.05 (better / worse)"]
    rows = []
    for m in methods:
        accs = [100 * s[m].accuracy for s in runs.values() if m in s and s[m].accuracy == s[m].accuracy]
        mean, sd = metrics.mean_sd(accs)
        diffs, better, worse = [], 0, 0
        for pairs in (paired or {}).values():
            for c in pairs or []:
                if c["method"] == m and c["baseline"] == "maj1":
                    diffs.append(100 * c["diff"])
                    better += c["p_value"] < ALPHA and c["diff"] > 0
                    worse += c["p_value"] < ALPHA and c["diff"] < 0
        dm, dsd = metrics.mean_sd(diffs)
        rows.append([method_label(m), str(len(accs)), f"{mean:.1f} +- {sd:.1f}",
                     f"{dm:+.1f} +- {dsd:.1f}" if diffs else "-", f"{better} / {worse}" if diffs else "-"])
    return header, rows


def print_across_runs(runs: Mapping[str, Stats], paired: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                      console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    header, rows = across_runs_rows(runs, paired)
    table = Table(title=f"Across {len(runs)} runs (e.g. seeds): mean +- sd")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def across_runs_paired(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every paired comparison that all the runs made, across them: per run its difference and sign-test
    p; the mean +- sd of the differences; how many runs found it significant either way; and the wins
    and losses pooled over all (run, problem) pairs with their sign test. The pooled test treats a
    problem in two runs as two pairs, though they share the problem: the per-run tests are the strict ones."""
    names = list(results)
    by_pair: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for name in names:
        for c in results[name].get("paired") or []:
            by_pair.setdefault((c["method"], c["baseline"]), []).append(c)
    out = []
    for (m, b), cs in by_pair.items():
        if len(cs) != len(names):
            continue
        diffs = [100 * c["diff"] for c in cs]
        mean, sd = metrics.mean_sd(diffs)
        wins, losses = sum(c["wins"] for c in cs), sum(c["losses"] for c in cs)
        out.append({"method": m, "baseline": b, "label": cs[0]["label"], "baseline_label": cs[0]["baseline_label"],
                    "runs": len(cs), "diff_points": diffs, "p_values": [c["p_value"] for c in cs],
                    "diff_mean": mean, "diff_sd": sd,
                    "runs_better": sum(c["p_value"] < ALPHA and c["diff"] > 0 for c in cs),
                    "runs_worse": sum(c["p_value"] < ALPHA and c["diff"] < 0 for c in cs),
                    "pooled_wins": wins, "pooled_losses": losses,
                    "pooled_ties": sum(c["ties"] for c in cs), "pooled_p": metrics.sign_test(wins, losses)})
    return out


def across_runs_scorers(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per scorer (the trained evaluator, the generator's confidence): pooled and within-problem AUC per run,
    with mean +- sd."""
    scorers: list[str] = []
    for r in results.values():
        scorers += [s for s in (r.get("scorers") or {}) if s not in scorers]
    rows = []
    for sc in scorers:
        qs = [(r.get("scorers") or {}).get(sc) or {} for r in results.values()]
        row = {"scorer": sc}
        for key in ("auc", "within_problem_auc"):
            vals = [q.get(key) for q in qs]
            good = [v for v in vals if v is not None]
            row[key] = vals
            row[key + "_mean"], row[key + "_sd"] = metrics.mean_sd(good) if good else (None, None)
        rows.append(row)
    return rows


def across_runs_markdown(results: Mapping[str, Mapping[str, Any]], runs_: Mapping[str, Stats]) -> str:
    """The across-seeds document: accuracy mean +- sd, paired comparisons, scorer AUCs."""
    paired = {name: r.get("paired") or [] for name, r in results.items()}
    n = [r.get("meta", {}).get("n_problems") for r in results.values()]
    header, rows = across_runs_rows(runs_, paired)
    parts = [f"# Across {len(results)} runs ({', '.join(results)})", "",
             f"Problems per run: {', '.join(str(x) for x in n)}. Accuracy in %, differences in points; "
             f"significance: two-sided exact sign test at {ALPHA}.", "", "## Accuracy", "", markdown_table(header, rows), ""]
    pr = across_runs_paired(results)
    head = ["Method", "vs", "diff per run", "mean +- sd", "runs p<0.05 (better / worse)", "pooled W / L / T", "pooled p"]
    body = [[c["label"], c["baseline_label"], ", ".join(f"{d:+.1f}" for d in c["diff_points"]),
             f"{c['diff_mean']:+.1f} +- {c['diff_sd']:.1f}", f"{c['runs_better']} / {c['runs_worse']}",
             f"{c['pooled_wins']} / {c['pooled_losses']} / {c['pooled_ties']}", _p(c["pooled_p"])] for c in pr]
    parts += ["## Paired comparisons", "", markdown_table(head, body), "",
              "Pooled: wins and losses summed over every (run, problem) pair; the same problem appears once per run, "
              "so the pooled p is optimistic and the per-run counts are the strict test.", ""]
    sc = across_runs_scorers(results)
    if sc:
        f = lambda v: fmt(v)  # noqa: E731
        body = [[r["scorer"], ", ".join(f(v) for v in r["within_problem_auc"]),
                 f"{f(r['within_problem_auc_mean'])} +- {f(r['within_problem_auc_sd'])}",
                 ", ".join(f(v) for v in r["auc"]), f"{f(r['auc_mean'])} +- {f(r['auc_sd'])}"] for r in sc]
        parts += ["## Scorers: how well they separate right from wrong test samples", "",
                  markdown_table(["Scorer", "within-problem AUC per run", "mean +- sd", "pooled AUC per run", "mean +- sd"], body), ""]
    return "\n".join(parts)


def write_across_runs(out: str | Path, paths: Sequence[str | Path], names: Sequence[str] | None = None) -> dict[str, Path]:
    """across-runs.md and across-runs.json in `out`, from the runs' results.json files alone."""
    results, runs_ = {}, {}
    for i, p in enumerate(paths):
        name = names[i] if names else Path(p).parent.parent.name
        _, runs_[name] = load_results(p)
        results[name] = json.loads(Path(p).read_text())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = _write_text(out / "across-runs.md", across_runs_markdown(results, runs_))
    header, rows = across_runs_rows(runs_, {n: r.get("paired") or [] for n, r in results.items()})
    data = {"runs": list(results), "sources": [str(p) for p in paths], "accuracy": {"header": header, "rows": rows},
            "paired": across_runs_paired(results), "scorers": across_runs_scorers(results)}
    js = out / "across-runs.json"
    atomic_write_json(js, _json_safe(data))
    return {"md": md, "json": js}


USAGE = """usage: python -m mathlite.report RESULTS.json [MORE.json ...] [--out DIR]   one table, or runs side by side
                                                          + mean +- sd (--out: across-runs.md/.json there)
       python -m mathlite.report --recompute REPORT_DIR [--out DIR]   recompute every number from the folder's
                                                                       results.json + choices-test.jsonl alone"""


def main(argv: Sequence[str] | None = None) -> None:
    """Print one results.json as a table, or several side by side (with mean +- sd across them);
    or recompute a report folder from its files."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if argv[0] == "--recompute":
        if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--out"):
            print(USAGE, file=sys.stderr)
            raise SystemExit(2)
        try:
            comp, diffs = recompute(argv[1], argv[3] if len(argv) == 4 else None)
        except (ResultsError, UserError) as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        meta, _ = load_results(Path(argv[1]) / "results.json")
        print_table(comp.stats, title=make_title(meta, comp.stats))
        n = len(comp.chosen)
        if diffs:
            print(f"recomputed from {argv[1]} ({n} problems): DIFFERS from results.json in: {', '.join(diffs)}",
                  file=sys.stderr)
            raise SystemExit(1)
        print(f"recomputed from {argv[1]} ({n} problems): every number identical to results.json "
              f"({', '.join(COMPARED)}, and each method's choice per problem)")
        return
    out_dir = None
    if "--out" in argv:
        i = argv.index("--out")
        if i + 1 >= len(argv):
            print(USAGE, file=sys.stderr)
            raise SystemExit(2)
        out_dir = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    runs, paired = {}, {}
    for path in argv:
        try:
            meta, stats = load_results(path)
        except ResultsError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        # The folder names the run (runs/<name>/report/results.json -> "runs/<name>/report").
        name = str(meta.get("name") or Path(path).parent)
        if name in runs:
            name = str(Path(path).parent)
        runs[name] = (meta, stats)
        paired[name] = json.loads(Path(path).read_text()).get("paired") or []
    if len(runs) == 1:
        (meta, stats), = runs.values()
        print_table(stats, title=make_title(meta, stats))
    else:
        print_comparison({name: stats for name, (_, stats) in runs.items()})
        print_across_runs({name: stats for name, (_, stats) in runs.items()}, paired)
        if out_dir:
            written = write_across_runs(out_dir, argv)
            print(f"wrote {written['md']} and {written['json']}")


if __name__ == "__main__":
    main()
