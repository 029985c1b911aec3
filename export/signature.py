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


def generator_functions(generator: keras.Model) -> dict[str, tf.types.experimental.GenericFunction]:
    """A GAN's generator: `noise` float32 [B, latent] → `image` uint8 [B, H, W, C]."""

    @tf.function(input_signature=[tf.TensorSpec((None, *generator.input_shape[1:]), tf.float32, name="noise")])
    def generate(noise):
        unit_range = generator(noise, training=False)
        return {"image": tf.cast(tf.round(tf.clip_by_value((unit_range + 1.0) * 127.5, 0.0, 255.0)), tf.uint8)}

    return {"serving_default": generate}


def autoencoder_functions(autoencoder: keras.Model) -> dict[str, tf.types.experimental.GenericFunction]:
    """An autoencoder's signatures. serving_default: `image` uint8 → `reconstruction` uint8 and `error` float32
    [B] (the mean squared error over pixels in [0, 1], the anomaly score); `encode`: `image` → `latent` float32
    (the VAE's mean); `decode`: `latent` → `image` uint8."""
    encoder, decoder = autoencoder.get_layer("encoder"), autoencoder.get_layer("decoder")
    image_spec = tf.TensorSpec((None, *autoencoder.input_shape[1:]), tf.uint8, name="image")

    def to_uint8(pixels):
        return tf.cast(tf.round(tf.clip_by_value(pixels * 255.0, 0.0, 255.0)), tf.uint8)

    def latent_of(image):
        latent = encoder(tf.cast(image, tf.float32), training=False)
        return latent[0] if isinstance(latent, list | tuple) else latent  # the VAE's mean

    @tf.function(input_signature=[image_spec])
    def reconstruct(image):
        pixels = decoder(latent_of(image), training=False)
        error = tf.reduce_mean(tf.square(pixels - tf.cast(image, tf.float32) / 255.0), axis=[1, 2, 3])
        return {"reconstruction": to_uint8(pixels), "error": error}

    @tf.function(input_signature=[image_spec])
    def encode(image):
        return {"latent": latent_of(image)}

    @tf.function(input_signature=[tf.TensorSpec((None, *decoder.input_shape[1:]), tf.float32, name="latent")])
    def decode(latent):
        return {"image": to_uint8(decoder(latent, training=False))}

    return {"serving_default": reconstruct, "encode": encode, "decode": decode}
