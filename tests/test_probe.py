"""The probe evaluator (mathlite/probe.py): it learns a within-problem ranking from hidden-state
features, chooses its inputs on held-out problems, falls back to the generator's confidence when
the hidden states carry nothing, and round-trips through its files."""

import json

import numpy as np
import pytest
import torch

from mathlite import probe, samples
from mathlite.errors import UserError


def _records(n_problems=60, n=8, seed=0, hidden_signal=1.0, conf_signal=0.0, dim=16):
    """Synthetic graded samples: correctness drawn per sample; one hidden direction (and/or the
    confidence) shifted by `*_signal` for right samples."""
    rng = np.random.default_rng(seed)
    recs, feats = [], {}
    for p in range(n_problems):
        rate = rng.uniform(0.2, 0.8)
        for k in range(n):
            y = bool(rng.random() < rate)
            h = rng.normal(size=(2, dim)).astype(np.float32)
            h[0, 3] += hidden_signal * (1 if y else -1)
            lm = -0.4 + 0.1 * rng.normal() + conf_signal * (0.1 if y else -0.1)
            tokens = int(rng.integers(20, 60))
            recs.append({"id": f"p{p}", "k": k, "correct": y, "tokens": tokens, "finish": "eos",
                         "logprob_mean": lm, "logprob_sum": lm * tokens})
            feats[(f"p{p}", k)] = h
    return recs, feats


def test_probe_learns_a_hidden_direction_and_beats_confidence():
    recs, feats = _records(hidden_signal=1.0, conf_signal=0.0)
    t = probe.table(recs, feats)
    fit, rows = probe.fit_probe(t, seed=0)
    assert fit.inputs in ("hidden", "both")
    test_recs, test_feats = _records(seed=1, hidden_signal=1.0, conf_signal=0.0)
    tt = probe.table(test_recs, test_feats)
    ours, _ = probe.within_problem_auc(tt.problem, tt.y, fit.logits(tt))
    conf, _ = probe.within_problem_auc(tt.problem, tt.y, tt.conf[:, 0])
    assert ours > 0.85 and conf < 0.65
    assert {r["inputs"] for r in rows} == set(probe.INPUTS)
    assert fit.info["val_within_problem_auc"] == max(r["val_within_problem_auc"] for r in rows)


def test_probe_falls_back_on_confidence_when_hidden_states_carry_nothing():
    recs, feats = _records(hidden_signal=0.0, conf_signal=2.0)
    fit, _ = probe.fit_probe(probe.table(recs, feats), seed=0)
    test_recs, test_feats = _records(seed=1, hidden_signal=0.0, conf_signal=2.0)
    tt = probe.table(test_recs, test_feats)
    ours, _ = probe.within_problem_auc(tt.problem, tt.y, fit.logits(tt))
    conf, _ = probe.within_problem_auc(tt.problem, tt.y, tt.conf[:, 0])
    assert ours >= conf - 0.03 and conf > 0.75


def test_fit_is_deterministic_and_round_trips(tmp_path):
    recs, feats = _records()
    t = probe.table(recs, feats)
    a, _ = probe.fit_probe(t, seed=3)
    b, _ = probe.fit_probe(t, seed=3)
    assert np.array_equal(a.w, b.w) and a.b == b.b
    a.save(tmp_path)
    assert probe.is_probe(tmp_path) and json.loads((tmp_path / "evaluator.json").read_text())["kind"] == "probe"
    back = probe.Probe.load(tmp_path)
    assert back.scores(t) == a.scores(t)
    assert all(0.0 < v < 1.0 for v in back.scores(t).values())


def test_missing_features_and_logprobs_are_named():
    recs, feats = _records(n_problems=3)
    feats.pop(("p1", 2))
    with pytest.raises(UserError, match=r"x\.jsonl: 1 of 24 samples have no hidden-state features"):
        probe.table(recs, feats, where="x.jsonl")
    recs[0].pop("logprob_mean")
    with pytest.raises(UserError, match="no logprob_mean"):
        probe.confidence_features(recs[0])


def test_feature_chunks_round_trip_and_name_a_bad_file(tmp_path):
    out = tmp_path / "samples-test.jsonl"
    with pytest.raises(UserError, match="samples-test.features: no hidden-state features"):
        samples.load_features(out)
    x = torch.randn(3, 2, 8)
    samples.write_feature_chunk(out, 0, [("a", -1), ("a", 0), ("b", 1)], x)
    got = samples.load_features(out)
    assert set(got) == {("a", -1), ("a", 0), ("b", 1)}
    assert np.allclose(got[("b", 1)], x[2].half().float().numpy())
    (samples.features_dir(out) / "batch-00001.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="batch-00001.safetensors: not a features file"):
        samples.load_features(out)


def _write_output(folder, split, recs, feats):
    """A sampling output (problems, samples, meta, features) made without a model."""
    from mathlite.data import Problem

    paths = samples.output_paths(folder / f"samples-{split}.jsonl")
    folder.mkdir(parents=True, exist_ok=True)
    ids = sorted({r["id"] for r in recs})
    samples.sync_problems(paths.problems, [Problem(id=i, question=f"q {i}", solution="$\\boxed{1}$", answer="1", level=1,
                                                   subject="add", source="synthetic") for i in ids])
    full = [{**r, "text": "so 1" if r["correct"] else f"so {2 + r['k'] % 3}",
             "answer": "1" if r["correct"] else str(2 + r["k"] % 3)} for r in recs]
    with open(paths.samples, "ab") as fh:
        samples.append_samples(fh, full)
    samples.save_meta(paths.meta, {"model": {"name": "toy+lora:abc"}, "config": {"n": 8}, "config_hash": "h", "complete": True})
    keys = [(r["id"], r["k"]) for r in recs]
    samples.write_feature_chunk(paths.samples, 0, keys, torch.from_numpy(np.stack([feats[k] for k in keys])))
    return paths.samples


def test_recipes_03_and_04_train_and_use_a_probe_without_a_model(tmp_path, capsys):
    from conftest import load_recipe

    recs, feats = _records(n_problems=80, hidden_signal=1.0)
    train = _write_output(tmp_path / "s", "train", recs, feats)
    recs_t, feats_t = _records(n_problems=40, seed=1, hidden_signal=1.0)
    test = _write_output(tmp_path / "s", "test", recs_t, feats_t)
    ev = tmp_path / "ev"
    load_recipe("03_evaluator").main(["--preset", "smoke", "--kind", "probe", "--samples", str(train), "--out", str(ev),
                                         "--run", str(tmp_path)])
    m = json.loads((ev / "metrics.json").read_text())
    assert m["kind"] == "probe" and m["within_problem_auc"] > m["confidence_within_problem_auc"] + 0.2
    assert "generator confidence" in capsys.readouterr().out
    out = tmp_path / "report"
    argv = ["--preset", "smoke", "--samples", str(test), "--evaluator", str(ev), "--out", str(out), "--run", str(tmp_path)]
    load_recipe("04_rerank").main(argv)
    doc = json.loads((out / "results.json").read_text())
    q, conf = doc["scorers"]["evaluator"], doc["scorers"]["confidence"]
    assert q["within_problem_auc"] > 0.85 > conf["within_problem_auc"] + 0.2
    assert doc["meta"]["evaluator_cost"]["kind"] == "probe"
    first = (out / "results.json").read_bytes()
    load_recipe("04_rerank").main(argv)  # done: reused, the same bytes
    assert (out / "results.json").read_bytes() == first
