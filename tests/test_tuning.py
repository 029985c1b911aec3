"""`kerasline tune`: searches, resumes, reports, and feeds its best values back to `train`."""

import json
import signal
import subprocess
import sys
import textwrap
import tomllib

import pytest

from kerasline.config import experiment_path, load_experiment
from kerasline.errors import ConfigError, UserError

TINY_TUNE = """
[tune]
algorithm = "{algorithm}"
max_trials = {max_trials}
epochs = 2
hyperband_factor = 2

[tune.space."training.optimizer.learning_rate"]
type = "float"
min = 1e-3
max = 1e-2
sampling = "log"

[tune.space."model.dense_units"]
type = "int"
min = 8
max = 32
step = 8

[tune.space."model.filters"]
type = "choice"
values = [[4], [8]]

[tune.space."model.batch_norm"]
type = "bool"
"""

# Two logical CPUs, then the real CLI: the search runs under a 2-replica MirroredStrategy.
TWO_CPUS = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from kerasline.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def experiment_with_tune(tiny_experiment, algorithm="random", max_trials=2, space=None):
    text = tiny_experiment.read_text() + TINY_TUNE.format(algorithm=algorithm, max_trials=max_trials)
    if space is not None:
        text = text.split("[tune.space.", 1)[0] + space
    tiny_experiment.write_text(text)
    return tiny_experiment


