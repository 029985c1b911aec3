"""Optimisers and learning-rate schedules from config; schedules are given in epochs."""

import keras

from kerasline.config import TrainingConfig
from kerasline.training.ema import warmed_up_decay

OPTIMIZERS = {
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
}


class Averaging:
    """Mixed into an optimizer with use_ema=True (training.ema): the average's decay warms up, and fit() ends with the
    raw weights in the model."""

    def _update_model_variables_moving_average(self, trainable_variables):
        """Keras 3.15's update, average = d · average + (1 − d) · weight, with its fixed d warmed up (training/ema.py).
        Keras calls it after the step's update, before counting the step."""
        decay = warmed_up_decay(self.ema_momentum, self.iterations)
        for weight, average in zip(trainable_variables, self._model_variables_moving_average, strict=True):
            if average is not None:
                d = keras.ops.cast(decay, weight.dtype)
                average.assign(d * average + (1 - d) * weight)

    def finalize_variable_values(self, var_list):
        """Keras 3.15 ends every fit() by copying the averages into the weights; a run is several fit() calls (the
        rest of a preempted epoch, a fine-tuning phase) that train on from the raw weights, and it saves the averages
        where it wants them itself (training/ema.py)."""


AVERAGING = {name: type(cls.__name__, (Averaging, cls), {}) for name, cls in OPTIMIZERS.items()}


def make_optimizer(cfg: TrainingConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    opt = cfg.optimizer
    kwargs = {"learning_rate": learning_rate(cfg, steps_per_epoch), "global_clipnorm": opt.clipnorm}
    if opt.name in ("sgd", "rmsprop"):
        kwargs["momentum"] = opt.momentum
    if opt.name == "sgd":
        kwargs["nesterov"] = opt.nesterov
    if opt.weight_decay is not None:
        kwargs["weight_decay"] = opt.weight_decay
    if cfg.ema is None:
        return OPTIMIZERS[opt.name](**kwargs)
    # One average per trainable variable, updated after every step (Averaging); its first step's is the weights.
    return AVERAGING[opt.name](**kwargs, use_ema=True, ema_momentum=cfg.ema)


def learning_rate(cfg: TrainingConfig, steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """A constant for `constant` and `plateau` (the ReduceLROnPlateau callback lowers it), else a schedule."""
    lr, sched = cfg.optimizer.learning_rate, cfg.schedule
    decay_steps = max(1, round(sched.decay_epochs * steps_per_epoch))
    if sched.name in ("step", "exponential"):
        return keras.optimizers.schedules.ExponentialDecay(
            lr, decay_steps, sched.decay_rate, staircase=sched.name == "step"
        )
    if sched.name == "cosine":
        warmup = round(sched.warmup_epochs * steps_per_epoch)
        total = max(1, cfg.epochs * steps_per_epoch - warmup)
        if not warmup:
            return keras.optimizers.schedules.CosineDecay(lr, total)
        return keras.optimizers.schedules.CosineDecay(0.0, total, warmup_target=lr, warmup_steps=warmup)
    return lr
