"""Shared test helpers: where the repository and the offline data are, loading a recipe or bench
script as a module, and the smoke chain run once per session."""

import functools
import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The offline copies of MATH and GSM8K live next to the checkout (see ../shared/data/README.md).
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
RECIPES = REPO / "recipes"


def offline_model(**load_kwargs):
    """(model, tokenizer) of the offline 135M model for a module-scoped fixture, on one intra-op thread
    while the module runs: on a box whose 2 cores are shared with other jobs, OpenMP's barriers made 2
    threads ~20x slower than 1 (measured); alone it costs ~1.5x. A child process of a test uses 1 thread
    too, so both compute the same bits. Skips when the offline model is not installed."""
    import torch

    from mathlite import models

    try:
        tok = models.load_tokenizer(models.OFFLINE_MODEL)
        model = models.load_model(models.OFFLINE_MODEL, **load_kwargs)
    except models.ModelNotFound as e:
        pytest.skip(str(e))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield model, tok
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def load_script(relpath: str):
    """A script of the repository (`recipes/01_ssft.py`, `bench/gpu_bench.py`) as a module, without
    running its main (scripts guard it with __name__). Recipe file names start with a digit, so
    `import` cannot name them. Loaded once per session; the module is registered in sys.modules
    because @dataclass looks its module up there while the file executes."""
    path = REPO / relpath
    name = "_script_" + re.sub(r"\W", "_", str(Path(relpath).with_suffix("")))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_recipe(stem: str):
    """recipes/<stem>.py as a module: load_recipe("01_ssft")."""
    return load_script(f"recipes/{stem}.py")


def recipe_config(stem: str, *args) -> dict:
    """The config dict recipes/<stem>.py builds from these flags at the smoke preset (what its
    manifest records)."""
    from mathlite import runs

    mod = load_recipe(stem)
    return runs.config_dict(runs.parse_config(mod.Config, mod.PRESETS, ["--preset", "smoke", *map(str, args)]))


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "math" / "train.jsonl").exists():
        pytest.skip(f"offline data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The whole chain (01 -> 05) at the smoke preset, run once per test session as a user would:
    `python recipes/run_all.py --preset smoke --run DIR`. Tests read its artifacts."""
    run = tmp_path_factory.mktemp("chain") / "smoke"
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(RECIPES / "run_all.py"), "--preset", "smoke", "--run", str(run)],
                          cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run / "chain_stdout.txt").write_text(proc.stdout)
    (run / "chain_seconds.txt").write_text(f"{time.time() - t0:.1f}")
    return run
