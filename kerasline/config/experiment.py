"""The whole experiment: its sections, the defaults that depend on one another, and the checks across sections."""

import copy
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, model_validator

from kerasline.config.dotted import dotted_keys, get_dotted, set_dotted
from kerasline.config.families import MODEL_CONFIGS, CNNConfig, ModelConfig
from kerasline.config.messages import _describe, did_you_mean
from kerasline.config.sections import (
    SAFE_NAME,
    BlessConfig,
    Boolean,
    Choice,
    DataConfig,
    ExportConfig,
    FloatRange,
    IntRange,
    Section,
    TrainingConfig,
    TuneConfig,
)

_CHECKING_SPACE = "checking a tune.space value"
SEGMENTATION_MONITORS = ("val_mean_iou", "val_dice")
MAXIMISED_MONITORS = ("val_accuracy", *SEGMENTATION_MONITORS)  # the others (val_loss) are minimised
GENERATIVE_TASKS = ("generate", "reconstruct")  # no labels: a GAN, autoencoders


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
        for check in _CHECKS:  # in this order: the first problem is the one reported
            check(self)
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
                leaves = list(dotted_keys(base))
                raise ValueError(f"tune.space: {key!r} is not a config key{did_you_mean(key, leaves)}") from None
            for value in _extremes(entry):
                trial = copy.deepcopy(base)
                set_dotted(trial, key, value)
                try:
                    ExperimentConfig.model_validate(trial, context=_CHECKING_SPACE)
                except ValidationError as e:
                    problem = _describe(e.errors()[0], ExperimentConfig)
                    raise ValueError(f"tune.space: {key} = {value!r} is invalid: {problem}") from None
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
        if self.model.name == "dcgan" and self.training.ema is not None:
            raise ValueError("training.ema: dcgan's optimizers are its own; use model.generator_ema for its generator")
        return self

    @property
    def model_name(self) -> str:
        return self.export.model_name or self.name


def task_of(cfg: ExperimentConfig) -> str:
    """What the model family does: classification (labels, or values, are the target), segmentation (masks),
    generate (a GAN, images only) or reconstruct (autoencoders); a classifier's family given a table's columns
    does tabular (classification or regression from raw columns). The family is the one place that says it:
    data.task, where an experiment sets it, only has to agree."""
    return "tabular" if cfg.data.input == "columns" else cfg.model.task


def _inputs_fit_the_family(cfg: ExperimentConfig) -> None:
    data, model = cfg.data, cfg.model
    if data.input not in model.inputs:
        raise ValueError(
            f"model.name: {model.name} takes {' or '.join(model.inputs)} input, but data.input is {data.input!r}"
        )


def _inputs_fit_the_source(cfg: ExperimentConfig) -> None:
    data = cfg.data
    if data.input != "image" and data.source == "folder":
        raise ValueError(f"data.source: a folder holds images, but data.input is {data.input!r}")
    if data.input == "text" and data.source != "tfds":
        raise ValueError("data.input: text comes from a tfds source (shipped samples are already tokenised)")
    if data.input == "columns" and data.source != "csv":
        raise ValueError(f"data.input: columns come from a csv source, but data.source is {data.source!r}")
    if data.source == "csv" and data.input != "columns":
        raise ValueError(f"data.input: a csv source gives columns, but data.input is {data.input!r}")


def _table_keys_need_a_table(cfg: ExperimentConfig) -> None:
    data = cfg.data
    if data.source == "csv" and not data.label:
        raise ValueError("data.label: a csv source needs the name of its label column")
    if data.source != "csv":
        for key in ("label", "columns", "crosses"):
            if getattr(data, key):
                raise ValueError(f"data.{key}: names csv columns, but data.source is {data.source!r}")
    if data.label in data.columns:
        raise ValueError(f"data.columns.{data.label}: the label column is not a feature; remove its entry")


def _augmentations_fit_the_input(cfg: ExperimentConfig) -> None:
    data = cfg.data
    image_knobs = data.augment.image_knobs()
    if data.input != "image" and image_knobs:
        raise ValueError(f"data.augment.{image_knobs[0]}: an image augmentation, but data.input is {data.input!r}")
    if data.input not in ("tokens", "text") and data.augment.word_dropout:
        raise ValueError(f"data.augment.word_dropout: a token augmentation, but data.input is {data.input!r}")


def _data_task_agrees_with_the_family(cfg: ExperimentConfig) -> None:
    task, said = task_of(cfg), cfg.data.task
    if said is not None and (said == "segmentation") != (task == "segmentation"):  # masks, or labels (used or not)
        raise ValueError(f"data.task: {cfg.model.name} does {task}, but data.task is {said!r}")


def _crop_fits_the_task_and_image(cfg: ExperimentConfig) -> None:
    data = cfg.data
    if data.crop is not None and task_of(cfg) != "segmentation":
        # the data holds labels (used or not), and data.task, set or not, agrees: 'classification'
        raise ValueError("data.crop: segmentation trains on crops, but data.task is 'classification'")
    if data.crop is not None and data.crop > min(data.image_shape[:2]):
        raise ValueError(f"data.crop: {data.crop} is larger than data.image_shape {list(data.image_shape)}")


def _monitor_fits_the_task(cfg: ExperimentConfig) -> None:
    if cfg.training.monitor in SEGMENTATION_MONITORS and task_of(cfg) != "segmentation":
        raise ValueError(f"training.monitor: {cfg.training.monitor} is a segmentation metric")


