"""The docs' console examples (README.md and docs/**/*.md) print, against a real gunicorn,
what the pages say they do."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import call, running_server
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
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "docs_examples.py"), "--url", server],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr


def test_the_python_example_in_the_docs_is_the_file_it_runs():
    page = (ROOT / "docs" / "api" / "v2.md").read_text()
    code = (ROOT / "docs" / "examples" / "tritonclient_example.py").read_text()
    body = code.split('"""', 2)[2].strip()
    assert f"```python\n{body}\n```" in page


def test_the_access_log_line_in_the_docs_has_the_fields_the_service_writes(tmp_path):
    """The metrics page shows an access-log line; a real one has the same fields, in order."""
    page = (ROOT / "docs" / "operations" / "metrics.md").read_text()
    shown = json.loads(re.search(r'```json\n(\{"time".*"service\.access".*\})\n```', page)[1])
    with running_server(tmp_path) as server:
        body = json.dumps({"instances": [[0.1, 0.2], [0.3, 0.4]]}).encode()
        assert (
            call("POST", server.url + "/predict?model=circles", body, "application/json")[0] == 200
        )
        deadline = time.monotonic() + 10
        while not (
            lines := [
                li
                for li in server.log_lines()
                if li.get("logger") == "service.access" and li.get("path") == "/predict"
            ]
        ):
            assert time.monotonic() < deadline, "no access-log line for the request"
            time.sleep(0.1)
    real = lines[0]
    assert list(real) == list(shown)
    for key in (
        "logger",
        "level",
        "method",
        "path",
        "endpoint",
        "status",
        "model",
        "version",
        "instances",
        "error",
        "key_id",
        "message",
    ):
        assert real[key] == shown[key], key
