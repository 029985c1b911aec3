"""Parity: the same inputs through the Keras model, the reloaded SavedModel (fresh process) and ONNX Runtime."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

Function = tf.types.experimental.GenericFunction


def parity_report(
    serve: Function,
    version_dir: Path,
    inputs: dict[str, np.ndarray],
    tolerance: float,
    onnx: tuple[Function, dict[str, np.ndarray]] | None = None,
) -> dict:
    """Max abs difference per output of each export against the in-process Keras model behind `serve`.

    `onnx`: the function the ONNX file was converted from and its inputs, where they differ from the
    SavedModel's (text: ONNX has no standard string ops, so it takes the token ids).
    """
    onnx_serve, onnx_inputs = onnx or (serve, inputs)
    runs = {
        "saved_model": (serve, inputs, _run_saved_model_in_fresh_process(version_dir, inputs)),
        "onnx": (onnx_serve, onnx_inputs, _run_onnx(version_dir / "model.onnx", onnx_inputs)),
    }
    report = {"samples": len(next(iter(inputs.values()))), "tolerance": tolerance, "max_abs_diff": {}}
    for path, (function, given, outputs) in runs.items():
        reference = {k: v.numpy() for k, v in function(**given).items()}
        report["max_abs_diff"][path] = {
            name: _max_abs_diff(name, outputs[name], reference, tolerance) for name in reference
        }
    report["passed"] = all(d <= tolerance for diffs in report["max_abs_diff"].values() for d in diffs.values())
    return report


def _run_saved_model_in_fresh_process(saved_model: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(f"{tmp}/in.npz", **inputs)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        proc = subprocess.run(
            [sys.executable, "-m", "export.reload", str(saved_model.resolve()), f"{tmp}/in.npz", f"{tmp}/out.npz"],
            capture_output=True,
            text=True,
            env=env,
            cwd=Path(__file__).resolve().parents[1],
        )
        if proc.returncode:
            raise RuntimeError(f"reloading {saved_model} failed:\n{proc.stderr[-2000:]}")
        with np.load(f"{tmp}/out.npz", allow_pickle=False) as out:
            return {name: out[name] for name in out.files}


def _run_onnx(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def signatures_parity(
    functions: dict[str, Function],
    version_dir: Path,
    inputs: dict[str, dict[str, np.ndarray]],
    onnx_files: dict[str, str],
    tolerance: float,
) -> dict:
    """`parity_report` for a SavedModel with several signatures, each with its own ONNX file: one fresh process
    reloads them all. Keys of max_abs_diff: saved_model and onnx for serving_default, saved_model:NAME and
    onnx:NAME for the others. uint8 outputs may differ by one step: a float a hair from .5 rounds either way."""
    packed = {f"{signature}/{name}": array for signature, given in inputs.items() for name, array in given.items()}
    reloaded = _run_saved_model_in_fresh_process(version_dir, packed)
    report = {"samples": len(next(iter(inputs["serving_default"].values()))), "tolerance": tolerance}
    report |= {"onnx_files": onnx_files, "max_abs_diff": {}}
    passed = True
    for signature, function in functions.items():
        reference = {k: v.numpy() for k, v in function(**inputs[signature]).items()}
        onnx = _run_onnx(version_dir / onnx_files[signature], inputs[signature])
        suffix = "" if signature == "serving_default" else f":{signature}"
        for path, outputs in (("saved_model", {k: reloaded[f"{signature}/{k}"] for k in reference}), ("onnx", onnx)):
            diffs = {
                name: float(np.max(np.abs(outputs[name].astype(np.float64) - ref.astype(np.float64))))
                for name, ref in reference.items()
            }
            report["max_abs_diff"][path + suffix] = diffs
            passed &= all(d <= (1 if reference[n].dtype == np.uint8 else tolerance) for n, d in diffs.items())
    report["passed"] = bool(passed)
    return report
def _max_abs_diff(name: str, got: np.ndarray, reference: dict[str, np.ndarray], tolerance: float) -> float:
    diff = np.abs(got.astype(np.float64) - reference[name].astype(np.float64))
    if name == "mask":
        # An argmax over millions of pixels: where the top two probabilities lie within the tolerance of each
        # other, runtimes that agree within it may fairly pick either class. Compare the decided pixels.
        top_two = np.sort(reference["probabilities"], axis=-1)[..., -2:]
        diff = diff[top_two[..., 1] - top_two[..., 0] > 2 * tolerance]
    return float(diff.max(initial=0.0))
