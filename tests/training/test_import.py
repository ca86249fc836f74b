"""``python -m training import``: users' models in, one activation out, clear refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from service.contract import metadata as contract
from service.contract.postprocessing import OutputSpec
from training.cli import main


@keras.saving.register_keras_serializable(package="tests")
class ProbabilityHead(keras.layers.Layer):
    """A softmax written out inside a custom layer: nothing can take it off."""

    def call(self, x):
        e = keras.ops.exp(x - keras.ops.max(x, axis=-1, keepdims=True))
        return e / keras.ops.sum(e, axis=-1, keepdims=True)


@keras.saving.register_keras_serializable(package="tests")
class Unconvertible(keras.layers.Layer):
    """A TensorFlow op tf2onnx has no ONNX conversion for."""

    def call(self, x):
        import tensorflow as tf

        return tf.math.igamma(tf.abs(x) + 1.0, tf.abs(x) + 1.0)


def features_model(head: str) -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    if head == "softmax":
        outputs = keras.layers.Dense(3, activation="softmax")(hidden)
    elif head == "sigmoid":
        outputs = keras.layers.Activation("sigmoid")(keras.layers.Dense(1)(hidden))
    elif head == "custom":
        outputs = ProbabilityHead()(keras.layers.Dense(3)(hidden))
    else:
        outputs = keras.layers.Dense(3)(hidden)
    return keras.Model(inputs, outputs)


def rgb_model() -> keras.Model:
    """Raw 0..255 RGB in, a Rescaling layer inside, a Softmax layer at the end."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((12, 10, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(3)(x)
    return keras.Model(inputs, keras.layers.Softmax()(logits))


@pytest.fixture(scope="module")
def features_x() -> np.ndarray:
    return np.random.default_rng(5).normal(0, 2, (32, 4)).astype(np.float32)


def served_probabilities(version_dir: Path, x: np.ndarray) -> np.ndarray:
    """The service's own path: its predictor and output spec on the imported version."""
    from service.models.predictor import OnnxPredictor

    meta = contract.read(version_dir)
    predictor = OnnxPredictor(version_dir, meta, ["CPUExecutionProvider"])
    predictor.load()
    return OutputSpec.from_dict(meta["output"]).probabilities(predictor.predict(x))


@pytest.mark.parametrize(("head", "suffix"), [("softmax", ".keras"), ("sigmoid", ".h5")])
def test_final_activation_is_removed_and_applied_once(tmp_path, features_x, head, suffix):
    model = features_model(head)
    path = tmp_path / f"m{suffix}"
    model.save(path)
    repo = tmp_path / "repo"
    assert main(["import", str(path), "--name", "mine", "--repository", str(repo)]) == 0
    meta = contract.read(repo / "mine" / "1")
    assert meta["output"]["kind"] == "logits"
    assert meta["source"]["final_activation"].startswith(head)
    expected = model.predict(features_x, verbose=0).astype(np.float64)
    if head == "sigmoid":
        expected = np.concatenate([1 - expected, expected], axis=1)
    np.testing.assert_allclose(
        served_probabilities(repo / "mine" / "1", features_x), expected, atol=1e-5
    )
    assert meta["export"]["parity"]["max_abs_prob_diff"] <= 1e-5
    assert meta["dataset"] is None
    assert meta["metrics"]["test"] is None


def test_probabilities_that_cannot_be_unwrapped_pass_through(tmp_path, features_x):
    model = features_model("custom")
    model.save(tmp_path / "custom.keras")
    repo = tmp_path / "repo"
    assert main(["import", str(tmp_path / "custom.keras"), "--repository", str(repo)]) == 0
    meta = contract.read(repo / "custom" / "1")
    assert meta["output"]["kind"] == "probabilities"
    served = served_probabilities(repo / "custom" / "1", features_x)
    np.testing.assert_allclose(served, model.predict(features_x, verbose=0), atol=1e-6)


def test_rgb_model_with_rescaling_inside(tmp_path):
    model = rgb_model()
    model.save(tmp_path / "rgb.keras")
    repo = tmp_path / "repo"
    args = [
        "import",
        str(tmp_path / "rgb.keras"),
        "--classes",
        "cat,dog,bird",
        "--repository",
        str(repo),
    ]
    assert main(args) == 0
    meta = contract.read(repo / "rgb" / "1")
    pre = meta["preprocessing"]
    assert (pre["channels"], pre["layout"], pre["scale"], pre["background"]) == (
        3,
        "nhwc",
        1,
        "none",
    )
    assert meta["classes"] == ["cat", "dog", "bird"]
    assert meta["source"]["final_activation"].startswith("softmax (layer")


