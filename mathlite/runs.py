"""The command-line layer of the recipes: config dataclasses, presets, flags, `--help`, `--config
FILE.yaml`, the resume check of a stage, and `run_main` (one-line errors). Library modules never
import this one; its file helpers live in `mathlite.files` and its errors in `mathlite.errors`.

Every recipe declares its constants in one dataclass at its top, each with a comment, and calls

    cfg = parse_config(Config, PRESETS, argv)

A config is built as: the dataclass defaults <- the preset <- a YAML file <- single flags.

- `--preset NAME` picks a named bundle of overrides (default: `cpu` without CUDA, `t4` on a card
  without bf16, `a100` otherwise);
- `--config FILE.yaml` reads `key: value` lines (field names; `preset:` too);
- `--key value` or `--key=value` overrides one field, converted to the field's declared type;
- `--help` lists every field with its type, default, preset values and its comment (read from the
  recipe's source, so the comments at the top of the recipe are the documentation).

Every value, wherever it came from, is checked against the field's type in one place
(`check_value`): a `typing.Literal[...]` field takes only its choices, `X | None` also takes None.
An unknown flag or YAML key is an error, not a silent no-op.

Stages hand over through a run folder (`--run`, default `runs/<preset>`):

    runs/cpu/ssft/          adapter, tokenizer, config.json, metrics.json, manifest.json
    runs/cpu/samples/       samples-<split>.jsonl + meta
    runs/cpu/evaluator/     evaluator adapter (+ score head)
    runs/cpu/report/        results.{json,md,csv}, *.png
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import io
import json
import logging
import re
import sys
import time
import tokenize
import types
import typing
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import UserError
# re-exported: the recipes reach the file helpers through `runs`, as before they moved
from .files import (  # noqa: F401
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    config_dict,
    config_hash,
    git_commit,
    machine,
    publish_dir,
    read_json,
    read_manifest,
    stage_done,
    versions,
    write_manifest,
)

# Where a run lives and how it was started, not what it computes: a run folder that was moved
# (another --run / --out) or a rerun with --force still holds the same work.
LOCATION_KEYS = ("run", "out", "preset", "force")

PRESET_DEFAULT = "cpu without CUDA, t4 on a GPU without bf16, a100 otherwise"


# ---------------------------------------------------------------------------- types


def default_preset() -> str:
    try:
        import torch  # lazy: only a run without --preset asks the hardware; --help does not

        if torch.cuda.is_available():
            from .models import cuda_bf16  # compute capability >= 8.0 (a T4 says bf16 "supported": emulated)

            return "a100" if cuda_bf16() else "t4"
    except ImportError:
        pass
    return "cpu"


def _is_union(typ: Any) -> bool:
    return typing.get_origin(typ) in (typing.Union, types.UnionType)


def _non_none(typ: Any) -> Any:
    return [a for a in typing.get_args(typ) if a is not type(None)][0]


def type_name(typ: Any) -> str:
    """How --help writes a field's type: int, float, bool, str, {a,b,c}, int,... , X | None."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if _is_union(typ):
        return f"{type_name(_non_none(typ))} | None"
    if origin is typing.Literal:
        return "{" + ",".join(str(a) for a in args) + "}"
    if origin in (tuple, list):
        return f"{type_name(args[0] if args else str)},..."
    return getattr(typ, "__name__", str(typ))


def check_value(name: str, value: Any, typ: Any) -> Any:
    """`value` as the field's type (an int for a float field becomes a float, a list for a tuple field
    a tuple), or UserError naming the field: the one place where a field's type and choices are checked."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if _is_union(typ):
        return None if value is None else check_value(name, value, _non_none(typ))
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"--{name} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            raise UserError(f"--{name}: expected a list of {type_name(args[0] if args else str)}, got {value!r}")
        vals = [check_value(name, v, args[0] if args else str) for v in value]
        return tuple(vals) if origin is tuple else vals
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ in (int, float, str, bool):
        if type(value) is not typ:
            raise UserError(f"--{name}: expected {typ.__name__}, got {value!r}")
        return value
    raise UserError(f"--{name}: cannot check type {typ}")


def _convert(name: str, text: str, typ: Any):
    """A command-line string (or a YAML string) as the field's declared type, or UserError."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if _is_union(typ):  # Optional[X] / X | None
        if text.lower() in ("none", "null", ""):
            return None
        return _convert(name, text, _non_none(typ))
    if origin is typing.Literal:  # the choice whose text this is (choices may be ints)
        for choice in args:
            if str(choice) == text:
                return choice
        return check_value(name, text, typ)  # not a choice: the one error message
    if origin in (tuple, list):
        item = args[0] if args else str
        vals = [_convert(name, p.strip(), item) for p in text.split(",") if p.strip()]
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


