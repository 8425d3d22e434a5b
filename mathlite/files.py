"""Files every stage writes: atomic writes, JSON, config hashes and manifests (how an artifact was made).

Library code (sampling, evaluator, export, report) and the recipes share these; nothing here knows
about the command line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import typing
from pathlib import Path
from typing import Any, Callable

from .errors import UserError


# ---------------------------------------------------------------------------- atomic writes


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it back at once
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp_path) on a temporary file beside `path`, then move it over `path` in one
    os.replace: a crash leaves either the old or the new content, never half of it. The file gets the
    mode a plain open() would give it (0666 minus the umask), not mkstemp's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


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


def cpu_model() -> dict[str, Any]:
    """The CPU's name and its bf16 instructions (Linux). A 2048x2048 bf16 matmul on 2 threads ran at ~8x the
    fp32 rate on a Xeon with AMX and at ~4.4x (784 vs 178 GFLOP/s) on an EPYC with AVX512-BF16 only:
    throughput numbers from two machines compare only with this beside them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu": platform.processor() or platform.machine()}
    first = {}  # the first processor's fields
    for line in text.splitlines():
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    flags = first.get("flags", "").split()
    return {"cpu": first.get("model name", "?"), "cpu_bf16": [f for f in ("amx_bf16", "avx512_bf16") if f in flags]}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count(), **cpu_model()}
    try:
        import torch  # lazy: run_all.py and the --help paths write summaries without loading torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def git_commit() -> str | None:
    try:
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


def publish_dir(tmp: str | Path, final: str | Path) -> None:
    """Put a folder written in full at `tmp` in place at `final` (replacing an old one) with a
    rename, so that readers see either no folder or a complete one, never a half-written one."""
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)  # a crash from here to the next rename leaves no folder: the stage reruns
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
