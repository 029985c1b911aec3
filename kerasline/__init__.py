"""kerasline: experiment file → tf.data → Keras 3 → SavedModel + ONNX."""
