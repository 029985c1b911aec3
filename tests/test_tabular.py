"""Tabular data (data.source = "csv"): column types and their overrides, statistics learned from the training split
only, missing values, the exported raw-column signature called as TF Serving calls it, parity, and the refusals.

Three tiny models train here (a few epochs each): the shipped penguins species classifier and body-mass regressor,
and a small written table with every kind of column (boolean, crossed, embedded, a mode rule) on a sigmoid head."""

import csv
import http.client
import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasline
from kerasline.cli import main
from kerasline.config import ConfigError, validate
from kerasline.errors import DataError
from kerasline.models import build_model
from kerasline.pipelines.columns import NUMBERS, Table
from kerasline.pipelines.sources import split_order
from kerasline.pipelines.table import TableEncoder, as_tensors, read_table
from kerasline.serving.devserver import start
from kerasline.shipped import find

SILENT = ['training.verbose="silent"']
PENGUINS = find("data", "penguins.csv")


def experiment(csv_path: Path, data: dict | None = None, model: dict | None = None, **rest):
    """A validated csv experiment on `csv_path`, label `y` with two classes unless `data` says otherwise."""
    data = {"source": "csv", "name": str(csv_path), "label": "y", "num_classes": 2, **(data or {})}
    return validate(
        {"name": "tab", "data": data, "model": {"name": "mlp", "hidden_units": [4], **(model or {})}, **rest}
    )


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def training_rows(cfg, rows: list) -> tuple[list, list]:
    """(training rows, held-out rows) of `rows` as every source splits them: a seeded permutation cut
    test | validation | train."""
    test, validation, train = split_order(len(rows), cfg.data, cfg.seed)
    return [rows[i] for i in train], [rows[i] for i in (*test, *validation)]


def encode(table: Table, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: t.numpy() for name, t in TableEncoder(table)(as_tensors(raw)).items()}


def keras_model(cfg, run_dir: Path) -> keras.Model:
    """The run's model as trained: built from its saved columns.json, with its best weights."""
    table = Table.from_json((run_dir / "columns.json").read_text())
    model = build_model(cfg, table=table)
    model.load_weights(run_dir / "best.weights.h5")
    return model


def train_and_export(cfg) -> dict:
    result = kerasline.train(cfg)
    version = kerasline.export_run(cfg, result.run_dir)
    table = Table.from_json((result.run_dir / "columns.json").read_text())
    return {"cfg": cfg, "result": result, "version": version, "table": table, "model": keras_model(cfg, result.run_dir)}


def served(version: Path):
    return tf.saved_model.load(str(version)).signatures["serving_default"]


def tf_serving_request(serve, body: str) -> dict[str, tf.Tensor]:
    """TF Serving's row format: {"instances": [{column: value, ...}, ...]} → one [B] tensor per named input,
    of the signature's dtype (NaN is a JSON literal TF Serving reads)."""
    instances = json.loads(body)["instances"]
    specs = serve.structured_input_signature[1]
    return {name: tf.constant([row[name] for row in instances], spec.dtype) for name, spec in specs.items()}


def as_raw(inputs: dict[str, tf.Tensor]) -> dict[str, np.ndarray]:
    return {name: t.numpy() for name, t in inputs.items()}


# --- types ---------------------------------------------------------------------------------------------------


TYPES_HEADER = ["weight", "colour", "smoker", "bits", "year", "bill length (mm)", "class", "y"]


def types_rows() -> list[list]:
    colours, smokers = ["red", "green", "blue"], ["yes", "no", "True", "false", "Y", "n", "", "NA"]
    return [
        [
            ["1.5", "-2", "1e3", "", "NA", "7"][i % 6],
            colours[i % 3],
            smokers[i % 8],
            i % 2,
            2007 + i % 3,
            i / 4,
            i,
            i % 2,
        ]
        for i in range(24)
    ]


