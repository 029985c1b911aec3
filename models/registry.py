"""Model names → builders."""

import keras

from kerasline.config import ExperimentConfig
from models.autoencoder import build_autoencoder
from models.cnn import build_cnn
from models.gan import build_dcgan
from models.lenet import build_lenet
from models.mlp import build_mlp
from models.resnet import build_resnet
from models.rnn import build_rnn
from models.transformer import build_transformer, build_vit
from models.unet import build_unet
from models.wide_cnn import build_wide_cnn

BUILDERS = {
    "cnn": build_cnn,
    "mlp": build_mlp,
    "lenet": build_lenet,
    "wide_cnn": build_wide_cnn,
    "resnet": build_resnet,
    "rnn": build_rnn,
    "transformer": build_transformer,
    "vit": build_vit,
    "dcgan": build_dcgan,
    "autoencoder": build_autoencoder,
    "vae": build_autoencoder,
    "unet": build_unet,
}


def build_model(cfg: ExperimentConfig) -> keras.Model:
    return BUILDERS[cfg.model.name](cfg.model, cfg.data)
