"""`Problem`, the one record type of a math problem, and the checks of its fields.

Below both `data` (the loaders) and `synthetic` (the generated problems), which both make Problems.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import DataError

# answers.py is imported inside _extract/_equiv: it loads sympy (about a second), which a recipe's
# flag checks and --help do not need

@dataclass
class Problem:
    """One math problem with a reference solution.

    `answer` is the reference answer, normally what `extract_answer` finds in
    `solution` (the last \\boxed{}); None when there is none. `extra` holds
    optional per-source data that must survive a round trip through JSONL:

    - "prm800k_solutions": list[str], PRM800K GPT-4 solutions graded correct for
      this problem (attached by `attach_prm800k`); used by the "prm800k" and
      "both" training styles;
    - "styles": {"terse": str, "steps": str}, hand-made alternative solutions
      (synthetic problems); "steps" is preferred over the automatic rewrite;
    - "value": the exact answer of a synthetic problem ("7/3").
    """

    id: str
    question: str
    solution: str
    answer: str | None
    level: int | None
    subject: str
    source: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["extra"]:
            del d["extra"]  # keep plain records plain
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Problem":
        """Inverse of to_dict; raises DataError naming the bad field."""
        if not isinstance(d, dict):
            raise DataError(f"expected a JSON object, got {type(d).__name__}")
        for key in ("id", "question", "solution"):
            _need(d, key, str)
        answer = d.get("answer")
        if answer is not None and not isinstance(answer, str):
            raise DataError(f"field 'answer' should be a string or null, got {type(answer).__name__}")
        if "answer" not in d:  # a hand-written file may leave the answer to the solution's box
            answer = _extract(d["solution"])
        extra = d.get("extra") or {}
        if not isinstance(extra, dict):
            raise DataError(f"field 'extra' should be an object, got {type(extra).__name__}")
        return cls(
            id=d["id"],
            question=d["question"],
            solution=d["solution"],
            answer=answer,
            level=_level(d.get("level")),
            subject=str(d.get("subject") or ""),
            source=str(d.get("source") or "custom"),
            extra=dict(extra),
        )


# ---------------------------------------------------------------------------- small helpers


def _extract(text: str) -> str | None:
    from .answers import extract_answer

    return extract_answer(text)


def _equiv(pred: str | None, gold: str | None) -> bool:
    from .answers import is_equiv

    return pred is not None and gold is not None and bool(is_equiv(pred, gold))


def _need(row: dict, key: str, typ: type | tuple[type, ...]):
    """row[key], checked; DataError('missing field ...' / 'field ... should be ...') otherwise."""
    if key not in row:
        raise DataError(f"missing field '{key}'")
    value = row[key]
    if not isinstance(value, typ):
        want = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise DataError(f"field '{key}' should be {want}, got {type(value).__name__} ({str(value)[:40]!r})")
    return value


def _level(value: Any) -> int | None:
    """'Level 3' / 3 -> 3; 'Level ?' (two MATH train problems) / None -> None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise DataError(f"field 'level' should be 1-5 or 'Level N', got {value!r}")
    if isinstance(value, int):
        lv = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(?:Level\s*)?(\d|\?)\s*", value)
        if not m:
            raise DataError(f"field 'level' should look like 'Level 3', got {value!r}")
        if m.group(1) == "?":
            return None
        lv = int(m.group(1))
    else:
        raise DataError(f"field 'level' should be a string or int, got {type(value).__name__}")
    if not 1 <= lv <= 5:
        raise DataError(f"field 'level' should be between 1 and 5, got {lv}")
    return lv
