"""Masked LSTMs and GRUs that tf2onnx turns into native ONNX `LSTM` and `GRU` nodes, not a `Loop` that runs hundreds
of small ops a step.

tf2onnx 1.17 recognises Keras 3's LSTM loop only without a mask: the masked loop (a `tf.where` on every output and
state) stays a `Loop` (tensorflow-onnx issue #1871; its fix, PR #2030, is unmerged and assumes post-padding). So the
ONNX export traces a copy of the model whose masked LSTMs and GRUs run unmasked over the kept steps packed together,
then put each output where the Keras layer gives it. That is the Keras layer's result for any mask, not only
post-padding: a masked step keeps the state and repeats the previous output (or zeros, as Bidirectional's layers
give), and a sequence with no kept step gives the zero initial state.

Keras 3's GRU stays a `Loop` even unmasked: its step slices the matmuls and adds the biases where tf2onnx's pattern
expects Split(BiasAdd(MatMul)) with the weights as loop inputs. So a GRU direction runs unmasked as a loop written
in that pattern over the layer's own weights (`_gru_steps`).
"""

import keras
import tensorflow as tf

from kerasline.training.init_from import weighted_layers


def for_onnx(model: keras.Model) -> keras.Model:
    """`model`, sharing its layers, with each LSTM or GRU layer, or Bidirectional of one, computed on packed steps,
    in nested models too (an ensemble's members); the model itself when it has none."""
    if not any(_packable(layer) for layer in weighted_layers(model)):
        return model
    return keras.models.clone_model(model, clone_function=_packed, recursive=True)


def _packed(layer: keras.layers.Layer) -> keras.layers.Layer:
    return PackedRNN(layer) if _packable(layer) else layer


def _packable(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, keras.layers.Bidirectional):
        return layer.merge_mode == "concat" and _plain_rnn(layer.forward_layer) and _plain_rnn(layer.backward_layer)
    return _plain_rnn(layer) and not layer.go_backwards


def _plain_rnn(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, keras.layers.GRU):  # the GRU models/rnn.py builds: the one _gru_steps computes
        cell = layer.cell
        plain_gru = cell.reset_after and cell.use_bias and cell.activation is keras.activations.tanh
        if not (plain_gru and cell.recurrent_activation is keras.activations.sigmoid):
            return False
    elif not isinstance(layer, keras.layers.LSTM):
        return False
    return not (layer.return_state or layer.stateful)


class PackedRNN(keras.layers.Layer):
    """An LSTM or GRU layer, or a Bidirectional of one, computed by unmasked copies of its directions. (B, L, D) and a
    mask (B, L) → what the layer gives: (B, L, U) or (B, U) per direction, concatenated."""

    def __init__(self, layer: keras.layers.Layer):
        super().__init__(name=layer.name, dtype=layer.dtype_policy)
        self.layer = layer
        self.directions = [layer.forward_layer, layer.backward_layer] if hasattr(layer, "forward_layer") else [layer]
        self.return_sequences = layer.return_sequences
        self.supports_masking = True
        self.unmasked = []

    def build(self, input_shape):
        for direction in self.directions:
            if isinstance(direction, keras.layers.GRU):
                self.unmasked.append(lambda x, gru=direction: _gru_steps(x, gru.cell, gru.go_backwards))
                continue
            # Every output and no mask: the loop tf2onnx recognises. Copies: the originals stay the Keras model's.
            copy = type(direction)(**direction.get_config() | {"return_sequences": True, "name": None})
            copy.build(input_shape)
            copy.set_weights(direction.get_weights())
            copy.use_cudnn = False  # tf2onnx cannot convert cuDNN's kernel
            self.unmasked.append(copy)

    def call(self, inputs, mask=None):
        if mask is None:
            return self.layer(inputs)
        mask = tf.cast(mask, tf.bool)
        keep = tf.cast(mask, tf.int32)
        kept = tf.reduce_sum(keep, axis=1, keepdims=True)
        before = tf.cumsum(keep, axis=1, exclusive=True)  # kept steps before each step
        length = tf.shape(inputs)[1]
        steps = tf.range(length)
        outputs = []
        for direction, unmasked in zip(self.directions, self.unmasked, strict=True):
            backward = direction.go_backwards
            # The kept steps, in order, where the direction starts (first going forward, last going backward), so its
            # loop meets them before any masked step. Sort keys: the step, plus the length for the steps that go last.
            # (Not tf.reverse_sequence of the forward packing: tf2onnx would fuse the two directions into one
            # bidirectional node that reverses whole sequences, padding included.)
            order = tf.argsort(tf.where(mask != backward, steps, steps + length))
            y = unmasked(tf.gather(inputs, order, batch_dims=1))  # y[:, k]: the output after k + 1 kept steps
            # A step's output is the one after the kept steps the direction has run by then; after none, the zero
            # initial state.
            done = before + keep if not backward else kept - before
            has_output = done > 0
            if direction.zero_output_for_mask:
                has_output &= mask
            y = tf.gather(y, tf.maximum(done - 1, 0), batch_dims=1)
            y = tf.where(has_output[..., None], y, tf.zeros_like(y))
            if not self.return_sequences:  # the output after the direction's last step
                y = y[:, 0] if backward else y[:, -1]
            outputs.append(y)
        return tf.concat(outputs, axis=-1) if len(outputs) > 1 else outputs[0]

    def compute_mask(self, inputs, mask=None):
        return mask if self.return_sequences else None

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


def _gru_steps(x: tf.Tensor, cell: keras.layers.GRUCell, go_backwards: bool) -> tf.Tensor:
    """A reset_after GRU's outputs (B, L, U) for every step of x (B, L, D), unmasked, in the loop tf2onnx's Keras GRU
    pattern recognises: the weights read before it (loop inputs, constants once frozen), Split(BiasAdd(MatMul)) per
    matmul, and the step's input read from and its output written to TensorArrays."""
    kernel, recurrent_kernel = tf.convert_to_tensor(cell.kernel), tf.convert_to_tensor(cell.recurrent_kernel)
    input_bias, recurrent_bias = tf.unstack(tf.convert_to_tensor(cell.bias))
    steps = tf.transpose(x, [1, 0, 2])
    if go_backwards:
        steps = tf.reverse(steps, [0])
    length = tf.shape(steps)[0]
    inputs = tf.TensorArray(x.dtype, size=length).unstack(steps)

    def step(t, h, outputs):
        x_z, x_r, x_h = tf.split(tf.nn.bias_add(tf.matmul(inputs.read(t), kernel), input_bias), 3, axis=-1)
        h_z, h_r, h_h = tf.split(tf.nn.bias_add(tf.matmul(h, recurrent_kernel), recurrent_bias), 3, axis=-1)
        z = tf.sigmoid(x_z + h_z)
        r = tf.sigmoid(x_r + h_r)
        h = z * h + (1 - z) * tf.tanh(x_h + r * h_h)
        return t + 1, h, outputs.write(t, h)

    h = tf.zeros([tf.shape(x)[0], cell.units], x.dtype)
    _, _, outputs = tf.while_loop(lambda t, *_: t < length, step, (0, h, tf.TensorArray(x.dtype, size=length)))
    return tf.transpose(outputs.stack(), [1, 0, 2])
