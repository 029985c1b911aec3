"""Item 9 of `make bench`: the generative experiments, trained on the shipped digits and exported.

GANs: generated digits scored by the project's own digit classifier (the default experiment's trained CNN):
the mean top-class confidence, the entropy of the histogram of predicted classes (ln 10 ≈ 2.30 when all
classes are equally common), and the Fréchet distance between the classifier's penultimate-layer features of
held-out real digits and of generated ones. The same figures for a second set of real digits are the reference.
Autoencoders and the VAE: the mean squared reconstruction error (pixels in [0, 1]) on the test split.
Every experiment: training throughput, the export's worst parity difference, and ONNX Runtime ÷ SavedModel
latency at batch 1 on its serving_default signature.

`python -m benchmarks.generative [--quick]` runs this item alone, training the classifier briefly itself.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import json
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import kerasline.training.fit
from benchmarks.common import format_table, steady, train_default
from benchmarks.figures import Figure, block_medians, ort_figure
from benchmarks.latency import in_fresh_process
from kerasline.config import ExperimentConfig, load_experiment
from kerasline.models.gan import fixed_noise
from kerasline.training.tasks import task_for

EXPERIMENTS = ("digits_dcgan", "digits_wgan_gp", "digits_autoencoder", "digits_conv_autoencoder", "digits_vae")
QUICK_OVERRIDES = ["data.limit=1200", "training.epochs=1"]
CLASSIFIER_QUICK = ["data.limit=1200", "training.epochs=2"]
SAMPLES = {True: 200, False: 1000}  # generated digits scored, quick | full


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½) between two sets of feature rows (Heusel et al., 2017)."""
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    # Tr (Σa Σb)^½ = Tr (Σa^½ Σb Σa^½)^½, a symmetric matrix: its eigenvalues are real and non-negative.
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def feature_scorer(classifier: keras.Model) -> keras.Model:
    """The classifier with two outputs: its penultimate features (the input of its `logits` layer) and probabilities."""
    return keras.Model(classifier.inputs, [classifier.get_layer("logits").input, classifier.output])


def digit_scores(scorer: keras.Model, images: np.ndarray, reference: np.ndarray) -> dict:
    """Confidence, class-histogram entropy and Fréchet distance to `reference` features, for uint8 `images`."""
    features, probabilities = (np.asarray(t) for t in scorer.predict(images.astype(np.float32), verbose=0))
    counts = np.bincount(probabilities.argmax(-1), minlength=probabilities.shape[-1])
    share = counts[counts > 0] / counts.sum()
    return {
        "confidence": float(probabilities.max(-1).mean()),
        "class_entropy": float(-(share * np.log(share)).sum()) + 0.0,  # not -0.0 for a single class
        "frechet": frechet_distance(features, reference),
        "class_counts": counts.tolist(),
    }


def batch1_latency(version: Path, inputs: dict[str, np.ndarray], calls: int) -> dict:
    rounds = in_fresh_process(version, {name: array[:1] for name, array in inputs.items()}, {1: calls})[1]
    ms = block_medians(rounds)
    ratio = ms["onnxruntime"] / ms["saved_model"]
    return {"median_ms": ms, "median_ms_rounds": rounds, "ort_vs_saved_model_batch1": ratio}


