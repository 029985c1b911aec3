"""The attention rewrites of the ONNX export (export/onnx_attention.py): the same outputs, fewer passes."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from kerasline.export.onnx_attention import untransposed_scores, without_zero_adds


def model_of(nodes: list, inputs: dict, outputs: dict, initializers: dict | None = None) -> onnx.ModelProto:
    """An opset-17 model of `nodes`: `inputs` maps names to (element type, shape), `outputs` float32 ones to
    shapes, `initializers` to float32 values."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name, dtype, shape) for name, (dtype, shape) in inputs.items()],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in outputs.items()],
        [numpy_helper.from_array(np.asarray(v, np.float32), name) for name, v in (initializers or {}).items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def scores_model(extra_reader: bool = False) -> onnx.ModelProto:
    """Keras's einsum "aecd,abcd->acbe" as tf2onnx writes it: key [B, T, H, d] and query [B, T, H, d] transposed,
    multiplied, and the [B, H, T, T] product transposed."""
    nodes = [
        helper.make_node("Transpose", ["key"], ["k"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["query"], ["q"], perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["k", "q"], ["product"]),
        helper.make_node("Transpose", ["product"], ["scores"], perm=[0, 1, 3, 2]),
        helper.make_node("Relu", ["scores"], ["out"]),
    ]
    outputs = {"out": [2, 3, 5, 5]}
    if extra_reader:  # the transposed key is read elsewhere too: its perm must stay
        nodes.append(helper.make_node("Relu", ["k"], ["k_out"]))
        outputs["k_out"] = [2, 3, 5, 4]
    shape = [2, 5, 3, 4]
    return model_of(nodes, {"key": (TensorProto.FLOAT, shape), "query": (TensorProto.FLOAT, shape)}, outputs)


def test_scores_are_the_swapped_product_without_a_transpose_of_it():
    rng = np.random.default_rng(0)
    feeds = {name: rng.normal(size=(2, 5, 3, 4)).astype(np.float32) for name in ("key", "query")}
    (before,) = run(scores_model(), feeds)
    rewritten = untransposed_scores(scores_model())
    (after,) = run(rewritten, feeds)
    expected = np.maximum(np.einsum("aecd,abcd->acbe", feeds["key"], feeds["query"]), 0)
    np.testing.assert_allclose(before, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-7)
    assert [n.op_type for n in rewritten.graph.node] == ["Transpose", "Transpose", "MatMul", "Relu"]


def test_scores_stay_as_they_are_where_a_transposed_input_is_read_elsewhere():
    rewritten = untransposed_scores(scores_model(extra_reader=True))
    assert [n.op_type for n in rewritten.graph.node].count("Transpose") == 3


def where_model(zero: float) -> onnx.ModelProto:
    """where(mask, w, `zero`) as tf2onnx writes it: w·Cast(mask) + zero·Cast(Not(mask)); the negated mask is also
    read by a second branch, as Keras's masked Softmax reads it before the softmax."""
    nodes = [
        helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Not", ["mask"], ["not_mask"]),
        helper.make_node("Cast", ["not_mask"], ["nm"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["m", "w"], ["kept"]),
        helper.make_node("Mul", ["zero", "nm"], ["branch"]),
        helper.make_node("Add", ["kept", "branch"], ["selected"]),
        helper.make_node("Relu", ["selected"], ["out"]),  # Keras multiplies the weights by the values
        helper.make_node("Mul", ["big", "nm"], ["other_branch"]),
    ]
    inputs = {"mask": (TensorProto.BOOL, [1, 1, 3, 3]), "w": (TensorProto.FLOAT, [1, 2, 3, 3])}
    outputs = {"out": [1, 2, 3, 3], "other_branch": [1, 1, 3, 3]}
    return model_of(nodes, inputs, outputs, {"zero": zero, "big": -1e9})


def test_the_zero_branch_of_a_where_goes_and_the_values_stay():
    rng = np.random.default_rng(1)
    feeds = {"mask": rng.random((1, 1, 3, 3)) < 0.5, "w": rng.normal(size=(1, 2, 3, 3)).astype(np.float32)}
    before = run(where_model(0.0), feeds)
    rewritten = without_zero_adds(where_model(0.0))
    after = run(rewritten, feeds)
    np.testing.assert_array_equal(before[0], np.maximum(np.where(feeds["mask"], feeds["w"], 0), 0))
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)
    ops = [n.op_type for n in rewritten.graph.node]
    assert "Add" not in ops and ops.count("Mul") == 2  # the kept product and the other branch's
    assert "nm" in {i for n in rewritten.graph.node for i in n.input}  # still read by the other branch
    assert {t.name for t in rewritten.graph.initializer} == {"big"}  # the unread zero went too


def test_a_where_of_another_value_is_kept():
    rewritten = without_zero_adds(where_model(0.5))
    assert [n.op_type for n in rewritten.graph.node].count("Add") == 1
