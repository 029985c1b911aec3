"""`kerasline tune`: KerasTuner over an experiment's [tune] space, through the training path itself.

Every trial is the experiment with the sampled values set at their dotted keys, built and fed by the
same pipelines, strategy and precision as `train`, and scored on validation (never test). The search
lives in runs/<experiment>/tune-<config digest>/, so rerunning the same command resumes it.
"""

import hashlib
import importlib.util
import json
import shutil
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import keras
import keras_tuner as kt
import tomli_w

from kerasline.config import (
    Boolean,
    Choice,
    ExperimentConfig,
    FloatRange,
    IntRange,
    apply_override,
    set_dotted,
    to_toml,
    validate,
)
from kerasline.errors import UserError
from kerasline.files import write_text_atomic
from kerasline.pipelines import Datasets
from kerasline.shipped import is_shipped
from kerasline.training.ema import AveragedValidation
from kerasline.training.fit import adapt, compile_for_phase, compile_model, setup
from kerasline.training.phases import phases, pretrained_weights, set_phase, start_from
from kerasline.training.tasks import build_inputs


@dataclass(frozen=True)
class SearchResult:
    search_dir: Path
    replicas: int  # of the distribution strategy each trial trained under
    best: dict  # {"trial": id, "score": float, "values": {dotted key: value}}
    table: list[dict]  # every trial, best first
    tuned_experiment: Path
    stopped_by_budget: bool


class BudgetSpent(Exception):
    """Raised between trials once tune.budget_minutes has passed; the finished trials are kept."""


def tune(cfg: ExperimentConfig, experiment_file: Path, overrides: list[str], restart: bool) -> SearchResult:
    if importlib.util.find_spec("tensorboard") is None:
        # Without it keras-tuner fails every trial with a misleading missing-checkpoint error.
        raise UserError("keras-tuner needs the tensorboard package: run `make setup` (it is a pinned dependency)")
    strategy = setup(cfg)
    search_dir = Path(cfg.runs_dir) / cfg.name / f"tune-{hashlib.sha256(to_toml(cfg).encode()).hexdigest()[:10]}"
    if restart:
        shutil.rmtree(search_dir, ignore_errors=True)
    tuner = _tuner(cfg, strategy, search_dir)
    settings = cfg.tune
    callbacks = [keras.callbacks.TensorBoard(str(search_dir / "logs"))]  # keras-tuner adds HParams per trial
    if settings.early_stopping_patience:
        stopping = keras.callbacks.EarlyStopping(monitor=settings.objective, patience=settings.early_stopping_patience)
        callbacks.append(stopping)
    stopped_by_budget = False
    try:
        tuner.search(epochs=settings.epochs, callbacks=callbacks, verbose=2)
    except BudgetSpent:
        stopped_by_budget = True
    except RuntimeError as e:  # keras-tuner gives up after repeated failures; say what the trials said
        raise UserError(f"search stopped: {e}; last trial error: {_last_error(tuner)}") from None

    table = trial_table(tuner)
    if not table or table[0]["score"] is None:
        raise UserError(f"no trial finished; last trial error: {_last_error(tuner)}")
    best = {"trial": table[0]["trial"], "score": table[0]["score"], "values": table[0]["values"]}
    best_json = {"objective": settings.objective, **best, "trials": len(table)}
    write_text_atomic(search_dir / "best.json", json.dumps(best_json, indent=2) + "\n")
    tuned = write_tuned_experiment(cfg, experiment_file, overrides, best)
    return SearchResult(search_dir, strategy.num_replicas_in_sync, best, table, tuned, stopped_by_budget)


