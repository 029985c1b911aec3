"""`kerasline predict`: held-out inputs (or an .npy/.npz file) through a running server, printed compactly."""

import argparse
from pathlib import Path

import numpy as np

from kerasline.config import ExperimentConfig
from kerasline.errors import UserError
from kerasline.serving.client import GrpcClient, RestClient
from kerasline.serving.tensors import DEFAULT_SIGNATURE


def predict_and_print(cfg: ExperimentConfig, args: argparse.Namespace) -> None:
    rest = RestClient(args.server)
    target = {"version": args.version, "label": args.label}
    metadata = rest.metadata(cfg.model_name, **target)
    signature = metadata["metadata"]["signature_def"]["signature_def"][DEFAULT_SIGNATURE]
    inputs = load_inputs(cfg, args.input, args.count, list(signature["inputs"]))
    outputs = rest.predict(cfg.model_name, inputs, **target)
    rows = len(next(iter(inputs.values())))
    print(f"{args.server}  {cfg.model_name} version {metadata['model_spec']['version']}: {rows} input(s), REST")
    for i in range(rows):
        print(f"  {i:>3}  " + "  ".join(f"{name} {_compact(value[i])}" for name, value in outputs.items()))
    if args.grpc:
        by_grpc = GrpcClient(args.grpc).predict(cfg.model_name, inputs, **target)
        diff = max(_max_abs_diff(outputs[name], by_grpc[name]) for name in outputs)
        print(f"{args.grpc}  gRPC: the same outputs, max abs diff from REST {diff:.2e}")


def load_inputs(cfg: ExperimentConfig, path: Path | None, count: int, names: list[str]) -> dict[str, np.ndarray]:
    """From the file, else the held-out samples the export verified against (single-input models)."""
    if path is not None:
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as arrays:
                    inputs = {name: arrays[name] for name in arrays.files}
            elif path.suffix == ".npy":
                if len(names) != 1:
                    raise UserError(f"--input {path}: the model has inputs {names}; give an .npz naming each")
                inputs = {names[0]: np.load(path, allow_pickle=False)}
            else:
                raise UserError(f"--input {path}: expected an .npy or .npz file")
        except (OSError, ValueError) as e:
            raise UserError(f"--input {path}: {e}") from None
    else:
        from kerasline.training.tasks import task_for

        inputs = task_for(cfg).sample_inputs()  # held-out raw inputs, named as the signature names them
    return {name: array[:count] for name, array in inputs.items()}


def _compact(value: np.ndarray) -> str:
    value = np.asarray(value)
    if value.ndim == 0:
        return str(value.item())
    return np.array2string(value, precision=3, threshold=6, edgeitems=3, suppress_small=True, max_line_width=10**6)


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.dtype.kind in "OSU" or b.dtype.kind in "OSU":
        return 0.0 if np.array_equal(a, b) else float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))
