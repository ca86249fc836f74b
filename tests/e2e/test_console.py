"""The model console in a real browser (Playwright driving Debian's Chromium) against a real
gunicorn: upload a PNG, draw a stroke, use the camera, click the plane, type a feature
vector, switch models, use an API key. Each time, what the page shows must equal what the
API returns for the bytes the page sent; its curl and tritonclient snippets must run and
give the same answer; axe-core must find no serious accessibility problem. Screenshots of
every view go to test-artifacts/console/.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from service.keys import digest
from tests.e2e.conftest import call, running_server
from tests.helpers import MODELS, ROOT, multipart
from tests.service.models.test_lifecycle import publish, serving_json

pytestmark = pytest.mark.slow

ARTIFACTS = ROOT / "test-artifacts" / "console"
AXE = ROOT / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
BOOT = ROOT / "docs" / "examples" / "ankle-boot.png"
PALETTE = [
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#F0E442",
    "#0072B2",
    "#D55E00",
    "#CC79A7",
    "#000000",
    "#999999",
    "#882255",
]
KEY = "ksk_console-reader"


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is missing: scripts/test.sh installs Debian's chromium package"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
            ],
        )
        yield launched
        launched.close()


def open_page(
    browser,
    server: str,
    path: str = "/",
    bypass_csp: bool = False,
    context=None,
    expected: tuple[str, ...] = (),
):
    """A tab on the console (in a fresh browser context unless one is given) that records
    page errors, console errors (a CSP refusal, a failed load) other than ``expected``
    ones, and every URL it asks for."""
    context = context or browser.new_context(
        viewport={"width": 1280, "height": 1000},
        bypass_csp=bypass_csp,
        permissions=["camera"],
        base_url=server,
    )
    page = context.new_page()
    page.problems, page.urls = [], []
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.on(
        "console",
        lambda message: (
            message.type == "error"
            and not any(e in message.text for e in expected)
            and page.problems.append(message.text)
        ),
    )
    page.on("request", lambda request: page.urls.append(request.url))
    page.goto(path)
    return page


@pytest.fixture
def page(browser, server):
    page = open_page(browser, server)
    page.wait_for_selector("#models-table:not([hidden])")
    yield page
    assert page.problems == []
    # Nothing but the service itself (and the page's own data:/blob: URLs).
    assert {u.split("/")[2] for u in page.urls if u.startswith("http")} == {server[7:]}
    page.context.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def shown(page: Page) -> dict:
    """What the result panel shows: label, every bar (class, probability, text) and the
    image or vector the model saw."""
    return page.evaluate("""() => ({
        label: document.getElementById("result-label").textContent,
        bars: [...document.querySelectorAll("#bars li")].map(li => [
            li.dataset.class, Number(li.dataset.probability),
            li.querySelector(".value").textContent]),
        image: document.getElementById("seen").hidden ? null
            : document.getElementById("seen-image").src,
        vector: document.getElementById("seen-vector").hidden ? null
            : document.getElementById("seen-vector").textContent,
    })""")


def act_and_capture(page: Page, action, url_part: str = "show_input=true"):
    """Run ``action``, wait for the prediction it sends and for the page to show it;
    the request as the browser sent it."""
    page.evaluate("document.getElementById('result').hidden = true")
    with page.expect_request(lambda r: r.method == "POST" and url_part in r.url) as sent:
        action()
    page.wait_for_selector("#result:not([hidden])")
    return sent.value


def replay(request, headers=None) -> dict:
    """The API's answer to the exact bytes the browser sent (a JSON body)."""
    status, _, body = call(
        "POST", request.url, request.post_data_buffer, request.headers["content-type"], headers
    )
    assert status == 200, body
    return body


def sent_image(page: Page) -> tuple[str, bytes]:
    """The image file the page just posted: Chromium does not show a multipart body's file
    to Playwright, so read the very Blob the page put in its form, which it also offers
    as the snippet's download link."""
    name = page.get_attribute("#snippet-file-link", "download")
    data = page.evaluate("""async () => {
        const blob = await (await fetch(document.getElementById("snippet-file-link").href)).blob();
        return [...new Uint8Array(await blob.arrayBuffer())];
    }""")
    return name, bytes(data)


