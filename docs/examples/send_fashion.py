"""Send Fashion-MNIST test images to a running service, as live traffic for the roll-out
walkthrough (docs/operations/rollouts.md); print which versions answered.

    python docs/examples/send_fashion.py 500                      # the first 500 test images
    python docs/examples/send_fashion.py 500 --url http://127.0.0.1:8123

Reads Debian's copy (``apt-get install dataset-fashion-mnist``) with the standard library and
numpy only, and posts the images as raw pixel arrays (0-255), 100 to a request, to /predict.
"""

from __future__ import annotations

import argparse
import gzip
import json
import urllib.request
from collections import Counter

import numpy as np

IMAGES = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"


def images(count: int) -> np.ndarray:
    """The first ``count`` test images, (count, 28, 28) uint8 (the IDX header is 16 bytes)."""
    with gzip.open(IMAGES) as fh:
        data = np.frombuffer(fh.read(), dtype=np.uint8, offset=16)
    return data.reshape(-1, 28, 28)[:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int)
    parser.add_argument("--url", default="http://localhost:8000")
    args = parser.parse_args(argv)
    answered: Counter = Counter()
    batch = images(args.count)
    for start in range(0, len(batch), 100):
        body = json.dumps({"instances": batch[start : start + 100].tolist()}).encode()
        request = urllib.request.Request(
            f"{args.url}/predict", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        answered[answer["model"]["version"]] += len(answer["predictions"])
    by_version = ", ".join(f"v{v}: {n}" for v, n in sorted(answered.items()))
    print(f"sent {len(batch)} images; answered by {by_version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
