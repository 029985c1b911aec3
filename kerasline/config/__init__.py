"""The experiment schema: every knob is declared once, with its default and its validation.

An experiment file is TOML with the sections below. `load_experiment` reads it, applies dotted
`key=value` overrides and validates the result; any mistake becomes one `ConfigError` line that
names the key, with a "did you mean" where a close match exists.

sections: data, training, export, bless, tune; families: the [model] section, one class per family;
experiment: the whole file and its checks across sections; loading: file and overrides in, TOML out;
messages: a validation error as one line; dotted: `a.b.c` keys into raw dicts.
"""

from kerasline.config.dotted import get_dotted, set_dotted
from kerasline.config.experiment import (
    GENERATIVE_TASKS,
    MAXIMISED_MONITORS,
    SEGMENTATION_MONITORS,
    ExperimentConfig,
    task_of,
)
from kerasline.config.families import (
    MODEL_CONFIGS,
    AutoencoderConfig,
    BatchNormKnob,
    CNNConfig,
    EncoderKnobs,
    GANConfig,
    LeNetConfig,
    MLPConfig,
    ModelConfig,
    PretrainedConfig,
    ResNetConfig,
    RNNConfig,
    TransformerConfig,
    UNetConfig,
    VAEConfig,
    ViTConfig,
    WideCNNConfig,
)
from kerasline.config.loading import apply_override, experiment_path, load_experiment, to_toml, validate
from kerasline.config.messages import did_you_mean
from kerasline.config.sections import (
    SAFE_NAME,
    AugmentConfig,
    BlessConfig,
    Boolean,
    Choice,
    ColumnConfig,
    DataConfig,
    ExportConfig,
    FineTuneConfig,
    FloatRange,
    IntRange,
    OptimizerConfig,
    ScheduleConfig,
    Section,
    SpaceEntry,
    TrainingConfig,
    TuneConfig,
)
from kerasline.errors import ConfigError  # callers catch it beside load_experiment and validate

__all__ = [
    "GENERATIVE_TASKS",
    "MAXIMISED_MONITORS",
    "MODEL_CONFIGS",
    "SAFE_NAME",
    "SEGMENTATION_MONITORS",
    "AugmentConfig",
    "AutoencoderConfig",
    "BatchNormKnob",
    "BlessConfig",
    "Boolean",
    "CNNConfig",
    "Choice",
    "ColumnConfig",
    "ConfigError",
    "DataConfig",
    "EncoderKnobs",
    "ExperimentConfig",
    "ExportConfig",
    "FineTuneConfig",
    "FloatRange",
    "GANConfig",
    "IntRange",
    "LeNetConfig",
    "MLPConfig",
    "PretrainedConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RNNConfig",
    "ResNetConfig",
    "ScheduleConfig",
    "Section",
    "SpaceEntry",
    "TrainingConfig",
    "TransformerConfig",
    "TuneConfig",
    "UNetConfig",
    "VAEConfig",
    "ViTConfig",
    "WideCNNConfig",
    "apply_override",
    "experiment_path",
    "did_you_mean",
    "get_dotted",
    "load_experiment",
    "set_dotted",
    "task_of",
    "to_toml",
    "validate",
]
