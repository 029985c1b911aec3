"""PyTorch references for the speed race (bench item 7): the same architectures as models/, in plain eager PyTorch.

Benchmark-only: torch is the optional `bench` extra, never imported by the project itself. Each builder takes the
experiment's config and returns a module with the same trainable-parameter count as our Keras model (a test checks
it). Inputs are what our pipeline feeds: images float32 [B, C, H, W] in [0, 255] (channels first, PyTorch's
layout), token ids int64 [B, L] padded with 0 at the end. Outputs are logits; the loss applies the softmax.
"""

import math

import torch
from torch import nn

from kerasline.config import CNNConfig, ExperimentConfig, RNNConfig, TransformerConfig


class ConvNet(nn.Module):
    """Our `cnn` family without BatchNorm (the keras-io convnet): [conv → ReLU] × n → max-pool per block."""

    def __init__(self, cfg: CNNConfig, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        height, width, channels = image_shape
        if cfg.batch_norm or cfg.l1 or cfg.l2:
            raise ValueError("the PyTorch reference covers the cnn family without batch_norm or regularisers")
        padding = 1 if cfg.padding == "same" else 0
        blocks = []
        for filters in cfg.filters:
            for _ in range(cfg.convs_per_block):
                blocks += [nn.Conv2d(channels, filters, 3, padding=padding), nn.ReLU()]
                channels = filters
                height, width = (height, width) if padding else (height - 2, width - 2)
            blocks.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        head: list[nn.Module] = [nn.Flatten(), nn.Dropout(cfg.dropout)]
        features = channels * height * width
        if cfg.dense_units:
            head += [nn.Linear(features, cfg.dense_units), nn.ReLU(), nn.Dropout(cfg.dropout)]
            features = cfg.dense_units
        self.layers = nn.Sequential(*blocks, *head, nn.Linear(features, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images / 255.0)


class BiRNN(nn.Module):
    """Embedding → (bidirectional) LSTM/GRU layers over the unpadded steps → last states, or the mean or max
    of the top layer's outputs over them → dropout → logits.

    Keras gives an LSTM one bias per gate, PyTorch two (b_ih, b_hh): b_hh is held at zero and frozen, so both
    train the same parameters. Keras masks every 0 id (so word dropout leaves holes); packing skips only the
    trailing padding, so here a dropped word is a zero embedding vector the cell still steps over.
    """

    def __init__(self, cfg: RNNConfig, vocab_size: int, num_classes: int):
        super().__init__()
        self.summary = cfg.summary
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=0)
        Cell = nn.LSTM if cfg.cell == "lstm" else nn.GRU
        self.rnn = Cell(
            cfg.embedding_dim, cfg.units, num_layers=cfg.layers, bidirectional=cfg.bidirectional, batch_first=True
        )
        for name, bias in self.rnn.named_parameters():
            if name.startswith("bias_hh"):
                nn.init.zeros_(bias)
                bias.requires_grad_(False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.logits = nn.Linear(cfg.units * (2 if cfg.bidirectional else 1), num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        nonzero = (tokens != 0).long()
        # the length of each review: up to its last non-padding id (at least 1, as packing requires)
        lengths = (nonzero * torch.arange(1, tokens.shape[1] + 1)).amax(1).clamp(min=1)
        embedded = self.embedding(tokens)
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        outputs, state = self.rnn(packed)
        if self.summary == "last":
            hidden = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c)
            directions = 2 if self.rnn.bidirectional else 1
            summary = hidden[-directions:].transpose(0, 1).reshape(tokens.shape[0], -1)  # top layer, both directions
        else:
            steps, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=tokens.shape[1])
            keep = (torch.arange(tokens.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)
            if self.summary == "mean":
                summary = (steps * keep).sum(1) / keep.sum(1)
            else:
                summary = steps.masked_fill(~keep, float("-inf")).amax(1)
        return self.logits(self.dropout(summary))


class TextTransformer(nn.Module):
    """Token + learned position embedding → dropout → post-LN encoder blocks (ReLU FFN) → masked mean → logits."""

    def __init__(self, cfg: TransformerConfig, vocab_size: int, sequence_length: int, num_classes: int):
        super().__init__()
        if cfg.position != "learned":
            raise ValueError("the PyTorch reference covers position = 'learned'")
        self.embedding = nn.Embedding(vocab_size, cfg.d_model)
        self.positions = nn.Parameter(torch.randn(sequence_length, cfg.d_model) * 0.05)
        self.dropout = nn.Dropout(cfg.dropout)
        block = nn.TransformerEncoderLayer(
            cfg.d_model, cfg.heads, cfg.ff_dim, cfg.dropout, activation="relu", batch_first=True, norm_first=False
        )
        self.encoder = nn.TransformerEncoder(block, cfg.layers, enable_nested_tensor=False)
        self.logits = nn.Linear(cfg.d_model, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        padding = tokens == 0
        x = self.dropout(self.embedding(tokens) + self.positions)
        x = self.encoder(x, src_key_padding_mask=padding)
        keep = (~padding).unsqueeze(-1).to(x.dtype)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return self.logits(self.dropout(pooled))


def build_torch_model(cfg: ExperimentConfig) -> nn.Module:
    """The PyTorch twin of `models.build_model(cfg)`, for the families the race covers."""
    data, model = cfg.data, cfg.model
    if model.name == "cnn":
        return ConvNet(model, data.image_shape, data.num_classes)
    if model.name == "rnn":
        return BiRNN(model, data.vocab_size, data.num_classes)
    if model.name == "transformer":
        return TextTransformer(model, data.vocab_size, data.sequence_length, data.num_classes)
    raise ValueError(f"no PyTorch reference for model.name = {model.name!r}")


def make_torch_optimizer(cfg: ExperimentConfig, module: nn.Module, steps_per_epoch: int):
    """The optimiser and per-step LR schedule of training/optim.py, for the configurations the race uses.

    Keras' Adam and AdamW default to epsilon 1e-7 and AdamW to weight decay 0.004; PyTorch's are 1e-8 and 0.01.
    """
    opt, schedule = cfg.training.optimizer, cfg.training.schedule
    params = [p for p in module.parameters() if p.requires_grad]
    if opt.name == "adam":
        optimizer = torch.optim.Adam(params, lr=opt.learning_rate, eps=1e-7)
    elif opt.name == "adamw":
        decay = 0.004 if opt.weight_decay is None else opt.weight_decay
        optimizer = torch.optim.AdamW(params, lr=opt.learning_rate, eps=1e-7, weight_decay=decay)
    else:
        raise ValueError(f"no PyTorch reference for training.optimizer.name = {opt.name!r}")
    if schedule.name == "constant":
        return optimizer, None
    if schedule.name != "cosine":
        raise ValueError(f"no PyTorch reference for training.schedule.name = {schedule.name!r}")
    warmup = round(schedule.warmup_epochs * steps_per_epoch)
    total = max(1, cfg.training.epochs * steps_per_epoch - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total) / total))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def trainable_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