def field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


# ---------------------------------------------------------------------------- --help


def field_docs(cls) -> dict[str, tuple[str, str]]:
    """{field: (section, comment)} from the comments on the dataclass's fields in its source file.

    A comment at the end of a field's line is its doc. Comment lines above a field are its doc when
    it has no comment of its own, else they head a section of fields (05's "# stage 1: ...")."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    own: dict[int, str] = {}  # line -> trailing comment
    above: dict[int, str] = {}  # line -> comment line
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row = tok.start[0]
            text = tok.string.lstrip("#").strip()
            if text.startswith("noqa"):
                continue
            (above if lines[row - 1].lstrip().startswith("#") else own)[row] = text
    docs: dict[str, tuple[str, str]] = {}
    pending: list[str] = []
    for row, line in enumerate(lines, 1):
        if row in above:
            pending.append(above[row])
            continue
        m = re.match(r"\s+(\w+)\s*:", line)
        if m and m.group(1) in names:
            if row in own:
                docs[m.group(1)] = (" ".join(pending), own[row])
            else:
                docs[m.group(1)] = ("", " ".join(pending))
            pending = []
        elif not line.strip():
            pending = []
    return docs


def help_text(cls, presets: dict[str, dict], prog: str | None = None) -> str:
    """The --help page: the recipe's docstring, how a config is built, and every field."""
    module = sys.modules.get(cls.__module__)
    prog = prog or (Path(module.__file__).name if module and getattr(module, "__file__", None) else "recipe")
    out = [f"usage: python {prog} [--preset NAME] [--config FILE.yaml] [--KEY VALUE ...] [--debug] [--help]", ""]
    doc = inspect.cleandoc(module.__doc__) if module and module.__doc__ else ""
    if doc:
        out += [doc, ""]
    out += [f"presets: {', '.join(presets)} (default: {PRESET_DEFAULT})",
            "a config is: the defaults below <- --preset <- --config FILE.yaml (key: value lines) <- --KEY VALUE",
            "--debug: show the traceback of an error", "", "options:"]
    docs = field_docs(cls)
    types_ = field_types(cls)
    for f in dataclasses.fields(cls):
        section, comment = docs.get(f.name, ("", ""))
        if section:
            out += ["", f"  # {section}"]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append(f"  --{f.name} {type_name(types_[f.name])}  (default: {default!r})")
        if comment:
            out.append(f"      {comment}")
        set_by = [f"{p}: {v[f.name]!r}" for p, v in presets.items() if f.name in v]
        if set_by:
            out.append(f"      presets: {'; '.join(set_by)}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- parse_config


def _split_flags(argv: list[str], types_: dict[str, Any]) -> list[tuple[str, str]]:
    """[(key, text)] from --key value / --key=value / a bare boolean --key."""
    pairs = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--debug":  # handled by `run_main`
            continue
        if not arg.startswith("--"):
            raise UserError(f"unexpected argument {arg!r}: use --key value or --key=value (--help lists the keys)")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i < len(argv) and not argv[i].startswith("--"):
                value = argv[i]
                i += 1
            elif types_.get(key) is bool:
                value = "true"  # a bare boolean flag: --force
            else:
                raise UserError(f"--{key}: missing value")
        pairs.append((key, value))
    return pairs


def _unknown(key: str, types_: dict[str, Any], where: str = "") -> UserError:
    close = difflib.get_close_matches(key, list(types_), n=1)
    hint = f" (did you mean --{close[0]}?)" if close else ""
    return UserError(f"{where}unknown flag --{key}{hint}; flags: " + ", ".join(f"--{k}" for k in types_))


def load_yaml_config(path: str | Path, types_: dict[str, Any]) -> dict[str, Any]:
    """{field: value} from a YAML file of `key: value` lines (the preset under `preset:`), checked."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the config file ({e})") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise UserError(f"{path}: not valid YAML{line}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected `key: value` lines, got a {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key).replace("-", "_")
        if key == "preset":
            out[key] = str(value)
            continue
        if key not in types_:
            raise _unknown(key, types_, f"{path}: ")
        try:
            if isinstance(value, str) and types_[key] is not str:
                value = _convert(key, value, types_[key])  # 1e-3 is a string to YAML; "1,2" a list
            out[key] = check_value(key, value, types_[key])
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
    return out


def parse_config(cls, presets: dict[str, dict], argv: list[str] | None = None):
    """Build a config: dataclass defaults <- preset <- --config YAML <- command-line overrides.
    `--help` / `-h` prints `help_text` and exits 0 (before anything heavy is imported)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        sys.stdout.write(help_text(cls, presets))
        raise SystemExit(0)
    types_ = field_types(cls)
    flags = _split_flags(argv, {**types_, "preset": str, "config": str})
    file_values: dict[str, Any] = {}
    for key, value in flags:
        if key == "config":
            file_values.update(load_yaml_config(value, types_))
    preset = ([v for k, v in flags if k == "preset"] or [file_values.pop("preset", None)])[-1]
    file_values.pop("preset", None)
    preset = preset or default_preset()
    if preset not in presets:
        raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(presets)}")
    values: dict[str, Any] = dict(presets[preset])
    values.update(file_values)
    for key, value in flags:
        if key in ("preset", "config"):
            continue
        if key not in types_:
            raise _unknown(key, types_)
        values[key] = _convert(key, value, types_[key])
    cfg = cls(**values)
    for f in dataclasses.fields(cls):  # defaults and presets are checked too: a typo there is caught here
        setattr(cfg, f.name, check_value(f.name, getattr(cfg, f.name), types_[f.name]))
    if hasattr(cfg, "preset"):
        cfg.preset = preset
    if hasattr(cfg, "run") and not cfg.run:
        cfg.run = str(Path("runs") / preset)
    return cfg


