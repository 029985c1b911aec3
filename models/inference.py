"""How a segmentation model predicts at test time, beyond one call on the whole image: test-time augmentation
over the 8 dihedral transforms, and the U-Net paper's overlap-tile strategy (Ronneberger et al., 2015, fig. 2).

Both wrap a `predict` function, (B, H, W, C) images → (B, H, W, K) per-pixel probabilities, for a fully
convolutional model: any H and W that divide by its total stride (a U-Net's 2**depth), which a 90° rotation keeps
although it swaps H and W. Tiling plans its windows from the static H and W, which the export's signature and the
evaluation splits give.
"""

import math
from collections.abc import Callable

import keras
from keras import ops

Predict = Callable[[object], object]

FLIPS = ((), (1,), (2,), (1, 2))  # none, upside down, left-right, both (a 180° rotation)


def dihedral_average(predict: Predict, images):
    """The mean of predict over the 8 symmetries of the square (flips and 90° rotations), each undone on its
    output: the 4 flips of the image, then the 4 flips of its transpose (a transpose then a flip is a 90°
    rotation). Two calls, each on 4 × B images: the transposed ones are W × H."""
    total = 0.0
    for transposed in (False, True):
        view = ops.transpose(images, (0, 2, 1, 3)) if transposed else images
        outputs = ops.split(predict(ops.concatenate([_flip(view, axes) for axes in FLIPS], axis=0)), 4, axis=0)
        undone = sum(_flip(out, axes) for out, axes in zip(outputs, FLIPS, strict=True))
        total += ops.transpose(undone, (0, 2, 1, 3)) if transposed else undone
    return total / 8.0


def _flip(x, axes: tuple[int, ...]):
    return ops.flip(x, axis=axes) if axes else x


def overlap_tiles(predict: Predict, images, tile: int, margin: int):
    """predict's output for images (B, H, W, C), made window by window: tile × tile windows whose centres,
    (tile − 2·margin) square, cover the image edge to edge; the rest of each window, `margin` pixels a side, is
    context, predicted and discarded. Past the image's border the windows see it mirrored. All windows go
    through predict in one batch; the centres are put back together and cut to H × W."""
    height, width = images.shape[1], images.shape[2]
    step = tile - 2 * margin
    rows, cols = math.ceil(height / step), math.ceil(width / step)
    # Reflection needs pads below the side: margin + (rows·step − H) < tile ≤ H, as the config checks.
    pads = [[0, 0], [margin, margin + rows * step - height], [margin, margin + cols * step - width], [0, 0]]
    padded = ops.pad(images, pads, mode="reflect")
    corners = [(r * step, c * step) for r in range(rows) for c in range(cols)]
    windows = [padded[:, top : top + tile, left : left + tile] for top, left in corners]
    centres = predict(ops.concatenate(windows, axis=0))[:, margin : margin + step, margin : margin + step]
    classes = centres.shape[-1]
    grid = ops.reshape(centres, (rows, cols, -1, step, step, classes))  # window (r, c) holds images r·cols + c
    whole = ops.reshape(ops.transpose(grid, (2, 0, 3, 1, 4, 5)), (-1, rows * step, cols * step, classes))
    return whole[:, :height, :width]


def at_test_time(model: keras.Model, tta: bool, tile: int | None, margin: int) -> Predict:
    """`model` in inference mode, its output averaged over the 8 dihedral transforms (tta) of each tile × tile
    window (tile) or of the whole image."""

    def once(images):
        return model(images, training=False)

    def augmented(images):
        return dihedral_average(once, images) if tta else once(images)

    if tile is None:
        return augmented
    return lambda images: overlap_tiles(augmented, images, tile, margin)


class InferenceModel(keras.Model):
    """A segmentation model as evaluation and the export run it (at_test_time): (B, H, W, C) → (B, H, W, K)
    probabilities. It holds no weights of its own: it calls `model`, whose weights the export saves."""

    def __init__(self, model: keras.Model, tta: bool, tile: int | None, margin: int, **kwargs):
        super().__init__(name=f"{model.name}_at_test_time", **kwargs)
        self.network = model
        self.predict_fn = at_test_time(model, tta, tile, margin)

    def call(self, images, training=False):
        return self.predict_fn(images)
