"""The TF Serving repository around the versions: warmup records, labels, blessings, models.config, batching.config.

<repo>/<model>/<version>/          a SavedModel (TF Serving loads only integer-named children)
<repo>/<model>/labels.json         stable (a stack: the last is current, the rest are for rollback), canary, history
<repo>/<model>/blessings/<v>.json  BLESSED or NOT_BLESSED for version v, with the reasons and the metrics
<repo>/models.config               ModelServerConfig (text proto) with every model, rewritten whenever the above change
<repo>/batching.config             BatchingParameters for --enable_batching, written once; yours to tune
<repo>/.lock                       flock'd around every read-modify-write of labels.json and models.config, so
                                   concurrent deploy, rollback and export processes each see the others' result
"""

import json
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from kerasline.errors import UserError
from kerasline.files import locked, write_text_atomic

# Where the serving container mounts the repository (kerasline serve, serving/deploy/); models.config uses it.
CONTAINER_ROOT = "/models"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's own limit on a warmup file
LABELS = ("stable", "canary")
LOCK = ".lock"
BATCHING = {"max_batch_size": 32, "batch_timeout_micros": 2000, "max_enqueued_batches": 100, "num_batch_threads": 4}


def write_warmup(version_dir: Path, inputs: dict[str, np.ndarray]) -> Path:
    """One PredictionLog per sample (batch 1), replayed by TF Serving as it loads the version."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    path = version_dir / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    count = min(len(next(iter(inputs.values()))), MAX_WARMUP_RECORDS)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(count):
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = "serving_default"
            for name, values in inputs.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(values[i : i + 1]))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit()) if model_dir.is_dir() else []


def model_dirs(repo: Path) -> list[Path]:
    return sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".") and versions(p))


def read_labels(model_dir: Path) -> dict:
    path = model_dir / "labels.json"
    return json.loads(path.read_text()) if path.exists() else {"stable": [], "canary": None, "history": []}


def current_labels(model_dir: Path) -> dict[str, int]:
    labels = read_labels(model_dir)
    current = {"stable": labels["stable"][-1] if labels["stable"] else None, "canary": labels["canary"]}
    return {label: version for label, version in current.items() if version is not None}


def read_blessing(model_dir: Path, version: int) -> dict | None:
    path = model_dir / "blessings" / f"{version}.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_blessing(model_dir: Path, version: int, record: dict) -> Path:
    path = model_dir / "blessings" / f"{version}.json"
    path.parent.mkdir(exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return path


def deploy(repo: Path, model: str, version: int | None, label: str) -> int:
    """Point `label` at a blessed version (default: the newest) and rewrite models.config."""
    model_dir = _model_dir(repo, model)
    with _locked(repo):
        version = version if version is not None else versions(model_dir)[-1]
        if version not in versions(model_dir):
            raise UserError(f"{model}: no version {version} under {model_dir} (versions: {versions(model_dir)})")
        blessing = read_blessing(model_dir, version)
        if blessing is None or blessing["verdict"] != "BLESSED":
            why = "; ".join(blessing["reasons"]) if blessing else "never evaluated: run kerasline evaluate"
            raise UserError(f"{model} version {version} is not blessed ({why}); nothing deployed")
        labels = read_labels(model_dir)
        previous = current_labels(model_dir).get(label)
        if label == "stable":
            if previous != version:
                labels["stable"].append(version)
        else:
            labels["canary"] = version
        _record(model_dir, labels, "deploy", label, version, previous)
        _write_models_config(repo)
    return version


def rollback(repo: Path, model: str) -> tuple[int, int]:
    """Move `stable` back to the version it pointed at before the last deploy; returns (from, to)."""
    model_dir = _model_dir(repo, model)
    with _locked(repo):
        labels = read_labels(model_dir)
        if len(labels["stable"]) < 2:
            raise UserError(f"{model}: no earlier stable version to roll back to (stable history: {labels['stable']})")
        current = labels["stable"].pop()
        _record(model_dir, labels, "rollback", "stable", labels["stable"][-1], current)
        _write_models_config(repo)
    return current, labels["stable"][-1]


def served_versions(model_dir: Path) -> list[int]:
    """The newest version (so a fresh export is live for testing at /versions/N) and every labelled one."""
    return sorted({versions(model_dir)[-1], *current_labels(model_dir).values()})


def write_models_config(repo: Path) -> Path:
    """models.config (and batching.config, once) from the repository as it is now, under its lock: of several
    processes publishing at once, the last to write sees every version the others published."""
    with _locked(repo):
        return _write_models_config(repo)


def _write_models_config(repo: Path) -> Path:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for model_dir in model_dirs(repo):
        entry = config.model_config_list.config.add(
            name=model_dir.name, base_path=f"{CONTAINER_ROOT}/{model_dir.name}", model_platform="tensorflow"
        )
        entry.model_version_policy.specific.versions.extend(served_versions(model_dir))
        for label, version in current_labels(model_dir).items():
            entry.version_labels[label] = version
    path = repo / "models.config"
    write_text_atomic(path, text_format.MessageToString(config))
    if not (repo / "batching.config").exists():
        text = "".join(f"{key} {{ value: {value} }}\n" for key, value in BATCHING.items())
        write_text_atomic(repo / "batching.config", text)
    return path


def _locked(repo: Path) -> AbstractContextManager[None]:
    """The repository's lock, for a read-modify-write of labels.json or models.config (milliseconds long)."""
    return locked(repo / LOCK, f"{repo}/models.config")


def _model_dir(repo: Path, model: str) -> Path:
    model_dir = repo / model
    if not versions(model_dir):
        raise UserError(f"{model}: no exported version under {model_dir}; export it first")
    return model_dir


def _record(model_dir: Path, labels: dict, action: str, label: str, version: int, previous: int | None) -> None:
    at = datetime.now(UTC).isoformat(timespec="seconds")
    labels["history"].append({"at": at, "action": action, "label": label, "version": version, "previous": previous})
    write_text_atomic(model_dir / "labels.json", json.dumps(labels, indent=2) + "\n")
