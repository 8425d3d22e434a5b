"""Report files, figures and tables from a small run."""

import csv
import io
import json
import math

import pytest
from rich.console import Console

from mathlite import files, report
from mathlite.metrics import accuracy_curves, breakdown, prepare, summarize
from mathlite.select import clusters_from_labels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def exact_clusters(answers):
    labels, ids = [], {}
    for a in answers:
        labels.append(-1 if a is None else ids.setdefault(a, len(ids)))
    return clusters_from_labels(labels)


def small_run(n_problems=8, n=4):
    run = []
    for j in range(n_problems):
        answers = [str((j + i * (j % 3)) % 3) for i in range(n)]
        answers[-1] = None if j % 4 == 0 else answers[-1]
        run.append({
            "id": f"p{j}", "level": 1 + j % 3, "subject": ["Algebra", "Geometry"][j % 2],
            "greedy": {"answer": "0", "correct": j % 2 == 0},
            "samples": [{"answer": a, "correct": a == "0", "score": ((i * 7 + j) % 5) / 4, "tokens": 50 + i}
                        for i, a in enumerate(answers)],
        })
    return run


@pytest.fixture(scope="module")
def results():
    problems = prepare(small_run(), exact_clusters)
    stats = summarize(problems, K_values=(1, 2, 3))
    curves = accuracy_curves(problems, n_draws=8, n_boot=100, K_values=(1, 2, 3))
    breakdowns = {"level": breakdown(problems, "level", K_values=(1, 2, 3)),
                  "subject": breakdown(problems, "subject", K_values=(1, 2, 3))}
    meta = {"model": "toy-model", "data": "toy-data", "N": 4}
    return stats, curves, breakdowns, meta


def test_write_report_produces_every_file(tmp_path, results):
    stats, curves, breakdowns, meta = results
    paths = report.write_report(tmp_path / "report", stats, curves=curves, breakdowns=breakdowns, meta=meta)
    assert set(paths) == {"json", "md", "csv", "accuracy_vs_n", "cost_vs_k"}
    for name in ("accuracy_vs_n", "cost_vs_k"):
        data = paths[name].read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, name
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(
        ["results.json", "results.md", "results.csv", "accuracy_vs_n.png", "cost_vs_k.png"])

    doc = json.loads(paths["json"].read_text())
    assert doc["meta"] == meta and list(doc["methods"]) == list(stats)
    assert doc["methods"]["rr_maj2"]["accuracy"] == pytest.approx(stats["rr_maj2"].accuracy)
    assert set(doc["breakdowns"]) == {"level", "subject"} and set(doc["breakdowns"]["level"]) == {"1", "2", "3"}
    assert doc["curves"]["sizes"] == [1, 2, 4]

    md = paths["md"].read_text()
    assert md.startswith("# toy-model on toy-data, N=4, 8 problems")
    assert "| Method | Accuracy (%) | 95% CI |" in md and "| RR.Maj2 |" in md
    assert "## Accuracy (%) by level" in md and "## Accuracy (%) by subject" in md

    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    groups = {r["group"] for r in rows}
    assert groups == {"all", "level=1", "level=2", "level=3", "subject=Algebra", "subject=Geometry"}
    assert len(rows) == len(stats) * len(groups)
    assert float(next(r for r in rows if r["group"] == "all" and r["method"] == "maj1")["accuracy"]) == \
        pytest.approx(stats["maj1"].accuracy)


def test_results_roundtrip_and_comparison(tmp_path, results):
    stats, _, _, meta = results
    report.write_report(tmp_path / "a", stats, meta=meta)
    loaded_meta, loaded = report.load_results(tmp_path / "a" / "results.json")
    assert loaded_meta == meta and loaded == stats

    fewer = {m: s for m, s in stats.items() if not m.startswith("w_rr")}
    md = report.comparison_markdown({"run A": stats, "run B": fewer})
    assert md.splitlines()[0] == "| Method | run A | run B |"
    w_rr_row = next(line for line in md.splitlines() if line.startswith("| W-RR |"))
    assert w_rr_row.endswith("| - |")  # missing in run B

    console = Console(file=io.StringIO(), width=150)
    report.print_comparison({"run A": stats, "run B": fewer}, console=console)
    assert "run B" in console.file.getvalue()


def test_print_table(results):
    stats, _, _, meta = results
    console = Console(file=io.StringIO(), width=150)
    report.print_table(stats, title=report.make_title(meta, stats), console=console)
    out = console.file.getvalue()
    for text in ("toy-model on toy-data, N=4, 8 problems", "RR.All", "Pass@N (oracle)", "Eval cost"):
        assert text in out


