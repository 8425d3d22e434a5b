"""Bad input to the recipes: every mistake a user can make on the command line gives ONE line on
stderr ("error: ..." naming the file, and the line where there is one), exit code 2, no traceback
(`--debug` shows it), and changes nothing on disk that a rerun could take for finished work.

Each case runs a recipe in a subprocess (`--preset smoke`). The checks run before any model loads,
so a case costs the interpreter and torch start-up; the cases are run concurrently, once per module.
The two cases with an adapter of another model load the 135M model (slow).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import conftest
import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = {1: "recipes/01_ssft.py", 2: "recipes/02_sample.py", 3: "recipes/03_evaluator.py", 4: "recipes/04_rerank.py"}
OFFLINE = "smollm2-135m-offline"


def run_recipe(n: int, *args, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "MATHLITE_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / RECIPES[n]), "--preset", "smoke", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root with size and mtime: equal before and after = nothing written."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def assert_user_error(proc: subprocess.CompletedProcess, *must_name: str) -> str:
    """rc 2, exactly one non-empty stderr line "error: ..." naming each of must_name, no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, f"rc {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    assert len(lines) == 1, "stderr should be one line:\n" + proc.stderr[-3000:]
    assert lines[0].startswith("error:"), lines[0]
    for name in must_name:
        assert str(name) in lines[0], f"{name!r} not named in: {lines[0]}"
    return lines[0]


# ---------------------------------------------------------------------------- inputs


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def copy_output(samples: Path, to: Path) -> Path:
    """Copy a sampling output (samples, problems, meta) to the samples file `to`."""
    from mathlite import sampling

    for src, dst in zip(sampling.output_paths(samples), sampling.output_paths(to)):
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    return to


GOOD = {"id": "p1", "question": "What is 1+1?", "solution": "1+1=2, so $\\boxed{2}$.", "answer": "2"}


def make_inputs(d: Path) -> dict[str, Path]:
    """Bad data files, an empty run folder, and a run folder with a hand-made (valid) sampling output."""
    from mathlite import data, sampling

    files = {
        "bad_json": write_jsonl(d / "bad_json.jsonl", [GOOD, '{"id": "p2", "question": ', GOOD]),
        "missing_field": write_jsonl(d / "missing_field.jsonl", [GOOD, {"id": "p2", "question": "2+2?"}]),
        "wrong_type": write_jsonl(d / "wrong_type.jsonl", [GOOD, {**GOOD, "id": "p2", "question": 5}]),
        "empty": write_jsonl(d / "empty.jsonl", []),
        "empty_run": d / "empty_run",
        "run": d / "run",
    }
    files["empty_run"].mkdir()

    # what recipe 02 writes, made by hand (no model): greedy + 2 samples per problem, one of them wrong
    problems = data.load_problems("synthetic", "test", limit=4)
    recs = [{"id": p.id, "k": k, "text": f"So the answer is $\\boxed{{{p.answer if k != 1 else '12345'}}}$.",
             "answer": p.answer if k != 1 else "12345", "correct": k != 1, "tokens": 9, "finish": "eos"}
            for p in problems for k in (-1, 0, 1)]
    for r in recs:
        sampling.validate_record(r)
    for split in ("train", "test"):
        paths = sampling.output_paths(files["run"] / "samples" / f"samples-{split}.jsonl")
        write_jsonl(paths.samples, recs)
        write_jsonl(paths.problems, [p.to_dict() for p in problems])
        paths.meta.write_text(json.dumps({
            "schema": 1, "config": {"n": 2, "temperature": 0.9, "top_p": 0.95, "max_new_tokens": 32, "greedy": True,
                                    "seed": 0, "stop": []},
            "model": {"name": OFFLINE, "weights": "bfloat16", "adapter": None, "adapter_sha": None},
            "prompt_sha": "x", "config_hash": "x", "complete": True}))
    files["samples_train"] = files["run"] / "samples" / "samples-train.jsonl"

    # a corrupt copy: a broken line before the last one (not a torn write: corruption)
    bad = copy_output(files["samples_train"], d / "bad_samples" / "samples-train.jsonl")
    bad.write_text("\n".join(["{oops"] + bad.read_text().splitlines()[1:]) + "\n")
    files["bad_samples"] = bad

    # a problems file whose second record lacks its question
    badp = copy_output(files["samples_train"], d / "bad_problems" / "samples-train.jsonl")
    problems_file = sampling.output_paths(badp).problems
    lines = problems_file.read_text().splitlines()
    row = json.loads(lines[1])
    del row["question"]
    problems_file.write_text("\n".join([lines[0], json.dumps(row)] + lines[2:]) + "\n")
    files["bad_problems"] = badp
    return files


