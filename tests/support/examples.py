"""Where the example scripts are: examples/ beside tests/, in the tree or in a copy of it."""

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
