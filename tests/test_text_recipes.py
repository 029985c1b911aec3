"""What a small vocabulary leaves to learn from: hashed word bigrams beside the bag of words, and the bag of words
beside a sequence model (wide & deep), in one exported graph."""

import json

import numpy as np
import pytest

from kerasline.config import ConfigError, load_experiment, validate
from kerasline.models import build_model
from kerasline.models.text_features import BIGRAM_PRIME, HashedBigrams, bag_of_words

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
        ({"name": "mlp", "bigram_buckets": 16}, {}, "model.bigram_buckets: pairs words of a text, but data.input is"),
        ({"name": "rnn", "bigram_buckets": 16}, TOKENS, "model.bigram_buckets: bigrams join the bag of words"),
        ({"name": "transformer", "bigram_buckets": 40_000}, TOKENS, "model.bigram_buckets: .*less than or equal"),
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
