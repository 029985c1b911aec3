"""Transfer learning: `model.init_from` (a new run starts from an earlier run's or export's weights, matched by layer
name and shape) and `data.labels_per_class` (few-label training sets, nested between budgets)."""

import json
import shutil
from collections import Counter
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasline.config import load_experiment
from kerasline.errors import ConfigError, UserError
from kerasline.training.fit import compile_model, setup, train
from kerasline.training.init_from import REPORT_FILE, by_key, initialise, read_source, source_run
from kerasline.training.tasks import task_for

IMAGE = """
name = "{name}"
seed = 7
runs_dir = "{root}/runs"

[data]
name = "mnist_8k"
limit = 160
batch_size = 32

[model]
name = "cnn"
filters = {filters}
convs_per_block = 1
dense_units = {dense}
{init_from}

[training]
epochs = {epochs}

[export]
dir = "{root}/exports"
parity_samples = 8
"""

TEXT = """
name = "text"
runs_dir = "{root}/runs"

[data]
input = "tokens"
name = "imdb_vocab500"
num_classes = 2
sequence_length = 24
limit = 96
batch_size = 32

[model]
name = "rnn"
units = 8
embedding_dim = 8
init_from = "{source}"

[training]
epochs = 1
"""


def image_experiment(root: Path, name: str, filters=(8,), dense=16, epochs=1, init_from=None) -> Path:
    path = root / f"{name}.toml"
    line = f'init_from = "{init_from}"' if init_from else ""
    path.write_text(
        IMAGE.format(name=name, root=root, filters=list(filters), dense=dense, init_from=line, epochs=epochs)
    )
    return path


def layer_weights(model: keras.Model) -> dict[str, list[np.ndarray]]:
    """Every weighted layer's weights by name, nested models opened up."""
    found = {}
    for layer in model._flatten_layers(include_self=False):
        if layer.weights and not isinstance(layer, keras.Model):
            found[layer.name] = [np.array(w) for w in layer.get_weights()]
    return found


class WeightsAtStart(keras.callbacks.Callback):
    """The weights fit begins from: after init_from, before the first step."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: dict[str, list[np.ndarray]] = {}

    def on_train_begin(self, logs=None) -> None:
        self.weights = layer_weights(self.model)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> dict:
    """A tiny finished image run (one conv block), and an export of it."""
    from kerasline.export import export_run

    root = tmp_path_factory.mktemp("source")
    cfg = load_experiment(str(image_experiment(root, "source")))
    run_dir = train(cfg).run_dir
    version = export_run(cfg, run_dir)
    weights = layer_weights(task_for(cfg).export_model(run_dir / "best.weights.h5"))
    return {"cfg": cfg, "run_dir": run_dir, "version": version, "weights": weights}


def fresh_weights(cfg) -> dict[str, list[np.ndarray]]:
    """The weights `train` would start from without init_from: the same seed, the same steps before the build."""
    setup(cfg)
    data = task_for(cfg).build_inputs()
    return layer_weights(compile_model(cfg, data.steps_per_epoch))


def assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_init_from_loads_what_matches_and_reports_the_rest(source, tmp_path, capsys):
    """A second conv block is new; the dense layers' shapes differ (another flatten size and width): skipped."""
    path = image_experiment(tmp_path, "target", filters=(8, 16), dense=24, init_from=source["run_dir"])
    cfg = load_experiment(str(path))
    start = WeightsAtStart()
    run_dir = train(cfg, callbacks=[start]).run_dir

    report = json.loads((run_dir / REPORT_FILE).read_text())
    assert report["source"] == str(source["run_dir"])
    assert sorted(report["loaded"]) == ["block0_bn0", "block0_conv0"]
    assert sorted(report["new"]) == ["block1_bn0", "block1_conv0"]
    assert sorted(report["skipped"]) == ["hidden", "logits"]
    assert report["skipped"]["logits"] == "shapes [(16, 10), (10,)] in the source, [(24, 10), (10,)] here"
    out = capsys.readouterr().out
    assert f"init from:   {source['run_dir']}: 2 layers loaded, 2 new, 2 skipped for their shapes" in out

    for name in report["loaded"]:  # kernels, BatchNorm's gamma, beta and moving statistics
        assert_same(start.weights[name], source["weights"][name])
    fresh = fresh_weights(cfg)
    for name in [*report["new"], *report["skipped"]]:
        assert_same(start.weights[name], fresh[name])
    assert not np.array_equal(fresh["block0_conv0"][0], source["weights"]["block0_conv0"][0])