def generative_item(
    tmp: Path,
    quick: bool,
    classifier_cfg: ExperimentConfig,
    classifier_run: Path,
    experiments: tuple[str, ...] = EXPERIMENTS,
    overrides: list[str] | None = None,
) -> dict:
    """Trains and exports each of `experiments` in `tmp`; scores GAN samples with the classifier of `classifier_run`.
    `overrides`, where given, replace the training settings (shipped, or --quick's): the 45-minute bench's budget."""
    overrides = overrides if overrides is not None else QUICK_OVERRIDES if quick else []
    from kerasline.export import export_run

    classifier = task_for(classifier_cfg).export_model(classifier_run / "best.weights.h5")
    splits = task_for(classifier_cfg).load_splits()
    test_digits = np.stack([x for x, _ in splits.test.as_numpy_iterator()])
    other_digits = np.stack([x for x, _ in splits.validation.as_numpy_iterator()])
    scorer = feature_scorer(classifier)
    reference = np.asarray(scorer.predict(test_digits.astype(np.float32), verbose=0)[0])
    results = {"classifier_run": str(classifier_run), "real_digits": digit_scores(scorer, other_digits, reference)}
    redirect = [f"runs_dir={tmp / 'runs'}", f"export.dir={tmp / 'exports'}"]
    for name in experiments:
        print(f"    {name}", flush=True)
        cfg = load_experiment(name, [*redirect, *overrides])
        trained = train_default(cfg)
        version = export_run(cfg, trained["run_dir"])
        report = json.loads((version / "verification.json").read_text())
        task = task_for(cfg)
        inputs, splits = task.sample_inputs(), task.load_splits()
        train_count = int(splits.train.cardinality())
        row = {
            "wall_s": trained["wall_s"],
            "epochs_run": trained["epochs_run"],
            "samples_per_s": train_count / steady(trained["epoch_s"]),
            "parity_max_abs_diff": max(d for diffs in report["max_abs_diff"].values() for d in diffs.values()),
            "parity": report["max_abs_diff"],
            "test_metrics": trained["test_metrics"],
            **batch1_latency(version, inputs, 50 if quick else 200),
        }
        serve = tf.saved_model.load(str(version)).signatures["serving_default"]
        if "noise" in inputs:  # a generator: score its samples; an autoencoder: its reconstructions
            noise = fixed_noise(SAMPLES[quick], cfg.model.latent_dim, cfg.seed + 1)
            images = serve(noise=tf.constant(noise))["image"].numpy()
            row |= digit_scores(scorer, images, reference)
        else:
            held_out = np.stack([x for x, _ in splits.test.as_numpy_iterator()])
            errors = serve(image=tf.constant(held_out))["error"].numpy()
            row["test_reconstruction_mse"] = float(errors.mean())
        results[name] = row
    return results


def table_rows(results: dict) -> list[tuple[str, str, str, str]]:
    real = results["real_digits"]
    triple = "{confidence:.3f} | {class_entropy:.3f} | {frechet:.2f}"
    rows = [("9. real digits: confidence | class entropy | Fréchet", triple.format(**real), "", "")]
    for name in (name for name in EXPERIMENTS if name in results):
        row = results[name]
        if "frechet" in row:
            rows.append((f"9. {name}: confidence | class entropy | Fréchet", triple.format(**row), "", ""))
        else:
            rows.append((f"9. {name}: test reconstruction MSE", f"{row['test_reconstruction_mse']:.4f}", "", ""))
        speed = (
            f"{row['samples_per_s']:.0f} | {row['parity_max_abs_diff']:.1e} | {row['ort_vs_saved_model_batch1']:.3f}"
        )
        rows.append(("   samples/s | parity max abs diff | ORT / SavedModel batch 1", speed, "", ""))
    return rows


def figures(results: dict) -> list[Figure]:
    """Per experiment: the GAN's Fréchet distance beside the real digits' (and its confidence and class entropy),
    or the autoencoder's reconstruction MSE; export parity (no target: uint8 images differ by whole steps) and
    ONNX Runtime ÷ SavedModel at batch 1 (≤ 0.5)."""
    real, out = results["real_digits"], []
    for name in (name for name in EXPERIMENTS if name in results):
        row = results[name]
        if "frechet" in row:
            out += [
                Figure(f"generative {name}: Fréchet distance to test digits, generated vs real", row["frechet"], "",
                       baseline=real["frechet"]),
                Figure(f"generative {name}: classifier confidence", row["confidence"], ""),
                Figure(f"generative {name}: entropy of predicted classes (uniform 2.30)", row["class_entropy"], "nats"),
            ]  # fmt: skip
        else:
            out.append(Figure(f"generative {name}: test reconstruction MSE", row["test_reconstruction_mse"], ""))
        out += [
            Figure(f"generative {name}: export parity, max abs diff", row["parity_max_abs_diff"], "abs"),
            ort_figure(f"generative {name}", row["median_ms_rounds"], 1),
        ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generative", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"shrink everything ({' '.join(QUICK_OVERRIDES)})")
    parser.add_argument("--out", type=Path, help="JSON results (default: print only)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kerasline-bench-") as tmp:
        redirect = [f"runs_dir={tmp}/runs", f"export.dir={tmp}/exports"]
        classifier_cfg = load_experiment("mnist_cnn", [*redirect, *(CLASSIFIER_QUICK if args.quick else [])])
        print(f"[9] the digit classifier ({classifier_cfg.name})", flush=True)
        classifier_run = kerasline.training.fit.train(classifier_cfg).run_dir
        results = generative_item(Path(tmp), args.quick, classifier_cfg, classifier_run)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(format_table(table_rows(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
