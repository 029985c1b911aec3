"""train → test metrics → export (SavedModel + ONNX) → parity, through the real CLI."""

import json

import numpy as np
import onnx
import pytest
import tensorflow as tf


def version_dir(trained, version=1):
    return trained["root"] / "exports" / "tiny" / str(version)


def test_train_writes_a_complete_run(trained):
    run = trained["root"] / "runs" / "tiny" / "run-001"
    assert f"run:         {run}" in trained["stdout"]
    for name in ("config.toml", "versions.json", "history.csv", "best.weights.h5", "metrics.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert set(metrics) >= {"loss", "accuracy"} and 0.0 <= metrics["accuracy"] <= 1.0
    versions = json.loads((run / "versions.json").read_text())
    assert versions["packages"]["tensorflow"].startswith("2.21") and versions["packages"]["keras"].startswith("3.15")
    assert "git" in versions
    assert (run / "history.csv").read_text().count("\n") == 1 + 2  # header + 2 epochs
    assert not (run / "backup").exists()  # resume state goes once metrics.json marks the run finished


def test_savedmodel_signature_is_named_raw_and_float32(trained):
    serve = tf.saved_model.load(str(version_dir(trained))).signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert spec.name == "image" and spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 28, 28, 1]
    outputs = serve.structured_outputs
    assert outputs["probabilities"].dtype == tf.float32 and outputs["probabilities"].shape.as_list() == [None, 10]
    assert outputs["class_id"].dtype == tf.int64
    result = serve(image=tf.zeros([3, 28, 28, 1], tf.uint8))
    np.testing.assert_allclose(result["probabilities"].numpy().sum(-1), 1.0, rtol=1e-5)


def test_onnx_is_valid_opset_17_with_named_io(trained):
    model = onnx.load(str(version_dir(trained) / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert any(op.domain in ("", "ai.onnx") and op.version == 17 for op in model.opset_import)
    assert [i.name for i in model.graph.input] == ["image"]
    assert {o.name for o in model.graph.output} == {"probabilities", "class_id"}


def test_parity_verification_is_written_and_passes(trained):
    report = json.loads((version_dir(trained) / "verification.json").read_text())
    assert report["passed"] is True and report["samples"] == 64 and report["tolerance"] == 1e-5
    assert set(report["max_abs_diff"]) == {"saved_model", "onnx"}
    for diffs in report["max_abs_diff"].values():
        assert diffs["probabilities"] <= 1e-5 and diffs["class_id"] == 0


def test_export_again_takes_the_next_version_and_keeps_the_old(trained, kerasline):
    first = version_dir(trained)
    before = {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()}
    proc = kerasline("export", str(trained["experiment"]))
    assert proc.returncode == 0, proc.stderr
    assert version_dir(trained, 2).is_dir()
    assert {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()} == before
    assert not list((trained["root"] / "exports" / "tiny").glob(".tmp-*"))


def test_failed_parity_publishes_nothing(trained, kerasline):
    """An impossible tolerance makes verification fail: exit 2, no new version, no staging left."""
    exports = trained["root"] / "exports" / "tiny"
    before = sorted(p.name for p in exports.iterdir())
    proc = kerasline("export", str(trained["experiment"]), "export.tolerance=1e-30")
    assert proc.returncode == 2 and "failed parity" in proc.stderr, proc.stderr
    assert sorted(p.name for p in exports.iterdir()) == before


def test_evaluate_reports_the_run_metrics(trained, kerasline):
    proc = kerasline("evaluate", str(trained["experiment"]))
    assert proc.returncode == 0, proc.stderr
    run = trained["root"] / "runs" / "tiny" / "run-001"
    accuracy = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    assert f"accuracy {accuracy:.4f}" in proc.stdout


def test_bad_data_leaves_saved_artefacts_intact(trained, kerasline, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((50, 28, 28), np.uint8), y=np.full(50, 12))
    before = sorted(str(p) for p in trained["root"].rglob("*"))
    proc = kerasline("train", str(trained["experiment"]), f"data.name={bad}")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"error: {bad}: label 12 at record 0 is outside [0, 10) (data.num_classes)"
    )
    assert sorted(str(p) for p in trained["root"].rglob("*")) == before


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_model_exports_float32(tiny_cfg, tmp_path, policy):
    import keras

    from kerasline.training.fit import compile_model
    from kerasline.training.tasks import task_for

    keras.config.set_dtype_policy(policy)
    try:
        trained = compile_model(tiny_cfg, steps_per_epoch=1)
    finally:
        keras.config.set_dtype_policy("float32")
    assert trained.layers[2].compute_dtype != "float32" and trained.output.dtype == "float32"
    trained.save_weights(tmp_path / "w.weights.h5")
    exported = task_for(tiny_cfg).export_model(tmp_path / "w.weights.h5")
    assert all(layer.compute_dtype == "float32" for layer in exported.layers)
    x = np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(exported(x), trained(x), atol=1e-2)  # same weights, float16 compute on one side