def _scaled_model(front) -> keras.Model:
    """A small image classifier whose input goes through ``front`` (its own preprocessing)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3))
    x = front(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def _normalisation_on_raw_pixels():
    layer = keras.layers.Normalization(axis=-1)
    layer.adapt(np.random.default_rng(0).uniform(0, 255, (64, 16, 16, 3)).astype("float32"))
    return layer


FRONTS = {
    "rescaling": (lambda: keras.layers.Rescaling(1 / 127.5, offset=-1), "rescaling"),
    "normalization": (_normalisation_on_raw_pixels, "normalization"),
    "preprocess_input": (lambda: keras.applications.mobilenet_v2.preprocess_input, "true_divide"),
}


@pytest.mark.parametrize("front", list(FRONTS))
def test_a_model_that_scales_pixels_itself_is_sent_raw_pixels(tmp_path, front, caplog):
    """Rescaling(1/127.5, offset=-1) inside, the default import: the service sends raw
    0..255 pixels (scale 1), and the model sees what it was built for."""
    make, layer = FRONTS[front]
    _scaled_model(make()).save(tmp_path / "m.keras")
    repo = tmp_path / "repo"
    with caplog.at_level("INFO", logger="training.importer"):
        assert main(["import", str(tmp_path / "m.keras"), "--repository", str(repo)]) == 0
    pre = contract.read(repo / "m" / "1")["preprocessing"]
    assert (pre["scale"], pre["offset"]) == (1.0, 0.0)
    assert (pre["interpolation"], pre["antialias"]) == ("bilinear", False)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert f"pixel scale from the model: {layer}" in said  # its name, maybe with _N
    # The contradiction: the same model with an outside 1/255 is refused, naming the layer.
    caplog.clear()
    args = ["import", str(tmp_path / "m.keras"), "--scale", "1/255", "--repository", str(repo)]
    assert main(args) == 1
    refusal = caplog.records[-1].getMessage()
    assert f"layer '{layer}" in refusal
    assert ("drop --scale" if front == "rescaling" else "pass --scale 1") in refusal
    assert sorted(p.name for p in (repo / "m").iterdir()) == ["1"]  # nothing written


def test_a_model_without_its_own_scaling_gets_1_over_255_and_says_so(tmp_path, caplog):
    _scaled_model(lambda x: x).save(tmp_path / "plain.keras")
    repo = tmp_path / "repo"
    with caplog.at_level("INFO", logger="training.importer"):
        assert main(["import", str(tmp_path / "plain.keras"), "--repository", str(repo)]) == 0
    assert contract.read(repo / "plain" / "1")["preprocessing"]["scale"] == pytest.approx(1 / 255)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "pixel scale assumed (the model has no Rescaling or Normalization)" in said
    assert "--scale 1 if the model was trained on raw pixels" in said


def test_normalisation_adapted_on_unit_pixels_takes_1_over_255():
    from training.pixel_scale import decide, measure

    layer = keras.layers.Normalization(axis=-1)
    layer.adapt(np.random.default_rng(0).uniform(0, 1, (64, 16, 16, 3)).astype("float32"))
    measured = measure(_scaled_model(layer), "nhwc")
    assert measured.kinds == ("Normalization",)
    assert decide(measured, None, None, False).scale == pytest.approx(1 / 255)
    low, high = measured.reach(1 / 255, 0.0)
    assert -2.0 < low.min() < -1.5
    assert 1.5 < high.max() < 2.0


def test_keras_applications_preprocessing_layers_are_read():
    from training.pixel_scale import decide, measure

    base = keras.applications.EfficientNetV2B0(
        include_top=False, weights=None, input_shape=(32, 32, 3), include_preprocessing=True
    )
    measured = measure(base, "nhwc")
    assert measured.kinds[:2] == ("Rescaling", "Normalization")
    assert decide(measured, None, None, False).scale == 1.0


def test_onnx_from_elsewhere_loses_its_softmax_node(tmp_path, features_x):
    from training.export import export_onnx

    model = features_model("softmax")
    export_onnx(model, tmp_path / "other.onnx", output_name="prob")  # softmax kept inside
    repo = tmp_path / "repo"
    args = [
        "import",
        str(tmp_path / "other.onnx"),
        "--output",
        "probabilities",
        "--repository",
        str(repo),
    ]
    assert main(args) == 0
    meta = contract.read(repo / "other" / "1")
    assert meta["output"]["kind"] == "logits"
    assert meta["source"]["final_activation"].startswith("Softmax node")
    served = served_probabilities(repo / "other" / "1", features_x)
    np.testing.assert_allclose(served, model.predict(features_x, verbose=0), atol=1e-5)


def test_onnx_declared_logits_that_are_probabilities_is_refused(tmp_path, caplog):
    from training.export import export_onnx

    model = features_model("custom")
    export_onnx(model, tmp_path / "p.onnx", output_name="p")
    repo = tmp_path / "repo"
    args = ["import", str(tmp_path / "p.onnx"), "--output", "logits", "--repository", str(repo)]
    assert main(args) == 1
    assert "they are probabilities, not logits" in caplog.text
    assert not repo.exists() or not any(repo.iterdir())


def _two_inputs(tmp_path: Path) -> Path:
    a, b = keras.Input((2,), name="a"), keras.Input((2,), name="b")
    out = keras.layers.Dense(3)(keras.layers.Concatenate()([a, b]))
    keras.Model([a, b], out).save(tmp_path / "two.keras")
    return tmp_path / "two.keras"


def _sequence_output(tmp_path: Path) -> Path:
    inputs = keras.Input((4,))
    out = keras.layers.Reshape((2, 2))(keras.layers.Dense(4)(inputs))
    keras.Model(inputs, out).save(tmp_path / "seq.keras")
    return tmp_path / "seq.keras"


def _unconvertible(tmp_path: Path) -> Path:
    inputs = keras.Input((4,))
    hidden = Unconvertible(name="my_weird_layer")(keras.layers.Dense(3)(inputs))
    keras.Model(inputs, keras.layers.Dense(3)(hidden)).save(tmp_path / "weird.keras")
    return tmp_path / "weird.keras"


def _softmax_keras(tmp_path: Path) -> Path:
    features_model("softmax").save(tmp_path / "soft.keras")
    return tmp_path / "soft.keras"


def _text_file(tmp_path: Path) -> Path:
    (tmp_path / "notes.txt").write_text("not a model")
    return tmp_path / "notes.txt"


def _fake_keras(tmp_path: Path) -> Path:
    (tmp_path / "broken.keras").write_bytes(b"PK\x03\x04 not really a zip")
    return tmp_path / "broken.keras"


def _onnx_without_output_kind(tmp_path: Path) -> Path:
    from training.export import export_onnx

    export_onnx(features_model("logits"), tmp_path / "x.onnx")
    return tmp_path / "x.onnx"


def _onnx_too_new(tmp_path: Path) -> Path:
    _nchw_onnx(tmp_path / "new.onnx", ir=14)  # onnx 1.23 writes it; onnxruntime 1.31 reads <= 13
    return tmp_path / "new.onnx"


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (_text_file, [], "notes.txt is not a model file: expected .keras, .h5, .onnx"),
        (_fake_keras, [], "Keras cannot load broken.keras"),
        (_two_inputs, [], "the model has 2 inputs; input 'a' is float32 of shape \\[None, 2\\]"),
        (_sequence_output, [], r"output has shape \[None, 2, 2\]; expected \[batch, classes\]"),
        (_softmax_keras, ["--classes", "a,b"], r"--classes names 2 classes; the model's output"),
        (_unconvertible, [], "layer 'my_weird_layer' uses the TensorFlow op 'Igamma'"),
        (_onnx_without_output_kind, [], "say what the ONNX model outputs: --output logits"),
        (_onnx_too_new, ["--output", "probabilities"], "onnxruntime cannot run the model: "),
    ],
)
def test_refusals_say_why_and_write_nothing(tmp_path, caplog, make, extra, message):
    path = make(tmp_path)
    repo = tmp_path / "repo"
    assert main(["import", str(path), "--repository", str(repo), *extra]) == 1
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert errors[0].exc_info is None
    import re

    assert re.search(message, errors[0].getMessage()), errors[0].getMessage()
    assert "\n" not in errors[0].getMessage()
    assert not repo.exists() or list(repo.iterdir()) == []


def _per_feature(keyed: bool) -> keras.Model:
    """keras-io's structured-data shape: one named Input per feature, concatenated."""
    keras.utils.set_random_seed(4)
    age = keras.Input((1,), name="age")
    income = keras.Input((1,), name="income")
    rooms = keras.Input((1,), name="rooms", dtype="int64")
    joined = keras.layers.Concatenate()([age, income, keras.ops.cast(rooms, "float32")])
    hidden = keras.layers.Dense(8, activation="relu")(joined)
    outputs = keras.layers.Dense(3, activation="softmax")(hidden)
    inputs = {"age": age, "income": income, "rooms": rooms} if keyed else [age, income, rooms]
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("keyed", [False, True])
def test_one_input_per_feature_imports_and_serves_by_name(tmp_path, keyed):
    model = _per_feature(keyed)
    model.save(tmp_path / "table.keras")
    repo = tmp_path / "repo"
    assert main(["import", str(tmp_path / "table.keras"), "--repository", str(repo)]) == 0
    meta = contract.read(repo / "table" / "1")
    assert meta["preprocessing"]["feature_names"] == ["age", "income", "rooms"]
    rows = np.array([[30.0, 2.5, 3], [61.0, -1.0, 1], [45.0, 0.3, 7]])
    given = {"age": rows[:, :1], "income": rows[:, 1:2], "rooms": rows[:, 2:].astype(np.int64)}
    expected = model.predict(given if keyed else list(given.values()), verbose=0)
    from service.contract.preprocessing import spec_from_dict

    spec = spec_from_dict(meta["preprocessing"])
    by_name = [dict(zip(("rooms", "age", "income"), (r[2], r[0], r[1]), strict=True)) for r in rows]
    tensor = spec.rows_to_tensor(by_name, "instances")
    np.testing.assert_allclose(
        served_probabilities(repo / "table" / "1", tensor), expected, atol=1e-5
    )
    refused = ["import", str(tmp_path / "table.keras"), "--features", "a,b,c"]
    assert main([*refused, "--repository", str(tmp_path / "other")]) == 1


