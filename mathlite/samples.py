"""The sample store: every file that carries samples between stages, as typed records.

One module owns the formats; the stages hand each other typed values, never strings to split:

    store = samples.load("runs/cpu/samples/samples-test.jsonl")  # problems, samples and meta, each read once
    store.meta.model          # ModelId(base="smollm2-135m-offline", adapter_hash="54f596a7fa94")
    for p in store.problems:
        group = store.groups.get(p.id)   # ProblemSamples(greedy=Sample | None, samples=(Sample, ...) by k)
    ev = samples.load_scores("runs/cpu/report/scores-test.json")  # ScoreSet: scores keyed by (problem id, k)
    ev.get("synthetic/add/test0-3", 5)

File kinds (one `load_*` and one `save_*`/`append_*` each)
-----------------------------------------------------------
- samples  ``samples-<split>.jsonl``: one `Sample` a line, appended batch by batch (flushed and
  fsync'ed as a whole), so a run killed at any moment resumes: `scan_jsonl` drops a torn last line
  and refuses corruption before it. Optional per-sample fields: ``logprob_sum`` / ``logprob_mean``
  (the generator's log-probability of the solution's tokens; absent in older files).
- problems ``samples-<split>.problems.jsonl``: one `data.Problem` a line; `sync_problems` appends
  the new ones and refuses a same-id problem that changed.
- meta     ``samples-<split>.meta.json``: the sampling config, its hash and the model identity
  (`Meta`, `ModelId`); written atomically.
- scores   ``scores-<split>.json``: one scorer's score of every (problem id, k) (`ScoreSet`).
- choices  ``choices-<split>.jsonl`` (recipe 04): per problem, what each sample is (answer,
  correctness, tokens, score per scorer) and which sample each method chose. It is all a report
  needs, without texts or a model: `python -m mathlite.report --recompute DIR` rebuilds the report
  from it.

A bad record is a `SamplesError` (a `runs.UserError`): one line naming the file, the line and
what is wrong.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from .errors import UserError
from .files import atomic_write_json, atomic_write_text
from .problem import Problem

FINISH_REASONS = ("eos", "length")
RECORD_FIELDS = {"id": str, "k": int, "text": str, "answer": (str, type(None)), "correct": bool, "tokens": int, "finish": str}
OPTIONAL_FLOAT_FIELDS = ("logprob_sum", "logprob_mean")
_LORA_TAG = "+lora:"


class SamplesError(UserError):
    """A sample-store file that cannot be used; the message is one line naming file (and line)."""


# ---------------------------------------------------------------------------- identities


@dataclass(frozen=True)
class ModelId:
    """What generated the samples: a base model and, when a LoRA adapter sat on top, a hash of its weights.

    `str(ModelId)` is the name stored in meta files ("<base>+lora:<hash>"); `ModelId.parse` reads it back.
    """

    base: str
    adapter_hash: str | None = None

    def __post_init__(self):
        if not self.base or _LORA_TAG in self.base:
            raise ValueError(f"ModelId: bad base model name {self.base!r}")

    def __str__(self) -> str:
        return self.base if self.adapter_hash is None else f"{self.base}{_LORA_TAG}{self.adapter_hash}"

    @classmethod
    def parse(cls, name: str) -> "ModelId":
        base, tag, adapter = str(name).partition(_LORA_TAG)
        return cls(base, adapter if tag else None)


@dataclass(frozen=True)
class Sample:
    """One generated solution, graded. k = -1 is the greedy solution; 0..N-1 the sampled ones."""

    id: str
    k: int
    text: str
    answer: str | None
    correct: bool
    tokens: int
    finish: str
    logprob_sum: float | None = None
    logprob_mean: float | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.id, self.k)

    @classmethod
    def from_dict(cls, d: Any) -> "Sample":
        validate_record(d)
        return cls(**{k: d[k] for k in RECORD_FIELDS}, **{k: (None if d.get(k) is None else float(d[k]))
                                                          for k in OPTIONAL_FLOAT_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in RECORD_FIELDS}
        d.update({k: getattr(self, k) for k in OPTIONAL_FLOAT_FIELDS if getattr(self, k) is not None})
        return d


@dataclass(frozen=True)
class ProblemSamples:
    """One problem's greedy solution (or None) and its sampled solutions sorted by k."""

    greedy: Sample | None = None
    samples: tuple[Sample, ...] = ()


