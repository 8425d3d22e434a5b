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