def test_types_are_inferred_from_the_values(tmp_path):
    path = write_csv(tmp_path / "t.csv", TYPES_HEADER, types_rows())
    table = read_table(experiment(path).data, 0).table
    types = {c.name: c.type for c in table.columns}
    assert types == {
        "weight": "numeric",  # numbers, some missing
        "colour": "categorical",  # words
        "smoker": "boolean",  # yes/no/true/false in any case, some missing
        "bits": "numeric",  # 0/1 are numbers first
        "year": "numeric",
        "bill length (mm)": "numeric",
        "class": "numeric",
    }
    assert table.label == "y" and table.classes == ("0", "1")
    # The serving input names: what a signature and a Python argument can hold.
    keys = {c.name: c.key for c in table.columns}
    assert keys["bill length (mm)"] == "bill_length__mm_" and keys["class"] == "class_" and keys["weight"] == "weight"
    assert {c.missing for c in table.numbers if c.type == "numeric"} == {"mean"}
    assert table.column("colour").missing == "category" and table.column("smoker").missing == "mode"


def test_declared_types_override_the_inferred_ones(tmp_path):
    path = write_csv(tmp_path / "t.csv", TYPES_HEADER, types_rows())
    columns = {
        "year": {"type": "categorical"},
        "bits": {"type": "boolean"},
        "colour": {"type": "ignore"},
        "class": {"type": "ignore"},
        "weight": {"type": "categorical", "missing": "mode", "encoding": "embedding", "embedding_dim": 3},
    }
    splits = read_table(experiment(path, {"columns": columns}).data, 0)
    table = splits.table
    assert [c.name for c in table.columns] == ["weight", "smoker", "bits", "year", "bill length (mm)"]
    assert set(splits.train[0]) == {"weight", "smoker", "bits", "year", "bill_length__mm_"}  # ignored: not read
    year = table.column("year")
    assert year.type == "categorical" and set(year.vocabulary) == {"2007", "2008", "2009"}
    assert splits.train[0]["year"].dtype.kind == "S"  # categorical raw values are strings, as served
    assert table.column("bits").type == "boolean" and table.column("bits").mode in ("true", "false")
    weight = table.column("weight")
    assert (weight.type, weight.missing, weight.encoding, weight.embedding_dim) == (
        "categorical",
        "mode",
        "embedding",
        3,
    )
    assert set(weight.vocabulary) <= {"1.5", "-2", "1e3", "7"}
    assert table.id_inputs() == {"weight_id": (weight.ids, 3), "year_id": (year.ids, None)}


@pytest.mark.parametrize(
    "columns, error, message",
    [
        (
            {"colour": {"type": "categorical", "missing": "mean"}},
            ConfigError,
            "a categorical column takes category or mode",
        ),
        ({"smoker": {"type": "boolean", "missing": "category"}}, ConfigError, "a boolean column takes mode"),
        ({"weight": {"type": "numeric", "missing": "mode"}}, ConfigError, "a numeric column takes mean"),
        (
            {"colour": {"missing": "mean"}},
            DataError,
            "data.columns.colour.missing: 'colour' is categorical, which takes",
        ),
        (
            {"weight": {"missing": "category"}},
            DataError,
            "data.columns.weight.missing: 'weight' is numeric, which takes mean",
        ),
        ({"smoker": {"missing": "mean"}}, DataError, "'smoker' is boolean, which takes mode"),
    ],
)
def test_a_missing_rule_must_fit_the_columns_type(tmp_path, columns, error, message):
    """Declared types are checked with the config; inferred ones once the file is read."""
    path = write_csv(tmp_path / "t.csv", TYPES_HEADER, types_rows())
    with pytest.raises(error, match=message):
        read_table(experiment(path, {"columns": columns}).data, 0)


# --- statistics ----------------------------------------------------------------------------------------------


