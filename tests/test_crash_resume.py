"""Crash safety of recipes 01-03: kill -9 at two moments of a run, rerun the same command each time,
and the final artifacts are complete and what an uninterrupted run makes (where that is defined):

- 01: killed after a checkpoint exists (mid-training), then after the adapter is saved but before the
  stage is marked finished: the reruns resume from the last checkpoint (no step is trained twice, and
  none past max_steps), the stage ends complete with max_steps steps, and its adapter loads.
- 02: killed after some train samples, then after some test samples: every (id, k) once, none lost.
- 03: killed while loading, then mid-training: the evaluator is only ever in place complete, and loads.

The moments are picked by polling the run's files and output. Smoke preset with smaller sizes; each
test runs its recipe about 1.5 times, hence `slow`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
OFFLINE = "smollm2-135m-offline"


@contextmanager
def one_thread():
    """One torch thread, as the recipes get (MATHLITE_THREADS=1), for the checks that load a model
    in this process."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def launch(script: str, args, log: Path) -> subprocess.Popen:
    # One torch thread: these runs are small and mostly start-up, and on a shared machine two OpenMP
    # threads spinning against other processes made a run 5x slower (and cost 6x the CPU time).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "MATHLITE_THREADS": "1"}
    with open(log, "w") as fh:  # the child writes to its own copy of the file descriptor
        return subprocess.Popen([sys.executable, str(REPO / script), "--preset", "smoke", *map(str, args)],
                                stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=env)


