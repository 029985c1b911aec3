"""MODEL_CARD.md: what an export version is, for the person about to serve it. Written into the staging directory
after verification, so it is published with the version by the same rename (export/publish.py).

Its figures come from the files beside it or the run's: test metrics and the task report from the run's
metrics.json, parity from verification.json; the signatures from the functions the SavedModel serves; the
latencies are measured here, at export, on one held-out input.
"""

import json
import os
import platform
from pathlib import Path

import keras
import tensorflow as tf

from kerasline.config import DataConfig, ExperimentConfig, task_of, to_toml
from kerasline.export.onnx_int8 import INT8_FILE, int8_session
from kerasline.shipped import find, shipped_dir
from kerasline.timing import median_ms
from kerasline.training.report import is_table, number
from kerasline.training.runs import versions
from kerasline.training.tasks import Signature, Task
from kerasline.training.tasks.base import Function

CARD_FILE = "MODEL_CARD.md"
LATENCY_CALLS = 10  # timed calls per runtime, after one untimed warm-up call


def write_model_card(
    cfg: ExperimentConfig,
    run_dir: Path,
    version_dir: Path,
    task: Task,
    model: keras.Model,
    signatures: dict[str, Signature],
) -> Path:
    """MODEL_CARD.md in `version_dir`, which already holds the SavedModel, the ONNX files and verification.json."""
    sections = [
        _model(cfg, run_dir, model),
        _data(cfg.data, task),
        *([section] if (section := task.card_section(run_dir)) else []),
        _metrics(run_dir),
        _parity(version_dir),
        _signatures(signatures),
        _latency(signatures["serving_default"], version_dir),
        _versions(),
        _config(cfg, run_dir),
    ]
    path = version_dir / CARD_FILE
    path.write_text("\n\n".join("\n".join(section) for section in sections) + "\n")
    return path


def _model(cfg: ExperimentConfig, run_dir: Path, model: keras.Model) -> list[str]:
    return [
        f"# Model card: {cfg.model_name}",
        "",
        f"- family: `{cfg.model.name}`",
        f"- task: {task_of(cfg)}",
        f"- parameters: {model.count_params():,}",
        f"- experiment: `{cfg.name}`, trained in `{run_dir}`",
    ]


def _data(data: DataConfig, task: Task) -> list[str]:
    splits = task.load_splits()
    sizes = {name: _count(getattr(splits, name)) for name in ("train", "validation", "test")}
    lines = ["## Data", "", f"- data.source: {data.source}, data.name: `{data.name}`"]
    provenance = _provenance(data)
    if provenance:
        lines += ["- provenance (data/README.md):", *(f"  - {column}: {text}" for column, text in provenance.items())]
    return lines + [f"- examples: {', '.join(f'{split} {count:,}' for split, count in sizes.items())}"]


def _count(split: tf.data.Dataset) -> int:
    count = int(split.cardinality())
    return count if count >= 0 else int(split.reduce(0, lambda n, _: n + 1))  # a source of unknown length


def _provenance(data: DataConfig) -> dict[str, str]:
    """A shipped sample's row of data/README.md's table, column by column (what, source, ...); {} for other data."""
    suffix = {"samples": ".npz", "csv": ".csv"}.get(data.source)
    if suffix is None:
        return {}
    candidates = [Path(data.name)] if data.name.endswith(suffix) else [find("data", f"{data.name}{suffix}")]
    path = next((p for p in [*candidates, find("data", data.name)] if p.exists()), None)
    readme = shipped_dir("data") / "README.md"
    if path is None or path.resolve().parent != readme.resolve().parent or not readme.is_file():
        return {}
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in readme.read_text().splitlines()]
    rows = [row for row in rows if len(row) > 1]  # the table's lines; its first is the header
    for row in rows[1:]:
        if row[0].strip("`").rstrip("/") == path.name:
            return dict(zip(rows[0][1:], row[1:], strict=False))
    return {}


def _metrics(run_dir: Path) -> list[str]:
    if not (run_dir / "metrics.json").is_file():  # export_run takes any run with weights, finished or not
        return ["## Test metrics", "", f"None recorded: `{run_dir}` has no metrics.json (not a finished run)."]
    results = json.loads((run_dir / "metrics.json").read_text())
    report = results.get("report", {})
    figures = {**results["test"], **_figures(report)}
    lines = ["## Test metrics", "", f"On the test split, from `{run_dir / 'metrics.json'}`.", ""]
    lines += _table(["metric", "value"], [[name, number(value)] for name, value in figures.items()])
    for name, value in report.items():
        if is_table(value):
            rows = [[key, *map(number, cells.values())] for key, cells in value.items()]
            lines += ["", f"### {name}", "", *_table(["class", *next(iter(value.values()))], rows)]
        elif isinstance(value, list):
            lines += ["", f"### {name} (rows: true class, columns: predicted class)", "", "```"]
            lines += [" ".join(f"{count:>6}" for count in row) for row in value] + ["```"]
    return lines