def replay_image(page: Page, request) -> dict:
    """The API's answer to the image the browser sent, posted as the page posts it."""
    name, data = sent_image(page)
    assert request.headers["content-type"].startswith("multipart/form-data")
    body, ctype = multipart({}, [("file", name, data, "image/png")])
    status, _, answer = call("POST", request.url, body, ctype)
    assert status == 200, answer
    return answer


def assert_shows(page: Page, answer: dict) -> dict:
    """The page shows the API's prediction: same label, every class in the same order with
    the same probability (as numbers, exactly), the same input the model saw."""
    seen = shown(page)
    prediction = answer["predictions"][0]
    assert seen["label"] == prediction["label"]
    assert [(c, p) for c, p, _ in seen["bars"]] == list(prediction["probabilities"].items())
    assert len(seen["bars"]) == len(prediction["probabilities"])
    for _, p, text in seen["bars"]:
        if p >= 1e-4:
            assert text == f"{100 * p:.2f}%"
        else:
            assert text == "<0.01%"
    if isinstance(prediction["input"], str):
        assert seen["image"] == prediction["input"]
        assert page.evaluate("document.getElementById('seen-image').naturalWidth") > 0
    else:
        numbers = [float(v) for v in re.findall(r"-?[\d.]+(?:e-?\d+)?", seen["vector"])]
        assert numbers == pytest.approx(prediction["input"], rel=1e-5)
    return seen