def test_main_prints_one_or_several_runs(tmp_path, results, capsys):
    stats, _, _, meta = results
    report.write_report(tmp_path / "a", stats, meta=meta)
    report.write_report(tmp_path / "b", stats, meta={**meta, "name": "second"})
    report.main([str(tmp_path / "a" / "results.json")])
    assert "RR.Maj2" in capsys.readouterr().out
    report.main([str(tmp_path / "a" / "results.json"), str(tmp_path / "b" / "results.json")])
    assert "second" in capsys.readouterr().out


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "results.md"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        files.atomic_write(target, broken)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.md"]


def test_nan_becomes_null_in_json(tmp_path, results):
    stats, _, _, _ = results
    broken = {"maj1": report.MethodStats(**{**stats["maj1"].to_dict(), "ci_low": math.nan})}
    path = report.write_report(tmp_path, broken)["json"]
    assert json.loads(path.read_text())["methods"]["maj1"]["ci_low"] is None
    assert "cost_vs_k" not in report.write_report(tmp_path, broken)  # no RR.MajK rows: no Fig. 1


def test_make_title_without_metadata(results):
    stats = results[0]
    assert report.make_title(None, stats) == "model ? on data ?, 8 problems"


@pytest.mark.parametrize("content, words", [
    (None, "no such file"), ("{not json", "not a readable JSON"), ('["a"]', "no 'methods'"),
    ('{"meta": {}}', "no 'methods'"), ('{"methods": {"Maj1@N": {"colour": 1}}}', "malformed"),
])
def test_load_results_bad_files_are_one_line_errors(tmp_path, capsys, content, words):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(report.ResultsError, match=words) as err:
        report.load_results(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SystemExit) as exit_:
        report.main([str(path)])
    assert exit_.value.code == 2 and str(path) in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Paired tests, generated claims, the choices file and --recompute
# ---------------------------------------------------------------------------

from pathlib import Path  # noqa: E402

from mathlite import metrics, samples  # noqa: E402
from mathlite.metrics import PairedStats  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def pair(method, baseline, wins, losses, ties):
    n = wins + losses + ties
    return PairedStats(method, baseline, metrics.full_label(method), metrics.full_label(baseline), wins, losses, ties, n,
                       (wins - losses) / n, -0.1, 0.1, metrics.sign_test(wins, losses))


def test_verdicts_and_generated_claims():
    paired = [pair("rr_all", "maj1", 1, 15, 44), pair("rr_maj2", "maj1", 8, 0, 52), pair("rr_maj2", "rr_all", 3, 2, 55),
              pair("rr_all:confidence", "maj1", 6, 0, 54), pair("rr_all", "rr_all:confidence", 1, 16, 43)]
    assert [report.verdict(c) for c in paired] == ["reversed", "held", "not shown", "held", "reversed"]
    text = report.claims_markdown(paired, scorers={"evaluator": {"within_problem_auc": 0.517},
                                                   "confidence": {"within_problem_auc": 0.78}})
    lines = [x for x in text.splitlines() if x.startswith("- ")]
    assert lines == [
        "- **reversed**: Re-ranking all N solutions with the trained evaluator beats majority voting. RR.All vs Maj1@N: "
        "1 wins, 15 losses, 44 ties; -23.3 points, 95% CI [-10.0, +10.0]; sign test p = 5.2e-04.",
        "- **held**: Solution-cluster re-ranking (SCR, K=2) with the trained evaluator beats majority voting. "
        "RR.Maj2 vs Maj1@N: 8 wins, 0 losses, 52 ties; +13.3 points, 95% CI [-10.0, +10.0]; sign test p = 0.008.",
        "- **not shown**: SCR (K=2) with the trained evaluator is at least as accurate as re-ranking all solutions "
        "(RR.All). RR.Maj2 vs RR.All: 3 wins, 2 losses, 55 ties; +1.7 points, 95% CI [-10.0, +10.0]; sign test p = 1.000.",
        "- **held**: Re-ranking all N solutions with the confidence scorer beats majority voting. "
        "RR.All (confidence) vs Maj1@N: 6 wins, 0 losses, 54 ties; +10.0 points, 95% CI [-10.0, +10.0]; sign test p = 0.031.",
        "- **reversed**: The trained evaluator beats the generator's confidence as a re-ranker (RR.All). "
        "RR.All vs RR.All (confidence): 1 wins, 16 losses, 43 ties; -25.0 points, 95% CI [-10.0, +10.0]; "
        "sign test p = 2.7e-04; within-problem AUC 0.517 (evaluator) vs 0.780 (confidence).",
    ]
    assert "p < 0.05" in text and report.claims_markdown([]) == ""


def _recipe04():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("recipe04_under_test", REPO / "recipes" / "04_rerank.py")
    mod = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look the module up
    spec.loader.exec_module(mod)
    return mod