def test_statistics_come_from_the_training_split_only(tmp_path):
    """The held-out rows hold extreme numbers, labels, a category of their own and the other boolean: any of them
    leaking into the statistics moves them far from numpy's on exactly the training rows."""
    path = tmp_path / "s.csv"
    fractions = {"validation_fraction": 0.2, "test_fraction": 0.2}
    cfg = experiment(path, {**fractions, "target": "value"}, {"head": "linear"}, training={"monitor": "val_mae"})
    n = 40
    held_out = {int(i) for part in split_order(n, cfg.data, cfg.seed)[:2] for i in part}
    assert len(held_out) == 16
    rows, train_i = [], 0
    for i in range(n):
        if i in held_out:  # if these leaked: mean ~1e6, "Atlantis" and "c" in the vocabulary, mode "yes"
            rows.append([1e6 + i, "Atlantis" if i % 2 else "c", "yes", 1e5])
        else:
            colour = ["a", "a", "a", "b", "b", "c"][train_i % 6]
            rows.append([i * 0.5 + (i % 3), colour, "yes" if train_i % 12 < 5 else "no", 100 + 3 * i])
            train_i += 1
    write_csv(path, ["x", "colour", "flag", "y"], rows)
    train, _ = training_rows(cfg, rows)

    splits = read_table(cfg.data, cfg.seed)
    table = splits.table
    x = np.array([r[0] for r in train], np.float64)
    np.testing.assert_allclose(np.sort(splits.train[0]["x"]), np.sort(x).astype(np.float32))  # the split we expect
    assert max(splits.train[0]["x"]) < 1e3 and min(splits.validation[0]["x"]) > 1e5 and min(splits.test[0]["x"]) > 1e5
    column = table.column("x")
    np.testing.assert_allclose([column.mean, column.std], [x.mean(), x.std()], rtol=1e-12)
    colour = table.column("colour")
    assert colour.vocabulary == ("a", "b", "c") and colour.mode == "a"  # training counts 12, 8, 4: most frequent first
    flags = [r[2] for r in train]
    assert flags.count("no") > flags.count("yes") and table.column("flag").mode == "false"
    y = np.array([r[3] for r in train], np.float64)
    np.testing.assert_allclose([table.label_mean, table.label_std], [y.mean(), y.std()], rtol=1e-12)

    # A category only held-out rows hold is unseen: id 0, which the model encodes as nothing.
    validation = splits.validation[0]
    ids = encode(table, validation)["colour_id"]
    atlantis = validation["colour"] == b"Atlantis"
    assert atlantis.any() and (ids[atlantis] == 0).all() and (ids[~atlantis] == 3).all()  # "c": id 3
    numbers = encode(table, validation)[NUMBERS]
    np.testing.assert_allclose(numbers[:, 0], (validation["x"] - x.mean()) / x.std(), rtol=1e-5)


# --- missing values ------------------------------------------------------------------------------------------


def test_missing_values_never_reach_the_model_as_nan(tmp_path):
    numbers = ["1.5", "", "NA", "nan", "NaN", "null", "4", "n/a", "2.5", "None", "-1", "3"]
    rows = [
        [numbers[i % 12], ["red", "", "NA", "blue", "red", "N/A"][i % 6], ["red", "", "blue", "red"][i % 4], f, i % 2]
        for i, f in enumerate(["yes", "", "no", "NA", "yes", "yes"] * 6)
    ]
    path = write_csv(tmp_path / "m.csv", ["x", "colour", "shade", "flag", "y"], rows)
    cfg = experiment(path, {"columns": {"shade": {"missing": "mode"}}})
    splits = read_table(cfg.data, cfg.seed)
    table = splits.table
    assert [c.type for c in table.columns] == ["numeric", "categorical", "categorical", "boolean"]
    for ds in (splits.encoded().train, splits.encoded().validation, splits.encoded().test):
        for features, _ in ds.batch(64):
            assert np.isfinite(features[NUMBERS].numpy()).all()

    colour, shade, flag = table.column("colour"), table.column("shade"), table.column("flag")
    assert colour.vocabulary == ("red", "blue") and shade.vocabulary == ("red", "blue") and flag.mode == "true"
    for raw, _ in (splits.train, splits.validation, splits.test):
        encoded = encode(table, raw)
        assert encoded[NUMBERS].dtype == np.float32 and np.isfinite(encoded[NUMBERS]).all()
        missing_x = np.isnan(raw["x"])
        x = table.column("x")
        assert (encoded[NUMBERS][missing_x, 0] == 0).all()
        np.testing.assert_allclose(encoded[NUMBERS][~missing_x, 0], (raw["x"][~missing_x] - x.mean) / x.std, rtol=1e-5)
        missing = np.isin(raw["colour"], [b"", b"NA", b"N/A"])
        assert (encoded["colour_id"][missing] == colour.ids - 1).all()  # its own category, V + 1
        assert (encoded["colour_id"][~missing] >= 1).all() and (encoded["colour_id"][~missing] <= 2).all()
        assert (encoded["shade_id"][raw["shade"] == b""] == 1).all()  # the mode's id
        unknown_flag = np.isin(raw["flag"], [b"", b"NA"])
        assert (encoded[NUMBERS][unknown_flag, 1] == 1.0).all()  # the mode, true
        assert (encoded[NUMBERS][raw["flag"] == b"no", 1] == 0.0).all()

    # What a client may send: NaN or ±inf for a number, "", NA in any case or spacing for a category.
    served = {
        "x": np.array([math.nan, math.inf, -math.inf, 1.5], np.float32),
        "colour": np.array([b"", b" na ", b"NULL", b" blue "]),
        "shade": np.array([b"", b"N/A", b"green", b"blue"]),
        "flag": np.array([b"", b"maybe", b" No ", b"TRUE"]),
    }
    encoded = encode(table, served)
    np.testing.assert_array_equal(encoded[NUMBERS][:3, 0], [0, 0, 0])
    np.testing.assert_array_equal(encoded[NUMBERS][:, 1], [1, 1, 0, 1])
    np.testing.assert_array_equal(encoded["colour_id"], [3, 3, 3, 2])
    np.testing.assert_array_equal(encoded["shade_id"], [1, 1, 0, 2])


