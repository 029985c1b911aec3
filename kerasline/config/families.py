"""The model families: each is a `[model]` section, registered under the one name its `name` field declares."""

import functools
import operator
import typing
from typing import Annotated, ClassVar, Literal, TypeVar

from pydantic import Field, model_validator

from kerasline.config.sections import DataConfig, Section

Width = Annotated[int, Field(ge=1, le=4096)]

Initializer = Literal["glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal"]

Backbone = Literal["mobilenet_v3_small", "efficientnet_v2_b0", "resnet50_v2"]  # models/pretrained.py's BACKBONES
BACKBONE_WEIGHTS = (
    "imagenet: keras.applications' ImageNet weights (downloaded once, online); none: from scratch; "
    "else the path of a weights file of the backbone (.weights.h5, as Model.save_weights writes it)"
)


class InitFrom(Section):
    init_from: str | None = Field(
        None,
        description="start from an earlier run's weights, matched by layer name and shape: a run directory, an "
        "experiment's runs directory (its newest finished run) or an export version",
    )

    @property
    def has_backbone(self) -> bool:
        """A pretrained backbone (model.backbone): training/phases.py loads its weights and freezes it."""
        return getattr(self, "backbone", "none") != "none"


class ImageModel(InitFrom):
    """A family that takes `image` input; `min_side` is the smallest image side it fits."""

    inputs: ClassVar[tuple[str, ...]] = ("image",)
    task: ClassVar[str] = "classification"  # the one place an experiment's task is said; read it with task_of
    size_key: ClassVar[str] = "model.name"  # the key that sets min_side, for the error message

    def min_side(self) -> int:
        return 1

    def data_problem(self, data: DataConfig) -> str | None:
        resized = getattr(self, "input_size", None)  # families that resize their input inside the model
        need, side = self.min_side(), resized or min(data.image_shape[:2])
        if need > side:
            given = f"model.input_size is {resized}" if resized else f"data.image_shape is {list(data.image_shape)}"
            return f"{self.size_key}: {self.name} as configured needs images of at least {need}x{need}, but {given}"
        return None


class BigramKnob(Section):
    """Families that read a bag of words: which vocabulary words occur, and which hashed word bigrams."""

    bigram_buckets: int = Field(
        0,
        ge=0,
        le=32_768,
        description="tokens and text: hash each pair of adjacent words into one of N buckets and add which buckets "
        "occur to the bag of words (a pair with padding counts in none); 0: off",
    )
    naive_bayes: bool = Field(
        False,
        description="tokens and text, two classes: weigh each word and bigram of the bag by its log-count ratio "
        "between the classes on the training split (Wang & Manning, 2012: NBSVM's features)",
    )

    def bag_problem(self, data: DataConfig) -> str | None:
        if self.naive_bayes and (data.target != "class" or data.num_classes != 2):
            given = f"data.num_classes is {data.num_classes}" if data.target == "class" else "data.target is 'value'"
            return f"model.naive_bayes: weighs words between two classes, but {given}"
        return None


class SequenceModel(BigramKnob, InitFrom):
    """A family that takes token ids (or text, vectorised inside the exported graph)."""

    inputs: ClassVar[tuple[str, ...]] = ("tokens", "text")
    task: ClassVar[str] = "classification"

    bag_of_words: bool = Field(
        False,
        description="wide & deep (Cheng et al., 2016): which words (and model.bigram_buckets) occur, beside the "
        "sequence's summary, into the classifier",
    )

    @model_validator(mode="after")
    def _bigrams_need_the_bag(self) -> "SequenceModel":
        for knob in ("bigram_buckets", "naive_bayes"):
            if getattr(self, knob) and not self.bag_of_words:
                raise ValueError(f"model.{knob}: acts on the bag of words; set model.bag_of_words = true")
        return self

    def data_problem(self, data: DataConfig) -> str | None:
        return self.bag_problem(data)


MODEL_CONFIGS: dict[str, type[ImageModel | SequenceModel]] = {}  # by name, in the order model.name's errors list them
Family = TypeVar("Family", bound=type[ImageModel | SequenceModel])


def family(cls: Family) -> Family:
    """Register a model family under its name: the one value of its `name: Literal[...]` field."""
    (name,) = typing.get_args(cls.model_fields["name"].annotation)
    MODEL_CONFIGS[name] = cls
    return cls


class BatchNormKnob(Section):
    """Families with BatchNorm layers."""

    sync_batch_norm: bool = Field(
        True,
        description="statistics over the global batch, as one device has them; false: per replica, "
        "which saves 3 all-reduces per BatchNorm layer a step under a multi-replica strategy",
    )


