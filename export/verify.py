"""Parity: the same inputs through the Keras model, the reloaded SavedModel (fresh process) and ONNX Runtime."""

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kerasline.training.tasks import Signature

Difference = Callable[[str, np.ndarray, dict[str, np.ndarray]], float]


def parity_report(
    signatures: dict[str, Signature], version_dir: Path, tolerance: float, difference: Difference
) -> dict:
    """Max abs difference per output of each export against the in-process Keras functions: one fresh process
    reloads every SavedModel signature; each signature's ONNX file runs in ONNX Runtime. Keys of max_abs_diff:
    saved_model and onnx for serving_default, saved_model:NAME and onnx:NAME for the others. `difference` is the
    task's rule (a segmentation mask compares the pixels the model decided). uint8 outputs may differ by one step:
    a float a hair from .5 rounds either way."""
    packed = {f"{name}/{key}": array for name, s in signatures.items() for key, array in s.inputs.items()}
    reloaded = _run_saved_model_in_fresh_process(version_dir, packed)
    report = {"samples": len(next(iter(signatures["serving_default"].inputs.values()))), "tolerance": tolerance}
    report |= {"onnx_files": {name: s.onnx_file for name, s in signatures.items()}, "max_abs_diff": {}}
    passed = True
    for name, signature in signatures.items():
        onnx_reference, onnx_inputs = signature.onnx_pair
        suffix = "" if name == "serving_default" else f":{name}"
        runs = {
            "saved_model": (signature.function, signature.inputs, _outputs_of(reloaded, name)),
            "onnx": (onnx_reference, onnx_inputs, _run_onnx(version_dir / signature.onnx_file, onnx_inputs)),
        }
        for path, (function, given, outputs) in runs.items():
            reference = {k: v.numpy() for k, v in function(**given).items()}
            diffs = {key: difference(key, outputs[key], reference) for key in reference}
            report["max_abs_diff"][path + suffix] = diffs
            passed &= all(d <= (1 if reference[k].dtype == np.uint8 else tolerance) for k, d in diffs.items())
    report["passed"] = bool(passed)
    return report


def _outputs_of(reloaded: dict[str, np.ndarray], signature: str) -> dict[str, np.ndarray]:
    prefix = f"{signature}/"
    return {key[len(prefix) :]: value for key, value in reloaded.items() if key.startswith(prefix)}


def _run_saved_model_in_fresh_process(saved_model: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(f"{tmp}/in.npz", **inputs)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = [sys.executable, "-m", "kerasline.export.reload", str(saved_model.resolve()), f"{tmp}/in.npz"]
        proc = subprocess.run([*command, f"{tmp}/out.npz"], capture_output=True, text=True, env=env)
        if proc.returncode:
            raise RuntimeError(f"reloading {saved_model} failed:\n{proc.stderr[-2000:]}")
        with np.load(f"{tmp}/out.npz", allow_pickle=False) as out:
            return {name: out[name] for name in out.files}


def _run_onnx(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))
