"""Shared test helpers."""

from pathlib import Path

import pytest

# The offline copies of MATH and GSM8K live next to the checkout (see ../shared/data/README.md).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "math" / "train.jsonl").exists():
        pytest.skip(f"offline data not found at {SHARED_DATA}")
    return SHARED_DATA


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The whole chain (01 -> 05) at the smoke preset, run once per test session as a user would:
    `python recipes/run_all.py --preset smoke --run DIR`. Tests read its artifacts."""
    import subprocess
    import sys
    import time

    run = tmp_path_factory.mktemp("chain") / "smoke"
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(REPO / "recipes" / "run_all.py"), "--preset", "smoke", "--run", str(run)],
                          cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run / "chain_stdout.txt").write_text(proc.stdout)
    (run / "chain_seconds.txt").write_text(f"{time.time() - t0:.1f}")
    return run