# --- the shipped penguins: export and serving ------------------------------------------------------------------


@pytest.fixture(scope="module")
def species(tmp_path_factory) -> dict:
    """penguins_species, trained for a few epochs and exported."""
    root = tmp_path_factory.mktemp("species")
    overrides = [f"runs_dir={str(root / 'runs')!r}", f"export.dir={str(root / 'exports')!r}", "training.epochs=4"]
    return train_and_export(kerasline.load_experiment("penguins_species", overrides + SILENT))


ROW = """{"instances": [
  {"island": "Atlantis", "bill_length_mm": NaN, "bill_depth_mm": 18.1, "flipper_length_mm": 193,
   "body_mass_g": 3475, "sex": "", "year": "2007"},
  {"island": "Dream", "bill_length_mm": 49.5, "bill_depth_mm": 19.0, "flipper_length_mm": 200,
   "body_mass_g": 3800, "sex": "male", "year": "2031"}
]}"""


def test_serving_default_takes_one_raw_input_per_csv_column(species):
    serve = served(species["version"])
    with PENGUINS.open() as f:
        header = next(csv.reader(f))
    specs = serve.structured_input_signature[1]
    assert set(specs) == set(header) - {"species"}
    numeric = {"bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"}
    for name, spec in specs.items():
        assert spec.shape.as_list() == [None] and spec.dtype == (tf.float32 if name in numeric else tf.string), name
    outputs = serve.structured_outputs
    assert set(outputs) == {"probabilities", "class_id", "class_name"}
    assert outputs["class_name"].dtype == tf.string and outputs["probabilities"].shape.as_list() == [None, 3]


def test_a_json_row_with_a_missing_and_an_unseen_value_is_served(species):
    """As TF Serving calls serving_default: NaN for a missing number, "" for a missing category, an island and a
    year training never saw. Finite probabilities, the Keras model's on the encoded row."""
    serve, table, model = served(species["version"]), species["table"], species["model"]
    inputs = tf_serving_request(serve, ROW)
    out = {name: t.numpy() for name, t in serve(**inputs).items()}
    p = out["probabilities"]
    assert p.shape == (2, 3) and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)

    encoded = encode(table, as_raw(inputs))
    assert np.isfinite(encoded[NUMBERS]).all() and encoded[NUMBERS][0, 0] == 0.0  # bill_length_mm: the mean
    assert list(encoded["island_id"]) == [0, 2]  # unseen; Dream
    assert encoded["sex_id"][0] == table.column("sex").ids - 1 and encoded["year_id"][1] == 0
    np.testing.assert_allclose(p, model(encoded, training=False).numpy(), atol=1e-5)
    assert table.classes == ("Adelie", "Chinstrap", "Gentoo")
    np.testing.assert_array_equal(out["class_id"], p.argmax(axis=1))
    assert [name.decode() for name in out["class_name"]] == [table.classes[i] for i in out["class_id"]]


