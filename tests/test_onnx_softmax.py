"""The ONNX Softmax clamp (export/onnx_softmax.py): outputs as before, masked scores included, on any axis."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from kerasline.export.onnx_softmax import clamp_softmax_inputs


def softmax_model(axis: int) -> onnx.ModelProto:
    """x [2, 3, 5] → Softmax(axis) → y, as tf2onnx writes it at opset 17."""
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], name="attention/softmax", axis=axis)],
        "softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 5])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def reference(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


@pytest.mark.parametrize("axis", [-1, 1])
def test_clamped_softmax_gives_the_same_weights_with_keras_masked_scores(axis):
    x = np.random.default_rng(0).normal(scale=4, size=(2, 3, 5)).astype(np.float32)
    x[0, :, 3:] = -1e9  # Keras 3.15's masking: masked scores set to -1e9
    x[1, 2, :] = -1e9  # a fully masked row: the Softmax node gives uniform weights (Keras zeroes them after)
    model = clamp_softmax_inputs(softmax_model(axis))
    onnx.checker.check_model(model, full_check=True)
    softmax = next(node for node in model.graph.node if node.op_type == "Softmax")
    assert softmax.input[0].endswith("/clamped")  # the Softmax reads the clamped scores
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(["y"], {"x": x})
    np.testing.assert_allclose(y, reference(x, axis), rtol=1e-6, atol=1e-30)
    if axis == -1:
        assert y[0, :, 3:].max() < 1e-30  # masked weights stay (all but) 0
        np.testing.assert_allclose(y[1, 2], 0.2, rtol=1e-6)


def test_a_graph_without_softmax_is_unchanged():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    before = model.SerializeToString()
    assert clamp_softmax_inputs(model).SerializeToString() == before
