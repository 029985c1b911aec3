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
from functools import partial
from pathlib import Path

import numpy as np

from kerasline.config import ExperimentConfig
from kerasline.errors import UserError
from kerasline.export.card import write_model_card
from kerasline.export.onnx_int8 import CALIBRATION_SAMPLES, INT8_FILE, write_int8
from kerasline.export.onnx_rnn import for_onnx
from kerasline.export.repository import write_models_config, write_warmup
from kerasline.export.signature import write_onnx, write_saved_model
from kerasline.export.verify import SavedModelReloader, parity_report
from kerasline.files import ensure_free_space, remove_stale_staging, staging_dir, written_or_disk_full
from kerasline.training.tasks import task_for


class ParityError(UserError):
    """An export whose outputs differ from the Keras model by more than the tolerance."""


def export_run(cfg: ExperimentConfig, run_dir: Path) -> Path:
    """The task's signatures (one SavedModel holds them all; each has its own ONNX file), verified, published."""
    task = task_for(cfg)
    model = task.export_model(run_dir / "best.weights.h5")
    # ONNX files are converted from a copy whose LSTMs and GRUs become native ONNX ops (the model itself where it
    # has none); parity holds each to the Keras model's own function.
    signatures = task.signatures(model, for_onnx(model), run_dir)
    root = Path(cfg.export.dir) / cfg.model_name
    remove_stale_staging(root)
    # The SavedModel and each ONNX file hold the float32 weights once (export.onnx_int8: its float32 working copy
    # and its int8 weights once more); graphs and metadata are small beside them.
    copies = 1 + len(signatures) + 2 * cfg.export.onnx_int8
    ensure_free_space(root, copies * sum(w.numpy().nbytes for w in model.weights), "an export")
    staging = staging_dir(root)

    def write() -> Path:
        with SavedModelReloader() as reloader:  # imports TensorFlow while the files below are written
            write_saved_model(model, signatures, str(staging))
            for signature in signatures.values():
                write_onnx(signature.converted, str(staging / signature.onnx_file))
            if cfg.export.onnx_int8:
                model_onnx = staging / signatures["serving_default"].onnx_file
                write_int8(model_onnx, staging / INT8_FILE, task.calibration_inputs(CALIBRATION_SAMPLES))
            report = parity_report(signatures, staging, cfg.export.tolerance, task.output_difference, reloader)
        card = partial(write_model_card, cfg, run_dir, task=task, model=model, signatures=signatures)
        return publish_verified(cfg, run_dir, staging, report, signatures["serving_default"].inputs, card)

    def outcome() -> str:  # after a full disk; once the staging is renamed, only models.config was left to write
        return "nothing was published" if staging.exists() else "the version was published, models.config was not"

    try:
        return written_or_disk_full(write, f"an export of {run_dir}", root, outcome)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_verified(
    cfg: ExperimentConfig,
    run_dir: Path,
    staging: Path,
    report: dict,
    warmup: dict[str, np.ndarray],
    describe: Callable[[Path], object] = lambda staging: None,
) -> Path:
    """Keeps the parity report with the export and refuses a failed one; otherwise adds the warmup records (from
    `warmup`, the serving_default inputs) and whatever `describe(staging)` writes (the model card), publishes the
    staging as the next version and refreshes models.config."""
    report["run_dir"] = str(run_dir)
    (staging / "verification.json").write_text(json.dumps(report, indent=2) + "\n")
    if not report["passed"]:
        raise ParityError(
            f"export of {run_dir} failed parity: max abs diff {report['max_abs_diff']} > {cfg.export.tolerance}"
        )
    write_warmup(staging, warmup)
    describe(staging)  # before the rename: a version is never seen without its card
    version_dir = _publish(staging, Path(cfg.export.dir) / cfg.model_name)
    write_models_config(Path(cfg.export.dir))
    return version_dir


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
