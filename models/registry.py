"""Model names → builders."""

import keras

from kerasline.config import ExperimentConfig
from models.cnn import build_cnn

BUILDERS = {"cnn": build_cnn}


def build_model(cfg: ExperimentConfig) -> keras.Model:
    return BUILDERS[cfg.model.name](cfg.model, cfg.data)