@dataclass(frozen=True)
class Meta:
    """The meta file of a sampling output (the whole JSON object stays in `raw`)."""

    model: ModelId
    config: Mapping[str, Any]
    config_hash: str | None
    complete: bool
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: Any, path: str | Path = "meta") -> "Meta":
        name = (d.get("model") or {}).get("name") if isinstance(d, dict) and isinstance(d.get("model"), dict) else None
        if not isinstance(name, str) or not name:
            raise SamplesError(f"{path}: not a sampling meta file (no model name); is it the output of recipes/02_sample.py?")
        config = d.get("config") if isinstance(d.get("config"), dict) else {}
        try:
            model = ModelId.parse(name)
        except ValueError as e:
            raise SamplesError(f"{path}: {e}") from None
        return cls(model, config, d.get("config_hash"), bool(d.get("complete")), d)


@dataclass(frozen=True)
class ScoreSet:
    """One scorer's score per sample, keyed by (problem id, k): never matched to samples by position."""

    scorer: str
    scores: Mapping[tuple[str, int], float]
    fingerprint: str | None = None
    cost: Mapping[str, Any] = field(default_factory=dict)

    def get(self, problem_id: str, k: int) -> float | None:
        return self.scores.get((problem_id, k))

    @classmethod
    def from_samples(cls, scorer: str, samples: Iterable[Sample], value: Callable[[Sample], float | None]) -> "ScoreSet":
        """Scores read off the samples themselves (e.g. the generator's confidence); None values are left out."""
        return cls(scorer, {s.key: float(v) for s in samples if (v := value(s)) is not None})


class OutputPaths(NamedTuple):
    samples: Path
    problems: Path
    meta: Path


def output_paths(out: str | Path) -> OutputPaths:
    """samples-test.jsonl -> (samples-test.jsonl, samples-test.problems.jsonl, samples-test.meta.json)."""
    out = Path(out)
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return OutputPaths(out, out.with_name(stem + ".problems.jsonl"), out.with_name(stem + ".meta.json"))


# ---------------------------------------------------------------------------- hidden-state features


def features_dir(samples_path: str | Path) -> Path:
    """samples-test.jsonl -> samples-test.features/: the sampling model's hidden states behind each
    sample (HF engine with features on), one safetensors file per batch of the sampling plan."""
    p = Path(samples_path)
    stem = p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name
    return p.with_name(stem + ".features")


def feature_chunk(samples_path: str | Path, batch_index: int) -> Path:
    return features_dir(samples_path) / f"batch-{batch_index:05d}.safetensors"


def write_feature_chunk(samples_path: str | Path, batch_index: int, keys: list[tuple[str, int]], x) -> Path:
    """One batch's features: `x` (rows, 2, hidden) for the (id, k) `keys`, written atomically."""
    import torch
    from safetensors.torch import save_file

    path = feature_chunk(samples_path, batch_index)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"x": x.to(torch.float16).contiguous()}, str(tmp), metadata={"keys": json.dumps([list(k) for k in keys])})
    os.replace(tmp, path)
    return path


def load_features(samples_path: str | Path) -> dict[tuple[str, int], Any]:
    """{(id, k): float32 array (2, hidden)} from the features folder next to `samples_path`.
    Raises UserError naming the folder when it is missing or a file in it is unreadable."""
    import numpy as np
    from safetensors import safe_open

    folder = features_dir(samples_path)
    files = sorted(folder.glob("batch-*.safetensors")) if folder.is_dir() else []
    if not files:
        raise UserError(f"{folder}: no hidden-state features; sample with the transformers engine and features on "
                        "(recipes/02_sample.py --features true)")
    out: dict[tuple[str, int], Any] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="np") as fh:
                keys = json.loads(fh.metadata()["keys"])
                x = fh.get_tensor("x").astype(np.float32)
        except Exception as e:  # a torn or foreign file
            raise UserError(f"{f}: not a features file ({type(e).__name__}: {e})") from None
        if len(keys) != len(x):
            raise UserError(f"{f}: {len(keys)} keys for {len(x)} rows")
        for (i, k), row in zip(keys, x):
            out[(i, int(k))] = row
    return out


# ---------------------------------------------------------------------------- JSONL


