"""Optimisers, schedules, strategies and callback helpers, from config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasline.config import TrainingConfig
from kerasline.training.callbacks import EpochSummaries, image_grid
from kerasline.training.checkpoint import ResumePoint
from kerasline.training.optim import learning_rate, make_optimizer
from kerasline.training.strategy import make_strategy
from kerasline.training.tasks import build_inputs, task_for
from kerasline.training.tasks.classification import render_confusion_matrix


def training(**update) -> TrainingConfig:
    raw = TrainingConfig().model_dump()
    for key, value in update.items():
        section, _, leaf = key.rpartition("__")
        (raw[section] if section else raw)[leaf] = value
    return TrainingConfig.model_validate(raw)


@pytest.mark.parametrize(
    "name, cls",
    [
        ("sgd", keras.optimizers.SGD),
        ("rmsprop", keras.optimizers.RMSprop),
        ("adagrad", keras.optimizers.Adagrad),
        ("adam", keras.optimizers.Adam),
        ("adamw", keras.optimizers.AdamW),
    ],
)
def test_every_optimizer(name, cls):
    opt = make_optimizer(training(optimizer__name=name, optimizer__clipnorm=1.0), steps_per_epoch=10)
    assert type(opt) is cls and opt.global_clipnorm == 1.0


def test_sgd_momentum_nesterov_and_weight_decay():
    opt = make_optimizer(
        training(
            optimizer__name="sgd", optimizer__momentum=0.9, optimizer__nesterov=True, optimizer__weight_decay=1e-4
        ),
        10,
    )
    assert opt.momentum == 0.9 and opt.nesterov and opt.weight_decay == 1e-4


def lr_at(schedule, step: int) -> float:
    return float(schedule(step))


def test_the_weight_average_warms_its_decay_up():
    """training.ema: d = min(ema, (1 + t) / (10 + t)) at step t, 0 at the first (Keras 3.15's own d: ema throughout)."""
    cfg = training(ema=0.999, optimizer__name="sgd", optimizer__learning_rate=0.1, schedule__name="constant")
    optimizer = make_optimizer(cfg, steps_per_epoch=1)
    weight = keras.Variable([1.0, -2.0])
    optimizer.build([weight])
    expected = None
    for t in range(5):
        optimizer.apply_gradients([(tf.constant([1.0, 3.0]), weight)])
        decay = 0.0 if t == 0 else min(0.999, (1 + t) / (10 + t))  # 0, 0.18, 0.25, 0.31, 0.36
        expected = weight.numpy() if t == 0 else decay * expected + (1 - decay) * weight.numpy()
        np.testing.assert_allclose(optimizer._model_variables_moving_average[0].numpy(), expected, rtol=1e-6)


def test_step_schedule_drops_by_rate_every_decay_epochs():
    sched = learning_rate(training(schedule__name="step", schedule__decay_epochs=2, schedule__decay_rate=0.5), 10)
    assert [lr_at(sched, s) for s in (0, 19, 20, 40)] == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4])


def test_exponential_schedule_is_smooth():
    sched = learning_rate(
        training(schedule__name="exponential", schedule__decay_epochs=1, schedule__decay_rate=0.5), 10
    )
    assert lr_at(sched, 5) == pytest.approx(1e-3 * 0.5**0.5)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    sched = learning_rate(training(epochs=10, schedule__name="cosine", schedule__warmup_epochs=1), 10)
    assert lr_at(sched, 0) == pytest.approx(0.0)
    assert lr_at(sched, 5) == pytest.approx(5e-4)
    assert lr_at(sched, 10) == pytest.approx(1e-3)
    assert lr_at(sched, 100) == pytest.approx(0.0, abs=1e-9)


def test_plateau_schedule_is_a_callback(tiny_cfg, tmp_path):
    cfg = tiny_cfg.model_copy(update={"training": training(schedule__name="plateau", schedule__patience=3)})
    assert learning_rate(cfg.training, 10) == 1e-3
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    callbacks = task_for(cfg).callbacks(tmp_path, build_inputs(cfg), ResumePoint(), model)
    plateau = [c for c in callbacks if isinstance(c, keras.callbacks.ReduceLROnPlateau)]
    assert len(plateau) == 1 and plateau[0].patience == 3 and plateau[0].factor == 0.1


