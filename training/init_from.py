"""`model.init_from`: a new run starts from the weights of an earlier run of ours (or of the run an export came
from), matched layer by layer by name and weight shapes: how a classifier starts from an autoencoder's encoder,
or a model trained on one dataset starts another. A resumed run ignores it: its checkpoint is newer.

The source is read, and matched against the model, before a new run opens (`source_for`): a refusal leaves
nothing behind."""

import json
import random
import re
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from kerasline.config import ExperimentConfig, load_experiment
from kerasline.errors import UserError
from kerasline.files import write_text_atomic
from kerasline.models.ensemble import Ensemble
from kerasline.training.runs import resumable, run_dirs
from kerasline.training.tasks import task_for

REPORT_FILE = "init_from.json"


@dataclass(frozen=True)
class Source:
    run: Path
    weights: dict[str, list[np.ndarray]]  # each weighted layer's, by key (see by_key)


def source_run(source: str) -> Path:
    """The run `source` names: a run directory, an experiment's runs directory (its newest finished run) or an
    export version (the run its verification.json names)."""
    path = Path(source)
    if (path / "verification.json").is_file():
        path = Path(json.loads((path / "verification.json").read_text())["run_dir"])
    elif path.is_dir() and not (path / "config.toml").is_file():
        finished = [run for run in run_dirs(path) if _finished(run)]
        path = finished[-1] if finished else path
    if not _finished(path):
        raise UserError(f"model.init_from: {source}: not a finished run, an experiment's runs or an export version")
    return path


def _finished(run: Path) -> bool:
    """Tested, so its best.weights.h5 is final (a run still training rewrites it after every better epoch)."""
    return all((run / name).is_file() for name in ("metrics.json", "best.weights.h5", "config.toml"))


def read_source(source: str) -> Source:
    """The weights of the source run's model, by layer key; a run that cannot be read is refused in one line."""
    run = source_run(source)
    cfg = load_experiment(str(run / "config.toml"))
    try:
        with warnings.catch_warnings():  # Keras warns once per layer it cannot fill before it raises
            warnings.simplefilter("ignore")
            model = task_for(cfg).export_model(run / "best.weights.h5")
    except Exception as e:  # h5py, Keras's layer-count and shape checks: each with its own exception type
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"model.init_from: {run}: its best.weights.h5 cannot be read ({reason})") from None
    if isinstance(model, Ensemble):  # its first member: every member's layers have the same names
        model = model.members[0]
    return Source(run, {key: layer.get_weights() for key, layer in by_key(weighted_layers(model)).items()})


def source_for(cfg: ExperimentConfig, build: Callable[[], keras.Model]) -> Source | None:
    """The source a new run starts from, read and matched against a model `build` makes (thrown away), so that a
    refusal comes before the run opens. None: no init_from, or the run resumes (its checkpoint is newer)."""
    if not cfg.model.init_from or resumable(cfg) is not None:
        return None
    state = random.getstate()  # Keras 3.15 seeds each unseeded initializer from Python's random as it is made:
    try:  # put back, the run's own model starts from the weights it would have had without these two models
        source = read_source(cfg.model.init_from)
        initialise(build(), source, None)
    finally:
        random.setstate(state)
    return source


def initialise(model: keras.Model, source: Source, run_dir: Path | None) -> dict:
    """Copies into `model` the weights of every layer of the source run's model with the same name and weight
    shapes (nested models are searched layer by layer); returns {loaded, new, skipped: {layer: why}}, also
    written to the run's init_from.json when `run_dir` is given (the chief's). Refuses if nothing matched."""
    report = {"source": str(source.run), "loaded": [], "new": [], "skipped": {}}
    for key, layer in by_key(weighted_layers(model)).items():
        weights = source.weights.get(key)
        if weights is None:
            report["new"].append(layer.name)
        elif _shapes(weights) != _shapes(layer.weights):
            report["skipped"][layer.name] = f"shapes {_shapes(weights)} in the source, {_shapes(layer.weights)} here"
        else:
            layer.set_weights(weights)
            report["loaded"].append(layer.name)
    if not report["loaded"]:
        raise UserError(f"model.init_from: no layer of {source.run} matches this model's by name and weight shapes")
    if run_dir is not None:
        write_text_atomic(run_dir / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    return report


def summary(report: dict) -> str:
    loaded, new, skipped = len(report["loaded"]), len(report["new"]), len(report["skipped"])
    return f"{report['source']}: {loaded} layers loaded, {new} new, {skipped} skipped for their shapes"


def weighted_layers(layer: keras.layers.Layer):
    """The layers that hold weights, nested models opened up."""
    for child in getattr(layer, "layers", []):
        if isinstance(child, keras.Model):
            yield from weighted_layers(child)
        elif child.weights:
            yield child


def by_key(layers) -> dict[str, keras.layers.Layer]:
    """Layers by name; an unnamed one by its kind and place among its kind (conv2d#0, conv2d#1, ...). Keras 3.15
    names an unnamed layer after its class plus a process-wide count ("conv2d_7"), so the same unnamed layer has
    different names in two models built in one process."""
    keys, seen = {}, Counter()
    for layer in layers:
        kind = _snake_case(type(layer).__name__)
        if re.fullmatch(rf"{kind}(_\d+)?", layer.name):
            keys[f"{kind}#{seen[kind]}"] = layer
            seen[kind] += 1
        else:
            keys[layer.name] = layer
    return keys


def _snake_case(name: str) -> str:
    """keras.src.utils.naming.to_snake_case (Keras 3.15): how an unnamed layer's name begins."""
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", name))
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _shapes(weights: list) -> list[tuple[int, ...]]:
    return [tuple(w.shape) for w in weights]