def _feature_space_model() -> keras.Model:
    """keras-io's structured data with FeatureSpace: normalised and rescaled numbers, a
    string and an integer category, the network after the encoded features."""
    import tensorflow as tf

    keras.utils.set_random_seed(6)
    rng = np.random.default_rng(6)
    data = {
        "age": rng.normal(40, 10, 200).astype("float32"),
        "income": rng.normal(5, 2, 200).astype("float32"),
        "colour": rng.choice(["red", "green", "blue"], 200),
        "rooms": rng.integers(1, 6, 200).astype("int64"),
    }
    space = keras.utils.FeatureSpace(
        features={
            "age": keras.utils.FeatureSpace.float_normalized(),
            "income": keras.utils.FeatureSpace.float_rescaled(scale=0.5, offset=1.0),
            "colour": keras.utils.FeatureSpace.string_categorical(),
            "rooms": keras.utils.FeatureSpace.integer_categorical(),
        },
        output_mode="concat",
    )
    space.adapt(tf.data.Dataset.from_tensor_slices(data).batch(50))
    encoded = space.get_encoded_features()
    hidden = keras.layers.Dense(8, activation="relu")(encoded)
    network = keras.Model(encoded, keras.layers.Dense(3, activation="softmax")(hidden))
    return keras.Model(space.get_inputs(), network(encoded))


