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

Several runs side by side (one column per run): `comparison_markdown`,
`print_comparison`, or from the command line:

    python -m mathlite.report runs/a/report/results.json runs/b/report/results.json

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
from pathlib import Path
from typing import Any, Mapping, Sequence

from rich.console import Console
from rich.table import Table

from mathlite.errors import ResultsError
from mathlite.files import atomic_write
from mathlite.metrics import Curves, MethodStats
from mathlite.select import method_label

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


def results_markdown(stats: Stats, title: str,
                     breakdowns: Mapping[str, Mapping[Any, Stats]] | None = None,
                     evaluator_test: Mapping[str, Any] | None = None) -> str:
    """The headline table, then per level/subject accuracy (methods as rows, groups as columns)."""
    text = f"# {title}\n\n" + markdown_table(HEADER, [_row(s) for s in stats.values()])
    text += ("\nAccuracy: share of problems whose selected answer is correct (Wilson 95% CI). "
             "Eval cost: share of the N samples the evaluator had to score.\n")
    if evaluator_test:
        text += "\n" + evaluator_sentence(evaluator_test) + "\n"
    for by, groups in (breakdowns or {}).items():
        header = ["Method"] + [f"{by} {g} (n={next(iter(s.values())).n_problems})" if s else f"{by} {g}"
                               for g, s in groups.items()]
        methods = list(stats)
        rows = [[method_label(m)] + [_pct(s[m].accuracy) if m in s else "-" for s in groups.values()]
                for m in methods]
        text += f"\n## Accuracy (%) by {by}\n\n" + markdown_table(header, rows)
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

def write_report(out_dir: str | Path, stats: Stats, *, curves: Curves | None = None,
                 breakdowns: Mapping[str, Mapping[Any, Stats]] | None = None,
                 meta: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write results.json/.md/.csv and the figures into out_dir; returns {name: path}."""
    out_dir = Path(out_dir)
    title = make_title(meta, stats)
    doc = {
        "meta": dict(meta or {}),
        "methods": {m: s.to_dict() for m, s in stats.items()},
        "breakdowns": {by: {str(g): {m: s.to_dict() for m, s in table.items()} for g, table in groups.items()}
                       for by, groups in (breakdowns or {}).items()},
        "curves": curves.to_dict() if curves is not None else None,
    }
    paths = {
        "json": _write_text(out_dir / "results.json", json.dumps(_json_safe(doc), indent=2, default=str) + "\n"),
        "md": _write_text(out_dir / "results.md", results_markdown(stats, title, breakdowns,
                                                                         (meta or {}).get("evaluator_test"))),
        "csv": _write_text(out_dir / "results.csv", results_csv(stats, breakdowns)),
    }
    if curves is not None:
        paths["accuracy_vs_n"] = plot_accuracy_vs_n(curves, out_dir / "accuracy_vs_n.png", title)
    if any(_k_of(m, "rr_maj") is not None for m in stats):
        paths["cost_vs_k"] = plot_cost_vs_k(stats, out_dir / "cost_vs_k.png", title)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    """Print one results.json as a table, or several side by side."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m mathlite.report RESULTS.json [MORE.json ...]")
        return
    runs = {}
    for path in argv:
        try:
            meta, stats = load_results(path)
        except ResultsError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        # The folder names the run (runs/<name>/report/results.json -> "runs/<name>/report").
        runs[str(meta.get("name") or Path(path).parent)] = (meta, stats)
    if len(runs) == 1:
        (meta, stats), = runs.values()
        print_table(stats, title=make_title(meta, stats))
    else:
        print_comparison({name: stats for name, (_, stats) in runs.items()})


if __name__ == "__main__":
    main()
