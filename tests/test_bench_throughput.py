"""bench/bench_throughput.py's arithmetic: ratios, goals, roofline shares, merging parallel parts,
and the headline run_all prints. (The timed runs themselves: `python bench/bench_throughput.py --quick`.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_throughput as bt  # noqa: E402
import run_all  # noqa: E402


def _med(ours: float, **bases: float) -> dict:
    return {"median": {"recipe_now": {"tokens_per_cpu_s": ours, "roofline_share": 0.1},
                       **{k: {"tokens_per_cpu_s": v, "roofline_share": 0.05} for k, v in bases.items()}}}


def _result() -> dict:
    return {"sft": _med(300.0, plain_loop=250.0, recipe_before=120.0),
            "scoring": {"head": {"median": {"batched": {"tokens_per_cpu_s": 2000.0},
                                            "batch1": {"tokens_per_cpu_s": 800.0}}}}}


def test_goal_rows_ratios_and_verdicts():
    rows = {(r["stage"], r["baseline"]): r for r in bt.goal_rows(_result())}
    assert set(rows) == {("sft", "plain_loop"), ("sft", "recipe_before"), ("scoring_head", "batch1")}
    assert rows["sft", "plain_loop"]["ratio"] == pytest.approx(1.2) and rows["sft", "plain_loop"]["met"] is True
    assert rows["sft", "recipe_before"]["ratio"] == pytest.approx(2.5) and rows["sft", "recipe_before"]["met"] is False
    assert rows["scoring_head", "batch1"]["ratio"] == pytest.approx(2.5) and rows["scoring_head", "batch1"]["met"] is False
    assert rows["sft", "plain_loop"]["roofline_share"] == 0.1


def test_rate_and_roofline_share():
    r = bt.rate(1000, clock_wall=10.0, clock_cpu=4.0, flops_per_token=1e9, roof=1e12)
    assert r["tokens_per_s"] == 100 and r["tokens_per_cpu_s"] == 250
    assert r["roofline_share"] == pytest.approx(250 * 1e9 / 1e12)


def test_matmul_roofline_measures_both_dtypes():
    r = bt.matmul_roofline(size=128, seconds=0.05)
    assert r["bf16"]["matmuls"] >= 2 and r["bf16"]["flop_per_cpu_s"] > 0 and r["fp32"]["flop_per_cpu_s"] > 0


def test_merge_keeps_each_part_with_its_own_baselines(tmp_path, capsys):
    a, b = _result(), {"evaluator_train": {"median": {"train_evaluator": {"tokens_per_cpu_s": 90.0},
                                                      "plain_loop": {"tokens_per_cpu_s": 100.0}}}}
    for d, name in ((a, "a.json"), (b, "b.json")):
        d.update(machine={"cpus": 2}, threads=1, loadavg_start=[1, 1, 1])
        (tmp_path / name).write_text(json.dumps(d))
    out = tmp_path / "merged.json"
    assert bt.main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert sorted(merged["stages"]) == ["evaluator_train", "scoring", "sft"]
    et = next(g for g in merged["goals"] if g["stage"] == "evaluator_train")
    assert et["ratio"] == pytest.approx(0.9) and et["met"] is True
    assert "evaluator_train" in capsys.readouterr().out
    (tmp_path / "a.json").write_text(json.dumps({**a, "partial": True}))
    with pytest.raises(SystemExit, match="unfinished"):
        bt.main(["--merge", str(tmp_path / "a.json"), "--out", str(out)])


def test_run_all_headline_names_the_worst_goal():
    h = run_all._throughput_headline({"goals": bt.goal_rows(_result())})
    assert h["metric"].startswith("stage throughput vs baseline: 1 of 3 goals met")
    assert h["ratio"] == pytest.approx(2.5)  # recipe_before: 2.5 / 3 is the furthest from its goal
    assert "throughput" in run_all.BY_NAME


def test_sampling_ceiling_is_the_tighter_of_roofline_and_decode_floor():
    floor = {"136": {"matmuls": {"tokens_per_cpu_s": 1000.0}, "with_top_p": {"tokens_per_cpu_s": 800.0}},
             "272": {"matmuls": {"tokens_per_cpu_s": 1200.0}, "with_top_p": {"tokens_per_cpu_s": 900.0}}}
    med = {"engine_now": {"tokens_per_cpu_s": 450.0, "roofline_share": 0.3},
           "engine_before": {"tokens_per_cpu_s": 400.0, "roofline_share": 0.2}}
    rows = bt.goal_rows({"sampling": {"n8": {"median": med}, "decode_floor": floor}})
    (r,) = [r for r in rows if r["baseline"] == "engine_before"]
    assert r["met"] is False and r["decode_floor_rows"] == 272
    assert r["decode_floor_ratio"] == {"matmuls": pytest.approx(3.0), "with_top_p": pytest.approx(2.25)}
    assert r["ceiling_ratio"] == pytest.approx(3.0)  # below the roofline's 1 / 0.2 = 5x
    med["engine_before"]["roofline_share"] = 0.5
    (r,) = [r for r in bt.goal_rows({"sampling": {"n8": {"median": med}, "decode_floor": floor}})
            if r["baseline"] == "engine_before"]
    assert r["ceiling_ratio"] == pytest.approx(2.0)


def test_ceiling_uses_the_least_work_floor_when_timed():
    floor = {"136": {"matmuls": {"tokens_per_cpu_s": 1000.0}, "with_top_p": {"tokens_per_cpu_s": 800.0},
                     "least_work": {"tokens_per_cpu_s": 900.0}, "with_attention_and_top_p": {"tokens_per_cpu_s": 700.0},
                     "cache": {"prompt": 60, "generated": 30, "rows_per_prompt": 9}},
             "272": {"matmuls": {"tokens_per_cpu_s": 1200.0}, "with_top_p": {"tokens_per_cpu_s": 900.0},
                     "least_work": {"tokens_per_cpu_s": 880.0}, "with_attention_and_top_p": {"tokens_per_cpu_s": 750.0},
                     "cache": {"prompt": 60, "generated": 30, "rows_per_prompt": 9}}}
    med = {"engine_now": {"tokens_per_cpu_s": 450.0, "roofline_share": 0.3},
           "engine_before": {"tokens_per_cpu_s": 400.0, "roofline_share": 0.2}}
    (r,) = [r for r in bt.goal_rows({"sampling": {"n8": {"median": med}, "decode_floor": floor}})
            if r["baseline"] == "engine_before"]
    # the best batch is chosen by the least-work floor (136 rows), not by the matmuls alone (272)
    assert r["decode_floor_rows"] == 136 and r["decode_floor_bound"] == "least_work" and r["decode_floor_cache"]["prompt"] == 60
    assert r["ceiling_ratio"] == pytest.approx(2.25) and r["decode_floor_ratio"]["matmuls"] == pytest.approx(2.5)


def test_mean_cache_counts_prompt_and_tokens_so_far():
    # prompt 3 with two tokens: steps read (3, 1) and (3, 2); prompt 2 with one token: (2, 1); no tokens: nothing
    assert bt.mean_cache([((1, 2, 3), (4, 5)), ((6, 7), (8,)), ((9,), ())]) == (3, 1)
    assert bt.mean_cache([((1, 2, 3, 4), (5, 6, 7, 8, 9))]) == (4, 3)
    assert bt.mean_cache([]) == (1, 1)


def test_decode_floor_times_each_part_of_a_step(tmp_path):
    import torch
    from tiny_qwen import build_tiny_qwen

    from mathlite import models, sampling

    model = models.load_model(str(build_tiny_qwen(tmp_path / "tiny")), quant="none")
    cfg = sampling.SamplingConfig(n=2, max_new_tokens=4, temperature=0.9, top_p=0.95, seed=0)
    logits = bt.drawn_logits(model, [((1, 2, 3), (4, 5)), ((6, 7), ())], rows=8)
    assert logits.shape == (8, model.config.vocab_size) and torch.equal(logits[0], logits[2])  # 2 positions, cycled
    with torch.inference_mode():
        ref = model(input_ids=torch.tensor([[1, 2, 3, 4, 5]])).logits[0, 2:4].float()
    assert torch.allclose(logits[:2], ref)  # the positions that drew tokens 4 and 5
    out = bt.decode_floor(model, 8, cfg, roof=1e12, flops_per_token=1e6, logits=logits, steps=2)
    assert set(out) == {"matmuls", "with_top_p"}  # no cache length: no attention part
    for name in ("matmuls", "with_top_p"):
        assert out[name]["tokens"] == 16 and out[name]["tokens_per_cpu_s"] > 0 and out[name]["roofline_share"] > 0
    assert out["with_top_p"]["cpu_s"] >= out["matmuls"]["cpu_s"]
    out = bt.decode_floor(model, 8, cfg, roof=1e12, flops_per_token=1e6, logits=logits, steps=2, cache=(5, 2),
                          rows_per_prompt=3)  # 8 rows: prompts of 3, 3 and 2 rows
    assert out["cache"] == {"prompt": 5, "generated": 2, "rows_per_prompt": 3}
    assert set(out["attention_cpu_s"]) == {"sdpa", "grouped", "shared"}
    assert out["least_work"]["cpu_s"] >= out["matmuls"]["cpu_s"]
    assert out["with_attention_and_top_p"]["cpu_s"] >= out["with_top_p"]["cpu_s"]


def test_run_all_passes_threads_to_benchmarks_that_offer_it(tmp_path, monkeypatch):
    script = tmp_path / "fake_bench.py"
    script.write_text(
        "import argparse, json, sys\n"
        "ap = argparse.ArgumentParser()\n"
        "ap.add_argument('--out')\n"
        "ap.add_argument('--threads', type=int)\n"
        "a = ap.parse_args()\n"
        "open(a.out, 'w').write(json.dumps({'argv': sys.argv[1:]}))\n")
    plain = tmp_path / "plain_bench.py"
    plain.write_text(script.read_text().replace("ap.add_argument('--threads', type=int)\n", ""))
    benches = [run_all.Bench("a", str(script), "a.json", lambda d: {"metric": "m", "ratio": 1.0}),
               run_all.Bench("b", str(plain), "b.json", lambda d: {"metric": "m", "ratio": 1.0})]
    monkeypatch.setattr(run_all, "BENCHES", benches)
    monkeypatch.setattr(run_all, "BY_NAME", {b.name: b for b in benches})
    assert run_all.main(["--threads", "2", "--out-dir", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "a.json").read_text())["argv"][-2:] == ["--threads", "2"]
    assert "--threads" not in json.loads((tmp_path / "out" / "b.json").read_text())["argv"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["benchmarks"]["b"]["dropped_args"] == ["--threads", "2"]


def test_shared_prefix_attention_is_attention():
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    rows, hq, hk, d, n_prompt, n_gen, sizes = 7, 6, 2, 8, 5, 3, [3, 3, 1]
    q = torch.randn(rows, hq, 1, d, generator=g, dtype=torch.float64)
    k_prompt, v_prompt = (torch.randn(len(sizes), hk, n_prompt, d, generator=g, dtype=torch.float64) for _ in range(2))
    k_gen, v_gen = (torch.randn(rows, hk, n_gen, d, generator=g, dtype=torch.float64) for _ in range(2))
    owner = torch.tensor([j for j, m in enumerate(sizes) for _ in range(m)])
    k = torch.cat([k_prompt[owner], k_gen], dim=2).repeat_interleave(hq // hk, dim=1)
    v = torch.cat([v_prompt[owner], v_gen], dim=2).repeat_interleave(hq // hk, dim=1)
    ref = F.scaled_dot_product_attention(q, k, v)
    out = bt.shared_prefix_attention(q, k_prompt, v_prompt, k_gen, v_gen, sizes)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-6)


def test_scoring_ceiling_is_the_merged_forward_floor():
    fwd = {"rows": 2400, "useful_rows": 2300.0, "with_lora": {"tokens_per_cpu_s": 1000.0},
           "merged": {"tokens_per_cpu_s": 1250.0}}
    scoring = {"head": {"median": {"batched": {"tokens_per_cpu_s": 800.0, "roofline_share": 0.4},
                                   "batch1": {"tokens_per_cpu_s": 500.0, "roofline_share": 0.25}},
                        "forward_floor": fwd}}
    (r,) = bt.goal_rows({"scoring": scoring})
    assert r["forward_floor_ratio"] == {"with_lora": pytest.approx(2.0), "merged": pytest.approx(2.5)}
    assert r["ceiling_ratio"] == pytest.approx(2.5) and r["forward_floor_rows"] == 2400  # below 1 / 0.25 = 4x
    scoring["head"]["median"]["batch1"]["roofline_share"] = 0.5
    (r,) = bt.goal_rows({"scoring": scoring})
    assert r["ceiling_ratio"] == pytest.approx(2.0)  # now the roofline is the tighter bound


def test_forward_floor_times_the_linear_layers_with_and_without_lora(tmp_path):
    from peft import LoraConfig, get_peft_model
    from tiny_qwen import build_tiny_qwen

    from mathlite import models

    base = models.load_model(str(build_tiny_qwen(tmp_path / "tiny")), quant="none")
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.1))
    model.train()
    out = bt.forward_floor(model, rows=12, useful=10.0, roof=1e12, flops_per_token=1e6, steps=2)
    assert out["rows"] == 12 and out["useful_rows"] == 10.0
    for name in ("with_lora", "merged"):
        assert out[name]["tokens"] == 20 and out[name]["tokens_per_cpu_s"] > 0
    assert model.training  # the model's mode is given back


def test_result_date_of_a_committed_file_is_its_commit_date(tmp_path, monkeypatch):
    import os
    import re
    import subprocess

    repo = tmp_path / "repo"
    (repo / "bench" / "results").mkdir(parents=True)
    result = repo / "bench" / "results" / "r.json"
    result.write_text("{}")
    env = {"GIT_AUTHOR_DATE": "2020-01-02T03:04:00", "GIT_COMMITTER_DATE": "2020-01-02T03:04:00"}
    for cmd in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "r"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True, env={**os.environ, **env})
    monkeypatch.setattr(run_all, "REPO", repo)
    # a checkout's file time says nothing about when the result was measured: the commit's date does
    assert run_all.result_date(result) == "2020-01-02 03:04, committed"
    result.write_text('{"changed": true}')  # changed since: the file's own time
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", run_all.result_date(result))
    outside = tmp_path / "x.json"
    outside.write_text("{}")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", run_all.result_date(outside))
