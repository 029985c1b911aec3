"""export.onnx_int8: model-int8.onnx beside model.onnx, its two rewrites (exact in float), its record in
verification.json and the model card, and `kerasline predict --runtime onnx-int8`."""

import csv
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kerasline.cli import main
from kerasline.config import ConfigError, validate
from kerasline.export.onnx_int8 import INT8_FILE, fold_input_scale
from kerasline.export.onnx_softmax import clamp_softmax_inputs, unclamp_softmax_inputs

EXPERIMENT = """
name = "digits"
seed = 7
runs_dir = "{root}/runs"
[data]
name = "mnist_8k"
limit = 200
batch_size = 32
[model]
name = "cnn"
filters = [4]
convs_per_block = 1
dense_units = 8
[training]
epochs = 1
[export]
dir = "{root}/exports"
parity_samples = 8
onnx_int8 = true
"""


def scaled_conv(
    scale: float, offset: float, second_reader: bool = False, shared_weight: bool = False
) -> onnx.ModelProto:
    """uint8 image [1, 6, 6, 1] → Cast → Mul(scale) → Add(offset) → Transpose to NCHW → Conv 3×3 with zero padding
    (as tf2onnx writes Keras's Rescaling before a Conv2D); `second_reader`: Mul's output is also a graph output;
    `shared_weight`: a second Conv, on the unscaled image, uses the same weights."""
    rng = np.random.default_rng(0)
    initializers = [
        numpy_helper.from_array(np.array(scale, np.float32), "scale"),
        numpy_helper.from_array(np.array(offset, np.float32), "offset"),
        numpy_helper.from_array(rng.normal(size=(2, 1, 3, 3)).astype(np.float32), "w"),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "offset"], ["shifted"]),
        helper.make_node("Transpose", ["shifted"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w"], ["y"], pads=[1, 1, 1, 1]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])]
    if shared_weight:
        nodes.append(helper.make_node("Transpose", ["x"], ["raw_nchw"], perm=[0, 3, 1, 2]))
        nodes.append(helper.make_node("Conv", ["raw_nchw", "w"], ["y_raw"], pads=[1, 1, 1, 1]))
        outputs.append(helper.make_tensor_value_info("y_raw", TensorProto.FLOAT, [1, 2, 6, 6]))
    if second_reader:
        outputs.append(helper.make_tensor_value_info("scaled", TensorProto.FLOAT, [1, 6, 6, 1]))
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 6, 6, 1])
    graph = helper.make_graph(nodes, "scaled_conv", [image], outputs, initializers)
    # IR version 8 (opset 17's): onnx 1.23 writes 14 by default, which ONNX Runtime 1.31 refuses (it reads ≤ 13).
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_the_inputs_scale_folds_into_the_first_conv_and_gives_the_same_outputs():
    image = np.random.default_rng(1).integers(0, 256, (1, 6, 6, 1)).astype(np.uint8)
    before = run(scaled_conv(1 / 255, 0.0), {"image": image})[0]
    folded = fold_input_scale(scaled_conv(1 / 255, 0.0))
    onnx.checker.check_model(folded, full_check=True)
    assert [node.op_type for node in folded.graph.node] == ["Cast", "Transpose", "Conv"]
    np.testing.assert_allclose(run(folded, {"image": image})[0], before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "offset, second_reader, shared_weight", [(-1.0, False, False), (0.0, True, False), (0.0, False, True)]
)
def test_a_scale_with_an_offset_another_reader_or_shared_weights_is_left_alone(offset, second_reader, shared_weight):
    # An offset does not fold exactly (the zero padding would have to become −offset / scale); another reader of
    # the scaled input would lose it; so would another convolution of the same weights.
    model = scaled_conv(1 / 127.5, offset, second_reader, shared_weight)
    expected = [node.op_type for node in model.graph.node]
    assert [node.op_type for node in fold_input_scale(model).graph.node] == expected


def test_unclamping_gives_back_the_softmax_graph_that_was_clamped():
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 3])
    probabilities = helper.make_tensor_value_info("p", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Softmax", ["logits"], ["p"], axis=-1)], "g", [logits], [probabilities])
    original = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    clamped = clamp_softmax_inputs(onnx.ModelProto.FromString(original.SerializeToString()))
    assert len(clamped.graph.node) == 4 and len(clamped.graph.initializer) == 1
    assert unclamp_softmax_inputs(clamped).SerializeToString() == original.SerializeToString()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    experiment = root / "digits.toml"
    experiment.write_text(EXPERIMENT.format(root=root))
    assert main(["train", str(experiment)]) == 0
    return experiment, root / "exports" / "digits" / "1"


def test_the_int8_copy_takes_and_gives_what_model_onnx_does_and_is_on_record(exported, capsys):
    _, version = exported
    float32, int8 = onnx.load(version / "model.onnx"), onnx.load(version / INT8_FILE)
    onnx.checker.check_model(int8, full_check=True)

    def io(model):
        return [(v.name, v.type.tensor_type.elem_type) for v in (*model.graph.input, *model.graph.output)]

    assert io(int8) == io(float32)
    ops = {node.op_type for node in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "Mul" not in ops  # the rescaling was folded
    # int8 weights (1 byte each) where model.onnx holds float32 ones.
    weights = [t for t in int8.graph.initializer if len(t.dims) == 4]
    assert {t.data_type for t in weights} == {TensorProto.INT8}
    # 7 bits (−64…64): no uint8 × int8 pair sum passes 16 bits on CPUs without VNNI (onnx_int8.py).
    assert max(np.abs(numpy_helper.to_array(t).astype(np.int32)).max() for t in weights) == 64

    report = json.loads((version / "verification.json").read_text())
    assert report["passed"] and report["int8"]["file"] == INT8_FILE
    assert set(report["int8"]["mean_abs_diff"]) == {"probabilities", "class_id"}
    assert 0 < report["int8"]["mean_abs_diff"]["probabilities"] < 0.05  # an approximation, and a close one
    card = (version / "MODEL_CARD.md").read_text()
    assert f"`{INT8_FILE}` (export.onnx_int8) approximates" in card and f"`{INT8_FILE}`, CPU" in card


def test_predict_runs_the_int8_copy(exported, tmp_path, capsys):
    experiment, version = exported
    with np.load("data/mnist_8k.npz") as npz:
        digits = npz["x"][:16, ..., None]
    np.save(tmp_path / "digits.npy", digits)
    output = tmp_path / "p.csv"
    assert (
        main(
            [
                "predict",
                str(experiment),
                "--input",
                str(tmp_path / "digits.npy"),
                "--output",
                str(output),
                "--runtime",
                "onnx-int8",
            ]
        )
        == 0
    )
    assert "(onnx-int8)" in capsys.readouterr().out
    rows = list(csv.DictReader(output.open()))
    session = ort.InferenceSession(str(version / INT8_FILE), providers=["CPUExecutionProvider"])
    want = session.run(["class_id"], {"image": digits})[0]
    assert [int(row["class_id"]) for row in rows] == want.tolist()


def test_only_image_models_are_quantised():
    data = {"input": "tokens", "name": "imdb_vocab500", "num_classes": 2, "sequence_length": 16}
    raw = {"name": "t", "data": data, "model": {"name": "mlp"}, "export": {"onnx_int8": True}}
    with pytest.raises(ConfigError, match=r"export.onnx_int8: quantises image models, but data.input is 'tokens'$"):
        validate(raw)
