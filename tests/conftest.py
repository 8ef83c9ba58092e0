import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REAL_MARKET = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "realreid" / "market1501"


@pytest.fixture(scope="session")
def real_market_root():
    """The real Market-1501 subset shipped beside the repo; tests using it skip when absent."""
    root = pathlib.Path(os.environ.get("TFREID_REAL_MARKET", REAL_MARKET))
    if not (root / "bounding_box_train").is_dir():
        pytest.skip(f"real Market-1501 subset not found at {root}")
    return root
