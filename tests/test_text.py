"""Sequence and attention families: the token pipeline, masking, and train → export → parity for each."""

import json

import numpy as np
import onnx
import pytest
import tensorflow as tf

from kerasline.config import ConfigError, load_experiment, validate
from kerasline.errors import DataError
from kerasline.models import build_model
from kerasline.pipelines.augment import make_augment
from kerasline.pipelines.sources import load_splits
from kerasline.training.tasks import build_inputs

TOKENS = {"input": "tokens", "name": "imdb_vocab500", "num_classes": 2, "sequence_length": 24, "limit": 160}

TINY = """
name = "{name}"
runs_dir = "{root}/runs"
[data]
{data}
batch_size = 32
[model]
{model}
[training]
epochs = 1
[export]
dir = "{root}/exports"
parity_samples = 16
"""

TEXT_DATA = 'input = "tokens"\nname = "imdb_vocab500"\nnum_classes = 2\nsequence_length = 24\nlimit = 160'
FAMILIES = {
    "lstm": (TEXT_DATA, 'name = "rnn"\nunits = 8\nembedding_dim = 8\n[data.augment]\nword_dropout = 0.1'),
    "transformer": (TEXT_DATA, 'name = "transformer"\nd_model = 8\nheads = 2\nlayers = 1\nff_dim = 16'),
    "vit": ("limit = 200", 'name = "vit"\npatch_size = 7\nd_model = 8\nheads = 2\nlayers = 1\nff_dim = 16'),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_family_trains_and_exports_with_named_raw_inputs(family, tmp_path, kerasline):
    data, model = FAMILIES[family]
    experiment = tmp_path / f"{family}.toml"
    experiment.write_text(TINY.format(name=family, root=tmp_path, data=data, model=model))
    proc = kerasline("train", str(experiment))
    assert proc.returncode == 0, proc.stderr[-3000:]

    version = tmp_path / "exports" / family / "1"
    report = json.loads((version / "verification.json").read_text())
    assert report["passed"] and report["samples"] == 16
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    ((name, spec),) = serve.structured_input_signature[1].items()
    outputs = serve.structured_outputs
    if family == "vit":
        assert (name, spec.dtype, spec.shape.as_list()) == ("image", tf.uint8, [None, 28, 28, 1])
    else:
        assert (name, spec.dtype, spec.shape.as_list()) == ("tokens", tf.int32, [None, 24])
    assert outputs["probabilities"].dtype == tf.float32 and outputs["class_id"].dtype == tf.int64
    if family in ("transformer", "vit"):  # ONNX: the [B, H, T, T] scores are not transposed after their MatMul
        graph = onnx.load(str(version / "model.onnx")).graph
        made = {out: node.op_type for node in graph.node for out in node.output}
        after_matmul = [n for n in graph.node if n.op_type == "Transpose" and made.get(n.input[0]) == "MatMul"]
        assert [list(n.attribute[0].ints) for n in after_matmul] == [[0, 2, 1, 3]]  # only the [B, T, H, d] output
    if family in ("transformer", "vit"):  # attention maps, one image per example, in the validation logs
        events = tf.compat.v1.train.summary_iterator
        logs = [str(p) for p in (tmp_path / "runs" / family / "run-001" / "logs" / "validation").glob("events*")]
        tags = {v.tag for path in logs for e in events(path) for v in e.summary.value}
        assert {f"attention/example{i}" for i in range(4)} <= tags


def test_token_sample_is_padded_cut_and_split_with_its_own_test_set():
    cfg = validate({"name": "t", "data": {**TOKENS, "limit": None}, "model": {"name": "rnn"}})
    splits = load_splits(cfg.data, cfg.seed)
    sizes = [int(ds.cardinality()) for ds in (splits.train, splits.validation, splits.test)]
    assert sizes == [4500, 500, 500]
    with np.load("data/imdb_vocab500.npz") as npz:
        first = npz["test_tokens"][: npz["test_offsets"][1]]
    tokens, label = next(splits.test.as_numpy_iterator())
    assert tokens.dtype == np.int32 and tokens.shape == (24,)
    np.testing.assert_array_equal(tokens, first[:24])  # the first review, cut to sequence_length
    assert label in (0, 1)


def test_token_ids_outside_the_vocabulary_are_named_or_skipped(tmp_path):
    path = tmp_path / "bad.npz"
    offsets = np.array([0, 3, 6, 9])
    np.savez(
        path,
        train_tokens=np.array([1, 5, 6, 1, 900, 2, 1, 7, 8]),
        train_offsets=offsets,
        train_y=np.array([0, 1, 0]),
        test_tokens=np.array([1, 4, 4]),
        test_offsets=np.array([0, 3]),
        test_y=np.array([1]),
    )
    data = {**TOKENS, "name": str(path), "limit": None, "validation_fraction": 0.3}
    cfg = validate({"name": "t", "data": data, "model": {"name": "rnn"}})
    with pytest.raises(DataError, match=r"train sequence 1 has token ids outside \[0, 500\)"):
        load_splits(cfg.data, cfg.seed)
    cfg = validate({"name": "t", "data": {**data, "on_error": "skip"}, "model": {"name": "rnn"}})
    splits = load_splits(cfg.data, cfg.seed)
    assert len(splits.skipped) == 1
    assert int(splits.train.cardinality()) + int(splits.validation.cardinality()) == 2


def test_word_dropout_only_hides_words_and_is_seeded():
    cfg = validate({"name": "t", "data": {**TOKENS, "augment": {"word_dropout": 0.25}}, "model": {"name": "rnn"}})
    tokens = tf.constant(np.random.default_rng(0).integers(1, 500, (64, 24)), tf.int32)
    augment = make_augment(cfg.data)
    out = augment(tokens, tf.constant([1, 2], tf.int64)).numpy()
    hidden = out == 0
    assert 0.2 < hidden.mean() < 0.3
    np.testing.assert_array_equal(out[~hidden], tokens.numpy()[~hidden])
    np.testing.assert_array_equal(out, augment(tokens, tf.constant([1, 2], tf.int64)).numpy())


@pytest.mark.parametrize(
    "model",
    [
        {"name": "rnn", "units": 4, "embedding_dim": 4, "summary": "last"},
        {"name": "rnn", "units": 4, "embedding_dim": 4, "summary": "max", "cell": "gru", "layers": 2},
        {"name": "rnn", "units": 4, "embedding_dim": 4, "summary": "mean", "bidirectional": False},
        {"name": "transformer", "d_model": 8, "heads": 2, "layers": 1, "ff_dim": 8},
    ],
)
def test_padding_is_masked(model):
    """Whatever the padding id's embedding holds, the prediction for a padded review is the same."""
    net = build_model(validate({"name": "m", "data": TOKENS, "model": model}))
    tokens = np.random.default_rng(1).integers(1, 500, (4, 24)).astype(np.int32)
    tokens[:, 10:] = 0
    before = net(tokens, training=False).numpy()
    embedding = next(layer for layer in net.layers if "embedding" in layer.name and layer.name != "position_embedding")
    table = embedding.embeddings.numpy()
    table[0] = 100.0
    embedding.embeddings.assign(table)
    np.testing.assert_allclose(net(tokens, training=False).numpy(), before, atol=1e-6)


def test_raw_text_trains_and_exports_a_string_signature(tmp_path):
    """tfds text (mocked): the vocabulary is adapted on train, saved with the run, and looked up in the graph."""
    import tensorflow_datasets as tfds

    from kerasline.export import export_run
    from kerasline.training.fit import train

    overrides = [
        f"runs_dir={tmp_path}/runs",
        f"export.dir={tmp_path}/exports",
        "export.parity_samples=16",
        "data.sequence_length=16",
        "data.vocab_size=60",
        "data.batch_size=16",
        "model.units=4",
        "model.embedding_dim=4",
        "training.epochs=1",
    ]
    with tfds.testing.mock_data(num_examples=48):
        cfg = load_experiment("imdb_reviews_lstm", overrides)
        data = build_inputs(cfg)
        result = train(cfg)
        version = export_run(cfg, result.run_dir)
        texts = [text for text, _ in tfds.load("imdb_reviews", split="test", as_supervised=True).take(8)]
    saved = (result.run_dir / "vocabulary.json").read_text()
    assert saved == data.run_files["vocabulary.json"] and json.loads(saved)[:2] == ["", "[UNK]"]
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    ((name, spec),) = serve.structured_input_signature[1].items()
    assert (name, spec.dtype, spec.shape.as_list()) == ("text", tf.string, [None])
    # The exported lookup gives the ids training saw: same predictions as the model on the pipeline's tokens.
    tokens = np.stack([t for t, _ in data.test.unbatch().take(8).as_numpy_iterator()])
    model = build_model(cfg)
    model.load_weights(result.run_dir / "best.weights.h5")
    np.testing.assert_allclose(serve(text=tf.stack(texts))["probabilities"].numpy(), model(tokens), atol=1e-6)
    assert json.loads((version / "verification.json").read_text())["passed"]


def test_text_needs_a_tfds_source_and_sequence_models_need_tokens():
    with pytest.raises(ConfigError, match="data.input: text comes from a tfds source"):
        validate({"name": "t", "data": {"input": "text"}, "model": {"name": "rnn"}})
    with pytest.raises(ConfigError, match="model.name: transformer takes tokens or text input"):
        validate({"name": "t", "model": {"name": "transformer"}})
    with pytest.raises(ConfigError, match="model.heads: 3 heads do not divide d_model 64"):
        validate({"name": "t", "data": TOKENS, "model": {"name": "transformer", "heads": 3}})


def test_export_rebuilds_recurrent_layers_without_cudnn(tmp_path):
    """tf2onnx cannot convert cuDNN's LSTM/GRU kernels, which Keras picks whenever a GPU is visible."""
    from kerasline.training.tasks import task_for

    cfg = validate({"name": "c", "data": TOKENS, "model": {"name": "rnn", "units": 4, "embedding_dim": 4, "layers": 2}})
    build_model(cfg).save_weights(tmp_path / "w.weights.h5")
    model = task_for(cfg).export_model(tmp_path / "w.weights.h5")
    recurrent = [
        getattr(wrapper, side)
        for wrapper in model.layers
        if wrapper.name.startswith("bidirectional")
        for side in ("forward_layer", "backward_layer")
    ]
    assert len(recurrent) == 4 and all(layer.use_cudnn is False for layer in recurrent)