def recipe_config(n: int, *args) -> dict:
    """The config dict recipe n builds from these flags (what its manifest records)."""
    return conftest.recipe_config(Path(RECIPES[n]).stem, *args)


def write_stage(folder: Path, config: dict, complete: bool, **extra) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"config": config, "complete": complete, **extra}))


# the states some cases start from (tmp: the case's own folder; inp: make_inputs' files)


def finished_ssft(tmp: Path, inp) -> None:
    write_stage(tmp / "run" / "ssft", recipe_config(1, "--run", tmp / "run"), complete=True, stage="ssft")


def unfinished_ssft_of_another_config(tmp: Path, inp) -> None:
    write_stage(tmp / "run" / "ssft", recipe_config(1, "--run", tmp / "run", "--lora_r", "4"), complete=False,
                stage="ssft")
    (tmp / "run" / "ssft" / "checkpoints" / "checkpoint-2").mkdir(parents=True)


def pickled_adapter(tmp: Path, inp) -> None:
    (tmp / "adapter").mkdir()
    (tmp / "adapter" / "adapter_config.json").write_text("{}")
    (tmp / "adapter" / "adapter_model.bin").write_bytes(b"a pickle: never opened")


def samples_n2(tmp: Path, inp) -> None:
    shutil.copytree(inp["samples_train"].parent, tmp / "samples")


def finished_evaluator(tmp: Path, inp) -> None:
    write_stage(tmp / "evaluator", recipe_config(3, "--run", inp["run"], "--init", "base"), complete=True,
                stage="evaluator")


# ---------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    recipe: int
    name: str
    args: tuple[str, ...]  # "{tmp}": the case's own folder; "{run}", "{bad_json}", ...: make_inputs' files
    names: tuple[str, ...]  # what the error line must name
    prepare: Callable | None = None

    @property
    def id(self) -> str:
        return f"{self.recipe:02d} {self.name}"


