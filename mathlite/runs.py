"""Recipe plumbing: config dataclasses, presets, command-line overrides, run folders,
manifests, atomic writes and one-line errors.

Every recipe declares its constants in one dataclass and calls `parse_config`:

    cfg = parse_config(Config, PRESETS, sys.argv[1:])

`--preset NAME` picks a named bundle of overrides (default: `cpu` without CUDA,
`t4` on a card without bf16, `a100` otherwise); then `--key value` or
`--key=value` overrides single fields, checked against the field's type. An
unknown flag is an error, not a silent no-op.

Stages hand over through a run folder (`--run`, default `runs/<preset>`):

    runs/cpu/ssft/          adapter, tokenizer, config.json, metrics.json, manifest.json
    runs/cpu/samples/       samples-<split>.jsonl + meta
    runs/cpu/evaluator/     evaluator adapter (+ score head)
    runs/cpu/report/        results.{json,md,csv}, *.png
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import os
import platform
import re
import sys
import tempfile
import time
import types
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class UserError(Exception):
    """An error the user can fix (bad flag, missing file, incompatible run). Printed as one line, exit 2."""


# bitsandbytes (imported under peft and transformers) logs at import time, through logging's
# last-resort handler on stderr, that an optional CPU kernel package is missing. It changes nothing
# here, and it would put a stray line before a recipe's one-line error. Its real errors still show.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

# Where a run lives and how it was started, not what it computes: a run folder that was moved
# (another --run / --out) or a rerun with --force still holds the same work.
LOCATION_KEYS = ("run", "out", "preset", "force")


# ---------------------------------------------------------------------------- config


def default_preset() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return "a100" if torch.cuda.is_bf16_supported() else "t4"
    except ImportError:
        pass
    return "cpu"


def _convert(name: str, text: str, typ: Any):
    """Convert a command-line string to the field's declared type, or raise UserError."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):  # Optional[X] / X | None
        if text.lower() in ("none", "null", ""):
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(name, text, inner[0])
    if origin in (tuple, list):
        item = args[0] if args else str
        parts = [p for p in text.split(",") if p.strip()]
        vals = [_convert(name, p.strip(), item) for p in parts]
        return tuple(vals) if origin is tuple else vals
    if typ is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UserError(f"--{name}: expected true/false, got {text!r}")
    if typ in (int, float, str):
        try:
            return typ(text)
        except ValueError:
            raise UserError(f"--{name}: expected {typ.__name__}, got {text!r}") from None
    raise UserError(f"--{name}: cannot parse type {typ}")


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def parse_config(cls, presets: dict[str, dict], argv: list[str] | None = None):
    """Build a config: dataclass defaults <- preset <- command-line overrides."""
    argv = list(sys.argv[1:] if argv is None else argv)
    types_ = _field_types(cls)
    preset = None
    overrides: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--debug",):  # handled by `main`
            i += 1
            continue
        if not arg.startswith("--"):
            raise UserError(f"unexpected argument {arg!r}: use --key value or --key=value")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                if types_.get(key) is bool:
                    value = "true"  # a bare boolean flag: --force
                else:
                    raise UserError(f"--{key}: missing value")
            else:
                value = argv[i + 1]
                i += 1
        i += 1
        if key == "preset":
            preset = value
            continue
        if key not in types_:
            close = difflib.get_close_matches(key, list(types_), n=1)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            raise UserError(f"unknown flag --{key}{hint}; flags: " + ", ".join(f"--{k}" for k in types_))
        overrides[key] = value
    preset = preset or default_preset()
    if preset not in presets:
        raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(presets)}")
    values = dict(presets[preset])
    for k, v in overrides.items():
        values[k] = _convert(k, v, types_[k])
    cfg = cls(**values)
    if hasattr(cfg, "preset"):
        cfg.preset = preset
    if hasattr(cfg, "run") and not cfg.run:
        cfg.run = str(Path("runs") / preset)
    return cfg


