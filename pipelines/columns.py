"""A table's feature columns as training learned them: what the model builders, the encoder (pipelines/table.py)
and the export share. Plain Python: the model builders read it where TensorFlow is not installed."""

import json
from dataclasses import asdict, dataclass

NUMBERS = "numbers"  # the encoded numeric and boolean columns' input


@dataclass(frozen=True)
class Column:
    """A feature column: its CSV `name`; its input name `key` (the name, with what a TensorFlow name cannot hold
    replaced by _); how it is read and encoded; and what was learned from the training split."""

    name: str
    key: str
    type: str  # numeric | categorical | boolean
    missing: str  # numeric: mean; categorical: category or mode; boolean: mode
    encoding: str = "one_hot"  # categorical: one_hot | embedding
    embedding_dim: int = 8
    mean: float = 0.0  # numeric
    std: float = 1.0  # numeric, 1 where the training values are all equal
    vocabulary: tuple[str, ...] = ()  # categorical: training values, most frequent first
    mode: str = ""  # categorical and boolean ("true" or "false"): the most frequent training value

    @property
    def ids(self) -> int:
        """Categorical: how many ids, unseen (0) and missing (V + 1) included."""
        return len(self.vocabulary) + 2


@dataclass(frozen=True)
class Table:
    """A table's feature columns with their statistics, its label, and its crosses (pairs of categorical
    columns' names). `classes`: a class label's values, by class id; () for a value label, whose training mean
    and standard deviation the model's output is scaled by. Saved with the run (columns.json), so the export
    encodes as training did."""

    columns: tuple[Column, ...]
    label: str
    classes: tuple[str, ...] = ()
    crosses: tuple[tuple[str, str], ...] = ()
    label_mean: float = 0.0  # a value label: the model predicts label_mean + label_std × its output
    label_std: float = 1.0

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def numbers(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.type != "categorical")

    @property
    def categorical(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.type == "categorical")

    def id_inputs(self) -> dict[str, tuple[int, int | None]]:
        """The encoded id inputs: name → (how many ids, embedding size or None for one-hot)."""
        inputs = {}
        for c in self.categorical:
            inputs[f"{c.key}_id"] = (c.ids, c.embedding_dim if c.encoding == "embedding" else None)
        for a, b in self.crosses:
            a, b = self.column(a), self.column(b)
            inputs[f"{a.key}_x_{b.key}_id"] = (a.ids * b.ids, None)
        return inputs

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Table":
        raw = json.loads(text)
        columns = tuple(Column(**c | {"vocabulary": tuple(c["vocabulary"])}) for c in raw["columns"])
        crosses = tuple(tuple(pair) for pair in raw["crosses"])
        return cls(columns, raw["label"], tuple(raw["classes"]), crosses, raw["label_mean"], raw["label_std"])
