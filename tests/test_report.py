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
