"""Train an experiment: strategy → data → model → fit (resumable) → best weights → test metrics."""

import contextlib
import json
import shutil
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from kerasline.config import ExperimentConfig
from kerasline.errors import Diverged, Preempted, UserError
from kerasline.files import write_text_atomic
from kerasline.pipelines import Datasets
from kerasline.training.checkpoint import ResumePoint, RunCheckpoint, newest_checkpoint, restore
from kerasline.training.runlog import console_log
from kerasline.training.runs import open_run, recorded, run_path
from kerasline.training.strategy import make_strategy
from kerasline.training.tasks import Task, task_for
from kerasline.training.workers import barrier, from_chief, input_shard, is_chief, multi_worker, output_dir, worker_name

VERBOSITY = {"bar": 1, "epoch": 2, "silent": 0}  # training.verbose → model.fit's verbose


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    resumed_at: str | None  # "epoch 3" or "epoch 2, step 5": where this call picked the run up
    replicas: int
    metrics: dict
    skipped: tuple[str, ...]
    chief: bool = True  # False on the other workers of a multi-worker job, which write nothing
    leave: Callable[[], None] = lambda: None  # multi-worker: returns once every worker calls it (after the export)
    datasets: Datasets | None = None  # what this worker trained on (under file sharding, its share)


def setup(cfg: ExperimentConfig) -> tf.distribute.Strategy:
    """Seeds, determinism and precision, then the strategy: everything that must precede model building."""
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.config.set_dtype_policy(cfg.training.mixed_precision)
    return make_strategy(cfg.training.strategy)


def compile_model(cfg: ExperimentConfig, steps_per_epoch: int) -> keras.Model:
    """The task's model, compiled by the task (inside the strategy's scope, where the caller opened it)."""
    task = task_for(cfg)
    return task.compile(task.build_model(), steps_per_epoch)