def test_a_feature_space_model_is_folded_into_the_contract(tmp_path):
    """Its lookups, normalisation and rescaling go into the contract's columns, only the
    network is exported, and the service's answer to raw rows is Keras' own."""
    import tensorflow as tf

    _feature_space_model().save(tmp_path / "space.keras")
    model = keras.models.load_model(tmp_path / "space.keras")
    repo = tmp_path / "repo"
    assert main(["import", str(tmp_path / "space.keras"), "--repository", str(repo)]) == 0
    meta = contract.read(repo / "space" / "1")
    columns = {c["name"]: c for c in meta["preprocessing"]["columns"]}
    assert [c["kind"] for c in columns.values()] == [
        "numeric",
        "categorical",
        "numeric",
        "categorical",
    ]
    assert sorted(columns["colour"]["vocabulary"]) == ["blue", "green", "red"]
    assert columns["colour"]["unknown_slot"] == "first"
    rows = [
        {"age": 31.5, "income": 4.0, "colour": "red", "rooms": 3},
        {"age": 58.0, "income": 9.5, "colour": "purple", "rooms": 99},  # both never seen
        {"age": "40", "income": -1, "colour": "blue", "rooms": "1"},  # numbers as text
    ]
    given = {
        "age": tf.constant([[31.5], [58.0], [40.0]]),
        "income": tf.constant([[4.0], [9.5], [-1.0]]),
        "colour": tf.constant([["red"], ["purple"], ["blue"]]),
        "rooms": tf.constant([[3], [99], [1]], dtype=tf.int32),
    }
    expected = np.asarray(model(given))
    from service.contract.preprocessing import spec_from_dict

    tensor = spec_from_dict(meta["preprocessing"]).rows_to_tensor(rows, "instances")
    np.testing.assert_allclose(
        served_probabilities(repo / "space" / "1", tensor), expected, atol=1e-5
    )
    refused = ["import", str(tmp_path / "space.keras"), "--features", "a"]
    assert main([*refused, "--repository", str(repo)]) == 1
    # a labelled CSV sample of raw values: the checks and the test metrics run on it
    sample = tmp_path / "sample.csv"
    labels = np.asarray(model(given)).argmax(axis=1)
    lines = ["age,income,colour,rooms,y"] + [
        f"{r['age']},{r['income']},{r['colour']},{r['rooms']},{label}"
        for r, label in zip(rows * 20, list(labels) * 20, strict=True)
    ]
    sample.write_text("\n".join(lines) + "\n")
    with_sample = ["import", str(tmp_path / "space.keras"), "--sample", str(sample)]
    assert main([*with_sample, "--target", "y", "--repository", str(repo)]) == 0
    meta = contract.read(repo / "space" / "2")
    assert meta["metrics"]["test"]["accuracy"] == 1.0  # the model's own answers as labels
    assert meta["export"]["parity"]["n_samples"] == 60


