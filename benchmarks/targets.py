"""Item 16 of `make bench` (`--targets`, alone): issue #17's targets, each experiment trained as shipped (its own
seed, one run) and its test figure beside its baseline and its target.

- `mnist_best`, the most accurate digits classifier: test accuracy on the 1,000 test digits, beside the default
  experiment `mnist_cnn`'s.
- `imdb_nb_logreg`, the best text classifier here on validation: test accuracy on the 500 test reviews, and its
  lead over the bag-of-words baseline `imdb_bow_logreg`, trained alike.
- `isbi_unet`: test mean IoU on the 5 held-out slices.
- `digits_dcgan`: item 9's protocol on the GAN as shipped (`benchmarks/generative.py`): 1,000 digits from the
  exported generator on seeded noise, the Fréchet distance between `mnist_cnn`'s penultimate features of them and of
  the test digits, and the entropy of their predicted classes. The validation digits against the test digits are
  the reference. The `mnist_cnn` run above is the classifier.

Accuracy figures, not speed figures: each run's wall time is recorded, not judged. About 23 minutes on 2 AMD
EPYC Zen 5 cores (the GAN's 100 epochs are 8 of them), so the 45-minute whole run leaves it out.
`python -m benchmarks.run --targets [--quick]` writes results.json and this item's section of RESULTS.md.
"""

from pathlib import Path

from benchmarks import generative
from benchmarks.common import train_default
from benchmarks.figures import Figure
from kerasline.config import load_experiment

SECTION_BEGIN, SECTION_END = "<!-- targets: begin -->", "<!-- targets: end -->"  # its part of RESULTS.md
TEXT = "imdb_nb_logreg"  # chosen on validation loss over imdb_wide_deep (benchmarks/RESULTS.md)
CLASSIFIERS = ("mnist_cnn", "mnist_best", "imdb_bow_logreg", TEXT, "isbi_unet")
GAN = "digits_dcgan"
QUICK_OVERRIDES = {  # --quick: a check that the item runs, its figures not meaningful
    "isbi_unet": ["data.limit=8", "data.crop=64", "model.depth=2", "model.filters=4", "training.epochs=1"],
    GAN: generative.QUICK_OVERRIDES,
}
QUICK_DEFAULT = ["data.limit=600", "training.epochs=1"]
TARGETS = {  # issue #17's table
    "mnist_best": ">= 0.995",
    TEXT: ">= 0.86",
    "imdb_lead_points": ">= 3",
    "isbi_unet": ">= 0.82",
    "frechet": "<= 20",
    "class_entropy": ">= 2.2",
}


def overrides(name: str, quick: bool) -> list[str]:
    return QUICK_OVERRIDES.get(name, QUICK_DEFAULT) if quick else []


def targets_item(tmp: Path, quick: bool) -> dict:
    """Trains each experiment in `tmp` and reads its test metrics; then the GAN, exported and scored."""
    redirect = [f"runs_dir={tmp / 'runs'}", f"export.dir={tmp / 'exports'}"]
    results, configs = {}, {}
    for name in CLASSIFIERS:
        print(f"    {name}", flush=True)
        configs[name] = load_experiment(name, [*redirect, *overrides(name, quick)])
        trained = train_default(configs[name])
        results[name] = {key: trained[key] for key in ("run_dir", "wall_s", "epochs_run", "test_metrics")}
    gan = generative.generative_item(
        tmp, quick, configs["mnist_cnn"], results["mnist_cnn"]["run_dir"], (GAN,), overrides(GAN, quick)
    )
    return {**results, "real_digits": gan["real_digits"], GAN: gan[GAN]}


def figures(results: dict) -> list[Figure]:
    """Each target's figure (the ratio to a baseline where the issue names one, without a target)."""

    def test(name: str, metric: str = "accuracy") -> float:
        return results[name]["test_metrics"][metric]

    best, text, bag = test("mnist_best"), test(TEXT), test("imdb_bow_logreg")
    gan, real = results[GAN], results["real_digits"]
    return [
        Figure("targets mnist_best: test accuracy", best, "accuracy", target=TARGETS["mnist_best"]),
        Figure("targets mnist_best: test accuracy vs mnist_cnn", best, "accuracy", baseline=test("mnist_cnn")),
        Figure(f"targets {TEXT}: test accuracy", text, "accuracy", target=TARGETS[TEXT]),
        Figure(f"targets {TEXT}: test accuracy vs imdb_bow_logreg", text, "accuracy", baseline=bag),
        Figure(f"targets {TEXT}: lead over imdb_bow_logreg, points", 100 * (text - bag), "points",
               target=TARGETS["imdb_lead_points"]),
        Figure("targets isbi_unet: test mean IoU", test("isbi_unet", "mean_iou"), "IoU", target=TARGETS["isbi_unet"]),
        Figure(f"targets {GAN}: Fréchet distance to test digits", gan["frechet"], "", target=TARGETS["frechet"]),
        Figure("targets real digits: Fréchet distance, validation to test digits", real["frechet"], ""),
        Figure(f"targets {GAN}: entropy of predicted classes (uniform 2.30)", gan["class_entropy"], "nats",
               target=TARGETS["class_entropy"]),
    ]  # fmt: skip


def results_section(results: dict, started: str, cpu: str) -> str:
    """This item's part of RESULTS.md, between its markers."""
    rows = [
        f"| {f.name.removeprefix('targets ')} | {f.value:.4g} | "
        f"{'' if f.baseline is None else f'{f.baseline:.4g} (ratio {f.ratio:.3f})'} | {f.target or ''} | "
        f"{'' if f.met is None else '**met**' if f.met else 'not met'} |"
        for f in figures(results)
    ]
    walls = ", ".join(f"`{name}` {results[name]['wall_s'] / 60:.1f}" for name in (*CLASSIFIERS, GAN))
    lines = [
        SECTION_BEGIN,
        "## 16. Issue #17's targets (accuracy figures, one run of each experiment as shipped)",
        "",
        f"Measured by `make bench BENCH=--targets` (`python -m benchmarks.run --targets`), started {started} on "
        f"{cpu}; raw "
        "numbers in results.json. Each experiment trained by `kerasline.train` with its shipped seed; test figures "
        "of its best weights. The GAN: 1,000 exported samples scored by this item's `mnist_cnn` run. Minutes of "
        f"training and test: {walls}.",
        "",
        "| figure | value | baseline | target | |",
        "|---|---|---|---|---|",
        *rows,
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"
