"""Tabular: a label (softmax or sigmoid head) or a value (linear head) from a CSV table's raw columns, with the
MLP family. The columns' encoding (pipelines/table.py) is learned from the training split and saved with the run
(columns.json); the export carries it in its graph, so serving_default takes one input per raw column, named as
the CSV names it. ONNX has no string lookups: the ONNX file takes the encoded columns, and is held to the Keras
model on them."""

from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasline.models import build_model
from kerasline.models.heads import VALUE
from kerasline.pipelines import Datasets, build_datasets
from kerasline.pipelines.columns import NUMBERS, Table
from kerasline.pipelines.datasets import PairAugment
from kerasline.pipelines.sources import Shard, Splits
from kerasline.pipelines.table import TableEncoder, TableSplits, as_tensors, read_table
from kerasline.training.tasks.base import Function, Signature, built_in_float32, named_function
from kerasline.training.tasks.classification import Classification

COLUMNS_FILE = "columns.json"  # the run's Table: statistics, vocabularies and class names
CLASS_NAME = "class_name"  # serving_default's output beside class_id: the label as the CSV writes it


class Tabular(Classification):
    @cached_property
    def splits(self) -> TableSplits:
        """The CSV read, typed and split, with the training split's statistics."""
        return read_table(self.cfg.data, self.split_seed)

    def load_splits(self, shard: Shard | None = None) -> Splits:
        return self.splits.encoded()

    def augment(self) -> PairAugment:
        return lambda x, y, seed: (x, y)

    def build_inputs(self, shard: Shard | None = None) -> Datasets:
        files = {COLUMNS_FILE: self.splits.table.to_json()}
        return build_datasets(self.cfg, self.load_splits, self.augment(), shard, run_files=files)

    def build_model(self, table: Table | None = None) -> keras.Model:
        return build_model(self.cfg, table=table or self.splits.table)

    def export_model(self, weights: Path) -> keras.Model:
        """The model as its run built it: from the run's columns.json, beside the weights."""
        table = run_table(weights.parent)
        model = built_in_float32(lambda: self.build_model(table))
        model.load_weights(weights)
        return model

    def signatures(self, model: keras.Model, onnx_model: keras.Model, run_dir: Path) -> dict[str, Signature]:
        """serving_default: raw columns → the head's outputs, plus `class_name` string [B] for a label. The ONNX
        file: the encoded columns → the head's outputs."""
        table, inputs = run_table(run_dir), self.sample_inputs()
        encode = TableEncoder(table)

        def serve(columns: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            outputs = self.head_outputs(model(encode(columns), training=False))
            if table.classes:
                outputs[CLASS_NAME] = tf.gather(tf.constant(table.classes), outputs["class_id"])
            return outputs

        raw_specs = {c.key: tf.TensorSpec([None], raw_dtype(c.type)) for c in table.columns}
        signature = Signature(
            named_function(serve, raw_specs),
            inputs,
            onnx_reference=encoded_function(model, table, self.head_outputs),
            onnx_inputs=encoded_inputs(table, inputs),
            resources=(encode,),
        )
        return {"serving_default": signature}

    def report_of(self, targets: np.ndarray, outputs: np.ndarray) -> dict:
        """As any classifier's or regressor's, with each class under its name."""
        report, classes = super().report_of(targets, outputs), self.splits.table.classes
        if "per_class" in report:
            report["per_class"] = {classes[int(c)]: figures for c, figures in report["per_class"].items()}
        return report

    def card_section(self, run_dir: Path) -> list[str]:
        return preprocessing_card(run_table(run_dir))

    def sample_inputs(self) -> dict[str, np.ndarray]:
        """Held-out rows' raw columns ({key: [N]}), test split first, then validation."""
        splits, count = self.splits, self.cfg.export.parity_samples
        test, validation = splits.test[0], splits.validation[0]
        return {key: np.concatenate([test[key], validation[key]])[:count] for key in test}

    def output_difference(self, name: str, got: np.ndarray, reference: dict[str, np.ndarray]) -> float:
        """Class names: how many differ. Values: relative where they exceed 1 in magnitude, since a value is in
        the label's own unit (a float32 near 4,000 grams is only good to 0.0005)."""
        if name == CLASS_NAME:
            return float(np.sum(got.astype(bytes) != reference[name].astype(bytes)))
        if name == VALUE:
            expected = reference[name].astype(np.float64)
            return float(np.max(np.abs(got - expected) / np.maximum(1.0, np.abs(expected)), initial=0.0))
        return super().output_difference(name, got, reference)

    def readable(self, outputs: dict[str, np.ndarray], top_k: int = 1) -> list[dict]:
        """As any classifier's, with the most probable class's `class_name` where the export gives it."""
        rows = super().readable(outputs, top_k)
        if CLASS_NAME not in outputs:  # a value, or the ONNX file's outputs
            return rows
        return [{CLASS_NAME: name.decode("utf-8")} | row for name, row in zip(outputs[CLASS_NAME], rows, strict=True)]

    def onnx_feed(self, run_dir: Path) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        """The ONNX file takes the encoded columns, encoded with the run's statistics as the export's graph does."""
        table = run_table(run_dir)
        return lambda inputs: encoded_inputs(table, inputs)


def run_table(run_dir: Path) -> Table:
    return Table.from_json((run_dir / COLUMNS_FILE).read_text(encoding="utf-8"))


def raw_dtype(column_type: str) -> tf.DType:
    """What serving_default takes for a column: a number, or the text of a category or a boolean."""
    return tf.float32 if column_type == "numeric" else tf.string


def encoded_specs(table: Table) -> dict[str, tf.TensorSpec]:
    specs = {NUMBERS: tf.TensorSpec([None, len(table.numbers)], tf.float32)} if table.numbers else {}
    return specs | {name: tf.TensorSpec([None], tf.int32) for name in table.id_inputs()}


def encoded_function(
    model: keras.Model, table: Table, outputs: Callable[[tf.Tensor], dict[str, tf.Tensor]]
) -> Function:
    """The encoded columns → `outputs(model(...))`: what the ONNX file computes."""
    return named_function(lambda encoded: outputs(model(encoded, training=False)), encoded_specs(table))


def encoded_inputs(table: Table, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Raw columns ({key: [N]}) → the encoded columns, as numpy."""
    return {name: tensor.numpy() for name, tensor in TableEncoder(table)(as_tensors(inputs)).items()}


def preprocessing_card(table: Table) -> list[str]:
    """The model card's section: the columns, their encoding and statistics, and what the ONNX file covers."""
    lines = [
        "## Preprocessing",
        "",
        "Inside the SavedModel's graph: serving_default takes one input per raw column (a number, NaN if missing; "
        'or a string, "" or NA if missing). `model.onnx` starts after it: it takes the encoded columns '
        f"(`{NUMBERS}`: the standardised numbers and booleans in the order below; `<column>_id`: each category's "
        "id, 0 for one never seen in training), which a client encodes as this table says.",
        "",
        "| column | input | type | missing becomes | learned from the training split |",
        "|---|---|---|---|---|",
    ]
    for c in table.columns:
        if c.type == "numeric":
            learned = f"mean {c.mean:.6g}, standard deviation {c.std:.6g}"
        elif c.type == "boolean":
            learned = f"mode {c.mode}"
        else:
            shown = ", ".join(c.vocabulary[:20]) + (" ..." if len(c.vocabulary) > 20 else "")
            learned = f"{len(c.vocabulary)} categories, ids 1–{len(c.vocabulary)}: {shown}"
        becomes = {"mean": "the mean", "mode": f"the mode ({c.mode})", "category": f"id {c.ids - 1}"}[c.missing]
        kind = f"{c.type}, {c.encoding.replace('_', '-')}" if c.type == "categorical" else c.type
        lines.append(f"| {c.name} | `{c.key}` | {kind} | {becomes} | {learned} |")
    if table.crosses:
        pairs = ", ".join(" × ".join(pair) for pair in table.crosses)
        lines += ["", f"Crosses (each pair's ids, one-hot): {pairs}."]
    if table.classes:
        lines += ["", f"Classes (class_id: class_name): {', '.join(f'{i}: {n}' for i, n in enumerate(table.classes))}."]
    else:
        lines += ["", f"The value is scaled inside the model: {table.label_mean:.6g} + {table.label_std:.6g} × output."]
    return lines