def test_preprocessing_that_cannot_be_folded_is_refused_naming_the_feature(tmp_path, caplog):
    age, size = keras.Input((1,), name="age"), keras.Input((1,), name="size")
    binned = keras.layers.Discretization(bin_boundaries=[0.0, 1.0], output_mode="one_hot")(age)
    joined = keras.layers.Concatenate()(
        [binned, keras.layers.Normalization(mean=0, variance=1)(size)]
    )
    keras.Model({"age": age, "size": size}, keras.layers.Dense(2)(joined)).save(
        tmp_path / "b.keras"
    )
    assert main(["import", str(tmp_path / "b.keras"), "--repository", str(tmp_path / "r")]) == 1
    assert (
        "feature 'age' goes through Discretization; the import folds Normalization" in caplog.text
    )


def test_refusal_from_the_command_line_has_no_traceback(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"\x00" * 10)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "import",
            str(tmp_path / "model.bin"),
            "--repository",
            str(tmp_path / "repo"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "model.bin is not a model file" in done.stderr
    assert not (tmp_path / "repo").exists()


def test_labelled_sample_gives_test_metrics_and_calibration(tmp_path):
    model = features_model("softmax")
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(9)
    x = rng.normal(0, 2, (400, 4))
    y = model.predict(x.astype(np.float32), verbose=0).argmax(axis=1)
    flip = rng.random(400) < 0.3  # noisy labels: the model is over-confident on them
    y[flip] = rng.integers(0, 3, flip.sum())
    np.savez(tmp_path / "sample.npz", x=x, y=y)
    repo = tmp_path / "repo"
    args = [
        "import",
        str(tmp_path / "m.keras"),
        "--sample",
        str(tmp_path / "sample.npz"),
        "--repository",
        str(repo),
    ]
    assert main(args) == 0
    meta = contract.read(repo / "m" / "1")
    assert 195 <= meta["metrics"]["test"]["n_samples"] <= 205  # half of each class tests
    calibration = meta["metrics"]["calibration"]
    assert calibration["validation_nll"]["after"] <= calibration["validation_nll"]["before"]
    if calibration["applied"]:
        assert meta["output"]["temperature"] == calibration["temperature"]
    assert (repo / "m" / "1" / "report" / "reliability.png").is_file()
    assert meta["export"]["parity"]["n_samples"] == 400


def test_savedmodel_folder_loses_its_softmax_node(tmp_path, features_x):
    model = features_model("softmax")
    model.export(str(tmp_path / "saved"), verbose=False)
    repo = tmp_path / "repo"
    assert main(["import", str(tmp_path / "saved"), "--repository", str(repo)]) == 0
    meta = contract.read(repo / "saved" / "1")
    assert meta["source"]["format"] == "savedmodel"
    assert meta["source"]["final_activation"].startswith("Softmax node")
    assert meta["output"]["kind"] == "logits"
    served = served_probabilities(repo / "saved" / "1", features_x)
    np.testing.assert_allclose(served, model.predict(features_x, verbose=0), atol=1e-5)


def _nchw_onnx(path: Path, ir: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A channels-first RGB classifier made with onnx.helper: Flatten, Gemm, Softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    weights = rng.normal(0, 0.05, (3 * 4 * 5, 3)).astype(np.float32)
    bias = rng.normal(0, 0.1, 3).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["pixels"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "w", "b"], ["scores"]),
            helper.make_node("Softmax", ["scores"], ["prob"], axis=-1),
        ],
        "nchw",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 3, 4, 5])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=ir)
    onnx.save(model, str(path))
    return weights, bias


