"""The sections of an experiment besides its model: data, training, export, the blessing gate and the tune space."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

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
    elastic_alpha: float = Field(
        0.0,
        ge=0,
        le=100,
        description="elastic deformation (Simard et al., 2003): the std of each pixel's displacement, in pixels "
        "(mask and image alike); 0: off",
    )
    elastic_sigma: float = Field(
        10.0, gt=0, le=100, description="elastic: the std of the Gaussian that smooths the displacements, in pixels"
    )
    mixup: float = Field(
        0.0,
        ge=0,
        le=10,
        description="image classification: mixup's Beta(α, α) concentration α (0.2 is common): each training image "
        "blended with another, its label likewise (soft targets)",
    )
    cutmix: float = Field(
        0.0,
        ge=0,
        le=10,
        description="image classification and segmentation: CutMix's Beta(α, α) concentration α (1.0 is common): a "
        "box of another training image pasted in, labels mixed by area (masks pasted alike); with mixup, each batch "
        "takes one of the two",
    )
    randaugment_ops: int = Field(
        0, ge=0, le=14, description="images, not segmentation: RandAugment's N, ops per image drawn from 14; 0: off"
    )
    randaugment_magnitude: float = Field(
        9.0,
        ge=0,
        le=10,
        description="RandAugment's M on timm's 0 to 10 scale (10: rotate 30°, shear 0.3, translate 45%, colour, "
        "contrast, brightness and sharpness factors 1 ± 0.9)",
    )

    def image_knobs(self) -> list[str]:
        """The image augmentations switched on."""
        knobs = ("rotation", "translation", "zoom", "contrast", "brightness", "noise_stddev", "elastic_alpha")
        on = [knob for knob in knobs if getattr(self, knob)]
        return on + (["flip"] if self.flip != "none" else [])


Side = Annotated[int, Field(ge=1, le=4096)]


class ColumnConfig(Section):
    """csv: how one column is read and encoded, overriding what is inferred from the file."""

    type: Literal["numeric", "categorical", "boolean", "ignore"] | None = Field(
        None,
        description="default: inferred from the file (every value a number: numeric; true/false, yes/no: boolean; "
        "else categorical); ignore: not a feature",
    )
    missing: Literal["mean", "mode", "category"] | None = Field(
        None,
        description="what a missing value (empty, NA) becomes, learned from the training split: numeric the mean; "
        "categorical its own 'missing' category (default) or the mode; boolean the mode",
    )
    encoding: Literal["one_hot", "embedding"] = Field("one_hot", description="categorical")
    embedding_dim: int = Field(8, ge=1, le=4096, description="categorical with encoding = 'embedding'")

    @model_validator(mode="after")
    def _missing_fits_the_type(self) -> "ColumnConfig":
        allowed = {"numeric": ("mean",), "categorical": ("category", "mode"), "boolean": ("mode",)}
        if self.type in allowed and self.missing is not None and self.missing not in allowed[self.type]:
            raise ValueError(f"missing: a {self.type} column takes {' or '.join(allowed[self.type])}")
        return self


class DataConfig(Section):
    source: Literal["samples", "tfds", "folder", "csv"] = "samples"
    input: Literal["image", "tokens", "text", "columns"] = Field(
        "image",
        description="what the model and its export take: uint8 pixels, int token ids, raw strings, or a table's "
        "raw columns (the default with a csv source)",
    )
    task: Literal["classification", "segmentation"] | None = Field(
        None,
        description="default: the model family's task (read it with task_of); if set, it must agree with the family. "
        "segmentation: the targets are masks int32 [H, W] of class ids, not labels",
    )
    name: str = Field(
        "mnist_8k",
        description="samples: a file stem in data/ or a .npz path; tfds: a dataset name; "
        "folder: a directory with one sub-folder per class; csv: a .csv path or a file stem in data/",
    )
    label: str | None = Field(None, description="csv: the label column (class names or numbers, or values)")
    columns: dict[str, ColumnConfig] = Field({}, description="csv: per-column overrides, keyed by column name")
    crosses: tuple[tuple[str, str], ...] = Field(
        (), description="csv: pairs of categorical columns whose combinations are features of their own"
    )
    delimiter: str = Field(",", min_length=1, max_length=1, description="csv: the field delimiter")
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
    test_fraction: float = Field(0.125, gt=0, lt=0.5, description="samples, folder and csv sources")
    split_seed: int | None = Field(
        None,
        ge=0,
        description="the seed that draws the splits (and labels_per_class's subset); None: the experiment's seed. "
        "Set it to train with other seeds on the same test and validation examples",
    )
    limit: PositiveInt | None = Field(
        None,
        description="image samples, folder and csv: use N examples, then split; tokens and tfds: at most N per split",
    )
    labels_per_class: PositiveInt | None = Field(
        None,
        description="keep only N training examples of each class (seeded; a smaller N's are among a larger N's): "
        "few-label experiments. Validation and test are unchanged (samples and csv sources)",
    )
    batch_size: int = Field(128, ge=1, le=65_536, description="global batch, split across replicas")
    shard: Literal["data", "file"] = Field(
        "data",
        description="multi-worker: data = each worker reads the whole source and keeps its share of the batches; "
        "file = each worker reads only its share of the training files (tfds and folder sources)",
    )
    crop: Side | None = Field(None, description="segmentation: train on random square crops of this side")
    repeat: int = Field(
        1,
        ge=1,
        le=10_000,
        description="an epoch sees each training example this many times, augmented (cropped) anew each time: "
        "more steps an epoch from a few large images",
    )
    on_error: Literal["raise", "skip"] = Field("raise", description="skip: drop bad records and report them")
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="before")
    @classmethod
    def _a_table_gives_columns(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("source") == "csv" and "input" not in raw:
            return {**raw, "input": "columns"}
        return raw

    @model_validator(mode="after")
    def _shards_need_files(self) -> "DataConfig":
        if self.shard == "file" and self.source in ("samples", "csv"):
            many = "data.shard: 'file' needs a source of many files (tfds or folder)"
            raise ValueError(f"{many}; {self.source} is one file")
        return self


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


class FineTuneConfig(Section):
    """The second phase of a pretrained backbone's training: the first (training.epochs, with training.optimizer
    and training.schedule) trains the new head on the frozen backbone; this one unfreezes the backbone's top
    layers (BatchNorm stays frozen) and goes on at a lower learning rate."""

    epochs: int = Field(0, ge=0, le=10_000, description="0: no second phase")
    learning_rate: float = Field(1e-4, gt=0, le=10, description="with training.optimizer's other settings")
    unfreeze: PositiveInt | Literal["all"] = Field("all", description="the top N layers of the backbone, or all")
    schedule: ScheduleConfig = ScheduleConfig()


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
    class_weight: Literal["balanced"] | None = Field(
        None, description="balanced: weigh each example's loss by n / (classes × its class's count) (labels only)"
    )
    verbose: Literal["bar", "epoch", "silent"] = Field(
        "epoch", description="what fit prints (and run.log keeps): a progress bar, one line per epoch, or nothing"
    )
    ema: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="decay of an exponential moving average of the weights (e.g. 0.999), which validation, "
        "best.weights.h5 and the export use; training goes on with the raw weights; off when absent",
    )
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="class labels (and segmentation's cross-entropy): ε of Keras's label smoothing, the target "
        "(1 − ε)·y + ε/K (a sigmoid head: ε/2)",
    )
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    fine_tune: FineTuneConfig = FineTuneConfig()

    @property
    def total_epochs(self) -> int:
        """Every phase's: training.epochs, then training.fine_tune.epochs."""
        return self.epochs + self.fine_tune.epochs

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
    onnx_int8: bool = Field(
        False,
        description="also write model-int8.onnx, a static int8 copy of model.onnx calibrated on training images, "
        "for ONNX Runtime on CPUs (a conv net's batch-1 call in about half the time); verification.json keeps its "
        "differences from the Keras model",
    )


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