R = ("--run", "{tmp}/run")  # a fresh run folder of the case's own
NOADAPTER = (*R, "--adapter", "none")
CASES = [
    # 01 SSFT
    Case(1, "unknown flag", (*R, "--lora-rank", "4"), ("--lora_rank", "--lora_r")),
    Case(1, "bad value", (*R, "--max_steps", "three"), ("--max_steps", "three")),
    Case(1, "bad style", (*R, "--style", "stpes"), ("--style", "stpes")),
    Case(1, "missing data", (*R, "--data", "{tmp}/no_such.jsonl"), ("{tmp}/no_such.jsonl",)),
    Case(1, "missing data, [brackets] in the path", (*R, "--data", "{tmp}/[/data]/[red]x.jsonl"),
         ("{tmp}/[/data]/[red]x.jsonl",)),  # printed as it is, not read as rich markup
    Case(1, "misspelt model", (*R, "--model", "smollm2-135m-ofline"), ("smollm2-135m-ofline",)),
    Case(1, "missing model folder", (*R, "--model", "{tmp}/no_model/"), ("{tmp}/no_model",)),
    Case(1, "model folder without a model", (*R, "--model", "{tmp}/model"), ("{tmp}/model", "tokenizer"),
         lambda tmp, inp: write_jsonl(tmp / "model" / "config.json", [{"model_type": "llama"}])),
    Case(1, "misspelt hub id (offline)", (*R, "--model", "HuggingFaceTB/SmolLM2-135M-Instrukt"),
         ("HuggingFaceTB/SmolLM2-135M-Instrukt",)),
    Case(1, "malformed line", (*R, "--data", "{bad_json}"), ("{bad_json}:2", "malformed JSON")),
    Case(1, "missing field", (*R, "--data", "{missing_field}"), ("{missing_field}:2", "solution")),
    Case(1, "wrong type", (*R, "--data", "{wrong_type}"), ("{wrong_type}:2", "question")),
    Case(1, "empty split", (*R, "--data", "{empty}"), ("{empty}", "empty")),
    Case(1, "finished run of another config", (*R, "--lora_r", "4"), ("{tmp}/run/ssft", "lora_r", "--force"),
         finished_ssft),
    Case(1, "unfinished run of another config", R, ("{tmp}/run/ssft", "unfinished", "lora_r"),
         unfinished_ssft_of_another_config),
    # 02 sampling
    Case(2, "unknown flag", (*R, "--samples", "8"), ("--samples",)),
    Case(2, "no previous stage", ("--run", "{empty_run}"), ("{empty_run}/ssft/adapter", "01_ssft.py")),
    Case(2, "misspelt adapter", (*R, "--adapter", "{tmp}/adaptr"), ("{tmp}/adaptr",)),
    Case(2, "pickled adapter", (*R, "--adapter", "{tmp}/adapter"), ("{tmp}/adapter", "safetensors"), pickled_adapter),
    Case(2, "misspelt model", (*NOADAPTER, "--model", "{tmp}/no_model"), ("{tmp}/no_model",)),
    Case(2, "misspelt hub id (offline)", (*NOADAPTER, "--model", "HuggingFaceTB/SmolLM2-135M-Instrukt"),
         ("HuggingFaceTB/SmolLM2-135M-Instrukt",)),
    Case(2, "unknown split", (*NOADAPTER, "--splits", "train,tset"), ("tset",)),
    Case(2, "bad sampling numbers", (*NOADAPTER, "--top_p", "1.5"), ("top_p",)),
    Case(2, "missing data", (*NOADAPTER, "--data", "{tmp}/no_such.jsonl"), ("{tmp}/no_such.jsonl",)),
    Case(2, "malformed line", (*NOADAPTER, "--data", "{bad_json}"), ("{bad_json}:2",)),
    Case(2, "missing field", (*NOADAPTER, "--data", "{missing_field}"), ("{missing_field}:2", "solution")),
    Case(2, "wrong type", (*NOADAPTER, "--data", "{wrong_type}"), ("{wrong_type}:2", "question")),
    Case(2, "empty split", (*NOADAPTER, "--data", "{empty}"), ("{empty}",)),
    Case(2, "samples of another config", (*NOADAPTER, "--out", "{tmp}/samples", "--n", "3"),
         ("{tmp}/samples/samples-train.meta.json", "n: 2 -> 3"), samples_n2),
    # 03 evaluator (inputs: the hand-made samples of {run})
    Case(3, "unknown flag", ("--run", "{run}", "--lossfn", "pairwise"), ("--lossfn", "--loss")),
    Case(3, "bad kind", ("--run", "{run}", "--kind", "verbl"), ("--kind",)),
    Case(3, "no previous stage", ("--run", "{empty_run}"), ("{empty_run}/samples/samples-train.jsonl", "02_sample.py")),
    Case(3, "misspelt samples", ("--run", "{run}", "--samples", "{tmp}/samples-trian.jsonl"), ("{tmp}/samples-trian.jsonl",)),
    Case(3, "no ssft adapter", ("--run", "{run}", "--out", "{tmp}/ev"), ("{run}/ssft/adapter", "--init base")),
    Case(3, "misspelt init", ("--run", "{run}", "--init", "{tmp}/adaptr", "--out", "{tmp}/ev"), ("{tmp}/adaptr",)),
    Case(3, "pickled init adapter", ("--run", "{run}", "--init", "{tmp}/adapter", "--out", "{tmp}/ev"),
         ("{tmp}/adapter", "safetensors"), pickled_adapter),
    Case(3, "data file as samples", ("--run", "{run}", "--init", "base", "--samples", "{missing_field}", "--out", "{tmp}/ev"),
         ("missing_field.meta.json",)),
    Case(3, "corrupt samples", ("--run", "{run}", "--init", "base", "--samples", "{bad_samples}", "--out", "{tmp}/ev"),
         ("{bad_samples}:1",)),
    Case(3, "corrupt problems", ("--run", "{run}", "--init", "base", "--samples", "{bad_problems}", "--out", "{tmp}/ev"),
         ("bad_problems/samples-train.problems.jsonl", "question")),
    Case(3, "finished evaluator of another config", ("--run", "{run}", "--init", "base", "--out", "{tmp}/evaluator",
                                                     "--lr", "3e-4"), ("{tmp}/evaluator", "lr"), finished_evaluator),
    Case(3, "--out is a folder of other files", ("--run", "{run}", "--init", "base", "--out", "{run}"), ("{run}",)),
    # 04 report
    Case(4, "unknown flag", ("--run", "{run}", "--evaluator", "none", "--K", "3"), ("--K",)),
    Case(4, "no previous stage", ("--run", "{empty_run}"), ("{empty_run}/samples/samples-test.jsonl", "02_sample.py")),
    Case(4, "misspelt samples", ("--run", "{run}", "--samples", "{tmp}/samples-tst.jsonl"), ("{tmp}/samples-tst.jsonl",)),
    Case(4, "no evaluator", ("--run", "{run}", "--out", "{tmp}/report"), ("{run}/evaluator", "--evaluator none")),
    Case(4, "misspelt evaluator", ("--run", "{run}", "--evaluator", "{tmp}/evaluatr"), ("{tmp}/evaluatr",)),
    Case(4, "corrupt samples", ("--run", "{run}", "--evaluator", "none", "--samples", "{bad_samples}",
                                "--out", "{tmp}/report"), ("{bad_samples}:1",)),
    Case(4, "missing compare", ("--run", "{run}", "--evaluator", "none", "--compare", "{tmp}/results.json",
                                "--out", "{tmp}/report"), ("{tmp}/results.json",)),
    Case(4, "compare is not results", ("--run", "{run}", "--evaluator", "none", "--out", "{tmp}/report",
                                       "--compare", "{run}/samples/samples-test.meta.json"),
         ("samples-test.meta.json", "methods")),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Run every case once, concurrently: {case id: (stderr line, proc, changed paths)}."""
    base = tmp_path_factory.mktemp("bad_input")
    inp = make_inputs(base / "inputs")
    prepared = {}
    for i, case in enumerate(CASES):
        tmp = base / f"case{i:02d}"
        tmp.mkdir()
        if case.prepare:
            case.prepare(tmp, inp)
        fmt = {k: str(v) for k, v in inp.items()} | {"tmp": str(tmp)}
        prepared[case.id] = (tmp, [a.format(**fmt) for a in case.args], [n.format(**fmt) for n in case.names])
    before = {cid: snapshot(tmp) for cid, (tmp, _, _) in prepared.items()}
    before_inputs = snapshot(base / "inputs")
    with ThreadPoolExecutor(max_workers=min(8, max(2, os.cpu_count() or 2))) as pool:
        procs = {case.id: pool.submit(run_recipe, case.recipe, *prepared[case.id][1]) for case in CASES}
        procs = {cid: f.result() for cid, f in procs.items()}
    return {"procs": procs, "prepared": prepared, "before": before,
            "after": {cid: snapshot(tmp) for cid, (tmp, _, _) in prepared.items()},
            "inputs_unchanged": snapshot(base / "inputs") == before_inputs}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line_error(outcomes, case):
    tmp, args, names = outcomes["prepared"][case.id]
    line = assert_user_error(outcomes["procs"][case.id], *names)
    assert outcomes["after"][case.id] == outcomes["before"][case.id], f"the failed run wrote into {tmp}"
    assert not (tmp / "run").exists() or case.prepare, "a failed run left a run folder"
    assert "\x1b" not in line  # no colour codes when stderr is not a terminal


def test_nothing_written_to_the_inputs(outcomes):
    assert outcomes["inputs_unchanged"]


def test_debug_shows_the_traceback(tmp_path):
    proc = run_recipe(1, "--run", tmp_path / "run", "--data", tmp_path / "no_such.jsonl", "--debug")
    assert proc.returncode not in (0, 2) and "Traceback" in proc.stderr and "no_such.jsonl" in proc.stderr


def test_same_config_in_a_moved_run_folder_is_finished_work(tmp_path):
    """The run folder's location is not part of the work: a finished SSFT stage that was moved is
    reported finished, not refused as another config (and nothing loads)."""
    write_stage(tmp_path / "old" / "ssft", recipe_config(1, "--run", tmp_path / "old"), complete=True, stage="ssft")
    shutil.move(tmp_path / "old", tmp_path / "moved")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "moved" / "ssft").iterdir())
    proc = run_recipe(1, "--run", tmp_path / "moved")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # nothing was trained or rewritten: the folder holds the same files, untouched
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "moved" / "ssft").iterdir()) == before


# ---------------------------------------------------------------------------- an adapter of another model (slow)


@pytest.fixture(scope="module")
def foreign_adapter(tmp_path_factory) -> Path:
    """A LoRA adapter of a tiny random Llama (hidden size 32): SmolLM2's layer names, other shapes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                             task_type="CAUSAL_LM"))
    out = tmp_path_factory.mktemp("foreign") / "tiny-llama-adapter"
    model.save_pretrained(out)
    assert (out / "adapter_model.safetensors").exists()
    return out


@pytest.mark.slow
def test_02_adapter_of_another_model(foreign_adapter, tmp_path):
    before = snapshot(tmp_path)
    assert_user_error(run_recipe(2, "--run", tmp_path / "run", "--adapter", foreign_adapter),
                      foreign_adapter, "does not fit")
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_03_init_from_an_adapter_of_another_model(foreign_adapter, tmp_path):
    inp = make_inputs(tmp_path / "inputs")
    before = snapshot(tmp_path)
    assert_user_error(run_recipe(3, "--run", inp["run"], "--init", foreign_adapter, "--out", tmp_path / "ev"),
                      foreign_adapter, "does not fit")
    assert snapshot(tmp_path) == before  # no evaluator, no half-trained work folder