def test_nchw_onnx_image_model_with_mean_and_std(tmp_path):
    from service.contract.images import decode_image
    from service.contract.preprocessing import image_to_pixels, pixels_to_tensor, spec_from_dict
    from tests.helpers import image_bytes

    weights, bias = _nchw_onnx(tmp_path / "nchw.onnx")
    repo = tmp_path / "repo"
    args = [
        "import",
        str(tmp_path / "nchw.onnx"),
        "--output",
        "probabilities",
        "--mean",
        "0.485,0.456,0.406",
        "--std",
        "0.229,0.224,0.225",
        "--repository",
        str(repo),
    ]
    assert main(args) == 0
    meta = contract.read(repo / "nchw" / "1")
    spec = spec_from_dict(meta["preprocessing"])
    assert (spec.layout, spec.channels, spec.height, spec.width) == ("nchw", 3, 4, 5)
    assert meta["input"]["name"] == "pixels"
    picture = np.random.default_rng(6).integers(0, 256, (4, 5, 3)).astype(np.uint8)
    image, full = decode_image(image_bytes(picture), 1000)
    tensor = pixels_to_tensor(image_to_pixels(image, spec, full), spec)
    by_hand = (picture / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(tensor[0], by_hand.transpose(2, 0, 1), rtol=1e-5)
    z = by_hand.transpose(2, 0, 1).reshape(1, -1) @ weights + bias
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(
        served_probabilities(repo / "nchw" / "1", tensor), expected, atol=1e-5
    )


@pytest.mark.parametrize("form", ["keras", "savedmodel"])
def test_constants_captured_by_layers_become_part_of_the_graph(tmp_path, features_x, form):
    """A Normalization layer built from known statistics: tf2onnx leaves its mean and
    variance as graph inputs no client could feed, unless they are folded in."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Normalization(mean=[1.0, 2.0, 3.0, 4.0], variance=[1.0, 4.0, 9.0, 16.0]),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    if form == "keras":
        model.save(tmp_path / "norm.keras")
        path = tmp_path / "norm.keras"
    else:
        model.export(str(tmp_path / "norm"), verbose=False)
        path = tmp_path / "norm"
    repo = tmp_path / "repo"
    assert main(["import", str(path), "--repository", str(repo)]) == 0
    served = served_probabilities(repo / "norm" / "1", features_x)
    np.testing.assert_allclose(served, model.predict(features_x, verbose=0), atol=1e-5)


def _log_softmax_onnx(tmp_path: Path) -> Path:
    """A model ending in LogSoftmax, as many PyTorch classifiers do."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(8).normal(0, 1, (4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["z"]),
            helper.make_node("LogSoftmax", ["z"], ["logp"], axis=-1),
        ],
        "logsoftmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("logp", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, str(tmp_path / "logp.onnx"))
    return tmp_path / "logp.onnx"


def test_log_probabilities_declared_as_probabilities_are_refused(tmp_path, caplog):
    repo = tmp_path / "repo"
    args = [
        "import",
        str(_log_softmax_onnx(tmp_path)),
        "--output",
        "probabilities",
        "--repository",
        str(repo),
    ]
    assert main(args) == 1
    assert "outputs are not probabilities" in caplog.text
    assert not repo.exists() or list(repo.iterdir()) == []