def run_and_kill(script: str, args, log: Path, when: Callable[[], bool], timeout: float = 900) -> bool:
    """Run a recipe and kill -9 it as soon as when() holds. True if it was killed, False if it ended first."""
    proc = launch(script, args, log)
    deadline = time.time() + timeout
    try:
        while proc.poll() is None:
            if when():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            if time.time() > deadline:
                raise AssertionError(f"{script}: the kill point was not reached in {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]
    return False


def run_to_end(script: str, args, log: Path, timeout: float = 900) -> str:
    proc = launch(script, args, log)
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "Traceback" not in text
    return text


def lines_in(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def manifest(stage: Path) -> dict | None:
    try:
        return json.loads((stage / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# ---------------------------------------------------------------------------- publishing a folder


def test_publish_dir_shows_no_folder_or_a_complete_one(tmp_path):
    """What 01 (adapter) and 03 (evaluator) use: a folder written in full elsewhere is put in place by
    renames; an old one is replaced, and no work or old copy is left behind."""
    from mathlite import runs

    final = tmp_path / "adapter"
    for version in ("one", "two"):
        work = tmp_path / "adapter.tmp"
        work.mkdir()
        (work / "weights").write_text(version)
        runs.publish_dir(work, final)
        assert (final / "weights").read_text() == version
        assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


# ---------------------------------------------------------------------------- 01 SSFT


@pytest.mark.slow
def test_01_killed_twice_resumes_from_checkpoints(tmp_path):
    from mathlite import models, runs

    run = tmp_path / "run"
    ssft = run / "ssft"
    # smoke (3 steps, a checkpoint every 2) with smaller batches and a short greedy check after training
    args = ["--run", run, "--batch_size", "2", "--max_length", "128", "--eval_before", "false", "--eval_size", "1",
            "--max_new_tokens", "8"]

    # 1. mid-training: step 2 is checkpointed, step 3 is not done yet
    assert run_and_kill("recipes/01_ssft.py", args, tmp_path / "1.log",
                        lambda: (ssft / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists())
    assert not (ssft / "adapter").exists() and runs.stage_done(ssft) is None

    # 2. after the adapter is in place, before the stage is marked finished (the greedy check runs;
    # on a CPU it lasts seconds, a fast machine could finish first: then step 3 has nothing to resume)
    killed = run_and_kill("recipes/01_ssft.py", args, tmp_path / "2.log",
                          lambda: (ssft / "adapter" / "adapter_config.json").exists())
    log2 = (tmp_path / "2.log").read_text()
    assert "step 3/3" in log2 and "step 1/3" not in log2 and "step 2/3" not in log2, "did not resume at step 2"
    if killed:
        assert runs.stage_done(ssft) is None  # an adapter without a finished manifest is not finished work

        # 3. to the end: takes the final checkpoint as it is (resuming from it, the Trainer would train
        # a 4th step), and finishes the stage
        log3 = run_to_end("recipes/01_ssft.py", args, tmp_path / "3.log")
        assert "training had finished" in log3 and "step 4/3" not in log3 and "step 3/3" not in log3
    done = runs.stage_done(ssft)
    assert done and done["stage"] == "ssft" and done["metrics"]["steps"] == 3 == done["config"]["max_steps"]
    assert json.loads((ssft / "metrics.json").read_text())["steps"] == 3
    assert not (ssft / "checkpoints").exists() and not (ssft / ".adapter.tmp").exists()
    assert not [p for p in ssft.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]

    with one_thread():
        model = models.load_adapter(models.load_model(OFFLINE, quant="none"), ssft / "adapter")
    lora = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert lora and model.peft_config["default"].r == 8  # the smoke preset's rank

    # and a fourth run of the same command only reports the finished stage
    assert "already finished" in run_to_end("recipes/01_ssft.py", args, tmp_path / "4.log")


# ---------------------------------------------------------------------------- 02 sampling, then 03 on its samples


@pytest.fixture(scope="module")
def sampled(tmp_path_factory) -> dict:
    """Recipe 02 (base model, smoke sizes, batches of 4, 16 tokens) killed after some train samples, then after
    some test samples, then rerun to the end."""
    tmp = tmp_path_factory.mktemp("crash02")
    run = tmp / "run"
    samples = run / "samples"
    args = ["--run", run, "--adapter", "none", "--batch_size", "4", "--max_new_tokens", "16"]
    first = run_and_kill("recipes/02_sample.py", args, tmp / "1.log", lambda: lines_in(samples / "samples-train.jsonl") >= 1)
    kept = (samples / "samples-train.jsonl").read_bytes()
    second = run_and_kill("recipes/02_sample.py", args, tmp / "2.log", lambda: lines_in(samples / "samples-test.jsonl") >= 1)
    run_to_end("recipes/02_sample.py", args, tmp / "3.log")
    return {"run": run, "samples": samples, "killed": (first, second), "kept_after_first_kill": kept}


@pytest.mark.slow
def test_02_killed_twice_loses_and_repeats_nothing(sampled):
    from mathlite import runs, sampling

    assert sampled["killed"] == (True, True)
    samples = sampled["samples"]
    done = runs.stage_done(samples)
    assert done and done["stage"] == "samples"
    n = done["config"]["n"]
    for split in ("train", "test"):
        paths = sampling.output_paths(samples / f"samples-{split}.jsonl")
        problems = sampling.read_problems(paths.problems)
        assert len(problems) == 4  # the smoke preset's train_problems / test_problems
        keys = [(r["id"], r["k"]) for r in map(json.loads, paths.samples.read_text().splitlines())]
        assert len(keys) == len(set(keys)), "duplicate samples"
        assert set(keys) == {(p.id, k) for p in problems for k in range(-1, n)}, "missing or extra samples"
        sampling.read_samples(paths.samples)  # every line valid
        assert json.loads(paths.meta.read_text())["complete"] is True
    # nothing written before the first kill was lost or rewritten (a torn last line may be redone)
    kept = sampled["kept_after_first_kill"]
    kept = kept[: kept.rfind(b"\n") + 1]
    assert (samples / "samples-train.jsonl").read_bytes().startswith(kept)


@pytest.mark.slow
def test_03_killed_twice_publishes_only_a_complete_evaluator(sampled, tmp_path):
    from mathlite import runs
    from mathlite.evaluator import Evaluator

    run = sampled["run"]
    out = tmp_path / "evaluator"
    work = tmp_path / ".evaluator.tmp"
    args = ["--run", run, "--init", "base", "--out", out]

    # 1. while loading (its examples are built), 2. mid-training (after the first logged step)
    assert run_and_kill("recipes/03_evaluator.py", args, tmp_path / "1.log",
                        lambda: "training examples" in (tmp_path / "1.log").read_text())
    assert not out.exists()
    assert run_and_kill("recipes/03_evaluator.py", args, tmp_path / "2.log",
                        lambda: "step 1/2" in (tmp_path / "2.log").read_text())
    assert not out.exists()  # a half-trained evaluator is never where recipe 04 looks

    run_to_end("recipes/03_evaluator.py", args, tmp_path / "3.log")
    done = runs.stage_done(out)
    assert done and done["stage"] == "evaluator"
    assert not work.exists() and not (out / "checkpoints").exists()
    assert {"adapter_model.safetensors", "adapter_config.json", "evaluator.json", "metrics.json"} <= {
        p.name for p in out.iterdir()}
    assert json.loads((out / "train_log.json").read_text())[-1]["step"] == 2  # max_steps of the smoke preset

    with one_thread():
        ev = Evaluator.load(out)
        scores = ev.score(["What is 2+3?"] * 2, ["2+3=5, so $\\boxed{5}$.", "2+3=6, so $\\boxed{6}$."])
    assert len(scores) == 2 and all(0.0 < s < 1.0 for s in scores)