def test_init_from_an_export_version_loads_the_run_it_came_from(source, tmp_path):
    assert source_run(str(source["version"])) == source["run_dir"]
    cfg = load_experiment(str(image_experiment(tmp_path, "target", init_from=source["version"])))
    model = compile_model(cfg, steps_per_epoch=1)
    report = initialise(model, read_source(cfg.model.init_from), tmp_path)
    assert report["source"] == str(source["run_dir"])
    assert sorted(report["loaded"]) == ["block0_bn0", "block0_conv0", "hidden", "logits"]
    assert report["new"] == [] and report["skipped"] == {}
    assert json.loads((tmp_path / REPORT_FILE).read_text()) == report
    weights = layer_weights(model)
    for name in report["loaded"]:
        assert_same(weights[name], source["weights"][name])


def test_an_experiments_runs_directory_means_its_newest_finished_run(tmp_path):
    runs = tmp_path / "runs" / "pretrain"
    finished = ("config.toml", "best.weights.h5", "metrics.json")
    for number, files in ((1, finished), (2, finished), (3, ())):
        (runs / f"run-{number:03d}").mkdir(parents=True)
        for name in files:
            (runs / f"run-{number:03d}" / name).write_text("")
    (runs / "run-003" / "config.toml").write_text("")  # begun, not one epoch done: no best weights
    assert source_run(str(runs)) == runs / "run-002"
    assert source_run(str(runs / "run-001")) == runs / "run-001"
    for not_a_run in (runs / "run-003", tmp_path / "nowhere", tmp_path):
        with pytest.raises(UserError, match=r"^model.init_from: .*: not a finished run, an experiment's runs or an"):
            source_run(str(not_a_run))


def test_a_run_still_training_is_not_a_source(tmp_path):
    """A run still training (or killed) rewrites best.weights.h5 after every better epoch; metrics.json marks it
    finished."""
    runs = tmp_path / "runs" / "pretrain"
    for number in (1, 2):
        (runs / f"run-{number:03d}").mkdir(parents=True)
        for name in ("config.toml", "best.weights.h5"):
            (runs / f"run-{number:03d}" / name).write_text("")
    (runs / "run-001" / "metrics.json").write_text("{}")
    assert source_run(str(runs)) == runs / "run-001"
    with pytest.raises(UserError):
        source_run(str(runs / "run-002"))


def test_unnamed_layers_match_by_kind_and_place_across_models():
    """Keras numbers unnamed layers per process (dense_3, dense_4): the second model's must still match."""

    def model():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2), keras.layers.ReLU()])

    first, second = model(), model()
    assert [layer.name for layer in first.layers] != [layer.name for layer in second.layers]
    assert list(by_key(first.layers[:2])) == list(by_key(second.layers[:2])) == ["dense#0", "dense#1"]
    named = keras.layers.Dense(3, name="dense_head")
    named.build((None, 4))
    assert list(by_key([named])) == ["dense_head"]


class Interrupted(Exception):
    pass


