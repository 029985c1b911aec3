"""The experiment schema: every knob is declared once, with its default and its validation.

An experiment file is TOML with the sections below. `load_experiment` reads it, applies dotted
`key=value` overrides and validates the result; any mistake becomes one `ConfigError` line that
names the key, with a "did you mean" where a close match exists.
"""

import copy
import difflib
import functools
import operator
import re
import tomllib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, ValidationInfo, model_validator

from kerasline.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS_DIR = PROJECT_ROOT / "experiments"
SAFE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AugmentConfig(Section):
    """Training-split augmentation, applied per batch in the input pipeline. 0 turns a knob off."""

    rotation: float = Field(0.0, ge=0, le=0.5, description="max angle, as a fraction of a full turn")
    flip: Literal["none", "horizontal", "vertical", "both"] = "none"
    translation: float = Field(0.0, ge=0, lt=1, description="max shift, as a fraction of the side")
    zoom: float = Field(0.0, ge=0, lt=1, description="scale drawn from [1 - zoom, 1 + zoom]")
    contrast: float = Field(0.0, ge=0, lt=1, description="factor drawn from [1 - c, 1 + c]")
    brightness: float = Field(0.0, ge=0, le=1, description="max shift, as a fraction of 255")
    noise_stddev: float = Field(0.0, ge=0, le=1, description="Gaussian noise, as a fraction of 255")
    fill_mode: Literal["constant", "nearest", "reflect", "wrap"] = "constant"
    word_dropout: float = Field(0.0, ge=0, lt=1, description="tokens and text: fraction of tokens hidden as padding")

    def image_knobs(self) -> list[str]:
        """The image augmentations switched on."""
        knobs = ("rotation", "translation", "zoom", "contrast", "brightness", "noise_stddev")
        on = [knob for knob in knobs if getattr(self, knob)]
        return on + (["flip"] if self.flip != "none" else [])


Side = Annotated[int, Field(ge=1, le=4096)]
Width = Annotated[int, Field(ge=1, le=4096)]


class DataConfig(Section):
    source: Literal["samples", "tfds", "folder"] = "samples"
    input: Literal["image", "tokens", "text"] = Field(
        "image", description="what the model and its export take: uint8 pixels, int token ids or raw strings"
    )
    task: Literal["classification", "segmentation"] = Field(
        "classification", description="segmentation: the targets are masks int32 [H, W] of class ids, not labels"
    )
    name: str = Field(
        "mnist_8k",
        description="samples: a file stem in data/ or a .npz path; tfds: a dataset name; "
        "folder: a directory with one sub-folder per class",
    )
    image_shape: tuple[Side, Side, Annotated[int, Field(ge=1, le=4)]] = (28, 28, 1)
    sequence_length: int = Field(256, ge=1, le=100_000, description="tokens and text: padded or cut to this")
    vocab_size: int = Field(
        500, ge=3, le=1_000_000, description="tokens: ids lie below it, 0 pads; text: the vocabulary's size"
    )
    target: Literal["class", "value"] = Field(
        "class", description="class: integer labels in [0, num_classes); value: a real number (regression, mlp)"
    )
    num_classes: int = Field(10, ge=2, le=100_000)
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.125, gt=0, lt=0.5, description="samples and folder sources")
    limit: PositiveInt | None = Field(
        None, description="image samples and folder: use N examples, then split; tokens and tfds: at most N per split"
    )
    batch_size: int = Field(128, ge=1, le=65_536, description="global batch, split across replicas")
    shard: Literal["data", "file"] = Field(
        "data",
        description="multi-worker: data = each worker reads the whole source and keeps its share of the batches; "
        "file = each worker reads only its share of the training files (tfds and folder sources)",
    )
    crop: Side | None = Field(None, description="segmentation: train on random square crops of this side")
    shuffle_buffer: int = Field(10_000, ge=1, le=10_000_000)
    on_error: Literal["raise", "skip"] = Field("raise", description="skip: drop bad records and report them")
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="after")
    def _shards_need_files(self) -> "DataConfig":
        if self.shard == "file" and self.source == "samples":
            raise ValueError("data.shard: 'file' needs a source of many files (tfds or folder); samples is one file")
        return self


Initializer = Literal["glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal"]


