"""Swagger UI at /docs, rendered by a real headless Chromium against the gunicorn server.

Proves the page works with no network beyond loopback: its JavaScript and CSS come from the
service itself, and it fetches /openapi.json and draws every operation; and that it does so
under its Content-Security-Policy, which keeps it out of other sites' frames.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from playwright.sync_api import sync_playwright

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


def test_swagger_ui_works_under_its_content_security_policy(server):
    """The policy /docs sends (frame-ancestors 'none', scripts from the service only) lets
    the page draw and call the API without one refusal, and keeps it out of a frame."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on(
                "console",
                lambda message: message.type == "error" and problems.append(message.text),
            )
            hosts: set[str] = set()
            page.on(
                "request", lambda r: r.url.startswith("http") and hosts.add(r.url.split("/")[2])
            )
            response = page.goto(server + "/docs")
            policy = response.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy
            assert "script-src 'self';" in policy
            page.wait_for_selector(".opblock-summary-path[data-path='/health/live']")
            operation = "#operations-native-get_health_live"
            page.click(f"{operation} .opblock-summary")  # "Try it out" is on: a fetch to 'self'
            page.click(f"{operation} .execute")
            page.wait_for_selector(f"{operation} .live-responses-table .microlight")
            shown = page.inner_text(f"{operation} .live-responses-table")
            assert '"status": "alive"' in shown
            predict = "#operations-native-post_predict"
            page.click(f"{predict} .opblock-summary")  # a request body's examples and form
            body = f"{predict} .opblock-section-request-body"
            page.select_option(f"{body} select", "multipart/form-data")
            page.wait_for_selector(f"{body} tr[data-property-name=top_k] input")  # the form
            page.click("#model-ApiError button")  # a schema, drawn open
            page.wait_for_selector("#model-ApiError .property-row")
            assert problems == []
            assert hosts == {server.split("/")[2]}  # nothing but the service itself

            # A page frames /docs and, as a control, /health/live (no policy): the first is
            # refused (frame-ancestors 'none' holds for the service's own origin too), the
            # second drawn.
            frames = f'<iframe src="{server}/docs"></iframe><iframe src="{server}/health/live">'
            page.route(server + "/framing", lambda route: route.fulfill(body=frames))
            page.goto(server + "/framing")
            docs, control = page.frames[1:]
            for frame in (docs, control):
                frame.wait_for_load_state()
            assert '"alive"' in control.content()
            assert docs.query_selector("#swagger-ui") is None
            assert docs.url.startswith("chrome-error:")
            (refusal,) = problems
            assert "violates the following Content Security Policy directive" in refusal
            assert "frame-ancestors 'none'" in refusal
        finally:
            browser.close()
