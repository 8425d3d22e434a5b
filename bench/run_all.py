"""Run every benchmark, one after the other, and summarize their headline ratios.

    python bench/run_all.py                        # all four, full size
    python bench/run_all.py --quick                # small sizes; results under bench/results/quick/
    python bench/run_all.py --only grading,scr_cost
    python bench/run_all.py --only throughput --threads 2   # the throughput table on every core of a 2-core machine
    python bench/run_all.py --scr-report runs/cpu/report   # SCR cost from a real run, not simulated

Each benchmark runs as its own subprocess (a crash, an import error or a timeout in one is
recorded and the next one still runs), with its output streamed through. Before calling
a script, its command line is read from its own `--help`: options it does not offer are
left out (and said so), so a script that changes its flags is not called with stale ones.

  grading    bench/bench_grading.py    mathlite's grader vs Math-Verify (same pairs)
  sampling   bench/bench_sampling.py   mathlite.sampling vs a naive generate() loop
  sft        bench/bench_sft.py        SFT tokens/s: packing / padding-free vs padded
  scr_cost   bench/bench_scr_cost.py   evaluator cost of SCR (RR.MajK) vs RR.All
  throughput bench/bench_throughput.py every stage (SSFT, sampling, scoring, evaluator training)
                                       vs its baseline, and as a share of the bf16 matmul roofline;
                                       its own per-stage table is printed again at the end

Then the headline ratio of each is read from the JSON it wrote (only if written by this
run: an older file is reported as stale, not as a result) and printed in one table with
the machine's description; everything goes to bench/results/summary.json
(bench/results/quick/summary.json with --quick, so that a smoke run never overwrites the
full results). CPU timings on a shared machine are noisy: the load average at the start
and end of each benchmark is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def _get(d: Any, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _grading_headline(d: dict) -> dict:
    ratio = d.get("throughput_ratio_cpu")
    acc_ml, acc_mv = _get(d, "mathlite", "accuracy"), _get(d, "math_verify", "accuracy")
    detail = f"{d.get('pairs', '?')} labelled pairs; accuracy {acc_ml} vs {acc_mv}"
    if isinstance(d.get("throughput_ratio_wall"), (int, float)):
        detail += f"; by wall time {d['throughput_ratio_wall']:.0f}x"
    return {"metric": "grading pairs per CPU-second, mathlite / Math-Verify", "ratio": ratio, "detail": detail}


def _sampling_headline(d: dict) -> dict:
    speedups = d.get("speedup_vs_naive") or {}
    ours = {k: v for k, v in speedups.items() if k != "naive generate"}
    best = speedups.get("mathlite.sampling") if "mathlite.sampling" in speedups else (max(ours.values()) if ours else None)
    setup = d.get("setup") or {}
    detail = ", ".join(f"{k}: {v}x" for k, v in ours.items())
    if setup:
        detail += f" ({setup.get('problems')} problems x N={setup.get('n')}, {setup.get('max_new_tokens')} new tokens)"
    return {"metric": "sampling tokens/s, mathlite.sampling / naive generate", "ratio": best, "detail": detail}


def _sft_headline(d: dict) -> dict:
    cpu = "ratios_vs_padded_cpu" in d
    ratios = d.get("ratios_vs_padded_cpu") or d.get("ratios_vs_padded") or {}
    head = d.get("headline") or {}
    detail = ", ".join(f"{k}: {v:.2f}x" if isinstance(v, (int, float)) else f"{k}: {v}" for k, v in ratios.items()
                       if k != "padded") + (" (by CPU time)" if cpu else " (by wall time)")
    if isinstance(head.get("wall_ratio"), (int, float)):
        detail += f"; by wall time {head['wall_ratio']:.2f}x"
    return {"metric": head.get("name") or "SFT tokens/s vs padded batches", "ratio": head.get("ratio"), "detail": detail}


def _scr_headline(d: dict) -> dict:
    head = d.get("headline") or {}
    tag = "SIMULATED" if d.get("simulated") else _get(d, "source", "kind", default="report")
    detail = ""
    if head:
        detail = (f"[{tag}] {head.get('method')}: {100 * head['cost_share']:.1f}% of N scored, accuracy "
                  f"{100 * head['accuracy']:.1f}% vs RR.All {100 * head['rr_all_accuracy']:.1f}%")
    return {"metric": head.get("name") or "evaluator cost, RR.All / RR.MajK", "ratio": head.get("ratio"), "detail": detail}


def _throughput_headline(d: dict) -> dict:
    goals = [g for g in d.get("goals") or [] if g.get("goal") is not None]
    met = sum(bool(g.get("met")) for g in goals)
    worst = min(goals, key=lambda g: g["ratio"] / g["goal"]) if goals else None
    detail = "; ".join(f"{g['stage']} vs {g['baseline']}: {g['ratio']:.2f}x (goal {g['goal']}x)" for g in goals)
    return {"metric": f"stage throughput vs baseline: {met} of {len(goals)} goals met",
            "ratio": worst["ratio"] if worst else None, "detail": detail}


@dataclass
class Bench:
    name: str
    script: str
    out: str  # result file name under the results folder
    headline: Callable[[dict], dict]
    quick_args: list[str] = field(default_factory=list)
    description: str = ""


BENCHES = [
    Bench("grading", "bench/bench_grading.py", "grading.json", _grading_headline,
          quick_args=["--max-pairs", "400"], description="answer grader vs Math-Verify"),
    Bench("sampling", "bench/bench_sampling.py", "sampling_cpu.json", _sampling_headline,
          quick_args=["--problems", "4", "--n", "4", "--max-new-tokens", "48", "--no-noshare"],
          description="sampler vs naive generate"),
    Bench("sft", "bench/bench_sft.py", "sft_cpu.json", _sft_headline, quick_args=["--quick"],
          description="SFT packing / padding-free vs padded"),
    Bench("scr_cost", "bench/bench_scr_cost.py", "scr_cost.json", _scr_headline, quick_args=["--quick"],
          description="SCR evaluator cost vs RR.All"),
    Bench("throughput", "bench/bench_throughput.py", "throughput.json", _throughput_headline, quick_args=["--quick"],
          description="each stage vs its baseline, and vs the matmul roofline"),
]
BY_NAME = {b.name: b for b in BENCHES}


def script_flags(script: Path, timeout: float = 180) -> set[str]:
    """The long options a script's argparse offers, read from its --help."""
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        raise RuntimeError(f"`{script.name} --help` failed (exit {proc.returncode}): {tail[0][:300]}")
    return set(re.findall(r"(?<![\w-])(--[a-zA-Z][\w-]*)", proc.stdout))


