"""The serving function: raw uint8 pixels in, named float32 outputs out, always `training=False`."""

import keras
import tensorflow as tf


def serving_function(model: keras.Model) -> tf.types.experimental.GenericFunction:
    """`image` uint8 [B, H, W, C] → `probabilities` float32 [B, K], `class_id` int64 [B]."""

    @tf.function(input_signature=[tf.TensorSpec((None, *model.input_shape[1:]), tf.uint8, name="image")])
    def serve(image):
        probabilities = model(tf.cast(image, tf.float32), training=False)
        return {"probabilities": probabilities, "class_id": tf.argmax(probabilities, axis=-1)}

    return serve


def write_saved_model(model: keras.Model, serve: tf.types.experimental.GenericFunction, path: str) -> None:
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve)
    archive.write_out(path, verbose=False)


def write_onnx(serve: tf.types.experimental.GenericFunction, path: str, opset: int = 17) -> None:
    import onnx
    import tf2onnx

    tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=opset, output_path=path)
    # tf2onnx can write an invalid graph and only log it: the full check makes that an error.
    onnx.checker.check_model(onnx.load(path), full_check=True)
