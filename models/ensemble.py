"""A deep ensemble (Lakshminarayanan et al., 2017) in one model: `model.members` copies of a family's model, each
with its own initialisation and dropout, trained side by side on the same batches, each on its own loss as if it
trained alone; it predicts their mean. Averaging members trained jointly on the mean's loss instead lets them
collude, and ensembles worse (Jeffares et al., 2023)."""

from collections.abc import Callable

import keras
from keras import layers, ops


class Ensemble(keras.Model):
    """Inference (`training=False`): the members' mean output, the shape of one member's, [B, ...]. Training: the
    members' outputs stacked, [B, N, ...]: `compute_loss` is then the mean of the members' own losses, each with
    its own regularisers, so each member's gradient is the one it would have alone, divided by N (a scale Adam's
    steps do not see; SGD's do, and a global clipnorm sees all the members' gradients together), and
    `compute_metrics` scores the members' mean."""

    @property
    def members(self) -> list[keras.Model]:
        return [layer for layer in self.layers if isinstance(layer, keras.Model)]

    def call(self, inputs, training=None):
        if not training:
            return super().call(inputs, training=training)
        return ops.stack([member(inputs, training=True) for member in self.members], axis=1)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not self._stacked(y_pred):
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        loss, members = self.loss, y_pred.shape[1]
        if not isinstance(loss, keras.losses.Loss):  # a name or a function leaves the reduction to Keras's internals
            raise TypeError(f"compile an Ensemble with a keras.losses.Loss, as the tasks do, not {loss!r}")
        # The first member's loss as Keras computes it, so with every member's regularisers (once, and scaled for
        # tf.distribute as Keras scales them), then the others' losses.
        first = super().compute_loss(x, y, y_pred[:, 0], sample_weight, training)
        others = [loss(y, y_pred[:, i], sample_weight) for i in range(1, members)]
        return (first + sum(others)) / members

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if self._stacked(y_pred):
            y_pred = ops.mean(y_pred, axis=1)
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def _stacked(self, y_pred) -> bool:
        return len(y_pred.shape) == len(self.outputs[0].shape) + 1


def build_ensemble(build: Callable[[], keras.Model], members: int) -> Ensemble:
    """`members` models from `build()`, each built anew (so each draws its own initial weights), under one input
    named as theirs: x → mean of member_i(x), in float32 as every model's output is (models/heads.py)."""
    built = [build() for _ in range(members)]
    (spec,) = built[0].inputs
    inputs = keras.Input(shape=spec.shape[1:], dtype=spec.dtype, name=spec.name)
    outputs = [keras.Model(m.input, m.output, name=f"member{i}")(inputs) for i, m in enumerate(built)]
    mean = layers.Average(dtype="float32", name="mean")(outputs)
    return Ensemble(inputs, mean, name=f"{built[0].name}_ensemble")
