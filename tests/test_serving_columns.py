"""A model that takes one named input per raw CSV column (float32 [B], NaN missing; string [B], "" missing), as the
tabular task exports it: served by the development server in TF Serving's row and columnar formats and over gRPC,
and predicted in-process from a CSV file. The model is a tiny tf.Module saved here, so nothing trains."""

import csv
import http.client
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kerasline.cli import main
from kerasline.config import validate
from kerasline.errors import UserError
from kerasline.serving.client import GrpcClient, RestClient
from kerasline.serving.devserver import start
from kerasline.serving.local import Bad, Example, Spec, read_inputs, signature_inputs
from kerasline.serving.tensors import ServingError, parse_json

MODEL = "penguins"
NAN = float("nan")


class Tabular(tf.Module):
    """value = bill_length_mm + 2 · body_mass_g (NaN counts 0) + 1 for island "Dream" + 4 for island "" (so a
    missing string is told apart from "NA" or an unseen one)."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="bill_length_mm"),
            tf.TensorSpec([None], tf.float32, name="body_mass_g"),
            tf.TensorSpec([None], tf.string, name="island"),
        ]
    )
    def serve(self, bill_length_mm: tf.Tensor, body_mass_g: tf.Tensor, island: tf.Tensor) -> dict[str, tf.Tensor]:
        a = tf.where(tf.math.is_nan(bill_length_mm), 0.0, bill_length_mm)
        b = tf.where(tf.math.is_nan(body_mass_g), 0.0, body_mass_g)
        dream = tf.cast(tf.equal(island, "Dream"), tf.float32)
        empty = tf.cast(tf.equal(island, ""), tf.float32)
        return {"value": a + 2.0 * b + dream + 4.0 * empty}


def expected(a: float, b: float, island: str) -> float:
    """The model's value, in float32 as the graph computes it."""
    a, b = np.float32(0 if math.isnan(a) else a), np.float32(0 if math.isnan(b) else b)
    return float(a + np.float32(2) * b + np.float32(island == "Dream") + np.float32(4) * np.float32(island == ""))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """exports/penguins/1 with serving_default, as an export lays it out."""
    root = tmp_path_factory.mktemp("columns") / "exports"
    module = Tabular()
    tf.saved_model.save(module, str(root / MODEL / "1"), signatures={"serving_default": module.serve})
    return root


@pytest.fixture(scope="module")
def server(repo):
    dev = start(repo, rest_port=0, grpc_port=0)
    yield dev
    dev.stop()


