"""A CSV shaped like real tabular data, for the tabular walkthrough (docs/own-models.md).

An ID column, a number with empty cells, a category with NA cells, a yes/no column, whole
numbers with some left empty, and the class label: produce graded "good" or "bad".

    python docs/examples/produce_csv.py /tmp/produce.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np


def write(path: Path, n: int = 400, seed: int = 3) -> int:
    """Write the table; return how many cells were left empty or NA."""
    rng = np.random.default_rng(seed)
    missing = 0
    with Path(path).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "size", "colour", "fresh", "weight", "label"])
        for i in range(n):
            size = rng.normal(10, 3)
            colour = ["red", "green", "blue"][rng.integers(3)]
            fresh = bool(rng.integers(2))
            score = size - 10 + (2.5 if colour == "red" else 0) + (1.5 if fresh else -1.5)
            cells = [
                f"item-{i:04d}",
                "" if i % 17 == 3 else f"{size:.3f}",
                "NA" if i % 19 == 5 else colour,
                "yes" if fresh else "no",
                "" if i % 23 == 7 else str(rng.integers(1, 9)),
                "good" if score > 0 else "bad",
            ]
            missing += sum(cell in ("", "NA") for cell in cells)
            writer.writerow(cells)
    return missing


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "produce.csv")
    count = write(target)
    print(f"wrote {target}: 400 rows; {count} empty or NA cells")
