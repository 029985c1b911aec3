"""The task report against hand counts, in metrics.json and `kerasline evaluate`; the model card against the files
beside it."""

import gc
import json
import logging
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasline.config import validate
from kerasline.training.report import distribution, inference, number, predictions
from kerasline.training.tasks import task_for
from kerasline.training.tasks.classification import class_report, regression_report
from kerasline.training.tasks.segmentation import image_confusion, segmentation_report

# Six inputs, six classes: predicted 0, 1, 1, 1, 0, 3 with confidence .92, .72, .83, .75, .55, .45.
LABELS = np.array([0, 0, 1, 1, 2, 5])
PROBABILITIES = np.array(
    [
        [0.92, 0.03, 0.02, 0.015, 0.01, 0.005],
        [0.2, 0.72, 0.04, 0.02, 0.015, 0.005],
        [0.1, 0.83, 0.03, 0.02, 0.015, 0.005],
        [0.15, 0.75, 0.05, 0.03, 0.015, 0.005],
        [0.55, 0.1, 0.25, 0.05, 0.03, 0.02],
        [0.2, 0.15, 0.1, 0.45, 0.09, 0.01],  # the true class 5 ranks last: outside the top 5
    ]
)


def test_class_report_matches_hand_counts():
    report = class_report(LABELS, PROBABILITIES)
    rows = report["per_class"]
    assert [rows[str(c)]["support"] for c in range(6)] == [2, 2, 1, 0, 0, 1]
    # class 0: predicted twice, right once; class 1: predicted three times, right twice, found both times
    assert rows["0"]["precision"] == 0.5 and rows["0"]["recall"] == 0.5
    assert rows["1"]["precision"] == pytest.approx(2 / 3) and rows["1"]["recall"] == 1.0
    assert rows["0"]["f1"] == pytest.approx(0.5, abs=1e-6) and rows["1"]["f1"] == pytest.approx(0.8, abs=1e-6)
    assert all(rows[str(c)][key] == 0 for c in (2, 3, 4, 5) for key in ("precision", "recall", "f1"))
    assert report["macro_f1"] == pytest.approx(1.3 / 6, abs=1e-6)
    assert report["top_5_accuracy"] == pytest.approx(5 / 6)
    assert "roc_auc" not in report  # six classes
    # bins: .92 right | .83 right | .72 wrong and .75 right together: |1 - 1.47| | .55 wrong | .45 wrong
    assert report["expected_calibration_error"] == pytest.approx((0.08 + 0.17 + 0.47 + 0.55 + 0.45) / 6)
    expected = np.zeros((6, 6), int)
    for true, predicted in zip(LABELS, [0, 1, 1, 1, 0, 3], strict=True):
        expected[true, predicted] += 1
    assert report["confusion_matrix"] == expected.tolist()


def test_two_classes_get_roc_auc_and_no_top_k():
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.2])  # positives, then negatives: 8 of 9 pairs in order
    report = class_report(np.array([1, 1, 1, 0, 0, 0]), np.stack([1 - scores, scores], axis=-1))
    assert report["roc_auc"] == pytest.approx(8 / 9, abs=1e-6)
    assert not any(key.startswith("top_") for key in report)
    assert report["confusion_matrix"] == [[2, 1], [1, 2]]


def test_regression_report_matches_hand_computation():
    report = regression_report(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 6.0]))
    # errors 0, 0, 0, 2: MAE 0.5, RMSE 1; R² = 1 - 4 / 5 (the values' squared deviations from 2.5 sum to 5)
    assert report == pytest.approx({"mae": 0.5, "rmse": 1.0, "r2": 0.2})


