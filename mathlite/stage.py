"""One step of the chain and its output folder: the key it was made with, whether it is done, how it
resumes, how its work is put in place, and its manifest. Every recipe's steps go through `Stage`.

    st = Stage(out, "ssft", key)          # key: everything that decides the result (JSON-able)
    if st.done():                         # finished with this key: skip it (other key: UserError)
        ...
    st.begin(cfg)                         # keep an unfinished attempt with this key (it resumes),
                                          # delete one with another key; manifest complete=False
    work = st.work_dir("adapter")         # write in full here, then
    st.publish(work, "adapter")           # put it in place with a rename
    st.finish(cfg, metrics=...)           # manifest complete=True: the stage is done

The manifest (manifest.json) records the key and its hash beside the config, versions and machine;
a stage is done only once its manifest says complete=True with the same key.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from . import files
from .errors import UserError


def plain(obj: Any) -> Any:
    """`obj` as it comes back from a JSON file (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(obj, default=str))


def key_diff(was: dict, now: dict, limit: int = 300) -> str:
    """"k: old -> new" for every key that differs, as one string."""
    was, now = was or {}, now or {}
    text = "; ".join(f"{k}: {was.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(was) | set(now))
                     if was.get(k) != now.get(k))
    return text[:limit]


class Stage:
    """The output folder `out` of one step named `name`, made from `key`."""

    def __init__(self, out: str | Path, name: str, key: dict | None = None, *, redo_hint: str = "pass --force"):
        self.out = Path(out)
        self.name = name
        self.key = plain(key or {})
        self.redo_hint = redo_hint

    @property
    def hash(self) -> str:
        return files.config_hash(self.key)

    def manifest(self) -> dict | None:
        return files.read_manifest(self.out)

    def done(self) -> dict | None:
        """The manifest when `out` holds this step finished with this key; None when it is not finished;
        UserError when it is finished with another key (never silently mixed with other settings)."""
        m = files.stage_done(self.out)
        if not m:
            return None
        if m.get("key") == self.key:
            return m
        raise UserError(f"{self.out}: finished with other settings ({key_diff(m.get('key'), self.key)}); "
                        f"{self.redo_hint} to redo it, or --out DIR")

    def begin(self, cfg, **extra) -> None:
        """Prepare `out` for a run with this key: an unfinished attempt with the same key is kept (its
        checkpoints and samples resume), anything else in `out` is deleted. The manifest then says
        complete=False with the key, so a rerun knows what the leftovers belong to."""
        m = self.manifest()
        if self.out.exists() and (not m or m.get("key") != self.key or m.get("complete")):
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._write(cfg, complete=False, **extra)

    def work_dir(self, target: str = "") -> Path:
        """An empty folder beside the target (`out` itself, or `out/target`) to write it in full."""
        final = self.out / target if target else self.out
        work = final.with_name(f".{final.name}.tmp")
        shutil.rmtree(work, ignore_errors=True)
        work.parent.mkdir(parents=True, exist_ok=True)
        return work

    def publish(self, work: str | Path, target: str = "") -> Path:
        """Put the folder written at `work` in place (a rename): readers see no folder or a whole one."""
        final = self.out / target if target else self.out
        files.publish_dir(work, final)
        return final

    def finish(self, cfg, *, work: str | Path | None = None, **extra) -> dict:
        """Mark the step done: manifest complete=True with the key (and `extra`: metrics, timings...).
        `work`: the folder that `publish` puts in place as `out` next (the manifest goes in with it)."""
        return self._write(cfg, complete=True, at=work, **extra)

    def _write(self, cfg, at: str | Path | None = None, **extra) -> dict:
        return files.write_manifest(at or self.out, cfg, stage=self.name, key=self.key, key_hash=self.hash, **extra)