class ImageModel(Section):
    """A family that takes `image` input; `min_side` is the smallest image side it fits."""

    inputs: ClassVar[tuple[str, ...]] = ("image",)
    task: ClassVar[str] = "classification"
    size_key: ClassVar[str] = "model.name"  # the key that sets min_side, for the error message

    def min_side(self) -> int:
        return 1

    def data_problem(self, data: "DataConfig") -> str | None:
        need, side = self.min_side(), min(data.image_shape[:2])
        if need > side:
            return (
                f"{self.size_key}: {self.name} as configured needs images of at least {need}x{need}, "
                f"but data.image_shape is {list(data.image_shape)}"
            )
        return None


class SequenceModel(Section):
    """A family that takes token ids (or text, vectorised inside the exported graph)."""

    inputs: ClassVar[tuple[str, ...]] = ("tokens", "text")
    task: ClassVar[str] = "classification"

    def data_problem(self, data: "DataConfig") -> str | None:
        return None


class BatchNormKnob(Section):
    """Families with BatchNorm layers."""

    sync_batch_norm: bool = Field(
        True,
        description="statistics over the global batch, as one device has them; false: per replica, "
        "which saves 3 all-reduces per BatchNorm layer a step under a multi-replica strategy",
    )


class CNNConfig(BatchNormKnob, ImageModel):
    """A VGG-style stack: blocks of 3×3 convs, each block ending in 2×2 max-pooling."""

    default_space: ClassVar[dict] = {  # what `kerasline tune` searches when [tune.space] is empty
        "training.optimizer.learning_rate": {"type": "float", "min": 3e-4, "max": 5e-3, "sampling": "log"},
        "model.dropout": {"type": "float", "min": 0.1, "max": 0.5},
        "model.dense_units": {"type": "int", "min": 64, "max": 256, "step": 64},
        "data.augment.translation": {"type": "float", "min": 0.0, "max": 0.15},
    }

    name: Literal["cnn"] = "cnn"
    filters: tuple[Width, ...] = Field((32, 64), min_length=1, max_length=8)
    convs_per_block: int = Field(2, ge=1, le=8)
    batch_norm: bool = True
    padding: Literal["same", "valid"] = Field("same", description="valid: each conv trims a pixel per edge")
    dense_units: int = Field(128, ge=0, le=65_536, description="0: no hidden dense layer (the keras-io convnet)")
    dropout: float = Field(0.3, ge=0, lt=1)
    initializer: Initializer = "he_normal"
    l1: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)

    size_key: ClassVar[str] = "model.filters"

    def min_side(self) -> int:
        side = 1
        for _ in self.filters:  # back from a 1×1 output: each pool halves the side, each valid conv trims 2
            side = 2 * side + (2 * self.convs_per_block if self.padding == "valid" else 0)
        return side


class MLPConfig(ImageModel):
    """Dense layers on the flattened pixels, or on a bag of words (multi-hot token ids). The course's MNIST
    MLP is hidden_units = [64, 32]; no hidden units and a sigmoid head is logistic regression."""

    default_space: ClassVar[dict] = {
        "training.optimizer.learning_rate": {"type": "float", "min": 1e-3, "max": 1e-1, "sampling": "log"},
        "model.dropout": {"type": "float", "min": 0.0, "max": 0.5},
        "model.activation": {"type": "choice", "values": ["relu", "elu", "swish"]},
    }

    inputs: ClassVar[tuple[str, ...]] = ("image", "tokens", "text")

    name: Literal["mlp"]
    hidden_units: tuple[Width, ...] = Field((64, 32), max_length=16)
    head: Literal["softmax", "sigmoid", "linear"] = Field(
        "softmax", description="softmax: K classes; sigmoid: 2 classes, one probability; linear: a value"
    )
    activation: Literal["relu", "leaky_relu", "elu", "swish", "tanh", "sigmoid"] = "relu"
    dropout: float = Field(0.0, ge=0, lt=1)
    initializer: Initializer = "glorot_uniform"
    l2: float = Field(0.0, ge=0)


class LeNetConfig(ImageModel):
    """LeNet-style: 5×5 convs to 6 and 16 channels, each then 2×2 max-pooling; dense 120 → 84 → classes."""

    default_space: ClassVar[dict] = {
        "training.optimizer.learning_rate": {"type": "float", "min": 3e-4, "max": 1e-2, "sampling": "log"},
    }

    name: Literal["lenet"]
    activation: Literal["relu", "tanh"] = "relu"

    def min_side(self) -> int:
        return 16  # two valid 5×5 convs, each followed by a 2×2 pool, leave at least 1×1


