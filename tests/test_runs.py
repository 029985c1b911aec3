"""What every run leaves (run.json, run.log, learning_curves.png) and `kerasline runs`: the table, --compare, --json.

One small experiment trained three times in this process (a subprocess would import TensorFlow again): run-001
finishes (its export is recorded by hand: publishing is tested elsewhere), run-002 diverges (faulty.py's
nan-weights:0: NaN weights at the end of its first epoch), run-003 (silent, 2 epochs) is interrupted after its first
epoch, as Ctrl-C or a kill leaves it.
"""

import contextlib
import io
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from kerasline.cli import main
from kerasline.config import load_experiment
from kerasline.errors import DataError, Diverged, Preempted
from kerasline.export.repository import write_blessing
from kerasline.training.checkpoint import ResumePoint, RunCheckpoint
from kerasline.training.fit import train
from kerasline.training.runlog import console_log
from kerasline.training.runs import read_record, recorded

EPOCH_LINE = re.compile(r"^\d+/\d+ - .*val_loss: ", re.MULTILINE)  # verbose = "epoch": one line per epoch
TINY = """
name = "tiny"
seed = 7
runs_dir = "{root}/runs"

[data]
limit = 160
batch_size = 32

[model]
filters = [4]
convs_per_block = 1
dense_units = 8

[training]
epochs = 1

[export]
dir = "{root}/exports"
"""


