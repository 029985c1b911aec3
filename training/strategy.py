"""One factory for every `tf.distribute` strategy the config can name."""

import json
import os

import tensorflow as tf

from kerasline.errors import UserError


def make_strategy(name: str) -> tf.distribute.Strategy:
    """auto: TPU if one is configured (TPU_NAME), Mirrored on 2+ GPUs, else the default strategy.

    mirrored: every GPU, or, with none, every logical CPU device (how tests get 2 replicas).
    multi_worker: MultiWorkerMirroredStrategy, with the cluster read from TF_CONFIG.
    """
    if name == "auto":
        if os.environ.get("TPU_NAME"):
            return _tpu_strategy(os.environ["TPU_NAME"])
        if len(tf.config.list_logical_devices("GPU")) >= 2:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        _check_tf_config(os.environ.get("TF_CONFIG", ""))
        return _MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}")


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy as Keras 3.15's TensorFlow trainer calls it. Its multi-worker branch calls
    `reduce` in three ways TF's does not take: on a whole (x, y) batch (a nest) before fit, evaluate and predict;
    with axis=0 on every step's scalar loss and metrics; and without `axis`. Each is reduced as it is meant:
    tensor by tensor, and scalars across replicas only."""

    def reduce(self, reduce_op, value, axis=None):
        if tf.nest.is_nested(value):
            return tf.nest.map_structure(lambda v: self.reduce(reduce_op, v, axis), value)
        if axis is not None and self.experimental_local_results(value)[0].shape.rank == 0:
            axis = None
        return super().reduce(reduce_op, value, axis)


def _tpu_strategy(tpu: str) -> tf.distribute.Strategy:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _check_tf_config(text: str) -> None:
    """A wrong TF_CONFIG fails deep inside TF, or hangs: name what is wrong. Unset, the worker trains alone."""
    if not text:
        return
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        addresses = cluster[task["type"]]
        index = task["index"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(
            f'TF_CONFIG: expected {{"cluster": {{"worker": [...]}}, "task": {{"type": ..., "index": ...}}}}'
            f" ({type(e).__name__}: {e}); `kerasline cluster-spec` writes it"
        ) from None
    if not isinstance(index, int) or not 0 <= index < len(addresses):
        raise UserError(
            f"TF_CONFIG: task index {index!r} is not one of the {len(addresses)} {task['type']} address(es)"
        )
