"""Exports of the generative tasks, published like a classifier's (staging → verify → next version number).

generate: the GAN's generator alone, serving_default `noise` → `image`, and model.onnx.
reconstruct: one SavedModel with serving_default (image → reconstruction, error), `encode` and `decode`; one
ONNX file per signature (model.onnx, encoder.onnx, decoder.onnx), each checked for parity.
"""

import shutil
from pathlib import Path

import keras

from export.publish import built_in_float32, publish_verified, sample_inputs
from export.signature import autoencoder_functions, generator_functions, write_onnx
from export.verify import signatures_parity
from kerasline.config import ExperimentConfig, task_of
from kerasline.files import ensure_free_space, remove_stale_staging, staging_dir
from models import build_model
from models.gan import fixed_noise
from training.gan import build_gan

ONNX_FILES = {"serving_default": "model.onnx", "encode": "encoder.onnx", "decode": "decoder.onnx"}


def export_generative(cfg: ExperimentConfig, run_dir: Path) -> Path:
    model = trained_float32(cfg, run_dir / "best.weights.h5")
    functions = generator_functions(model) if task_of(cfg) == "generate" else autoencoder_functions(model)
    inputs = signature_inputs(cfg, functions)
    root = Path(cfg.export.dir) / cfg.model_name
    remove_stale_staging(root)
    ensure_free_space(root, (1 + len(functions)) * sum(w.numpy().nbytes for w in model.weights), "an export")
    staging = staging_dir(root)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        for name, function in functions.items():
            archive.add_endpoint(name, function)
        archive.write_out(str(staging), verbose=False)
        onnx_files = {name: ONNX_FILES[name] for name in functions}
        for name, function in functions.items():
            write_onnx(function, str(staging / onnx_files[name]))
        report = signatures_parity(functions, staging, inputs, onnx_files, cfg.export.tolerance)
        return publish_verified(cfg, run_dir, staging, report, inputs["serving_default"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def trained_float32(cfg: ExperimentConfig, weights: Path) -> keras.Model:
    """The generator (generate) or the autoencoder (reconstruct), rebuilt in float32 with the run's weights."""
    model = built_in_float32(lambda: build_gan(cfg) if task_of(cfg) == "generate" else build_model(cfg))
    model.load_weights(weights)
    return model.generator if task_of(cfg) == "generate" else model


def signature_inputs(cfg: ExperimentConfig, functions: dict) -> dict[str, dict]:
    """Parity inputs per signature: held-out digits for image inputs, seeded noise for latent ones."""
    inputs = {"serving_default": sample_inputs(cfg)}
    if "encode" in functions:
        inputs["encode"] = inputs["serving_default"]
        inputs["decode"] = {"latent": fixed_noise(cfg.export.parity_samples, cfg.model.latent_dim, cfg.seed)}
    return inputs