class EnsembleKnob(InitFrom):
    """Families whose model can be a deep ensemble: the classifiers trained from scratch and the U-Net."""

    members: int = Field(
        1,
        ge=1,
        le=16,
        description="a deep ensemble (Lakshminarayanan et al., 2017): N copies of the model, each with its own "
        "initial weights and dropout, trained side by side on the same batches, each on its own loss; the "
        "metrics, the report and the export take their mean output (N× the compute and the weights)",
    )

    @model_validator(mode="after")
    def _ensembles_start_from_scratch(self) -> "EnsembleKnob":
        if self.members > 1 and (self.init_from or self.has_backbone):
            raise ValueError("model.members: an ensemble starts from scratch; unset model.init_from and model.backbone")
        return self


@family
class CNNConfig(BatchNormKnob, EnsembleKnob, ImageModel):
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
    input_size: Annotated[int, Field(ge=1, le=4096)] | None = Field(
        None,
        description="resize images to this square side inside the model (bilinear) before the first conv, so a "
        "model pretrained at another resolution (model.init_from) takes these images as they are",
    )
    initializer: Initializer = "he_normal"
    l1: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)

    size_key: ClassVar[str] = "model.filters"

    def min_side(self) -> int:
        side = 1
        for _ in self.filters:  # back from a 1×1 output: each pool halves the side, each valid conv trims 2
            side = 2 * side + (2 * self.convs_per_block if self.padding == "valid" else 0)
        return side


@family
class MLPConfig(BigramKnob, ImageModel):
    """Dense layers on the flattened pixels, on a bag of words (multi-hot token ids), or on a table's encoded
    columns. The course's MNIST MLP is hidden_units = [64, 32]; no hidden units and a sigmoid head is logistic
    regression, and a linear head linear regression."""

    default_space: ClassVar[dict] = {
        "training.optimizer.learning_rate": {"type": "float", "min": 1e-3, "max": 1e-1, "sampling": "log"},
        "model.dropout": {"type": "float", "min": 0.0, "max": 0.5},
        "model.activation": {"type": "choice", "values": ["relu", "elu", "swish"]},
    }

    inputs: ClassVar[tuple[str, ...]] = ("image", "tokens", "text", "columns")

    name: Literal["mlp"]
    hidden_units: tuple[Width, ...] = Field((64, 32), max_length=16)
    head: Literal["softmax", "sigmoid", "linear"] = Field(
        "softmax", description="softmax: K classes; sigmoid: 2 classes, one probability; linear: a value"
    )
    activation: Literal["relu", "leaky_relu", "elu", "swish", "tanh", "sigmoid"] = "relu"
    dropout: float = Field(0.0, ge=0, lt=1)
    initializer: Initializer = "glorot_uniform"
    l2: float = Field(0.0, ge=0)

    def data_problem(self, data: DataConfig) -> str | None:
        for knob in ("bigram_buckets", "naive_bayes"):
            if getattr(self, knob) and data.input not in ("tokens", "text"):
                return f"model.{knob}: reads the words of a text, but data.input is {data.input!r}"
        return self.bag_problem(data) or super().data_problem(data)


@family
class LeNetConfig(EnsembleKnob, ImageModel):
    """LeNet-style: 5×5 convs to 6 and 16 channels, each then 2×2 max-pooling; dense 120 → 84 → classes."""

    default_space: ClassVar[dict] = {
        "training.optimizer.learning_rate": {"type": "float", "min": 3e-4, "max": 1e-2, "sampling": "log"},
    }

    name: Literal["lenet"]
    activation: Literal["relu", "tanh"] = "relu"

    def min_side(self) -> int:
        return 16  # two valid 5×5 convs, each followed by a 2×2 pool, leave at least 1×1


@family
class WideCNNConfig(BatchNormKnob, EnsembleKnob, ImageModel):
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


@family
class ResNetConfig(BatchNormKnob, EnsembleKnob, ImageModel):
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