def print_config(cfg, title: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title, show_header=False, title_justify="left", box=None, padding=(0, 1))
    for k, v in dataclasses.asdict(cfg).items():
        t.add_row(f"[cyan]{k}[/]", escape(str(v)))  # a value like "runs/[a]" is text, not markup
    Console().print(t)


# ---------------------------------------------------------------------------- files


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file so that a crash leaves either the old or the new content, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def config_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(d: dict, keys: typing.Iterable[str] | None = None) -> str:
    if keys is not None:
        d = {k: d.get(k) for k in keys}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------- manifests


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets", "sympy"):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", "?")
        except Exception:
            out[name] = "not installed"
    return out


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def git_commit() -> str | None:
    try:
        import subprocess

        here = Path(__file__).resolve().parent
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=here).stdout.strip() or None
        # uncommitted changes to tracked files: the commit alone does not say which code ran
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=here).stdout.strip()
        return f"{head}+dirty" if head and dirty else head
    except Exception:
        return None


def write_manifest(stage_dir: str | Path, cfg, **extra) -> dict:
    """manifest.json: how an artifact was made (config, versions, machine, seed, timings, ...)."""
    m = {
        "config": config_dict(cfg),
        "versions": versions(),
        "machine": machine(),
        "git_commit": git_commit(),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **extra,
    }
    atomic_write_json(Path(stage_dir) / "manifest.json", m)
    return m


def read_manifest(stage_dir: str | Path) -> dict | None:
    """The manifest of a stage, finished or not; None when there is none (or it is unreadable)."""
    p = Path(stage_dir) / "manifest.json"
    if not p.exists():
        return None
    try:
        m = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return m if isinstance(m, dict) else None


def stage_done(stage_dir: str | Path) -> dict | None:
    """The manifest of a finished stage, or None. A stage is finished only once its manifest says so."""
    m = read_manifest(stage_dir)
    return m if m and m.get("complete") else None


def config_diff(recorded: dict | None, cfg, ignore: typing.Iterable[str] = LOCATION_KEYS) -> list[str]:
    """How `cfg` differs from a config recorded in a manifest, as "key: old -> new" strings
    (empty when it is the same work). `ignore`: keys that do not change the result."""
    recorded = recorded if isinstance(recorded, dict) else {}
    now = config_dict(cfg)
    keys = sorted((set(recorded) | set(now)) - set(ignore))
    return [f"{k}: {recorded.get(k)!r} -> {now.get(k)!r}" for k in keys if recorded.get(k) != now.get(k)]


def publish_dir(tmp: str | Path, final: str | Path) -> None:
    """Put a folder written in full at `tmp` in place at `final` (replacing an old one) with a
    rename, so that readers see either no folder or a complete one, never a half-written one."""
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        import shutil

        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)  # a crash from here to the next rename leaves no folder: the stage reruns
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


# ---------------------------------------------------------------------------- entry points


@contextmanager
def timer():
    t = {"start": time.time()}
    yield t
    t["seconds"] = time.time() - t["start"]


@contextmanager
def as_user_error(what: str, *types: type[BaseException]):
    """Turn a library's exception of `types` (say the OSError of a hub lookup) into a one-line
    UserError: `what`, then the first line of the library's message in parentheses."""
    try:
        yield
    except types as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"{what} ({first})") from None


def run_main(main, argv: list[str] | None = None) -> None:
    """Run a recipe's main(): user errors become one red line and exit code 2 (`--debug` shows the traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if not debug:
        # the libraries' notes to each other (deprecated internals) are noise a recipe user cannot act on
        import warnings

        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category,
                                    module=r"(transformers|peft|trl|accelerate|datasets|torch|bitsandbytes)(\.|$)")
    from .models import ModelNotFound

    known: tuple[type[BaseException], ...] = (UserError, ModelNotFound)
    try:
        from .data import DataError

        known = known + (DataError,)
    except ImportError:
        pass
    try:
        main(argv)
    except known as e:
        if debug:
            raise
        from rich.console import Console
        from rich.markup import escape

        # one line, and the message printed as it is: a path or list in [brackets] is not rich markup
        message = re.sub(r"\s*\n\s*", " ", str(e)).strip() or type(e).__name__
        Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