class StopAtEpoch(keras.callbacks.Callback):
    """Raises as epoch `epoch` begins: the epochs before it are checkpointed, the run is left unfinished."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None) -> None:
        if epoch == self.epoch:
            raise Interrupted


def test_init_from_is_ignored_when_the_run_resumes_from_its_own_checkpoint(source, tmp_path, capsys):
    copy = tmp_path / "pretrained" / "run-001"
    shutil.copytree(source["run_dir"], copy)
    cfg = load_experiment(str(image_experiment(tmp_path, "target", epochs=2, init_from=copy)))
    with pytest.raises(Interrupted):
        train(cfg, callbacks=[StopAtEpoch(1)])
    assert "init from:   " in capsys.readouterr().out
    run_dir = tmp_path / "runs" / "target" / "run-001"
    report = (run_dir / REPORT_FILE).read_text()
    after_epoch_1 = layer_weights(task_for(cfg).export_model(run_dir / "best.weights.h5"))  # its only epoch

    shutil.rmtree(copy)  # were the resumed run to look at its init_from again, it would refuse
    start = WeightsAtStart()
    resumed = train(cfg, callbacks=[start])
    assert resumed.run_dir == run_dir and resumed.resumed_at == "epoch 2"
    assert "init from:" not in capsys.readouterr().out
    assert (run_dir / REPORT_FILE).read_text() == report
    assert start.weights.keys() == after_epoch_1.keys()
    for name, weights in start.weights.items():  # its own checkpoint's, not the source's
        assert_same(weights, after_epoch_1[name])
    assert not np.array_equal(start.weights["hidden"][0], source["weights"]["hidden"][0])


def one_line_refusal(proc, expected: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr[-3000:]


def test_cli_refuses_init_from_a_path_that_is_not_a_run(tmp_path, kerasline):
    (tmp_path / "empty").mkdir()
    path = image_experiment(tmp_path, "target", init_from=tmp_path / "empty")
    proc = kerasline("train", str(path))
    one_line_refusal(proc, f"model.init_from: {tmp_path / 'empty'}: not a finished run, an experiment's runs or an")
    assert not (tmp_path / "exports").exists() and not (tmp_path / "runs").exists()  # refused before a run opened


def test_cli_refuses_a_source_whose_layers_match_nothing(source, tmp_path, kerasline):
    """A text model from an image run: no layer name and weight shapes in common."""
    path = tmp_path / "text.toml"
    path.write_text(TEXT.format(root=tmp_path, source=source["run_dir"]))
    proc = kerasline("train", str(path))
    one_line_refusal(proc, f"model.init_from: no layer of {source['run_dir']} matches this model's by name and")
    assert not (tmp_path / "exports").exists() and not (tmp_path / "runs").exists()  # refused before a run opened


def test_a_source_whose_weights_cannot_be_read_is_refused_before_a_run_opens(source, tmp_path):
    copy = tmp_path / "pretrain" / "run-001"
    shutil.copytree(source["run_dir"], copy)
    (copy / "best.weights.h5").write_text("not an HDF5 file")
    cfg = load_experiment(str(image_experiment(tmp_path, "target", init_from=copy)))
    with pytest.raises(UserError) as err:
        train(cfg)
    assert str(err.value).startswith(f"model.init_from: {copy}: its best.weights.h5 cannot be read (")
    assert not (tmp_path / "runs").exists()


def whole(split) -> tuple[np.ndarray, np.ndarray]:
    images, labels = split.batch(100_000).get_single_element()
    return images.numpy(), labels.numpy()


def training_split(cfg) -> tuple[np.ndarray, np.ndarray]:
    return whole(task_for(cfg).load_splits().train)


def held_out(cfg) -> list[np.ndarray]:
    splits = task_for(cfg).load_splits()
    return [part for split in (splits.validation, splits.test) for part in whole(split)]


def rows(images: np.ndarray) -> Counter:
    return Counter(image.tobytes() for image in images)


def without_budget(cfg):
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"labels_per_class": None})})


def test_labels_per_class_keeps_n_of_each_class_nested_with_validation_and_test_unchanged():
    """The UCI training split holds 48 zeros (and 57 to 68 of each other digit): a budget of 50 keeps all 48."""
    budgets = {n: load_experiment("uci_digits_scratch", [f"data.labels_per_class={n}"]) for n in (10, 30, 50)}
    everything = without_budget(budgets[10])
    all_images, all_labels = training_split(everything)
    assert len(all_images) == 1200 - 480 - 120
    available, unchanged = Counter(all_labels.tolist()), held_out(everything)
    assert available[0] == 48 and min(count for label, count in available.items() if label) > 50
    kept = {}
    for n, cfg in budgets.items():
        images, labels = training_split(cfg)
        assert Counter(labels.tolist()) == {label: min(n, count) for label, count in available.items()}
        kept[n] = rows(images)
        assert kept[n] <= rows(all_images)  # examples of the training split, each once
        for part, reference in zip(held_out(cfg), unchanged, strict=True):  # images and labels of each
            np.testing.assert_array_equal(part, reference)
    assert kept[10] <= kept[30] <= kept[50]
    assert rows(training_split(budgets[10])[0]) == kept[10]  # seeded: the same examples every time


def table_rows(columns: dict[str, np.ndarray]) -> set[tuple]:
    return set(zip(*(columns[key].tolist() for key in sorted(columns)), strict=True))


def test_labels_per_class_on_a_table():
    from kerasline.pipelines.table import read_table

    cfg = {n: load_experiment("penguins_species", [f"data.labels_per_class={n}"]) for n in (5, 20)}
    few, more = (read_table(c.data, c.seed) for c in cfg.values())
    everything = read_table(without_budget(cfg[5]).data, cfg[5].seed)
    assert Counter(few.train[1].tolist()) == dict.fromkeys(range(3), 5)
    assert Counter(more.train[1].tolist()) == dict.fromkeys(range(3), 20)
    assert table_rows(few.train[0]) <= table_rows(more.train[0])
    for part in ("validation", "test"):
        np.testing.assert_array_equal(getattr(few, part)[1], getattr(everything, part)[1])


@pytest.mark.parametrize(
    "experiment, overrides, expected",
    [
        ("uci_digits_scratch", ["data.labels_per_class=0"], "data.labels_per_class: input should be greater than 0"),
        (
            "digits_mlp_regression",
            ["data.labels_per_class=10"],
            "data.labels_per_class: keeps N labelled examples per class of a samples or csv source",
        ),
        (
            "penguins_body_mass",
            ["data.labels_per_class=10"],
            "data.labels_per_class: keeps N labelled examples per class of a samples or csv source",
        ),
        (
            "mnist_cnn",
            ["data.source=tfds", "data.name=mnist", "data.labels_per_class=10"],
            "data.labels_per_class: keeps N labelled examples per class of a samples or csv source",
        ),
        (
            "digits_conv_autoencoder",
            ["data.labels_per_class=10"],
            "data.labels_per_class: autoencoder does reconstruct, which has no labels",
        ),
    ],
)
def test_label_budgets_are_refused_where_there_are_no_class_labels(experiment, overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_experiment(experiment, overrides)
    assert expected in str(err.value) and "\n" not in str(err.value)
