"""`kerasline predict --input PATH` without a server: an export run in-process on files, rows written to CSV or
JSON Lines.

The version is the newest under `<export.dir>/<model_name>/` (or --version N, or the newest exported from --run
DIR); its serving_default signature says what the inputs are, and the task says what its outputs mean
(`Task.readable`). Inputs stream in batches, so a folder of any size takes bounded memory; a bad file is reported
on stderr and skipped (or, strict, stops the run).
"""

import csv
import itertools
import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from kerasline.config import ExperimentConfig
from kerasline.errors import UserError
from kerasline.export.onnx_int8 import INT8_FILE, int8_session
from kerasline.export.repository import versions
from kerasline.pipelines.sources import IMAGE_SUFFIXES
from kerasline.pipelines.table import MISSING
from kerasline.serving.tensors import DEFAULT_SIGNATURE, dims, numpy_dtype, read_signature_defs
from kerasline.training.tasks import Task, task_for

OUTPUT_SUFFIXES = (".csv", ".jsonl")

Arrays = dict[str, np.ndarray]
Runtime = Callable[[Arrays], Arrays]


@dataclass(frozen=True)
class Spec:
    """One signature input: its dtype and shape, batch axis included (-1: any)."""

    dtype: np.dtype
    shape: list[int]

    def __str__(self) -> str:
        return f"{self.dtype.name if self.dtype.kind != 'O' else 'string'} {self.shape}"


@dataclass(frozen=True)
class Example:
    """One input: `source` for the row's `input` column (a path, or an index), `name` for the files made from it
    (unique within the run), `arrays` its value for each signature input, without the batch axis."""

    source: str | int
    name: str
    arrays: Arrays
    resized: bool = False
    note: str | None = None  # said once per run, before the first example that carries it


@dataclass(frozen=True)
class Bad:
    """An input that cannot be predicted: where it is, and why."""

    source: str
    reason: str


@dataclass(frozen=True)
class Summary:
    """What a prediction run did, for its one-line summary."""

    version_dir: Path
    runtime: str
    output: Path
    predicted: int
    skipped: int
    seconds: float  # reading, predicting and writing; not loading the model

    @property
    def throughput(self) -> float:
        """Inputs per second."""
        return self.predicted / max(self.seconds, 1e-9)


def predict_files(
    cfg: ExperimentConfig,
    source: Path,
    output: Path = Path("predictions.csv"),
    *,
    version: int | None = None,
    run: Path | None = None,
    runtime: str = "savedmodel",
    top_k: int = 1,
    strict: bool = False,
) -> Summary:
    """Every input under `source` through the chosen export's serving_default, one row each to `output`."""
    if top_k < 1:
        raise UserError(f"--top-k {top_k}: must be 1 or more")
    version_dir = choose_version(cfg, version, run)
    total, examples = read_inputs(source, signature_inputs(version_dir), cfg)
    task = task_for(cfg)
    with RowWriter(output) as writer, Progress(total, strict) as progress:
        call = load_runtime(runtime, version_dir, task)
        start = time.perf_counter()
        for batch in batches(progress.track(examples), cfg.data.batch_size):
            inputs = {name: np.stack([e.arrays[name] for e in batch]) for name in batch[0].arrays}
            writer.write(batch, task.readable(call(inputs), top_k))
        seconds = time.perf_counter() - start
    if not writer.count:
        output.unlink(missing_ok=True)
        raise UserError(f"--input {source}: nothing predicted, {progress.skipped} input(s) skipped (reasons above)")
    return Summary(version_dir, runtime, output, writer.count, progress.skipped, seconds)


def batches(examples: Iterable[Example], size: int) -> Iterator[list[Example]]:
    """Up to `size` examples at a time, all of one shape: where the signature leaves a size free, an example of
    another shape starts a new batch."""
    batch: list[Example] = []
    for example in examples:
        if batch and (len(batch) == size or _shapes(batch[0]) != _shapes(example)):
            yield batch
            batch = []
        batch.append(example)
    if batch:
        yield batch