def run_snippets(page: Page, tmp_path: Path, files: dict[str, bytes], env=None):
    """Run the page's curl command and tritonclient script where ``files`` are saved;
    (the curl answer, the script's output)."""
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    env = {**os.environ, **(env or {})}
    curl = page.text_content("#snippet-curl")
    out = subprocess.run(
        ["bash", "-c", curl],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    script = tmp_path / "snippet.py"
    script.write_text(page.text_content("#snippet-triton"))
    printed = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert printed.returncode == 0, printed.stderr
    return json.loads(out.stdout), printed.stdout


def refused(page: Page) -> None:
    """Wait until the model list says the service wants a key. (Predicates are functions:
    an expression string would be eval'd in the page, which its CSP forbids.)"""
    page.wait_for_function(
        "() => document.getElementById('models-status').textContent.includes('401')"
    )


def choose(page: Page, model: str, version: int) -> None:
    page.click(f"button[aria-label='Try it: {model} version {version}']")
    page.wait_for_function(
        "t => document.getElementById('model-title').textContent === t",
        arg=f"{model} version {version}",
    )


def test_upload_a_png_shows_what_the_api_returns(page, server, tmp_path):
    page.wait_for_selector("#image-input:not([hidden])")  # the default model is an image model
    assert page.text_content("#model-title") == "fashion-mnist version 2"
    request = act_and_capture(page, lambda: page.set_input_files("#file-input", str(BOOT)))
    assert request.url == f"{server}/models/fashion-mnist/versions/2/predict?show_input=true"
    # The browser sends the file as it is.
    assert sent_image(page) == ("ankle-boot.png", BOOT.read_bytes())
    answer = replay_image(page, request)
    assert answer["predictions"][0]["label"] == "Ankle boot"
    seen = assert_shows(page, answer)
    # What the model saw is the 28x28 grayscale tensor, drawn as a PNG.
    image = Image.open(io.BytesIO(base64.b64decode(seen["image"].split(",", 1)[1])))
    assert image.size == (28, 28)
    latency = page.text_content("#result-latency")
    assert re.fullmatch(r"\d+\.\d ms", latency)
    assert float(latency[:-3]) > 0
    # The snippets send the same request and get the same answer.
    curl_answer, printed = run_snippets(page, tmp_path, {"ankle-boot.png": BOOT.read_bytes()})
    assert curl_answer["predictions"] == answer["predictions"]
    assert "Ankle boot" in printed
    best = max(float(v) for v in re.findall(r"\d\.\d+(?:e-?\d+)?", printed))
    assert best == pytest.approx(answer["predictions"][0]["confidence"], abs=1e-6)
    # The card: the metrics and confusion matrix are the version's own.
    meta = json.loads((MODELS / "fashion-mnist" / "2" / "metadata.json").read_text())
    test = meta["metrics"]["test"]
    assert f"{100 * test['accuracy']:.2f}% of {test['n_samples']} test samples" in (
        page.text_content("#card-metrics")
    )
    cells = page.eval_on_selector_all(
        "#confusion tbody tr",
        "rows => rows.map(r => [...r.querySelectorAll('td')].map(td => +td.textContent))",
    )
    assert cells == test["confusion_matrix"]
    # Ten classes fit the card at 1280 px: nothing to scroll sideways.
    fits = page.eval_on_selector(
        "#confusion-block", "b => [b.scrollWidth, b.clientWidth, b.firstElementChild.offsetWidth]"
    )
    assert fits[0] <= fits[1], fits
    assert fits[2] <= fits[1], fits
    headers = page.eval_on_selector_all("#confusion thead th", "ths => ths.map(t => t.title)")
    assert headers == [f"predicted {name}" for name in meta["classes"]]
    plots = page.eval_on_selector_all(
        "#plots img", "imgs => imgs.map(i => [i.dataset.file, i.naturalWidth > 0, i.alt])"
    )
    assert {p[0] for p in plots} >= {"reliability.png", "training_curves.png"}
    assert all(loaded and alt for _, loaded, alt in plots)
    shot(page, "image-upload")


def test_a_drawn_stroke_is_classified_as_the_api_classifies_it(page, server):
    page.wait_for_selector("#image-input:not([hidden])")
    page.click("#draw-classify")  # nothing drawn yet: nothing is sent
    assert page.text_content("#error") == "Draw something first: the canvas is empty."
    box = page.locator("#draw-canvas").bounding_box()

    def draw():
        page.mouse.move(box["x"] + 140, box["y"] + 40)
        page.mouse.down()
        for step in range(1, 21):  # a vertical bar: a "1"-like stroke
            page.mouse.move(box["x"] + 140, box["y"] + 40 + 10 * step)
        page.mouse.up()

    request = act_and_capture(page, draw)
    answer = replay_image(page, request)
    seen = assert_shows(page, answer)
    assert sent_image(page)[0] == "drawing.png"
    # The drawing reached the model: its input is not a blank square.
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(seen["image"].split(",")[1]))))
    assert pixels.std() > 10
    # The snippet names the drawing, and the page offers that very file to download.
    assert "file=@drawing.png;type=image/png" in page.text_content("#snippet-curl")
    assert page.get_attribute("#snippet-file-link", "download") == "drawing.png"
    shot(page, "image-drawing")


def test_camera_capture_is_classified_as_the_api_classifies_it(page):
    page.wait_for_selector("#image-input:not([hidden])")
    page.click("#camera-start")
    page.wait_for_selector("#camera-shoot:not([hidden])")
    page.wait_for_function("() => document.getElementById('camera-video').videoWidth > 0")
    request = act_and_capture(page, lambda: page.click("#camera-shoot"))
    assert_shows(page, replay_image(page, request))
    assert sent_image(page)[0] == "camera.png"
    shot(page, "image-camera")
    page.click("#camera-start")  # stops it
    page.wait_for_selector("#camera-video", state="hidden")


def _region_of(pixel: list[int], k: int) -> int:
    """The class whose colour, blended with white at any strength, gives this pixel."""
    white = np.array([255.0, 255.0, 255.0])
    away = white - np.array(pixel[:3], float)
    scores = []
    for colour in PALETTE[:k]:
        c = white - np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], float)
        scores.append(away @ c / (np.linalg.norm(away) * np.linalg.norm(c) + 1e-9))
    return int(np.argmax(scores))


