"""The batched datasets training consumes: cache → gather(seeded permutation) → augment → prefetch.

The training stream is a pure function of (seed, epoch, step): epoch e takes the cached training split in an order
of its own seed, batch g of it gathered from memory whole, and batch g is augmented with seed (seed, g). A run
resumed at any epoch and step therefore sees exactly the batches an uninterrupted run would have seen.

Under file sharding (`shard`, a `tf.distribute.InputContext`) each worker streams per-replica batches of its own
share of the training files, for `tf.distribute.Strategy.distribute_datasets_from_function`.
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import keras
import numpy as np
import tensorflow as tf

from kerasline.config import DataConfig, ExperimentConfig
from kerasline.pipelines.sources import Shard, Splits

# `augment(x, y, seed)` of a training batch: the task's (segmentation moves the mask with the image).
PairAugment = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]

ORDER_STREAM = 0x6F72  # "or": folded into (seed, epoch), so an epoch's order draws apart from the augmentation's seeds


@dataclass(frozen=True)
class Datasets:
    """Batches of (x, int32 labels [B]): x is float32 images [B, H, W, C] in [0, 255] or int32 token ids [B, L].
    Under mixup or CutMix, training batches carry float32 soft targets [B, K] instead (pipelines/mixing.py).
    Segmentation: (images, int32 masks [B, H, W]), training batches cropped to data.crop."""

    cfg: ExperimentConfig
    augment: PairAugment
    train_examples: tf.data.Dataset  # unbatched, cached
    validation: tf.data.Dataset
    test: tf.data.Dataset
    steps_per_epoch: int
    skipped: tuple[str, ...]  # bad records dropped under data.on_error = "skip"
    # What the export needs beside the weights, by file name: text's vocabulary.json, a table's columns.json.
    run_files: dict[str, str]
    shard: Shard | None = None  # file sharding: train_examples are this worker's share
    class_weights: tuple[float, ...] = ()  # training.class_weight: each training batch carries weights [B]

    @cached_property
    def train_arrays(self) -> tuple:
        """The training split whole (under file sharding this worker's share), as train_examples' structure of
        tensors [N, ...] in host memory."""
        # Per batch, one gather from these costs less than shuffle() and batch() spend on each example: digits_lenet's
        # augmented stream took 0.91 instead of 1.11 ms of CPU a batch of 128 (TF 2.21, 2026-12-07).
        with tf.device("/cpu:0"):
            return self.train_examples.batch(2**31 - 1).get_single_element()

    def train(self, first_epoch: int = 0, last_epoch: int | None = None, skip_steps: int = 0) -> tf.data.Dataset:
        """Epochs [first_epoch, last_epoch) back to back, starting `skip_steps` batches into the first."""
        cfg, shard = self.cfg, self.shard
        last_epoch = cfg.training.total_epochs if last_epoch is None else last_epoch
        workers, worker = (shard.num_input_pipelines, shard.input_pipeline_id) if shard else (1, 0)
        # Under file sharding every worker feeds its own replicas, and takes the same number of batches an
        # epoch, its share repeated as needed: shares differ by a few examples, and a worker that ran out first
        # would leave the others waiting in the all-reduce.
        local_replicas = shard.num_replicas_in_sync // workers if shard else 1
        batches_per_epoch = self.steps_per_epoch * local_replicas
        batch_size = shard.get_per_replica_batch_size(cfg.data.batch_size) if shard else cfg.data.batch_size

        run_seed = tf.constant(cfg.seed, tf.int64)
        examples = self.train_arrays
        count = int(tf.nest.flatten(examples)[0].shape[0])
        repeated = count * cfg.data.repeat  # an epoch's order: each example data.repeat times
        # An epoch ends with a short batch alone; under file sharding it is whole batches, the order wrapped round.
        positions = repeated if shard is None else batches_per_epoch * batch_size

        augment = self.augment
        first_step = first_epoch * batches_per_epoch + skip_steps * local_replicas

        def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
            seed = tf.random.experimental.stateless_fold_in(tf.stack([run_seed, epoch]), ORDER_STREAM)
            order = tf.random.experimental.stateless_shuffle(tf.range(repeated, dtype=tf.int64), seed) % count

            def batch(step: tf.Tensor) -> tuple:
                taken = tf.range(step * batch_size, tf.minimum((step + 1) * batch_size, positions))
                index = tf.gather(order, taken % repeated)
                x, y = tf.nest.map_structure(lambda column: tf.gather(column, index), examples)
                g = epoch * batches_per_epoch + step  # unique across workers, below
                return augment(x, y, tf.stack([run_seed, g * workers + worker]))

            steps = tf.data.Dataset.range(tf.maximum(first_step - epoch * batches_per_epoch, 0), batches_per_epoch)
            return steps.map(batch, num_parallel_calls=tf.data.AUTOTUNE)

        stream = tf.data.Dataset.range(first_epoch, last_epoch).flat_map(epoch_batches)
        if self.class_weights:
            weights = tf.constant(self.class_weights, tf.float32)
            stream = stream.map(lambda x, y: (x, y, example_weights(weights, y)))
        return stream.prefetch(tf.data.AUTOTUNE).with_options(_options(cfg))


def build_datasets(
    cfg: ExperimentConfig,
    load_splits: Callable[[Shard | None], Splits],
    augment: PairAugment,
    shard: Shard | None = None,
    run_files: dict[str, str] | None = None,
) -> Datasets:
    """The task's splits (`load_splits(shard)`) batched, the training stream augmented by the task's `augment`.
    `shard`: under file sharding on several workers, this worker's input context (training/workers.py).
    `run_files`: what the task saves with the run for its export (text adds its vocabulary here)."""
    splits = load_splits(shard)
    run_files = dict(run_files or {})
    if cfg.data.input == "text":
        # Every worker adapts on the whole training split, so all of them look words up alike.
        whole = load_splits(None).train if shard else splits.train
        vectorize = text_vectorizer(cfg.data, adapt_to=whole.map(lambda text, _: text))
        run_files["vocabulary.json"] = json.dumps([str(word) for word in vectorize.get_vocabulary()]) + "\n"
        tokenised = (_tokenised(ds, vectorize) for ds in (splits.train, splits.validation, splits.test))
        splits = Splits(*tokenised, splits.skipped, splits.train_size)
    train_examples = splits.train.cache()
    count = splits.train_size or int(train_examples.cardinality())
    if count < 0:  # a source of unknown length: count it once
        count = int(train_examples.reduce(0, lambda n, _: n + 1))
    return Datasets(
        cfg=cfg,
        augment=augment,
        train_examples=train_examples,
        validation=_eval_batches(splits.validation, cfg),
        test=_eval_batches(splits.test, cfg),
        steps_per_epoch=-(-count * cfg.data.repeat // cfg.data.batch_size),
        skipped=splits.skipped,
        run_files=run_files,
        shard=shard,
        class_weights=balanced_weights(train_examples, cfg.data.num_classes) if cfg.training.class_weight else (),
    )


def example_weights(weights: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Each example's class weight [B], of labels [B]; of soft targets [B, K] (mixup, CutMix) the mix of its
    classes' weights, Σ_k y_k·w_k: a mix of two examples weighs as much as they would, in the proportion it takes
    of each (and an unmixed one exactly its class's weight)."""
    return tf.linalg.matvec(y, weights) if y.shape.rank == 2 else tf.gather(weights, y)


def balanced_weights(examples: tf.data.Dataset, num_classes: int) -> tuple[float, ...]:
    """Each class's weight n / (K · n_k), scikit-learn's "balanced": every class adds the same total weight to a
    training epoch's loss. A class with no training example gets weight 0 (it has no loss to weigh)."""
    labels = np.concatenate([y for _, y in examples.batch(4096).as_numpy_iterator()])
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.divide(len(labels), num_classes * counts, out=np.zeros_like(counts), where=counts > 0)
    return tuple(float(w) for w in weights)


@dataclass(frozen=True)
class ReconstructionDatasets(Datasets):
    """Autoencoders: batches of (input, target) with the target the clean image in [0, 1] and the input the
    image in [0, 255], plus Gaussian noise of `noise_stddev` (a fraction of 255) when the model denoises (seeded
    per batch, like augmentation)."""

    noise_stddev: float = 0.0

    @classmethod
    def of(cls, data: Datasets, noise_stddev: float) -> "ReconstructionDatasets":
        fields = {name: getattr(data, name) for name in data.__dataclass_fields__}
        # Held-out batches get their own noise seeds, fixed, so validation losses compare across epochs.
        held_out = {"validation": 1 << 40, "test": 1 << 41}
        fields |= {split: _noisy_pairs(fields[split], data.cfg, noise_stddev, seed) for split, seed in held_out.items()}
        return cls(**fields, noise_stddev=noise_stddev)

    def train(self, first_epoch: int = 0, last_epoch: int | None = None, skip_steps: int = 0) -> tf.data.Dataset:
        first = first_epoch * self.steps_per_epoch + skip_steps
        return _noisy_pairs(super().train(first_epoch, last_epoch, skip_steps), self.cfg, self.noise_stddev, first)


def _noisy_pairs(
    batches: tf.data.Dataset, cfg: ExperimentConfig, noise_stddev: float, first_seed: int
) -> tf.data.Dataset:
    stddev = 255.0 * noise_stddev

    def pair(images, seed):
        clean = tf.cast(images, tf.float32)
        noisy = clean + stddev * tf.random.stateless_normal(tf.shape(clean), tf.stack([cfg.seed, seed]))
        return tf.clip_by_value(noisy, 0.0, 255.0) if stddev else clean, clean / 255.0

    seeds = tf.data.Dataset.counter(first_seed)
    pairs = tf.data.Dataset.zip(batches, seeds).map(lambda batch, seed: pair(batch[0], seed))
    return pairs.prefetch(tf.data.AUTOTUNE).with_options(_options(cfg))


def text_vectorizer(
    data: DataConfig, adapt_to: tf.data.Dataset | None = None, vocabulary: Sequence[str] | None = None
) -> keras.layers.TextVectorization:
    """Raw strings [B] → token ids [B, sequence_length] (0 pads, 1 is out-of-vocabulary). The vocabulary is
    adapted on the training split only, and travels with the run so the export can do the same lookup."""
    vectorize = keras.layers.TextVectorization(
        max_tokens=data.vocab_size,
        output_sequence_length=data.sequence_length,
        vocabulary=vocabulary,
        standardize=standardize_text,
    )
    if adapt_to is not None:
        vectorize.adapt(adapt_to.batch(1024))
    return vectorize


PUNCTUATION = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'  # Keras's default standardisation strips these


def standardize_text(text: tf.Tensor) -> tf.Tensor:
    """Keras's default (lowercase, strip punctuation), after replacing invalid UTF-8 with U+FFFD: scraped text
    has such bytes, and a vocabulary word made of them cannot be read back as text."""
    text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace")
    return tf.strings.regex_replace(tf.strings.lower(text), PUNCTUATION, "")


def _tokenised(ds: tf.data.Dataset, vectorize) -> tf.data.Dataset:
    return ds.batch(1024).map(lambda text, y: (tf.cast(vectorize(text), tf.int32), y)).unbatch()


def _eval_batches(ds: tf.data.Dataset, cfg: ExperimentConfig) -> tf.data.Dataset:
    batches = ds.cache().batch(cfg.data.batch_size)
    if cfg.data.input == "image":
        batches = batches.map(lambda x, y: (tf.cast(x, tf.float32), y))
    return batches.prefetch(tf.data.AUTOTUNE).with_options(_options(cfg))


def _options(cfg: ExperimentConfig) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = cfg.deterministic
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # tf.data's autotuning model thread (TF 2.21) can hold an iterator's deletion while it finishes a pass: the end
    # of 2 in 6 short transformer runs waited 8-9 s (2026-11-28). Without it, AUTOTUNE map parallelism is the core
    # count and AUTOTUNE prefetch buffers still grow on demand (prefetch's own, legacy, autotuner).
    options.autotune.enabled = False
    return options
