"""The whole chain in one command: 01 SSFT -> 02 sampling (train and test splits) -> 03 evaluator
-> 04 re-ranking report -> 05 multi-task fine-tuning, reusing every stage that already finished.

    python recipes/run_all.py                      # cpu preset without a GPU
    python recipes/run_all.py --preset smoke       # the CI version (a few minutes on 2 cores)
    python recipes/run_all.py --stages 01,02,03,04 # stop before multi-task
    python recipes/run_all.py --preset powered     # 01->04 for seeds 0, 1, 2: 500 test problems x 16, the
                                                   # probe evaluator; then runs/powered/across-seeds/

The chain runs each stage with its preset. To change a stage's constants, run the stages by hand with
your flags (same --run); a stage that finished with another config stops the chain with a one-line message.

Each stage runs as its own process (the same command you would type), so a crash in one leaves the
others' outputs intact, and rerunning this command continues where the chain stopped.
Prints one summary at the end and writes it to <run>/summary.{json,md}. With --seeds, each seed's chain
goes to <run>/seed<s> (every stage gets --seed s; the problems stay the same), and the reports are then
compared across seeds (mean +- sd, per-seed and pooled paired tests, scorer AUCs) in <run>/across-seeds/.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.table import Table

from mathlite import report, runs

ROOT = Path(__file__).resolve().parents[1]

STAGES = {
    "01": "01_ssft.py",
    "02": "02_sample.py",
    "03": "03_evaluator.py",
    "04": "04_rerank.py",
    "05": "05_multitask.py",
}


@dataclass
class Config:
    stages: tuple[Literal["01", "02", "03", "04", "05"], ...] = ("01", "02", "03", "04", "05")  # the stages to run, in order
    seeds: tuple[int, ...] = ()  # several: the chain once per seed (SSFT, sampling, evaluator) in <run>/seed<s>, then <run>/across-seeds
    run: str = ""  # run folder; default runs/<preset>
    preset: str = ""


PRESETS = {name: {} for name in ("smoke", "cpu", "t4", "a100")}
# the powered chain: 500 test problems x 16 samples, the probe evaluator, 3 seeds; 05 is not part of it
PRESETS["powered"] = dict(stages=("01", "02", "03", "04"), seeds=(0, 1, 2))


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def pct(v) -> str:
    return report.fmt(v, ".1%")


def _evaluator_words(res: dict) -> str:
    q = (res.get("meta") or {}).get("evaluator_test") or {}
    f = lambda v: report.fmt(v, ".2f")  # noqa: E731
    return f"; evaluator test AUC {f(q.get('auc'))} (within-problem {f(q.get('within_problem_auc'))})" if q else ""


def summary_rows(run: Path, seconds: dict[str, float]) -> list[tuple[str, str, str]]:
    """(stage, time, key result) rows from the files each stage wrote (a missing value prints as -)."""
    rows = []
    ssft = _read(run / "ssft" / "metrics.json") or {}
    if ssft:
        before, after = ssft.get("greedy_before"), ssft.get("greedy_after")
        rows.append(("01 SSFT", seconds.get("01"),
                     f"greedy {pct(before)} -> {pct(after)} on {ssft.get('eval_problems')} held-out problems"))
    samples = _read(run / "samples" / "summary.json") or {}
    for split, s in samples.items():
        rows.append((f"02 samples ({split})", seconds.get("02") if split == "test" else None,
                     f"{s.get('problems')} problems x {s.get('n')}: greedy {pct(s.get('greedy_accuracy'))}, "
                     f"sample {pct(s.get('sample_accuracy'))}, pass@N {pct(s.get('pass_at_n'))}"))
    ev = _read(run / "evaluator" / "metrics.json") or {}
    if ev:
        auc = ev.get("auc")
        rows.append(("03 evaluator", seconds.get("03"), f"val AUC {report.fmt(auc)} on "
                     f"{ev.get('val_solutions')} solutions of {ev.get('val_problems')} problems"))
    res = _read(run / "report" / "results.json") or {}
    if res:
        m = res.get("methods", {})

        def acc(name):
            return pct(m.get(name, {}).get("accuracy"))

        rows.append(("04 report", seconds.get("04"), f"Pass@1 {acc('greedy')}, Maj1@N {acc('maj1')}, RR.All {acc('rr_all')}, "
                     f"SCR(K=3) {acc('rr_maj3')}, Pass@N {acc('pass_n')}" + _evaluator_words(res)))
    mt = run / "multitask" / "comparison.md"
    if mt.exists():
        rows.append(("05 multitask", seconds.get("05"), f"comparison table: {mt}"))
    return [(a, f"{b / 60:.1f} min" if b is not None else "", c) for a, b, c in rows]


def main(argv):
    cfg = runs.parse_config(Config, PRESETS, argv)
    if not cfg.seeds:
        return chain(cfg, Path(cfg.run))
    t_all = time.time()
    for seed in cfg.seeds:
        print(f"\n[run_all] ===== seed {seed}", flush=True)
        chain(cfg, Path(cfg.run) / f"seed{seed}", seed)
    reports = [Path(cfg.run) / f"seed{s}" / "report" / "results.json" for s in cfg.seeds]
    if all(p.exists() for p in reports):
        written = report.write_across_runs(Path(cfg.run) / "across-seeds", reports, [f"seed{s}" for s in cfg.seeds])
        Console().print(written["md"].read_text())
        print(f"[run_all] {len(cfg.seeds)} seeds in {(time.time() - t_all) / 60:.1f} min; across seeds: {written['md']}")


def chain(cfg: Config, run: Path, seed: int | None = None) -> None:
    """The stages of `cfg` into `run` (with --seed `seed` for every stage when given)."""
    seconds = {}
    t_all = time.time()
    for stage in cfg.stages:
        script = ROOT / "recipes" / STAGES[stage]
        cmd = [sys.executable, str(script), "--preset", cfg.preset, "--run", str(run)]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        print(f"\n[run_all] === {stage}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.time()
        rc = subprocess.call(cmd)
        seconds[stage] = time.time() - t0
        if rc != 0:
            print(f"[run_all] stage {stage} failed (exit {rc}); fix it and rerun: finished stages are reused",
                  file=sys.stderr)
            sys.exit(rc)
    total = time.time() - t_all
    rows = summary_rows(run, seconds)
    table = Table(title=f"mathlite chain, preset {cfg.preset}, run {run} ({total / 60:.1f} min)")
    for col in ("stage", "time", "result"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    Console().print(table)
    runs.atomic_write_json(run / "summary.json", {"preset": cfg.preset, "seed": seed, "seconds": seconds, "total_seconds": total,
                                                  "rows": rows, "machine": runs.machine()})
    md = ["| stage | time | result |", "| --- | --- | --- |"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    runs.atomic_write_text(run / "summary.md", f"Chain, preset `{cfg.preset}`, {total / 60:.1f} min in all\n\n"
                           + "\n".join(md) + "\n")


if __name__ == "__main__":
    runs.run_main(main)
