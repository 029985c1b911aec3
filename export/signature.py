"""Serving functions: raw inputs in (uint8 pixels, int32 token ids or text), named float32 outputs out,
always `training=False`."""

import keras
import tensorflow as tf

from kerasline.config import DataConfig
from kerasline.errors import UserError


def serving_function(
    model: keras.Model, data: DataConfig, vectorize: keras.layers.TextVectorization | None = None
) -> tf.types.experimental.GenericFunction:
    """`image` uint8 [B, H, W, C], `tokens` int32 [B, L] or `text` string [B] (as data.input says)
    → `probabilities` float32 [B, K] and `class_id` int64 [B]; for a sigmoid head `probability` float32 [B]
    (of class 1) and `class_id`; for a linear head `value` float32 [B]; segmentation: `image` uint8 [B, H, W, C]
    → `probabilities` float32 [B, H, W, K], `mask` int64 [B, H, W], at data.image_shape."""
    head = model.layers[-1].name  # the builders name their output layer after what it gives
    top = "mask" if data.task == "segmentation" else "class_id"

    def outputs(x):
        y = model(x, training=False)
        if head == "probability":
            return {"probability": y[:, 0], "class_id": tf.cast(y[:, 0] > 0.5, tf.int64)}
        if head == "value":
            return {"value": y[:, 0]}
        return {"probabilities": y, top: tf.argmax(y, axis=-1)}

    if data.input == "image":
        # A U-Net takes any side that divides by 2**depth; serving pins data.image_shape (one shape to batch).
        image_shape = tuple(data.image_shape) if data.task == "segmentation" else model.input_shape[1:]

        @tf.function(input_signature=[tf.TensorSpec((None, *image_shape), tf.uint8, name="image")])
        def serve(image):
            return outputs(tf.cast(image, tf.float32))

    elif data.input == "tokens":

        @tf.function(input_signature=[tf.TensorSpec((None, data.sequence_length), tf.int32, name="tokens")])
        def serve(tokens):
            return outputs(tokens)

    else:  # the vocabulary lookup lives in the graph, so clients send plain strings

        @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name="text")])
        def serve(text):
            return outputs(tf.cast(vectorize(text), tf.int32))

    return serve


def write_saved_model(tracked: list, serve: tf.types.experimental.GenericFunction, path: str) -> None:
    """`tracked`: the model and any layer whose resources the graph uses (a text lookup table)."""
    archive = keras.export.ExportArchive()
    for layer in tracked:
        archive.track(layer)
    archive.add_endpoint("serving_default", serve)
    archive.write_out(path, verbose=False)


def write_onnx(serve: tf.types.experimental.GenericFunction, path: str, opset: int = 17) -> None:
    import onnx
    import tf2onnx

    tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=opset, output_path=path)
    # tf2onnx can write an invalid graph and only log it: the full check makes that an error.
    try:
        onnx.checker.check_model(onnx.load(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise UserError(f"ONNX export is invalid (opset {opset}): {str(e).strip().splitlines()[0]}") from None
