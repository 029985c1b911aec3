"""export.onnx_bag_of_words: a bag-of-words classifier's ONNX graph without tf2onnx's Unique, its bincount scattered
as float, its one-column MatMul as a sum, each giving what Keras gives; a graph outside the pattern untouched."""

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf

from kerasline.export.onnx_bag_of_words import WIDE
from kerasline.export.signature import write_onnx
from kerasline.models.text_features import bag_of_words

VOCAB, BUCKETS, LENGTH = 9, WIDE, 24


def tokens() -> np.ndarray:
    """Rows with repeated words, repeated bigrams, padding, and one row of padding only."""
    rng = np.random.default_rng(3)
    rows = rng.integers(1, VOCAB, size=(4, LENGTH)).astype("int32")
    rows[0, :8] = [3, 4, 3, 4, 3, 4, 5, 5]
    rows[1, 12:] = 0
    rows[3] = 0
    return rows


def exported(model: keras.Model, path) -> tuple[onnx.ModelProto, ort.InferenceSession]:
    serve = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, LENGTH], tf.int32)])
    write_onnx(serve, str(path))
    return onnx.load(str(path)), ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def ops(graph: onnx.ModelProto) -> set[str]:
    return {node.op_type for node in graph.graph.node}


def test_the_bag_has_no_unique_and_equals_keras_bit_for_bit(tmp_path):
    inputs = keras.Input((LENGTH,), dtype="int32")
    model = keras.Model(inputs, bag_of_words(inputs, VOCAB, BUCKETS))
    graph, session = exported(model, tmp_path / "bag.onnx")
    assert "Unique" not in ops(graph) and "ScatterND" in ops(graph)
    scattered = {out for node in graph.graph.node if node.op_type == "ScatterND" for out in node.output}
    assert not [node for node in graph.graph.node if node.op_type == "Cast" and node.input[0] in scattered]
    x = tokens()
    (bag,) = session.run(None, {session.get_inputs()[0].name: x})
    assert bag.dtype == np.float32
    np.testing.assert_array_equal(bag, np.asarray(model(x)))  # zeros and ones: exact on every CPU
    assert bag[0].sum() > 0 and bag[3].sum() == 0


def test_a_wide_naive_bayes_logistic_regression_sums_one_row_and_matches_keras(tmp_path):
    inputs = keras.Input((LENGTH,), dtype="int32")
    bag = bag_of_words(inputs, VOCAB, BUCKETS, naive_bayes=True)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="logit")(bag))
    features, rng = VOCAB - 1 + BUCKETS, np.random.default_rng(0)
    model.get_layer("logit").kernel.assign(rng.normal(size=(features, 1)))
    model.get_layer("naive_bayes").ratios.assign(rng.normal(size=features))
    graph, session = exported(model, tmp_path / "logreg.onnx")
    assert "MatMul" not in ops(graph) and "ReduceSum" in ops(graph)
    rows = [t for t in graph.graph.initializer if list(t.dims) in ([features], [features, 1])]
    assert len(rows) == 1  # the ratios times the weights: neither is left on its own
    x = tokens()
    (probability,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(probability, np.asarray(model(x)), atol=1e-6)


def test_a_counting_bincount_keeps_its_unique(tmp_path):
    inputs = keras.Input((LENGTH,), dtype="int32")
    model = keras.Model(inputs, keras.layers.CategoryEncoding(VOCAB, output_mode="count")(inputs))
    graph, session = exported(model, tmp_path / "count.onnx")
    assert "Unique" in ops(graph)
    x = tokens()
    (counts,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_array_equal(counts, np.asarray(model(x)))
    assert counts[0, 3] >= 3  # the first row repeats word 3


def test_weighed_features_that_are_also_an_output_stay(tmp_path):
    inputs = keras.Input((LENGTH,), dtype="int32")
    weighed = bag_of_words(inputs, VOCAB, BUCKETS, naive_bayes=True)
    model = keras.Model(inputs, [weighed, keras.layers.Dense(1, name="logit")(weighed)])
    model.get_layer("naive_bayes").ratios.assign(np.random.default_rng(1).normal(size=VOCAB - 1 + BUCKETS))
    graph, session = exported(model, tmp_path / "two.onnx")
    assert "ReduceSum" in ops(graph)
    x = tokens()
    features, logit = session.run(None, {session.get_inputs()[0].name: x})
    expected_features, expected_logit = (np.asarray(t) for t in model(x))
    np.testing.assert_array_equal(features, expected_features)
    np.testing.assert_allclose(logit, expected_logit, atol=1e-5)
