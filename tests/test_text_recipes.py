"""What a small vocabulary leaves to learn from: hashed word bigrams beside the bag of words, the bag weighed by
naive Bayes log-count ratios, and the bag of words beside a sequence model (wide & deep), in one exported graph."""

import json

import numpy as np
import pytest

from kerasline.config import ConfigError, load_experiment, validate
from kerasline.models import build_model
from kerasline.models.text_features import BIGRAM_PRIME, HashedBigrams, adapt_naive_bayes, bag_of_words

TOKENS = {"input": "tokens", "name": "imdb_vocab500", "num_classes": 2, "sequence_length": 6, "vocab_size": 8}


def test_bigram_ids_by_hand():
    """Pair (a, b) → 1 + (a·P + b) mod N; pairs with padding → 0; (a, b) and (b, a) apart."""
    tokens = np.array([[3, 4, 3, 4, 0, 0], [4, 3, 0, 5, 6, 0]], np.int32)
    assert BIGRAM_PRIME % 11 == 4  # so (3, 4) → 1 + 16 mod 11 = 6, (4, 3) → 1 + 19 mod 11 = 9, (5, 6) → 5
    ids = np.asarray(HashedBigrams(11)(tokens))
    np.testing.assert_array_equal(ids, [[6, 9, 6, 0, 0], [9, 0, 0, 5, 0]])

    bag = np.asarray(bag_of_words(tokens, vocab_size=8, bigram_buckets=11))
    assert bag.shape == (2, 7 + 11)  # words 1..7, then buckets 1..11: padding in neither
    np.testing.assert_array_equal(bag[0, :7], [0, 0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(np.flatnonzero(bag[0, 7:]) + 1, [6, 9])  # (3, 4) twice is one bucket
    np.testing.assert_array_equal(np.flatnonzero(bag[1, 7:]) + 1, [5, 9])


def test_bigram_ids_do_not_overflow_with_a_large_vocabulary():
    a, b, buckets = 999_999, 999_998, 32_768  # the largest vocabulary and bucket count the config allows
    ids = np.asarray(HashedBigrams(buckets)(np.array([[a, b, a]], np.int32)))
    np.testing.assert_array_equal(ids, [[1 + (a * BIGRAM_PRIME + b) % buckets, 1 + (b * BIGRAM_PRIME + a) % buckets]])


def test_knob_refusals_are_one_line():
    cases = [
        ({"name": "mlp", "bigram_buckets": 16}, {}, "model.bigram_buckets: reads the words of a text, but data.input"),
        ({"name": "rnn", "bigram_buckets": 16}, TOKENS, "model.bigram_buckets: acts on the bag of words; set"),
        ({"name": "transformer", "bigram_buckets": 40_000}, TOKENS, "model.bigram_buckets: .*less than or equal"),
        ({"name": "mlp", "naive_bayes": True}, {}, "model.naive_bayes: reads the words of a text, but data.input is"),
        ({"name": "rnn", "naive_bayes": True}, TOKENS, "model.naive_bayes: acts on the bag of words; set model.bag"),
        ({"name": "mlp", "naive_bayes": True}, TOKENS | {"num_classes": 3}, "two classes, but data.num_classes is 3"),
        (
            {"name": "mlp", "naive_bayes": True, "head": "linear"},
            TOKENS | {"target": "value"},
            "model.naive_bayes: weighs words between two classes, but data.target is 'value'",
        ),
    ]
    for model, data, message in cases:
        with pytest.raises(ConfigError, match=message) as error:
            validate({"name": "t", "data": data, "model": model})
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("family", ["mlp", "transformer"])
def test_bigram_and_wide_knobs_add_the_bag_to_the_classifier(family):
    """The classifier's logits read the sequence summary and the bag: V − 1 words + N buckets more inputs."""
    knobs = {"mlp": {"hidden_units": []}, "transformer": {"d_model": 8, "heads": 2, "layers": 1, "ff_dim": 8}}[family]
    wide = {"bigram_buckets": 16} | ({} if family == "mlp" else {"bag_of_words": True})
    plain, combined = (
        build_model(validate({"name": "t", "data": TOKENS, "model": {"name": family, **knobs, **extra}}))
        for extra in ({}, wide)
    )
    growth = combined.get_layer("logits").kernel.shape[0] - plain.get_layer("logits").kernel.shape[0]
    assert growth == (0 if family == "mlp" else 7) + 16


def test_wide_and_deep_trains_and_exports_text_with_parity_and_its_onnx_takes_token_ids(tmp_path):
    """tfds text (mocked): the bag and bigrams are computed in the graph from the looked-up ids, so the SavedModel
    takes strings and the ONNX file the ids, and both give the model's probabilities."""
    import onnxruntime as ort
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from kerasline.export import export_run
    from kerasline.training.fit import train
    from kerasline.training.tasks import task_for

    overrides = [
        f"runs_dir={tmp_path}/runs",
        f"export.dir={tmp_path}/exports",
        "export.parity_samples=16",
        "data.sequence_length=16",
        "data.vocab_size=60",
        "data.batch_size=16",
        "model.units=4",
        "model.embedding_dim=4",
        "model.bag_of_words=true",
        "model.bigram_buckets=32",
        "training.epochs=1",
    ]
    with tfds.testing.mock_data(num_examples=32):
        cfg = load_experiment("imdb_reviews_lstm", overrides)
        result = train(cfg)
        version = export_run(cfg, result.run_dir)
        texts = [text.numpy() for text, _ in tfds.load("imdb_reviews", split="test", as_supervised=True).take(8)]

    assert json.loads((version / "verification.json").read_text())["passed"]
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    expected = serve(text=tf.constant(texts))["probabilities"].numpy()
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_input,) = session.get_inputs()
    assert (onnx_input.name, onnx_input.type, onnx_input.shape[1]) == ("tokens", "tensor(int32)", 16)
    feed = task_for(cfg).onnx_feed(result.run_dir)({"text": np.array(texts, object)})
    (probabilities,) = session.run(["probabilities"], feed)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def _bag(tokens: np.ndarray, vocab_size: int, buckets: int) -> np.ndarray:
    """The bag of words and hashed bigrams, in numpy: an implementation apart from the model's."""
    bag = np.zeros((len(tokens), vocab_size - 1 + buckets), bool)
    for row, ids in zip(bag, tokens, strict=True):
        row[ids[ids > 0] - 1] = True
        pairs = [(a, b) for a, b in zip(ids[:-1], ids[1:], strict=True) if a and b and buckets]
        row[[vocab_size - 1 + (a * BIGRAM_PRIME + b) % buckets for a, b in pairs]] = True
    return bag


def _ratios(bag: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Wang & Manning's r = log((p / |p|) / (q / |q|)), p and q one plus each feature's count in classes 1 and 0."""
    p, q = bag[labels == 1].sum(axis=0) + 1.0, bag[labels == 0].sum(axis=0) + 1.0
    return np.log(p / p.sum()) - np.log(q / q.sum())


def test_naive_bayes_ratios_and_features_by_hand():
    tokens = np.array([[3, 4, 3, 0, 0, 0], [3, 5, 0, 0, 0, 0], [6, 4, 7, 0, 0, 0]], np.int32)
    labels = np.array([1, 1, 0])
    cfg = validate({"name": "t", "data": TOKENS, "model": {"name": "mlp", "hidden_units": [], "naive_bayes": True}})
    model = build_model(cfg)
    layer = model.get_layer("naive_bayes")
    np.testing.assert_array_equal(np.asarray(layer.ratios), np.ones(7))  # no statistics before adapt

    assert adapt_naive_bayes(model, [(tokens[:2], labels[:2]), (tokens[2:], labels[2:])]) == 1  # two batches
    # Word 3 is in both class-1 reviews (once each, however often) and in no class-0 one. Class 1 has 4 (review,
    # word) pairs and class 0 has 3, so with one added to each of the 7 words, p = 3 / 11 and q = 1 / 10.
    ratios = np.asarray(layer.ratios)
    assert ratios[3 - 1] == pytest.approx(np.log(3 / 11) - np.log(1 / 10))
    np.testing.assert_allclose(ratios, _ratios(_bag(tokens, 8, 0), labels), rtol=1e-6)
    features = keras_features(model, tokens)
    np.testing.assert_allclose(features, _bag(tokens, 8, 0) * ratios, rtol=1e-6)


def keras_features(model, tokens: np.ndarray) -> np.ndarray:
    import keras

    return np.asarray(keras.Model(model.inputs, model.get_layer("naive_bayes").output)(tokens))


def test_naive_bayes_sets_every_member_of_a_wide_and_deep_ensemble():
    tokens = np.array([[3, 4, 3, 0, 0, 0], [6, 4, 7, 5, 0, 0]], np.int32)
    knobs = {"name": "rnn", "units": 2, "embedding_dim": 2, "bag_of_words": True, "bigram_buckets": 5}
    model = build_model(validate({"name": "t", "data": TOKENS, "model": knobs | {"naive_bayes": True, "members": 2}}))
    assert adapt_naive_bayes(model, [(tokens, np.array([1, 0]))]) == 2
    expected = _ratios(_bag(tokens, 8, 5), np.array([1, 0]))
    members = [layer for layer in model.layers if hasattr(layer, "layers")]
    assert len(members) == 2
    for member in members:
        np.testing.assert_allclose(np.asarray(member.get_layer("naive_bayes").ratios), expected, rtol=1e-6)


def test_naive_bayes_is_counted_on_the_training_split_and_exported_with_the_weights(tmp_path):
    """train() sets the ratios from the training split before the first step; they are weights, so the run's best
    weights, the SavedModel and the ONNX file all carry them; file sharding, which splits the training split among
    workers, is refused."""
    import dataclasses

    import onnxruntime as ort
    import tensorflow as tf

    from kerasline.errors import UserError
    from kerasline.export import export_run
    from kerasline.training.fit import adapt, train
    from kerasline.training.tasks import task_for

    data = {**TOKENS, "sequence_length": 24, "vocab_size": 500, "limit": 160, "batch_size": 32}
    model = {"name": "mlp", "hidden_units": [], "head": "sigmoid", "bigram_buckets": 16, "naive_bayes": True}
    raw = {"name": "nb", "runs_dir": f"{tmp_path}/runs", "data": data, "model": model, "training": {"epochs": 2}}
    cfg = validate(raw | {"export": {"dir": f"{tmp_path}/exports", "parity_samples": 16}})
    import keras

    at_first_step = []  # the ratios training starts from
    record = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: at_first_step.append(np.asarray(record.model.get_layer("naive_bayes").ratios))
    )
    result = train(cfg, callbacks=[record])

    examples = result.datasets.train_examples.batch(1000).get_single_element()
    tokens, labels = (np.asarray(t) for t in examples)
    expected = _ratios(_bag(tokens, 500, 16), labels)
    np.testing.assert_allclose(at_first_step[0], expected, rtol=1e-5)
    trained = task_for(cfg).export_model(result.run_dir / "best.weights.h5")
    np.testing.assert_allclose(np.asarray(trained.get_layer("naive_bayes").ratios), expected, rtol=1e-5)

    version = export_run(cfg, result.run_dir)
    assert json.loads((version / "verification.json").read_text())["passed"]
    probe = tokens[:8]
    served = tf.saved_model.load(str(version)).signatures["serving_default"](tokens=tf.constant(probe))
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    (from_onnx,) = session.run(["probability"], {"tokens": probe})
    np.testing.assert_allclose(served["probability"].numpy(), np.asarray(trained(probe))[:, 0], atol=1e-6)
    np.testing.assert_allclose(from_onnx, served["probability"].numpy(), atol=1e-5)

    sharded = dataclasses.replace(result.datasets, shard=object())
    with pytest.raises(UserError, match="model.naive_bayes: counts words over the whole training split"):
        adapt(trained, sharded)