def write_samples_output(folder, logprobs=True, n_problems=10, n=5):
    """A graded sampling output (problems, samples, meta) made without a model: answers and log-probs
    follow a fixed pattern, right answers get the higher log-prob more often than not."""
    from mathlite.data import Problem

    paths = samples.output_paths(folder / "samples-test.jsonl")
    folder.mkdir(parents=True, exist_ok=True)
    problems = [Problem(id=f"t/{i}", question=f"What is {i} + 1?", solution=f"$\\boxed{{{i + 1}}}$", answer=str(i + 1),
                        level=1 + i % 2, subject="add", source="synthetic") for i in range(n_problems)]
    samples.sync_problems(paths.problems, problems)
    recs = []
    for i, p in enumerate(problems):
        for k in range(-1, n):
            a = [p.answer, str(i + 2), p.answer, None, str(i + 2)][(i + k) % 5]
            extra = {"logprob_sum": -10.0 - (i * 7 + k) % 4, "logprob_mean": -0.2 - 0.1 * ((i * 3 + k) % 4) - 0.15 * (a != p.answer)} if logprobs else {}
            recs.append({"id": p.id, "k": k, "text": f"so {a}", "answer": a, "correct": a == p.answer,
                         "tokens": 5 + k, "finish": "eos", **extra})
    with open(paths.samples, "ab") as fh:
        samples.append_samples(fh, recs)
    samples.save_meta(paths.meta, {"model": {"name": "toy+lora:abc"}, "config": {"n": n}, "config_hash": "h", "complete": True})
    return paths.samples


