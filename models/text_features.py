"""What a bag of words sees in token ids: which words occur, and which hashed word bigrams (adjacent pairs); with
model.naive_bayes, each feature weighed by how much more often it occurs in one class than in the other."""

from collections.abc import Iterable

import keras
import numpy as np
from keras import layers, ops

from kerasline.config import DataConfig
from kerasline.config.families import SequenceModel

BIGRAM_PRIME = 1_000_003  # a prime above every bucket count: its residue mod N is coprime with N


class HashedBigrams(layers.Layer):
    """Each pair of adjacent token ids (a, b) as a bucket id: 1 + (a·P + b) mod N, for N `buckets` and the prime P;
    0 where a or b is padding (0). Computed in int32 with every product below N², so no id overflows.

    (B, L) int token ids → (B, L − 1) int32 bucket ids in [0, N].
    """

    def __init__(self, buckets: int, **kwargs):
        super().__init__(**kwargs)
        self.buckets = buckets

    def call(self, tokens):
        tokens = ops.cast(tokens, "int32")
        first, second = tokens[:, :-1], tokens[:, 1:]
        n = self.buckets
        hashed = ops.mod(ops.mod(first, n) * (BIGRAM_PRIME % n) + ops.mod(second, n), n)
        words = ops.logical_and(ops.not_equal(first, 0), ops.not_equal(second, 0))
        return ops.where(words, hashed + 1, ops.zeros_like(hashed))

    def get_config(self):
        return {**super().get_config(), "buckets": self.buckets}


class NaiveBayesWeights(layers.Layer):
    """Multiplies each binary feature by its log-count ratio between the two classes, r = log(p / ‖p‖₁) −
    log(q / ‖q‖₁), where p and q count the training examples of class 1 and of class 0 that have the feature, plus
    one (Wang & Manning, 2012, "Baselines and Bigrams", NBSVM's features). The ratios are statistics of the
    training split, set once by `adapt_naive_bayes` before training and saved with the weights. A linear classifier
    on top then needs only a small weight for a telling word (a large |r|), so weight decay or an L2 penalty holds
    back the weights of the uninformative words more than those of the telling ones.

    (B, F) → (B, F).
    """

    def build(self, input_shape):
        self.ratios = self.add_weight(shape=(input_shape[-1],), initializer="ones", trainable=False, name="ratios")

    def call(self, features):
        return features * ops.cast(self.ratios, features.dtype)

    def adapt(self, positive: np.ndarray, negative: np.ndarray) -> None:
        """positive, negative (F,): how many training examples of class 1 and of class 0 have each feature."""
        p, q = positive + 1.0, negative + 1.0
        self.ratios.assign((np.log(p / p.sum()) - np.log(q / q.sum())).astype("float32"))


def bag_of_words(
    tokens: keras.KerasTensor, vocab_size: int, bigram_buckets: int = 0, naive_bayes: bool = False
) -> keras.KerasTensor:
    """(B, L) int token ids, 0 = padding → (B, vocab_size − 1 + bigram_buckets) multi-hot: which words occur, then
    which bigram buckets (HashedBigrams), padding excluded from both; with `naive_bayes`, weighed by
    NaiveBayesWeights. A multi-hot count, not one-hot then max: 4x faster in ONNX Runtime."""
    bag = layers.CategoryEncoding(vocab_size, output_mode="multi_hot", name="bag_of_words")(tokens)[:, 1:]
    if bigram_buckets:
        pairs = HashedBigrams(bigram_buckets, name="bigrams")(tokens)
        bigrams = layers.CategoryEncoding(bigram_buckets + 1, output_mode="multi_hot", name="bag_of_bigrams")(pairs)
        bag = layers.Concatenate(name="bag")([bag, bigrams[:, 1:]])
    return NaiveBayesWeights(name="naive_bayes")(bag) if naive_bayes else bag


def adapt_naive_bayes(model: keras.Model, examples: Iterable[tuple[np.ndarray, np.ndarray]]) -> int:
    """Sets every NaiveBayesWeights layer of `model` (an ensemble's members' too) from `examples`, batches of
    (token ids (B, L), labels (B,) in {0, 1}) of the training split; returns how many layers it set."""
    found = [(owner, layer) for owner in _functional_models(model) for layer in owner.layers]
    found = [(owner, layer) for owner, layer in found if isinstance(layer, NaiveBayesWeights)]
    if not found:
        return 0
    features = [keras.Model(owner.inputs, layer.input) for owner, layer in found]
    counts = [[0.0, 0.0] for _ in found]
    for tokens, labels in examples:
        positive = np.asarray(labels).reshape(-1) == 1
        for feature, count in zip(features, counts, strict=True):
            bag = np.asarray(feature(tokens, training=False)) > 0
            count[0] = count[0] + bag[positive].sum(axis=0)
            count[1] = count[1] + bag[~positive].sum(axis=0)
    for (_, layer), (positive, negative) in zip(found, counts, strict=True):
        layer.adapt(np.asarray(positive, np.float64), np.asarray(negative, np.float64))
    return len(found)


def _functional_models(model: keras.Model) -> list[keras.Model]:
    """`model` and the models nested in it (an ensemble's members), each holding its own layers' graph."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return [model, *(inner for layer in nested for inner in _functional_models(layer))]


def wide_and_deep(
    deep: keras.KerasTensor, tokens: keras.KerasTensor, cfg: SequenceModel, data: DataConfig
) -> keras.KerasTensor:
    """A sequence model's summary (B, D) → (B, D + V − 1 + N): with cfg.bag_of_words, the bag of words of `tokens`
    beside it, so the classifier's logits are a linear model of the words (the wide part) plus one of the summary
    (the deep part), trained jointly as in Cheng et al. (2016); else the summary as it is."""
    if not cfg.bag_of_words:
        return deep
    bag = bag_of_words(tokens, data.vocab_size, cfg.bigram_buckets, cfg.naive_bayes)
    return layers.Concatenate(name="wide_and_deep")([deep, bag])