def test_the_plane_shades_regions_and_a_click_gives_a_points_probabilities(page, tmp_path):
    with page.expect_request(lambda r: r.url.endswith("/models/circles/versions/1/predict")) as g:
        choose(page, "circles", 1)
    page.wait_for_selector("#plane[data-regions]")
    assert page.is_hidden("#image-input")
    assert page.is_visible("#feature-form")
    grid = json.loads(g.value.post_data)["instances"]
    assert len(grid) == 44 * 44
    api_regions = [p["index"] for p in replay(g.value)["predictions"]]
    page_regions = [int(i) for i in page.get_attribute("#plane", "data-regions").split(",")]
    assert page_regions == api_regions
    assert 0 < sum(api_regions) < len(api_regions)  # both classes appear
    # The plane spans the training range plus 10%, and each cell is painted in its class.
    meta = json.loads((MODELS / "circles" / "1" / "metadata.json").read_text())
    low, high = meta["dataset"]["feature_range"]["min"], meta["dataset"]["feature_range"]["max"]
    span = [h - lo for lo, h in zip(low, high, strict=True)]
    xs, ys = sorted({p[0] for p in grid}), sorted({p[1] for p in grid})
    assert xs[0] == pytest.approx(low[0] - 0.1 * span[0] + 1.2 * span[0] / 88, abs=1e-4)
    assert ys[-1] == pytest.approx(high[1] + 0.1 * span[1] - 1.2 * span[1] / 88, abs=1e-4)
    cells = [(r, c) for r in (3, 12, 22, 30, 40) for c in (2, 15, 22, 29, 41)]
    pixels = page.evaluate(
        """cells => {
        const ctx = document.getElementById("plane").getContext("2d");
        return cells.map(([r, c]) => [...ctx.getImageData(c * 10 + 5, r * 10 + 5, 1, 1).data]);
    }""",
        cells,
    )
    for (r, c), pixel in zip(cells, pixels, strict=True):
        assert _region_of(pixel, 2) == api_regions[r * 44 + c], (r, c, pixel)
    # A click: its coordinates go to the form and to the API; the page shows the answer.
    plane = page.locator("#plane")
    request = act_and_capture(page, lambda: plane.click(position={"x": 110, "y": 330}))
    sent = json.loads(request.post_data)["instances"][0]
    expected = [
        low[0] - 0.1 * span[0] + 110 / 440 * 1.2 * span[0],
        high[1] + 0.1 * span[1] - 330 / 440 * 1.2 * span[1],
    ]
    assert sent == pytest.approx(expected, abs=2e-3 * max(span))
    assert [float(page.input_value(f"#feature-{i}")) for i in (0, 1)] == sent
    answer = replay(request)
    assert_shows(page, answer)
    shot(page, "plane-circles")
    curl_answer, printed = run_snippets(page, tmp_path, {})
    assert curl_answer["predictions"] == answer["predictions"]
    assert answer["predictions"][0]["label"] in printed


def test_switching_models_changes_the_inputs_and_the_card(page):
    choose(page, "blobs", 1)
    page.wait_for_selector("#plane[data-regions]")
    legend = page.eval_on_selector_all("#plane-legend li", "items => items.map(i => i.textContent)")
    assert legend == ["blob_0", "blob_1", "blob_2", "blob_3"]
    assert "#/models/blobs/versions/1" in page.url
    shot(page, "plane-blobs")
    choose(page, "digits", 1)
    assert page.is_visible("#image-input")
    assert page.is_hidden("#plane-input")
    assert page.is_hidden("#feature-form")
    assert page.text_content("#card-title") == "Model card: digits version 1"
    request = act_and_capture(page, lambda: page.set_input_files("#file-input", str(BOOT)))
    assert "/models/digits/versions/1/predict" in request.url
    answer = replay_image(page, request)
    assert_shows(page, answer)
    assert Image.open(
        io.BytesIO(base64.b64decode(answer["predictions"][0]["input"][22:]))
    ).size == (8, 8)
    shot(page, "image-digits")
    choose(page, "fashion-mnist", 1)
    assert page.is_visible("#image-input")
    assert "fashion-mnist version 1" in page.text_content("#card-title")
    # The row of the chosen version is marked for assistive technology too.
    assert (
        page.get_attribute("tr[data-model='fashion-mnist'][data-version='1']", "aria-current")
        == "true"
    )
    # An image dropped on the drop zone goes to this version.
    data = base64.b64encode(BOOT.read_bytes()).decode()

    def drop():
        page.evaluate(
            """data => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped boot.png", {type: "image/png"}));
            const zone = document.getElementById("drop-zone");
            zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
        }""",
            data,
        )

    request = act_and_capture(page, drop)
    assert "/models/fashion-mnist/versions/1/predict" in request.url
    assert sent_image(page) == ("dropped_boot.png", BOOT.read_bytes())
    assert_shows(page, replay_image(page, request))