def validate_record(d: Any) -> None:
    """Raise ValueError unless `d` is a valid sample record (see the module docstring)."""
    if not isinstance(d, dict):
        raise ValueError(f"a sample record must be a JSON object, got {type(d).__name__}")
    for key, typ in RECORD_FIELDS.items():
        if key not in d:
            raise ValueError(f"sample record lacks '{key}'")
        value = d[key]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ValueError(f"sample record field '{key}' has type {type(value).__name__}")
    if d["k"] < -1:
        raise ValueError(f"sample record k={d['k']} (must be -1 for greedy or >= 0)")
    if d["tokens"] < 0:
        raise ValueError(f"sample record tokens={d['tokens']} is negative")
    if d["finish"] not in FINISH_REASONS:
        raise ValueError(f"sample record finish={d['finish']!r} (must be eos or length)")
    if d["correct"] and d["answer"] is None:
        raise ValueError("sample record is correct without an answer")
    for key in OPTIONAL_FLOAT_FIELDS:
        value = d.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value > 0):  # a log-probability is <= 0
            raise ValueError(f"sample record field '{key}' must be a finite number <= 0 or absent, got {value!r}")


def scan_jsonl(path: Path, validate: Callable[[Any], None] | None) -> tuple[list[dict], int, str | None]:
    """(records, byte length of the good part, why the last line is bad or None).

    Only the last line may be bad: a write cut short by a kill (no final newline) or
    garbage left by a crash. It is reported, never returned as data. A bad line before
    it is corruption and raises SamplesError naming file and line.
    """
    path = Path(path)
    records: list[dict] = []
    good, tail = 0, None
    if not path.exists():
        return records, good, tail

    def take(lineno: int, line: bytes, last: bool) -> bool:
        nonlocal good, tail
        try:
            if not line.endswith(b"\n"):
                raise ValueError("no final newline: the write was cut short")
            rec = json.loads(line)  # a blank or torn line raises too (JSONDecodeError is a ValueError)
            if validate is not None:
                validate(rec)
        except ValueError as e:
            if last:
                tail = f"line {lineno}: {str(e)[:80]}"
                return False
            raise SamplesError(f"{path}:{lineno}: corrupt line ({str(e)[:120]}); only the last line may be cut short") from None
        records.append(rec)
        good += len(line)
        return True

    opener = gzip.open if path.suffix == ".gz" else open  # a gzipped file reads the same (kept evidence)
    with opener(path, "rb") as f:
        held = None  # one line is held back: whether it is the last one decides how to treat it
        for lineno, line in enumerate(f, 1):
            if held is not None:
                take(*held, last=False)
            held = (lineno, line)
        if held is not None:
            take(*held, last=True)
    return records, good, tail


def append_jsonl(fh, records: Sequence[Mapping[str, Any]]) -> None:
    """Append records to an open binary file as whole lines, then flush and fsync (one batch, one write)."""
    fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode())
    fh.flush()
    os.fsync(fh.fileno())


# ---------------------------------------------------------------------------- samples


def load_samples(path: str | Path) -> dict[str, ProblemSamples]:
    """{problem id: ProblemSamples}. A half-written last line is ignored (never read as data);
    a corrupt line before it or a duplicate (id, k) raises SamplesError."""
    path = Path(path)
    if not path.exists():
        raise SamplesError(f"{path}: no samples file here (run the sampling recipe first)")
    records, _, _ = scan_jsonl(path, validate_record)
    greedy: dict[str, Sample] = {}
    sampled: dict[str, list[Sample]] = {}
    seen: set[tuple[str, int]] = set()
    for rec in records:
        s = Sample.from_dict(rec)
        if s.key in seen:
            raise SamplesError(f"{path}: duplicate sample (id={s.id!r}, k={s.k})")
        seen.add(s.key)
        sampled.setdefault(s.id, [])
        if s.k < 0:
            greedy[s.id] = s
        else:
            sampled[s.id].append(s)
    return {pid: ProblemSamples(greedy.get(pid), tuple(sorted(ss, key=lambda s: s.k))) for pid, ss in sampled.items()}


def append_samples(fh, samples: Sequence[Sample | Mapping[str, Any]]) -> None:
    """The save of the samples file: append one batch to the open (flock'ed) samples file."""
    append_jsonl(fh, [s.to_dict() if isinstance(s, Sample) else s for s in samples])


def read_samples(path: str | Path) -> dict[str, dict[str, Any]]:
    """`load_samples` as plain dicts: {problem id: {"greedy": record or None, "samples": [records by k]}}."""
    return {pid: {"greedy": None if g.greedy is None else g.greedy.to_dict(), "samples": [s.to_dict() for s in g.samples]}
            for pid, g in load_samples(path).items()}