def _family_fits_the_data(cfg: ExperimentConfig) -> None:
    problem = cfg.model.data_problem(cfg.data)
    if problem:
        raise ValueError(problem)


def _heads_fit_the_target(cfg: ExperimentConfig) -> None:
    data, head = cfg.data, getattr(cfg.model, "head", "softmax")
    if data.target == "value" and (data.source, data.input) not in (("samples", "image"), ("csv", "columns")):
        raise ValueError("data.target: 'value' reads real-valued y from an image sample or a csv (data.source)")
    if data.target == "value" and head != "linear":
        raise ValueError("data.target: 'value' (regression) needs model.name = 'mlp' with model.head = 'linear'")
    if head == "linear" and data.target != "value":
        raise ValueError("model.head: linear predicts a value, so it needs data.target = 'value'")
    if head == "sigmoid" and data.num_classes != 2:
        raise ValueError(f"model.head: sigmoid is for 2 classes, but data.num_classes is {data.num_classes}")


def _label_budgets_need_labels(cfg: ExperimentConfig) -> None:
    data = cfg.data
    if data.labels_per_class and (data.source not in ("samples", "csv") or data.target != "class"):
        raise ValueError("data.labels_per_class: keeps N labelled examples per class of a samples or csv source")
    if data.labels_per_class and task_of(cfg) not in ("classification", "tabular"):
        raise ValueError(f"data.labels_per_class: {cfg.model.name} does {task_of(cfg)}, which has no labels")


def _fine_tuning_needs_a_backbone(cfg: ExperimentConfig) -> None:
    if cfg.training.fine_tune.epochs and not cfg.model.has_backbone:
        which = "model.backbone is 'none'" if hasattr(cfg.model, "backbone") else f"model.name is {cfg.model.name!r}"
        raise ValueError(f"training.fine_tune: unfreezes a pretrained backbone, but {which}")
    plateau = "plateau" in (cfg.training.schedule.name, cfg.training.fine_tune.schedule.name)
    if cfg.training.fine_tune.epochs and plateau:
        raise ValueError("training.fine_tune: each phase has an optimizer of its own; a plateau schedule needs one")


def _class_weights_need_labels(cfg: ExperimentConfig) -> None:
    if cfg.training.class_weight and (task_of(cfg) not in ("classification", "tabular") or cfg.data.target != "class"):
        raise ValueError("training.class_weight: weighs labels; this experiment's targets are not class labels")


def _int8_needs_images(cfg: ExperimentConfig) -> None:
    if cfg.export.onnx_int8 and cfg.data.input != "image":
        raise ValueError(f"export.onnx_int8: quantises image models, but data.input is {cfg.data.input!r}")


def _recipes_fit_the_task(cfg: ExperimentConfig) -> None:
    """Label smoothing and mixing need class labels (or masks) to smooth or mix; mixing and RandAugment, images."""
    data, augment, task = cfg.data, cfg.data.augment, task_of(cfg)
    if task in GENERATIVE_TASKS:
        targets = f"{cfg.model.name} does {task}, which has no labels"
    elif data.target == "value":
        targets = "data.target = 'value' is regression"
    else:
        targets = None
    if cfg.training.label_smoothing and targets:
        raise ValueError(f"training.label_smoothing: smooths class labels, but {targets}")
    if cfg.training.label_smoothing and task == "segmentation" and cfg.model.loss == "dice":
        raise ValueError("training.label_smoothing: smooths cross-entropy, and model.loss = 'dice' has none")
    on = [knob for knob in ("mixup", "cutmix", "randaugment_ops") if getattr(augment, knob)]
    if on and data.input != "image":
        raise ValueError(f"data.augment.{on[0]}: an image augmentation, but data.input is {data.input!r}")
    mixing = [knob for knob in ("mixup", "cutmix") if getattr(augment, knob)]
    if mixing and targets:
        raise ValueError(f"data.augment.{mixing[0]}: mixes class labels, but {targets}")
    if augment.mixup and task == "segmentation":
        raise ValueError("data.augment.mixup: would blend the masks' class ids; segmentation takes cutmix")
    if augment.randaugment_ops and task == "segmentation":
        raise ValueError("data.augment.randaugment_ops: its geometric ops would move the images without their masks")


def _monitors_fit_the_target(cfg: ExperimentConfig) -> None:
    target = cfg.data.target
    regression_only = {"val_mae"} if target == "value" else {"val_accuracy"}
    if task_of(cfg) == "segmentation":
        regression_only |= set(SEGMENTATION_MONITORS)
    for key, metric in (("training.monitor", cfg.training.monitor), ("tune.objective", cfg.tune.objective)):
        if metric not in regression_only | {"val_loss"}:
            raise ValueError(f"{key}: {metric!r} is not reported for data.target = {target!r}")


_CHECKS = (
    _inputs_fit_the_family,
    _inputs_fit_the_source,
    _table_keys_need_a_table,
    _augmentations_fit_the_input,
    _data_task_agrees_with_the_family,
    _crop_fits_the_task_and_image,
    _monitor_fits_the_task,
    _family_fits_the_data,
    _heads_fit_the_target,
    _monitors_fit_the_target,
    _class_weights_need_labels,
    _recipes_fit_the_task,
    _label_budgets_need_labels,
    _fine_tuning_needs_a_backbone,
    _int8_needs_images,
)


def _extremes(entry: FloatRange | IntRange | Choice | Boolean) -> list:
    if isinstance(entry, FloatRange | IntRange):
        return [entry.min, entry.max]
    return entry.values if isinstance(entry, Choice) else [False, True]