def filter_args(args: list[str], flags: set[str]) -> tuple[list[str], list[str]]:
    """Keep the options the script offers (each option with the values that follow it)."""
    kept, dropped, i = [], [], 0
    while i < len(args):
        j = i + 1
        while j < len(args) and not args[j].startswith("--"):
            j += 1
        opt = args[i].split("=", 1)[0]
        (kept if opt in flags else dropped).extend(args[i:j])
        i = j
    return kept, dropped


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_bench(b: Bench, out_dir: Path, quick: bool, extra: list[str], timeout_s: float) -> dict:
    script = REPO / b.script
    out_file = out_dir / b.out
    rec: dict[str, Any] = {"name": b.name, "script": b.script, "description": b.description, "result_file": str(out_file)}
    if not script.exists():
        return {**rec, "status": "failed", "error": f"{b.script} not found"}
    try:
        flags = script_flags(script)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return {**rec, "status": "failed", "error": f"cannot read its command line: {e}"}
    wanted = (list(b.quick_args) if quick else []) + ["--out", str(out_file)] + extra
    args, dropped = filter_args(wanted, flags)
    if "--out" not in args and out_file != RESULTS / b.out:
        # the script cannot be told where to write: it writes to its own default
        rec["note"] = f"{b.script} has no --out: it writes its default file"
        out_file = RESULTS / b.out
        rec["result_file"] = str(out_file)
    cmd = [sys.executable, b.script, *args]
    rec.update(command=" ".join(cmd[1:]), dropped_args=dropped, loadavg_before=_loadavg())
    if dropped:
        print(f"[run_all] {b.name}: {b.script} does not offer {' '.join(a for a in dropped if a.startswith('--'))}; "
              "left out", flush=True)
    print(f"\n[run_all] ===== {b.name}: {' '.join(cmd[1:])}", flush=True)
    started = time.time()
    tail: deque[str] = deque(maxlen=40)
    killed = threading.Event()
    try:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except OSError as e:
        return {**rec, "status": "failed", "error": f"could not start: {e}"}

    def kill():  # the watchdog: a silent, hung benchmark is stopped too
        killed.set()
        proc.kill()

    watchdog = threading.Timer(timeout_s, kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # stream the benchmark's own output through
            sys.stdout.write(line)
            sys.stdout.flush()
            tail.append(line.rstrip("\n"))
        returncode = proc.wait()
    finally:
        watchdog.cancel()
    timed_out = killed.is_set()
    rec.update(seconds=round(time.time() - started, 1), returncode=returncode, loadavg_after=_loadavg())
    fresh = out_file.exists() and out_file.stat().st_mtime >= started - 1
    if timed_out:
        rec.update(status="failed", error=f"timed out after {timeout_s:.0f} s")
    elif returncode != 0:
        rec.update(status="failed", error=f"exit code {returncode}")
    elif not fresh:
        rec.update(status="failed", error=f"no fresh {out_file.name} written")
    else:
        rec["status"] = "ok"
    if rec["status"] != "ok":
        rec["output_tail"] = list(tail)[-15:]
    if out_file.exists():
        try:
            d = json.loads(out_file.read_text())
            rec["headline"] = b.headline(d)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
            rec["headline_error"] = f"{type(e).__name__}: {e}"
        if not fresh:
            rec["stale_result_from"] = result_date(out_file)
    return rec


def result_date(path: Path) -> str:
    """When a result file was written: its last commit's date if git tracks it unchanged (a fresh clone
    gives every file the checkout time), else the file's modification time."""
    try:
        rel = str(path.resolve().relative_to(REPO))
        changed = subprocess.run(["git", "status", "--porcelain", "--", rel], cwd=REPO, capture_output=True,
                                 text=True, timeout=30)
        dated = subprocess.run(["git", "log", "-1", "--format=%cd", "--date=format:%Y-%m-%d %H:%M", "--", rel],
                               cwd=REPO, capture_output=True, text=True, timeout=30)
        if changed.returncode == 0 and not changed.stdout.strip() and dated.returncode == 0 and dated.stdout.strip():
            return f"{dated.stdout.strip()}, committed"
    except (ValueError, OSError, subprocess.SubprocessError):
        pass  # outside the repository, or no git: the file's own time
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))


