"""Model config classes → builders. A family's name is written once, in its config's `name` literal."""

from collections.abc import Callable
from typing import Any

import keras

from kerasline.config import (
    AutoencoderConfig,
    CNNConfig,
    ExperimentConfig,
    GANConfig,
    LeNetConfig,
    MLPConfig,
    PretrainedConfig,
    ResNetConfig,
    RNNConfig,
    TransformerConfig,
    UNetConfig,
    VAEConfig,
    ViTConfig,
    WideCNNConfig,
)
from kerasline.models.autoencoder import build_autoencoder
from kerasline.models.cnn import build_cnn
from kerasline.models.ensemble import build_ensemble
from kerasline.models.gan import build_generator
from kerasline.models.lenet import build_lenet
from kerasline.models.mlp import build_mlp
from kerasline.models.pretrained import build_pretrained
from kerasline.models.resnet import build_resnet
from kerasline.models.rnn import build_rnn
from kerasline.models.transformer import build_transformer, build_vit
from kerasline.models.unet import build_unet
from kerasline.models.wide_cnn import build_wide_cnn

Builder = Callable[..., keras.Model]  # (the family's config, DataConfig, what the data decides) → model

# Looked up by exact type: VAEConfig subclasses AutoencoderConfig.
BUILDERS: dict[type, Builder] = {
    CNNConfig: build_cnn,
    MLPConfig: build_mlp,
    LeNetConfig: build_lenet,
    WideCNNConfig: build_wide_cnn,
    ResNetConfig: build_resnet,
    PretrainedConfig: build_pretrained,
    RNNConfig: build_rnn,
    TransformerConfig: build_transformer,
    ViTConfig: build_vit,
    # What the export serves; the generation task (training/tasks/) pairs it with build_discriminator to train.
    GANConfig: build_generator,
    AutoencoderConfig: build_autoencoder,
    VAEConfig: build_autoencoder,
    UNetConfig: build_unet,
}


def build_model(cfg: ExperimentConfig, **from_data: Any) -> keras.Model:
    """The model of `cfg.model`'s family, for `cfg.data`'s inputs (for dcgan: the generator). `from_data`: what
    the data decides beyond the config, for the builders that take it (a csv's `table`). A deep ensemble of that
    model where `model.members` asks for one (models/ensemble.py)."""
    build = BUILDERS[type(cfg.model)]
    members = getattr(cfg.model, "members", 1)
    if members > 1:
        return build_ensemble(lambda: build(cfg.model, cfg.data, **from_data), members)
    return build(cfg.model, cfg.data, **from_data)
