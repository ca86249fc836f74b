"""The "Serve your own Keras model" walkthrough (docs/own-models.md), run as written: its
commands print what the page records, and the service's probabilities are Keras' own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import running_server
from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import docs_examples

pytestmark = pytest.mark.slow

PAGE = ROOT / "docs" / "own-models.md"


def walkthrough(name: str = "walkthrough", page: Path = PAGE) -> list[tuple[str, list[str]]]:
    """(command, recorded output lines) in order, from between a page's markers
    (``<!-- walkthrough:start -->``, or another ``name``'s)."""
    text = page.read_text()
    block = text.split(f"<!-- {name}:start -->")[1].split(f"<!-- {name}:end -->")[0]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif line.strip() and not line.startswith("```") and steps:
            steps[-1][1].append(line)
    return steps


def _run(command: str) -> list[str]:
    """Run as the page's reader does: in the repository, with the virtualenv's python."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line.strip()]


def _same(recorded: list[str], got: list[str]) -> bool:
    return len(recorded) == len(got) and all(map(docs_examples.same_line, recorded, got))


def test_the_walkthrough_prints_what_the_page_says(tmp_path):
    steps = walkthrough()
    firsts = [c.split()[0] for c, _ in steps]
    assert firsts == ["python", "python", "SERVING_MODEL_REPOSITORY=/tmp/own-models", "curl"]

    def local(text: str) -> str:
        return text.replace("/tmp/iris.keras", str(tmp_path / "iris.keras")).replace(
            "/tmp/own-models", str(tmp_path / "own-models")
        )

    def recorded(lines: list[str]) -> list[str]:
        return [local(line) for line in lines]

    (fit, fit_out), (imp, imp_out), (serve, _), (curl, curl_out) = steps
    got = _run(local(fit))
    assert _same(recorded(fit_out), got), (fit_out, got)
    keras_probs = dict(re.findall(r"(\w+) ([0-9.]+)", got[0].split("Keras: ")[1]))

    got = _run(local(imp))
    assert _same(recorded(imp_out), got), (imp_out, got)

    assert "SERVING_DEFAULT_MODEL=iris" in serve  # started here as the test suite starts it
    with running_server(
        tmp_path, model_repository=str(tmp_path / "own-models"), default_model="iris"
    ) as server:
        host = server.url.removeprefix("http://")
        got = _run(curl.replace("localhost:8000", host))
    assert _same(curl_out, got), (curl_out, got)
    served = json.loads(got[0])["predictions"][0]["probabilities"]
    for name, value in keras_probs.items():
        assert served[name] == pytest.approx(float(value), abs=1e-5)
