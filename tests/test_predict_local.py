"""`kerasline predict --input PATH` without a server: files through an export in-process, in both runtimes, one
row per input; bad inputs skipped (or, --strict, stopping), user errors in one line with exit 2."""

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kerasline.cli import main
from kerasline.config import validate
from kerasline.serving.local import Example, RowWriter
from kerasline.training.tasks import task_for

MODEL = """
name = "{name}"
seed = 7
runs_dir = "{root}/runs"
[data]
{data}
batch_size = 32
[model]
{model}
[training]
epochs = 1
[export]
dir = "{root}/exports"
parity_samples = 8
"""
IMAGES = ('name = "mnist_8k"\nlimit = 200', 'name = "cnn"\nfilters = [4]\nconvs_per_block = 1\ndense_units = 8')
TOKENS = (  # logistic regression on a bag of words: a sigmoid head
    'input = "tokens"\nname = "imdb_vocab500"\nnum_classes = 2\nsequence_length = 16\nlimit = 160',
    'name = "mlp"\nhidden_units = []\nhead = "sigmoid"',
)


def train(root: Path, name: str, data: str, model: str) -> Path:
    """A tiny experiment trained and exported through the CLI's entry point, in this process (TF is loaded)."""
    experiment = root / f"{name}.toml"
    experiment.write_text(MODEL.format(name=name, root=root, data=data, model=model))
    assert main(["train", str(experiment)]) == 0
    return experiment


@pytest.fixture(scope="module")
def image_model(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("images"), "digits", *IMAGES)


@pytest.fixture(scope="module")
def token_model(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("tokens"), "reviews", *TOKENS)


@pytest.fixture
def digits() -> np.ndarray:
    with np.load("data/mnist_8k.npz") as npz:
        return npz["x"][:4]


