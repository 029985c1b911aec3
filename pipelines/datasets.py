"""The batched datasets training consumes: cache → shuffle(seeded) → batch → augment → prefetch."""

from dataclasses import dataclass

import tensorflow as tf

from kerasline.config import ExperimentConfig
from pipelines.augment import make_augment
from pipelines.sources import load_splits


@dataclass(frozen=True)
class Datasets:
    """Batches of (float32 images [B, H, W, C] in [0, 255], int32 labels [B])."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset


def build_datasets(cfg: ExperimentConfig) -> Datasets:
    splits = load_splits(cfg.data, cfg.seed)
    options = tf.data.Options()
    options.deterministic = cfg.deterministic
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA

    augment = make_augment(cfg.data.augment)
    train = (
        splits.train.cache()
        .shuffle(cfg.data.shuffle_buffer, seed=cfg.seed, reshuffle_each_iteration=True)
        .batch(cfg.data.batch_size)
    )
    # One seed pair per batch, a new sequence each epoch, the same sequence on every run.
    batch_seeds = tf.data.Dataset.random(seed=cfg.seed, rerandomize_each_iteration=True).batch(2)
    train = tf.data.Dataset.zip(train, batch_seeds).map(
        lambda batch, seed: (augment(tf.cast(batch[0], tf.float32), seed), batch[1]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return Datasets(
        train=train.prefetch(tf.data.AUTOTUNE).with_options(options),
        validation=_eval_batches(splits.validation, cfg).with_options(options),
        test=_eval_batches(splits.test, cfg).with_options(options),
    )


def _eval_batches(ds: tf.data.Dataset, cfg: ExperimentConfig) -> tf.data.Dataset:
    return (
        ds.cache().batch(cfg.data.batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y)).prefetch(tf.data.AUTOTUNE)
    )