def test_strategies():
    assert make_strategy("auto").num_replicas_in_sync == 1
    assert isinstance(make_strategy("one_device"), tf.distribute.OneDeviceStrategy)
    assert isinstance(make_strategy("mirrored"), tf.distribute.MirroredStrategy)


def test_auto_picks_tpu_when_one_is_configured(monkeypatch):
    import kerasline.training.strategy as strategy

    monkeypatch.setenv("TPU_NAME", "grpc://10.0.0.2:8470")
    monkeypatch.setattr(strategy, "_tpu_strategy", lambda tpu: f"tpu:{tpu}")
    assert strategy.make_strategy("auto") == "tpu:grpc://10.0.0.2:8470"


def test_image_grid_tiles_images_in_rows():
    images = np.arange(5, dtype=np.float32)[:, None, None, None] * np.ones([5, 2, 3, 1], np.float32)
    grid = image_grid(images)
    assert grid.shape == (4, 9, 1)  # 3 columns × 2 rows of 2×3 tiles
    assert grid[0, 3, 0] == 1 and grid[2, 0, 0] == 3 and grid[3, 8, 0] == 0  # blank padding tile


def test_confusion_matrix_renders_to_an_image():
    image = render_confusion_matrix(np.eye(3, dtype=np.int64) * 5)
    assert image.ndim == 3 and image.shape[2] == 4 and image.dtype == np.uint8


def test_only_an_unfinished_run_with_the_same_config_is_resumed(tiny_cfg):
    from kerasline.training.runs import open_run

    run = open_run(tiny_cfg)
    assert run.name == "run-001"
    assert open_run(tiny_cfg) == run  # unfinished, same config: resume it
    (run / "metrics.json").write_text("{}")
    assert open_run(tiny_cfg) == run.parent / "run-002"  # finished: a new run
    changed = tiny_cfg.model_copy(update={"seed": 1})
    assert open_run(changed) == run.parent / "run-003"  # another config: a new run
    (run.parent / "run-002").rename(run.parent / "run-999")  # gaps and four digits: numbered past the highest
    (run.parent / "run-999" / "metrics.json").write_text("{}")
    (run.parent / "run-003" / "metrics.json").write_text("{}")
    assert open_run(tiny_cfg) == run.parent / "run-1000"


def test_an_improving_epoch_saves_the_weights_once_and_best_is_a_copy_of_its_checkpoint(
    tiny_cfg, monkeypatch, tmp_path
):
    import shutil

    import h5py

    from kerasline.training.fit import train

    saves = []  # each save_weights call's file, kept aside (the run removes its checkpoints when it finishes)
    save_weights = keras.Model.save_weights

    def kept(model, path, *args, **kwargs):
        save_weights(model, path, *args, **kwargs)
        saves.append(shutil.copyfile(path, tmp_path / f"save-{len(saves)}.h5"))

    monkeypatch.setattr(keras.Model, "save_weights", kept)
    cfg = tiny_cfg.model_copy(update={"training": tiny_cfg.training.model_copy(update={"epochs": 1})})
    run_dir = train(cfg).run_dir  # one epoch: it improves on nothing, so it is the best

    assert len(saves) == 1  # the checkpoint's; best.weights.h5 is a copy of it
    with h5py.File(run_dir / "best.weights.h5", "r") as best, h5py.File(saves[0], "r") as checkpoint:
        names = []
        checkpoint.visit(names.append)
        arrays = [name for name in names if isinstance(checkpoint[name], h5py.Dataset)]
        assert arrays and all(np.array_equal(best[name][()], checkpoint[name][()]) for name in arrays)
    assert not list(run_dir.glob(".tmp-*"))  # the best's staging was renamed into place


@pytest.mark.parametrize(
    "epochs, written",
    [
        (range(10), [0, 1, 3, 7, 9]),  # after epochs 1, 2, 4, 8 and the fit's last, 10
        (range(8), [0, 1, 3, 7]),  # the last is a power of two: written once
        (range(5, 7), [6]),  # a resumed fit: its last
    ],
)
def test_sparse_summaries_are_written_after_epochs_1_2_4_8_and_a_fits_last(tmp_path, epochs, written):
    class Steps(EpochSummaries):
        sparse = True

        def summarise(self, epoch: int) -> None:
            tf.summary.scalar("epoch", epoch, step=epoch)

    steps = Steps(tmp_path)
    steps.on_train_begin()
    for epoch in epochs:
        steps.on_epoch_end(epoch)
    steps.on_train_end()
    events = [e for path in tmp_path.glob("events*") for e in tf.compat.v1.train.summary_iterator(str(path))]
    assert [e.step for e in events if e.summary.value] == written