def test_the_dev_server_serves_the_rows_in_row_and_columnar_formats(species):
    """The development server (TF Serving's REST API) on the export: the JSON row with NaN, "" and unseen
    categories, and the same two rows as columns, give what the SavedModel gives; a row without a column is a 400."""
    version = species["version"]
    expected = {name: t.numpy() for name, t in served(version)(**tf_serving_request(served(version), ROW)).items()}
    rows = ROW[ROW.index("[") : ROW.rindex("]") + 1]
    columnar = "{" + ", ".join(f'"{k}": [{_json_values(rows, k)}]' for k in json.loads(_no_nan(rows))[0]) + "}"
    dev = start(version.parent.parent, rest_port=0, grpc_port=0)
    try:
        for body in (ROW, '{"inputs": ' + columnar + "}"):
            status, answer = _post(dev.rest_port, version.parent.name, body)
            assert status == 200, answer
            got = answer.get("predictions") or answer["outputs"]
            got = got if isinstance(got, dict) else {k: [row[k] for row in got] for k in got[0]}
            np.testing.assert_allclose(got["probabilities"], expected["probabilities"], atol=1e-6)
            assert got["class_name"] == [name.decode() for name in expected["class_name"]]
        status, answer = _post(dev.rest_port, version.parent.name, '{"instances": [{"island": "Dream"}]}')
        assert status == 400 and "missing input" in answer["error"]
    finally:
        dev.stop()


def _no_nan(text: str) -> str:
    return text.replace("NaN", "null")


def _json_values(rows: str, key: str) -> str:
    """The column `key` of the JSON rows, written as the rows write it (NaN stays a literal)."""
    values = [json.dumps(row[key]) if row[key] is not None else "NaN" for row in json.loads(_no_nan(rows))]
    return ", ".join(values)


def _post(port: int, model: str, body: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", f"/v1/models/{model}:predict", body=body.encode())
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_the_export_serves_the_held_out_rows_as_the_keras_model_predicts_them(species):
    cfg, table, model = species["cfg"], species["table"], species["model"]
    splits = read_table(cfg.data, cfg.seed)
    assert splits.table == table  # columns.json: the training split's statistics, saved with the run
    raw, labels = splits.test
    serve = served(species["version"])
    specs = serve.structured_input_signature[1]
    out = serve(**{key: tf.constant(values, specs[key].dtype) for key, values in raw.items()})
    expected = model(encode(table, raw), training=False).numpy()
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    names = [table.classes[i] for i in labels]
    accuracy = np.mean([a.decode() == b for a, b in zip(out["class_name"].numpy(), names, strict=True)])
    metrics = json.loads((species["result"].run_dir / "metrics.json").read_text())
    assert accuracy == pytest.approx(metrics["test"]["accuracy"], abs=1.5 / len(names))
    assert set(metrics["report"]["per_class"]) == set(table.classes)  # each class under its name


def test_parity_passed_and_the_onnx_file_takes_the_encoded_columns(species):
    import onnxruntime as ort

    version, table, model = species["version"], species["table"], species["model"]
    report = json.loads((version / "verification.json").read_text())
    assert report["passed"] and report["samples"] > 8
    assert set(report["max_abs_diff"]["saved_model"]) == {"probabilities", "class_id", "class_name"}
    assert report["max_abs_diff"]["saved_model"]["class_name"] == 0

    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    assert {i.name for i in session.get_inputs()} == {NUMBERS, "island_id", "sex_id", "year_id"}
    encoded = encode(table, as_raw(tf_serving_request(served(version), ROW)))
    test_raw = read_table(species["cfg"].data, species["cfg"].seed).test[0]
    encoded = {k: np.concatenate([encoded[k], v]) for k, v in encode(table, test_raw).items()}
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, encoded), strict=True))
    expected = model(encoded, training=False).numpy()
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(outputs["class_id"], expected.argmax(axis=1))
    card = (version / "MODEL_CARD.md").read_text()
    assert "island" in card and "bill_length_mm" in card


# --- regression: the value in the label's unit ----------------------------------------------------------------


