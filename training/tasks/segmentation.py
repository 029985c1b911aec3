"""Segmentation: a class per pixel. Targets are masks of int class ids [B, H, W] moved with their images by the
joint augmentation; predictions are per-pixel probabilities [B, H, W, K]; losses use keras.ops only. TensorBoard
shows mask overlays; the export takes the whole image at data.image_shape and gives `probabilities` and `mask`."""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasline.config import UNetConfig
from kerasline.models.heads import PROBABILITIES
from kerasline.models.inference import InferenceModel
from kerasline.pipelines import Datasets
from kerasline.pipelines.segmentation import make_joint_augment, segmentation_splits
from kerasline.pipelines.sources import Shard, Splits
from kerasline.training.callbacks import EpochSummaries
from kerasline.training.report import ScoredBatches, distribution
from kerasline.training.tasks.base import PairAugment, Signature, Task, raw_input_function

PERCENTILES = (10, 50, 90)  # the report's spread of each class's per-image IoU and Dice
SMOOTH = 1.0  # Dice's additive smoothing: an empty class predicted empty scores a perfect 1, not 0/0
PALETTE = np.array(  # one colour per class, repeated past 8 classes
    [
        [0.9, 0.1, 0.1],
        [0.1, 0.8, 0.2],
        [0.2, 0.4, 1.0],
        [1.0, 0.8, 0.1],
        [0.8, 0.2, 0.9],
        [0.1, 0.9, 0.9],
        [1.0, 0.5, 0.0],
        [0.6, 0.6, 0.6],
    ],
    np.float32,
)


class Segmentation(Task):
    def load_splits(self, shard: Shard | None = None) -> Splits:
        return segmentation_splits(self.cfg.data, self.split_seed, shard)

    def augment(self) -> PairAugment:
        return make_joint_augment(self.cfg.data)

    def build_losses(self) -> keras.losses.Loss:
        return segmentation_loss(self.cfg.model, self.cfg.data.num_classes, self.cfg.training.label_smoothing)

    def build_metrics(self) -> list[keras.metrics.Metric]:
        return segmentation_metrics(self.cfg.data.num_classes)

    def visuals(self, log_dir: Path, data: Datasets) -> list[keras.callbacks.Callback]:
        overlays = MaskOverlays(log_dir / "validation", data.validation, self.cfg.data.num_classes)
        return [overlays, *super().visuals(log_dir, data)]

    def inference_model(self, model: keras.Model) -> keras.Model:
        """With model.tta or model.tile, an InferenceModel around `model`, compiled with the task's loss and
        metrics; else `model`."""
        unet = self.cfg.model
        if not unet.tta and unet.tile is None:
            return model
        with model.distribute_strategy.scope():
            tested = InferenceModel(model, unet.tta, unet.tile, unet.tile_margin)
            jit = self.cfg.training.jit_compile
            tested.compile(loss=self.build_losses(), metrics=self.build_metrics(), jit_compile=jit)
        return tested

    def signatures(self, model: keras.Model, onnx_model: keras.Model, run_dir: Path) -> dict[str, Signature]:
        """`image` uint8 [B, H, W, C] → `probabilities` float32 [B, H, W, K] and `mask` int64 [B, H, W], predicted as
        the test metrics are (inference_model: model.tta, model.tile). The U-Net takes any side that divides by
        2**depth; serving pins data.image_shape (one shape to batch)."""

        def outputs(y):
            return {PROBABILITIES: y, "mask": tf.argmax(y, axis=-1)}

        tested, shape = self.inference_model(model), tuple(self.cfg.data.image_shape)
        serve = raw_input_function(tested, self.cfg.data, outputs, image_shape=shape)
        return {"serving_default": Signature(serve, self.sample_inputs())}

    def test(self, model: keras.Model, test: tf.data.Dataset) -> tuple[dict[str, float], dict]:
        """The test metrics and segmentation_report of the test images' argmax masks, from one pass."""
        scored = ScoredBatches(model, test, self.build_losses(), self.build_metrics())
        matrices = [image_confusion(masks, outputs.argmax(-1), self.cfg.data.num_classes) for masks, outputs in scored]
        return scored.results(), segmentation_report(np.concatenate(matrices))

    def output_difference(self, name: str, got: np.ndarray, reference: dict[str, np.ndarray]) -> float:
        """An argmax over millions of pixels: where the top two probabilities lie within the tolerance of each
        other, runtimes that agree within it may fairly pick either class. The mask compares the decided pixels."""
        if name != "mask":
            return super().output_difference(name, got, reference)
        diff = np.abs(got.astype(np.float64) - reference[name].astype(np.float64))
        top_two = np.sort(reference[PROBABILITIES], axis=-1)[..., -2:]
        diff = diff[top_two[..., 1] - top_two[..., 0] > 2 * self.cfg.export.tolerance]
        return float(diff.max(initial=0.0))

    def readable(self, outputs: dict[str, np.ndarray], top_k: int = 1) -> list[dict]:
        """`mask`: each pixel's class as a grey PNG, as training reads masks (with two classes, class 1 is 255)."""
        num_classes = self.cfg.data.num_classes
        masks = outputs["mask"].astype(np.uint8 if num_classes <= 256 else np.uint16)
        if num_classes == 2:
            masks *= 255
        return [{"mask": mask} for mask in masks]