class WideCNNConfig(BatchNormKnob, ImageModel):
    """Six 3×3 convs (32, 64, 128, 128, 256, 256), BatchNorm after the 1st, 3rd and 5th, a max-pool after
    every second; dropout; dense 1024 → 512 → classes."""

    default_space: ClassVar[dict] = {
        "training.optimizer.learning_rate": {"type": "float", "min": 3e-4, "max": 5e-3, "sampling": "log"},
        "model.dropout": {"type": "float", "min": 0.0, "max": 0.3},
    }

    name: Literal["wide_cnn"]
    dropout: float = Field(0.05, ge=0, lt=1)

    def min_side(self) -> int:
        return 8


class ResNetConfig(BatchNormKnob, ImageModel):
    """A small ResNet: a 3×3 stem, stages of basic residual blocks (the first of each later stage halves
    the side and doubles the width), global average pooling, a dense classifier."""

    default_space: ClassVar[dict] = {
        "training.optimizer.learning_rate": {"type": "float", "min": 3e-4, "max": 5e-3, "sampling": "log"},
        "model.width": {"type": "choice", "values": [8, 16, 32]},
    }

    name: Literal["resnet"]
    stages: tuple[Annotated[int, Field(ge=1, le=16)], ...] = Field((2, 2, 2), min_length=1, max_length=6)
    width: int = Field(16, ge=1, le=1024, description="filters of the first stage")
    l2: float = Field(0.0, ge=0)

    size_key: ClassVar[str] = "model.stages"

    def min_side(self) -> int:
        return 2 ** (len(self.stages) - 1)


class RNNConfig(SequenceModel):
    """Embedding → (Bidirectional) LSTM or GRU layers → a summary of the sequence → softmax."""

    default_space: ClassVar[dict] = {
        "training.optimizer.learning_rate": {"type": "float", "min": 3e-4, "max": 1e-2, "sampling": "log"},
        "model.units": {"type": "choice", "values": [32, 64, 128]},
        "model.summary": {"type": "choice", "values": ["last", "mean", "max"]},
    }

    name: Literal["rnn"]
    cell: Literal["lstm", "gru"] = "lstm"
    embedding_dim: int = Field(64, ge=1, le=4096)
    units: int = Field(64, ge=1, le=4096)
    layers: int = Field(1, ge=1, le=8, description="stacked recurrent layers")
    bidirectional: bool = True
    summary: Literal["last", "mean", "max"] = Field("last", description="last state, or pooling over the steps")
    dropout: float = Field(0.2, ge=0, lt=1)


class EncoderKnobs(Section):
    """A stack of Transformer encoder blocks (Vaswani et al., 2017): self-attention and a feed-forward
    network, each with a residual connection and LayerNorm."""

    d_model: int = Field(64, ge=2, le=4096)
    heads: int = Field(4, ge=1, le=64)
    layers: int = Field(2, ge=1, le=24)
    ff_dim: int = Field(128, ge=1, le=16_384)
    dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "EncoderKnobs":
        if self.d_model % self.heads:
            raise ValueError(f"model.heads: {self.heads} heads do not divide d_model {self.d_model}")
        return self


class TransformerConfig(EncoderKnobs, SequenceModel):
    """A Transformer encoder text classifier: token + position embedding, encoder blocks, mean pooling."""

    default_space: ClassVar[dict] = {
        "training.optimizer.learning_rate": {"type": "float", "min": 1e-4, "max": 3e-3, "sampling": "log"},
        "model.layers": {"type": "int", "min": 1, "max": 3},
        "model.dropout": {"type": "float", "min": 0.0, "max": 0.3},
    }

    name: Literal["transformer"]
    position: Literal["learned", "sinusoidal"] = "learned"


class ViTConfig(EncoderKnobs, ImageModel):
    """A Vision Transformer (Dosovitskiy et al., 2021): non-overlapping patches, linearly embedded, plus
    learned positions, through encoder blocks, mean pooled."""

    default_space: ClassVar[dict] = {
        "training.optimizer.learning_rate": {"type": "float", "min": 1e-4, "max": 3e-3, "sampling": "log"},
        "model.layers": {"type": "int", "min": 1, "max": 4},
    }

    name: Literal["vit"]
    patch_size: int = Field(4, ge=1, le=512)

    def data_problem(self, data: "DataConfig") -> str | None:
        height, width, _ = data.image_shape
        if height % self.patch_size or width % self.patch_size:
            return (
                f"model.patch_size: {self.patch_size} does not tile data.image_shape {list(data.image_shape)}; "
                "use a divisor of both sides"
            )
        return None