def test_image_pb_is_the_summary_tf_summary_image_writes(tmp_path):
    from kerasline.training.callbacks import image_pb

    image = np.random.default_rng(0).random((7, 9, 1)).astype(np.float32)
    image[0, :3, 0] = (0.0, 1.0, 0.999)  # the ends, and a value convert_image_dtype rounds up to 255
    with tf.summary.create_file_writer(str(tmp_path)).as_default():
        tf.summary.image("reference", image[None], step=3)
        tf.summary.experimental.write_raw_pb(image_pb("ours", image).SerializeToString(), step=3)
    events = [e for path in tmp_path.glob("events*") for e in tf.compat.v1.train.summary_iterator(str(path))]
    written = {v.tag: (e.step, v) for e in events for v in e.summary.value}
    (reference_step, reference), (step, ours) = written["reference"], written["ours"]
    assert step == reference_step == 3 and ours.metadata == reference.metadata  # TensorBoard's image plugin
    (width, height, png), (*size, reference_png) = tf.make_ndarray(ours.tensor), tf.make_ndarray(reference.tensor)
    assert [width, height] == size == [b"9", b"7"]
    pixels = tf.io.decode_png(png).numpy()  # the same pixels (compressed at another zlib level)
    np.testing.assert_array_equal(pixels, tf.io.decode_png(reference_png).numpy())
    assert pixels[0, :3, 0].tolist() == [0, 255, 255]


def test_tensorboard_writes_what_keras_does_without_the_batch_scalars_that_go_nowhere(tmp_path):
    from kerasline.training.callbacks import EpochTensorBoard

    scalars: list[str] = []

    class Summary:  # tf.summary, noting the scalars asked for
        def __getattr__(self, name):
            return getattr(tf.summary, name)

        def scalar(self, name, *args, **kwargs):
            scalars.append(name)
            return tf.summary.scalar(name, *args, **kwargs)

    x, y = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32), np.arange(32) % 2
    tags = {}
    for name, board in (("keras", keras.callbacks.TensorBoard), ("ours", EpochTensorBoard)):
        counted = type("Counted", (board,), {"summary": property(lambda self: Summary())})
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
        model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
        scalars.clear()
        callbacks = [counted(str(tmp_path / name))]
        model.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), callbacks=callbacks, verbose=0)
        batch_scalars = [s for s in scalars if s.startswith("batch_")]
        assert len(batch_scalars) == (16 if name == "keras" else 0)  # loss and accuracy, 4 batches × 2 epochs
        paths = (tmp_path / name).rglob("events*")
        events = [e for path in paths for e in tf.compat.v1.train.summary_iterator(str(path))]
        tags[name] = sorted(v.tag for e in events for v in e.summary.value)
    assert tags["ours"] == tags["keras"] and "epoch_loss" in tags["ours"] and "keras" in tags["ours"]  # the graph


def test_weight_histograms_bucket_every_weight_over_its_range(tmp_path):
    from kerasline.training.callbacks import WeightHistograms

    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="dense")], name="net")
    model.get_layer("dense").bias.assign([-1.0, 0.5, 2.0])
    histograms = WeightHistograms(tmp_path)
    histograms.set_model(model)
    histograms.on_train_begin()
    histograms.on_epoch_end(0)
    histograms.on_train_end()
    events = [e for path in tmp_path.glob("events*") for e in tf.compat.v1.train.summary_iterator(str(path))]
    written = {v.tag: tf.make_ndarray(v.tensor) for e in events for v in e.summary.value}
    assert set(written) == {"net/dense/kernel/histogram", "net/dense/bias/histogram"}  # the weights' Keras paths
    for weight in model.get_layer("dense").weights:
        buckets = written[f"{weight.path}/histogram"]  # rows (left edge, right edge, count), 30 of them
        values = np.asarray(weight)
        assert buckets.shape == (30, 3) and buckets[:, 2].sum() == values.size
        assert buckets[0, 0] == pytest.approx(values.min()) and buckets[-1, 1] == pytest.approx(values.max())
