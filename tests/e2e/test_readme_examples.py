"""The README's console examples print, against a real gunicorn, what the README says they do."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow

sys.path.insert(0, str(ROOT / "scripts"))
import readme_examples  # noqa: E402


def test_console_examples_print_what_the_readme_records(server):
    found = readme_examples.examples(readme_examples.README.read_text())
    commands = " ".join(e.command for e in found)
    for kind in ("/predict", "/v2/models/", "/v1/models/", "tritonclient_example.py"):
        assert kind in commands, kind  # every protocol has examples
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_examples.py"),
                          "--url", server], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_the_python_example_in_the_readme_is_the_file_it_runs():
    readme = readme_examples.README.read_text()
    code = (ROOT / "docs" / "examples" / "tritonclient_example.py").read_text()
    body = code.split('"""', 2)[2].strip()
    assert f"```python\n{body}\n```" in readme


def test_the_checker_notices_a_changed_output():
    assert readme_examples._same_line('{"a": 0.5, "request_id": "x"}', '{"a": 0.5000001, '
                                      '"request_id": "x"}')  # fmt: skip
    assert not readme_examples._same_line('{"a": 0.5}', '{"a": 0.6}')
    assert not readme_examples._same_line('{"label": "inner"}', '{"label": "outer"}')
    assert readme_examples._same_line("[b'Ankle boot'] 0.9999982", "[b'Ankle boot'] 0.99999821")
    assert not readme_examples._same_line("[b'Ankle boot'] 0.99", "[b'Sneaker'] 0.99")
    rid = '{"request_id":"%s","x":1}'
    assert readme_examples._same_line(rid % ("a" * 32), rid % ("b" * 32))