class GANConfig(ImageModel):
    """A DCGAN (Radford et al., 2016): a transposed-conv generator from Gaussian noise and a strided-conv
    discriminator, trained by alternating updates. loss = "wgan_gp" makes the discriminator a critic with
    the gradient penalty of Gulrajani et al. (2017). Both nets use Adam at training.optimizer.learning_rate."""

    task: ClassVar[str] = "generate"
    default_space: ClassVar[dict] = {
        "training.optimizer.learning_rate": {"type": "float", "min": 5e-5, "max": 5e-4, "sampling": "log"},
    }

    name: Literal["dcgan"]
    latent_dim: int = Field(64, ge=1, le=4096)
    filters: int = Field(64, ge=1, le=1024, description="the discriminator's first conv; the generator mirrors it")
    loss: Literal["bce", "wgan_gp"] = Field("bce", description="bce: non-saturating; wgan_gp: critic + penalty")
    gp_weight: float = Field(10.0, ge=0, description="wgan_gp: the penalty's lambda")
    critic_steps: int = Field(1, ge=1, le=20, description="discriminator updates per generator update")
    beta_1: float = Field(0.5, ge=0, lt=1, description="both Adam optimizers' first-moment decay")
    beta_2: float = Field(0.999, gt=0, lt=1, description="both Adam optimizers' second-moment decay")

    def data_problem(self, data: "DataConfig") -> str | None:
        if tuple(data.image_shape[:2]) != (28, 28):
            return f"model.name: dcgan generates 28x28 images, but data.image_shape is {list(data.image_shape)}"
        return None


class AutoencoderConfig(ImageModel):
    """An autoencoder: image → latent → image, trained on the pixel MSE; denoise_stddev > 0 makes it a
    denoising autoencoder (Gaussian noise on the input in the pipeline, the clean image as target)."""

    task: ClassVar[str] = "reconstruct"
    default_space: ClassVar[dict] = {
        "training.optimizer.learning_rate": {"type": "float", "min": 3e-4, "max": 3e-3, "sampling": "log"},
    }

    name: Literal["autoencoder"]
    kind: Literal["dense", "conv"] = "dense"
    latent_dim: int = Field(32, ge=1, le=4096)
    hidden_units: tuple[Width, ...] = Field((256, 128), min_length=1, max_length=8, description="dense")
    filters: tuple[Width, ...] = Field((32, 64), min_length=1, max_length=4, description="conv: stride-2 convs")
    denoise_stddev: float = Field(0.0, ge=0, le=1, description="input noise, as a fraction of 255; 0: off")

    def data_problem(self, data: "DataConfig") -> str | None:
        side = 2 ** len(self.filters)
        if self.kind == "conv" and any(s % side for s in data.image_shape[:2]):
            return f"model.filters: {len(self.filters)} stride-2 convs need sides divisible by {side}"
        return None


class VAEConfig(AutoencoderConfig):
    """A variational autoencoder (Kingma & Welling, 2014): the encoder gives a Gaussian's mean and
    log-variance, z = mean + exp(log_var / 2)·eps (the reparameterisation trick), and the loss is the summed
    pixel cross-entropy plus kl_weight × KL(q(z|x) ‖ N(0, I))."""

    name: Literal["vae"]
    latent_dim: int = Field(8, ge=1, le=4096)
    kl_weight: float = Field(1.0, ge=0, description="beta: 1 is the evidence lower bound")


class UNetConfig(BatchNormKnob, ImageModel):
    """A U-Net (Ronneberger et al., 2015): an encoder of conv blocks and 2×2 max-pools, a decoder that upsamples
    and concatenates the encoder's block at the same scale (the skip), then a per-pixel softmax."""

    default_space: ClassVar[dict] = {
        "training.optimizer.learning_rate": {"type": "float", "min": 3e-4, "max": 3e-3, "sampling": "log"},
        "model.filters": {"type": "choice", "values": [8, 16, 32]},
    }

    task: ClassVar[str] = "segmentation"
    name: Literal["unet"]
    depth: int = Field(4, ge=1, le=8, description="2×2 poolings; image sides and data.crop divide by 2**depth")
    filters: int = Field(16, ge=1, le=1024, description="filters of the first block, doubled at every depth")
    decoder: Literal["transposed", "upsampling"] = Field(
        "transposed", description="2×2 stride-2 transposed conv, or bilinear upsampling then a 3×3 conv"
    )
    batch_norm: bool = True
    dropout: float = Field(0.0, ge=0, lt=1, description="before the bottleneck's convs")
    loss: Literal["crossentropy", "dice", "ce_dice", "boundary_ce"] = Field(
        "crossentropy", description="boundary_ce: cross-entropy weighted up near mask boundaries (shape-aware)"
    )
    boundary_weight: float = Field(5.0, ge=0, le=1000, description="boundary_ce: extra weight of boundary pixels")
    boundary_width: int = Field(3, ge=1, le=63, description="boundary_ce: pixels within this window of a boundary")

    def data_problem(self, data: "DataConfig") -> str | None:
        step = 2**self.depth
        if data.image_shape[0] % step or data.image_shape[1] % step:
            return (
                f"data.image_shape: {list(data.image_shape)} does not divide by 2**model.depth = {step}; "
                "use sides that do, or a smaller model.depth"
            )
        if data.crop is not None and data.crop % step:
            return f"data.crop: {data.crop} does not divide by 2**model.depth = {step}"
        return None


