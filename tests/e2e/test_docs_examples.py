"""The docs' console examples (README.md and docs/**/*.md) print, against a real gunicorn,
what the pages say they do."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow

sys.path.insert(0, str(ROOT / "scripts"))
import docs_examples  # noqa: E402


def test_console_examples_print_what_the_docs_record(server):
    found = docs_examples.all_examples()
    commands = " ".join(e.command for e in found)
    for kind in ("/predict", "/v2/models/", "/v1/models/", "tritonclient_example.py"):
        assert kind in commands, kind  # every protocol has examples
    assert {e.path for e in found} >= {docs_examples.README, ROOT / "docs" / "api" / "v2.md"}
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_examples.py"),
                          "--url", server], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_the_python_example_in_the_docs_is_the_file_it_runs():
    page = (ROOT / "docs" / "api" / "v2.md").read_text()
    code = (ROOT / "docs" / "examples" / "tritonclient_example.py").read_text()
    body = code.split('"""', 2)[2].strip()
    assert f"```python\n{body}\n```" in page
