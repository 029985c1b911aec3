"""A recurrent text classifier: Embedding → (Bidirectional) LSTM or GRU layers → sequence summary → softmax;
with model.bag_of_words, the bag of words beside the summary (wide & deep)."""

import keras
from keras import layers

from kerasline.config import DataConfig, RNNConfig
from kerasline.models.blocks import MaskedPooling, classifier_head
from kerasline.models.text_features import wide_and_deep


def build_rnn(cfg: RNNConfig, data: DataConfig) -> keras.Model:
    """(B, L) int token ids, 0 = padding → (B, num_classes) class probabilities."""
    tokens = keras.Input(shape=(data.sequence_length,), dtype="int32", name="tokens")
    x = layers.Embedding(data.vocab_size, cfg.embedding_dim, mask_zero=True, name="embedding")(tokens)
    Cell = layers.LSTM if cfg.cell == "lstm" else layers.GRU
    for i in range(cfg.layers):
        last = i == cfg.layers - 1
        # The final layer returns its last state only when that is the summary; padding is masked throughout.
        recurrent = Cell(cfg.units, return_sequences=not last or cfg.summary != "last", name=f"{cfg.cell}{i}")
        x = layers.Bidirectional(recurrent, name=f"bidirectional{i}")(x) if cfg.bidirectional else recurrent(x)
    if cfg.summary != "last":
        x = MaskedPooling(cfg.summary, name=f"{cfg.summary}_pool")(x)
    x = wide_and_deep(x, tokens, cfg, data)
    return keras.Model(tokens, classifier_head(x, data.num_classes, cfg.dropout), name="rnn")
