"""Swagger UI at /docs, rendered by a real headless Chromium against the gunicorn server.

Proves the page works with no network beyond loopback: its JavaScript and CSS come from the
service itself, and it fetches /openapi.json and draws every operation.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from service.protocols.routes import ROUTES

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Chromium is missing: scripts/test.sh installs Debian's chromium package"
    return path


def test_swagger_ui_renders_every_operation(server, tmp_path):
    out = subprocess.run(
        [
            _chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path}",
            "--dump-dom",
            server + "/docs",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    dom = out.stdout
    assert '<h2 class="title">Keras classifier serving' in dom
    rendered = set(re.findall(r'opblock-summary-path" data-path="([^"]+)"', dom))
    assert rendered == {route.template for route in ROUTES if route.doc is not None}
    assert {"/predict", "/v2/models/{model}/infer", "/v1/models/{model}:predict"} <= rendered
    assert "Failed to load API definition" not in dom
