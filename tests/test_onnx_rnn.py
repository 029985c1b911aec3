"""Masked LSTMs and GRUs export to native ONNX LSTM and GRU nodes (export/onnx_rnn.py) and keep the Keras model's
results."""

import json

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from kerasline.config import validate
from kerasline.export import export_run
from kerasline.export.onnx_rnn import PackedRNN, for_onnx
from kerasline.models import build_model

LENGTH = 12
DATA = {"input": "tokens", "name": "imdb_vocab500", "num_classes": 2, "sequence_length": LENGTH, "limit": 160}


def rnn_model(cfg) -> keras.Model:
    """The rnn family's model with an embedding as large as a trained one: the fresh one, within ±0.05, leaves the
    outputs too flat for a wrong step to show."""
    model = build_model(cfg)
    for i, member in enumerate(getattr(model, "members", [model])):  # an ensemble's, each its own
        table = member.get_layer("embedding").embeddings
        table.assign(np.random.default_rng(5 + i).normal(size=table.shape).astype(np.float32))
    return model


def padded_tokens() -> np.ndarray:
    """Post-padded rows of every kind the pipeline gives (full, part, one word, none), then masks it does not
    give: pre-padding and gaps."""
    tokens = np.random.default_rng(3).integers(1, 500, (8, LENGTH)).astype(np.int32)
    for row, length in enumerate([LENGTH, 7, 3, 1, 0]):
        tokens[row, length:] = 0
    tokens[5, :4] = 0
    tokens[6, [1, 4, 5, 11]] = 0
    tokens[7, [0, 2, 3, 9, 10, 11]] = 0
    return tokens


@pytest.mark.parametrize(
    "rnn",
    [
        {"bidirectional": True, "layers": 1, "summary": "mean"},
        {"bidirectional": True, "layers": 2, "summary": "last"},
        {"bidirectional": False, "layers": 2, "summary": "max"},
        {"bidirectional": False, "layers": 1, "summary": "last"},
        {"cell": "gru", "bidirectional": True, "layers": 2, "summary": "last"},
        {"cell": "gru", "bidirectional": False, "layers": 2, "summary": "max"},
    ],
)
def test_packed_rnn_gives_the_keras_layer_outputs_for_any_mask(rnn):
    """The last recurrent layer's outputs, masked steps included: zeros in a Bidirectional, the previous output in a
    plain LSTM or GRU, the zero state for an all-padding row; stacked layers see the mask the first one passes on."""
    model = rnn_model(validate({"name": "m", "data": DATA, "model": {"name": "rnn", "units": 6, **rnn}}))
    recurrent_types = keras.layers.Bidirectional | keras.layers.LSTM | keras.layers.GRU
    recurrent = [layer for layer in model.layers if isinstance(layer, recurrent_types)]
    keras_side = keras.Model(model.input, recurrent[-1].output)
    packed = for_onnx(keras_side)
    assert sum(isinstance(layer, PackedRNN) for layer in packed.layers) == rnn["layers"]
    tokens = padded_tokens()
    expected = keras_side(tokens, training=False).numpy()
    np.testing.assert_allclose(packed(tokens, training=False).numpy(), expected, atol=1e-6)
    probabilities = for_onnx(model)(tokens, training=False).numpy()
    np.testing.assert_allclose(probabilities, model(tokens, training=False).numpy(), atol=1e-6)


@pytest.mark.parametrize("cell, members", [("lstm", 1), ("gru", 1), ("lstm", 2)])
def test_masked_bidirectional_rnn_exports_native_rnn_nodes_that_match_keras(tmp_path, cell, members):
    cfg = validate(
        {
            "name": cell,
            "data": DATA,
            "model": {
                "name": "rnn",
                "cell": cell,
                "units": 8,
                "embedding_dim": 8,
                "summary": "mean",
                "members": members,
            },
            "export": {"dir": str(tmp_path / "exports"), "parity_samples": 16},
        }
    )
    model = rnn_model(cfg)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model.save_weights(run_dir / "best.weights.h5")
    version = export_run(cfg, run_dir)

    assert json.loads((version / "verification.json").read_text())["passed"]
    ops = [node.op_type for node in onnx.load(version / "model.onnx").graph.node]
    assert "Loop" not in ops and ops.count(cell.upper()) == 2 * members  # one per direction, in every member
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    tokens = padded_tokens()
    (probabilities,) = session.run(["probabilities"], {"tokens": tokens})
    np.testing.assert_allclose(probabilities, model(tokens, training=False).numpy(), atol=1e-5)