class ExperimentHyperModel(kt.HyperModel):
    """One trial = the experiment with the sampled values set; trained for tune.epochs on its own pipeline."""

    def __init__(self, cfg: ExperimentConfig):
        super().__init__(name=cfg.name)
        self.cfg = cfg
        self._data: tuple[str, Datasets] | None = None  # the last trial's data, shared by its build and fit

    def trial_config(self, hp: kt.HyperParameters) -> ExperimentConfig:
        raw = self.cfg.model_dump(mode="json")
        raw["training"]["epochs"] = self.cfg.tune.epochs  # schedules span the trial, as they span a run
        if self.cfg.training.fine_tune.epochs:  # two phases: the first has half of the trial's epochs (at least 1)
            first = max(1, self.cfg.tune.epochs // 2)
            raw["training"]["epochs"], raw["training"]["fine_tune"]["epochs"] = first, self.cfg.tune.epochs - first
        for key, entry in self.cfg.tune.space.items():
            set_dotted(raw, key, sample(hp, key, entry))
        return validate(raw, source="trial")

    def datasets(self, cfg: ExperimentConfig) -> Datasets:
        key = to_toml(cfg)
        if self._data is None or self._data[0] != key:
            self._data = (key, build_inputs(cfg))
        return self._data[1]

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        cfg = self.trial_config(hp)
        model = compile_model(cfg, self.datasets(cfg).steps_per_epoch)
        adapt(model, self.datasets(cfg))
        if (backbone := self._backbone(cfg)) is not None:  # every trial starts from the pretrained weights
            start_from(model, cfg, backbone)
        return model

    def _backbone(self, cfg: ExperimentConfig) -> list | None:
        """The backbone's pretrained weights, fetched once for the search."""
        if not hasattr(self, "_pretrained"):
            self._pretrained = pretrained_weights(cfg)
        return self._pretrained

    def fit(self, hp, model, *args, epochs: int, initial_epoch: int = 0, callbacks=(), verbose=2, **kwargs):
        """The trial's epochs, phase by phase (a new phase recompiles, as a run does); the last phase's history."""
        cfg = self.trial_config(hp)
        data, spans, history = self.datasets(cfg), phases(cfg), None
        for phase, (first, last) in enumerate(spans, 1):
            first, last = max(first, initial_epoch), epochs if phase == len(spans) else min(last, epochs)
            if first >= last:
                continue
            if phase > 1:
                with model.distribute_strategy.scope():
                    set_phase(model, cfg, phase)
                    compile_for_phase(cfg, model, data.steps_per_epoch, phase)
            # keras-tuner 1.4.8 adds TensorBoard's hparams callback, which one fit only may use (tensorboard 2.21):
            # the last phase's, whose scores are the trial's.
            once = [c for c in callbacks if not type(c).__module__.startswith("tensorboard.plugins.hparams")]
            averaged = [AveragedValidation()] if cfg.training.ema else []  # the trial's scores are the averages'
            history = model.fit(
                data.train(first, last),
                steps_per_epoch=data.steps_per_epoch,
                initial_epoch=first,
                epochs=last,
                validation_data=data.validation,
                callbacks=[*averaged, *(callbacks if phase == len(spans) else once)],
                shuffle=False,
                verbose=verbose,
            )
        return history


def sample(hp: kt.HyperParameters, key: str, entry: FloatRange | IntRange | Choice | Boolean):
    if isinstance(entry, FloatRange):
        return hp.Float(key, entry.min, entry.max, sampling=entry.sampling)
    if isinstance(entry, IntRange):
        return hp.Int(key, entry.min, entry.max, step=entry.step)
    if isinstance(entry, Choice):  # keras-tuner choices are scalars of one type; JSON carries lists too
        return json.loads(hp.Choice(key, [json.dumps(v) for v in entry.values]))
    return hp.Boolean(key)


class _Progress:
    """Mixed into the keras-tuner class: a line per trial, and the wall-clock budget between trials."""

    def configure(self, cfg: ExperimentConfig) -> None:
        self.kl_cfg = cfg
        self.kl_deadline = time.monotonic() + 60 * cfg.tune.budget_minutes if cfg.tune.budget_minutes else None

    def pre_create_trial(self):
        super().pre_create_trial()
        if self.kl_deadline and time.monotonic() > self.kl_deadline:
            raise BudgetSpent

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        done = sum(t.status in ("COMPLETED", "FAILED", "INVALID") for t in self.oracle.trials.values())
        best = self.oracle.get_best_trials(1)
        total = f" of {self.oracle.max_trials}" if self.oracle.max_trials else ""  # Hyperband sets its own count
        line = f"trial {trial.trial_id} ({done}{total}) {trial.status.lower()}"
        if trial.score is not None:
            line += f": {self.kl_cfg.tune.objective} {trial.score:.4f}"
        elif trial.message:
            line += f": {trial.message.strip().splitlines()[-1]}"
        if best and best[0].score is not None:
            line += f"; best so far {best[0].score:.4f} (trial {best[0].trial_id})"
        print(line, flush=True)


TUNERS = {"random": kt.RandomSearch, "hyperband": kt.Hyperband, "bayesian": kt.BayesianOptimization}


def _tuner(cfg: ExperimentConfig, strategy, search_dir: Path) -> kt.Tuner:
    settings = cfg.tune
    kwargs = dict(
        hypermodel=ExperimentHyperModel(cfg),
        objective=kt.Objective(settings.objective, "max" if settings.objective.endswith("accuracy") else "min"),
        seed=cfg.seed,
        directory=str(search_dir.parent),
        project_name=search_dir.name,
        distribution_strategy=strategy,
        max_consecutive_failed_trials=max(3, settings.max_trials),
    )
    if settings.algorithm == "hyperband":
        kwargs |= dict(max_epochs=settings.epochs, factor=settings.hyperband_factor)
    else:
        kwargs |= dict(max_trials=settings.max_trials)
    tuner = type("Tuner", (_Progress, TUNERS[settings.algorithm]), {})(**kwargs)
    tuner.configure(cfg)
    return tuner


def trial_table(tuner: kt.Tuner) -> list[dict]:
    """Every trial, best first; failed ones last, with their error."""
    space = tuner.hypermodel.cfg.tune.space  # Hyperband adds bookkeeping values (tuner/epochs, ...): not ours
    rows = [
        {
            "trial": t.trial_id,
            "status": t.status,
            "score": t.score,
            "values": {k: v for k, v in t.hyperparameters.values.items() if k in space},
            "error": t.message.strip().splitlines()[-1] if t.message else None,
        }
        for t in tuner.oracle.trials.values()
    ]
    sign = 1 if tuner.oracle.objective.direction == "min" else -1
    return sorted(rows, key=lambda r: (r["score"] is None, sign * (r["score"] or 0), r["trial"]))


def write_tuned_experiment(cfg: ExperimentConfig, experiment_file: Path, overrides: list[str], best: dict) -> Path:
    """The original experiment (file + command-line overrides) with the best values set, in tuned/ beside it."""
    raw = tomllib.loads(experiment_file.read_text(encoding="utf-8"))
    for item in overrides:
        apply_override(raw, item)
    for key, value in best["values"].items():
        entry = cfg.tune.space[key]
        set_dotted(raw, key, json.loads(value) if isinstance(entry, Choice) else value)
    raw["name"] = f"{cfg.name}_tuned"
    validate(raw, source="tuned experiment")
    home = Path("experiments") if is_shipped(experiment_file) else experiment_file.parent  # never the install
    path = home / "tuned" / experiment_file.name
    path.parent.mkdir(exist_ok=True)
    header = (
        f"# {cfg.name} with the best values of `kerasline tune` (trial {best['trial']}, "
        f"{cfg.tune.objective} {best['score']:.4f}).\n"
    )
    write_text_atomic(path, header + tomli_w.dumps(raw))
    return path


def _last_error(tuner: kt.Tuner) -> str:
    messages = [t.message for t in tuner.oracle.trials.values() if t.message]
    return messages[-1].strip().splitlines()[-1] if messages else "none recorded"