def train(cfg: ExperimentConfig, callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """`callbacks` run first, before the run's own (TensorBoard, checkpoints, stopping), in every fit call.
    Under MultiWorkerMirroredStrategy every worker runs this whole function (see training/workers.py)."""
    strategy, task = setup(cfg), task_for(cfg)
    data = task.build_inputs(input_shard(cfg, strategy))
    chief = is_chief(strategy)
    run_dir = _open_run(cfg, strategy)
    with recorded(run_dir, write=chief), console_log(run_dir / "run.log", enabled=chief):
        return _train_run(cfg, callbacks, strategy, task, data, run_dir, chief)


def _train_run(
    cfg: ExperimentConfig,
    callbacks: Sequence[keras.callbacks.Callback],
    strategy: tf.distribute.Strategy,
    task: Task,
    data: Datasets,
    run_dir: Path,
    chief: bool,
) -> TrainResult:
    """train() once its run is open (run.json and run.log record it): fit, resumed; best weights; test metrics."""
    if data.vocabulary and chief:  # the export's in-graph text lookup
        write_text_atomic(run_dir / "vocabulary.json", json.dumps(data.vocabulary) + "\n")
    with strategy.scope():
        model = compile_model(cfg, data.steps_per_epoch)
        resume = restore(run_dir, model, sweep=chief)
    with output_dir(strategy, run_dir) as out_dir:
        callbacks = [*callbacks, *task.callbacks(out_dir, data, resume, model)]
        checkpoint = callbacks[-1]
        if not resume.finished:
            # Workers would stop at different steps: a multi-worker job resumes from its last epoch instead.
            alone = not multi_worker(strategy)
            with _sigterm_requests_checkpoint(checkpoint) if alone else contextlib.nullcontext():
                _fit(model, data, resume, callbacks)
        barrier(strategy)  # the chief's last best.weights.h5 is written before any worker reads it
    if checkpoint.diverged:
        last_good = newest_checkpoint(run_dir / "backup")
        raise Diverged(
            f"training diverged {checkpoint.diverged}; "
            f"last good checkpoint: {last_good or 'none (it diverged in the first epoch)'}; nothing was exported"
        )
    if checkpoint.preempted_at:
        raise Preempted(f"stopped by SIGTERM; checkpoint {checkpoint.preempted_at}; rerun the same command to resume")
    if not (run_dir / "best.weights.h5").exists():
        raise UserError(f"no epoch gave a finite {cfg.training.monitor}; nothing to test or export in {run_dir}")
    model.load_weights(run_dir / "best.weights.h5")
    metrics = _test_metrics(model, data.test)  # a collective under MultiWorkerMirroredStrategy: every worker runs it
    if chief:
        results = {"test": metrics, "report": task.report(model, data.test)}  # the chief's own: no collective
        write_text_atomic(run_dir / "metrics.json", json.dumps(results, indent=2) + "\n")
        shutil.rmtree(run_dir / "backup", ignore_errors=True)
    resumed_at = f"epoch {resume.epoch + 1}" + (f", step {resume.step}" if resume.step else "") if resume.path else None
    replicas, leave = strategy.num_replicas_in_sync, lambda: barrier(strategy)
    return TrainResult(run_dir, resumed_at, replicas, metrics, data.skipped, chief, leave, datasets=data)


def _open_run(cfg: ExperimentConfig, strategy: tf.distribute.Strategy) -> Path:
    """The chief opens (or picks up) the run; the other workers take its number, so all agree on it."""
    if not multi_worker(strategy):
        return open_run(cfg)
    number = from_chief(strategy, int(open_run(cfg).name[4:]) if is_chief(strategy) else 0)
    run_dir = run_path(cfg, number)
    if not (run_dir / "config.toml").is_file():
        raise UserError(
            f"{worker_name(strategy)}: the chief's run {run_dir} is not visible here; "
            "runs_dir must be storage every worker shares"
        )
    return run_dir


def _fit(model: keras.Model, data: Datasets, resume: ResumePoint, callbacks: list) -> None:
    """Continues from the resume point: first the rest of a part-done epoch (after SIGTERM), then the others."""
    epoch, epochs, steps = resume.epoch, data.cfg.training.epochs, data.steps_per_epoch
    verbose = VERBOSITY[data.cfg.training.verbose]
    common = dict(validation_data=data.validation, callbacks=callbacks, shuffle=False, verbose=verbose)  # seeded stream
    if resume.step:
        rest = _stream(model, data, epoch, epoch + 1, skip_steps=resume.step)
        model.fit(rest, steps_per_epoch=steps - resume.step, initial_epoch=epoch, epochs=epoch + 1, **common)
        epoch += 1
        if model.stop_training:
            return
    if epoch < epochs:
        model.fit(_stream(model, data, epoch), steps_per_epoch=steps, initial_epoch=epoch, epochs=epochs, **common)


def _stream(model: keras.Model, data: Datasets, *args, **kwargs) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """The training stream; under file sharding, this worker's own per-replica batches, handed to its replicas
    as they are (Keras would otherwise split each batch again and shard the stream by data)."""
    if data.shard is None:
        return data.train(*args, **kwargs)
    return model.distribute_strategy.distribute_datasets_from_function(lambda _: data.train(*args, **kwargs))


@contextlib.contextmanager
def _sigterm_requests_checkpoint(checkpoint: RunCheckpoint):
    """Preemption: SIGTERM makes the run checkpoint after the current batch and stop."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: setattr(checkpoint, "preempted", True))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def plan(cfg: ExperimentConfig) -> dict:
    """What `train` would do, without training or writing anything: data, model and steps (for --dry-run)."""
    strategy = setup(cfg)
    data = task_for(cfg).build_inputs()
    with strategy.scope():
        model = compile_model(cfg, data.steps_per_epoch)
    return {
        "replicas": strategy.num_replicas_in_sync,
        "steps_per_epoch": data.steps_per_epoch,
        "parameters": model.count_params(),
        "skipped": data.skipped,
        "summary": _summary(model),
    }


def _summary(model: keras.Model) -> str:
    """model.summary() as plain text: with a print_fn Keras renders it without terminal colours, in one string."""
    parts = []
    model.summary(print_fn=parts.append)
    return "".join(parts)


def evaluate(cfg: ExperimentConfig, run_dir: Path) -> dict:
    """Test-split metrics of a finished run's best weights."""
    model, data = _restored(cfg, run_dir)
    return _test_metrics(model, data.test)


def evaluate_report(cfg: ExperimentConfig, run_dir: Path) -> dict:
    """What metrics.json holds, recomputed from a finished run's best weights: {"test": metrics, "report": the
    task's report}."""
    model, data = _restored(cfg, run_dir)
    return {"test": _test_metrics(model, data.test), "report": task_for(cfg).report(model, data.test)}


def _restored(cfg: ExperimentConfig, run_dir: Path) -> tuple[keras.Model, Datasets]:
    """The run's compiled model with its best weights, and the experiment's datasets."""
    strategy = setup(cfg)
    data = task_for(cfg).build_inputs()
    with strategy.scope():
        model = compile_model(cfg, steps_per_epoch=1)
    model.load_weights(run_dir / "best.weights.h5")
    return model, data


def _test_metrics(model: keras.Model, test: tf.data.Dataset) -> dict:
    return {name: float(value) for name, value in model.evaluate(test, return_dict=True, verbose=0).items()}