@family
class PretrainedConfig(ImageModel):
    """A keras.applications backbone (its top removed, global average pooling) under a new softmax head. The
    image is made what the backbone takes inside the model (grayscale repeated to 3 channels, resized to
    input_size, the backbone's own preprocessing), so the export still takes the raw uint8 image."""

    default_space: ClassVar[dict] = {
        "training.fine_tune.learning_rate": {"type": "float", "min": 1e-5, "max": 1e-3, "sampling": "log"},
        "training.fine_tune.unfreeze": {"type": "choice", "values": [20, 60, "all"]},
    }

    name: Literal["pretrained"]
    backbone: Backbone = "mobilenet_v3_small"
    weights: str = Field("imagenet", description=BACKBONE_WEIGHTS)
    input_size: int = Field(96, ge=32, le=1024, description="the side the image is resized to, inside the model")
    dropout: float = Field(0.2, ge=0, lt=1)

    def data_problem(self, data: DataConfig) -> str | None:
        if data.image_shape[2] not in (1, 3):
            shape = list(data.image_shape)
            return f"model.backbone: {self.backbone} takes 1 or 3 channels, but data.image_shape is {shape}"
        return None


@family
class RNNConfig(EnsembleKnob, SequenceModel):
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


@family
class TransformerConfig(EncoderKnobs, EnsembleKnob, SequenceModel):
    """A Transformer encoder text classifier: token + position embedding, encoder blocks, mean pooling."""

    default_space: ClassVar[dict] = {
        "training.optimizer.learning_rate": {"type": "float", "min": 1e-4, "max": 3e-3, "sampling": "log"},
        "model.layers": {"type": "int", "min": 1, "max": 3},
        "model.dropout": {"type": "float", "min": 0.0, "max": 0.3},
    }

    name: Literal["transformer"]
    position: Literal["learned", "sinusoidal"] = "learned"


@family
class ViTConfig(EncoderKnobs, EnsembleKnob, ImageModel):
    """A Vision Transformer (Dosovitskiy et al., 2021): non-overlapping patches, linearly embedded, plus
    learned positions, through encoder blocks, mean pooled."""

    default_space: ClassVar[dict] = {
        "training.optimizer.learning_rate": {"type": "float", "min": 1e-4, "max": 3e-3, "sampling": "log"},
        "model.layers": {"type": "int", "min": 1, "max": 4},
    }

    name: Literal["vit"]
    patch_size: int = Field(4, ge=1, le=512)

    def data_problem(self, data: DataConfig) -> str | None:
        height, width, _ = data.image_shape
        if height % self.patch_size or width % self.patch_size:
            return (
                f"model.patch_size: {self.patch_size} does not tile data.image_shape {list(data.image_shape)}; "
                "use a divisor of both sides"
            )
        return None


@family
class GANConfig(ImageModel):
    """A DCGAN (Radford et al., 2016): a transposed-conv generator from Gaussian noise and a strided-conv
    discriminator, trained by alternating updates. loss = "wgan_gp" makes the discriminator a critic with
    the gradient penalty of Gulrajani et al. (2017). Both nets use Adam at training.optimizer.learning_rate.
    The stabilisers, each off by default: spectral normalisation of the discriminator (Miyato et al., 2018), a
    moving average of the generator's weights (Karras et al., 2018) and two time-scale learning rates (TTUR,
    Heusel et al., 2017)."""

    task: ClassVar[str] = "generate"
    default_space: ClassVar[dict] = {
        # digits_dcgan trains its generator at 4.8e-3 and its discriminator 12x slower (benchmarks/RESULTS.md)
        "training.optimizer.learning_rate": {"type": "float", "min": 1e-4, "max": 8e-3, "sampling": "log"},
        "model.discriminator_learning_rate": {"type": "float", "min": 1e-4, "max": 2e-3, "sampling": "log"},
    }

    name: Literal["dcgan"]
    latent_dim: int = Field(64, ge=1, le=4096)
    filters: int = Field(64, ge=1, le=1024, description="the discriminator's first conv; the generator mirrors it")
    loss: Literal["bce", "wgan_gp"] = Field("bce", description="bce: non-saturating; wgan_gp: critic + penalty")
    gp_weight: float = Field(10.0, ge=0, description="wgan_gp: the penalty's lambda")
    critic_steps: int = Field(1, ge=1, le=20, description="discriminator updates per generator update")
    beta_1: float = Field(0.5, ge=0, lt=1, description="both Adam optimizers' first-moment decay")
    beta_2: float = Field(0.999, gt=0, lt=1, description="both Adam optimizers' second-moment decay")
    discriminator_dropout: float = Field(
        0.3, ge=0, lt=1, description="dropout after each discriminator conv (TensorFlow's DCGAN tutorial: 0.3)"
    )
    spectral_norm: bool = Field(
        False, description="wrap the discriminator's conv and dense layers in keras.layers.SpectralNormalization"
    )
    generator_ema: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="decay of a moving average of the generator's weights, updated after each generator step; "
        "the average samples, is evaluated and is exported. None: off, the generator itself",
    )
    discriminator_learning_rate: float | None = Field(
        None, gt=0, le=1, description="the discriminator's Adam rate (TTUR); None: training.optimizer.learning_rate"
    )

    def data_problem(self, data: DataConfig) -> str | None:
        if tuple(data.image_shape[:2]) != (28, 28):
            return f"model.name: dcgan generates 28x28 images, but data.image_shape is {list(data.image_shape)}"
        return None