def test_segmentation_report_per_image_and_overall():
    truth = np.array([[[0, 0], [1, 1]], [[0, 0], [0, 0]]])
    predicted = np.array([[[0, 1], [1, 1]], [[0, 0], [0, 0]]])
    report = segmentation_report(image_confusion(truth, predicted, num_classes=2))
    # image 1: class 0 TP 1 FN 1 (IoU 1/2, Dice 2/3), class 1 TP 2 FP 1 (IoU 2/3, Dice 4/5); image 2: all class 0
    assert report["per_class"]["0"] == pytest.approx({"iou": 5 / 6, "dice": 10 / 11, "pixels": 6})
    assert report["per_class"]["1"] == pytest.approx({"iou": 2 / 3, "dice": 4 / 5, "pixels": 2})
    assert report["per_image_iou"]["0"]["mean"] == pytest.approx(0.75)
    assert report["per_image_iou"]["0"]["p10"] == pytest.approx(0.55)  # between 1/2 and 1, linearly
    assert report["per_image_dice"]["0"]["p50"] == pytest.approx((2 / 3 + 1) / 2)
    # class 1 is in neither mask of image 2: its per-image figures come from image 1 alone
    assert report["per_image_iou"]["1"]["mean"] == pytest.approx(2 / 3) and report["per_image_iou"]["1"]["std"] == 0
    assert report["images"] == 2


def test_distribution_of_reconstruction_errors():
    summary = distribution(np.arange(1, 101, dtype=float), (50, 90, 99))
    assert summary == pytest.approx(
        {"mean": 50.5, "std": np.std(np.arange(1, 101)), "p50": 50.5, "p90": 90.1, "p99": 99.01}
    )


def run_dir(trained):
    return trained["root"] / "runs" / "tiny" / "run-001"


def test_metrics_json_has_the_report_beside_the_test_metrics(trained):
    results = json.loads((run_dir(trained) / "metrics.json").read_text())
    assert set(results) == {"test", "report"} and set(results["test"]) == {"loss", "accuracy"}
    report = results["report"]
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 60  # 12.5% of 480 examples
    assert np.trace(matrix) / matrix.sum() == pytest.approx(results["test"]["accuracy"])  # the argmax decision
    assert [report["per_class"][str(c)]["support"] for c in range(10)] == matrix.sum(1).tolist()
    assert 0 <= report["expected_calibration_error"] <= 1 and report["top_5_accuracy"] >= results["test"]["accuracy"]


def test_evaluate_prints_and_writes_the_report(trained, kerasline):
    proc = kerasline("evaluate", str(trained["experiment"]))
    assert proc.returncode == 0, proc.stderr
    assert "  per_class:" in proc.stdout and "  confusion_matrix:" in proc.stdout and "  macro_f1: " in proc.stdout
    evaluation = json.loads((run_dir(trained) / "evaluation.json").read_text())
    trained_report = json.loads((run_dir(trained) / "metrics.json").read_text())["report"]
    assert evaluation["report"]["confusion_matrix"] == trained_report["confusion_matrix"]
    assert evaluation["report"]["macro_f1"] == pytest.approx(trained_report["macro_f1"])


def test_model_card_figures_are_the_run_files(trained):
    version = trained["root"] / "exports" / "tiny" / "1"
    card = (version / "MODEL_CARD.md").read_text()
    results = json.loads((run_dir(trained) / "metrics.json").read_text())
    for name, value in results["test"].items():
        assert f"| {name} | {number(value)} |" in card
    for c, row in results["report"]["per_class"].items():
        assert f"| {c} | " + " | ".join(map(number, row.values())) + " |" in card
    parity = json.loads((version / "verification.json").read_text())
    for export, diffs in parity["max_abs_diff"].items():
        for output, diff in diffs.items():
            assert f"| {export} | {output} | {number(diff)} |" in card
    (spec,) = tf.saved_model.load(str(version)).signatures["serving_default"].structured_input_signature[1].values()
    assert f"| serving_default | input | {spec.name} | {spec.dtype.name} | {spec.shape.as_list()} |" in card
    assert "| serving_default | input | image | uint8 | [None, 28, 28, 1] |" in card
    assert "- examples: train 372, validation 48, test 60" in card
    assert "the first 8,000 images of the official MNIST test set" in card  # provenance, from data/README.md
    assert 'name = "tiny"' in card and "| tensorflow | 2.21" in card
    latency = card.split("## Latency at batch 1")[1].split("##")[0]
    assert "measured at export on this machine" in latency.lower()
    assert len([line for line in latency.splitlines() if line.startswith(("| SavedModel", "| ONNX Runtime"))]) == 2


