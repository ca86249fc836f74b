"""A table as it comes, end to end: train-csv on a dirty CSV (an ID column, a category, a
boolean, empty and NA cells), served by gunicorn, predicted by feature name through the
native API, TF Serving (row, columnar and :classify) and V2 (tritonclient, one input per
feature): the same probabilities everywhere, equal to the contract's own encoding."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tritonclient.http as httpclient

from service.contract import metadata as contract
from service.contract.postprocessing import OutputSpec
from service.contract.preprocessing import spec_from_dict
from service.models.predictor import OnnxPredictor
from tests.e2e.conftest import call, running_server
from tests.e2e.test_console import (  # the console's browser and its helpers
    act_and_capture,
    assert_shows,
    browser,  # noqa: F401 (a fixture)
    choose,
    open_page,
    replay,
    run_snippets,
)
from tests.e2e.test_walkthrough import _run as run_step
from tests.e2e.test_walkthrough import _same as same_lines
from tests.e2e.test_walkthrough import walkthrough
from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "docs" / "examples"))
import produce_csv

ROWS = [
    {"size": 14.2, "colour": "red", "fresh": True, "weight": 3},
    {"size": "6.5", "colour": "blue", "fresh": "no", "weight": None},  # a numeric string
    {"size": None, "colour": "violet", "fresh": "yes", "weight": 5},  # unseen category
    {"colour": None, "fresh": False, "weight": "7"},  # size absent: missing
]


def _train(*args):
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "training", "train-csv", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_every_problem_at_once_before_tensorflow(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b,c,y\n1,x,2,p\n2,,zz,q\n3\n4,y,5,\n5,y,6,p\n")
    done = _train(
        path,
        "--target",
        "y",
        "--numeric",
        "c",
        "--missing",
        "refuse",
        "--repository",
        tmp_path / "repo",
    )
    assert done.returncode == 1
    table = done.stderr[done.stderr.index("4 problems; nothing trained") :]
    assert [line.split()[:2] for line in table.splitlines()[2:6]] == [
        ["3", "b"],
        ["3", "c"],
        ["4", "(row)"],
        ["5", "y"],
    ]
    assert "not a number (--numeric)" in table
    assert "the target (class) is missing" in table
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "tensorflow" not in imported
    assert "keras" not in imported
    assert not (tmp_path / "repo").exists()


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    work = tmp_path_factory.mktemp("tabular")
    path = work / "produce.csv"
    produce_csv.write(path)
    repo = work / "repo"
    done = _train(path, "--target", "label", "--epochs", "40", "--quiet", "--repository", repo)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "column 'id' is unique per row (an ID): dropped" in done.stderr
    with running_server(work, model_repository=str(repo), default_model="produce") as server:
        yield server.url, repo / "produce" / "1"


def _reference(version_dir):
    """The probabilities the contract alone gives ROWS: its encoding, then the ONNX file."""
    meta = contract.read(version_dir)
    predictor = OnnxPredictor(version_dir, meta, ["CPUExecutionProvider"])
    predictor.load()
    tensor = spec_from_dict(meta["preprocessing"]).rows_to_tensor(ROWS, "instances")
    return meta, OutputSpec.from_dict(meta["output"]).probabilities(predictor.predict(tensor))


def _post(url, document):
    status, _, body = call("POST", url, json.dumps(document).encode(), "application/json")
    assert status == 200, body
    return body


def test_by_name_through_every_protocol(tabular):
    url, version_dir = tabular
    meta, expected = _reference(version_dir)
    assert meta["schema_version"] == 2
    assert meta["metrics"]["test"]["accuracy"] >= 0.8
    classes = meta["classes"]

    native = _post(url + "/models/produce/predict", {"instances": ROWS})["predictions"]
    got = {"native": [[p["probabilities"][c] for c in classes] for p in native]}
    one = _post(url + "/models/produce/predict", {"instance": ROWS[0]})["predictions"]
    got["native one"] = [[one[0]["probabilities"][c] for c in classes]]
    got["tfs rows"] = _post(url + "/v1/models/produce:predict", {"instances": ROWS})["predictions"]
    columnar = {k: [r.get(k) for r in ROWS] for k in ("size", "colour", "fresh", "weight")}
    got["tfs columns"] = _post(url + "/v1/models/produce:predict", {"inputs": columnar})["outputs"]
    order = ("size", "colour", "fresh", "weight")
    lists = [[r.get(k) for k in order] for r in ROWS]
    got["tfs lists"] = _post(url + "/v1/models/produce:predict", {"instances": lists})[
        "predictions"
    ]
    wrapped = {k: [[v] for v in values] for k, values in columnar.items()}
    got["tfs columns, tf.Example lists"] = _post(
        url + "/v1/models/produce:predict", {"inputs": wrapped}
    )["outputs"]
    examples = [{k: [v] for k, v in r.items() if v is not None} for r in ROWS]
    classified = _post(url + "/v1/models/produce:classify", {"examples": examples})["result"]
    got["tfs classify"] = [[dict(r)[c] for c in classes] for r in classified]

    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    inputs = client.get_model_metadata("produce")["inputs"]
    assert inputs == [
        {"name": "size", "datatype": "FP64", "shape": [-1]},
        {"name": "colour", "datatype": "BYTES", "shape": [-1]},
        {"name": "fresh", "datatype": "BOOL", "shape": [-1]},
        {"name": "weight", "datatype": "FP64", "shape": [-1]},
    ]
    size = httpclient.InferInput("size", [4], "FP32")
    size.set_data_from_numpy(np.array([14.2, 6.5, np.nan, np.nan], np.float32))
    colour = httpclient.InferInput("colour", [4], "BYTES")
    colour.set_data_from_numpy(np.array([b"red", b"blue", b"violet", b""], dtype=object))
    fresh = httpclient.InferInput("fresh", [4], "BOOL")
    fresh.set_data_from_numpy(np.array([True, False, True, False]))
    weight = httpclient.InferInput("weight", [4], "FP32")
    weight.set_data_from_numpy(np.array([3, np.nan, 5, 7], np.float32))
    result = client.infer("produce", [size, colour, fresh, weight])
    got["v2 tritonclient"] = result.as_numpy("probabilities").tolist()

    for name, probabilities in got.items():
        n = len(probabilities)
        np.testing.assert_allclose(probabilities, expected[:n], atol=1e-6, err_msg=name)


def test_bad_values_are_4xx_naming_the_feature(tabular):
    url, _ = tabular
    for document, message in [
        ({"instances": [{"size": "big"}]}, "instances[0]: feature 'size' must be a number"),
        ({"instance": {"height": 1}}, "instance: unknown feature 'height'"),
        ({"instances": [[1, 2]]}, "instances[0] has 2 values; the model takes 4"),
        ({"instance": {"fresh": "maybe"}}, "feature 'fresh' must be true or false"),
    ]:
        status, _, body = call(
            "POST",
            url + "/models/produce/predict",
            json.dumps(document).encode(),
            "application/json",
        )
        assert status in (400, 422), body
        assert message in body["error"]["message"], body
    status, _, body = call(
        "POST",
        url + "/v2/models/produce/infer",
        json.dumps(
            {
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [1, 10], "data": [0.0] * 10}
                ]
            }
        ).encode(),
        "application/json",
    )
    assert status == 400, body
    assert "send them by name" in body["error"], body
    for given, message in [
        (
            {"name": "colour", "datatype": "BOOL", "shape": [1], "data": [True]},
            "input 'colour' is a categorical feature: send BYTES, not BOOL",
        ),
        (
            {"name": "fresh", "datatype": "FP32", "shape": [1], "data": [1.0]},
            "input 'fresh' is a boolean feature: send BOOL, not FP32",
        ),
        (
            {"name": "size", "datatype": "BYTES", "shape": [1], "data": ["12"]},
            "input 'size' is a numeric feature: send FP64, not BYTES",
        ),
    ]:
        status, _, body = call(
            "POST",
            url + "/v2/models/produce/infer",
            json.dumps({"inputs": [given]}).encode(),
            "application/json",
        )
        assert (status, body["error"]) == (400, message)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "fresh",
                    "datatype": "BOOL",
                    "shape": [2],
                    "parameters": {"binary_data_size": 2},
                }
            ]
        }
    ).encode()
    status, _, body = call(
        "POST",
        url + "/v2/models/produce/infer",
        header + b"\x01\x02",
        "application/octet-stream",
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert (status, body["error"]) == (400, "input 'fresh': BOOL elements must be the bytes 0 or 1")
    status, _, body = call(
        "POST",
        url + "/models/produce/predict",
        json.dumps({"instances": [{"size": 3}, {}]}).encode(),
        "application/json",
    )
    assert status == 422, body
    assert "instances[1] gives none of the model's features" in body["error"]["message"]


def test_the_console_form_has_the_tables_features(browser, tabular, tmp_path):  # noqa: F811
    """Numbers, yes/no and the training vocabulary as choices, each with "(missing)": what
    the form sends by name is what the API answers, and its tritonclient snippet (one input
    per feature) prints the same label."""
    url, _ = tabular
    page = open_page(browser, url)
    page.wait_for_selector("#models-table:not([hidden])")
    choose(page, "produce", 1)
    assert page.is_visible("#feature-form")
    assert page.is_hidden("#plane-input")
    options = page.eval_on_selector_all("#feature-1 option", "os => os.map(o => o.value)")
    assert sorted(options) == sorted(["red", "green", "blue", "(missing)"])
    assert page.eval_on_selector_all("#feature-2 option", "os => os.map(o => o.value)") == [
        "true",
        "false",
        "(missing)",
    ]
    page.fill("#feature-0", "")  # an empty number: missing
    page.select_option("#feature-1", "red")
    page.select_option("#feature-2", "(missing)")
    page.fill("#feature-3", "4")
    request = act_and_capture(page, lambda: page.click("#feature-form button[type=submit]"))
    sent = json.loads(request.post_data)["instances"]
    assert sent == [{"size": None, "colour": "red", "fresh": None, "weight": 4}]
    answer = replay(request)
    assert_shows(page, answer)
    curl_answer, printed = run_snippets(page, tmp_path, {})
    assert curl_answer["predictions"] == answer["predictions"]
    assert answer["predictions"][0]["label"] in printed
    assert page.problems == []
    page.context.close()


def test_the_tabular_walkthrough_prints_what_the_page_says(tmp_path):
    steps = walkthrough("tabular-walkthrough")
    assert [c.split()[0] for c, _ in steps] == [
        "python",
        "python",
        "SERVING_MODEL_REPOSITORY=/tmp/tables",
        "curl",
    ]

    def local(text: str) -> str:
        return text.replace("/tmp/produce.csv", str(tmp_path / "produce.csv")).replace(
            "/tmp/tables", str(tmp_path / "tables")
        )

    (write, write_out), (train, train_out), (serve, _), (curl, curl_out) = steps
    for command, recorded in ((write, write_out), (train, train_out)):
        got = run_step(local(command))
        assert same_lines([local(line) for line in recorded], got), (recorded, got)
    assert "SERVING_DEFAULT_MODEL=produce" in serve
    with running_server(
        tmp_path, model_repository=str(tmp_path / "tables"), default_model="produce"
    ) as server:
        got = run_step(curl.replace("localhost:8000", server.url.removeprefix("http://")))
    assert same_lines(curl_out, got), (curl_out, got)