def _recompute(folder, *extra):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "mathlite.report", "--recompute", str(folder), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_recipe04_confidence_column_choices_and_recompute(tmp_path, capsys):
    path = write_samples_output(tmp_path / "s")
    out = tmp_path / "report"
    _recipe04().main(["--preset", "smoke", "--samples", str(path), "--evaluator", "none", "--out", str(out),
                      "--run", str(tmp_path), "--K_values", "1,2,3"])
    doc = json.loads((out / "results.json").read_text())
    assert {"rr_all:confidence", "rr_maj2:confidence", "w_rr:confidence"} <= set(doc["methods"])
    assert "rr_all" not in doc["methods"]  # no trained evaluator here
    assert set(doc["scorers"]) == {"confidence"} and doc["meta"]["choices"] == "choices-test.jsonl"
    pairs = {(c["method"], c["baseline"]) for c in doc["paired"]}
    assert ("rr_all:confidence", "maj1") in pairs and ("rr_maj2:confidence", "rr_all:confidence") in pairs
    md = (out / "results.md").read_text()
    assert "## Which of the paper's claims held here" in md and "counts **0** when those clusters collapse" in md
    assert "| RR.All (confidence) | Maj1@N |" in md
    choices = samples.load_choices(out / "choices-test.jsonl")
    assert len(choices) == 10 and all(set(s["scores"]) == {"confidence"} for c in choices for s in c["samples"])
    # the chosen sample of RR.All (confidence) is the one with the highest logprob_mean (ties: lowest k)
    store = samples.load(path)
    for c in choices:
        best = max(store.group(c["id"]).samples, key=lambda s: (s.logprob_mean, -s.k))
        assert c["chosen"]["rr_all:confidence"] == best.k
        assert c["correct"]["rr_all:confidence"] == best.correct

    # the two files alone, in another folder, recompute to the same numbers
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in ("results.json", "choices-test.jsonl"):
        (alone / name).write_bytes((out / name).read_bytes())
    proc = _recompute(alone, "--out", str(tmp_path / "again"))
    assert proc.returncode == 0, proc.stderr
    assert "every number identical" in proc.stdout
    assert (tmp_path / "again" / "results.json").read_bytes() == (out / "results.json").read_bytes()
    assert (tmp_path / "again" / "choices-test.jsonl").read_bytes() == (out / "choices-test.jsonl").read_bytes()

    # a changed score is caught
    lines = (alone / "choices-test.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    for s in row["samples"]:
        s["scores"]["confidence"] = 1.0 - s["scores"]["confidence"]
    (alone / "choices-test.jsonl").write_text("\n".join([json.dumps(row)] + lines[1:]) + "\n")
    proc = _recompute(alone)
    assert proc.returncode == 1 and "DIFFERS from results.json in: methods" in proc.stderr


def test_recipe04_without_logprobs_skips_the_confidence_column(tmp_path, capsys):
    path = write_samples_output(tmp_path / "s", logprobs=False)
    out = tmp_path / "report"
    _recipe04().main(["--preset", "smoke", "--samples", str(path), "--evaluator", "none", "--out", str(out),
                      "--run", str(tmp_path)])
    assert "confidence baseline skipped: these samples carry no logprob_mean" in capsys.readouterr().out
    doc = json.loads((out / "results.json").read_text())
    assert not any(":" in m for m in doc["methods"]) and doc["scorers"] == {}


def test_recompute_errors_are_one_line(tmp_path, results):
    stats, curves, breakdowns, meta = results
    report.write_report(tmp_path, stats, meta=meta)  # an older report: no settings, no choices file
    proc = _recompute(tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "no settings or choices file recorded" in proc.stderr


def test_across_runs_mean_and_sd(results):
    stats = results[0]
    import dataclasses

    other = {m: dataclasses.replace(s, accuracy=s.accuracy + 0.1) for m, s in stats.items()}
    paired = {"a": [{"method": "rr_all", "baseline": "maj1", "diff": 0.1, "p_value": 0.01}],
              "b": [{"method": "rr_all", "baseline": "maj1", "diff": 0.3, "p_value": 0.5}]}
    header, rows = report.across_runs_rows({"a": stats, "b": other}, paired)
    row = next(r for r in rows if r[0] == "RR.All")
    m = 100 * stats["rr_all"].accuracy
    assert row == ["RR.All", "2", f"{m + 5:.1f} +- {7.0710678:.1f}", "+20.0 +- 14.1", "1 / 0"]


def test_committed_smoke_report_recomputes_to_the_committed_numbers(tmp_path):
    """bench/results/smoke_report: results.json + choices-test.jsonl of a smoke-preset run
    (`python recipes/run_all.py --preset smoke`); the one command rebuilds the same file, byte for byte."""
    committed = REPO / "bench" / "results" / "smoke_report"
    proc = _recompute(committed, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "results.json").read_bytes() == (committed / "results.json").read_bytes()
    doc = json.loads((committed / "results.json").read_text())
    assert doc["meta"]["n_problems"] == len(samples.load_choices(committed / "choices-test.jsonl"))
    assert doc["paired"] and "evaluator" in doc["scorers"]


def test_across_runs_report_pools_paired_tests_and_scorers(tmp_path):
    """Several runs' results.json -> across-runs.{md,json}: per comparison the per-run differences, mean +- sd,
    pooled wins/losses with their sign test; per scorer the AUCs with mean +- sd; and the CLI writes them."""
    import subprocess
    import sys

    from mathlite import metrics

    src = REPO / "bench" / "results" / "cpu_chain" / "report" / "results.json"
    one = json.loads(src.read_text())
    written = report.write_across_runs(tmp_path, [src, src], ["s0", "s1"])
    doc = json.loads(written["json"].read_text())
    assert doc["runs"] == ["s0", "s1"]
    for c in one["paired"]:
        row = next(r for r in doc["paired"] if (r["method"], r["baseline"]) == (c["method"], c["baseline"]))
        assert row["pooled_wins"] == 2 * c["wins"] and row["pooled_losses"] == 2 * c["losses"]
        assert row["diff_mean"] == pytest.approx(100 * c["diff"]) and row["diff_sd"] == 0
        assert row["pooled_p"] == metrics.sign_test(2 * c["wins"], 2 * c["losses"])
    ev = next(r for r in doc["scorers"] if r["scorer"] == "evaluator")
    assert ev["within_problem_auc_mean"] == pytest.approx(one["scorers"]["evaluator"]["within_problem_auc"])
    md = written["md"].read_text()
    assert "## Paired comparisons" in md and "## Scorers" in md and "| RR.All | Maj1@N |" in md
    proc = subprocess.run([sys.executable, "-m", "mathlite.report", str(src), str(src), "--out", str(tmp_path / "cli")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cli" / "across-runs.md").exists()


@pytest.mark.parametrize("folder", ["cpu_chain/report", "powered/seed0/report", "powered/seed1/report", "powered/seed2/report"])
def test_committed_chain_reports_recompute(folder, tmp_path):
    """The README's cpu and powered numbers: each committed report folder (results.json + its choices file,
    gzipped for the powered seeds) recomputes to the same results.json, byte for byte, with no model;
    and the across-seeds table comes back from the three results.json files alone."""
    committed = REPO / "bench" / "results" / folder
    proc = _recompute(committed, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "results.json").read_bytes() == (committed / "results.json").read_bytes()
    if folder == "powered/seed0/report":
        seeds = [REPO / "bench" / "results" / "powered" / f"seed{s}" / "report" / "results.json" for s in range(3)]
        written = report.write_across_runs(tmp_path / "across", seeds, ["seed0", "seed1", "seed2"])
        kept = REPO / "bench" / "results" / "powered" / "across-seeds" / "across-runs.md"
        assert written["md"].read_text() == kept.read_text()