def test_log_probabilities_served_as_logits_give_the_softmax(tmp_path, features_x):
    """log p is a valid logit vector: softmax(log p) = p. The file's own opset is kept."""
    repo = tmp_path / "repo"
    args = [
        "import",
        str(_log_softmax_onnx(tmp_path)),
        "--output",
        "logits",
        "--name",
        "logp",
        "--repository",
        str(repo),
    ]
    assert main(args) == 0
    meta = contract.read(repo / "logp" / "1")
    assert meta["export"]["opset"] == 13
    weights = np.random.default_rng(8).normal(0, 1, (4, 3)).astype(np.float32)
    z = features_x @ weights
    expected = np.exp(z - z.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(
        served_probabilities(repo / "logp" / "1", features_x), expected, atol=1e-5
    )


def test_feature_models_take_mean_and_std_and_refuse_image_flags(tmp_path, caplog):
    _onnx_without_output_kind(tmp_path)
    repo = tmp_path / "repo"
    base = ["import", str(tmp_path / "x.onnx"), "--output", "logits", "--repository", str(repo)]
    assert main([*base, "--mean", "5", "--std", "2"]) == 0
    pre = contract.read(repo / "x" / "1")["preprocessing"]
    assert (pre["mean"], pre["std"]) == ([5.0] * 4, [2.0] * 4)
    assert main([*base, "--background", "dark"]) == 1
    assert "are for image models" in caplog.text


def test_a_single_output_without_activation_is_a_logit_unless_said_otherwise():
    from training.heads import detected_kind

    assert detected_kind(np.array([[0.2], [0.7]])) == "logits"  # in [0, 1] proves nothing
    assert detected_kind(np.array([[0.2, 0.8], [0.5, 0.5]])) == "probabilities"
    assert detected_kind(np.array([[2.0, -1.0], [0.5, 0.5]])) == "logits"


def test_an_input_named_like_v2s_image_input_is_renamed(tmp_path, features_x):
    """V2 lists an encoded-image input called 'image'; the model's tensor must not share it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(9).normal(0, 1, (4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["image", "w"], ["z"]),
            helper.make_node("Softmax", ["z"], ["p"], axis=-1),
        ],
        "named_image",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, str(tmp_path / "img.onnx"))
    repo = tmp_path / "repo"
    args = [
        "import",
        str(tmp_path / "img.onnx"),
        "--output",
        "probabilities",
        "--repository",
        str(repo),
    ]
    assert main(args) == 0
    meta = contract.read(repo / "img" / "1")
    assert meta["input"]["name"] == "input"
    z = features_x @ weights
    expected = np.exp(z - z.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(
        served_probabilities(repo / "img" / "1", features_x), expected, atol=1e-5
    )


def test_a_version_is_re_published_with_a_declared_resize(tmp_path, capsys):
    """``python -m training resize``: the same ONNX file, the resize declared, the next
    version; a model framed to its object (Fashion-MNIST's) has no resize to declare."""
    import shutil

    from tests.helpers import MODELS

    rgb_model().save(tmp_path / "rgb.keras")
    repo = tmp_path / "repo"
    assert main(["import", str(tmp_path / "rgb.keras"), "--repository", str(repo)]) == 0
    capsys.readouterr()
    args = ["resize", "rgb", "--interpolation", "area", "--antialias", "--resize", "crop"]
    assert main([*args, "--repository", str(repo)]) == 0
    assert capsys.readouterr().out.strip().endswith("rgb/2")
    old_meta = contract.read(repo / "rgb" / "1")
    meta = contract.read(repo / "rgb" / "2")
    assert meta["export"]["onnx_sha256"] == old_meta["export"]["onnx_sha256"]
    assert meta["preprocessing"] == {
        **old_meta["preprocessing"],
        "interpolation": "area",
        "antialias": True,
        "resize": "crop",
    }
    assert "v1 re-published with the resize area antialiased" in meta["description"]
    shutil.copytree(MODELS / "fashion-mnist", repo / "fashion-mnist")
    assert main(["resize", "fashion-mnist", "--repository", str(repo)]) == 1
    assert main(["resize", "nothing", "--repository", str(repo)]) == 1
    assert contract.versions(repo, "fashion-mnist") == [1, 2]
