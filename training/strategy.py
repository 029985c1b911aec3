"""One factory for every `tf.distribute` strategy the config can name."""

import os

import tensorflow as tf


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
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}")


def _tpu_strategy(tpu: str) -> tf.distribute.Strategy:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