@pytest.fixture
def folder(tmp_path, digits) -> Path:
    """Two grey PNGs at the model's size, an RGB JPEG of another size in a subfolder, a corrupt PNG, a note."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(digits[0]).save(root / "a.png")
    Image.fromarray(digits[1]).save(root / "b.png")
    Image.fromarray(np.stack([digits[2]] * 3, axis=-1)).resize((32, 32)).save(root / "sub" / "c.jpg")
    (root / "broken.png").write_bytes(b"not an image")
    (root / "notes.txt").write_text("not an input: no image suffix")
    return root


def predict(capsys, experiment: Path, source: Path, output: Path, *args: str) -> tuple[int, str, str]:
    code = main(["predict", str(experiment), "--input", str(source), "--output", str(output), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def serve(experiment: Path, version: int = 1):
    return tf.saved_model.load(str(experiment.parent / "exports" / experiment.stem / str(version)))


def test_a_folder_gives_the_same_rows_in_both_runtimes(image_model, folder, tmp_path, capsys, digits):
    code, out, err = predict(capsys, image_model, folder, tmp_path / "p.csv", "--top-k", "2")
    assert code == 0, err
    assert "predicted:   3 input(s), 1 skipped" in out and "inputs/s" in out and "(savedmodel)" in out
    assert err.count(f"skipped {folder / 'broken.png'}: not a readable image") == 1
    assert err.count("note: images are resized to 28x28") == 1  # said once, for c.jpg
    with (tmp_path / "p.csv").open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["input", "class_id", "probability", "class_id_2", "probability_2"]
        by_savedmodel = list(reader)
    assert [row["input"] for row in by_savedmodel] == [str(folder / name) for name in ("a.png", "b.png", "sub/c.jpg")]

    code, out, err = predict(capsys, image_model, folder, tmp_path / "p.jsonl", "--top-k", "2", "--runtime", "onnx")
    assert code == 0, err
    by_onnx = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [row["input"] for row in by_onnx] == [row["input"] for row in by_savedmodel]
    for saved, onnx in zip(by_savedmodel, by_onnx, strict=True):
        assert (int(saved["class_id"]), int(saved["class_id_2"])) == (onnx["class_id"], onnx["class_id_2"])
        assert float(saved["probability"]) == pytest.approx(onnx["probability"], abs=1e-5)
    # The PNG is read as the pixels it holds: the row is the SavedModel's answer on the array itself.
    probabilities = serve(image_model).signatures["serving_default"](image=digits[:1, ..., None])["probabilities"]
    assert float(by_savedmodel[0]["probability"]) == pytest.approx(float(np.max(probabilities)), abs=1e-6)


def test_an_npy_gives_a_row_per_index(image_model, tmp_path, capsys, digits):
    np.save(tmp_path / "digits.npy", digits.astype(np.int64))  # (N, 28, 28): the channel axis and uint8 follow
    run = image_model.parent / "runs" / "digits" / "run-001"
    code, out, err = predict(capsys, image_model, tmp_path / "digits.npy", tmp_path / "n.csv", "--run", str(run))
    assert code == 0 and f"with {image_model.parent / 'exports' / 'digits' / '1'} (savedmodel)" in out, err
    rows = list(csv.DictReader((tmp_path / "n.csv").open()))
    class_ids = serve(image_model).signatures["serving_default"](image=digits[..., None])["class_id"].numpy()
    assert [(row["input"], int(row["class_id"])) for row in rows] == [(str(i), c) for i, c in enumerate(class_ids)]


def test_strict_stops_at_the_first_bad_file(image_model, folder, tmp_path, capsys):
    code, _, err = predict(capsys, image_model, folder, tmp_path / "p.csv", "--strict")
    assert code == 2
    assert err.strip().startswith(f"error: {folder / 'broken.png'}: not a readable image (") and err.count("\n") == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--version", "9"], "--version 9: digits has no such version (versions: [1])"),
        (["export.dir={root}/none"], "digits: no export under {root}/none/digits; run `make train` or `make export`"),
        (["--run", "{root}"], "--run {root}: no version under {root}/exports/digits was exported from it"),
        (["--output", "{root}/digits.toml/p.csv"], "--output {root}/digits.toml/p.csv: cannot write in"),
        (["--runtime", "onnx", "--server", "http://127.0.0.1:1"], "--output, --runtime: only without --server"),
        (
            ["--runtime", "onnx-int8"],
            "{root}/exports/digits/1: no model-int8.onnx; export the run with export.onnx_int8 = true",
        ),
    ],
)
def test_what_cannot_be_done_is_one_line_and_exit_2(image_model, folder, tmp_path, capsys, args, message):
    root = image_model.parent
    code, _, err = predict(capsys, image_model, folder, tmp_path / "p.csv", *(a.format(root=root) for a in args))
    assert code == 2 and err.startswith(f"error: {message.format(root=root)}") and err.count("\n") == 1, err


def test_with_a_server_it_is_the_server_form(image_model, capsys):
    assert main(["predict", str(image_model), "--server", "http://127.0.0.1:1"]) == 2
    assert capsys.readouterr().err.startswith("error: UNAVAILABLE: 127.0.0.1:1")  # the REST client asked


def test_a_tokens_file_gives_the_same_rows_in_both_runtimes(token_model, tmp_path, capsys):
    lines = ["12 45 3 9", " ".join(str(i) for i in range(1, 30)), "hello world", "3 999"]
    (tmp_path / "reviews.txt").write_text("\n".join(lines) + "\n")
    rows = {}
    for runtime in ("savedmodel", "onnx"):
        output = tmp_path / f"{runtime}.csv"
        code, _, err = predict(capsys, token_model, tmp_path / "reviews.txt", output, "--runtime", runtime)
        assert code == 0, err
        assert f"{tmp_path / 'reviews.txt'}:3: not space-separated integer token ids" in err
        assert f"{tmp_path / 'reviews.txt'}:4: token ids outside [0, 500) (data.vocab_size)" in err
        reader = csv.DictReader(output.open())
        rows[runtime] = list(reader)
        assert reader.fieldnames == ["input", "class_id", "probability"]  # a sigmoid: the probability of class 1
    assert [row["input"] for row in rows["onnx"]] == [f"{tmp_path / 'reviews.txt'}:{n}" for n in (1, 2)]
    tokens = np.zeros((2, 16), np.int32)
    tokens[0, :4], tokens[1] = [12, 45, 3, 9], np.arange(1, 17)  # padded with 0, cut to sequence_length
    want = serve(token_model).signatures["serving_default"](tokens=tokens)["probability"].numpy()
    for runtime in rows:
        assert [float(row["probability"]) for row in rows[runtime]] == pytest.approx(want, abs=1e-5)


def test_text_reaches_onnx_as_the_runs_token_ids(tmp_path):
    data = {"source": "tfds", "input": "text", "name": "imdb_reviews", "num_classes": 2, "sequence_length": 5}
    cfg = validate({"name": "t", "data": data, "model": {"name": "rnn"}})
    (tmp_path / "vocabulary.json").write_text(json.dumps(["", "[UNK]", "good", "movie"]))
    feed = task_for(cfg).onnx_feed(tmp_path)
    tokens = feed({"text": np.array([b"A GOOD movie!", b"good"], dtype=object)})["tokens"]
    assert tokens.dtype == np.int32 and tokens.tolist() == [[1, 2, 3, 0, 0], [2, 0, 0, 0, 0]]


def test_readable_rows_of_each_task():
    classify = task_for(validate({"name": "c", "data": {"num_classes": 3}, "model": {"name": "cnn"}}))
    probabilities = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]], np.float32)
    rows = classify.readable({"probabilities": probabilities, "class_id": np.array([1, 0])}, top_k=5)
    top_three = {"class_id": 1, "probability": 0.5, "class_id_2": 2, "probability_2": 0.3, "class_id_3": 0}
    assert rows[0] == pytest.approx(top_three | {"probability_3": 0.2})  # k is at most the number of classes
    autoencoder = task_for(validate({"name": "a", "model": {"name": "autoencoder"}}))
    outputs = {"error": np.array([0.25], np.float32), "reconstruction": np.zeros((1, 28, 28, 1), np.uint8)}
    assert autoencoder.readable(outputs) == [{"error": 0.25}]


def test_segmentation_masks_are_written_as_pngs_beside_the_output(tmp_path):
    data = {"task": "segmentation", "name": "isbi2012_membrane", "image_shape": [8, 8, 1], "num_classes": 2}
    segment = task_for(validate({"name": "s", "data": data, "model": {"name": "unet", "depth": 1}}))
    mask = np.zeros((1, 8, 8), np.int64)
    mask[0, 2:5, 3:6] = 1
    rows = segment.readable({"probabilities": np.zeros((1, 8, 8, 2), np.float32), "mask": mask})
    with RowWriter(tmp_path / "out" / "p.csv") as writer:
        writer.write([Example("in/sub/x.png", "sub/x.png", {})], rows)
    (row,) = csv.DictReader((tmp_path / "out" / "p.csv").open())
    assert row == {"input": "in/sub/x.png", "mask": "p/sub/x.png.mask.png"}
    written = tf.io.decode_png((tmp_path / "out" / row["mask"]).read_bytes()).numpy()
    np.testing.assert_array_equal(written[..., 0], mask[0] * 255)  # as training reads a two-class mask


@pytest.mark.parametrize(
    "variables, form",
    [
        (["INPUT=in"], "predict e  --input in"),
        ([], "predict e  --server http://127.0.0.1:8501"),
        (["INPUT=x.npy", "SERVER=http://h:1"], "predict e  --server http://h:1 --input x.npy"),
    ],
)
def test_make_predict_is_local_with_input_unless_a_server_is_named(variables, form):
    command = ["make", "-s", "-n", "-o", "setup", "predict", "EXP=e", *variables]
    assert subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().endswith(form)