def previous(b: Bench, out_dir: Path) -> dict:
    """A benchmark not run now: its last result, if any, marked as such."""
    out_file = out_dir / b.out
    rec = {"name": b.name, "script": b.script, "description": b.description, "status": "not run",
           "result_file": str(out_file)}
    if out_file.exists():
        try:
            rec["headline"] = b.headline(json.loads(out_file.read_text()))
            rec["stale_result_from"] = result_date(out_file)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
            rec["headline_error"] = f"{type(e).__name__}: {e}"
    return rec


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(130, Console().width))
    t = Table(title="mathlite benchmarks" + (" (--quick)" if summary["quick"] else ""), show_lines=True)
    for col in ("benchmark", "status", "headline", "ratio", "details", "time"):
        t.add_column(col, justify="right" if col in ("ratio", "time") else "left", overflow="fold")
    for r in summary["benchmarks"].values():
        h = r.get("headline") or {}
        ratio = h.get("ratio")
        ratio_s = f"{ratio:.2f}x" if isinstance(ratio, (int, float)) else "-"
        status = r["status"]
        if r.get("stale_result_from"):
            status += f" (result from {r['stale_result_from']})"
        details = h.get("detail") or r.get("error") or r.get("headline_error") or ""
        if r["status"] == "failed" and r.get("error"):
            details = f"{r['error']}" + (f"; older result: {h.get('detail')}" if h.get("detail") else "")
        t.add_row(r["name"], status, h.get("metric") or r.get("description", ""), ratio_s, details,
                  f"{r['seconds']:.0f} s" if r.get("seconds") is not None else "-")
    console.print(t)
    m = summary["machine"]
    v = summary["versions"]
    console.print(f"machine: {m.get('platform')}, {m.get('cpus')} CPUs"
                  + (f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU")
                  + f"; python {v.get('python')}, torch {v.get('torch')}, transformers {v.get('transformers')}, "
                  f"trl {v.get('trl')}, peft {v.get('peft')}; load average {summary['loadavg_start']} at start, "
                  f"{summary['loadavg_end']} at end (CPU timings on a shared machine are noisy)", highlight=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(BY_NAME)}")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run); results go to bench/results/quick/")
    ap.add_argument("--scr-report", help="pass --report DIR to bench_scr_cost.py (a real run instead of simulated)")
    ap.add_argument("--threads", type=int, help="torch threads, passed to every benchmark that offers --threads "
                    "(default: each one's own; the recipes use every core)")
    ap.add_argument("--timeout-s", type=float, default=3600, help="per benchmark (default 3600)")
    ap.add_argument("--out-dir", type=Path, help="where results and summary.json go (default bench/results[/quick])")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else list(BY_NAME)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    out_dir = args.out_dir or (RESULTS / "quick" if args.quick else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)

    from mathlite import runs

    summary: dict[str, Any] = {
        "quick": args.quick,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": runs.machine(),
        "versions": runs.versions(),
        "git_commit": runs.git_commit(),
        "loadavg_start": _loadavg(),
        "benchmarks": {},
    }
    t0 = time.time()
    for b in BENCHES:
        if b.name not in names:
            summary["benchmarks"][b.name] = previous(b, out_dir)
            continue
        extra = ["--report", args.scr_report] if b.name == "scr_cost" and args.scr_report else []
        extra += ["--threads", str(args.threads)] if args.threads else []
        try:
            rec = run_bench(b, out_dir, args.quick, extra, args.timeout_s)
        except Exception as e:  # noqa: BLE001 - the runner itself must not stop the sequence
            rec = {"name": b.name, "script": b.script, "status": "failed", "error": f"run_all: {type(e).__name__}: {e}"}
        summary["benchmarks"][b.name] = rec
        print(f"[run_all] {b.name}: {rec['status']}" + (f" ({rec.get('error')})" if rec.get("error") else ""), flush=True)
        runs.atomic_write_json(out_dir / "summary.json", {**summary, "loadavg_end": _loadavg(), "partial": True})
    summary["loadavg_end"] = _loadavg()
    summary["seconds"] = round(time.time() - t0, 1)
    runs.atomic_write_json(out_dir / "summary.json", summary)
    print()
    tp = summary["benchmarks"].get("throughput", {})
    if tp.get("status") == "ok":  # the per-stage table, from the file just written
        try:
            from bench_throughput import print_table

            print_table(json.loads((out_dir / "throughput.json").read_text()))
        except Exception as e:  # noqa: BLE001 - the summary below still prints
            print(f"[run_all] cannot print the throughput table: {type(e).__name__}: {e}")
    print_summary(summary)
    print(f"[run_all] wrote {out_dir / 'summary.json'}")
    ran = [r for r in summary["benchmarks"].values() if r["status"] != "not run"]
    return 0 if all(r["status"] == "ok" for r in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