def test_keyboard_alone_chooses_a_model_and_classifies_a_point(page):
    page.focus("#api-key")
    for _ in range(30):  # Tab, in order, to the circles row's button
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('aria-label')") == (
            "Try it: circles version 1"
        ):
            break
    else:
        pytest.fail("Tab never reached the circles row's 'Try it' button")
    page.keyboard.press("Enter")
    page.wait_for_selector("#plane[data-regions]")
    assert page.evaluate("document.activeElement.id") == "try-title"  # focus follows the choice
    assert page.text_content("#announce") == "circles version 1 chosen."
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "feature-0"
    page.keyboard.press("Control+A")
    page.keyboard.type("0.05")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "feature-1"
    page.keyboard.press("Control+A")
    page.keyboard.type("-0.1")
    request = act_and_capture(page, lambda: page.keyboard.press("Enter"))
    assert json.loads(request.post_data) == {"instances": [[0.05, -0.1]]}
    answer = replay(request)
    assert answer["predictions"][0]["label"] == "inner"
    assert_shows(page, answer)
    assert page.text_content("#announce").startswith("inner, ")
    # The skip link moves to the console without changing the model or the answer.
    page.focus("a.skip")
    page.keyboard.press("Enter")
    assert page.url.endswith("#main")
    page.wait_for_timeout(300)
    assert page.text_content("#model-title") == "circles version 1"
    assert page.is_visible("#result")