def post(server, body: bytes | dict) -> tuple[int, dict]:
    """A predict request as raw bytes (so NaN literals go as written), answered as (status, parsed JSON)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    try:
        connection.request("POST", f"/v1/models/{MODEL}:predict", body=data)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


ROWS = [(39.1, 3.5, "Torgersen"), (NAN, 1.5, "Dream"), (2.0, NAN, ""), (1.0, 1.0, "Atlantis"), (0.5, 0.25, "NA")]


def test_row_format_takes_nan_empty_and_unseen_strings(server):
    instances = [{"bill_length_mm": a, "body_mass_g": b, "island": island} for a, b, island in ROWS]
    status, answer = post(server, {"instances": instances})  # json.dumps writes the literal NaN
    assert status == 200, answer
    assert answer == {"predictions": pytest.approx([expected(*row) for row in ROWS])}


def test_columnar_format_takes_nan_empty_and_unseen_strings(server):
    columns = {name: [row[i] for row in ROWS] for i, name in enumerate(["bill_length_mm", "body_mass_g", "island"])}
    status, answer = post(server, {"inputs": columns})
    assert status == 200, answer
    assert answer == {"outputs": pytest.approx([expected(*row) for row in ROWS])}


def test_rapidjson_nan_and_infinity_spellings_are_read(server):
    body = (
        b'{"inputs": {"bill_length_mm": [Inf, -Inf, Infinity, -Infinity, -NaN, 1], "body_mass_g": [0, 0, 0, 0, 0, 0],'
    )
    body += b' "island": ["Inf", "-NaN", "a \\"Inf\\" b", "", "x", "Dream"]}}'
    status, answer = post(server, body)
    assert status == 200, answer
    assert answer["outputs"] == [math.inf, -math.inf, math.inf, -math.inf, 0.0, 2.0]  # -NaN: missing, so 0
    # Strings are left as they are; only the literals rapidjson reads and Python's json does not are rewritten.
    parsed = parse_json(b'\xef\xbb\xbf["Inf", "-NaN", Inf, -Inf, -NaN, NaN, "x\\"Inf"]')  # with a UTF-8 BOM
    assert parsed[:4] == ["Inf", "-NaN", math.inf, -math.inf] and parsed[6] == 'x"Inf'
    assert math.isnan(parsed[4]) and math.isnan(parsed[5])
    with pytest.raises(ServingError, match="JSON Parse error"):
        parse_json(b'{"inputs": Infinit}')


def test_the_rest_and_grpc_clients_send_string_and_float_columns(server):
    inputs = {
        "bill_length_mm": np.array([39.1, np.nan, 2.0], np.float32),
        "body_mass_g": np.array([3.5, 1.5, np.nan], np.float32),
        "island": np.array([b"Torgersen", b"Dream", b""], dtype=object),
    }
    want = [expected(*row) for row in ROWS[:3]]
    rest = RestClient(f"http://127.0.0.1:{server.rest_port}")
    for rows in (True, False):
        assert rest.predict(MODEL, inputs, rows=rows)["value"].tolist() == pytest.approx(want)
    by_grpc = GrpcClient(f"127.0.0.1:{server.grpc_port}").predict(MODEL, inputs)
    assert by_grpc["value"].dtype == np.float32 and by_grpc["value"].tolist() == pytest.approx(want)


@pytest.mark.parametrize(
    "body, names",
    [
        ({"instances": [{"bill_length_mm": 1, "body_mass_g": 1, "island": "a"}, {"bill_length_mm": 1, "island": "a"}]},
         ["instances[1]", "missing input 'body_mass_g'"]),
        ({"instances": [{"bill_length_mm": 1, "body_mass_g": 1, "island": "a", "sex": "male"}]},
         ["instances[0]", "unexpected 'sex'"]),
        ({"inputs": {"bill_length_mm": [1], "island": ["a"]}}, ['"inputs"', "missing input 'body_mass_g'"]),
        ({"instances": [{"bill_length_mm": 1, "body_mass_g": 1, "island": 3}]}, ["island", "the number 3"]),
        ({"inputs": {"bill_length_mm": [1], "body_mass_g": [1], "island": [None]}}, ["island", "null"]),
        ({"instances": [{"bill_length_mm": "39.1", "body_mass_g": 1, "island": "a"}]},
         ["bill_length_mm", 'the string "39.1"']),
        ({"inputs": {"bill_length_mm": [1], "body_mass_g": [True], "island": ["a"]}}, ["body_mass_g", "true"]),
        ({"inputs": {"bill_length_mm": [1e39], "body_mass_g": [1], "island": ["a"]}},
         ["bill_length_mm", "outside the range of float32"]),
        ({"inputs": {"bill_length_mm": [16777217], "body_mass_g": [1], "island": ["a"]}},
         ["bill_length_mm", "lose precision as float32"]),  # TF Serving refuses the integer too; 16777217.0 passes
        ({"inputs": {"bill_length_mm": [1, 2], "body_mass_g": [1], "island": ["a", "b"]}}, ["batch size"]),
        ({"instances": [{"bill_length_mm": [1, 2], "body_mass_g": 1, "island": "a"}]}, ["bill_length_mm", "shape"]),
    ],
)  # fmt: skip
def test_what_a_column_model_cannot_take_is_a_400_naming_the_input(server, body, names):
    status, answer = post(server, body)
    assert status == 400 and all(name in answer["error"] for name in names), answer


def test_grpc_names_the_missing_or_mistyped_input(server):
    grpc_client = GrpcClient(f"127.0.0.1:{server.grpc_port}")
    floats, strings = np.array([1.0], np.float32), np.array([b"Dream"], dtype=object)
    with pytest.raises(ServingError) as missing:
        grpc_client.predict(MODEL, {"bill_length_mm": floats, "island": strings})
    assert missing.value.code == "INVALID_ARGUMENT" and "missing input 'body_mass_g'" in missing.value.message
    with pytest.raises(ServingError) as mistyped:
        grpc_client.predict(MODEL, {"bill_length_mm": floats, "body_mass_g": floats, "island": floats})
    assert mistyped.value.code == "INVALID_ARGUMENT" and mistyped.value.message.startswith("island: expects string")
    answer = grpc_client.predict(MODEL, {"bill_length_mm": floats, "body_mass_g": floats, "island": strings})
    assert answer["value"].tolist() == [4.0]  # still serving


# `kerasline predict --input rows.csv`

EXPERIMENT = """
name = "{name}"
[data]
target = "value"
[model]
name = "mlp"
head = "linear"
[export]
dir = "{repo}"
"""

CSV = [  # body_mass_g is no column: every row has it missing; species and sex are not inputs
    ["species", "island", "bill_length_mm", "sex"],
    ["Adelie", "Torgersen", "39.1", "male"],
    ["Adelie", "NA", "NA", "NA"],
    ["Gentoo", "", "", ""],
    ["Gentoo", "Dream", "forty", "female"],  # row 4: a bad number
    ["Chinstrap", "Dream", " n/a ", "female"],
    ["Chinstrap", "Dream"],  # row 6: broken
    ["Adelie", "Dream, north", "NULL", "male"],  # an unseen island, quoted comma and all
    ["Adelie", "Biscoe", "1e400", "male"],  # row 8: beyond float32
    ["Adelie", "Biscoe", "-2.5", "male"],
]


def write_csv(path: Path, rows: list[list[str]], blank_line_after: int | None = None) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        for i, row in enumerate(rows):
            writer.writerow(row)
            if i == blank_line_after:
                f.write("\r\n")
    return path


@pytest.fixture
def experiment(repo, tmp_path) -> Path:
    path = tmp_path / f"{MODEL}.toml"
    path.write_text(EXPERIMENT.format(name=MODEL, repo=repo))
    return path


def test_read_inputs_fills_a_column_per_input_and_names_bad_rows(repo, tmp_path):
    cfg = validate({"name": MODEL, "data": {"target": "value"}, "model": {"name": "mlp", "head": "linear"}})
    source = write_csv(tmp_path / "rows.csv", CSV, blank_line_after=2)  # a blank line is not a row
    count, items = read_inputs(source, signature_inputs(repo / MODEL / "1"), cfg)
    items = list(items)
    assert count == len(items) == len(CSV) - 1
    bad = {item.source: item.reason for item in items if isinstance(item, Bad)}
    assert bad == {
        f"{source} row 4": "bill_length_mm: 'forty' is not a number",
        f"{source} row 6": "2 fields, but the header has 4",
        f"{source} row 8": "bill_length_mm: '1e400' is outside the range of float32",
    }
    good = [item for item in items if isinstance(item, Example)]
    assert [e.source for e in good] == [1, 2, 3, 5, 7, 9]
    assert {e.note for e in good} == {
        f'note: no column body_mass_g in {source}: filled as missing (NaN, or "" for a string)'
    }
    lengths = [e.arrays["bill_length_mm"] for e in good]
    assert all(a.dtype == np.float32 and a.shape == () for a in lengths)
    assert [float(a) for a in lengths] == pytest.approx([39.1, NAN, NAN, NAN, NAN, -2.5], nan_ok=True)
    assert all(math.isnan(e.arrays["body_mass_g"]) for e in good)
    assert [e.arrays["island"].item() for e in good] == [b"Torgersen", b"NA", b"", b"Dream", b"Dream, north", b"Biscoe"]


def test_a_model_without_a_value_per_column_is_told_so(tmp_path):
    cfg = validate({"name": MODEL, "data": {"target": "value"}, "model": {"name": "mlp", "head": "linear"}})
    source = write_csv(tmp_path / "rows.csv", CSV)
    with pytest.raises(UserError, match=r"the model takes image uint8 \[-1, 28, 28, 1\], not a value per CSV column"):
        read_inputs(source, {"image": Spec(np.dtype(np.uint8), [-1, 28, 28, 1])}, cfg)
    with pytest.raises(UserError, match=r"no column year, and year \(int64 \[-1\]\) cannot be missing"):
        read_inputs(source, {"island": Spec(np.dtype(object), [-1]), "year": Spec(np.dtype(np.int64), [-1])}, cfg)


def test_predict_writes_a_row_per_csv_row_and_skips_bad_ones(experiment, tmp_path, capsys):
    source = write_csv(tmp_path / "rows.csv", CSV)
    for output in (tmp_path / "p.csv", tmp_path / "p.jsonl"):
        assert main(["predict", str(experiment), "--input", str(source), "--output", str(output)]) == 0
        out, err = capsys.readouterr()
        assert "predicted:   6 input(s), 3 skipped" in out, err
        assert err.count("note: no column body_mass_g") == 1
        assert f"skipped {source} row 4: bill_length_mm: 'forty' is not a number" in err
        assert f"skipped {source} row 6: 2 fields, but the header has 4" in err
    with (tmp_path / "p.csv").open() as f:
        rows = list(csv.DictReader(f))
    jsonl = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    want = [expected(39.1, NAN, "Torgersen"), 0.0, 4.0, 1.0, 0.0, -2.5]  # NA and "Dream, north": neither Dream nor ""
    assert [(int(row["input"]), float(row["value"])) for row in rows] == [
        (n, pytest.approx(v)) for n, v in zip([1, 2, 3, 5, 7, 9], want, strict=True)
    ]
    assert [row["input"] for row in jsonl] == [1, 2, 3, 5, 7, 9]
    assert [row["value"] for row in jsonl] == pytest.approx(want)


def test_strict_stops_at_the_first_bad_row_naming_its_column_and_value(experiment, tmp_path, capsys):
    source = write_csv(tmp_path / "rows.csv", CSV)
    args = ["--input", str(source), "--output", str(tmp_path / "p.csv"), "--strict"]
    assert main(["predict", str(experiment), *args]) == 2
    note, error = capsys.readouterr().err.splitlines()  # rows 1 to 3 were read, with the note, before row 4
    assert note.startswith("note: no column body_mass_g")
    assert error == f"error: {source} row 4: bill_length_mm: 'forty' is not a number"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "an empty file; a CSV needs a header row naming its columns"),
        ("island,bill_length_mm,body_mass_g\r\n", "a header row but no rows"),
        ("species,sex\r\nAdelie,male\r\n", "no column is an input of the model"),
        ("island,island,body_mass_g\r\nDream,Biscoe,1\r\n", "the header names the column island 2 times"),
    ],
)
def test_a_csv_that_cannot_be_read_is_one_line_and_exit_2(experiment, tmp_path, capsys, text, message):
    source = tmp_path / "rows.csv"
    source.write_text(text)
    assert main(["predict", str(experiment), "--input", str(source), "--output", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --input {source}: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "p.csv").exists()