def cli(*args, script=None, timeout=600):
    prefix = ["-c", script] if script else ["-m", "kerasline.cli"]
    return subprocess.run([sys.executable, *prefix, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("algorithm", ["random", "hyperband"])
def test_search_under_two_replicas_writes_a_tuned_experiment_that_trains(tiny_experiment, algorithm):
    path = experiment_with_tune(tiny_experiment, algorithm)
    proc = cli("tune", str(path), "training.strategy=mirrored", script=TWO_CPUS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replicas:    2" in proc.stdout  # every trial trained under the 2-replica MirroredStrategy

    cfg = load_experiment(str(path))
    (search_dir,) = (path.parent / "runs" / "tiny").glob("tune-*")
    best = json.loads((search_dir / "best.json").read_text())
    assert best["objective"] == "val_accuracy" and 0.0 <= best["score"] <= 1.0
    values = best["values"]
    assert 1e-3 <= values["training.optimizer.learning_rate"] <= 1e-2
    assert values["model.dense_units"] in (8, 16, 24, 32)
    assert values["model.filters"] in ("[4]", "[8]") and isinstance(values["model.batch_norm"], bool)
    assert f"best so far {best['score']:.4f}" in proc.stdout  # progress lines while it runs

    tuned_path = path.parent / "tuned" / "tiny.toml"
    tuned = load_experiment(str(tuned_path))
    assert tuned.name == "tiny_tuned" and tuned.training.strategy == "mirrored"
    assert tuned.model.dense_units == values["model.dense_units"]
    assert list(tuned.model.filters) == json.loads(values["model.filters"])
    assert tuned.training.optimizer.learning_rate == values["training.optimizer.learning_rate"]
    assert tuned.data == cfg.data.model_copy(update={"augment": tuned.data.augment})  # the rest is the original

    if algorithm == "random":
        trained = cli("train", str(tuned_path), "training.strategy=one_device", "--no-export")
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert "run:         " in trained.stdout
        assert "export:      skipped (--no-export)" in trained.stdout and not (path.parent / "exports").exists()
    else:
        dry = cli("train", str(tuned_path), "--dry-run")
        assert dry.returncode == 0, dry.stderr[-3000:]


def test_interrupted_search_resumes_without_redoing_a_trial(tiny_experiment):
    path = experiment_with_tune(tiny_experiment, max_trials=3)
    die_after_first_trial = textwrap.dedent(
        """
        import os, signal, sys
        import kerasline.tuning.search as search
        original = search._Progress.on_trial_end
        def on_trial_end(self, trial):
            original(self, trial)
            os.kill(os.getpid(), signal.SIGKILL)
        search._Progress.on_trial_end = on_trial_end
        from kerasline.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    killed = cli("tune", str(path), script=die_after_first_trial)
    assert killed.returncode == -signal.SIGKILL
    (search_dir,) = (path.parent / "runs" / "tiny").glob("tune-*")
    first = (search_dir / "trial_0" / "trial.json").read_text()
    assert json.loads(first)["status"] == "COMPLETED"

    resumed = cli("tune", str(path))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trial_lines = [line for line in resumed.stdout.splitlines() if line.startswith("trial ") and " of 3)" in line]
    assert [line.split()[1] for line in trial_lines] == ["1", "2"]  # trial 0 was not run again
    assert (search_dir / "trial_0" / "trial.json").read_text() == first

    restarted = cli("tune", str(path), "--restart", "tune.max_trials=3")
    assert restarted.returncode == 0
    assert [line.split()[1] for line in restarted.stdout.splitlines() if " of 3)" in line] == ["0", "1", "2"]


def test_a_failed_trial_is_reported_with_its_error_and_the_search_goes_on(tiny_experiment, capsys):
    from kerasline.cli import main

    space = '[tune.space."data.name"]\ntype = "choice"\nvalues = ["mnist_8k", "no_such_sample"]\n'
    path = experiment_with_tune(tiny_experiment, max_trials=2, space=space)
    assert main(["tune", str(path)]) == 0
    out = capsys.readouterr().out
    rows = [line.split(None, 3) for line in out.splitlines() if line.strip().split(" ")[0] in ("0", "1")]
    statuses = {row[1] for row in rows}
    assert statuses == {"completed", "failed"} or statuses == {"completed", "invalid"}, out
    assert "no_such_sample.npz: no such data file" in out
    best = json.loads(next((path.parent / "runs" / "tiny").glob("tune-*/best.json")).read_text())
    assert best["values"] == {"data.name": '"mnist_8k"'}


def test_wall_clock_budget_stops_between_trials(tiny_experiment, capsys):
    from kerasline.cli import main

    path = experiment_with_tune(tiny_experiment, max_trials=5)
    assert main(["tune", str(path), "tune.budget_minutes=0.0001"]) == 0
    out = capsys.readouterr().out
    assert "budget of 0.0001 min spent: the search stopped between trials" in out
    assert sum(" of 5)" in line for line in out.splitlines()) == 1


def test_trials_write_hparams_for_tensorboard(tiny_experiment):
    from kerasline.tuning import tune

    path = experiment_with_tune(tiny_experiment, max_trials=1)
    cfg = load_experiment(str(path))
    result = tune(cfg, path, [], restart=False)
    events = list((result.search_dir / "logs").rglob("events.out.tfevents.*"))
    assert any(b"hparams" in e.read_bytes() for e in events)
    assert any("validation" in e.parts for e in events)  # per-trial curves


def test_missing_tensorboard_is_said_plainly(tiny_experiment, monkeypatch):
    import importlib.util

    from kerasline.tuning import tune

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(UserError, match="keras-tuner needs the tensorboard package"):
        tune(load_experiment(str(tiny_experiment)), tiny_experiment, [], restart=False)


@pytest.mark.parametrize(
    "space, needle",
    [
        (
            '"model.dropot" = {type = "float", min = 0.1, max = 0.2}',
            "'model.dropot' is not a config key (did you mean 'model.dropout'?)",
        ),
        ('"model.dropout" = {type = "float", min = 0.4, max = 0.1}', "empty range: min 0.4 is not below max 0.1"),
        (
            '"model.dropout" = {type = "float", min = 0.1, max = 1.5}',
            "model.dropout = 1.5 is invalid: model.dropout: input should be less than 1",
        ),
        ('"model.dense_units" = {type = "int", min = 4, max = 5, step = 2}', "empty range: no step of 2 fits"),
        ('"model.filters" = {type = "choice", values = []}', "values: list should have at least 1 item"),
        (
            '"training.optimizer.learning_rate" = {type = "float", min = 0, max = 0.1, sampling = "log"}',
            "log sampling needs min > 0",
        ),
        ('"model.dropout" = {type = "normal"}', "tune.space.model.dropout"),
    ],
)
def test_bad_spaces_are_rejected_before_any_trial(tmp_path, space, needle):
    path = tmp_path / "bad.toml"
    path.write_text(f"[tune.space]\n{space}\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(str(path))
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("tune.algorithm=grid", "not one of random, hyperband, bayesian"),
        ("tune.objective=val_f1", "not one of val_loss, val_accuracy"),
    ],
)
def test_unknown_algorithm_or_objective_is_rejected(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_experiment("mnist_cnn", [override])


def test_every_family_ships_a_default_space_that_validates():
    from kerasline.config import MODEL_CONFIGS, validate

    tokens = {"input": "tokens", "name": "imdb_vocab500", "num_classes": 2}
    for family, config_class in MODEL_CONFIGS.items():
        data = {} if "image" in config_class.inputs else tokens
        if config_class.task == "segmentation":
            data = {"task": "segmentation", "image_shape": [32, 32, 1]}
        cfg = validate({"name": "x", "data": data, "model": {"name": family}})
        assert cfg.tune.space and set(cfg.tune.space) == set(config_class.default_space)
    raw = tomllib.loads(experiment_path("mnist_cnn").read_text())
    assert "tune" not in raw  # `make tune` works on the default experiment with no [tune] section