def image_confusion(masks: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel counts [N, K, K], one confusion matrix per image of true masks and predicted masks [N, H, W]."""
    pairs = masks.reshape(len(masks), -1).astype(np.int64) * num_classes + predicted.reshape(len(masks), -1)
    counts = [np.bincount(image, minlength=num_classes * num_classes) for image in pairs]
    return np.stack(counts).reshape(-1, num_classes, num_classes)


def overlap(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(IoU, Dice) per class [..., K] of confusion matrices [..., K, K]: TP / (TP + FP + FN) and
    2·TP / (2·TP + FP + FN), as mean_iou and dice count them; NaN where a class is in neither mask."""
    hits = np.diagonal(matrices, axis1=-2, axis2=-1).astype(np.float64)
    both = matrices.sum(-1) + matrices.sum(-2)  # 2·TP + FP + FN
    with np.errstate(invalid="ignore"):
        return hits / (both - hits), 2.0 * hits / both


def segmentation_report(matrices: np.ndarray) -> dict:
    """From per-image confusion matrices [N, K, K]: each class's IoU, Dice and pixel count over all the images,
    and the mean, std and percentiles of each class's IoU and Dice image by image (over the images where the class
    is in either mask)."""
    iou, dice = overlap(matrices.sum(0))
    image_iou, image_dice = overlap(matrices)
    pixels = matrices.sum((0, 2))
    classes = range(matrices.shape[-1])
    return {
        "per_class": {
            str(c): {"iou": _defined(iou[c]), "dice": _defined(dice[c]), "pixels": int(pixels[c])} for c in classes
        },
        "per_image_iou": {str(c): distribution(image_iou[:, c], PERCENTILES) for c in classes},
        "per_image_dice": {str(c): distribution(image_dice[:, c], PERCENTILES) for c in classes},
        "images": len(matrices),
    }


def _defined(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def segmentation_loss(cfg: UNetConfig, num_classes: int, label_smoothing: float = 0.0) -> keras.losses.Loss:
    """The configured loss, `(y_true [B, H, W], y_pred [B, H, W, K]) → [B]`: one value per example.
    `label_smoothing`: ε of each pixel's cross-entropy target (none in the dice loss)."""
    if cfg.loss == "boundary_ce":
        return PixelLoss(
            boundary_weighted_crossentropy,
            name="boundary_ce",
            num_classes=num_classes,
            weight=cfg.boundary_weight,
            width=cfg.boundary_width,
            label_smoothing=label_smoothing,
        )
    if cfg.loss == "dice":
        return PixelLoss(dice_loss, name="dice", num_classes=num_classes)
    functions = {"crossentropy": crossentropy, "ce_dice": crossentropy_plus_dice}
    return PixelLoss(functions[cfg.loss], name=cfg.loss, num_classes=num_classes, label_smoothing=label_smoothing)


class PixelLoss(keras.losses.Loss):
    """A loss function of (y_true, y_pred, **knobs), averaged over the batch like Keras's own losses."""

    def __init__(self, function, name: str, **knobs):
        super().__init__(name=name)
        self.function, self.knobs = function, knobs

    def call(self, y_true, y_pred):
        return self.function(y_true, y_pred, **self.knobs)


def crossentropy(y_true, y_pred, num_classes: int, label_smoothing: float = 0.0):
    """Per-pixel cross-entropy, averaged over each example's pixels."""
    return ops.mean(_pixel_crossentropy(y_true, y_pred, label_smoothing), axis=(1, 2))


def crossentropy_plus_dice(y_true, y_pred, num_classes: int, label_smoothing: float = 0.0):
    return crossentropy(y_true, y_pred, num_classes, label_smoothing) + dice_loss(y_true, y_pred, num_classes)


def dice_loss(y_true, y_pred, num_classes: int):
    """1 − soft Dice, averaged over classes, per example: 0 for a perfect prediction."""
    one_hot = ops.one_hot(ops.cast(y_true, "int32"), num_classes)
    intersection = ops.sum(one_hot * y_pred, axis=(1, 2))
    total = ops.sum(one_hot + y_pred, axis=(1, 2))
    return 1.0 - ops.mean((2.0 * intersection + SMOOTH) / (total + SMOOTH), axis=-1)


def boundary_weighted_crossentropy(
    y_true, y_pred, num_classes: int, weight: float, width: int, label_smoothing: float = 0.0
):
    """Cross-entropy where pixels within a `width`-pixel window of a class boundary count (1 + weight) times:
    the thin structures between regions (membranes, object outlines) are what a plain per-pixel loss neglects."""
    weights = 1.0 + weight * boundary_map(y_true, num_classes, width)
    ce = _pixel_crossentropy(y_true, y_pred, label_smoothing)
    return ops.sum(weights * ce, axis=(1, 2)) / ops.sum(weights, axis=(1, 2))


def boundary_map(y_true, num_classes: int, width: int):
    """1.0 where a width × width window holds more than one class, else 0.0: dilation minus erosion of each
    class's one-hot map, by max-pooling (the image edge is not a boundary)."""
    one_hot = ops.one_hot(ops.cast(y_true, "int32"), num_classes)
    dilated = ops.max_pool(one_hot, width, strides=1, padding="same")
    eroded = -ops.max_pool(-one_hot, width, strides=1, padding="same")
    return ops.max(dilated - eroded, axis=-1)


def _pixel_crossentropy(y_true, y_pred, label_smoothing: float = 0.0):
    if label_smoothing:  # Keras 3.15's sparse cross-entropy has no label smoothing: the categorical one has
        one_hot = ops.one_hot(ops.cast(y_true, "int32"), y_pred.shape[-1])
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=label_smoothing)
    return keras.losses.sparse_categorical_crossentropy(ops.cast(y_true, "int32"), y_pred)


class MeanDice(keras.metrics.MeanIoU):
    """Dice (F1) per class from the same streaming confusion matrix as mean IoU, 2·TP / (2·TP + FP + FN),
    averaged over the classes present in the labels or the predictions."""

    def result(self):
        cm = ops.cast(self.total_cm, "float32")
        true_positives = ops.diagonal(cm)
        denominator = ops.sum(cm, axis=0) + ops.sum(cm, axis=1)
        present = ops.cast(denominator > 0, "float32")
        dice = ops.where(denominator > 0, 2.0 * true_positives / ops.maximum(denominator, 1.0), 0.0)
        return ops.sum(dice) / ops.maximum(ops.sum(present), 1.0)


def segmentation_metrics(num_classes: int) -> list[keras.metrics.Metric]:
    """Pixel accuracy, mean IoU, mean Dice and each class's IoU, over the whole split (confusion matrices)."""
    return [
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        keras.metrics.MeanIoU(num_classes, name="mean_iou", sparse_y_pred=False),
        MeanDice(num_classes, name="dice", sparse_y_pred=False),
        *(
            keras.metrics.IoU(num_classes, target_class_ids=[c], name=f"iou_{c}", sparse_y_pred=False)
            for c in range(num_classes)
        ),
    ]


class MaskOverlays(EpochSummaries):
    """For a few validation images: the image, the true mask over it and the predicted mask over it, side by side
    (one colour per class), after epochs 1, 2, 4, 8, … and a fit's last (`sparse`)."""

    sparse = True

    def __init__(self, log_dir: Path, validation: tf.data.Dataset, num_classes: int, count: int = 3):
        super().__init__(log_dir)
        self.validation, self.num_classes, self.count = validation, num_classes, count

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        images, masks = next(iter(self.validation))
        self.images, self.masks = images[: self.count], masks[: self.count].numpy()
        self.predict = tf.function(lambda x: self.model(x, training=False))  # traced: a quarter faster than eager

    def summarise(self, epoch: int) -> None:
        predicted = np.asarray(self.predict(self.images)).argmax(-1)
        for i, (image, mask, guess) in enumerate(zip(self.images.numpy(), self.masks, predicted, strict=True)):
            panel = np.concatenate([overlay(image, None), overlay(image, mask), overlay(image, guess)], axis=1)
            tf.summary.image(f"segmentation/example{i}", panel[None], step=epoch)


def overlay(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """An image in [0, 255] (H, W, C) as RGB in [0, 1], half-blended with the class colours of `mask`."""
    rgb = np.broadcast_to(image[..., :3] / 255.0, (*image.shape[:2], 3)).astype(np.float32)
    if mask is None:
        return rgb
    return 0.5 * rgb + 0.5 * PALETTE[mask % len(PALETTE)]