def test_a_value_label_is_predicted_in_its_own_unit(tmp_path):
    """penguins_body_mass: the linear head predicts grams, the training label's mean plus its standard deviation
    times the last layer's output; so an untrained model already predicts near the mean, and a briefly trained
    one errs by much less than the label's spread."""
    overrides = [f"runs_dir={str(tmp_path / 'runs')!r}", f"export.dir={str(tmp_path / 'exports')!r}"]
    cfg = kerasline.load_experiment("penguins_body_mass", [*overrides, "training.epochs=6", *SILENT])
    with PENGUINS.open() as f:
        rows = list(csv.DictReader(f))
    train, _ = training_rows(cfg, rows)
    grams = np.array([float(r["body_mass_g"]) for r in train])
    splits = read_table(cfg.data, cfg.seed)
    table = splits.table
    np.testing.assert_allclose([table.label_mean, table.label_std], [grams.mean(), grams.std()], rtol=1e-12)
    assert "body_mass_g" not in {c.name for c in table.columns} and table.classes == ()

    keras.utils.set_random_seed(0)
    untrained = build_model(cfg, table=table)
    last = [layer for layer in untrained.layers if isinstance(layer, keras.layers.Dense)][-1]
    kernel, bias = last.get_weights()
    encoded = encode(table, splits.test[0])
    last.set_weights([np.zeros_like(kernel), np.zeros_like(bias)])
    np.testing.assert_allclose(untrained(encoded).numpy()[:, 0], table.label_mean, rtol=1e-6)
    last.set_weights([np.zeros_like(kernel), np.ones_like(bias)])
    np.testing.assert_allclose(untrained(encoded).numpy()[:, 0], table.label_mean + table.label_std, rtol=1e-6)

    run = train_and_export(cfg)
    metrics = json.loads((run["result"].run_dir / "metrics.json").read_text())["test"]
    assert metrics["mae"] < 0.8 * table.label_std  # standardised units, or no scaling, err by ~4,000 g
    serve = served(run["version"])
    assert set(serve.structured_outputs) == {"value"}
    raw = splits.test[0]
    specs = serve.structured_input_signature[1]
    value = serve(**{key: tf.constant(v, specs[key].dtype) for key, v in raw.items()})["value"].numpy()
    assert value.shape == (len(splits.test[1]),)
    np.testing.assert_allclose(value, run["model"](encode(table, raw)).numpy()[:, 0], rtol=1e-5)
    assert abs(value.mean() - table.label_mean) < table.label_std and value.min() > 1000
    assert json.loads((run["version"] / "verification.json").read_text())["passed"]


# --- every kind of column through the export ------------------------------------------------------------------