def _shapes(example: Example) -> dict[str, tuple[int, ...]]:
    return {name: array.shape for name, array in example.arrays.items()}


class Progress:
    """A progress bar on stderr, drawn on a terminal only (so piped or captured stderr holds just the messages),
    with each skipped input's reason; strict, the first bad input stops the run."""

    def __init__(self, total: int, strict: bool) -> None:
        self.bar = tqdm(total=total, unit="input", file=sys.stderr, disable=None, dynamic_ncols=True)
        self.strict, self.skipped, self.noted = strict, 0, False
        self.said: set[str] = set()

    def track(self, items: Iterable[Example | Bad]) -> Iterator[Example]:
        for item in items:
            self.bar.update()
            if isinstance(item, Bad):
                self.skip(item)
                continue
            if item.resized and not self.noted:
                height, width = next(iter(item.arrays.values())).shape[:2]
                self.say(f"note: images are resized to {height}x{width} (bilinear, as training resizes)")
                self.noted = True
            if item.note is not None and item.note not in self.said:
                self.say(item.note)
                self.said.add(item.note)
            yield item

    def skip(self, bad: Bad) -> None:
        if self.strict:
            raise UserError(f"{bad.source}: {bad.reason}")
        self.say(f"skipped {bad.source}: {bad.reason}")
        self.skipped += 1

    def say(self, line: str) -> None:
        self.bar.write(line, file=sys.stderr)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


# Which export


def choose_version(cfg: ExperimentConfig, version: int | None, run: Path | None) -> Path:
    """The version directory: `version`, else the newest exported from `run`, else the newest."""
    root = Path(cfg.export.dir) / cfg.model_name
    available = versions(root)
    if not available:
        raise UserError(f"{cfg.model_name}: no export under {root}; run `make train` or `make export` first")
    if version is not None:
        if version not in available:
            raise UserError(f"--version {version}: {cfg.model_name} has no such version (versions: {available})")
        return root / str(version)
    if run is not None:
        from_run = [v for v in available if exported_from(root / str(v)) == run.resolve()]
        if not from_run:
            raise UserError(f"--run {run}: no version under {root} was exported from it; `kerasline export --run` it")
        return root / str(from_run[-1])
    return root / str(available[-1])


def exported_from(version_dir: Path) -> Path | None:
    """The run a version was exported from, as its verification.json names it."""
    try:
        return Path(json.loads((version_dir / "verification.json").read_text())["run_dir"]).resolve()
    except (OSError, ValueError, KeyError):
        return None


def signature_inputs(version_dir: Path) -> dict[str, Spec]:
    """serving_default's inputs as the SavedModel declares them, read without loading the model."""
    signature = read_signature_defs(version_dir)[DEFAULT_SIGNATURE]
    return {name: Spec(numpy_dtype(info), dims(info)) for name, info in signature.inputs.items()}


def load_runtime(runtime: str, version_dir: Path, task: Task) -> Runtime:
    """serving_default as a function of a batch {name: [B, ...]}: the SavedModel, or the version's model.onnx in
    ONNX Runtime, fed as the task says (export held both to the same outputs), or its int8 copy (onnx-int8:
    export.onnx_int8, image models, which take the raw inputs)."""
    if runtime == "savedmodel":
        return SavedModelRuntime(version_dir)
    if runtime == "onnx-int8":
        if not (version_dir / INT8_FILE).is_file():
            raise UserError(f"{version_dir}: no {INT8_FILE}; export the run with export.onnx_int8 = true")
        int8 = int8_session(version_dir / INT8_FILE)
        names = [output.name for output in int8.get_outputs()]
        return lambda inputs: dict(zip(names, int8.run(names, inputs), strict=True))
    import onnxruntime

    run_dir = exported_from(version_dir)
    if run_dir is None:
        raise UserError(f"{version_dir}: no verification.json naming the run it came from; export the run again")
    try:
        feed = task.onnx_feed(run_dir)
    except OSError as e:
        raise UserError(f"{version_dir}: its ONNX file's inputs need the run {run_dir}: {e}") from None
    session = onnxruntime.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return lambda inputs: dict(zip(names, session.run(names, feed(inputs)), strict=True))