@family
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

    def data_problem(self, data: DataConfig) -> str | None:
        side = 2 ** len(self.filters)
        if self.kind == "conv" and any(s % side for s in data.image_shape[:2]):
            return f"model.filters: {len(self.filters)} stride-2 convs need sides divisible by {side}"
        return None


@family
class VAEConfig(AutoencoderConfig):
    """A variational autoencoder (Kingma & Welling, 2014): the encoder gives a Gaussian's mean and
    log-variance, z = mean + exp(log_var / 2)·eps (the reparameterisation trick), and the loss is the summed
    pixel cross-entropy plus kl_weight × KL(q(z|x) ‖ N(0, I))."""

    name: Literal["vae"]
    latent_dim: int = Field(8, ge=1, le=4096)
    kl_weight: float = Field(1.0, ge=0, description="beta: 1 is the evidence lower bound")


@family
class UNetConfig(BatchNormKnob, EnsembleKnob, ImageModel):
    """A U-Net (Ronneberger et al., 2015): an encoder of conv blocks and 2×2 max-pools, a decoder that upsamples
    and concatenates the encoder's block at the same scale (the skip), then a per-pixel softmax."""

    default_space: ClassVar[dict] = {
        "training.optimizer.learning_rate": {"type": "float", "min": 3e-4, "max": 3e-3, "sampling": "log"},
        "model.filters": {"type": "choice", "values": [8, 16, 32]},
    }

    task: ClassVar[str] = "segmentation"
    name: Literal["unet"]
    backbone: Literal["none", Backbone] = Field(
        "none",
        description="none: an encoder of conv blocks; else a keras.applications encoder whose feature maps at "
        "strides 2 to 16 are the skips (model.depth does not apply: image sides and data.crop divide by 32)",
    )
    weights: str = Field("imagenet", description=f"model.backbone's: {BACKBONE_WEIGHTS}")
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
    tta: bool = Field(
        False,
        description="test-time augmentation: the test metrics, the report and the export average the probabilities "
        "over the image's 8 flips and 90° rotations, each undone on the output (8× the compute)",
    )
    tile: Annotated[int, Field(ge=1, le=4096)] | None = Field(
        None,
        description="overlap-tile prediction (as the U-Net paper): the test metrics, the report and the export "
        "predict tile × tile windows, the image mirrored past its border, and keep each window's centre; "
        "divides like data.crop. None: the whole image at once",
    )
    tile_margin: int = Field(
        32, ge=0, le=2048, description="model.tile: the context at each side of a window, predicted and discarded"
    )

    def data_problem(self, data: DataConfig) -> str | None:
        if self.has_backbone and data.image_shape[2] not in (1, 3):
            shape = list(data.image_shape)
            return f"model.backbone: {self.backbone} takes 1 or 3 channels, but data.image_shape is {shape}"
        step, by = (32, "model.backbone's stride") if self.has_backbone else (2**self.depth, "2**model.depth")
        if data.image_shape[0] % step or data.image_shape[1] % step:
            return (
                f"data.image_shape: {list(data.image_shape)} does not divide by {by} = {step}; "
                f"use sides that do{'' if self.has_backbone else ', or a smaller model.depth'}"
            )
        if data.crop is not None and data.crop % step:
            return f"data.crop: {data.crop} does not divide by {by} = {step}"
        if self.tile is not None:  # windows start on the pooling grid, as the whole image does
            for key, side in (("model.tile", self.tile), ("model.tile_margin", self.tile_margin)):
                if side % step:
                    return f"{key}: {side} does not divide by {by} = {step}"
            if 2 * self.tile_margin >= self.tile:
                return f"model.tile_margin: {self.tile_margin} on each side leaves nothing of a {self.tile} window"
            if self.tile > min(data.image_shape[:2]):
                return f"model.tile: {self.tile} is larger than data.image_shape {list(data.image_shape)}"
        return None


# The [model] section: the family that model.name names.
ModelConfig = Annotated[functools.reduce(operator.or_, MODEL_CONFIGS.values()), Field(discriminator="name")]