def test_booleans_crosses_and_embeddings_serve_raw_columns_with_parity(tmp_path):
    """A written table with a boolean, two crossed categories (one embedded), a mode rule and a sigmoid head:
    serving_default on raw rows with missing and unseen values is the Keras model on the encoded ones."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(96):
        size, shape = ["S", "M", "L", ""][i % 4], ["round", "flat", "NA"][i % 3]
        smoker = ["yes", "no", ""][i % 5 % 3]
        x = "" if i % 7 == 0 else f"{rng.normal(10, 3):.3f}"
        rows.append([x, size, shape, smoker, int((size in ("L", "M")) ^ (smoker == "yes"))])
    path = write_csv(tmp_path / "mixed.csv", ["x", "size", "shape", "smoker", "y"], rows)
    data = {
        "columns": {"shape": {"encoding": "embedding", "embedding_dim": 3}, "size": {"missing": "mode"}},
        "crosses": [["size", "shape"]],
        "batch_size": 16,
    }
    rest = {"runs_dir": str(tmp_path / "runs"), "export": {"dir": str(tmp_path / "exports"), "parity_samples": 24}}
    cfg = experiment(
        path, data, {"head": "sigmoid", "hidden_units": [8]}, training={"epochs": 2, "verbose": "silent"}, **rest
    )
    run = train_and_export(cfg)
    table, model = run["table"], run["model"]
    assert [c.type for c in table.columns] == ["numeric", "categorical", "categorical", "boolean"]
    assert {i.name for i in model.inputs} == {NUMBERS, "size_id", "shape_id", "size_x_shape_id"}

    report = json.loads((run["version"] / "verification.json").read_text())
    assert report["passed"] and set(report["max_abs_diff"]["onnx"]) == {"probability", "class_id"}
    serve = served(run["version"])
    assert {k: s.dtype for k, s in serve.structured_input_signature[1].items()} == {
        "x": tf.float32,
        "size": tf.string,
        "shape": tf.string,
        "smoker": tf.string,
    }
    body = json.dumps(
        {
            "instances": [
                {"x": math.nan, "size": "", "shape": "round", "smoker": ""},  # JSON's NaN: a missing number
                {"x": 11.0, "size": "XL", "shape": "cube", "smoker": "Yes"},
                {"x": 12.0, "size": "L", "shape": "", "smoker": "no"},
            ]
        }
    )
    inputs = tf_serving_request(serve, body)
    out = serve(**inputs)
    encoded = encode(table, as_raw(inputs))
    mode = 1.0 if table.column("smoker").mode == "true" else 0.0
    assert encoded[NUMBERS][0, 0] == 0.0 and list(encoded[NUMBERS][:, 1]) == [mode, 1.0, 0.0]
    assert encoded["size_id"][0] == 1 and encoded["size_id"][1] == 0 and encoded["shape_id"][1] == 0
    assert encoded["size_x_shape_id"][1] == 0 and encoded["size_x_shape_id"][0] > 0  # unseen in a pair: 0
    p = out["probability"].numpy()
    assert p.shape == (3,) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    np.testing.assert_allclose(p, model(encoded, training=False).numpy()[:, 0], atol=1e-5)
    np.testing.assert_array_equal(out["class_id"].numpy(), (p > 0.5).astype(np.int64))
    assert [n.decode() for n in out["class_name"].numpy()] == [table.classes[i] for i in out["class_id"].numpy()]


# --- refusals --------------------------------------------------------------------------------------------------


ISLANDS, SEXES = ("Dream", "Biscoe", "Torgersen"), ("male", "female")
GOOD = "species,island,mass,sex\n" + "".join(  # 20 rows: lines 2 to 21
    f"{('Adelie', 'Gentoo')[i % 2]},{ISLANDS[i % 3]},{3000 + 37 * i},{SEXES[i % 2]}\n" for i in range(20)
)
CSV_EXPERIMENT = """
name = "tab"
runs_dir = "runs"
[data]
source = "csv"
name = "table.csv"
label = "species"
num_classes = 2
{data}
[model]
name = "mlp"
hidden_units = [4]
[training]
epochs = 1
verbose = "silent"
[export]
dir = "exports"
"""


def broken(text: str, line: int, row: str) -> str:
    """`text` with its line `line` (1 is the header) replaced by `row`."""
    lines = text.splitlines(keepends=True)
    lines[line - 1] = row + "\n"
    return "".join(lines)


@pytest.mark.parametrize(
    "table, data, needle",
    [
        (
            GOOD.replace("species", "specie", 1),
            "",
            "data.label: no column 'species' in table.csv (did you mean 'specie'?)",
        ),
        (
            GOOD,
            "[data.columns.islnd]\ntype = 'categorical'",
            "data.columns: no column 'islnd' in table.csv (did you mean 'island'?)",
        ),
        (GOOD, "crosses = [['island', 'sexx']]", "data.crosses: no column 'sexx'"),
        (GOOD, "crosses = [['island', 'species']]", "data.crosses: 'species' in table.csv is the label"),
        (GOOD, "crosses = [['island', 'mass']]", "data.crosses: 'mass' in table.csv is numeric"),
        (GOOD, "crosses = [['sex', 'island'], ['sex', 'island']]", "data.crosses: 'sex' × 'island' is crossed twice"),
        (
            GOOD.replace("mass", "island_x_sex", 1),
            "crosses = [['island', 'sex']]\n[data.columns.island_x_sex]\ntype = 'categorical'",
            "would be input 'island_x_sex_id', as column 'island_x_sex' is",
        ),
        (
            broken(GOOD, 9, "Adelie,Dream,heavy,male"),
            "[data.columns.mass]\ntype = 'numeric'",
            "table.csv: line 9, column 'mass': 'heavy' is not a number (numeric)",
        ),
        (broken(GOOD, 7, "Adelie,Dream,3100"), "", "table.csv: line 7 has 3 fields, the header 4"),
        (broken(GOOD, 5, "Adelie,Dream,3100,male,extra"), "", "table.csv: line 5 has 5 fields, the header 4"),
        (broken(GOOD, 4, ",Dream,3100,male"), "", "table.csv: line 4: the label 'species' is missing"),
        (broken(GOOD, 6, 'Adelie,"Dream,3100,male'), "", "table.csv: line"),
        (GOOD.replace(",", ";"), "", "it looks ';'-delimited (set data.delimiter = ';')"),
        (GOOD.replace(",", "\t"), "", "it looks '\\t'-delimited"),
        (GOOD, "delimiter = ';'", "data.delimiter ';' finds one column in the header; it looks ','-delimited"),
        ("", "", "table.csv: empty file"),
        ("\n\n", "", "table.csv: empty file"),
        ("species,island,mass,sex\n", "", "table.csv: a header but no rows"),
        (GOOD.replace("sex\n", "sex,\n", 1), "", "table.csv: column 5 of the header has no name"),
        (GOOD.replace("mass", "island", 1), "", "table.csv: column 'island' appears twice in the header"),
        (GOOD.replace("Adelie", "Ad\xe9lie").encode("latin-1"), "", "table.csv: not a readable UTF-8 csv file"),
        (None, "", "table.csv: no such csv file"),
        (
            broken(GOOD, 3, "Chinstrap,Dream,3100,male"),
            "",
            "'species' has 3 classes (Adelie, Chinstrap, Gentoo) but data.num_classes is 2",
        ),
    ],
)
def test_bad_tables_stop_train_with_one_line(tmp_path, monkeypatch, capsys, table, data, needle):
    monkeypatch.chdir(tmp_path)
    if isinstance(table, bytes):
        (tmp_path / "table.csv").write_bytes(table)
    elif table is not None:
        (tmp_path / "table.csv").write_text(table)
    (tmp_path / "tab.toml").write_text(CSV_EXPERIMENT.format(data=data))
    assert main(["train", "tab.toml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "exports").exists()


def test_on_error_skip_drops_bad_rows_and_counts_them(tmp_path, monkeypatch, capsys):
    text = broken(GOOD, 4, "Adelie,Dream,3100")  # too few fields
    text = broken(text, 9, "Gentoo,Biscoe,heavy,female")  # not a number
    text = broken(text, 13, "NA,Biscoe,4000,female")  # no label
    monkeypatch.chdir(tmp_path)
    (tmp_path / "table.csv").write_text(text)
    data = "on_error = 'skip'\n[data.columns.mass]\ntype = 'numeric'"
    (tmp_path / "tab.toml").write_text(CSV_EXPERIMENT.format(data=data))
    splits = read_table(kerasline.load_experiment("tab.toml").data, 42)
    assert splits.skipped == (
        "table.csv: line 4 has 3 fields, the header 4",
        "table.csv: line 9, column 'mass': 'heavy' is not a number (numeric)",
        "table.csv: line 13: the label 'species' is missing",
    )
    assert sum(len(labels) for _, labels in (splits.train, splits.validation, splits.test)) == 17
    assert all(np.isfinite(raw["mass"]).all() for raw, _ in (splits.train, splits.validation, splits.test))

    assert main(["train", "tab.toml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "skipped 3 bad record(s) (data.on_error = skip); first: table.csv: line 4 has 3 fields" in out
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "data, model, needle",
    [
        (
            'source = "csv"\nname = "t.csv"\nnum_classes = 2',
            "mlp",
            "data.label: a csv source needs the name of its label column",
        ),
        ('label = "species"', "mlp", "data.label: names csv columns, but data.source is 'samples'"),
        ('source = "samples"\n[data.columns.x]\ntype = "ignore"', "mlp", "data.columns: names csv columns"),
        ('source = "csv"\nname = "t.csv"\nlabel = "y"\nnum_classes = 2', "cnn", "model.name: cnn takes image input"),
        ('source = "csv"\nname = "t.csv"\nlabel = "y"\nnum_classes = 2', "rnn", "model.name: rnn takes tokens or text"),
        (
            'source = "csv"\nname = "t.csv"\nlabel = "y"\nnum_classes = 2\n[data.columns.y]\ntype = "numeric"',
            "mlp",
            "data.columns.y: the label column is not a feature",
        ),
        (
            'source = "csv"\nname = "t.csv"\nlabel = "y"\nnum_classes = 2\n[data.columns.x]\nmissing = "median"',
            "mlp",
            "data.columns.x.missing",
        ),
    ],
)
def test_table_config_refusals_are_one_line(tmp_path, capsys, data, model, needle):
    path = tmp_path / "c.toml"
    path.write_text(f'name = "c"\n[model]\nname = "{model}"\n[data]\n{data}\n')
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
