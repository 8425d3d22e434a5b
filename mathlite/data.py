"""Problems, data loaders, training targets and prompts: everything a recipe reads.

The paper (Liu et al. 2023, "Improving LLM Fine-tuning for Solving Math
Problems") fine-tunes on MATH step-by-step solutions (optionally PRM800K's
GPT-4 solutions too) and evaluates on MATH500. This module turns every data
source into one record type, `Problem`, and builds prompts and training targets
in ONE place, so that training, sampling and evaluation can never disagree on
the prompt format or on where an answer is.

Sources (see `load_problems` for the strings a recipe accepts):

- MATH (local JSONL or the hub), and the paper's split: train on the 12,000
  problems outside MATH500, test on MATH500;
- GSM8K, rewritten to end in `\\boxed{N}` like MATH;
- PRM800K's GPT-4 solutions that were graded correct, attached to MATH problems
  as extra training targets;
- offline synthetic problems (`mathlite.synthetic`), the CPU preset's default.

Every error a user can cause (a bad path, a malformed line, an unreachable hub)
is a `DataError` with a one-line message naming the file and line.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import threading
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence, get_args

from . import synthetic
from .errors import DataError
from .problem import Problem, _equiv, _extract, _level, _need


SOURCES = ("math", "gsm8k", "prm800k", "synthetic")


def _question_key(question: str) -> str:
    """Whitespace-insensitive identity of a question, to match the same problem across releases."""
    return " ".join(question.split())


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; DataError with file:line on anything odd."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        fh = opener(path, "rt", encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a .jsonl file") from None
    count = 0
    with fh:
        lineno = 0
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
                count += 1
                yield lineno, row
        except UnicodeDecodeError:
            raise DataError(f"{path}:{lineno + 1}: not UTF-8 text") from None
        except (OSError, EOFError) as e:  # e.g. a truncated .gz
            raise DataError(f"{path}: cannot read ({e})") from None
    if count == 0:
        raise DataError(f"{path}: empty file (no JSON lines)")


def _rows(path: Path, convert) -> list:
    """convert(row, index) for every record (index counts records from 0), prefixing
    any DataError with file:line."""
    out = []
    for index, (lineno, row) in enumerate(_read_jsonl(path)):
        try:
            out.append(convert(row, index))
        except DataError as e:
            raise DataError(f"{path}:{lineno}: {e}") from None
    return out


# ---------------------------------------------------------------------------- the hub, only when reachable

_HUB_PATTERN = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_OFFLINE_VALUES = ("1", "true", "yes", "on")


def _is_hub_id(source: str) -> bool:
    s = source.removeprefix("hub:")
    return bool(_HUB_PATTERN.fullmatch(s)) and not s.endswith((".jsonl", ".json", ".gz")) and not Path(s).exists()


def hub_reachable(repo_id: str | None = None, timeout: float = 3.0) -> bool:
    """True when the Hugging Face hub answers within `timeout` seconds.

    `datasets.load_dataset` retries for a long time when offline, so recipes ask
    here first. HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1 answer False at once. The
    probe runs in a daemon thread because DNS lookups ignore socket timeouts: a
    dead network costs at most `timeout`, never a hang. Only a real answer counts
    (2xx/3xx, or 401 for a private repo): sandboxes and captive portals often
    answer every request with an error page of their own.
    """
    if any(os.environ.get(v, "").lower() in _OFFLINE_VALUES for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    url = f"{endpoint}/api/datasets/{repo_id}" if repo_id else endpoint
    result: list[bool] = []

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            result.append(True)
        except urllib.error.HTTPError as e:
            result.append(e.code == 401)
        except Exception:  # noqa: BLE001 - DNS failure, refused, timeout, TLS: all mean "not reachable"
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result and result[0])


def _load_hub(repo_id: str, config: str | None = None, split: str | None = None):
    """datasets.load_dataset, but failing fast and in one line when the hub is unreachable."""
    repo_id = repo_id.removeprefix("hub:")
    if not hub_reachable(repo_id):
        raise DataError(
            f"{repo_id}: the Hugging Face hub is unreachable (offline?) or has no such dataset; "
            "pass a local path instead, e.g. ../shared/data/math"
        )
    import datasets

    try:
        return datasets.load_dataset(repo_id, config, split=split)
    except Exception as e:  # noqa: BLE001 - datasets raises many types; the user needs one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DataError(f"{repo_id}{'/' + config if config else ''} [{split}]: cannot load from the hub ({first})") from None


# ---------------------------------------------------------------------------- MATH

MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory", "prealgebra", "precalculus")
MATH_HUB = "EleutherAI/hendrycks_math"  # one config per subject, no unique_id
MATH500_HUB = "HuggingFaceH4/MATH-500"  # test split only, with unique_id and answer


def _math_problem(row: dict, fallback_id: str | None = None) -> Problem:
    """A MATH record (local release format, or the hub's variants) -> Problem."""
    question = _need(row, "problem", str)
    solution = _need(row, "solution", str)
    uid = _need(row, "unique_id", str) if "unique_id" in row or fallback_id is None else fallback_id
    subject_key = "type" if "type" in row or "subject" not in row else "subject"  # MATH-500 says "subject"
    subject = _need(row, subject_key, str)
    answer = row.get("answer") if isinstance(row.get("answer"), str) else _extract(solution)
    return Problem(uid, question, solution, answer, _level(row.get("level")), subject, "math")


def load_math(source: str | Path, split: str = "train") -> list[Problem]:
    """MATH problems from a folder with {split}.jsonl, a .jsonl file (split ignored),
    or a hub id ("EleutherAI/hendrycks_math", all subject configs; "HuggingFaceH4/MATH-500")."""
    p = Path(source).expanduser()
    if p.is_dir():
        f = p / f"{split}.jsonl"
        if not f.exists():
            raise DataError(f"{p}: no {split}.jsonl in this folder (expected MATH's train.jsonl/test.jsonl)")
        return _rows(f, lambda row, i: _math_problem(row))
    if p.is_file():
        return _rows(p, lambda row, i: _math_problem(row))
    if _is_hub_id(str(source)):
        return _math_from_hub(str(source).removeprefix("hub:"), split)
    raise DataError(f"{source}: no such file or folder, and not a hub dataset id (owner/name)")


def _math_from_hub(repo_id: str, split: str) -> list[Problem]:
    configs: Sequence[str | None] = MATH_SUBJECTS if repo_id == MATH_HUB else (None,)
    out = []
    for config in configs:
        ds = _load_hub(repo_id, config, split)
        for i, row in enumerate(ds):
            # hendrycks_math has no unique_id: name problems by split/subject/row instead.
            fallback = f"{split}/{config or 'math'}/{i}"
            try:
                out.append(_math_problem(dict(row), fallback_id=fallback))
            except DataError as e:
                raise DataError(f"{repo_id} [{split}] row {i}: {e}") from None
    return out


def _split_off_val(train: list[Problem], val_size: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    """A seeded set of `val_size` problems taken out of train (by problem, so no leakage)."""
    if val_size <= 0:
        return train, []
    if val_size >= len(train):
        raise DataError(f"val_size={val_size} leaves no training problems (train has {len(train)})")
    picked = set(random.Random(seed).sample(sorted(p.id for p in train), val_size))
    return [p for p in train if p.id not in picked], [p for p in train if p.id in picked]


def load_paper_split(source: str | Path, val_size: int = 0, seed: int = 0, prm800k: str | Path | None = None) -> dict[str, list[Problem]]:
    """The split of Liu et al. (and Lightman et al.): test = MATH500, train = the other
    12,000 MATH problems (all 7,500 train + the 4,500 test problems not in MATH500).

    source: a folder with train.jsonl, test.jsonl and math500_ids.txt (one unique_id a
    line), or the hub id of MATH (MATH500 then comes from HuggingFaceH4/MATH-500 and is
    matched by question text, since hendrycks_math has no unique_id).
    val_size > 0 adds "val": a seeded set of problems taken out of train.
    prm800k: a PRM800K JSONL file whose correct solutions are attached to train/val.
    """
    p = Path(source).expanduser()
    if p.is_dir():
        ids_file = p / "math500_ids.txt"
        if not ids_file.exists():
            raise DataError(f"{p}: no math500_ids.txt here (the paper split needs MATH500's unique_ids)")
        test_ids = [line.strip() for line in ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not test_ids:
            raise DataError(f"{ids_file}: empty file (expected one unique_id a line)")
        held_out = set(test_ids)
        full_test = load_math(p, "test")
        by_id = {q.id: q for q in full_test}
        missing = [i for i in test_ids if i not in by_id]
        if missing:
            raise DataError(f"{ids_file}: {len(missing)} ids are not in {p / 'test.jsonl'}, e.g. {missing[0]}")
        test = [by_id[i] for i in test_ids]
        train = load_math(p, "train") + [q for q in full_test if q.id not in held_out]
    elif _is_hub_id(str(source)):
        repo = str(source).removeprefix("hub:")
        test = load_math(MATH500_HUB, "test")
        held_out = {_question_key(q.question) for q in test}
        pool = load_math(repo, "train") + load_math(repo, "test")
        train = [q for q in pool if _question_key(q.question) not in held_out]
    else:
        raise DataError(f"{source}: no such folder, and not a hub dataset id (owner/name)")
    if prm800k is not None:
        train = attach_prm800k(train, load_prm800k(prm800k))
    train, val = _split_off_val(train, val_size, seed)
    out = {"train": train, "test": test}
    if val:
        out["val"] = val
    return out


# ---------------------------------------------------------------------------- GSM8K

GSM8K_HUB = "openai/gsm8k"
_CALC = re.compile(r"<<[^>]*>>")


def _gsm8k_problem(row: dict, pid: str) -> Problem:
    question = _need(row, "question", str)
    answer_text = _need(row, "answer", str)
    reasoning, sep, final = answer_text.rpartition("####")
    if not sep:
        raise DataError("field 'answer' has no final '#### N' line")
    number = final.strip().replace(",", "")  # "1,080" -> "1080": a box should hold a plain number
    if not number:
        raise DataError("field 'answer' has an empty '#### N' line")
    # The <<48/2=24>> calculator annotations are GSM8K tooling, not reasoning a model should imitate.
    lines = [" ".join(_CALC.sub("", line).split()) for line in reasoning.strip().splitlines()]
    steps = "\n".join(line for line in lines if line)
    solution = f"{steps}\nThe answer is $\\boxed{{{number}}}$" if steps else f"The answer is $\\boxed{{{number}}}$"
    return Problem(pid, question, solution, number, None, "gsm8k", "gsm8k")


def load_gsm8k(source: str | Path, split: str = "train") -> list[Problem]:
    """GSM8K from a folder with {split}.jsonl, a .jsonl file, or the hub ("openai/gsm8k").
    Solutions keep the reasoning lines and end in `\\boxed{N}`; ids are gsm8k/<split>/<row>."""
    p = Path(source).expanduser()
    if p.is_dir():
        p = p / f"{split}.jsonl"
        if not p.exists():
            raise DataError(f"{p.parent}: no {split}.jsonl in this folder (expected GSM8K's train.jsonl/test.jsonl)")
    if p.is_file():
        name = p.name.split(".")[0]
        return _rows(p, lambda row, i: _gsm8k_problem(row, f"gsm8k/{name}/{i}"))
    if _is_hub_id(str(source)):
        repo = str(source).removeprefix("hub:")
        ds = _load_hub(repo, "main" if repo == GSM8K_HUB else None, split)
        out = []
        for i, row in enumerate(ds):
            try:
                out.append(_gsm8k_problem(dict(row), f"gsm8k/{split}/{i}"))
            except DataError as e:
                raise DataError(f"{repo} [{split}] row {i}: {e}") from None
        return out
    raise DataError(f"{source}: no such file or folder, and not a hub dataset id (owner/name)")


# ---------------------------------------------------------------------------- PRM800K

_PRM_ANSWER = re.compile(r"^\s*#\s*Answer\s*(.*)$", re.S)


def _prm_solution(row: dict) -> tuple[str, str, str | None]:
    """(question, ground truth, formatted solution or None if rejected) for one PRM800K line.

    A labelled trajectory is kept only if the labeller finished it as a solution, no
    step on the followed path was rated -1 (wrong), and its final "# Answer" matches the
    ground truth. The followed path is, per step: the chosen completion; else a
    human-written one; else the only completion (phase 2 has one per step).
    """
    q = _need(row, "question", dict)
    label = _need(row, "label", dict)
    try:
        problem = _need(q, "problem", str)
        truth = _need(q, "ground_truth_answer", (str, int, float))
    except DataError as e:
        raise DataError(f"question: {e}") from None
    try:
        steps = _need(label, "steps", list)
        finish = label.get("finish_reason")
    except DataError as e:
        raise DataError(f"label: {e}") from None
    truth = str(truth)
    if finish != "solution":
        return problem, truth, None
    texts = []
    for k, step in enumerate(steps):
        if not isinstance(step, dict):
            raise DataError(f"label.steps[{k}] should be an object, got {type(step).__name__}")
        completions = step.get("completions") or []
        if not isinstance(completions, list):
            raise DataError(f"label.steps[{k}].completions should be a list, got {type(completions).__name__}")
        chosen = step.get("chosen_completion")
        if chosen is not None:
            if not isinstance(chosen, int) or not 0 <= chosen < len(completions):
                raise DataError(f"label.steps[{k}].chosen_completion={chosen!r} is not an index into its {len(completions)} completions")
            pick = completions[chosen]
        elif isinstance(step.get("human_completion"), dict):
            pick = step["human_completion"]
        elif len(completions) == 1:
            pick = completions[0]
        else:
            return problem, truth, None  # the trajectory stops here
        if not isinstance(pick, dict) or not isinstance(pick.get("text"), str):
            raise DataError(f"label.steps[{k}]: the followed completion has no 'text' string")
        if pick.get("rating") == -1:
            return problem, truth, None
        texts.append(pick["text"])
    if not texts:
        return problem, truth, None
    m = _PRM_ANSWER.match(texts[-1])
    if not m:
        return problem, truth, None
    answer = m.group(1).strip().strip("$").strip()
    if not answer or not _equiv(answer, truth):
        return problem, truth, None
    # One step per line: a step's own line breaks (e.g. around $$...$$) become spaces.
    lines = [" ".join(t.split()) for t in texts[:-1] if t.strip()]
    return problem, truth, "\n".join(lines + [f"The answer is $\\boxed{{{answer}}}$"])


def load_prm800k(path: str | Path) -> list[Problem]:
    """Correct PRM800K GPT-4 solutions, one Problem per distinct question.

    `solution` is the first kept solution; all kept (distinct) ones are in
    `extra["prm800k_solutions"]`. Questions without any kept solution are dropped.
    ids are "prm800k/<hash of the question>", stable across releases and phases.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{p}: no such PRM800K file (openai's release: prm800k/data/phase*_train.jsonl)")
    by_question: dict[str, tuple[str, str, list[str]]] = {}
    for problem, truth, sol in _rows(p, lambda row, i: _prm_solution(row)):
        key = _question_key(problem)
        entry = by_question.setdefault(key, (problem, truth, []))
        if sol is not None and sol not in entry[2]:
            entry[2].append(sol)
    out = []
    for key, (problem, truth, sols) in by_question.items():
        if sols:
            pid = "prm800k/" + hashlib.sha256(key.encode()).hexdigest()[:12]
            out.append(Problem(pid, problem, sols[0], truth, None, "", "prm800k", {"prm800k_solutions": sols}))
    return out


def attach_prm800k(problems: Iterable[Problem], prm: Iterable[Problem]) -> list[Problem]:
    """Copies of `problems` with the PRM800K solutions of the same question (matched by
    whitespace-normalised text) in extra["prm800k_solutions"]. Inputs are not modified."""
    sols = {_question_key(q.question): q.extra.get("prm800k_solutions", [q.solution]) for q in prm}
    out = []
    for p in problems:
        found = sols.get(_question_key(p.question))
        out.append(replace(p, extra={**p.extra, "prm800k_solutions": list(found)}) if found else p)
    return out


# ---------------------------------------------------------------------------- Problem files


def save_problems(problems: Iterable[Problem], path: str | Path) -> Path:
    """Write Problem dicts as JSONL (readable by load_problems)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for p in problems:
            f.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
    return path


def load_problem_file(path: str | Path) -> list[Problem]:
    return _rows(Path(path), lambda row, i: Problem.from_dict(row))


def _sniff(path: Path) -> str:
    """Which kind of JSONL file this is, from its first record."""
    lineno, row = next(_read_jsonl(path))
    if isinstance(row.get("label"), dict) and isinstance(row.get("question"), dict):
        return "prm800k"
    if "problem" in row and "solution" in row:
        return "math"
    if "id" in row and "question" in row and "solution" in row:
        return "problems"
    if "question" in row and "answer" in row:
        return "gsm8k"
    raise DataError(
        f"{path}:{lineno}: unrecognised record (fields {sorted(row)[:8]}); expected Problem dicts "
        "(id, question, solution), MATH (unique_id, problem, solution), GSM8K (question, answer) or PRM800K lines"
    )


# ---------------------------------------------------------------------------- one dispatcher


def default_data_dir() -> Path | None:
    """Where offline copies of the data sets live: $MATHLITE_DATA, ./data in the
    checkout, or ../shared/data next to it (the dev/CI layout); None if none exists."""
    repo = Path(__file__).resolve().parents[1]
    candidates = [os.environ.get("MATHLITE_DATA"), repo / "data", repo.parent / "shared" / "data"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def _local_or_hub(name: str, hub_id: str) -> str | Path:
    """The offline folder of data set `name` if there is one, else its hub id."""
    base = default_data_dir()
    if base is not None and (base / name).is_dir():
        return base / name
    return hub_id


def subset(problems: Sequence[Problem], limit: int | None, seed: int = 0) -> list[Problem]:
    """A deterministic seeded subset of `limit` problems, in their original order.
    Subsets are nested: with the same seed, limit=50 is contained in limit=100."""
    if limit is None or limit >= len(problems):
        return list(problems)
    if limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    order = list(range(len(problems)))
    random.Random(seed).shuffle(order)
    keep = sorted(order[:limit])
    return [problems[i] for i in keep]


SYNTHETIC_N_TRAIN, SYNTHETIC_N_TEST = 2000, 200  # sizes of data="synthetic" unless overridden
_SYNTHETIC_OPTIONS = {"n_train", "n_test", "levels", "families", "style", "data_seed"}


def load_problems(data: str, split: str = "train", limit: int | None = None, seed: int = 0, **kw) -> list[Problem]:
    """The one data entry point of every recipe.

    `data` may be:

    - "synthetic" or "synthetic:<options>" (e.g. "synthetic:levels=1-2"; see
      parse_synthetic_spec): offline generated problems (mathlite.synthetic); kw n_train
      (default SYNTHETIC_N_TRAIN), n_test (SYNTHETIC_N_TEST), levels, families, style ("steps" or
      "terse"), data_seed (default 0; the test set depends only on n_test and
      data_seed, and never shares a question with train);
    - "math-paper" or "math-paper:<folder or hub id>", or a folder holding
      math500_ids.txt: the paper's split (train 12,000 / test MATH500); without a
      folder, the offline copy (see default_data_dir) or else the hub;
    - "math:<folder, file or hub id>", or a folder with MATH's train/test.jsonl: MATH;
    - "gsm8k" or "gsm8k:<folder, file or hub id>", or a GSM8K folder;
    - "prm800k:<file>", or a PRM800K .jsonl file: correct PRM800K solutions;
    - a .jsonl file of Problem dicts (or of MATH / GSM8K records; detected);
    - a hub id: "openai/gsm8k" is GSM8K, anything else is read as MATH-like
      (problem, solution[, level, type, unique_id]).

    split: "train", "test", or "val" (a seeded slice of train by problem; needs
    kw val_size > 0; with val_size > 0 "train" excludes it; kw val_seed picks the slice,
    default `seed`). A single file is one
    split: `split` is ignored for it. kw prm800k=<file> attaches PRM800K solutions
    to train/val problems (for the "prm800k"/"both" training styles).
    limit: a deterministic seeded subset (see `subset`).
    """
    val_size = int(kw.pop("val_size", 0) or 0)
    val_seed = int(kw.pop("val_seed", seed))  # which problems make up val (default: `seed`)
    prm800k = kw.pop("prm800k", None)
    if split not in ("train", "test", "val"):
        raise DataError(f"split must be train, test or val, got {split!r}")
    if split == "val" and val_size <= 0:
        raise DataError("split 'val' needs val_size > 0 (it is carved out of train)")
    base = split if split != "val" else "train"  # which split to load before carving val out of it
    kind, source = _classify(data)
    unknown = set(kw) - (_SYNTHETIC_OPTIONS if kind == "synthetic" else set())
    if unknown:
        raise DataError(f"unknown options for data {data!r}: {', '.join(sorted(unknown))}")

    if kind == "paper":
        splits = load_paper_split(source, val_size=val_size, seed=seed, prm800k=prm800k)
        return subset(splits[split], limit, seed)
    if kind == "synthetic":
        clash = set(source) & set(kw)
        if clash:
            raise DataError(f"{data}: {', '.join(sorted(clash))} given both in the data string and as options")
        kw = {**source, **kw}
        train, test = synthetic.train_test_split(
            int(kw.get("n_train", SYNTHETIC_N_TRAIN)),
            int(kw.get("n_test", SYNTHETIC_N_TEST)),
            seed=int(kw.get("data_seed", 0)),
            levels=kw.get("levels", synthetic.LEVELS),
            families=kw.get("families"),
            style=kw.get("style", "steps"),
        )
        problems = test if base == "test" else train
    elif kind == "math":
        problems = load_math(source, base)
    elif kind == "gsm8k":
        problems = load_gsm8k(source, base)
    elif kind == "prm800k":
        problems = load_prm800k(source)
    else:  # "problems": a file of Problem dicts
        problems = load_problem_file(source)
    if prm800k is not None and base == "train":
        problems = attach_prm800k(problems, load_prm800k(prm800k))
    if base == "train" and val_size > 0:
        train, val = _split_off_val(problems, val_size, val_seed)
        problems = val if split == "val" else train
    return subset(problems, limit, seed)


def parse_synthetic_spec(spec: str) -> dict[str, Any]:
    """Options of a "synthetic:<spec>" data string: comma-separated key=value pairs, lists joined
    with "+" and level ranges with "-", e.g. "levels=1-2", "levels=1+3,families=arithmetic+percent",
    "n_train=4000,data_seed=1". The keys are load_problems' synthetic options."""
    out: dict[str, Any] = {}
    where = f"synthetic:{spec}"
    for part in filter(None, (x.strip() for x in spec.split(","))):
        key, eq, value = (x.strip() for x in part.partition("="))
        if not eq or not value:
            raise DataError(f"{where}: expected key=value, got {part!r} (e.g. synthetic:levels=1-2)")
        if key not in _SYNTHETIC_OPTIONS:
            raise DataError(f"{where}: unknown option {key!r} (choose from {', '.join(sorted(_SYNTHETIC_OPTIONS))})")
        if key in out:
            raise DataError(f"{where}: {key} given twice")
        if key == "levels":
            levels: list[int] = []
            for item in value.split("+"):
                lo, dash, hi = item.partition("-")
                if not (lo.strip().isdigit() and (not dash or hi.strip().isdigit())):
                    raise DataError(f"{where}: levels must look like 1-2 or 1+3, got {value!r}")
                levels += range(int(lo), int(hi if dash else lo) + 1)
            bad = [lv for lv in levels if lv not in synthetic.LEVELS]
            if bad or not levels:
                raise DataError(f"{where}: levels must be within {synthetic.LEVELS[0]}-{synthetic.LEVELS[-1]}, got {value!r}")
            out[key] = tuple(sorted(set(levels)))
        elif key == "families":
            fams = [f.strip() for f in value.split("+") if f.strip()]
            unknown = [f for f in fams if f not in synthetic.FAMILIES]
            if unknown or not fams:
                raise DataError(f"{where}: unknown families {', '.join(unknown) or value!r} "
                                f"(choose from {', '.join(synthetic.FAMILIES)})")
            out[key] = tuple(fams)
        elif key == "style":
            if value not in synthetic.STYLES:
                raise DataError(f"{where}: style must be one of {', '.join(synthetic.STYLES)}, got {value!r}")
            out[key] = value
        else:  # n_train, n_test, data_seed
            if not value.isdigit():
                raise DataError(f"{where}: {key} must be a non-negative integer, got {value!r}")
            out[key] = int(value)
    return out


def _classify(data: str) -> tuple[str, Any]:
    """(kind, source) for a `data` string; see load_problems for the forms."""
    if isinstance(data, os.PathLike):
        data = os.fspath(data)
    if not isinstance(data, str) or not data.strip():
        raise DataError(f"data must be a non-empty string, got {data!r}")
    prefix, sep, rest = data.partition(":")
    if sep and prefix in ("math-paper", "math", "gsm8k", "prm800k", "synthetic", "hub") and not Path(data).exists():
        if prefix == "math-paper":
            return "paper", rest
        if prefix == "hub":
            return _classify_hub(rest)
        if prefix == "synthetic":
            return "synthetic", parse_synthetic_spec(rest)
        return prefix, rest
    if data == "synthetic":
        return "synthetic", {}
    if data == "math-paper":
        return "paper", _local_or_hub("math", MATH_HUB)
    if data == "gsm8k":
        return "gsm8k", _local_or_hub("gsm8k", GSM8K_HUB)
    if data == "math":
        return "math", _local_or_hub("math", MATH_HUB)
    p = Path(data).expanduser()
    if p.is_dir():
        if (p / "math500_ids.txt").exists():
            return "paper", p
        first = next((f for f in (p / "train.jsonl", p / "test.jsonl") if f.exists()), None)
        if first is None:
            raise DataError(f"{p}: folder has neither train.jsonl nor test.jsonl")
        kind = _sniff(first)
        if kind not in ("math", "gsm8k"):
            raise DataError(f"{first}: a data folder should hold MATH or GSM8K files, this looks like {kind}")
        return kind, p
    if p.is_file():
        return _sniff(p), p
    if _is_hub_id(data):
        return _classify_hub(data)
    raise DataError(f"{data}: no such file or folder, and not a known data name (synthetic, math-paper, math, gsm8k) or hub id")


def _classify_hub(repo_id: str) -> tuple[str, str]:
    if repo_id.lower().endswith("gsm8k"):
        return "gsm8k", repo_id
    return "math", repo_id


def fingerprint(problems: Iterable[Problem]) -> str:
    """A short hash of the problem set (ids and answers, order-independent) for run manifests."""
    h = hashlib.sha256()
    for pid, ans in sorted((p.id, p.answer or "") for p in problems):
        h.update(f"{pid}\t{ans}\n".encode())
    return h.hexdigest()[:12]


# ---------------------------------------------------------------------------- training targets

SolutionStyle = Literal["math", "steps", "prm800k", "both"]  # the training targets of recipe 01
SOLUTION_STYLES = get_args(SolutionStyle)

# After the final box only closing math delimiters and punctuation may follow, as in
# MATH's "... = \boxed{5}$." -- the model then stops right after the answer.
_TAIL_OK = re.compile(r"[\s$.\\\])]*")


def _last_box(text: str) -> tuple[int, str] | None:
    """(end index, content) of the last \\boxed{...}, with nested braces; None if none."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    for i in range(start + len("\\boxed"), len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i + 1, text[start + len("\\boxed{") : i]
    return None


def ends_with_boxed(text: str, answer: str | None = None) -> bool:
    """Does `text` end with \\boxed{answer} (only `$`, `.`, `\\]` ... after it)?"""
    box = _last_box(text)
    if box is None or not _TAIL_OK.fullmatch(text[box[0] :]):
        return False
    return answer is None or box[1].split() == answer.split() or _equiv(box[1], answer)


def finish_with_box(solution: str, answer: str) -> str:
    """`solution`, plus a final "The answer is $\\boxed{answer}$" line unless it already
    ends with that box (some MATH solutions box mid-sentence and then keep talking)."""
    s = solution.rstrip()
    one_line = " ".join(answer.split())  # a few MATH answers contain a line break
    return s if ends_with_boxed(s, answer) else f"{s}\nThe answer is $\\boxed{{{one_line}}}$"


# Atoms that a sentence split must never cut: Asymptote code, display and inline
# math, LaTeX environments. Escaped dollars (\$5) are prose, not math.
_ATOMS = re.compile(
    r"(?P<asy>\[asy\].*?\[/asy\])"
    r"|(?P<display>\$\$.*?\$\$|\\\[.*?\\\]|\\begin\{(?P<env>[a-zA-Z*]+)\}.*?\\end\{(?P=env)\})"
    r"|(?P<inline>(?<!\\)\$(?:\\.|[^$\\])+\$|\\\(.*?\\\))",
    re.S,
)
_INLINE, _DISPLAY, _ASY = "\ue000", "\ue001", "\ue002"  # private-use chars that stand in for atoms
_BOUNDARY = re.compile(
    rf"(?<=[.!?])[ \t]+(?=[A-Z{_INLINE}{_DISPLAY}{_ASY}(\d])"  # end of a sentence
    rf"|(?<={_DISPLAY})[ \t]+(?=[A-Z])"  # a displayed equation, then a new sentence
    rf"|(?<=[^{_ASY}\s])\s*(?={_ASY})|(?<={_ASY})\s*(?=[^{_ASY}\s])"  # a diagram is a step of its own
    r"|[ \t]*\n\s*"  # a line break in prose
)
_ABBREV = ("Mr.", "Mrs.", "Ms.", "Dr.", "St.", "vs.", "e.g.", "i.e.", "cf.")


def split_steps(text: str) -> list[str]:
    """Split a solution into sentences/steps, never inside math, environments or [asy].

    Line breaks inside math become spaces (LaTeX ignores them), so each step is one
    line; [asy] diagrams keep theirs (Asymptote `//` comments need them).
    """
    masked = list(text)
    for m in _ATOMS.finditer(text):
        kind = _ASY if m.group("asy") else _DISPLAY if m.group("display") else _INLINE
        masked[m.start() : m.end()] = kind * (m.end() - m.start())
        if kind == _INLINE and text[m.end() - 2] in ".!?":
            masked[m.end() - 1] = "."  # "$x = 5.$ Then": the sentence ends inside the math
    masked_s = "".join(masked)
    pieces, start = [], 0
    for m in _BOUNDARY.finditer(masked_s):
        if any(masked_s[: m.start()].endswith(a) for a in _ABBREV):
            continue
        pieces.append(text[start : m.start()])
        start = m.end()
    pieces.append(text[start:])
    out = []
    for piece in pieces:
        piece = piece.strip()
        if not piece:
            continue
        if not piece.startswith("[asy]"):
            piece = " ".join(piece.split())
        out.append(piece)
    return out


def steps_solution(solution: str, answer: str) -> str:
    """A reference solution rewritten one step (sentence) per line, ending in \\boxed{answer}."""
    return finish_with_box("\n".join(split_steps(solution)), answer)


def training_solutions(problem: Problem, style: str = "math") -> list[str]:
    """The training targets of one problem; each ends with \\boxed{problem.answer}.

    - "math": the reference solution (terse, MATH style);
    - "steps": one step per line (a hand-made version if the problem has one, else
      the reference split into sentences);
    - "prm800k": the PRM800K GPT-4 solutions attached to the problem (see
      attach_prm800k); [] for a problem without any;
    - "both": the reference solution plus the PRM800K ones (the paper's best mix).

    A problem without an answer yields [] (a target must end in a checkable box).
    """
    if style not in SOLUTION_STYLES:
        raise DataError(f"solution style must be one of {', '.join(SOLUTION_STYLES)}, got {style!r}")
    if problem.answer is None:
        return []
    ans = problem.answer
    prm = [finish_with_box(s, ans) for s in problem.extra.get("prm800k_solutions", [])]
    if style == "math":
        return [finish_with_box(problem.solution, ans)]
    if style == "steps":
        hand_made = problem.extra.get("styles", {}).get("steps")
        return [finish_with_box(hand_made, ans) if hand_made else steps_solution(problem.solution, ans)]
    if style == "prm800k":
        return prm
    ref = finish_with_box(problem.solution, ans)
    return [ref] + [s for s in prm if s != ref]


# ---------------------------------------------------------------------------- prompts (the only place)

INSTRUCTION = "Solve the following math problem step by step. Put the final answer in \\boxed{}."
# Plain (no chat template) prompts: a base model continues with the next "Problem:",
# so samplers should stop there as well as at EOS.
PLAIN_STOP = "\n\nProblem:"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _user_turn(question: str) -> str:
    return f"{INSTRUCTION}\n\n{question.strip()}"


def build_prompt(tokenizer, question: str, fewshot: Sequence[tuple[str, str]] = ()) -> str:
    """The prompt text, ending where the model's solution starts.

    With a chat template: the few-shot examples as earlier user/assistant turns,
    then the question, with the generation prompt. Without one:
    "{INSTRUCTION}\\n\\nProblem: ...\\nSolution: ...\\n\\n" per example, then
    "Problem: {question}\\nSolution:". The text may start with the template's BOS
    token: tokenize it with add_special_tokens=False to avoid a second one.
    """
    if has_chat_template(tokenizer):
        messages = []
        for q, s in fewshot:
            messages += [{"role": "user", "content": _user_turn(q)}, {"role": "assistant", "content": s.strip()}]
        messages.append({"role": "user", "content": _user_turn(question)})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    shots = "".join(f"Problem: {q.strip()}\nSolution: {s.strip()}\n\n" for q, s in fewshot)
    return f"{INSTRUCTION}\n\n{shots}Problem: {question.strip()}\nSolution:"


def build_target(tokenizer, solution: str) -> str:
    """The completion to train on: the solution followed by exactly one EOS token, so
    that the model learns to stop. (SmolLM2 uses `<|im_end|>` as both pad and EOS;
    since padding is masked out of the loss, this appended EOS is what teaches stopping.)"""
    eos = getattr(tokenizer, "eos_token", None)
    if not eos:
        raise ValueError("the tokenizer has no eos_token; set one before building training targets")
    s = solution.strip()
    while s.endswith(eos):  # never twice, even if the input already had it
        s = s[: -len(eos)].rstrip()
    # Plain prompts end in "Solution:"; the space belongs to the completion so that
    # the prompt's last token is the same in training and generation.
    return (s if has_chat_template(tokenizer) else " " + s) + eos


def prompt_completion_records(
    problems: Iterable[Problem], tokenizer, style: str = "math", fewshot: Sequence[tuple[str, str]] = ()
) -> list[dict[str, str]]:
    """TRL SFTTrainer "prompt-completion" records (loss on the completion only), one per
    training target: a problem with several targets (style "both") gives several records."""
    records = [
        {"prompt": build_prompt(tokenizer, p.question, fewshot), "completion": build_target(tokenizer, sol)}
        for p in problems
        for sol in training_solutions(p, style)
    ]
    if not records:
        hint = " (attach PRM800K solutions: load_problems(..., prm800k=<file>))" if style in ("prm800k", "both") else ""
        raise DataError(f"no training targets for style {style!r}{hint}")
    return records


def fewshot_examples(k: int, style: str = "math", seed: int = 0, pool: Sequence[Problem] | None = None) -> list[tuple[str, str]]:
    """k worked examples (question, solution) for the few-shot baseline.

    style "math" gives terse MATH-style solutions, "steps" one step per line. From
    `pool` (e.g. MATH train) when given -- a seeded pick among problems with short
    solutions, to keep prompts small -- else synthetic problems of levels 1, 2, ...
    that are not in the default synthetic test set.
    """
    if k <= 0:
        return []
    if style not in ("math", "steps"):
        raise DataError(f"few-shot style must be 'math' or 'steps', got {style!r}")
    if pool is None:
        # Never show a question of the default synthetic test set as an example.
        _, test = synthetic.train_test_split(0, SYNTHETIC_N_TEST)
        probs = synthetic.generate(k, seed=seed, style="terse" if style == "math" else "steps", exclude={p.question for p in test})
        return [(p.question, p.solution) for p in probs]
    candidates = sorted((p for p in pool if p.answer is not None and len(p.solution) <= 700), key=lambda p: p.id)
    if len(candidates) < k:
        raise DataError(f"few-shot: only {len(candidates)} usable problems in the pool, asked for {k}")
    picked = random.Random(seed).sample(candidates, k)
    return [(p.question, training_solutions(p, style)[0]) for p in picked]


__all__ = [
    "DataError", "Problem", "SOURCES", "INSTRUCTION", "PLAIN_STOP", "SOLUTION_STYLES",
    "load_math", "load_paper_split", "load_gsm8k", "load_prm800k", "attach_prm800k",
    "load_problem_file", "save_problems", "load_problems", "subset", "fingerprint", "hub_reachable",
    "training_solutions", "steps_solution", "split_steps", "finish_with_box", "ends_with_boxed",
    "build_prompt", "build_target", "prompt_completion_records", "fewshot_examples", "default_data_dir",
]
