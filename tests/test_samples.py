"""The typed sample store: round trips, append-safety, typed one-line errors, ModelId, ScoreSet."""

import json

import pytest

from mathlite import samples
from mathlite.data import Problem
from mathlite.runs import UserError

PROBLEMS = [Problem(id=f"t/{i}", question=f"What is {i} + 1?", solution=f"$\\boxed{{{i + 1}}}$", answer=str(i + 1),
                    level=1, subject="add", source="synthetic") for i in range(3)]


def rec(pid, k, answer="1", correct=True, **extra):
    return {"id": pid, "k": k, "text": f"so {answer}", "answer": answer, "correct": correct, "tokens": 3 + k,
            "finish": "eos", **extra}


def write_output(folder, records, model="base-model+lora:abc123"):
    paths = samples.output_paths(folder / "samples-test.jsonl")
    folder.mkdir(parents=True, exist_ok=True)
    samples.sync_problems(paths.problems, PROBLEMS)
    with open(paths.samples, "ab") as fh:
        samples.append_samples(fh, records)
    samples.save_meta(paths.meta, {"model": {"name": model}, "config": {"n": 2}, "config_hash": "h", "complete": True})
    return paths


def test_model_id_round_trip_and_parse():
    m = samples.ModelId("smollm2-135m-offline", "54f596a7fa94")
    assert str(m) == "smollm2-135m-offline+lora:54f596a7fa94"
    assert samples.ModelId.parse(str(m)) == m
    assert samples.ModelId.parse("base") == samples.ModelId("base", None)
    assert str(samples.ModelId("base")) == "base"
    with pytest.raises(ValueError):
        samples.ModelId("a+lora:b", "c")


def test_store_round_trip_typed(tmp_path):
    recs = [rec("t/0", 1, logprob_sum=-2.5, logprob_mean=-0.5), rec("t/0", -1), rec("t/0", 0, answer=None, correct=False),
            rec("t/1", 0, answer="3", correct=False)]
    write_output(tmp_path, recs)
    store = samples.load(tmp_path / "samples-test.jsonl")
    assert [p.id for p in store.problems] == ["t/0", "t/1", "t/2"]
    assert store.meta.model == samples.ModelId("base-model", "abc123") and store.meta.complete
    g0 = store.group("t/0")
    assert g0.greedy == samples.Sample("t/0", -1, "so 1", "1", True, 2, "eos")
    assert [s.k for s in g0.samples] == [0, 1]  # sorted by k, not file order
    assert g0.samples[1].logprob_mean == -0.5 and g0.samples[1].logprob_sum == -2.5
    assert g0.samples[0].logprob_mean is None  # missing means absent
    assert store.group("t/2") == samples.ProblemSamples(None, ())
    # to_dict writes back exactly what was read (optional fields only when present)
    assert [s.to_dict() for s in g0.samples] == [recs[2], recs[0]]


def test_metric_rows_take_scores_by_key_not_position(tmp_path):
    write_output(tmp_path, [rec("t/0", 1), rec("t/0", 0), rec("t/1", 0)])
    store = samples.load(tmp_path / "samples-test.jsonl")
    ev = samples.ScoreSet("evaluator", {("t/0", 0): 0.1, ("t/0", 1): 0.9, ("t/1", 0): 0.5})
    conf = samples.ScoreSet("confidence", {("t/0", 1): -0.2})
    rows = store.metric_rows({"evaluator": ev, "confidence": conf}, primary="evaluator")
    assert [(s["k"], s["score"], s["scores"]) for s in rows[0]["samples"]] == [
        (0, 0.1, {"confidence": None}), (1, 0.9, {"confidence": -0.2})]
    assert rows[2]["samples"] == [] and rows[2]["greedy"] is None


