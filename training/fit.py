"""Train an experiment: strategy → data → model → fit (resumable) → best weights → test metrics."""

import contextlib
import json
import shutil
import signal
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from kerasline.config import ExperimentConfig
from kerasline.errors import Diverged, Preempted, UserError
from kerasline.files import write_text_atomic
from kerasline.models.text_features import adapt_naive_bayes
from kerasline.pipelines import Datasets
from kerasline.training.checkpoint import ResumePoint, RunCheckpoint, newest_checkpoint, restore
from kerasline.training.init_from import Source, initialise, read_source, source_for, summary
from kerasline.training.phases import (
    phase_at,
    phase_callbacks,
    phase_training,
    phases,
    pretrained_weights,
    set_phase,
    start_from,
    trainable_count,
)
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


def compile_model(cfg: ExperimentConfig, steps_per_epoch: int, phase: int = 1) -> keras.Model:
    """The task's model, set for `phase` (training/phases.py) and compiled by the task (inside the strategy's
    scope, where the caller opened it)."""
    model = task_for(cfg).build_model()
    set_phase(model, cfg, phase)
    return compile_for_phase(cfg, model, steps_per_epoch, phase)


def compile_for_phase(cfg: ExperimentConfig, model: keras.Model, steps_per_epoch: int, phase: int) -> keras.Model:
    """Compiled by the task, with an optimizer of the phase's own settings (set_phase first)."""
    settings = cfg.model_copy(update={"training": phase_training(cfg.training, phase)})
    return task_for(settings).compile(model, steps_per_epoch)


