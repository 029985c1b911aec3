"""The experiment schema, overrides and the one-line error contract."""

import tomllib
from pathlib import Path

import pytest

from kerasline.config import ExperimentConfig, load_experiment, to_toml, validate
from kerasline.errors import ConfigError
from kerasline.shipped import shipped_dir

ROOT = Path(__file__).resolve().parents[1]


def test_default_experiment_validates():
    cfg = load_experiment("mnist_cnn")
    assert cfg.name == "mnist_cnn"
    assert cfg.data.image_shape == (28, 28, 1)
    assert cfg.model_name == "mnist_cnn"


def test_overrides_parse_values_as_toml():
    cfg = load_experiment(
        "mnist_cnn",
        [
            "training.epochs=3",
            "model.filters=[16, 32]",
            "training.optimizer.learning_rate=5e-4",
            "deterministic=true",
            "data.augment.flip=horizontal",
        ],
    )
    assert cfg.training.epochs == 3
    assert cfg.model.filters == (16, 32)
    assert cfg.training.optimizer.learning_rate == 5e-4
    assert cfg.deterministic is True
    assert cfg.data.augment.flip == "horizontal"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("training.epoch=3", "training.epoch: unknown key (did you mean 'epochs'?)"),
        (
            "training.optimizer.name=adm",
            "training.optimizer.name: 'adm' is not one of sgd, rmsprop, adagrad, adam, adamw (did you mean 'adam'?)",
        ),
        ("data.batch_size=0", "data.batch_size: input should be greater than or equal to 1 (got 0)"),
        ("model.filters=[8, 8, 8, 8, 8]", "model.filters: cnn as configured needs images of at least 32x32"),
        ("model.dropout=1.5", "model.dropout: input should be less than 1"),
        ("training.epochs=three", "training.epochs: input should be a valid integer"),
        ("data.augment.zoom=-0.1", "data.augment.zoom: input should be greater than or equal to 0"),
        ("modle.filters=[8]", "modle: unknown key (did you mean 'model'?)"),
        ("seed.value=1", "seed: is a value, not a section"),
        ("name=../escape", "name: string should match pattern"),
        ("data.shard=file", "data.shard: 'file' needs a source of many files (tfds or folder); samples is one file"),
    ],
)
def test_bad_values_name_the_key(override, expected):
    with pytest.raises(ConfigError) as err:
        load_experiment("mnist_cnn", [override])
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_several_steps_per_call_are_refused_across_workers():
    """Keras 3.15 cannot run them under MultiWorkerMirroredStrategy; a job would fail only once it started."""
    assert load_experiment("mnist_cnn", ["training.steps_per_execution=8"]).training.steps_per_execution == 8
    with pytest.raises(ConfigError, match="training.steps_per_execution: must be 1 under training.strategy"):
        load_experiment("mnist_cnn", ["training.steps_per_execution=8", "training.strategy=multi_worker"])


def test_resolved_config_round_trips_through_toml():
    cfg = load_experiment("mnist_cnn", ["training.epochs=4"])
    assert validate(tomllib.loads(to_toml(cfg))) == cfg


def test_every_shipped_experiment_validates():
    files = sorted(shipped_dir("experiments").rglob("*.toml"))
    assert files
    for path in files:
        assert isinstance(load_experiment(str(path)), ExperimentConfig)


def test_readme_experiment_example_validates():
    readme = (ROOT / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    cfg = validate({"name": "readme", **tomllib.loads(example)})
    assert cfg.model.filters == (32, 64, 128) and cfg.training.optimizer.clipnorm == 1.0


@pytest.mark.parametrize("exp", ["../../etc/passwd", "/abs/name", "a/../b"])
def test_experiment_names_cannot_escape(exp):
    with pytest.raises(ConfigError):
        load_experiment(exp)


def test_cli_config_prints_resolved_toml(kerasline):
    proc = kerasline("config", "mnist_cnn", "training.epochs=2")
    assert proc.returncode == 0, proc.stderr
    assert tomllib.loads(proc.stdout)["training"]["epochs"] == 2


@pytest.mark.parametrize(
    "args, needle",
    [
        (["config", "mnist_cnn", "training.optimzer.name=adam"], "did you mean 'optimizer'"),
        (["config", "no_such_experiment"], "no such experiment file"),
        (["train", "mnist_cnn", "data.name=missing_file"], "missing_file.npz: no such data file"),
    ],
)
def test_cli_user_errors_are_one_line_exit_2(kerasline, args, needle):
    proc = kerasline(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_bad_toml_is_one_line(kerasline, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\nname = 1\n")
    proc = kerasline("config", str(bad))
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr and "Traceback" not in proc.stderr


def test_a_model_section_without_a_name_is_the_cnn():
    cfg = validate({"name": "x", "model": {"filters": [8]}})
    assert cfg.model.name == "cnn" and cfg.model.filters == (8,)