@pytest.mark.parametrize("view", ["image", "plane"])
def test_axe_finds_no_serious_accessibility_problem(browser, server, view):
    assert AXE.is_file(), "axe-core is missing: scripts/bootstrap.sh runs npm ci in tests/browser"
    page = open_page(
        browser, server, "/#/models/circles/versions/1" if view == "plane" else "/", bypass_csp=True
    )  # axe is injected as a script the page's CSP would refuse
    page.wait_for_selector("#card:not([hidden])")
    if view == "plane":
        page.wait_for_selector("#plane[data-regions]")
        request = act_and_capture(page, lambda: page.click("#feature-form button[type=submit]"))
    else:
        request = act_and_capture(page, lambda: page.set_input_files("#file-input", str(BOOT)))
    assert request is not None
    page.wait_for_selector("#plots img")
    page.add_script_tag(path=str(AXE))
    violations = page.evaluate("""async () => (await axe.run(document)).violations.map(v =>
        ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target)}))""")
    # The bar is "no serious violations"; the page has none of any impact.
    assert [v for v in violations if v["impact"] in ("serious", "critical")] == [], violations
    assert violations == []
    assert page.problems == []
    page.context.close()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A server with API keys on, serving circles and a three-feature model."""
    repo = tmp_path_factory.mktemp("repo")
    publish(repo, "circles", 1)
    publish(repo, "circles", 2)
    serving_json(repo, "circles", {"version_policy": {"specific": [1]}})
    publish(repo, "sensors", 1, source="blobs", edit=_three_features)
    keys = repo.parent / "keys.txt"
    keys.write_text(f"console:{digest(KEY)}:read,predict\n")
    with running_server(
        tmp_path_factory.mktemp("server"),
        model_repository=str(repo),
        default_model="circles",
        api_keys_file=str(keys),
    ) as server:
        yield server.url


def _three_features(meta: dict, folder: Path) -> None:
    """Make the copy a linear model on three named features (written with onnx.helper)."""
    from onnx import TensorProto, helper, numpy_helper, save

    weights = np.array(
        [[2.0, -1.0, 0.0, 0.5], [0.0, 1.5, -1.0, 0.0], [-0.5, 0.0, 1.0, 1.0]], np.float32
    )
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "w", "b"], ["logits"])],
        "sensors",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 4])],
        [
            numpy_helper.from_array(weights, "w"),
            numpy_helper.from_array(np.zeros(4, np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    save(model, str(folder / "model.onnx"))
    names = ["temperature", "humidity", "pressure"]
    meta["input"]["shape"] = [None, 3]
    meta["preprocessing"] = {"kind": "features", "n_features": 3, "feature_names": names}
    meta["dataset"] = None
    meta["description"] = "a linear model on three sensor readings"
    meta["export"]["onnx_sha256"] = (
        __import__("hashlib").sha256((folder / "model.onnx").read_bytes()).hexdigest()
    )
    meta["export"]["onnx_bytes"] = (folder / "model.onnx").stat().st_size
    meta["output"].pop("temperature", None)
    meta["metrics"] = {"test": None}  # as an import without labelled data records them


def test_with_keys_on_the_key_lives_in_the_tab_and_a_form_drives_other_models(
    browser, guarded, tmp_path
):
    page = open_page(browser, guarded, expected=("status of 401",))
    refused(page)
    assert "Paste an API key" in page.text_content("#models-status")
    page.fill("#api-key", KEY)
    page.keyboard.press("Enter")
    page.wait_for_selector("#models-table:not([hidden])")
    assert KEY not in page.url
    assert page.input_value("#api-key") == ""
    assert page.evaluate("sessionStorage.getItem('keras-serving.api-key')") == KEY
    assert page.text_content("#key-status") == "A key is in use in this tab."
    # A version the service does not serve is listed, cannot be tried, and says why.
    assert page.text_content("tr[data-model='circles'][data-version='2'] td:nth-of-type(2)") == (
        "unloaded"
    )
    assert page.locator("tr[data-model='circles'][data-version='2'] button").count() == 0
    page.evaluate("location.hash = '#/models/circles/versions/2'")
    page.wait_for_selector("#error:not([hidden])")
    assert "circles version 2 is not served (unloaded" in page.text_content("#error")
    assert page.text_content("#model-title") == "circles version 1"
    # Unrecorded metrics read as such, not as 0%.
    row = "tr[data-model='sensors'][data-version='1'] td"
    assert page.eval_on_selector_all(row, "tds => tds.map(t => t.textContent)")[5:7] == ["—", "—"]
    choose(page, "sensors", 1)
    assert page.text_content("#card-metrics") == "Metricsnone recorded"
    assert page.is_hidden("#confusion-block")
    assert page.is_hidden("#plane-input")
    assert page.is_hidden("#image-input")
    labels = page.eval_on_selector_all(
        "#feature-fields label", "ls => ls.map(l => [l.textContent, l.htmlFor])"
    )
    assert labels == [
        ["temperature", "feature-0"],
        ["humidity", "feature-1"],
        ["pressure", "feature-2"],
    ]
    for i, value in enumerate(("1.5", "-0.25", "2")):
        page.fill(f"#feature-{i}", value)
    request = act_and_capture(page, lambda: page.click("#feature-form button[type=submit]"))
    assert request.headers["x-api-key"] == KEY
    assert json.loads(request.post_data) == {"instances": [[1.5, -0.25, 2]]}
    answer = replay(request, {"X-API-Key": KEY})
    assert_shows(page, answer)
    logits = np.array([1.5, -0.25, 2]) @ np.array(
        [[2.0, -1.0, 0.0, 0.5], [0.0, 1.5, -1.0, 0.0], [-0.5, 0.0, 1.0, 1.0]]
    )
    soft = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert answer["predictions"][0]["confidence"] == pytest.approx(soft.max(), rel=1e-5)
    shot(page, "features-form-with-key")
    # The snippets carry no key, only a reference to one the reader sets.
    curl = page.text_content("#snippet-curl")
    assert KEY not in curl
    assert '"X-API-Key: $SERVING_API_KEY"' in curl
    curl_answer, printed = run_snippets(page, tmp_path, {}, {"SERVING_API_KEY": KEY})
    assert curl_answer["predictions"] == answer["predictions"]
    assert answer["predictions"][0]["label"] in printed
    # Another tab does not have it; forgetting it ends it in this one.
    other = open_page(browser, guarded, context=page.context, expected=("status of 401",))
    refused(other)
    page.click("#forget-key")
    refused(page)
    assert page.evaluate("sessionStorage.getItem('keras-serving.api-key')") is None
    assert page.problems == []
    assert other.problems == []
    page.context.close()


def test_console_files_are_served_with_a_strict_policy_and_nothing_else_is(server):
    for path in ("/", "/console"):
        status, headers, body = call("GET", server + path)
        assert status == 200
        assert headers["Content-Type"].startswith("text/html")
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert '<script type="module" src="/console/assets/console.js">' in body
    status, headers, _ = call("GET", server + "/console/assets/console.js")
    assert (status, headers["Content-Type"]) == (200, "text/javascript; charset=utf-8")
    for bad in ("index.html", "..%2Fconsole.py", ".hidden.js", "nothing.css"):
        status, _, body = call("GET", server + "/console/assets/" + bad)
        assert status == 404
        assert body["error"]["code"] == "not_found"
    assert "no console file" in body["error"]["message"]


def test_the_card_shows_the_shadow_comparison_as_the_api_counts_it(browser, tmp_path):
    """A model whose v2 shadows v1 and disagrees on a known share: the card of v1 shows the
    agreement and the flip table that GET /models/{model} reports; axe finds nothing."""
    from tests.service.models.test_rollouts import POINTS, shifted

    repo = tmp_path / "repo"
    repo.mkdir()
    publish(repo, "circles", 1)
    publish(repo, "circles", 2, edit=shifted)
    serving_json(
        repo,
        "circles",
        {"new_versions": "hold", "labels": {"stable": 1}, "shadow": {"version": 2}},
    )
    with running_server(tmp_path, model_repository=str(repo), default_model="circles") as server:
        body = json.dumps({"instances": POINTS.tolist()}).encode()
        assert call("POST", server.url + "/predict", body, "application/json")[0] == 200
        deadline = time.monotonic() + 20
        while True:
            model = call("GET", server.url + "/models/circles")[2]
            found = model["shadow"]["comparisons"]
            if found and found[0]["comparisons"] == len(POINTS):
                break
            assert time.monotonic() < deadline, model["shadow"]
            time.sleep(0.2)
        (pair,) = found
        page = open_page(browser, server.url, "/#/models/circles/versions/1", bypass_csp=True)
        page.wait_for_selector("#shadow-block:not([hidden])")
        roles = page.eval_on_selector_all(
            "#models-table tbody tr", "rs => rs.map(r => r.querySelectorAll('td')[2].textContent)"
        )
        assert roles == ["serving", "shadow"]
        assert (
            page.text_content("#shadow-summary")
            == "Version 2 shadows version 1 on 100% of the answered requests."
        )
        # The page's own decision-region grid is answered by v1 too, so it may show more
        # comparisons than the API counted before: what it shows must add up, and only grow.
        facts = page.text_content("#shadow-facts")
        shown_n, dropped = map(int, re.search(r"(\d+) compared, (\d+) dropped", facts).groups())
        agreed = int(re.search(r"\((\d+) of \d+ with the same top class\)", facts)[1])
        assert shown_n >= len(POINTS)
        assert dropped == 0
        assert f"{100 * agreed / shown_n:.2f}%" in facts
        rows = page.eval_on_selector_all(
            "#shadow-flips tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.textContent))"
        )
        assert rows == [["inner", "outer", str(shown_n - agreed)]]
        assert shown_n - agreed >= len(POINTS) - pair["agreements"]
        shot(page, "shadow-card")
        page.add_script_tag(path=str(AXE))
        violations = page.evaluate("""async () => (await axe.run(document)).violations.map(v =>
            ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target)}))""")
        assert violations == []
        assert page.problems == []
        page.context.close()