def train(cfg: ExperimentConfig, callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """`callbacks` run first, before the run's own (TensorBoard, checkpoints, stopping), in every fit call.
    Under MultiWorkerMirroredStrategy every worker runs this whole function (see training/workers.py)."""
    strategy, task = setup(cfg), task_for(cfg)
    data = task.build_inputs(input_shard(cfg, strategy))
    backbone = pretrained_weights(cfg)  # before the run opens: a refusal leaves nothing behind
    source = source_for(cfg, task.build_model)  # likewise
    chief = is_chief(strategy)
    run_dir = _open_run(cfg, strategy)
    with recorded(run_dir, write=chief), console_log(run_dir / "run.log", enabled=chief):
        return _train_run(cfg, callbacks, strategy, task, data, run_dir, chief, backbone, source)


def _train_run(
    cfg: ExperimentConfig,
    callbacks: Sequence[keras.callbacks.Callback],
    strategy: tf.distribute.Strategy,
    task: Task,
    data: Datasets,
    run_dir: Path,
    chief: bool,
    backbone: list | None,
    source: Source | None,
) -> TrainResult:
    """train() once its run is open (run.json and run.log record it): fit, resumed; best weights; test metrics."""
    for name, text in data.run_files.items() if chief else ():  # what the export rebuilds its graph from
        write_text_atomic(run_dir / name, text)
    with strategy.scope():
        phase = _checkpoint_phase(cfg, run_dir)  # its optimizer's variables are the ones that phase trained
        model = compile_model(cfg, data.steps_per_epoch, phase)
        resume = restore(run_dir, model, sweep=chief)
        if resume.path is None:  # a new run; a resumed one's checkpoint is newer than any start
            adapt(model, data)
            if backbone is not None:
                print(f"backbone:    {start_from(model, cfg, backbone)}")
            if cfg.model.init_from:  # read before the run opened, unless the run it was to resume was busy
                source = source or read_source(cfg.model.init_from)
                print(f"init from:   {summary(initialise(model, source, run_dir if chief else None))}")
    with output_dir(strategy, run_dir) as out_dir:
        callbacks = [*callbacks, *phase_callbacks(cfg, out_dir), *task.callbacks(out_dir, data, resume, model)]
        checkpoint = callbacks[-1]
        if not resume.finished:
            # Workers would stop at different steps: a multi-worker job resumes from its last epoch instead.
            alone = not multi_worker(strategy)
            try:
                with _sigterm_requests_checkpoint(checkpoint) if alone else contextlib.nullcontext():
                    _fit(model, data, resume, callbacks, phase)
            finally:
                checkpoint.draw_learning_curves()
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
    load_best(model, run_dir)
    tested = task.inference_model(model)
    metrics, report = task.test(tested, data.test)  # every worker: evaluate is a collective under multi-worker
    if chief:
        results = {"test": metrics, "report": report}
        write_text_atomic(run_dir / "metrics.json", json.dumps(results, indent=2) + "\n")
        shutil.rmtree(run_dir / "backup", ignore_errors=True)
    resumed_at = f"epoch {resume.epoch + 1}" + (f", step {resume.step}" if resume.step else "") if resume.path else None
    replicas, leave = strategy.num_replicas_in_sync, lambda: barrier(strategy)
    return TrainResult(run_dir, resumed_at, replicas, metrics, data.skipped, chief, leave, datasets=data)


def adapt(model: keras.Model, data: Datasets) -> None:
    """What a new model learns from the training split before it trains: model.naive_bayes's ratios."""
    if data.shard is not None and getattr(data.cfg.model, "naive_bayes", False):
        raise UserError(
            'model.naive_bayes: counts words over the whole training split, which data.shard = "file" divides '
            'among the workers; set data.shard = "data"'
        )
    adapt_naive_bayes(model, data.train_examples.batch(512))


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


def _fit(model: keras.Model, data: Datasets, resume: ResumePoint, callbacks: list, compiled_phase: int) -> None:
    """Continues from the resume point, phase by phase (training/phases.py): first the rest of a part-done epoch
    (after SIGTERM), then the phase's other epochs; a new phase sets which layers train and recompiles."""
    cfg, epoch, steps = data.cfg, resume.epoch, data.steps_per_epoch
    verbose = VERBOSITY[cfg.training.verbose]
    common = dict(validation_data=data.validation, callbacks=callbacks, shuffle=False, verbose=verbose)  # seeded stream
    for phase, (first, last) in enumerate(phases(cfg), 1):
        if epoch >= last:
            continue
        if phase != compiled_phase:
            with model.distribute_strategy.scope():
                set_phase(model, cfg, phase)
                compile_for_phase(cfg, model, steps, phase)
        if len(phases(cfg)) > 1:
            print(f"phase {phase}:     epochs {first + 1}–{last}, {trainable_count(model):,} trainable weights")
        if resume.step and epoch == resume.epoch:
            rest = _stream(model, data, epoch, epoch + 1, skip_steps=resume.step)
            model.fit(rest, steps_per_epoch=steps - resume.step, initial_epoch=epoch, epochs=epoch + 1, **common)
            epoch += 1
        if epoch < last and not model.stop_training:
            stream = _stream(model, data, epoch, last)
            model.fit(stream, steps_per_epoch=steps, initial_epoch=epoch, epochs=last, **common)
            epoch = last
        if model.stop_training:
            return


def _checkpoint_phase(cfg: ExperimentConfig, run_dir: Path) -> int:
    """The phase that wrote the run's newest checkpoint (1 for a new run)."""
    newest = newest_checkpoint(run_dir / "backup")
    if newest is None:
        return 1
    state = json.loads((newest / "state.json").read_text())
    return phase_at(cfg, state["epoch"], state["step"])


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
    return task_for(cfg).test(model, data.test)[0]  # as training measured them: the same pass


def evaluate_report(cfg: ExperimentConfig, run_dir: Path) -> dict:
    """What metrics.json holds, recomputed from a finished run's best weights: {"test": metrics, "report": the
    task's report}."""
    model, data = _restored(cfg, run_dir)
    metrics, report = task_for(cfg).test(model, data.test)
    return {"test": metrics, "report": report}


def _restored(cfg: ExperimentConfig, run_dir: Path) -> tuple[keras.Model, Datasets]:
    """The run's compiled model with its best weights, as the task tests it (Task.inference_model), and the
    experiment's datasets."""
    strategy = setup(cfg)
    data = task_for(cfg).build_inputs()
    with strategy.scope():
        model = compile_model(cfg, steps_per_epoch=1)
    load_best(model, run_dir)
    return task_for(cfg).inference_model(model), data


def load_best(model: keras.Model, run_dir: Path) -> None:
    """The run's best weights. Saved with the optimizer of its epoch's phase, which another phase's optimizer
    cannot take: Keras 3.15 warns that it skips those variables, which testing and export never use."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(run_dir / "best.weights.h5")