def test_append_is_resumable_and_torn_tail_ignored(tmp_path):
    paths = write_output(tmp_path, [rec("t/0", 0)])
    with open(paths.samples, "ab") as f:
        f.write(b'{"id": "t/0", "k": 1, "te')  # a kill in the middle of a write
    assert list(samples.load_samples(paths.samples)) == ["t/0"]
    records, good, torn = samples.scan_jsonl(paths.samples, samples.validate_record)
    assert len(records) == 1 and torn.startswith("line 2:") and good == len(paths.samples.read_bytes().split(b"\n")[0]) + 1
    # appending problems again adds nothing; a changed problem is refused
    samples.sync_problems(paths.problems, PROBLEMS)
    assert len(paths.problems.read_text().splitlines()) == 3
    changed = [Problem(**{**PROBLEMS[0].to_dict(), "answer": "99"})]
    with pytest.raises(samples.SamplesError, match="differs"):
        samples.sync_problems(paths.problems, changed)


@pytest.mark.parametrize("bad, words", [
    ({"k": "1"}, "field 'k' has type str"),
    ({"logprob_mean": "x"}, "'logprob_mean' must be a finite number"),
    ({"logprob_sum": True}, "'logprob_sum' must be a finite number"),
    ({"finish": "stop"}, "finish='stop'"),
])
def test_bad_record_is_one_line_error_naming_file_and_line(tmp_path, bad, words):
    paths = write_output(tmp_path, [rec("t/0", 0), {**rec("t/0", 1), **bad}, rec("t/1", 0)])
    with pytest.raises(samples.SamplesError) as e:
        samples.load_samples(paths.samples)
    msg = str(e.value)
    assert isinstance(e.value, UserError) and "\n" not in msg
    assert msg.startswith(f"{paths.samples}:2: corrupt line") and words in msg


def test_duplicate_and_bad_meta_errors(tmp_path):
    paths = write_output(tmp_path, [rec("t/0", 0), rec("t/0", 0)])
    with pytest.raises(samples.SamplesError, match=r"duplicate sample \(id='t/0', k=0\)"):
        samples.load_samples(paths.samples)
    paths.meta.write_text(json.dumps({"config": {}}))
    with pytest.raises(samples.SamplesError, match="not a sampling meta file"):
        samples.load_meta(paths.meta)
    paths.meta.write_text("{")
    with pytest.raises(samples.SamplesError, match="not valid JSON"):
        samples.load_meta(paths.meta)


def test_scores_round_trip_and_errors(tmp_path):
    s = samples.ScoreSet("evaluator", {("a", 0): 0.25, ("a", 1): 1.0, ("b\tc", 0): 0.5}, "fp", {"kind": "head"})
    samples.save_scores(tmp_path / "s.json", s)
    back = samples.load_scores(tmp_path / "s.json")
    assert back == s and back.get("b\tc", 0) == 0.5 and back.get("a", 2) is None
    (tmp_path / "bad.json").write_text(json.dumps({"scorer": "x", "scores": [["a", "0", 1.0]]}))
    with pytest.raises(samples.SamplesError, match=r"bad.json: scores entry 0 is not \[problem id, k, score\]"):
        samples.load_scores(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text(json.dumps({"fingerprint": "f", "scores": {"a\t0": 1.0}}))
    with pytest.raises(samples.SamplesError, match="not a scores file"):
        samples.load_scores(tmp_path / "old.json")


def test_confidence_scores_from_samples():
    ss = [samples.Sample("a", 0, "", "1", True, 1, "eos", -3.0, -1.5), samples.Sample("a", 1, "", "1", True, 1, "eos")]
    conf = samples.ScoreSet.from_samples("confidence", ss, lambda s: s.logprob_mean)
    assert conf.scores == {("a", 0): -1.5}


def test_choices_round_trip_and_errors(tmp_path):
    good = {"id": "p", "level": 1, "subject": "s", "greedy_correct": True,
            "samples": [{"k": 0, "answer": "1", "correct": True, "tokens": 4, "scores": {"evaluator": 0.5}}],
            "chosen": {"maj1": 0, "pass_n": None}, "correct": {"maj1": True}}
    samples.save_choices(tmp_path / "c.jsonl", [good])
    assert samples.load_choices(tmp_path / "c.jsonl") == [good]
    (tmp_path / "c.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "q", "chosen": {"maj1": 7}}) + "\n"
                                      + json.dumps({**good, "id": "r"}) + "\n")
    with pytest.raises(samples.SamplesError, match=r"c.jsonl:2: corrupt line \(choices record 'chosen' must map"):
        samples.load_choices(tmp_path / "c.jsonl")
