"""A CSV table → splits of (raw columns, label), and the encoding of raw columns that training and the export
share, with its statistics learned from the training split only.

Raw columns are what a client sends, and what the export's serving_default takes: one input per feature column,
each [B], float32 for a numeric column (NaN or ±inf: missing) and a string for a categorical or boolean one
("" or NA: missing). The encoding (`TableEncoder`) gives what the Keras model takes:
- `numbers` float32 [B, N]: each numeric column standardised by its training mean and standard deviation (a
  missing value becomes the mean, so 0), each boolean 1 or 0 (a missing one its training mode);
- `<column>_id` int32 [B] per categorical column: 1..V its training values, most frequent first; V + 1 missing
  (or the mode's id, by the column's rule); 0 a category training never saw, which the model encodes as nothing;
- `<a>_x_<b>_id` int32 [B] per cross of two categorical columns: the pair's id, 0 where either is unseen.
"""

import csv
import io
import keyword
import math
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasline.config import ColumnConfig, DataConfig, did_you_mean
from kerasline.errors import DataError
from kerasline.pipelines.columns import NUMBERS, Column, Table
from kerasline.pipelines.sources import BadRecords, Splits, labelled_subset, split_order
from kerasline.shipped import find

MISSING = {"", "na", "n/a", "nan", "null", "none"}  # how CSV files write a missing value, lowercased
TRUE, FALSE = {"true", "t", "yes", "y", "1"}, {"false", "f", "no", "n", "0"}
DELIMITERS = (",", ";", "\t", "|")


@dataclass(frozen=True)
class TableSplits:
    """The table read, typed and split: its `table` (statistics from `train` only), and each split's raw columns
    ({key: [N]}) with labels [N] (int32 class ids, or float32 values)."""

    table: Table
    train: tuple[dict[str, np.ndarray], np.ndarray]
    validation: tuple[dict[str, np.ndarray], np.ndarray]
    test: tuple[dict[str, np.ndarray], np.ndarray]
    skipped: tuple[str, ...] = ()

    def encoded(self) -> Splits:
        """Unbatched (encoded columns, label) datasets, encoded as the export will (`TableEncoder`)."""
        encode = TableEncoder(self.table)
        parts = (self.train, self.validation, self.test)
        return Splits(*(tf.data.Dataset.from_tensor_slices((encode(as_tensors(x)), y)) for x, y in parts), self.skipped)


def csv_path(data: DataConfig) -> Path:
    return Path(data.name) if data.name.endswith(".csv") else find("data", f"{data.name}.csv")