def train_captured(experiment: Path, *overrides: str) -> str:
    """train() as `kerasline train` calls it, returning what it printed; a divergence or Ctrl-C ends it."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(Diverged, KeyboardInterrupt):
        train(load_experiment(str(experiment), overrides))
    return out.getvalue()


def nan_weights_after_first_epoch(original):
    def on_epoch_end(self, epoch, logs=None):  # the loss stays finite: only the weights check sees it
        self.model.weights[0].assign(np.full(self.model.weights[0].shape, np.nan, "float32"))
        original(self, epoch, logs)

    return on_epoch_end


def interrupt_second_epoch(original):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt  # after the first epoch's checkpoint, history and curves
        original(self, epoch, logs)

    return on_epoch_begin


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("runs")
    experiment = folder / "tiny.toml"
    experiment.write_text(TINY.format(root=folder))
    finished = train_captured(experiment)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunCheckpoint, "on_epoch_end", nan_weights_after_first_epoch(RunCheckpoint.on_epoch_end))
        train_captured(experiment)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunCheckpoint, "on_epoch_begin", interrupt_second_epoch(RunCheckpoint.on_epoch_begin))
        silent = train_captured(experiment, "training.epochs=2", "training.verbose=silent")
    runs, model_dir = folder / "runs" / "tiny", folder / "exports" / "tiny"
    (model_dir / "1").mkdir(parents=True)  # what export_run publishes, as far as the table reads it
    (model_dir / "1" / "verification.json").write_text(json.dumps({"run_dir": str(runs / "run-001")}))
    write_blessing(model_dir, 1, {"version": 1, "verdict": "BLESSED", "reasons": []})  # what `evaluate` records
    return {"experiment": experiment, "runs": runs, "finished": finished, "silent": silent}


def cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_each_run_records_its_status_and_times(trained):
    finished, diverged, interrupted = (read_record(trained["runs"] / f"run-00{i}") for i in (1, 2, 3))
    assert finished["status"] == "finished" and finished["ended"] and finished["wall_s"] > 0
    assert diverged["status"] == "diverged" and diverged["error"].startswith("training diverged in epoch 1")
    assert interrupted["status"] == "unfinished" and interrupted["ended"] is None


def test_the_table_shows_status_epochs_best_test_and_exports(trained, capsys, monkeypatch):
    monkeypatch.chdir(trained["experiment"].parent)
    code, out, err = cli(capsys, "runs", "tiny.toml")
    assert code == 0, err
    header, *rows, error = out.splitlines()
    assert header.split() == ["run", "status", "started", "wall", "epochs", "best", "test", "exports"]
    assert [row.split()[:2] for row in rows] == [
        ["run-001", "finished"],
        ["run-002", "diverged"],
        ["run-003", "unfinished"],
    ]
    assert re.search(r"  1  +val_loss \d\.\d{4}  +accuracy \d\.\d{4}  loss \d\.\d{4}  +v1 BLESSED$", rows[0])
    assert re.search(r"  0  +-  +-  +-$", rows[1])  # the diverged epoch is not recorded; nothing exported
    assert re.search(r"  -  +1  +val_loss \d\.\d{4}  +-  +-$", rows[2])  # interrupted: no end, no wall time
    assert error.startswith("run-002: training diverged in epoch 1")


def test_json_and_every_experiment_with_an_unreadable_run(trained, capsys, monkeypatch):
    monkeypatch.chdir(trained["experiment"].parent)
    broken = Path("runs/other/run-001")
    broken.mkdir(parents=True)
    (broken / "config.toml").write_text("name = [unclosed")
    code, out, err = cli(capsys, "runs", "--json")  # no experiment: every experiment under runs/
    assert code == 0, err
    rows = {row["run"]: row for row in json.loads(out)}
    assert list(rows) == ["other/run-001", "tiny/run-001", "tiny/run-002", "tiny/run-003"]
    assert rows["other/run-001"]["status"] == "unreadable" and "TOMLDecodeError" in rows["other/run-001"]["error"]
    finished = rows["tiny/run-001"]
    assert finished["epochs"] == 1 and finished["monitor"] == "val_loss"
    assert set(finished["test"]) == {"accuracy", "loss"}
    assert [(e["version"], e["verdict"]) for e in finished["exports"]] == [(1, "BLESSED")]
    code, out, err = cli(capsys, "runs")
    assert code == 0 and "other/run-001  unreadable" in out and "tiny/run-003   unfinished" in out


def test_compare_prints_the_config_differences_and_results_side_by_side(trained, capsys, monkeypatch):
    monkeypatch.chdir(trained["experiment"].parent)
    code, out, err = cli(capsys, "runs", "tiny.toml", "--compare", "run-001", "run-003")
    assert code == 0, err
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == ["run-001", "run-003"] and lines[1] == ["config"]
    assert lines[2:4] == [["training.epochs", "1", "2"], ["training.verbose", '"epoch"', '"silent"']]
    assert ["status", "finished", "unfinished"] in lines and ["epochs", "1", "1"] in lines
    assert [line[:3] for line in lines if line[:2] == ["test", "accuracy"]][0][2] != "-"
    code, out, err = cli(capsys, "runs", "tiny.toml", "--compare", "run-001", "run-003", "--json")
    compared = json.loads(out)
    assert compared["config"] == {"training.epochs": [1, 2], "training.verbose": ["epoch", "silent"]}
    assert compared["results"]["test loss"][1] is None
    code, out, err = cli(capsys, "runs", "tiny.toml", "--compare", "run-001", "run-009")
    assert code == 2 and err.startswith("error: --compare run-009: no run") and err.count("\n") == 1


def test_a_run_leaves_its_console_and_learning_curves(trained):
    finished, interrupted = trained["runs"] / "run-001", trained["runs"] / "run-003"
    epoch_lines = EPOCH_LINE.findall(trained["finished"])
    assert len(epoch_lines) == 1
    log = (finished / "run.log").read_text()
    assert log.startswith("--- ") and EPOCH_LINE.findall(log) == epoch_lines
    for run in (finished, interrupted):  # interrupted: drawn as the exception left training
        assert (run / "learning_curves.png").read_bytes().startswith(b"\x89PNG")
    assert "training diverged in epoch 1" in (trained["runs"] / "run-002" / "run.log").read_text().splitlines()[-1]


def test_curves_that_cannot_be_written_warn_and_leave_the_run_alone(tmp_path, capsys):
    history = [{"epoch": 0, "loss": 0.5, "val_loss": 0.6}]
    checkpoint = RunCheckpoint(tmp_path / "gone", "val_loss", ResumePoint(history=history), [], total_epochs=1)
    checkpoint.draw_learning_curves()  # its run directory does not exist: the write fails with an OSError
    warning = capsys.readouterr().err.strip()
    assert warning.startswith(f"warning: {tmp_path / 'gone' / 'learning_curves.png'} not drawn: ")
    assert not (tmp_path / "gone").exists()


def test_silent_prints_no_epoch_lines(trained):
    assert not EPOCH_LINE.search(trained["silent"])
    assert not EPOCH_LINE.search((trained["runs"] / "run-003" / "run.log").read_text())


def test_a_bad_verbose_value_is_one_config_line(capsys):
    code, out, err = cli(capsys, "config", "mnist_cnn", "training.verbose=epochs")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert err.endswith("training.verbose: 'epochs' is not one of bar, epoch, silent (did you mean 'epoch'?)\n")


def test_dry_run_prints_the_model_summary(trained, capsys, monkeypatch):
    monkeypatch.chdir(trained["experiment"].parent)
    code, out, err = cli(capsys, "train", "tiny.toml", "--dry-run")
    assert code == 0, err
    assert 'Model: "' in out and "Total params:" in out and "Conv2D" in out
    assert out.splitlines()[-1].startswith("dry run: tiny: ")


@pytest.mark.parametrize(
    "error, status", [(Preempted("stop"), "preempted"), (Diverged("nan"), "diverged"), (DataError("bad"), "failed")]
)
def test_how_a_run_ended_is_recorded(tmp_path, error, status):
    with pytest.raises(type(error)), recorded(tmp_path):
        assert read_record(tmp_path)["status"] == "unfinished"
        raise error
    record = read_record(tmp_path)
    assert record["status"] == status and record["error"] == str(error) and record["ended"]
    with recorded(tmp_path):  # resumed: the first start stays, the wall time adds up
        pass
    resumed = read_record(tmp_path)
    assert resumed["started"] == record["started"] and resumed["attempts"] == 2 and resumed["status"] == "finished"


def test_the_log_keeps_a_redrawn_bar_as_its_last_state_and_the_console_unchanged(tmp_path, capsys):
    logger = logging.getLogger("test_runs")  # like TensorFlow's: a handler bound to the stderr of its import
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    try:
        with console_log(tmp_path / "run.log"):
            print("1/3 \x1b[1m[=  ]\x1b[0m\b\b\b\r2/3 [== ]\b\b\b\r3/3 [===]")
            print("warning", file=sys.stderr)
            logger.warning("logged")
    finally:
        logger.removeHandler(handler)
    out, err = capsys.readouterr()
    assert out == "1/3 \x1b[1m[=  ]\x1b[0m\b\b\b\r2/3 [== ]\b\b\b\r3/3 [===]\n" and err == "warning\nlogged\n"
    assert (tmp_path / "run.log").read_text().splitlines()[1:] == ["3/3 [===]", "warning", "logged"]
    assert handler.stream is sys.stderr  # given back
