"""Export a finished run into TF Serving's layout, `<dir>/<model_name>/<version>/`, atomically, then rewrite
the repository's models.config (export/repository.py) so a server picks the new version up.

A version is built in a hidden temporary directory beside the others (TF Serving ignores
non-numeric names), verified, and only then renamed to the next free version number. A failed
export leaves nothing behind, and an existing version is never touched.
"""

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from export.onnx_rnn import for_onnx
from export.repository import write_models_config, write_warmup
from export.signature import serving_function, write_onnx, write_saved_model
from export.verify import parity_report
from kerasline.config import GENERATIVE_TASKS, ExperimentConfig, task_of
from kerasline.errors import UserError
from kerasline.files import ensure_free_space, remove_stale_staging, staging_dir
from models import build_model
from models.gan import fixed_noise
from pipelines.datasets import text_vectorizer
from pipelines.sources import load_splits


class ParityError(UserError):
    """An export whose outputs differ from the Keras model by more than the tolerance."""


def export_run(cfg: ExperimentConfig, run_dir: Path) -> Path:
    if task_of(cfg) in GENERATIVE_TASKS:
        from export.generative import export_generative

        return export_generative(cfg, run_dir)
    model = float32_model(cfg, run_dir / "best.weights.h5")
    root = Path(cfg.export.dir) / cfg.model_name
    remove_stale_staging(root)
    # SavedModel and ONNX each hold the float32 weights once; graphs and metadata are small beside them.
    ensure_free_space(root, 2 * sum(w.numpy().nbytes for w in model.weights), "an export")
    staging = staging_dir(root)
    vectorize = _run_vectorizer(cfg, run_dir)
    serve = serving_function(model, cfg.data, vectorize)  # traced once: the SavedModel and parity's Keras side
    inputs = sample_inputs(cfg)
    onnx, onnx_data = None, cfg.data
    if vectorize is not None:  # ONNX has no standard string ops: it takes the token ids
        tokens = vectorize(inputs["text"]).numpy().astype(np.int32)
        onnx_data = cfg.data.model_copy(update={"input": "tokens"})
        onnx = (serving_function(model, onnx_data), {"tokens": tokens})
    try:
        write_saved_model([model] + ([vectorize] if vectorize is not None else []), serve, str(staging))
        # Converted from a copy whose LSTMs and GRUs become native ONNX ops (the model itself where it has none);
        # parity holds it to the Keras model's function.
        onnx_model = for_onnx(model)
        convert = (onnx[0] if onnx else serve) if onnx_model is model else serving_function(onnx_model, onnx_data)
        write_onnx(convert, str(staging / "model.onnx"))
        report = parity_report(serve, staging, inputs, cfg.export.tolerance, onnx)
        return publish_verified(cfg, run_dir, staging, report, inputs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_verified(cfg: ExperimentConfig, run_dir: Path, staging: Path, report: dict, warmup: dict) -> Path:
    """Keeps the parity report with the export and refuses a failed one; otherwise adds the warmup records (from
    `warmup`, the serving_default inputs), publishes the staging as the next version and refreshes models.config."""
    report["run_dir"] = str(run_dir)
    (staging / "verification.json").write_text(json.dumps(report, indent=2) + "\n")
    if not report["passed"]:
        raise ParityError(
            f"export of {run_dir} failed parity: max abs diff {report['max_abs_diff']} > {cfg.export.tolerance}"
        )
    write_warmup(staging, warmup)
    version_dir = _publish(staging, Path(cfg.export.dir) / cfg.model_name)
    write_models_config(Path(cfg.export.dir))
    return version_dir


def float32_model(cfg: ExperimentConfig, weights: Path) -> keras.Model:
    """The trained model rebuilt in float32, whatever precision it was trained in, and with portable
    recurrent kernels: tf2onnx cannot convert cuDNN's, which Keras picks whenever a GPU is visible."""
    model = built_in_float32(lambda: build_model(cfg))
    model.load_weights(weights)
    for layer in _layers(model):
        if hasattr(layer, "use_cudnn"):
            layer.use_cudnn = False
    return model


def built_in_float32(build: Callable[[], keras.Model]) -> keras.Model:
    """`build()` under the float32 dtype policy, whatever policy training set."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        return build()
    finally:
        keras.config.set_dtype_policy(previous)


def _layers(layer: keras.layers.Layer):
    yield layer
    for child in getattr(layer, "layers", []):
        yield from _layers(child)
    for wrapped in ("forward_layer", "backward_layer", "layer"):
        if hasattr(layer, wrapped):
            yield from _layers(getattr(layer, wrapped))


def _run_vectorizer(cfg: ExperimentConfig, run_dir: Path) -> keras.layers.TextVectorization | None:
    if cfg.data.input != "text":
        return None
    vocabulary = json.loads((run_dir / "vocabulary.json").read_text(encoding="utf-8"))
    return text_vectorizer(cfg.data, vocabulary=vocabulary[2:])  # without the padding and OOV entries it adds


def sample_inputs(cfg: ExperimentConfig) -> dict[str, np.ndarray]:
    """Real raw inputs for the parity check, named as the serving signature names them: held-out
    examples, test split first, then validation; a generator's: seeded noise."""
    if task_of(cfg) == "generate":
        return {"noise": fixed_noise(cfg.export.parity_samples, cfg.model.latent_dim, cfg.seed)}
    splits = load_splits(cfg.data, cfg.seed)
    held_out = splits.test.concatenate(splits.validation).take(cfg.export.parity_samples)
    return {cfg.data.input: np.stack([x for x, _ in held_out.as_numpy_iterator()])}


def _publish(staging: Path, root: Path) -> Path:
    """Rename into the next free integer version. rename(2) of a directory onto an existing non-empty
    one fails, so a concurrent export that took the number first pushes this one to the next."""
    while True:
        version = 1 + max((int(p.name) for p in root.iterdir() if p.name.isdigit()), default=0)
        target = root / str(version)
        try:
            os.rename(staging, target)
            return target
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