def read_table(data: DataConfig, seed: int) -> TableSplits:
    """Reads, types and splits `data.name` (split as every source is: a seeded permutation, test | validation |
    train), then learns each column's statistics from the training rows. A broken row, a value its column's type
    cannot hold, or a missing label is a bad record: raised, or skipped and counted (data.on_error)."""
    path, bad = csv_path(data), BadRecords(data.on_error)
    header, rows = _read_rows(path, data.delimiter, bad)
    features = _feature_columns(header, data, path)
    overrides = {name: data.columns.get(name, ColumnConfig()) for name, _ in features}
    columns = [_typed(name, [row[i] for _, row in rows], overrides[name]) for name, i in features]
    index, label_at = dict(features), header.index(data.label)
    rows = [(line, row) for line, row in rows if _well_typed(line, row, index, columns, label_at, data, path, bad)]
    classes = _classes(path, data, [row[label_at] for _, row in rows])
    order = split_order(len(rows), data, seed)
    if data.labels_per_class:
        ids = {name: i for i, name in enumerate(classes)}
        labels = np.asarray([ids[row[label_at].strip()] for _, row in rows])
        order[2] = labelled_subset(order[2], labels, data.labels_per_class, seed)
    test, validation, train = ([rows[i][1] for i in part] for part in order)
    columns = [_fitted(c, [row[index[c.name]] for row in train]) for c in columns]
    table = Table(tuple(columns), data.label, classes, tuple(data.crosses))
    _check_crosses(table, path)

    def split(part: list[list[str]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        raw = {c.key: raw_values(c, [row[index[c.name]] for row in part]) for c in columns}
        return raw, label_values(table, [row[label_at] for row in part])

    parts = split(train), split(validation), split(test)
    if not classes:
        values = parts[0][1].astype(np.float64)
        table = replace(table, label_mean=float(values.mean()), label_std=float(values.std()) or 1.0)
    return TableSplits(table, *parts, tuple(bad.lines))


def raw_values(column: Column, values: list[str]) -> np.ndarray:
    """A column's CSV text → its raw input [N]: float32 with NaN for missing, or the UTF-8 strings."""
    if column.type != "numeric":
        return np.asarray([v.encode("utf-8") for v in values], dtype=bytes)  # bytes, as tf.string gives them back
    return np.asarray([math.nan if _missing(v) else float(v) for v in values], np.float32)


def as_tensors(columns: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    return {key: tf.constant(values) for key, values in columns.items()}


def label_values(table: Table, values: list[str]) -> np.ndarray:
    if not table.classes:
        return np.asarray([float(v) for v in values], np.float32)
    ids = {name: i for i, name in enumerate(table.classes)}
    return np.asarray([ids[v.strip()] for v in values], np.int32)


def _read_rows(path: Path, delimiter: str, bad: BadRecords) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header, and each data row with its line number; a row whose field count differs from the header's is
    a bad record."""
    if not path.is_file():
        raise DataError(f"{path}: no such csv file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheet programs start files with a byte-order mark
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable UTF-8 csv file ({e})") from None
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if not header or not any(field.strip() for field in header):
            raise DataError(f"{path}: empty file; expected a header row of column names, then one row per example")
        header = [field.strip() for field in header]
        _check_delimiter(path, header, delimiter)
        rows = []
        for row in reader:
            if not row:  # a blank line
                continue
            if len(row) != len(header):
                bad.add(f"{path}: line {reader.line_num} has {len(row)} fields, the header {len(header)}")
            else:
                rows.append((reader.line_num, row))
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: not well-formed csv ({e})") from None
    if not rows:
        raise DataError(f"{path}: a header but no rows")
    return header, rows


def _check_delimiter(path: Path, header: list[str], delimiter: str) -> None:
    if len(header) > 1:
        if "" in header:  # a trailing delimiter, say: its column could only be named as input 'c'
            raise DataError(f"{path}: column {header.index('') + 1} of the header has no name")
        if len(set(header)) < len(header):
            twice = next(name for name in header if header.count(name) > 1)
            raise DataError(f"{path}: column {twice!r} appears twice in the header")
        return
    other = next((d for d in DELIMITERS if d != delimiter and d in header[0]), None)
    if other:
        raise DataError(
            f"{path}: data.delimiter {delimiter!r} finds one column in the header; it looks {other!r}-delimited "
            f"(set data.delimiter = {other!r})"
        )
    raise DataError(f"{path}: one column in the header; a table needs a label and at least one feature")


def _feature_columns(header: list[str], data: DataConfig, path: Path) -> list[tuple[str, int]]:
    """(name, index) of each feature column: every column but the label and those typed 'ignore'."""
    for name in (data.label, *data.columns, *(n for pair in data.crosses for n in pair)):
        if name not in header:
            key = "data.label" if name == data.label else "data.columns" if name in data.columns else "data.crosses"
            raise DataError(f"{key}: no column {name!r} in {path}{did_you_mean(name, header)}")
    ignored = {name for name, c in data.columns.items() if c.type == "ignore"}
    features = [(name, i) for i, name in enumerate(header) if name != data.label and name not in ignored]
    if not features:
        raise DataError(f"{path}: no feature columns besides the label {data.label!r}")
    keys = [_key(name) for name, _ in features]
    if len(set(keys)) < len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise DataError(f"{path}: two columns are both input {twice!r} once non-name characters become _")
    return features


def _key(name: str) -> str:
    """A column name as both a SavedModel signature's input name and a Python argument name can hold it."""
    key = re.sub(r"[^A-Za-z0-9_]", "_", name)
    key = key if re.match(r"[A-Za-z]", key) else f"c{key}"
    return f"{key}_" if keyword.iskeyword(key) else key


def _missing(value: str) -> bool:
    return value.strip().lower() in MISSING


def _is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _typed(name: str, values: list[str], override: ColumnConfig) -> Column:
    """The column's type (as declared, or inferred from every non-missing value) and its rules."""
    present = [v.strip().lower() for v in values if not _missing(v)]
    kind = override.type
    if kind is None:
        if present and all(v in TRUE | FALSE for v in present) and not all(_is_number(v) for v in present):
            kind = "boolean"
        elif present and all(_is_number(v) for v in present):
            kind = "numeric"
        else:
            kind = "categorical"
    default_missing = {"numeric": "mean", "categorical": "category", "boolean": "mode"}[kind]
    missing = override.missing or default_missing
    allowed = {"numeric": ("mean",), "categorical": ("category", "mode"), "boolean": ("mode",)}[kind]
    if missing not in allowed:
        raise DataError(f"data.columns.{name}.missing: {name!r} is {kind}, which takes {' or '.join(allowed)}")
    return Column(name, _key(name), kind, missing, override.encoding, override.embedding_dim)


def _well_typed(
    line: int,
    row: list[str],
    index: dict[str, int],
    columns: list[Column],
    label_at: int,
    data: DataConfig,
    path: Path,
    bad: BadRecords,
) -> bool:
    """Whether every value fits its column's type and the label is there (a bad record names the first that
    does not)."""
    label = row[label_at]
    if _missing(label):
        bad.add(f"{path}: line {line}: the label {data.label!r} is missing")
        return False
    if data.target == "value" and not _is_number(label):
        bad.add(f"{path}: line {line}, column {data.label!r}: {label!r} is not a number (data.target = 'value')")
        return False
    for column in columns:
        value = row[index[column.name]]
        if _missing(value):
            continue
        if column.type == "numeric" and not _is_number(value):
            bad.add(f"{path}: line {line}, column {column.name!r}: {value!r} is not a number (numeric)")
            return False
        if column.type == "boolean" and value.strip().lower() not in TRUE | FALSE:
            bad.add(f"{path}: line {line}, column {column.name!r}: {value!r} is not true or false (boolean)")
            return False
    return True


def _classes(path: Path, data: DataConfig, labels: list[str]) -> tuple[str, ...]:
    """A class label's values by class id: numbers in numeric order, else names in alphabetical order."""
    if data.target == "value":
        return ()
    values = sorted({v.strip() for v in labels}, key=lambda v: (float(v), v) if _is_number(v) else (math.inf, v))
    if len(values) != data.num_classes:
        shown = ", ".join(values[:12]) + (", ..." if len(values) > 12 else "")
        raise DataError(
            f"{path}: column {data.label!r} has {len(values)} classes ({shown}) but data.num_classes is "
            f"{data.num_classes}"
        )
    return tuple(values)


def _fitted(column: Column, values: list[str]) -> Column:
    """The column with its statistics from the training split's `values`."""
    present = [v.strip() for v in values if not _missing(v)]
    if not present:
        raise DataError(f"column {column.name!r} has no value in the training split; set its type to 'ignore'")
    if column.type == "numeric":
        numbers = np.asarray([float(v) for v in present], np.float64)
        return replace(column, mean=float(numbers.mean()), std=float(numbers.std()) or 1.0)
    if column.type == "boolean":
        true = sum(v.lower() in TRUE for v in present)
        return replace(column, mode="true" if 2 * true >= len(present) else "false")
    counts = Counter(present)
    vocabulary = tuple(sorted(counts, key=lambda v: (-counts[v], v)))
    return replace(column, vocabulary=vocabulary, mode=vocabulary[0])


def _check_crosses(table: Table, path: Path) -> None:
    kinds = {c.name: c.type for c in table.columns}  # the label and ignored columns are not features
    for pair in table.crosses:
        for name in pair:
            kind = kinds.get(name, "the label" if name == table.label else "ignored")
            if kind != "categorical":
                raise DataError(f"data.crosses: {name!r} in {path} is {kind}; a cross is of two categorical columns")
    inputs = [f"{c.key}_id" for c in table.categorical]  # the encoded id inputs, which must not overwrite each other
    for a, b in table.crosses:
        name = f"{table.column(a).key}_x_{table.column(b).key}_id"
        if name in inputs[len(table.categorical) :]:
            raise DataError(f"data.crosses: {a!r} × {b!r} is crossed twice")
        if name in inputs:
            other = table.categorical[inputs.index(name)].name
            raise DataError(f"data.crosses: {a!r} × {b!r} in {path} would be input {name!r}, as column {other!r} is")
        inputs.append(name)


class TableEncoder(keras.layers.Layer):
    """Raw columns {key: [B]} → the model's encoded inputs (see the module docstring). A Keras layer so that
    an export tracks its lookup tables; it runs in tf.data and in the exported graph (TensorFlow only)."""

    def __init__(self, table: Table, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.table = table
        self.built = True  # no weights: its lookups hold their vocabularies from the start
        lookup = keras.layers.StringLookup
        self.lookups = {c.key: lookup(vocabulary=list(c.vocabulary), num_oov_indices=1) for c in table.categorical}

    def call(self, columns: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        numbers = [self._number(c, columns[c.key]) for c in self.table.numbers]
        encoded = {NUMBERS: tf.stack(numbers, axis=-1)} if numbers else {}
        ids = {c.name: self._id(c, columns[c.key]) for c in self.table.categorical}
        encoded |= {f"{c.key}_id": ids[c.name] for c in self.table.categorical}
        for a, b in self.table.crosses:
            size = self.table.column(b).ids
            crossed = tf.where((ids[a] == 0) | (ids[b] == 0), 0, ids[a] * size + ids[b])
            encoded[f"{self.table.column(a).key}_x_{self.table.column(b).key}_id"] = crossed
        return encoded

    def _number(self, column: Column, x: tf.Tensor) -> tf.Tensor:
        if column.type == "numeric":
            x = tf.cast(x, tf.float32)
            standard = (x - column.mean) / column.std
            return tf.where(tf.math.is_finite(x), standard, 0.0)  # a missing value is the mean
        text = tf.strings.lower(tf.strings.strip(x))
        true, false = _any_of(text, TRUE), _any_of(text, FALSE)
        mode = 1.0 if column.mode == "true" else 0.0
        return tf.where(true, 1.0, tf.where(false, 0.0, mode))  # missing, or neither: the mode

    def _id(self, column: Column, x: tf.Tensor) -> tf.Tensor:
        text = tf.strings.strip(x)
        ids = tf.cast(self.lookups[column.key](text), tf.int32)
        missing_id = column.vocabulary.index(column.mode) + 1 if column.missing == "mode" else column.ids - 1
        return tf.where(_any_of(tf.strings.lower(text), MISSING), missing_id, ids)


def _any_of(text: tf.Tensor, words: set[str]) -> tf.Tensor:
    return tf.reduce_any(tf.stack([tf.equal(text, w) for w in sorted(words)], axis=-1), axis=-1)
