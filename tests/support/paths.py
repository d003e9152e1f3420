"""Where the tests find the checkout and its test data."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the checkout (bin/, native/, tests/)
DATA = REPO / "tests" / "data"
