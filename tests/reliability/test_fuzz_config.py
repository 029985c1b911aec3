"""Generated experiment files and overrides: each one validates or exits 2 with one line, never a traceback."""

import contextlib
import io
import tomllib
from datetime import timedelta

import keras
import tomli_w
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kerasline.cli import main
from kerasline.config import ExperimentConfig

KEYS = sorted(
    f"{section}.{key}" if section else key for section, model in [("", ExperimentConfig)] for key in model.model_fields
) + [
    "data.source",
    "data.name",
    "data.image_shape",
    "data.num_classes",
    "data.batch_size",
    "data.limit",
    "data.on_error",
    "data.validation_fraction",
    "data.augment.rotation",
    "data.augment.flip",
    "data.augment.zoom",
    "model.name",
    "model.filters",
    "model.convs_per_block",
    "model.dropout",
    "model.initializer",
    "model.l2",
    "training.epochs",
    "training.optimizer.name",
    "training.optimizer.learning_rate",
    "training.schedule.name",
    "training.schedule.warmup_epochs",
    "training.mixed_precision",
    "training.monitor",
    "export.tolerance",
    "data.augmnt.zoom",
    "modle.filters",
    "training.optimizer",
    "seed.x",
    "",
]
SCALARS = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["cnn", "adam", "cosine", "samples", "horizontal", "skip", "mnist_8k"]),
)
VALUES = st.one_of(
    SCALARS, st.lists(st.integers(-5, 5000), max_size=5), st.dictionaries(st.text(max_size=5), SCALARS, max_size=3)
)


def nest(pairs: dict) -> dict:
    raw: dict = {}
    for dotted, value in pairs.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[leaf] = value
    return raw


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own errors: the same contract
            code = e.code
    return code, out.getvalue(), err.getvalue()


def assert_validates_or_one_line(code: int, out: str, err: str) -> None:
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    else:
        assert not err


@settings(max_examples=150, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
def test_generated_experiment_files(tmp_path, pairs):
    path = tmp_path / "fuzz.toml"
    path.write_text(tomli_w.dumps(nest({k: v for k, v in pairs.items() if k})))
    code, out, err = run(["config", str(path)])
    assert_validates_or_one_line(code, out, err)
    if code == 0:  # the file's stem names the experiment, unless the file sets `name` itself
        assert tomllib.loads(out)["name"] == pairs.get("name", "fuzz")


@settings(max_examples=150, deadline=timedelta(seconds=5))
@given(
    overrides=st.lists(
        st.one_of(st.text(max_size=30), st.tuples(st.sampled_from(KEYS), st.text(max_size=12)).map("=".join)),
        max_size=4,
    )
)
@example(overrides=["0\r0="])  # found by hypothesis, 2026-12-07: a key with a carriage return in it
@example(overrides=["-\r"])  # found by hypothesis, 2026-12-08: an unknown argument, echoed by argparse
def test_generated_overrides(overrides):
    assert_validates_or_one_line(*run(["config", "mnist_cnn", *overrides]))


SMALL = {  # keys whose values a dry run then really uses: data loading and model building
    "data.limit": st.integers(-1, 300),
    "data.batch_size": st.integers(-1, 70),
    "data.name": st.sampled_from(["mnist_8k", "missing", "../escape.npz", "", "data/mnist_8k.npz"]),
    "data.image_shape": st.lists(st.integers(0, 40), min_size=0, max_size=4).map(
        lambda v: f"[{', '.join(map(str, v))}]"
    ),
    "data.num_classes": st.integers(0, 12),
    "data.on_error": st.sampled_from(["raise", "skip", "ignore"]),
    "data.augment.rotation": st.floats(-1, 1).map(str),
    "model.filters": st.lists(st.integers(0, 12), max_size=6).map(lambda v: f"[{', '.join(map(str, v))}]"),
    "model.convs_per_block": st.integers(0, 3),
    "model.dense_units": st.integers(0, 40),
    "model.dropout": st.floats(-0.5, 1.5).map(str),
    "training.optimizer.name": st.sampled_from(["sgd", "adam", "adamw", "lion"]),
    "training.mixed_precision": st.sampled_from(["float32", "mixed_bfloat16", "float64"]),
}


@settings(max_examples=25, deadline=timedelta(seconds=30), suppress_health_check=[HealthCheck.too_slow])
@given(chosen=st.fixed_dictionaries({}, optional={k: v.map(str) for k, v in SMALL.items()}))
def test_generated_dry_runs(chosen):
    overrides = [f"{k}={v}" for k, v in chosen.items()]
    try:
        assert_validates_or_one_line(*run(["train", "mnist_cnn", "--dry-run", "data.limit=200", *overrides]))
    finally:
        keras.config.set_dtype_policy("float32")  # a dry run sets the run's precision for this process
