"""Parity: the same inputs through the Keras model, the reloaded SavedModel (fresh process) and ONNX Runtime."""

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kerasline.export.onnx_int8 import INT8_FILE
from kerasline.training.tasks import Signature

Difference = Callable[[str, np.ndarray, dict[str, np.ndarray]], float]


def parity_report(
    signatures: dict[str, Signature],
    version_dir: Path,
    tolerance: float,
    difference: Difference,
    reloader: "SavedModelReloader | None" = None,
) -> dict:
    """Max abs difference per output of each export against the in-process Keras functions: one fresh process
    (`reloader`, started early, or one started here) reloads every SavedModel signature; each signature's ONNX file
    runs in ONNX Runtime. Keys of max_abs_diff: saved_model and onnx for serving_default, saved_model:NAME and
    onnx:NAME for the others. `difference` is the task's rule (a segmentation mask compares the pixels the model
    decided). uint8 outputs may differ by one step: a float a hair from .5 rounds either way."""
    packed = {f"{name}/{key}": array for name, s in signatures.items() for key, array in s.inputs.items()}
    with reloader or SavedModelReloader() as fresh:
        reloaded = fresh.run(version_dir, packed)
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
    if (version_dir / INT8_FILE).exists():
        report["int8"] = int8_differences(signatures["serving_default"], version_dir / INT8_FILE)
    return report


def int8_differences(signature: Signature, path: Path) -> dict:
    """export.onnx_int8's file against the Keras function model.onnx is held to, on the same inputs: each output's
    largest and mean absolute difference. A record, not a gate: quantisation approximates by design, and what the
    change costs is the task's metric (`make bench` measures the U-Net's test IoU through both files)."""
    function, inputs = signature.onnx_pair
    reference = {k: v.numpy().astype(np.float64) for k, v in function(**inputs).items()}
    outputs = _run_onnx(path, inputs)
    diffs = {k: np.abs(outputs[k].astype(np.float64) - reference[k]) for k in reference}
    return {
        "file": path.name,
        "max_abs_diff": {k: float(d.max(initial=0.0)) for k, d in diffs.items()},
        "mean_abs_diff": {k: float(d.mean()) for k, d in diffs.items()},
    }


def _outputs_of(reloaded: dict[str, np.ndarray], signature: str) -> dict[str, np.ndarray]:
    prefix = f"{signature}/"
    return {key[len(prefix) :]: value for key, value in reloaded.items() if key.startswith(prefix)}


class SavedModelReloader:
    """A fresh Python process that imports TensorFlow as soon as it starts, then runs a SavedModel's signatures when
    `run` hands it the paths. The import is most of its time (about 8 s of the default experiment's 10 s parity
    check): started before the SavedModel is written, it overlaps the writing and the ONNX conversion."""

    def __init__(self) -> None:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = [sys.executable, "-m", "kerasline.export.reload"]
        pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.process = subprocess.Popen(command, env=env, **pipes)

    def run(self, saved_model: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory() as tmp:
            np.savez(f"{tmp}/in.npz", **inputs)
            paths = f"{saved_model.resolve()}\n{tmp}/in.npz\n{tmp}/out.npz\n"
            _, stderr = self.process.communicate(paths)
            if self.process.returncode:
                raise RuntimeError(f"reloading {saved_model} failed:\n{stderr[-2000:]}")
            with np.load(f"{tmp}/out.npz", allow_pickle=False) as out:
                return {name: out[name] for name in out.files}

    def __enter__(self) -> "SavedModelReloader":
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:  # never run (the export failed before its parity check)
            self.process.kill()
        self.process.wait()


def _run_onnx(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))