# ---------------------------------------------------------------------------- problems


def load_problems(path: str | Path) -> list:
    """The problems file of a sampling output as data.Problems."""
    path = Path(path)
    if not path.exists():
        raise SamplesError(f"{path}: no problems file here")
    rows, _, _ = scan_jsonl(path, None)
    problems = []
    for lineno, row in enumerate(rows, 1):  # every row before a torn tail is one line
        try:
            problems.append(Problem.from_dict(row))
        except ValueError as e:  # DataError
            raise SamplesError(f"{path}:{lineno}: {e}") from None
    return problems


def sync_problems(path: str | Path, problems: Sequence) -> None:
    """The save of the problems file: append the problems not in it yet; refuse a same-id problem that changed."""
    path = Path(path)
    old: dict[str, dict] = {}
    if path.exists():
        rows, good, _ = scan_jsonl(path, None)
        old = {r.get("id"): r for r in rows}
        with open(path, "r+b") as f:
            f.truncate(good)  # a torn last line from a killed run
    new = []
    for p in problems:
        d = p.to_dict()
        if p.id in old:
            if old[p.id] != json.loads(json.dumps(d)):
                raise SamplesError(f"{path}: problem {p.id!r} differs from the one already sampled here; use another output path")
        else:
            new.append(d)
    if new:
        with open(path, "ab") as f:
            append_jsonl(f, new)


# ---------------------------------------------------------------------------- meta


def load_meta(path: str | Path) -> Meta:
    path = Path(path)
    if not path.exists():
        raise SamplesError(f"{path}: no sampling meta file here")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SamplesError(f"{path}: not valid JSON ({str(e)[:80]})") from None
    return Meta.from_dict(d, path)


def save_meta(path: str | Path, meta: Mapping[str, Any]) -> None:
    atomic_write_json(path, dict(meta))


# ---------------------------------------------------------------------------- the three files at once


@dataclass(frozen=True)
class SampleSet:
    """A sampling output: its problems (file order), their samples and its meta, each file read once."""

    paths: OutputPaths
    problems: tuple
    groups: Mapping[str, ProblemSamples]
    meta: Meta

    def group(self, problem_id: str) -> ProblemSamples:
        return self.groups.get(problem_id, ProblemSamples())

    def all_samples(self) -> list[Sample]:
        return [s for p in self.problems for s in self.group(p.id).samples]

    def metric_rows(self, scores: Mapping[str, ScoreSet] | None = None, primary: str | None = None) -> list[dict[str, Any]]:
        """Per-problem records in mathlite.metrics' input format, in problem-file order.

        Each sample carries its "k"; the `primary` scorer's score (the trained evaluator) is its
        "score", every other scorer's is in "scores" ({name: float | None}).
        """
        scores = scores or {}
        rows = []
        for p in self.problems:
            g = self.group(p.id)
            rows.append({
                "id": p.id, "level": p.level, "subject": p.subject,
                "greedy": None if g.greedy is None else {"answer": g.greedy.answer, "correct": g.greedy.correct,
                                                         "tokens": g.greedy.tokens},
                "samples": [{"k": s.k, "answer": s.answer, "correct": s.correct, "tokens": s.tokens,
                             "score": scores[primary].get(s.id, s.k) if primary in scores else None,
                             "scores": {name: ss.get(s.id, s.k) for name, ss in scores.items() if name != primary}}
                            for s in g.samples],
            })
        return rows


def load(out: str | Path) -> SampleSet:
    """Problems, samples and meta of a sampling output (`output_paths(out)`), each file read once."""
    paths = output_paths(out)
    if not paths.samples.exists():
        raise SamplesError(f"{paths.samples}: no samples file here (run recipes/02_sample.py first)")
    meta = load_meta(paths.meta)
    problems = tuple(load_problems(paths.problems))
    groups = load_samples(paths.samples)
    return SampleSet(paths, problems, groups, meta)


# ---------------------------------------------------------------------------- scores


def save_scores(path: str | Path, scores: ScoreSet) -> None:
    """One scorer's scores as JSON: {"scorer", "fingerprint", "cost", "scores": [[problem id, k, score], ...]}."""
    rows = [[pid, k, v] for (pid, k), v in sorted(scores.scores.items())]
    atomic_write_json(path, {"scorer": scores.scorer, "fingerprint": scores.fingerprint, "cost": dict(scores.cost),
                             "scores": rows})