class SavedModelRuntime:
    """serving_default of the loaded SavedModel, on numpy arrays."""

    def __init__(self, version_dir: Path) -> None:
        self.loaded = tf.saved_model.load(str(version_dir))  # owns the variables: a signature alone may outlive them
        self.serve = self.loaded.signatures[DEFAULT_SIGNATURE]

    def __call__(self, inputs: Arrays) -> Arrays:
        outputs = self.serve(**{name: tf.constant(array) for name, array in inputs.items()})
        return {name: tensor.numpy() for name, tensor in outputs.items()}


# What the inputs are


def read_inputs(path: Path, specs: dict[str, Spec], cfg: ExperimentConfig) -> tuple[int, Iterator[Example | Bad]]:
    """(how many, the inputs, lazily) of a folder of images (any depth), an image, an .npy (the single input), an
    .npz (named inputs), a .csv (one row per input, a column per input) or a text file (one input per line: a
    text, or space-separated token ids)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise UserError(f"--input {path}: no images (PNG, JPEG, BMP or GIF) in this folder")
        name, spec = _image_input(specs, path)
        return len(files), (_read_image(file, str(file.relative_to(path)), name, spec) for file in files)
    if not path.is_file():
        raise UserError(f"--input {path}: no such file or folder")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        name, spec = _image_input(specs, path)
        return 1, iter([_read_image(path, path.name, name, spec)])
    if path.suffix.lower() in (".npy", ".npz"):
        return _read_arrays(path, specs)
    if path.suffix.lower() == ".csv":
        return _read_csv(path, specs, cfg.data.delimiter)
    return _read_lines(path, specs, cfg.data.vocab_size)


def _describe(specs: dict[str, Spec]) -> str:
    return ", ".join(f"{name} {spec}" for name, spec in specs.items())


def _image_input(specs: dict[str, Spec], path: Path) -> tuple[str, Spec]:
    (name, spec), *others = specs.items()
    if others or spec.dtype != np.uint8 or len(spec.shape) != 4:
        raise UserError(f"--input {path}: the model takes {_describe(specs)}, not images; give an .npy or .npz")
    return name, spec


def _read_image(path: Path, name: str, input_name: str, spec: Spec) -> Example | Bad:
    """The image at the signature's channels, and at its size where it has one."""
    try:
        image = decode_image(path.read_bytes(), spec.shape[3])
    except OSError as e:
        return Bad(str(path), f"cannot read it ({e.strerror})")
    except tf.errors.InvalidArgumentError as e:
        return Bad(str(path), f"not a readable image ({_tf_reason(e)})")
    height, width = spec.shape[1:3]
    resized = -1 not in (height, width) and image.shape[:2] != (height, width)
    if resized:
        image = resize(image, height, width)
    return Example(str(path), name, {input_name: image}, resized)


def decode_image(data: bytes, channels: int) -> np.ndarray:
    """uint8 [H, W, channels], as training decodes image files (tf.io.decode_image to the model's channels). TF
    decodes BMP and GIF to 3 or 4 channels only: for a one-channel model they are read as RGB and made grey."""
    try:
        return tf.io.decode_image(data, channels=channels, expand_animations=False).numpy()
    except tf.errors.InvalidArgumentError:
        if channels != 1:
            raise
        rgb = tf.io.decode_image(data, channels=3, expand_animations=False)
        return tf.image.rgb_to_grayscale(rgb).numpy()


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, C] → [height, width, C]: bilinear, rounded back to uint8, as the TFDS segmentation source
    resizes (pipelines/segmentation.py)."""
    resized = tf.image.resize(image, (height, width))
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()


def _tf_reason(e: tf.errors.OpError) -> str:
    """A TF op's message without its node name and op tag."""
    return re.sub(r"\{\{.*?\}\}|\[Op:\w+\]", "", e.message).strip().splitlines()[0]


