"""training.export: the ONNX file's interface, and a parity check that catches tampering."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from training import architectures, export
from training.export import ExportError


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = architectures.build_mlp(3, 4, hidden=(8,))
    path = export.export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx")
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    return model, path, x


def test_onnx_interface(exported):
    _, path, _ = exported
    proto = onnx.load(str(path))
    (inp,) = proto.graph.input
    (out,) = proto.graph.output
    assert inp.name == "input"
    dims = inp.type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value")  # dynamic batch
    assert dims[1].dim_value == 3
    assert out.name == "logits"
    opsets = {o.domain: o.version for o in proto.opset_import}
    assert opsets[""] >= 17


def test_parity_passes_for_a_faithful_export(exported):
    model, path, x = exported
    parity, onnx_logits = export.check_parity(export.keras_logits(model, x), path, x)
    assert parity.ok
    assert parity.n_samples == 64
    assert parity.max_abs_diff <= 1e-5
    assert parity.argmax_mismatches == 0
    np.testing.assert_allclose(onnx_logits, export.keras_logits(model, x), atol=1e-5)


def test_onnx_runs_any_batch_size(exported):
    _, path, x = exported
    assert export.onnx_logits(path, x[:1]).shape == (1, 4)
    assert export.onnx_logits(path, x, batch_size=7).shape == (64, 4)


def test_parity_rejects_a_tampered_model(exported, tmp_path):
    model, path, x = exported
    proto = onnx.load(str(path))
    weights = next(t for t in proto.graph.initializer if numpy_helper.to_array(t).shape == (8, 4))
    changed = numpy_helper.to_array(weights).copy()
    changed[:, 0] += 0.01  # a small nudge to one class's weights
    weights.CopyFrom(numpy_helper.from_array(changed, weights.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(proto, str(tampered))
    with pytest.raises(ExportError, match=r"does not reproduce Keras on 64 samples: max \|diff\|"):
        export.check_parity(export.keras_logits(model, x), tampered, x)


def test_compare_counts_argmax_flips_even_within_tolerance():
    ref = np.array([[0.0, 1e-6], [1.0, 0.0]], dtype=np.float32)
    cand = np.array([[1e-6, 0.0], [1.0, 0.0]], dtype=np.float32)
    parity = export.compare(ref, cand, tolerance=1e-4)
    assert parity.max_abs_diff < 1e-4
    assert parity.argmax_mismatches == 1
    assert not parity.ok


def test_compare_binary_logit_sign_flip():
    parity = export.compare(np.array([[0.1], [-2.0]]), np.array([[-0.1], [-2.0]]), 1e-4)
    assert parity.argmax_mismatches == 1
    assert parity.max_abs_diff == pytest.approx(0.2)


def test_compare_shape_mismatch():
    with pytest.raises(ExportError, match="shapes differ"):
        export.compare(np.zeros((2, 3)), np.zeros((2, 4)), 1e-4)