MODEL_CONFIGS = {
    "cnn": CNNConfig,
    "mlp": MLPConfig,
    "lenet": LeNetConfig,
    "wide_cnn": WideCNNConfig,
    "resnet": ResNetConfig,
    "rnn": RNNConfig,
    "transformer": TransformerConfig,
    "vit": ViTConfig,
    "dcgan": GANConfig,
    "autoencoder": AutoencoderConfig,
    "vae": VAEConfig,
    "unet": UNetConfig,
}
ModelConfig = Annotated[functools.reduce(operator.or_, MODEL_CONFIGS.values()), Field(discriminator="name")]


class OptimizerConfig(Section):
    name: Literal["sgd", "rmsprop", "adagrad", "adam", "adamw"] = "adam"
    learning_rate: float = Field(1e-3, gt=0, le=10)
    momentum: float = Field(0.0, ge=0, lt=1, description="sgd and rmsprop")
    nesterov: bool = Field(False, description="sgd")
    weight_decay: float | None = Field(None, ge=0, description="None: the optimizer's default")
    clipnorm: float | None = Field(None, gt=0, description="clip gradients by global norm")


class ScheduleConfig(Section):
    name: Literal["constant", "step", "exponential", "cosine", "plateau"] = "constant"
    decay_rate: float = Field(0.1, gt=0, lt=1, description="step, exponential and plateau")
    decay_epochs: float = Field(10.0, gt=0, description="step and exponential")
    warmup_epochs: float = Field(0.0, ge=0, description="cosine")
    patience: int = Field(2, ge=1, le=10_000, description="plateau")


class TrainingConfig(Section):
    epochs: int = Field(20, ge=1, le=10_000)
    strategy: Literal["auto", "one_device", "mirrored", "multi_worker"] = "auto"
    mixed_precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    monitor: Literal["val_loss", "val_accuracy", "val_mae", "val_mean_iou", "val_dice"] = Field(
        "val_loss", description="val_mae: regression only; val_mean_iou and val_dice: segmentation only"
    )
    early_stopping_patience: int | None = Field(5, ge=1, le=10_000)
    jit_compile: bool | Literal["auto"] = Field("auto", description="XLA; auto: Keras decides (off on a CPU)")
    steps_per_execution: int = Field(1, ge=1, le=10_000, description="training steps per traced call")
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()

    @model_validator(mode="after")
    def _one_step_per_call_across_workers(self) -> "TrainingConfig":
        # Keras 3.15 runs several steps in a tf.while_loop whose tf.cond holds the all-reduce; a
        # MultiWorkerMirroredStrategy graph cannot run that ("You must feed a value for placeholder tensor").
        if self.strategy == "multi_worker" and self.steps_per_execution > 1:
            raise ValueError("training.steps_per_execution: must be 1 under training.strategy = 'multi_worker'")
        return self


class ExportConfig(Section):
    dir: str = "exports"
    model_name: str | None = Field(None, pattern=SAFE_NAME, description="default: the experiment name")
    parity_samples: int = Field(64, ge=1, le=10_000)
    tolerance: float = Field(1e-5, gt=0, description="max abs difference across Keras, SavedModel, ONNX")


class BlessConfig(Section):
    """The gate `kerasline evaluate` applies to the newest export; `kerasline deploy` promotes only what passed.
    Keys are the model's test metrics (accuracy, loss, ...); with no thresholds at all nothing is blessed."""

    minimum: dict[str, float] = Field({}, description="absolute floors: metric >= value")
    maximum: dict[str, float] = Field({}, description="absolute ceilings: metric <= value")
    max_drop: dict[str, Annotated[float, Field(ge=0)]] = Field({}, description="vs stable: metric >= stable - value")
    max_rise: dict[str, Annotated[float, Field(ge=0)]] = Field({}, description="vs stable: metric <= stable + value")