def load_scores(path: str | Path) -> ScoreSet:
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise SamplesError(f"{path}: no scores file here") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SamplesError(f"{path}: not a readable JSON file ({str(e)[:80]})") from None
    if not isinstance(d, dict) or not isinstance(d.get("scorer"), str) or not isinstance(d.get("scores"), list):
        raise SamplesError(f"{path}: not a scores file (needs 'scorer' and a 'scores' list)")
    out: dict[tuple[str, int], float] = {}
    for i, row in enumerate(d["scores"]):
        if (not isinstance(row, list) or len(row) != 3 or not isinstance(row[0], str) or not isinstance(row[1], int)
                or isinstance(row[1], bool) or isinstance(row[2], bool) or not isinstance(row[2], (int, float))):
            raise SamplesError(f"{path}: scores entry {i} is not [problem id, k, score]: {str(row)[:80]}")
        if (row[0], row[1]) in out:
            raise SamplesError(f"{path}: scores entry {i} repeats (id={row[0]!r}, k={row[1]})")
        out[(row[0], row[1])] = float(row[2])
    cost = d.get("cost") if isinstance(d.get("cost"), dict) else {}
    return ScoreSet(d["scorer"], out, d.get("fingerprint"), cost)


# ---------------------------------------------------------------------------- choices


def validate_choice(d: Any) -> None:
    """Raise ValueError unless `d` is one problem's line of a choices file."""
    if not isinstance(d, dict):
        raise ValueError(f"a choices record must be a JSON object, got {type(d).__name__}")
    if not isinstance(d.get("id"), str):
        raise ValueError("choices record lacks a string 'id'")
    if d.get("greedy_correct") is not None and not isinstance(d["greedy_correct"], bool):
        raise ValueError("choices record field 'greedy_correct' must be true, false or null")
    samples = d.get("samples")
    if not isinstance(samples, list):
        raise ValueError("choices record lacks a 'samples' list")
    ks = set()
    for s in samples:
        if not isinstance(s, dict) or not isinstance(s.get("k"), int) or not isinstance(s.get("correct"), bool):
            raise ValueError(f"choices sample must have an int 'k' and a bool 'correct': {str(s)[:80]}")
        if s.get("answer") is not None and not isinstance(s["answer"], str):
            raise ValueError(f"choices sample k={s['k']}: 'answer' must be a string or null")
        if not isinstance(s.get("tokens", 0), int):
            raise ValueError(f"choices sample k={s['k']}: 'tokens' must be an int")
        sc = s.get("scores", {})
        if not isinstance(sc, dict) or any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))
                                           for v in sc.values()):
            raise ValueError(f"choices sample k={s['k']}: 'scores' must map scorer names to numbers or null")
        ks.add(s["k"])
    if len(ks) != len(samples):
        raise ValueError("choices record repeats a sample k")
    chosen = d.get("chosen", {})
    if not isinstance(chosen, dict) or any(v is not None and v not in ks for v in chosen.values()):
        raise ValueError("choices record 'chosen' must map methods to one of its sample k (or null)")


def save_choices(path: str | Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Write a choices file (whole, atomically): one validated record per problem."""
    for r in records:
        validate_choice(r)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records))


def load_choices(path: str | Path) -> list[dict[str, Any]]:
    """A choices file; `choices-test.jsonl` may also be kept gzipped, as `choices-test.jsonl.gz`."""
    path = Path(path)
    if not path.exists() and path.with_name(path.name + ".gz").exists():
        path = path.with_name(path.name + ".gz")
    if not path.exists():
        raise SamplesError(f"{path}: no choices file here (recipe 04 writes <run>/report/choices-test.jsonl)")
    records, _, torn = scan_jsonl(path, validate_choice)
    if torn is not None:
        raise SamplesError(f"{path}: {torn}")
    if len({r["id"] for r in records}) != len(records):
        raise SamplesError(f"{path}: a problem id appears twice")
    return records


__all__ = [
    "SamplesError", "ModelId", "Sample", "ProblemSamples", "Meta", "ScoreSet", "SampleSet", "OutputPaths",
    "output_paths", "validate_record", "scan_jsonl", "append_jsonl", "load", "load_samples", "append_samples",
    "read_samples", "load_problems", "sync_problems", "load_meta", "save_meta", "load_scores", "save_scores",
    "validate_choice", "load_choices", "save_choices",
]