def print_config(cfg, title: str) -> None:
    t = Table(title=title, show_header=False, title_justify="left", box=None, padding=(0, 1))
    for k, v in dataclasses.asdict(cfg).items():
        t.add_row(f"[cyan]{k}[/]", escape(str(v)))  # a value like "runs/[a]" is text, not markup
    Console().print(t)


# ---------------------------------------------------------------------------- resuming a stage


def config_diff(recorded: dict | None, cfg, ignore: typing.Iterable[str] = LOCATION_KEYS) -> list[str]:
    """How `cfg` differs from a config recorded in a manifest, as "key: old -> new" strings
    (empty when it is the same work). `ignore`: keys that do not change the result."""
    recorded = recorded if isinstance(recorded, dict) else {}
    now = json.loads(json.dumps(config_dict(cfg), default=str))  # as a manifest holds it: tuples are lists
    keys = sorted((set(recorded) | set(now)) - set(ignore))
    return [f"{k}: {recorded.get(k)!r} -> {now.get(k)!r}" for k in keys if recorded.get(k) != now.get(k)]


def check_resume(out: Path, cfg, what: str, tag: str, *, new_place: str = "use another --run",
                 resumable: bool = False) -> bool:
    """The resume rule of a training stage writing to `out`: True when `out` holds this very work,
    finished (the recipe prints so and returns); UserError when it holds a run with another config
    (finished, or with `resumable`, unfinished with checkpoints that would be resumed); False otherwise.
    `--force` skips the check: the recipe starts over."""
    if cfg.force:
        return False
    done = stage_done(out)
    if done:
        diff = config_diff(done.get("config"), cfg)
        if diff:
            raise UserError(f"{out}: holds a finished {what} with another config ({'; '.join(diff)}); "
                            f"{new_place}, or --force to retrain")
        print(f"{tag} already finished: {out} (use --force to retrain)")
        return True
    started = read_manifest(out)
    if resumable and started and (out / "checkpoints").exists():
        diff = config_diff(started.get("config"), cfg)
        if diff:  # its checkpoints would be resumed with this config
            raise UserError(f"{out}: holds an unfinished {what} with another config ({'; '.join(diff)}); "
                            f"rerun it with its own config to resume, {new_place}, or --force to start over")
    return False


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


def quiet_library_warnings(debug: bool = False) -> None:
    """Silence what a recipe user cannot act on. Called by `run_main` before the recipe's heavy
    imports (peft, transformers), not at import time: importing mathlite changes no global state.

    bitsandbytes (imported under peft and transformers) logs at import time, through logging's
    last-resort handler on stderr, that an optional CPU kernel package is missing. It changes nothing
    here, and it would put a stray line before a recipe's one-line error. Its real errors still show.
    Without --debug, the libraries' notes to each other (deprecated internals) are hidden too."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    if not debug:
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category,
                                    module=r"(transformers|peft|trl|accelerate|datasets|torch|bitsandbytes)(\.|$)")


def run_main(main, argv: list[str] | None = None) -> None:
    """Run a recipe's main(): user errors become one red line and exit code 2 (`--debug` shows the traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    quiet_library_warnings(debug)
    try:
        main(argv)
    except UserError as e:  # DataError, ModelNotFound and ResultsError are UserErrors too
        if debug:
            raise
        # one line, and the message printed as it is: a path or list in [brackets] is not rich markup
        message = re.sub(r"\s*\n\s*", " ", str(e)).strip() or type(e).__name__
        Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