class FloatRange(Section):
    type: Literal["float"]
    min: float
    max: float
    sampling: Literal["linear", "log"] = "linear"

    @model_validator(mode="after")
    def _not_empty(self) -> "FloatRange":
        if not self.min < self.max:
            raise ValueError(f"empty range: min {self.min} is not below max {self.max}")
        if self.sampling == "log" and self.min <= 0:
            raise ValueError(f"log sampling needs min > 0, got {self.min}")
        return self


class IntRange(Section):
    type: Literal["int"]
    min: int
    max: int
    step: PositiveInt = 1

    @model_validator(mode="after")
    def _not_empty(self) -> "IntRange":
        if not self.min + self.step <= self.max:
            raise ValueError(f"empty range: no step of {self.step} fits from min {self.min} to max {self.max}")
        return self


class Choice(Section):
    type: Literal["choice"]
    values: list[Any] = Field(min_length=1)


class Boolean(Section):
    type: Literal["bool"]


SpaceEntry = Annotated[FloatRange | IntRange | Choice | Boolean, Field(discriminator="type")]


class TuneConfig(Section):
    """`kerasline tune`: keys of `space` are dotted config paths; an empty space takes the family's default."""

    algorithm: Literal["random", "hyperband", "bayesian"] = "random"
    objective: Literal["val_loss", "val_accuracy", "val_mae"] = "val_accuracy"
    max_trials: int = Field(10, ge=1, le=10_000)
    epochs: int = Field(5, ge=1, le=10_000, description="per trial; Hyperband's max_epochs")
    hyperband_factor: int = Field(3, ge=2, le=10)
    early_stopping_patience: int | None = Field(2, ge=1, le=10_000, description="inside each trial")
    budget_minutes: float | None = Field(None, gt=0, description="stop cleanly between trials after this")
    space: dict[str, SpaceEntry] = {}


