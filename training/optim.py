"""Optimisers and learning-rate schedules from config; schedules are given in epochs."""

import keras

from kerasline.config import TrainingConfig

OPTIMIZERS = {
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
}


def make_optimizer(cfg: TrainingConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    opt = cfg.optimizer
    kwargs = {"learning_rate": learning_rate(cfg, steps_per_epoch), "global_clipnorm": opt.clipnorm}
    if opt.name in ("sgd", "rmsprop"):
        kwargs["momentum"] = opt.momentum
    if opt.name == "sgd":
        kwargs["nesterov"] = opt.nesterov
    if opt.weight_decay is not None:
        kwargs["weight_decay"] = opt.weight_decay
    return OPTIMIZERS[opt.name](**kwargs)


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
