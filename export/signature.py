"""Writing an export's files: the SavedModel with the task's signatures, and ONNX files checked in full."""

import keras
import tensorflow as tf

from kerasline.errors import UserError
from kerasline.training.tasks import Signature


def write_saved_model(model: keras.Model, signatures: dict[str, Signature], path: str) -> None:
    """One SavedModel with every signature, tracking the model and any layer whose resources a signature's graph
    uses (a text lookup table). ExportArchive, not `model.export()`: the functions call the model with
    training=False, where Keras 3.15's export would leave augmentation and dropout layers in training mode."""
    archive = keras.export.ExportArchive()
    for layer in (model, *(r for s in signatures.values() for r in s.resources)):
        archive.track(layer)
    for name, signature in signatures.items():
        archive.add_endpoint(name, signature.function)
    archive.write_out(path, verbose=False)


def write_onnx(serve: tf.types.experimental.GenericFunction, path: str, opset: int = 17) -> None:
    import onnx
    import tf2onnx

    from kerasline.export.onnx_attention import untransposed_scores, without_zero_adds
    from kerasline.export.onnx_bag_of_words import drop_binary_bincount_unique, one_column_matmuls_as_sums
    from kerasline.export.onnx_softmax import clamp_softmax_inputs

    converted, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=opset)
    converted = one_column_matmuls_as_sums(drop_binary_bincount_unique(clamp_softmax_inputs(converted)))
    converted = without_zero_adds(untransposed_scores(converted))
    onnx.save(converted, path)
    # tf2onnx can write an invalid graph and only log it: the full check makes that an error.
    try:
        onnx.checker.check_model(onnx.load(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise UserError(f"ONNX export is invalid (opset {opset}): {str(e).strip().splitlines()[0]}") from None