def _read_arrays(path: Path, specs: dict[str, Spec]) -> tuple[int, Iterator[Example | Bad]]:
    """An .npy is the single input, memory-mapped so only a batch of it is read at a time; an .npz names an array
    per input (read whole: numpy cannot map a zip)."""
    try:
        if path.suffix.lower() == ".npy":
            if len(specs) != 1:
                raise UserError(f"--input {path}: the model has inputs {list(specs)}; give an .npz naming each")
            arrays = {next(iter(specs)): np.load(path, mmap_mode="r", allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as e:
        return 1, iter([Bad(str(path), f"not a readable {path.suffix} file ({e})")])
    if set(arrays) != set(specs):
        return 1, iter([Bad(str(path), f"arrays {sorted(arrays)}, but the model takes {_describe(specs)}")])
    batches = {name: _as_batch(array, specs[name]) for name, array in arrays.items()}
    for name, batch in batches.items():
        if batch is None:
            shape = list(arrays[name].shape)
            return 1, iter([Bad(str(path), f"{name} of shape {shape}, but the model takes {specs[name]} (-1: any)")])
    if len({len(batch) for batch in batches.values()}) > 1:
        return 1, iter([Bad(str(path), "its arrays differ in length (dimension 0)")])
    count = len(next(iter(batches.values())))
    return count, (_array_example(path, batches, specs, i) for i in range(count))


def _as_batch(array: np.ndarray, spec: Spec) -> np.ndarray | None:
    """`array` as a batch of `spec`'s input, (N, H, W) images gaining a one-channel model's channel axis; None
    where its shape does not fit."""
    if array.ndim == len(spec.shape) - 1 and spec.shape[-1] == 1:
        array = array[..., None]
    if array.ndim != len(spec.shape):
        return None
    fits = all(d in (-1, s) for d, s in zip(spec.shape[1:], array.shape[1:], strict=True))
    return array if fits else None


def _array_example(path: Path, batches: Arrays, specs: dict[str, Spec], i: int) -> Example | Bad:
    values = {name: _convert(np.asarray(batch[i]), specs[name].dtype) for name, batch in batches.items()}
    for name, value in values.items():
        if value is None:
            return Bad(f"{path}[{i}]", f"{name}: values of type {batches[name].dtype} that {specs[name]} cannot hold")
    return Example(i, str(i), values)


def _convert(value: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
    """`value` as `dtype`, or None where that would change it (a pixel of 300, a fractional token id); a float
    may round to a narrower float."""
    if dtype.kind == "O" or value.dtype.kind in "SUO":
        return value.astype(object) if dtype.kind == "O" and value.dtype.kind in "SU" else None
    with np.errstate(invalid="ignore", over="ignore"):
        converted = value.astype(dtype)
    return converted if dtype.kind == "f" or np.array_equal(converted, value) else None


def _read_lines(path: Path, specs: dict[str, Spec], vocab_size: int) -> tuple[int, Iterator[Example | Bad]]:
    """One input per line: a text for a string input [B], or space-separated token ids for an integer input
    [B, L], cut to L and padded with 0 as the token pipeline does."""
    (name, spec), *others = specs.items()
    is_text = spec.dtype.kind == "O" and len(spec.shape) == 1
    is_tokens = spec.dtype.kind in "iu" and len(spec.shape) == 2
    if others or not (is_text or is_tokens):
        raise UserError(f"--input {path}: the model takes {_describe(specs)}, not lines of text; give an .npy or .npz")
    try:
        with path.open("rb") as lines:
            count = sum(1 for _ in lines)
    except OSError as e:
        raise UserError(f"--input {path}: cannot read it ({e.strerror})") from None

    def parse(line: bytes) -> np.ndarray | str:
        return np.array(line, dtype=object) if is_text else _token_ids(line, spec, vocab_size)

    return count, _line_examples(path, name, parse)


def _line_examples(path: Path, name: str, parse: Callable[[bytes], np.ndarray | str]) -> Iterator[Example | Bad]:
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            value = parse(line.rstrip(b"\r\n"))
            source = f"{path}:{number}"
            yield Bad(source, value) if isinstance(value, str) else Example(source, str(number), {name: value})


def _token_ids(line: bytes, spec: Spec, vocab_size: int) -> np.ndarray | str:
    """A line's ids as `spec`'s row [L], or why they cannot be."""
    try:
        ids = np.array([int(word) for word in line.split()], np.int64)
    except (ValueError, OverflowError):
        return "not space-separated integer token ids"
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        return f"token ids outside [0, {vocab_size}) (data.vocab_size)"
    row = np.zeros(spec.shape[1], spec.dtype)
    ids = ids[: len(row)]
    row[: len(ids)] = ids
    return row


# A CSV: a column per input


def _read_csv(path: Path, specs: dict[str, Spec], delimiter: str) -> tuple[int, Iterator[Example | Bad]]:
    """One input per row; the header row names the columns, and each signature input ([B]) takes the column of
    its name: numbers for a float (a missing one is NaN) or integer input, UTF-8 bytes for a string input (a
    missing one stays as written: the graph reads "" and "NA" as missing). An input without a column is filled as
    missing (NaN, b""), said once; columns the model does not take (a label) are ignored. Rows are numbered from
    1 after the header; blank lines are left out, as pandas.read_csv leaves them out."""
    _check_columns_fit(path, specs)
    records = _csv_records(path, delimiter)
    header = next(records, None)
    if header is None:
        raise UserError(f"--input {path}: an empty file; a CSV needs a header row naming its columns")
    if isinstance(header, csv.Error):
        raise UserError(f"--input {path}: cannot read its header row ({header})")
    columns = _csv_columns(path, header, specs)
    count = sum(1 for _ in records)
    if not count:
        raise UserError(f"--input {path}: a header row but no rows")
    absent = ", ".join(name for name in specs if name not in columns)
    note = f'note: no column {absent} in {path}: filled as missing (NaN, or "" for a string)' if absent else None
    rows = enumerate(itertools.islice(_csv_records(path, delimiter), 1, None), 1)
    return count, (_csv_example(path, number, row, len(header), columns, specs, note) for number, row in rows)


def _check_columns_fit(path: Path, specs: dict[str, Spec]) -> None:
    """Every input one value per row ([B]) of a kind a CSV field can be read as."""
    for spec in specs.values():
        if spec.shape is None or len(spec.shape) != 1 or spec.dtype.kind not in "fiuO":
            raise UserError(f"--input {path}: the model takes {_describe(specs)}, not a value per CSV column")


def _csv_records(path: Path, delimiter: str) -> Iterator[list[str] | csv.Error]:
    """The file's records, header first, blank lines left out; one the csv module cannot split comes as its
    error (the reader goes on with the next line). Bytes that are not UTF-8 pass through as surrogates, so a
    string input gets them back as they were written."""
    try:
        stream = path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")  # -sig: Excel's BOM
    except OSError as e:
        raise UserError(f"--input {path}: cannot read it ({e.strerror})") from None
    with stream:
        reader = csv.reader(stream, delimiter=delimiter)
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield e
                continue
            if record:
                yield record


def _csv_columns(path: Path, header: list[str], specs: dict[str, Spec]) -> dict[str, int]:
    """Input name → the index of its column; an input without one must be able to be missing."""
    names = [name.strip() for name in header]
    columns = {name: names.index(name) for name in specs if name in names}
    for name in columns:
        if names.count(name) > 1:
            raise UserError(f"--input {path}: the header names the column {name} {names.count(name)} times")
    if not columns:
        raise UserError(f"--input {path}: no column is an input of the model ({_describe(specs)})")
    for name, spec in specs.items():
        if name not in columns and spec.dtype.kind in "iu":
            raise UserError(f"--input {path}: no column {name}, and {name} ({spec}) cannot be missing")
    return columns


def _csv_example(
    path: Path,
    number: int,
    record: list[str] | csv.Error,
    width: int,
    columns: dict[str, int],
    specs: dict[str, Spec],
    note: str | None,
) -> Example | Bad:
    source = f"{path} row {number}"
    if isinstance(record, csv.Error):
        return Bad(source, f"not a readable CSV row ({record})")
    if len(record) != width:
        return Bad(source, f"{len(record)} fields, but the header has {width}")
    arrays = {}
    for name, spec in specs.items():
        value = _csv_value(record[columns[name]], spec.dtype) if name in columns else _missing(spec.dtype)
        if isinstance(value, str):
            return Bad(source, f"{name}: {value}")
        arrays[name] = value
    return Example(number, str(number), arrays, note=note)


def _csv_value(text: str, dtype: np.dtype) -> np.ndarray | str:
    """A field as a 0-d `dtype` array, or why it cannot be one."""
    if dtype.kind == "O":
        return np.array(text.encode("utf-8", "surrogateescape"), dtype=object)
    if text.strip().lower() in MISSING:  # as training reads a csv
        return _missing(dtype) if dtype.kind == "f" else f"{text!r}: missing, which {dtype.name} cannot hold"
    try:
        number = None if "_" in text else (float if dtype.kind == "f" else int)(text)  # float("1_0") is 10.0
    except ValueError:
        number = None
    if number is None:
        return f"{text!r} is not {'a number' if dtype.kind == 'f' else 'an integer'}"
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            value = np.array(number, dtype)
        infinite = text.strip().lower().lstrip("+-") in ("inf", "infinity")  # float("1e400") is inf too
        fits = bool(np.isfinite(value)) or infinite
    else:
        fits = np.iinfo(dtype).min <= number <= np.iinfo(dtype).max
        value = np.array(number if fits else 0, dtype)
    return value if fits else f"{text!r} is outside the range of {dtype.name}"


def _missing(dtype: np.dtype) -> np.ndarray:
    """What a missing field is: NaN, or an empty string."""
    return np.array(b"", dtype=object) if dtype.kind == "O" else np.array(np.nan, dtype)


# Where the rows go


class RowWriter:
    """Rows to CSV or JSON Lines, as the output's suffix says: `input` (the input's path, index or CSV row), then the
    task's columns. An image in a row (uint8 [H, W] or [H, W, C]) becomes a PNG in a folder beside the output and
    named after it (predictions.csv: predictions/), the file named after the input; the row holds the PNG's path,
    relative to the output's folder."""

    def __init__(self, path: Path) -> None:
        if path.suffix.lower() not in OUTPUT_SUFFIXES:
            raise UserError(f"--output {path}: expected a .csv or .jsonl file")
        self.path, self.files, self.count = path, path.with_suffix(""), 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.stream = path.open("w", newline="", encoding="utf-8")
        except OSError as e:
            why = "not a folder" if isinstance(e, FileExistsError | NotADirectoryError) else e.strerror
            raise UserError(f"--output {path}: cannot write in {path.parent} ({why})") from None
        self.csv: csv.DictWriter | None = None

    def write(self, examples: list[Example], rows: list[dict]) -> None:
        for example, row in zip(examples, rows, strict=True):
            row = {"input": example.source} | {
                column: self._png(example.name, column, value) if isinstance(value, np.ndarray) else value
                for column, value in row.items()
            }
            if self.path.suffix.lower() == ".jsonl":
                self.stream.write(json.dumps(row) + "\n")
            else:
                if self.csv is None:
                    self.csv = csv.DictWriter(self.stream, fieldnames=list(row))
                    self.csv.writeheader()
                self.csv.writerow(row)
        self.count += len(rows)
        self.stream.flush()

    def _png(self, name: str, column: str, image: np.ndarray) -> str:
        path = self.files / f"{name}.{column}.png"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tf.io.encode_png(image if image.ndim == 3 else image[..., None]).numpy())
        except OSError as e:
            raise UserError(f"{path}: cannot write there ({e.strerror})") from None
        return str(path.relative_to(self.path.parent))

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.stream.close()