class ExperimentConfig(Section):
    name: str = Field(pattern=SAFE_NAME)
    seed: int = Field(42, ge=0)
    deterministic: bool = Field(False, description="seeded, order-preserving pipelines and op determinism")
    runs_dir: str = "runs"
    data: DataConfig = DataConfig()
    model: ModelConfig = CNNConfig()
    training: TrainingConfig = TrainingConfig()
    export: ExportConfig = ExportConfig()
    bless: BlessConfig = BlessConfig()
    tune: TuneConfig = TuneConfig()

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, raw: Any) -> Any:
        """A [model] without a name is the CNN; an empty [tune.space] is the model family's default space;
        regression tunes for val_loss unless told otherwise."""
        if isinstance(raw, dict) and isinstance(raw.get("model"), dict) and "name" not in raw["model"]:
            raw = {**raw, "model": {"name": "cnn", **raw["model"]}}
        tune = raw.get("tune", {}) if isinstance(raw, dict) else None
        if isinstance(tune, dict) and not tune.get("space"):
            model = raw.get("model")
            family = model.get("name") if isinstance(model, dict) else None
            config = MODEL_CONFIGS.get(family, CNNConfig) if isinstance(family, str) else CNNConfig
            raw = {**raw, "tune": {**tune, "space": config.default_space}}  # a wrong name is reported later
        data = raw.get("data") if isinstance(raw, dict) else None
        if isinstance(data, dict) and data.get("target") == "value" and isinstance(raw.get("tune", {}), dict):
            raw = {**raw, "tune": {"objective": "val_loss", **raw.get("tune", {})}}
        return raw

    @model_validator(mode="after")
    def _model_fits_the_data(self) -> "ExperimentConfig":
        data, model = self.data, self.model
        if data.input not in model.inputs:
            raise ValueError(
                f"model.name: {model.name} takes {' or '.join(model.inputs)} input, but data.input is {data.input!r}"
            )
        if data.input != "image" and data.source == "folder":
            raise ValueError(f"data.source: a folder holds images, but data.input is {data.input!r}")
        if data.input == "text" and data.source != "tfds":
            raise ValueError("data.input: text comes from a tfds source (shipped samples are already tokenised)")
        image_knobs = data.augment.image_knobs()
        if data.input != "image" and image_knobs:
            raise ValueError(f"data.augment.{image_knobs[0]}: an image augmentation, but data.input is {data.input!r}")
        if data.input == "image" and data.augment.word_dropout:
            raise ValueError("data.augment.word_dropout: a token augmentation, but data.input is 'image'")
        if (data.task == "segmentation") != (model.task == "segmentation"):  # masks, or labels (used or not)
            raise ValueError(f"data.task: {model.name} does {model.task}, but data.task is {data.task!r}")
        if data.crop is not None and data.task != "segmentation":
            raise ValueError(f"data.crop: segmentation trains on crops, but data.task is {data.task!r}")
        if data.crop is not None and data.crop > min(data.image_shape[:2]):
            raise ValueError(f"data.crop: {data.crop} is larger than data.image_shape {list(data.image_shape)}")
        if self.training.monitor in SEGMENTATION_MONITORS and data.task != "segmentation":
            raise ValueError(f"training.monitor: {self.training.monitor} is a segmentation metric")
        problem = model.data_problem(data)
        if problem:
            raise ValueError(problem)
        head = getattr(model, "head", "softmax")
        if data.target == "value" and (data.source, data.input) != ("samples", "image"):
            raise ValueError("data.target: 'value' reads real-valued y from an image sample (data.source = samples)")
        if data.target == "value" and head != "linear":
            raise ValueError("data.target: 'value' (regression) needs model.name = 'mlp' with model.head = 'linear'")
        if head == "linear" and data.target != "value":
            raise ValueError("model.head: linear predicts a value, so it needs data.target = 'value'")
        if head == "sigmoid" and data.num_classes != 2:
            raise ValueError(f"model.head: sigmoid is for 2 classes, but data.num_classes is {data.num_classes}")
        regression_only = {"val_mae"} if data.target == "value" else {"val_accuracy"}
        if data.task == "segmentation":
            regression_only |= set(SEGMENTATION_MONITORS)
        for key, metric in (("training.monitor", self.training.monitor), ("tune.objective", self.tune.objective)):
            if metric not in regression_only | {"val_loss"}:
                raise ValueError(f"{key}: {metric!r} is not reported for data.target = {data.target!r}")
        return self

    @model_validator(mode="after")
    def _space_fits_the_config(self, info: ValidationInfo) -> "ExperimentConfig":
        """Each searched key exists, and each end of its range (or choice) is itself a valid config."""
        if info.context == _CHECKING_SPACE:
            return self
        base = self.model_dump(mode="json", exclude={"tune"})
        for key, entry in self.tune.space.items():
            try:
                get_dotted(base, key)
            except KeyError:
                leaves = list(_dotted_keys(base))
                raise ValueError(f"tune.space: {key!r} is not a config key{_did_you_mean(key, leaves)}") from None
            for value in _extremes(entry):
                trial = copy.deepcopy(base)
                set_dotted(trial, key, value)
                try:
                    ExperimentConfig.model_validate(trial, context=_CHECKING_SPACE)
                except ValidationError as e:
                    raise ValueError(f"tune.space: {key} = {value!r} is invalid: {_describe(e.errors()[0])}") from None
        return self

    @model_validator(mode="after")
    def _generative_settings(self) -> "ExperimentConfig":
        if task_of(self) not in GENERATIVE_TASKS:
            return self
        if self.training.monitor != "val_loss":
            raise ValueError(f"training.monitor: {self.model.name} has no accuracy; use val_loss")
        if self.model.name == "dcgan" and self.training.optimizer.name != "adam":
            raise ValueError("training.optimizer.name: dcgan trains both nets with Adam; set it to 'adam'")
        if self.model.name == "dcgan" and self.training.mixed_precision == "mixed_float16":
            raise ValueError("training.mixed_precision: dcgan's optimizers do not scale the loss; use mixed_bfloat16")
        if self.model.name == "dcgan" and self.training.schedule.name == "plateau":
            raise ValueError("training.schedule.name: plateau needs a validation score, and a GAN's losses are none")
        return self

    @property
    def model_name(self) -> str:
        return self.export.model_name or self.name


_CHECKING_SPACE = "checking a tune.space value"
SEGMENTATION_MONITORS = ("val_mean_iou", "val_dice")
MAXIMISED_MONITORS = ("val_accuracy", *SEGMENTATION_MONITORS)  # the others (val_loss) are minimised


GENERATIVE_TASKS = ("generate", "reconstruct")  # no labels: a GAN, autoencoders