def _figures(report: dict) -> dict:
    """The report's single figures: its numbers, and each one-line dict's entries as `name.key`."""
    figures = {}
    for name, value in report.items():
        if isinstance(value, dict) and not is_table(value):
            figures |= {f"{name}.{key}": v for key, v in value.items()}
        elif not isinstance(value, dict | list):
            figures[name] = value
    return figures


def _parity(version_dir: Path) -> list[str]:
    report = json.loads((version_dir / "verification.json").read_text())
    diffs = report["max_abs_diff"]
    rows = [[export, output, number(diff)] for export, outputs in diffs.items() for output, diff in outputs.items()]
    verdict = "passed" if report["passed"] else "failed"
    against = f"Against the Keras model on {report['samples']} held-out inputs"
    summary = f"{against}, tolerance {number(report['tolerance'])}: {verdict} (`verification.json`)."
    lines = ["## Parity", "", summary, "", *_table(["export", "output", "max abs diff"], rows)]
    if "int8" in report:
        int8 = report["int8"]
        rows = [
            [output, number(diff), number(int8["mean_abs_diff"][output])]
            for output, diff in int8["max_abs_diff"].items()
        ]
        note = (
            f"`{int8['file']}` (export.onnx_int8) approximates the model by design; its differences on the same inputs:"
        )
        lines += ["", note, "", *_table(["output", "max abs diff", "mean abs diff"], rows)]
    return lines


def _signatures(signatures: dict[str, Signature]) -> list[str]:
    """Each SavedModel signature's inputs and outputs; an ONNX file's too where they differ (text: ONNX has no
    string ops, so the file takes the token ids)."""
    rows = []
    for name, signature in signatures.items():
        rows += _io_rows(name, signature.function)
        if signature.onnx_pair[0] is not signature.function:
            rows += _io_rows(f"`{signature.onnx_file}`", signature.onnx_pair[0])
    onnx = ", ".join(f"{name}: `{s.onnx_file}`" for name, s in signatures.items())
    lines = ["## Signatures", "", f"SavedModel signatures, and their ONNX files ({onnx}).", ""]
    return lines + _table(["signature", "in/out", "name", "dtype", "shape"], rows)


def _io_rows(label: str, function: Function) -> list[list[str]]:
    """A function's structured input signature and outputs: name, dtype and shape each."""
    inputs = {spec.name: spec for spec in function.input_signature}
    outputs = function.get_concrete_function().structured_outputs
    rows = [[label, "input", name, spec.dtype.name, str(spec.shape.as_list())] for name, spec in inputs.items()]
    return rows + [[label, "output", name, t.dtype.name, str(t.shape.as_list())] for name, t in outputs.items()]


def _latency(signature: Signature, version_dir: Path) -> list[str]:
    """Median milliseconds of serving_default on one held-out input, in each runtime."""
    import onnxruntime as ort

    saved_model_input = {key: value[:1] for key, value in signature.inputs.items()}
    onnx_input = {key: value[:1] for key, value in signature.onnx_pair[1].items()}
    session = ort.InferenceSession(str(version_dir / signature.onnx_file), providers=["CPUExecutionProvider"])
    runs = {  # both give numpy arrays back: the SavedModel's time includes its copy off the device
        "SavedModel (serving_default)": lambda: [t.numpy() for t in signature.function(**saved_model_input).values()],
        f"ONNX Runtime (`{signature.onnx_file}`, CPU)": lambda: session.run(None, onnx_input),
    }
    if (version_dir / INT8_FILE).exists():
        int8 = int8_session(version_dir / INT8_FILE)
        runs[f"ONNX Runtime (`{INT8_FILE}`, CPU, threads not spinning)"] = lambda: int8.run(None, onnx_input)
    rows = [[runtime, f"{median_ms(call, LATENCY_CALLS, warmup=1):.3f}"] for runtime, call in runs.items()]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"
    how = f"the median of {LATENCY_CALLS} calls on one held-out input, after one warm-up call; not a benchmark"
    summary = f"Measured at export on this machine ({machine}): {how}."
    return ["## Latency at batch 1", "", summary, "", *_table(["runtime", "median ms"], rows)]


def _versions() -> list[str]:
    found = versions()
    rows = [["python", found["python"]], *([name, version or "-"] for name, version in found["packages"].items())]
    rows.append(["git", found["git"] or "-"])
    return ["## Package versions", "", "At export.", "", *_table(["package", "version"], rows)]


def _config(cfg: ExperimentConfig, run_dir: Path) -> list[str]:
    """As the run resolved it where it kept its config.toml, else as the export was given it."""
    path = run_dir / "config.toml"
    toml, source = (path.read_text(), f"`{path}`") if path.is_file() else (to_toml(cfg), "the export's config")
    return ["## Config", "", f"As resolved ({source}).", "", "```toml", toml.rstrip(), "```"]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