def _mlp_task(data: dict | None = None, **model):
    data = {"image_shape": [4, 4, 1], "num_classes": 3, **(data or {})}
    return task_for(validate({"name": "m", "data": data, "model": {"name": "mlp", "hidden_units": [8], **model}}))


HEAD_DATA = {"softmax": {}, "sigmoid": {"num_classes": 2}, "linear": {"target": "value"}}


@pytest.mark.parametrize("head", HEAD_DATA)
def test_one_pass_scores_the_test_split_as_model_evaluate_does(head):
    """Loss with the L2 penalty, averaged over examples across a short last batch, and the metric: as
    model.evaluate gives them; the report from the same pass, as the predictions give it."""
    task = _mlp_task(HEAD_DATA[head], l2=0.05, head=head)
    model = task.compile(task.build_model(), steps_per_epoch=1)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (10, 4, 4, 1)).astype(np.float32)
    labels = rng.integers(0, task.cfg.data.num_classes, 10).astype(np.float32 if head == "linear" else np.int32)
    test = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)  # 4, 4, 2
    metrics, report = task.test(model, test)
    evaluated = model.evaluate(test, return_dict=True, verbose=0)
    assert list(metrics) == list(evaluated) and len(metrics) == 2  # in evaluate's order too: tables show it
    assert sum(float(keras.ops.sum(loss)) for loss in model.losses) > 0.01  # the penalty is in both losses
    for name, value in evaluated.items():
        assert metrics[name] == pytest.approx(float(value), rel=1e-5, abs=1e-6), name
    assert report == task.report_of(*predictions(model, test))


def test_the_test_metrics_and_the_report_read_the_split_once():
    task = _mlp_task()
    model = task.compile(task.build_model(), steps_per_epoch=1)
    reads = []

    def counted(x):
        return tf.ensure_shape(tf.numpy_function(lambda v: reads.append(len(v)) or v, [x], tf.float32), x.shape)

    images = np.zeros((6, 4, 4, 1), np.float32)
    test = tf.data.Dataset.from_tensor_slices((images, np.arange(6) % 3)).batch(4).map(lambda x, y: (counted(x), y))
    metrics, report = task.test(model, test)
    assert reads == [4, 2]
    assert set(metrics) == {"loss", "accuracy"} and np.sum(report["confusion_matrix"]) == 6


def test_the_validation_and_test_passes_share_one_trace_that_follows_the_weights():
    task = _mlp_task()
    model = task.compile(task.build_model(), steps_per_epoch=1)
    images = np.random.default_rng(0).uniform(0, 255, (6, 4, 4, 1)).astype(np.float32)
    validation = tf.data.Dataset.from_tensor_slices((images[:4], np.arange(4) % 3)).batch(3)
    test = tf.data.Dataset.from_tensor_slices((images, np.arange(6) % 3)).batch(4)
    _, before = predictions(model, validation)  # the confusion matrix's pass, at a fit's end
    model.set_weights([np.ones_like(w) for w in model.get_weights()])  # as the best weights are loaded
    task.test(model, test)  # the test pass, as training runs it
    _, after = predictions(model, test)
    infer = inference(model, test.element_spec[0])
    assert infer is inference(model, validation.element_spec[0])
    assert infer.experimental_get_tracing_count() == 1
    np.testing.assert_allclose(after, model.predict(images, verbose=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(before, after[:4])


def test_the_trace_cache_lets_a_model_go():
    task = _mlp_task()
    model = task.compile(task.build_model(), steps_per_epoch=1)
    inference(model, tf.TensorSpec([None, 4, 4, 1], tf.float32))(np.zeros((1, 4, 4, 1), np.float32))
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_scoring_many_models_in_one_process_warns_of_no_retracing(caplog):
    # A tuner or the bench's zoo scores model after model, each traced once: TensorFlow must not call that
    # "excessive retracing" (it counts traces by the Python function, and the models must not share one).
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.addHandler(caplog.handler)
    try:
        spec = tf.TensorSpec([None, 4], tf.float32)
        for _ in range(8):
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            np.testing.assert_allclose(inference(model, spec)(tf.ones([3, 4])), model(np.ones((3, 4))), rtol=1e-6)
    finally:
        tf_logger.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