def task_of(cfg: ExperimentConfig) -> str:
    """What the model family does: classification (labels, or values, are the target), segmentation (masks),
    generate (a GAN, images only) or reconstruct (autoencoders)."""
    return cfg.model.task


def get_dotted(raw: dict, key: str) -> Any:
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def set_dotted(raw: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _dotted_keys(raw: dict, prefix: str = ""):
    for key, value in raw.items():
        if isinstance(value, dict):
            yield from _dotted_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _extremes(entry: FloatRange | IntRange | Choice | Boolean) -> list:
    if isinstance(entry, FloatRange | IntRange):
        return [entry.min, entry.max]
    return entry.values if isinstance(entry, Choice) else [False, True]


def experiment_path(exp: str) -> Path:
    """`mnist_cnn` → experiments/mnist_cnn.toml; a path to a .toml file is taken as it is."""
    if exp.endswith(".toml"):
        return Path(exp)
    if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", exp):
        raise ConfigError(f"experiment {exp!r}: use a name under experiments/ or a path to a .toml file")
    return EXPERIMENTS_DIR / f"{exp}.toml"


def load_experiment(exp: str, overrides: Sequence[str] = ()) -> ExperimentConfig:
    path = experiment_path(exp)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    raw.setdefault("name", path.stem)
    for item in overrides:
        apply_override(raw, item)
    return validate(raw, source=str(path))


def apply_override(raw: dict, item: str) -> None:
    """Set `a.b.c=value` in `raw`; the value is read as TOML, else taken as a string."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key=value")
    *parents, leaf = key.strip().split(".")
    node = raw
    for i, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(parents[: i + 1])}: is a value, not a section")
    try:
        node[leaf] = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        node[leaf] = text


def validate(raw: dict, source: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{source}: {_describe(e.errors()[0])}") from None


def to_toml(cfg: ExperimentConfig) -> str:
    return tomli_w.dumps(cfg.model_dump(mode="json", exclude_none=True))


def _describe(error: dict) -> str:
    """One line for one pydantic error: the dotted key, what is wrong, and a close match."""
    loc = [str(p) for p in error["loc"]]
    key = ".".join(_without_tags(loc))
    try:
        if error["type"] == "extra_forbidden":
            known = list(_model_at(loc[:-1]).model_fields)
            return f"{key}: unknown key{_did_you_mean(loc[-1], known)}"
        if error["type"] == "literal_error":
            allowed = [
                str(a) for a in typing.get_args(_strip_optional(_model_at(loc[:-1]).model_fields[loc[-1]].annotation))
            ]
            got = str(error["input"])
            return f"{key}: {got!r} is not one of {', '.join(allowed)}{_did_you_mean(got, allowed)}"
    except (KeyError, AttributeError, TypeError):  # a location the schema walk cannot follow: no suggestion
        pass
    if error["type"] == "union_tag_invalid":  # model.name, or a tune.space entry's type
        ctx = error["ctx"]
        allowed, tag = re.findall(r"'([^']*)'", ctx["expected_tags"]), str(ctx["tag"])
        field = ctx["discriminator"].strip("'")
        return f"{key}.{field}: {tag!r} is not one of {', '.join(allowed)}{_did_you_mean(tag, allowed)}"
    if error["type"] == "value_error":  # our own checks: their message names the keys
        message = str(error["ctx"]["error"])
        return f"{key}: {message}" if loc and not message.startswith(f"{key}.") else message
    got = repr(error["input"])
    return f"{key}: {error['msg'].lower()} (got {got if len(got) <= 60 else got[:57] + '...'})"


SPACE_TAGS = {"float", "int", "choice", "bool"}


def _without_tags(loc: list[str]) -> list[str]:
    """pydantic puts the chosen member of a tagged union in the location (model.mlp.dropout): drop it."""
    return [
        part
        for i, part in enumerate(loc)
        if not (i >= 1 and loc[i - 1] == "model" and part in MODEL_CONFIGS)
        and not (i >= 3 and loc[i - 3 : i - 1] == ["tune", "space"] and part in SPACE_TAGS)
    ]


def _did_you_mean(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _model_at(loc: list[str]) -> type[BaseModel]:
    """The config class at a location; at the model union, the next part of the location names the member."""
    node, parts = ExperimentConfig, iter(loc)
    for part in parts:
        node = _strip_optional(node.model_fields[part].annotation)
        if typing.get_origin(node) in (typing.Union, types.UnionType):
            node = MODEL_CONFIGS[next(parts)]
    return node


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation
